"""The optional vLLM backend: what it asks vLLM for (token-id prompts, greedy, end-of-turn stops,
the record schema, the adapter) and the records it makes, checked against a stand-in engine that
answers like `vllm.LLM.generate`; and a clear error where vLLM cannot run (here: not installed)."""
from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

from helpers import infer, infer_vllm, models
from helpers.parsing import parse_output
from helpers.schemas import PREDICTION_KEYS
from helpers.templates import encode, render_prompt

MODEL = "smollm2-135m"
REPORTS = [
    {"id": "v1", "text": "I started Lipitor in March and now my muscles ache.", "drugs": ["Lipitor"],
     "adverse_events": ["muscles ache"]},
    {"id": "v2", "text": "This pill gives me headaches.", "drugs": [], "adverse_events": ["headaches"]},
]


class FakeLLM:
    """Answers like vllm.LLM.generate: one RequestOutput-like object per prompt, in order."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        self.calls.append((prompts, params, lora_request))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=list(range(n)), finish_reason=fr)])
                for text, n, fr in self.answers]


@pytest.fixture(scope="module")
def smol():
    return models.get_spec(MODEL), models.set_padding_side(models.load_tokenizer(MODEL), "generation")


def test_sampling_is_greedy_stops_at_end_of_turn_and_carries_the_schema(smol):
    spec, tok = smol
    stops = infer.stop_token_ids(tok, spec)
    kw = infer_vllm.sampling_kwargs(stops, 64, "schema")
    assert kw["temperature"] == 0.0 and kw["max_tokens"] == 64 and kw["stop_token_ids"] == stops
    schema = kw["structured_outputs"]["json"]
    assert schema["required"] == ["drugs", "adverse_events"] and schema["additionalProperties"] is False
    assert "structured_outputs" not in infer_vllm.sampling_kwargs(stops, 64, False)
    with pytest.raises(ValueError, match="needs the report text"):
        infer_vllm.sampling_kwargs(stops, 64, "spans")


def test_spans_sampling_carries_the_report_grammar_and_a_cap_the_longest_record_fits(smol):
    spec, tok = smol
    text = REPORTS[0]["text"]
    kw = infer_vllm.sampling_kwargs(infer.stop_token_ids(tok, spec), 96, "spans", text)
    grammar = kw["structured_outputs"]["grammar"]
    assert json.dumps({"substring_words": text}) in grammar and "%llguidance" in grammar
    assert '{0,3}' in grammar and '{0,7}' in grammar     # at most 4 drugs and 8 events
    assert kw["max_tokens"] == infer_vllm.spans_max_tokens(text) > 96


def _longest_record(span: str) -> str:
    return json.dumps({f: [span] * k for f, k in infer_vllm.MAX_ITEMS.items()}, ensure_ascii=False)


@pytest.mark.parametrize("text", ["word " * 30, "Übelkeit und Schwindel nach Ibuprofen, " * 3])
def test_spans_token_cap_covers_the_longest_record_in_bytes(text):
    # the longest record the grammar allows: every list full of strings of the longest byte length;
    # a token writes at least one byte, so its bytes (+1 stop token) bound the tokens it can take
    chars = infer_vllm.SPAN_MAX_CHARS
    widest = max((text[i:i + chars] for i in range(len(text) - chars + 1)), key=lambda s: len(s.encode()))
    record = _longest_record(widest)
    assert infer_vllm.spans_max_tokens(text) == len(record.encode("utf-8")) + 1
    assert infer_vllm.longest_span_bytes("abc", chars) == 3


def test_spans_predict_sends_one_grammar_per_report(smol):
    spec, tok = smol
    llm = FakeLLM([('{"drugs": ["Lipitor"], "adverse_events": []}', 12, "stop"),
                   ('{"drugs": [], "adverse_events": ["headaches"]}', 12, "stop")])
    recs = infer_vllm.predict(llm, tok, spec, REPORTS, constrained="spans", sampling=lambda kw: kw,
                              lora=lambda p: None)
    params = llm.calls[0][1]
    assert isinstance(params, list) and len(params) == 2
    assert [json.dumps({"substring_words": r["text"]}) in p["structured_outputs"]["grammar"]
            for r, p in zip(REPORTS, params)] == [True, True]
    assert [r["constrained"] for r in recs] == ["spans", "spans"]


def test_engine_enables_lora_only_with_an_adapter():
    assert "enable_lora" not in infer_vllm.engine_kwargs("m", None, seed=13)
    kw = infer_vllm.engine_kwargs("m", "artifacts/models/cpu/x", seed=13, lora_rank=32)
    assert kw["enable_lora"] and kw["max_lora_rank"] == 32 and kw["seed"] == 13
    assert kw["structured_outputs_config"] == {"backend": "guidance"}   # llguidance: substring rules


def test_cpu_engine_runs_float32_without_gpu_settings():
    kw = infer_vllm.engine_kwargs("m", None, seed=13, device="cpu")
    assert kw["dtype"] == "float32" and "gpu_memory_utilization" not in kw
    assert infer_vllm.engine_kwargs("m", None, seed=13)["dtype"] == "auto"


def test_predict_sends_token_ids_and_makes_the_same_records(smol):
    spec, tok = smol
    answers = [(json.dumps({"drugs": ["lipitor"], "adverse_events": ["muscles ache"]}), 17, "stop"),
               ('{"drugs": [], "adverse_events": ["headach', 96, "length")]
    llm = FakeLLM(answers)
    recs = infer_vllm.predict(llm, tok, spec, REPORTS, max_new_tokens=96, constrained="schema",
                              adapter="artifacts/models/cpu/smollm2-135m", adapter_path="/abs/adapter",
                              sampling=lambda kw: kw, lora=lambda p: ("lora", p))
    prompts, params, lora = llm.calls[0]
    expected = [encode(tok, render_prompt(tok, spec, r["text"])) for r in REPORTS]
    assert [p["prompt_token_ids"] for p in prompts] == expected          # no second BOS, same as the HF path
    assert params["structured_outputs"]["json"] == infer_vllm.RECORD_SCHEMA and lora == ("lora", "/abs/adapter")
    assert [r["id"] for r in recs] == ["v1", "v2"] and set(PREDICTION_KEYS) <= set(recs[0])
    assert recs[0]["parsed"] == {"drugs": ["Lipitor"], "adverse_events": ["muscles ache"]}   # snapped to the text
    assert recs[0]["system"] == "smollm2-135m-lora" and recs[0]["n_new_tokens"] == 17
    assert recs[1]["finish_reason"] == "length" and recs[1]["parse_status"] == parse_output(answers[1][0])[1]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_the_backend_says_so():
    with pytest.raises(infer_vllm.VllmUnavailable, match="vllm package"):
        infer_vllm.load_engine("m", None, seed=13)
