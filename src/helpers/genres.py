"""Report genres beside the template messages: patient forum posts, social-media posts,
case-report sentences and clinical notes.

Each genre writes its report from segments like the message generator does (helpers.synthesize),
so every label is a located span by construction. The rules the labels follow:
- a drug span is the product name as written (brand or generic, a combination as one span,
  a misspelling as written), never its dose, route or frequency; "this med", "my pills" are no drug;
- an adverse-event span is the shortest phrase naming the reaction as written, with the body site
  when it is part of it ("pain in my legs"), without severity words ("really bad") or time;
- negated ("no nausea", "denies chest pain") and hypothetical ("might cause hair loss") reactions,
  and the condition the drug is taken for, are not labels; a condition that is clearly new or
  worse is, written as a noun phrase ("worse anxiety").
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import vocabulary
from .synthesize import (COMMON_SYMPTOMS, LAY, Drug, Segment, TemplateGenerator, _overlaps,
                         _weighted, fill, join_list, misspell, render, typo_noise)
from . import schemas

GENRES = ("message", "forum", "social", "case_report", "clinical_note")


@dataclass(frozen=True)
class GenreStyle:
    """How a genre's reports are drawn: label counts, drugless and eventless shares, spelling."""
    p_no_drug: float
    p_no_ae: float
    n_events: tuple[tuple[int, float], ...]
    register: str                 # lay | clinical | note: how reactions are written
    p_misspell: float
    p_lower: float                # drug names written in lower case
    p_negation: float
    p_hypothetical: float
    p_comed: float
    p_brand: float                # brand name rather than generic
    p_both_names: float = 0.0     # brand and generic side by side at the first mention: "Jardiance (empagliflozin)"
    p_treated: float = 0.0        # a drug given to treat the reaction is named (it is a label: it was given)


STYLES: dict[str, GenreStyle] = {
    "forum": GenreStyle(0.5, 0.08, ((1, .08), (2, .12), (3, .14), (4, .14), (5, .16), (6, .14),
                                    (7, .1), (8, .07), (9, .05)), "lay", 0.15, 0.6, 0.4, 0.25, 0.2, 0.65,
                        p_both_names=0.05, p_treated=0.12),
    "social": GenreStyle(0.35, 0.12, ((1, .5), (2, .35), (3, .15)), "lay", 0.3, 0.75, 0.12, 0.1, 0.0, 0.7),
    "case_report": GenreStyle(0.0, 0.0, ((1, .45), (2, .35), (3, .2)), "clinical", 0.0, 0.0, 0.3, 0.0,
                              0.6, 0.1, p_both_names=0.08, p_treated=0.35),
    "clinical_note": GenreStyle(0.12, 0.12, ((1, .4), (2, .35), (3, .25)), "note", 0.03, 0.2, 0.75, 0.1,
                                0.6, 0.3, p_both_names=0.03, p_treated=0.35),
}

# how many co-medications a report lists when it lists any: notes and long posts carry medication lists
COMED_COUNTS = {"clinical_note": (2, 3, 4, 5, 6, 7), "forum": (1, 1, 2, 3, 4, 5)}
# conditions that, when clearly made worse, are a reaction ("worse anxiety")
WORSENABLE = ("anxiety", "depression", "insomnia", "migraines", "headaches", "acid reflux", "heartburn",
              "nerve pain", "back pain", "pain", "chronic pain", "acne", "severe acne", "psoriasis", "eczema",
              "mood swings", "panic attacks", "sleep problems", "hot flashes", "constipation", "wheezing",
              "itching", "hives", "allergies", "fluid retention")
NOTE_ABBREV = {"high blood pressure": "HTN", "hypertension": "HTN", "blood pressure": "HTN", "type 2 diabetes": "T2DM",
               "high cholesterol": "HLD", "depression": "MDD", "atrial fibrillation": "AFib",
               "rheumatoid arthritis": "RA", "acid reflux": "GERD", "heart failure": "CHF",
               "anxiety": "GAD", "enlarged prostate": "BPH", "blood clots": "VTE"}
UNNAMED = {"forum": ("this med", "this stuff", "these pills", "it", "this medication", "the shot"),
           "social": ("this new med", "these meds", "my new pills", "this med"),
           "clinical_note": ("new med", "the new rx", "the medication"),
           "case_report": ("the drug",)}
