"""Step 2: grounded synthetic adverse-event reports from drug records.

The template generator assembles every report from segments, some of which are labels (a drug
or an adverse event); the final text and the character offsets of every label come out of the
same assembly, so each label is an exact span of the text by construction. Negated symptoms,
the disease being treated and everything in the reporter block are plain text, never labels.
"""
from __future__ import annotations

import hashlib
import logging
import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import schemas, vocabulary
from .io import DataError, write_jsonl
from .splits import normalize_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "test_unseen")
GENERATORS = ("template", "llm")

Segment = tuple[str, str | None]          # (text, label or None)

# ---- lexicons ---------------------------------------------------------------------------------
# Lay ways of saying a symptom. A lay phrase is used *instead of* the term and becomes the label
# (the reporter's own words); all phrases are noun phrases so that every sentence frame fits.
LAY: dict[str, tuple[str, ...]] = {
    "nausea": ("feeling sick to my stomach", "queasiness", "an upset stomach"),
    "vomiting": ("throwing up", "vomiting spells"),
    "headache": ("headaches", "a pounding head", "head pain"),
    "dizziness": ("dizzy spells", "lightheadedness", "spinning spells"),
    "diarrhea": ("loose stools", "loose bowels", "watery stools"),
    "constipation": ("trouble going to the bathroom", "hard stools"),
    "insomnia": ("trouble sleeping", "a hard time sleeping", "sleepless nights"),
    "drowsiness": ("daytime sleepiness", "feeling sleepy"),
    "fatigue": ("feeling tired", "no energy", "exhaustion"),
    "tiredness": ("feeling worn out", "no energy"),
    "muscle pain": ("aching muscles", "sore muscles"),
    "joint pain": ("aching joints", "sore knees"),
    "back pain": ("pain in my lower back", "a sore back"),
    "rash": ("red spots on my skin", "a skin rash", "bumps on my arms"),
    "itching": ("itchy skin", "itchiness"),
    "hives": ("welts on my skin", "itchy welts"),
    "weight gain": ("putting on weight", "gaining weight"),
    "weight loss": ("losing weight",),
    "dry mouth": ("a parched mouth", "cotton mouth"),
    "blurred vision": ("blurry vision", "fuzzy eyesight"),
    "anxiety": ("feeling anxious", "nervousness"),
    "restlessness": ("feeling jittery", "feeling restless"),
    "tremor": ("shaking hands", "shakiness"),
    "sweating": ("night sweats", "sweatiness"),
    "runny nose": ("a running nose", "a drippy nose"),
    "stuffy nose": ("a blocked nose", "congestion"),
    "sore throat": ("a scratchy throat", "throat irritation"),
    "cough": ("a dry cough", "coughing fits"),
    "swelling": ("puffiness", "swollen ankles"),
    "flushing": ("hot flushes", "a red face"),
    "stomach pain": ("a tummy ache", "stomach cramps"),
    "abdominal pain": ("belly pain", "cramping in my belly"),
    "heartburn": ("burning in my chest", "acid coming up"),
    "indigestion": ("an upset stomach", "stomach upset"),
    "chest pain": ("tightness in my chest", "chest tightness"),
    "shortness of breath": ("trouble breathing", "breathlessness"),
    "fast heartbeat": ("a racing heart", "heart pounding"),
    "palpitations": ("heart fluttering", "a racing heart"),
    "fever": ("a high temperature", "a temperature"),
    "chills": ("shivering", "shivers"),
    "confusion": ("brain fog", "feeling foggy"),
    "memory problems": ("forgetfulness", "trouble remembering things"),
    "depression": ("feeling down", "low mood"),
    "mood changes": ("mood swings",),
    "decreased sex drive": ("no interest in sex", "low libido"),
    "hair loss": ("hair falling out", "thinning hair"),
    "muscle cramps": ("leg cramps", "cramps in my calves"),
    "numbness": ("numb fingers", "numb feet"),
    "tingling": ("pins and needles", "tingling in my fingers"),
    "loss of appetite": ("no appetite", "not feeling hungry"),
    "increased appetite": ("feeling hungry",),
    "bloating": ("a bloated belly", "feeling bloated"),
    "gas": ("wind", "gassiness"),
    "unusual dreams": ("weird dreams", "vivid dreams"),
    "bruising": ("bruises all over my legs", "easy bruising"),
    "dark urine": ("dark pee", "tea-colored urine"),
    "unpleasant taste": ("a metallic taste", "a bitter taste in my mouth"),
    "sinus pain": ("pressure in my sinuses",),
    "nasal congestion": ("a stuffy nose", "a blocked nose"),
    "upper respiratory tract infection": ("a chest cold", "a cold that won't go away"),
    "injection site reactions": ("redness where I inject", "soreness at the injection site"),
    "pain in extremity": ("pain in my legs", "aching arms"),
    "sleep problems": ("trouble sleeping", "restless nights"),
}

# Everyday symptoms, for negations ("no nausea so far") and as a fallback vocabulary.
COMMON_SYMPTOMS = ("nausea", "headache", "dizziness", "rash", "diarrhea", "vomiting", "fever",
                   "stomach pain", "insomnia", "fatigue", "itching", "dry mouth", "chest pain",
                   "swelling", "muscle pain", "blurred vision", "palpitations", "weight gain",
                   "cough", "hair loss", "anxiety", "constipation", "drowsiness", "tremor")

