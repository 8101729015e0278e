"""LoRA fine-tuning (step 4): one recipe, two backends.

- `unsloth`: FastLanguageModel 4-bit (QLoRA) + TRL SFTTrainer, for CUDA machines and registry
  models that have a pre-quantized 4-bit id. Unsloth is imported only on that path.
- `hf`: transformers + PEFT LoRA + TRL SFTTrainer, on CPU (or on GPU when asked, incl. multi-GPU
  through `accelerate launch`).

Both train on the same pre-tokenized rows (input_ids + completion_mask from
helpers.templates.tokenize_example) with `completion_only_loss=True`: TRL 1.15/1.16 turn the
completion mask into labels (-100 on the prompt) during dataset preparation, so only the answer
and its end-of-turn token are learned. Both publish the same PEFT adapter files.
The recipe is helpers.finetune_config; the loss table, plot and stats table helpers.train_log.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import memory, paths, train_speed
from .config import ConfigError
from .finetune_config import ALL_LINEAR, BACKENDS, FinetuneConfig, parse_set  # noqa: F401 (the step's API)
from .io import (PUBLISH_MARKER, TMP_SUFFIX, DataError, finish_publish, publish_files, read_json,
                 write_json)
from .train_log import examples_after, loss_rows, plot_loss, write_loss_csv

log = logging.getLogger(__name__)

STEP = "04_finetune"
PUBLISHED_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CHECKPOINTS = "checkpoints"


# ---- where the outputs go --------------------------------------------------------------------
def output_files(run: str, model: str) -> dict[str, Path]:
    """Every file step 4 writes for one model (the manifest is written beside them last)."""
    out = paths.model_dir(run, model)
    return {"adapter_config": out / "adapter_config.json",
            "adapter_model": out / "adapter_model.safetensors",
            "trainer_stats": out / "trainer_stats.json",
            "loss_csv": out / "loss.csv",
            "loss_png": out / "loss.png",
            "checkpoints": out / CHECKPOINTS}


def last_complete_checkpoint(folder: Path | str) -> Path | None:
    """The highest-step `checkpoint-N` that finished saving (the Trainer writes trainer_state.json
    last), so a run killed while saving resumes from the previous checkpoint, not a partial one."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for sub in folder.iterdir():
        name = sub.name
        if sub.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            if (sub / "trainer_state.json").exists() and (sub / "adapter_model.safetensors").exists():
                found.append((int(name[len("checkpoint-"):]), sub))
    return max(found)[1] if found else None


# ---- backend choice ---------------------------------------------------------------------------
def cuda_available() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def unsloth_installed() -> bool:
    """Whether the unsloth package is present (checked without importing it)."""
    return importlib.util.find_spec("unsloth") is not None


def choose_backend(requested: str, spec: Any) -> tuple[str, str]:
    """The backend to use and why: `auto` takes unsloth on a CUDA machine for a model with a 4-bit
    id when unsloth imports, else hf. Asking for unsloth where it cannot run is an error."""
    if requested not in BACKENDS:
        raise ConfigError(f"finetune.backend = {requested!r}: must be one of {', '.join(BACKENDS)}")
    if requested == "hf":
        return "hf", "asked for"
    cuda = cuda_available()
    if requested == "unsloth":
        if not cuda:
            raise RuntimeError("backend 'unsloth' needs a CUDA GPU; use backend 'hf' (or 'auto') on this machine")
        _import_unsloth()
        return "unsloth", "asked for" + ("" if spec.unsloth_id else " (the plain copy, quantized to 4-bit on load)")
    if not cuda:
        return "hf", "no CUDA GPU"
    if not spec.unsloth_id:
        return "hf", f"{spec.key} has no Unsloth 4-bit id"
    if not unsloth_installed():
        return "hf", "unsloth is not installed (pip install -r requirements-gpu.txt)"
    try:
        _import_unsloth()
    except Exception as e:  # an unsloth that fails to import must not stop a GPU run: hf still works
        log.warning("unsloth failed to import (%s); using the hf backend", e)
        return "hf", f"unsloth failed to import: {type(e).__name__}: {e}"
    return "unsloth", "CUDA GPU and a 4-bit id"


def _import_unsloth() -> Any:
    """Import unsloth (it patches transformers/TRL, so it goes before any trainer is built)."""
    import unsloth  # noqa: F401  (CUDA path only)
    return unsloth


