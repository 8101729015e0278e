"""The four genre writers (forum post, social-media post, case report, clinical note): sentence
banks and assembly. Each takes a Ctx (helpers.genres) and returns segments plus metadata."""
from __future__ import annotations

import random
from typing import Any, Callable

from .drug_like import RELEASE_FORMS
from .genres import (HASHTAGS, NOTE_ABBREV, Ctx, _ae_segs, _cap, _dose, dose_pair, noisy)
from .synthesize import Segment, fill, join_list

Sentence = list[Segment]

# ---- forum posts ------------------------------------------------------------------------------
FORUM_OPEN_NAMED = (
    "been on {drug} for {dur} now", "started {drug} {dose} about {dur} ago",
    "my doc put me on {drug} {dur} ago", "ok so im on day {day} of {drug}",
    "i've been taking {drug} {dose} for {dur}", "so i finally caved and started {drug} {dur} ago",
)
FORUM_OPEN_DISEASE = (
    "been on {drug} for my {disease} for {dur}", "started {drug} {dur} ago for {disease}",
    "my dr put me on {drug} for {disease} back in {month}", "i take {drug} for {disease}",
)
FORUM_OPEN_UNNAMED = (
    "been on this for {dur} now", "started this med {dur} ago", "day {day} on this stuff",
    "my doc put me on this {dur} ago", "second week on it", "first post here. started this {dur} ago",
    "update: still on it after {dur}", "so i've been taking it for {dur}",
)
FORUM_DOSE = (
    "started at {low} and went up to {high} last week", "doc upped me to {high}",
    "tried cutting down to {low} but felt worse", "im only on {low}", "now on {high} at night",
    "was on {low} for a month then {high}", "she said to split the {high} in half",
)
FORUM_EVENTS = (
    "side effects so far: {aes}", "the worst part is {aes}", "i get {aes}",
    "first few days i had {aes}", "now i have {aes}", "dealing with {aes}", "anyone else get {aes}??",
    "i've noticed {aes} since i started", "been having {aes}", "had {aes} for like a week",
    "and {aes} on top of that", "honestly {aes} is driving me nuts", "also {aes} which is new for me",
)
FORUM_CLAUSES = ("and now {who}{ae}", "since then {who}{ae}", "every morning {who}{ae}", "also {who}{ae}",
                 "{who}{ae} and idk why", "the weird thing is {who}{ae}", "plus {who}{ae} at night")
FORUM_NEG = ("no {neg} tho", "thankfully no {neg}", "haven't had any {neg} which is good",
             "didn't get the {neg} everyone talks about", "at least no {neg}")
FORUM_HYPO = ("my doc said it might cause {hyp} but so far nothing", "i read it can cause {hyp}, hope not",
              "worried about getting {hyp} bc my mom did", "was told to watch out for {hyp}")
FORUM_HELPS = ("it does help my {disease} tho", "my {disease} is a lot better", "it's for my {disease}")
FORUM_WORSE = ("and now i have {worse} than before i started", "it actually gave me {worse}",
               "honestly i think it's causing {worse}")
FORUM_FILLER = (
    "i work nights so my schedule is all over the place", "sorry for the long post", "just want to know if this gets better",
    "my pharmacist said to give it 6 weeks", "im 34f if that matters", "lol", "tbh idk what to do",
    "going to call my doctor monday", "it's been a rough month", "kids are driving me crazy lol",
    "i drink a lot of water and eat ok", "i read every thread on here before posting",
    "my insurance switched me to the generic", "the first week was the hardest", "my husband noticed before i did",
    "i take it with breakfast", "i've tried 3 other meds before this", "work has been stressful too",
    "for context i've had this problem since my early twenties and nothing else really worked",
    "my doctor keeps saying give it time but it's hard when you feel like this every day",
    "i don't really drink and i stopped coffee to see if that was it but nope",
    "i've been reading this board for weeks and you guys have helped more than my doctor honestly",
    "the pharmacist gave me a leaflet but it's so tiny i can't read it",
    "i'm supposed to go back in a month to see how it's going",
    "my sister was on something similar and she said it took her 2 months to settle",
    "i keep a little diary of how i feel each day so i can show my doc",
    "some days are better than others, mornings are the worst",
    "i almost skipped a dose yesterday bc i was so fed up",
)
FORUM_TREATED = ("my doc gave me {tx} for it", "i take {tx} for the side effects now and it helps a bit",
                 "the pharmacist told me to take {tx} and that sorted the worst of it",
                 "been using {tx} to cope", "er gave me {tx} which helped")