# keyword in a drug's `uses` text -> ways a reporter names that condition (plain text, never labels)
DISEASES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("cholesterol",), ("high cholesterol", "cholesterol")),
    (("hypertension", "high blood pressure"), ("high blood pressure", "hypertension")),
    (("type 2 diabetes", "diabetes", "blood sugar"), ("type 2 diabetes", "diabetes", "blood sugar")),
    (("rheumatoid arthritis",), ("rheumatoid arthritis", "RA")),
    (("psoriatic arthritis",), ("psoriatic arthritis",)),
    (("psoriasis",), ("psoriasis",)),
    (("crohn",), ("Crohn's disease",)),
    (("ulcerative colitis",), ("ulcerative colitis", "colitis")),
    (("ankylosing spondylitis",), ("ankylosing spondylitis",)),
    (("depress",), ("depression",)),
    (("anxiety",), ("anxiety",)),
    (("bipolar",), ("bipolar disorder",)),
    (("schizophrenia",), ("schizophrenia",)),
    (("insomnia",), ("insomnia", "sleep problems")),
    (("narcolepsy",), ("narcolepsy",)),
    (("sleep apnea",), ("sleep apnea",)),
    (("shift work",), ("shift work sleep disorder",)),
    (("reflux", "gerd", "heartburn"), ("acid reflux", "GERD", "reflux")),
    (("ulcer",), ("stomach ulcers",)),
    (("asthma",), ("asthma",)),
    (("copd", "chronic obstructive", "emphysema", "bronchitis"), ("COPD", "emphysema")),
    (("allerg",), ("allergies", "hay fever")),
    (("erectile",), ("erectile dysfunction", "ED")),
    (("prostat",), ("enlarged prostate",)),
    (("testosterone", "hypogonadism"), ("low testosterone", "low T")),
    (("hiv",), ("HIV",)),
    (("anemia", "anaemia"), ("anemia",)),
    (("neutropenia", "white blood cell"), ("low white cell counts",)),
    (("lymphoma",), ("lymphoma",)),
    (("leukemia",), ("leukemia",)),
    (("acne",), ("acne",)),
    (("respiratory tract infection",), ("chest infection",)),
    (("lyme",), ("Lyme disease",)),
    (("rosacea",), ("rosacea",)),
    (("pah",), ("pulmonary hypertension",)),
    (("angina",), ("angina",)),
    (("heart failure",), ("heart failure",)),
    (("fibromyalgia",), ("fibromyalgia",)),
    (("neuropath", "nerve pain"), ("nerve pain",)),
    (("obsessive",), ("OCD",)),
    (("panic",), ("panic attacks",)),
    (("migraine",), ("migraines",)),
    (("kidney",), ("kidney disease",)),
)

# how a reporter refers to a medicine without naming it (reports with an empty drug list)
UNNAMED_DRUG = ("this new pill", "the new medication", "the tablets my doctor gave me",
                "my new prescription", "the injection", "the medicine I was prescribed",
                "these pills", "the new tablets")

LOCALES = ("en_US", "en_GB", "en_CA", "en_AU", "en_IN", "en_IE", "de_DE", "fr_FR", "es_ES",
           "it_IT", "nl_NL")
COUNTRY = {"en_US": "United States", "en_GB": "United Kingdom", "en_CA": "Canada",
           "en_AU": "Australia", "en_IN": "India", "en_IE": "Ireland", "de_DE": "Germany",
           "fr_FR": "France", "es_ES": "Spain", "it_IT": "Italy", "nl_NL": "Netherlands"}
COMPANIES = ("XYZ Pharma Inc.", "Northbridge Pharmaceuticals", "Helix Health Ltd.",
             "Meridian Therapeutics", "Apex Biopharma", "Cardinal Life Sciences")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
RELATIVES = (("mother", "she", "her"), ("father", "he", "his"), ("husband", "he", "his"),
             ("wife", "she", "her"), ("son", "he", "his"), ("daughter", "she", "her"),
             ("grandmother", "she", "her"), ("brother", "he", "his"), ("sister", "she", "her"))

# report mix (documented in the dataset card)
P_NO_AE = 0.2            # product question or complaint, empty adverse-event list
P_UNNAMED = 0.2          # adverse-event report that names no drug ("these pills", "the injection")
P_UNNAMED_NO_AE = 0.1    # product question or complaint that names no drug
P_SECOND_SUSPECT = 0.12  # a second drug with its own adverse events
P_NEGATION = 0.4
P_DISEASE = 0.6
P_LAY = 0.35             # an event in lay words instead of the record's term
P_MISSPELL = 0.06
P_LOWER = 0.08
N_AE_WEIGHTS = ((1, 0.33), (2, 0.35), (3, 0.22), (4, 0.10))
N_COMED_WEIGHTS = ((0, 0.55), (1, 0.3), (2, 0.15))
SHAPES = (("webform", 0.34), ("email", 0.24), ("short_form", 0.12), ("clinician_note", 0.15),
          ("caregiver_email", 0.15))
SELF_STYLES = ("plain", "brief", "rambling", "worried", "non_native", "typos")


# ---- drug records -> what the generator can use -----------------------------------------------
@dataclass(frozen=True)
class Drug:
    """A drug record reduced to what the generator needs."""
    name: str
    mentions: tuple[str, ...]        # ways to write its name
    events: tuple[str, ...]          # clean side-effect terms
    diseases: tuple[str, ...]        # how a reporter names what it treats
    form: str                        # tablet | injection | inhaler | gel | ... (vocabulary.FORMS)
    all_names: tuple[str, ...] = field(default=())
    generics: tuple[str, ...] = field(default=())
    brands: tuple[str, ...] = field(default=())
    misspellings: tuple[str, ...] = field(default=())   # common misspellings, written as people do
    short_forms: tuple[str, ...] = field(default=())    # abbreviations (MTX) and clippings (doxy)


_TERM_OK = re.compile(r"^[A-Za-z][A-Za-z' /-]*[A-Za-z]$")
# fragments a scraper can leave behind that are not symptoms on their own
_NOT_TERMS = {"lips", "throat", "tongue", "face", "eyes", "jaw", "hands", "feet", "legs", "arms",
              "driving", "warmth", "pain", "making phone calls", "eating while not fully awake"}


def short_event_label(term: str) -> str | None:
    """A side-effect entry as a short symptom phrase, or None when it is not usable as one."""
    t = re.split(r"--|;|,|\(|:| - |\u2014|\u2013", term, maxsplit=1)[0].strip().rstrip(".")
    t = re.sub(r"^(a|an|the|or|and|severe|mild)\s+", "", t, flags=re.I).strip()
    t = re.sub(r"\byour\b", "the", t, flags=re.I)
    if " or " in t:                       # "runny or stuffy nose" -> "stuffy nose"; "itching or rash" -> "itching"
        a, b = t.split(" or ", 1)
        t = b if len(b.split()) > len(a.split()) else a
    if not t or not _TERM_OK.match(t) or len(t.split()) > 5 or len(t) < 3:
        return None
    if t.lower() in _NOT_TERMS or re.match(r"(with|without|you)\b", t, re.I) or " you " in f" {t} ":
        return None
    if len(t) > 1 and not t[:2].isupper():         # keep acronyms (e.g. "HIV")
        t = t[0].lower() + t[1:]
    return t


def _clean_name(name: str) -> str | None:
    """A brand or generic name short enough to write in a message, else None."""
    n = name.strip()
    if not n or "(" in n or len(n.split()) > 3 or len(n) > 30:
        return None
    return n


