"""The data contracts, defined once: drug records, reports, predictions, and the bridge to the
2023-study format (the earlier 2023 study's {"input", "output"} records)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .io import DataError, read_json, read_jsonl

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
def validate_report(rec: dict[str, Any], where: str = "report") -> dict[str, Any]:
    """Check a canonical report; every span must be `text[start:end]` of its own text."""
    for k in ("id", "text", "drugs", "adverse_events"):
        if k not in rec:
            raise DataError(f"{where}: missing key {k!r}")
    if not isinstance(rec["text"], str) or not rec["text"].strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    for k in FIELDS:
        if not isinstance(rec[k], list) or not all(isinstance(x, str) for x in rec[k]):
            raise DataError(f"{where}: {k!r} must be a list of strings")
    if "genre" in rec and (not isinstance(rec["genre"], str) or not rec["genre"].strip()):
        raise DataError(f"{where}: 'genre' must be a non-empty string")
    for i, span in enumerate(rec.get("spans", [])):
        s, e = span.get("start"), span.get("end")
        if span.get("label") not in LABELS:
            raise DataError(f"{where}: spans[{i}] has label {span.get('label')!r}, not one of {LABELS}")
        if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(rec["text"])):
            raise DataError(f"{where}: spans[{i}] offsets {s}..{e} are outside the text")
        if rec["text"][s:e] != span.get("text"):
            raise DataError(f"{where}: spans[{i}] text {span.get('text')!r} != text[{s}:{e}] "
                            f"{rec['text'][s:e]!r}")
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


def from_2023_study(item: dict[str, Any], idx: int,
                    where: str = "2023-study record") -> dict[str, Any]:
    """A 2023-study record {"input", "output": "{\\"drug_name\\", \\"adverse_events\\"}"} -> canonical report."""
    if "input" not in item or "output" not in item:
        raise DataError(f"{where}: expected keys 'input' and 'output'")
    out = item["output"]
    if isinstance(out, str):
        try:
            out = json.loads(out)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: 'output' is not valid JSON ({e.msg})") from e
    if not isinstance(out, dict):
        raise DataError(f"{where}: 'output' must be a JSON object")
    drug = out.get("drug_name")
    events = out.get("adverse_events") or []
    if not isinstance(events, list):
        raise DataError(f"{where}: 'adverse_events' must be a list")
    return {"id": str(item.get("id", f"{STUDY_2023_ID_PREFIX}-{idx:05d}")), "text": item["input"],
            "drugs": [drug] if isinstance(drug, str) and drug else [],
            "adverse_events": [str(e) for e in events]}


def to_2023_study(rec: dict[str, Any]) -> dict[str, Any]:
    """Canonical report -> 2023-study record (drugs[0] becomes drug_name; output is a JSON string)."""
    drugs = rec.get("drugs") or []
    out = {"drug_name": drugs[0] if drugs else "", "adverse_events": list(rec["adverse_events"])}
    return {"input": rec["text"], "output": json.dumps(out, ensure_ascii=False)}


def load_reports(path: Path | str) -> list[dict[str, Any]]:
    """Load test or training reports from canonical JSONL or a 2023-study JSON list, validated."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        if rows and "input" in rows[0] and "text" not in rows[0]:
            return [from_2023_study(r, i, f"{path}:{i + 1}") for i, r in enumerate(rows)]
        return [validate_report(r, f"{path}:{i + 1}") for i, r in enumerate(rows)]
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    if data and isinstance(data[0], dict) and "input" in data[0]:
        return [from_2023_study(r, i, f"{path}[{i}]") for i, r in enumerate(data)]
    return [validate_report(r, f"{path}[{i}]") for i, r in enumerate(data)]


def dedupe(items: Iterable[str]) -> list[str]:
    """Remove repeats (case- and space-insensitive), keeping first spelling and order."""
    seen, out = set(), []
    for x in items:
        key = " ".join(x.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(x)
    return out
