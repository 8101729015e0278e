"""Unsloth 4-bit vs transformers + PEFT + bitsandbytes 4-bit QLoRA, side by side on one CUDA GPU.

Both backends train the same LoRA (the paper profile's recipe: r, alpha, lr, 8-bit AdamW) on the same
model shape and the same fixed rows, each in its own process (Unsloth patches transformers when it
is imported; a fresh process also gives each backend its own peak-memory figure). The model is built
from a config with random weights (a GPU machine may have no network; speed and memory do not depend
on the weights), saved once in bf16 (fp16 on a T4), and loaded by both in 4-bit NF4. Printed: s/step,
examples/s and tokens/s after a warm-up step, peak GPU memory, and the ratios unsloth / hf. With
--infer-reports N the hf process also times step 5's generation (4-bit base + unmerged LoRA,
span-constrained decoding) on N reports: reports/s.

    python benchmarks/gpu_finetune_compare.py                          # Llama-2-7B shape, 8 steps of 4
    python benchmarks/gpu_finetune_compare.py --shape smollm2-135m --steps 4 --json out.json
    python benchmarks/gpu_finetune_compare.py --model-dir /path/to/hf/model   # real weights instead

The tokenizer is SmolLM2's (offline; its vocabulary of 49,152 sets the embedding size), so a
"Llama-2-7B shape" here has 6.9 B parameters with Llama 2's layers and this vocabulary. Without a CUDA
GPU it stops at once with one line (exit 2).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {      # LlamaConfig fields of the published models
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192),
}
BACKENDS = ("unsloth", "hf")
TOKENIZER_MODEL = "smollm2-135m"


def require_cuda() -> None:
    """Stop in one line (exit 2) where torch sees no CUDA GPU: there is nothing to compare."""
    import torch
    if not torch.cuda.is_available():
        print("gpu_finetune_compare: needs a CUDA GPU (torch sees none); on CPU use benchmarks/train_throughput.py",
              file=sys.stderr)
        raise SystemExit(2)


def build_model_dir(shape: str, out: Path, dtype_name: str) -> Path:
    """Save a randomly initialised Llama of `shape` (built on the GPU: seconds) plus the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from helpers import models
    tok = models.load_tokenizer(TOKENIZER_MODEL)
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype_name))
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    n = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    (out / "shape.json").write_text(json.dumps({"shape": shape, "params": n}), encoding="utf-8")
    return out


def recipe(steps: int, batch_size: int, max_length: int) -> Any:
    """The paper profile's finetune recipe, sized for a benchmark (no checkpoints, no eval)."""
    from helpers import finetune
    from helpers.config import step_settings
    sized = {"resume": False, "sft": {"max_steps": steps, "per_device_train_batch_size": batch_size,
                                      "gradient_accumulation_steps": 1, "save_steps": 10 ** 6,
                                      "eval_steps": 10 ** 6, "warmup_steps": 0, "max_length": max_length,
                                      "gradient_checkpointing": True}}
    return finetune.FinetuneConfig.from_settings(
        step_settings("paper", "04_finetune", "llama-2-7b-chat", overrides=sized))


def load_backend(backend: str, model_dir: Path, cfg: Any) -> tuple[Any, Any]:
    """4-bit base + LoRA with either backend, from the same folder, with the same LoRA settings (the
    profile's `lora:` arguments, targets resolved on the model: helpers.finetune.lora_kwargs)."""
    import torch

    from helpers import finetune, models
    spec = models.get_spec(TOKENIZER_MODEL)
    if backend == "unsloth":
        from unsloth import FastLanguageModel
        model, tok = FastLanguageModel.from_pretrained(model_name=str(model_dir), max_seq_length=cfg.max_length,
                                                       dtype=None, load_in_4bit=True)
        model = FastLanguageModel.get_peft_model(
            model, **finetune.lora_kwargs(cfg, model), use_gradient_checkpointing="unsloth",
            random_state=cfg.seed, max_seq_length=cfg.max_length)
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
        dtype = getattr(torch, models.compute_dtype(models.detect_device()))
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=q, dtype=dtype,
                                                     device_map={"": "cuda:0"})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(**finetune.lora_kwargs(cfg, model), task_type="CAUSAL_LM")
        model, tok = get_peft_model(model, lora), AutoTokenizer.from_pretrained(str(model_dir))
    return model, models.set_padding_side(models.prepare_tokenizer(tok, spec), "training")