FORUM_CLOSE = ("does this go away??", "anyone??", "should i stick with it?", "thinking about quitting it",
               "any advice appreciated", "hang in there everyone", "will update", "ugh", "")
LENGTHS = ((1, 0.15), (3, 0.3), (7, 0.3), (16, 0.25))   # sentences before fillers are counted


def _forum_opening(ctx: Ctx, base: dict) -> Sentence:
    rng, story = ctx.rng, ctx.story
    if not story.named:
        return fill(rng.choice(FORUM_OPEN_UNNAMED), base)
    bank = FORUM_OPEN_DISEASE if story.disease and rng.random() < 0.6 else FORUM_OPEN_NAMED
    return fill(rng.choice(bank), base)


def _forum_event_sentences(ctx: Ctx, base: dict) -> list[Sentence]:
    """The reactions, told over one or several sentences (one to three per sentence)."""
    rng, story = ctx.rng, ctx.story
    clauses = [s for s, _ in story.events if s in story.clausal]
    events = [e for e in story.events if e[0] not in story.clausal]
    segs = _ae_segs(events, rng, severity=0.2)
    out, i = [], 0
    for c in clauses:
        who = "i " if c.split()[0] in ("can't", "put", "gained", "lost") else "my "
        out.append(fill(rng.choice(FORUM_CLAUSES), {"who": who, "ae": [(c, "adverse_event")]}))
    while i < len(segs):
        k = min(len(segs) - i, rng.choice((1, 2, 2, 3, 3, 4)))
        out.append(fill(rng.choice(FORUM_EVENTS), {**base, "aes": join_list(segs[i:i + k], rng)}))
        i += k
    return out


def _forum_extras(ctx: Ctx, base: dict) -> list[Sentence]:
    """Dose talk, negations, hypothetical reactions, the indication, a worsened condition."""
    rng, story = ctx.rng, ctx.story
    out: list[Sentence] = []
    if rng.random() < 0.5:
        low, high = dose_pair(rng)
        out.append(fill(rng.choice(FORUM_DOSE), {"low": low, "high": high}))
    for n in story.negated:
        out.append(fill(rng.choice(FORUM_NEG), {"neg": n}))
    for h in story.hypothetical:
        out.append(fill(rng.choice(FORUM_HYPO), {"hyp": h}))
    if story.worsened:
        out.append(fill(rng.choice(FORUM_WORSE), {"worse": [(story.worsened, "adverse_event")]}))
    elif story.disease and rng.random() < 0.4:
        out.append(fill(rng.choice(FORUM_HELPS), base))
    if story.comeds:
        out.append(fill(rng.choice(("also on {comeds}", "i also take {comeds}", "other meds: {comeds}",
                                    "they sent me home on a whole bag of pills: {comeds}",
                                    "the rest of my list is {comeds}", "i'm on {comeds} as well")),
                        {"comeds": ctx.comeds()}))
    if story.treatments:
        out.append(fill(rng.choice(FORUM_TREATED), {"tx": ctx.treatments()}))
    if story.not_taken:
        out.append(fill(rng.choice(("my doc wants to try {x} next if this doesn't settle",
                                    "thinking of asking about {x} instead", "my friend takes {x} and swears by it")),
                        {"x": ctx.not_taken()}))
    return out


