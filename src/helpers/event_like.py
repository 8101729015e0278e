"""Whether a predicted adverse-event string can name a reaction at all. The annotation guide
(docs/annotation-guide.md) makes an event span the reaction as written, with its body site; a body part
alone ("neck", "palms"), a word of the sentence around it ("felt", "symptoms", "patient") or a drug name
is never one, yet small models copy such words into `adverse_events`. Step 5 drops them when it snaps a
prediction to the report (helpers.grounding.snap_record); the model's own list stays in `parsed_unsnapped`."""
from __future__ import annotations

from .drug_like import FUNCTION_WORDS, known_names
from .metrics import normalize

BODY_PARTS = frozenset(
    "head face eye eyes eyelid eyelids ear ears nose mouth lip lips tongue teeth tooth gums jaw throat neck "
    "shoulder shoulders arm arms elbow elbows wrist wrists hand hands palm palms finger fingers thumb chest "
    "breast breasts back stomach belly abdomen side hip hips leg legs thigh thighs knee knees calf calves "
    "ankle ankles foot feet sole soles toe toes heel heels skin scalp hair nails body muscles joints".split())
# words of the sentence around an event that name none (a lone one only)
SENTENCE_WORDS = frozenset(
    "felt feel feeling feelings these those symptom symptoms patient note sig word words hope thing things "
    "stuff wks weeks days year old side effect effects reaction".split())


def is_event_like(text: str) -> bool:
    """False for strings that cannot be an adverse-event span: a lone body part, a lone word of the
    sentence around an event, only function words, or a drug name of the vocabulary."""
    words = normalize(text).split()
    if not words or all(w in FUNCTION_WORDS or w in SENTENCE_WORDS for w in words):
        return False
    if len(words) == 1 and words[0] in BODY_PARTS:
        return False
    return " ".join(words) not in known_names()
