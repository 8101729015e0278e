"""Template generator: exact spans, label conventions, determinism, splits, card, speed."""
from __future__ import annotations

import json
import logging
import time

import pytest

from helpers import dataset_card, schemas, synthesize as S
from helpers.io import DataError, read_jsonl
from helpers.splits import SplitError


def drug_record(name, generic, brands, cls, uses, common, serious=(), allergic=()):
    """A drug record in the shape of helpers.schemas.validate_drug_record."""
    return schemas.validate_drug_record({
        "name": name, "generic_names": list(generic), "brand_names": list(brands), "drug_class": cls,
        "uses": list(uses), "side_effects": {"common": list(common), "serious": list(serious),
                                             "allergic": list(allergic), "other": []},
        "missing_sections": [], "source": "test", "source_url": "", "fetched_at": "", "content_hash": ""})


RECORDS = [
    drug_record("Lipitor", ["atorvastatin"], ["Lipitor"], "statins", ["lowers high cholesterol"],
                ["muscle pain", "diarrhea", "joint pain", "nausea"],
                ["dark urine", "unexplained muscle pain, tenderness, or weakness"]),
    drug_record("Zoloft", ["sertraline"], ["Zoloft"], "SSRI antidepressants", ["depression and OCD"],
                ["insomnia", "decreased sex drive", "tremors", "dry mouth"], ["a seizure"]),
    drug_record("Ambien", ["zolpidem"], ["Ambien", "Ambien CR"], "sedatives", ["insomnia"],
                ["drowsiness", "dizziness", "tired feeling", "headache"], ["confusion"]),
    drug_record("Humira", ["adalimumab"], ["Humira"], "TNF alfa inhibitors", ["rheumatoid arthritis"],
                ["injection site reactions", "headache", "rash", "sinus pain"], [],
                ["hives", "swelling of your face, lips, tongue, or throat"]),
    drug_record("Spiriva", ["tiotropium"], ["Spiriva HandiHaler"], "bronchodilators", ["COPD"],
                ["dry mouth", "sore throat", "cough", "blurred vision"]),
    drug_record("Lisinopril", ["lisinopril"], ["Zestril", "Prinivil"], "ACE inhibitors",
                ["high blood pressure"], ["cough", "dizziness", "headache"], ["fainting"]),
    drug_record("Cialis", ["tadalafil"], ["Cialis"], "PDE5 inhibitors", ["erectile dysfunction"],
                ["flushing", "back pain", "muscle pain", "stuffy nose"]),
    drug_record("Atorvastatin", ["atorvastatin"], ["Lipitor"], "statins", ["high cholesterol"],
                ["stuffy nose", "muscle pain"]),
]
SIZES = {"train": 120, "val": 20, "test": 30, "test_unseen": 30}


@pytest.fixture(scope="module")
def built():
    return S.build_template_splits(RECORDS, SIZES, 2, seed=13)


def test_every_label_is_an_exact_span(built):
    splits, _ = built
    for split, recs in splits.items():
        assert len(recs) == SIZES[split]
        for r in recs:
            S.check_report(r, r["id"])
            for sp in r["spans"]:
                assert r["text"][sp["start"]:sp["end"]] == sp["text"]
            assert set(r["drugs"]) <= {s["text"] for s in r["spans"] if s["label"] == "drug"}


def test_negations_and_diseases_are_not_labels(built):
    splits, _ = built
    recs = [r for v in splits.values() for r in v]
    negated = [r for r in recs if r["meta"]["negated"]]
    with_disease = [r for r in recs if r["meta"]["disease"]]
    assert len(negated) > 20 and len(with_disease) > 20
    for r in negated:
        for term in r["meta"]["negated"]:
            assert term in r["text"]
            assert all(term.lower() not in a.lower() and a.lower() not in term.lower()
                       for a in r["adverse_events"])
    for r in with_disease:
        assert r["meta"]["disease"] in r["text"]
        assert r["meta"]["disease"] not in r["adverse_events"]


def test_mix_of_empty_unnamed_and_multi_drug_reports(built):
    splits, _ = built
    st = dataset_card.split_stats(splits["train"])
    assert 0.08 < st["share_no_ae"] < 0.4
    assert 0.03 < st["share_no_drug"] < 0.3
    assert st["share_multi_drug"] > 0.2
    shapes = {r["meta"]["shape"] for r in splits["train"]}
    styles = {r["meta"]["style"] for r in splits["train"]}
    assert shapes == {"webform", "email", "short_form", "clinician_note", "caregiver_email"}
    assert {"brief", "rambling", "worried", "clinical", "non_native", "typos"} <= styles
    assert any(r["meta"]["lay_terms"] for r in splits["train"])
    assert any(r["meta"]["misspelled"] for v in splits.values() for r in v)


