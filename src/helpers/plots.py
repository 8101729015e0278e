"""Evaluation figures of step 6 (matplotlib, no pyplot state): F1 with 95% intervals per system,
error types per system, per-drug heat map. Each returns a Figure and saves a PNG when given a path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .io import save_figure
from .schemas import FIELDS

FIELD_TITLES = {"drugs": "drugs", "adverse_events": "adverse events", "spans_drug": "drug spans",
                "spans_adverse_event": "adverse-event spans", "spans_all": "all spans"}
ERROR_COLORS = {"missed": "#d62728", "extra": "#ff7f0e", "partial": "#bcbd22"}


def save(fig: Figure, path: Path | str | None, dpi: int = 110) -> Figure:
    """Write a figure as PNG atomically (when a path is given) and return it."""
    if path is not None:
        save_figure(fig, path, dpi=dpi, bbox_inches="tight")
    return fig


def f1_with_ci(comparison: pd.DataFrame, matching: str = "normalized",
               fields: Sequence[str] = FIELDS, path: Path | str | None = None) -> Figure:
    """One panel per field: F1 bars per system, grouped by split, with 95% bootstrap error bars."""
    splits = list(comparison["split"].drop_duplicates())
    systems = list(comparison["system"].drop_duplicates())
    panel = max(4.0, 1.0 + 0.35 * len(splits) * len(systems))
    fig = Figure(figsize=(panel * len(fields) + 1.8, 3.8))
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(splits))
    for ax, field in zip(axes, fields):
        key = f"{field}_{matching}"
        for k, system in enumerate(systems):
            sub = comparison[comparison["system"] == system].set_index("split").reindex(splits)
            f1 = sub[f"{key}_f1"].to_numpy(dtype=float)
            err = np.vstack([f1 - sub[f"{key}_f1_lo"].to_numpy(dtype=float),
                             sub[f"{key}_f1_hi"].to_numpy(dtype=float) - f1])
            ax.bar(x + (k - (len(systems) - 1) / 2) * width, f1, width, yerr=np.clip(err, 0, None),
                   capsize=3, label=system)
        ax.set_xticks(x, splits)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"F1 ({matching})")
        ax.set_title(FIELD_TITLES.get(field, field))
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("F1 per system with 95% bootstrap intervals")
    return save(fig, path)


def error_types(errors: pd.DataFrame, path: Path | str | None = None) -> Figure:
    """Stacked bars of missed / extra / partial items per (split, system), one panel per field."""
    fields = list(errors["field"].drop_duplicates())
    fig = Figure(figsize=(4.5 * len(fields) + 1.5, 3.8))
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    for ax, field in zip(axes, fields):
        sub = errors[errors["field"] == field]
        labels = [f"{r.system}\n{r.split}" for r in sub.itertuples()]
        bottom = np.zeros(len(sub))
        for kind, color in ERROR_COLORS.items():
            vals = sub[kind].to_numpy(dtype=float)
            ax.bar(np.arange(len(sub)), vals, 0.7, bottom=bottom, color=color, label=kind)
            bottom += vals
        ax.set_xticks(np.arange(len(sub)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("items")
        ax.set_title(FIELD_TITLES.get(field, field))
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Error types (partial = relaxed match, not exact)")
    return save(fig, path)


def per_drug_heatmap(per_drug: pd.DataFrame, value: str = "f1", title: str | None = None,
                     path: Path | str | None = None) -> Figure:
    """Systems x gold drugs heat map of a per-drug score (default: F1 over both fields)."""
    table = per_drug.pivot_table(index="system", columns="drug", values=value, aggfunc="mean")
    table = table.reindex(sorted(table.columns, key=str.lower), axis=1)
    n_sys, n_drug = table.shape
    fig = Figure(figsize=(max(4.0, 0.45 * n_drug + 2.5), max(2.0, 0.5 * n_sys + 1.6)))
    ax = fig.subplots()
    im = ax.imshow(table.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(np.arange(n_drug), table.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(n_sys), table.index, fontsize=8)
    if n_sys * n_drug <= 200:
        for i in range(n_sys):
            for j in range(n_drug):
                v = table.iat[i, j]
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(title or f"per-drug {value}")
    return save(fig, path)
