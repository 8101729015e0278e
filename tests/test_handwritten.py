"""The hand-written evaluation set loads with the project's reader, every label is a located span,
the labels follow the annotation guide where a rule can be checked mechanically, and the figures
its README states are the file's."""
from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

import pytest

from helpers import schemas

HERE = Path(__file__).resolve().parents[1] / "data" / "handwritten"
REPORTS = HERE / "reports.jsonl"
README = HERE / "README.md"
GENRES = {"forum", "social", "case_report", "clinical_note", "clinician_note", "webform", "email",
          "caregiver_email", "short_form"}
DOSE = re.compile(r"\d\s*(mg|mcg|µg|g|ml|mL|units?|iu|IU)\b")
EDGE_PUNCT = ".,;:!?"
CLASS_WORDS = {"statin", "statins", "antibiotic", "antibiotics", "steroid", "steroids", "ssri", "ssris",
               "the pill", "this pill", "pills", "my meds", "meds", "medicine", "medication", "it",
               "this", "chemo", "birth control", "blood thinner", "blood thinners", "the injection",
               "ace inhibitor", "antihistamine", "folfox"}
SEVERITY_START = ("severe ", "mild ", "moderate ", "really ", "very ", "so ", "super ", "extreme ",
                  "terrible ", "horrible ", "worst ", "really bad ", "slight ")
ARTICLE_START = ("a ", "an ", "the ", "my ", "his ", "her ", "some ")
NEGATION_BEFORE = re.compile(r"(\bno|\bdenies|\bdenied|\bwithout|\bnot)\s+$", re.IGNORECASE)


@pytest.fixture(scope="module")
def reports() -> list[dict]:
    return schemas.load_reports(REPORTS)