def _join_post(ctx: Ctx, sents: list[Sentence], lower: bool) -> list[Segment]:
    """Sentences run together the way people type: dots, commas, dashes, line breaks."""
    rng = ctx.rng
    out: list[Segment] = []
    for i, s in enumerate(sents):
        if not s:
            continue
        sep = rng.choice((". ", ". ", " ", ", ", "... ", " - ", "\n", ".\n\n", "! ")) if out else ""
        if not lower and s[0][1] is None and sep.strip(" ,-") != "" or not out and not lower:
            s = [(_cap(s[0][0]), None)] + s[1:] if s[0][1] is None else s
        out.extend(([(sep, None)] if sep else []) + s)
    out.append((rng.choice(("", ".", "!!", "??", " :(")), None))
    if not lower:
        out = [(t.replace(" i ", " I ").replace(" i'", " I'"), lab) if lab is None else (t, lab)
               for t, lab in out]
    return noisy(out, rng, 0.03)


def forum(ctx: Ctx) -> tuple[list[Segment], dict[str, Any]]:
    """A patient forum post: informal, run-on, many lay reactions, dose talk, often no drug name."""
    rng, story = ctx.rng, ctx.story
    base = {"drug": ctx.main(), "dur": rng.choice(("2 weeks", "a month", "3 months", "6 wks", "a year",
                                                   "10 days", "about 5 weeks", "2 yrs")),
            "dose": _dose(story.suspects[0].form, rng), "day": str(rng.randint(2, 40)),
            "disease": story.disease or "", "month": rng.choice(("january", "march", "june", "october"))}
    n_core = _weighted_len(rng)
    if n_core == 1:
        story.events, story.worsened = story.events[:2], None
    sents = [_forum_opening(ctx, base)] + _forum_event_sentences(ctx, base)
    if n_core > 1:
        extras = _forum_extras(ctx, base)
        for e in extras:
            sents.insert(rng.randint(1, len(sents)), e)
        fillers = list(FORUM_FILLER)
        rng.shuffle(fillers)
        budget = ctx.max_chars * rng.uniform(0.5, 0.9)
        while fillers and len(sents) < n_core + len(extras) and _chars(sents) < budget:
            sents.insert(rng.randint(1, len(sents)), [(fillers.pop(), None)])
        sents.append([(rng.choice(FORUM_CLOSE), None)])
    else:
        story.negated, story.hypothetical, story.comeds, story.treatments = [], [], [], []
    lower = rng.random() < 0.7
    return _join_post(ctx, sents, lower), {"style": "lower" if lower else "mixed", "sentences": len(sents),
                                           "not_taken": list(ctx.unlabelled)}


def _weighted_len(rng: random.Random) -> int:
    from .synthesize import _weighted
    return _weighted(rng, LENGTHS)


def _chars(sents: list[Sentence]) -> int:
    return sum(len(t) for s in sents for t, _ in s)


# ---- social-media posts -----------------------------------------------------------------------
SOCIAL_NAMED = ("{drug} has me {aes} rn {tags}", "day {day} on {drug}: {aes}. {tags}",
                "{drug} side effects hitting hard, {aes} {tags}", "nobody warned me {drug} = {aes} {tags}",
                "{aes} from {drug} lol {tags}", "switched to {drug} and now {aes}. great. {tags}",
                "ngl {aes} on {drug} is real", "{day} wks on {drug}. {aes}. worth it?? {tags}",
                "the {drug} {aes} hits different {tags}", "{day} month {drug} update: {aes} {tags}")
SOCIAL_UNNAMED = ("{aes} from {drug} smh {tags}", "{drug} got me {aes} all day {tags}",
                  "new meds = {aes}. fun times {tags}", "lowkey think {drug} is giving me {aes} {tags}",
                  "day {day} of {drug} and {aes} already {tags}", "{day} days in: {aes}. thanks {drug} {tags}",
                  "pretty sure {drug} is why i have {aes} {tags}", "week {day} on {drug}, {aes} still going {tags}")
SOCIAL_OPENERS = ("", "", "", "ugh ", "welp ", "ok so ", "psa: ", "not me ", "update: ")
SOCIAL_ENDINGS = ("", "", "", " lol", " smh", " pls help", " :(", " send help", " why")
SOCIAL_NO_AE = ("day {day} on {drug}, feeling ok so far {tags}", "anyone else on {drug}? how long til it works {tags}",
                "picked up my {drug} refill, pharmacy line was insane {tags}", "{drug} day {day}. nothing yet {tags}")


