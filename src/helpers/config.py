"""Profiles (configs/<name>.yaml): the sizes and hyper-parameters of a run, one file each."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from . import paths

PER_MODEL_STEPS = ("03_format", "04_finetune", "05_infer")
# which profile section feeds which notebook
SECTION = {"01_scrape": "scrape", "02_synthesize": "synthesize", "03_format": "format",
           "04_finetune": "finetune", "05_infer": "infer", "06_evaluate": "evaluate"}


class ConfigError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


def profile_path(name: str) -> Path:
    return paths.configs_dir() / f"{name}.yaml"


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Load a profile by name (configs/NAME.yaml) or path and check its top-level keys."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profile_path(name_or_path)
    if not path.exists():
        known = sorted(p.stem for p in paths.configs_dir().glob("*.yaml"))
        raise ConfigError(f"profile {name_or_path!r} not found ({path}); known: {', '.join(known)}")
    with path.open(encoding="utf-8") as fh:
        prof = yaml.safe_load(fh) or {}
    for key in ("run", "seed", "models"):
        if key not in prof:
            raise ConfigError(f"{path}: missing top-level key {key!r}")
    for section in SECTION.values():
        if not isinstance(prof.get(section, {}), dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
    prof["_path"] = str(path)
    return prof


def step_params(profile: dict[str, Any], step: str, model: str | None = None) -> dict[str, Any]:
    """Parameters papermill passes to a notebook: run, seed, (model) and the step's section,
    with the profile's per-model overrides applied."""
    section = SECTION[step]
    params: dict[str, Any] = {"run": profile["run"], "seed": profile["seed"]}
    params.update(copy.deepcopy(profile.get(section, {})))
    if step in PER_MODEL_STEPS:
        if model is None:
            raise ConfigError(f"step {step} needs a model")
        params["model"] = model
        override = profile.get("model_overrides", {}).get(model, {}).get(section, {})
        params.update(copy.deepcopy(override))
    if step in ("05_infer", "06_evaluate") and profile.get("test_file"):
        params["test_file"] = profile["test_file"]
    if step == "06_evaluate":
        params["models"] = list(profile["models"])
    return params
