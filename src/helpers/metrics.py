"""Scores of one prediction set (step 6), recomputed from prediction files alone: the set-exact
metric of the earlier 2023 study, per-field P/R/F1 under three matchings, seeded bootstrap intervals,
parse-failure, grounding and invented-drug rates. Span-level scores are in `span_metrics`,
breakdowns (errors, per drug) in `breakdowns`, a whole run in `scoring`, tables in `tables`.

Conventions (documented once here):
- A report whose output did not parse (`parse_ok` false or `parsed` null) predicts nothing.
- set-exact P/R/F1 (the earlier 2023 study's metric): per report the set of drug and adverse-event
  strings, gold against predicted, exact string match, counts summed over reports (micro).
- Per-field scores treat the predicted list as a multiset: a repeated prediction that matches
  nothing counts as a false positive, so repeating an event is punished.
- Items are matched one-to-one. `exact`: identical strings. `normalized`: equal after lower-casing,
  replacing punctuation by spaces and collapsing whitespace. `relaxed`: equal under `normalized`,
  or Dice overlap >= RELAXED_THRESHOLD of their content tokens (function words dropped, plurals
  folded); pairs are taken greedily, best first (exact, then normalized, then by overlap).
- A ratio whose denominator is zero is 0.0 for P/R/F1 (no predictions, no gold) but NaN for a
  rate over reports or strings (grounding rate with nothing predicted, invented-drug rate on a
  split where every report names a drug): "not measurable", shown as "-" in tables.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .io import DataError, read_jsonl
from .schemas import FIELDS, validate_prediction

MATCHINGS = ("exact", "normalized", "relaxed")
RELAXED_THRESHOLD = 0.5
GROUNDED = ("exact", "case", "fuzzy")
# function words ignored by the relaxed overlap, so "pain in my legs" ~ "swelling in my feet" fails
STOPWORDS = frozenset(
    "a an the of in on at to and or with for from by my me i his her their its our your this that "
    "some very is was were be been am are".split())


# ---- strings and matching ---------------------------------------------------------------------
def normalize(text: str) -> str:
    """Case-, space- and punctuation-insensitive form of an item, for the `normalized` matching."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _fold_plural(token: str) -> str:
    """A crude plural fold ("headaches" -> "headache", "dizziness" kept) for relaxed matching."""
    return token[:-1] if len(token) > 3 and token.endswith("s") and not token.endswith("ss") else token


def content_tokens(text: str) -> set[str]:
    """Tokens a relaxed match may share: words minus function words (all words if only those),
    plurals folded."""
    toks = normalize(text).split()
    content = [t for t in toks if t not in STOPWORDS]
    return {_fold_plural(t) for t in content or toks}


def overlap(a: str, b: str) -> float:
    """Dice coefficient of the content tokens of two items (1.0 = same words)."""
    ta, tb = content_tokens(a), content_tokens(b)
    if not ta or not tb:
        return 0.0
    return 2 * len(ta & tb) / (len(ta) + len(tb))


def match_items(gold: Sequence[str], pred: Sequence[str], matching: str,
                threshold: float = RELAXED_THRESHOLD) -> list[tuple[int, int]]:
    """One-to-one (gold index, predicted index) pairs under a matching, best pairs first."""
    if matching not in MATCHINGS:
        raise ValueError(f"unknown matching {matching!r}; expected one of {MATCHINGS}")
    candidates = []
    for i, g in enumerate(gold):
        ng = normalize(g)
        for j, p in enumerate(pred):
            if g == p:
                rank = (2, 1.0)
            elif matching != "exact" and ng and ng == normalize(p):
                rank = (1, 1.0)
            elif matching == "relaxed":
                score = overlap(g, p)
                if score < threshold:
                    continue
                rank = (0, score)
            else:
                continue
            candidates.append((-rank[0], -rank[1], i, j))
    return greedy_pairs(candidates)


def greedy_pairs(candidates: list[tuple[Any, Any, int, int]]) -> list[tuple[int, int]]:
    """One-to-one (gold, predicted) pairs from ranked candidates `(key, key, i, j)`, best first."""
    used_g, used_p, pairs = set(), set(), []
    for _, _, i, j in sorted(candidates):
        if i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0.0 where a denominator is zero)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


