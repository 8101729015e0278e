"""Scores of step 6: the seed-compatible metric, per-field P/R/F1 under three matchings with
bootstrap intervals, parse-failure and grounding rates, error types, per-drug breakdown and the
worst reports -- all recomputed from prediction files alone (STUDY.md section 5).

Conventions (documented once here):
- A report whose output did not parse (`parse_ok` false or `parsed` null) predicts nothing.
- Per-field scores treat the predicted list as a multiset: a repeated prediction that matches
  nothing counts as a false positive, so repeating an event is punished.
- Items are matched one-to-one. `exact`: identical strings. `normalized`: equal after lower-casing,
  replacing punctuation by spaces and collapsing whitespace. `relaxed`: equal under `normalized`,
  or Dice overlap >= RELAXED_THRESHOLD of their content tokens (function words dropped, plurals
  folded); pairs are taken greedily, best first (exact, then normalized, then by overlap).
- A ratio whose denominator is zero (no predictions, no gold) is 0.0.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import paths
from .io import DataError, read_json, read_jsonl
from .schemas import FIELDS, validate_prediction

MATCHINGS = ("exact", "normalized", "relaxed")
RELAXED_THRESHOLD = 0.5
GROUNDED = ("exact", "case", "fuzzy")
ERROR_TYPES = ("missed", "extra", "partial")
# function words ignored by the relaxed overlap, so "pain in my legs" ~ "swelling in my feet" fails
STOPWORDS = frozenset(
    "a an the of in on at to and or with for from by my me i his her their its our your this that "
    "some very is was were be been am are".split())
SEED01_OUTPUT_FIELDS = ("prediction", "predicted", "response", "model_output")


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
    candidates.sort()
    used_g, used_p, pairs = set(), set(), []
    for _, _, i, j in candidates:
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


def prediction_files(run: str) -> dict[tuple[str, str], Path]:
    """Every prediction file of a run, keyed by (split, system), sorted."""
    root = paths.predictions_dir(run)
    found = {}
    for path in sorted(root.glob("*/*.jsonl")):
        found[(path.parent.name, path.stem)] = path
    return found


# ---- seed-compatible metric (STUDY.md section 5) -------------------------------------------------
def seed01_sets(rec: dict[str, Any], source: str = "parsed") -> tuple[set[str], set[str]]:
    """Gold and predicted string sets of one report: its drug(s) plus every adverse event."""
    g, p = gold_of(rec), predicted(rec, source)
    return set(g["drugs"]) | set(g["adverse_events"]), set(p["drugs"]) | set(p["adverse_events"])


def seed01_scores(preds: Iterable[dict[str, Any]], source: str = "parsed") -> dict[str, float]:
    """Seed 01's table metric: per-report string sets, exact match, micro P/R over all reports."""
    tp = fp = fn = 0
    for rec in preds:
        g, p = seed01_sets(rec, source)
        tp += len(g & p)
        fp += len(p - g)
        fn += len(g - p)
    prec, rec_, f1 = prf(tp, fp, fn)
    return {"precision": prec, "recall": rec_, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def _seed01_record(obj: Any) -> dict[str, list[str]] | None:
    """A seed-01 output ({"drug_name", "adverse_events"}, JSON string or object) as a canonical
    record; None when it is not parseable."""
    if isinstance(obj, str):
        text = obj.strip()
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            m = re.search(r"\{.*\}", text, flags=re.S)
            if not m:
                return None
            try:
                obj = json.loads(m.group(0))
            except json.JSONDecodeError:
                return None
    if not isinstance(obj, dict):
        return None
    if "drugs" in obj:
        drugs = _str_items(obj.get("drugs"))
    else:
        drugs = _str_items(obj.get("drug_name"))
    return {"drugs": drugs, "adverse_events": _str_items(obj.get("adverse_events"))}


def load_seed01_predictions(path: Path | str) -> list[dict[str, Any]]:
    """Seed 01's prediction files as prediction records, so `seed01_scores` can reproduce its table.

    Assumed format (we do not have the files): a JSON list (or JSON lines) of objects, each with the
    gold `output` (a JSON string or object {"drug_name": str, "adverse_events": [str]}), optionally
    `input` (the report), and the model's answer under one of `prediction`, `predicted`,
    `response` or `model_output` (a JSON string or object of the same shape). An answer that does
    not parse counts as a parse failure (predicts nothing)."""
    path = Path(path)
    data = read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of prediction objects")
    out = []
    for i, item in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or "output" not in item:
            raise DataError(f"{where}: expected an object with the gold 'output'")
        key = next((k for k in SEED01_OUTPUT_FIELDS if k in item), None)
        if key is None:
            raise DataError(f"{where}: no model output; expected one of {SEED01_OUTPUT_FIELDS}")
        gold = _seed01_record(item["output"])
        if gold is None:
            raise DataError(f"{where}: gold 'output' is not a JSON object")
        parsed = _seed01_record(item[key])
        raw = item[key] if isinstance(item[key], str) else json.dumps(item[key], ensure_ascii=False)
        out.append({"id": str(item.get("id", f"seed01-{i:05d}")), "text": item.get("input", ""),
                    "gold": gold, "raw": raw, "parsed": parsed, "parse_ok": parsed is not None,
                    "grounding": []})
    return out


# ---- per-report counts ------------------------------------------------------------------------------
def report_counts(preds: Sequence[dict[str, Any]], source: str = "parsed") -> pd.DataFrame:
    """One row per report: match counts per field and matching, seed-01 counts, parse and grounding."""
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
        gs, ps = seed01_sets(rec, source)
        row.update(seed01_tp=len(gs & ps), seed01_fp=len(ps - gs), seed01_fn=len(gs - ps))
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


def field_scores(preds: Sequence[dict[str, Any]], field: str, matching: str) -> dict[str, float]:
    """Micro P/R/F1 and counts of one field under one matching."""
    c = report_counts(preds)
    tp, fp, fn = (int(c[f"{field}_{matching}_{k}"].sum()) for k in ("tp", "fp", "fn"))
    p, r, f = prf(tp, fp, fn)
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}


