"""Step 5: the record automaton, constrained decoding under any logits, prediction records, and
(slow) real generation with SmolLM2 base and base + a LoRA adapter."""
from __future__ import annotations

import json
import re

import pytest
import torch

from helpers import infer, models
from helpers.constrained import RecordLogitsProcessor, build_tables, record_automaton
from helpers.io import read_jsonl
from helpers.parsing import parse_output
from helpers.schemas import PREDICTION_KEYS

MODEL = "smollm2-135m"
REPORTS = [
    {"id": "r1", "text": "Hello, I started Lipitor 20 mg in March. Since then I have muscle pain and dark urine. "
                         "No fever.", "drugs": ["Lipitor"], "adverse_events": ["muscle pain", "dark urine"]},
    {"id": "r2", "text": "My husband takes Zoloft and Ambien. He gets headaches and feels dizzy in the morning.",
     "drugs": ["Zoloft", "Ambien"], "adverse_events": ["headaches", "dizzy"]},
    {"id": "r3", "text": "this pill makes me nauseous", "drugs": [], "adverse_events": ["nauseous"]},
]


# ---- the automaton (no tokenizer) ---------------------------------------------------------------
def test_automaton_accepts_exactly_the_compact_record():
    a = record_automaton()
    ok = [{"drugs": [], "adverse_events": []}, {"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "ça va"]},
          {"drugs": ["a", "b", "c"], "adverse_events": ["x"]}]
    for rec in ok:
        assert a.walk(0, json.dumps(rec, ensure_ascii=False)) == a.accept
    bad = ['{"drugs": [""], "adverse_events": []}',           # empty string
           '{"drugs": [" x"], "adverse_events": []}',         # leading space
           '{"drugs": ["a\\"b"], "adverse_events": []}',      # escapes are not allowed
           '{"adverse_events": [], "drugs": []}',             # key order is fixed
           '{"drugs":[],"adverse_events":[]}',                # spacing is json.dumps'
           '{"drugs": ["a\nb"], "adverse_events": []}']       # control characters
    for text in bad:
        assert a.walk(0, text) != a.accept


# ---- constrained decoding with the real tokenizer and adversarial (random) logits -------------
@pytest.fixture(scope="module")
def tok_and_eos():
    tok = models.set_padding_side(models.load_tokenizer(MODEL), "generation")
    spec = models.get_spec(MODEL)
    return tok, infer.stop_token_ids(tok, spec)


def _simulate(tok, eos, texts, mode, max_new_tokens, seed, vocab=49152, close_penalty=0.0):
    """Greedy decoding over random logits (a worst-case model) through the processor."""
    gen = torch.Generator().manual_seed(seed)
    prompt_len = 7
    proc = RecordLogitsProcessor(tok, vocab, eos, prompt_len, max_new_tokens, mode=mode, texts=texts,
                                 close_penalty=close_penalty)
    ids = torch.zeros(len(texts), prompt_len, dtype=torch.long)
    for _ in range(max_new_tokens):
        scores = proc(ids, torch.randn(len(texts), vocab, generator=gen) * 5)
        ids = torch.cat([ids, scores.argmax(-1)[:, None]], dim=1)
    outs = []
    for row in ids[:, prompt_len:].tolist():
        end = next((i for i, t in enumerate(row) if t in eos), None)
        assert end is not None, "constrained output did not stop within max_new_tokens"
        outs.append(tok.decode(row[:end], skip_special_tokens=True))
    return outs


@pytest.mark.parametrize("max_new_tokens", [14, 25, 60])
@pytest.mark.parametrize("mode", ["schema", "spans"])
def test_every_constrained_output_parses_within_the_budget(tok_and_eos, mode, max_new_tokens):
    tok, eos = tok_and_eos
    texts = [r["text"] for r in REPORTS]
    if mode == "spans" and max_new_tokens < 16:
        with pytest.raises(ValueError, match="too small"):
            RecordLogitsProcessor(tok, 49152, eos, 7, max_new_tokens, mode=mode, texts=texts)
        return
    for seed in range(3):
        for raw, text in zip(_simulate(tok, eos, texts, mode, max_new_tokens, seed), texts):
            parsed, status = parse_output(raw)
            assert status == "ok", raw
            assert json.loads(raw) == {"drugs": json.loads(raw)["drugs"],
                                       "adverse_events": json.loads(raw)["adverse_events"]}
            if mode == "spans":
                for item in parsed["drugs"] + parsed["adverse_events"]:
                    assert item in text, (item, raw)


def test_spans_are_whole_words_when_the_budget_allows(tok_and_eos):
    tok, eos = tok_and_eos
    texts = [r["text"] for r in REPORTS]
    whole = total = 0
    for seed in range(4):
        for raw, text in zip(_simulate(tok, eos, texts, "spans", 80, seed), texts):
            for item in sum(json.loads(raw).values(), []):
                total += 1
                whole += bool(re.search(r"(?<!\w)" + re.escape(item) + r"(?!\w)", text))
    assert total > 0 and whole / total >= 0.9


def _scores_after(proc, tok, prompt_len, answer_so_far):
    """The processor's scores (from all-zero logits) for the next token after `answer_so_far`."""
    ids = tok(answer_so_far, add_special_tokens=False)["input_ids"]
    history = torch.zeros(1, prompt_len, dtype=torch.long)
    scores = proc(history, torch.zeros(1, 49152))
    for t in ids:
        history = torch.cat([history, torch.tensor([[t]])], dim=1)
        scores = proc(history, torch.zeros(1, 49152))
    return scores[0]


def test_close_penalty_falls_on_ending_the_drug_list_after_a_drug_only(tok_and_eos):
    tok, eos = tok_and_eos
    close, go_on = (tok('"],', add_special_tokens=False)["input_ids"], tok('",', add_special_tokens=False)["input_ids"])
    assert len(close) == 1 and len(go_on) == 1
    proc = RecordLogitsProcessor(tok, 49152, eos, 3, 60, mode="schema", close_penalty=2.5)
    inside = _scores_after(proc, tok, 3, '{"drugs": ["aspirin')
    assert inside[close[0]] == -2.5 and inside[go_on[0]] == 0.0       # a list with a drug: ending it costs
    assert (inside[inside > float("-inf")] == -2.5).any() and inside.max() == 0.0
    empty = _scores_after(RecordLogitsProcessor(tok, 49152, eos, 3, 60, mode="schema", close_penalty=2.5),
                          tok, 3, '{"drugs": [')
    assert set(empty[empty > float("-inf")].unique().tolist()) == {0.0}   # the empty list is free
    events = _scores_after(RecordLogitsProcessor(tok, 49152, eos, 3, 60, mode="schema", close_penalty=2.5),
                           tok, 3, '{"drugs": ["aspirin"], "adverse_events": ["rash')
    assert set(events[events > float("-inf")].unique().tolist()) == {0.0}  # the event list is untouched


def test_close_penalty_lengthens_drug_lists_and_outputs_still_close_in_time(tok_and_eos):
    tok, eos = tok_and_eos
    texts = [r["text"] for r in REPORTS]
    counts = {}
    for penalty in (0.0, 50.0):
        outs = [raw for seed in range(3) for raw in _simulate(tok, eos, texts, "spans", 60, seed, close_penalty=penalty)]
        assert all(parse_output(raw)[1] == "ok" for raw in outs), outs
        counts[penalty] = sum(len(json.loads(raw)["drugs"]) for raw in outs)
    assert counts[50.0] > counts[0.0], counts
    with pytest.raises(ValueError, match="needs constrained decoding"):
        infer.check_close_penalty(1.0, False)
    with pytest.raises(ValueError, match=">= 0"):
        infer.check_close_penalty(-1.0, "spans")


def test_budget_too_small_is_a_clear_error(tok_and_eos):
    tok, eos = tok_and_eos
    shortest = int(build_tables(tok, 49152, eos).dist[0])
    with pytest.raises(ValueError, match="max_new_tokens=3 is too small"):
        RecordLogitsProcessor(tok, 49152, eos, 5, 3)
    RecordLogitsProcessor(tok, 49152, eos, 5, shortest + 1)  # just enough is fine


def test_unknown_modes_are_rejected():
    with pytest.raises(ValueError):
        infer.constrained_mode("grammar")
    assert infer.constrained_mode(True) == "schema" and infer.constrained_mode(False) is False
    assert infer.constrained_mode("spans") == "spans"
    with pytest.raises(ValueError):
        infer.system_name(MODEL, "qlora")


# ---- records --------------------------------------------------------------------------------
def test_make_record_shape_snapping_and_failures():
    rep = REPORTS[0]
    rec = infer.make_record(rep, 'Sure: {"drugs": ["Lipitr"], "adverse_events": ["Muscle pain", "rash"]}',
                            30, "stop", "m-base", "m", None, False)
    assert set(PREDICTION_KEYS) <= set(rec)
    assert rec["parse_status"] == "repaired" and rec["parse_ok"]
    assert rec["parsed"] == {"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "rash"]}
    assert rec["parsed_unsnapped"] == {"drugs": ["Lipitr"], "adverse_events": ["Muscle pain", "rash"]}
    assert [g["status"] for g in rec["grounding"]] == ["fuzzy", "case", "not_found"]
    assert rec["gold"] == {"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "dark urine"]}
    raw = "I am sorry, I cannot help with that."
    bad = infer.make_record(rep, raw, 12, "stop", "m-base", "m", None, False, snap=False)
    assert (bad["parsed"], bad["parse_ok"], bad["parse_status"], bad["raw"]) == (None, False, "no_json", raw)
    assert bad["grounding"] == []


def test_missing_adapter_names_the_folder():
    with pytest.raises(FileNotFoundError, match=r"artifacts/models/no-such-run/smollm2-135m"):
        infer.adapter_dir("no-such-run", MODEL)


# ---- real generation (loads SmolLM2) ----------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    torch.manual_seed(0)
    spec = models.get_spec(MODEL)
    tok = models.set_padding_side(models.load_tokenizer(MODEL), "generation")
    return models.load_model(MODEL), tok, spec


@pytest.mark.slow
def test_predict_base_constrained_and_free(smol, tmp_path, monkeypatch):
    model, tok, spec = smol
    free = infer.predict(model, tok, spec, REPORTS, batch_size=2, max_new_tokens=24, progress=False)
    assert [r["id"] for r in free] == ["r1", "r2", "r3"]
    assert all(r["n_new_tokens"] <= 24 and r["system"] == f"{MODEL}-base" for r in free)
    held = infer.predict(model, tok, spec, REPORTS, batch_size=3, max_new_tokens=40, constrained=True,
                         progress=False)
    assert all(r["parse_status"] == "ok" and r["finish_reason"] == "stop" for r in held)
    # batching and padding do not change greedy outputs
    single = infer.predict(model, tok, spec, REPORTS[2:], batch_size=1, max_new_tokens=40, constrained=True,
                           progress=False)
    assert single[0]["raw"] == held[2]["raw"]
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    path = infer.write_predictions("t", "test", f"{MODEL}-base", held)
    assert path == tmp_path / "artifacts" / "predictions" / "t" / "test" / f"{MODEL}-base.jsonl"
    assert read_jsonl(path) == held


@pytest.mark.slow
def test_merged_adapter_matches_the_unmerged_one(smol, tmp_path):
    """A LoRA adapter saved by PEFT, loaded and merged, gives the logits of the unmerged adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tok, spec = smol
    fresh = models.load_model(MODEL)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft = get_peft_model(fresh, cfg)
    peft.save_pretrained(str(tmp_path / "adapter"))
    x = torch.tensor([tok("Zoloft gave me headaches.")["input_ids"]])
    with torch.no_grad():
        want = peft(x).logits
        base_logits = model(x).logits
    merged = infer.apply_adapter(models.load_model(MODEL), tmp_path / "adapter", merge=True)
    assert not isinstance(merged, PeftModel)
    with torch.no_grad():
        got = merged(x).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(base_logits, want, atol=1e-3)  # the adapter does change the model
    rec = infer.predict(merged, tok, spec, REPORTS[:1], max_new_tokens=20, adapter="a", progress=False)[0]
    assert rec["system"] == f"{MODEL}-lora" and rec["adapter"] == "a"