def social(ctx: Ctx) -> tuple[list[Segment], dict[str, Any]]:
    """A social-media post: short, slang, hashtags, misspelled names."""
    rng, story = ctx.rng, ctx.story
    tags = " ".join(rng.sample(HASHTAGS, rng.choice((0, 1, 2, 3))))
    drug = ctx.main()
    if story.named and " " not in drug[0][0] and rng.random() < 0.15:
        drug = [("#", None)] + drug          # "#Wegovy": the name alone after the hash is still a drug span
    base = {"drug": drug, "day": str(rng.randint(2, 30)), "tags": tags}
    if not story.events:
        bank = SOCIAL_NO_AE
        vals = base
    else:
        bank = SOCIAL_NAMED if story.named else SOCIAL_UNNAMED
        vals = {**base, "aes": join_list(_ae_segs(story.events, rng, 0.1), rng)}
    sents = [[(rng.choice(SOCIAL_OPENERS), None)] + fill(rng.choice(bank), vals)
             + [(rng.choice(SOCIAL_ENDINGS), None)]]
    if story.negated and rng.random() < 0.7:
        sents.append(fill(rng.choice(("no {neg} at least", "but no {neg} so")), {"neg": story.negated[0]}))
    story.negated = story.negated[:1] if len(sents) > 1 else []
    if story.hypothetical:
        sents.append(fill("scared it'll give me {hyp}", {"hyp": story.hypothetical[0]}))
    out: list[Segment] = []
    for s in sents:
        if out:
            out.append((rng.choice((". ", " ", " - ")), None))
        out.extend(s)
    return noisy(out, rng, 0.04), {"style": "social"}


# ---- case reports -----------------------------------------------------------------------------
CASE_INTRO = (
    "A {age}-year-old {sex} with {disease} developed {aes} {n} days after {drug} was started.",
    "We report a {age}-year-old {sex} who presented with {aes} during treatment with {drug} for {disease}.",
    "A {age}-year-old {sex} treated with {drug} for {disease} was admitted with {aes}.",
    "We describe a case of {aes} associated with {drug} in a {age}-year-old {sex}.",
    "{n} weeks after starting {drug} {dose}, a {age}-year-old {sex} developed {aes}.",
    "A {age}-year-old {sex} receiving {drug} developed {aes}.",
    "Case: {aes} in a {age}-year-old {sex} receiving {drug}.",
    "In a {age}-year-old {sex}, {aes} occurred {n} days after the first dose of {drug}.",
)
CASE_TREATED = ("{S} was treated with {tx}.", "The reaction was managed with {tx}.", "{tx} was given, with improvement.",
                "Symptoms resolved after treatment with {tx}.", "{P} symptoms improved with {tx}.")
CASE_COMED = ("Concomitant medications included {comeds}.", "{P} other medications were {comeds}.",
              "{P} regular medications ({comeds}) were unchanged.")
CASE_NEG = ("There was no {neg}.", "{S} had no {neg}.", "{S} denied {neg}.")
CASE_OUTCOME = ("Treatment with {drug} was discontinued and the symptoms resolved within {n} days.",
                "After withdrawal of {drug}, {p} condition improved.", "Rechallenge was not performed.",
                "The Naranjo score indicated a probable adverse drug reaction.",
                "The dose of {drug} was reduced and {p} symptoms were closely monitored.")


