"""Optional vLLM backend of step 5 (05_infer `backend="vllm"`, off by default; CUDA only).

Same prompts, stop tokens, greedy decoding and prediction records as the transformers path in
`infer`; what differs is the engine: vLLM batches all reports itself (continuous batching), applies
the LoRA adapter per request (`LoRARequest`, no merge) and constrains the output with its own
structured-output backend (`StructuredOutputsParams(json=RECORD_SCHEMA)`, vLLM >= 0.12). Our
`spans` mode (strings copied from the report) exists only on the transformers path.

vLLM is not in requirements-gpu.txt: it pins its own torch build. Install it in a separate
environment on the GPU machine (`pip install vllm`, see docs/gpu.md). On the offline models vLLM
reads the cached plain safetensors copy (`models.plain_copy`), on hub models the hub id.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Sequence

from .grounding import DEFAULT_FUZZY_THRESHOLD
from .infer import constrained_mode, make_record, stop_token_ids
from .templates import encode, render_prompt

RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"drugs": {"type": "array", "items": {"type": "string"}},
                   "adverse_events": {"type": "array", "items": {"type": "string"}}},
    "required": ["drugs", "adverse_events"],
    "additionalProperties": False,
}


class VllmUnavailable(RuntimeError):
    """vLLM cannot run here (not installed, or no CUDA GPU)."""


def check_available() -> None:
    """Raise VllmUnavailable saying what is missing, before any model is loaded."""
    if importlib.util.find_spec("vllm") is None:
        raise VllmUnavailable("backend='vllm' needs the vllm package, which is not installed "
                              "(GPU machines only: `pip install vllm` in its own environment, docs/gpu.md); "
                              "use backend='hf' here")
    import torch
    if not torch.cuda.is_available():
        raise VllmUnavailable("backend='vllm' needs a CUDA GPU and none is visible; use backend='hf'")


def engine_kwargs(model_source: str, adapter: Path | str | None, seed: int, lora_rank: int = 16,
                  max_model_len: int = 2048, gpu_memory_utilization: float = 0.85) -> dict[str, Any]:
    """Arguments of `vllm.LLM(...)`: LoRA enabled only when an adapter will be applied."""
    kw: dict[str, Any] = {"model": str(model_source), "seed": seed, "dtype": "auto",
                          "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization}
    if adapter is not None:
        kw.update(enable_lora=True, max_lora_rank=max(8, lora_rank), max_loras=1)
    return kw


def sampling_kwargs(stop_ids: Sequence[int], max_new_tokens: int, constrained: Any) -> dict[str, Any]:
    """Arguments of `vllm.SamplingParams(...)` for greedy decoding that stops at end of turn;
    `structured_outputs` holds the record schema when constrained (built by `make_sampling`)."""
    mode = constrained_mode(constrained)
    if mode == "spans":
        raise ValueError("constrained='spans' exists only on the transformers backend (backend='hf'); "
                         "with backend='vllm' use constrained='schema' or false")
    kw: dict[str, Any] = {"temperature": 0.0, "max_tokens": max_new_tokens,
                          "stop_token_ids": [int(i) for i in stop_ids], "skip_special_tokens": True}
    if mode == "schema":
        kw["structured_outputs"] = {"json": RECORD_SCHEMA}
    return kw


def make_sampling(kw: dict[str, Any]) -> Any:
    """The real `vllm.SamplingParams` from `sampling_kwargs` (imports vllm)."""
    from vllm import SamplingParams
    kw = dict(kw)
    if "structured_outputs" in kw:
        from vllm.sampling_params import StructuredOutputsParams
        kw["structured_outputs"] = StructuredOutputsParams(**kw["structured_outputs"])
    return SamplingParams(**kw)


def lora_request(adapter: Path | str | None) -> Any:
    """`LoRARequest` of the step-4 adapter folder (None: base model)."""
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest
    return LoRARequest("adapter", 1, str(adapter))


def load_engine(model_source: str, adapter: Path | str | None, seed: int, **kw: Any) -> Any:
    """A `vllm.LLM` for the model (after `check_available`)."""
    check_available()
    from vllm import LLM
    return LLM(**engine_kwargs(model_source, adapter, seed, **kw))


def predict(llm: Any, tokenizer: Any, spec: Any, reports: Sequence[dict[str, Any]],
            max_new_tokens: int = 96, constrained: Any = False, system: str | None = None,
            adapter: str | None = None, adapter_path: Path | str | None = None, snap: bool = True,
            fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
            sampling: Callable[[dict[str, Any]], Any] = make_sampling,
            lora: Callable[[Any], Any] = lora_request) -> list[dict[str, Any]]:
    """Prediction records for `reports` from one `llm.generate` call (vLLM orders and batches)."""
    mode = constrained_mode(constrained)
    params = sampling(sampling_kwargs(stop_token_ids(tokenizer, spec), max_new_tokens, mode))
    # token ids, not strings: vLLM would add a second BOS to a rendered chat template
    prompts = [{"prompt_token_ids": encode(tokenizer, render_prompt(tokenizer, spec, r["text"]))}
               for r in reports]
    outputs = llm.generate(prompts, params, lora_request=lora(adapter_path), use_tqdm=True)
    system = system or f"{spec.key}-{'lora' if adapter_path else 'base'}"
    records = []
    for report, out in zip(reports, outputs):
        best = out.outputs[0]
        reason = "length" if best.finish_reason == "length" else "stop"
        records.append(make_record(report, best.text, len(best.token_ids), reason, system, spec.key,
                                   adapter, mode, snap=snap, fuzzy_threshold=fuzzy_threshold))
    if len(records) != len(reports):
        raise RuntimeError(f"vLLM returned {len(records)} outputs for {len(reports)} prompts")
    return records
