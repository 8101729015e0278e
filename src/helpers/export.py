"""Exports of a run's tuned model for use outside the study: a merged 16-bit model in the usual
transformers layout, and a GGUF file for llama.cpp / Ollama.

    python -m helpers.export --model RUN/MODEL [--quant f16|q8_0|f32] [--verify 5 --verify-greedy 20]

- merged: base weights + the step-4 LoRA adapter merged (`infer.apply_adapter`), cast to float16,
  `save_pretrained` (safetensors) with the tokenizer, in `artifacts/exports/<run>/<model>/merged-f16/`.
- GGUF, written on the CPU with the `gguf` package: the base model's own GGUF supplies every metadata
  key (architecture, hyper-parameters, tokenizer, chat template) and the tensor list; each tensor
  is replaced by the merged weight, renamed by `gguf`'s tensor map, in llama.cpp's layout (its
  convert script permutes the Q and K rows of llama-architecture models for its rotary
  embedding, and stores Gemma's norms as 1 + w; transformers' GGUF loader undoes both), in the
  chosen type (1-D tensors stay float32, as llama.cpp does). `verify` loads the file back with
  transformers' GGUF loader and compares logits and greedy extractions with the merged model.
- On a CUDA machine with Unsloth and a hub model, `backend="unsloth"` calls Unsloth's own
  `save_pretrained_merged` / `save_pretrained_gguf` instead (the latter builds llama.cpp).

Every export writes `export.json` beside it: kind, quantization, size in bytes, source adapter.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import paths
from .io import atomic_path, read_json, sha256_file, write_json

QUANTS = ("f16", "q8_0", "f32")
MERGED_DTYPE = "float16"
PERMUTED_ARCHS = ("llama",)           # Q/K rows permuted by llama.cpp's convert script
NORM_PLUS_ONE_ARCHS = ("gemma", "gemma2", "gemma3")   # norms stored as 1 + w


def export_dir(run: str, model: str) -> Path:
    """Where a run's exports of one model go."""
    return paths.artifacts_dir() / "exports" / run / model


def gguf_name(model: str, quant: str) -> str:
    """The GGUF file name; it names the quantization."""
    return f"{model}-lora-{quant.upper()}.gguf"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# ---- merged model -------------------------------------------------------------------------------
def merged_model(run: str, model: str, dtype: str = MERGED_DTYPE) -> tuple[Any, Any]:
    """(model, tokenizer): the base model with the run's adapter merged into its weights, in `dtype`."""
    import torch

    from . import infer, models

    net = infer.apply_adapter(models.load_model(model), infer.adapter_dir(run, model), merge=True)
    return net.to(getattr(torch, dtype)), models.load_tokenizer(model)


