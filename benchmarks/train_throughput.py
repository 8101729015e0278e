"""Training throughput of step 4's backends on a fixed workload: examples/s, tokens/s, peak memory.

For every backend this machine can run (hf always; unsloth on a CUDA GPU with unsloth installed and a
model that has a 4-bit id), it trains LoRA (the smoke profile's recipe) for a few optimizer steps on
fixed synthetic chat rows it builds itself, and prints one table row per backend. The first step
(allocation, compilation) is a warm-up and is not timed.

    python benchmarks/train_throughput.py                      # SmolLM2-135M, CPU
    python benchmarks/train_throughput.py --steps 8 --batch-size 8 --json out.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from helpers import finetune, memory, models, templates
from helpers.config import load_profile, step_params
from helpers.schemas import answer_json

DRUGS = ["Lipitor", "Zoloft", "Humira", "Nexium", "Ambien", "Crestor", "Singulair", "Cymbalta"]
EVENTS = ["muscle pain", "nausea", "a pounding headache", "dizziness", "dark urine", "an itchy rash",
          "trouble sleeping", "blurred vision", "swollen ankles", "heart palpitations"]


def synthetic_reports(n: int, seed: int) -> list[dict[str, Any]]:
    """Fixed adverse-event e-mails (0-2 drugs, 1-3 events), the same for every backend and run."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        drugs = rng.sample(DRUGS, rng.randint(0, 2))
        events = rng.sample(EVENTS, rng.randint(1, 3))
        taken = " and ".join(drugs) if drugs else "the pill my doctor gave me"
        text = (f"Hello, I am writing about my mother. She started {taken} about {rng.randint(2, 9)} weeks ago "
                f"for her blood pressure. Since then she has had {', '.join(events)}. She has no fever. "
                f"Should she stop taking it? Thank you, {rng.choice(['Anna', 'Raj', 'Lee', 'Maria'])}")
        out.append({"id": f"bench-{i}", "text": text, "drugs": drugs, "adverse_events": events})
    return out


def workload(model_key: str, tokenizer: Any, n: int, seed: int) -> list[dict[str, list[int]]]:
    """The fixed rows rendered with the model's chat template and tokenized with an answer-only mask."""
    spec = models.get_spec(model_key)
    rows = []
    for rep in synthetic_reports(n, seed):
        r = templates.render_training(tokenizer, spec, rep["text"], answer_json(rep))
        rows.append({"id": rep["id"], "prompt": r["prompt"], "completion": r["completion"], "text": r["text"]})
    return finetune.tokenize_rows(tokenizer, spec, rows, max_length=10_000, where="benchmark rows")


def available_backends(spec: Any) -> list[str]:
    """hf always; unsloth where a CUDA GPU, the package and a 4-bit id are all present."""
    out = ["hf"]
    if finetune.cuda_available() and spec.unsloth_id and finetune.unsloth_installed():
        out.insert(0, "unsloth")
    return out


def step_timer() -> Any:
    """A TrainerCallback that records wall time and tokens seen at the end of every optimizer step."""
    from transformers import TrainerCallback

    class _Timer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[int, float, int]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if finetune.cuda_available():
                import torch
                torch.cuda.synchronize()
            self.marks.append((state.global_step, time.perf_counter(), int(state.num_input_tokens_seen)))
            return control

    return _Timer()


def run_backend(backend: str, cfg: finetune.FinetuneConfig, n_rows: int) -> dict[str, Any]:
    """Train `cfg.max_steps` steps with one backend and measure the steps after the first."""
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
    if backend == "unsloth":
        model, tok = finetune.build_unsloth(spec, cfg)
    else:
        model, tok = finetune.build_hf(spec, cfg, device)
    load_s = time.perf_counter() - t_load
    rows = workload(cfg.model, tok, n_rows, cfg.seed)
    timer = step_timer()
    with tempfile.TemporaryDirectory(prefix="bench-") as out:
        args = finetune.sft_config(cfg, Path(out), has_eval=False, device=device, resuming=False,
                                   unsloth=backend == "unsloth")
        args.disable_tqdm = True
        trainer = SFTTrainer(model=model, args=args, processing_class=tok,
                             train_dataset=Dataset.from_list(rows), callbacks=[timer])
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)     # the table is the output
        finetune.check_labels(trainer, rows)
        sampler = memory.RssSampler()
        start = memory.cuda_reset_peak() if device.startswith("cuda") else None
        with sampler:
            trainer.train()
        mem = memory.cuda_peak(start) if start else memory.cpu_figures(sampler)
    (s0, t0, k0), (s1, t1, k1) = timer.marks[0], timer.marks[-1]
    steps = s1 - s0
    seconds = t1 - t0
    examples = steps * cfg.effective_batch
    peak = mem["peak_reserved_gb"] if start else mem["peak_rss_train_gb"]
    return {"backend": backend, "device": mem.get("gpu_name", "cpu"), "model": cfg.model,
            "weights": "4-bit" if backend == "unsloth" else str(finetune.train_dtype(device)).replace("torch.", ""),
            "batch": cfg.effective_batch, "timed_steps": steps,
            "mean_tokens": round(sum(len(r["input_ids"]) for r in rows) / len(rows), 1),
            "s_per_step": round(seconds / steps, 3), "examples_per_s": round(examples / seconds, 3),
            "tokens_per_s": round((k1 - k0) / seconds, 1),
            "peak_gb": round(peak, 3), "peak_kind": "GPU reserved" if start else "RSS",
            "peak_allocated_gb": mem.get("peak_allocated_gb"), "load_s": round(load_s, 1),
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--profile", default="smoke", help="whose finetune recipe (LoRA r, lr, ...) to use")
    ap.add_argument("--backends", default="available", help="'available' or a comma list (hf,unsloth)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps; the first is not timed")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is a warm-up)")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    params = step_params(load_profile(args.profile), "04_finetune", args.model)
    params.update(max_steps=args.steps, batch_size=args.batch_size, grad_accum=1, resume=False,
                  save_steps=10 ** 6, eval_steps=10 ** 6, warmup_ratio=0.0)
    cfg = finetune.FinetuneConfig.from_params(params)
    spec = models.get_spec(args.model)
    backends = available_backends(spec) if args.backends == "available" else args.backends.split(",")
    results = []
    for backend in backends:
        print(f"[bench] {backend}: {args.steps} steps of batch {args.batch_size} on {args.model} ...",
              file=sys.stderr, flush=True)
        results.append(run_backend(backend, dataclasses.replace(cfg, backend=backend), args.rows))
    import pandas as pd
    table = pd.DataFrame(results).set_index("backend")
    cols = ["device", "model", "weights", "batch", "mean_tokens", "timed_steps", "s_per_step",
            "examples_per_s", "tokens_per_s", "peak_gb", "peak_kind"]
    print(table[cols].to_string())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
