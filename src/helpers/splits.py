"""Train / val / test splits with no shared report text, and an unseen-drug test split whose drugs
(and every name they go by) never occur in train."""
from __future__ import annotations

import math
import random
import re
from typing import Any, Protocol, Sequence, TypeVar

from .io import DataError

SPLITS = ("train", "val", "test", "test_unseen")


class NamedDrug(Protocol):
    name: str
    all_names: tuple[str, ...]


D = TypeVar("D", bound=NamedDrug)


class SplitError(DataError):
    """A split would be empty or would leak text or drugs into another split."""


def require_sizes(sizes: dict[str, int]) -> None:
    """Every split must be asked for at least one report (an empty split fails the step)."""
    for split in SPLITS:
        n = sizes.get(split)
        if not isinstance(n, int) or n < 1:
            raise SplitError(f"split {split!r} would be empty: n_{split} = {n!r} (need at least 1)")


def _tokens(name: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z]+", name.lower()))


def _contained(drugs: Sequence[D]) -> list[tuple[int, int]]:
    """Pairs (i, j) where a name of drug i is written inside a name of drug j as whole words
    ("estradiol" in "ethinyl estradiol/norgestimate"): such drugs must share a side of the split."""
    names = [(i, _tokens(n)) for i, d in enumerate(drugs) for n in {d.name, *d.all_names}]
    by_token: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for i, toks in names:
        for t in set(toks):
            by_token.setdefault(t, []).append((i, toks))
    pairs = []
    for i, toks in names:
        if len(toks) == 0 or len("".join(toks)) < 3:
            continue
        for j, other in by_token.get(toks[0], []):
            if j != i and any(other[k:k + len(toks)] == toks for k in range(len(other) - len(toks) + 1)):
                pairs.append((i, j))
    return pairs


def drug_groups(drugs: Sequence[D]) -> list[list[D]]:
    """Drug records grouped when they share any name (Lipitor and Atorvastatin are one group) or
    one's name is written inside another's (simvastatin and ezetimibe/simvastatin)."""
    parent = list(range(len(drugs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, d in enumerate(drugs):
        for n in {d.name, *d.all_names}:
            key = n.strip().lower()
            if key in owner:
                parent[find(i)] = find(owner[key])
            else:
                owner[key] = i
    for i, j in _contained(drugs):
        parent[find(i)] = find(j)
    groups: dict[int, list[D]] = {}
    for i, d in enumerate(drugs):
        groups.setdefault(find(i), []).append(d)
    return sorted(groups.values(), key=lambda g: min(x.name.lower() for x in g))


def unseen_count(n_drugs: int, n_unseen: int | None = None, share: float | None = None) -> int:
    """How many drugs to hold out: at least n_unseen, and at least `share` of all drugs."""
    need = max(int(n_unseen or 0), math.ceil(float(share or 0) * n_drugs))
    if need < 1:
        raise SplitError(f"split 'test_unseen' would be empty: n_unseen_drugs = {n_unseen}, "
                         f"unseen_drug_share = {share}")
    return need


def partition_drugs(drugs: Sequence[D], n_unseen: int, seed: int) -> tuple[list[D], list[D]]:
    """Seeded choice of at least n_unseen drugs (whole name groups) held out for test_unseen (fewer
    only when the groups run out); a group that would overshoot the target by more than a quarter
    is passed over."""
    if n_unseen < 1:
        raise SplitError(f"split 'test_unseen' would be empty: n_unseen_drugs = {n_unseen}")
    groups = drug_groups(drugs)
    if len(groups) < 2:
        raise SplitError(f"need drugs for both seen and unseen splits, got {len(groups)} drug group(s) "
                         f"from {len(drugs)} usable record(s)")
    order = list(range(len(groups)))
    random.Random(f"unseen:{seed}").shuffle(order)
    unseen: list[D] = []
    taken: set[int] = set()
    limit = max(n_unseen + 1, math.ceil(n_unseen * 1.25))
    for gi in order:
        if len(unseen) >= n_unseen or len(taken) == len(groups) - 1:
            break
        if len(unseen) + len(groups[gi]) > limit:
            continue
        unseen.extend(groups[gi])
        taken.add(gi)
    if not taken:                         # every group is larger than the target: take the smallest
        gi = min(order, key=lambda k: len(groups[k]))
        unseen.extend(groups[gi])
        taken.add(gi)
    seen = [d for gi, g in enumerate(groups) if gi not in taken for d in g]
    key = lambda d: d.name.lower()  # noqa: E731
    return sorted(seen, key=key), sorted(unseen, key=key)


def names_pattern(drugs: Sequence[NamedDrug]) -> re.Pattern | None:
    """One regex for every name of `drugs` as a whole word, any case (None when there are none)."""
    return _names_pattern(drugs)


def _names_pattern(drugs: Sequence[NamedDrug]) -> re.Pattern | None:
    names = sorted({n.lower() for d in drugs for n in (d.name, *d.all_names) if len(n) >= 3},
                   key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<![A-Za-z])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z])", re.I)


def mentions_any(text: str, drugs: Sequence[NamedDrug]) -> str | None:
    """The first name of any of `drugs` written in `text` (whole word, any case), else None."""
    pat = _names_pattern(drugs)
    m = pat.search(text) if pat else None
    return m.group(0) if m else None


def normalize_text(text: str) -> str:
    """Text as compared for duplicates (case and whitespace ignored)."""
    return " ".join(text.lower().split())


def split_pool(reports: Sequence[dict[str, Any]], sizes: dict[str, int], seed: int
               ) -> dict[str, list[dict[str, Any]]]:
    """Shuffle a pool (seeded) and cut it into the named splits, duplicates (same text) removed first.
    A split gets fewer reports than asked when the pool runs out; an empty one raises SplitError."""
    seen: set[str] = set()
    pool = []
    for r in reports:
        k = normalize_text(r["text"])
        if k not in seen:
            seen.add(k)
            pool.append(r)
    random.Random(f"pool:{seed}").shuffle(pool)
    out, pos = {}, 0
    for split, n in sizes.items():
        out[split] = pool[pos:pos + n]
        pos += n
        if not out[split]:
            raise SplitError(f"split {split!r} would be empty: only {len(pool)} distinct reports "
                             f"for {sum(sizes.values())} requested")
    return out


def check_splits(splits: dict[str, list[dict[str, Any]]], unseen_drugs: Sequence[NamedDrug]) -> None:
    """Fail if a split is empty, a text sits in two splits, or an unseen drug's name occurs outside test_unseen."""
    owner: dict[str, str] = {}
    for split, recs in splits.items():
        if not recs:
            raise SplitError(f"split {split!r} is empty")
        for r in recs:
            k = normalize_text(r["text"])
            if k in owner and owner[k] != split:
                raise SplitError(f"report {r['id']} of {split!r} has the same text as one in {owner[k]!r}")
            owner[k] = split
    pat = _names_pattern(unseen_drugs)
    if pat is None:
        return
    for split, recs in splits.items():
        if split == "test_unseen":
            continue
        for r in recs:
            m = pat.search(r["text"])
            if m:
                raise SplitError(f"report {r['id']} of {split!r} names unseen drug {m.group(0)!r}")
