"""run_all.sh's planner: order, skipping of up-to-date steps, and what a deleted artifact reruns."""
from __future__ import annotations

import shutil

import pytest

from helpers import config, io, manifest, paths, pipeline


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    real = paths.root()
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    (tmp_path / "configs").mkdir()
    for name in ("base.yaml", "smoke.yaml"):
        shutil.copy(real / "configs" / name, tmp_path / "configs" / name)
    return tmp_path


def _finish_all(profile, models):
    """Pretend every step ran: each writes one output file, chained to the previous step's output."""
    prev = None
    for task in pipeline.plan(profile, models, None):
        out = task.manifest.parent / f"out-{task.executed_name}.txt"
        io.write_text(out, task.label)
        manifest.write_manifest(task.manifest, task.step, task.settings,
                                [prev] if prev else [], [out])
        prev = out
    return prev


def test_plan_runs_per_model_steps_for_every_model_in_order():
    prof = config.load_profile("smoke")
    labels = [t.label for t in pipeline.plan(prof, ["a", "b"], None)]
    assert labels[:2] == ["01_scrape", "02_synthesize"]
    assert labels.index("03_format [a]") < labels.index("04_finetune [a]") < labels.index("05_infer [a]")
    assert labels.index("04_finetune [b]") < labels.index("05_infer [a]")
    assert labels[-1] == "06_evaluate"


def test_test_file_tags_inference_and_evaluation_manifests():
    prof = config.load_profile("smoke")
    tasks = {t.label: t for t in pipeline.plan(prof, ["a"], "data/external/cadec.jsonl")}
    assert tasks["05_infer [a]"].settings["test_file"] == "data/external/cadec.jsonl"
    assert tasks["05_infer [a]"].parameters == {"profile": "smoke", "model": "a",
                                                "overrides": {"test_file": "data/external/cadec.jsonl"}}
    assert tasks["04b_baselines"].manifest.name == "manifest-baselines-cadec.json"
    assert tasks["05_infer [a]"].manifest.name == "manifest-a-cadec.json"
    assert tasks["02_synthesize"].manifest.name == "manifest.json"


def test_resolve_step_accepts_number_and_name():
    assert pipeline.resolve_step("4") == "04_finetune"
    assert pipeline.resolve_step("04") == "04_finetune"
    assert pipeline.resolve_step("evaluate") == "06_evaluate"
    with pytest.raises(SystemExit):
        pipeline.resolve_step("99")


def test_second_run_skips_everything_and_deleting_an_artifact_reruns_only_its_dependents(repo, capsys):
    prof = config.load_profile("smoke")
    _finish_all(prof, ["m"])
    pipeline.run("smoke", ["m"], dry_run=True)
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == len(pipeline.plan(prof, ["m"], None))
    # delete the formatted data of model m: steps 03 onwards rerun, 01 and 02 do not
    fmt = paths.formatted_dir("smoke", "m")
    next(fmt.glob("out-*.txt")).unlink()
    pipeline.run("smoke", ["m"], dry_run=True)
    lines = capsys.readouterr().out.splitlines()
    status = {l.split("]", 1)[1].strip().split("  ")[0].strip(): l for l in lines if l.startswith("[")}
    assert "up to date" in status["01_scrape"] and "up to date" in status["02_synthesize"]
    assert "output missing" in status["03_format [m]"]
    assert "input missing" in status["04_finetune [m]"]


def test_from_step_forces_later_steps_and_needs_earlier_ones_finished(repo, capsys):
    prof = config.load_profile("smoke")
    with pytest.raises(SystemExit, match="has never finished"):
        pipeline.run("smoke", ["m"], start="04", dry_run=True)
    _finish_all(prof, ["m"])
    pipeline.run("smoke", ["m"], start="05", dry_run=True)
    out = capsys.readouterr().out
    assert "05_infer [m]" in out and "running (forced)" in out
    assert "03_format [m]" in out and "skipped (before --from)" in out
