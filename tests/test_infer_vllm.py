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
    with pytest.raises(ValueError, match="only on the transformers backend"):
        infer_vllm.sampling_kwargs(stops, 64, "spans")


def test_engine_enables_lora_only_with_an_adapter():
    assert "enable_lora" not in infer_vllm.engine_kwargs("m", None, seed=13)
    kw = infer_vllm.engine_kwargs("m", "artifacts/models/cpu/x", seed=13, lora_rank=32)
    assert kw["enable_lora"] and kw["max_lora_rank"] == 32 and kw["seed"] == 13


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
