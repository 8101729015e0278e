"""What the two baselines (lexicon matcher, encoder token classifier) share: character spans,
and prediction records in the LLMs' exact format (step 5); step 6 scores them like the LLMs'.

The systems themselves live in `baselines_lexicon` and `baselines_encoder`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths
from .io import DataError, write_jsonl
from .schemas import FIELDS, LABELS, dedupe, gold, gold_context, validate_prediction

SYSTEMS = ("lexicon", "encoder")
FIELD_OF = {"drug": "drugs", "adverse_event": "adverse_events"}


@dataclass(frozen=True, order=True)
class Span:
    """A labelled stretch of a report's own text: `text == report_text[start:end]`."""
    start: int
    end: int
    label: str
    text: str


def make_span(text: str, start: int, end: int, label: str) -> Span:
    """A Span cut from `text`, so its string is always the reporter's own."""
    if label not in LABELS:
        raise ValueError(f"span label {label!r} is not one of {LABELS}")
    if not 0 <= start < end <= len(text):
        raise ValueError(f"span offsets {start}..{end} are outside a text of {len(text)} chars")
    return Span(start, end, label, text[start:end])


def gold_spans(report: dict[str, Any], where: str = "report") -> list[Span]:
    """The labelled spans of a canonical report (they carry the char offsets training needs)."""
    if "spans" not in report:
        raise DataError(f"{where} (id {report.get('id')!r}): no 'spans' with character offsets; "
                        "the encoder can only train on reports that have them")
    return sorted(make_span(report["text"], s["start"], s["end"], s["label"])
                  for s in report["spans"])


def remove_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep the longest of overlapping spans (earlier first on ties), returned in text order."""
    kept: list[Span] = []
    for sp in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if all(sp.end <= k.start or sp.start >= k.end for k in kept):
            kept.append(sp)
    return sorted(kept)


def spans_to_record(spans: Sequence[Span]) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Parsed record (strings in text order, repeats removed) and grounding entries for it."""
    parsed: dict[str, list[str]] = {f: [] for f in FIELDS}
    grounding: list[dict[str, Any]] = []
    for field in FIELDS:
        chosen = [s for s in sorted(spans) if FIELD_OF[s.label] == field]
        keep = set(dedupe(s.text for s in chosen))
        for sp in chosen:
            if sp.text in keep:
                keep.discard(sp.text)
                parsed[field].append(sp.text)
                grounding.append({"field": field, "predicted": sp.text, "start": sp.start,
                                  "end": sp.end, "matched_text": sp.text, "status": "exact",
                                  "score": 100})
    return parsed, grounding


def prediction_record(report: dict[str, Any], spans: Sequence[Span], system: str) -> dict[str, Any]:
    """One prediction line, shaped exactly like the LLMs' (raw = the parsed record as JSON)."""
    for sp in spans:
        if report["text"][sp.start:sp.end] != sp.text:
            raise ValueError(f"report {report['id']!r}: span {sp} is not the text's own")
    parsed, grounding = spans_to_record(spans)
    rec = {"id": report["id"], "text": report["text"], "gold": gold(report),
           "raw": json.dumps(parsed, ensure_ascii=False), "parsed": parsed, "parse_ok": True,
           "grounding": grounding, "parse_status": "ok", "system": system, **gold_context(report)}
    return validate_prediction(rec, f"{system} prediction for {report['id']!r}")


def write_span_predictions(run: str, split: str, system: str, reports: Sequence[dict[str, Any]],
                           spans: Sequence[Sequence[Span]]) -> Path:
    """Write a system's predictions for a split where step 5 writes the LLMs' (atomically)."""
    if len(reports) != len(spans):
        raise ValueError(f"{system}/{split}: {len(reports)} reports but {len(spans)} span lists")
    records = [prediction_record(r, s, system) for r, s in zip(reports, spans)]
    return write_jsonl(paths.predictions_file(run, split, system), records)


def _negated_and_diseases(report: dict[str, Any]) -> tuple[set[str], set[str]]:
    """What the synthetic generator recorded as negated symptoms and as diseases treated."""
    meta = report.get("meta", {})
    negated = {x.lower() for x in meta.get("negated", [])}
    diseases = {str(meta.get(k, "")).lower() for k in ("disease", "comed_disease")} - {""}
    return negated, diseases


def context_errors(reports: Sequence[dict[str, Any]],
                   predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Why a context-blind system adds events: its false-positive events sorted into negated
    symptoms, diseases treated and other (from the reports' generator `meta`), and the events it missed."""
    fp = {"negated symptom": 0, "disease treated": 0, "other": 0}
    missed = 0
    for rep, p in zip(reports, predictions):
        negated, diseases = _negated_and_diseases(rep)
        gold_ae = {x.lower() for x in p["gold"]["adverse_events"]}
        found = {x.lower() for x in (p["parsed"] or {}).get("adverse_events", [])}
        for a in found - gold_ae:
            kind = ("negated symptom" if any(a in n or n in a for n in negated) else
                    "disease treated" if any(a in d or d in a for d in diseases) else "other")
            fp[kind] += 1
        missed += len(gold_ae - found)
    return {"false_positives": fp, "missed": missed}
