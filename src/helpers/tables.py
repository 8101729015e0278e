"""Readable tables of step 6 from the scored rows of `scoring`: the headline comparison per split,
LoRA gains, per-genre scores, and the Markdown they are written as. A number that cannot be
measured (NaN: no gold offsets, no report without a drug, nothing predicted) is shown as "-"."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .metrics import RELAXED_THRESHOLD

MISSING = "-"
# headline F1 columns: comparison key -> label (every one with its 95% interval)
F1_LABELS = {"drugs_normalized": "drugs F1 (norm.)", "adverse_events_exact": "AEs F1 (exact)",
             "adverse_events_normalized": "AEs F1 (norm.)",
             "adverse_events_relaxed": "AEs F1 (relaxed)",
             "spans_all_strict": "spans F1 (strict)", "spans_all_partial": "spans F1 (partial)"}
GAIN_LABELS = {"set_exact": "set-exact F1", **F1_LABELS}
NOTE = (
    "set-exact P/R/F1: the earlier 2023 study's metric (per report the set of drug + adverse-event "
    "strings, exact match, micro-averaged). Per-field F1 with 95% bootstrap intervals over reports "
    "({n_boot} resamples); norm. = case/space/punctuation-insensitive, relaxed = token overlap "
    "(Dice >= {relaxed}). spans F1: grounded predictions scored as character spans against the gold "
    "offsets, drugs and adverse events together (strict = same start, end and label; partial = "
    "overlapping, same label), \"-\" where the gold has no offsets. parse fail = share of outputs "
    "that did not parse; invented drug = share of reports naming no drug where a drug was output "
    "(\"-\" when every report names one); grounded = share of predicted strings found in the "
    "report. Every column with intervals for every matching and label is in comparison.csv.\n")


def _cell(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return MISSING
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub pipe table of a DataFrame (no tabulate needed)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v, digits) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([header, rule] + body) + "\n"


def with_ci(row: pd.Series | dict[str, Any], key: str) -> str:
    """"0.91 [0.85, 0.96]": F1 of a comparison key with its interval; "-" when not measurable."""
    f1 = row.get(f"{key}_f1", float("nan"))
    if f1 is None or np.isnan(f1):
        return MISSING
    return f"{f1:.2f} [{row[f'{key}_f1_lo']:.2f}, {row[f'{key}_f1_hi']:.2f}]"


def headline(comparison: pd.DataFrame) -> pd.DataFrame:
    """The readable comparison: per split and system, set-exact P/R/F1, per-field and span F1 with
    95% intervals, parse failures, invented drugs and grounding."""
    out = pd.DataFrame({
        "split": comparison["split"], "system": comparison["system"], "n": comparison["n"],
        "set-exact P": comparison["set_exact_p"], "set-exact R": comparison["set_exact_r"],
        "set-exact F1": comparison["set_exact_f1"]})
    for key, label in F1_LABELS.items():
        out[label] = [with_ci(r, key) for _, r in comparison.iterrows()]
    out["parse fail"] = comparison["parse_fail_rate"]
    out["invented drug"] = comparison["invented_drug_rate"]
    out["grounded"] = comparison["grounding_rate"]
    return out


def gains_table(gains: pd.DataFrame) -> pd.DataFrame:
    """LoRA - base F1 per split and model, one column per score: "+0.12 [+0.05, +0.20]"."""
    rows = []
    for (split, model), sub in gains.groupby(["split", "model"], sort=False):
        row = {"split": split, "model": model}
        for r in sub.itertuples():
            row[GAIN_LABELS.get(r.score, r.score)] = f"{r.gain:+.2f} [{r.gain_lo:+.2f}, {r.gain_hi:+.2f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def invented_drug_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Invented-drug rate of every system (rows) on every split (columns), as "0.25 (2/8)": the
    share of the split's reports naming no drug where the system output one; "-" when none."""
    def cell(r: pd.Series) -> str:
        n = int(r["no_drug_reports"])
        if not n:
            return MISSING
        return f"{r['invented_drug_rate']:.2f} ({round(r['invented_drug_rate'] * n)}/{n})"

    cells = comparison.assign(cell=comparison.apply(cell, axis=1))
    table = cells.pivot(index="system", columns="split", values="cell").fillna(MISSING)
    splits = list(comparison["split"].drop_duplicates())
    return table[splits].reset_index().rename_axis(columns=None)


def genre_table(per_genre: pd.DataFrame) -> pd.DataFrame:
    """Per-genre scores (one row per split, genre and system), compact: n, set-exact F1, drug and
    adverse-event F1 with intervals, span F1 and the invented-drug rate."""
    cols = ["split", "genre", "system", "n"]
    if per_genre.empty:
        return pd.DataFrame(columns=cols)
    df = per_genre.sort_values(["split", "genre", "system"], kind="stable")
    out = df[cols].reset_index(drop=True)
    out["set-exact F1"] = df["set_exact_f1"].to_numpy()
    for key in ("drugs_normalized", "adverse_events_relaxed", "spans_all_strict", "spans_all_partial"):
        out[F1_LABELS[key]] = [with_ci(r, key) for _, r in df.iterrows()]
    out["invented drug"] = df["invented_drug_rate"].to_numpy()
    return out


def comparison_markdown(comparison: pd.DataFrame, run: str, n_boot: int,
                        gains: pd.DataFrame | None = None,
                        per_genre: pd.DataFrame | None = None) -> str:
    """comparison.md: one headline table per split, the LoRA gains, the per-genre scores, then how
    to read them."""
    table = headline(comparison)
    parts = [f"# Evaluation of run `{run}`\n"]
    for split in table["split"].drop_duplicates():
        sub = table[table["split"] == split].drop(columns="split")
        parts.append(f"\n## split `{split}`\n\n" + markdown_table(sub, digits=2))
    if gains is not None and len(gains):
        parts.append("\n## LoRA - base (F1 difference, paired 95% bootstrap interval)\n\n"
                     + markdown_table(gains_table(gains)))
    parts.append("\n## Invented drugs (reports naming no drug where the system output one)\n\n"
                 + markdown_table(invented_drug_table(comparison)))
    if per_genre is not None and len(per_genre):
        parts.append("\n## Per genre (reports that carry a `genre`)\n\n"
                     + markdown_table(genre_table(per_genre), digits=2))
    parts.append("\n" + NOTE.format(n_boot=n_boot, relaxed=RELAXED_THRESHOLD))
    return "".join(parts)
