"""Whether a predicted drug string can name a drug at all. The annotation guide (docs/annotation-guide.md)
says a reaction, the condition a drug is taken for, a product word ("my pills", "the injection"), a
person, an address or a sentence is never a drug span; small models still put such strings in `drugs`,
mostly for reports that name no drug. Step 5 drops them when it snaps a prediction to the report
(helpers.grounding.snap_record); the model's own list stays in `parsed_unsnapped`."""
from __future__ import annotations

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


SHIPPED_VOCAB = Path(__file__).resolve().parents[2] / "data" / "vocab"   # the repository's own copy


@lru_cache(maxsize=1)
def non_drug_terms() -> frozenset[str]:
    """Normalised reaction terms (clinical, abbreviated, lay) and indications of the vocabulary in data/vocab
    (the study root's, else the one shipped with the code: step 5 must not fail on a data-only root)."""
    folder = vocabulary.vocab_dir()
    vocab = vocabulary.load(folder if (folder / vocabulary.FILES[0]).exists() else SHIPPED_VOCAB)
    terms = {t for r in vocab.reactions for t in (r.term, r.clinical, r.abbreviation, *r.lay, *r.clauses)}
    terms |= {t for c in vocab.classes.values() for t in c.indications}
    return frozenset(normalize(t) for t in terms if t) - {""}


def is_drug_like(text: str) -> bool:
    """False for strings that cannot be a drug span: empty, an e-mail, a URL, a question, more than
    MAX_WORDS words, a product word, or a reaction or indication of the vocabulary."""
    norm = normalize(text)
    if not norm or "@" in text or "?" in text or "http" in norm or "www" in norm.split():
        return False
    if len(norm.split()) > MAX_WORDS or norm in PRODUCT_WORDS:
        return False
    return norm not in non_drug_terms()


def in_address(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is part of an e-mail or web address (the local part of
    "d.olamide@mail.com" is no drug name, though it may look like one)."""
    left = max(text.rfind(ch, 0, start) for ch in " \t\n(<[") + 1
    right = min([i for i in (text.find(ch, end) for ch in " \t\n)>]") if i >= 0] or [len(text)])
    token = text[left:right].lower()
    return "@" in token or "://" in token or token.startswith("www.")
