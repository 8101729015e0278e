"""Which reports steps 4b and 5 score: synthetic splits, the hand-written set, a user's file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import config, eval_sets, paths
from helpers.io import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "handwritten" / "reports.jsonl"


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A study root with a synthetic `test` split of run 'r' (the fixture's reports, genre-less)."""
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    syn = paths.synthetic_dir("r")
    syn.mkdir(parents=True)
    (syn / "test.jsonl").write_text(FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def test_handwritten_is_its_own_split(root):
    hw = paths.handwritten_file()
    hw.parent.mkdir(parents=True)
    shutil.copy(FIXTURE, hw)
    sets = eval_sets.load_test_sets("r", ["test", "handwritten"])
    assert list(sets) == ["test", "handwritten"]
    path, reports = sets["handwritten"]
    assert path == hw == paths.split_file("r", "handwritten")
    assert [r["genre"] for r in reports] == ["forum", "social", "case_report", "clinical_note"]
    assert all(r["spans"] for r in reports)


def test_missing_handwritten_fails_only_when_asked(root):
    assert list(eval_sets.load_test_sets("r", ["test"])) == ["test"]
    with pytest.raises(FileNotFoundError, match="the profile asks for split 'handwritten' but "
                                                "data/handwritten/reports.jsonl is missing"):
        eval_sets.load_test_sets("r", ["test", "handwritten"])
    with pytest.raises(FileNotFoundError, match="run 02_synthesize"):
        eval_sets.load_test_sets("r", ["test_unseen"])


def test_bad_record_names_file_and_line(root):
    hw = paths.handwritten_file()
    hw.parent.mkdir(parents=True)
    hw.write_text('{"id": "a", "text": "rash", "drugs": [], "adverse_events": ["rash"], '
                  '"spans": [{"label": "adverse_event", "start": 0, "end": 3, "text": "rash"}]}\n')
    with pytest.raises(DataError, match=r"reports.jsonl:1: spans\[0\] text 'rash' != text\[0:3\]"):
        eval_sets.load_test_sets("r", ["handwritten"])


def test_test_file_replaces_splits_and_sampling_is_seeded(root, tmp_path):
    user = tmp_path / "my_reports.jsonl"
    shutil.copy(FIXTURE, user)
    sets = eval_sets.load_test_sets("r", ["test", "handwritten"], test_file=user)
    assert list(sets) == ["my_reports"] and len(sets["my_reports"][1]) == 4
    a = eval_sets.load_test_sets("r", ["test"], limit=2, seed=5)["test"][1]
    b = eval_sets.load_test_sets("r", ["test"], limit=2, seed=5)["test"][1]
    assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == 2
    ids = [r["id"] for r in eval_sets.load_test_sets("r", ["test"])["test"][1]]
    assert [r["id"] for r in a] == [i for i in ids if i in {r["id"] for r in a}]  # file order kept
    with pytest.raises(FileNotFoundError, match="test_file not found"):
        eval_sets.load_test_sets("r", [], test_file=tmp_path / "nope.jsonl")
    with pytest.raises(TypeError, match="list of split names"):
        eval_sets.load_test_sets("r", "test")


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_profiles_score_the_handwritten_set(profile):
    prof = config.load_profile(profile)
    for section in ("infer", "baselines"):
        assert paths.HANDWRITTEN_SPLIT in prof[section]["splits"], (profile, section)


def test_the_blind_set_is_a_split_of_its_own(root):
    """`handwritten_blind` reads data/handwritten/blind.jsonl, beside the first set, never in place of it."""
    blind = paths.handwritten_file("handwritten_blind")
    assert blind == paths.split_file("r", "handwritten_blind") and blind.name == "blind.jsonl"
    blind.parent.mkdir(parents=True)
    shutil.copy(FIXTURE, blind)
    sets = eval_sets.load_test_sets("r", ["handwritten_blind"])
    assert len(sets["handwritten_blind"][1]) == 4
    with pytest.raises(FileNotFoundError, match="the profile asks for split 'handwritten' but"):
        eval_sets.load_test_sets("r", ["handwritten"])


@pytest.mark.parametrize("profile", ["cpu", "cpu-templates", "paper"])
def test_larger_profiles_score_the_blind_set_and_join_it_across_runs(profile, tmp_path, monkeypatch):
    prof = config.load_profile(profile)
    assert "handwritten_blind" in prof["infer"]["splits"]
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    from helpers import scoring
    for run, split in (("a", "handwritten"), ("a", "handwritten_blind"), ("a", "test")):
        out = paths.predictions_dir(run) / split
        out.mkdir(parents=True, exist_ok=True)
        (out / "lora.jsonl").write_text("", encoding="utf-8")
    joined = set(scoring.prediction_files("r", also_from=["a"]))
    assert joined == {("handwritten", "lora@a"), ("handwritten_blind", "lora@a")}
