"""Where one step-5 batch spends its time under helpers.greedy's loop: prefill, the decoding forwards,
the logits processors, row compaction; then torch's profiler table of a few decoding steps (which
ops dominate a step now that the KV cache is no longer copied per token).

    .venv/bin/python benchmarks/decode_profile.py                                   # SmolLM2, 32 reports, spans
    .venv/bin/python benchmarks/decode_profile.py --model gemma3-270m --adapter artifacts/models/cpu/gemma3-270m
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any, Callable

import torch

from helpers import greedy, infer, models, prefill, prefix_cache
from helpers.templates import encode, render_prompt

TIMES: dict[str, list[float]] = defaultdict(list)


def timed(name: str, fn: Callable) -> Callable:
    """fn, with each call's wall time appended to TIMES[name]."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = fn(*args, **kwargs)
        TIMES[name].append(time.perf_counter() - started)
        return out
    return wrapper


def inputs(model_key: str, n: int, seed: int, profile: str) -> tuple[Any, Any, list[dict], list[int]]:
    """Tokenizer, spec, the throughput benchmark's reports and the stop ids."""
    from infer_throughput import study_reports   # benchmarks/ is on the path when run as a script
    spec = models.get_spec(model_key)
    tok = models.set_padding_side(models.load_tokenizer(model_key), "generation")
    return tok, spec, study_reports(n, seed, profile), infer.stop_token_ids(tok, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--n", type=int, default=32, help="reports, one batch")
    ap.add_argument("--constrained", default="spans")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--steps", type=int, default=3, help="decoding steps in the profiler table")
    args = ap.parse_args()
    tok, spec, reports, stops = inputs(args.model, args.n, args.seed, args.profile)
    model = models.load_model(args.model)
    if args.adapter:
        model = infer.apply_adapter(model, args.adapter, merge=True)
    model.eval()
    prompts = [render_prompt(tok, spec, r["text"]) for r in reports]
    lengths = [len(encode(tok, p)) for p in prompts]
    mode = infer.constrained_mode(args.constrained)
    infer.generate_batch(model, tok, prompts[:2], stops, 24, constrained=mode, texts=[r["text"] for r in reports[:2]])
    greedy.next_logits = timed("forward", greedy.next_logits)
    greedy.scored = timed("processors", greedy.scored)
    greedy.compaction = timed("compaction", greedy.compaction)
    prefill.run = timed("prefill", prefill.run)
    started = time.perf_counter()
    out = infer.generate_batch(model, tok, prompts, stops, args.max_new_tokens, constrained=mode,
                               texts=[r["text"] for r in reports])
    total = time.perf_counter() - started
    groups = prefill.plan_groups([n - len(prefix_cache.common_prefix([encode(tok, p) for p in prompts]))
                                  for n in lengths])
    fwd = TIMES["forward"][len(groups) - 1:]     # the group forwards but the last one: prefill
    print(f"{args.model}{'+lora' if args.adapter else ''}, {len(prompts)} reports in one batch, prompt tokens "
          f"{min(lengths)}-{max(lengths)}, {args.constrained}, torch threads {torch.get_num_threads()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"total {total:.1f} s: prefill {TIMES['prefill'][0]:.1f} s ({len(groups)} length groups), "
          f"{len(fwd) - 1} decoding forwards {sum(fwd[1:]):.1f} s "
          f"(first {1000 * fwd[1]:.0f} ms, last {1000 * fwd[-1]:.0f} ms), processors {sum(TIMES['processors']):.1f} s, "
          f"compaction {1000 * sum(TIMES['compaction']):.0f} ms; new tokens mean "
          f"{sum(n for _, n, _ in out) / len(out):.1f}, max {max(n for _, n, _ in out)}")
    profile_steps(model, tok, prompts, stops, args.steps)


def profile_steps(model: Any, tok: Any, prompts: list[str], stops: list[int], steps: int) -> None:
    """torch.profiler's table of `steps` decoding forwards of the whole batch (prefill excluded)."""
    from torch.profiler import ProfilerActivity, profile
    ids = [encode(tok, p) for p in prompts]
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[stops[0]] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    cache = greedy.buffer_cache(model, width + steps + 1)
    with torch.inference_mode():
        logits = greedy.next_logits(model, input_ids, mask, greedy.positions(mask), cache)
        last = greedy.positions(mask)[:, -1:]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
                last = last + 1
                logits = greedy.next_logits(model, logits.argmax(-1)[:, None], mask, last, cache)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
