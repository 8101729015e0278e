"""Span-level scores, the way the entity-recognition literature reports CADEC: a predicted mention is
a (start, end, label) stretch of the report, scored against the gold spans with micro P/R/F1 per
label and overall, under two matchings:

- `strict`: same start, same end, same label;
- `partial`: the two stretches share at least one character and have the same label.

Pairs are one-to-one (greedy: identical boundaries first, then by the number of shared characters).

Where the predicted spans come from: a system outputs strings; step 5 located each one in the report
(`grounding`, status exact / case / fuzzy, with character offsets). A located string that survives
in the scored record (`parsed`, i.e. after snapping) is a claim about the words it names, so it is
projected onto every mention of those words in the report (case-insensitive, whole words): a
drug named twice in a post is found twice. A string of the scored record that could not be
located is a predicted mention that matches no gold span: one false positive of its label.

Gold spans travel with each prediction record (`gold_spans`, see `schemas.gold_context`); a
prediction set in which any record lacks them has no span scores (NaN, shown as "-").
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .io import DataError
from .metrics import GROUNDED, greedy_pairs, predicted, scores_with_ci
from .schemas import FIELDS, LABELS

SPAN_MATCHINGS = ("strict", "partial")
SPAN_SCOPES = LABELS + ("all",)
LABEL_OF = {"drugs": "drug", "adverse_events": "adverse_event"}
Span = tuple[int, int, str]


def gold_spans(rec: dict[str, Any]) -> list[Span] | None:
    """The gold (start, end, label) spans a prediction record carries; None when it has none."""
    raw = rec.get("gold_spans")
    if raw is None:
        return None
    out = set()
    for i, s in enumerate(raw):
        start, end, label = s.get("start"), s.get("end"), s.get("label")
        if label not in LABELS or not (isinstance(start, int) and isinstance(end, int) and start < end):
            raise DataError(f"prediction {rec.get('id')!r}: gold_spans[{i}] = {s!r} is not a "
                            f"(start < end, label in {LABELS}) span")
        out.add((start, end, label))
    return sorted(out)


def _is_word_edge(text: str, start: int, end: int) -> bool:
    """True when the stretch does not cut a word at either side."""
    left = start == 0 or not (text[start - 1].isalnum() and text[start].isalnum())
    right = end == len(text) or not (text[end - 1].isalnum() and text[end].isalnum())
    return left and right


def mentions(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Every whole-word, case-insensitive occurrence of text[start:end] in the text (itself included)."""
    words = text[start:end].split()
    found = {(start, end)}
    if words:
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)
        found |= {(m.start(), m.end()) for m in pattern.finditer(text)
                  if _is_word_edge(text, m.start(), m.end())}
    return sorted(found)


def predicted_spans(rec: dict[str, Any], source: str = "parsed",
                    all_mentions: bool = True) -> list[Span]:
    """The spans a prediction claims: located strings still in the scored record, with their mentions."""
    kept = {f: {x.casefold() for x in items} for f, items in predicted(rec, source).items()}
    text = rec.get("text") or ""
    out: set[Span] = set()
    for g in rec.get("grounding") or []:
        field, start, end = g.get("field"), g.get("start"), g.get("end")
        if field not in FIELDS or g.get("status") not in GROUNDED or start is None or end is None:
            continue
        names = {str(g.get("predicted") or "").casefold(), text[start:end].casefold()}
        if not names & kept[field]:
            continue
        where = mentions(text, start, end) if all_mentions else [(start, end)]
        out |= {(s, e, LABEL_OF[field]) for s, e in where}
    return sorted(out)


def unlocated(rec: dict[str, Any], source: str = "parsed") -> list[str]:
    """Labels of the scored record's strings that grounding could not locate in the report."""
    text = rec.get("text") or ""
    located: dict[str, set[str]] = {f: set() for f in FIELDS}
    for g in rec.get("grounding") or []:
        if g.get("field") in FIELDS and g.get("status") in GROUNDED and g.get("start") is not None:
            located[g["field"]] |= {str(g.get("predicted") or "").casefold(),
                                    text[g["start"]:g["end"]].casefold()}
    return [LABEL_OF[f] for f, items in predicted(rec, source).items()
            for x in items if x.casefold() not in located[f]]


def match_spans(gold: Sequence[Span], pred: Sequence[Span], matching: str) -> list[tuple[int, int]]:
    """One-to-one (gold index, predicted index) pairs of same-label spans under a matching."""
    if matching not in SPAN_MATCHINGS:
        raise ValueError(f"unknown span matching {matching!r}; expected one of {SPAN_MATCHINGS}")
    candidates = []
    for i, (gs, ge, gl) in enumerate(gold):
        for j, (ps, pe, pl) in enumerate(pred):
            same = (gs, ge) == (ps, pe)
            shared = min(ge, pe) - max(gs, ps)
            if gl == pl and (same or (matching == "partial" and shared > 0)):
                candidates.append((not same, -shared, i, j))
    return greedy_pairs(candidates)


def report_span_counts(gold: Sequence[Span], pred: Sequence[Span],
                       unlocated_labels: Sequence[str] = ()) -> dict[str, int]:
    """tp/fp/fn of one report per label, matching and overall (`spans_<scope>_<matching>_<k>`);
    every unlocated predicted string adds a false positive to its label."""
    row: dict[str, int] = {}
    for matching in SPAN_MATCHINGS:
        totals = np.zeros(3, dtype=int)
        for label in LABELS:
            g = [s for s in gold if s[2] == label]
            p = [s for s in pred if s[2] == label]
            tp = len(match_spans(g, p, matching))
            extra = sum(1 for x in unlocated_labels if x == label)
            counts = np.array([tp, len(p) - tp + extra, len(g) - tp])
            totals += counts
            row.update(zip((f"spans_{label}_{matching}_{k}" for k in ("tp", "fp", "fn")), counts.tolist()))
        row.update(zip((f"spans_all_{matching}_{k}" for k in ("tp", "fp", "fn")), totals.tolist()))
    return row


def span_counts(preds: Sequence[dict[str, Any]], source: str = "parsed") -> pd.DataFrame | None:
    """One row of span counts per report; None when any record lacks gold spans."""
    rows = []
    for rec in preds:
        gold = gold_spans(rec)
        if gold is None:
            return None
        rows.append({"id": rec.get("id"), **report_span_counts(gold, predicted_spans(rec, source),
                                                                unlocated(rec, source))})
    return pd.DataFrame(rows) if rows else None


def span_scores(preds: Sequence[dict[str, Any]], n_boot: int = 200, seed: int = 13,
                source: str = "parsed") -> dict[str, float]:
    """Span P/R/F1 with 95% bootstrap intervals per scope and matching, as flat columns
    `spans_<scope>_<matching>_<p|r|f1|...>`; NaN everywhere when the records carry no gold spans."""
    counts = span_counts(preds, source)
    row: dict[str, float] = {}
    for scope in SPAN_SCOPES:
        for matching in SPAN_MATCHINGS:
            key = f"spans_{scope}_{matching}"
            if counts is None:
                row.update({f"{key}_{m}": float("nan") for m in ("p", "r", "f1", "p_lo", "p_hi",
                                                                    "r_lo", "r_hi", "f1_lo", "f1_hi")})
                continue
            cols = [f"{key}_{k}" for k in ("tp", "fp", "fn")]
            row.update(scores_with_ci(counts[cols].to_numpy(), key, n_boot, seed))
    return row