def case_report(ctx: Ctx) -> tuple[list[Segment], dict[str, Any]]:
    """Case-report sentences: clinical terms, generic names, one suspect among several drugs."""
    rng, story = ctx.rng, ctx.story
    female = rng.random() < 0.5
    base = {"age": str(rng.randint(18, 89)), "sex": "woman" if female else "man", "n": str(rng.randint(2, 21)),
            "drug": ctx.main(), "dose": _dose(story.suspects[0].form, rng), "disease": story.disease or "",
            "S": "She" if female else "He", "P": "Her" if female else "His", "p": "her" if female else "his"}
    intro = [t for t in CASE_INTRO if story.disease or "{disease}" not in t]
    sents = [fill(rng.choice(intro), {**base, "aes": join_list(_ae_segs(story.events, rng), rng)})]
    single = rng.random() < 0.4
    if single:
        story.negated, story.comeds, story.treatments = [], [], []
    if story.comeds:
        sents.append(fill(rng.choice(CASE_COMED), {**base, "comeds": ctx.comeds()}))
    if story.negated:
        sents.append(fill(rng.choice(CASE_NEG), {**base, "neg": " or ".join(story.negated)}))
    if story.treatments:
        said = fill(rng.choice(CASE_TREATED), {**base, "tx": ctx.treatments()})
        sents.append([(_cap(said[0][0]), said[0][1])] + said[1:])     # "Ondansetron was given": capitalised
    if not single:
        sents.append(fill(rng.choice(CASE_OUTCOME), {**base, "drug": ctx.later_main()}))
    out: list[Segment] = []
    for s in sents:
        out += ([(" ", None)] if out else []) + s
    return out, {"style": "single_sentence" if single else "paragraph"}


# ---- clinical notes ---------------------------------------------------------------------------
def _note_disease(disease: str | None, rng: random.Random) -> str:
    if not disease:
        return ""
    abbr = NOTE_ABBREV.get(disease.lower())
    return abbr if abbr and rng.random() < 0.6 else disease


NOTE_FREQUENCIES = (" PO daily", " BID", "", " qhs", " TID", " daily", " prn", " q6h prn", " qam", " weekly")
NOTE_STATUS = (" (d/c'd)", " - held", " - stopped", " (new)", " - on hold")
NOTE_STARTS = ("Plan: start {x} {dose}.", "Switch to {x} to complete course.", "Add {x} {dose}.",
               "{x} {dose} given, will reassess.", "P: start {x}, f/u 2 wks.", "Started {x} {dose} today.")
NOTE_TREATED = ("Start {tx} {dose} prn.", "{tx} {dose} given.", "Rx {tx} {dose}.", "Tx: {tx}.",
                "Give {tx} {dose} x1.", "Sx improved w/ {tx}.")
NOTE_ORDERS = ("IV fluids", "PT referral", "ice and elevation", "fall precautions", "low-salt diet",
               "compression stockings", "labs in 1 wk", "ECG", "CBC, BMP", "encourage PO fluids",
               "warm compresses", "PT/OT eval", "daily weights", "strict I&O", "dietitian referral",
               "smoking cessation counseling", "telemetry", "CXR", "wound care", "elevate HOB")
NOTE_AGAIN = ("Hold {x}.", "Cont {x}.", "{x} level next wk.", "Increase {x}.", "Recheck labs on {x}.", "Taper {x}.")
NOTE_MED_HEADS = ("Meds:", "Home meds:", "Medications:", "Current meds:", "Meds on admission:")


def _note_med_item(ctx: Ctx, d: Any) -> Sentence:
    """One medication line: the name (the only label), then release form, dose, frequency, status."""
    rng = ctx.rng
    form = d.form or "tablet"
    name = ctx.drug(d)
    lower = name[0][0][:1].islower()    # after a capitalised brand a release form is part of its name
    after = " " + rng.choice(RELEASE_FORMS) if form == "tablet" and lower and rng.random() < 0.15 else ""
    if rng.random() < 0.1:
        after += rng.choice((" 1% cream", " gel", " susp", " syrup", " inhaler", " drops"))
    after += " " + _dose(form, rng) + rng.choice(NOTE_FREQUENCIES)
    if rng.random() < 0.1:
        after += rng.choice(NOTE_STATUS)
    return name + [(after, None)]


def _note_meds(ctx: Ctx, listed: list[Any]) -> Sentence:
    """A medication list: drug spans without their doses, forms or frequencies."""
    rng, story = ctx.rng, ctx.story
    items = [_note_med_item(ctx, d) for d in ([story.suspects[0]] if story.named else []) + listed]
    if not items:
        return []
    sep = rng.choice(("; ", ", ", "\n- ", "\n"))
    out: Sentence = [(rng.choice(NOTE_MED_HEADS) + (sep if sep.startswith("\n") else " "), None)]
    for i, it in enumerate(items):
        out += ([(sep, None)] if i else []) + it
    return out


