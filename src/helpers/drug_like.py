"""Whether a predicted drug string can name a drug at all. The annotation guide (docs/annotation-guide.md)
says a reaction, the condition a drug is taken for, a product word ("my pills", "the injection"), a
person, an address or a sentence is never a drug span; small models still put such strings in `drugs`,
mostly for reports that name no drug. Step 5 drops them when it snaps a prediction to the report
(helpers.grounding.snap_record); the model's own list stays in `parsed_unsnapped`."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from . import vocabulary
from .metrics import normalize

MAX_WORDS = 4    # the longest drug spans are combinations such as "budesonide and formoterol"
PRODUCT_WORDS = frozenset({
    "med", "meds", "medicine", "medicines", "medication", "medications", "pill", "pills", "tablet", "tablets",
    "capsule", "capsules", "drug", "drugs", "dose", "doses", "injection", "injections", "shot", "shots",
    "infusion", "patch", "cream", "inhaler", "spray", "drops", "product", "company", "brand", "generic",
    "prescription", "script", "water", "doctor", "patient", "consumer", "pharmacist", "nurse"})


# Words around a drug name that are not part of it (guide: the name without its dose, release form,
# dosage form, device, route, frequency or status); the note generator writes names beside them.
RELEASE_FORMS = ("ER", "XR", "SR", "XL", "CR", "DR", "ODT", "EC")
DOSAGE_FORMS = ("cream", "ointment", "gel", "lotion", "syrup", "susp", "suspension", "solution", "drops",
                "tab", "tabs", "caps", "inhaler", "patch", "pen", "neb", "nebs", "spray", "elixir", "liquid")
FREQUENCIES = ("daily", "qd", "qhs", "qam", "qpm", "hs", "bid", "tid", "qid", "prn", "nightly", "weekly",
               "q4h", "q6h", "q8h", "q12h", "po", "iv", "im", "sq", "subq", "topical", "oral")
STATUS_WORDS = ("d/c'd", "dc'd", "d/c", "held", "stopped", "started", "discontinued", "restarted", "switched")
UNITS = ("mg", "mcg", "g", "ml", "units", "iu")
DOSE_WORDS = UNITS + ("dose", "doses", "low", "high", "half", "full", "am", "pm", "handful", "couple", "bunch")
MODIFIER_WORDS = frozenset(w.lower() for group in (RELEASE_FORMS, DOSAGE_FORMS, FREQUENCIES, STATUS_WORDS,
                                                   DOSE_WORDS) for w in group) | PRODUCT_WORDS
LEADING_WORDS = frozenset("my the his her their your our this that a an some new on of as for with and pt's".split())
# a route written before the name ("intravenous vancomycin", "IV ceftriaxone"): not part of it either
LEADING_ROUTES = frozenset("iv im intravenous intramuscular subcutaneous sc sq oral po inhaled nebulized topical".split())
# an order or a change written before the name ("switch to clindamycin", "given ondansetron")
LEADING_VERBS = frozenset("switch switched start started restart restarted resume resumed try tried given gave "
                          "add added hold stop stopped continue continued cont increase increased reduce reduced "
                          "taper tapered begin d/c dc to".split())
POSSESSIVE = re.compile(r"^\w+['’]s$")   # "brother's Xanax": a person's drug is the drug
# clinical-note shorthand and lab names: never a drug span on their own
SHORTHAND = frozenset(
    "pt pts obs plt plts hx sx dx tx ros hpi cc labs lab level levels etoh wbc hgb hb bp hr rr "
    "temp spo2 lipase ast alt inr tsh a1c bnp troponin lft lfts cbc bmp cmp anc grade x".split())
# a verb of a note's sentence ("Pt reports", "denies"): a drug string holding one is a sentence, not a name
NOTE_VERBS = frozenset("reports reported denies denied states stated presents presented complains endorses "
                       "admits notes".split())
# drug classes (annotation guide: a class is not a product, "my statin"), by the last word of the class or as
# written by patients; the vocabulary's class names are added in drug_classes()
CLASS_HEADS = frozenset("inhibitor inhibitors blocker blockers agonist agonists antagonist antagonists".split())
LAY_CLASSES = frozenset(
    "statin;statins;antibiotic;antibiotics;steroid;steroids;ssri;ssris;snri;snris;antidepressant;antidepressants;"
    "antihistamine;antihistamines;chemo;chemotherapy;opioid;opioids;nsaid;nsaids;benzo;benzos;blood thinner;"
    "blood thinners;birth control;the pill;water pill;water pills;painkiller;painkillers;diuretic;diuretics;"
    "contraceptive;contraceptives;contraceptive pill;oral contraceptive;oral contraceptives".split(";"))
# chemotherapy regimens named by their drugs' initials (annotation guide: a regimen acronym is not a product;
# its components, when written, are)
REGIMEN_ACRONYMS = frozenset(
    "folfox;folfiri;folfirinox;folfoxiri;capox;xelox;flot;ecf;fec;abvd;beacopp;bep;chop;r chop;r cvp;cvp;"
    "ac t;tchp;mvac;gemcis;vrd;rvd;cybord".split(";"))
# salt, mineral and vitamin words ("calcium carbonate", "ferrous sulfate", "vitamin D", "potassium"): a string
# holding one names a substance taken as a medicine, even though reactions use the word too ("low potassium")
SUBSTANCE_WORDS = frozenset(
    "carbonate citrate sulfate sulphate gluconate chloride hydrochloride phosphate acetate bicarbonate oxide "
    "hydroxide fumarate succinate tartrate besylate maleate mesylate bromide iodide lactate mofetil sodium "
    "potassium calcium magnesium iron zinc vitamin b12 folate".split())
FUNCTION_WORDS = frozenset(
    "a an the of in on at to and or with for from by my me i you he she it we they his her their its our your "
    "this that some very is was were be been am are as can could will would should do did does not no so "
    "but if then just also too now here there when while still much many more most far first last really "
    "abt bc tho idk rn lol omg ppl".split())
DOSE_TOKEN = re.compile(r"^[\d.,/%]+(mg|mcg|g|ml|%|u)?$")
# a duration or a time ("x 2 wks", "6h", "3 days"): never a drug on its own
DURATION_TOKEN = re.compile(r"^\d*(h|hr|hrs|hour|hours|d|day|days|wk|wks|week|weeks|mo|mos|month|months|y|yr|yrs|"
                            r"year|years|min|mins)$")

SHIPPED_VOCAB = Path(__file__).resolve().parents[2] / "data" / "vocab"   # the repository's own copy


def _vocab() -> vocabulary.Vocabulary:
    """The study root's vocabulary, else the one shipped with the code (step 5 must not fail on a data-only root)."""
    folder = vocabulary.vocab_dir()
    return vocabulary.load(folder if (folder / vocabulary.FILES[0]).exists() else SHIPPED_VOCAB)