HASHTAGS = ("#sideeffects", "#mentalhealth", "#chronicillness", "#spoonie", "#meds", "#ugh",
            "#healthjourney", "#pharmacy", "#nofilter", "#realtalk", "#wellness", "#struggling")
# classes of the drugs given to treat a reaction (an antihistamine for a rash, an antiemetic for vomiting)
TREATMENT_CLASSES = ("antihistamine", "antiemetic", "oral corticosteroid", "topical corticosteroid",
                     "proton pump inhibitor", "H2 blocker", "laxative and bowel agent")
P_SHORT_LATER = {"note": 0.8, "clinical": 0.5, "lay": 0.4}   # a later mention by its short form (MTX, doxy)
P_SHORT_FIRST = 0.08          # a lay writer names the drug by its clipping from the start ("my doxy")
EXTRA_SYSTEMS = ("general", "gastrointestinal", "nervous system", "psychiatric", "musculoskeletal", "skin")


@dataclass
class Story:
    """What a report will say, chosen before any text is written."""
    genre: str
    suspects: list[Drug]
    comeds: list[Drug]
    named: bool
    events: list[tuple[str, str]] = field(default_factory=list)     # (as written, term)
    disease: str | None = None
    negated: list[str] = field(default_factory=list)
    hypothetical: list[str] = field(default_factory=list)
    worsened: str | None = None
    misspelled: list[str] = field(default_factory=list)
    clausal: list[str] = field(default_factory=list)      # events said as clauses
    not_taken: Drug | None = None                            # named but not taken: no label
    treatments: list[Drug] = field(default_factory=list)     # given to treat a reaction: labels


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def phrase_for(term: str, register: str, rng: random.Random) -> str:
    """How a reporter of this register writes a reaction term (lay words, literature term, abbreviation)."""
    row = vocabulary.load().reaction(term)
    lay = (row.lay if row else ()) or LAY.get(term.lower(), ())
    if register == "lay":
        return rng.choice(lay) if lay and rng.random() < 0.75 else term.lower() if term[1:2].islower() else term
    if register == "clinical":
        return row.clinical if row and rng.random() < 0.5 else term
    if row and row.abbreviation and rng.random() < 0.25:
        return row.abbreviation
    return row.clinical if row and rng.random() < 0.3 else term


def _extra_pool() -> list[str]:
    """Everyday reactions with lay words, to top up a long post when a drug's own list runs short."""
    v = vocabulary.load()
    return [r.term for r in v.reactions if r.system in EXTRA_SYSTEMS and r.lay]


def pick_events(drug: Drug, n: int, register: str, rng: random.Random, avoid: Sequence[str],
                clause_share: float = 0.0, clausal: list[str] | None = None) -> list[tuple[str, str]]:
    """n reactions of `drug` (topped up with everyday ones), as written, none overlapping another or
    `avoid`; with `clause_share`, some are said as clauses ("ankles swell up", listed in `clausal`)."""
    own = [e for e in drug.events]
    rng.shuffle(own)
    extra = _extra_pool()
    out: list[tuple[str, str]] = []
    for term in own + [rng.choice(extra) for _ in range(3 * n)]:
        if len(out) >= n:
            break
        row = vocabulary.load().reaction(term)
        as_clause = bool(row and row.clauses) and clausal is not None and rng.random() < clause_share
        said = rng.choice(row.clauses) if as_clause and row else phrase_for(term, register, rng)
        taken = [s for s, _ in out] + [t for _, t in out] + list(avoid)
        if not said.strip() or any(_overlaps(said, x) or _overlaps(term, x) for x in taken):
            continue
        out.append((said, term))
        if as_clause and clausal is not None:
            clausal.append(said)
    return out


def mention(drug: Drug, style: GenreStyle, rng: random.Random, story: Story) -> list[Segment]:
    """A drug as the genre writes it: brand or generic, sometimes misspelled or in lower case."""
    pool = drug.brands if drug.brands and rng.random() < style.p_brand else drug.generics
    name = rng.choice(pool or drug.mentions)
    clippings = [x for x in drug.short_forms if x.islower()]
    if style.register == "lay" and clippings and rng.random() < P_SHORT_FIRST:
        return [(rng.choice(clippings), "drug")]
    if rng.random() < style.p_misspell:
        wrong = rng.choice(drug.misspellings) if drug.misspellings and rng.random() < 0.7 \
            else misspell(name, rng)
        if wrong.lower() != name.lower():
            name = wrong
            story.misspelled.append(name)
    if rng.random() < style.p_lower:
        name = name.lower()
    return [(name, "drug")]


