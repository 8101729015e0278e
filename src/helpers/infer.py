"""Step 5: batched greedy extraction with a base model or base + LoRA adapter, into prediction records.

A prediction record (docs/data-contracts.md, `schemas.PREDICTION_KEYS`) holds the report, its gold
record, the model's raw text, the parsed record (snapped to the report's own text by default,
see `grounding`), the parse status and the grounding of every predicted string, plus `system`,
`model`, `adapter`, `n_new_tokens`, `finish_reason` and `constrained`, and the report's gold
`gold_spans` and `genre` where it has them (`schemas.gold_context`), so any tool can rescore it.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from . import draft as drafting, paths
from .grounding import DEFAULT_FUZZY_THRESHOLD, ground_prediction, snap_record
from .io import finish_publish, write_jsonl
from .parsing import parse_output
from .schemas import FIELDS, gold, gold_context, validate_prediction
from .templates import encode, render_prompt

VARIANTS = ("base", "lora")
DECODERS = ("loop", "loop-plain-prefill", "generate")   # helpers.greedy (+ helpers.prefill) or transformers generate
ADAPTER_CONFIG = "adapter_config.json"   # its presence marks a finished step-4 adapter


def system_name(model: str, variant: str) -> str:
    """Prediction system name: `<model>-base` or `<model>-lora` (CONTRIBUTING.md artifact rules)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    return f"{model}-{variant}"


def constrained_mode(value: Any) -> str | bool:
    """Normalize the `constrained` parameter: False/None/'off' -> False, True/'schema' -> 'schema', 'spans'."""
    if value in (False, None, "", "off", "none", "false", 0):
        return False
    if value in (True, "schema", "json", "true", 1):
        return "schema"
    if value == "spans":
        return "spans"
    raise ValueError(f"constrained must be false, true/'schema' or 'spans', not {value!r}")


def check_close_penalty(penalty: float, mode: str | bool) -> None:
    """The drug-list close penalty lives in the constrained processor: refuse it without one, or below 0."""
    if penalty < 0:
        raise ValueError(f"infer.drug_list_close_penalty must be >= 0 (nats), not {penalty}")
    if penalty and not mode:
        raise ValueError("infer.drug_list_close_penalty needs constrained decoding (infer.constrained: "
                         "schema or spans): the constrained processor applies it")


def adapter_dir(run: str, model: str) -> Path:
    """The step-4 adapter folder of a run and model; a clear error when it is not there."""
    folder = paths.model_dir(run, model)
    finish_publish(folder)  # an interrupted publish is completed first: never half old, half new
    if not (folder / ADAPTER_CONFIG).exists():
        raise FileNotFoundError(f"no LoRA adapter for model {model!r} in run {run!r}: "
                                f"{paths.rel(folder)} lacks {ADAPTER_CONFIG} (run 04_finetune first)")
    return folder


def apply_adapter(model: Any, folder: Path | str, merge: bool = True) -> Any:
    """Base model + PEFT adapter; merged into the weights when that is exact (float32/bf16/fp16
    weights, not 4/8-bit quantized ones) so generation runs at base-model speed. Merging changes
    the base model's weights in place: run the base variant first."""
    from peft import PeftModel

    with warnings.catch_warnings():   # PEFT calls a transformers method that warns it is renamed
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(model, str(folder))
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if merge and not quantized:
        return peft_model.merge_and_unload()
    return peft_model


def stop_token_ids(tokenizer: Any, spec: Any) -> list[int]:
    """Token ids that end the answer: the family's end-of-turn token and the tokenizer's EOS."""
    ids = []
    eot = tokenizer.convert_tokens_to_ids(spec.eot)
    if isinstance(eot, int) and eot != getattr(tokenizer, "unk_token_id", None):
        ids.append(eot)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError(f"{spec.key}: neither {spec.eot!r} nor an EOS token is in the vocabulary")
    return ids