def test_unseen_drugs_never_in_train_and_no_shared_text(built):
    splits, info = built
    unseen = set(info["unseen_drugs"])
    assert unseen and len(unseen) >= 2
    # Lipitor and Atorvastatin share names, so they are held out together or not at all
    assert ("Lipitor" in unseen) == ("Atorvastatin" in unseen)
    for split in ("train", "val", "test"):
        for r in splits[split]:
            assert not set(r["meta"]["drug_names"]) & unseen
    for r in splits["test_unseen"]:
        assert set(r["meta"]["drug_names"]) <= unseen
    texts = [r["text"] for v in splits.values() for r in v]
    assert len(texts) == len(set(texts))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, info = S.build_template_splits(RECORDS, SIZES, 2, seed=5)
    b, _ = S.build_template_splits(RECORDS, SIZES, 2, seed=5)
    c, _ = S.build_template_splits(RECORDS, SIZES, 2, seed=6)
    pa = S.write_splits(a, tmp_path / "a")
    pb = S.write_splits(b, tmp_path / "b")
    S.write_splits(c, tmp_path / "c")
    for x, y in zip(pa, pb):
        assert x.read_bytes() == y.read_bytes()
    assert (tmp_path / "a/train.jsonl").read_bytes() != (tmp_path / "c/train.jsonl").read_bytes()
    back = read_jsonl(tmp_path / "a" / "train.jsonl")
    assert back == json.loads(json.dumps(a["train"]))


def test_write_refuses_a_label_that_is_not_a_span(tmp_path, built):
    splits, _ = built
    bad = {k: [dict(r) for r in v] for k, v in splits.items()}
    r = bad["val"][0]
    bad["val"][0] = {**r, "adverse_events": r["adverse_events"] + ["a paraphrase not in the text"]}
    with pytest.raises(DataError, match="not a adverse_event span"):
        S.write_splits(bad, tmp_path)
    assert not list(tmp_path.glob("*.jsonl"))
    r2 = dict(splits["val"][1])
    r2["spans"] = [{**r2["spans"][0], "start": r2["spans"][0]["start"] + 1}] + r2["spans"][1:]
    with pytest.raises(DataError):
        S.check_report(r2)


def test_records_without_side_effects_are_skipped_with_a_warning(caplog):
    empty = drug_record("Nosidefx", ["nosidefx"], [], "x", ["x"], [])
    with caplog.at_level(logging.WARNING):
        drugs = S.prepare_drugs(RECORDS[:2] + [empty])
    assert [d.name for d in drugs] == ["Lipitor", "Zoloft"]
    assert "Nosidefx" in caplog.text


def test_empty_split_fails_clearly():
    with pytest.raises(SplitError, match="'val' would be empty"):
        S.build_template_splits(RECORDS, {**SIZES, "val": 0}, 2, seed=1)
    with pytest.raises(SplitError, match="test_unseen"):
        S.build_template_splits(RECORDS, SIZES, 0, seed=1)
    with pytest.raises(SplitError, match="seen and unseen"):
        S.build_template_splits(RECORDS[:1], SIZES, 1, seed=1)


def test_short_event_label_and_misspell():
    assert S.short_event_label("unexplained muscle pain, tenderness, or weakness") == "unexplained muscle pain"
    assert S.short_event_label("a seizure") == "seizure"
    assert S.short_event_label("swelling of your face, lips") == "swelling of the face"
    assert S.short_event_label("Fast or pounding heartbeats") == "pounding heartbeats"
    assert S.short_event_label("chest pain or pressure") == "chest pain"
    assert S.short_event_label("lips") is None and S.short_event_label("with or without vomiting") is None
    assert S.short_event_label("HIV infection") == "HIV infection"
    assert S.short_event_label("(rare) 123") is None
    import random
    rng = random.Random(0)
    spelled = {S.misspell("Lisinopril", rng) for _ in range(30)}
    assert "Lisinopril" not in spelled and len(spelled) > 5


def test_card_and_plot(tmp_path, built):
    splits, info = built
    params = {"run": "t", "seed": 13, "generator": "template"}
    card = dataset_card.write_card(splits, params, info, tmp_path).read_text()
    for needle in ("## Splits", "test_unseen", "Per-drug coverage", "## Examples", "share_no_ae"):
        assert needle in card
    assert card.count("```json") == 3
    dataset_card.plot_dataset(splits, tmp_path / "card.png")
    assert (tmp_path / "card.png").stat().st_size > 10_000


def test_ten_thousand_reports_in_well_under_a_minute():
    t = time.perf_counter()
    recs = S.generate_template_split(S.prepare_drugs(RECORDS), 2000, 1, "speed")
    dt = time.perf_counter() - t
    assert len(recs) == 2000
    assert dt * 5 < 60, f"2000 reports took {dt:.1f}s, so 10,000 would take over a minute"


def test_reports_do_not_depend_on_the_python_hash_seed():
    """Same parameters and seed give the same reports in every process (Faker builds some of its
    lists from sets, whose order follows PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys
    code = ("import json; from helpers import schemas, paths, synthesize as s; "
            "d = s.prepare_drugs(schemas.load_drug_records(paths.drugs_dir())); "
            "print(json.dumps([r['text'] for r in s.generate_template_split(d, 40, 13, 'train')]))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert len(outs) == 1