_NO_SEVERITY = ("feeling", "no ", "not ", "being", "trouble", "always", "losing", "gaining")


def _ae_segs(events: Sequence[tuple[str, str]], rng: random.Random, severity: float = 0.0
             ) -> list[list[Segment]]:
    """Each reaction as segments: a leading article or possessive, or a severity word, stays outside the label."""
    out = []
    for said, _ in events:
        pre = ""
        if said.split(" ", 1)[0] in ("a", "an", "my") and " " in said:
            pre, said = said.split(" ", 1)
            pre += " "
        elif rng.random() < severity and len(said.split()) <= 2 and not said.startswith(_NO_SEVERITY):
            pre = rng.choice(("really bad ", "terrible ", "mild ", "horrible ", "some ", "constant "))
        out.append(([(pre, None)] if pre else []) + [(said, "adverse_event")])
    return out


def _negations(story: Story, n: int, rng: random.Random) -> list[str]:
    """Symptoms the reporter does not have, none overlapping an event or the disease."""
    taken = [s for s, _ in story.events] + [t for _, t in story.events] + [story.disease or ""]
    pool = [s for s in COMMON_SYMPTOMS if not any(_overlaps(s, x) for x in taken if x)]
    return rng.sample(pool, min(n, len(pool)))


def plan_story(genre: str, drugs: Sequence[Drug], rng: random.Random) -> Story:
    """Choose drugs, events, disease, negated and hypothetical reactions for one report."""
    st = STYLES[genre]
    named = rng.random() >= st.p_no_drug
    n_com = (rng.choice(COMED_COUNTS.get(genre, (1, 1, 2, 3))) if rng.random() < st.p_comed else 0) if named else 0
    picked: list[Drug] = []
    for d in rng.sample(list(drugs), min(len(drugs), 1 + n_com)):
        if not any({x.lower() for x in d.all_names} & {x.lower() for x in p.all_names} for p in picked):
            picked.append(d)
    story = Story(genre, picked[:1], picked[1:], named)
    others = [d for d in drugs if not any({x.lower() for x in d.all_names} & {x.lower() for x in p.all_names}
                                          for p in picked)]
    if others and genre in ("forum", "clinical_note") and rng.random() < 0.12:
        story.not_taken = rng.choice(others)
    main = picked[0]
    story.disease = rng.choice(main.diseases) if main.diseases and rng.random() < 0.6 else None
    if rng.random() >= st.p_no_ae:
        n = _weighted(rng, st.n_events)
        story.events = pick_events(main, n, st.register, rng, [story.disease] if story.disease else [],
                                   0.3 if genre == "forum" else 0.0, story.clausal)
        if story.disease and story.disease.lower() in WORSENABLE and rng.random() < 0.5:
            story.worsened = f"worse {story.disease.lower()}"
    treat = treatment_pool([d for d in others if d is not story.not_taken]) if named and story.events else []
    if treat and rng.random() < st.p_treated:
        story.treatments = rng.sample(treat, min(len(treat), rng.choice((1, 1, 2))))
    if rng.random() < st.p_negation:
        story.negated = _negations(story, rng.choice((1, 1, 2)), rng)
    if rng.random() < st.p_hypothetical:
        story.hypothetical = _negations(Story(genre, [], [], False, story.events, story.disease,
                                              [], [], None), 1, rng)
        story.hypothetical = [h for h in story.hypothetical if h not in story.negated]
    return story


def treatment_pool(drugs: Sequence[Drug]) -> list[Drug]:
    """The drugs of `drugs` a clinician gives to treat a reaction (TREATMENT_CLASSES)."""
    names = _treatment_generics()
    return [d for d in drugs if any(g.lower() in names for g in d.generics)]


def _treatment_generics() -> frozenset[str]:
    """Generic names of the vocabulary's drugs in TREATMENT_CLASSES."""
    return frozenset(row["generic"].lower() for row in vocabulary.load().drugs if row["class"] in TREATMENT_CLASSES)


