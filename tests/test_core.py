"""The shared contracts: atomic I/O, manifests and staleness, profiles, record schemas."""
from __future__ import annotations

import json

import pytest

from helpers import config, io, manifest, paths, schemas, steps


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    """A scratch repository root, so tests never touch the real data/ and artifacts/."""
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    (tmp_path / "configs").mkdir()
    return tmp_path


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "out.jsonl"
    io.write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert io.read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(io.DataError, match=r"bad\.jsonl:2: invalid JSON"):
        io.read_jsonl(f)
    f.write_text('[1, 2]\n')
    with pytest.raises(io.DataError, match=r"bad\.jsonl:1: expected a JSON object"):
        io.read_jsonl(f)


def test_manifest_detects_changed_inputs_params_and_missing_outputs(repo):
    inp, out = repo / "in.txt", repo / "out" / "o.txt"
    inp.write_text("x")
    io.write_text(out, "y")
    params = {"run": "t", "seed": 1, "n": 3}
    manifest.write_manifest(out.parent / "manifest.json", "02_synthesize", params, [inp], [out])
    m = manifest.read_manifest(out.parent / "manifest.json")
    assert m["seed"] == 1 and m["inputs"] == {"in.txt": io.sha256_file(inp)}
    assert "python" in m["versions"]
    assert manifest.stale_reason(out.parent / "manifest.json", params) is None
    assert manifest.stale_reason(out.parent / "manifest.json", {**params, "n": 4}) == "parameters changed: n"
    inp.write_text("changed")
    assert manifest.stale_reason(out.parent / "manifest.json", params) == "input changed: in.txt"
    inp.write_text("x")
    out.unlink()
    assert manifest.stale_reason(out.parent / "manifest.json", params) == "output missing: out/o.txt"
    assert manifest.stale_reason(repo / "nowhere" / "manifest.json", params).startswith("no manifest")


def test_manifest_goes_stale_when_the_code_that_made_it_changes(repo, monkeypatch):
    """The step's notebook code and the helper modules it imports (transitively) are fingerprinted;
    editing one makes the step stale, editing an unrelated module or a notebook's outputs does not."""
    helpers = repo / "fake_helpers"
    helpers.mkdir()
    (helpers / "gen.py").write_text("from .util import f\nfrom . import (\n    words,\n)\n")
    (helpers / "util.py").write_text("def f(): return 1\n")
    (helpers / "words.py").write_text("W = ['a']\n")
    (helpers / "unrelated.py").write_text("X = 1\n")
    monkeypatch.setattr(manifest, "_HELPERS", helpers)
    nb = {"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "from helpers import gen\n"],
                     "outputs": []}]}
    (repo / "notebooks").mkdir()
    (repo / "notebooks" / "02_synthesize.ipynb").write_text(json.dumps(nb))
    assert list(manifest.code_fingerprint("02_synthesize")) == [
        "helpers/gen.py", "helpers/util.py", "helpers/words.py", "notebooks/02_synthesize.ipynb"]

    out = repo / "out" / "o.txt"
    io.write_text(out, "y")
    manifest.write_manifest(out.parent / "manifest.json", "02_synthesize", {"seed": 1}, [], [out])
    assert manifest.stale_reason(out.parent / "manifest.json") is None
    (helpers / "unrelated.py").write_text("X = 2\n")
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "text": "new output"}]
    (repo / "notebooks" / "02_synthesize.ipynb").write_text(json.dumps(nb))
    assert manifest.stale_reason(out.parent / "manifest.json") is None
    (helpers / "words.py").write_text("W = ['a', 'b']\n")
    assert manifest.stale_reason(out.parent / "manifest.json") == "code changed: helpers/words.py"
    manifest.write_manifest(out.parent / "manifest.json", "02_synthesize", {"seed": 1}, [], [out])
    nb["cells"][0]["source"].append("gen.run(n=2)\n")
    (repo / "notebooks" / "02_synthesize.ipynb").write_text(json.dumps(nb))
    assert manifest.stale_reason(out.parent / "manifest.json") == "code changed: notebooks/02_synthesize.ipynb"