@lru_cache(maxsize=1)
def known_names() -> frozenset[str]:
    """Normalised drug names of the vocabulary: a brand such as "Adderall XR" keeps its release form."""
    return frozenset(normalize(n) for d in _vocab().drugs for k in ("generic", "brands", "misspellings", "short_forms")
                     for n in (d.get(k) or "").split(";") if n)


@lru_cache(maxsize=1)
def drug_classes() -> frozenset[str]:
    """Normalised class names (the vocabulary's and patients' own), singular and plural, that name no drug
    of the vocabulary nor a word of one ("insulin", as in "insulin glargine", stays a drug)."""
    names = {normalize(c) for c in _vocab().classes} | {normalize(c) for c in LAY_CLASSES}
    name_words = {w for n in known_names() for w in n.split()}
    return frozenset(n for c in names for n in (c, c + "s") if n not in known_names() and n not in name_words)


@lru_cache(maxsize=1)
def non_drug_terms() -> frozenset[str]:
    """Normalised reaction terms (clinical, abbreviated, lay) and indications of the vocabulary."""
    vocab = _vocab()
    terms = {t for r in vocab.reactions for t in (r.term, r.clinical, r.abbreviation, *r.lay, *r.clauses)}
    terms |= {t for c in vocab.classes.values() for t in c.indications}
    return frozenset(normalize(t) for t in terms if t) - {""}


