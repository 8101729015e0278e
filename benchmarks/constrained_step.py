"""Cost per decoding step of the constrained-decoding logits processor, on torch's threads (as before)
and on one thread (as now), side by side.

It walks a batch of template reports through the record automaton in `spans` mode with random scores
(no model is loaded: only the tokenizer), timing every call. On an idle machine both take a few ms per
step; on a busy one the torch-threads variant waits for descheduled OpenMP threads on each of its many
small vocabulary-wide ops. Run it beside a training run, or alone, and compare.

    python benchmarks/constrained_step.py --model smollm2-135m
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from helpers import constrained, infer, models
from train_throughput import template_reports


def walk(processor: constrained.RecordLogitsProcessor, vocab: int, batch: int, steps: int,
         one_thread: bool, seed: int) -> list[float]:
    """Seconds per call over `steps` steps, choosing the best-scoring allowed token each step."""
    call = processor.__call__ if one_thread else processor._masked
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, 10, dtype=torch.long)
    times = []
    for _ in range(steps):
        scores = torch.randn(batch, vocab, generator=g)
        t = time.perf_counter()
        out = call(ids, scores)
        times.append(time.perf_counter() - t)
        ids = torch.cat([ids, out.argmax(-1, keepdim=True)], 1)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each variant")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = models.set_padding_side(models.load_tokenizer(args.model), "generation")
    spec = models.get_spec(args.model)
    vocab = {"smollm2-135m": 49152, "gemma3-270m": 262144}.get(args.model, len(tok))   # the head width
    stop = infer.stop_token_ids(tok, spec)
    texts = [r["text"] for r in template_reports(args.batch, 13, "test")]
    constrained.build_tables(tok, vocab, stop)
    print(f"{args.model}: spans mode, batch {args.batch}, {args.steps} steps, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        for one_thread in (False, True):
            p = constrained.RecordLogitsProcessor(tok, vocab, stop, 10, args.steps, mode="spans", texts=texts)
            t = walk(p, vocab, args.batch, args.steps, one_thread, seed=r)
            later = sorted(t[1:])
            print(f"  round {r + 1}  {'one thread  ' if one_thread else 'torch threads'}: mean "
                  f"{1000 * sum(later) / len(later):6.1f} ms/step, median {1000 * later[len(later) // 2]:6.1f}, "
                  f"max {1000 * later[-1]:6.1f}  (first call, with the report tables: {t[0]:.2f} s)")


if __name__ == "__main__":
    main()