# ---- data -------------------------------------------------------------------------------------
def load_training_rows(run: str, model: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The formatted train and val rows of step 3 (val may be empty)."""
    from .formatting import output_files as formatted_files
    from .io import read_jsonl

    files = formatted_files(run, model)
    if not files["train"].exists():
        raise FileNotFoundError(f"{paths.rel(files['train'])}: no formatted training data; run 03_format "
                                f"for run {run!r} and model {model!r} first")
    train = read_jsonl(files["train"])
    val = read_jsonl(files["val"]) if files["val"].exists() else []
    if not train:
        raise DataError(f"{paths.rel(files['train'])}: no training rows")
    return train, val


def training_inputs(run: str, model: str) -> list[Path]:
    """The files this step reads (for the manifest)."""
    from .formatting import output_files as formatted_files
    files = formatted_files(run, model)
    return [p for p in (files["train"], files["val"]) if p.exists()]


def tokenize_rows(tokenizer: Any, spec: Any, rows: Sequence[dict[str, Any]], max_length: int,
                  where: str = "rows") -> list[dict[str, list[int]]]:
    """input_ids + completion_mask for each formatted row; a row that is malformed, longer than
    max_length, or tokenized differently from step 3 (another tokenizer) raises DataError."""
    from .templates import tokenize_example

    out = []
    for n, row in enumerate(rows, 1):
        rid = row.get("id", f"#{n}")
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise DataError(f"{where}: row {rid!r}: missing or empty {key!r}")
        if "text" in row and row["text"] != row["prompt"] + row["completion"]:
            raise DataError(f"{where}: row {rid!r}: text is not prompt + completion")
        tokens = tokenize_example(tokenizer, spec, row["prompt"], row["completion"])
        n_tok = len(tokens["input_ids"])
        if "n_tokens" in row and int(row["n_tokens"]) != n_tok:
            raise DataError(f"{where}: row {rid!r}: step 3 counted {row['n_tokens']} tokens, this tokenizer "
                            f"gives {n_tok}; the data was formatted with another tokenizer (rerun 03_format)")
        if n_tok > max_length:
            raise DataError(f"{where}: row {rid!r}: {n_tok} tokens > max_length {max_length} "
                            f"(03_format excludes such rows; use the same max_length)")
        out.append({"input_ids": tokens["input_ids"], "completion_mask": tokens["completion_mask"]})
    return out


# ---- model building ---------------------------------------------------------------------------
def linear_module_names(model: Any) -> list[str]:
    """Leaf names of every linear layer except the output head: what PEFT's 'all-linear' means,
    spelled out so both backends write the same adapter_config (bnb 4-bit layers are nn.Linear too)."""
    import torch
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not name.endswith("lm_head"):
            names.add(name.rsplit(".", 1)[-1])
    if not names:
        raise RuntimeError(f"{type(model).__name__}: no linear layers found for LoRA")
    return sorted(names)


def resolve_target_modules(cfg: FinetuneConfig, model: Any) -> list[str] | str:
    """The LoRA targets: `all-linear` spelled out (linear_module_names), else the profile's list."""
    targets = cfg.lora.get("target_modules", ALL_LINEAR)
    if targets == ALL_LINEAR:
        return linear_module_names(model)
    return targets if isinstance(targets, str) else list(targets)   # a string is PEFT's regex


def lora_kwargs(cfg: FinetuneConfig, model: Any) -> dict[str, Any]:
    """The profile's LoraConfig arguments with the targets resolved on this model (both backends)."""
    return {"bias": "none", **cfg.lora, "target_modules": resolve_target_modules(cfg, model)}


def train_dtype(device: str) -> Any:
    """float32 on CPU; on a GPU the load plan's dtype: bfloat16 from compute capability 8, else
    float16 (a T4; torch's is_bf16_supported() also says yes there, through slow emulation)."""
    import torch

    from . import models
    if not device.startswith("cuda"):
        return torch.float32
    return getattr(torch, models.compute_dtype(models.detect_device()))


def hf_plan(spec: Any) -> Any:
    """How the hf backend loads the base on this machine (helpers.models.load_plan): CPU float32;
    CUDA bf16/fp16, the paper models in bitsandbytes 4-bit (QLoRA)."""
    from . import models
    return models.load_plan(spec.key, models.detect_device())


def build_hf(spec: Any, cfg: FinetuneConfig, device: str) -> tuple[Any, Any]:
    """Base model (registry loader) + PEFT LoRA with the config's r/alpha/dropout/targets."""
    import transformers
    from peft import LoraConfig, get_peft_model

    from . import models

    tokenizer = models.load_tokenizer(spec.key)
    plan = hf_plan(spec)
    model = models.load_planned(plan)
    checkpointing = bool(cfg.sft.get("gradient_checkpointing", False))
    if plan.quantization:                     # QLoRA: norms in float32, inputs that carry gradients
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(**lora_kwargs(cfg, model), task_type="CAUSAL_LM")
    # Seed right before the LoRA init: building the model cache on first use draws random numbers
    # (weights are initialised, then overwritten), which would otherwise change the adapter's start.
    transformers.set_seed(cfg.seed)
    return get_peft_model(model, lora), tokenizer


def build_unsloth(spec: Any, cfg: FinetuneConfig) -> tuple[Any, Any]:
    """Unsloth's 4-bit model (spec.unsloth_id; an offline model's plain copy when asked for) + its LoRA,
    with the same r/alpha/dropout/targets."""
    _import_unsloth()
    from unsloth import FastLanguageModel

    from . import models

    source = spec.unsloth_id or str(models.plain_copy(spec.key))   # offline models: quantized on load
    with models.hub_errors(spec.key, source):
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=source, max_seq_length=cfg.max_length, dtype=None, load_in_4bit=True)
    tokenizer = models.set_padding_side(models.prepare_tokenizer(tokenizer, spec), "training")
    model = FastLanguageModel.get_peft_model(
        model, **lora_kwargs(cfg, model), use_gradient_checkpointing="unsloth", random_state=cfg.seed,
        max_seq_length=cfg.max_length)
    return model, tokenizer