def _dose(form: str, rng: random.Random) -> str:
    """A dose as people write it (plain text, never part of a label)."""
    if form in ("injection", "infusion"):
        return rng.choice(("every 2 weeks", "once a week", "every 8 weeks", "monthly", "0.5mg weekly",
                           "1 mg a week", "40mg every other week"))
    if form == "inhaler":
        return rng.choice(("2 puffs twice a day", "1 puff daily", "160/4.5 two puffs bid"))
    if form in ("gel", "cream", "patch", "spray"):
        return rng.choice(("once a day", "twice daily", "every morning"))
    return rng.choice(("5mg", "10 mg", "20mg", "25 mg", "50mg", "100mg", "150 mg", "0.5mg",
                       "10mg at night", "20 mg in the morning", "one tablet a day"))


def dose_pair(rng: random.Random) -> tuple[str, str]:
    """Two doses for "started at X, now on Y" talk."""
    low = rng.choice((5, 10, 12.5, 20, 25, 50))
    high = low * rng.choice((2, 3, 4))
    fmt = lambda x: (f"{x:g}mg" if rng.random() < 0.6 else f"{x:g} mg")  # noqa: E731
    return fmt(low), fmt(high)


@dataclass
class Ctx:
    """What a genre writer needs for one report."""
    rng: random.Random
    story: Story
    style: GenreStyle
    max_chars: int
    said: dict[str, list[Segment]] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)       # drug names written but not taken

    def drug(self, d: Drug) -> list[Segment]:
        """A drug as written; the same drug is written the same way throughout one report. At the first
        mention a brand may come with its generic in brackets (or the other way round): two labels."""
        if d.name in self.said:
            return list(self.said[d.name])
        self.said[d.name] = mention(d, self.style, self.rng, self.story)
        if d.brands and d.generics and self.rng.random() < self.style.p_both_names:
            pair = [self.rng.choice(d.brands), self.rng.choice(d.generics)]
            first, second = pair if self.rng.random() < 0.7 else pair[::-1]
            self.said[d.name] = [(first, "drug")]
            return [(first, "drug"), (" (", None), (second, "drug"), (")", None)]
        return list(self.said[d.name])

    def again(self, d: Drug) -> list[Segment]:
        """A later mention of a drug already named: clinicians often switch to its abbreviation
        ("methotrexate ... MTX"), patients to a clipping ("doxy"); both are labels as written."""
        first = self.drug(d)
        forms = [x for x in d.short_forms if self.style.register != "lay" or x.islower()]
        if forms and self.rng.random() < P_SHORT_LATER.get(self.style.register, 0.0):
            return [(self.rng.choice(forms), "drug")]
        return first

    def later_main(self) -> list[Segment]:
        """The main drug mentioned again (its short form at times), or the genre's unnamed phrase."""
        return self.again(self.story.suspects[0]) if self.story.named else self.main()

    def treatments(self) -> list[Segment]:
        """The drugs given to treat the reaction, joined as a list."""
        return join_list([self.drug(d) for d in self.story.treatments], self.rng)

    def main(self) -> list[Segment]:
        """The main drug as written, or the genre's way of not naming it."""
        if self.story.named:
            return self.drug(self.story.suspects[0])
        return [(self.rng.choice(UNNAMED[self.story.genre]), None)]

    def not_taken(self) -> str:
        """A drug the patient only considers: its name as plain text, never a label."""
        d = self.story.not_taken
        pool = d.brands if d.brands and self.rng.random() < self.style.p_brand else d.generics
        name = self.rng.choice(pool or d.mentions)
        self.unlabelled.append(name)
        return name

    def comeds(self) -> list[Segment]:
        """The co-medications, each written once, joined as a list."""
        return join_list([self.drug(c) for c in self.story.comeds], self.rng)


