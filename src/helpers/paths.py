"""Every file location of the study, defined once."""
from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """The repository root: $AE_STUDY_ROOT if set, else the folder above src/."""
    env = os.environ.get("AE_STUDY_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return root() / "data"


def artifacts_dir() -> Path:
    return root() / "artifacts"


def configs_dir() -> Path:
    return root() / "configs"


# step 1: drug knowledge
def drugs_dir() -> Path:
    """Structured drug records, one `<drug>.json` each (shipped for the 50 study drugs)."""
    return data_dir() / "raw" / "drugs"


def pages_dir() -> Path:
    """Raw pages the scraper parses offline (`source=cache`), one folder per source."""
    return data_dir() / "raw" / "pages"


def http_cache_dir() -> Path:
    """On-disk cache of raw HTTP responses, so a rerun fetches nothing it already has."""
    return data_dir() / "raw" / "cache"


# step 2: synthetic reports
def synthetic_dir(run: str) -> Path:
    return data_dir() / "synthetic" / run


# the hand-written test sets (shipped, each scored as its own split): `handwritten` (the first set) and
# `handwritten_blind` (a second set written without sight of the generator or of any model output)
HANDWRITTEN_SPLIT = "handwritten"
HANDWRITTEN_FILES = {HANDWRITTEN_SPLIT: "reports.jsonl", "handwritten_blind": "blind.jsonl"}


def handwritten_file(split: str = HANDWRITTEN_SPLIT) -> Path:
    """Reports written by hand across genres, labelled with spans; never generated."""
    return data_dir() / "handwritten" / HANDWRITTEN_FILES[split]


def split_file(run: str, split: str) -> Path:
    """Where a test split's reports are: the hand-written set, else the run's synthetic split."""
    if split in HANDWRITTEN_FILES:
        return handwritten_file(split)
    return synthetic_dir(run) / f"{split}.jsonl"


# step 3: per-model chat data
def formatted_dir(run: str, model: str) -> Path:
    return data_dir() / "formatted" / run / model


# step 4: adapters and training stats
def model_dir(run: str, model: str) -> Path:
    return artifacts_dir() / "models" / run / model


# step 5: predictions, one file per (test split, system)
def predictions_dir(run: str) -> Path:
    return artifacts_dir() / "predictions" / run


def predictions_file(run: str, split: str, system: str) -> Path:
    return predictions_dir(run) / split / f"{system}.jsonl"


# step 6: tables and plots
def metrics_dir(run: str) -> Path:
    return artifacts_dir() / "metrics" / run


# executed notebooks of a run
def runs_dir(run: str) -> Path:
    return artifacts_dir() / "runs" / run


def model_cache_dir(model: str) -> Path:
    """Plain safetensors copies of offline (GGUF) models, made once and reused."""
    return artifacts_dir() / "cache" / "models" / model


def rel(path: Path) -> str:
    """A path relative to the repository root, for manifests and messages (no machine paths)."""
    try:
        return str(Path(path).resolve().relative_to(root()))
    except ValueError:
        return str(path)


def step_manifest(step: str, run: str, model: str | None = None, tag: str | None = None) -> Path:
    """Where each step's manifest sits (helpers.steps.STEPS); run_all.sh reads it to skip finished
    work. `tag` (a user test file's split name) keeps inference on an extra test set apart."""
    from .steps import get
    return get(step).manifest(run, model, tag)
