"""The step cache (`manifest.stale_reason`) never calls stale output fresh: folders read by glob,
inputs edited while the step runs, damaged manifests, files named by parameters, helper data
files (the teacher prompt) and package versions."""
from __future__ import annotations

import json
import os
import time

import pytest

from helpers import io, manifest, paths


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    return tmp_path


def _drugs(repo, names):
    folder = repo / "data" / "raw" / "drugs"
    for n in names:
        io.write_json(folder / f"{n}.json", {"name": n})
    return sorted(p for p in folder.glob("*.json") if p.name != "manifest.json")


def _finish(repo, inputs, started=None, params=None):
    out = repo / "data" / "synthetic" / "t" / "train.jsonl"
    io.write_text(out, "x\n")
    target = out.parent / "manifest.json"
    manifest.write_manifest(target, "02_synthesize", params or {"seed": 1}, inputs, [out],
                            started=started)
    return target


def test_a_new_file_in_a_folder_read_by_glob_makes_the_step_stale(repo):
    inputs = _drugs(repo, ["abilify", "lipitor"])
    out = _finish(repo, inputs)
    assert manifest.stale_reason(out) is None
    io.write_json(repo / "data" / "raw" / "drugs" / "zocor.json", {"name": "zocor"})
    assert manifest.stale_reason(out) == "new file zocor.json in data/raw/drugs/"
    (repo / "data" / "raw" / "drugs" / "zocor.json").unlink()
    assert manifest.stale_reason(out) is None
    # the step's own manifest and temp files in that folder are not inputs
    io.write_json(repo / "data" / "raw" / "drugs" / "manifest.json", {})
    (repo / "data" / "raw" / "drugs" / ".x.json.abc.tmp").write_text("")
    assert manifest.stale_reason(out) is None
    (repo / "data" / "raw" / "drugs" / "abilify.json").unlink()
    assert manifest.stale_reason(out) == "input missing: data/raw/drugs/abilify.json"


def test_a_folder_read_only_in_part_is_not_watched(repo):
    """A step reading train.jsonl of a folder that also holds test.jsonl did not glob it."""
    syn = repo / "data" / "in"
    io.write_text(syn / "train.jsonl", "a\n")
    io.write_text(syn / "test.jsonl", "b\n")
    out = _finish(repo, [syn / "train.jsonl"])
    io.write_text(syn / "handwritten.jsonl", "c\n")
    assert manifest.stale_reason(out) is None


def test_an_input_edited_while_the_step_runs_leaves_it_stale(repo):
    """The step read the input (through helpers.io) before it was edited: the manifest records
    what the step read, so the edit is noticed on the next run."""
    [drug] = _drugs(repo, ["abilify"])
    started = time.time()
    read_by_step = io.read_json(drug)
    assert read_by_step == {"name": "abilify"}
    drug.write_text(json.dumps({"name": "edited meanwhile"}))   # another process, mid-run
    out = _finish(repo, [drug], started=started)
    assert manifest.stale_reason(out) == "input changed: data/raw/drugs/abilify.json"


def test_an_input_another_process_touched_during_the_run_is_recorded_as_such(repo):
    """An input not read through helpers.io (e.g. model weights) but modified after the step
    started is recorded as changed while the step ran."""
    weights = repo / "artifacts" / "models" / "t" / "m" / "adapter_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"old")
    started = time.time()
    time.sleep(0.01)
    weights.write_bytes(b"new")
    os.utime(weights, (time.time(), time.time()))
    out = _finish(repo, [weights], started=started)
    assert manifest.stale_reason(out).startswith("input changed while the step ran")
    # a file the step wrote itself during the run is not a concurrent edit
    made = repo / "data" / "raw" / "pages" / "p.json"
    io.write_json(made, {"page": 1})
    out2 = _finish(repo, [made], started=started)
    assert manifest.stale_reason(out2) is None