def squeeze(text: str, spans: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Text without doubled spaces or outer whitespace left by empty slots; spans moved along."""
    inside = [False] * (len(text) + 1)
    for sp in spans:
        for k in range(sp["start"], sp["end"]):
            inside[k] = True
    keep, new_pos, out = [], [], []
    for k, ch in enumerate(text):
        new_pos.append(len(out))
        drop = ch == " " and not inside[k] and (not out or out[-1] in " \n" or k + 1 == len(text)
                                                 or text[k + 1] in " \n")
        if not drop:
            out.append(ch)
        keep.append(not drop)
    new_pos.append(len(out))
    joined = "".join(out)
    lead = len(joined) - len(joined.lstrip())
    moved = [{**sp, "start": new_pos[sp["start"]] - lead, "end": new_pos[sp["end"]] - lead} for sp in spans]
    return joined.strip(), moved


def record(genre: str, split: str, index: int, segments: list[Segment], story: Story,
           extra: dict[str, Any]) -> dict[str, Any]:
    """A canonical report from segments: text, labels from spans, spans, generator metadata."""
    text, spans = squeeze(*render(segments))
    drugs = schemas.dedupe(s["text"] for s in spans if s["label"] == "drug")
    aes = schemas.dedupe(s["text"] for s in spans if s["label"] == "adverse_event")
    meta = {"generator": "template", "genre": genre, "shape": genre, "style": extra.pop("style", genre),
            "named": story.named,
            "drug_names": [d.name for d in story.suspects + story.comeds + story.treatments],
            "suspect": [d.name for d in story.suspects] if story.named else [],
            "negated": [n for n in story.negated if n in text],
            "hypothetical": [h for h in story.hypothetical if h in text],
            "disease": story.disease if story.disease and story.disease in text else None,
            "worsened": story.worsened if story.worsened and story.worsened in aes else None,
            "lay_terms": [s for s, t in story.events if s != t and s in aes],
            "misspelled": [m for m in story.misspelled if m in text or m.lower() in text],
            "not_taken": extra.pop("not_taken", []), **extra}
    return {"id": f"{split}-{index:05d}", "text": text, "drugs": drugs, "adverse_events": aes,
            "spans": spans, "meta": meta}


class GenreGenerator:
    """Seeded generator over all genres: picks a genre per report from the mix, then writes it."""

    def __init__(self, drugs: Sequence[Drug], seed: int, split: str, mix: dict[str, float] | None = None,
                 max_chars: int = 0):
        self.message = TemplateGenerator(drugs, seed, split)
        self.drugs, self.seed, self.split = list(drugs), seed, split
        self.mix = check_mix(mix or {"message": 1.0})
        self.max_chars = int(max_chars or 0)

    def _rng(self, index: int, attempt: int) -> random.Random:
        h = hashlib.sha256(f"genre:{self.seed}:{self.split}:{index}:{attempt}".encode()).digest()
        return random.Random(int.from_bytes(h[:8], "big"))

    def generate(self, index: int, attempt: int = 0) -> dict[str, Any]:
        """Report number `index` of this split in the genre the mix draws for it."""
        rng = self._rng(index, attempt)
        genre = _weighted(rng, sorted(self.mix.items()))
        if genre == "message":
            rec = self.message.generate(index, attempt)
            rec["meta"]["genre"] = "message"
            return rec
        from . import genre_writers
        story = plan_story(genre, self.drugs, rng)
        ctx = Ctx(rng, story, STYLES[genre], self.max_chars or 4000)
        segments, extra = genre_writers.WRITERS[genre](ctx)
        return record(genre, self.split, index, segments, story, extra)


def check_mix(mix: dict[str, float]) -> dict[str, float]:
    """A genre mix: known genres, non-negative weights, not all zero."""
    unknown = sorted(set(mix) - set(GENRES))
    if unknown:
        raise ValueError(f"genre_mix names unknown genres {unknown}; known: {list(GENRES)}")
    if any(float(v) < 0 for v in mix.values()) or not sum(float(v) for v in mix.values()):
        raise ValueError(f"genre_mix weights must be >= 0 and not all zero, got {mix}")
    return {k: float(v) for k, v in mix.items() if float(v) > 0}


def noisy(segments: list[Segment], rng: random.Random, rate: float) -> list[Segment]:
    """Typing slips in unlabelled text only (labels stay as they were written)."""
    if rate <= 0:
        return segments
    noise = typo_noise(rng, rate)
    return [(noise(t), lab) if lab is None else (t, lab) for t, lab in segments]


__all__ = ["GENRES", "STYLES", "GenreGenerator", "Story", "Ctx", "plan_story", "pick_events",
           "phrase_for", "mention", "record", "check_mix", "dose_pair", "fill", "_cap", "_ae_segs",
           "_dose", "noisy", "NOTE_ABBREV", "HASHTAGS"]
