"""The study's steps, listed once: notebook, per-model or per-run, profile section, manifest path.
The pipeline, the config loader, paths.step_manifest, the tests and the notebooks all read this."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import paths


def _tagged(name: str, tag: str | None) -> str:
    """`manifest-<name>[-<tag>].json`: a user test file's split tag keeps its runs apart."""
    return "-".join(x for x in ("manifest", name, tag) if x) + ".json"


@dataclass(frozen=True)
class Step:
    """One notebook of the study and where its manifest sits (beside its outputs)."""
    name: str
    notebook: str
    per_model: bool
    section: str
    manifest: Callable[[str, "str | None", "str | None"], Path]
    takes_test_file: bool = False

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("01_scrape", "01_scrape.ipynb", False, "scrape",
         lambda run, model, tag: paths.drugs_dir() / "manifest.json"),
    Step("02_synthesize", "02_synthesize.ipynb", False, "synthesize",
         lambda run, model, tag: paths.synthetic_dir(run) / "manifest.json"),
    Step("03_format", "03_format.ipynb", True, "format",
         lambda run, model, tag: paths.formatted_dir(run, model) / "manifest.json"),
    Step("04_finetune", "04_finetune.ipynb", True, "finetune",
         lambda run, model, tag: paths.model_dir(run, model) / "manifest.json"),
    Step("04b_baselines", "04b_baselines.ipynb", False, "baselines",
         lambda run, model, tag: paths.predictions_dir(run) / _tagged("baselines", tag), True),
    Step("05_infer", "05_infer.ipynb", True, "infer",
         lambda run, model, tag: paths.predictions_dir(run) / _tagged(model, tag), True),
    Step("06_evaluate", "06_evaluate.ipynb", False, "evaluate",
         lambda run, model, tag: paths.metrics_dir(run) / _tagged("", tag), True),
)}
ORDER = list(STEPS)


def get(name: str) -> Step:
    """The step called `name`; an unknown name is an error that lists the steps."""
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; steps: {', '.join(ORDER)}")
    return STEPS[name]