P_HPI_COMED = 0.3      # a second drug in the HPI line: "on ceftriaxone + azithromycin"
P_PROBLEM_LIST = 0.3   # the drugs written per problem ("2. GERD - pantoprazole 40. Stable.") instead of a med list
P_ONE_PLAN_LINE = 0.5  # the plan as one line of orders, drugs among tests and care


def clinical_note(ctx: Ctx) -> tuple[list[Segment], dict[str, Any]]:
    """A clinical note: abbreviations, a medication list, negations, the indication next to the event."""
    rng, story = ctx.rng, ctx.story
    sex = rng.choice(("F", "M", "yo F", "yo M"))
    dis = _note_disease(story.disease, rng)
    started = story.comeds[-1:] if story.comeds and rng.random() < 0.4 else []
    listed = story.comeds[:len(story.comeds) - len(started)]
    in_hpi = listed[:1] if listed and story.named and rng.random() < P_HPI_COMED else []
    on = ctx.main() + ([(rng.choice((" + ", " and ", ", ")), None)] + ctx.drug(in_hpi[0]) if in_hpi else [])
    base = {"age": str(rng.randint(18, 90)), "sex": sex, "drug": on, "dis": dis,
            "dur": rng.choice(("2 wks", "3 days", "1 mo", "6 wks", "10 d", "3 mos"))}
    segs = _ae_segs(story.events, rng)
    lines: list[Sentence] = []
    if segs and rng.random() < 0.6:
        lines.append(fill("CC: {ae}", {"ae": segs[0]}))
    hpi = "HPI: {age}{sex} w/ {dis} on {drug} x {dur}" if dis else "HPI: {age}{sex} on {drug} x {dur}"
    if segs:
        hpi += rng.choice((", c/o {aes}.", ". Pt reports {aes} since starting.", ", now w/ new {aes}."))
    else:
        hpi += rng.choice((", tolerating well.", ". Here for routine f/u.", ", no new complaints."))
    lines.append(fill(hpi, {**base, "aes": join_list(segs, rng)}))
    if story.negated:
        lines.append(fill(rng.choice(("ROS: denies {neg}.", "Denies {neg}.", "ROS neg for {neg}.")),
                          {"neg": ", ".join(story.negated)}))
    if story.hypothetical:
        lines.append(fill("Counseled re: risk of {hyp}.", {"hyp": story.hypothetical[0]}))
    rest = listed[len(in_hpi):]
    meds = _note_problems(ctx, rest) if rest and rng.random() < P_PROBLEM_LIST else _note_meds(ctx, rest)
    if meds and rng.random() < 0.8:
        lines.append(meds)
    else:
        story.comeds = in_hpi + started
    if not (story.treatments and segs):
        story.treatments = []
    if (started or story.treatments) and rng.random() < P_ONE_PLAN_LINE:
        lines += _note_orders(ctx, segs, started)
    else:
        lines.append(_note_plan(ctx, segs, base))
        if started:   # a drug started in the plan is taken from now on: a label like the listed ones
            lines.append(fill(rng.choice(NOTE_STARTS), {"x": ctx.drug(started[0]), "dose": _dose(started[0].form, rng)}))
        if story.treatments:   # a drug given for the reaction was given: a label
            form = story.treatments[0].form
            lines.append(fill(rng.choice(NOTE_TREATED), {"tx": ctx.treatments(), "dose": _dose(form, rng)}))
    short = [d for d in story.comeds if d.short_forms and d not in started]
    if short and rng.random() < 0.7:  # a listed drug again, by its abbreviation: "Hold MTX."
        lines.append(fill(rng.choice(NOTE_AGAIN), {"x": ctx.again(short[0])}))
    if rng.random() < 0.4:          # orders that are no drug: never a label
        lines.append([(rng.choice(("Also: ", "Orders: ", "+ ")) + ", ".join(rng.sample(NOTE_ORDERS, 2)) + ".", None)])
    if ctx.story.not_taken and rng.random() < 0.8:
        lines.append([(rng.choice(("Consider switch to ", "If no improvement, discuss ", "Pt asked about ")), None),
                      (ctx.not_taken(), None), (".", None)])
    return _join_lines(lines), {"style": "note", "not_taken": list(ctx.unlabelled)}


