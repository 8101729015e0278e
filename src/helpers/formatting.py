"""Step 3: reports -> per-model chat training rows (rendered text, prompt/completion split, token
lengths), with over-long records listed and excluded (never cut), length statistics and plots."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import paths
from .io import DataError, write_jsonl
from .schemas import answer_json, load_reports
from .templates import render_training, tokenize_example

SPLITS = ("train", "val")
ROW_KEYS = ("id", "messages", "prompt", "completion", "text", "n_tokens", "n_prompt_tokens")


# ---- inputs -----------------------------------------------------------------------------------
def input_files(run: str, train_file: str | Path | None = None,
                val_file: str | Path | None = None) -> dict[str, Path | None]:
    """Where each split comes from: the user's files if given, else the run's synthetic splits.
    A user train file without a val file gets its val split carved out of it (see `load_splits`)."""
    if train_file is None and val_file is not None:
        raise ValueError("val_file needs a train_file too (a user val split next to synthetic training "
                         "data would mix two sources silently)")
    if train_file is not None:
        return {"train": Path(train_file), "val": Path(val_file) if val_file is not None else None}
    return {s: paths.synthetic_dir(run) / f"{s}.jsonl" for s in SPLITS}


def carve_val(reports: Sequence[dict[str, Any]], seed: int, fraction: float = 0.1
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a user's training reports into train and val (seeded; at least one val report)."""
    if len(reports) < 2:
        raise DataError(f"need at least 2 reports to carve a val split, got {len(reports)}")
    order = list(range(len(reports)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(reports) * fraction))
    val_idx = set(order[:n_val])
    return ([r for i, r in enumerate(reports) if i not in val_idx],
            [r for i, r in enumerate(reports) if i in val_idx])