def _diseases_for(rec: dict[str, Any]) -> tuple[str, ...]:
    """Conditions named in the record's `uses`, as a reporter would write them."""
    uses = " ".join(rec.get("uses", [])).lower() + " " + str(rec.get("drug_class") or "").lower()
    uses = uses.replace("pulmonary arterial hypertension", "pah")
    out: list[str] = []
    for keys, names in DISEASES:
        if any(k in uses for k in keys):
            out.extend(n for n in names if n not in out)
    return tuple(out)


def _form_for(rec: dict[str, Any]) -> str:
    """Dosage form guessed from the class and uses (for doses like "2 puffs" or "one injection")."""
    text = (str(rec.get("drug_class") or "") + " " + " ".join(rec.get("uses", []))).lower()
    if any(k in text for k in ("inhal", "bronchodilat", "corticosteroid")):
        return "inhaler"
    if any(k in text for k in ("monoclonal", "tnf", "colony stimulating", "erythropoie",
                               "glp-1", "incretin", "inject", "hematopoietic")):
        return "injection"
    if "androgen" in text or "testosterone" in text:
        return "gel"
    return "tablet"


def prepare_drugs(records: Sequence[dict[str, Any]]) -> list[Drug]:
    """Drug records the generator can use; records without usable side effects are skipped with a warning."""
    out = []
    for rec in records:
        events = _events_for(rec)
        if not events:
            log.warning("drug record %r has no usable side effects; skipped", rec.get("name"))
            continue
        names = [rec["name"]] + list(rec.get("brand_names", [])) + list(rec.get("generic_names", []))
        mentions = schemas.dedupe(n for n in (_clean_name(x) for x in names) if n)
        if not mentions:
            log.warning("drug record %r has no writable name; skipped", rec.get("name"))
            continue
        all_names = tuple(schemas.dedupe(x.strip() for x in names if x.strip()))
        diseases = tuple(rec.get("indications") or ()) or _diseases_for(rec)
        out.append(Drug(rec["name"], tuple(mentions), tuple(events), diseases,
                        rec.get("form") or _form_for(rec), all_names,
                        tuple(n for n in (_clean_name(x) for x in rec.get("generic_names", [])) if n),
                        tuple(n for n in (_clean_name(x) for x in rec.get("brand_names", [])) if n),
                        tuple(rec.get("misspellings", ())), tuple(rec.get("short_forms", ()))))
    return out


def _events_for(rec: dict[str, Any]) -> list[str]:
    """Side-effect terms of a record: scraped ones cleaned, vocabulary ones (already clean) as they are."""
    raw = schemas.all_side_effects(rec)
    terms = raw if rec.get("source") == vocabulary.SOURCE else [short_event_label(t) for t in raw]
    events: list[str] = []
    for t in [*terms, *rec.get("class_side_effects", [])]:
        if t and t.lower() not in {e.lower() for e in events}:
            events.append(t)
    return events


# ---- building text with spans -----------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(template: str, values: dict[str, list[Segment] | str]) -> list[Segment]:
    """Template with {placeholders} -> segments; a placeholder's value is text or labelled segments."""
    out: list[Segment] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.start() > pos:
            out.append((template[pos:m.start()], None))
        val = values[m.group(1)]
        out.extend([(val, None)] if isinstance(val, str) else val)
        pos = m.end()
    if pos < len(template):
        out.append((template[pos:], None))
    return out


def join_list(items: list[list[Segment]], rng: random.Random) -> list[Segment]:
    """Items as "a, b and c" (or "a & b", "a, b, c")."""
    if len(items) == 1:
        return list(items[0])
    last_sep = rng.choice((" and ", " and ", ", and ", " & ")) if len(items) > 2 else \
        rng.choice((" and ", " and ", " and also ", " plus "))
    out: list[Segment] = []
    for i, it in enumerate(items):
        if i:
            out.append((last_sep if i == len(items) - 1 else ", ", None))
        out.extend(it)
    return out


def render(segments: Iterable[Segment], noise: Callable[[str], str] | None = None
           ) -> tuple[str, list[dict[str, Any]]]:
    """Concatenate segments into the text and the spans of its labelled segments."""
    parts: list[str] = []
    spans: list[dict[str, Any]] = []
    pos = 0
    for text, label in segments:
        if label is None and noise is not None:
            text = noise(text)
        if label is not None:
            spans.append({"label": label, "start": pos, "end": pos + len(text), "text": text})
        parts.append(text)
        pos += len(text)
    return "".join(parts), spans


def misspell(word: str, rng: random.Random) -> str:
    """A plausible misspelling of a drug name (swap, drop or double an inner letter, or a vowel)."""
    if len(word) < 5:
        return word
    for _ in range(8):
        i = rng.randrange(1, len(word) - 2)
        op = rng.randrange(4)
        if op == 0:
            w = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif op == 1:
            w = word[:i] + word[i + 1:]
        elif op == 2:
            w = word[:i] + word[i] + word[i:]
        else:
            vowels = [j for j in range(1, len(word)) if word[j].lower() in "aeiou"]
            if not vowels:
                continue
            j = rng.choice(vowels)
            w = word[:j] + rng.choice([v for v in "aeiou" if v != word[j].lower()]) + word[j + 1:]
        if w != word and w.isprintable() and " " not in w.strip():
            return w
    return word


def typo_noise(rng: random.Random, rate: float = 0.05) -> Callable[[str], str]:
    """Typing slips in plain (unlabelled) text: dropped, swapped or doubled letters."""
    def noise(text: str) -> str:
        words = re.split(r"(\s+)", text)
        for k, w in enumerate(words):
            if len(w) >= 4 and w.isalpha() and rng.random() < rate:
                i = rng.randrange(1, len(w) - 1)
                op = rng.randrange(3)
                words[k] = (w[:i] + w[i + 1:] if op == 0 else
                            w[:i - 1] + w[i] + w[i - 1] + w[i + 1:] if op == 1 else
                            w[:i] + w[i] + w[i:])
        return "".join(words)
    return noise


