"""The baselines: lexicon matching, BIO encoding/decoding on the real tokenizer, prediction files in
the LLMs' format, and a tiny encoder training run."""
from __future__ import annotations

import json
import random

import pytest

from helpers import baselines_encoder as be
from helpers import paths
from helpers.baselines import (Span, make_span, prediction_record, remove_overlaps,
                               write_span_predictions)
from helpers.baselines_lexicon import build_lexicon, term_forms, word_variants
from helpers.io import DataError, read_jsonl
from helpers.schemas import validate_prediction, validate_report


def drug_record(name, generics=(), brands=(), common=(), serious=()):
    return {"name": name, "generic_names": list(generics), "brand_names": list(brands),
            "drug_class": "", "uses": [], "side_effects": {"common": list(common),
                                                           "serious": list(serious)},
            "missing_sections": [], "source": "test", "source_url": "", "fetched_at": "",
            "content_hash": ""}


RECORDS = [
    drug_record("Lipitor", ["atorvastatin"], ["Lipitor"],
                common=["muscle pain", "headache", "diarrhea"],
                serious=["dark urine", "pain", "hypoglycemia (low blood sugar)", "vomiting"]),
    drug_record("Nexium", ["esomeprazole"], ["Nexium 24HR"], common=["rash", "light-headed"]),
]


@pytest.fixture(scope="module")
def lexicon():
    return build_lexicon(RECORDS, fuzzy_threshold=85)


def found(lexicon, text):
    spans = lexicon.match(text)
    for sp in spans:
        assert text[sp.start:sp.end] == sp.text
    return [(sp.label, sp.text) for sp in spans]


# ---- lexicon ----------------------------------------------------------------------------------
def test_variants_cover_plural_singular_and_ing():
    assert {"headaches"} <= word_variants("headache")
    assert {"rashes"} <= word_variants("rash")
    assert "vomit" in word_variants("vomiting") and "vomits" in word_variants("vomiting")
    assert "bruise" in word_variants("bruising") and "bruising" in word_variants("bruise")
    assert "palpitation" in word_variants("palpitations")
    assert word_variants("dizziness") == {"dizziness"}
    assert ("light", "headed") in term_forms("light-headed")
    assert ("lightheaded",) in term_forms("light-headed")


def test_lexicon_case_plural_hyphen_and_offsets(lexicon):
    text = "Took LIPITOR daily. Bad Headaches, then muscle-pain and I was LightHeaded."
    assert found(lexicon, text) == [("drug", "LIPITOR"), ("adverse_event", "Headaches"),
                                    ("adverse_event", "muscle-pain"),
                                    ("adverse_event", "LightHeaded")]


def test_lexicon_longest_match_wins_without_overlaps(lexicon):
    text = "muscle pain, pain in my side, and Nexium 24HR gave me dark urine"
    got = found(lexicon, text)
    assert got == [("adverse_event", "muscle pain"), ("adverse_event", "pain"),
                   ("drug", "Nexium 24HR"), ("adverse_event", "dark urine")]
    spans = lexicon.match(text)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_lexicon_respects_word_boundaries_and_punctuation(lexicon):
    assert found(lexicon, "a painful, rashy week; muscle. pain") == [("adverse_event", "pain")]


def test_lexicon_parenthetical_terms_and_generic_names(lexicon):
    text = "On atorvastatin I had low blood sugar and kept vomiting."
    assert found(lexicon, text) == [("drug", "atorvastatin"), ("adverse_event", "low blood sugar"),
                                    ("adverse_event", "vomiting")]


def test_lexicon_fuzzy_catches_misspelled_drugs_only(lexicon):
    text = "My doctor switched me from Lipiter to esomeprazol, and I need a lipid panel."
    assert found(lexicon, text) == [("drug", "Lipiter"), ("drug", "esomeprazol")]
    strict = build_lexicon(RECORDS, fuzzy_threshold=101)
    assert found(strict, text) == []


# ---- prediction records -----------------------------------------------------------------------
REPORT = {"id": "r1", "text": "Lipitor gave me a rash. Rash again today, lipitor.",
          "drugs": ["Lipitor"], "adverse_events": ["rash"],
          "spans": [{"label": "drug", "start": 0, "end": 7, "text": "Lipitor"},
                    {"label": "adverse_event", "start": 18, "end": 22, "text": "rash"}]}