def worker(backend: str, model_dir: Path, steps: int, batch_size: int, rows: int, infer_reports: int) -> dict[str, Any]:
    """Train `steps` optimizer steps with one backend in this process; time the steps after the first."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers/TRL, so its patches apply)
    import torch
    from datasets import Dataset
    from train_throughput import step_timer, workload
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from helpers import finetune, memory, models
    cfg = recipe(steps, batch_size, max_length=1024)
    t0 = time.perf_counter()
    model, tok = load_backend(backend, model_dir, cfg)
    load_s = time.perf_counter() - t0
    data = workload(TOKENIZER_MODEL, tok, rows, cfg.seed)
    timer = step_timer()
    with tempfile.TemporaryDirectory(prefix="gpu-compare-") as out:
        args = finetune.sft_config(cfg, Path(out), has_eval=False, device="cuda:0", resuming=False,
                                   unsloth=backend == "unsloth")
        args.disable_tqdm = True
        trainer = SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(data),
                             callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        start = memory.cuda_reset_peak()
        trainer.train()
        mem = memory.cuda_peak(start)
    (s0, t_0, k0), (s1, t_1, k1) = timer.marks[0], timer.marks[-1]
    secs = t_1 - t_0
    row = {"backend": backend, "gpu": mem["gpu_name"], "batch": cfg.batch_size, "timed_steps": s1 - s0,
           "mean_tokens": round(sum(len(r["input_ids"]) for r in data) / len(data), 1),
           "s_per_step": round(secs / (s1 - s0), 3), "examples_per_s": round((s1 - s0) * cfg.batch_size / secs, 3),
           "tokens_per_s": round((k1 - k0) / secs, 1), "peak_allocated_gb": mem["peak_allocated_gb"],
           "peak_reserved_gb": mem["peak_reserved_gb"], "load_s": round(load_s, 1),
           "params": json.loads((model_dir / "shape.json").read_text())["params"]
           if (model_dir / "shape.json").exists() else None, "torch": torch.__version__}
    if infer_reports and backend == "hf":
        row.update(time_inference(model, tok, models.get_spec(TOKENIZER_MODEL), infer_reports))
    return row


def time_inference(model: Any, tok: Any, spec: Any, n: int) -> dict[str, Any]:
    """Step 5 on the GPU: 4-bit base + unmerged LoRA, span-constrained decoding, batch 8."""
    from infer_throughput import fixed_reports

    from helpers import infer, models
    tok = models.set_padding_side(tok, "generation")
    model.config.use_cache = True          # QLoRA preparation turned the KV cache off for training
    reports = fixed_reports(n, 13)
    infer.predict(model, tok, spec, reports[:1], batch_size=1, max_new_tokens=32, constrained="spans", progress=False)
    records, secs = infer.timed_predict(model, tok, spec, reports, batch_size=8, max_new_tokens=96,
                                        constrained="spans", progress=False)
    s = infer.summarize(records, secs)
    return {"infer_reports": s["reports"], "infer_reports_per_s": s["reports_per_s"],
            "infer_mean_new_tokens": s["mean_new_tokens"], "infer_parse_rate": s["parse_rate"]}


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """unsloth / hf ratios of speed and memory (above 1 = Unsloth faster; below 1 = Unsloth smaller)."""
    by = {r["backend"]: r for r in rows}
    if not {"unsloth", "hf"} <= set(by):
        return {}
    u, h = by["unsloth"], by["hf"]
    return {"examples_per_s_ratio": round(u["examples_per_s"] / h["examples_per_s"], 2),
            "peak_reserved_ratio": round(u["peak_reserved_gb"] / h["peak_reserved_gb"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="llama-2-7b", choices=sorted(SHAPES))
    ap.add_argument("--model-dir", help="an existing transformers model folder instead of a random one")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps; the first is not timed")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--infer-reports", type=int, default=32, help="0: no inference timing")
    ap.add_argument("--backends", default="unsloth,hf")
    ap.add_argument("--json", help="also write rows and ratios as JSON here")
    ap.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is a warm-up)")
    require_cuda()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.model_dir), args.steps, args.batch_size, args.rows,
                                args.infer_reports)))
        return 0
    from helpers import models
    with tempfile.TemporaryDirectory(prefix="gpu-compare-model-") as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else \
            build_model_dir(args.shape, Path(tmp), models.compute_dtype(models.detect_device()))
        rows = []
        for backend in args.backends.split(","):
            print(f"[compare] {backend}: {args.steps} steps of batch {args.batch_size} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--worker", backend, "--model-dir", str(model_dir), "--steps",
                   str(args.steps), "--batch-size", str(args.batch_size), "--rows", str(args.rows),
                   "--infer-reports", str(args.infer_reports)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                rows.append({"backend": backend, "error": (done.stderr.strip().splitlines() or ["?"])[-1]})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ratios = compare([r for r in rows if "error" not in r])
    import pandas as pd
    print(pd.DataFrame(rows).set_index("backend").T.to_string())
    print(json.dumps(ratios))
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.model_dir or args.shape, "rows": rows,
                                               "ratios": ratios}, indent=2) + "\n", encoding="utf-8")
    return 0 if ratios else 1


if __name__ == "__main__":
    raise SystemExit(main())
