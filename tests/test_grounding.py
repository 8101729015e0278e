"""Grounding: offsets that point at the report's own text, statuses, snapping and highlighting."""
from __future__ import annotations

import pytest

from helpers.drug_like import is_drug_like, trim_drug
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


def test_snap_drops_drugs_that_cannot_be_drug_names():
    # a report that names no drug: small models put the indication, a product word or a question there
    text = ("Relationship to company: Consumer. Can I cut the tablets in half? My doctor put me on this "
            "for high blood pressure and for insomnia; since then dizziness. Took Tylenol once.")
    parsed = {"drugs": ["company", "Can I cut the tablets in half", "high blood pressure", "insomnia",
                        "tablets", "Tylenol"], "adverse_events": ["dizziness"]}
    snapped = snap_record(parsed, ground_prediction(parsed, text))
    assert snapped == {"drugs": ["Tylenol"], "adverse_events": ["dizziness"]}


@pytest.mark.parametrize("name", ["Lipitor", "budesonide and formoterol", "5-FU", "vitamin D", "metforman",
                                  "Keytruda (pembrolizumab)", "lisinopril-hctz"])
def test_drug_names_stay_drug_like(name):
    assert is_drug_like(name)


@pytest.mark.parametrize("text", ["", "  ", "HTN", "headache", "a pounding head", "high cholesterol", "pills",
                                  "j.doe@example.com", "is this normal?", "https://example.com",
                                  "I am getting dizzy spells and constant depression"])
def test_reactions_indications_and_sentences_are_not_drug_like(text):
    assert not is_drug_like(text)


def test_no_vocabulary_drug_name_is_rejected():
    from helpers import vocabulary
    names = {n for d in vocabulary.load().drugs for k in ("generic", "brands", "misspellings", "short_forms")
             for n in (d.get(k) or "").split(";") if n}
    assert len(names) > 1000
    assert [n for n in names if not is_drug_like(n)] == []


def test_highlight_marks_each_grounded_span_and_escapes_html():
    text = "Took <Zoloft> & got rash"
    g = ground_prediction({"drugs": ["Zoloft"], "adverse_events": ["rash", "fever"]}, text)
    html = highlight_html(text, g)
    assert html.count("<mark") == 2
    assert "&lt;" in html and "&amp;" in html
    assert 'title="drugs">Zoloft</mark>' in html and 'title="adverse_events">rash</mark>' in html


def test_snap_drops_a_drug_found_only_inside_an_address():
    # a web form with no drug named: the model copied the local part of the reporter's e-mail address
    text = ("Reporter: d.olamide@example.org (https://forum.example.com/zyrtec-users). Product: unknown.\n"
            "I got a rash after the new tablets; my friend takes Zyrtec without trouble.")
    parsed = {"drugs": ["d.olamide", "zyrtec-users", "Zyrtec"], "adverse_events": ["rash"]}
    snapped = snap_record(parsed, ground_prediction(parsed, text), text)
    assert snapped == {"drugs": ["Zyrtec"], "adverse_events": ["rash"]}
    # without the text (older callers) only the string check applies
    assert snap_record(parsed, ground_prediction(parsed, text))["drugs"] == ["d.olamide", "zyrtec-users", "Zyrtec"]


@pytest.mark.parametrize("span, name", [
    ("zolpidem qhs", "zolpidem"), ("metforman er", "metforman"), ("my doxy", "doxy"),
    ("clindamycin 1% cream", "clindamycin"), ("lisinopril d/c'd", "lisinopril"),
    ("hydromorphone low dose", "hydromorphone"), ("prednisone moon face", "prednisone"),
    ("Symbicort inhaler", "Symbicort"), ("Lipitor 20mg", "Lipitor"), ("metformin ER", "metformin"),
    ("Wellbutrin XL", "Wellbutrin XL"), ("Wellbutrin XL 150 mg", "Wellbutrin XL"),
    ("budesonide and formoterol", "budesonide and formoterol"), ("vitamin D", "vitamin D"), ("5-FU", "5-FU")])
def test_trim_drug_keeps_the_name_only(span, name):
    assert trim_drug(span) == name


@pytest.mark.parametrize("text", ["blood pressure medicine", "Can I", "to", "x 2", "Pt", "obs", "EtOH", "20 mg",
                                  "x 2 wks", "6h", "3 days"])
def test_shorthand_function_words_and_indication_products_are_not_drug_like(text):
    assert not is_drug_like(text)


def test_snap_trims_a_drug_to_its_name_and_the_trimmed_name_is_located():
    from helpers.infer import make_record
    report = {"id": "n1", "text": "Meds: zolpidem 5 mg qhs; my doxy 100mg BID. Pt c/o dizziness.",
              "drugs": ["zolpidem", "doxy"], "adverse_events": ["dizziness"]}
    raw = '{"drugs": ["zolpidem 5 mg qhs", "my doxy", "Pt"], "adverse_events": ["dizziness"]}'
    rec = make_record(report, raw, 20, "stop", "s", "m", None, False)
    assert rec["parsed"]["drugs"] == ["zolpidem", "doxy"]
    assert rec["parsed_unsnapped"]["drugs"] == ["zolpidem 5 mg qhs", "my doxy", "Pt"]
    located = {g["predicted"]: (g["start"], g["end"]) for g in rec["grounding"] if g["status"] == "exact"}
    assert located["zolpidem"] == (6, 14) and located["doxy"] == (28, 32)


def test_snap_drops_strings_without_a_content_word():
    text = "Started with Zoloft 50 mg and now I have s bad nausea at night."
    parsed = {"drugs": ["Zoloft", "50"], "adverse_events": ["with", "s", "now", "nausea", "50 mg"]}
    assert snap_record(parsed, ground_prediction(parsed, text)) == {"drugs": ["Zoloft"], "adverse_events": ["nausea"]}