# ---- prediction records -------------------------------------------------------------------------
def _str_items(value: Any) -> list[str]:
    """A parsed field as a list of non-empty strings (a lone string becomes a one-item list)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [str(x).strip() for x in value if x is not None and str(x).strip()]


def predicted(rec: dict[str, Any], source: str = "parsed") -> dict[str, list[str]]:
    """What a system predicted for one report; a parse failure predicts the empty record.
    `source="parsed_unsnapped"` scores the model's own strings (before grounding snapped them),
    falling back to `parsed` where a record has no unsnapped copy."""
    parsed = rec.get(source) if isinstance(rec.get(source), dict) else rec.get("parsed")
    if not rec.get("parse_ok") or not isinstance(parsed, dict):
        return {f: [] for f in FIELDS}
    return {f: _str_items(parsed.get(f)) for f in FIELDS}


def gold_of(rec: dict[str, Any]) -> dict[str, list[str]]:
    """The gold record carried by a prediction."""
    g = rec.get("gold") or {}
    return {f: _str_items(g.get(f)) for f in FIELDS}


def load_predictions(path: Path | str) -> list[dict[str, Any]]:
    """A step-5 prediction file, every record checked; an empty file is an error."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no prediction records")
    for i, rec in enumerate(rows):
        where = f"{path}:{i + 1}"
        validate_prediction(rec, where)
        if not isinstance(rec.get("gold"), dict) or any(
                not isinstance(rec["gold"].get(f), list) for f in FIELDS):
            raise DataError(f"{where}: 'gold' must hold lists 'drugs' and 'adverse_events'")
    return rows


# ---- set-exact: the earlier 2023 study's metric --------------------------------------------------
def set_exact_sets(rec: dict[str, Any], source: str = "parsed") -> tuple[set[str], set[str]]:
    """Gold and predicted string sets of one report: its drug(s) plus every adverse event."""
    g, p = gold_of(rec), predicted(rec, source)
    return set(g["drugs"]) | set(g["adverse_events"]), set(p["drugs"]) | set(p["adverse_events"])