def load_splits(files: dict[str, Path | None], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Load train/val reports (canonical JSONL or 2023-study JSON), carving val from train if it has no file;
    report ids must be unique across the splits."""
    for split, path in files.items():
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{split} input {paths.rel(Path(path))} not found "
                                    f"(run 02_synthesize first, or pass train_file/val_file)")
    train = load_reports(files["train"])
    if files.get("val") is None:
        train, val = carve_val(train, seed)
    else:
        val = load_reports(files["val"])
    splits = {"train": train, "val": val}
    seen: dict[str, str] = {}
    for split, reports in splits.items():
        if not reports:
            raise DataError(f"{split} split is empty ({files.get(split)})")
        for r in reports:
            if r["id"] in seen:
                raise DataError(f"report id {r['id']!r} occurs twice ({seen[r['id']]} and {split})")
            seen[r["id"]] = split
    return splits


# ---- formatting -------------------------------------------------------------------------------
def format_report(tokenizer: Any, spec: Any, report: dict[str, Any], system: str | None = None
                  ) -> dict[str, Any]:
    """One report as a training row: messages, prompt/completion/text and token counts."""
    answer = answer_json(report)
    rendered = render_training(tokenizer, spec, report["text"], answer, system=system)
    tokens = tokenize_example(tokenizer, spec, rendered["prompt"], rendered["completion"])
    n_prompt = tokens["completion_mask"].index(1)
    return {"id": report["id"], "messages": rendered["messages"], "prompt": rendered["prompt"],
            "completion": rendered["completion"], "text": rendered["text"],
            "n_tokens": len(tokens["input_ids"]), "n_prompt_tokens": n_prompt,
            "n_completion_tokens": sum(tokens["completion_mask"])}


def format_split(tokenizer: Any, spec: Any, reports: Iterable[dict[str, Any]], max_length: int,
                 system: str | None = None, desc: str = "format") -> tuple[list[dict], list[dict]]:
    """Format every report; records longer than max_length tokens (capped by the model's
    max_seq_length) are listed in `excluded` with their length and the reason, never truncated."""
    from tqdm import tqdm

    limit = min(int(max_length), spec.max_seq_length)
    rows, excluded = [], []
    for report in tqdm(list(reports), desc=f"{desc} ({spec.key})", leave=False):
        row = format_report(tokenizer, spec, report, system=system)
        if row["n_tokens"] > limit:
            excluded.append({"id": row["id"], "n_tokens": row["n_tokens"],
                             "reason": f"{row['n_tokens']} tokens > max_length {limit}"})
        else:
            rows.append(row)
    return rows, excluded


def features(tokenizer: Any, spec: Any, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pre-tokenized training examples of formatted rows: input_ids, attention_mask, completion_mask
    and labels (-100 outside the answer + end-of-turn). TRL's SFTTrainer takes these as a processed
    dataset; any other loop can use `labels` directly."""
    out = []
    for row in rows:
        ex = tokenize_example(tokenizer, spec, row["prompt"], row["completion"])
        if len(ex["input_ids"]) != row.get("n_tokens", len(ex["input_ids"])):
            raise DataError(f"row {row.get('id')!r}: {len(ex['input_ids'])} tokens now, {row['n_tokens']} when "
                            f"formatted; re-run 03_format with this tokenizer")
        ex["labels"] = [t if m else -100 for t, m in zip(ex["input_ids"], ex["completion_mask"])]
        out.append({"id": row.get("id"), **ex})
    return out


# ---- statistics and plots ---------------------------------------------------------------------
def length_stats(rows: Sequence[dict[str, Any]], excluded: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Token-length summary of one split (kept rows), with the excluded count."""
    import numpy as np

    n = np.array([r["n_tokens"] for r in rows], dtype=float)
    c = np.array([r.get("n_completion_tokens", r["n_tokens"] - r["n_prompt_tokens"]) for r in rows],
                 dtype=float)
    if not len(n):
        return {"rows": 0, "excluded": len(excluded)}
    return {"rows": len(rows), "excluded": len(excluded),
            "min": int(n.min()), "median": float(np.median(n)), "mean": round(float(n.mean()), 1),
            "p95": float(np.percentile(n, 95)), "max": int(n.max()),
            "answer_mean": round(float(c.mean()), 1), "answer_max": int(c.max()),
            "total_tokens": int(n.sum())}


def length_table(formatted: dict[str, tuple[list[dict], list[dict]]]) -> "Any":
    """A pandas table of `length_stats` per split."""
    import pandas as pd

    table = pd.DataFrame.from_dict({split: length_stats(rows, exc) for split, (rows, exc) in formatted.items()},
                                   orient="index")
    table.index.name = "split"
    return table


def plot_lengths(formatted: dict[str, tuple[list[dict], list[dict]]], max_length: int, path: Path | str,
                 title: str = "") -> Path:
    """Histogram of token lengths per split (kept and excluded), the max_length line marked; saved as PNG."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .io import save_figure

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for split, (rows, exc) in formatted.items():
        lengths = [r["n_tokens"] for r in rows] + [e["n_tokens"] for e in exc]
        if lengths:
            ax.hist(lengths, bins=30, alpha=0.6, label=f"{split} (n={len(lengths)}, excluded {len(exc)})")
    ax.axvline(max_length, color="crimson", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens per training example (prompt + answer)")
    ax.set_ylabel("examples")
    ax.set_title(title or "token lengths")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


# ---- outputs ----------------------------------------------------------------------------------
def output_files(run: str, model: str) -> dict[str, Path]:
    """Every file step 3 writes for one model (the manifest is written beside them last)."""
    out = paths.formatted_dir(run, model)
    return {"train": out / "train.jsonl", "val": out / "val.jsonl", "excluded": out / "excluded.jsonl",
            "lengths_csv": out / "lengths.csv", "lengths_png": out / "lengths.png"}


def write_formatted(run: str, model: str, formatted: dict[str, tuple[list[dict], list[dict]]]) -> list[Path]:
    """Write the rows of each split and the excluded records (with their split) atomically."""
    files = output_files(run, model)
    written = []
    for split, (rows, _) in formatted.items():
        written.append(write_jsonl(files[split], rows))
    excluded = [{**e, "split": split} for split, (_, exc) in formatted.items() for e in exc]
    written.append(write_jsonl(files["excluded"], excluded))
    return written


def read_formatted(run: str, model: str, split: str) -> list[dict[str, Any]]:
    """The formatted rows of one split (for step 4)."""
    from .io import read_jsonl
    return read_jsonl(output_files(run, model)[split])
