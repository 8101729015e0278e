"""Prefill for helpers.greedy's loop: the prompt tokens a batch shares once, the rest of each prompt in
groups of rows of similar length, so neither the shared instruction nor much padding is computed.

Why: once decoding no longer copies the KV cache every token, prefill is most of step 5's time (13 of
24 s for 32 reports of SmolLM2, 80% with a LoRA adapter that writes 31 tokens), and it is compute-bound:
only fewer token positions make it faster. Every prompt starts with the same chat-template opening and
instruction (~90 tokens), and a batch of mixed lengths is 30-40% padding.

Each row's cache is laid out as in `prefix_cache`: [shared prefix][padding][rest of prompt i] with
attention 1 / 0 / 1, so position ids (from the mask) and the set of positions every token attends to
are those of plain left padding. The prefix is run once at batch 1; each group of rows then runs its
rests, left-padded to the group's longest only, on a copy of the prefix, and its keys and values are
placed right-aligned in the loop's buffers (the padding between is zero and masked).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers.cache_utils import Cache

from .prefix_cache import PrefixCache, build

GROUP_OVERHEAD = 128    # token positions one more forward is worth (weights read again, smaller matmuls)


def plan_groups(lengths: Sequence[int], overhead: int | None = None) -> list[list[int]]:
    """Rows in groups of similar length, the fewest computed positions plus `overhead` (GROUP_OVERHEAD)
    per group (each group is padded to its longest row): an exact split of the rows sorted longest first."""
    overhead = GROUP_OVERHEAD if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best, cut = [0] + [10 ** 18] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):            # rows order[i:j] form the last group, its longest is order[i]
            cost = best[i] + (j - i) * lengths[order[i]] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def shared_prefix(model: Any, ids: Sequence[Sequence[int]], prefix: PrefixCache | None) -> PrefixCache | None:
    """The given prefix when every row starts with it, else this batch's own (None when too short)."""
    if prefix is not None and all(list(x[:len(prefix)]) == prefix.ids and len(x) > len(prefix) for x in ids):
        return prefix
    return build(model, ids) if len(ids) > 1 else None


def layout_mask(lengths: Sequence[int], p: int, width: int) -> torch.Tensor:
    """The attention mask of [prefix][padding][rest] rows `width` columns wide."""
    return torch.tensor([[1] * p + [0] * (width - n) + [1] * (n - p) for n in lengths], dtype=torch.long)


def group_cache(model: Any, prefix: PrefixCache | None, rows: int, capacity: int) -> Cache:
    """A buffer cache for one group, holding the prefix's keys and values in every row."""
    from .greedy import buffer_cache
    cache = buffer_cache(model, capacity)
    if prefix is not None:
        for layer, src in zip(cache.layers, prefix.cache.layers):
            layer.update(src.keys.expand(rows, -1, -1, -1), src.values.expand(rows, -1, -1, -1))
    return cache


def place(cache: Cache, part: Cache, rows: torch.Tensor, batch: int, p: int, width: int) -> None:
    """Copy a group's rest columns right-aligned into the batch's buffers (prefix too), zero between."""
    for dst, src in zip(cache.layers, part.layers):
        if not dst.is_initialized:
            dst.allocate(batch, src.k_buf, src.v_buf)
        w = src.length - p
        for buf, own in ((dst.k_buf, src.k_buf), (dst.v_buf, src.v_buf)):
            buf[rows, :, :p] = own[:, :, :p]
            buf[rows, :, p:width - w] = 0
            buf[rows, :, width - w:width] = own[:, :, p:p + w]
        dst.length = width


def run(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, cache: Cache,
        prefix: PrefixCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill `cache` (BufferLayers) with a left-padded batch's prompts: the last position's logits (float32)
    and the attention mask of the layout the cache now holds."""
    from .greedy import next_logits, positions
    width = input_ids.shape[1]
    ids = [row[width - int(n):] for row, n in zip(input_ids.tolist(), attention.sum(-1).tolist())]
    prefix = shared_prefix(model, ids, prefix)
    p = len(prefix) if prefix is not None else 0
    lengths = [len(x) for x in ids]
    groups = plan_groups([n - p for n in lengths])
    if p == 0 and len(groups) == 1:        # plain left padding, one forward: generate's own prefill
        plain = None if bool(attention.all()) else attention
        return next_logits(model, input_ids, plain, positions(attention), cache), attention
    device = input_ids.device
    logits: torch.Tensor | None = None
    for group in groups:
        w = max(lengths[i] - p for i in group)
        rest = torch.tensor([[0] * (w - lengths[i] + p) + ids[i][p:] for i in group], device=device)
        g_mask = layout_mask([lengths[i] for i in group], p, p + w).to(device)
        part = group_cache(model, prefix, len(group), p + w)
        out = next_logits(model, rest, g_mask, positions(g_mask)[:, p:], part)
        rows = torch.tensor(group, device=device)
        place(cache, part, rows, len(ids), p, width)
        if logits is None:
            logits = out.new_empty(len(ids), out.shape[1])
        logits[rows] = out
    return logits, layout_mask(lengths, p, width).to(device)
