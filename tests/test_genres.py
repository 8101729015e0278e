"""Genres (forum, social, case report, clinical note) over the vocabulary: located spans, label
rules, drugless shares, the unseen-drug split, determinism and a card that matches its files."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import dataset_card as D
from helpers import genres as G
from helpers import dataset_card, paths, schemas, splits as sp, synthesize as S
from helpers.io import read_jsonl

MIX = {"message": 0.2, "forum": 0.35, "social": 0.15, "case_report": 0.15, "clinical_note": 0.15}
PARAMS = {"run": "t", "seed": 7, "generator": "template", "n_train": 700, "n_val": 40, "n_test": 120,
          "n_test_unseen": 120, "n_unseen_drugs": 6, "unseen_drug_share": 0.15, "vocabulary": True,
          "genre_mix": MIX, "max_chars": 1100}


@pytest.fixture(scope="module")
def built():
    return S.build_splits(schemas.load_drug_records(paths.drugs_dir()), PARAMS)


def _all(splits_):
    return [r for v in splits_.values() for r in v]


def _by_genre(recs):
    out = {}
    for r in recs:
        out.setdefault(r["meta"]["genre"], []).append(r)
    return out


def test_every_label_of_every_genre_is_a_located_span(built):
    splits_, _ = built
    by = _by_genre(_all(splits_))
    assert set(by) == set(G.GENRES)
    for genre, recs in by.items():
        n_labels = 0
        for r in recs:
            S.check_report(r, r["id"])
            for s in r["spans"]:
                assert r["text"][s["start"]:s["end"]] == s["text"], (genre, r["id"], s)
                assert s["text"] == s["text"].strip() and s["text"]
                n_labels += 1
            assert set(r["drugs"]) == {s["text"] for s in r["spans"] if s["label"] == "drug"}
            assert set(r["adverse_events"]) == {s["text"] for s in r["spans"] if s["label"] == "adverse_event"}
        assert n_labels > len(recs), genre


def test_each_genre_has_its_own_length_label_and_drugless_profile(built):
    splits_, _ = built
    st = D.genre_stats(_all(splits_))
    assert st["forum"]["share_no_drug"] >= 0.35 and st["social"]["share_no_drug"] >= 0.2
    assert st["case_report"]["share_no_drug"] == 0 and st["clinical_note"]["share_no_drug"] < 0.3
    assert st["forum"]["share_5plus_aes"] >= 0.25 and st["forum"]["aes_mean"] > st["message"]["aes_mean"]
    assert st["social"]["chars_max"] < 300 and st["forum"]["chars_max"] > 600
    assert st["case_report"]["share_no_ae"] == 0 and st["case_report"]["drugs_mean"] > 1.2
    assert st["clinical_note"]["share_negated"] > 0.5 and st["forum"]["share_hypothetical"] > 0.05
    assert st["social"]["share_misspelled"] > 0.1 and st["forum"]["share_worsened"] > 0
    overall = dataset_card.split_stats(splits_["train"])
    assert overall["share_no_drug"] >= 0.2
    forum = _by_genre(_all(splits_))["forum"]
    assert any(len(r["text"]) < 150 for r in forum), "no one-line forum posts"
    assert any(len(a.split()) >= 3 for r in forum for a in r["adverse_events"]), "no multi-word events"


def test_reports_fit_max_chars(built):
    splits_, _ = built
    assert max(len(r["text"]) for r in _all(splits_)) <= PARAMS["max_chars"]


def _covered(r, start, end):
    return any(s["label"] == "adverse_event" and s["start"] < end and start < s["end"] for s in r["spans"])


def test_negated_hypothetical_and_indications_are_never_labels(built):
    splits_, _ = built
    n_neg = n_hyp = n_dis = 0
    for r in _all(splits_):
        m, low = r["meta"], r["text"].lower()
        for term in m["negated"] + m.get("hypothetical", []):
            assert not any(term.lower() in a.lower() or a.lower() in term.lower() for a in r["adverse_events"])
            for hit in re.finditer(re.escape(term.lower()), low):
                assert not _covered(r, hit.start(), hit.end()), (r["id"], term)
        n_neg += bool(m["negated"])
        n_hyp += bool(m.get("hypothetical"))
        if m["disease"]:
            n_dis += 1
            assert m["disease"].lower() not in {a.lower() for a in r["adverse_events"]}
            for hit in re.finditer(re.escape(m["disease"]), r["text"]):
                assert not any(s["start"] == hit.start() and s["end"] == hit.end() for s in r["spans"])
        if m.get("worsened"):
            assert m["worsened"] in r["adverse_events"] and m["worsened"] != m["disease"]
    assert n_neg > 100 and n_hyp > 20 and n_dis > 100


def test_drug_spans_are_names_only_misspellings_as_written_drugs_not_taken_unlabelled(built):
    splits_, _ = built
    unnamed = {u.lower() for v in G.UNNAMED.values() for u in v}
    misspelled = not_taken = 0
    for r in _all(splits_):
        for s in r["spans"]:
            if s["label"] == "drug":
                assert not re.search(r"\d\s*(mg|puffs?)\b", s["text"]), s
                assert s["text"].lower() not in unnamed and s["text"].lower() not in {"it", "pills"}
        for m in r["meta"]["misspelled"]:
            assert m.lower() in {d.lower() for d in r["drugs"]}, (r["id"], m)
            misspelled += 1
        if not r["meta"]["named"]:
            assert r["drugs"] == []
        for name in r["meta"].get("not_taken", []):
            not_taken += 1
            assert name.lower() not in {d.lower() for d in r["drugs"]}, (r["id"], name)
            for hit in re.finditer(re.escape(name), r["text"]):
                assert not any(s["start"] == hit.start() and s["end"] == hit.end() for s in r["spans"])
    assert misspelled > 30 and not_taken > 5, (misspelled, not_taken)
    combos = [d for r in _all(splits_) for d in r["drugs"] if "/" in d]
    assert combos, "no combination product written as one span"


def test_unseen_split_holds_out_at_least_15_percent_of_drugs(built):
    splits_, info = built
    unseen = set(info["unseen_drugs"])
    assert len(unseen) >= 0.15 * len(info["drugs_used"]) and len(info["drugs_used"]) >= 300
    drugs = {d.name: d for d in S.prepare_drugs(schemas.load_drug_records(paths.drugs_dir()))}
    for split in ("train", "val", "test"):
        for r in splits_[split]:
            assert not set(r["meta"]["drug_names"]) & unseen
    for r in splits_["test_unseen"]:
        assert set(r["meta"]["drug_names"]) <= unseen
    pattern = sp.names_pattern([d for n, d in drugs.items() if n in unseen])
    assert not any(pattern.search(r["text"]) for r in splits_["train"])


def test_combination_products_share_a_side_of_the_split_with_their_parts():
    records = S.prepare_drugs(S.vocabulary.merge_records([], S.vocabulary.drug_records(S.vocabulary.load())))
    groups = {d.name: i for i, g in enumerate(sp.drug_groups(records)) for d in g}
    assert groups["Zocor"] == groups["Vytorin"] and groups["Lipitor"] == groups["Caduet"]
    assert groups["Estrace"] == groups["Sprintec"]   # "estradiol" is written inside "ethinyl estradiol/..."
    assert groups["Symbicort"] == groups["Pulmicort"]


def test_same_seed_same_bytes(tmp_path, built):
    splits_, _ = built
    again, _ = S.build_splits(schemas.load_drug_records(paths.drugs_dir()), PARAMS)
    for x, y in zip(S.write_splits(splits_, tmp_path / "a"), S.write_splits(again, tmp_path / "b")):
        assert x.read_bytes() == y.read_bytes()
    other, _ = S.build_splits(schemas.load_drug_records(paths.drugs_dir()), {**PARAMS, "seed": 8})
    assert [r["text"] for r in other["train"]] != [r["text"] for r in splits_["train"]]


def test_genre_reports_do_not_depend_on_the_python_hash_seed():
    code = ("import json; from helpers import schemas, paths, synthesize as s; "
            f"sp, _ = s.build_splits(schemas.load_drug_records(paths.drugs_dir()), {PARAMS!r}); "
            "print(json.dumps([r['text'] for r in sp['train'][:150]]))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def _card_table(card: str, heading: str) -> dict[str, dict[str, str]]:
    block = card.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0]]
    return {r[0].strip(): dict(zip(header[1:], (c.strip() for c in r[1:]))) for r in rows[2:]}


def test_card_figures_match_the_written_files(tmp_path, built):
    splits_, info = built
    S.write_splits(splits_, tmp_path)
    card = dataset_card.write_card(splits_, PARAMS, info, tmp_path).read_text()
    fig = dataset_card.plot_dataset(splits_, tmp_path / "card.png")
    back = {s: read_jsonl(tmp_path / f"{s}.jsonl") for s in S.SPLITS}
    stats = D.genre_stats(_all(back))
    table = _card_table(card, "## Genres (all splits)")
    assert set(table) == set(stats)
    for g, row in stats.items():
        for k, v in row.items():
            assert float(table[g][k]) == pytest.approx(float(v)), (g, k)
    for s, row in _card_table(card, "## Splits").items():
        assert int(row["reports"]) == len(back[s]) and int(row["ae_labels"]) == sum(len(r["adverse_events"]) for r in back[s])
    data = D.figure_data(back)
    hist_total = sum(p.get_height() for p in fig.axes[0].patches)
    assert hist_total == len(_all(back))
    for panel, key in ((1, "n_aes"), (2, "n_drugs")):
        plotted = sorted(p.get_height() for p in fig.axes[panel].patches)
        ks = sorted({k for g in data["genres"] for k in data[key][g]})
        expected = sorted(data[key][g].get(k, 0) for g in data["genres"] for k in ks)
        assert plotted == expected
    assert "## Vocabulary (data/vocab)" in card and "forum" in card


def test_an_unknown_genre_fails_clearly():
    with pytest.raises(ValueError, match="unknown genres"):
        G.check_mix({"forum": 1, "blog": 1})
    with pytest.raises(ValueError, match="not all zero"):
        G.check_mix({"forum": 0})


def test_event_spans_leave_out_articles_possessives_severity_and_time(built):
    splits_, _ = built
    leading = {"a", "an", "the", "my", "his", "her", "some", "really", "very", "severe", "mild",
               "terrible", "horrible", "constant"}
    trailing = ("all the time", "all day", "at night", "for like a week", "every day")
    for r in _all(splits_):
        for s in r["spans"]:
            if s["label"] == "adverse_event":
                assert s["text"].split()[0].lower() not in leading, (r["id"], s["text"])
                assert not s["text"].lower().endswith(trailing), (r["id"], s["text"])
                assert s["text"][-1] not in ".,;:!?", (r["id"], s["text"])


def test_clinical_notes_list_several_drugs_beside_doses_forms_and_frequencies(built):
    notes = [r for r in _all(built[0]) if r["meta"]["genre"] == "clinical_note" and r["drugs"]]
    assert sum(len(r["drugs"]) >= 4 for r in notes) > 0.25 * len(notes)
    from helpers.drug_like import trim_drug
    beside = 0
    for r in notes:
        for s in r["spans"]:
            if s["label"] == "drug":
                assert trim_drug(s["text"]) == s["text"], s          # a label never holds a modifier
                after = r["text"][s["end"]:s["end"] + 4].strip().split(" ")[0].lower()
                beside += after in {"er", "xr", "sr", "xl", "cr", "dr", "odt", "ec", "1%", "gel", "susp", "syrup"}
    assert beside > 5, beside


def _drug_spans(r):
    return [s for s in r["spans"] if s["label"] == "drug"]


def test_later_mentions_by_abbreviation_are_labels_as_written(built):
    """A note names a drug in full, then by its short form ("methotrexate ... Hold MTX."): both are labels."""
    shorts = {x for d in S.prepare_drugs(__import__("helpers.vocabulary", fromlist=["x"]).with_vocabulary([]))
              for x in d.short_forms}
    notes = [r for r in _all(built[0]) if r["meta"]["genre"] == "clinical_note"]
    with_short = [r for r in notes if any(s["text"] in shorts for s in _drug_spans(r))]
    assert len(with_short) >= 3, len(with_short)
    for r in with_short:
        assert all(s["text"] in r["drugs"] for s in _drug_spans(r))


def test_brand_and_generic_side_by_side_are_two_labels(built):
    """"Jardiance (empagliflozin)": the name in brackets is a second drug label, brackets outside both."""
    pairs = 0
    for r in _all(built[0]):
        spans = _drug_spans(r)
        for a, b in zip(spans, spans[1:]):
            if r["text"][a["end"]:b["start"]] == " (" and r["text"][b["end"]:b["end"] + 1] == ")":
                pairs += 1
                assert a["text"] != b["text"] and {a["text"], b["text"]} <= set(r["drugs"])
    assert pairs >= 5, pairs


def test_drugs_given_to_treat_the_reaction_are_labelled_and_stay_on_their_side_of_the_split(built):
    """An antihistamine given for a rash was given: a label, from the split's own drugs (never an unseen one)."""
    splits_, unseen = built
    pool = {n.lower() for d in G.treatment_pool(S.prepare_drugs(
        __import__("helpers.vocabulary", fromlist=["x"]).with_vocabulary([]))) for n in d.all_names}
    treated = [r for r in _all(splits_) if r["meta"]["genre"] in ("case_report", "clinical_note")
               and any(w in r["text"] for w in ("treated with", "managed with", "Tx: ", "Rx ", " given"))
               and any(s["text"].lower() in pool for s in _drug_spans(r))]
    assert len(treated) >= 10, len(treated)
    unseen_names = set(unseen["unseen_drugs"])       # meta drug_names carry the treatments too
    for split, recs in splits_.items():
        if split != "test_unseen":
            assert not any(set(r["meta"]["drug_names"]) & unseen_names for r in recs)


def test_note_orders_are_never_drug_labels(built):
    """Non-drug orders ("IV fluids", "PT referral") sit in notes unlabelled."""
    from helpers.genre_writers import NOTE_ORDERS
    notes = [r for r in _all(built[0]) if r["meta"]["genre"] == "clinical_note"]
    with_orders = [r for r in notes if any(o in r["text"] for o in NOTE_ORDERS)]
    assert len(with_orders) >= 10
    assert not any(s["text"] in NOTE_ORDERS for r in with_orders for s in r["spans"])