@lru_cache(maxsize=1)
def reaction_words() -> frozenset[str]:
    """Words of the vocabulary's reactions and indications that no drug name of it uses ("unsteady", "itchy",
    "bladder"): a predicted drug holding one names a reaction, a body part or a test, not a product."""
    name_words = {w for n in known_names() for w in n.split()}
    return frozenset(w for t in non_drug_terms() for w in t.split()
                     if len(w) > 1 and w not in name_words and w not in FUNCTION_WORDS)


def _bare(token: str) -> str:
    """A token lower-cased without the punctuation around it ("(qhs)," -> "qhs")."""
    return token.lower().strip(".,;:()[]!\"-")


def _not_name(token: str) -> bool:
    """True for a word beside a drug name that is not part of it: a modifier word or a dose."""
    bare = _bare(token)
    return not bare or bare in MODIFIER_WORDS or bool(DOSE_TOKEN.match(bare))


def _reaction_tail(toks: list[re.Match]) -> int:
    """How many of the last (up to 3) words form a reaction or indication of the vocabulary; 0 if none."""
    return next((k for k in (3, 2, 1) if k < len(toks)
                 and normalize(" ".join(t.group() for t in toks[-k:])) in non_drug_terms()), 0)


def trim_drug(text: str) -> str:
    """The drug name inside a predicted drug string: leading possessives, articles, routes and orders and
    trailing dose, form, route, frequency, status or reaction words dropped ("my doxy" -> "doxy", "zolpidem
    qhs" -> "zolpidem", "his brother's Xanax" -> "Xanax", "switch to clindamycin" -> "clindamycin",
    "d/c oxybutynin" -> "oxybutynin", "as for the rosuvastatin" -> "rosuvastatin",
    "metforman er" -> "metforman", "prednisone moon face" -> "prednisone"), but a capitalised brand keeps
    its release form ("Wellbutrin XL"); what is left is still a stretch of the original string."""
    norm = normalize(text)
    if norm in known_names() or norm in non_drug_terms():
        return text
    toks = list(re.finditer(r"\S+", text))
    while len(toks) > 1:
        first, last = toks[0].group(), toks[-1].group()
        if _bare(last).upper() in RELEASE_FORMS and toks[-2].group()[:1].isupper():
            break                                  # "Wellbutrin XL": a brand's release form is its name
        tail = 1 if _not_name(last) else _reaction_tail(toks)
        if tail:
            del toks[-tail:]
        elif (_bare(first) in LEADING_WORDS or _bare(first) in LEADING_VERBS or _bare(first) in LEADING_ROUTES
              or POSSESSIVE.match(_bare(first))):
            toks.pop(0)
        else:
            break
    return text[toks[0].start():toks[-1].end()] if toks else text


SLASH_ABBREVIATION = re.compile(r"(?<![\w/])[A-Za-z]/[A-Za-z](?![\w/])")   # "N/V", "n/v": one reaction


def has_content(text: str) -> bool:
    """False for a string no label can be: only function words, numbers, doses or single characters
    (constrained decoding can stop a span after "with" or "s"); a slash abbreviation such as "N/V" counts."""
    return bool(SLASH_ABBREVIATION.search(text)) or any(
        len(w) > 1 and w not in FUNCTION_WORDS and w not in UNITS and not DOSE_TOKEN.match(w)
        for w in normalize(text).split())