def test_step_settings_merge_base_profile_model_overrides_and_caller_overrides(repo):
    (repo / "configs" / "base.yaml").write_text(
        "seed: 7\nmax_length: 256\ntest_file: null\n"
        "finetune: {backend: auto, lora: {r: 16}, sft: {per_device_train_batch_size: 4, max_steps: 5}}\n"
        "infer: {limit: 0}\n")
    (repo / "configs" / "p.yaml").write_text(
        "extends: base\nrun: p\nmodels: [a, b]\nfinetune: {lora: {r: 8}}\n"
        "model_overrides: {b: {finetune: {sft: {per_device_train_batch_size: 2}}}}\n")
    prof = config.load_profile("p")
    assert config.step_settings(prof, "04_finetune", "a") == \
        {"run": "p", "seed": 7, "model": "a", "backend": "auto", "lora": {"r": 8},
         "sft": {"per_device_train_batch_size": 4, "max_steps": 5, "max_length": 256}}
    b = config.step_settings("p", "04_finetune", "b", {"sft": {"max_steps": 9}})
    assert b["sft"] == {"per_device_train_batch_size": 2, "max_steps": 9, "max_length": 256}
    assert config.step_settings(prof, "06_evaluate")["models"] == ["a", "b"]
    assert config.step_settings(prof, "05_infer", "a", {"test_file": "x.jsonl"})["test_file"] == "x.jsonl"
    with pytest.raises(config.ConfigError, match="needs a model"):
        config.step_settings(prof, "03_format")
    with pytest.raises(config.ConfigError, match=r"p\.yaml: 05_infer override: unknown setting 'limt'"):
        config.step_settings(prof, "05_infer", "a", {"limt": 3})


def test_a_profile_key_the_base_lacks_is_an_error_naming_file_and_key(repo):
    (repo / "configs" / "base.yaml").write_text("seed: 1\ninfer: {limit: 0}\nfinetune: {sft: {}}\n")
    (repo / "configs" / "typo.yaml").write_text("extends: base\nrun: t\nmodels: [a]\ninfer: {limt: 3}\n")
    with pytest.raises(config.ConfigError, match=r"typo\.yaml: unknown key\(s\) infer\.limt"):
        config.load_profile("typo")
    (repo / "configs" / "ok.yaml").write_text(
        "extends: base\nrun: t\nmodels: [a]\nfinetune: {sft: {adam_beta1: 0.8}}\n")
    assert config.load_profile("ok")["finetune"]["sft"] == {"adam_beta1": 0.8}   # TRL checks these


def test_profile_errors_name_the_file(repo):
    (repo / "configs" / "bad.yaml").write_text("run: x\nseed: 1\n")
    with pytest.raises(config.ConfigError, match=r"bad\.yaml: missing top-level key 'models'"):
        config.load_profile("bad")
    with pytest.raises(config.ConfigError, match="not found"):
        config.load_profile("nope")


def test_shipped_profiles_load():
    for name in ("smoke", "cpu", "gpu-smoke", "paper"):
        prof = config.load_profile(name)
        assert prof["run"] == name and prof["models"]
        for step in steps.STEPS.values():
            for model in prof["models"] if step.per_model else [None]:
                config.step_settings(prof, step.name, model)


def test_report_validation_checks_span_offsets():
    rep = {"id": "r1", "text": "I took Lipitor and got muscle pain.", "drugs": ["Lipitor"],
           "adverse_events": ["muscle pain"],
           "spans": [{"label": "drug", "start": 7, "end": 14, "text": "Lipitor"},
                     {"label": "adverse_event", "start": 23, "end": 34, "text": "muscle pain"}]}
    assert schemas.validate_report(rep) is rep
    bad = json.loads(json.dumps(rep))
    bad["spans"][1]["start"] = 22
    with pytest.raises(io.DataError, match=r"r9: spans\[1\] text 'muscle pain' != text\[22:34\]"):
        schemas.validate_report(bad, "r9")
    with pytest.raises(io.DataError, match="missing key 'drugs'"):
        schemas.validate_report({"id": "x", "text": "t"})


def test_2023_study_round_trip_is_lossless_where_schemas_overlap(tmp_path):
    old = [{"input": "Hi, on Abilify I feel nausea.",
             "output": json.dumps({"drug_name": "Abilify", "adverse_events": ["nausea"]})}]
    f = tmp_path / "study2023.json"
    f.write_text(json.dumps(old))
    [rec] = schemas.load_reports(f)
    assert rec["drugs"] == ["Abilify"] and rec["adverse_events"] == ["nausea"]
    assert rec["id"] == "study2023-00000"
    back = schemas.to_2023_study(rec)
    assert back["input"] == old[0]["input"]
    assert json.loads(back["output"]) == json.loads(old[0]["output"])
    f.write_text(json.dumps([{"input": "x", "output": "{not json"}]))
    with pytest.raises(io.DataError, match=r"study2023\.json:1: 'output' is not valid JSON"):
        schemas.load_reports(f)


def test_dedupe_keeps_first_spelling():
    assert schemas.dedupe(["Nausea", "nausea ", "head  ache", "Head ache", ""]) == \
        ["Nausea", "head  ache"]


def test_paths_are_relative_to_root(repo):
    assert paths.synthetic_dir("cpu") == repo / "data" / "synthetic" / "cpu"
    assert paths.rel(paths.predictions_file("cpu", "test", "m-lora")) == \
        "artifacts/predictions/cpu/test/m-lora.jsonl"
    assert paths.step_manifest("05_infer", "cpu", "m", "cadec").name == "manifest-m-cadec.json"
