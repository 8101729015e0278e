"""Step 4's recipe: the profile's `finetune:` settings as a checked FinetuneConfig. The `sft:` and
`lora:` keys are TRL SFTConfig / PEFT LoraConfig arguments, passed through as written and checked by
building the real objects; the study's own four keys are checked here."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import train_speed
from .config import ConfigError

BACKENDS = ("auto", "hf", "unsloth")
ALL_LINEAR = "all-linear"


# ranges TRL and PEFT accept but training cannot use: (section, key) -> (lowest, below, integer)
LIMITS = {("lora", "r"): (1, None, True), ("lora", "lora_dropout"): (0, 1, False),
          ("sft", "per_device_train_batch_size"): (1, None, True),
          ("sft", "gradient_accumulation_steps"): (1, None, True), ("sft", "save_steps"): (1, None, False),
          ("sft", "eval_steps"): (1, None, False), ("sft", "logging_steps"): (1, None, False),
          ("sft", "max_length"): (16, None, True), ("sft", "warmup_steps"): (0, None, False)}


def _check_limits(section: str, kwargs: dict[str, Any], where: str) -> None:
    """Raise ConfigError for a value outside LIMITS, naming `<where>.<section>.<key>`."""
    for (sec, key), (low, below, integer) in LIMITS.items():
        if sec != section or key not in kwargs:
            continue
        value = kwargs[key]
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}.{sec}.{key} = {value!r}: must be an integer")
        if value < low or (below is not None and value >= below):
            span = f"in [{low}, {below})" if below is not None else f">= {low}"
            raise ConfigError(f"{where}.{sec}.{key} = {value!r}: must be {span}")


@dataclass(frozen=True)
class FinetuneConfig:
    """One run's recipe: helpers.config.step_settings(profile, "04_finetune", model). `sft` and
    `lora` are TRL SFTConfig / PEFT LoraConfig keyword arguments, passed through as written."""
    run: str
    model: str
    seed: int
    backend: str = "auto"
    resume: bool = False
    lm_head_at_labels: bool = False           # helpers.train_speed: same loss, less head work
    train_sampling_strategy: str = "random"   # random | length_buckets | group_by_length | sequential
    sft: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: dict[str, Any], where: str = "finetune") -> "FinetuneConfig":
        """Build and check a config from the step's settings; unknown keys are an error."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(k for k in settings if k not in known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)} "
                              "(TRL and PEFT arguments go under sft: and lora:)")
        cfg = cls(**{k: copy.deepcopy(v) for k, v in settings.items()})
        cfg.check(where)
        return cfg

    def check(self, where: str = "finetune") -> None:
        """Raise ConfigError naming the first bad key: the study's own keys here, the TRL and PEFT
        ones by building the real SFTConfig and LoraConfig (their errors name the argument)."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"{where}.backend = {self.backend!r}: must be one of {', '.join(BACKENDS)}")
        if self.train_sampling_strategy not in train_speed.SAMPLING_STRATEGIES:
            raise ConfigError(f"{where}.train_sampling_strategy = {self.train_sampling_strategy!r}: must be "
                              f"one of {', '.join(train_speed.SAMPLING_STRATEGIES)}")
        from peft import LoraConfig
        from trl import SFTConfig
        if self.sft.get("max_steps", -1) <= 0 and self.sft.get("num_train_epochs", 3) <= 0:
            raise ConfigError(f"{where}.sft.num_train_epochs: must be > 0 when max_steps is -1")
        for name, build, kwargs in (("lora", LoraConfig, self.lora),
                                    ("sft", SFTConfig, {"output_dir": "unused", "use_cpu": True, **self.sft})):
            _check_limits(name, kwargs, where)
            try:
                build(**kwargs)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}.{name}: {e}") from None

    def to_params(self) -> dict[str, Any]:
        """The config as plain JSON-able settings (what the manifest and trainer_stats record)."""
        return dataclasses.asdict(self)

    @property
    def batch_size(self) -> int:
        return int(self.sft.get("per_device_train_batch_size", 8))

    @property
    def grad_accum(self) -> int:
        return int(self.sft.get("gradient_accumulation_steps", 1))

    @property
    def max_length(self) -> int:
        return int(self.sft.get("max_length", 1024))


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """`--set sft.max_steps=10 --set backend=hf` as nested overrides (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. sft.max_steps=10)")
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _scalar(yaml.safe_load(value))
    return out


def _scalar(value: Any) -> Any:
    """YAML reads `3e-4` as a string (no dot): take it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
