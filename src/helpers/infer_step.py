"""Step 5 as calls: check the settings, load the model once for the chosen backend (transformers or
vLLM), run every variant on every test split and write the predictions, render a few examples.
The notebook 05_infer shows the tables and plots; the decisions live here."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import grounding, infer, infer_vllm, models, paths

BACKENDS = ("hf", "vllm")


def ordered_variants(variants: Sequence[str]) -> list[str]:
    """The variants to run, base first (merging the adapter changes the weights); unknown ones fail."""
    unknown = [v for v in variants if v not in infer.VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; use {infer.VARIANTS}")
    return sorted(variants, key=infer.VARIANTS.index)


def check_backend(backend: str, drug_list_close_penalty: float = 0.0) -> None:
    """Fail before any model is loaded when the backend is unknown, vLLM is missing, or a setting asks
    vLLM for what only the hf backend's constrained decoding does (the drug-list close penalty)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "vllm" and drug_list_close_penalty:
        raise ValueError("infer.drug_list_close_penalty is applied by the hf backend's constrained decoding "
                         "only; set it to 0 to run on vllm")
    if backend == "vllm":
        infer_vllm.check_available()


def adapter_rank(adapter: Path | None, default: int = 16) -> int:
    """The LoRA rank of a step-4 adapter (vLLM sizes its LoRA slots by it)."""
    from .io import read_json
    return int(read_json(adapter / infer.ADAPTER_CONFIG)["r"]) if adapter else default


@dataclass
class Loaded:
    """What inference runs on: the base model (or vLLM engine), its tokenizer, the adapter folder."""
    backend: str
    base: Any
    tokenizer: Any
    adapter: Path | None


def load(run: str, model: str, variants: Sequence[str], backend: str, seed: int) -> Loaded:
    """Load the base once: with vLLM one engine with LoRA enabled serves both variants (the adapter
    is applied per request); with transformers the load plan's device and dtype (CPU: float32)."""
    import torch

    torch.manual_seed(seed)
    spec = models.get_spec(model)
    adapter = infer.adapter_dir(run, model) if "lora" in variants else None   # fails early, naming it
    tokenizer = models.set_padding_side(models.load_tokenizer(model), "generation")
    if backend == "vllm":
        source = models.plain_copy(model) if spec.offline else spec.hub_id
        base = infer_vllm.load_engine(str(source), adapter, seed, lora_rank=adapter_rank(adapter))
    else:
        base = models.load_planned(models.load_plan(model, models.detect_device()))
    return Loaded(backend, base, tokenizer, adapter)


@dataclass
class InferResult:
    """Every variant's records per split, the summary rows and the written prediction files."""
    records: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)


def _predict(loaded: Loaded, net: Any, spec: Any, reports: list[dict[str, Any]], variant: str,
             system: str, settings: dict[str, Any], mode: Any) -> list[dict[str, Any]]:
    """One variant on one split, through the backend's own predict."""
    adapter_rel = paths.rel(loaded.adapter) if variant == "lora" else None
    common = dict(max_new_tokens=settings["max_new_tokens"], constrained=mode, system=system,
                  adapter=adapter_rel, snap=settings["snap"], fuzzy_threshold=settings["fuzzy_threshold"])
    if loaded.backend == "vllm":
        return infer_vllm.predict(loaded.base, loaded.tokenizer, spec, reports,
                                  adapter_path=loaded.adapter if variant == "lora" else None, **common)
    return infer.predict(net, loaded.tokenizer, spec, reports, batch_size=settings["batch_size"],
                         drug_list_close_penalty=settings["drug_list_close_penalty"], **common)


def run_variants(loaded: Loaded, settings: dict[str, Any], data: dict[str, list[dict[str, Any]]],
                 variants: Sequence[str]) -> InferResult:
    """Predict every split with every variant, write each prediction file, time each split."""
    model, run = settings["model"], settings["run"]
    spec, mode = models.get_spec(model), infer.constrained_mode(settings["constrained"])
    out = InferResult()
    for variant in variants:
        system = infer.system_name(model, variant)
        net = None
        if loaded.backend == "hf":
            net = loaded.base if variant == "base" else infer.apply_adapter(loaded.base, loaded.adapter, merge=True)
        for name, reports in data.items():
            t0 = time.perf_counter()
            records = _predict(loaded, net, spec, reports, variant, system, settings, mode)
            seconds = time.perf_counter() - t0
            out.outputs.append(infer.write_predictions(run, name, system, records))
            out.records[(variant, name)] = records
            out.rows.append({"variant": variant, "split": name, "backend": loaded.backend,
                             **infer.summarize(records, seconds)})
    return out


def adapter_inputs(adapter: Path | None) -> list[Path]:
    """The adapter files a run read (for the manifest)."""
    return [p for p in sorted(adapter.glob("adapter_*")) if p.is_file()] if adapter else []


def example_html(record: dict[str, Any]) -> str:
    """One prediction as an HTML block: the report with grounded strings marked, gold, raw output."""
    found = ", ".join(f"{g['predicted']!r}: {g['status']}" for g in record["grounding"]) or "nothing predicted"
    return (f"<div style='border:1px solid #ccc;padding:6px;margin:6px 0;font-size:90%'>"
            f"<b>{record['id']}</b> ({record['parse_status']})<br>"
            f"{grounding.highlight_html(record['text'][:700], record['grounding'])}"
            f"<br><i>gold</i>: {record['gold']}<br><i>raw</i>: <code>{record['raw'][:300].replace('<', '&lt;')}</code>"
            f"<br><i>grounding</i>: {found.replace('<', '&lt;')}</div>")


def examples_html(result: InferResult, model: str, variant: str, split: str, n: int = 3) -> str:
    """The first `n` predictions of one variant on one split, headed by the system's name."""
    blocks = "".join(example_html(r) for r in result.records[(variant, split)][:n])
    return f"<h4>{html.escape(infer.system_name(model, variant))} on {html.escape(split)}</h4>" + blocks
