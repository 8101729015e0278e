"""Malformed user test files through the entry point of `./run_all.sh --test-file`: each ends in
correct records or in one line `file:line: what is wrong` (no traceback), and nothing under data/
or artifacts/ that existed before is changed."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import corpora, eval_sets, io, paths, pipeline, schemas

GOOD = {"id": "r1", "text": "I took Lipitor and now my muscles ache.", "drugs": ["Lipitor"],
        "adverse_events": ["muscles ache"]}
GOOD2 = {"id": "r2", "text": "Ambien left me groggy.", "drugs": ["Ambien"], "adverse_events": ["groggy"]}
SPAN = {"label": "drug", "start": 7, "end": 14, "text": "Lipitor"}
SEED = {"input": "I took Lipitor and now my muscles ache.",
        "output": json.dumps({"drug_name": "Lipitor", "adverse_events": ["muscles ache"]})}
CADEC_TEXT = "Took Ambien and felt groggy all day."
CADEC_ANN = "T1\tDrug 5 11\tAmbien\nT2\tADR 21 27\tgroggy\n"
ADE_LINE = "123|Rash developed after amoxicillin was started.|Rash|10|14|amoxicillin|30|41\n"


# ---- file builders --------------------------------------------------------------------------------
def _drop(obj: Any) -> Any:
    """Remove keys whose value is ... (a key the case leaves out)."""
    if isinstance(obj, dict):
        return {k: _drop(v) for k, v in obj.items() if v is not ...}
    if isinstance(obj, list):
        return [_drop(v) for v in obj]
    return obj


def jsonl(*records: Any) -> bytes:
    return "".join(json.dumps(_drop(r), ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def rec(**changes: Any) -> dict[str, Any]:
    """GOOD with some keys changed (a value of ... removes the key)."""
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def seed(**changes: Any) -> dict[str, Any]:
    out = {**SEED, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def seed_out(out: Any) -> dict[str, Any]:
    return {"input": SEED["input"], "output": json.dumps(out)}


def zipped(data: bytes) -> bytes:
    from io import BytesIO
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.jsonl", data)
    return buf.getvalue()


def cadec(docs: dict[str, tuple[bytes | None, bytes | None]], sub: tuple[str, ...] = ("text", "original")
          ) -> dict[str, bytes | None]:
    """A CADEC folder as {relative path: bytes} (None: make only the folder)."""
    files: dict[str, bytes | None] = {f"{s}/": None for s in sub}
    for name, (txt, ann) in docs.items():
        if txt is not None:
            files[f"text/{name}.txt"] = txt
        if ann is not None:
            files[f"original/{name}.ann"] = ann
    return files


def good_cadec(**kw: Any) -> dict[str, bytes | None]:
    return cadec({"A.1": (CADEC_TEXT.encode(), CADEC_ANN.encode())}, **kw)


# ---- the table ----------------------------------------------------------------------------------------
# (case id, file name, content: bytes for a file or {relpath: bytes} for a folder,
#  expectation: ("ok", check(records)) or ("error", line or None, phrase in the message))
Case = tuple[str, str, Any, tuple]
OK = lambda check=None: ("ok", check)  # noqa: E731
ERR = lambda line, phrase: ("error", line, phrase)  # noqa: E731

CASES: list[Case] = [
    # encodings and containers
    ("utf8-good", "a.jsonl", jsonl(GOOD, GOOD2), OK(lambda r: [x["id"] for x in r] == ["r1", "r2"])),
    ("utf8-bom", "a.jsonl", b"\xef\xbb\xbf" + jsonl(GOOD), OK(lambda r: r[0]["id"] == "r1")),
    ("utf8-bom-json", "a.json", b"\xef\xbb\xbf" + json.dumps([GOOD]).encode(), OK(lambda r: r[0]["id"] == "r1")),
    ("utf16-le-bom", "a.jsonl", "\ufeff".encode("utf-16-le") + jsonl(rec(text="Café Lipitor ache")).decode().encode("utf-16-le"),
     OK(lambda r: r[0]["text"] == "Café Lipitor ache")),
    ("utf16-be-bom", "a.jsonl", "\ufeff".encode("utf-16-be") + jsonl(GOOD).decode().encode("utf-16-be"),
     OK(lambda r: r[0]["id"] == "r1")),
    ("utf16-no-bom", "a.jsonl", jsonl(GOOD).decode().encode("utf-16-le"), ERR(1, "binary data")),
    ("latin1", "a.jsonl", jsonl(GOOD) + json.dumps(rec(id="r2", text="caf\u00e9 ache")).encode("latin-1")
     .replace(b"\\u00e9", b"\xe9") + b"\n", ERR(2, "not UTF-8")),
    ("latin1-raw", "a.jsonl", jsonl(GOOD) + jsonl(GOOD2) + '{"id": "r3", "text": "naïve"}\n'.encode("latin-1"),
     ERR(3, "not UTF-8")),
    ("cp1252-quotes", "a.jsonl", '{"id": "r1", "text": "\u201cLipitor\u201d"}\n'.encode("cp1252"), ERR(1, "not UTF-8")),
    ("cp1252-json", "a.json", '[{"id": "r1", "text": "\u201cLipitor\u201d"}]'.encode("cp1252"), ERR(1, "not UTF-8")),
    ("gzip", "a.jsonl", gzip.compress(jsonl(GOOD)), ERR(1, "gzip")),
    ("gzip-json", "a.json", gzip.compress(json.dumps([GOOD]).encode()), ERR(1, "gzip")),
    ("zip", "a.jsonl", zipped(jsonl(GOOD)), ERR(1, "zip")),
    ("binary", "a.jsonl", bytes(range(256)) * 4, ERR(1, "binary data")),
    ("nul-line-3", "a.jsonl", jsonl(GOOD, GOOD2) + b'{"id": "x\x00"}\n', ERR(3, "binary data")),
    ("crlf", "a.jsonl", jsonl(GOOD, GOOD2).replace(b"\n", b"\r\n"), OK(lambda r: len(r) == 2)),
    # empty and structural problems
    ("empty", "a.jsonl", b"", ERR(1, "no reports")),
    ("blank-lines", "a.jsonl", b"\n\n  \n", ERR(1, "no reports")),
    ("empty-json", "a.json", b"", ERR(1, "expected a JSON list")),
    ("empty-list", "a.json", b"[]", ERR(1, "no reports")),
    ("json-object", "a.json", json.dumps(GOOD).encode(), ERR(1, "expected a JSON list")),
    ("json-string", "a.json", b'"hello"', ERR(1, "expected a JSON list")),
    ("jsonl-in-json", "a.json", jsonl(GOOD, GOOD2), ERR(None, "invalid JSON")),
    ("list-line", "a.jsonl", jsonl(GOOD) + b"[1, 2]\n", ERR(2, "expected a JSON object")),
    ("number-line", "a.jsonl", jsonl(GOOD) + b"42\n", ERR(2, "expected a JSON object")),
    ("string-line", "a.jsonl", b'"text"\n', ERR(1, "expected a JSON object")),
    ("null-line", "a.jsonl", jsonl(GOOD, GOOD2) + b"null\n", ERR(3, "expected a JSON object")),
    ("true-line", "a.jsonl", b"true\n", ERR(1, "expected a JSON object")),
    ("truncated-line", "a.jsonl", jsonl(GOOD) + b'{"id": "r2", "text": "abc\n', ERR(2, "invalid JSON")),
    ("trailing-comma", "a.jsonl", b'{"id": "r1", "text": "x", "drugs": [], "adverse_events": [],}\n',
     ERR(1, "invalid JSON")),
    ("single-quotes", "a.jsonl", b"{'id': 'r1'}\n", ERR(1, "invalid JSON")),
    ("python-none", "a.jsonl", b'{"id": None}\n', ERR(1, "invalid JSON")),
    ("nested-200k-jsonl", "a.jsonl", jsonl(GOOD) + b"[" * 200_000 + b"]" * 200_000 + b"\n",
     ERR(2, "nested too deeply")),
    ("nested-200k-json", "a.json", b"[" * 200_000 + b"]" * 200_000, ERR(None, "nested too deeply")),
    ("nested-in-record", "a.jsonl", b'{"id": "r1", "text": "x", "drugs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
     ERR(1, "nested too deeply")),
    ("json-item-string", "a.json", b'[\n' + json.dumps(GOOD).encode() + b',\n"oops"\n]', ERR(3, "expected a JSON object")),
    ("json-item-number", "a.json", b'[\n  ' + json.dumps(GOOD).encode() + b',\n\n  7]', ERR(4, "expected a JSON object")),
    ("json-item-null", "a.json", b'[null]', ERR(1, "expected a JSON object")),
    ("json-item-list", "a.json", b'[\n[]\n]', ERR(2, "expected a JSON object")),
    ("line-numbers-count-file-lines", "a.jsonl", jsonl(GOOD) + b"\n\n\n" + jsonl(rec(id="r2", text="")),
     ERR(5, "'text' must be a non-empty string")),
    ("json-line-numbers", "a.json", ("[\n" + json.dumps(GOOD) + ",\n\n" + json.dumps(rec(id="r9", drugs="x")) + "\n]").encode(),
     ERR(4, "'drugs' must be a list")),
    ("txt-suffix", "a.txt", jsonl(GOOD), ERR(None, "expected a .jsonl or .json")),
    ("csv-suffix", "a.csv", b"id,text\n1,x\n", ERR(None, "expected a .jsonl or .json")),
    ("no-suffix", "reports", jsonl(GOOD), ERR(None, "expected a .jsonl or .json")),
    # canonical record fields
    ("missing-id", "a.jsonl", jsonl(rec(id=...)), ERR(1, "missing key 'id'")),
    ("missing-text", "a.jsonl", jsonl(rec(text=...)), ERR(1, "missing key 'text'")),
    ("missing-drugs", "a.jsonl", jsonl(rec(drugs=...)), ERR(1, "missing key 'drugs'")),
    ("missing-events", "a.jsonl", jsonl(rec(adverse_events=...)), ERR(1, "missing key 'adverse_events'")),
    ("id-empty", "a.jsonl", jsonl(rec(id="")), ERR(1, "'id' must be a non-empty string")),
    ("id-blank", "a.jsonl", jsonl(rec(id="   ")), ERR(1, "'id' must be a non-empty string")),
    ("id-null", "a.jsonl", jsonl(rec(id=None)), ERR(1, "'id' must be a non-empty string")),
    ("id-list", "a.jsonl", jsonl(rec(id=["r1"])), ERR(1, "'id' must be a non-empty string")),
    ("id-bool", "a.jsonl", jsonl(rec(id=True)), ERR(1, "'id' must be a non-empty string")),
    ("id-int-ok", "a.jsonl", jsonl(rec(id=7)), OK(lambda r: r[0]["id"] == 7)),
    ("id-duplicate", "a.jsonl", jsonl(GOOD, GOOD), ERR(2, "repeats the report at")),
    ("id-duplicate-far", "a.jsonl", jsonl(GOOD, GOOD2, rec(id="r3"), rec(id="r2")), ERR(4, "id 'r2' repeats")),
    ("id-duplicate-int-str", "a.jsonl", jsonl(rec(id=1), rec(id="1")), ERR(2, "repeats")),
    ("text-empty", "a.jsonl", jsonl(rec(text="")), ERR(1, "'text' must be a non-empty string")),
    ("text-blank", "a.jsonl", jsonl(rec(text=" \n\t")), ERR(1, "'text' must be a non-empty string")),
    ("text-number", "a.jsonl", jsonl(rec(text=3)), ERR(1, "'text' must be a non-empty string")),
    ("text-null", "a.jsonl", jsonl(rec(text=None)), ERR(1, "'text' must be a non-empty string")),
    ("text-list", "a.jsonl", jsonl(rec(text=["a"])), ERR(1, "'text' must be a non-empty string")),
    ("text-1mb", "a.jsonl", jsonl(rec(text="muscle ache " * 90_000)), ERR(1, "characters, over the")),
    ("drugs-string", "a.jsonl", jsonl(rec(drugs="Lipitor")), ERR(1, "'drugs' must be a list of strings")),
    ("drugs-number", "a.jsonl", jsonl(rec(drugs=3)), ERR(1, "'drugs' must be a list of strings")),
    ("drugs-null", "a.jsonl", jsonl(rec(drugs=None)), ERR(1, "'drugs' must be a list of strings")),
    ("drugs-dict", "a.jsonl", jsonl(rec(drugs={"a": 1})), ERR(1, "'drugs' must be a list of strings")),
    ("drugs-item-number", "a.jsonl", jsonl(rec(drugs=["Lipitor", 3])), ERR(1, "'drugs' must be a list of strings")),
    ("drugs-item-null", "a.jsonl", jsonl(rec(drugs=[None])), ERR(1, "'drugs' must be a list of strings")),
    ("drugs-item-blank", "a.jsonl", jsonl(rec(drugs=[""])), ERR(1, "drugs[0] is blank")),
    ("drugs-item-spaces", "a.jsonl", jsonl(rec(drugs=["Lipitor", "  "])), ERR(1, "drugs[1] is blank")),
    ("events-string", "a.jsonl", jsonl(rec(adverse_events="ache")), ERR(1, "'adverse_events' must be a list")),
    ("events-number", "a.jsonl", jsonl(rec(adverse_events=1)), ERR(1, "'adverse_events' must be a list")),
    ("events-null", "a.jsonl", jsonl(rec(adverse_events=None)), ERR(1, "'adverse_events' must be a list")),
    ("events-dict", "a.jsonl", jsonl(rec(adverse_events={})), ERR(1, "'adverse_events' must be a list")),
    ("events-item-number", "a.jsonl", jsonl(rec(adverse_events=[3])), ERR(1, "'adverse_events' must be a list")),
    ("events-item-null", "a.jsonl", jsonl(rec(adverse_events=["ache", None])), ERR(1, "'adverse_events' must be a list")),
    ("events-item-list", "a.jsonl", jsonl(rec(adverse_events=[["ache"]])), ERR(1, "'adverse_events' must be a list")),
    ("events-item-blank", "a.jsonl", jsonl(rec(adverse_events=[""])), ERR(1, "adverse_events[0] is blank")),
    ("spans-good", "a.jsonl", jsonl(rec(spans=[SPAN])), OK(lambda r: r[0]["spans"] == [SPAN])),
    ("spans-string", "a.jsonl", jsonl(rec(spans="Lipitor")), ERR(1, "'spans' must be a list")),
    ("spans-number", "a.jsonl", jsonl(rec(spans=3)), ERR(1, "'spans' must be a list")),
    ("spans-dict", "a.jsonl", jsonl(rec(spans=SPAN)), ERR(1, "'spans' must be a list")),
    ("spans-null", "a.jsonl", jsonl(rec(spans=None)), ERR(1, "'spans' must be a list")),
    ("spans-item-string", "a.jsonl", jsonl(rec(spans=["x"])), ERR(1, "spans[0] must be an object")),
    ("spans-item-number", "a.jsonl", jsonl(rec(spans=[SPAN, 1])), ERR(1, "spans[1] must be an object")),
    ("spans-item-list", "a.jsonl", jsonl(rec(spans=[[7, 14]])), ERR(1, "spans[0] must be an object")),
    ("span-no-label", "a.jsonl", jsonl(rec(spans=[{**SPAN, "label": ...}])), ERR(1, "spans[0] has label")),
    ("span-bad-label", "a.jsonl", jsonl(rec(spans=[{**SPAN, "label": "ADR"}])), ERR(1, "spans[0] has label 'ADR'")),
    ("span-reversed", "a.jsonl", jsonl(rec(spans=[{**SPAN, "start": 14, "end": 7}])), ERR(1, "outside the text")),
    ("span-negative", "a.jsonl", jsonl(rec(spans=[{**SPAN, "start": -1}])), ERR(1, "outside the text")),
    ("span-past-end", "a.jsonl", jsonl(rec(spans=[{**SPAN, "end": 999}])), ERR(1, "outside the text")),
    ("span-start-string", "a.jsonl", jsonl(rec(spans=[{**SPAN, "start": "7"}])), ERR(1, "outside the text")),
    ("span-start-float", "a.jsonl", jsonl(rec(spans=[{**SPAN, "start": 7.0}])), ERR(1, "outside the text")),
    ("span-start-bool", "a.jsonl", jsonl(rec(spans=[{**SPAN, "start": True}])), ERR(1, "outside the text")),
    ("span-missing-end", "a.jsonl", jsonl(rec(spans=[{**SPAN, "end": ...}])), ERR(1, "outside the text")),
    ("span-text-mismatch", "a.jsonl", jsonl(rec(spans=[{**SPAN, "text": "Zocor"}])), ERR(1, "spans[0] text 'Zocor'")),
    # 2023-study records
    ("seed-good", "a.json", json.dumps([SEED]).encode(),
     OK(lambda r: r[0]["drugs"] == ["Lipitor"] and r[0]["adverse_events"] == ["muscles ache"])),
    ("seed-good-jsonl", "a.jsonl", jsonl(SEED, SEED), OK(lambda r: len(r) == 2)),
    ("seed-input-null", "a.json", json.dumps([seed(input=None)]).encode(), ERR(1, "'input' must be the report text")),
    ("seed-input-empty", "a.json", json.dumps([SEED, seed(input="")]).encode(), ERR(1, "'input' must be the report text")),
    ("seed-input-number", "a.jsonl", jsonl(seed(input=5)), ERR(1, "'input' must be the report text")),
    ("seed-input-list", "a.jsonl", jsonl(seed(input=["x"])), ERR(1, "'input' must be the report text")),
    ("seed-no-output", "a.jsonl", jsonl(SEED, seed(output=...)), ERR(2, "expected keys 'input' and 'output'")),
    ("seed-output-bad-json", "a.jsonl", jsonl(seed(output="{not json")), ERR(1, "'output' is not valid JSON")),
    ("seed-output-list", "a.jsonl", jsonl(seed(output="[1, 2]")), ERR(1, "'output' must be a JSON object")),
    ("seed-output-number", "a.jsonl", jsonl(seed(output=3)), ERR(1, "'output' must be a JSON object")),
    ("seed-output-null", "a.jsonl", jsonl(seed(output=None)), ERR(1, "'output' must be a JSON object")),
    ("seed-output-deep", "a.jsonl", jsonl(seed(output="[" * 100_000 + "]" * 100_000)), ERR(1, "nested too deeply")),
    ("seed-output-object", "a.jsonl", jsonl(seed(output={"drug_name": "Lipitor", "adverse_events": []})),
     OK(lambda r: r[0]["drugs"] == ["Lipitor"])),
    ("seed-drug-list", "a.jsonl", jsonl(seed_out({"drug_name": ["Lipitor", "Zocor"], "adverse_events": []})),
     OK(lambda r: r[0]["drugs"] == ["Lipitor", "Zocor"])),
    ("seed-drug-number", "a.jsonl", jsonl(seed_out({"drug_name": 5, "adverse_events": []})),
     ERR(1, "'drug_name' must be a string or a list of strings")),
    ("seed-drug-dict", "a.jsonl", jsonl(seed_out({"drug_name": {"n": "x"}, "adverse_events": []})),
     ERR(1, "'drug_name' must be a string")),
    ("seed-drug-list-number", "a.jsonl", jsonl(seed_out({"drug_name": ["x", 1], "adverse_events": []})),
     ERR(1, "'drug_name' must be a string")),
    ("seed-drug-blank", "a.jsonl", jsonl(seed_out({"drug_name": "  ", "adverse_events": []})),
     ERR(1, "'drug_name' holds a blank string")),
    ("seed-drug-empty-ok", "a.jsonl", jsonl(seed_out({"drug_name": "", "adverse_events": ["ache"]})),
     OK(lambda r: r[0]["drugs"] == [] and r[0]["adverse_events"] == ["ache"])),
    ("seed-events-null-item", "a.jsonl", jsonl(seed_out({"drug_name": "Lipitor", "adverse_events": [None]})),
     ERR(1, "'adverse_events' must be a list of strings (has NoneType")),
    ("seed-events-number-item", "a.jsonl", jsonl(seed_out({"drug_name": "Lipitor", "adverse_events": ["a", 3]})),
     ERR(1, "'adverse_events' must be a list of strings (has int")),
    ("seed-events-string", "a.jsonl", jsonl(seed_out({"drug_name": "Lipitor", "adverse_events": "ache"})),
     ERR(1, "'adverse_events' must be a list of strings")),
    ("seed-events-dict", "a.jsonl", jsonl(seed_out({"drug_name": "Lipitor", "adverse_events": {"a": 1}})),
     ERR(1, "'adverse_events' must be a list of strings")),
    ("seed-events-blank", "a.jsonl", jsonl(seed_out({"drug_name": "Lipitor", "adverse_events": [""]})),
     ERR(1, "'adverse_events' holds a blank string")),
    ("seed-canonical-keys", "a.jsonl", jsonl(seed_out({"drugs": ["Lipitor", "Zocor"], "adverse_events": ["ache"]})),
     OK(lambda r: r[0]["drugs"] == ["Lipitor", "Zocor"] and r[0]["adverse_events"] == ["ache"])),
    ("seed-both-drug-keys", "a.jsonl", jsonl(seed_out({"drug_name": "A", "drugs": ["B"], "adverse_events": []})),
     ERR(1, "both 'drug_name' and 'drugs'")),
    ("seed-then-canonical", "a.jsonl", jsonl(SEED, GOOD), ERR(2, "expected keys 'input' and 'output'")),
    ("seed-id-duplicate", "a.jsonl", jsonl(seed(id="s1"), seed(id="s1")), ERR(2, "repeats")),
    ("seed-text-1mb", "a.jsonl", jsonl(seed(input="x " * 600_000)), ERR(1, "characters, over the")),
    # CADEC folders
    ("cadec-good", "cadec", good_cadec(), OK(lambda r: r[0]["drugs"] == ["Ambien"] and r[0]["adverse_events"] == ["groggy"])),
    ("cadec-named-test", "test", good_cadec(), OK(lambda r: r[0]["id"] == "A.1")),
    ("cadec-no-text-dir", "cadec", {"original/A.1.ann": CADEC_ANN.encode()},
     ERR(None, "needs 'text/' and 'original/'")),
    ("cadec-no-original-dir", "cadec", {"text/": None, "text/A.1.txt": CADEC_TEXT.encode()},
     ERR(None, "needs 'text/' and 'original/'")),
    ("cadec-no-posts", "cadec", cadec({}), ERR(None, "no .txt posts")),
    ("cadec-missing-ann", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), None)}), ERR(None, "no annotation file")),
    ("cadec-txt-latin1", "cadec", cadec({"A.1": ("Took Ambien, café.".encode("latin-1"), b"")}), ERR(1, "not UTF-8")),
    ("cadec-ann-latin1", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), "T1\tDrug 5 11\tAmbién\n".encode("latin-1"))}),
     ERR(1, "not UTF-8")),
    ("cadec-ann-bom", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), b"\xef\xbb\xbf" + CADEC_ANN.encode())}),
     OK(lambda r: r[0]["drugs"] == ["Ambien"])),
    ("cadec-txt-bom", "cadec", cadec({"A.1": (b"\xef\xbb\xbf" + CADEC_TEXT.encode(), CADEC_ANN.encode())}),
     OK(lambda r: r[0]["text"] == CADEC_TEXT and r[0]["drugs"] == ["Ambien"])),
    ("cadec-txt-binary", "cadec", cadec({"A.1": (b"\x00\x01\x02", b"")}), ERR(1, "binary data")),
    ("cadec-ann-gzip", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), gzip.compress(CADEC_ANN.encode()))}), ERR(1, "gzip")),
    ("cadec-empty-post", "cadec", cadec({"A.1": (b"  \n", b"")}), ERR(1, "empty post")),
    ("cadec-ann-fields", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), b"T1\tDrug 5 11\n")}), ERR(1, "tab-separated fields")),
    ("cadec-ann-bad-offsets", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), b"T1\tDrug five 11\tAmbien\n")}),
     ERR(1, "bad offsets")),
    ("cadec-ann-no-offsets", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), b"T1\tDrug\tAmbien\n")}), ERR(1, "no offsets")),
    ("cadec-ann-outside", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), CADEC_ANN.encode() + b"T3\tADR 30 300\tx\n")}),
     ERR(3, "outside the text")),
    ("cadec-ann-mismatch-skipped", "cadec",
     cadec({"A.1": (CADEC_TEXT.encode(), CADEC_ANN.encode() + b"T3\tADR 0 4\tnausea\n")}),
     OK(lambda r: r[0]["adverse_events"] == ["groggy"])),
    ("cadec-empty-ann-ok", "cadec", cadec({"A.1": (CADEC_TEXT.encode(), b"")}),
     OK(lambda r: r[0]["drugs"] == [] and r[0]["adverse_events"] == [])),
    # ADE Corpus v2
    ("ade-good", "DRUG-AE.rel", ADE_LINE.encode(), OK(lambda r: r[0]["drugs"] == ["amoxicillin"])),
    ("ade-bom", "DRUG-AE.rel", b"\xef\xbb\xbf" + ADE_LINE.encode(), OK(lambda r: r[0]["id"] == "ade-123-1")),
    ("ade-few-fields", "DRUG-AE.rel", ADE_LINE.encode() + b"124|A sentence.|rash|1|2\n", ERR(2, "expected 8")),
    ("ade-offsets", "DRUG-AE.rel", b"123|Rash after amoxicillin.|Rash|a|4|amoxicillin|11|22\n", ERR(1, "must be integers")),
    ("ade-empty-drug", "DRUG-AE.rel", b"123|Rash after amoxicillin.|Rash|0|4| |11|22\n", ERR(1, "empty PMID")),
    ("ade-latin1", "DRUG-AE.rel", ADE_LINE.encode() + "9|Fièvre after x.|Fièvre|0|6|x|13|14\n".encode("latin-1"),
     ERR(2, "not UTF-8")),
    ("ade-empty", "DRUG-AE.rel", b"", ERR(None, "no annotated sentences")),
    ("ade-nothing-located", "DRUG-AE.rel", b"1|Rash after amoxicillin.|fever|0|5|aspirin|11|18\n",
     ERR(None, "no annotated sentences")),
    ("ade-gzip", "DRUG-AE.rel", gzip.compress(ADE_LINE.encode()), ERR(1, "gzip")),
    ("ade-binary", "DRUG-AE.rel", b"\x00" * 10, ERR(1, "binary data")),
]


# ---- the harness --------------------------------------------------------------------------------------
@pytest.fixture()
def study(tmp_path, monkeypatch):
    """A scratch study root with results that must survive: synthetic splits and predictions."""
    root = tmp_path / "study"
    monkeypatch.setenv("AE_STUDY_ROOT", str(root))
    (root / "configs").mkdir(parents=True)
    for name in ("base.yaml", "smoke.yaml"):
        shutil.copy(Path(__file__).resolve().parents[1] / "configs" / name, root / "configs")
    for split in ("test", "test_unseen", "train", "val"):
        io.write_jsonl(root / "data" / "synthetic" / "smoke" / f"{split}.jsonl", [GOOD])
        io.write_jsonl(root / "artifacts" / "predictions" / "smoke" / split / "smollm2-135m-lora.jsonl", [{"id": split}])
    io.write_jsonl(root / "data" / "external" / "cadec.jsonl", [GOOD2])
    io.write_text(root / "artifacts" / "metrics" / "smoke" / "comparison.md", "table\n")
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under data/ and artifacts/."""
    out = {}
    for top in ("data", "artifacts"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def materialize(where: Path, name: str, content: Any) -> Path:
    """Write a case's file or folder under `where` (outside the study root)."""
    target = where / name
    if isinstance(content, bytes):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target
    target.mkdir(parents=True)
    for rel, data in content.items():
        if data is None:
            (target / rel).mkdir(parents=True, exist_ok=True)
        else:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)
    return target


