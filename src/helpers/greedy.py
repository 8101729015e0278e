"""Greedy decoding for step 5 without transformers `generate`'s per-step costs, with the same tokens.

Why: on CPU `generate` spends about a third of every decoding step growing its DynamicCache by
`torch.cat` (the whole cache is copied once per layer per token), and a batch keeps computing rows
that have already emitted their stop token until its longest answer ends. This loop keeps each
layer's keys and values in one preallocated buffer that is written in place (attention reads only
the filled part), and drops finished rows from the batch. Everything else is what `generate` does
for greedy decoding: position ids from the attention mask (cumsum - 1, padding at 0), the last
position's logits only (`logits_to_keep=1`) in float32, the logits processors called with every
row's full token history (finished rows padded, as `generate` pads them), argmax, stop on a stop
token or at `max_new_tokens`. `unsupported` names the cases it cannot reproduce (the caller then
uses `generate`). Beyond that, under constrained decoding the output head is computed only for the
tokens some row may take (`narrow_head`), and the prompts are prefilled by helpers.prefill. And the
answer's opening is drafted (helpers.draft, `decode(draft=...)`): when every row's first token is the
first of the tokens fine-tuned answers open with (`{"drugs": ["`), one forward over all of them gives
the outputs of the next steps, each step's token is still chosen from them as above, and the cache is
cut back (`BufferLayer.truncate`) after the last one every row chose. SmolLM2 + LoRA, 32 reports: 4 of
5 drafted tokens kept, 68 decoding forwards -> 65, the first steps' ~110 ms each -> one ~200 ms forward
(benchmarks/decode_profile.py, `--no-draft` to compare).

"The same tokens" is checked, not proved: CPU matmuls round differently with the batch's shape (a
smaller batch once rows finish, prefill in groups, a head of a few hundred rows, a drafted forward of
several positions), by ~1e-6 on logits
of ~10, as batch 16 and batch 32 do under `generate` itself; only a near-tie that close could go the
other way. tests/test_greedy.py (tiny and real models) and benchmarks/infer_throughput.py compare
every output with `generate`'s.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Sequence

import torch
from transformers import GenerationConfig
from transformers.cache_utils import Cache, DynamicLayer

from . import draft as drafting

log = logging.getLogger(__name__)
_LOGGED: set[str] = set()
LAYER_TYPES = ("full_attention", "sliding_attention")
NARROW_SHARE = 8        # the head is narrowed to the allowed tokens when they are under 1/8 of the vocabulary
# generation-config fields that make `generate` add logits processors of its own (beyond the caller's)
PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                    "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                    "sequence_bias", "exponential_decay_length_penalty", "encoder_repetition_penalty",
                    "encoder_no_repeat_ngram_size", "renormalize_logits", "remove_invalid_values")


class BufferLayer(DynamicLayer):
    """One layer's keys and values in a preallocated [batch, heads, capacity, dim] buffer, written in
    place; `update` returns views of the filled length, so attention sees exactly what a DynamicLayer
    would hand it, without a copy of the whole cache per token."""

    def __init__(self, capacity: int, sliding: bool = False) -> None:
        """Room for `capacity` positions, allocated at the first update (only then are shapes known)."""
        super().__init__()
        self.capacity, self.length, self.is_sliding = capacity, 0, sliding

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the buffers at the first update (shape, dtype and device come from the model)."""
        self.allocate(key_states.shape[0], key_states, value_states)

    def allocate(self, batch: int, like_keys: torch.Tensor, like_values: torch.Tensor) -> None:
        """Buffers for `batch` rows, heads, head size, dtype and device as the given keys and values."""
        self.dtype, self.device = like_keys.dtype, like_keys.device
        self.k_buf = like_keys.new_empty(batch, like_keys.shape[1], self.capacity, like_keys.shape[3])
        self.v_buf = like_values.new_empty(batch, like_values.shape[1], self.capacity, like_values.shape[3])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the filled ones; the filled part, as views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(max(end, 2 * self.capacity))
        self.k_buf[:, :, self.length:end] = key_states
        self.v_buf[:, :, self.length:end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def _views(self) -> None:
        """keys / values: views of the filled length, what attention and the Cache API read."""
        self.keys = self.k_buf[:, :, :self.length]
        self.values = self.v_buf[:, :, :self.length]

    def _grow(self, capacity: int) -> None:
        """A larger buffer when more tokens come than planned (never on the step-5 path, which sizes it)."""
        for name in ("k_buf", "v_buf"):
            old = getattr(self, name)
            new = old.new_empty(old.shape[0], old.shape[1], capacity, old.shape[3])
            new[:, :, :self.length] = old[:, :, :self.length]
            setattr(self, name, new)
        self.capacity = capacity

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The mask covers the filled length and the new positions (a DynamicLayer's sizes)."""
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        """Filled positions (the Cache API: masks and cache positions are derived from it)."""
        return self.length

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions (a rejected draft's are dropped): the buffer is written in
        place, so the next update overwrites what lies beyond."""
        if length > self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {length}")
        self.length = length
        if self.is_initialized:
            self._views()

    def move_rows(self, holes: torch.Tensor, movers: torch.Tensor, n: int) -> None:
        """Rows `movers` (filled part) are copied into rows `holes`; the batch is then the first n rows."""
        if not self.is_initialized:
            return
        if len(holes):
            self.k_buf[holes, :, :self.length] = self.k_buf[movers, :, :self.length]
            self.v_buf[holes, :, :self.length] = self.v_buf[movers, :, :self.length]
        self.k_buf, self.v_buf = self.k_buf[:n], self.v_buf[:n]
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Only these rows go on (the Cache API; the loop itself uses `move_rows`)."""
        if self.is_initialized:
            self.k_buf, self.v_buf = self.k_buf.index_select(0, indices), self.v_buf.index_select(0, indices)
            self._views()


def buffer_cache(model: Any, capacity: int) -> Cache:
    """A Cache of BufferLayers, one per decoder layer, sliding layers flagged as such (masks need it)."""
    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return Cache(layers=[BufferLayer(capacity, t == "sliding_attention") for t in types])


def unsupported(model: Any, width: int, max_new_tokens: int) -> str | None:
    """Why this loop could not reproduce `generate` for this model and batch, or None when it can."""
    config = model.config.get_text_config(decoder=True)
    if getattr(model.config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    types = getattr(config, "layer_types", None) or ["full_attention"]
    if any(t not in LAYER_TYPES for t in types):
        return f"layer types {sorted(set(types) - set(LAYER_TYPES))} (only full and sliding attention)"
    window = getattr(config, "sliding_window", None)
    if "sliding_attention" in types and window and width + max_new_tokens > window:
        return (f"prompt width {width} + {max_new_tokens} new tokens exceeds the sliding window {window} "
                f"(generate's sliding layers then drop old positions)")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return "a model whose forward takes no logits_to_keep"
    defaults, own = GenerationConfig(), getattr(base, "generation_config", None) or GenerationConfig()
    extra = [f for f in PROCESSOR_FIELDS if getattr(own, f, None) != getattr(defaults, f, None)]
    if extra:
        return f"the model's generation config adds logits processors ({', '.join(extra)})"
    return None


def log_fallback(reason: str) -> None:
    """Say once per reason that `generate` is used instead (it is slower, never different)."""
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        log.warning("greedy loop not used, transformers generate instead: %s", reason)


def positions(attention: torch.Tensor) -> torch.Tensor:
    """Position ids as `generate` makes them for left padding: cumsum - 1, padding at 0."""
    return (attention.long().cumsum(-1) - 1).masked_fill(attention == 0, 0)


def next_logits(model: Any, ids: torch.Tensor, attention: torch.Tensor | None, pos: torch.Tensor,
                cache: Cache) -> torch.Tensor:
    """One forward over `ids` (prompt or last tokens): the last position's logits, float32, as generate."""
    out = model(input_ids=ids.contiguous(), attention_mask=attention, position_ids=pos.contiguous(),
                past_key_values=cache, use_cache=True, logits_to_keep=1, return_dict=True)
    return out.logits[:, -1].to(copy=True, dtype=torch.float32)


def narrow_head(model: Any, processors: Any) -> torch.nn.Linear | None:
    """The output head, when the loop may compute it for the allowed tokens only: one processor that
    says which tokens each row may take (constrained decoding) and a plain head (a linear layer without
    bias or logit soft-capping, after the decoder body `model.model`); else None."""
    procs = list(processors or [])
    if len(procs) != 1 or not hasattr(procs[0], "allowed_rows"):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head, body = getattr(base, "lm_head", None), getattr(base, "model", None)
    if type(head) is not torch.nn.Linear or head.bias is not None or body is None:
        return None
    configs = (base.config, base.config.get_text_config(decoder=True))
    if any(getattr(c, "final_logit_softcapping", None) is not None for c in configs):
        return None
    return head


def next_hidden(model: Any, ids: torch.Tensor, attention: torch.Tensor | None, pos: torch.Tensor,
                cache: Cache) -> torch.Tensor:
    """One forward of the decoder body only (the causal LM's forward less its head): the last position's
    hidden state, [rows, 1, hidden]."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.model(input_ids=ids.contiguous(), attention_mask=attention, position_ids=pos.contiguous(),
                     past_key_values=cache, use_cache=True, return_dict=True)
    return out.last_hidden_state[:, -1:]


def choose(processors: Any, history: torch.Tensor, live: torch.Tensor, logits: torch.Tensor | None,
           hidden: torch.Tensor | None, head: torch.nn.Linear | None) -> torch.Tensor:
    """The greedy tokens of the live rows: from full logits; or, from the hidden state, through the head's
    rows of the tokens some row may take (in spans mode a few hundred of 49-262k: the head was 20-60% of
    a step's weights), the whole head when that set is large."""
    if hidden is None:
        return scored(processors, history, logits, live).argmax(-1)
    whole = len(live) == history.shape[0]
    rows = live.tolist()
    allowed = processors[0].allowed_rows(history if whole else history[live], head.weight.shape[0],
                                         None if whole else rows)
    allowed = allowed.to(hidden.device)
    penalty = processors[0].penalty_rows(rows, head.weight.shape[0])
    cols = allowed.any(0).nonzero().flatten()
    return head_argmax(hidden[:, -1], head, allowed, None if len(cols) * NARROW_SHARE > allowed.shape[1] else cols,
                       None if penalty is None else penalty.to(hidden.device))


def head_argmax(hidden: torch.Tensor, head: torch.nn.Linear, allowed: torch.Tensor,
                cols: torch.Tensor | None, penalty: torch.Tensor | None = None) -> torch.Tensor:
    """The best allowed token of each row from the head's rows `cols` only (None: the whole head), so
    the few hundred allowed tokens cost a few hundred dot products, after the processor's `penalty`
    ([rows, vocab], None: none); ties go to the lowest token id, as argmax over the whole masked
    vocabulary breaks them."""
    if cols is None:
        full = head(hidden[:, None])[:, -1].to(copy=True, dtype=torch.float32)
        full = full if penalty is None else full - penalty
        return full.masked_fill(~allowed, float("-inf")).argmax(-1)
    part = torch.nn.functional.linear(hidden, head.weight[cols]).to(torch.float32)
    part = part if penalty is None else part - penalty[:, cols]
    return cols[part.masked_fill(~allowed[:, cols], float("-inf")).argmax(-1)]


def scored(processors: Any, history: torch.Tensor, logits: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """The processed scores of the live rows (`live`: their row numbers in the batch). A processor with
    `score_rows` (constrained decoding) sees the live rows only, with their numbers, so it keeps each
    row's state; any other sees every row (finished ones with zero scores), as under `generate`."""
    if not processors:
        return logits
    whole = len(live) == history.shape[0]
    for proc in processors:
        if whole:
            logits = proc(history, logits)
        elif hasattr(proc, "score_rows"):
            logits = proc.score_rows(history[live], logits, live.tolist())
        else:
            full = logits.new_zeros(history.shape[0], logits.shape[1])
            full[live] = logits
            logits = proc(history, full)[live]
    return logits


def compaction(going: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How to close the gaps finished rows leave: (order, holes, movers). Live rows past the new batch
    size move into the holes below it, so only they are copied, not the whole cache; `order` is the
    old row number of each new row."""
    n = int(going.sum())
    idx = torch.arange(len(going), device=going.device)
    holes, movers = idx[:n][~going[:n]], idx[n:][going[n:]]
    order = idx[:n].clone()
    order[holes] = movers
    return order, holes, movers


def prompts(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, cache: Cache, grouped_prefill: bool,
            prefix: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prefill: the last position's logits and the cache's attention mask (None when all ones, as
    generate drops it), by helpers.prefill or in one plain forward."""
    if grouped_prefill:
        from . import prefill
        logits, mask = prefill.run(model, input_ids, attention, cache, prefix)
    else:
        plain = None if bool(attention.all()) else attention
        logits, mask = next_logits(model, input_ids, plain, positions(attention), cache), attention
    return logits, None if bool(mask.all()) else mask


def decode(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, stop_ids: Sequence[int], pad: int,
           max_new_tokens: int, processors: Any = None, drop_finished: bool = True,
           grouped_prefill: bool = True, prefix: Any = None, narrow: bool = True,
           draft: Sequence[int] | None = None) -> torch.Tensor:
    """Greedy generation of a left-padded batch: prompt and new tokens, as `model.generate` returns them
    (finished rows padded with `pad`, as many columns as the longest answer needed). `grouped_prefill`
    runs the prompts through helpers.prefill (shared prefix once, rows in length groups; `prefix`: a
    prefix_cache.PrefixCache to reuse), else in one forward as generate does. `narrow` computes the output
    head for the tokens the constrained processor allows only (`narrow_head`). `draft`: the tokens every
    answer is expected to open with (helpers.draft.opening), forwarded at once and kept as far as every
    row chose them (None: one forward per token)."""
    batch, width = input_ids.shape
    history = torch.full((batch, width + max_new_tokens), pad, dtype=torch.long, device=input_ids.device)
    history[:, :width] = input_ids
    cache = buffer_cache(model, width + max_new_tokens)
    logits, mask = prompts(model, input_ids, attention, cache, grouped_prefill, prefix)
    last = positions(attention)[:, -1:]
    live = torch.arange(batch, device=input_ids.device)
    stops = torch.tensor(sorted(set(stop_ids)), device=input_ids.device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    head = narrow_head(model, processors) if narrow else None
    hidden, ahead = None, None
    opening = torch.tensor(list(draft), dtype=torch.long, device=input_ids.device) if draft else None
    for step in range(max_new_tokens):
        tokens = choose(processors, history[:, :width + step], live, logits, hidden, head)
        tokens = torch.where(unfinished, tokens, pad)          # generate pads rows that have finished
        history[live, width + step] = tokens
        agreed = drafting.agrees(tokens, unfinished, opening, step)
        unfinished &= ~torch.isin(tokens, stops)
        if step + 1 == max_new_tokens or not bool(unfinished.any()):
            return history[:, :width + step + 1]
        if drop_finished and not bool(unfinished.all()):
            order, holes, movers = compaction(unfinished)
            for layer in cache.layers:
                layer.move_rows(holes, movers, len(order))
            live, tokens, last, unfinished = live[order], tokens[order], last[order], unfinished[order]
            mask = mask[order] if mask is not None else None
            ahead = ahead.rows(order) if ahead is not None else None
        if ahead is not None and agreed and step < len(ahead.tokens):
            logits, hidden = ahead.at(step)                    # token step + 1 from the draft's forward
            continue
        if ahead is not None:                                  # the draft stands up to token step - 1
            mask, last = drafting.settle(cache, ahead, step, mask, last)
            ahead = None
        elif step == 0 and agreed and max_new_tokens > 2:      # every row opened as the answers do
            k = min(len(opening), max_new_tokens - 1)
            ahead, mask = drafting.forward(model, opening[:k], mask, last, cache, head is not None)
            logits, hidden = ahead.at(0)
            continue
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        last = last + 1
        if head is None:
            logits = next_logits(model, tokens[:, None], mask, last, cache)
        else:
            hidden = next_hidden(model, tokens[:, None], mask, last, cache)
    return history
