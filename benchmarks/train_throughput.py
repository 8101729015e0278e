"""Training throughput of step 4, today's configuration against the profile's speed settings, side by side.

For each model (default: both offline models) and each backend this machine can run (hf always; unsloth
on a CUDA GPU with unsloth installed and a model with a 4-bit id), it trains LoRA with the profile's
recipe twice on the same rows, one configuration right after the other:

- `today`: the recipe with the speed keys at their defaults (lm_head_at_labels false, random batches);
- `new`:   the recipe as the profile sets them (the `cpu` profile: the LM head only at labelled positions);
- optionally `only-<key>` (one key as the profile sets it) and `new+length_buckets` (length-bucketed
  batches on top: faster again, but it changes which rows share a batch).

The rows are template reports of the study's own generator (the `cpu` profile's lengths, 130-310
tokens), exactly `--steps` batches, so both configurations see every row once. One untimed forward and
backward pass comes first (allocation), then every optimizer step is timed. The last table gives the
ratio new / today of examples/s: compare within one run, the machine may be shared.

    python benchmarks/train_throughput.py                              # both offline models, cpu profile
    python benchmarks/train_throughput.py --models smollm2-135m --steps 6 --json out.json
    python benchmarks/train_throughput.py --steps 20 --batch-size 4 --rows 64 --val-rows 16   # same val loss?
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from helpers import finetune, memory, models, paths, train_speed
from helpers.config import step_settings

SPEED_KEYS = ("lm_head_at_labels", "train_sampling_strategy")
OFFLINE_MODELS = ("smollm2-135m", "gemma3-270m")


def template_reports(n: int, seed: int, split: str = "train") -> list[dict[str, Any]]:
    """n reports of the study's template generator from the shipped drug records (seeded)."""
    from helpers import synthesize
    from helpers.io import read_json

    folder = paths.root() / "data" / "raw" / "drugs"
    records = [read_json(p) for p in sorted(folder.glob("*.json")) if p.name != "manifest.json"]
    return synthesize.generate_template_split(synthesize.prepare_drugs(records), n, seed, split)


def workload(model_key: str, tokenizer: Any, n: int, seed: int, split: str = "train"
             ) -> list[dict[str, list[int]]]:
    """The fixed rows formatted as step 3 does and tokenized with an answer-only mask."""
    from helpers.formatting import format_split

    spec = models.get_spec(model_key)
    rows, _ = format_split(tokenizer, spec, template_reports(n, seed, split), max_length=10_000)
    return finetune.tokenize_rows(tokenizer, spec, rows, max_length=10_000, where="benchmark rows")


def available_backends(spec: Any) -> list[str]:
    """hf always; unsloth where a CUDA GPU, the package and a 4-bit id are all present."""
    out = ["hf"]
    if finetune.cuda_available() and spec.unsloth_id and finetune.unsloth_installed():
        out.insert(0, "unsloth")
    return out


def step_timer() -> Any:
    """A TrainerCallback that records the start of the first step and the end of every step."""
    from transformers import TrainerCallback

    class _Timer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[int, float, int]] = []

        def _sync(self) -> None:
            if finetune.cuda_available():
                import torch
                torch.cuda.synchronize()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if not self.marks:
                self._sync()
                self.marks.append((state.global_step, time.perf_counter(), int(state.num_input_tokens_seen)))
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self._sync()
            self.marks.append((state.global_step, time.perf_counter(), int(state.num_input_tokens_seen)))
            return control

    return _Timer()