def test_prediction_record_is_the_llm_format_and_deduped(lexicon):
    validate_report(REPORT)
    spans = lexicon.match(REPORT["text"])
    rec = prediction_record(REPORT, spans, "lexicon")
    validate_prediction(rec)
    assert rec["parsed"] == {"drugs": ["Lipitor"], "adverse_events": ["rash"]}
    assert json.loads(rec["raw"]) == rec["parsed"]
    assert rec["gold"] == {"drugs": ["Lipitor"], "adverse_events": ["rash"]}
    assert rec["parse_ok"] and rec["parse_status"] == "ok" and rec["system"] == "lexicon"
    for g in rec["grounding"]:
        assert REPORT["text"][g["start"]:g["end"]] == g["predicted"] == g["matched_text"]
        assert g["status"] == "exact" and g["score"] == 100
    assert [g["field"] for g in rec["grounding"]] == ["drugs", "adverse_events"]
    # step 6 scores spans from the prediction file alone: the gold offsets travel with it
    assert rec["gold_spans"] == [{"label": "drug", "start": 0, "end": 7},
                                 {"label": "adverse_event", "start": 18, "end": 22}]
    with pytest.raises(ValueError, match="not the text's own"):
        prediction_record(REPORT, [Span(0, 7, "drug", "Lipitol")], "lexicon")


def test_write_span_predictions_lands_where_step5_writes(tmp_path, monkeypatch, lexicon):
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    out = write_span_predictions("t", "test", "lexicon", [REPORT], [lexicon.match(REPORT["text"])])
    assert out == paths.predictions_file("t", "test", "lexicon")
    rows = read_jsonl(out)
    assert len(rows) == 1 and rows[0]["id"] == "r1"
    with pytest.raises(ValueError, match="1 reports but 0"):
        write_span_predictions("t", "test", "lexicon", [REPORT], [])


def test_remove_overlaps_keeps_longest():
    t = "dark urine"
    got = remove_overlaps([make_span(t, 5, 10, "adverse_event"), make_span(t, 0, 10, "adverse_event")])
    assert [s.text for s in got] == ["dark urine"]


# ---- BIO encoding / decoding on the real tokenizer --------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    return be.load_tokenizer()


def _roundtrip(tokenizer, text, spans, max_length, stride):
    wins = be.windows(tokenizer, text, max_length, stride, spans)
    seen = {}
    for w in wins:
        for off, tag in zip(w["offsets"], w["labels"]):
            if tag != be.IGNORE:
                # a token seen in two windows may be B in one (window start) and I in the other
                seen[off] = tag if off not in seen or be.TAGS[seen[off]].startswith("B") else seen[off]
    offsets = sorted(seen)
    return wins, be.spans_from_tags(text, offsets, [seen[o] for o in offsets])


def test_bio_roundtrip_gives_back_exact_spans(tokenizer):
    text = ("After Lipitor (atorvastatin) I got muscle-pain, dark urine and a rash; "
            "Nexium 24HR then. No nausea.")
    spans = sorted(make_span(text, text.index(w), text.index(w) + len(w), lab) for w, lab in [
        ("Lipitor", "drug"), ("atorvastatin", "drug"), ("muscle-pain", "adverse_event"),
        ("dark urine", "adverse_event"), ("rash", "adverse_event"), ("Nexium 24HR", "drug")])
    wins, back = _roundtrip(tokenizer, text, spans, 128, 32)
    assert len(wins) == 1
    tags = [be.TAGS[t] for t in wins[0]["labels"] if t != be.IGNORE]
    assert tags[:4] == ["O", "B-DRUG", "I-DRUG", "O"]      # after, lip, ##itor, (
    assert back == spans