def _holds_reaction_word(text: str, words: list[str]) -> bool:
    """True when a reaction word sits in the string and neither a substance word (*calcium carbonate*)
    nor a brand-like start (a capitalised first word that is no reaction word: *Excedrin Migraine*) says
    it names a product."""
    found = set(words)
    brand_like = text.strip()[:1].isupper() and words[0] not in reaction_words()
    return bool(reaction_words() & found) and not SUBSTANCE_WORDS & found and not brand_like


def is_drug_like(text: str) -> bool:
    """False for strings that cannot be a drug span: empty, an e-mail, a URL, a question, more than
    MAX_WORDS words, a product or function word, note shorthand, a dose, a duration, a note's sentence
    ("Pt reports"), a drug class ("steroids", "ACE inhibitor"), a regimen acronym ("FOLFOX"), a string
    other than a vocabulary name that holds a reaction word, no substance word and does not start like a
    brand ("unsteady on feet", "bladder scan"; "Excedrin Migraine" stays), or a reaction or indication of
    the vocabulary (also with product words after it: "blood pressure medicine")."""
    norm = normalize(text)
    if not norm or "@" in text or "?" in text or "http" in norm or "www" in norm.split():
        return False
    words = norm.split()
    if len(words) > MAX_WORDS:
        return False
    if all(len(w) == 1 or w in FUNCTION_WORDS or w in SHORTHAND or w in MODIFIER_WORDS or DOSE_TOKEN.match(w)
           or DURATION_TOKEN.match(w) for w in words):
        return False
    if any(w in NOTE_VERBS for w in words) or norm in drug_classes() or words[-1] in CLASS_HEADS:
        return False
    if norm in REGIMEN_ACRONYMS:
        return False
    if norm not in known_names() and _holds_reaction_word(text, words):
        return False
    while len(words) > 1 and words[-1] in PRODUCT_WORDS:
        words.pop()
    return norm not in non_drug_terms() and " ".join(words) not in non_drug_terms()


def in_address(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is part of an e-mail or web address (the local part of
    "d.olamide@mail.com" is no drug name, though it may look like one)."""
    left = max(text.rfind(ch, 0, start) for ch in " \t\n(<[") + 1
    right = min([i for i in (text.find(ch, end) for ch in " \t\n)>]") if i >= 0] or [len(text)])
    token = text[left:right].lower()
    return "@" in token or "://" in token or token.startswith("www.")


HEADER_KEYS = re.compile(r"^(from|to|cc|date|subject|reporter|relationship to [^:]*|reason for contacting|name|"
                         r"e-?mail|phone|address)\s*:", re.IGNORECASE | re.MULTILINE)
MESSAGE_LINE = re.compile(r"^message\s*:", re.IGNORECASE | re.MULTILINE)
VALEDICTION = re.compile(r"^\s*(best regards|kind regards|regards|thanks|thank you|sincerely|best wishes|cheers)"
                         r"\s*[,.!]?\s*$", re.IGNORECASE | re.MULTILINE)


def message_bounds(text: str) -> tuple[int, int]:
    """Where a report's message starts and ends: after a web form's "Message:" label or an e-mail's
    header block (its "From:"/"Subject:" lines up to the first blank line), and before a closing such as
    "Best regards," (annotation guide: header lines, names and signatures carry no labels)."""
    start = 0
    if (m := MESSAGE_LINE.search(text)):
        start = m.end()
    elif (h := HEADER_KEYS.match(text)):
        blank = text.find("\n\n", h.start())
        start = blank + 2 if blank >= 0 else 0
    closing = [m.start() for m in VALEDICTION.finditer(text) if m.start() >= start]
    return start, (closing[-1] if closing else len(text))


def outside_message(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is a header or signature line's words that the message itself never
    uses ("Henrik Dahl" above a web form's "Message:"): no drug is named there."""
    lo, hi = message_bounds(text)
    if lo <= start and end <= hi:
        return False
    return text[start:end].casefold() not in text[lo:hi].casefold()
