"""Interrupted writes never leave a mixed or half-written artifact, and their temp files are
cleaned: atomic files, the encoder folder, the adapter pair, figures."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import baselines_encoder as BE, dataset_card, finetune, infer, io, paths, pipeline


def _age(p: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(p, (old, old))


def test_a_killed_atomic_write_leaves_a_temp_file_that_the_sweep_removes(tmp_path):
    target = tmp_path / "data" / "big.jsonl"
    code = ("import os, sys; from helpers import io\n"
            "with io.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_text('x' * 1000)\n"
            "    os._exit(9)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False, timeout=60)
    [left] = list(target.parent.iterdir())
    assert left.name.startswith(".big.jsonl.") and left.name.endswith(".tmp") and not target.exists()
    assert io.sweep_stale_tmp([tmp_path]) == []          # young: may be a write in progress
    _age(left, 7 * 3600)
    assert io.sweep_stale_tmp([tmp_path]) == [left] and not left.exists()


def test_temp_names_are_unique_and_removed_on_failure(tmp_path):
    target = tmp_path / "a.json"
    with io.atomic_path(target) as t1, io.atomic_path(target) as t2:
        assert t1 != t2 and t1.parent == t2.parent == tmp_path
        t1.write_text("1")
        t2.write_text("2")
    assert target.read_text() in ("1", "2")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(target) as t3:
            t3.write_text("partial")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_run_all_sweeps_stale_temp_files_on_start(tmp_path, monkeypatch):
    root = tmp_path / "study"
    monkeypatch.setenv("AE_STUDY_ROOT", str(root))
    (root / "configs").mkdir(parents=True)
    for name in ("base.yaml", "smoke.yaml"):
        shutil.copy(Path(__file__).resolve().parents[1] / "configs" / name, root / "configs")
    stale = root / "artifacts" / "predictions" / "smoke" / "test" / ".x.jsonl.abc123.tmp"
    fresh = root / "data" / "synthetic" / "smoke" / ".train.jsonl.def456.tmp"
    for p in (stale, fresh):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"0" * 100)
    _age(stale, 24 * 3600)
    monkeypatch.setattr(pipeline, "_execute", lambda task, run: 0.0)
    monkeypatch.setattr(pipeline, "_report", lambda run: None)
    assert pipeline.run("smoke", ["smollm2-135m"]) == 0
    assert not stale.exists() and fresh.exists()


def test_a_write_of_a_lone_surrogate_does_not_raise(tmp_path):
    io.write_jsonl(tmp_path / "p.jsonl", [{"raw": "rash \ud83d"}])
    assert io.read_jsonl(tmp_path / "p.jsonl") == [{"raw": "rash \ufffd"}]


# ---- the encoder folder ---------------------------------------------------------------------------------
class FakeModel:
    def __init__(self, tag: str, fail: bool = False):
        self.tag, self.fail = tag, fail

    def save_pretrained(self, folder):
        (Path(folder) / "model.safetensors").write_text(self.tag)
        (Path(folder) / "config.json").write_text(json.dumps({"tag": self.tag}))
        if self.fail:
            raise OSError("disk full")


class FakeTokenizer:
    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer.json").write_text("{}")


STATS = {"epoch_log": [{"epoch": 1, "step": 2, "train_loss": 0.5, "val_loss": 0.4}]}
STEPS = [{"step": 1, "epoch": 1, "loss": 0.9, "lr": 1e-4}, {"step": 2, "epoch": 1, "loss": 0.5, "lr": 1e-4}]


def test_save_encoder_replaces_a_finished_encoder_only_with_a_finished_one(tmp_path, monkeypatch):
    out = tmp_path / "models" / "encoder"
    BE.save_encoder(FakeModel("first"), FakeTokenizer(), out, STATS, STEPS)
    files = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "config.json", BE.STATS_FILE, "loss_curve.csv", "loss_curve.png"} <= set(files)
    with pytest.raises(OSError):
        BE.save_encoder(FakeModel("second", fail=True), FakeTokenizer(), out, STATS, STEPS)
    assert (out / "model.safetensors").read_text() == "first"
    assert sorted(p.name for p in out.iterdir()) == files
    assert [p.name for p in out.parent.iterdir()] == ["encoder"]      # no temp folder left
    BE.save_encoder(FakeModel("third"), FakeTokenizer(), out, STATS, STEPS)
    assert (out / "model.safetensors").read_text() == "third"
    assert [p.name for p in out.parent.iterdir()] == ["encoder"]


# ---- the adapter pair -----------------------------------------------------------------------------------
class FakePeft:
    def __init__(self, tag: str):
        self.tag = tag

    def save_pretrained(self, folder):
        (Path(folder) / "adapter_model.safetensors").write_text(self.tag)
        (Path(folder) / "adapter_config.json").write_text(json.dumps({"tag": self.tag, "r": 4}))


def test_an_interrupted_adapter_publish_is_completed_never_mixed(tmp_path, monkeypatch):
    spec = SimpleNamespace(hub_id="org/base")
    root = tmp_path / "study"
    monkeypatch.setenv("AE_STUDY_ROOT", str(root))
    out = paths.model_dir("r", "m")
    finetune.publish_adapter(FakePeft("old"), out, spec)
    real_replace, calls = os.replace, []

    def dies_after_the_first_move(src, dst):
        if Path(dst).parent == out and Path(dst).name.startswith("adapter_"):
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt("power cut between the two files")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", dies_after_the_first_move)
    with pytest.raises(KeyboardInterrupt):
        finetune.publish_adapter(FakePeft("new"), out, spec)
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert (out / "adapter_model.safetensors").read_text() == "new"          # mixed on disk ...
    assert json.loads((out / "adapter_config.json").read_text())["tag"] == "old"
    # half published on disk; whoever reads the adapter next completes the publish first
    folder = infer.adapter_dir("r", "m")
    tags = {(folder / "adapter_model.safetensors").read_text(),
            json.loads((folder / "adapter_config.json").read_text())["tag"]}
    assert tags == {"new"}
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/base"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_failed_save_never_publishes(tmp_path):
    spec = SimpleNamespace(hub_id="org/base")
    finetune.publish_adapter(FakePeft("old"), tmp_path, spec)

    class Broken:
        def save_pretrained(self, folder):
            (Path(folder) / "adapter_model.safetensors").write_text("partial")
            raise OSError("disk full")

    with pytest.raises(OSError):
        finetune.publish_adapter(Broken(), tmp_path, spec)
    io.finish_publish(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


# ---- figures ----------------------------------------------------------------------------------------
def test_figures_are_written_through_a_temp_file(tmp_path, monkeypatch):
    """dataset_card.plot_dataset and the encoder's loss curve save to a temp file that then replaces
    the PNG; an interrupted save leaves the old PNG."""
    from matplotlib.figure import Figure

    saved_to: list[str] = []
    real = Figure.savefig

    def recording(self, fname, *a, **kw):
        saved_to.append(Path(fname).name)
        return real(self, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", recording)
    splits = {"train": [{"text": "a b", "drugs": ["X"], "adverse_events": ["b"], "meta": {"drug_names": ["X"]}}]}
    png = tmp_path / "card.png"
    dataset_card.plot_dataset(splits, png)
    BE.save_encoder(FakeModel("m"), FakeTokenizer(), tmp_path / "enc", STATS, STEPS)
    assert len(saved_to) == 2 and all(n.startswith(".") and n.endswith(".tmp") for n in saved_to)
    before = png.read_bytes()

    def interrupted(self, fname, *a, **kw):
        Path(fname).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dataset_card.plot_dataset(splits, png)
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.png", "enc"]