def set_exact_scores(preds: Iterable[dict[str, Any]], source: str = "parsed") -> dict[str, float]:
    """The earlier 2023 study's table metric: per-report string sets, exact match, micro P/R/F1."""
    tp = fp = fn = 0
    for rec in preds:
        g, p = set_exact_sets(rec, source)
        tp += len(g & p)
        fp += len(p - g)
        fn += len(g - p)
    prec, rec_, f1 = prf(tp, fp, fn)
    return {"precision": prec, "recall": rec_, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


# ---- per-report counts ------------------------------------------------------------------------------
def report_counts(preds: Sequence[dict[str, Any]], source: str = "parsed") -> pd.DataFrame:
    """One row per report: match counts per field and matching, set-exact counts, parse and grounding."""
    rows = []
    for rec in preds:
        g, p = gold_of(rec), predicted(rec, source)
        row: dict[str, Any] = {"id": rec.get("id")}
        for f in FIELDS:
            for m in MATCHINGS:
                tp = len(match_items(g[f], p[f], m))
                row[f"{f}_{m}_tp"] = tp
                row[f"{f}_{m}_fp"] = len(p[f]) - tp
                row[f"{f}_{m}_fn"] = len(g[f]) - tp
        gs, ps = set_exact_sets(rec, source)
        row.update(set_exact_tp=len(gs & ps), set_exact_fp=len(ps - gs), set_exact_fn=len(gs - ps))
        row["parse_ok"] = bool(rec.get("parse_ok")) and isinstance(rec.get("parsed"), dict)
        grounding = rec.get("grounding") or []
        row["grounding_total"] = len(grounding)
        row["grounding_found"] = sum(1 for e in grounding if e.get("status") in GROUNDED)
        rows.append(row)
    return pd.DataFrame(rows)


def _check_counts(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != 3 or len(counts) == 0:
        raise ValueError("counts must be a non-empty (reports x 3) array of tp, fp, fn")
    return counts


def _resampled_prf(counts: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro P, R, F1 of each bootstrap resample (rows of idx index reports)."""
    sums = counts[idx].sum(axis=1)
    tp, fp, fn = sums[:, 0], sums[:, 1], sums[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return p, r, f


def bootstrap_ci(counts: np.ndarray, n_boot: int, seed: int,
                 alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile intervals of micro P/R/F1, resampling reports (rows of tp, fp, fn) with replacement."""
    counts = _check_counts(counts)
    if n_boot <= 0:
        return {k: (float("nan"), float("nan")) for k in ("p", "r", "f1")}
    idx = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))
    p, r, f = _resampled_prf(counts, idx)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    return {k: tuple(float(x) for x in np.percentile(v, q)) for k, v in (("p", p), ("r", r), ("f1", f))}


def paired_f1_difference(counts_a: np.ndarray, counts_b: np.ndarray, n_boot: int, seed: int,
                         alpha: float = 0.05) -> dict[str, float]:
    """F1(b) - F1(a) on the same reports (rows aligned) with a paired bootstrap interval: both
    systems are scored on the same resampled reports, so report difficulty cancels out."""
    a, b = _check_counts(counts_a), _check_counts(counts_b)
    if a.shape != b.shape:
        raise ValueError(f"paired counts need the same reports: {len(a)} vs {len(b)} rows")
    delta = prf(*b.sum(axis=0))[2] - prf(*a.sum(axis=0))[2]
    if n_boot <= 0:
        return {"delta": delta, "lo": float("nan"), "hi": float("nan")}
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    diff = _resampled_prf(b, idx)[2] - _resampled_prf(a, idx)[2]
    lo, hi = np.percentile(diff, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"delta": delta, "lo": float(lo), "hi": float(hi)}


def scores_with_ci(counts: np.ndarray, key: str, n_boot: int, seed: int) -> dict[str, float]:
    """Micro P/R/F1, summed counts and 95% bootstrap intervals of per-report (tp, fp, fn) rows, as
    flat columns `<key>_p`, `<key>_f1_lo`, `<key>_tp`, ... of a comparison row."""
    arr = _check_counts(counts)
    tp, fp, fn = arr.sum(axis=0)
    p, r, f1 = prf(tp, fp, fn)
    row = {f"{key}_p": p, f"{key}_r": r, f"{key}_f1": f1,
           f"{key}_tp": int(tp), f"{key}_fp": int(fp), f"{key}_fn": int(fn)}
    for metric, (lo, hi) in bootstrap_ci(arr, n_boot, seed).items():
        row[f"{key}_{metric}_lo"], row[f"{key}_{metric}_hi"] = lo, hi
    return row


def field_scores(preds: Sequence[dict[str, Any]], field: str, matching: str) -> dict[str, float]:
    """Micro P/R/F1 and counts of one field under one matching."""
    c = report_counts(preds)
    tp, fp, fn = (int(c[f"{field}_{matching}_{k}"].sum()) for k in ("tp", "fp", "fn"))
    p, r, f = prf(tp, fp, fn)
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}


def parse_failure_rate(preds: Sequence[dict[str, Any]]) -> float:
    """Share of reports whose output did not parse into a record; NaN with no reports."""
    preds = list(preds)
    failed = sum(1 for r in preds if not (r.get("parse_ok") and isinstance(r.get("parsed"), dict)))
    return failed / len(preds) if preds else float("nan")


def grounding_rate(preds: Sequence[dict[str, Any]]) -> float:
    """Share of predicted strings located in the input (grounding status exact, case or fuzzy);
    NaN when nothing was predicted."""
    total = found = 0
    for rec in preds:
        for e in rec.get("grounding") or []:
            total += 1
            found += e.get("status") in GROUNDED
    return found / total if total else float("nan")


def invented_drug_rate(preds: Sequence[dict[str, Any]], source: str = "parsed") -> float:
    """Among reports whose gold names no drug, the share where the system still output >= 1 drug
    (a drug invented where the page, not the report, names it); NaN when every report names a drug
    (or there are no reports): the one definition every table and split uses."""
    no_drug = [r for r in preds if not gold_of(r)["drugs"]]
    if not no_drug:
        return float("nan")
    return sum(1 for r in no_drug if predicted(r, source)["drugs"]) / len(no_drug)


def parse_statuses(preds: Sequence[dict[str, Any]]) -> str:
    """How outputs parsed, e.g. "ok 20, repaired 3, no_json 1" (from each record's parse_status)."""
    counts: dict[str, int] = {}
    for rec in preds:
        status = rec.get("parse_status") or ("ok" if rec.get("parse_ok") else "failed")
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