def _distinct(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def test_every_label_is_a_located_span(reports):
    for r in reports:
        for s in r["spans"]:
            assert r["text"][s["start"]:s["end"]] == s["text"], r["id"]
        for field, label in (("drugs", "drug"), ("adverse_events", "adverse_event")):
            texts = [s["text"] for s in r["spans"] if s["label"] == label]
            assert r[field] == _distinct(texts), f"{r['id']}: {field} != distinct {label} spans"


def test_lists_agree_with_the_project_dedupe(reports):
    """No two mentions differ only in case or spacing, so exact and folded dedupe agree."""
    for r in reports:
        for field in schemas.FIELDS:
            assert schemas.dedupe(r[field]) == r[field], r["id"]


def test_spans_sorted_and_disjoint(reports):
    for r in reports:
        spans = r["spans"]
        assert spans == sorted(spans, key=lambda s: s["start"]), r["id"]
        for a, b in zip(spans, spans[1:]):
            assert a["end"] <= b["start"], f"{r['id']}: {a['text']!r} overlaps {b['text']!r}"


def test_ids_unique_and_metadata(reports):
    ids = [r["id"] for r in reports]
    assert len(ids) == len(set(ids))
    for r in reports:
        assert r["genre"] in GENRES, r["id"]
        assert r["id"].startswith(f"hw-{r['genre'].replace('_', '-')}-")
        assert r["source"] == "handwritten"
        assert set(r["meta"]) == {"not_labels", "indications", "misspelled_drugs"}
        drugs = set(r["drugs"])
        assert all(m in drugs for m in r["meta"]["misspelled_drugs"]), r["id"]


def test_required_mix(reports):
    n = len(reports)
    genres = Counter(r["genre"] for r in reports)
    assert n >= 150
    assert (genres["forum"] + genres["social"]) / n >= 0.40
    assert sum(not r["drugs"] for r in reports) / n >= 0.30
    assert sum(len(r["adverse_events"]) >= 6 for r in reports) >= 20
    assert all(genres[g] for g in GENRES), "every genre is present"
    assert sum(bool(r["meta"]["misspelled_drugs"]) for r in reports) >= 5
    assert sum(bool(r["meta"]["not_labels"]) for r in reports) >= 20
    assert sum(bool(r["meta"]["indications"]) for r in reports) >= 20
    assert sum(len(r["drugs"]) >= 2 for r in reports) >= 20
    assert sum(len(r["text"]) >= 800 for r in reports) >= 5
    assert len({d.lower() for r in reports for d in r["drugs"]}) > 100


def test_spans_follow_the_guide(reports):
    for r in reports:
        for s in r["spans"]:
            t, where = s["text"], f"{r['id']}: {s['label']} {s['text']!r}"
            assert t == t.strip() and t[-1] not in EDGE_PUNCT and t[0] not in EDGE_PUNCT, where
            low = t.lower()
            assert not low.startswith(ARTICLE_START), where
            if s["label"] == "drug":
                assert not DOSE.search(t), where
                assert low not in CLASS_WORDS, where
            else:
                assert not low.startswith(SEVERITY_START), where
            # a negated mention is never a label ("no rash", "denies nausea")
            assert not NEGATION_BEFORE.search(r["text"][max(0, s["start"] - 10):s["start"]]), where


def test_no_event_names_a_drug(reports):
    """'X-induced Y' is two spans: no adverse-event span contains a drug name of the set."""
    names = {d.lower() for r in reports for d in r["drugs"] if len(d) > 3}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    for r in reports:
        for s in r["spans"]:
            if s["label"] == "adverse_event":
                assert not pattern.search(s["text"].lower()), f"{r['id']}: {s['text']!r}"


def test_not_labels_stay_unlabelled(reports):
    """A negated or hypothetical phrase named in meta has an occurrence no span touches."""
    for r in reports:
        covered = {i for s in r["spans"] for i in range(s["start"], s["end"])}
        for phrase in r["meta"]["not_labels"]:
            starts = [m.start() for m in re.finditer(re.escape(phrase), r["text"])]
            assert any(not covered & set(range(p, p + len(phrase))) for p in starts), \
                f"{r['id']}: {phrase!r}"


def _readme_rows(header: str) -> dict[str, list[str]]:
    """A README table as {first cell: other cells}, the header row included."""
    text = README.read_text(encoding="utf-8")
    rows = {}
    for line in text[text.index(header):].splitlines():
        if not line.strip().startswith("|"):
            break
        cells = [c.strip().strip("*`") for c in line.strip().strip("|").split("|")]
        if not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells[1:]
    return rows


def _length_cell(texts: list[str]) -> str:
    lengths = [len(t) for t in texts]
    return f"{min(lengths)}-{max(lengths)} ({int(statistics.median(lengths))})"


def test_readme_figures_match_the_file(reports):
    rows = _readme_rows("| genre | reports |")
    rows.pop("genre")
    groups = {g: [r for r in reports if r["genre"] == g] for g in GENRES}
    groups["all"] = reports
    assert set(rows) == set(groups)
    for g, rs in groups.items():
        mean = statistics.mean(len(r["adverse_events"]) for r in rs)
        assert rows[g] == [str(len(rs)), str(sum(not r["drugs"] for r in rs)),
                           str(sum(not r["adverse_events"] for r in rs)),
                           _length_cell([r["text"] for r in rs]), f"{mean:.1f}"], g
    hist = _readme_rows("| events | 0 |")
    counts = Counter(len(r["adverse_events"]) for r in reports)
    events = [int(x) for x in hist["events"]]
    assert [int(x) for x in hist["reports"]] == [counts[k] for k in events]
    assert sum(counts.values()) == len(reports) and set(counts) == set(events)


def test_readme_sentences_match_the_file(reports):
    text = " ".join(README.read_text(encoding="utf-8").split())
    n = len(reports)
    spans = [s for r in reports for s in r["spans"]]
    n_drug = sum(s["label"] == "drug" for s in spans)
    forum_social = sum(r["genre"] in ("forum", "social") for r in reports)
    no_drug = sum(not r["drugs"] for r in reports)
    expected = [
        f"`reports.jsonl`: {n} adverse-event reports",
        f"Forum and social posts: {forum_social} of {n} ({forum_social / n:.1%})",
        f"Reports naming no drug: {no_drug} ({no_drug / n:.1%})",
        f"{sum(len(r['adverse_events']) >= 6 for r in reports)} reports have six or more events",
        f"{len({d.lower() for r in reports for d in r['drugs']})} distinct drug names",
        f"{len({a.lower() for r in reports for a in r['adverse_events']})} distinct adverse-event labels",
        f"{len(spans)} spans: {n_drug} drug, {len(spans) - n_drug} adverse event",
        f"{sum(len(r['drugs']) >= 2 for r in reports)} reports name two or more",
        f"{sum(bool(r['meta']['misspelled_drugs']) for r in reports)} misspellings",
    ]
    for sentence in expected:
        assert sentence in text, sentence
