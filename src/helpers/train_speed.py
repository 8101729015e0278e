"""Faster LoRA training on a CPU without changing what is learned (step 4, hf backend).

Two switches, each a `finetune:` profile key:

- `lm_head_at_labels`: TRL's fused LM head (1.15+) already avoids the full (batch, seq, vocab) logits,
  but off CUDA it still projects *every* position through the head and only zeroes the unlabelled ones
  afterwards. Only ~13% of the tokens carry a label here, and the head is 49k (SmolLM2) or 262k (Gemma 3)
  wide, so on CPU most of the head's work is thrown away. `head_at_labels()` makes TRL take its own
  compact path (project only the positions whose next-token label is not -100) on CPU too: the same
  kernel on a subset of rows, so the loss, metrics and gradients are the same (tests/test_train_speed.py).
- `train_sampling_strategy: length_buckets`: batches of rows of similar length (sorted by length, cut into
  batches, the batch order shuffled with the seed every epoch), so a batch is padded to ~its own length
  instead of to its longest row. It changes which rows share a batch, so it changes the loss curve
  within noise, not its level. transformers' own `group_by_length` sorts whole mega-batches longest-first,
  which on a few hundred rows is a long-to-short curriculum; this one keeps the epoch's order random.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

log = logging.getLogger(__name__)

LENGTH_BUCKETS = "length_buckets"
SAMPLING_STRATEGIES = ("random", "sequential", "group_by_length", LENGTH_BUCKETS)


# ---- the LM head only where labels are ---------------------------------------------------------
@contextlib.contextmanager
def head_at_labels(enabled: bool = True) -> Iterator[bool]:
    """While active, TRL's fused LM head scores only labelled positions on every device (it does so
    on CUDA already). Yields whether the switch took effect; a TRL without the hook leaves training
    unchanged (a warning, never a different loss)."""
    if not enabled:
        yield False
        return
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a hard dependency of step 4
        yield False
        return
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not hasattr(trl_utils, "add_fused_lm_head"):
        log.warning("lm_head_at_labels: this TRL version has no fused LM head hook; training unchanged")
        yield False
        return

    def compact(device: Any) -> bool:
        return True

    trl_utils._use_triton = compact
    try:
        yield True
    finally:
        trl_utils._use_triton = original


# ---- length-bucketed batches -------------------------------------------------------------------
def bucket_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[int]:
    """Row indices for one epoch: rows sorted by length (ties in seeded random order), cut into batches
    of `batch_size`, the full batches shuffled (seed + epoch) and the one short batch, if any, last."""
    import torch

    n = len(lengths)
    if n == 0:
        return []
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g).tolist()
    ranked = sorted(perm, key=lambda i: lengths[i])          # stable: ties keep the random order
    full = n // batch_size * batch_size
    # the short batch takes the shortest rows, so every full batch stays tight
    short, rest = ranked[:n - full], ranked[n - full:]
    batches = [rest[i:i + batch_size] for i in range(0, full, batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [i for b in order for i in batches[b]] + short


class LengthBucketSampler:
    """A torch Sampler giving `bucket_order` per epoch; the Trainer calls set_epoch, so a resumed run
    sees the same order as an uninterrupted one."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), int(batch_size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(bucket_order(self.lengths, self.batch_size, self.seed, self.epoch))


def trainer_class(base: Any, strategy: str) -> Any:
    """`base` (SFTTrainer) itself, or a subclass whose training sampler is a LengthBucketSampler over
    the rows' input_ids lengths (batch = per-device batch x gradient accumulation, as the Trainer's)."""
    if strategy != LENGTH_BUCKETS:
        return base

    class LengthBucketTrainer(base):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            ds = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [len(x) for x in ds["input_ids"]]
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthBucketSampler(lengths, batch, self.args.data_seed or self.args.seed)

    return LengthBucketTrainer


def hf_sampling_strategy(strategy: str) -> str:
    """The value for TrainingArguments.train_sampling_strategy (ours is a sampler, theirs 'random')."""
    return "random" if strategy == LENGTH_BUCKETS else strategy