def sft_config(cfg: FinetuneConfig, output_dir: Path, has_eval: bool, device: str,
               resuming: bool, unsloth: bool = False) -> Any:
    """TRL SFTConfig: the profile's `sft` arguments as written, plus what the study fixes (seeds,
    step-wise logging/saving/eval, answer-only loss on pre-tokenized rows, the device's dtype).
    completion_only_loss=True is explicit: TRL infers it only for prompt/completion text columns.
    Unsloth keeps its own gradient checkpointing."""
    import torch
    from trl import SFTConfig

    on_gpu = device.startswith("cuda")
    dtype = train_dtype(device)
    kwargs = dict(cfg.sft)
    kwargs.setdefault("per_device_eval_batch_size", cfg.batch_size)
    if not has_eval:
        kwargs["eval_steps"] = None
    if unsloth:
        kwargs.pop("gradient_checkpointing", None)
    return SFTConfig(
        output_dir=str(output_dir), logging_strategy="steps", save_strategy="steps",
        eval_strategy="steps" if has_eval else "no", eval_on_start=has_eval and not resuming,
        seed=cfg.seed, data_seed=cfg.seed, report_to="none", completion_only_loss=True, packing=False,
        train_sampling_strategy=train_speed.hf_sampling_strategy(cfg.train_sampling_strategy),
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, use_cpu=not on_gpu,
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16, **kwargs)


