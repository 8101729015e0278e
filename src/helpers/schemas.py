"""The data contracts, defined once: drug records, reports, predictions, and the bridge to the
2023-study format (the earlier 2023 study's {"input", "output"} records)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .io import DataError, read_json, read_json_list_numbered, read_jsonl_numbered

LABELS = ("drug", "adverse_event")
FIELDS = ("drugs", "adverse_events")
SIDE_EFFECT_GROUPS = ("common", "serious", "allergic", "other")


# ---- drug records (step 1) --------------------------------------------------------------------
DRUG_KEYS = ("name", "generic_names", "brand_names", "drug_class", "uses", "side_effects",
             "missing_sections", "source", "source_url", "fetched_at", "content_hash")


def validate_drug_record(rec: dict[str, Any], where: str = "drug record") -> dict[str, Any]:
    """Check a drug record has every key with the right type; raise DataError naming `where`."""
    missing = [k for k in DRUG_KEYS if k not in rec]
    if missing:
        raise DataError(f"{where}: missing keys {missing}")
    for k in ("name", "source"):
        if not isinstance(rec[k], str) or not rec[k].strip():
            raise DataError(f"{where}: {k!r} must be a non-empty string")
    for k in ("generic_names", "brand_names", "uses", "missing_sections"):
        if not isinstance(rec[k], list) or not all(isinstance(x, str) for x in rec[k]):
            raise DataError(f"{where}: {k!r} must be a list of strings")
    se = rec["side_effects"]
    if not isinstance(se, dict) or set(se) - set(SIDE_EFFECT_GROUPS):
        raise DataError(f"{where}: 'side_effects' must map {SIDE_EFFECT_GROUPS} to lists")
    for group, terms in se.items():
        if not isinstance(terms, list) or not all(isinstance(x, str) for x in terms):
            raise DataError(f"{where}: side_effects[{group!r}] must be a list of strings")
    return rec


def all_side_effects(rec: dict[str, Any]) -> list[str]:
    """Every side-effect term of a drug record, groups in order, duplicates removed."""
    seen, out = set(), []
    for group in SIDE_EFFECT_GROUPS:
        for term in rec["side_effects"].get(group, []):
            if term.lower() not in seen:
                seen.add(term.lower())
                out.append(term)
    return out


def load_drug_records(folder: Path | str) -> list[dict[str, Any]]:
    """All `<drug>.json` records of a folder, validated, sorted by name."""
    files = sorted(p for p in Path(folder).glob("*.json") if p.name != "manifest.json")
    return [validate_drug_record(read_json(p), str(p)) for p in files]


# ---- reports (steps 2, 3, 5) ------------------------------------------------------------------
MAX_REPORT_CHARS = 32_000   # a longer "report" is a wrong file, and would reach the model whole


def _check_labels(rec: dict[str, Any], where: str) -> None:
    """drugs / adverse_events: lists of non-blank strings."""
    for k in FIELDS:
        if not isinstance(rec[k], list) or not all(isinstance(x, str) for x in rec[k]):
            got = rec[k] if not isinstance(rec[k], list) else \
                next(x for x in rec[k] if not isinstance(x, str))
            raise DataError(f"{where}: {k!r} must be a list of strings (has {type(got).__name__} "
                            f"{str(got)[:40]!r})")
        for i, x in enumerate(rec[k]):
            if not x.strip():
                raise DataError(f"{where}: {k}[{i}] is blank")


def _check_spans(rec: dict[str, Any], where: str) -> None:
    """Every span is an object {label, start, end, text} with `text[start:end]` of the report."""
    spans = rec.get("spans", [])
    if not isinstance(spans, list):
        raise DataError(f"{where}: 'spans' must be a list of objects, got {type(spans).__name__}")
    for i, span in enumerate(spans):
        if not isinstance(span, dict):
            raise DataError(f"{where}: spans[{i}] must be an object, got {type(span).__name__}")
        s, e = span.get("start"), span.get("end")
        if span.get("label") not in LABELS:
            raise DataError(f"{where}: spans[{i}] has label {span.get('label')!r}, not one of {LABELS}")
        if not (type(s) is int and type(e) is int and 0 <= s < e <= len(rec["text"])):
            raise DataError(f"{where}: spans[{i}] offsets {s!r}..{e!r} are outside the text")
        if rec["text"][s:e] != span.get("text"):
            raise DataError(f"{where}: spans[{i}] text {span.get('text')!r} != text[{s}:{e}] "
                            f"{rec['text'][s:e]!r}")


def validate_report(rec: dict[str, Any], where: str = "report") -> dict[str, Any]:
    """Check a canonical report; every span must be `text[start:end]` of its own text."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for k in ("id", "text", "drugs", "adverse_events"):
        if k not in rec:
            raise DataError(f"{where}: missing key {k!r}")
    if isinstance(rec["id"], bool) or not isinstance(rec["id"], (str, int)) or not str(rec["id"]).strip():
        raise DataError(f"{where}: 'id' must be a non-empty string, got {rec['id']!r}")
    if not isinstance(rec["text"], str) or not rec["text"].strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    if len(rec["text"]) > MAX_REPORT_CHARS:
        raise DataError(f"{where}: 'text' has {len(rec['text'])} characters, over the "
                        f"{MAX_REPORT_CHARS} a report may have")
    _check_labels(rec, where)
    if "genre" in rec and (not isinstance(rec["genre"], str) or not rec["genre"].strip()):
        raise DataError(f"{where}: 'genre' must be a non-empty string")
    _check_spans(rec, where)
    return rec


def gold(rec: dict[str, Any]) -> dict[str, list[str]]:
    """The extraction target of a report: the canonical record."""
    return {"drugs": list(rec["drugs"]), "adverse_events": list(rec["adverse_events"])}