def run_entry_point(path: Path) -> tuple[int | str, str]:
    """`./run_all.sh --test-file PATH` as far as the preflight and the plan (dry run, no notebook)."""
    try:
        code = pipeline.main(["--profile", "smoke", "--test-file", str(path), "--dry-run"])
    except SystemExit as e:
        return e.code, str(e.code)
    return code, ""


def test_the_table_has_at_least_100_malformed_files():
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)
    assert sum(c[3][0] == "error" for c in CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_test_file_gives_records_or_one_clear_line(case: Case, study: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    name, fname, content, expect = case
    path = materialize(tmp_path / "user" / name, fname, content)
    before = snapshot(study)
    code, message = run_entry_point(path)
    after = snapshot(study)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert changed == [], f"existing results changed: {changed}"
    new = sorted(set(after) - set(before))
    if expect[0] == "error":
        _, line, phrase = expect
        assert code not in (0, None), "a bad file must stop the run"
        assert "\n" not in message.strip() and "Traceback" not in message
        inner = r"(/[^ :]+)?" if path.is_dir() else ""   # a folder: the file inside it
        where = re.escape(str(path)) + inner + (f":{line}:" if line else r"[^ ]*:")
        assert re.search(where, message), message
        assert phrase in message, message
        assert new == [], f"a rejected file wrote {new}"
        return
    assert code == 0, message
    split = corpora.split_name(path)
    assert split not in corpora.RESERVED_SPLITS and split.startswith("user-")
    converted = study / "data" / "external" / f"{split}.jsonl"
    assert new == [str(converted.relative_to(study))]
    records = schemas.load_reports(converted)
    check = expect[1]
    assert check is None or check(records), records


def test_a_test_file_named_test_is_scored_under_its_own_name(study, tmp_path, capsys):
    """test.jsonl (or a CADEC folder named test) never lands on the synthetic `test` split."""
    f = tmp_path / "test.jsonl"
    f.write_bytes(jsonl(GOOD2))
    prof = pipeline.config.load_profile("smoke")
    before = snapshot(study)
    tf = pipeline._prepare_test_file(str(f))
    assert tf == "data/external/user-test.jsonl"
    tasks = {t.label: t for t in pipeline.plan(prof, ["smollm2-135m"], tf)}
    infer = tasks["05_infer [smollm2-135m]"]
    assert eval_sets.test_file_split(infer.settings["test_file"]) == "user-test"
    assert infer.manifest.name == "manifest-smollm2-135m-user-test.json"
    assert tasks["06_evaluate"].manifest.name == "manifest-user-test.json"
    assert paths.predictions_file("smoke", eval_sets.test_file_split(tf), "smollm2-135m-lora") != \
        paths.predictions_file("smoke", "test", "smollm2-135m-lora")
    after = snapshot(study)
    assert all(after[k] == v for k, v in before.items())
    for name in ("test", "test_unseen", "train", "val", "handwritten", "user-x"):
        assert corpora.split_name(tmp_path / f"{name}.jsonl") in (f"user-{name}", "user-x")
    folder = materialize(tmp_path / "c", "test", good_cadec())
    assert corpora.split_name(folder) == "user-test"


def test_run_all_entry_point_fails_fast_with_one_line_and_no_traceback(study, tmp_path):
    """`python -m helpers.pipeline --test-file bad.jsonl` (what ./run_all.sh execs): non-zero exit,
    one line on stderr naming file and line, before any notebook runs."""
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(GOOD) + b'{"id": "r2", "text": "x", "drugs": "Lipitor", "adverse_events": []}\n')
    env = {**os.environ, "AE_STUDY_ROOT": str(study),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "helpers.pipeline", "--profile", "smoke",
                           "--test-file", str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{bad}:2: 'drugs' must be a list of strings" in lines[0]
    assert not (study / "artifacts" / "runs").exists()          # no notebook ran


def test_corpora_command_line_names_file_and_line_and_writes_nothing(tmp_path, capsys):
    """`python -m helpers.corpora` on a CADEC post that is not UTF-8: exit 1, one line, no output."""
    folder = materialize(tmp_path, "cadec", cadec({"A.1": ("Took Ambien, café.".encode("cp1252"), b"")}))
    out = tmp_path / "out.jsonl"
    assert corpora.main(["cadec", str(folder), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{folder}/text/A.1.txt:1: not UTF-8" in err
    assert not out.exists()


def test_a_relative_test_file_is_the_callers(study, tmp_path, monkeypatch, capsys):
    """run_all.sh changes to the repository root; a relative --test-file still means the caller's."""
    (tmp_path / "mine.jsonl").write_bytes(jsonl(GOOD))
    monkeypatch.setenv("AE_CALLER_CWD", str(tmp_path))
    assert pipeline._prepare_test_file("mine.jsonl") == "data/external/user-mine.jsonl"
