"""The blind hand-written set (`data/handwritten/blind.jsonl`) loads with the project's reader,
every label is a located span, the labels follow the annotation guide where a rule can be checked
mechanically (the same checks as the first set's, imported from its test), it has the mix it
promises, and the figures its README section states are the file's."""
from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest

import test_handwritten as hw
from helpers import schemas

BLIND = hw.HERE / "blind.jsonl"
SECTION = "## `blind.jsonl`"


@pytest.fixture(scope="module")
def reports() -> list[dict]:
    return schemas.load_reports(BLIND)


def test_every_label_is_a_located_span(reports):
    hw.test_every_label_is_a_located_span(reports)      # the first set's check, on this file
    for r in reports:
        for field in ("drugs", "adverse_events"):
            assert schemas.dedupe(r[field]) == r[field], f"{r['id']}: {field} differ in case only"


def test_spans_sorted_disjoint_and_follow_the_guide(reports):
    for r in reports:
        spans = r["spans"]
        assert spans == sorted(spans, key=lambda s: s["start"]), r["id"]
        for a, b in zip(spans, spans[1:]):
            assert a["end"] <= b["start"], f"{r['id']}: {a['text']!r} overlaps {b['text']!r}"
        for s in spans:
            t, where = s["text"], f"{r['id']}: {s['label']} {s['text']!r}"
            assert t == t.strip() and t[0] not in hw.EDGE_PUNCT and t[-1] not in hw.EDGE_PUNCT, where
            assert not t.lower().startswith(hw.ARTICLE_START), where
            if s["label"] == "drug":
                assert not hw.DOSE.search(t) and t.lower() not in hw.CLASS_WORDS, where
            else:
                assert not t.lower().startswith(hw.SEVERITY_START), where
            assert not hw.NEGATION_BEFORE.search(r["text"][max(0, s["start"] - 10):s["start"]]), where


def test_ids_unique_and_metadata(reports):
    ids = [r["id"] for r in reports]
    assert len(ids) == len(set(ids))
    for r in reports:
        assert r["genre"] in hw.GENRES, r["id"]
        assert r["id"].startswith(f"hb-{r['genre'].replace('_', '-')}-"), r["id"]
        assert r["source"] == "handwritten"
        assert set(r["meta"]) == {"not_labels", "indications", "misspelled_drugs"}
        assert set(r["meta"]["misspelled_drugs"]) <= set(r["drugs"]), r["id"]


def test_no_event_names_a_drug_and_not_labels_stay_free(reports):
    """'X-induced Y' is two spans; a phrase meta calls not-a-label has an untouched occurrence."""
    names = {d.lower() for r in reports for d in r["drugs"] if len(d) > 3}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    for r in reports:
        covered = {i for s in r["spans"] for i in range(s["start"], s["end"])}
        for s in r["spans"]:
            if s["label"] == "adverse_event":
                assert not pattern.search(s["text"].lower()), f"{r['id']}: {s['text']!r}"
        for phrase in r["meta"]["not_labels"]:
            starts = [m.start() for m in re.finditer(re.escape(phrase), r["text"])]
            assert any(not covered & set(range(p, p + len(phrase))) for p in starts), \
                f"{r['id']}: {phrase!r}"


def test_required_mix(reports):
    n = len(reports)
    genres = Counter(r["genre"] for r in reports)
    assert n >= 120
    assert all(genres[g] for g in hw.GENRES), "every genre is present"
    assert (genres["forum"] + genres["social"]) / n >= 0.40
    assert sum(not r["drugs"] for r in reports) / n >= 0.30
    assert sum(len(r["adverse_events"]) >= 6 for r in reports) >= 15
    assert sum(len(r["text"]) > 1200 for r in reports if r["genre"] == "forum") >= 8
    assert sum(len(r["meta"]["misspelled_drugs"]) for r in reports) >= 8
    assert len({d.lower() for r in reports for d in r["drugs"]}) >= 120


def _section_rows() -> dict[str, list[str]]:
    """The blind section's counts table as {first cell: other cells}, header row left out."""
    text = hw.README.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    rows = {}
    for line in section[section.index("| genre | reports |"):].splitlines():
        if not line.strip().startswith("|"):
            break
        cells = [c.strip().strip("*`") for c in line.strip().strip("|").split("|")]
        if not set(cells[0]) <= set("-") and cells[0] != "genre":
            rows[cells[0]] = cells[1:]
    return rows


def test_readme_figures_match_the_file(reports):
    rows = _section_rows()
    groups = {g: [r for r in reports if r["genre"] == g] for g in hw.GENRES}
    groups["all"] = reports
    assert set(rows) == set(groups)
    for g, rs in groups.items():
        mean = statistics.mean(len(r["adverse_events"]) for r in rs)
        assert rows[g] == [str(len(rs)), str(sum(not r["drugs"] for r in rs)),
                           str(sum(not r["adverse_events"] for r in rs)),
                           hw._length_cell([r["text"] for r in rs]), f"{mean:.1f}"], g


def test_readme_sentences_match_the_file(reports):
    text = hw.README.read_text(encoding="utf-8")
    section = " ".join(text[text.index(SECTION):].split())
    n = len(reports)
    spans = [s for r in reports for s in r["spans"]]
    n_drug = sum(s["label"] == "drug" for s in spans)
    forum_social = sum(r["genre"] in ("forum", "social") for r in reports)
    no_drug = sum(not r["drugs"] for r in reports)
    per_report = Counter(len(r["drugs"]) for r in reports)
    expected = [
        f"`blind.jsonl`: {n} adverse-event reports",
        f"forum and social posts: {forum_social} of {n} ({forum_social / n:.1%})",
        f"Reports naming no drug: {no_drug} ({no_drug / n:.1%})",
        f"{sum(len(r['adverse_events']) >= 6 for r in reports)} reports have six or more events",
        f"{sum(len(r['text']) > 1200 for r in reports if r['genre'] == 'forum')} forum posts are over 1200",
        "Drugs per report: " + ", ".join(f"{k}: {per_report[k]}" for k in sorted(per_report)),
        f"({sum(len(r['drugs']) >= 2 for r in reports)} reports name two or more)",
        f"{len({d.lower() for r in reports for d in r['drugs']})} distinct drug names",
        f"{sum(len(r['meta']['misspelled_drugs']) for r in reports)} misspellings",
        f"{len({a.lower() for r in reports for a in r['adverse_events']})} distinct adverse-event labels",
        f"{len(spans)} spans: {n_drug} drug, {len(spans) - n_drug} adverse event",
        f"{sum(bool(r['meta']['indications']) for r in reports)} reports name an indication",
        f"{sum(bool(r['meta']['not_labels']) for r in reports)} hold a mention that is not a label",
    ]
    for sentence in expected:
        assert sentence in section, sentence