NOTE_PROBLEM_HEADS = ("Problem list:", "PROBLEM LIST", "Chronic problems:", "PMH:")
NOTE_PROBLEM_TAILS = (". Stable.", ". Cont.", ".", ", refilled.", ". No changes.", ". Doing well.")


def _note_problems(ctx: Ctx, listed: list[Any]) -> Sentence:
    """A numbered problem list, each condition beside the drug taken for it ("2. GERD - pantoprazole 40.
    Stable."): the drugs are labels, the conditions are not."""
    rng, story = ctx.rng, ctx.story
    drugs = ([story.suspects[0]] if story.named else []) + listed
    out: Sentence = [(rng.choice(NOTE_PROBLEM_HEADS), None)]
    for k, d in enumerate(drugs, 1):
        condition = _note_disease(rng.choice(d.diseases), rng) if d.diseases else "Other"
        out += [(f"\n{k}. {condition} - ", None)] + _note_med_item(ctx, d) + [(rng.choice(NOTE_PROBLEM_TAILS), None)]
    return out


NOTE_ORDER_MAIN = ("d/c ", "stop ", "hold ", "taper ", "reduce ")
NOTE_ORDER_START = ("start ", "add ", "switch to ", "begin ", "")
NOTE_ORDER_GIVEN = (" prn", " x1", "", " now")


def _note_orders(ctx: Ctx, segs: list[Sentence], started: list[Any]) -> list[Sentence]:
    """The assessment, then the plan as one line of comma-separated orders ("P: stop amoxicillin, start
    cetirizine, CBC, loperamide prn."): every drug started or given is a label, tests and care are not."""
    rng, story = ctx.rng, ctx.story
    lines: list[Sentence] = []
    if segs and story.named and rng.random() < 0.6:
        lines.append(fill(rng.choice(("A: {ae}, likely 2/2 {drug}.", "A: ?{drug} reaction ({ae}).")),
                          {"ae": segs[0], "drug": ctx.later_main()}))
    first = [[(rng.choice(NOTE_ORDER_MAIN), None)] + ctx.later_main()] if segs and story.named else []
    orders = [[(rng.choice(NOTE_ORDER_START), None)] + ctx.drug(d) + [(" " + _dose(d.form, rng), None)]
              for d in started]
    orders += [ctx.drug(d) + [(rng.choice(NOTE_ORDER_GIVEN), None)] for d in story.treatments]
    orders += [[(o, None)] for o in rng.sample(NOTE_ORDERS, rng.choice((1, 2)))]
    rng.shuffle(orders)
    out: Sentence = [(rng.choice(("P: ", "Plan: ", "A/P: ")), None)]
    for i, order in enumerate(first + orders):
        out += ([(", ", None)] if i else []) + order
    return lines + [out + [(".", None)]]


def _note_plan(ctx: Ctx, segs: list[Sentence], base: dict) -> Sentence:
    rng = ctx.rng
    if not segs:
        return [(rng.choice(("A/P: cont current regimen. f/u 3 mos.", "Plan: no changes, RTC prn.")), None)]
    plan = rng.choice(("A/P: {ae} likely 2/2 {drug}. d/c, f/u 2 wks.", "A/P: {ae}, ?med related. monitor.",
                       "Plan: hold {drug}, recheck in 1 wk.", "A/P: {ae} - reduce dose, f/u prn."))
    drug = ctx.later_main() if ctx.story.named else [("new med", None)]
    return fill(plan, {**base, "ae": segs[0], "drug": drug})


def _join_lines(lines: list[Sentence]) -> list[Segment]:
    out: list[Segment] = []
    for line in lines:
        if line:
            out += ([("\n", None)] if out else []) + line
    return out


WRITERS: dict[str, Callable[[Ctx], tuple[list[Segment], dict[str, Any]]]] = {
    "forum": forum, "social": social, "case_report": case_report, "clinical_note": clinical_note}
