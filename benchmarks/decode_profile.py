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

from helpers import draft as drafting, greedy, infer, models, prefill, prefix_cache
from helpers.templates import encode, render_prompt

TIMES: dict[str, list[float]] = defaultdict(list)
ACCEPTED: list[int] = []       # draft tokens kept, at each draft's settling


def counted(fn: Callable) -> Callable:
    """helpers.draft.settle, with the number of accepted draft tokens recorded in ACCEPTED."""
    def wrapper(cache: Any, ahead: Any, step: int, *args: Any, **kwargs: Any) -> Any:
        ACCEPTED.append(step)
        return fn(cache, ahead, step, *args, **kwargs)
    return wrapper


def timed(name: str, fn: Callable) -> Callable:
    """fn, with each call's wall time appended to TIMES[name] and its CPU time to TIMES[name + ' cpu']
    (steadier on a shared machine)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        TIMES[name].append(time.perf_counter() - started)
        TIMES[name + " cpu"].append(time.process_time() - cpu)
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
    ap.add_argument("--no-draft", action="store_true", help="one forward per token from the first (no drafted opening)")
    args = ap.parse_args()
    tok, spec, reports, stops = inputs(args.model, args.n, args.seed, args.profile)
    model = models.load_model(args.model)
    if args.adapter:
        model = infer.apply_adapter(model, args.adapter, merge=True)
    model.eval()
    prompts = [render_prompt(tok, spec, r["text"]) for r in reports]
    lengths = [len(encode(tok, p)) for p in prompts]
    mode = infer.constrained_mode(args.constrained)
    opening = None if args.no_draft else drafting.opening(tok, spec)
    infer.generate_batch(model, tok, prompts[:2], stops, 24, constrained=mode, texts=[r["text"] for r in reports[:2]],
                         draft=opening)
    greedy.next_logits = timed("forward", greedy.next_logits)
    greedy.next_hidden = timed("forward", greedy.next_hidden)
    greedy.choose = timed("choose", greedy.choose)
    greedy.compaction = timed("compaction", greedy.compaction)
    drafting.forward = timed("forward", timed("draft", drafting.forward))
    drafting.settle = counted(drafting.settle)
    prefill.run = timed("prefill", prefill.run)
    started = time.perf_counter()
    out = infer.generate_batch(model, tok, prompts, stops, args.max_new_tokens, constrained=mode,
                               texts=[r["text"] for r in reports], draft=opening)
    total = time.perf_counter() - started
    groups = prefill.plan_groups([n - len(prefix_cache.common_prefix([encode(tok, p) for p in prompts]))
                                  for n in lengths])
    fwd = TIMES["forward"][len(groups) - 1:]     # the group forwards but the last one: prefill
    fwd_cpu = TIMES["forward cpu"][len(groups) - 1:]
    print(f"{args.model}{'+lora' if args.adapter else ''}, {len(prompts)} reports in one batch, prompt tokens "
          f"{min(lengths)}-{max(lengths)}, {args.constrained}, torch threads {torch.get_num_threads()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"total {total:.1f} s: prefill {TIMES['prefill'][0]:.1f} s ({len(groups)} length groups), "
          f"{len(fwd) - 1} decoding forwards {sum(fwd[1:]):.1f} s, CPU {sum(fwd_cpu[1:]):.1f} s "
          f"(first {1000 * fwd[1]:.0f} ms, last {1000 * fwd[-1]:.0f} ms), choosing tokens (processor, head) {sum(TIMES['choose']):.1f} s, "
          f"compaction {1000 * sum(TIMES['compaction']):.0f} ms; new tokens mean "
          f"{sum(n for _, n, _ in out) / len(out):.1f}, max {max(n for _, n, _ in out)}")
    print("draft: off" if opening is None else f"draft {tok.decode(opening)!r} ({len(opening)} tokens): "
          + (f"one forward of {1000 * TIMES['draft'][0]:.0f} ms, {ACCEPTED or 'all'} accepted"
             if TIMES["draft"] else "not used (the rows' first tokens differ)"))
    profile_steps(model, tok, reports, prompts, stops, mode, args.steps)


def profile_steps(model: Any, tok: Any, reports: list[dict], prompts: list[str], stops: list[int], mode: Any,
                  steps: int) -> None:
    """torch.profiler's table of `steps` decoding steps of the whole batch (prefill excluded), as the
    loop runs them: choose the tokens (processor, head), then one forward of the decoder body."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import LogitsProcessorList
    from helpers.constrained import RecordLogitsProcessor
    ids = [encode(tok, p) for p in prompts]
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[stops[0]] * (width - len(x)) + x for x in ids])
    attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    procs = LogitsProcessorList()
    if mode:
        vocab = model.get_output_embeddings().weight.shape[0]
        procs.append(RecordLogitsProcessor(tok, vocab, stops, width, 96, mode=mode, texts=[r["text"] for r in reports]))
    head = greedy.narrow_head(model, procs)
    cache = greedy.buffer_cache(model, width + steps + 2)
    live = torch.arange(len(ids))
    with torch.inference_mode():
        logits, mask = prefill.run(model, input_ids, attention, cache)
        history, last, hidden = input_ids, greedy.positions(attention)[:, -1:], None
        tokens = greedy.choose(procs, history, live, logits, None, head)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                history = torch.cat([history, tokens[:, None]], dim=-1)
                mask, last = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1), last + 1
                if head is None:
                    logits = greedy.next_logits(model, tokens[:, None], mask, last, cache)
                else:
                    hidden = greedy.next_hidden(model, tokens[:, None], mask, last, cache)
                tokens = greedy.choose(procs, history, live, logits, hidden, head)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
