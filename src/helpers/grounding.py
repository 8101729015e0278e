"""Grounding: find every predicted string in the report it came from (docs/design.md section 7).

`locate` tries, in order: the exact string; the string ignoring case and runs of whitespace
(status `case`); the best fuzzy window of whole words (rapidfuzz ratio >= threshold, status
`fuzzy`). Offsets are character offsets into the report, `text[start:end]` is the matched text.

Snapping (`snap_record`) replaces a `case` or `fuzzy` match by the report's own text, so the
system outputs the reporter's words, never a near-copy. In step 5 the stored `parsed` record is
snapped by default and the model's own strings are kept beside it (`parsed_unsnapped`), and the
`grounding` list always describes the model's own strings, so both can be scored.
"""
from __future__ import annotations

import re
from typing import Any

from rapidfuzz import fuzz, process

from . import drug_like
from .drug_like import is_drug_like, trim_drug
from .event_like import is_event_like
from .schemas import FIELDS, dedupe

DEFAULT_FUZZY_THRESHOLD = 85.0
LONG_TEXT_CHARS = 8_000     # above this, the fuzzy search looks only near the best alignment
GROUNDING_STATUSES = ("exact", "case", "fuzzy", "not_found")
_WORD = re.compile(r"\w+(?:['’-]\w+)*")


def _not_found(span_text: str, score: float = 0.0) -> dict[str, Any]:
    return {"text": None, "start": None, "end": None, "status": "not_found", "score": round(score, 1)}


def _is_word_boundary(text: str, start: int, end: int) -> bool:
    """True when the match does not cut a word at either side."""
    left = start == 0 or not (text[start - 1].isalnum() and text[start].isalnum())
    right = end == len(text) or not (text[end - 1].isalnum() and text[end].isalnum())
    return left and right


def _first_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first match on word boundaries, else the first match at all."""
    first = None
    for m in pattern.finditer(text):
        if _is_word_boundary(text, m.start(), m.end()):
            return m
        first = first or m
    return first


def _windows(text: str, n_words: int) -> list[tuple[int, int]]:
    """Character ranges of every run of n_words-1 .. n_words+1 consecutive words of the text."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    out = []
    for size in range(max(1, n_words - 1), n_words + 2):
        for i in range(len(words) - size + 1):
            out.append((words[i][0], words[i + size - 1][1]))
    return out


def locate(span_text: str, text: str, fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD) -> dict[str, Any]:
    """Where a predicted string occurs in the report: exact, then case/space-insensitive, then fuzzy."""
    needle = (span_text or "").strip()
    if not needle or not text or len(needle) > 2 * len(text) + 2000:  # far longer: no match possible
        return _not_found(needle)
    exact = _first_match(re.compile(re.escape(needle)), text)
    if exact and _is_word_boundary(text, exact.start(), exact.end()):
        return _hit(exact.start(), exact.end(), text, "exact", 100.0)
    loose = r"\s+".join(re.escape(part) for part in needle.split())
    case = _first_match(re.compile(loose, re.IGNORECASE), text)
    if case and _is_word_boundary(text, case.start(), case.end()):
        return _hit(case.start(), case.end(), text, "case", 100.0)
    # a copy that cuts a word ("dark urin") snaps to the whole words when they are close enough
    fuzzy = _best_window(needle, text)
    if fuzzy and fuzzy[2] >= fuzzy_threshold:
        return _hit(fuzzy[0], fuzzy[1], text, "fuzzy", fuzzy[2])
    if exact:
        return _hit(exact.start(), exact.end(), text, "exact", 100.0)
    if case:
        return _hit(case.start(), case.end(), text, "case", 100.0)
    return _not_found(needle, fuzzy[2] if fuzzy else 0.0)


def _hit(start: int, end: int, text: str, status: str, score: float) -> dict[str, Any]:
    return {"text": text[start:end], "start": start, "end": end, "status": status, "score": round(score, 1)}


def _region(needle: str, text: str) -> tuple[int, int]:
    """The part of a long report worth a word-window search: around the needle's best partial
    alignment (rapidfuzz, linear in the text), so a 1 MB report costs milliseconds, not seconds."""
    if len(text) <= LONG_TEXT_CHARS:
        return 0, len(text)
    al = fuzz.partial_ratio_alignment(" ".join(needle.lower().split()), text.lower())
    margin = len(needle) + 64
    return max(0, al.dest_start - margin), min(len(text), al.dest_end + margin)