def save_merged(run: str, model: str, out: Path | None = None, dtype: str = MERGED_DTYPE) -> Path:
    """Write the merged model + tokenizer (transformers layout, safetensors) and its export.json."""
    from . import infer

    out = Path(out) if out else export_dir(run, model) / f"merged-{'f16' if dtype == 'float16' else dtype}"
    net, tokenizer = merged_model(run, model, dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        net.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        adapter = infer.adapter_dir(run, model)
        write_json(tmp / "export.json", {
            "kind": "merged", "model": model, "run": run, "dtype": dtype, "quantization": "none (16-bit)",
            "size_bytes": folder_size(tmp), "adapter": paths.rel(adapter),
            "adapter_sha256": sha256_file(adapter / "adapter_model.safetensors"),
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- GGUF ---------------------------------------------------------------------------------------
def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def to_gguf_layout(weight: np.ndarray, gguf_tensor: str, arch: str, n_head: int, n_head_kv: int) -> np.ndarray:
    """A transformers weight in llama.cpp's layout (the inverse of transformers' GGUF processors)."""
    if arch in PERMUTED_ARCHS and (".attn_q." in gguf_tensor or ".attn_k." in gguf_tensor):
        heads = n_head if ".attn_q." in gguf_tensor else n_head_kv
        return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
                .swapaxes(1, 2).reshape(weight.shape))
    if arch in NORM_PLUS_ONE_ARCHS and "norm.weight" in gguf_tensor:
        return weight + 1
    return weight


def gguf_tensors(state: dict[str, Any], reader: Any) -> dict[str, np.ndarray]:
    """The merged state dict as float32 arrays named and laid out as in the base GGUF."""
    import gguf

    arch = str(_field(reader, "general.architecture"))
    blocks = int(_field(reader, f"{arch}.block_count"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_head_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise ValueError(f"the gguf package does not know architecture {arch!r}")
    names = gguf.get_tensor_name_map(by_name[arch], blocks)
    out: dict[str, np.ndarray] = {}
    for hf_name, tensor in state.items():
        target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no GGUF name for tensor {hf_name!r} ({arch})")
        weight = tensor.detach().float().cpu().numpy()
        out[target] = to_gguf_layout(weight, target, arch, n_head, n_head_kv)
    return out


def _encode_tensor(data: np.ndarray, quant: str) -> tuple[np.ndarray, Any]:
    """Array and GGML type of one tensor: 1-D tensors (norms) stay float32, as in llama.cpp."""
    import gguf

    qt = gguf.GGMLQuantizationType
    if quant == "f32" or data.ndim == 1:
        return data.astype(np.float32), qt.F32
    if quant == "f16":
        return data.astype(np.float16), qt.F16
    if data.shape[-1] % gguf.GGML_QUANT_SIZES[qt.Q8_0][0]:
        return data.astype(np.float16), qt.F16
    return gguf.quants.quantize(data.astype(np.float32), qt.Q8_0), qt.Q8_0


def write_gguf(state: dict[str, Any], base_gguf: Path, out: Path, quant: str = "f16") -> Path:
    """A GGUF of `state` (a merged transformers state dict) with the base GGUF's metadata and tensors."""
    import gguf

    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, not {quant!r}")
    reader = gguf.GGUFReader(str(base_gguf))
    arch = str(_field(reader, "general.architecture"))
    tensors = gguf_tensors(state, reader)
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "f32": gguf.LlamaFileType.ALL_F32}[quant]
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for field in reader.fields.values():
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            vtype = field.types[0]
            value = int(file_type) if field.name == "general.file_type" else field.contents()
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, value, vtype, sub_type=sub)
        if "general.file_type" not in reader.fields:
            writer.add_file_type(int(file_type))
        for t in reader.tensors:
            if t.name in tensors:
                data, dtype = _encode_tensor(tensors.pop(t.name), quant)
                writer.add_tensor(t.name, data, raw_dtype=dtype)
            else:  # not a model parameter in transformers (e.g. rope factors): kept as in the base
                writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
        extra = [n for n in tensors if n != "output.weight"]   # a tied output head is not stored
        if extra:
            raise ValueError(f"merged tensors with no place in the base GGUF: {extra[:5]}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def save_gguf(run: str, model: str, quant: str = "f16", merged: Path | None = None) -> Path:
    """The GGUF export of a run's tuned model (from the merged export, made first if missing)."""
    import torch
    from safetensors.torch import load_file

    from . import models

    spec = models.get_spec(model)
    if not spec.offline:
        raise ValueError(f"{model}: the CPU GGUF writer needs the base GGUF of an offline model; "
                         f"on a GPU use backend='unsloth'")
    merged = merged or export_dir(run, model) / "merged-f16"
    if not (merged / "export.json").exists():
        merged = save_merged(run, model, merged)
    state: dict[str, torch.Tensor] = {}
    for f in sorted(merged.glob("*.safetensors")):
        state.update(load_file(str(f)))
    out = write_gguf(state, models.gguf_path(spec), export_dir(run, model) / gguf_name(model, quant), quant)
    write_json(out.with_suffix(".json"), {
        "kind": "gguf", "model": model, "run": run, "quantization": quant.upper(), "file": out.name,
        "size_bytes": out.stat().st_size, "from": paths.rel(merged), "base_gguf": models.gguf_path(spec).name,
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return out


# ---- proof: load back and compare -----------------------------------------------------------------
def load_gguf_model(path: Path) -> Any:
    """The GGUF loaded back by transformers (dequantized to float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)


def compare_weights(a: Any, b: Any) -> dict[str, Any]:
    """Largest absolute difference between the two models' parameters (0.0: the file is exact)."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return {"same_names": False, "only_in_first": sorted(set(sa) - set(sb))[:5],
                "only_in_second": sorted(set(sb) - set(sa))[:5]}
    worst = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)
    return {"same_names": True, "tensors": len(sa), "max_abs_weight_diff": worst}


def compare_logits(a: Any, b: Any, tokenizer: Any, spec: Any, texts: Sequence[str]) -> dict[str, float]:
    """Largest absolute logit difference of two models over the prompts of `texts`, and argmax agreement."""
    import torch

    from .templates import encode, render_prompt

    worst, agree, total = 0.0, 0, 0
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([encode(tokenizer, render_prompt(tokenizer, spec, text))])
            la, lb = a(input_ids=ids).logits.float(), b(input_ids=ids).logits.float()
            worst = max(worst, float((la - lb).abs().max()))
            agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
            total += ids.shape[1]
    return {"max_abs_logit_diff": worst, "argmax_agreement": agree / total, "reports": len(texts)}


def compare_greedy(a: Any, b: Any, tokenizer: Any, spec: Any, reports: Sequence[dict[str, Any]],
                   **settings: Any) -> dict[str, Any]:
    """Greedy extractions of two models on the same reports (infer.predict): how many are equal."""
    from . import models
    from .infer import predict

    tok = models.set_padding_side(tokenizer, "generation")
    ra = predict(a, tok, spec, reports, progress=False, **settings)
    rb = predict(b, tok, spec, reports, progress=False, **settings)
    same = [x["raw"] == y["raw"] and x["parsed"] == y["parsed"] for x, y in zip(ra, rb)]
    return {"reports": len(reports), "equal": sum(same),
            "different_ids": [x["id"] for x, s in zip(ra, same) if not s]}


def verify(run: str, model: str, gguf_file: Path, reports: Sequence[dict[str, Any]], n_logits: int = 5,
           n_greedy: int = 20, merged: Path | None = None) -> dict[str, Any]:
    """Load the GGUF back and compare it with the merged export (float32 both): logits, greedy output."""
    import torch
    from transformers import AutoModelForCausalLM

    from . import models
    from .extract import run_settings

    spec = models.get_spec(model)
    merged = merged or export_dir(run, model) / "merged-f16"
    ref = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    back = load_gguf_model(gguf_file).eval()
    tokenizer = models.load_tokenizer(model)
    result = {"weights": compare_weights(ref, back),
              "logits": compare_logits(ref, back, tokenizer, spec, [r["text"] for r in reports[:n_logits]])}
    settings, _ = run_settings(run, model)
    settings = {k: v for k, v in settings.items() if k != "batch_size"}
    result["greedy"] = compare_greedy(ref, back, tokenizer, spec, list(reports[:n_greedy]), **settings)
    return result


# ---- Unsloth (GPU) -----------------------------------------------------------------------------
def unsloth_exports(run: str, model: str, quant: str = "q8_0") -> list[Path]:
    """Unsloth's own exporters on a CUDA machine (hub models with an Unsloth 4-bit id)."""
    from unsloth import FastLanguageModel  # noqa: F401  (GPU extra)

    from . import infer

    adapter = infer.adapter_dir(run, model)
    net, tokenizer = FastLanguageModel.from_pretrained(str(adapter), load_in_4bit=True)
    out = export_dir(run, model)
    net.save_pretrained_merged(str(out / "merged-16bit"), tokenizer, save_method="merged_16bit")
    net.save_pretrained_gguf(str(out / "gguf"), tokenizer, quantization_method=quant)
    return [out / "merged-16bit", out / "gguf"]


# ---- command line -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`python -m helpers.export`: merged + GGUF exports, then (optionally) the load-back proof."""
    from .extract import resolve_model
    from .schemas import load_reports

    ap = argparse.ArgumentParser(prog="python -m helpers.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="RUN/MODEL or an adapter folder")
    ap.add_argument("--quant", choices=QUANTS, default="f16", help="GGUF tensor type (default f16)")
    ap.add_argument("--backend", choices=("hf", "unsloth"), default="hf")
    ap.add_argument("--verify", type=int, default=0, help="compare logits on this many test reports")
    ap.add_argument("--verify-greedy", type=int, default=0, help="compare greedy extraction on this many")
    ap.add_argument("--reports", help="reports for the comparison (default: the run's test split)")
    args = ap.parse_args(argv)
    run, model = resolve_model(args.model)
    if args.backend == "unsloth":
        print(*unsloth_exports(run, model, args.quant), sep="\n")
        return 0
    merged = save_merged(run, model)
    gguf_file = save_gguf(run, model, args.quant, merged)
    for f in (merged / "export.json", gguf_file.with_suffix(".json")):
        info = read_json(f)
        print(f"{info['kind']:>6}: {paths.rel(f.parent if info['kind'] == 'merged' else gguf_file)} "
              f"({info['quantization']}, {info['size_bytes'] / 2**20:.1f} MiB)")
    if args.verify or args.verify_greedy:
        reports = load_reports(args.reports or paths.synthetic_dir(run) / "test.jsonl")
        result = verify(run, model, gguf_file, reports, args.verify, args.verify_greedy, merged)
        print(json.dumps(result, indent=2))
        write_json(export_dir(run, model) / f"verify-{args.quant}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
