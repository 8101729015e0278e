"""Grounding: offsets that point at the report's own text, statuses, snapping and highlighting."""
from __future__ import annotations

import pytest

from helpers.grounding import (grounding_rate, ground_prediction, highlight_html, locate, snap_record)

TEXT = ("Started Lipitor last month. Since then I have Muscle  pain\nand dark urine, "
        "no fever. My lipitor dose is 20mg (Atorvastatin).")


def _check_offsets(hit, text=TEXT):
    if hit["status"] == "not_found":
        assert hit["start"] is None and hit["end"] is None and hit["text"] is None
    else:
        assert text[hit["start"]:hit["end"]] == hit["text"]


@pytest.mark.parametrize("span,status,matched", [
    ("Lipitor", "exact", "Lipitor"),
    ("lipitor", "exact", "lipitor"),          # the lower-case mention later on is exact too
    ("dark urine", "exact", "dark urine"),
    ("muscle pain", "case", "Muscle  pain"),  # case and the double space/newline run ignored
    ("MUSCLE PAIN AND DARK URINE", "case", "Muscle  pain\nand dark urine"),
    ("Lipitr", "fuzzy", "Lipitor"),           # a misspelled copy
    ("Atorvastatine", "fuzzy", "Atorvastatin"),
    ("dark urin", "fuzzy", "dark urine"),     # a copy that cuts a word snaps to whole words
    ("muscle pains", "fuzzy", "Muscle  pain"),
    ("headache", "not_found", None),
    ("", "not_found", None),
])
def test_locate_statuses_and_offsets(span, status, matched):
    hit = locate(span, TEXT)
    assert hit["status"] == status
    assert hit["text"] == matched
    _check_offsets(hit)


def test_exact_prefers_a_whole_word_occurrence():
    text = "Pain relief: none. My pain is worse."
    hit = locate("pain", text)
    assert (hit["start"], hit["status"]) == (22, "exact")
    hit = locate("rash", "crashing rash")
    assert (hit["start"], hit["end"]) == (9, 13)


def test_fuzzy_threshold_is_respected():
    assert locate("Lipitr", TEXT, fuzzy_threshold=95)["status"] == "not_found"
    assert locate("Lipitr", TEXT, fuzzy_threshold=90)["status"] == "fuzzy"
    assert locate("Lipitr", TEXT)["score"] == pytest.approx(92.3, abs=0.1)


def test_offsets_are_characters_not_bytes():
    text = "Après le Zoloft: vertiges et nausées."
    hit = locate("nausées", text)
    assert text[hit["start"]:hit["end"]] == "nausées"
    hit = locate("Vertiges", text)
    assert hit["status"] == "case" and text[hit["start"]:hit["end"]] == "vertiges"


def test_ground_prediction_one_entry_per_string():
    parsed = {"drugs": ["Lipitr"], "adverse_events": ["muscle pain", "headache", "dark urine"]}
    g = ground_prediction(parsed, TEXT)
    assert [(x["field"], x["predicted"], x["status"]) for x in g] == [
        ("drugs", "Lipitr", "fuzzy"), ("adverse_events", "muscle pain", "case"),
        ("adverse_events", "headache", "not_found"), ("adverse_events", "dark urine", "exact")]
    for x in g:
        assert set(x) == {"field", "predicted", "start", "end", "matched_text", "status", "score"}
        if x["start"] is not None:
            assert TEXT[x["start"]:x["end"]] == x["matched_text"]
    assert grounding_rate(g) == 0.75
    assert ground_prediction(None, TEXT) == [] and grounding_rate([]) is None


def test_snap_uses_the_reports_own_text_and_dedupes():
    parsed = {"drugs": ["Lipitr", "Lipitor"], "adverse_events": ["muscle pain", "headache"]}
    g = ground_prediction(parsed, TEXT)
    snapped = snap_record(parsed, g)
    assert snapped == {"drugs": ["Lipitor"], "adverse_events": ["Muscle  pain", "headache"]}
    assert parsed["drugs"] == ["Lipitr", "Lipitor"]  # the input record is left alone
    assert snap_record(None, []) is None


def test_snap_drops_a_drug_that_is_also_listed_as_an_event():
    text = "These pills gave me muscle cramps. Lipitor is fine."
    parsed = {"drugs": ["Muscle cramps", "Lipitor"], "adverse_events": ["muscle cramps"]}
    snapped = snap_record(parsed, ground_prediction(parsed, text))
    assert snapped == {"drugs": ["Lipitor"], "adverse_events": ["muscle cramps"]}


def test_highlight_marks_each_grounded_span_and_escapes_html():
    text = "Took <Zoloft> & got rash"
    g = ground_prediction({"drugs": ["Zoloft"], "adverse_events": ["rash", "fever"]}, text)
    html = highlight_html(text, g)
    assert html.count("<mark") == 2
    assert "&lt;" in html and "&amp;" in html
    assert 'title="drugs">Zoloft</mark>' in html and 'title="adverse_events">rash</mark>' in html
