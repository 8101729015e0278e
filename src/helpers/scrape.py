"""Step 1: drug knowledge from drug pages or the openFDA label API, as one structured record.

Sources (the `source` parameter of `scrape`):

- ``drugs.com``: ``https://www.drugs.com/<slug>.html``. The parser reads the page header block
  (``p.drug-subtitle`` with bold lead-ins ``Generic name:``, ``Brand names:``, ``Drug class:``),
  the ``h2#uses`` section (list items, or else the "is used to treat ..." sentences of its prose)
  and the ``h2#side-effects`` section: each paragraph is an intro whose wording picks the group of
  the list that follows ("signs of an allergic reaction" -> allergic, "call your doctor at once" /
  "serious" -> serious, "common side effects" -> common, anything else -> other), inline lists
  after a colon or inside parentheses, nested lists, and bold or dashed lead-ins
  ("<b>liver problems</b> - dark urine, ...") which give the lead term plus its symptoms.
  A section runs from its h2 to the next h2, wherever the markup nests them.
- ``openfda``: ``https://api.fda.gov/drug/label.json?search=openfda.brand_name:"X"&limit=N``
  (falling back to ``openfda.generic_name`` when the brand search answers 404 "No matches
  found"). Of the returned labels the parser takes the one whose ``openfda.brand_name`` /
  ``generic_name`` matches the drug, preferring labels with indications and adverse reactions
  and then the newest ``effective_time``; uses come from ``indications_and_usage``; side effects
  from ``adverse_reactions`` ("most common adverse reactions ... were a, b and c" -> common;
  items followed by "[see Warnings and Precautions ...]" -> serious; "System: a, b, c." lists ->
  other; hypersensitivity wording -> allergic); class from ``openfda.pharm_class_epc``.
- ``cache``: no network. For each drug it parses the HTTP cache (drugs.com page, then openFDA
  answer) and else the shipped curated page ``data/raw/pages/curated/<slug>.html``: pages in the
  drugs.com layout written for this study in our own words from public drug-label facts
  (marked by ``<meta name="generator" content="ae-extraction-study curated page">`` and a fixed
  ``<meta name="written">`` date, which becomes the record's ``fetched_at``; their records carry
  ``source="curated"``). Rebuilding is byte-identical: nothing depends on the current time.

Records are written atomically to ``paths.drugs_dir()/<slug>.json`` only after they validate;
an unknown drug, a 404 or a garbled page becomes a failure with its reason and the run goes on.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from bs4 import BeautifulSoup, Comment, NavigableString, Tag

from . import paths
from .http import FetchError, Fetched, PoliteClient, cache_path, read_cached
from .io import DataError, sha256_text, write_json
from .schemas import SIDE_EFFECT_GROUPS, all_side_effects, dedupe, validate_drug_record

# the 50 drugs of the earlier 2023 study, in its order
STUDY_DRUGS = (
    "Abilify", "Infliximab", "Rituximab", "Etanercept", "Humira", "Enbrel", "Remicade", "Rituxan",
    "Nexium", "Prevacid", "Prilosec", "Protonix", "Crestor", "Lipitor", "Zocor", "Vytorin",
    "Victoza", "Byetta", "Januvia", "Onglyza", "Advair", "Symbicort", "Spiriva", "Singulair",
    "Cialis", "Viagra", "Levitra", "Staxyn", "AndroGel", "Prezista", "Doxycycline", "Cymbalta",
    "Neupogen", "Epogen", "Aranesp", "Neulasta", "Lunesta", "Ambien", "Provigil", "Nuvigil",
    "Metoprolol", "Lisinopril", "Amlodipine", "Atorvastatin", "Zoloft", "Lexapro", "Prozac",
    "Celexa", "Complera", "Atripla",
)
SOURCES = ("cache", "drugs.com", "openfda")
DRUGS_COM_BASE = "https://www.drugs.com"
OPENFDA_BASE = "https://api.fda.gov"
CURATED_GENERATOR = "ae-extraction-study curated page"


class ScrapeError(RuntimeError):
    """The step could not read a single drug."""


# ---- names ------------------------------------------------------------------------------------
def slugify(name: str) -> str:
    """File/URL slug of a drug name: lowercase, every run of non-alphanumerics -> '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"drug name {name!r} has no letters or digits")
    return slug


def resolve_drugs(drugs: str | Sequence[str]) -> list[str]:
    """The drug list parameter -> names: "all" = the 50 study drugs; a comma string or a list."""
    if isinstance(drugs, str):
        if drugs.strip().lower() == "all":
            return list(STUDY_DRUGS)
        drugs = drugs.split(",")
    names = dedupe(d.strip() for d in drugs if isinstance(d, str) and d.strip())
    if not names:
        raise ValueError(f"no drug names in {drugs!r}")
    return names