def parse_failure_rate(preds: Sequence[dict[str, Any]]) -> float:
    """Share of reports whose output did not parse into a record."""
    preds = list(preds)
    failed = sum(1 for r in preds if not (r.get("parse_ok") and isinstance(r.get("parsed"), dict)))
    return failed / len(preds) if preds else 0.0


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
    """Among reports that name no drug, the share where the system still output one (the failure
    of STUDY.md section 8); NaN when every report names a drug."""
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


def evaluate(preds: Sequence[dict[str, Any]], n_boot: int = 200, seed: int = 13,
             source: str = "parsed") -> dict[str, Any]:
    """Every headline number of one prediction set, as one flat row (CIs from a seeded bootstrap)."""
    preds = list(preds)
    if not preds:
        raise ValueError("no predictions to evaluate")
    c = report_counts(preds, source)
    row: dict[str, Any] = {"n": len(preds), "parse_statuses": parse_statuses(preds)}
    s = seed01_scores(preds, source)
    row.update(seed01_p=s["precision"], seed01_r=s["recall"], seed01_f1=s["f1"])
    row["parse_fail_rate"] = float((~c["parse_ok"]).mean())
    row["invented_drug_rate"] = invented_drug_rate(preds, source)
    total, found = int(c["grounding_total"].sum()), int(c["grounding_found"].sum())
    row["grounding_rate"] = found / total if total else float("nan")
    for f in FIELDS:
        for m in MATCHINGS:
            cols = [f"{f}_{m}_{k}" for k in ("tp", "fp", "fn")]
            arr = c[cols].to_numpy()
            tp, fp, fn = arr.sum(axis=0)
            p, r, f1 = prf(tp, fp, fn)
            ci = bootstrap_ci(arr, n_boot, seed)
            key = f"{f}_{m}"
            row.update({f"{key}_p": p, f"{key}_r": r, f"{key}_f1": f1,
                        f"{key}_tp": int(tp), f"{key}_fp": int(fp), f"{key}_fn": int(fn)})
            for metric in ("p", "r", "f1"):
                row[f"{key}_{metric}_lo"], row[f"{key}_{metric}_hi"] = ci[metric]
    return row