def _batches(order: Sequence[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(order), size):
        yield list(order[i:i + size])


def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[str], stop_ids: Sequence[int],
                   max_new_tokens: int, constrained: str | bool = False,
                   texts: Sequence[str] | None = None, prefix: Any = None,
                   decoder: str = "loop", draft: Sequence[int] | None = None,
                   close_penalty: float = 0.0) -> list[tuple[str, int, str]]:
    """Greedy generation for one left-padded batch: (raw text, n new tokens, finish reason) each.
    `decoder` (DECODERS): "loop" runs helpers.greedy with helpers.prefill (the shared prefix once, rows
    prefilled in groups of similar length), "loop-plain-prefill" the same loop after one plain forward,
    "generate" transformers' own loop; the loops give way to `generate` where they cannot be sure.
    `prefix` (a prefix_cache.PrefixCache) is the shared instruction prefix, computed once per split;
    under `generate` each report's tokens are then also prefilled without padding (within a sliding window).
    `draft` (the loops only): the tokens answers open with (helpers.draft.opening), computed in one forward
    and kept as far as every row chooses them. `close_penalty` (constrained only): nats off closing the
    drug list after a drug (helpers.constrained)."""
    from transformers import LogitsProcessorList

    ids = [encode(tokenizer, p) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    width = max(len(x) for x in ids)
    processors = LogitsProcessorList()
    if constrained:
        from .constrained import RecordLogitsProcessor
        vocab = model.get_output_embeddings().weight.shape[0]
        processors.append(RecordLogitsProcessor(tokenizer, vocab, stop_ids, width, max_new_tokens,
                                                mode=constrained, texts=texts, close_penalty=close_penalty))
    with torch.inference_mode():
        out = _decode(model, ids, pad, stop_ids, max_new_tokens, processors, prefix, decoder, draft)
    results = []
    stops = set(stop_ids)
    for row in out[:, width:].tolist():
        end = next((i for i, t in enumerate(row) if t in stops), None)
        answer = row if end is None else row[:end]
        raw = tokenizer.decode(answer, skip_special_tokens=True)
        results.append((raw, len(answer), "length" if end is None else "stop"))
    return results


def _decode(model: Any, ids: Sequence[Sequence[int]], pad: int, stop_ids: Sequence[int], max_new_tokens: int,
            processors: Any, prefix: Any, decoder: str, draft: Sequence[int] | None = None) -> torch.Tensor:
    """Prompt + new token ids of a left-padded batch from helpers.greedy's loop, or from `generate` where
    that loop cannot guarantee the same tokens (said once per reason) or when asked for."""
    from . import greedy
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
    device = next(model.parameters()).device
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in ids], dtype=torch.long, device=device)
    attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], dtype=torch.long, device=device)
    if decoder != "generate":
        reason = greedy.unsupported(model, width, max_new_tokens)
        if reason is None:
            return greedy.decode(model, input_ids, attention, stop_ids, pad, max_new_tokens, processors,
                                 grouped_prefill=decoder == "loop", prefix=prefix, draft=draft)
        greedy.log_fallback(reason)
    return _generate(model, ids, input_ids, attention, pad, stop_ids, max_new_tokens, processors, prefix)


def _generate(model: Any, ids: Sequence[Sequence[int]], input_ids: torch.Tensor, attention: torch.Tensor, pad: int,
              stop_ids: Sequence[int], max_new_tokens: int, processors: Any, prefix: Any) -> torch.Tensor:
    """transformers generate, greedy, from plain left padding or from the prefix cache's layouts."""
    from transformers import GenerationConfig

    past: dict[str, Any] = {}
    if prefix is not None:
        from .prefix_cache import batch_inputs, fits_window, packed_inputs
        layout = packed_inputs(model, prefix, ids, pad) if fits_window(model, input_ids.shape[1]) \
            else batch_inputs(prefix, ids, pad)
        input_ids, attention, past["past_key_values"] = (x.to(input_ids.device) if torch.is_tensor(x) else x
                                                        for x in layout)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=list(stop_ids), pad_token_id=pad)
    return model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                          logits_processor=processors, **past)


def new_strings(final: dict[str, list[str]] | None, grounding: list[dict[str, Any]]
                ) -> dict[str, list[str]] | None:
    """Strings snapping made (a drug trimmed to its name), so that they are located in the report too."""
    if final is None:
        return None
    known = {(g["field"], s) for g in grounding for s in (g["predicted"], g["matched_text"])}
    return {f: [x for x in final.get(f, []) if (f, x) not in known] for f in FIELDS}


def make_record(report: dict[str, Any], raw: str, n_new_tokens: int, finish_reason: str,
                system: str, model: str, adapter: str | None, constrained: str | bool,
                snap: bool = True, fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD) -> dict[str, Any]:
    """One prediction record: parse, ground the model's own strings, snap (optionally), validate."""
    parsed, status = parse_output(raw)
    grounding = ground_prediction(parsed, report["text"], fuzzy_threshold)
    final = snap_record(parsed, grounding, report["text"]) if snap else parsed
    grounding += ground_prediction(new_strings(final, grounding), report["text"], fuzzy_threshold)
    rec = {"id": report["id"], "text": report["text"], "gold": gold(report), "raw": raw,
           "parsed": final, "parse_ok": parsed is not None, "parse_status": status,
           "parsed_unsnapped": parsed, "snapped": bool(snap), "grounding": grounding,
           "system": system, "model": model, "adapter": adapter, "constrained": constrained or False,
           "n_new_tokens": n_new_tokens, "finish_reason": finish_reason, **gold_context(report)}
    return validate_prediction(rec, f"prediction for report {report['id']!r}")