def name_index(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Every name, brand and generic (lowercased) -> a record name, so later steps may use either;
    a record's own name wins over another record's brand or generic of the same spelling."""
    records = list(records)
    index = {rec["name"].lower(): rec["name"] for rec in records}
    for rec in records:
        for alias in [*rec["brand_names"], *rec["generic_names"]]:
            index.setdefault(alias.lower(), rec["name"])
    return index


# ---- list cleaning ----------------------------------------------------------------------------
_LEAD_IN = re.compile(
    r"^(?:(?:new or worsening|new or worse|any|early|possible|other)\s+)?"
    r"(?:(?:signs?|symptoms?)(?:\s+or\s+symptoms?)?\s+(?:of|such as|like|may include)\s+"
    r"(?:an?\s+|the\s+)?|you may (?:have|feel|notice|get|also have)\s+|such as\s+|including\s+|"
    r"if you have\s+|or\s+|and\s+|(?:e\.g\.|i\.e\.),?\s+)", re.I)
_TRAIL = re.compile(r"(?:\s+(?:or|and)|\s*(?:such as|like|including|e\.g\.)|[\s;,.:*\u2022-])+$", re.I)
_LEAD_SEP = re.compile(r"\s+(?:-{1,2}|\u2013|\u2014)\s+|(?<=[a-z)])(?:--|\u2014)(?=[a-z(])|:\s+", re.I)
_MAX_TERM_WORDS = 16
_NOT_TERMS = {"or", "and", "etc", "a", "an", "the", "other", "others", "more", "less"}
_MAX_USE_WORDS = 40
_MAX_LEAD_WORDS = 12


def _strip_term(term: str) -> str:
    """Whitespace, bullets, trailing 'or'/'and'/punctuation and lead-ins removed; wording kept."""
    term = " ".join(term.replace("\u00a0", " ").split())
    term = term.lstrip("\u2022*\u00b7-\u2013\u2014 ").strip()
    for _ in range(4):
        before = term
        term = _LEAD_IN.sub("", term).strip()
        term = _TRAIL.sub("", term).strip()
        if term == before:
            break
    if term.count("(") > term.count(")"):
        term = term.rsplit("(", 1)[0].strip() if term.endswith("(") else term + ")"
    return term


def _split_top(text: str, seps: str) -> list[str]:
    """Split on any char of `seps` that is not inside parentheses or brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _split_commas(piece: str) -> list[str]:
    """Comma lists -> terms, except a serial enumeration of one phrase's objects ("swelling of your
    face, lips, tongue, or throat" stays whole) and a trailing clause ("..., like you might pass out")."""
    frags: list[str] = []
    for frag in (f.strip() for f in _split_top(piece, ",")):
        if not frag:
            continue
        if frags and _CLAUSE.match(frag):
            frags[-1] = f"{frags[-1]}, {frag}"
        else:
            frags.append(frag)
    if len(frags) <= 1:
        return frags
    rest = [re.sub(r"\s*\([^)]*\)", "", re.sub(r"^(?:or|and)\s+", "", f, flags=re.I)).strip()
            for f in frags[1:]]
    serial = re.match(r"(?:or|and)\s", frags[-1], re.I) is not None
    if serial and len(frags[0].split()) >= 2 and all(len(r.split()) == 1 for r in rest):
        return [", ".join(frags)]
    return frags


_CLAUSE = re.compile(r"(?:like|as if|as though|especially|which|that|where|when|who|even)\b", re.I)


def split_terms(text: str) -> list[str]:
    """One list item or inline list -> clean terms (semicolons, commas, lead-in 'X - a, b' items)."""
    out: list[str] = []
    for piece in _split_top(text, ";\n\u2022"):
        piece = piece.strip()
        if not piece:
            continue
        m = _LEAD_SEP.search(piece)
        if m and m.start() > 0 and len(piece[:m.start()].split()) <= _MAX_LEAD_WORDS:
            lead, detail = piece[:m.start()], piece[m.end():]
            out.append(lead)
            piece = detail
        out.extend(_split_commas(piece))
    return tidy_term_list(out)


def tidy_term_list(items: Iterable[str], max_words: int = _MAX_TERM_WORDS) -> list[str]:
    """Strip lead-ins and trailing conjunctions, drop empties and sentences, merge duplicates."""
    terms = []
    for item in items:
        term = _strip_term(item)
        if (term and re.search(r"[A-Za-z]", term) and len(term.split()) <= max_words
                and term.lower() not in _NOT_TERMS):
            terms.append(term)
    return dedupe(terms)


# ---- side-effect intros -----------------------------------------------------------------------
def classify_intro(text: str) -> str | None:
    """Which side-effect group a paragraph introduces, None when its wording names none."""
    t = text.lower()
    if re.search(r"allerg|hypersensitiv|anaphyla", t):
        return "allergic"
    if re.search(r"(?<!less )(?<!un)\bcommon\b|most often|frequent", t) and "less common" not in t:
        return "common"
    if re.search(r"serious|severe|at once|right away|immediately|emergency|call your (?:doctor|"
                 r"health ?care)|stop (?:taking|using)", t):
        return "serious"
    if re.search(r"less common|rare|other side effects|may include|include:", t):
        return "other"
    return None


# ---- HTML walking -----------------------------------------------------------------------------
_BLOCK = {"p", "div", "section", "article", "h3", "h4", "h5", "h6", "dl", "dt", "dd", "table",
          "tbody", "thead", "tr", "td", "th", "blockquote", "main", "header", "footer", "aside",
          "center", "form"}
_SKIP = {"script", "style", "noscript", "template", "svg", "button", "nav", "iframe"}
_LIST = {"ul", "ol"}


def _text(node: Any, skip_lists: bool = False) -> str:
    """Visible text of a node: <br> and block children become line breaks, whitespace collapsed."""
    parts: list[str] = []

    def visit(n: Any) -> None:
        if isinstance(n, Comment):
            return
        if isinstance(n, NavigableString):
            parts.append(str(n))
            return
        if not isinstance(n, Tag) or n.name in _SKIP:
            return
        if skip_lists and n is not node and (n.name in _LIST or n.name == "li"):
            return
        if n.name == "br":
            parts.append("\n")
            return
        block = n.name in _BLOCK or n.name == "li"
        if block:
            parts.append("\n")
        for child in n.children:
            visit(child)
        if block:
            parts.append("\n")

    visit(node)
    lines = [" ".join(line.replace("\u00a0", " ").split()) for line in "".join(parts).split("\n")]
    return "\n".join(line for line in lines if line)


@dataclass
class _Block:
    kind: str        # "para" (intro/prose), "item" (a list item), "push"/"pop" (a nested group)
    text: str


def _has_block_child(tag: Tag) -> bool:
    return any(isinstance(c, Tag) and (c.name in _BLOCK or c.name in _LIST or c.name in ("li", "h2"))
               for c in tag.descendants)


class _Section:
    """Blocks from an h2 to the next h2, however deeply the markup nests them."""

    def __init__(self, heading: Tag):
        self.blocks: list[_Block] = []
        self.done = False
        node: Tag | None = heading
        while node is not None and not self.done:
            for sib in list(node.next_siblings):
                self._walk(sib)
                if self.done:
                    break
            node = node.parent if isinstance(node.parent, Tag) and node.parent.name != "[document]" else None

    def _inline_run(self, run: list[Any]) -> None:
        text = _text_of_run(run)
        if text:
            self.blocks.append(_Block("para", text))

    def _walk(self, node: Any) -> None:
        if self.done or isinstance(node, Comment):
            return
        if isinstance(node, NavigableString):
            if str(node).strip():
                self.blocks.append(_Block("para", " ".join(str(node).split())))
            return
        if not isinstance(node, Tag) or node.name in _SKIP:
            return
        if node.name == "h2":
            self.done = True
            return
        if node.name in _LIST:
            for child in node.children:
                if isinstance(child, Tag) and child.name == "li":
                    self._item(child)
                else:
                    self._walk(child)
            return
        if node.name == "li":
            self._item(node)
            return
        if not _has_block_child(node):
            text = _text(node)
            if text:
                self.blocks.append(_Block("para", text))
            return
        run: list[Any] = []
        for child in node.children:
            if isinstance(child, Tag) and (child.name in _BLOCK or child.name in _LIST
                                           or child.name in ("li", "h2") or _has_block_child(child)):
                self._inline_run(run)
                run = []
                self._walk(child)
                if self.done:
                    return
            else:
                run.append(child)
        self._inline_run(run)

    def _item(self, li: Tag) -> None:
        """A list item: its own text (nested lists and items excluded), then what it nests; an
        item like "Less common:" over a nested list opens a group for that list."""
        text = _text(li, skip_lists=True).replace("\n", " ")
        first = next((c for c in li.children if not (isinstance(c, NavigableString) and not c.strip())), None)
        if isinstance(first, Tag) and first.name in ("b", "strong"):
            lead = " ".join(first.get_text(" ").split())
            rest = text[len(lead):].strip() if text.startswith(lead) else ""
            if lead and rest and not _LEAD_SEP.match(" " + rest) and rest[0] not in ":-,;\u2013\u2014":
                text = f"{lead} - {rest}"
        nested = [c for c in li.children if isinstance(c, Tag) and
                  (c.name in _LIST or c.name == "li" or c.find(["li", *_LIST]) is not None)]
        opens = bool(nested) and text.rstrip().endswith(":") and classify_intro(text) is not None
        if opens:
            self.blocks.append(_Block("push", text))
        elif text:
            self.blocks.append(_Block("item", text))
        for child in nested:
            if child.name == "li":
                self._item(child)
            elif child.name in _LIST:
                self._walk(child)
            else:                       # a wrapper (<div>, <p>) whose own text is already in `text`
                for sub in child.find_all(["li", *_LIST]):
                    if sub.find_parent(["li", *_LIST]) is not li:
                        continue        # deeper: reached through its own list
                    if sub.name == "li":
                        self._item(sub)
                    else:
                        self._walk(sub)
        if opens:
            self.blocks.append(_Block("pop", text))


def _text_of_run(run: list[Any]) -> str:
    parts = []
    for n in run:
        if isinstance(n, Comment):
            continue
        parts.append(str(n) if isinstance(n, NavigableString) else _text(n).replace("\n", " "))
    return " ".join("".join(parts).split())


def _find_section(soup: BeautifulSoup, section_id: str) -> Tag | None:
    """The h2 (or any heading) with the section's id, e.g. h2#uses / h2#side-effects."""
    tag = soup.find("h2", id=section_id)
    if tag is None:
        tag = soup.find(["h1", "h3", "h4"], id=section_id)
    if tag is None:
        anchor = soup.find(id=section_id)
        if anchor is not None and anchor.name != "h2":
            tag = anchor.find_next("h2") if anchor.get_text(strip=True) == "" else anchor
    return tag


# ---- drugs.com pages --------------------------------------------------------------------------
_USED_FOR = re.compile(
    r"\b(?:is|are|may be)\s+(?:also\s+|mainly\s+|often\s+)?used\s+(?:alone\s+or\s+(?:together\s+|in\s+combination\s+)?with\s+"
    r"other\s+\w+\s+|together\s+with\s+other\s+\w+\s+|short-term\s+|long-term\s+)?"
    r"(?:(?:to\s+(?:help\s+)?treat|for(?:\s+the\s+treatment\s+of)?|in(?:\s+the\s+treatment\s+of)?)\s+"
    r"(?P<what>.+)|(?P<verb>to\s+(?:help\s+)?(?:prevent|reduce|lower|improve|relieve|control|"
    r"increase|slow|decrease|stimulate|boost)\s+.+))", re.I)
_NOT_A_USE = re.compile(r"purposes not listed|medication guide|not approved|should not be used|"
                        r"is not for use|has not been", re.I)


def _uses_from_blocks(blocks: list[_Block]) -> list[str]:
    """List items of the uses section, or else the 'is used to treat ...' phrases of its prose."""
    items = [b.text for b in blocks if b.kind in ("item", "push")]
    if items:
        return tidy_term_list((t for item in items for t in _split_top(item, ";")), _MAX_USE_WORDS)
    uses = []
    for block in blocks:
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", block.text):
            if _NOT_A_USE.search(sentence):
                continue
            m = _USED_FOR.search(sentence)
            if m:
                what = m.group("what") or re.sub(r"^to\s+", "", m.group("verb"), flags=re.I)
                uses.append(what.rstrip(" ."))
    return tidy_term_list(uses, _MAX_USE_WORDS)


def _inline_terms(text: str, group: str | None) -> list[tuple[str, str]]:
    """Terms written inside a paragraph: after a colon, or 'lead (a, b, c)' parentheticals."""
    out: list[tuple[str, str]] = []
    if group is None:
        return out
    head, sep, tail = text.partition(":")
    if sep and tail.strip() and re.search(r"[;,]", tail):
        head_group = classify_intro(head) or group
        for term in split_terms(tail):
            out.append((head_group, term))
        return out
    for m in re.finditer(r"([^().;:]{3,80}?)\s*\(([^()]{3,})\)", text):
        lead, inner = m.group(1), m.group(2)
        if not re.search(r"[,;]", inner):
            continue
        lead = re.split(r"\b(?:if you have|you have|or|and|with|have)\b", lead)[-1].strip()
        lead = re.sub(r"^(?:an?|the)\s+", "", lead, flags=re.I)
        lead_group = classify_intro(lead) or group
        if lead and lead_group != "allergic" and not re.search(r"allerg", lead, re.I):
            out.extend((lead_group, t) for t in tidy_term_list([lead]))
        out.extend((lead_group, t) for t in split_terms(inner))
    return out


def missing_sections(uses: list[str], side_effects: dict[str, list[str]]) -> list[str]:
    """Which of a drug record's two sections came back empty (both empty: not a drug page)."""
    return [name for name, got in (("uses", uses), ("side_effects", any(side_effects.values()))) if not got]


def first_group_wins(grouped: dict[str, list[str]], order: Sequence[str]) -> dict[str, list[str]]:
    """Deduplicate the groups' terms in place, a term kept only in the first group of `order` that
    lists it (case and spacing ignored); returns `grouped`."""
    seen: set[str] = set()
    for g in order:
        kept = []
        for term in dedupe(grouped[g]):
            key = " ".join(term.lower().split())
            if key not in seen:
                seen.add(key)
                kept.append(term)
        grouped[g] = kept
    return grouped


def _side_effects_from_blocks(blocks: list[_Block]) -> dict[str, list[str]]:
    """Side-effect terms grouped by the intro paragraphs of the section."""
    grouped: dict[str, list[str]] = {g: [] for g in SIDE_EFFECT_GROUPS}
    current, stack = "other", []
    for block in blocks:
        if block.kind == "push":
            stack.append(current)
            current = classify_intro(block.text) or current
        elif block.kind == "pop":
            current = stack.pop() if stack else current
        elif block.kind == "para":
            lines = block.text.split("\n")
            group = classify_intro(lines[0])
            for group_, term in _inline_terms(lines[0], group):
                grouped[group_].append(term)
            current = group or "other"
            if len(lines) > 1 and lines[0].rstrip().endswith(":"):
                for line in lines[1:]:
                    grouped[current].extend(split_terms(line))
        else:
            grouped[current].extend(split_terms(block.text))
    return first_group_wins(grouped, SIDE_EFFECT_GROUPS)


def _header_fields(soup: BeautifulSoup) -> dict[str, str]:
    """'Generic name:' / 'Brand names:' / 'Drug class:' lines of the page header block."""
    block = soup.find(class_="drug-subtitle")
    if block is not None:
        return _fields_from_lines(_text(block))
    fields: dict[str, str] = {}
    for tag in soup.find_all(["p", "div", "dl", "li"]):
        if not tag.find(["p", "div", "dl", "li"]) and _FIELD_LINE.search(tag.get_text(" ")):
            for key, value in _fields_from_lines(_text(tag)).items():
                fields.setdefault(key, value)
    return fields


_FIELD_LINE = re.compile(r"(generic names?|brand names?|drug class(?:es)?)\s*:", re.I)


def _fields_from_lines(text: str) -> dict[str, str]:
    """'Key: value' lines -> {"generic", "brand", "class"}: value (first one wins)."""
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        m = re.match(r"\s*(generic names?|brand names?|drug class(?:es)?)\s*:\s*(.+)", line, re.I)
        if m:
            key = {"g": "generic", "b": "brand", "d": "class"}[m.group(1)[0].lower()]
            fields.setdefault(key, m.group(2).strip())
    return fields


def _meta(soup: BeautifulSoup, name: str) -> str | None:
    tag = soup.find("meta", attrs={"name": name})
    return tag.get("content") if tag is not None and tag.get("content") else None


def parse_drugs_com(html: str, name: str, source_url: str, fetched_at: str,
                    source: str = "drugs.com") -> dict[str, Any]:
    """A drugs.com-layout page -> drug record; raises DataError when neither section can be read."""
    if not isinstance(html, str) or not html.strip():
        raise DataError(f"{source_url}: empty page")
    soup = BeautifulSoup(html, "html.parser")
    h1 = soup.find("h1")
    title = " ".join(h1.get_text(" ").split()) if h1 else ""
    display = title if title and slugify(title) == slugify(name) else name.strip()
    fields = _header_fields(soup)
    generic = re.sub(r"\s*\[[^\]]*\]", "", fields.get("generic", "")).strip(" .")
    brands_text = re.sub(r"\s*(?:\u2026|\.\.\.)?\s*show all.*$", "", fields.get("brand", ""), flags=re.I)
    brands = tidy_term_list(_split_top(brands_text, ","))
    generic_names = [generic] if generic else []
    if generic_names and slugify(display) != slugify(generic) and display not in brands:
        brands = [display, *brands]
    uses, side_effects = [], {g: [] for g in SIDE_EFFECT_GROUPS}
    uses_h2 = _find_section(soup, "uses")
    if uses_h2 is not None:
        uses = _uses_from_blocks(_Section(uses_h2).blocks)
    se_h2 = _find_section(soup, "side-effects")
    if se_h2 is not None:
        side_effects = _side_effects_from_blocks(_Section(se_h2).blocks)
    missing = missing_sections(uses, side_effects)
    if len(missing) == 2:
        raise DataError(f"{source_url}: no 'uses' and no 'side-effects' section could be read "
                        f"(not a drug page, or garbled)")
    record = {
        "name": display, "generic_names": generic_names, "brand_names": brands,
        "drug_class": fields.get("class", "").strip(" ."), "uses": uses,
        "side_effects": side_effects, "missing_sections": missing, "source": source,
        "source_url": source_url, "fetched_at": fetched_at, "content_hash": sha256_text(html),
    }
    return validate_drug_record(record, source_url)


def parse_curated(path: Path | str, name: str | None = None) -> dict[str, Any]:
    """A shipped curated page -> record (source 'curated', fetched_at = its written date)."""
    path = Path(path)
    html = path.read_text(encoding="utf-8")
    soup = BeautifulSoup(html, "html.parser")
    if _meta(soup, "generator") != CURATED_GENERATOR:
        raise DataError(f"{path}: not a curated page (meta generator != {CURATED_GENERATOR!r})")
    written = _meta(soup, "written")
    if not written:
        raise DataError(f"{path}: curated page lacks <meta name=\"written\">")
    h1 = soup.find("h1")
    return parse_drugs_com(html, name or (h1.get_text(strip=True) if h1 else path.stem),
                           paths.rel(path), written, source="curated")


# ---- openFDA ----------------------------------------------------------------------------------
def _joined(label: dict[str, Any], key: str) -> str:
    value = label.get(key) or []
    if isinstance(value, str):
        value = [value]
    return " ".join(" ".join(str(v).split()) for v in value if v)


def _openfda(label: dict[str, Any], key: str) -> list[str]:
    value = (label.get("openfda") or {}).get(key) or []
    return [str(v).strip() for v in ([value] if isinstance(value, str) else value) if str(v).strip()]


def _label_score(label: dict[str, Any], name: str) -> tuple:
    want = name.lower()
    brands = [b.lower() for b in _openfda(label, "brand_name")]
    generics = [g.lower() for g in _openfda(label, "generic_name")]
    return (want in brands, want in generics or any(want in g.split() for g in generics),
            bool(_joined(label, "indications_and_usage")), bool(_joined(label, "adverse_reactions")),
            str(label.get("effective_time", "")), str(label.get("id", "")))


def _uses_from_indications(text: str) -> list[str]:
    """Indications text -> use phrases ("indicated for X" -> X), headings and numbers removed."""
    text = re.sub(r"^\s*(?:\d+(?:\.\d+)?\s+)?INDICATIONS?\s*(?:AND|&)\s*USAGE\s*", "", text, flags=re.I)
    text = re.sub(r"\s*\((?:[^()]*\bsee\b[^()]*|\s*\d+(?:\.\d+)*\s*(?:,\s*\d+(?:\.\d+)*\s*)*)\)|\s*\[[^\]]*\]",
                  "", text, flags=re.I)
    pieces = re.split(r"\s*\u2022\s*|\s+\d+\.\d+\s+(?=[A-Z])|(?<=[.:])\s+(?=[A-Z])", text)
    uses = []
    for piece in pieces:
        piece = piece.strip()
        if (_NOT_A_USE.search(piece) or re.match(r"limitations? of use", piece, re.I)
                or re.search(r"\bindicated\s*:?$", piece, re.I)):
            continue
        m = re.search(r"\bindicated\s+(?:for|as|in|to)?\s*(?:the\s+)?(?:treatment\s+of\s+)?(.+)", piece, re.I)
        what = m.group(1) if m else piece
        what = re.sub(r"^(?:use\s+)?(?:in|for)\s+", "", what.strip().rstrip(".:"), flags=re.I)
        if 3 <= len(what) <= 200 and not what.isupper():
            uses.append(what)
    return tidy_term_list(uses, _MAX_USE_WORDS)


_BODY_SYSTEMS = (r"Body as a Whole|General(?: Disorders)?|Gastrointestinal|Digestive|Nervous|"
                 r"Central Nervous|Psychiatric|Cardiovascular|Cardiac|Vascular|Respiratory|Skin|"
                 r"Dermatologic|Musculoskeletal|Hepatic|Hepatobiliary|Renal|Urogenital|Genitourinary|"
                 r"Reproductive|Metabolic|Metabolism and Nutrition|Endocrine|Hematologic|Hemic and "
                 r"Lymphatic|Blood and Lymphatic|Immune|Special Senses|Eye|Ear|Infections|Investigations")
_SYSTEM_LIST = re.compile(rf"\b(?:{_BODY_SYSTEMS})(?:\s+(?:System|Disorders|and Appendages|and "
                          rf"Subcutaneous Tissue|Conditions))*\s*:\s*([^:]+?)\.(?=\s+[A-Z0-9]|\s*$)")


_ALLERGIC_WORDS = ("anaphylaxis", "anaphylactic reactions", "angioedema", "urticaria",
                   "hypersensitivity reactions", "Stevens-Johnson syndrome",
                   "toxic epidermal necrolysis")


def _side_effects_from_label(text: str) -> dict[str, list[str]]:
    """Adverse-reactions text of a label -> grouped terms (see module docstring)."""
    grouped: dict[str, list[str]] = {g: [] for g in SIDE_EFFECT_GROUPS}
    body = re.sub(r"^\s*(?:\d+\s+)?ADVERSE\s+REACTIONS\s*", "", text, flags=re.I)
    for m in re.finditer(r"most (?:common|frequent|frequently reported)\s+adverse\s+(?:reactions|"
                         r"events)\b.{0,160}?\b(?:were|are|included|include|includes|was)\b:?\s*"
                         r"(.+?)(?:\.(?:\s|$)|\[|\((?=[^)]*\d+\.\d))", body, re.I):
        terms = [re.sub(r"\s*\([^)]*%[^)]*\)", "", t) for t in _split_top(m.group(1), ",;")]
        for t in terms:
            grouped["common"].extend(tidy_term_list(re.split(r"\s+(?:and|or)\s+(?=\S+$)", t)
                                                 if len(t.split()) <= 3 else [t]))
    for m in re.finditer(r"([A-Z][^\[\]\u2022:;.]{2,80}?)\s*\[\s*see\s+(?:Warnings|Boxed)", body):
        grouped["serious"].extend(tidy_term_list([m.group(1)]))
    for m in _SYSTEM_LIST.finditer(body):
        if re.search(r"\d", m.group(1)):
            continue
        grouped["other"].extend(t for t in tidy_term_list(_split_top(m.group(1), ",;"))
                                if len(t.split()) <= 6)
    low = body.lower()
    for word in _ALLERGIC_WORDS:
        at = low.find(word.lower())
        if at >= 0:
            grouped["allergic"].append(body[at:at + len(word)])
    first_group_wins(grouped, ("allergic", "serious", "common", "other"))
    return {g: grouped[g] for g in SIDE_EFFECT_GROUPS}


def parse_openfda(payload: dict[str, Any] | str, name: str, source_url: str,
                  fetched_at: str) -> dict[str, Any]:
    """An openFDA drug/label.json answer -> drug record of the label that matches `name` best."""
    raw = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as e:
            raise DataError(f"{source_url}: openFDA answer is not JSON ({e.msg})") from e
    if not isinstance(payload, dict):
        raise DataError(f"{source_url}: openFDA answer must be a JSON object")
    if "error" in payload:
        err = payload["error"] if isinstance(payload["error"], dict) else {}
        raise DataError(f"{source_url}: openFDA error {err.get('code', '?')}: {err.get('message', '')}")
    labels = [r for r in payload.get("results") or [] if isinstance(r, dict)]
    if not labels:
        raise DataError(f"{source_url}: openFDA answer has no labels")
    label = max(labels, key=lambda lab: _label_score(lab, name))
    generics = [g.lower() for g in _openfda(label, "generic_name")]
    brands: list[str] = []
    for lab in labels:
        if [g.lower() for g in _openfda(lab, "generic_name")] == generics:
            brands.extend(b for b in _openfda(lab, "brand_name") if b.lower() not in generics)
    brands = dedupe(b.title() if b.isupper() else b for b in brands)
    display = name.strip()
    if generics and display.lower() not in generics and display.lower() not in [b.lower() for b in brands]:
        brands.insert(0, display)
    classes = [re.sub(r"\s*\[EPC\]$", "", c) for c in _openfda(label, "pharm_class_epc")]
    uses = _uses_from_indications(_joined(label, "indications_and_usage"))
    side_effects = _side_effects_from_label(_joined(label, "adverse_reactions"))
    missing = missing_sections(uses, side_effects)
    if len(missing) == 2:
        raise DataError(f"{source_url}: label {label.get('id', '?')} has neither indications "
                        f"nor adverse reactions")
    record = {
        "name": display, "generic_names": dedupe(generics), "brand_names": brands,
        "drug_class": ", ".join(dedupe(classes)), "uses": uses, "side_effects": side_effects,
        "missing_sections": missing, "source": "openfda", "source_url": source_url,
        "fetched_at": fetched_at, "content_hash": sha256_text(raw),
    }
    return validate_drug_record(record, source_url)


# ---- URLs -------------------------------------------------------------------------------------
def drugs_com_url(name: str, base_url: str | None = None) -> str:
    """https://www.drugs.com/<slug>.html (or the same path under `base_url`)."""
    return f"{(base_url or DRUGS_COM_BASE).rstrip('/')}/{slugify(name)}.html"


def openfda_url(name: str, base_url: str | None = None, field: str = "brand_name",
                limit: int = 5) -> str:
    """openFDA label search for a brand (or generic) name, exact phrase, `limit` labels."""
    search = quote(f'openfda.{field}:"{name}"', safe=':')
    return f"{(base_url or OPENFDA_BASE).rstrip('/')}/drug/label.json?search={search}&limit={int(limit)}"


# ---- the step ---------------------------------------------------------------------------------
@dataclass
class ScrapeResult:
    """What a scrape run produced: records written, failures with reasons, files."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)     # the raw pages/answers the records came from

    def summary(self) -> dict[str, Any]:
        return {"read": len(self.records), "failed": len(self.failures),
                "failures": list(self.failures),
                "by_source": {s: sum(r["source"] == s for r in self.records)
                              for s in sorted({r["source"] for r in self.records})}}


def curated_page(name: str, pages: Path | None = None) -> Path:
    """Where the shipped curated page of a drug is."""
    return (pages or paths.pages_dir()) / "curated" / f"{slugify(name)}.html"


def _from_fetched(fetched: Fetched, name: str, kind: str) -> dict[str, Any]:
    if kind == "drugs.com":
        return parse_drugs_com(fetched.text, name, fetched.url, fetched.fetched_at)
    return parse_openfda(fetched.text, name, fetched.url, fetched.fetched_at)


def _read_cache(name: str, cache_dir: Path, pages: Path, base_url: str | None,
                openfda_limit: int) -> tuple[dict[str, Any], Path]:
    """Offline: HTTP-cached drugs.com page, then openFDA answer, then the curated page."""
    for kind, url in (("drugs.com", drugs_com_url(name, base_url)),
                      ("openfda", openfda_url(name, base_url, "brand_name", openfda_limit)),
                      ("openfda", openfda_url(name, base_url, "generic_name", openfda_limit))):
        fetched = read_cached(cache_dir, url)
        if fetched is not None and fetched.ok:
            return _from_fetched(fetched, name, kind), cache_path(cache_dir, url)
    page = curated_page(name, pages)
    if not page.exists():
        raise LookupError(f"no cached page for {name!r} (no curated page {paths.rel(page)}, "
                          f"nothing in the HTTP cache {paths.rel(cache_dir)})")
    return parse_curated(page, name), page


def _read_live(name: str, source: str, client: PoliteClient, base_url: str | None,
               openfda_limit: int) -> tuple[dict[str, Any], Path | None]:
    """Online: fetch (or reuse the cached answer) and parse; a non-200 answer is an error.
    Returns the record and the cache file that holds the raw answer (None without a cache)."""
    if source == "drugs.com":
        fetched = client.get(drugs_com_url(name, base_url))
    else:
        fetched = client.get(openfda_url(name, base_url, "brand_name", openfda_limit))
        if fetched.status == 404:
            fetched = client.get(openfda_url(name, base_url, "generic_name", openfda_limit))
    if not fetched.ok:
        raise FetchError(fetched.url, f"HTTP {fetched.status}", fetched.status)
    raw = cache_path(client.cache_dir, fetched.url) if client.cache_dir is not None else None
    return _from_fetched(fetched, name, source), raw


def scrape(drugs: str | Sequence[str] = "all", source: str = "cache", *,
           out_dir: Path | None = None, cache_dir: Path | None = None, pages: Path | None = None,
           base_url: str | None = None, client: PoliteClient | None = None,
           openfda_limit: int = 5, rate_limit_s: float = 1.0, timeout_s: float = 20.0,
           retries: int = 3, progress: bool = True) -> ScrapeResult:
    """Read every drug from `source`, write each valid record atomically, collect failures;
    raise ScrapeError only when no drug at all could be read."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    names = resolve_drugs(drugs)
    out_dir = Path(out_dir or paths.drugs_dir())
    cache_dir = Path(cache_dir or paths.http_cache_dir())
    pages = Path(pages or paths.pages_dir())
    own_client = client is None and source != "cache"
    if own_client:
        client = PoliteClient(cache_dir, rate_limit_s=rate_limit_s, timeout_s=timeout_s,
                              retries=retries)
    result = ScrapeResult()
    try:
        from tqdm import tqdm
        for name in tqdm(names, desc=f"01_scrape ({source})", disable=not progress):
            try:
                if source == "cache":
                    record, raw = _read_cache(name, cache_dir, pages, base_url, openfda_limit)
                else:
                    record, raw = _read_live(name, source, client, base_url, openfda_limit)
            except (FetchError, DataError, LookupError, ValueError, OSError) as e:
                result.failures.append({"drug": name, "source": source,
                                        "reason": f"{type(e).__name__}: {e}"})
                continue
            result.outputs.append(write_json(out_dir / f"{slugify(record['name'])}.json", record))
            result.records.append(record)
            if raw is not None and raw.exists():
                result.inputs.append(raw)
    finally:
        if own_client:
            client.close()
    if not result.records:
        reasons = "; ".join(f"{f['drug']}: {f['reason']}" for f in result.failures[:5])
        raise ScrapeError(f"01_scrape read no drug at all from source={source!r} ({reasons})")
    return result


def side_effect_counts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per drug: number of uses and of side-effect terms per group and in total."""
    rows = []
    for rec in records:
        row = {"drug": rec["name"], "source": rec["source"], "uses": len(rec["uses"])}
        row.update({g: len(rec["side_effects"].get(g, [])) for g in SIDE_EFFECT_GROUPS})
        row["total"] = len(all_side_effects(rec))
        row["missing"] = ", ".join(rec["missing_sections"])
        rows.append(row)
    return rows
