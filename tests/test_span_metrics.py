"""Span-level scores (strict and partial, per label) on reports whose numbers are worked out by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import schemas, scoring, span_metrics, tables
from helpers.grounding import ground_prediction, snap_record
from helpers.io import DataError

TEXT = "Lipitor gave me muscle pain. My muscle pain got worse, then dark urine."
MP1 = TEXT.index("muscle pain")
MP2 = TEXT.index("muscle pain", MP1 + 1)
DU = TEXT.index("dark urine")
GOLD = [{"label": "drug", "start": 0, "end": 7}, {"label": "adverse_event", "start": MP1, "end": MP1 + 11},
        {"label": "adverse_event", "start": MP2, "end": MP2 + 11},
        {"label": "adverse_event", "start": DU, "end": DU + 10}]


def rec(drugs, events, gold_spans=GOLD, text=TEXT, parse_ok=True, rid="r1", genre=None):
    """A step-5 record made the way step 5 makes it: grounded, snapped, gold spans attached."""
    parsed = {"drugs": drugs, "adverse_events": events}
    grounding = ground_prediction(parsed, text)
    out = {"id": rid, "text": text, "raw": "", "parse_ok": parse_ok, "grounding": grounding,
           "parsed": snap_record(parsed, grounding), "parsed_unsnapped": parsed,
           "gold": {"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "dark urine"]}}
    if gold_spans is not None:
        out["gold_spans"] = gold_spans
    if genre:
        out["genre"] = genre
    return out


def counts(r, **kw):
    gold = span_metrics.gold_spans(r)
    return span_metrics.report_span_counts(gold, span_metrics.predicted_spans(r, **kw),
                                           span_metrics.unlocated(r))


def test_strict_and_partial_by_hand():
    # predicted: Lipitor, "muscle pain" (claims both mentions), "urine" (inside "dark urine")
    c = counts(rec(["Lipitor"], ["muscle pain", "urine"]))
    assert (c["spans_drug_strict_tp"], c["spans_drug_strict_fp"], c["spans_drug_strict_fn"]) == (1, 0, 0)
    # strict: both muscle pains right; "urine" != "dark urine" -> one fp and one fn
    assert [c[f"spans_adverse_event_strict_{k}"] for k in ("tp", "fp", "fn")] == [2, 1, 1]
    assert [c[f"spans_all_strict_{k}"] for k in ("tp", "fp", "fn")] == [3, 1, 1]
    # partial: "urine" overlaps "dark urine" with the same label
    assert [c[f"spans_all_partial_{k}"] for k in ("tp", "fp", "fn")] == [4, 0, 0]


def test_only_the_located_mention_without_projection():
    c = counts(rec(["Lipitor"], ["muscle pain"]), all_mentions=False)
    assert [c[f"spans_adverse_event_strict_{k}"] for k in ("tp", "fp", "fn")] == [1, 0, 2]


def test_mentions_are_whole_words_and_case_insensitive():
    text = "Rash, then a RASH again; no rashes."
    assert span_metrics.mentions(text, 0, 4) == [(0, 4), (13, 17)]


def test_labels_must_agree_and_unlocated_or_dropped_strings_predict_nothing():
    # "Lipitor" as an adverse event, unsnapped (step 5 with `snap: false`): right place, wrong label -> no
    # match in either matching
    wrong_label = rec([], ["Lipitor"])
    wrong_label["parsed"] = wrong_label["parsed_unsnapped"]
    c = counts(wrong_label)
    assert c["spans_all_partial_tp"] == 0 and c["spans_adverse_event_partial_fp"] == 1
    # snapping drops it: a drug name is no adverse event (helpers.event_like)
    assert span_metrics.predicted_spans(rec([], ["Lipitor"])) == []
    # "dark urine" as a drug is no drug name at all: step 5 drops it (helpers.drug_like)
    assert span_metrics.predicted_spans(rec(["dark urine"], [])) == []
    # a string not in the report is not located: no span, but a false positive of its label
    missing = rec(["Crestor"], ["hair loss", "dark urine"])
    assert span_metrics.predicted_spans(missing) == [(DU, DU + 10, "adverse_event")]
    assert span_metrics.unlocated(missing) == ["drug", "adverse_event"]
    c = counts(missing)
    assert [c[f"spans_drug_strict_{k}"] for k in ("tp", "fp", "fn")] == [0, 1, 1]
    assert [c[f"spans_adverse_event_partial_{k}"] for k in ("tp", "fp", "fn")] == [1, 1, 2]
    # snapping drops a drug the model also listed as an event: it predicts only the event span
    spans = span_metrics.predicted_spans(rec(["dark urine"], ["dark urine"]))
    assert spans == [(DU, DU + 10, "adverse_event")]
    # an output that did not parse predicts nothing, whatever its grounding says
    assert span_metrics.predicted_spans(rec(["Lipitor"], [], parse_ok=False)) == []


def test_partial_pairs_are_one_to_one():
    gold = [(0, 10, "adverse_event")]
    pred = [(0, 4, "adverse_event"), (5, 10, "adverse_event")]
    # both overlap the gold span; only the larger overlap (5 characters) is paired with it
    assert span_metrics.match_spans(gold, pred, "partial") == [(0, 1)]
    # an identical span wins over a larger-overlap one
    pred = [(0, 9, "adverse_event"), (0, 10, "adverse_event")]
    assert span_metrics.match_spans(gold, pred, "partial") == [(0, 1)]
    with pytest.raises(ValueError, match="unknown span matching"):
        span_metrics.match_spans(gold, pred, "relaxed")


def test_span_scores_and_missing_offsets():
    preds = [rec(["Lipitor"], ["muscle pain", "urine"]), rec([], [], rid="r2")]
    row = span_metrics.span_scores(preds, n_boot=50, seed=1)
    # strict: tp 3, fp 1, fn 1 + 4 (r2 found nothing) = 5 -> P 3/4, R 3/8
    assert row["spans_all_strict_p"] == pytest.approx(3 / 4)
    assert row["spans_all_strict_r"] == pytest.approx(3 / 8)
    assert row["spans_all_strict_f1"] == pytest.approx(0.5)
    assert 0 <= row["spans_all_strict_f1_lo"] <= 0.5 <= row["spans_all_strict_f1_hi"] <= 1
    # one record without gold offsets: span scores are not measurable (NaN), not zero
    bare = span_metrics.span_scores(preds + [rec(["Lipitor"], [], gold_spans=None)], n_boot=10)
    assert np.isnan(bare["spans_all_strict_f1"]) and np.isnan(bare["spans_drug_partial_r"])
    with pytest.raises(DataError, match="gold_spans"):
        span_metrics.gold_spans({"id": "x", "gold_spans": [{"label": "disease", "start": 0, "end": 3}]})


def test_gold_context_carries_spans_and_genre():
    report = {"id": "a", "text": "Lipitor: rash", "drugs": ["Lipitor"], "adverse_events": ["rash"],
              "genre": "forum",
              "spans": [{"label": "drug", "start": 0, "end": 7, "text": "Lipitor"},
                        {"label": "adverse_event", "start": 9, "end": 13, "text": "rash"}]}
    schemas.validate_report(report)
    assert schemas.gold_context(report) == {
        "gold_spans": [{"label": "drug", "start": 0, "end": 7},
                       {"label": "adverse_event", "start": 9, "end": 13}], "genre": "forum"}
    assert schemas.gold_context({"id": "b", "text": "x", "drugs": [], "adverse_events": []}) == {}
    with pytest.raises(DataError, match="'genre' must be a non-empty string"):
        schemas.validate_report({**report, "genre": ""})


def test_per_genre_and_its_table():
    preds = [rec(["Lipitor"], ["muscle pain", "dark urine"], rid="a", genre="forum"),
             rec([], [], rid="b", genre="forum"), rec(["Lipitor"], ["muscle pain"], rid="c", genre="social")]
    df = scoring.per_genre(preds, n_boot=20, seed=1).set_index("genre")
    assert df.loc["forum", "n"] == 2 and df.loc["social", "n"] == 1
    # forum: a perfect (3 strings), b nothing -> set-exact P 1, R 1/2
    assert df.loc["forum", "set_exact_r"] == pytest.approx(0.5)
    assert df.loc["social", "spans_all_strict_f1"] == pytest.approx(2 * 3 / 4 / (1 + 3 / 4))
    table = tables.genre_table(df.reset_index().assign(split="handwritten", system="s"))
    assert list(table["genre"]) == ["forum", "social"]
    assert table["invented drug"].isna().all()  # every gold names a drug: not measurable
    assert "| handwritten | forum | s | 2 |" in tables.markdown_table(table)
    assert scoring.per_genre([rec(["Lipitor"], [])]).empty
    assert tables.with_ci({"x_f1": float("nan")}, "x") == "-"


def test_invented_drug_table_every_system_on_every_split():
    comp = pd.DataFrame([
        {"split": "test", "system": "a", "invented_drug_rate": 0.25, "no_drug_reports": 8},
        {"split": "test", "system": "b", "invented_drug_rate": 0.0, "no_drug_reports": 8},
        {"split": "test_unseen", "system": "a", "invented_drug_rate": float("nan"), "no_drug_reports": 0},
    ])
    table = tables.invented_drug_table(comp)
    assert list(table.columns) == ["system", "test", "test_unseen"]
    assert table.to_dict("records") == [{"system": "a", "test": "0.25 (2/8)", "test_unseen": "-"},
                                        {"system": "b", "test": "0.00 (0/8)", "test_unseen": "-"}]