@pytest.mark.parametrize("content,reason", [
    ("[]", "manifest damaged, rerun (a JSON list, not an object)"),
    ('"text"', "manifest damaged, rerun (a JSON str, not an object)"),
    ('{"step": "02_synthesize"}', "manifest damaged, rerun ('params' missing or not a dict)"),
    ('{"step": "02_synthesize", "params": {}, "inputs": [], "outputs": {}}',
     "manifest damaged, rerun ('inputs' missing or not a dict)"),
    ('{"step": "02_synthesize", "params": {"seed": 1}, "inputs": {"a": 1}, "outputs": {}, "code": {}}',
     "manifest damaged, rerun ('inputs' holds a hash that is not a string)"),
    ('{"step": "02_synthesize", "params": {"seed": 1}, "inputs": {}, "outputs": {}, "code": []}',
     "manifest damaged, rerun ('code' is not an object)"),
    ('{"step": "02_synthesize", "params": {"seed": 1}, "inputs": {}, "outputs": {}, "code": {},'
     ' "folders": {"x": {"files": 3}}}', "manifest damaged, rerun"),
    ('{"step": 3', "manifest unreadable, rerun"),
    ("\xff\xfe\x00garbage", "manifest unreadable, rerun"),
    ("", "manifest unreadable, rerun"),
])
def test_a_damaged_manifest_reruns_the_step_with_a_reason(repo, content, reason):
    out = _finish(repo, [])
    out.write_bytes(content.encode("latin-1"))
    got = manifest.stale_reason(out, {"seed": 1})
    assert got is not None and got.startswith(reason), got


def test_a_file_named_by_a_parameter_counts(repo):
    prompt = repo / "my_prompt.txt"
    prompt.write_text("Write $n reports about $drug.")
    params = {"seed": 1, "prompt_file": "my_prompt.txt"}
    out = _finish(repo, [], params=params)
    assert manifest.stale_reason(out, params) is None
    prompt.write_text("Write $n short reports about $drug.")
    assert manifest.stale_reason(out, params) == "file named by a parameter changed: my_prompt.txt"


def test_the_packaged_teacher_prompt_is_part_of_the_code(repo, monkeypatch):
    helpers = repo / "fake_helpers"
    helpers.mkdir()
    (helpers / "teacher.py").write_text('PROMPT = Path(__file__).with_name("teacher_prompt.txt")\n')
    (helpers / "teacher_prompt.txt").write_text("v1")
    monkeypatch.setattr(manifest, "_HELPERS", helpers)
    nb = {"cells": [{"cell_type": "code", "source": ["from helpers import teacher\n"]}]}
    (repo / "notebooks").mkdir()
    (repo / "notebooks" / "02_synthesize.ipynb").write_text(json.dumps(nb))
    assert "helpers/teacher_prompt.txt" in manifest.code_fingerprint("02_synthesize")
    out = _finish(repo, [])
    assert manifest.stale_reason(out) is None
    (helpers / "teacher_prompt.txt").write_text("v2")
    assert manifest.stale_reason(out) == "code changed: helpers/teacher_prompt.txt"


def test_package_versions_are_part_of_staleness(repo, monkeypatch):
    out = _finish(repo, [])
    assert manifest.stale_reason(out) is None
    real = manifest.package_versions()
    monkeypatch.setattr(manifest, "package_versions", lambda: {**real, "torch": "9.9.9"})
    reason = manifest.stale_reason(out)
    assert reason.startswith("package version changed: torch") and reason.endswith("-> 9.9.9")


def test_the_git_commit_alone_does_not_make_a_step_stale(repo):
    out = _finish(repo, [])
    m = json.loads(out.read_text())
    m["versions"]["git_commit"] = "0000000"
    out.write_text(json.dumps(m))
    assert manifest.stale_reason(out) is None


def test_an_output_folder_read_then_replaced_by_the_step_is_fresh(repo, monkeypatch):
    """04b reads the encoder's old training_stats.json (can it be reused?), then trains and replaces the
    whole folder (io.atomic_dir): the manifest records the new file, so the step is not stale after."""
    folder = repo / "artifacts" / "models" / "t" / "encoder"
    io.write_json(folder / "training_stats.json", {"epochs": 1})
    monkeypatch.setattr(io, "_WRITES", set())            # a later process: the old file is not its own
    started = time.time()
    assert io.read_json(folder / "training_stats.json") == {"epochs": 1}
    with io.atomic_dir(folder) as tmp:
        io.write_json(tmp / "training_stats.json", {"epochs": 3})
    out = repo / "artifacts" / "predictions" / "t" / "manifest-baselines.json"
    manifest.write_manifest(out, "04b_baselines", {"seed": 1}, [], [folder / "training_stats.json"],
                            started=started)
    assert manifest.stale_reason(out) is None
