"""Profiles (configs/<name>.yaml): the single source of every setting of a run.

A profile `extends: base` (configs/base.yaml, the settings all profiles share) and writes only what
differs; the two are deep-merged once here. `step_settings` gives a notebook its step's settings:
run, seed, (model), the step's section with the profile's per-model overrides, then the caller's
overrides. Fine-tuning keys are TRL SFTConfig / PEFT LoraConfig argument names (helpers.finetune
passes them through)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .steps import STEPS, get as get_step

REQUIRED = ("run", "seed", "models")
OWN_KEYS = ("run", "models", "device", "model_overrides")   # a profile's own, never in the base
FREE = ("finetune.sft", "finetune.lora")   # TRL / PEFT arguments: any name they accept (checked there)


class ConfigError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


def profile_path(name: str) -> Path:
    return paths.configs_dir() / f"{name}.yaml"


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: mappings merge key by key, any other value replaces (a copy; inputs kept)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _unknown_keys(top: dict[str, Any], base: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys `top` writes that `base` does not know (a typo would otherwise be silently ignored)."""
    out = []
    for key, value in top.items():
        name = f"{prefix}{key}"
        if name in FREE:
            continue
        if key not in base:
            out.append(name)
        elif isinstance(value, dict) and isinstance(base[key], dict):
            out += _unknown_keys(value, base[key], f"{name}.")
    return out


def _check_against(prof: dict[str, Any], base: dict[str, Any], path: Path) -> None:
    """Every key a profile writes (and every per-model override) must be a key of what it extends."""
    own = {k: v for k, v in prof.items() if k not in OWN_KEYS}
    unknown = _unknown_keys(own, base)
    for model, sections in (prof.get("model_overrides") or {}).items():
        unknown += [f"model_overrides.{model}.{k}" for k in _unknown_keys(sections, base)]
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (not in what it extends)")


def _read_yaml(name_or_path: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """One profile file with what it `extends` merged under it (the parent named like a profile)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profile_path(name_or_path)
    if not path.exists():
        known = sorted(p.stem for p in paths.configs_dir().glob("*.yaml"))
        raise ConfigError(f"profile {name_or_path!r} not found ({path}); known: {', '.join(known)}")
    if str(path) in chain:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    with path.open(encoding="utf-8") as fh:
        prof = yaml.safe_load(fh) or {}
    parent = prof.pop("extends", None)
    if parent:
        base = _read_yaml(str(path.parent / f"{parent}.yaml"), chain + (str(path),))
        base.pop("_path")
        _check_against(prof, base, path)
        prof = deep_merge(base, prof)
    prof["_path"] = str(path)
    return prof


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Load a profile by name (configs/NAME.yaml) or path, merged over what it extends; check it."""
    prof = _read_yaml(name_or_path)
    for key in REQUIRED:
        if key not in prof:
            raise ConfigError(f"{prof['_path']}: missing top-level key {key!r}")
    for spec in STEPS.values():
        if not isinstance(prof.get(spec.section, {}), dict):
            raise ConfigError(f"{prof['_path']}: section {spec.section!r} must be a mapping")
    return prof


def _check_overrides(settings: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """An override must name a setting the step has (a typo is an error, not a silent no-op)."""
    for key, value in overrides.items():
        if key not in settings:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(settings)}")
        if isinstance(value, dict) and isinstance(settings[key], dict):
            _check_overrides(settings[key], value, f"{where}.{key}")


def step_settings(profile: str | dict[str, Any], step: str, model: str | None = None,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of one notebook execution, resolved from the profile in one place (the
    manifests record exactly this): run, seed, model, the step's section, the profile's per-model
    overrides, max_length and test_file where the step reads them, then `overrides`."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    spec = get_step(step)
    settings: dict[str, Any] = {"run": prof["run"], "seed": prof["seed"]}
    if spec.per_model:
        if model is None:
            raise ConfigError(f"step {step} needs a model")
        settings["model"] = model
    settings = deep_merge(settings, prof.get(spec.section, {}))
    if spec.per_model:
        per_model = prof.get("model_overrides", {}).get(model, {}).get(spec.section, {})
        settings = deep_merge(settings, per_model)
    if spec.section == "format":
        settings["max_length"] = prof.get("max_length")
    if spec.section == "finetune":
        settings.setdefault("sft", {})["max_length"] = prof.get("max_length")
    if spec.takes_test_file:
        settings["test_file"] = prof.get("test_file")
    if spec.section == "evaluate":
        settings["models"] = list(prof["models"])
    if overrides:
        _check_overrides(settings, overrides, f"{prof['_path']}: {step} override")
        settings = deep_merge(settings, overrides)
    return settings
