"""Lexicon baseline: match the drug records' names and side-effect terms (with simple variants)
in a report, case-insensitively, plus fuzzy matching of misspelled drug names. No training.

Matching works on word tokens, so "Muscle-Pain", "muscle pain" and "muscle  pains" all hit the
term "muscle pain"; the output is always the report's own span. Longest match wins, no overlaps."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rapidfuzz import fuzz, process

from .baselines import Span, make_span, remove_overlaps
from .schemas import all_side_effects

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_GAP = re.compile(r"\s+|\s*-\s*")          # what may separate two words of one term
_PAREN = re.compile(r"\(([^()]*)\)")
_LIST = re.compile(r",|\bor\b")
_POSSESSIVE = ("your", "the", "my", "his", "her", "their")
_STOP = frozenset("a an and or of the to in on at for with your you my is are be as by it "
                  "not no any other some".split())
MIN_WORD_CHARS = 4                              # shorter single-word terms are too ambiguous
MIN_FUZZY_CHARS = 5                             # shorter strings are not fuzzy-matched


def words(text: str) -> list[tuple[str, int, int]]:
    """Lower-cased word tokens of a text with their character offsets."""
    return [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(text)]


def word_variants(word: str) -> set[str]:
    """Simple inflections of a word: plural/singular and '-ing' forms (a few wrong ones are harmless:
    they only match if the text contains them)."""
    out = {word}
    if len(word) < MIN_WORD_CHARS or not word.isalpha():
        return out
    # plural <-> singular
    if word.endswith("ies"):
        out.add(word[:-3] + "y")
    elif word.endswith(("ches", "shes", "sses", "xes", "zes")):
        out.add(word[:-2])
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        out.add(word[:-1])
    else:
        if word.endswith("y") and word[-2] not in "aeiou":
            out.add(word[:-1] + "ies")
        elif word.endswith("ss"):
            pass                                # "dizziness", "weakness": no plural in use
        elif word.endswith(("ch", "sh", "s", "x", "z")):
            out.add(word + "es")
        else:
            out.add(word + "s")
    # '-ing' forms
    if word.endswith("ing") and len(word) > 5:
        stem = word[:-3]
        out |= {stem, stem + "e", stem + "s"}
        if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "ls":
            out.add(stem[:-1])                  # "itching" stays, "stopping" -> "stop"
    elif not word.endswith("s"):
        out.add(word[:-1] + "ing" if word.endswith("e") and not word.endswith("ee") else word + "ing")
    return out


def term_forms(term: str) -> set[tuple[str, ...]]:
    """Token tuples a term may appear as: its words with the last word inflected, and hyphenated
    parts also written as one word ("light-headed" -> "lightheaded")."""
    toks = [w for w, _, _ in words(term)]
    if not toks:
        return set()
    bases = [toks]
    if "-" in term:
        joined = [w for w, _, _ in words(re.sub(r"\s*-\s*", "", term))]
        if joined and joined != toks:
            bases.append(joined)
    for base in list(bases):
        if any(w in _POSSESSIVE for w in base[1:]):
            bases += [[p if w in _POSSESSIVE else w for w in base] for p in _POSSESSIVE]
    return {tuple(b[:-1]) + (v,) for b in bases for v in word_variants(b[-1])}


def matchable_terms(raw: str) -> list[str]:
    """A record's side-effect string as matchable terms: without its parenthetical remark, the
    remark itself ("hypoglycemia (low blood sugar)" -> both), and the head of a listing
    ("swelling of your face, lips, or throat" -> also "swelling of your face")."""
    out = [_PAREN.sub(" ", raw)] + _PAREN.findall(raw)
    heads = [_LIST.split(t, maxsplit=1)[0] for t in out]
    out += [h for h in heads if len(words(h)) >= 2]
    return list(dict.fromkeys(t for t in (" ".join(x.split()).strip(" .,;:") for x in out) if t))


@dataclass
class Lexicon:
    """Token-tuple dictionary of drug names and side-effect terms, plus the drug names for fuzzy matching."""
    entries: dict[tuple[str, ...], str]
    drug_names: list[str]
    fuzzy_threshold: float = 88.0
    max_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.max_tokens = max((len(k) for k in self.entries), default=1)
        self._drug_lengths = sorted({len(words(n)) for n in self.drug_names})

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, text: str) -> list[Span]:
        """Every drug and side-effect mention of a text: exact lexicon matches (longest first, no
        overlaps), then fuzzy drug-name matches in what is left, in text order."""
        toks = words(text)
        exact = remove_overlaps(self._exact(text, toks))
        fuzzy = [s for s in self._fuzzy(text, toks)
                 if all(s.end <= e.start or s.start >= e.end for e in exact)]
        return sorted(exact + remove_overlaps(fuzzy))

    def _runs(self, text: str, toks: list[tuple[str, int, int]], n: int):
        """Windows of n consecutive words that are separated only by spaces or hyphens."""
        for i in range(len(toks) - n + 1):
            win = toks[i:i + n]
            if all(_GAP.fullmatch(text[a[2]:b[1]]) for a, b in zip(win, win[1:])):
                yield tuple(w for w, _, _ in win), win[0][1], win[-1][2]

    def _exact(self, text: str, toks: list[tuple[str, int, int]]) -> list[Span]:
        out = []
        for n in range(1, self.max_tokens + 1):
            for key, s, e in self._runs(text, toks, n):
                label = self.entries.get(key)
                if label:
                    out.append(make_span(text, s, e, label))
        return out

    def _fuzzy(self, text: str, toks: list[tuple[str, int, int]]) -> list[Span]:
        if self.fuzzy_threshold > 100 or not self.drug_names:
            return []
        out = []
        for n in self._drug_lengths:
            for key, s, e in self._runs(text, toks, n):
                cand = " ".join(key)
                if len(cand) < MIN_FUZZY_CHARS or key in self.entries:
                    continue
                hit = process.extractOne(cand, self.drug_names, scorer=fuzz.ratio,
                                         score_cutoff=self.fuzzy_threshold)
                if hit and hit[0][0] == cand[0]:
                    out.append(make_span(text, s, e, "drug"))
        return out


def build_lexicon(records: Sequence[dict[str, Any]], fuzzy_threshold: float = 88.0,
                  max_term_tokens: int = 6) -> Lexicon:
    """A Lexicon from drug records: names, generic and brand names (label drug) and every
    side-effect term of up to `max_term_tokens` words with its variants (label adverse_event).
    Where a form is both, it is a drug."""
    entries: dict[tuple[str, ...], str] = {}
    drug_names: set[str] = set()
    for rec in records:
        for term in _side_effect_terms(rec):
            if len(words(term)) <= max_term_tokens:
                for form in term_forms(term):
                    if _usable(form):
                        entries.setdefault(form, "adverse_event")
    for rec in records:
        for name in [rec["name"], *rec.get("generic_names", []), *rec.get("brand_names", [])]:
            toks = tuple(w for w, _, _ in words(name))
            if not toks:
                continue
            drug_names.add(" ".join(toks))
            for form in {toks} | ({("".join(toks),)} if "-" in name else set()):
                entries[form] = "drug"
    return Lexicon(entries, sorted(drug_names), fuzzy_threshold)


def _side_effect_terms(rec: dict[str, Any]) -> Iterable[str]:
    for raw in all_side_effects(rec):
        yield from matchable_terms(raw)


def _usable(form: tuple[str, ...]) -> bool:
    """Skip forms made only of stop words, and single words too short to mean anything alone."""
    if all(w in _STOP for w in form):
        return False
    return len(form) > 1 or len(form[0]) >= MIN_WORD_CHARS


def lexicon_spans(lexicon: Lexicon, reports: Sequence[dict[str, Any]]) -> list[list[Span]]:
    """The lexicon's spans for each report."""
    return [lexicon.match(r["text"]) for r in reports]
