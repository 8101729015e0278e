"""Constrained decoding: every output is the canonical record as compact JSON, and always closes in time.

Why our own logits processor and not a library: lm-format-enforcer 0.11.3's transformers
integration does not import under transformers 5 (it imports `transformers.tokenization_utils`);
outlines 1.3.3 (outlines-core) works, but it cannot finish the JSON within `max_new_tokens`
(a string cut by the cap does not parse), and xgrammar 0.2.8 pulls triton (285 MB) into a CPU
environment. The schema is fixed and tiny, so a character automaton over it is exact and cheap:

    {"drugs": ["a", "b"], "adverse_events": ["c"]}          (json.dumps spacing, fixed key order)

- `schema` mode: strings hold any printable character but `"` and `\\`, never start with a space
  and are never empty. A token is allowed when its decoded text walks the automaton; per state
  the allowed-token table is computed once per tokenizer (cached) and the exact number of tokens
  still needed to close the JSON is known, so near the token cap only tokens that can still close
  in time are allowed: with constraints on, every output parses.
- `spans` mode (docs/design.md section 7): additionally every string is a span of the report itself,
  starting and ending on word boundaries, so the model can only copy the reporter's own words.
- `close_penalty` (either mode): nats taken off every token that closes the drug list after a drug, so
  a model that stops its list early (a report's third drug, a treatment drug) goes on; the empty list
  is never penalized, so a report naming no drug still gets none (docs/design.md section 7).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers import LogitsProcessor

MODES = ("schema", "spans")
SPAN_MARGIN = 2  # spare tokens to open a span, so it can reach the end of a word before closing


# ---- the character automaton -------------------------------------------------------------------
def is_content_char(ch: str) -> bool:
    """Characters a string value may hold (no quote, backslash or control characters)."""
    return ch not in '"\\' and ch.isprintable()


@dataclass
class Automaton:
    """States of the fixed JSON layout: literal transitions plus 'any content character' loops."""
    trans: list[dict[str, int]] = field(default_factory=list)
    content: list[int] = field(default_factory=list)       # target state on a content char, -1: none
    first_char: list[bool] = field(default_factory=list)   # the content char starts a string (no space)
    string_state: list[bool] = field(default_factory=list)  # inside a string value
    accept: int = -1
    drug_items: frozenset[int] = frozenset()               # states inside the drug list's items

    def new(self, string_state: bool = False) -> int:
        self.trans.append({})
        self.content.append(-1)
        self.first_char.append(False)
        self.string_state.append(string_state)
        return len(self.trans) - 1

    def literal(self, state: int, text: str) -> int:
        for ch in text:
            nxt = self.new()
            self.trans[state][ch] = nxt
            state = nxt
        return state

    def string_list(self, open_state: int) -> int:
        """`]` or `"x"(, "y")*]` after an opening bracket; returns the state after `]`."""
        close = self.new()
        start, inside, after = self.new(True), self.new(True), self.new()
        self.trans[open_state]["]"] = close
        self.trans[open_state]['"'] = start
        self.content[start], self.first_char[start] = inside, True
        self.content[inside] = inside
        self.trans[inside]['"'] = after
        self.trans[after]["]"] = close
        comma = self.literal(after, ", ")
        self.trans[comma]['"'] = start
        return close

    def step(self, state: int, ch: str) -> int:
        """The state after one character, -1 when the character is not allowed."""
        nxt = self.trans[state].get(ch)
        if nxt is not None:
            return nxt
        if self.content[state] >= 0 and is_content_char(ch) and not (self.first_char[state] and ch.isspace()):
            return self.content[state]
        return -1

    def walk(self, state: int, text: str) -> int:
        for ch in text:
            state = self.step(state, ch)
            if state < 0:
                return -1
        return state


def record_automaton() -> Automaton:
    """The automaton of `{"drugs": [...], "adverse_events": [...]}` (json.dumps spacing)."""
    a = Automaton()
    state = a.new()
    state = a.literal(state, '{"drugs": [')
    state = a.string_list(state)
    a.drug_items = frozenset(range(state + 1, len(a.trans)))   # string_list makes its close state first
    state = a.literal(state, ', "adverse_events": [')
    state = a.string_list(state)
    a.accept = a.literal(state, "}")
    return a


# ---- the token tables (once per tokenizer) ------------------------------------------------------
@dataclass
class TokenTables:
    """Per automaton state: the next state for every token (-1: not allowed) and tokens-to-close."""
    automaton: Automaton
    token_text: list[str]
    next_state: torch.Tensor        # (n_states, vocab) int16
    dist: torch.Tensor              # (n_states,) fewest tokens to reach the accept state
    eos_ids: list[int]
    vocab_size: int
    build_s: float
    span_dist: torch.Tensor         # (n_states,) the same using only report-independent tokens


_TABLE_CACHE: dict[tuple[Any, ...], TokenTables] = {}


def token_strings(tokenizer: Any, vocab_size: int) -> list[str]:
    """The text each token adds when appended to generated text ('' for special/unusable tokens).
    Decoded after an anchor token so word-initial spaces (SentencePiece '▁') are kept."""
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
    base = tokenizer.decode([anchor])
    special = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    n = min(vocab_size, len(tokenizer))
    pairs = tokenizer.batch_decode([[anchor, t] for t in range(n)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    out = []
    for t, s in enumerate(pairs):
        s = s[len(base):] if s.startswith(base) else ""
        out.append("" if t in special or "\ufffd" in s else s)
    return out + [""] * (vocab_size - n)


def _state_row(a: Automaton, state: int, token_text: list[str], content_ok: list[bool],
               content_first_ok: list[bool], by_first: dict[str, list[int]]) -> list[int]:
    """Next state of every token from `state` (-1: not allowed)."""
    row = [-1] * len(token_text)
    target = a.content[state]
    if target >= 0 and a.content[target] == target:
        # tokens made only of content characters stay inside the string
        ok = content_first_ok if a.first_char[state] else content_ok
        for t, good in enumerate(ok):
            if good:
                row[t] = target
        # other tokens that may leave the string: walk the ones holding a non-content character
        candidates = [t for ts in by_first.values() for t in ts if not content_ok[t]]
    else:
        candidates = [t for ch in a.trans[state] for t in by_first.get(ch, ())]
    for t in candidates:
        if row[t] < 0:
            row[t] = a.walk(state, token_text[t])
    return row


def _span_safe(a: Automaton, state: int, piece: str, content_only: bool) -> bool:
    """A token writes string content only as a whole content token inside a string."""
    if a.string_state[state] and content_only:
        return True
    for ch in piece:
        new = a.step(state, ch)
        if a.string_state[state] and a.string_state[new]:
            return False
        state = new
    return True


def _distances(a: Automaton, succ: list[list[int]], open_penalty: int = 0) -> list[int]:
    """Fewest tokens from each state to the accept state (Bellman-Ford over the small state graph);
    `open_penalty` extra tokens are charged for opening a string from outside one."""
    inf = 10 ** 9
    n = len(succ)
    dist = [inf] * n
    dist[a.accept] = 0
    for _ in range(n):
        changed = False
        for s in range(n):
            best = min((dist[t] + 1 + (open_penalty if a.first_char[t] and not a.string_state[s] else 0)
                        for t in succ[s]), default=inf)
            if best < dist[s]:
                dist[s], changed = best, True
        if not changed:
            break
    if any(d >= inf for d in dist):
        raise ValueError(f"constrained decoding: this tokenizer cannot spell the record "
                         f"({sum(d >= inf for d in dist)} automaton states cannot reach the end)")
    return dist


def build_tables(tokenizer: Any, vocab_size: int, eos_ids: Sequence[int]) -> TokenTables:
    """Allowed-token tables of every automaton state and the exact tokens-to-close distances."""
    key = (type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")), len(tokenizer),
           vocab_size, tuple(sorted(eos_ids)))
    if key in _TABLE_CACHE:
        return _TABLE_CACHE[key]
    started = time.perf_counter()
    a = record_automaton()
    text = token_strings(tokenizer, vocab_size)
    content_ok = [bool(s) and all(is_content_char(c) for c in s) for s in text]
    content_first_ok = [ok and not s[0].isspace() for ok, s in zip(content_ok, text)]
    by_first: dict[str, list[int]] = {}
    for t, s in enumerate(text):
        if s:
            by_first.setdefault(s[0], []).append(t)
    n_states = len(a.trans)
    rows = [_state_row(a, s, text, content_ok, content_first_ok, by_first) for s in range(n_states)]
    nxt = torch.tensor(rows, dtype=torch.int16)
    succ = [sorted({x for x in row if x >= 0}) for row in rows]
    # spans mode cannot use tokens that carry string content across a quote (the content depends on
    # the report): its distances use only the tokens that are safe whatever the report says
    span_succ = []
    for s_, row in enumerate(rows):
        safe = set()
        for t, x in enumerate(row):
            if x >= 0 and x not in safe and _span_safe(a, s_, text[t], content_ok[t]):
                safe.add(x)
        span_succ.append(sorted(safe))
    dist = _distances(a, succ)
    span_dist = _distances(a, span_succ, SPAN_MARGIN)
    tables = TokenTables(a, text, nxt, torch.tensor(dist), list(eos_ids), vocab_size,
                         time.perf_counter() - started, torch.tensor(span_dist))
    _TABLE_CACHE[key] = tables
    return tables


# ---- span constraint per report -----------------------------------------------------------------
class _Spans:
    """Tokens that continue a span of one report: per text position, the content tokens that match
    there (and the tokens that close the string right after a matching prefix)."""

    def __init__(self, text: str, tables: TokenTables, max_len: int):
        self.text = text
        n = len(text)
        # a span starts at the first character of a word and ends right after the last one
        self.starts = [p for p in range(n) if text[p].isalnum() and (p == 0 or not text[p - 1].isalnum())]
        self.boundary = {p for p in range(1, n + 1) if text[p - 1].isalnum() and (p == n or not text[p].isalnum())}
        lookup = _content_lookup(tables)
        quote_lookup = _quote_lookup(tables)
        self.at: list[list[tuple[int, int]]] = []        # (token, length) content tokens at p
        self.close_at: list[list[tuple[int, int]]] = []  # (token, length of part before the quote)
        for p in range(n + 1):
            here, close = [], []
            for length in range(1, min(max_len, n - p) + 1):
                piece = text[p:p + length]
                for t in lookup.get(piece, ()):
                    here.append((t, length))
                for t in quote_lookup.get(piece, ()):
                    close.append((t, length))
            for t in quote_lookup.get("", ()):
                close.append((t, 0))
            self.at.append(here)
            self.close_at.append(close)


def _content_lookup(tables: TokenTables) -> dict[str, list[int]]:
    cached = getattr(tables, "_content_lookup", None)
    if cached is None:
        cached = {}
        for t, s in enumerate(tables.token_text):
            if s and all(is_content_char(c) for c in s):
                cached.setdefault(s, []).append(t)
        tables._content_lookup = cached  # type: ignore[attr-defined]
    return cached


def _quote_lookup(tables: TokenTables) -> dict[str, list[int]]:
    """Tokens holding a closing quote, keyed by the content part before it."""
    cached = getattr(tables, "_quote_lookup", None)
    if cached is None:
        cached = {}
        for t, s in enumerate(tables.token_text):
            if '"' in s:
                part, rest = s.split('"', 1)
                # the rest may hold structure (`]`, `, `, a new opening quote) but no new string content
                if all(is_content_char(c) for c in part) and not ('"' in rest and rest.split('"', 1)[1]):
                    cached.setdefault(part, []).append(t)
        tables._quote_lookup = cached  # type: ignore[attr-defined]
    return cached


# ---- the logits processor -----------------------------------------------------------------------
class RecordLogitsProcessor(LogitsProcessor):
    """A transformers logits processor that keeps every row of a batch on the record automaton.

    Rows are the prompts of one `generate` call (left-padded, so all prompts have the same length);
    `texts` (spans mode) are the reports, in the same order."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Sequence[int], prompt_len: int,
                 max_new_tokens: int, mode: str = "schema", texts: Sequence[str] | None = None,
                 close_penalty: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"constrained mode must be one of {MODES}, not {mode!r}")
        if mode == "spans" and texts is None:
            raise ValueError("constrained mode 'spans' needs the report texts")
        self.tables = build_tables(tokenizer, vocab_size, eos_ids)
        need = int((self.tables.span_dist if mode == "spans" else self.tables.dist)[0]) + 1 + \
            (SPAN_MARGIN if mode == "spans" else 0)
        if max_new_tokens < need:
            raise ValueError(f"max_new_tokens={max_new_tokens} is too small for constrained decoding: "
                             f"the shortest record takes {need} tokens with this tokenizer")
        self.prompt_len, self.max_new_tokens, self.mode = prompt_len, max_new_tokens, mode
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long)
        self.eos_set = set(self.eos.tolist())
        self.dist = self.tables.span_dist if mode == "spans" else self.tables.dist
        self.max_dist = int(self.dist.max())
        self.states: list[int] | None = None
        self.done: list[bool] = []
        self.texts = list(texts) if texts is not None else None
        self.spans: list[_Spans] = []
        self.positions: list[list[int]] = []  # spans mode: text positions where the current string ends
        max_len = max((len(s) for s in self.tables.token_text), default=1)
        self.max_token_len = min(max_len, 48)
        self.close_penalty = float(close_penalty)
        self._closing: dict[int, torch.Tensor] = {}

    def closing_tokens(self, state: int) -> torch.Tensor:
        """The tokens that, from a state inside the drug list's items, close the list ([vocab] bool)."""
        if state not in self._closing:
            nxt = self.tables.next_state[state].long()
            inside = torch.tensor(sorted(self.tables.automaton.drug_items), dtype=torch.long)
            self._closing[state] = (nxt >= 0) & ~torch.isin(nxt, inside)
        return self._closing[state]

    def penalty_rows(self, rows: Sequence[int], vocab: int) -> torch.Tensor | None:
        """What to take off each row's scores ([rows, vocab] float; None when no row pays a penalty):
        `close_penalty` on the tokens closing the drug list, for rows inside its items (a drug begun)."""
        if not self.close_penalty or self.states is None:
            return None
        items = self.tables.automaton.drug_items
        due = [(i, self.states[row]) for i, row in enumerate(rows)
               if not self.done[row] and self.states[row] in items]
        if not due:
            return None
        penalty = torch.zeros(len(rows), vocab)
        for i, state in due:
            penalty[i, self.closing_tokens(state)[:vocab]] = self.close_penalty
        return penalty

    def _advance(self, row: int, token: int) -> None:
        if self.done[row]:
            return
        state = self.states[row]
        if state == self.tables.automaton.accept or token in self.eos_set:
            self.done[row] = True
            return
        new = int(self.tables.next_state[state, token])
        if new < 0:
            raise RuntimeError(f"constrained decoding: row {row} produced a disallowed token {token}")
        if self.mode == "spans":
            self.positions[row] = self._track(row, state, self.tables.token_text[token])
        self.states[row] = new

    def _track(self, row: int, state: int, piece: str) -> list[int]:
        """Text positions where the current string ends after `piece`, walked character by character:
        an opening quote starts at every word start, a content character must match the text there."""
        a, text = self.tables.automaton, self.texts[row]
        positions = self.positions[row]
        for ch in piece:
            new = a.step(state, ch)
            if not a.string_state[new]:
                positions = []
            elif not a.string_state[state]:
                positions = list(self.spans[row].starts)
            else:
                positions = [p + 1 for p in positions if p < len(text) and text[p] == ch]
            state = new
        return positions

    def _opens_span(self, row: int, state: int, piece: str) -> bool:
        """Whether the strings a token opens (and perhaps closes) outside a string are spans:
        a closed one must be whole words of the report, an open one must start a word of it."""
        a, text, sp = self.tables.automaton, self.texts[row], self.spans[row]
        seg: str | None = None
        for ch in piece:
            new = a.step(state, ch)
            if a.string_state[new]:
                seg = "" if not a.string_state[state] else seg + ch
            elif a.string_state[state]:
                if not any(text.startswith(seg, p) and p + len(seg) in sp.boundary for p in sp.starts):
                    return False
                seg = None
            state = new
        return not seg or any(text.startswith(seg, p) for p in sp.starts)

    def _span_mask(self, row: int, allowed: torch.Tensor, remaining: int) -> torch.Tensor:
        """Narrow the schema's allowed tokens to those that keep every string a span of the report.
        Inside a string: continue the span, or close it at the end of a word (any position, as a
        last resort near the token cap). Outside: open a string only where a word starts and only
        with SPAN_MARGIN tokens to spare, so an opened span can always be finished."""
        a, state = self.tables.automaton, self.states[row]
        sp = self.spans[row]
        if a.string_state[state]:
            strict: list[int] = []
            closing: list[int] = []
            for p in self.positions[row]:
                strict.extend(t for t, _ in sp.at[p])
                for t, n in sp.close_at[p]:
                    (strict if p + n in sp.boundary else closing).append(t)
            choices = [strict, closing]
        else:
            keep = []
            for t in torch.nonzero(allowed).flatten().tolist():
                new = int(self.tables.next_state[state, t])
                if not a.string_state[new]:
                    if '"' not in self.tables.token_text[t] or self._opens_span(row, state, self.tables.token_text[t]):
                        keep.append(t)
                    continue
                if int(self.dist[new]) > remaining - 2 - SPAN_MARGIN:
                    continue
                if self._opens_span(row, state, self.tables.token_text[t]):
                    keep.append(t)
            choices = [keep]
        for keep in choices:
            if not keep:
                continue
            mask = torch.zeros_like(allowed)
            mask[torch.tensor(sorted(set(keep)), dtype=torch.long)] = True
            narrowed = allowed & mask
            if bool(narrowed.any()):
                return narrowed
        return allowed  # nothing of the report fits the token budget: the schema alone still closes

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """The scores with every token that would leave the automaton (or the report's spans) masked."""
        return self.score_rows(input_ids, scores)

    def score_rows(self, input_ids: torch.LongTensor, scores: torch.FloatTensor,
                   rows: Sequence[int] | None = None) -> torch.FloatTensor:
        """As a call, for some rows of the batch only (`rows`: their numbers in the first call's batch),
        so a decoding loop that drops finished rows (helpers.greedy) keeps every row's own state."""
        allowed = self.allowed_rows(input_ids, scores.shape[1], rows)
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
        penalty = self.penalty_rows(list(range(input_ids.shape[0])) if rows is None else list(rows), scores.shape[1])
        return scores if penalty is None else scores - penalty.to(scores.device, scores.dtype)

    def allowed_rows(self, input_ids: torch.LongTensor, vocab: int, rows: Sequence[int] | None = None
                     ) -> torch.Tensor:
        """Which tokens each row may take next ([rows, vocab] bool; all for finished rows), after taking in
        the rows' last tokens: what a call masks, without the scores (helpers.greedy then computes the
        output head only for tokens some row may take: in spans mode a few hundred, not the vocabulary).
        Runs on one thread: its many small vocabulary-wide tensor ops are each split across torch's
        OpenMP threads, and on a busy machine every split waits for a descheduled thread (measured on
        2 shared cores: 50-110 ms per step on 2 threads, 3-4 ms on 1; benchmarks/infer_throughput.py)."""
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            return self._allowed(input_ids, vocab, list(range(input_ids.shape[0])) if rows is None else list(rows))
        finally:
            if threads > 1:
                torch.set_num_threads(threads)

    def _allowed(self, input_ids: torch.LongTensor, vocab: int, rows: list[int]) -> torch.Tensor:
        """allowed_rows' work on the current thread count: advance each row by its last token, then mask."""
        generated = input_ids.shape[1] - self.prompt_len
        if self.states is None:
            batch = input_ids.shape[0]
            if rows != list(range(batch)):
                raise ValueError("constrained decoding: the first call must score the whole batch")
            self.states, self.done = [0] * batch, [False] * batch
            if self.mode == "spans":
                if len(self.texts) != batch:
                    raise ValueError(f"spans mode: {len(self.texts)} texts for a batch of {batch}")
                self.spans = [_Spans(t, self.tables, self.max_token_len) for t in self.texts]
                self.positions = [[] for _ in range(batch)]
        elif generated > 0:
            for row, token in zip(rows, input_ids[:, -1].tolist()):
                self._advance(row, token)
        remaining = self.max_new_tokens - generated  # tokens left including this one
        allowed = torch.ones(len(rows), vocab, dtype=torch.bool)
        for i, row in enumerate(rows):
            if self.done[row]:
                continue  # generate() pads finished rows; leave their scores alone
            state = self.states[row]
            if state == self.tables.automaton.accept:
                allowed[i] = False
                allowed[i, self.eos[self.eos < vocab]] = True
                continue
            nxt = self.tables.next_state[state, :vocab]
            ok = nxt >= 0
            # leave room to close: the next state must reach the end, plus one token for EOS
            if remaining - 2 < self.max_dist:
                ok &= self.dist[nxt.clamp(min=0).long()] <= remaining - 2
            if self.mode == "spans":
                ok = self._span_mask(row, ok, remaining)
            allowed[i] = ok
        return allowed


def describe(tables: TokenTables) -> dict[str, Any]:
    """Sizes of the tables, for notebooks and the benchmark."""
    return {"states": int(tables.next_state.shape[0]), "vocab": tables.vocab_size,
            "shortest_record_tokens": int(tables.dist[0]), "shortest_spans_record_tokens": int(tables.span_dist[0]),
            "build_s": round(tables.build_s, 2)}