def _best_window(needle: str, text: str) -> tuple[int, int, float] | None:
    """The run of whole words most similar to the needle (rapidfuzz ratio, case/space-insensitive)."""
    lo, hi = _region(needle, text)
    windows = [(s + lo, e + lo) for s, e in _windows(text[lo:hi], max(1, len(_WORD.findall(needle))))]
    if not windows:
        return None
    choices = [" ".join(text[s:e].lower().split()) for s, e in windows]
    # extractOne keeps the first of equal scores; windows are ordered by size, then position
    _, score, idx = process.extractOne(" ".join(needle.lower().split()), choices, scorer=fuzz.ratio)
    return windows[idx][0], windows[idx][1], float(score)


def ground_prediction(parsed: dict[str, list[str]] | None, text: str,
                      fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD) -> list[dict[str, Any]]:
    """One grounding entry per predicted string: field, predicted, start, end, matched_text, status, score."""
    if not parsed:
        return []
    out = []
    for field in FIELDS:
        for predicted in parsed.get(field, []):
            hit = locate(predicted, text, fuzzy_threshold)
            out.append({"field": field, "predicted": predicted, "start": hit["start"], "end": hit["end"],
                        "matched_text": hit["text"], "status": hit["status"], "score": hit["score"]})
    return out


def snap_record(parsed: dict[str, list[str]] | None, grounding: list[dict[str, Any]],
                text: str = "") -> dict[str, list[str]] | None:
    """The record with each case/fuzzy match replaced by the report's own text (then deduplicated) and
    without strings that hold no content word (helpers.drug_like.has_content); events that cannot be
    reactions (helpers.event_like: a lone body part, "symptoms", a drug name) go. Drugs are then trimmed
    to their names (drug_like.trim_drug: no dose, form or possessive; a trimmed string with no content
    word left, "f/u", is dropped) and dropped when the model also
    listed them as adverse events (a span is one or the other; small models copy an event into both
    lists when a report names no drug, docs/design.md section 7), when they cannot be drug names
    (drug_like.is_drug_like: reactions, indications, shorthand, sentences) or, given the report
    `text`, when they are found only inside an e-mail or web address or only in header or signature lines
    (drug_like.outside_message)."""
    if parsed is None:
        return None
    by_key = {(g["field"], g["predicted"]): g for g in grounding}
    out = {}
    for field in FIELDS:
        items = []
        for predicted in parsed.get(field, []):
            g = by_key.get((field, predicted))
            items.append(g["matched_text"] if g and g["status"] in ("case", "fuzzy") else predicted)
        out[field] = dedupe([x for x in items if drug_like.has_content(x)])
    out["adverse_events"] = [e for e in out["adverse_events"] if is_event_like(e)]
    events = {e.casefold() for e in out["adverse_events"]}
    outside = {g["matched_text"] for g in grounding if text and g["field"] == "drugs"
                  and g["start"] is not None and (drug_like.in_address(text, g["start"], g["end"])
                                                  or drug_like.outside_message(text, g["start"], g["end"]))}
    kept = [d for d in out["drugs"] if d.casefold() not in events and d not in outside]
    out["drugs"] = dedupe([t for t in map(trim_drug, kept)
                           if t.casefold() not in events and drug_like.has_content(t) and is_drug_like(t)])
    return out


def grounding_rate(grounding: list[dict[str, Any]]) -> float | None:
    """Share of predicted strings found in the input (any status but not_found); None with no predictions."""
    if not grounding:
        return None
    return sum(g["status"] != "not_found" for g in grounding) / len(grounding)


def highlight_html(text: str, grounding: list[dict[str, Any]]) -> str:
    """The report as HTML with every grounded span in <mark> (drugs and events in two colours)."""
    import html

    colours = {"drugs": "#ffd7a8", "adverse_events": "#b9e6ff"}
    spans = sorted({(g["start"], g["end"], g["field"]) for g in grounding if g["start"] is not None})
    out, pos = [], 0
    for start, end, field in spans:
        if start < pos:  # overlapping spans: keep the first
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f'<mark style="background:{colours[field]}" title="{field}">'
                   f"{html.escape(text[start:end])}</mark>")
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out).replace("\n", "<br>")
