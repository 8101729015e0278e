"""Step-6 scores on small prediction sets whose numbers are computed by hand in the comments."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import breakdowns, metrics, paths, plots, scoring, tables
from helpers.io import DataError, write_jsonl


def pred(rid, gold_d, gold_a, pred_d=None, pred_a=None, grounding=(), text="report text"):
    """A step-5 prediction record; pred_d None means the output did not parse."""
    ok = pred_d is not None
    return {"id": rid, "text": text, "gold": {"drugs": gold_d, "adverse_events": gold_a},
            "raw": json.dumps({"drugs": pred_d, "adverse_events": pred_a}) if ok else "garbled {",
            "parsed": {"drugs": pred_d, "adverse_events": pred_a} if ok else None,
            "parse_ok": ok, "parse_status": "ok" if ok else "failed",
            "grounding": [{"field": "adverse_events", "predicted": p, "start": 0, "end": 1,
                           "matched_text": p, "status": s, "score": 1.0} for p, s in grounding],
            "system": "x-lora", "model": "x"}


# A: case slip on the drug, trailing dot on an event, one extra event
# B: one of two drugs found, event only partly copied
# C: output did not parse
# D: an invented drug, the event repeated
PREDS = [
    pred("A", ["Lipitor"], ["muscle pain", "dark urine"], ["lipitor"],
         ["muscle pain", "dark urine.", "headache"],
         grounding=[("lipitor", "case"), ("muscle pain", "exact"), ("dark urine.", "fuzzy"),
                    ("headache", "not_found")]),
    pred("B", ["Crestor", "Zocor"], ["severe back pain"], ["Crestor"], ["back pain"],
         grounding=[("Crestor", "exact"), ("back pain", "exact")]),
    pred("C", ["Ambien"], ["dizziness"]),
    pred("D", [], ["rash"], ["Advil"], ["rash", "rash"],
         grounding=[("Advil", "not_found"), ("rash", "exact"), ("rash", "exact")]),
]


# ---- matching -------------------------------------------------------------------------------
def test_normalize_and_overlap():
    assert metrics.normalize("  Dark   URINE. ") == "dark urine"
    assert metrics.normalize("anti-nausea") == "anti nausea"
    assert metrics.overlap("back pain", "severe back pain") == pytest.approx(0.8)
    # function words alone do not make a match
    assert metrics.overlap("pain in my legs", "swelling in my feet") == 0.0
    assert metrics.overlap("in", "in") == 1.0
    assert metrics.overlap("headaches", "headache") == 1.0
    assert metrics.overlap("dizziness", "dizzines") == 0.0


def test_match_items_is_one_to_one_and_prefers_exact():
    assert metrics.match_items(["rash"], ["rash", "rash"], "exact") == [(0, 0)]
    assert metrics.match_items(["Nausea"], ["nausea"], "exact") == []
    assert metrics.match_items(["Nausea"], ["nausea"], "normalized") == [(0, 0)]
    # "back pain" overlaps both gold items; the exact pair wins, the other gold item stays free
    pairs = metrics.match_items(["severe back pain", "back pain"], ["back pain"], "relaxed")
    assert pairs == [(1, 0)]
    assert metrics.match_items(["headache"], ["nausea"], "relaxed") == []
    with pytest.raises(ValueError, match="unknown matching"):
        metrics.match_items([], [], "fuzzy")


def test_prf_zero_denominators():
    assert metrics.prf(0, 0, 0) == (0.0, 0.0, 0.0)
    assert metrics.prf(1, 1, 2) == pytest.approx((0.5, 1 / 3, 0.4))


# ---- set-exact (the earlier 2023 study's metric) ----------------------------------------------------------------------
def test_set_exact_scores_hand_computed():
    # sets: A G{Lipitor,muscle pain,dark urine} P{lipitor,muscle pain,dark urine.,headache} 1/3/2
    #       B G{Crestor,Zocor,severe back pain} P{Crestor,back pain} 1/1/2
    #       C G{Ambien,dizziness} P{} 0/0/2     D G{rash} P{Advil,rash} 1/1/0
    s = metrics.set_exact_scores(PREDS)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 5, 6)
    assert s["precision"] == pytest.approx(3 / 8)
    assert s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(6 / 17)


# ---- per-field scores ---------------------------------------------------------------------------
@pytest.mark.parametrize("field,matching,counts", [
    # drugs: exact A 0/1/1 B 1/0/1 C 0/0/1 D 0/1/0; normalized/relaxed A becomes 1/0/0
    ("drugs", "exact", (1, 2, 3)),
    ("drugs", "normalized", (2, 1, 2)),
    ("drugs", "relaxed", (2, 1, 2)),
    # events: exact A 1/2/1 B 0/1/1 C 0/0/1 D 1/1/0; normalized A 2/1/0; relaxed also B 1/0/0
    ("adverse_events", "exact", (2, 4, 3)),
    ("adverse_events", "normalized", (3, 3, 2)),
    ("adverse_events", "relaxed", (4, 2, 1)),
])
def test_field_scores_hand_computed(field, matching, counts):
    s = metrics.field_scores(PREDS, field, matching)
    assert (s["tp"], s["fp"], s["fn"]) == counts
    tp, fp, fn = counts
    assert s["precision"] == pytest.approx(tp / (tp + fp))
    assert s["recall"] == pytest.approx(tp / (tp + fn))


def test_field_f1_values():
    assert metrics.field_scores(PREDS, "drugs", "exact")["f1"] == pytest.approx(2 / 7)
    assert metrics.field_scores(PREDS, "drugs", "normalized")["f1"] == pytest.approx(4 / 7)
    assert metrics.field_scores(PREDS, "adverse_events", "exact")["f1"] == pytest.approx(4 / 11)
    assert metrics.field_scores(PREDS, "adverse_events", "normalized")["f1"] == pytest.approx(6 / 11)
    assert metrics.field_scores(PREDS, "adverse_events", "relaxed")["f1"] == pytest.approx(8 / 11)


def test_rates():
    assert metrics.parse_failure_rate(PREDS) == 0.25
    # 9 grounding entries: A 3 of 4, B 2 of 2, D 2 of 3 located (exact, case or fuzzy)
    assert metrics.grounding_rate(PREDS) == pytest.approx(7 / 9)
    assert np.isnan(metrics.grounding_rate([pred("Z", ["a"], ["b"], [], [])]))


def test_invented_drug_rate():
    # only D names no drug, and the system output "Advil" there
    assert metrics.invented_drug_rate(PREDS) == 1.0
    quiet = pred("Q", [], ["rash"], [], ["rash"])
    assert metrics.invented_drug_rate(PREDS + [quiet]) == 0.5
    assert np.isnan(metrics.invented_drug_rate(PREDS[:3]))
    assert scoring.evaluate(PREDS + [quiet], n_boot=0)["invented_drug_rate"] == 0.5


def test_parse_failure_predicts_nothing_even_with_parsed_content():
    rec = pred("E", ["Zoloft"], ["insomnia"], ["Zoloft"], ["insomnia"])
    rec["parse_ok"] = False
    assert metrics.predicted(rec) == {"drugs": [], "adverse_events": []}
    assert metrics.set_exact_scores([rec])["fn"] == 2


# ---- bootstrap -----------------------------------------------------------------------------------
def test_bootstrap_ci_degenerate_and_seeded():
    same = np.array([[1, 1, 0]] * 5)  # every report P 1/2, R 1
    ci = metrics.bootstrap_ci(same, 50, seed=1)
    assert ci["p"] == pytest.approx((0.5, 0.5))
    assert ci["r"] == pytest.approx((1.0, 1.0))
    assert ci["f1"] == pytest.approx((2 / 3, 2 / 3))
    mixed = np.array([[1, 0, 0], [0, 1, 1], [2, 0, 1], [0, 0, 1], [1, 1, 0]])
    a, b = metrics.bootstrap_ci(mixed, 300, seed=7), metrics.bootstrap_ci(mixed, 300, seed=7)
    assert a == b
    assert metrics.bootstrap_ci(mixed, 300, seed=8) != a
    p, r, f = metrics.prf(*mixed.sum(axis=0))
    for key, point in (("p", p), ("r", r), ("f1", f)):
        lo, hi = a[key]
        assert 0 <= lo < point < hi <= 1
    with pytest.raises(ValueError):
        metrics.bootstrap_ci(np.zeros((0, 3)), 10, seed=1)


def test_evaluate_row():
    row = scoring.evaluate(PREDS, n_boot=100, seed=3)
    assert row["n"] == 4
    assert row["set_exact_p"] == pytest.approx(3 / 8)
    assert row["adverse_events_relaxed_f1"] == pytest.approx(8 / 11)
    assert row["adverse_events_relaxed_tp"] == 4
    assert row["parse_fail_rate"] == 0.25
    assert row["grounding_rate"] == pytest.approx(7 / 9)
    for f in ("drugs", "adverse_events"):
        for m in metrics.MATCHINGS:
            for k in ("p", "r", "f1"):
                lo, hi = row[f"{f}_{m}_{k}_lo"], row[f"{f}_{m}_{k}_hi"]
                assert 0 <= lo <= hi <= 1
    assert pd.Series(scoring.evaluate(PREDS, n_boot=100, seed=3)).equals(pd.Series(row))
    # no record carries gold offsets: span scores are not measurable, not zero
    assert np.isnan(row["spans_all_strict_f1"]) and np.isnan(row["spans_drug_partial_p"])


# ---- error analysis --------------------------------------------------------------------------------
def test_error_types_hand_computed():
    counts = breakdowns.error_type_counts(PREDS)
    # drugs: Lipitor~lipitor partial; Crestor correct; Zocor, Ambien missed; Advil extra
    assert counts["drugs"] == {"correct": 1, "missed": 2, "extra": 1, "partial": 1}
    # events: muscle pain, rash correct; dark urine~dark urine., severe back pain~back pain partial;
    # dizziness missed; headache and the second rash extra
    assert counts["adverse_events"] == {"correct": 2, "missed": 1, "extra": 2, "partial": 2}
    items = breakdowns.error_items(PREDS)
    partial = items[(items["type"] == "partial") & (items["field"] == "adverse_events")]
    assert set(zip(partial["gold"], partial["predicted"])) == {
        ("dark urine", "dark urine."), ("severe back pain", "back pain")}


def test_per_drug_hand_computed():
    df = breakdowns.per_drug(PREDS).set_index("drug")
    assert list(df.index) == ["(none)", "Ambien", "Crestor", "Lipitor", "Zocor"]
    assert df.loc["Lipitor", "drug_recall"] == 1.0
    assert df.loc["Zocor", "drug_recall"] == 0.0
    assert np.isnan(df.loc["(none)", "drug_recall"])
    # Lipitor (A, normalized): events 2/1/0 -> F1 0.8; both fields 3/1/0 -> F1 6/7
    assert df.loc["Lipitor", "ae_f1"] == pytest.approx(0.8)
    assert df.loc["Lipitor", "f1"] == pytest.approx(6 / 7)
    # Crestor and Zocor share report B: both fields 1/1/2 -> F1 0.4
    assert df.loc["Crestor", "f1"] == pytest.approx(0.4)
    assert df.loc["Zocor", "f1"] == pytest.approx(0.4)
    # no drug (D): events 1/1/0 -> 2/3; both fields 1/2/0 -> 0.5
    assert df.loc["(none)", "ae_f1"] == pytest.approx(2 / 3)
    assert df.loc["(none)", "f1"] == pytest.approx(0.5)
    assert df["n"].sum() == 5  # B counts for both of its drugs


def test_worst_reports_order_and_content():
    df = breakdowns.worst_reports(PREDS, k=3)
    # normalized F1 over both fields: C 0, B 0.4, D 0.5, A 6/7
    assert list(df["id"]) == ["C", "B", "D"]
    assert list(df["f1"]) == pytest.approx([0.0, 0.4, 0.5])
    assert df.loc[0, "missed"] == "Ambien; dizziness"
    assert df.loc[0, "raw"] == "garbled {"
    assert df.loc[1, "partial"] == "severe back pain ~ back pain"
    assert df.loc[2, "extra"] == "Advil; rash"


# ---- a run on disk ----------------------------------------------------------------------------------
@pytest.fixture
def run_root(tmp_path, monkeypatch):
    """A study root with predictions for two splits and two systems of run 'demo'."""
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    perfect = [pred(p["id"], p["gold"]["drugs"], p["gold"]["adverse_events"],
                    p["gold"]["drugs"], p["gold"]["adverse_events"]) for p in PREDS]
    for split in ("test", "test_unseen"):
        write_jsonl(paths.predictions_file("demo", split, "x-lora"), PREDS)
        write_jsonl(paths.predictions_file("demo", split, "lexicon"), perfect)
    return tmp_path


def test_compare_systems(run_root):
    df = scoring.compare_systems("demo", n_boot=50, seed=1)
    assert list(zip(df["split"], df["system"])) == [
        ("test", "lexicon"), ("test", "x-lora"), ("test_unseen", "lexicon"), ("test_unseen", "x-lora")]
    lora = df[(df["system"] == "x-lora") & (df["split"] == "test")].iloc[0]
    assert lora["set_exact_f1"] == pytest.approx(6 / 17)
    assert lora["drugs_normalized_f1"] == pytest.approx(4 / 7)
    assert lora["n"] == 4
    lex = df[df["system"] == "lexicon"]
    assert (lex["adverse_events_exact_f1"] == 1.0).all()
    assert (lex["adverse_events_exact_f1_lo"] == 1.0).all()
    only = scoring.compare_systems("demo", splits=["test_unseen"], systems=["x-lora"], n_boot=10)
    assert len(only) == 1
    with pytest.raises(FileNotFoundError, match="no prediction files"):
        scoring.compare_systems("nothing-here")


def test_other_runs_join_only_on_the_shared_handwritten_split(run_root):
    # another run (say, an adapter trained on another data mix) scored on its own synthetic test split
    # and on the hand-written set: only the hand-written file joins, named <system>@<run>
    write_jsonl(paths.predictions_file("other", "test", "x-lora"), PREDS)
    write_jsonl(paths.predictions_file("other", "handwritten", "x-lora"), PREDS[:2])
    assert ("handwritten", "x-lora@other") not in scoring.prediction_files("demo")
    files = scoring.prediction_files("demo", also_from=["other"])
    assert ("handwritten", "x-lora@other") in files and ("test", "x-lora@other") not in files
    df = scoring.compare_systems("demo", n_boot=10, also_from=["other"])
    row = df[df["system"] == "x-lora@other"].iloc[0]
    assert row["split"] == "handwritten" and row["n"] == 2
    details = scoring.collect("demo", n_boot=10, also_from=["other"])
    assert "x-lora@other" in set(details["per_drug"]["system"])
    assert scoring.prediction_files("demo", also_from=["never-ran"]) == scoring.prediction_files("demo")


def test_unsnapped_rows_score_the_models_own_strings(run_root):
    # grounding snapped "dark urin" to the report's "dark urine"; the unsnapped row scores the copy
    rec = pred("S", ["Lipitor"], ["dark urine"], ["Lipitor"], ["dark urine"])
    rec["parsed_unsnapped"] = {"drugs": ["Lipitor"], "adverse_events": ["dark urin"]}
    same = pred("T", ["Zocor"], ["rash"], ["Zocor"], ["rash"])
    same["parsed_unsnapped"] = {"drugs": ["Zocor"], "adverse_events": ["rash"]}
    write_jsonl(paths.predictions_file("demo", "test", "y-lora"), [rec, same])
    write_jsonl(paths.predictions_file("demo", "test", "z-lora"), [same])
    df = scoring.compare_systems("demo", splits=["test"], systems=["y-lora", "z-lora"], n_boot=10)
    assert list(df["system"]) == ["y-lora", "y-lora (unsnapped)", "z-lora"]
    assert list(df["unsnapped"]) == [False, True, False]
    # snapped: 4 strings all right; unsnapped: "dark urin" is wrong -> set-exact P 3/4, R 3/4
    assert list(df["set_exact_f1"]) == pytest.approx([1.0, 0.75, 1.0])
    assert df["parse_statuses"].iloc[0] == "ok 2"


def test_bad_prediction_file_names_line(run_root):
    path = paths.predictions_file("demo", "test", "broken")
    rows = [PREDS[0], {k: v for k, v in PREDS[1].items() if k != "grounding"}]
    write_jsonl(path, rows)
    with pytest.raises(DataError, match=r"broken.jsonl:2: missing keys \['grounding'\]"):
        scoring.compare_systems("demo", systems=["broken"])
    write_jsonl(path, [])
    with pytest.raises(DataError, match="no prediction records"):
        metrics.load_predictions(path)


def test_collect_and_markdown(run_root):
    out = scoring.collect("demo", k_worst=2)
    assert set(out) == {"per_drug", "error_types", "worst_reports", "per_genre"}
    assert out["per_genre"].empty  # no record carries a genre
    et = out["error_types"]
    row = et[(et["system"] == "x-lora") & (et["split"] == "test") & (et["field"] == "drugs")].iloc[0]
    assert (row["missed"], row["extra"], row["partial"]) == (2, 1, 1)
    assert len(out["worst_reports"]) == 8  # 2 per (split, system)
    comp = scoring.compare_systems("demo", n_boot=20, seed=1)
    md = tables.comparison_markdown(comp, "demo", 20)
    assert "## split `test`" in md and "## split `test_unseen`" in md
    assert "| x-lora | 4 | 0.38 | 0.33 | 0.35 | 0.57 [" in md
    table = tables.headline(comp)
    assert list(table.columns[:6]) == ["split", "system", "n", "set-exact P", "set-exact R", "set-exact F1"]


def test_markdown_table_escapes():
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [0.12345, float("nan")]})
    assert tables.markdown_table(df, digits=2) == (
        "| a | b |\n|---|---|\n| x\\|y | 0.12 |\n| z | - |\n")


def test_plots_write_pngs(run_root, tmp_path):
    comp = scoring.compare_systems("demo", n_boot=20, seed=1)
    out = scoring.collect("demo")
    figs = {
        "f1.png": plots.f1_with_ci(comp, path=tmp_path / "f1.png"),
        "errors.png": plots.error_types(out["error_types"], path=tmp_path / "errors.png"),
        "drug.png": plots.per_drug_heatmap(out["per_drug"][out["per_drug"]["split"] == "test"],
                                           path=tmp_path / "drug.png"),
    }
    for name, fig in figs.items():
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        assert fig.axes
    heat = figs["drug.png"].axes[0].images[0].get_array()
    assert heat.shape == (2, 5)  # systems x drugs


def test_expected_systems():
    assert scoring.expected_systems(["a", "b"]) == ["a-base", "a-lora", "b-base", "b-lora"]
    with pytest.raises(TypeError, match="list of model keys"):
        scoring.expected_systems("a")


def test_paired_f1_difference():
    a = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    # b fixes report 2 (0/1/1 -> 1/0/0): a sums to 2/2/2 (F1 0.5), b to 3/1/1 (F1 0.75)
    b = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    d = metrics.paired_f1_difference(a, b, 300, seed=2)
    assert d["delta"] == pytest.approx(0.25)
    assert 0 <= d["lo"] <= d["delta"] <= d["hi"]  # b is never worse on any resample
    same = metrics.paired_f1_difference(a, a, 50, seed=2)
    assert (same["delta"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same reports"):
        metrics.paired_f1_difference(a, b[:2], 10, seed=1)


def test_lora_gains(run_root):
    # x-base: the parse failures of PREDS everywhere; x-lora: PREDS -> gains are hand-computable
    base = [pred(p["id"], p["gold"]["drugs"], p["gold"]["adverse_events"]) for p in PREDS]
    for split in ("test", "test_unseen"):
        write_jsonl(paths.predictions_file("demo", split, "x-base"), base)
    g = scoring.lora_gains("demo", ["x", "absent"], n_boot=50, seed=1)
    assert sorted(set(g["split"])) == ["test", "test_unseen"] and set(g["model"]) == {"x"}
    row = g[(g["split"] == "test") & (g["score"] == "set_exact")].iloc[0]
    assert row["base_f1"] == 0.0 and row["lora_f1"] == pytest.approx(6 / 17)
    assert row["gain"] == pytest.approx(6 / 17)
    ae = g[(g["split"] == "test") & (g["score"] == "adverse_events_relaxed")].iloc[0]
    assert ae["gain"] == pytest.approx(8 / 11) and ae["gain_lo"] > 0
    md = tables.comparison_markdown(scoring.compare_systems("demo", n_boot=10), "demo", 10, g)
    assert "## LoRA - base" in md and "| test | x | +0.35 [" in md
    # the same reports in another order pair by id
    write_jsonl(paths.predictions_file("demo", "test", "x-base"), base[::-1])
    g2 = scoring.lora_gains("demo", ["x"], n_boot=50, seed=1)
    assert g2[g2["split"] == "test"]["gain"].tolist() == pytest.approx(
        g[g["split"] == "test"]["gain"].tolist())
    # different report sets cannot be paired
    write_jsonl(paths.predictions_file("demo", "test", "x-base"), base[:3])
    with pytest.raises(DataError, match="different reports"):
        scoring.lora_gains("demo", ["x"], n_boot=10)
