"""Step 4's training record: examples consumed per step, the loss table from the Trainer's log
(loss.csv) and its plot, and the headline table of trainer_stats.json."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from .io import atomic_path, save_figure


def examples_after(steps: int, n_train: int, batch_size: int, grad_accum: int) -> int:
    """Training examples consumed after `steps` optimizer steps (the Trainer's epoch layout:
    ceil(n/batch) micro-batches per epoch, grouped by grad_accum, the last group possibly short)."""
    micro = math.ceil(n_train / batch_size)
    per_epoch = max(math.ceil(micro / grad_accum), 1)
    full, rest = divmod(steps, per_epoch)
    return full * n_train + min(rest * grad_accum * batch_size, n_train)


def loss_rows(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step train and val loss from the Trainer's log history (val at eval steps and step 0)."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        if "loss" in entry:
            by_step.setdefault(step, {"step": step, "train_loss": None, "val_loss": None})
            by_step[step]["train_loss"] = float(entry["loss"])
        if "eval_loss" in entry:
            by_step.setdefault(step, {"step": step, "train_loss": None, "val_loss": None})
            by_step[step]["val_loss"] = float(entry["eval_loss"])
    return [by_step[s] for s in sorted(by_step)]


def write_loss_csv(rows: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """loss.csv: step, train_loss, val_loss (empty where a step has none)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "train_loss", "val_loss"])
            for r in rows:
                w.writerow([r["step"], "" if r["train_loss"] is None else f"{r['train_loss']:.6f}",
                            "" if r["val_loss"] is None else f"{r['val_loss']:.6f}"])
    return path


def read_loss_csv(path: Path | str) -> list[dict[str, Any]]:
    """The rows of a loss.csv (None where empty)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [{"step": int(r["step"]),
                 "train_loss": float(r["train_loss"]) if r["train_loss"] else None,
                 "val_loss": float(r["val_loss"]) if r["val_loss"] else None}
                for r in csv.DictReader(fh)]


def plot_loss(rows: Sequence[dict[str, Any]], path: Path | str, title: str = "") -> Path:
    """Train (every logged step) and val (eval steps) loss curves, saved as PNG."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), label="val loss", color="tab:orange", marker="o", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy on answer tokens")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def stats_table(stats: dict[str, Any]) -> "Any":
    """A two-column pandas table of the headline figures of trainer_stats.json."""
    import pandas as pd

    mem = stats.get("memory", {})
    rows = [("backend", stats["backend"]), ("device", stats["device"]),
            ("train / val rows", f"{stats['n_train']} / {stats['n_val']}"),
            ("steps (epochs)", f"{stats['steps']} ({stats['epochs']})"),
            ("runtime s", stats["train_runtime_s"]), ("examples/s", stats["examples_per_s"]),
            ("tokens/s", stats["tokens_per_s"]), ("s/step", stats["s_per_step"]),
            ("base val loss", stats["base_val_loss"]), ("final val loss", stats["final_val_loss"]),
            ("final train loss", stats["final_train_loss"]),
            ("trainable params", stats["trainable_params"])]
    if mem.get("device") == "cuda":
        rows += [("peak GPU allocated GB", mem["peak_allocated_gb"]),
                 ("peak GPU reserved GB", mem["peak_reserved_gb"])]
    else:
        rows += [("peak RSS (training) GB", mem.get("peak_rss_train_gb"))]
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")