# ---- error analysis -----------------------------------------------------------------------------------
def report_errors(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every gold and predicted item of one report with its fate: correct, partial (relaxed but not
    exact match), missed (gold never matched) or extra (prediction never matched)."""
    g, p = gold_of(rec), predicted(rec)
    rows = []
    for f in FIELDS:
        pairs = match_items(g[f], p[f], "relaxed")
        for i, j in pairs:
            kind = "correct" if g[f][i] == p[f][j] else "partial"
            rows.append({"id": rec.get("id"), "field": f, "type": kind,
                         "gold": g[f][i], "predicted": p[f][j]})
        matched_g, matched_p = {i for i, _ in pairs}, {j for _, j in pairs}
        rows += [{"id": rec.get("id"), "field": f, "type": "missed", "gold": x, "predicted": None}
                 for i, x in enumerate(g[f]) if i not in matched_g]
        rows += [{"id": rec.get("id"), "field": f, "type": "extra", "gold": None, "predicted": x}
                 for j, x in enumerate(p[f]) if j not in matched_p]
    return rows


def error_items(preds: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """`report_errors` of every report, as one table."""
    rows = [row for rec in preds for row in report_errors(rec)]
    return pd.DataFrame(rows, columns=["id", "field", "type", "gold", "predicted"])


def error_type_counts(preds: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Missed / extra / partial / correct counts per field."""
    items = error_items(preds)
    out = {}
    for f in FIELDS:
        sub = items[items["field"] == f]
        out[f] = {t: int((sub["type"] == t).sum()) for t in ("correct",) + ERROR_TYPES}
    return out


def per_drug(preds: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Scores grouped by gold drug (normalized matching): how often the drug itself was found and
    P/R/F1 of adverse events and of both fields together; reports without a drug form '(none)'."""
    groups: dict[str, dict[str, Any]] = {}
    for rec in preds:
        g, p = gold_of(rec), predicted(rec)
        counts = {}
        for f in FIELDS:
            tp = len(match_items(g[f], p[f], "normalized"))
            counts[f] = (tp, len(p[f]) - tp, len(g[f]) - tp)
        pred_drugs = {normalize(d) for d in p["drugs"]}
        keys = {}
        for d in g["drugs"] or ["(none)"]:
            keys.setdefault(normalize(d) if d != "(none)" else d, d)
        for key, name in keys.items():
            grp = groups.setdefault(key, {"drug": name, "n": 0, "found": 0,
                                          "ae": np.zeros(3), "all": np.zeros(3)})
            grp["n"] += 1
            grp["found"] += key in pred_drugs
            grp["ae"] += counts["adverse_events"]
            grp["all"] += np.add(counts["drugs"], counts["adverse_events"])
    rows = []
    for grp in groups.values():
        ae_p, ae_r, ae_f = prf(*grp["ae"])
        _, _, f1 = prf(*grp["all"])
        rows.append({"drug": grp["drug"], "n": grp["n"],
                     "drug_recall": grp["found"] / grp["n"] if grp["drug"] != "(none)" else float("nan"),
                     "ae_p": ae_p, "ae_r": ae_r, "ae_f1": ae_f, "f1": f1})
    cols = ["drug", "n", "drug_recall", "ae_p", "ae_r", "ae_f1", "f1"]
    return pd.DataFrame(rows, columns=cols).sort_values("drug", key=lambda s: s.str.lower(),
                                                        ignore_index=True)


def _clip(text: Any, width: int) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def worst_reports(preds: Sequence[dict[str, Any]], k: int = 10, width: int = 160) -> pd.DataFrame:
    """The k reports with the lowest F1 (both fields, normalized), most errors first on ties,
    with what was missed, added or only partly right."""
    rows = []
    for rec in preds:
        g, p = gold_of(rec), predicted(rec)
        tp = fp = fn = 0
        for f in FIELDS:
            t = len(match_items(g[f], p[f], "normalized"))
            tp, fp, fn = tp + t, fp + len(p[f]) - t, fn + len(g[f]) - t
        _, _, f1 = prf(tp, fp, fn)
        if tp + fp + fn == 0:
            f1 = 1.0  # nothing to find and nothing predicted: a perfect report
        errs = report_errors(rec)
        by_type = {t: [e for e in errs if e["type"] == t] for t in ERROR_TYPES}
        rows.append({
            "id": rec.get("id"), "f1": f1,
            "errors": sum(len(v) for v in by_type.values()),
            "parse_ok": bool(rec.get("parse_ok")),
            "missed": "; ".join(e["gold"] for e in by_type["missed"]),
            "extra": "; ".join(e["predicted"] for e in by_type["extra"]),
            "partial": "; ".join(f"{e['gold']} ~ {e['predicted']}" for e in by_type["partial"]),
            "gold": json.dumps(g, ensure_ascii=False), "predicted": json.dumps(p, ensure_ascii=False),
            "text": _clip(rec.get("text"), width),
            "raw": _clip(rec.get("raw"), width) if not rec.get("parse_ok") else "",
        })
    df = pd.DataFrame(rows)
    df = df.sort_values(["f1", "errors", "id"], ascending=[True, False, True], kind="stable")
    return df.head(k).reset_index(drop=True)


# ---- a run: every (split, system) ---------------------------------------------------------------
def _select(run: str, splits: Sequence[str] | None,
            systems: Sequence[str] | None) -> dict[tuple[str, str], Path]:
    files = prediction_files(run)
    if not files:
        raise FileNotFoundError(f"no prediction files under {paths.rel(paths.predictions_dir(run))} "
                                f"(run step 05_infer for run {run!r} first)")
    return {k: v for k, v in files.items()
            if (splits is None or k[0] in splits) and (systems is None or k[1] in systems)}


def has_unsnapped(preds: Sequence[dict[str, Any]]) -> bool:
    """Whether grounding changed any parsed record (then the model's own strings get a row too)."""
    return any(isinstance(r.get("parsed_unsnapped"), dict) and r.get("parse_ok")
               and predicted(r, "parsed_unsnapped") != predicted(r) for r in preds)


def compare_systems(run: str, splits: Sequence[str] | None = None,
                    systems: Sequence[str] | None = None, n_boot: int = 200,
                    seed: int = 13, unsnapped: bool = True) -> pd.DataFrame:
    """One row per (split, system) of a run: seed-compatible P/R/F1, per-field P/R/F1 with 95% CIs
    for every matching, parse-failure rate, grounding rate and n. With `unsnapped`, a system whose
    outputs grounding snapped to the report's text also gets a row `<system> (unsnapped)` scoring
    the model's own strings."""
    rows = []
    for (split, system), path in _select(run, splits, systems).items():
        preds = load_predictions(path)
        row = {"split": split, "system": system, "unsnapped": False}
        row.update(evaluate(preds, n_boot=n_boot, seed=seed))
        rows.append(row)
        if unsnapped and has_unsnapped(preds):
            row = {"split": split, "system": f"{system} (unsnapped)", "unsnapped": True}
            row.update(evaluate(preds, n_boot=n_boot, seed=seed, source="parsed_unsnapped"))
            rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no prediction files of run {run!r} match splits={splits} "
                                f"systems={systems}")
    return pd.DataFrame(rows)


GAIN_KEYS = ("seed01", "drugs_normalized", "adverse_events_exact", "adverse_events_normalized",
             "adverse_events_relaxed")


def _aligned_counts(base: list[dict[str, Any]], tuned: list[dict[str, Any]], where: str
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-report counts of two systems on the same reports, rows in the same order: by position
    when both files list the same ids in the same order, else by (unique) id."""
    ca, cb = report_counts(base), report_counts(tuned)
    if list(ca["id"]) == list(cb["id"]):
        return ca, cb
    if not ca["id"].is_unique or not cb["id"].is_unique:
        raise DataError(f"{where}: report ids repeat and their order differs, so the two systems "
                        f"cannot be paired")
    if set(ca["id"]) != set(cb["id"]):
        raise DataError(f"{where}: the two systems were run on different reports "
                        f"({len(set(ca['id']) ^ set(cb['id']))} ids differ)")
    return ca, cb.set_index("id").loc[ca["id"]].reset_index()


def lora_gains(run: str, models: Sequence[str], n_boot: int = 200, seed: int = 13) -> pd.DataFrame:
    """Per split and model with both variants: F1 of base and LoRA and the paired-bootstrap 95%
    interval of the difference (LoRA - base), for the seed metric and the headline fields."""
    files = prediction_files(run)
    rows = []
    for split in dict.fromkeys(sp for sp, _ in files):
        for model in models:
            pa, pb = files.get((split, f"{model}-base")), files.get((split, f"{model}-lora"))
            if pa is None or pb is None:
                continue
            ca, cb = _aligned_counts(load_predictions(pa), load_predictions(pb),
                                     f"{paths.rel(pa)} vs {paths.rel(pb)}")
            for key in GAIN_KEYS:
                cols = [f"{key}_{k}" for k in ("tp", "fp", "fn")]
                a, b = ca[cols].to_numpy(), cb[cols].to_numpy()
                d = paired_f1_difference(a, b, n_boot, seed)
                rows.append({"split": split, "model": model, "score": key,
                             "base_f1": prf(*a.sum(axis=0))[2], "lora_f1": prf(*b.sum(axis=0))[2],
                             "gain": d["delta"], "gain_lo": d["lo"], "gain_hi": d["hi"]})
    return pd.DataFrame(rows, columns=["split", "model", "score", "base_f1", "lora_f1", "gain",
                                       "gain_lo", "gain_hi"])


def collect(run: str, splits: Sequence[str] | None = None, systems: Sequence[str] | None = None,
            k_worst: int = 10) -> dict[str, pd.DataFrame]:
    """Per-drug scores, error-type counts and worst reports of every (split, system) of a run."""
    drug, errors, worst = [], [], []
    for (split, system), path in _select(run, splits, systems).items():
        preds = load_predictions(path)
        tag = {"split": split, "system": system}
        drug.append(per_drug(preds).assign(**tag))
        for f, counts in error_type_counts(preds).items():
            errors.append({**tag, "field": f, **counts})
        worst.append(worst_reports(preds, k_worst).assign(**tag))
    first = ["split", "system"]

    def order(df: pd.DataFrame) -> pd.DataFrame:
        return df[first + [c for c in df.columns if c not in first]]

    return {"per_drug": order(pd.concat(drug, ignore_index=True)),
            "error_types": order(pd.DataFrame(errors)),
            "worst_reports": order(pd.concat(worst, ignore_index=True))}


# ---- Markdown -----------------------------------------------------------------------------------------
def _cell(v: Any, digits: int) -> str:
    if isinstance(v, (float, np.floating)):
        return "–" if np.isnan(v) else f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub pipe table of a DataFrame (no tabulate needed)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v, digits) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([header, rule] + body) + "\n"


def _with_ci(row: pd.Series, key: str) -> str:
    return f"{row[f'{key}_f1']:.2f} [{row[f'{key}_f1_lo']:.2f}, {row[f'{key}_f1_hi']:.2f}]"


def headline(comparison: pd.DataFrame) -> pd.DataFrame:
    """The readable comparison: per split and system, seed-compatible P/R/F1, per-field F1 with
    95% CI, parse failures and grounding."""
    out = pd.DataFrame({
        "split": comparison["split"], "system": comparison["system"], "n": comparison["n"],
        "seed P": comparison["seed01_p"], "seed R": comparison["seed01_r"],
        "seed F1": comparison["seed01_f1"]})
    for key, label in (("drugs_normalized", "drugs F1 (norm.)"),
                       ("adverse_events_exact", "AEs F1 (exact)"),
                       ("adverse_events_normalized", "AEs F1 (norm.)"),
                       ("adverse_events_relaxed", "AEs F1 (relaxed)")):
        out[label] = [_with_ci(r, key) for _, r in comparison.iterrows()]
    out["parse fail"] = comparison["parse_fail_rate"]
    out["invented drug"] = comparison["invented_drug_rate"]
    out["grounded"] = comparison["grounding_rate"]
    return out


GAIN_LABELS = {"seed01": "seed F1", "drugs_normalized": "drugs F1 (norm.)",
               "adverse_events_exact": "AEs F1 (exact)",
               "adverse_events_normalized": "AEs F1 (norm.)",
               "adverse_events_relaxed": "AEs F1 (relaxed)"}


def gains_table(gains: pd.DataFrame) -> pd.DataFrame:
    """LoRA - base F1 per split and model, one column per score: "+0.12 [+0.05, +0.20]"."""
    rows = []
    for (split, model), sub in gains.groupby(["split", "model"], sort=False):
        row = {"split": split, "model": model}
        for r in sub.itertuples():
            row[GAIN_LABELS.get(r.score, r.score)] = f"{r.gain:+.2f} [{r.gain_lo:+.2f}, {r.gain_hi:+.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_markdown(comparison: pd.DataFrame, run: str, n_boot: int,
                        gains: pd.DataFrame | None = None) -> str:
    """comparison.md: one headline table per split, the LoRA gains, then how to read them."""
    table = headline(comparison)
    parts = [f"# Evaluation of run `{run}`\n"]
    for split in table["split"].drop_duplicates():
        sub = table[table["split"] == split].drop(columns="split")
        parts.append(f"\n## split `{split}`\n\n" + markdown_table(sub, digits=2))
    if gains is not None and len(gains):
        parts.append("\n## LoRA - base (F1 difference, paired 95% bootstrap interval)\n\n"
                     + markdown_table(gains_table(gains)))
    parts.append(
        f"\nseed P/R/F1: seed-01 metric (per report the set of drug + adverse-event strings, exact "
        f"match, micro-averaged). Per-field F1 with 95% bootstrap intervals over reports "
        f"({n_boot} resamples); norm. = case/space/punctuation-insensitive, relaxed = token "
        f"overlap (Dice >= {RELAXED_THRESHOLD}). parse fail = share of outputs that did not parse; "
        f"invented drug = share of reports naming no drug where a drug was output; grounded = share of predicted strings found in the report. Every column with intervals "
        f"for every matching is in comparison.csv.\n")
    return "".join(parts)


def expected_systems(models: Iterable[str]) -> list[str]:
    """The LLM systems a run's profile promises: `<model>-base` and `<model>-lora` per model."""
    if isinstance(models, str):
        raise TypeError(f"models must be a list of model keys, got the string {models!r}")
    return [f"{m}-{v}" for m in models for v in ("base", "lora")]
