"""Tolerant parsing of model outputs: every damage we have seen, and a status instead of a crash."""
from __future__ import annotations

import json
import random

import pytest

from helpers.parsing import FAILED_STATUSES, PARSED_STATUSES, PARSE_STATUSES, parse_output
from helpers.schemas import answer_json

CANON = {"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "dark urine"]}


def test_canonical_answer_is_ok():
    assert parse_output(answer_json(CANON)) == (CANON, "ok")
    assert parse_output(json.dumps(CANON, indent=2)) == (CANON, "ok")


def test_empty_lists_are_a_valid_answer():
    assert parse_output('{"drugs": [], "adverse_events": []}') == ({"drugs": [], "adverse_events": []}, "ok")


@pytest.mark.parametrize("raw", [
    "```json\n" + json.dumps(CANON) + "\n```",
    "```\n" + json.dumps(CANON) + "\n```",
    "Sure! Here is the extraction:\n" + json.dumps(CANON),
    json.dumps(CANON) + "\nI hope this helps. Let me know {if} you need more.",
    "Answer: " + json.dumps(CANON) + " and then " + json.dumps({"drugs": ["Other"], "adverse_events": []}),
    "```json\n" + json.dumps(CANON),  # unclosed fence
])
def test_fences_prose_and_trailing_text_are_repaired(raw):
    assert parse_output(raw) == (CANON, "repaired")


def test_seed01_schema_is_accepted():
    raw = json.dumps({"drug_name": "Lipitor", "adverse_events": ["muscle pain", "dark urine"]})
    assert parse_output(raw) == (CANON, "study2023")
    assert parse_output('{"drug_name": "", "adverse_events": []}') == ({"drugs": [], "adverse_events": []}, "study2023")


def test_seed01_inside_prose_is_repaired_not_lost():
    raw = 'The output is {"drug_name": "Lipitor", "adverse_events": ["muscle pain", "dark urine"]}.'
    assert parse_output(raw) == (CANON, "repaired")


@pytest.mark.parametrize("raw", [
    "{'drugs': ['Lipitor'], 'adverse_events': ['muscle pain', 'dark urine']}",
    '{"drugs": ["Lipitor",], "adverse_events": ["muscle pain", "dark urine",],}',
    '{"drugs": "Lipitor", "adverse_events": ["muscle pain", "dark urine"]}',
    '{"Drugs": ["Lipitor"], "Adverse_Events": ["muscle pain", "dark urine"]}',
])
def test_cheap_syntax_and_shape_repairs(raw):
    assert parse_output(raw) == (CANON, "repaired")


def test_python_literals_become_empty_lists():
    assert parse_output("{'drugs': None, 'adverse_events': ['rash']}") == (
        {"drugs": [], "adverse_events": ["rash"]}, "repaired")


def test_items_are_stripped_deduplicated_and_empties_dropped():
    raw = '{"drugs": [" Lipitor ", "lipitor", ""], "adverse_events": ["muscle pain", "Muscle  Pain", "rash"]}'
    assert parse_output(raw) == ({"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "rash"]}, "ok")


def test_missing_field_is_empty():
    assert parse_output('{"adverse_events": ["rash"]}') == ({"drugs": [], "adverse_events": ["rash"]}, "ok")


def test_truncated_output_keeps_complete_items():
    raw = '{"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "dark ur'
    assert parse_output(raw) == ({"drugs": ["Lipitor"], "adverse_events": ["muscle pain"]}, "truncated")
    raw = '{"drugs": ["Lipitor", "Zoloft"], "adverse_ev'
    assert parse_output(raw) == ({"drugs": ["Lipitor", "Zoloft"], "adverse_events": []}, "truncated")


@pytest.mark.parametrize("raw,status", [
    ("", "no_json"),
    ("I cannot find any drug in this report.", "no_json"),
    ("[1, 2, 3]", "no_json"),
    (None, "no_json"),
    (42, "no_json"),
    ("{this is not json}", "invalid_json"),
    ('{"drugs": [...], "adverse_events": [...]}', "invalid_json"),  # the instruction echoed back
    ('{"patient": "female", "age": 54}', "bad_schema"),
    ('{"drugs": [{"name": "Lipitor"}], "adverse_events": []}', "bad_schema"),
    ('{"drugs": {"name": "Lipitor"}, "adverse_events": []}', "bad_schema"),
])
def test_failures_are_statuses(raw, status):
    assert parse_output(raw) == (None, status)


def test_status_vocabulary_is_closed():
    assert set(PARSED_STATUSES) | set(FAILED_STATUSES) == set(PARSE_STATUSES)


def test_never_raises_on_random_damage():
    """Random cuts, insertions and deletions of a valid answer never raise and keep the contract."""
    rng = random.Random(13)
    base = "Here you go: ```json\n" + json.dumps(CANON) + "\n```"
    alphabet = '{}[]",:\' \nabc\\'
    for _ in range(500):
        chars = list(base)
        for _ in range(rng.randint(1, 6)):
            op, pos = rng.random(), rng.randrange(len(chars) + 1)
            if op < 0.4 and chars:
                del chars[min(pos, len(chars) - 1)]
            elif op < 0.8:
                chars.insert(pos, rng.choice(alphabet))
            else:
                chars = chars[:pos]
        parsed, status = parse_output("".join(chars))
        assert status in PARSE_STATUSES
        assert (parsed is None) == (status in FAILED_STATUSES)
        if parsed is not None:
            assert set(parsed) == {"drugs", "adverse_events"}
            assert all(isinstance(x, str) and x == x.strip() and x for v in parsed.values() for x in v)
