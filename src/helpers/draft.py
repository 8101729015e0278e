"""Exact speculative decoding of the answer's opening, for helpers.greedy's loop.

Why: every fine-tuned answer starts with the same tokens (the record's opening `{"drugs": ["`: 5 tokens
for SmolLM2, 4 for Gemma 3), and the loop's first steps are its most expensive ones: every row of the
batch is still live (SmolLM2, 32 rows: ~180-270 ms a step, ~55 ms at the end). When every row's first
token is the opening's first, one forward over the whole opening (k positions at once, as prefill
computes a prompt) gives the outputs the next k forwards would give one at a time. Each step's token is
still chosen from them exactly as the loop chooses it (same processors, same history, one call per
step), and the opening stands only as far as every row still decoding chose it: at the first step
where some row chose otherwise, the cache is cut back to the accepted positions (`BufferLayer.truncate`;
the buffer is written in place, so the next forward overwrites the rest) and the loop goes on from
there. Nothing is guessed: a row's tokens are what the loop would have chosen, up to the float rounding
a different batch shape brings (q_len k instead of 1; see helpers.greedy's docstring).

The opening is derived from step 3's own rendering of training targets (`schemas.answer_json`,
`templates.render_training`, `templates.tokenize_example`), never written here: the common token prefix
of answers that name a drug. An answer with no drug (`{"drugs": [],`) shares all but its last token,
so a batch with such a row accepts k-1; a base model that does not open with `{"` uses none of it.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import Any, Iterator

import torch
from transformers.cache_utils import Cache

from .prefix_cache import common_prefix
from .schemas import answer_json
from .templates import render_training, tokenize_example

# drug names that open with each kind of character (lower, upper case, digit, bracket, space), so that
# no tokenizer merge of the opening with a name's first characters survives the common prefix
NAMES = ("aspirin", "Zoloft", "5-FU", "(x)", " l-dopa")


def opening(tokenizer: Any, spec: Any) -> list[int]:
    """The token ids every trained answer that names a drug starts with, as step 3 tokenizes targets:
    the common prefix of a few such answers' completion tokens (the draft the loop verifies)."""
    answers = []
    for name in NAMES:
        rendered = render_training(tokenizer, spec, "report", answer_json({"drugs": [name], "adverse_events": [name]}))
        ex = tokenize_example(tokenizer, spec, rendered["prompt"], rendered["completion"])
        answers.append(ex["input_ids"][ex["completion_mask"].index(1):])
    return common_prefix(answers)


@dataclass(frozen=True)
class Ahead:
    """The draft forward's outputs still to be used: the output at draft position s gives token s + 1.
    `outputs` are float32 logits [rows, k, vocab], or hidden states [rows, k, hidden] when the loop
    computes a narrowed head; `length` is the cache's filled length before the draft."""
    tokens: torch.Tensor
    outputs: torch.Tensor
    length: int
    narrowed: bool

    def rows(self, order: torch.Tensor) -> "Ahead":
        """The same outputs for the rows the loop keeps (compaction's `order`)."""
        return replace(self, outputs=self.outputs[order])

    def at(self, step: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits, hidden) for choosing token step + 1, as a plain forward would return them."""
        if self.narrowed:
            return None, self.outputs[:, step:step + 1]
        return self.outputs[:, step].to(copy=True, dtype=torch.float32), None


def agrees(tokens: torch.Tensor, unfinished: torch.Tensor, draft: torch.Tensor | None, step: int) -> bool:
    """Whether every row still decoding chose the draft's token at this step (finished rows, padded,
    do not count: their outputs are never used)."""
    if draft is None or step >= len(draft):
        return False
    return bool(((tokens == draft[step]) | ~unfinished).all())


def forward(model: Any, draft: torch.Tensor, mask: torch.Tensor | None, last: torch.Tensor, cache: Cache,
            narrowed: bool) -> tuple[Ahead, torch.Tensor | None]:
    """One forward over the draft tokens for every row (positions last+1..last+k, the mask extended by
    k ones): their outputs, and the extended mask."""
    rows, k = last.shape[0], len(draft)
    ids = draft[None].expand(rows, k).contiguous()
    pos = (last + torch.arange(1, k + 1, device=last.device)).contiguous()
    if mask is not None:
        mask = torch.cat([mask, mask.new_ones(rows, k)], dim=-1)
    length = cache.get_seq_length()
    with grouped_heads(last.device.type == "cpu"):
        out = _run(model, ids, mask, pos, cache, narrowed)
    return Ahead(draft, out, length, narrowed), mask


@contextlib.contextmanager
def grouped_heads(on: bool) -> Iterator[None]:
    """transformers' SDPA attention copies the whole KV cache per layer to repeat its key/value heads
    (`repeat_kv`) whenever more than one query comes (a single query is packed instead): most of a
    draft forward (SmolLM2, 32 rows x 5: 340 ms, 200 ms with torch's own grouped-query attention, the
    same outputs to the bit). TRANSFORMERS_SDPA_FORCE_GQA asks for the latter; set only for this forward,
    on CPU only (on CUDA a masked grouped-query SDPA falls back to the slow math kernel)."""
    key, before = "TRANSFORMERS_SDPA_FORCE_GQA", os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    if on:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if on and before is None:
            os.environ.pop(key, None)
        elif on:
            os.environ[key] = before


def _run(model: Any, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor, cache: Cache,
         narrowed: bool) -> torch.Tensor:
    """The decoder's hidden states (narrowed head) or the model's logits at every draft position."""
    if narrowed:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return base.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                          use_cache=True, return_dict=True).last_hidden_state
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                 use_cache=True, logits_to_keep=ids.shape[1], return_dict=True).logits


def settle(cache: Cache, ahead: Ahead, step: int, mask: torch.Tensor | None, last: torch.Tensor
           ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """After `step` accepted draft tokens: the cache cut back to them, the mask likewise, and `last`
    (the position before the draft) moved to the last accepted one, so the loop feeds token `step` next."""
    end = ahead.length + step
    for layer in cache.layers:
        layer.truncate(end)
    return (mask[:, :end] if mask is not None else None), last + step