def gold_context(rec: dict[str, Any]) -> dict[str, Any]:
    """What a prediction record carries besides the gold strings, so step 6 can score from
    prediction files alone: the gold character spans and the report's genre, where it has them."""
    out: dict[str, Any] = {}
    if "spans" in rec:
        out["gold_spans"] = [{"label": s["label"], "start": s["start"], "end": s["end"]}
                             for s in rec["spans"]]
    if rec.get("genre"):
        out["genre"] = rec["genre"]
    return out


def answer_json(rec: dict[str, Any]) -> str:
    """The assistant's answer as the models are trained to write it (compact, fixed key order)."""
    return json.dumps(gold(rec), ensure_ascii=False)


# ---- predictions (step 5) ---------------------------------------------------------------------
PREDICTION_KEYS = ("id", "text", "gold", "raw", "parsed", "parse_ok", "grounding")


def validate_prediction(rec: dict[str, Any], where: str = "prediction") -> dict[str, Any]:
    """Check a prediction record has the keys step 6 scores from; raise DataError naming `where`."""
    missing = [k for k in PREDICTION_KEYS if k not in rec]
    if missing:
        raise DataError(f"{where}: missing keys {missing}")
    if rec["parse_ok"] and not isinstance(rec["parsed"], dict):
        raise DataError(f"{where}: parse_ok is true but 'parsed' is not an object")
    return rec


# ---- the 2023-study format ---------------------------------------------------------------------
STUDY_2023_ID_PREFIX = "study2023"

def _study2023_labels(out: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """(drugs, adverse_events) of a 2023-study output object; wrong types raise, never drop."""
    if "drug_name" in out and "drugs" in out:
        raise DataError(f"{where}: 'output' has both 'drug_name' and 'drugs'")
    key = "drug_name" if "drug_name" in out else "drugs"
    drug = out.get(key)
    if drug is None or drug == "":
        drugs: list[str] = []
    elif isinstance(drug, str):
        drugs = [drug]
    elif isinstance(drug, list) and all(isinstance(x, str) for x in drug):
        drugs = list(drug)
    else:
        raise DataError(f"{where}: {key!r} must be a string or a list of strings, got "
                        f"{type(drug).__name__} {str(drug)[:40]!r}")
    events = out.get("adverse_events")
    events = [] if events is None else events
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        bad = events if not isinstance(events, list) else next(e for e in events if not isinstance(e, str))
        raise DataError(f"{where}: 'adverse_events' must be a list of strings (has "
                        f"{type(bad).__name__} {str(bad)[:40]!r})")
    for name, values in ((key, drugs), ("adverse_events", events)):
        if any(not v.strip() for v in values):
            raise DataError(f"{where}: {name!r} holds a blank string")
    return drugs, list(events)


def from_2023_study(item: dict[str, Any], idx: int,
                    where: str = "2023-study record") -> dict[str, Any]:
    """A 2023-study record {"input", "output": "{\\"drug_name\\", \\"adverse_events\\"}"} -> canonical report."""
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
    if "input" not in item or "output" not in item:
        raise DataError(f"{where}: expected keys 'input' and 'output'")
    if not isinstance(item["input"], str) or not item["input"].strip():
        raise DataError(f"{where}: 'input' must be the report text (a non-empty string), got "
                        f"{str(item['input'])[:40]!r}")
    out = item["output"]
    if isinstance(out, str):
        try:
            out = json.loads(out)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: 'output' is not valid JSON ({e.msg})") from e
        except RecursionError:
            raise DataError(f"{where}: 'output' JSON nested too deeply") from None
    if not isinstance(out, dict):
        raise DataError(f"{where}: 'output' must be a JSON object")
    drugs, events = _study2023_labels(out, where)
    rec = {"id": str(item.get("id", f"{STUDY_2023_ID_PREFIX}-{idx:05d}")), "text": item["input"],
           "drugs": drugs, "adverse_events": events}
    return validate_report(rec, where)


def to_2023_study(rec: dict[str, Any]) -> dict[str, Any]:
    """Canonical report -> 2023-study record (drugs[0] becomes drug_name; output is a JSON string)."""
    drugs = rec.get("drugs") or []
    out = {"drug_name": drugs[0] if drugs else "", "adverse_events": list(rec["adverse_events"])}
    return {"input": rec["text"], "output": json.dumps(out, ensure_ascii=False)}


def load_reports_located(path: Path | str) -> list[tuple[str, dict[str, Any]]]:
    """(`file:line`, report) for every report of a canonical JSONL file or a 2023-study JSON list
    (or JSONL), validated; an error names the file, the line and what is wrong."""
    path = Path(path)
    rows = read_jsonl_numbered(path) if path.suffix == ".jsonl" else read_json_list_numbered(path)
    first = rows[0][1] if rows else None
    old_format = isinstance(first, dict) and "input" in first and "text" not in first
    check = (lambda r, i, w: from_2023_study(r, i, w)) if old_format else (lambda r, i, w: validate_report(r, w))
    return [(f"{path}:{n}", check(r, i, f"{path}:{n}")) for i, (n, r) in enumerate(rows)]


def load_reports(path: Path | str) -> list[dict[str, Any]]:
    """Load test or training reports from canonical JSONL or a 2023-study JSON list, validated."""
    return [rec for _, rec in load_reports_located(path)]


def dedupe(items: Iterable[str]) -> list[str]:
    """Remove repeats (case- and space-insensitive), keeping first spelling and order."""
    seen, out = set(), []
    for x in items:
        key = " ".join(x.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(x)
    return out
