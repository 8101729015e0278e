"""What ./run_all.sh runs: the numbered notebooks through papermill, in order, for every model of a
profile, skipping steps whose manifest says their outputs are up to date."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config, paths, steps
from .eval_sets import test_file_split
from .io import sweep_stale_tmp
from .manifest import stale_reason


@dataclass
class Task:
    """One notebook execution: a step, for one model or for the whole run. `parameters` is what
    papermill injects (profile, model, overrides); `settings` what they resolve to (the manifest's)."""
    step: str
    model: str | None
    parameters: dict[str, Any]
    settings: dict[str, Any]
    manifest: Path

    @property
    def label(self) -> str:
        return f"{self.step}" + (f" [{self.model}]" if self.model else "")

    @property
    def executed_name(self) -> str:
        tag = "-".join(x for x in (self.model, test_file_split(self.settings.get("test_file"))) if x)
        return f"{self.step}{'-' + tag if tag else ''}.ipynb"


def resolve_step(name: str) -> str:
    """Accept '4', '04', '04_finetune' or 'finetune' for a step name."""
    for step in steps.ORDER:
        if name in (step, step.split("_", 1)[0], step.split("_", 1)[1]) or \
                (name.isdigit() and step.startswith(f"{int(name):02d}_")):
            return step
    raise SystemExit(f"unknown step {name!r}; steps: {', '.join(steps.ORDER)}")


def profile_reference(profile: dict[str, Any]) -> str:
    """How a notebook names the profile: `smoke` for configs/smoke.yaml, else the file's path."""
    path = Path(profile["_path"])
    return path.stem if path.resolve() == config.profile_path(path.stem).resolve() else str(path.resolve())


def _overrides(step: steps.Step, profile: dict[str, Any], models: list[str],
               test_file: str | None) -> dict[str, Any]:
    """What the command line changes for one step: the test file, the chosen models."""
    out: dict[str, Any] = {}
    if test_file and step.takes_test_file:
        out["test_file"] = test_file
    if step.section == "evaluate" and models != list(profile["models"]):
        out["models"] = list(models)
    return out


def plan(profile: dict[str, Any], models: list[str], test_file: str | None) -> list[Task]:
    """The ordered notebook executions of a run: every step of helpers.steps in its order, a
    per-model step once per model."""
    run, ref = profile["run"], profile_reference(profile)
    tag = test_file_split(test_file)
    tasks: list[Task] = []
    for name in steps.ORDER:
        step = steps.get(name)
        for model in (models if step.per_model else [None]):
            overrides = _overrides(step, profile, models, test_file)
            parameters = {"profile": ref, **({"model": model} if model else {}), "overrides": overrides}
            settings = config.step_settings(profile, name, model, overrides)
            tasks.append(Task(name, model, parameters, settings, step.manifest(run, model, tag)))
    return tasks


def _execute(task: Task, run: str) -> float:
    """Run one notebook with papermill; on failure name the notebook and the failing cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src = paths.root() / "notebooks" / steps.get(task.step).notebook
    out = paths.runs_dir(run) / task.executed_name
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        pm.execute_notebook(str(src), str(out), parameters=task.parameters, cwd=str(src.parent),
                            kernel_name="python3", progress_bar=False, log_output=True)
    except PapermillExecutionError as e:
        first_line = (e.source or "").strip().splitlines()[:1]
        raise SystemExit(
            f"\nFAILED: notebooks/{src.name}{' for ' + task.model if task.model else ''}, "
            f"cell {e.cell_index} (execution count {e.exec_count}): {e.ename}: {e.evalue}\n"
            f"  cell starts: {first_line[0] if first_line else ''}\n"
            f"  executed notebook with the full traceback: {paths.rel(out)}") from None
    return time.time() - t0


def run(profile_name: str, models: list[str] | None = None, start: str | None = None,
        force: bool = False, test_file: str | None = None, dry_run: bool = False) -> int:
    """Execute the plan; return 0 on success. Prints progress, the metrics table and locations."""
    test_file = _prepare_test_file(test_file) if test_file else None
    profile = config.load_profile(profile_name)
    models = models or list(profile["models"])
    if not dry_run:
        for p in sweep_stale_tmp([paths.data_dir(), paths.artifacts_dir()]):
            print(f"removed a temp file an interrupted write left: {paths.rel(p)}", flush=True)
    tasks = plan(profile, models, test_file)
    first = steps.ORDER.index(resolve_step(start)) if start else 0
    runname = profile["run"]
    print(f"run {runname!r} (profile {paths.rel(Path(profile['_path']))}), models: "
          f"{', '.join(models)}{', test file: ' + test_file if test_file else ''}", flush=True)
    t_all = time.time()
    for i, task in enumerate(tasks, 1):
        head = f"[{i}/{len(tasks)}] {task.label:<34}"
        if steps.ORDER.index(task.step) < first:
            if not task.manifest.exists():
                raise SystemExit(f"{head} has never finished, so --from {start} cannot skip it "
                                 f"(no {paths.rel(task.manifest)})")
            print(f"{head} skipped (before --from)", flush=True)
            continue
        reason = "forced" if (force or (start and steps.ORDER.index(task.step) >= first)) else \
            stale_reason(task.manifest, task.settings)
        if reason is None:
            print(f"{head} up to date, skipped", flush=True)
            continue
        print(f"{head} running ({reason})", flush=True)
        if dry_run:
            continue
        secs = _execute(task, runname)
        print(f"{head} done in {secs:.0f} s", flush=True)
    if dry_run:
        print("\ndry run: nothing was executed (a rerun step whose outputs change makes the "
              "steps after it run too)")
        return 0
    print(f"\nall steps finished in {time.time() - t_all:.0f} s\n")
    _report(runname)
    return 0


def _prepare_test_file(test_file: str) -> str:
    """Check a user test file in seconds, before any step runs, and give it a split name of its
    own: every format (canonical JSONL, 2023-study JSON, a CADEC folder, an ADE `DRUG-AE.rel`) is
    validated and written as canonical JSONL to data/external/user-<name>.jsonl, which the
    notebooks read. Bad input exits with one line `file:line: what is wrong`."""
    import json

    from .corpora import load_test_file, split_name
    from .io import DataError, write_text_if_changed
    caller = os.environ.get("AE_CALLER_CWD")
    if caller and not Path(test_file).is_absolute() and (Path(caller) / test_file).exists():
        test_file = str(Path(caller) / test_file)
    try:
        reports = load_test_file(Path(test_file))
    except (DataError, OSError) as e:
        raise SystemExit(f"error: --test-file {' '.join(str(e).split())}") from None
    except Exception as e:  # noqa: BLE001 - a file we cannot read must still end in one line
        raise SystemExit(f"error: --test-file {test_file}: cannot be read "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    out = paths.data_dir() / "external" / f"{split_name(test_file)}.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in reports)
    if out.resolve() != Path(test_file).resolve():  # never rewrite the user's own file
        write_text_if_changed(out, text)
    print(f"test file {test_file}: {len(reports)} reports, scored as split "
          f"{out.stem!r} ({paths.rel(out)})", flush=True)
    return paths.rel(out)


def _report(run: str) -> None:
    """Print the metrics table and where everything is."""
    table = paths.metrics_dir(run) / "comparison.md"
    if table.exists():
        print(table.read_text(encoding="utf-8"))
    for what, where in (("metrics and plots", paths.metrics_dir(run)),
                        ("predictions", paths.predictions_dir(run)),
                        ("adapters and training stats", paths.artifacts_dir() / "models" / run),
                        ("executed notebooks", paths.runs_dir(run)),
                        ("synthetic data", paths.synthetic_dir(run))):
        print(f"{what:>28}: {paths.rel(where)}/")
    if table.exists():
        from .report import write_report  # the results page for people who do not open notebooks
        print(f"{'results page':>28}: {paths.rel(write_report(run))}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__)
    ap.add_argument("--profile", default="cpu", help="configs/NAME.yaml (default: cpu)")
    ap.add_argument("--models", help="comma-separated model keys (default: the profile's)")
    ap.add_argument("--from", dest="start", help="rerun from this step on (e.g. 04 or finetune)")
    ap.add_argument("--force", action="store_true", help="rerun every step")
    ap.add_argument("--test-file", help="also infer and evaluate on this file (canonical JSONL, "
                    "2023-study JSON, a CADEC folder or an ADE DRUG-AE.rel)")
    ap.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="    %(message)s")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        return run(args.profile, args.models.split(",") if args.models else None, args.start,
                   args.force, args.test_file, args.dry_run)
    except config.ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
