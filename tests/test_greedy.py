"""helpers.greedy: the decoding loop returns exactly what transformers generate returns (greedy), on tiny
llama and gemma3 models, left-padded batches whose rows finish at different steps, with and without
constrained decoding; where it cannot be sure it says why and step 5 uses generate."""
from __future__ import annotations

import os

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from helpers import draft as drafting, greedy, infer, models, prefill, prefix_cache
from tiny_models import tiny_causal_lm
from helpers.constrained import RecordLogitsProcessor

TEXTS = ["I take Lipitor and get muscle pain.", "Zoloft gives me headaches and dizzy spells at night.",
         "this pill makes me nauseous", "Ambien, rash on my arms, no fever",
         "Since starting Nexium I have constant nausea and swollen ankles."]
LENGTHS = [9, 14, 5, 11, 7]
PAD = 0
OPEN = [101, 102, 103, 104, 105]               # a draft that Force makes every row open with
OPENING = [39428, 28836, 99, 1799, 9523]      # '{"drugs": ["' for SmolLM2 (helpers.draft.opening)


@pytest.fixture(scope="module")
def tok():
    return models.set_padding_side(models.load_tokenizer("smollm2-135m"), "generation")


def tiny_model(model_type: str, vocab: int, window: int = 64):
    return tiny_causal_lm(model_type, vocab, window)


def left_padded(vocab: int, lengths=LENGTHS, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]
    width = max(lengths)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


class CloseSooner(LogitsProcessor):
    """Pushes row i towards closing tokens by 0.1 * i per generated token, so constrained rows of a random
    model finish at different steps; it keeps no row state (the loop hands it the whole batch)."""

    def __init__(self, tok, width: int):
        self.tokens = sorted(set(tok.encode('"]}, "adverse_events": []}', add_special_tokens=False) + [2]))
        self.width = width

    def __call__(self, input_ids, scores):
        boost = 0.1 * (input_ids.shape[1] - self.width) * torch.arange(scores.shape[0], dtype=scores.dtype)
        scores = scores.clone()
        scores[:, self.tokens] += boost[:, None]
        return scores


def processors(tok, mode, stops, width, max_new_tokens, vocab) -> LogitsProcessorList:
    out = LogitsProcessorList()
    if mode:
        out.append(CloseSooner(tok, width))
        out.append(RecordLogitsProcessor(tok, vocab, stops, width, max_new_tokens, mode=mode, texts=TEXTS))
    return out


def generate(model, ids, mask, stops, max_new_tokens, procs) -> torch.Tensor:
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=list(stops), pad_token_id=PAD)
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, generation_config=config, logits_processor=procs)


def finish_steps(out: torch.Tensor, width: int, stops) -> list[int]:
    return [next((i for i, t in enumerate(row) if t in stops), len(row)) for row in out[:, width:].tolist()]


def frequent_stops(model, ids, mask) -> list[int]:
    """Two tokens the model emits early in different rows: as stop ids, rows finish at different steps."""
    free = generate(model, ids, mask, [], 24, LogitsProcessorList())[:, ids.shape[1]:]
    return sorted({int(free[0, 3]), int(free[1, 9])})


@pytest.mark.parametrize("mode", [False, "schema", "spans"])
@pytest.mark.parametrize("model_type", ["llama", "gemma3"])
def test_loop_returns_what_generate_returns(tok, model_type, mode):
    vocab = len(tok)
    model = tiny_model(model_type, vocab)
    ids, mask = left_padded(vocab)
    stops = frequent_stops(model, ids, mask) if not mode else [2]
    cap = 24 if not mode else 48
    want = generate(model, ids, mask, stops, cap, processors(tok, mode, stops, ids.shape[1], cap, vocab))
    for drop in (True, False):
        for draft in (None, OPENING):
            with torch.inference_mode():
                got = greedy.decode(model, ids, mask, stops, PAD, cap, processors(tok, mode, stops, ids.shape[1],
                                    cap, vocab), drop_finished=drop, draft=draft)
            assert torch.equal(got, want), (model_type, mode, drop, draft)
    steps = finish_steps(want, ids.shape[1], stops)
    assert len(set(steps)) >= 2 and min(steps) < cap          # rows finish at different steps


def test_buffers_grow_past_their_planned_capacity(tok):
    vocab = len(tok)
    model = tiny_model("llama", vocab)
    ids, mask = left_padded(vocab)
    cache = greedy.buffer_cache(model, 4)                    # smaller than the prompt: it grows
    with torch.inference_mode():
        greedy.next_logits(model, ids, mask, greedy.positions(mask), cache)
    assert cache.get_seq_length() == ids.shape[1] and cache.layers[0].capacity >= ids.shape[1]
    assert torch.equal(cache.layers[0].keys, cache.layers[0].k_buf[:, :, :ids.shape[1]])


