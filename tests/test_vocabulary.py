"""The vocabulary data files: sizes, the 50 study drugs, combinations and biologics, lay words by
body system, and one clear error per bad row."""
from __future__ import annotations

import shutil

import pytest

from helpers import paths, schemas, synthesize as S, vocabulary as V
from helpers.io import DataError

STUDY_50 = ("Abilify Infliximab Rituximab Etanercept Humira Enbrel Remicade Rituxan Nexium Prevacid "
            "Prilosec Protonix Crestor Lipitor Zocor Vytorin Victoza Byetta Januvia Onglyza Advair "
            "Symbicort Spiriva Singulair Cialis Viagra Levitra Staxyn AndroGel Prezista Doxycycline "
            "Cymbalta Neupogen Epogen Aranesp Neulasta Lunesta Ambien Provigil Nuvigil Metoprolol "
            "Lisinopril Amlodipine Atorvastatin Zoloft Lexapro Prozac Celexa Complera Atripla").split()


def test_sizes_kinds_and_body_systems():
    v = V.load()
    summary = V.summary(v)
    assert summary["drugs"] >= 300 and summary["reactions"] >= 400
    assert summary["drugs_by_kind"]["combination"] >= 30 and summary["drugs_by_kind"]["biologic"] >= 30
    assert len(summary["reactions_by_system"]) >= 12
    assert sum(bool(r.lay) for r in v.reactions) / len(v.reactions) > 0.8
    assert summary["misspelled_names"] >= 100
    generics = {d["generic"] for d in v.drugs}
    assert {"budesonide/formoterol", "fluticasone/salmeterol", "adalimumab", "semaglutide"} <= generics


def test_the_50_study_drugs_stay_and_take_their_class_reactions():
    scraped = schemas.load_drug_records(paths.drugs_dir())
    assert sorted(r["name"] for r in scraped) == sorted(STUDY_50)
    vocab = V.drug_records(V.load())
    merged = V.merge_records(scraped, vocab)
    assert [r["name"] for r in merged[:50]] == [r["name"] for r in scraped]
    assert all(r.get("class_side_effects") for r in merged[:50]), "a study drug has no vocabulary row"
    drugs = S.prepare_drugs(merged)
    assert len(drugs) == len(merged) >= 350
    names = [n.lower() for d in drugs for n in d.all_names]
    sym = next(d for d in drugs if d.name == "Symbicort")
    assert "budesonide/formoterol" in {m.lower() for m in sym.misspellings} | set(names)
    assert sym.misspellings and len(sym.events) > 8


def test_records_have_the_scraped_shape():
    for rec in V.drug_records(V.load())[:20]:
        schemas.validate_drug_record(rec)
        assert rec["source"] == V.SOURCE and rec["side_effects"]["common"] and rec["uses"]


@pytest.mark.parametrize("file, old, new, message", [
    ("drug_classes.csv", "muscle pain;joint pain;muscle cramps", "muscle pain;joint ache;muscle cramps",
     r"drug_classes\.csv:2: class 'statin' names reactions not in adverse_reactions\.csv: \['joint ache'\]"),
    ("drugs.csv", "simvastatin,Zocor,statin", "simvastatin,Lipitor,statin",
     r"drugs\.csv:3: name 'Lipitor' already used on line 2"),
    ("drugs.csv", "methotrexat,MTX", "methotrexat,Lipitor",
     r"drugs\.csv:\d+: name 'Lipitor' already used on line 2"),
    ("drugs.csv", "atorvastatin,Lipitor,statin,small molecule", "atorvastatin,Lipitor,statinz,small molecule",
     r"drugs\.csv:2: drug 'atorvastatin' has unknown class 'statinz'"),
])
def test_a_bad_row_names_file_and_line(tmp_path, file, old, new, message):
    for f in V.FILES:
        shutil.copy(V.vocab_dir() / f, tmp_path / f)
    text = (tmp_path / file).read_text()
    assert old in text
    (tmp_path / file).write_text(text.replace(old, new, 1))
    with pytest.raises(DataError, match=message):
        V.load(tmp_path)


def test_names_carry_no_dose_form_or_device_word():
    import re
    form_word = re.compile(r"\b(patch|gel|cream|inhaler|pen|tablets?|pills?|shot|nasal|spray|\d+\s*mg)\b", re.I)
    for d in V.load().drugs:
        for name in [d["generic"], *d["brands"].split(";")]:
            assert not form_word.search(name), name