# ---- sentence banks ---------------------------------------------------------------------------
# {S}/{s}: subject, {p}: possessive, {have}/{be}: verb forms, {drug}, {aes}, {disease}, {dose},
# {duration}, {neg}, {comeds}. Self and caregiver share most frames.
INTAKE = (
    "{S} {have} been taking {drug} {dose} for {duration} now.",
    "{S} started {drug} about {duration} ago.",
    "{S} {have} been on {drug} since {month}.",
    "{S} was prescribed {drug} {dose} {duration} ago.",
    "{S} switched to {drug} {duration} ago.",
)
INTAKE_DISEASE = (
    "{S} {have} been taking {drug} {dose} for {p} {disease} for {duration}.",
    "{P} doctor put {o} on {drug} for {p} {disease} about {duration} ago.",
    "{S} started {drug} for {disease} in {month}.",
    "{S} take{es} {drug} ({dose}) for {p} {disease}.",
    "{S} was prescribed {drug} to treat {p} {disease}.",
)
AE_FRAMES = (
    "Since then {s} {have} had {aes}.",
    "After a few days {s} noticed {aes}.",
    "Now {s} {be} getting {aes}.",
    "{S} {have} been experiencing {aes} ever since.",
    "It has given {o} {aes}.",
    "Within a week {s} developed {aes}.",
    "Since starting it {s} {have} {aes}.",
    "The problem is {aes}.",
)
AE_FRAMES_DRUG = (
    "Since starting {drug} {s} {have} had {aes}.",
    "{drug} has given {o} {aes}.",
    "Ever since {s} began {drug} there has been {aes}.",
    "I think {drug} is causing {aes}.",
    "After taking {drug} {s} developed {aes}.",
)
NEG_FRAMES = (
    "No {neg} so far, though.",
    "Thankfully there has been no {neg}.",
    "{S} {have} not had any {neg}.",
    "There is no {neg} at all.",
    "At least there is no {neg} like last time.",
)
COMED_FRAMES = (
    "{S} also take{es} {comeds}.",
    "Other medicines: {comeds}.",
    "{S} {be} also on {comeds}.",
    "Besides that {s} take{es} {comeds} every day.",
)
COMED_DISEASE_FRAMES = ("{S} also take{es} {comeds} for {p} {disease}.",)
SECOND_FRAMES = (
    "{S} also started {drug} recently and since then {s} {have} {aes}.",
    "Then {p} doctor added {drug} and now there is {aes} too.",
    "With {drug} {s} get{es} {aes} as well.",
)
CLOSINGS = {
    "plain": ("Is this a known side effect?", "Please let me know if this is normal.",
              "Has anyone else reported this?", "Did you change the formula?", ""),
    "brief": ("Thanks.", "", "Please advise."),
    "rambling": ("Sorry for the long message, I just wanted to tell someone.",
                 "I don't know if this matters but I thought you should know.",
                 "My pharmacist didn't have any information for me, so I am writing to you."),
    "worried": ("I am really scared, is this normal?", "Should I stop taking it?",
                "Please tell me what to do, I am very worried.", "Is this dangerous?"),
    "non_native": ("Please tell me is this normal or not.", "I want to know it is side effect?",
                   "Kindly advise me what to do."),
    "typos": ("is this normal??", "pls let me know", "anyone else get this?"),
}
FILLERS = (
    "I work as {job} so I am busy most days.",
    "We moved to {city} last year and I changed doctors.",
    "My pharmacist at the local store did not know much about it.",
    "I have had a lot going on with my family lately.",
    "My neighbour told me to write to you.",
    "I usually take it in the morning with breakfast.",
)
WORRIED_OPENERS = ("I am really worried about something.", "I hope someone can help me.",
                   "I am writing because I am frightened.")
NON_NATIVE_INTAKE = (
    "I am taking the {drug} since {duration} for {p} {disease}.",
    "From {duration} I use {drug} {dose} every day.",
    "My doctor is giving me {drug} since {month}.",
)
NON_NATIVE_AE = (
    "Now I am having the {aes} every day.",
    "After this medicine I get {aes}.",
    "Since this I have {aes} and it is not going away.",
)
CLIN_INTAKE = (
    "Pt started {drug} {dose} {duration} ago for {disease}.",
    "Patient on {drug} {dose} for {disease} since {month}.",
    "Patient commenced {drug} {dose} approx. {duration} ago.",
)
CLIN_AE = (
    "Developed {aes} on day {day}.",
    "Pt reports {aes}.",
    "Presented with {aes} after {duration} of therapy.",
    "Complains of {aes}.",
)
CLIN_NEG = ("Denies {neg}.", "No {neg}.", "No evidence of {neg}.")
CLIN_COMED = ("Concomitant meds: {comeds}.", "Also on {comeds}.", "Other medications: {comeds}.")
CLIN_OUTCOME = ("Drug discontinued; symptoms improving.", "Dose reduced, will monitor.",
                "Therapy continued. Reporting for pharmacovigilance purposes.",
                "Outcome unknown at time of report.")
QUESTIONS = (
    "Can {drug} be taken with food or should it be on an empty stomach?",
    "Is there a generic version of {drug} that costs less?",
    "I missed a dose of {drug} yesterday, what should I do?",
    "How should I store {drug} when I travel?",
    "Can I drink alcohol while taking {drug}?",
)
COMPLAINTS = (
    "The last box of {drug} I picked up had a broken seal.",
    "The {drug} tablets in my refill look different from the previous ones.",
    "The packaging of {drug} is very hard to open with arthritis in my hands.",
    "My pharmacy says {drug} is out of stock again.",
    "The leaflet in the {drug} box was missing.",
)
NO_AE_CLOSINGS = ("Thank you.", "I look forward to your reply.", "Thanks in advance.", "")
NO_AE_NOTES = ("I have not noticed any side effects so far.", "It has been working well for me.",
               "I am not having any problems with it.", "")


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


@lru_cache(maxsize=None)
def _faker(locale: str):
    """One Faker per locale, made once (they are slow to build) and re-seeded per report.
    Faker builds some lists from sets (it_IT's `cities`), whose order changes with Python's
    hash seed from one process to the next; sorting them keeps the reports byte-identical."""
    from faker import Faker
    fk = Faker(locale)
    for provider in fk.providers:
        for attr in ("cities", "city_names"):
            value = getattr(provider, attr, None)
            if isinstance(value, list):
                setattr(provider, attr, sorted(value))
    return fk


def _dose(form: str, rng: random.Random) -> str:
    form = {"infusion": "injection", "cream": "gel", "patch": "gel", "spray": "gel"}.get(form, form)
    if form == "inhaler":
        return rng.choice(("2 puffs twice a day", "one puff daily", "2 puffs in the morning"))
    if form == "injection":
        return rng.choice(("once a week", "every two weeks", "one shot a month", "daily"))
    if form == "gel":
        return rng.choice(("once a day", "every morning"))
    return rng.choice(("5 mg", "10 mg", "20 mg", "40 mg", "50 mg", "100 mg", "one tablet a day",
                       "10mg once daily", "20 mg at night"))


