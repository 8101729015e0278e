"""Real, human-annotated corpora that users download themselves (docs/design.md section 6) turned into
canonical reports, so steps 05 and 06 run on them through `test_file`.

- CADEC (brat standoff): `text/NAME.txt` + `original/NAME.ann`. Lines `T1<TAB>ADR 9 19<TAB>bit
  drowsy`; a discontinuous span `ADR 9 19;25 30` becomes one label whose text is the fragments
  joined by a space, with one span per fragment. ADR -> adverse_events, Drug -> drugs; Disease,
  Symptom, Finding, relations, notes (`#`) and other lines are ignored.
- ADE Corpus v2 `DRUG-AE.rel`: `PMID|sentence|effect|begin|end|drug|begin|end`, one drug-effect
  pair per line. Its offsets count from the start of the PubMed abstract, not of the sentence, so
  drug and effect are located by text in the sentence; where a string occurs several times, the
  occurrence pair whose distance matches the file's offset difference is taken. Rows with the same
  (PMID, sentence) form one report with all its drugs and effects.

Malformed lines raise a DataError naming file and line. An annotation whose text is not where its
offsets say is relocated (CADEC: the smallest shift that fits) or else skipped with a CorpusWarning
naming file and line; `strict=True` (`--strict`) raises instead.

Command line: `python -m helpers.corpora {cadec,ade} SRC OUT.jsonl [--strict]`.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from .io import DataError, read_jsonl, read_text_file, write_jsonl
from .schemas import dedupe, load_reports_located, validate_report

CADEC_LABELS = {"ADR": "adverse_event", "Drug": "drug"}


class AnnotationMismatch(DataError):
    """An annotation whose text cannot be found where (or near where) its offsets say."""


class CorpusWarning(UserWarning):
    """An annotation was relocated or skipped while loading a corpus (non-strict mode)."""
CADEC_TYPES = ("ADR", "Drug", "Disease", "Symptom", "Finding")
KINDS = ("cadec", "ade")


def _read_raw(path: Path) -> str:
    """A file's text with line endings kept as they are, so character offsets stay right; not
    UTF-8 (or binary, compressed) raises DataError naming file and line; a BOM is dropped."""
    return read_text_file(path)


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


# ---- CADEC ------------------------------------------------------------------------------------------
def parse_ann_line(line: str, text: str, where: str) -> tuple[str, str, list[tuple[int, int]]] | None:
    """One brat text-bound line -> (type, label text, fragments); None for lines we do not use."""
    if not line.strip() or line.startswith("#") or not line.startswith("T"):
        return None
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) != 3:
        raise DataError(f"{where}: expected 'ID<TAB>TYPE START END[;START END...]<TAB>TEXT', "
                        f"got {len(parts)} tab-separated fields")
    head = parts[1].split(" ", 1)
    if len(head) != 2:
        raise DataError(f"{where}: no offsets after the type in {parts[1]!r}")
    kind, offsets = head
    frags = []
    for frag in offsets.split(";"):
        m = re.fullmatch(r"\s*(\d+)\s+(\d+)\s*", frag)
        if not m:
            raise DataError(f"{where}: bad offsets {frag!r} (expected 'START END')")
        s, e = int(m.group(1)), int(m.group(2))
        if not 0 <= s < e <= len(text):
            raise DataError(f"{where}: offsets {s} {e} outside the text ({len(text)} characters)")
        frags.append((s, e))
    label_text = " ".join(text[s:e] for s, e in frags)
    if kind in CADEC_LABELS and not _same_text(label_text, parts[2]):
        shifted = _shift_fragments(text, frags, parts[2])
        if shifted is None:
            raise AnnotationMismatch(f"{where}: annotation text {parts[2]!r} does not match the "
                                     f"text at its offsets {label_text!r}")
        frags = shifted
        label_text = " ".join(text[s:e] for s, e in frags)
    return kind, " ".join(label_text.split()), frags


def _shift_fragments(text: str, frags: list[tuple[int, int]],
                     ann_text: str) -> list[tuple[int, int]] | None:
    """The smallest common shift of all fragments that makes them read the annotation text (offsets
    counted in another encoding or line-ending convention drift by a few characters); None if
    there is none."""
    pieces, pos = [], 0
    for s, e in frags:
        pieces.append(ann_text[pos:pos + e - s])
        pos += e - s + 1
    if pos - 1 != len(ann_text):
        return None
    s0 = frags[0][0]
    deltas = sorted((m.start() - s0 for m in re.finditer(re.escape(pieces[0]), text)), key=abs)
    for d in deltas:
        if all(0 <= s + d and e + d <= len(text) and text[s + d:e + d] == piece
               for (s, e), piece in zip(frags, pieces)):
            return [(s + d, e + d) for s, e in frags]
    return None


def load_cadec_document(txt: Path, ann: Path, strict: bool = False) -> dict[str, Any]:
    """One CADEC post and its annotation file as a canonical report (id = file name). An ADR or
    Drug whose text is not at its offsets is moved by the smallest shift that fits; if none fits
    it is skipped with a CorpusWarning, or raises with `strict`."""
    text = _read_raw(txt)
    if not text.strip():
        raise DataError(f"{txt}:1: empty post")
    labels = []
    for n, line in enumerate(_read_raw(ann).splitlines(), 1):
        try:
            parsed = parse_ann_line(line, text, f"{ann}:{n}")
        except AnnotationMismatch as e:
            if strict:
                raise
            warnings.warn(f"{e}; annotation skipped", CorpusWarning, stacklevel=2)
            continue
        if parsed and parsed[0] in CADEC_LABELS:
            labels.append(parsed)
    labels.sort(key=lambda x: x[2][0])
    spans = sorted({(CADEC_LABELS[k], s, e) for k, _, frags in labels for s, e in frags},
                   key=lambda x: (x[1], x[2], x[0]))
    rec = {"id": txt.stem, "text": text,
           "drugs": dedupe(t for k, t, _ in labels if k == "Drug"),
           "adverse_events": dedupe(t for k, t, _ in labels if k == "ADR"),
           "spans": [{"label": lab, "start": s, "end": e, "text": text[s:e]} for lab, s, e in spans],
           "source": "cadec"}
    return validate_report(rec, str(ann))


def load_cadec(folder: Path | str, strict: bool = False) -> list[dict[str, Any]]:
    """A CADEC folder (text/*.txt with original/*.ann) as canonical reports, sorted by name."""
    folder = Path(folder)
    text_dir, ann_dir = folder / "text", folder / "original"
    if not text_dir.is_dir() or not ann_dir.is_dir():
        raise DataError(f"{folder}: a CADEC folder needs 'text/' and 'original/' sub-folders")
    texts = sorted(text_dir.glob("*.txt"))
    if not texts:
        raise DataError(f"{text_dir}: no .txt posts")
    out = []
    for txt in texts:
        ann = ann_dir / f"{txt.stem}.ann"
        if not ann.exists():
            raise DataError(f"{txt}: no annotation file {ann}")
        out.append(load_cadec_document(txt, ann, strict))
    return out


# ---- ADE Corpus v2 ------------------------------------------------------------------------------------
def _occurrences(sentence: str, needle: str) -> list[int]:
    """(start, end) of each occurrence of a string in a sentence: exact first, else ignoring case
    and runs of whitespace."""
    found = [(m.start(), m.end()) for m in re.finditer(re.escape(needle), sentence)]
    if not found:
        loose = r"\s+".join(re.escape(part) for part in needle.split())
        found = [(m.start(), m.end()) for m in re.finditer(loose, sentence, flags=re.IGNORECASE)]
    return found


def locate_pair(sentence: str, effect: str, e_begin: int, drug: str, d_begin: int,
                where: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Sentence spans (start, end) of an effect and a drug; their file offsets (abstract-based)
    only decide between repeated occurrences, through the distance between the two."""
    eff, drg = _occurrences(sentence, effect), _occurrences(sentence, drug)
    if not eff:
        raise AnnotationMismatch(f"{where}: effect {effect!r} does not occur in the sentence")
    if not drg:
        raise AnnotationMismatch(f"{where}: drug {drug!r} does not occur in the sentence")
    wanted = e_begin - d_begin
    return min(((e, d) for e in eff for d in drg),
               key=lambda ed: (abs((ed[0][0] - ed[1][0]) - wanted), ed[0][0], ed[1][0]))


def parse_ade_line(line: str, where: str) -> dict[str, Any]:
    """One DRUG-AE.rel line -> its PMID, sentence, effect and drug (with file offsets)."""
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 8:
        raise DataError(f"{where}: expected 8 '|'-separated fields "
                        f"PMID|sentence|effect|begin|end|drug|begin|end, got {len(parts)}")
    # a '|' inside the sentence would shift the fields: the last six are fixed
    pmid, sentence = parts[0].strip(), "|".join(parts[1:-6])
    effect, e_b, e_e, drug, d_b, d_e = parts[-6:]
    try:
        e_b, e_e, d_b, d_e = (int(x) for x in (e_b, e_e, d_b, d_e))
    except ValueError:
        raise DataError(f"{where}: offsets must be integers, got "
                        f"{parts[-5]!r} {parts[-4]!r} {parts[-2]!r} {parts[-1]!r}") from None
    if not pmid or not sentence.strip() or not effect.strip() or not drug.strip():
        raise DataError(f"{where}: empty PMID, sentence, effect or drug")
    return {"pmid": pmid, "sentence": sentence, "effect": effect.strip(), "e_begin": e_b,
            "drug": drug.strip(), "d_begin": d_b}


def load_ade(path: Path | str, strict: bool = False) -> list[dict[str, Any]]:
    """ADE Corpus v2 DRUG-AE.rel as canonical reports, one per (PMID, sentence), in file order.
    A drug or effect not found in its sentence skips that line with a CorpusWarning (raises with
    `strict`); a malformed line always raises."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    per_pmid: dict[str, int] = {}
    for n, line in enumerate(_read_raw(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        row = parse_ade_line(line, where)
        key = (row["pmid"], row["sentence"])
        if key not in groups:
            k = per_pmid[row["pmid"]] = per_pmid.get(row["pmid"], 0) + 1
            groups[key] = {"id": f"ade-{row['pmid']}-{k}", "text": row["sentence"], "spans": set(),
                           "where": where}
        try:
            e, d = locate_pair(row["sentence"], row["effect"], row["e_begin"], row["drug"],
                               row["d_begin"], where)
        except AnnotationMismatch as err:
            if strict:
                raise
            warnings.warn(f"{err}; line skipped", CorpusWarning, stacklevel=2)
            continue
        groups[key]["spans"].add(("adverse_event",) + e)
        groups[key]["spans"].add(("drug",) + d)
    if not any(g["spans"] for g in groups.values()):
        raise DataError(f"{path}: no annotated sentences")
    out = []
    for g in groups.values():
        if not g["spans"]:
            continue
        text = g["text"]
        spans = sorted(g["spans"], key=lambda x: (x[1], x[2], x[0]))
        rec = {"id": g["id"], "text": text,
               "drugs": dedupe(text[s:e] for lab, s, e in spans if lab == "drug"),
               "adverse_events": dedupe(text[s:e] for lab, s, e in spans if lab == "adverse_event"),
               "spans": [{"label": lab, "start": s, "end": e, "text": text[s:e]} for lab, s, e in spans],
               "source": "ade"}
        out.append(validate_report(rec, g["where"]))
    return out


# ---- conversion ----------------------------------------------------------------------------------------
def load_corpus(kind: str, src: Path | str, strict: bool = False) -> list[dict[str, Any]]:
    """Load a corpus of a named kind ('cadec' folder or 'ade' DRUG-AE.rel file)."""
    if kind == "cadec":
        return load_cadec(src, strict)
    if kind == "ade":
        return load_ade(src, strict)
    raise ValueError(f"unknown corpus kind {kind!r}; expected one of {KINDS}")


def convert_corpus(kind: str, src: Path | str, out_jsonl: Path | str, strict: bool = False) -> int:
    """Write a corpus as canonical JSONL (usable as `test_file`); return the number of reports."""
    reports = load_corpus(kind, src, strict)
    write_jsonl(out_jsonl, reports)
    return len(reports)


# ---- user test files (`--test-file`) ---------------------------------------------------------------
RESERVED_SPLITS = ("train", "val", "test", "test_unseen", "handwritten", "handwritten_blind")
USER_PREFIX = "user-"


def test_file_kind(path: Path) -> str:
    """What a `--test-file` is: 'cadec' (a folder), 'ade' (a .rel file) or 'reports' (.jsonl/.json)."""
    if path.is_dir():
        return "cadec"
    if path.suffix == ".rel":
        return "ade"
    if path.suffix in (".jsonl", ".json"):
        return "reports"
    raise DataError(f"{path}: expected a .jsonl or .json file of reports, a CADEC folder or an "
                    f"ADE DRUG-AE.rel file (got a {path.suffix or 'suffix-less'} file)")


def split_name(path: Path | str) -> str:
    """The split name a user test file is scored under: `user-<name>`, which can never be one of
    the synthetic splits (train, val, test, test_unseen) or the hand-written ones."""
    path = Path(path).resolve() if Path(path).is_dir() else Path(path)
    name = path.name if path.is_dir() else (path.parent.name or path.stem) if path.suffix == ".rel" \
        else path.stem
    name = re.sub(r"[^\w.-]+", "_", name).strip("._") or "file"
    return name if name.startswith(USER_PREFIX) else f"{USER_PREFIX}{name}"


def _check_ids(reports: list[dict[str, Any]], where: list[str]) -> None:
    """Ids are what predictions are joined on: a repeated id is an error naming both places."""
    seen: dict[str, str] = {}
    for rec, w in zip(reports, where):
        key = str(rec["id"])
        if key in seen:
            raise DataError(f"{w}: id {key!r} repeats the report at {seen[key]}")
        seen[key] = w


def load_test_file(path: Path | str, strict: bool = False) -> list[dict[str, Any]]:
    """Every report of a user test file (canonical JSONL, 2023-study JSON/JSONL, a CADEC folder or an
    ADE DRUG-AE.rel), validated; anything wrong raises one DataError `file:line: what is wrong`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    kind = test_file_kind(path)
    if kind == "reports":
        located = load_reports_located(path)
        where, reports = [w for w, _ in located], [r for _, r in located]
    else:
        reports = load_corpus(kind, path, strict)
        where = [f"{path} ({r['id']})" for r in reports]
    if not reports:
        raise DataError(f"{path}:1: no reports in the file (it is empty)")
    _check_ids(reports, where)
    return reports


def main(argv: list[str] | None = None) -> int:
    """`python -m helpers.corpora KIND SRC OUT.jsonl`."""
    ap = argparse.ArgumentParser(prog="python -m helpers.corpora",
                                 description="Convert CADEC or ADE Corpus v2 to canonical JSONL.")
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("src", help="CADEC folder (text/, original/) or ADE DRUG-AE.rel file")
    ap.add_argument("out", help="output .jsonl")
    ap.add_argument("--strict", action="store_true",
                    help="stop at an annotation whose text is not in the document (default: warn, skip)")
    args = ap.parse_args(argv)
    try:
        n = convert_corpus(args.kind, args.src, args.out, args.strict)
    except (DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    reports = read_jsonl(args.out)
    n_d = sum(len(r["drugs"]) for r in reports)
    n_a = sum(len(r["adverse_events"]) for r in reports)
    print(f"{n} reports ({n_d} drugs, {n_a} adverse events) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