def test_past_the_sliding_window_it_says_why_and_predict_uses_generate(tok, caplog):
    vocab = len(tok)
    model = tiny_model("gemma3", vocab, window=16)
    assert greedy.unsupported(model, 10, 6) is None
    reason = greedy.unsupported(model, 12, 6)
    assert reason and "sliding window 16" in reason
    assert greedy.unsupported(tiny_model("llama", vocab), 10_000, 96) is None
    ids, mask = left_padded(vocab)
    stops = frequent_stops(model, ids, mask)
    rows = [row[row.ne(PAD).nonzero()[0, 0]:].tolist() for row in ids]      # no prompt token is PAD
    with torch.inference_mode(), caplog.at_level("WARNING", logger="helpers.greedy"):
        got = infer._decode(model, rows, PAD, stops, 12, LogitsProcessorList(), None, "loop")
    assert torch.equal(got, generate(model, ids, mask, stops, 12, LogitsProcessorList()))
    assert "sliding window" in caplog.text


@pytest.mark.parametrize("mode", [False, "spans"])
def test_predict_records_are_the_same_with_either_decoder(tok, mode):
    model = tiny_model("llama", len(tok))
    spec = models.get_spec("smollm2-135m")
    reports = [{"id": f"r{i}", "text": t, "drugs": [], "adverse_events": []} for i, t in enumerate(TEXTS)]
    kw = dict(batch_size=3, max_new_tokens=24, constrained=mode, progress=False)
    loop = infer.predict(model, tok, spec, reports, decoder="loop", **kw)
    plain = infer.predict(model, tok, spec, reports, decoder="generate", **kw)
    assert [r["raw"] for r in loop] == [r["raw"] for r in plain]
    assert [r["n_new_tokens"] for r in loop] == [r["n_new_tokens"] for r in plain]
    with pytest.raises(ValueError, match="decoder must be one of"):
        infer.predict(model, tok, spec, reports, decoder="beam", **kw)


def test_groups_cost_the_fewest_positions():
    assert prefill.plan_groups([5, 5, 5], overhead=100) == [[0, 1, 2]]
    assert prefill.plan_groups([300, 10, 290, 12], overhead=10) == [[0, 2], [3, 1]]
    assert sorted(i for g in prefill.plan_groups(list(range(1, 40)), 8) for i in g) == list(range(39))


@pytest.mark.parametrize("mode", [False, "spans"])
@pytest.mark.parametrize("model_type", ["llama", "gemma3"])
def test_grouped_prefill_with_a_shared_prefix_gives_generates_tokens(tok, model_type, mode, monkeypatch):
    monkeypatch.setattr(prefill, "GROUP_OVERHEAD", 8)                   # tiny prompts: groups pay sooner
    vocab = len(tok)
    model = tiny_model(model_type, vocab, window=128)
    shared = torch.randint(3, vocab, (12,), generator=torch.Generator().manual_seed(5)).tolist()
    rests, _ = left_padded(vocab, lengths=[3, 30, 2, 28, 5], seed=2)     # two length groups
    prompts = [shared + row[row.ne(PAD)].tolist() for row in rests]
    width = max(len(x) for x in prompts)
    ids = torch.tensor([[PAD] * (width - len(x)) + x for x in prompts])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in prompts])
    assert len(prefill.plan_groups([len(x) - 12 for x in prompts])) == 2
    stops = frequent_stops(model, ids, mask) if not mode else [2]
    cap = 24 if not mode else 48
    want = generate(model, ids, mask, stops, cap, processors(tok, mode, stops, width, cap, vocab))
    given = prefix_cache.build(model, prompts)
    for prefix in (None, given):
        with torch.inference_mode():
            got = greedy.decode(model, ids, mask, stops, PAD, cap, processors(tok, mode, stops, width, cap, vocab),
                                prefix=prefix, draft=OPENING)
        assert torch.equal(got, want), (model_type, mode, prefix is not None)
    if not mode:                                    # every row opens with the draft: it is forwarded at once
        force = lambda: LogitsProcessorList([Force(width, {i: [t] * 5 for i, t in enumerate(OPEN)})])
        want = generate(model, ids, mask, stops, cap, force())
        for prefix in (None, given):
            seen = drafted(monkeypatch)
            with torch.inference_mode():
                got = greedy.decode(model, ids, mask, stops, PAD, cap, force(), prefix=prefix, draft=OPEN)
            assert torch.equal(got, want) and seen == {"forwarded": [5], "accepted": [5]}, prefix is not None
    assert given.cache.get_seq_length() == 12                         # the shared prefix is never extended
    assert greedy.unsupported(model, width, cap) is None