def test_a_drug_trimmed_to_no_content_word_is_dropped():
    """"f/u C diff" trims to "f/u" (the reaction goes), which names nothing: no drug label at all."""
    text = "Plan: stop Zoloft, f/u C diff."
    parsed = {"drugs": ["Zoloft", "f/u C diff"], "adverse_events": []}
    assert snap_record(parsed, ground_prediction(parsed, text))["drugs"] == ["Zoloft"]


@pytest.mark.parametrize("span, name", [
    ("switch to clindamycin", "clindamycin"), ("his brother's Xanax", "Xanax"), ("given ondansetron", "ondansetron"),
    ("On lisinopril", "lisinopril"), ("mom’s Ambien", "Ambien")])
def test_trim_drug_drops_a_leading_order_or_possessive(span, name):
    assert trim_drug(span) == name


@pytest.mark.parametrize("text", ["steroids", "ACE inhibitor", "SSRIs", "blood thinners", "the pill", "statin",
                                  "contraceptive pill", "As for the",
                                  "beta blockers", "GLP-1 receptor agonist", "Pt reports", "pt denies", "ANC",
                                  "grade", "abt", "a handful"])
def test_classes_note_sentences_and_lab_shorthand_are_not_drug_like(text):
    assert not is_drug_like(trim_drug(text))


@pytest.mark.parametrize("name", ["insulin", "insulin glargine", "Lantus", "Ozempic", "Benadryl", "KCl", "MTX"])
def test_products_beside_their_class_names_stay_drug_like(name):
    assert is_drug_like(name)


@pytest.mark.parametrize("text, predicted", [
    # a web form: the reporter's name above "Message:" is no drug; the message's drug stays
    ("Henrik Dahl\nh.dahl@example.no\nReason for contacting: Adverse Event\n\nMessage: Zyrtec made me drowsy.",
     ["Henrik Dahl", "Zyrtec"]),
    # an e-mail: subject line and signature carry no labels, unless the message itself names the drug
    ("From: a@example.com\nSubject: Zyrtec question\n\nI get a rash on Zyrtec.\n\nBest regards,\nAnna Berg",
     ["Anna Berg", "Zyrtec"]),
])
def test_snap_drops_drugs_found_only_in_header_or_signature_lines(text, predicted):
    parsed = {"drugs": predicted, "adverse_events": []}
    assert snap_record(parsed, ground_prediction(parsed, text), text)["drugs"] == ["Zyrtec"]


def test_message_bounds_of_a_plain_post_is_the_whole_text():
    from helpers.drug_like import message_bounds
    text = "been on Lexapro 3 weeks, dizzy all the time. thanks"
    assert message_bounds(text) == (0, len(text))


def test_snap_drops_events_that_cannot_be_reactions_and_keeps_the_drug_they_shadowed():
    text = "Pt on semaglutide, c/o N/V and neck pain; neck stiff. Tx: ondansetron. Symptoms improved."
    parsed = {"drugs": ["semaglutide", "ondansetron"],
              "adverse_events": ["N/V", "neck", "neck pain", "ondansetron", "Symptoms"]}
    snapped = snap_record(parsed, ground_prediction(parsed, text), text)
    assert snapped == {"drugs": ["semaglutide", "ondansetron"], "adverse_events": ["N/V", "neck pain"]}


@pytest.mark.parametrize("text", ["neck pain", "swollen ankles", "dry mouth", "felt sick", "hair loss", "N/V",
                                  "side pain", "reaction to the dye"])
def test_reactions_with_body_sites_stay_event_like(text):
    from helpers.event_like import is_event_like
    assert is_event_like(text)


@pytest.mark.parametrize("text", ["FOLFOX", "R-CHOP", "FOLFIRINOX", "AC-T"])
def test_regimen_acronyms_are_not_drug_like(text):
    """Annotation guide: a regimen acronym is not a product (its components are)."""
    assert not is_drug_like(text)


@pytest.mark.parametrize("text", ["puffy eyelids", "shaky hands", "jaw clicking", "sore gums", "night sweats pill"])
def test_strings_holding_a_reaction_word_are_not_drug_like(text):
    assert not is_drug_like(text)


@pytest.mark.parametrize("name", ["calcium carbonate", "vitamin D", "potassium chloride", "ferrous sulfate",
                                  "magnesium", "Excedrin Migraine", "Advil Cold & Sinus", "Tylenol PM"])
def test_substances_and_brands_beside_reaction_words_stay_drug_like(name):
    """"calcium" is also a reaction word ("low calcium"), "Migraine" part of a brand's name: both stay drugs."""
    assert is_drug_like(name)


@pytest.mark.parametrize("span, name", [("intravenous vancomycin", "vancomycin"), ("IV ceftriaxone", "ceftriaxone"),
                                        ("oral prednisone", "prednisone"), ("d/c oxybutynin", "oxybutynin"),
                                        ("taper gabapentin", "gabapentin"), ("As for the rosuvastatin", "rosuvastatin")])
def test_trim_drug_drops_a_leading_route_order_or_function_word(span, name):
    assert trim_drug(span) == name


@pytest.mark.parametrize("split", ["handwritten", "handwritten_blind"])
def test_no_hand_written_drug_label_is_rejected(split):
    """The drug filter never drops a drug a person labelled: every gold drug stays drug-like."""
    import json
    from helpers.paths import handwritten_file
    labels = {d for line in handwritten_file(split).read_text().splitlines() for d in json.loads(line)["drugs"]}
    assert len(labels) > 100
    assert [d for d in labels if not is_drug_like(d)] == []
