"""Inference throughput (reports/s) and parse rate per backend, with and without constrained decoding.

Builds its own fixed set of short reports (seeded), loads the model once, and runs step 5's
`helpers.infer.predict` in each decoding mode. Backends: `hf` (transformers generate, CPU or CUDA);
`vllm` (helpers.infer_vllm) runs when it is importable (a CUDA machine, or vLLM's CPU build in its
own environment: scripts/vllm_cpu_env.sh), in every mode; elsewhere its row says why it is
unavailable rather than guessing a number.

    .venv/bin/python benchmarks/infer_throughput.py                       # smollm2-135m base, 8 reports
    .venv/bin/python benchmarks/infer_throughput.py --n 16 --adapter artifacts/models/cpu/smollm2-135m
"""
from __future__ import annotations

import argparse
import random
import time

import pandas as pd
import torch

from helpers import infer, infer_vllm, models

DRUGS = ["Lipitor", "Zoloft", "Nexium", "Ambien", "Lisinopril", "Cymbalta", "Singulair", "Metoprolol"]
EVENTS = ["a dry cough", "muscle cramps", "blurred vision", "trouble sleeping", "a rash on my arms",
          "swollen ankles", "constant nausea", "ringing in my ears"]
OPENERS = ["Hi,", "Hello team,", "To whom it may concern:", "Quick note about my medication."]


def fixed_reports(n: int, seed: int) -> list[dict]:
    """n short reports with 0-2 drugs and 1-2 events each, the same for a given seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        drugs = rng.sample(DRUGS, rng.choice([0, 1, 1, 2]))
        events = rng.sample(EVENTS, rng.choice([1, 2]))
        taking = f"I have been taking {' and '.join(drugs)} for a few weeks" if drugs else \
            "I started a new pill my doctor gave me last month"
        text = f"{rng.choice(OPENERS)} {taking}, and since then I get {' and '.join(events)}. No fever though."
        out.append({"id": f"bench-{i:03d}", "text": text, "drugs": drugs, "adverse_events": events})
    return out


def run_hf(model_key: str, reports: list[dict], modes: list, batch_size: int, max_new_tokens: int,
           adapter: str | None, device: str) -> list[dict]:
    """Throughput rows of transformers generate for each decoding mode."""
    spec = models.get_spec(model_key)
    tok = models.set_padding_side(models.load_tokenizer(model_key), "generation")
    model = models.load_model(model_key, device=device)
    if adapter:
        model = infer.apply_adapter(model, adapter, merge=True)
    rows = []
    # warm-up (first-call allocations, constrained tables) so timings compare like with like
    for mode in modes:
        infer.predict(model, tok, spec, reports[:1], batch_size=1, max_new_tokens=4 if not mode else 24,
                      constrained=mode, progress=False)
    for mode in modes:
        records, seconds = infer.timed_predict(model, tok, spec, reports, batch_size=batch_size,
                                               max_new_tokens=max_new_tokens, constrained=mode, progress=False)
        s = infer.summarize(records, seconds)
        rows.append({"backend": f"hf-{device}", "model": model_key + ("+lora" if adapter else ""),
                     "constrained": mode or "off", "reports": s["reports"], "reports_per_s": s["reports_per_s"],
                     "parse_rate": s["parse_rate"], "grounded_rate": s["grounded_rate"],
                     "mean_new_tokens": s["mean_new_tokens"], "hit_token_cap": s["hit_token_cap"],
                     "seconds": s["seconds"]})
    return rows


def run_vllm(model_key: str, reports: list[dict], modes: list, max_new_tokens: int,
             adapter: str | None, seed: int) -> list[dict]:
    """Throughput rows of the vLLM backend (one engine, adapter per request) for each decoding mode."""
    spec = models.get_spec(model_key)
    tok = models.set_padding_side(models.load_tokenizer(model_key), "generation")
    source = models.plain_copy(model_key) if spec.offline else spec.hub_id
    device = infer_vllm.check_available()
    llm = infer_vllm.load_engine(str(source), adapter, seed)
    rows = []
    for mode in modes:
        infer_vllm.predict(llm, tok, spec, reports[:1], max_new_tokens=8, constrained=mode, adapter_path=adapter)
        started = time.perf_counter()
        records = infer_vllm.predict(llm, tok, spec, reports, max_new_tokens=max_new_tokens,
                                     constrained=mode, adapter_path=adapter)
        s = infer.summarize(records, time.perf_counter() - started)
        rows.append({"backend": f"vllm-{device}", "model": model_key + ("+lora" if adapter else ""),
                     "constrained": mode or "off", "reports": s["reports"], "reports_per_s": s["reports_per_s"],
                     "parse_rate": s["parse_rate"], "grounded_rate": s["grounded_rate"],
                     "mean_new_tokens": s["mean_new_tokens"], "hit_token_cap": s["hit_token_cap"],
                     "seconds": s["seconds"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None, help="a PEFT adapter folder to merge (step 4's output)")
    ap.add_argument("--n", type=int, default=8, help="reports in the fixed set")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--modes", default="off,schema,spans", help="comma list of off, schema, spans")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    modes = [infer.constrained_mode(m) for m in args.modes.split(",")]
    reports = fixed_reports(args.n, args.seed)
    rows = run_hf(args.model, reports, modes, args.batch_size, args.max_new_tokens, args.adapter, "cpu")
    if torch.cuda.is_available():
        rows += run_hf(args.model, reports, modes, args.batch_size, args.max_new_tokens, args.adapter, "cuda")
    try:
        infer_vllm.check_available()
        rows += run_vllm(args.model, reports, modes, args.max_new_tokens, args.adapter, args.seed)
    except infer_vllm.VllmUnavailable as e:
        rows.append({"backend": "vllm", "model": args.model, "constrained": "-", "reports": 0,
                     "reports_per_s": None, "note": f"unavailable: {str(e).split(' (')[0].split(';')[0]}"})
    print(f"{args.n} fixed reports, batch {args.batch_size}, at most {args.max_new_tokens} new tokens, "
          f"torch threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