def test_bio_sliding_windows_lose_nothing_on_long_text(tokenizer):
    rng = random.Random(0)
    text, spans = "", []
    for _ in range(40):
        filler = " ".join(rng.choice(["the", "day", "was", "long", "then"]) for _ in range(5))
        text += f"{filler} and on "
        spans.append(make_span(text + "Crestor", len(text), len(text) + 7, "drug"))
        text += "Crestor I had "
        spans.append(make_span(text + "bad headaches", len(text), len(text) + 13, "adverse_event"))
        text += "bad headaches. "
    spans = [make_span(text, s.start, s.end, s.label) for s in spans]
    wins, back = _roundtrip(tokenizer, text, spans, 48, 12)
    assert len(wins) > 10 and all(len(w["input_ids"]) <= 48 for w in wins)
    every = {tuple(o) for o in tokenizer(text, add_special_tokens=False,
                                         return_offsets_mapping=True)["offset_mapping"]}
    assert {o for w in wins for o in w["offsets"] if o != (0, 0)} == every
    assert be.unlabelled_spans({}, spans, wins) == 0
    assert back == sorted(spans)
    with pytest.raises(ValueError, match="stride"):
        be.windows(tokenizer, text, 16, 14)


def test_decoding_widens_to_whole_words_and_accepts_i_without_b(tokenizer):
    text = "Lipitor hurt"
    enc = tokenizer(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]][1:-1]       # lip, ##itor, hurt
    tags = [be.TAG_ID["O"], be.TAG_ID["I-DRUG"], be.TAG_ID["O"]]
    assert be.spans_from_tags(text, offsets, tags) == [make_span(text, 0, 7, "drug")]


def test_training_windows_need_offsets(tokenizer):
    with pytest.raises(DataError, match="no 'spans'"):
        be.training_windows(tokenizer, [{"id": "x", "text": "a b", "drugs": [], "adverse_events": []}],
                            be.EncoderConfig(), "train")


# ---- a tiny training run ----------------------------------------------------------------------
DRUGS = ["Lipitor", "Zocor", "Nexium", "Humira", "Cymbalta", "Ambien"]
EVENTS = ["nausea", "rash", "headache", "dizziness", "insomnia", "fatigue"]


def toy_reports(n, seed):
    """Reports where the drug always follows 'taking' and the event always follows 'got'."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d, e = rng.choice(DRUGS), rng.choice(EVENTS)
        pre = rng.choice(["Since taking ", "After taking ", "I was taking "])
        mid = rng.choice([" I got ", " and then I got ", ", so I got "])
        text = f"{pre}{d}{mid}{e} every day."
        ds, es = len(pre), len(pre) + len(d) + len(mid)
        out.append({"id": f"toy-{seed}-{i}", "text": text, "drugs": [d], "adverse_events": [e],
                    "spans": [{"label": "drug", "start": ds, "end": ds + len(d), "text": d},
                              {"label": "adverse_event", "start": es, "end": es + len(e), "text": e}]})
    return out


@pytest.mark.slow
def test_tiny_encoder_learns_a_trivial_tagging(tmp_path):
    train, val, test = toy_reports(40, 1), toy_reports(8, 2), toy_reports(12, 3)
    cfg = be.EncoderConfig(epochs=3, batch_size=8, lr=5e-4, max_length=32, stride=8, seed=5)
    fit = be.train_encoder(train, val, tmp_path / "enc", cfg, progress=False)
    stats = fit.stats
    assert stats["steps"] == 15 and stats["train_windows"] == 40
    pred = be.predict_spans(fit.model, fit.tokenizer, [r["text"] for r in test], cfg, progress=False)
    scores = be.span_scores([[make_span(r["text"], s["start"], s["end"], s["label"])
                              for s in r["spans"]] for r in test], pred)
    assert scores["span_f1"] > 0.5, scores          # chance (a random tag per token) is near 0
    for name in ("model.safetensors", "loss_curve.csv", "loss_curve.png", be.STATS_FILE):
        assert (tmp_path / "enc" / name).exists()
    assert be.saved_fits(tmp_path / "enc", cfg, be.data_hash(train, val))
    saved = be.load_trained(tmp_path / "enc")
    again = be.predict_spans(saved.model, saved.tokenizer, [r["text"] for r in test], cfg, progress=False)
    assert again == pred and saved.stats["best_epoch"] == stats["best_epoch"]


def test_context_errors_sort_false_positive_events():
    from helpers.baselines import context_errors
    report = {"meta": {"negated": ["nausea"], "disease": "migraine"}}
    pred = {"gold": {"drugs": [], "adverse_events": ["rash", "fever"]},
            "parsed": {"drugs": [], "adverse_events": ["Rash", "nausea", "Migraine", "hiccups"]}}
    out = context_errors([report], [pred])
    assert out == {"false_positives": {"negated symptom": 1, "disease treated": 1, "other": 1},
                   "missed": 1}