def predict(model: Any, tokenizer: Any, spec: Any, reports: Sequence[dict[str, Any]], batch_size: int = 8,
            max_new_tokens: int = 96, constrained: Any = False, progress: bool = True,
            system: str | None = None, adapter: str | None = None, snap: bool = True,
            fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD, prompt_system: str | None = None,
            prefix_cache: bool = False, decoder: str = "loop", draft: bool = True,
            drug_list_close_penalty: float = 0.0) -> list[dict[str, Any]]:
    """Prediction records for `reports` (in their order): batched greedy generation, left padding,
    stop at the end-of-turn token; batches are formed by prompt length to waste little padding.
    `prefix_cache` computes the instruction prefix all prompts share once and prefills each report
    without padding (same outputs). It pays on one batch of mixed lengths (1.15-1.36x on 32 reports:
    benchmarks/infer_throughput.py) but not on whole length-sorted splits, whose batches carry
    little padding (0.75-0.9x in step 5 of the cpu profile: one forward per report costs more), so it is off.
    `decoder` "loop" (helpers.greedy: no per-token cache copy, finished rows dropped; the same tokens as
    `generate`, which it falls back to where it cannot be sure) or "generate" (transformers' loop).
    `draft`: the loops compute the answer's common opening (helpers.draft) in one forward, same tokens.
    `drug_list_close_penalty`: nats off closing the drug list once it holds a drug (constrained decoding
    only: the processor applies it), so a list the model would end early goes on to the next drug."""
    from tqdm.auto import tqdm

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1 (got {batch_size}, {max_new_tokens})")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
    mode = constrained_mode(constrained)
    check_close_penalty(drug_list_close_penalty, mode)
    system = system or f"{spec.key}-{'lora' if adapter else 'base'}"
    stop_ids = stop_token_ids(tokenizer, spec)
    prompts = [render_prompt(tokenizer, spec, r["text"], system=prompt_system) for r in reports]
    lengths = [len(encode(tokenizer, p)) for p in prompts]
    order = sorted(range(len(reports)), key=lambda i: -lengths[i])
    model.eval()
    prefix = _prefix(model, tokenizer, prompts) if prefix_cache and len(reports) > 1 else None
    opening = drafting.opening(tokenizer, spec) if draft and decoder != "generate" else None
    records: list[dict[str, Any] | None] = [None] * len(reports)
    bar = tqdm(total=len(reports), unit="report", desc=system, disable=not progress)
    try:
        for idx in _batches(order, batch_size):
            outputs = generate_batch(model, tokenizer, [prompts[i] for i in idx], stop_ids, max_new_tokens,
                                     constrained=mode, texts=[reports[i]["text"] for i in idx], prefix=prefix,
                                     decoder=decoder, draft=opening, close_penalty=drug_list_close_penalty)
            for i, (raw, n_new, reason) in zip(idx, outputs):
                records[i] = make_record(reports[i], raw, n_new, reason, system, spec.key, adapter, mode,
                                         snap=snap, fuzzy_threshold=fuzzy_threshold)
            bar.update(len(idx))
    finally:
        bar.close()
    return [r for r in records if r is not None]


def _prefix(model: Any, tokenizer: Any, prompts: Sequence[str]) -> Any:
    """The KV cache of the token prefix every prompt shares (None when too short to pay)."""
    from . import prefix_cache
    return prefix_cache.build(model, [encode(tokenizer, p) for p in prompts])


def timed_predict(*args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], float]:
    """predict() and its wall time in seconds (for reports/s tables)."""
    started = time.perf_counter()
    records = predict(*args, **kwargs)
    return records, time.perf_counter() - started


def summarize(records: Sequence[dict[str, Any]], seconds: float | None = None) -> dict[str, Any]:
    """Counts for a table row: reports, parse rate, statuses, grounding rate, stops at the cap, speed."""
    n = len(records)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["parse_status"]] = statuses.get(r["parse_status"], 0) + 1
    spans = [g for r in records for g in r["grounding"]]
    row = {"reports": n, "parse_rate": round(sum(r["parse_ok"] for r in records) / n, 3) if n else None,
           "statuses": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
           "predicted_strings": len(spans),
           "grounded_rate": round(sum(g["status"] != "not_found" for g in spans) / len(spans), 3) if spans else None,
           "hit_token_cap": sum(r["finish_reason"] == "length" for r in records),
           "mean_new_tokens": round(sum(r["n_new_tokens"] for r in records) / n, 1) if n else None}
    if seconds is not None:
        row["seconds"] = round(seconds, 1)
        row["reports_per_s"] = round(n / seconds, 2) if seconds > 0 else None
    return row


def write_predictions(run: str, split: str, system: str, records: Sequence[dict[str, Any]]) -> Path:
    """Write records (validated) to paths.predictions_file(run, split, system), atomically."""
    for r in records:
        validate_prediction(r, f"prediction {r.get('id')!r} of {system}/{split}")
    return write_jsonl(paths.predictions_file(run, split, system), records)
