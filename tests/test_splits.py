"""Splits: name groups, seeded unseen-drug choice, no shared text, clear errors."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from helpers import splits as sp


@dataclass(frozen=True)
class D:
    name: str
    all_names: tuple[str, ...]


DRUGS = [D("Lipitor", ("Lipitor", "atorvastatin")), D("Atorvastatin", ("Atorvastatin", "Lipitor")),
         D("Zoloft", ("Zoloft", "sertraline")), D("Ambien", ("Ambien", "zolpidem")),
         D("Remicade", ("Remicade", "infliximab")), D("Infliximab", ("infliximab", "Inflectra")),
         D("Cialis", ("Cialis", "tadalafil")), D("Nexium", ("Nexium", "esomeprazole"))]


def rep(i, text):
    return {"id": f"r{i}", "text": text, "drugs": [], "adverse_events": []}


def test_groups_join_records_sharing_a_name():
    groups = sp.drug_groups(DRUGS)
    names = sorted(sorted(d.name for d in g) for g in groups)
    assert ["Atorvastatin", "Lipitor"] in names and ["Infliximab", "Remicade"] in names
    assert len(groups) == 6


def test_partition_is_seeded_and_keeps_groups_whole():
    a = sp.partition_drugs(DRUGS, 3, seed=1)
    assert a == sp.partition_drugs(DRUGS, 3, seed=1)
    seen, unseen = a
    assert len(unseen) >= 3 and seen
    assert not {n.lower() for d in seen for n in d.all_names} & {n.lower() for d in unseen for n in d.all_names}
    choices = {tuple(d.name for d in sp.partition_drugs(DRUGS, 2, seed=s)[1]) for s in range(10)}
    assert len(choices) > 2
    # asking for too many still leaves one group to train on
    seen, unseen = sp.partition_drugs(DRUGS, 100, seed=1)
    assert seen and len(seen) + len(unseen) == len(DRUGS)


def test_check_splits_catches_shared_text_and_unseen_leak():
    ok = {"train": [rep(1, "I take Zoloft.")], "val": [rep(2, "x")], "test": [rep(3, "y")],
          "test_unseen": [rep(4, "I take Ambien.")]}
    sp.check_splits(ok, [DRUGS[3]])
    shared = {**ok, "test": [rep(5, "i take   ZOLOFT.")]}
    with pytest.raises(sp.SplitError, match="same text"):
        sp.check_splits(shared, [DRUGS[3]])
    leak = {**ok, "val": [rep(6, "my friend uses zolpidem")]}
    with pytest.raises(sp.SplitError, match="unseen drug 'zolpidem'"):
        sp.check_splits(leak, [DRUGS[3]])
    with pytest.raises(sp.SplitError, match="'val' is empty"):
        sp.check_splits({**ok, "val": []}, [DRUGS[3]])


def test_mentions_any_is_whole_word():
    assert sp.mentions_any("Started AMBIEN last week", [DRUGS[3]]) == "AMBIEN"
    assert sp.mentions_any("Ambienx is not a drug", [DRUGS[3]]) is None


def test_split_pool_dedupes_and_fails_when_empty():
    pool = [rep(i, f"text {i}") for i in range(10)] + [rep(99, "TEXT 3")]
    out = sp.split_pool(pool, {"train": 6, "val": 2, "test": 2}, seed=3)
    assert [len(v) for v in out.values()] == [6, 2, 2]
    assert out == sp.split_pool(pool, {"train": 6, "val": 2, "test": 2}, seed=3)
    with pytest.raises(sp.SplitError, match="'test' would be empty"):
        sp.split_pool(pool, {"train": 8, "val": 2, "test": 2}, seed=3)


def test_require_sizes():
    sp.require_sizes({"train": 1, "val": 1, "test": 1, "test_unseen": 1})
    with pytest.raises(sp.SplitError, match="'test' would be empty"):
        sp.require_sizes({"train": 1, "val": 1, "test": 0, "test_unseen": 1})