@pytest.mark.parametrize("mode", ["schema", "spans"])
@pytest.mark.parametrize("model_type", ["llama", "gemma3"])
def test_head_narrowed_to_the_allowed_tokens_gives_generates_tokens(tok, model_type, mode):
    vocab = len(tok)
    model = tiny_model(model_type, vocab)
    ids, mask = left_padded(vocab)
    cap, width = 40, ids.shape[1]
    only = lambda: LogitsProcessorList([RecordLogitsProcessor(tok, vocab, [2], width, cap, mode=mode, texts=TEXTS)])
    assert greedy.narrow_head(model, only()) is model.lm_head
    assert greedy.narrow_head(model, processors(tok, mode, [2], width, cap, vocab)) is None   # a second processor
    want = generate(model, ids, mask, [2], cap, only())
    for draft in (None, OPENING):
        with torch.inference_mode():
            got = greedy.decode(model, ids, mask, [2], PAD, cap, only(), draft=draft)
        assert torch.equal(got, want)


# ---- the answer's opening, drafted (helpers.draft) -------------------------------------------------
class Force(LogitsProcessor):
    """Rows take given tokens at given steps (`plan`: step -> one token per row, None leaves a row free),
    so a random model's rows open alike, as a fine-tuned model's answers do."""

    def __init__(self, width: int, plan: dict[int, list[int | None]]):
        self.width, self.plan = width, plan

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for row, token in enumerate(self.plan.get(input_ids.shape[1] - self.width, [])):
            if token is not None:
                scores[row] = float("-inf")
                scores[row, token] = 0.0
        return scores


class ForceAllowed(Force):
    """Force that says which tokens each row may take, as the constrained processor does, so the loop
    computes the head from hidden states (narrowed to the forced token at forced steps)."""

    def allowed_rows(self, input_ids, vocab, rows=None):
        rows = list(range(input_ids.shape[0])) if rows is None else list(rows)
        plan = self.plan.get(input_ids.shape[1] - self.width, [])
        allowed = torch.ones(len(rows), vocab, dtype=torch.bool)
        for i, row in enumerate(rows):
            if row < len(plan) and plan[row] is not None:
                allowed[i] = False
                allowed[i, plan[row]] = True
        return allowed

    def penalty_rows(self, rows, vocab):
        return None


def drafted(monkeypatch) -> dict[str, list[int]]:
    """Records each draft forward's length and each acceptance (the step the loop went on from)."""
    seen: dict[str, list[int]] = {"forwarded": [], "accepted": []}
    forward, settle = drafting.forward, drafting.settle

    def count_forward(model, draft, *args, **kwargs):
        seen["forwarded"].append(len(draft))
        return forward(model, draft, *args, **kwargs)

    def count_settle(cache, ahead, step, *args, **kwargs):
        seen["accepted"].append(step)
        return settle(cache, ahead, step, *args, **kwargs)

    monkeypatch.setattr(drafting, "forward", count_forward)
    monkeypatch.setattr(drafting, "settle", count_settle)
    return seen


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("model_type", ["llama", "gemma3"])
@pytest.mark.parametrize("case", ["all", "part", "none", "cap", "stop"])
def test_a_drafted_opening_gives_generates_tokens(tok, model_type, case, narrow, monkeypatch):
    """All of the draft accepted, part of it (a row chooses otherwise at step 3, or stops there), none
    (rows disagree at token 0), or a cap under the draft's length: always generate's tokens, from
    logits or from hidden states through the narrowed head."""
    vocab = len(tok)
    model = tiny_model(model_type, vocab)
    ids, mask = left_padded(vocab)
    width, rows = ids.shape[1], ids.shape[0]
    stops = frequent_stops(model, ids, mask)
    forced = {"all": 5, "part": 3, "none": 0, "cap": 5, "stop": 3}[case]
    plan = {i: [OPEN[i]] * rows for i in range(forced)}
    if case == "stop":
        plan[3] = [stops[0]] + [None] * (rows - 1)          # row 0 ends where the draft is rejected
    cap = 3 if case == "cap" else 24
    kind = ForceAllowed if narrow else Force
    want = generate(model, ids, mask, stops, cap, LogitsProcessorList([kind(width, plan)]))
    assert want[:, width:width + min(forced, cap)].eq(torch.tensor(OPEN[:min(forced, cap)])).all()
    for drop in (True, False):
        seen = drafted(monkeypatch)
        with torch.inference_mode():
            procs = LogitsProcessorList([kind(width, plan)])
            assert (greedy.narrow_head(model, procs) is not None) == narrow
            got = greedy.decode(model, ids, mask, stops, PAD, cap, procs, drop_finished=drop, draft=OPEN)
        assert torch.equal(got, want), (model_type, case, drop)
        expect = {"all": ([5], [5]), "part": ([5], [3]), "none": ([], []), "cap": ([2], []),
                  "stop": ([5], [3])}[case]
        assert (seen["forwarded"], seen["accepted"]) == expect, seen