def _duration(rng: random.Random) -> str:
    n = rng.randint(2, 11)
    return rng.choice((f"{n} days", f"{n} weeks", f"{n} months", "a week", "a month",
                       "two weeks", "a year", "three months"))


def _with_article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _person(perspective: str, rng: random.Random) -> dict[str, str]:
    """Pronouns and verb forms for the one who took the drug (reporter or relative)."""
    if perspective == "self":
        return {"S": "I", "s": "I", "o": "me", "p": "my", "P": "My", "have": "have", "be": "am",
                "es": "", "who": ""}
    rel, subj, poss = rng.choice(RELATIVES)
    obj = "him" if subj == "he" else "her"
    return {"S": subj.capitalize(), "s": subj, "o": obj, "p": poss, "P": poss.capitalize(),
            "have": "has", "be": "is", "es": "s", "who": rel}


def _overlaps(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a in b or b in a


@dataclass
class Plan:
    """What one report will say, chosen before any text is written."""
    shape: str
    style: str
    perspective: str
    suspects: list[Drug]
    comeds: list[Drug]
    has_ae: bool
    named: bool


@dataclass
class _Draft:
    """A report being written: its sentences so far and what they label, negate and name."""
    style: str
    meta: dict[str, Any]
    base: dict[str, Any]
    disease: str | None
    used: list[str]
    body: list[list[Segment]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    negated: list[str] = field(default_factory=list)
    lay_terms: list[str] = field(default_factory=list)


class TemplateGenerator:
    """Seeded template generator over a fixed set of drugs (one instance per split)."""

    def __init__(self, drugs: Sequence[Drug], seed: int, split: str):
        if not drugs:
            raise DataError(f"split {split!r}: no usable drug records to generate reports from")
        self.drugs = list(drugs)
        self.seed = seed
        self.split = split

    def _rng(self, index: int, attempt: int) -> tuple[random.Random, int]:
        h = hashlib.sha256(f"{self.seed}:{self.split}:{index}:{attempt}".encode()).digest()
        s = int.from_bytes(h[:8], "big")
        return random.Random(s), s

    def _plan(self, rng: random.Random) -> Plan:
        shape = _weighted(rng, SHAPES)
        perspective = {"clinician_note": "clinician", "caregiver_email": "caregiver"}.get(shape, "self")
        if shape == "webform" and rng.random() < 0.2:
            perspective = "caregiver"
        if perspective == "clinician":
            style = "clinical"
        elif perspective == "caregiver":
            style = rng.choice(("plain", "brief", "rambling", "worried", "typos"))
        else:
            style = rng.choice(SELF_STYLES)
        has_ae = rng.random() >= P_NO_AE
        named = rng.random() >= (P_UNNAMED if has_ae else P_UNNAMED_NO_AE)
        n_sus = 2 if (has_ae and named and len(self.drugs) > 1 and rng.random() < P_SECOND_SUSPECT) else 1
        n_com = _weighted(rng, N_COMED_WEIGHTS) if named else 0
        picked: list[Drug] = []
        for d in rng.sample(self.drugs, min(len(self.drugs), n_sus + n_com)):
            names = {x.lower() for x in d.all_names}
            if not any(names & {x.lower() for x in p.all_names} for p in picked):
                picked.append(d)
        n_sus = min(n_sus, len(picked))
        return Plan(shape, style, perspective, picked[:n_sus], picked[n_sus:], has_ae, named)

    def _mention(self, drug: Drug, rng: random.Random, style: str) -> tuple[list[Segment], str]:
        m = drug.mentions[0] if rng.random() < 0.55 else rng.choice(drug.mentions)
        if rng.random() < P_MISSPELL:
            m = misspell(m, rng)
        if style == "typos" and rng.random() < 0.5 or rng.random() < P_LOWER:
            m = m.lower()
        return [(m, "drug")], m

    def _events(self, drug: Drug, n: int, rng: random.Random, avoid: list[str]
                ) -> tuple[list[list[Segment]], list[str], list[str]]:
        """Pick n side effects of `drug` (some in lay words); return segments, labels, record terms."""
        pool = [e for e in drug.events if not any(_overlaps(e, a) for a in avoid)]
        chosen = rng.sample(pool, min(n, len(pool)))
        segs, labels, terms = [], [], []
        for term in chosen:
            lay = LAY.get(term.lower()) or LAY.get(term.lower().rstrip("s"))
            said = rng.choice(lay) if lay and rng.random() < P_LAY else term
            if any(_overlaps(said, x) for x in labels + avoid):
                continue
            pre = rng.choice(("", "", "", "really bad ", "some ", "mild ", "constant ")) \
                if said == term and len(term.split()) <= 2 and not term.endswith("ing") else ""
            if said.startswith(("a ", "an ")):           # the article is not part of the label
                art, said = said.split(" ", 1)
                pre = art + " "
            seg: list[Segment] = ([(pre, None)] if pre else []) + [(said, "adverse_event")]
            segs.append(seg)
            labels.append(said)
            terms.append(term)
        return segs, labels, terms

    def generate(self, index: int, attempt: int = 0) -> dict[str, Any]:
        """Report number `index` of this split (a different `attempt` gives a different report)."""
        rng, rec_seed = self._rng(index, attempt)
        plan = self._plan(rng)
        locale = rng.choice(LOCALES)
        fk = _faker(locale)
        fk.seed_instance(rec_seed)
        per = _person(plan.perspective, rng)
        d = self._draft(rng, plan, fk, per, locale)
        if plan.has_ae:
            self._event_body(rng, plan, d)
        else:
            self._no_event_body(rng, plan, d)
        if rng.random() < P_NEGATION:
            self._negation(rng, d)
        if plan.comeds:
            self._comedications(rng, plan, d)
        message = self._styled(rng, plan, d.base, d.body)
        segments = self._shape(rng, plan, fk, locale, per, message)
        return self._record(index, plan, segments, d)

    def _draft(self, rng: random.Random, plan: Plan, fk: Any, per: dict[str, str], locale: str) -> "_Draft":
        """The report's first suspect mention, disease and the values its sentence frames fill in."""
        style = plan.style
        meta: dict[str, Any] = {"generator": "template", "shape": plan.shape, "style": style,
                                "perspective": plan.perspective, "locale": locale}
        main, used = plan.suspects[0], []
        if plan.named:
            drug_seg, drug_txt = self._mention(main, rng, style)
            used.append(drug_txt)
        else:
            drug_txt = rng.choice(UNNAMED_DRUG)
            drug_seg = [(drug_txt, None)]
        disease = rng.choice(main.diseases) if main.diseases and rng.random() < P_DISEASE else None
        base = {**per, "dose": _dose(main.form, rng), "duration": _duration(rng),
                "month": rng.choice(MONTHS), "day": str(rng.randint(2, 14)), "drug": drug_seg,
                "disease": disease or "", "job": _with_article(fk.job().lower()) if style == "rambling" else "",
                "city": fk.city() if style == "rambling" else ""}
        return _Draft(style=style, meta=meta, base=base, disease=disease, used=used)

    def _event_body(self, rng: random.Random, plan: Plan, d: "_Draft") -> None:
        """Intake and adverse events of the first suspect, then maybe events of a second suspect."""
        main = plan.suspects[0]
        avoid = [d.disease] if d.disease else []
        segs, labels, terms = self._events(main, _weighted(rng, N_AE_WEIGHTS), rng, avoid)
        d.events += labels
        d.lay_terms += [lab for lab, t in zip(labels, terms) if lab != t]
        d.body += self._intake_and_events(rng, plan, d.base, d.disease, segs)
        if len(plan.suspects) < 2:
            return
        seg2, txt2 = self._mention(plan.suspects[1], rng, d.style)
        d.used.append(txt2)
        segs2, labels2, terms2 = self._events(plan.suspects[1], rng.choice((1, 1, 2)), rng, avoid + d.events)
        if not segs2:
            d.used.pop()
            return
        d.events += labels2
        d.lay_terms += [lab for lab, t in zip(labels2, terms2) if lab != t]
        tmpl = rng.choice(CLIN_AE if d.style == "clinical" else SECOND_FRAMES)
        if d.style == "clinical":
            tmpl = "Also started {drug}. " + tmpl
        d.body.append(fill(tmpl, {**d.base, "drug": seg2, "aes": join_list(segs2, rng)}))

    def _no_event_body(self, rng: random.Random, plan: Plan, d: "_Draft") -> None:
        """A question or complaint about the drug that reports no adverse event."""
        kind = rng.choice(("question", "question", "complaint"))
        d.meta["no_ae_kind"] = kind
        if d.disease and rng.random() < 0.5:
            intake = INTAKE_DISEASE if plan.perspective != "clinician" else CLIN_INTAKE
            d.body.append(fill(rng.choice(intake), d.base))
        ask = fill(rng.choice(QUESTIONS if kind == "question" else COMPLAINTS), d.base)
        if plan.perspective == "clinician":
            ask = fill("Pt on {drug} {dose}, tolerating well. Query from patient: ", d.base) + ask
        d.body.append(ask)
        note = rng.choice(NO_AE_NOTES)
        if note and plan.perspective == "self":
            d.body.append([(note, None)])

    def _negation(self, rng: random.Random, d: "_Draft") -> None:
        """A negated symptom sentence (never a label), placed among the first sentences."""
        pool = [s for s in COMMON_SYMPTOMS
                if not any(_overlaps(s, x) for x in d.events + ([d.disease] if d.disease else []))]
        d.negated = rng.sample(pool, rng.choice((1, 1, 2)))
        frames = CLIN_NEG if d.style == "clinical" else NEG_FRAMES
        d.body.insert(min(len(d.body), rng.randint(1, 3)),
                      fill(rng.choice(frames), {**d.base, "neg": " or ".join(d.negated)}))

    def _comedications(self, rng: random.Random, plan: Plan, d: "_Draft") -> None:
        """A sentence naming the co-medications, sometimes with the disease they treat."""
        segs_c = []
        for c in plan.comeds:
            seg, txt = self._mention(c, rng, d.style)
            segs_c.append(seg)
            d.used.append(txt)
        cvals = {**d.base, "comeds": join_list(segs_c, rng)}
        c_dis = [x for x in plan.comeds[0].diseases if not any(_overlaps(x, e) for e in d.events)]
        c_disease = rng.choice(c_dis) if c_dis and len(plan.comeds) == 1 and rng.random() < 0.5 else None
        if d.style == "clinical":
            d.body.append(fill(rng.choice(CLIN_COMED), cvals))
        elif c_disease and c_disease != d.disease:
            d.body.append(fill(rng.choice(COMED_DISEASE_FRAMES), {**cvals, "disease": c_disease}))
            d.meta["comed_disease"] = c_disease
        else:
            d.body.append(fill(rng.choice(COMED_FRAMES), cvals))

    def _record(self, index: int, plan: Plan, segments: list[Segment], d: "_Draft") -> dict[str, Any]:
        """The report record: text, labels read off the rendered spans, and what made it."""
        text, spans = render(segments)
        drugs = schemas.dedupe(s["text"] for s in spans if s["label"] == "drug")
        aes = schemas.dedupe(s["text"] for s in spans if s["label"] == "adverse_event")
        mentions = {m.lower() for x in plan.suspects + plan.comeds for m in x.mentions}
        d.meta.update({"drug_names": [x.name for x in plan.suspects + plan.comeds],
                       "suspect": [x.name for x in plan.suspects], "named": plan.named,
                       "negated": d.negated, "lay_terms": d.lay_terms,
                       "disease": d.disease if d.disease and d.disease in text else None,
                       "misspelled": [u for u in d.used if u.lower() not in mentions]})
        return {"id": f"{self.split}-{index:05d}", "text": text, "drugs": drugs,
                "adverse_events": aes, "spans": spans, "meta": d.meta}

    def _intake_and_events(self, rng: random.Random, plan: Plan, base: dict, disease: str | None,
                           segs: list[list[Segment]]) -> list[list[Segment]]:
        """The sentences saying what was taken and what happened."""
        style = plan.style
        out: list[list[Segment]] = []
        if style == "clinical":
            intake = rng.choice(CLIN_INTAKE)
            if not disease:
                intake = intake.replace(" for {disease}", "")
            out.append(fill(intake, base))
            out.append(fill(rng.choice(CLIN_AE), {**base, "aes": join_list(segs, rng)}))
            return out
        if style == "non_native" and disease:
            out.append(fill(rng.choice(NON_NATIVE_INTAKE), base))
            out.append(fill(rng.choice(NON_NATIVE_AE), {**base, "aes": join_list(segs, rng)}))
            return out
        if len(segs) >= 3 and rng.random() < 0.3:          # events told over two sentences
            first, rest = segs[:1], segs[1:]
            out.append(fill(rng.choice(INTAKE_DISEASE if disease else INTAKE), base))
            out.append(fill(rng.choice(AE_FRAMES), {**base, "aes": join_list(first, rng)}))
            out.append(fill("Then {aes} started as well.", {"aes": join_list(rest, rng)}))
            return out
        if rng.random() < 0.3 and not disease:
            out.append(fill(rng.choice(AE_FRAMES_DRUG), {**base, "aes": join_list(segs, rng)}))
            return out
        out.append(fill(rng.choice(INTAKE_DISEASE if disease else INTAKE), base))
        out.append(fill(rng.choice(AE_FRAMES), {**base, "aes": join_list(segs, rng)}))
        return out

    def _styled(self, rng: random.Random, plan: Plan, base: dict, body: list[list[Segment]]
                ) -> list[Segment]:
        """Body sentences with the style's opener, fillers and closing, joined into one message."""
        style = plan.style
        sents = list(body)
        if style == "worried":
            sents.insert(0, [(rng.choice(WORRIED_OPENERS), None)])
        if style == "rambling":
            for f in rng.sample(FILLERS, 2):
                sents.insert(rng.randint(0, len(sents)), fill(f, base))
        if plan.perspective == "caregiver":
            sents.insert(0, [(f"I am writing about my {base['who']}.", None)])
        if not plan.has_ae:
            closing = "" if style == "clinical" else rng.choice(NO_AE_CLOSINGS)
        elif style == "clinical":
            closing = rng.choice(CLIN_OUTCOME)
        else:
            closing = rng.choice(CLOSINGS.get(style, CLOSINGS["plain"]))
        if closing:
            sents.append([(closing, None)])
        out: list[Segment] = []
        for i, s in enumerate(sents):
            if s and s[0][1] is None and s[0][0][:1].islower():
                s = [(s[0][0][0].upper() + s[0][0][1:], None)] + s[1:]
            if i:
                out.append((" ", None))
            out.extend(s)
        if style == "typos":
            noise = typo_noise(rng)
            out = [(noise(t.lower()), lab) if lab is None else (t, lab) for t, lab in out]
        return out

    def _shape(self, rng: random.Random, plan: Plan, fk, locale: str, per: dict,
               message: list[Segment]) -> list[Segment]:
        """Wrap the message in its report shape (web form, e-mail, short form, clinician note)."""
        name = fk.name()
        country = COUNTRY.get(locale, "United States")
        company = rng.choice(COMPANIES)
        if plan.shape == "webform":
            rel = "Caregiver" if plan.perspective == "caregiver" else \
                rng.choice(("Patient", "Patient or Caregiver", "Consumer"))
            reason = ("Adverse Event" if plan.has_ae or rng.random() < 0.1 else
                      rng.choice(("Product Question", "Product Complaint", "Medical Information")))
            head = (f"{name}\n{fk.email()}\n{fk.address().replace(chr(10), ', ')}\n"
                    f"{fk.phone_number()}, {country}\n\nRelationship to {company}: {rel}\n"
                    f"Reason for contacting: {reason}\n\nMessage: ")
            sign = rng.choice((f" Thank you, {name}", f" Regards, {name.split()[0]}", ""))
            return [(head, None)] + message + [(sign, None)]
        if plan.shape in ("email", "caregiver_email"):
            subj = rng.choice(("Side effect question", "Problem with my medication",
                               "Question", "Reaction", "Feedback")) if plan.has_ae else \
                rng.choice(("Question about my prescription", "Product question", "Complaint"))
            greet = rng.choice(("Hello,", "Hi,", "Dear Sir or Madam,", "To whom it may concern,",
                                "Good morning,"))
            head = f"From: {fk.email()}\nSubject: {subj}\n\n{greet}\n\n"
            sign = f"\n\n{rng.choice(('Best regards', 'Thanks', 'Kind regards', 'Sincerely'))},\n{name}"
            return [(head, None)] + message + [(sign, None)]
        if plan.shape == "short_form":
            age = rng.randint(19, 88)
            sex = rng.choice(("Female", "Male", "F", "M"))
            head = f"Age: {age}\nSex: {sex}\nCountry: {country}\nDescription: "
            return [(head, None)] + message
        # clinician note
        age = rng.randint(19, 88)
        sex = rng.choice(("female", "male"))
        role = rng.choice(("GP", "Pharmacist", "Nurse practitioner", "Physician", "Dr."))
        head = (f"Reporter: {role} {fk.last_name()}, {fk.city()}, {country}\n"
                f"Patient: {age}-year-old {sex}\n\n")
        return [(head, None)] + message


# ---- checks, splits, outputs ------------------------------------------------------------------
def check_report(rec: dict[str, Any], where: str = "report") -> dict[str, Any]:
    """validate_report plus: every drug / adverse-event label equals a span text of that label."""
    schemas.validate_report(rec, where)
    for field_name, label in (("drugs", "drug"), ("adverse_events", "adverse_event")):
        texts = {s["text"] for s in rec.get("spans", []) if s["label"] == label}
        for value in rec[field_name]:
            if value not in texts:
                raise DataError(f"{where}: {field_name} entry {value!r} is not a {label} span of the text")
    return rec


def generate_template_split(drugs: Sequence[Drug], n: int, seed: int, split: str,
                            exclude: set[str] | None = None, progress: bool = False,
                            genre_mix: dict[str, float] | None = None, max_chars: int = 0,
                            forbidden: re.Pattern | None = None) -> list[dict[str, Any]]:
    """n template reports for one split in the genre mix (default: messages only), none with a
    text in `exclude`, repeated within the split, longer than max_chars or naming `forbidden`."""
    from .genres import GenreGenerator
    gen = GenreGenerator(drugs, seed, split, genre_mix, max_chars)
    seen = set(exclude or ())
    out = []
    it: Iterable[int] = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=split, mininterval=2.0)
    for i in it:
        for attempt in range(50):
            rec = gen.generate(i, attempt)
            key = normalize_text(rec["text"])
            if key not in seen and not (max_chars and len(rec["text"]) > max_chars) \
                    and not (forbidden and forbidden.search(rec["text"])):
                break
        else:
            raise DataError(f"split {split!r}: could not make report {i} differ from earlier ones, "
                            f"fit {max_chars} characters and name no held-out drug")
        seen.add(key)
        out.append(check_report(rec, f"{split}[{i}]"))
    return out


def build_template_splits(records: Sequence[dict[str, Any]], sizes: dict[str, int],
                          n_unseen_drugs: int, seed: int, progress: bool = False,
                          genre_mix: dict[str, float] | None = None, max_chars: int = 0,
                          unseen_share: float | None = None
                          ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """All four splits from drug records: unseen drugs only in test_unseen, no text in two splits."""
    from . import splits as sp
    sp.require_sizes(sizes)
    drugs = prepare_drugs(records)
    n_unseen = sp.unseen_count(len(drugs), n_unseen_drugs, unseen_share)
    seen_drugs, unseen_drugs = sp.partition_drugs(drugs, n_unseen, seed)
    forbidden = sp.names_pattern(unseen_drugs)
    out: dict[str, list[dict[str, Any]]] = {}
    texts: set[str] = set()
    for split in SPLITS:
        pool = unseen_drugs if split == "test_unseen" else seen_drugs
        out[split] = generate_template_split(pool, sizes[split], seed, split, texts, progress, genre_mix,
                                             max_chars, None if split == "test_unseen" else forbidden)
        texts |= {normalize_text(r["text"]) for r in out[split]}
    sp.check_splits(out, unseen_drugs)
    info = {"drugs_used": [d.name for d in drugs],
            "drugs_skipped": sorted({r["name"] for r in records} - {d.name for d in drugs}),
            "unseen_drugs": [d.name for d in unseen_drugs]}
    return out, info


def write_splits(splits_: dict[str, list[dict[str, Any]]], out_dir: Path | str) -> list[Path]:
    """Check every report of every split, then write {split}.jsonl (nothing is written if one fails)."""
    for split, recs in splits_.items():
        for i, rec in enumerate(recs):
            check_report(rec, f"{split}[{i}] ({rec.get('id')})")
    return [write_jsonl(Path(out_dir) / f"{split}.jsonl", recs) for split, recs in splits_.items()]


# ---- orchestration ----------------------------------------------------------------------------
TEACHER_KEYS = ("base_url", "teacher_model", "api_key_env", "prompt_file", "concurrency",
                "reports_per_request", "temperature", "max_tokens", "max_retries", "timeout_s",
                "fuzzy_threshold", "dedupe_threshold")


def teacher_config(params: dict[str, Any]):
    """A TeacherConfig from notebook parameters (teacher_model -> model)."""
    from .teacher import TeacherConfig
    kw = {k: params[k] for k in TEACHER_KEYS if params.get(k) is not None}
    kw["model"] = kw.pop("teacher_model", None)
    return TeacherConfig(**kw)


def build_llm_splits(records: Sequence[dict[str, Any]], sizes: dict[str, int], n_unseen_drugs: int,
                     seed: int, cfg, oversample: float = 1.25, progress: bool = False
                     ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """All four splits from a teacher LLM: seen drugs feed train/val/test, unseen drugs test_unseen."""
    from . import splits as sp
    from . import teacher
    sp.require_sizes(sizes)
    drugs = prepare_drugs(records)
    seen_drugs, unseen_drugs = sp.partition_drugs(drugs, n_unseen_drugs, seed)
    n_seen = sizes["train"] + sizes["val"] + sizes["test"]
    pool, st_seen = teacher.generate(seen_drugs, math.ceil(n_seen * oversample), cfg, seed, "seen", progress)
    leaked = [r for r in pool if sp.mentions_any(r["text"], unseen_drugs)]
    pool = [r for r in pool if r not in leaked]
    out = sp.split_pool(pool, {k: sizes[k] for k in ("train", "val", "test")}, seed)
    unseen, st_unseen = teacher.generate(unseen_drugs, math.ceil(sizes["test_unseen"] * oversample),
                                         cfg, seed, "unseen", progress)
    taken = {normalize_text(r["text"]) for recs in out.values() for r in recs}
    unseen = [r for r in unseen if normalize_text(r["text"]) not in taken
              and not sp.mentions_any(r["text"], seen_drugs)]
    out["test_unseen"] = unseen[:sizes["test_unseen"]]
    sp.check_splits(out, unseen_drugs)
    stats = {k: st_seen.as_dict()[k] + st_unseen.as_dict()[k] for k in st_seen.as_dict()
             if k != "grounding_rate"}
    stats["grounding_rate"] = round((stats["labels"] - stats["labels_dropped"]) / stats["labels"], 4) \
        if stats["labels"] else 1.0
    stats["reports_dropped_unseen_leak"] = len(leaked)
    short = {s: (len(out[s]), sizes[s]) for s in SPLITS if len(out[s]) < sizes[s]}
    if short:
        log.warning("teacher produced fewer reports than asked: %s", short)
    info = {"drugs_used": [d.name for d in drugs],
            "drugs_skipped": sorted({r["name"] for r in records} - {d.name for d in drugs}),
            "unseen_drugs": [d.name for d in unseen_drugs], "teacher": stats,
            "short_splits": {s: list(v) for s, v in short.items()}}
    return out, info


def build_splits(records: Sequence[dict[str, Any]], params: dict[str, Any], progress: bool = False
                 ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The step's work from notebook parameters: template or teacher generator, four checked splits."""
    gen = params.get("generator", "template")
    if gen not in GENERATORS:
        raise ValueError(f"generator must be one of {GENERATORS}, got {gen!r}")
    sizes = {s: params.get(f"n_{s}") for s in SPLITS}
    records = list(records)
    if params.get("vocabulary"):
        records = vocabulary.with_vocabulary(records)
    n_unseen, share = params.get("n_unseen_drugs"), params.get("unseen_drug_share")
    if gen == "template":
        out, info = build_template_splits(records, sizes, n_unseen, params["seed"], progress,
                                          params.get("genre_mix"), params.get("max_chars") or 0, share)
    else:
        from . import splits as sp
        n = sp.unseen_count(len(prepare_drugs(records)), n_unseen, share)
        out, info = build_llm_splits(records, sizes, n, params["seed"], teacher_config(params),
                                     progress=progress)
    if params.get("vocabulary"):
        info["vocabulary"] = vocabulary.summary(vocabulary.load())
    return out, info