def check_labels(trainer: Any, tokenized: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    """Guard against a silent change of TRL's masking: the prepared labels must keep exactly the
    completion tokens of the first rows. Returns the share of supervised tokens."""
    ds = trainer.train_dataset
    if "labels" not in ds.column_names:
        raise RuntimeError(f"SFTTrainer prepared no labels (columns {ds.column_names}); "
                           "completion-only loss would not apply")
    for i in range(min(4, len(ds))):
        labels = ds[i]["labels"]
        want = [t if m else -100 for t, m in zip(tokenized[i]["input_ids"], tokenized[i]["completion_mask"])]
        if list(labels) != want:
            raise RuntimeError(f"SFTTrainer labels of row {i} do not equal the completion mask: TRL's "
                               "handling of completion_mask changed; training would not be answer-only")
    total = sum(len(r["input_ids"]) for r in tokenized)
    supervised = sum(sum(r["completion_mask"]) for r in tokenized)
    return {"supervised_tokens": supervised, "total_tokens": total,
            "supervised_share": round(supervised / total, 4) if total else 0.0}


# ---- callbacks --------------------------------------------------------------------------------
class TrainingInterrupted(RuntimeError):
    """Raised by `interrupt_after_checkpoint` to simulate a run killed after a checkpoint."""


def interrupt_after_checkpoint(n_saves: int = 1) -> Any:
    """A TrainerCallback that stops training (raises TrainingInterrupted) right after the n-th
    checkpoint is on disk, as a kill at that moment would: used to test resuming."""
    from transformers import TrainerCallback

    class _Interrupt(TrainerCallback):
        def __init__(self) -> None:
            self.saves = 0

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.saves += 1
            if self.saves >= n_saves:
                raise TrainingInterrupted(f"interrupted after checkpoint at step {state.global_step}")
            return control

    return _Interrupt()


def progress_lines(every: int | None = None, printer: Any = print) -> Any:
    """A TrainerCallback printing one plain line per ~5% of the steps (step, loss, elapsed, ETA):
    papermill forwards plain prints to the ./run_all.sh terminal; the notebook's HTML bar it does not."""
    from transformers import TrainerCallback

    class _Lines(TrainerCallback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.first_step = 0
            self.loss: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.t0, self.first_step = time.time(), state.global_step
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            step, total = state.global_step, state.max_steps
            n = every or max(1, total // 20)
            if self.t0 is None or (step % n and step != total):
                return control
            done = step - self.first_step
            elapsed = time.time() - self.t0
            eta = elapsed / done * (total - step) if done else float("nan")
            loss = f"{self.loss:.4f}" if self.loss is not None else "-"
            printer(f"train step {step}/{total}  loss {loss}  {elapsed:.0f} s elapsed, ~{eta:.0f} s left",
                    flush=True)
            return control

    return _Lines()


# ---- publishing -------------------------------------------------------------------------------
def publish_adapter(model: Any, out_dir: Path, spec: Any) -> list[Path]:
    """Save the PEFT adapter into a temp folder beside the outputs, point its base model at the
    registry's hub id (not a machine path or the 4-bit repo), then publish its files as one unit
    (helpers.io.publish_files): a finished adapter is only ever replaced by another finished one,
    and an interrupted publish is completed, never left half old, half new."""
    out_dir.mkdir(parents=True, exist_ok=True)
    finish_publish(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", suffix=TMP_SUFFIX, dir=out_dir))
    try:
        model.save_pretrained(str(tmp))
        for name in PUBLISHED_ADAPTER_FILES:
            if not (tmp / name).exists():
                raise RuntimeError(f"save_pretrained wrote no {name} (got {sorted(os.listdir(tmp))})")
        config = read_json(tmp / "adapter_config.json")
        config["base_model_name_or_path"] = spec.hub_id
        if isinstance(config.get("target_modules"), list):   # PEFT keeps a set: order varies per process
            config["target_modules"] = sorted(config["target_modules"])
        write_json(tmp / "adapter_config.json", config)
        names = ("adapter_model.safetensors", "adapter_config.json")
        return publish_files(tmp, out_dir, names)
    finally:
        if tmp.exists() and not (tmp / PUBLISH_MARKER).exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- the run ----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a finished training run produced."""
    config: FinetuneConfig
    backend: str
    backend_reason: str
    stats: dict[str, Any]
    loss: list[dict[str, Any]]
    files: dict[str, Path]
    started: float
    inputs: list[Path] = field(default_factory=list)

    @property
    def outputs(self) -> list[Path]:
        return [self.files[k] for k in ("adapter_config", "adapter_model", "trainer_stats", "loss_csv", "loss_png")]


def _device() -> str:
    import torch
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def _base_stats(backend: str, spec: Any, device: str) -> dict[str, Any]:
    """The trained base for trainer_stats.json: which weights, and 4-bit or the float dtype."""
    if backend == "unsloth":
        return {"base_model": spec.unsloth_id or f"{spec.hub_id} (plain copy)", "quantization": "bnb-4bit"}
    plan = hf_plan(spec)
    if plan.quantization:
        return {"base_model": plan.weights, "quantization": plan.quantization}
    return {"base_model": spec.hub_id, "quantization": str(train_dtype(device)).replace("torch.", "")}


def _tokens_at(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    return int(read_json(checkpoint / "trainer_state.json").get("num_input_tokens_seen", 0))


def _checkpoint_to_resume(cfg: FinetuneConfig, ckpt_dir: Path) -> Path | None:
    """The checkpoint to resume from (cfg.resume), else None after clearing an earlier run's ones."""
    resume_from = last_complete_checkpoint(ckpt_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        log.warning("resume=True but no complete checkpoint under %s; training from the start",
                    paths.rel(ckpt_dir))
    if resume_from is None and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)                  # checkpoints of an earlier, different run
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    return resume_from


def _make_trainer(cfg: FinetuneConfig, model: Any, tokenizer: Any, data: tuple[list, list], backend: str,
                  device: str, resume_from: Path | None, callbacks: Sequence[Any], progress: bool) -> Any:
    """TRL's SFTTrainer (or the length-bucket subclass) on the tokenized rows."""
    from datasets import Dataset
    from trl import SFTTrainer

    train_tok, val_tok = data
    ckpt_dir = output_files(cfg.run, cfg.model)["checkpoints"]
    args = sft_config(cfg, ckpt_dir, bool(val_tok), device, resuming=resume_from is not None,
                      unsloth=backend == "unsloth")
    args.disable_tqdm = not progress
    trainer_cls = train_speed.trainer_class(SFTTrainer, cfg.train_sampling_strategy)
    trainer = trainer_cls(model=model, args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list(train_tok),
                          eval_dataset=Dataset.from_list(val_tok) if val_tok else None,
                          callbacks=list(callbacks) + ([progress_lines()] if progress else []))
    if not progress:                              # no per-step log lines either
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)
    return trainer


def _fit(trainer: Any, cfg: FinetuneConfig, backend: str, device: str, resume_from: Path | None,
         has_val: bool) -> tuple[float, dict[str, Any]]:
    """Train (timed, with peak memory sampled), then the final val loss at the last step."""
    on_cuda = device.startswith("cuda")
    sampler = memory.RssSampler()
    mem_start = memory.cuda_reset_peak() if on_cuda else None
    head_at_labels = cfg.lm_head_at_labels and backend == "hf"
    with sampler, train_speed.head_at_labels(head_at_labels):
        t0 = time.time()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        runtime = time.time() - t0
    mem = memory.cuda_peak(mem_start) if on_cuda else memory.cpu_figures(sampler)
    mem["peak_rss_process_gb"] = round(max(memory.peak_rss_bytes(), sampler.peak_bytes) / memory.GB, 3)
    state = trainer.state
    last_eval = max((e["step"] for e in state.log_history if "eval_loss" in e), default=None)
    if has_val and last_eval != state.global_step:
        with train_speed.head_at_labels(head_at_labels):
            trainer.evaluate()                   # the final val loss, logged at the last step
    return runtime, mem


def _session_figures(cfg: FinetuneConfig, state: Any, n_train: int, resume_from: Path | None,
                     runtime: float) -> dict[str, Any]:
    """Steps, examples and tokens of this session (a resumed run counts only its own) and rates."""
    start_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
    steps_now = state.global_step - start_step
    world = int(os.environ.get("WORLD_SIZE", 1))     # data-parallel processes (accelerate launch)
    global_batch = cfg.batch_size * world
    examples_now = (examples_after(state.global_step, n_train, global_batch, cfg.grad_accum)
                    - examples_after(start_step, n_train, global_batch, cfg.grad_accum))
    tokens_now = int(state.num_input_tokens_seen) - _tokens_at(resume_from)
    return {"world_size": world, "resumed_from_step": start_step if resume_from else None,
            "steps_this_session": steps_now, "train_runtime_s": round(runtime, 2),
            "examples_this_session": examples_now, "tokens_this_session": tokens_now,
            "examples_per_s": round(examples_now / runtime, 4) if runtime > 0 else None,
            "tokens_per_s": round(tokens_now / runtime, 2) if runtime > 0 else None,
            "s_per_step": round(runtime / steps_now, 4) if steps_now else None}


def _stats(cfg: FinetuneConfig, backend: tuple[str, str], spec: Any, device: str, trainer: Any,
           tokens: list[dict[str, list[int]]], n_val: int, session: dict[str, Any], mem: dict[str, Any],
           supervision: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """trainer_stats.json: what was trained where, how fast, with which losses and memory."""
    import torch

    state, model = trainer.state, trainer.model
    train_losses = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    val_losses = [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    session = dict(session)
    world, resumed = session.pop("world_size"), session.pop("resumed_from_step")
    return {
        "model": cfg.model, "run": cfg.run, "backend": backend[0], "backend_reason": backend[1],
        "device": mem.get("gpu_name", "cpu") if device.startswith("cuda") else "cpu",
        "world_size": world, "torch_threads": torch.get_num_threads(),
        **_base_stats(backend[0], spec, device),
        "n_train": len(tokens), "n_val": n_val,
        "steps": int(state.global_step), "max_steps": int(state.max_steps),
        "epochs": round(float(state.epoch or 0), 4),
        "resumed_from_step": resumed, **session,
        "mean_tokens_per_example": round(sum(len(r["input_ids"]) for r in tokens) / len(tokens), 1),
        **supervision,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "mean_train_loss": round(sum(train_losses) / len(train_losses), 6) if train_losses else None,
        "base_val_loss": val_losses[0][1] if val_losses and val_losses[0][0] == 0 else None,
        "final_val_loss": val_losses[-1][1] if val_losses else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "memory": mem,
        "hf_metrics": next(({k: v for k, v in e.items() if isinstance(v, (int, float))}
                            for e in reversed(state.log_history) if "train_runtime" in e), {}),
        "config": cfg.to_params(),
    }


def train(cfg: FinetuneConfig, callbacks: Sequence[Any] = (), progress: bool = True) -> TrainResult:
    """Fine-tune one model: tokenize step 3's rows, train LoRA with checkpoints (resuming from the
    last complete one when cfg.resume), then publish adapter, stats, loss CSV/PNG atomically."""
    from . import models

    started = time.time()
    spec = models.get_spec(cfg.model)
    backend, reason = choose_backend(cfg.backend, spec)   # imports unsloth first on its path
    import transformers

    files = output_files(cfg.run, cfg.model)
    device = _device()
    transformers.set_seed(cfg.seed)
    train_rows, val_rows = load_training_rows(cfg.run, cfg.model)
    if backend == "unsloth":
        model, tokenizer = build_unsloth(spec, cfg)
    else:
        model, tokenizer = build_hf(spec, cfg, device)
    where = paths.rel(paths.formatted_dir(cfg.run, cfg.model))
    train_tok = tokenize_rows(tokenizer, spec, train_rows, cfg.max_length, f"{where}/train.jsonl")
    val_tok = tokenize_rows(tokenizer, spec, val_rows, cfg.max_length, f"{where}/val.jsonl")
    resume_from = _checkpoint_to_resume(cfg, files["checkpoints"])
    trainer = _make_trainer(cfg, model, tokenizer, (train_tok, val_tok), backend, device, resume_from,
                            callbacks, progress)
    supervision = check_labels(trainer, train_tok)
    runtime, mem = _fit(trainer, cfg, backend, device, resume_from, bool(val_tok))
    rows = loss_rows(trainer.state.log_history)
    session = _session_figures(cfg, trainer.state, len(train_tok), resume_from, runtime)
    stats = _stats(cfg, (backend, reason), spec, device, trainer, train_tok, len(val_tok), session, mem,
                   supervision, rows)
    if trainer.is_world_process_zero():
        publish_adapter(trainer.model, paths.model_dir(cfg.run, cfg.model), spec)
        write_json(files["trainer_stats"], stats)
        write_loss_csv(rows, files["loss_csv"])
        plot_loss(rows, files["loss_png"], title=f"{cfg.model} · {backend} · run {cfg.run}")
    return TrainResult(cfg, backend, reason, stats, rows, files, started,
                       inputs=training_inputs(cfg.run, cfg.model))


def write_step_manifest(result: TrainResult, params: dict[str, Any] | None = None) -> Path:
    """The step's manifest beside the adapter: parameters, inputs, outputs, backend and figures."""
    from .manifest import write_manifest

    cfg = result.config
    target = paths.step_manifest(STEP, cfg.run, cfg.model)
    keep = ("backend", "device", "steps", "examples_per_s", "tokens_per_s", "final_train_loss",
            "final_val_loss", "base_val_loss", "train_runtime_s")
    return write_manifest(target, STEP, params if params is not None else cfg.to_params(),
                          inputs=result.inputs, outputs=result.outputs, started=result.started,
                          extra={k: result.stats.get(k) for k in keep})


# ---- command line (and `accelerate launch -m helpers.finetune`) -------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Train one model of a profile from the command line; `--set key=value` overrides the profile."""
    from .config import step_settings

    ap = argparse.ArgumentParser(prog="python -m helpers.finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--model", required=True)
    ap.add_argument("--backend", choices=BACKENDS)
    ap.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    overrides = parse_set(args.set)
    if args.backend:
        overrides["backend"] = args.backend
    if args.resume:
        overrides["resume"] = True
    cfg = FinetuneConfig.from_settings(step_settings(args.profile, STEP, args.model, overrides))
    result = train(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        write_step_manifest(result, cfg.to_params())
        print(json.dumps({k: result.stats[k] for k in ("backend", "device", "steps", "examples_per_s",
                                                       "tokens_per_s", "final_train_loss", "final_val_loss")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