def test_truncate_drops_the_last_positions_and_the_next_update_overwrites_them(tok):
    layer = greedy.BufferLayer(8)
    keys = torch.arange(2 * 1 * 5 * 2, dtype=torch.float32).reshape(2, 1, 5, 2)
    layer.update(keys, -keys)
    layer.truncate(3)
    assert layer.get_seq_length() == 3 and torch.equal(layer.keys, keys[:, :, :3])
    new = torch.full((2, 1, 1, 2), 99.0)
    k, v = layer.update(new, -new)
    assert k.shape[2] == 4 and torch.equal(k[:, :, 3:], new) and torch.equal(v[:, :, :3], -keys[:, :, :3])
    with pytest.raises(ValueError, match="cannot truncate"):
        layer.truncate(5)


def test_grouped_heads_sets_the_sdpa_switch_for_one_forward_only(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    with drafting.grouped_heads(True):
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    with drafting.grouped_heads(False):
        assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ


def test_the_opening_is_what_step_3_trains_answers_to_start_with(tok):
    spec = models.get_spec("smollm2-135m")
    opening = drafting.opening(tok, spec)
    assert opening == OPENING and tok.decode(opening) == '{"drugs": ["'
    for answer in ('{"drugs": ["Zoloft"], "adverse_events": []}', '{"drugs": [], "adverse_events": ["rash"]}'):
        ids = tok(answer + spec.eot, add_special_tokens=False)["input_ids"]
        shared = next((i for i, (a, b) in enumerate(zip(ids, opening)) if a != b), len(opening))
        assert shared == (len(opening) if '["Z' in answer else len(opening) - 1)


# ---- real models (offline cache) ---------------------------------------------------------------
LONG = ("Case report: a 67-year-old woman with hypertension and type 2 diabetes was started on lisinopril 10 mg "
        "daily alongside her metformin. Three weeks later she presented with a persistent dry cough, swelling of "
        "the lips and tongue, and dizziness on standing. Lisinopril was stopped and the swelling resolved within "
        "two days, although the cough persisted for a month. She had no fever, rash or shortness of breath, and "
        "metformin was continued without problems.")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_real_model_loop_gives_generates_outputs(key, monkeypatch):
    """Step 5 on a real offline model: the loop (shared prefix, length groups, narrowed head) writes
    exactly what generate writes, in every constrained mode, with and without the split's prefix cache."""
    model = models.load_model(key)
    tok = models.set_padding_side(models.load_tokenizer(key), "generation")
    spec = models.get_spec(key)
    reports = [{"id": f"r{i}", "text": t, "drugs": [], "adverse_events": []} for i, t in enumerate(TEXTS + [LONG])]
    monkeypatch.setattr(prefill, "GROUP_OVERHEAD", 16)                 # the long report gets its own group
    seen, lengths = {"groups": 0, "narrowed": 0}, {}
    group_cache, head_argmax = prefill.group_cache, greedy.head_argmax

    def count_groups(*args, **kwargs):
        seen["groups"] += 1
        return group_cache(*args, **kwargs)

    def count_narrowed(hidden, head, allowed, cols, penalty=None):
        seen["narrowed"] += cols is not None
        return head_argmax(hidden, head, allowed, cols, penalty)

    monkeypatch.setattr(prefill, "group_cache", count_groups)
    monkeypatch.setattr(greedy, "head_argmax", count_narrowed)
    for mode, penalty in ((False, 0.0), ("schema", 0.0), ("spans", 0.0), ("spans", 4.0)):
        kw = dict(batch_size=len(reports), max_new_tokens=64, constrained=mode, progress=False,
                  drug_list_close_penalty=penalty)
        want = infer.predict(model, tok, spec, reports, decoder="generate", **kw)
        for cached in (False, True):
            got = infer.predict(model, tok, spec, reports, decoder="loop", prefix_cache=cached, **kw)
            assert [r["raw"] for r in got] == [r["raw"] for r in want], (key, mode, penalty, cached)
            assert [r["n_new_tokens"] for r in got] == [r["n_new_tokens"] for r in want]
        lengths[(mode, penalty)] = [r["n_new_tokens"] for r in want]
    assert any(len(set(n)) >= 2 for n in lengths.values()), lengths          # rows finish at different steps
    assert seen["groups"] >= 2 * 4 * 2 and seen["narrowed"] > 0
