"""Scoring a run (step 6): `evaluate` turns one prediction set into one flat row of every headline
number; `compare_systems` does it for every (split, system) of a run, `lora_gains` pairs base and
LoRA, `per_genre` and `collect` give the breakdowns. Definitions live in `metrics` and `span_metrics`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from . import paths
from .breakdowns import error_type_counts, per_drug, worst_reports
from .io import DataError
from .metrics import (MATCHINGS, grounding_rate, invented_drug_rate, load_predictions,
                      paired_f1_difference, parse_failure_rate, parse_statuses, predicted, prf,
                      report_counts,
                      scores_with_ci, set_exact_scores)
from .schemas import FIELDS
from .span_metrics import span_counts, span_scores


def evaluate(preds: Sequence[dict[str, Any]], n_boot: int = 200, seed: int = 13,
             source: str = "parsed") -> dict[str, Any]:
    """Every headline number of one prediction set, as one flat row (CIs from a seeded bootstrap):
    set-exact P/R/F1, per-field scores for every matching, span scores, and the rates."""
    preds = list(preds)
    if not preds:
        raise ValueError("no predictions to evaluate")
    c = report_counts(preds, source)
    s = set_exact_scores(preds, source)
    row: dict[str, Any] = {"n": len(preds), "parse_statuses": parse_statuses(preds),
                           "set_exact_p": s["precision"], "set_exact_r": s["recall"],
                           "set_exact_f1": s["f1"], "parse_fail_rate": parse_failure_rate(preds),
                           "invented_drug_rate": invented_drug_rate(preds, source),
                           "no_drug_reports": sum(1 for r in preds if not r["gold"]["drugs"]),
                           "grounding_rate": grounding_rate(preds)}
    for f in FIELDS:
        for m in MATCHINGS:
            cols = [f"{f}_{m}_{k}" for k in ("tp", "fp", "fn")]
            row.update(scores_with_ci(c[cols].to_numpy(), f"{f}_{m}", n_boot, seed))
    row.update(span_scores(preds, n_boot, seed, source))
    return row


def prediction_files(run: str, also_from: Sequence[str] = ()) -> dict[tuple[str, str], Path]:
    """Every prediction file of a run, keyed by (split, system), sorted; with `also_from`, those
    of other runs on the splits every run shares (the hand-written sets), as `<system>@<run>`."""
    root = paths.predictions_dir(run)
    files = {(p.parent.name, p.stem): p for p in sorted(root.glob("*/*.jsonl"))}
    for other in also_from:
        for split in paths.HANDWRITTEN_FILES:
            found = sorted(paths.predictions_dir(other).glob(f"{split}/*.jsonl"))
            files.update({(p.parent.name, f"{p.stem}@{other}"): p for p in found})
    return files


def _select(run: str, splits: Sequence[str] | None, systems: Sequence[str] | None,
            also_from: Sequence[str] = ()) -> dict[tuple[str, str], Path]:
    files = prediction_files(run, also_from)
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
                    seed: int = 13, unsnapped: bool = True, also_from: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (split, system) of a run: `evaluate` of its prediction file. With `unsnapped`, a system whose
    outputs grounding snapped to the report's text also gets a row `<system> (unsnapped)` scoring
    the model's own strings. `also_from`: other runs' systems on the shared splits (prediction_files)."""
    rows = []
    for (split, system), path in _select(run, splits, systems, also_from).items():
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


GAIN_KEYS = ("set_exact", "drugs_normalized", "adverse_events_exact", "adverse_events_normalized",
             "adverse_events_relaxed", "spans_all_strict", "spans_all_partial")


def all_counts(preds: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per-report counts of every score: strings (`report_counts`) and spans where gold has offsets."""
    counts = report_counts(preds)
    spans = span_counts(preds)
    return counts if spans is None else pd.concat([counts, spans.drop(columns="id")], axis=1)


def _aligned_counts(base: list[dict[str, Any]], tuned: list[dict[str, Any]], where: str
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-report counts of two systems on the same reports, rows in the same order: by position
    when both files list the same ids in the same order, else by (unique) id."""
    ca, cb = all_counts(base), all_counts(tuned)
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
    interval of the difference (LoRA - base), for set-exact and the headline fields."""
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
                if not set(cols) <= set(ca.columns) & set(cb.columns):
                    continue   # span scores need gold offsets
                a, b = ca[cols].to_numpy(), cb[cols].to_numpy()
                d = paired_f1_difference(a, b, n_boot, seed)
                rows.append({"split": split, "model": model, "score": key,
                             "base_f1": prf(*a.sum(axis=0))[2], "lora_f1": prf(*b.sum(axis=0))[2],
                             "gain": d["delta"], "gain_lo": d["lo"], "gain_hi": d["hi"]})
    return pd.DataFrame(rows, columns=["split", "model", "score", "base_f1", "lora_f1", "gain",
                                       "gain_lo", "gain_hi"])


def collect(run: str, splits: Sequence[str] | None = None, systems: Sequence[str] | None = None,
            k_worst: int = 10, n_boot: int = 200, seed: int = 13,
            also_from: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """Per-drug scores, error-type counts, worst reports and (where reports have a genre) per-genre
    scores of every (split, system) of a run (and of `also_from` runs on the shared splits), each as
    one table led by split and system."""
    tables: dict[str, list[pd.DataFrame]] = {"per_drug": [], "error_types": [], "worst_reports": [],
                                             "per_genre": []}
    for (split, system), path in _select(run, splits, systems, also_from).items():
        preds = load_predictions(path)
        tag = {"split": split, "system": system}
        tables["per_drug"].append(per_drug(preds).assign(**tag))
        tables["error_types"].append(pd.DataFrame(
            [{**tag, "field": f, **counts} for f, counts in error_type_counts(preds).items()]))
        tables["worst_reports"].append(worst_reports(preds, k_worst).assign(**tag))
        genres = per_genre(preds, n_boot, seed)
        if len(genres):
            tables["per_genre"].append(genres.assign(**tag))
    out = {}
    for name, frames in tables.items():
        df = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame(columns=["split", "system", "genre"]))
        out[name] = df[["split", "system"] + [c for c in df.columns if c not in ("split", "system")]]
    return out


def expected_systems(models: Iterable[str]) -> list[str]:
    """The LLM systems a run's profile promises: `<model>-base` and `<model>-lora` per model."""
    if isinstance(models, str):
        raise TypeError(f"models must be a list of model keys, got the string {models!r}")
    return [f"{m}-{v}" for m in models for v in ("base", "lora")]


def per_genre(preds: Sequence[dict[str, Any]], n_boot: int = 200, seed: int = 13) -> pd.DataFrame:
    """`evaluate` per report genre (records without one form '(none)'); empty when no record has one."""
    if not any(r.get("genre") for r in preds):
        return pd.DataFrame(columns=["genre"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in preds:
        groups.setdefault(rec.get("genre") or "(none)", []).append(rec)
    return pd.DataFrame([{"genre": g, **evaluate(recs, n_boot, seed)}
                         for g, recs in sorted(groups.items())])
