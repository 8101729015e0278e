"""Seeded fuzzing of model outputs through parse -> ground -> write (step 5's path): a bad output is
a status, never an exception, and the split's predictions file is always written."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from helpers import grounding, infer, io, parsing, paths

REPORT = {"id": "r1", "text": "I started Lipitor in May and now my muscles ache and my urine is dark. "
          "No rash so far. Took Zocor before.", "drugs": ["Lipitor"],
          "adverse_events": ["muscles ache", "urine is dark"]}
VALID = json.dumps({"drugs": ["Lipitor"], "adverse_events": ["muscles ache", "urine is dark"]})
ALPHABET = '{}[]":,\\ \n\t\'abcxyz0123456789nulltruefalse\u00e9\u4e2d\U0001f600'


REPO = Path(__file__).resolve().parents[1]


def _mutations(rng: random.Random) -> list:
    """Ways to damage an output; each takes the valid output and returns a bad one."""
    def cut(s): return s[:rng.randrange(len(s))]
    def insert(s):
        i = rng.randrange(len(s) + 1)
        return s[:i] + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))) + s[i:]
    def delete(s):
        i = rng.randrange(len(s))
        return s[:i] + s[i + rng.randint(1, 8):]
    def swap(s):
        chars = list(s)
        for _ in range(rng.randint(1, 6)):
            i, j = rng.randrange(len(chars)), rng.randrange(len(chars))
            chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    def nest(s):
        n = rng.choice([10, 100, 999, 1000, 3000, 20000])
        return rng.choice(["{", "[", '{"a":']) * n + s
    def brace_soup(s): return "{" * rng.randint(1, 9000) + s[: rng.randrange(len(s))]
    def surrogate(s):
        esc = rng.choice(["\\ud83d", "\\udc00", "\\ud800\\ud800", "\\udfff x"])
        return s.replace("muscles ache", f"muscles ache {esc}")
    def raw_surrogate(s): return s + rng.choice(["\ud83d", "\udc00"])
    def wrong_types(s):
        value = rng.choice([None, 3, 2.5, True, {"x": 1}, [[1]], [None, "a"], "", [""], float("nan")])
        return json.dumps({rng.choice(["drugs", "drug_name", "adverse_events", "Drugs"]): value},
                          allow_nan=True)
    def prose(s): return rng.choice(["Sure! ", "```json\n", "Answer:\n", ""]) + s + rng.choice(
        ["", "\n```", " Hope this helps.", "}}}", "]"])
    def huge(s): return s.replace("muscles ache", "ache " * rng.randint(1000, 50000))
    def control(s): return s.replace(" ", rng.choice(["\x00", "\x1b", "\u2028", "\r"]), 3)
    def single_quotes(s): return s.replace('"', "'")
    def python_literals(s): return s.replace("[", "(").replace("]", ")") + rng.choice(["", " None", " True"])
    def empty(s): return rng.choice(["", " ", "{", "}", "{}", "[]", "null", "{{}}", '{"": ""}'])
    def numbers(s): return json.dumps({"drugs": [1e308, -0.0, 10 ** 30], "adverse_events": [1e-320]})
    def keys_only(s): return '{"drugs", "adverse_events"}'
    return [cut, insert, delete, swap, nest, brace_soup, surrogate, raw_surrogate, wrong_types,
            prose, huge, control, single_quotes, python_literals, empty, numbers, keys_only]


def fuzzed_outputs(n: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    muts = _mutations(rng)
    out = []
    for _ in range(n):
        s = VALID
        for mut in rng.sample(muts, rng.randint(1, 3)):
            s = mut(s) or s
        out.append(s)
    return out


def test_1000_fuzzed_outputs_get_a_status_and_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    shutil.copytree(REPO / "data" / "vocab", tmp_path / "data" / "vocab")   # step 5's drug check reads it
    raws = fuzzed_outputs(1200)
    records = []
    for i, raw in enumerate(raws):
        report = {**REPORT, "id": f"r{i}"}
        rec = infer.make_record(report, raw, n_new_tokens=len(raw), finish_reason="length",
                                system="fuzz-lora", model="fuzz", adapter=None, constrained=False)
        assert rec["parse_status"] in parsing.PARSE_STATUSES
        assert rec["parse_ok"] == (rec["parse_status"] in parsing.PARSED_STATUSES)
        records.append(rec)
    path = infer.write_predictions("fuzz", "test", "fuzz-lora", records)
    back = io.read_jsonl(path)
    assert len(back) == len(raws) == 1200
    assert path == paths.predictions_file("fuzz", "test", "fuzz-lora")
    statuses = {r["parse_status"] for r in back}
    assert {"ok", "invalid_json", "truncated"} <= statuses   # the fuzzer reaches several outcomes
    assert infer.summarize(records)["reports"] == 1200
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("raw,status", [
    ("{" * 1000 + "}" * 1000, "invalid_json"),
    ('{"drugs": ' + "[" * 1000 + "]" * 1000 + "}", "invalid_json"),
    ("{" * 8000, "invalid_json"),
    ('{"a": ' * 5000, "invalid_json"),
])
def test_deep_nesting_is_a_status_not_a_recursion_error(raw, status):
    assert parsing.parse_output(raw) == (None, status)


def test_brace_soup_is_parsed_in_bounded_work(monkeypatch):
    """Time used to grow with the square of the number of `{`: the scan now has a budget, counted
    here in characters scanned (no clock)."""
    scanned = []
    real = parsing._balanced_object

    def counting(text, start):
        chunk, closed = real(text, start)
        scanned.append(len(chunk))
        return chunk, closed

    monkeypatch.setattr(parsing, "_balanced_object", counting)
    raw = "x{" * 60 + ('{"k": "v"} ' * 8000)
    parsing.parse_output(raw)
    assert sum(scanned) <= parsing.SCAN_BUDGET + len(raw)


def test_escaped_lone_surrogate_parses_and_writes(tmp_path, monkeypatch):
    """"rash \\ud83d" used to parse ok and then make write_predictions raise UnicodeEncodeError,
    losing the whole split."""
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    shutil.copytree(REPO / "data" / "vocab", tmp_path / "data" / "vocab")   # step 5's drug check reads it
    raw = '{"drugs": ["Lipitor"], "adverse_events": ["rash \\ud83d"]}'
    parsed, status = parsing.parse_output(raw)
    assert status == "ok" and parsed["adverse_events"] == ["rash \ufffd"]
    rec = infer.make_record(REPORT, raw + "\ud800", 5, "stop", "s-lora", "s", None, False)
    path = infer.write_predictions("run", "test", "s-lora", [rec])
    assert io.read_jsonl(path)[0]["parsed"]["adverse_events"] == ["rash \ufffd"]


def test_grounding_a_missing_string_in_a_1mb_report_is_fast_enough_to_count_work():
    """A 1 MB report: the fuzzy window search looks only near the best alignment (counted in
    windows built, not seconds)."""
    text = ("my knee hurts and I felt dizzy " * 35_000)[:1_000_000] + " and dark urin."
    built = []
    real = grounding._windows

    def counting(t, n):
        out = real(t, n)
        built.append(len(out))
        return out

    import unittest.mock as mock
    with mock.patch.object(grounding, "_windows", counting):
        hit = grounding.locate("dark urine", text)
        miss = grounding.locate("completely absent phrase", text)
    assert hit["status"] == "fuzzy" and hit["text"] == "dark urin"
    assert miss["status"] == "not_found"
    assert max(built) < 500        # was every window of the whole megabyte (~600,000)