def warm_up(trainer: Any, head_at_labels: bool) -> None:
    """One untimed forward + backward on two rows (first-call allocations), gradients dropped."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(min(2, len(trainer.train_dataset)))])
    with train_speed.head_at_labels(head_at_labels):
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
    trainer.model.zero_grad(set_to_none=True)


def effective_batch(cfg: finetune.FinetuneConfig) -> int:
    """Examples per optimizer step (one process): the per-device batch times gradient accumulation."""
    return cfg.batch_size * cfg.grad_accum


def run_config(label: str, backend: str, cfg: finetune.FinetuneConfig, rows_seed: int, n_rows: int,
               n_val: int = 0) -> dict[str, Any]:
    """Train `cfg.sft["max_steps"]` steps with one backend and configuration; measure every step (and the
    val loss at the end when n_val > 0)."""
    if backend == "unsloth":
        finetune._import_unsloth()          # before TRL/transformers, so its patches apply
    import torch
    import transformers
    from datasets import Dataset
    from trl import SFTTrainer

    spec = models.get_spec(cfg.model)
    device = "cuda:0" if finetune.cuda_available() else "cpu"
    transformers.set_seed(cfg.seed)
    t_load = time.perf_counter()
    model, tok = finetune.build_unsloth(spec, cfg) if backend == "unsloth" else finetune.build_hf(spec, cfg, device)
    load_s = time.perf_counter() - t_load
    rows = workload(cfg.model, tok, n_rows, rows_seed)
    val = workload(cfg.model, tok, n_val, rows_seed, "val") if n_val else []
    timer = step_timer()
    head = cfg.lm_head_at_labels and backend == "hf"
    with tempfile.TemporaryDirectory(prefix="bench-") as out:
        args = finetune.sft_config(cfg, Path(out), has_eval=False, device=device, resuming=False,
                                   unsloth=backend == "unsloth")
        args.disable_tqdm = True
        trainer_cls = train_speed.trainer_class(SFTTrainer, cfg.train_sampling_strategy)
        trainer = trainer_cls(model=model, args=args, processing_class=tok,
                              train_dataset=Dataset.from_list(rows),
                              eval_dataset=Dataset.from_list(val) if val else None, callbacks=[timer])
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)     # the table is the output
        finetune.check_labels(trainer, rows)
        warm_up(trainer, head)
        sampler = memory.RssSampler()
        start = memory.cuda_reset_peak() if device.startswith("cuda") else None
        with sampler, train_speed.head_at_labels(head):
            trainer.train()
        mem = memory.cuda_peak(start) if start else memory.cpu_figures(sampler)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        if val:
            with train_speed.head_at_labels(head):
                val_loss = trainer.evaluate()["eval_loss"]
    (s0, t0, k0), (s1, t1, k1) = timer.marks[0], timer.marks[-1]
    steps, seconds = s1 - s0, t1 - t0
    examples = steps * effective_batch(cfg)
    peak = mem["peak_reserved_gb"] if start else mem["peak_rss_train_gb"]
    return {"model": cfg.model, "backend": backend, "config": label,
            "settings": ", ".join(f"{k}={getattr(cfg, k)}" for k in SPEED_KEYS),
            "device": mem.get("gpu_name", "cpu"), "batch": effective_batch(cfg), "timed_steps": steps,
            "rows": len(rows), "mean_tokens": round(sum(len(r["input_ids"]) for r in rows) / len(rows), 1),
            "s_per_step": round(seconds / steps, 3), "examples_per_s": round(examples / seconds, 3),
            "tokens_per_s": round((k1 - k0) / seconds, 1), "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4), "val_loss": round(val_loss, 5) if val else None,
            "peak_gb": round(peak, 3), "peak_kind": "GPU reserved" if start else "RSS",
            "load_s": round(load_s, 1), "threads": torch.get_num_threads()}


def configs(profile: str, model: str, steps: int, batch: int) -> dict[str, finetune.FinetuneConfig]:
    """today (speed keys at their defaults), new (as the profile sets them), to see each key's share
    `only-<key>` (today plus that one key as the profile sets it), and `new+length_buckets`."""
    sized = {"resume": False, "sft": {"max_steps": steps, "per_device_train_batch_size": batch,
                                       "gradient_accumulation_steps": 1, "save_steps": 10 ** 6,
                                       "eval_steps": 10 ** 6, "warmup_steps": 0}}
    new = finetune.FinetuneConfig.from_settings(step_settings(profile, "04_finetune", model, overrides=sized))
    defaults = {f.name: f.default for f in dataclasses.fields(finetune.FinetuneConfig) if f.name in SPEED_KEYS}
    today = dataclasses.replace(new, **defaults)
    out = {"today": today, "new": new}
    for key in SPEED_KEYS:
        out[f"only-{key}"] = dataclasses.replace(today, **{key: getattr(new, key)})
    out["new+length_buckets"] = dataclasses.replace(new, train_sampling_strategy=train_speed.LENGTH_BUCKETS)
    return out


def ratio_table(results: list[dict[str, Any]]) -> Any:
    """new / today per model and backend: examples/s ratio and s/step of each."""
    import pandas as pd

    out = []
    for (model, backend), grp in pd.DataFrame(results).groupby(["model", "backend"], sort=False):
        by = grp.set_index("config")
        if {"today", "new"} <= set(by.index):
            out.append({"model": model, "backend": backend,
                        "today_s_per_step": by.at["today", "s_per_step"], "new_s_per_step": by.at["new", "s_per_step"],
                        "speedup": round(by.at["new", "examples_per_s"] / by.at["today", "examples_per_s"], 2)})
            if by.at["today", "val_loss"] is not None and not pd.isna(by.at["today", "val_loss"]):
                out[-1]["val_loss_change_%"] = round(100 * (by.at["new", "val_loss"] / by.at["today", "val_loss"] - 1), 2)
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", "--model", default=",".join(OFFLINE_MODELS), help="comma list of model keys")
    ap.add_argument("--profile", default="cpu", help="whose finetune recipe and speed settings to use")
    ap.add_argument("--backends", default="available", help="'available' or a comma list (hf,unsloth)")
    ap.add_argument("--configs", default="today,new", help="which of today,new,only-<speed key>,new+length_buckets to run (in order)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps, all timed (after a warm-up pass)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rows", type=int, default=0, help="training rows (0: steps x batch, one epoch)")
    ap.add_argument("--val-rows", type=int, default=0, help="val rows scored after training (0: none)")
    ap.add_argument("--seed", type=int, default=13, help="seed of the template rows")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pandas as pd

    results = []
    for model in args.models.split(","):
        spec = models.get_spec(model)
        backends = available_backends(spec) if args.backends == "available" else args.backends.split(",")
        cfgs = configs(args.profile, model, args.steps, args.batch_size)
        for backend in backends:
            for label in args.configs.split(","):
                cfg = dataclasses.replace(cfgs[label], backend=backend)
                print(f"[bench] {model} {backend} {label}: {args.steps} steps of batch {args.batch_size} ...",
                      file=sys.stderr, flush=True)
                results.append(run_config(label, backend, cfg, args.seed, args.rows or args.steps * args.batch_size,
                                          args.val_rows))
                print(f"[bench]   {results[-1]['s_per_step']} s/step", file=sys.stderr, flush=True)
    cols = ["model", "backend", "config", "settings", "device", "batch", "mean_tokens", "timed_steps",
            "s_per_step", "examples_per_s", "tokens_per_s", "first_loss", "last_loss", "val_loss", "peak_gb",
            "peak_kind"]
    print(pd.DataFrame(results)[cols].to_string(index=False))
    ratios = ratio_table(results)
    if len(ratios):
        print()
        print(ratios.to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
