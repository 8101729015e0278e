"""Tolerant parsing of model outputs into the canonical record: a bad output is a status, never a crash.

`parse_output(raw)` returns `(parsed, status)`; `parsed` is `{"drugs": [...], "adverse_events": [...]}`
(items stripped, empties dropped, repeats removed) or None. Statuses, best first:

- `ok`        the output is exactly one JSON object of the canonical schema;
- `study2023` the same, but in the earlier study's schema (`drug_name` becomes `drugs`);
- `repaired`  JSON found after repair: code fences, leading prose, trailing text, single quotes,
              trailing commas, Python literals (None/True) or a string instead of a list;
- `truncated` the output stopped mid-JSON (token cap): complete items kept, the cut one dropped;
- `no_json`   no `{` in the output at all;
- `invalid_json` braces present but nothing could be read as a JSON object;
- `bad_schema` a JSON object, but without `drugs`/`drug_name`/`adverse_events` as strings or lists.
"""
from __future__ import annotations

import ast
import json
import re
import warnings
from typing import Any, Iterable

from .io import scrub_surrogates
from .schemas import FIELDS, dedupe

PARSED_STATUSES = ("ok", "study2023", "repaired", "truncated")
FAILED_STATUSES = ("no_json", "invalid_json", "bad_schema")
PARSE_STATUSES = PARSED_STATUSES + FAILED_STATUSES

# accepted key spellings per canonical field (the first is canonical; drug_name is seed 01's)
KEY_ALIASES = {
    "drugs": ("drugs", "drug_name", "drug_names", "drug", "medications", "medicines"),
    "adverse_events": ("adverse_events", "adverse_event", "adverse_reactions", "side_effects", "events"),
}
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
SCAN_BUDGET = 2_000_000  # characters scanned over all `{` starts (bounds the time of brace soup)
MAX_DEPTH = 64          # the record nests 2 deep; deeper brackets are not our record
_TRAILING_COMMA = re.compile(r",\s*([\]}])")


class _SchemaError(ValueError):
    """An object that is JSON but not our record."""


def _as_list(value: Any, key: str) -> list[str]:
    """A field value as a list of strings (None -> [], "x" -> ["x"]); anything else is a schema error."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                out.append(str(item))
            elif item is None:
                continue
            else:
                raise _SchemaError(f"{key!r} holds a {type(item).__name__}, not a string")
        return out
    raise _SchemaError(f"{key!r} is a {type(value).__name__}, not a list of strings")


def normalize_record(obj: Any) -> tuple[dict[str, list[str]], bool, bool]:
    """Map a decoded object to the canonical record; returns (record, used_2023_study_key, coerced).

    Raises _SchemaError when the object carries none of the known keys or a value of the wrong type."""
    if not isinstance(obj, dict):
        raise _SchemaError(f"a {type(obj).__name__}, not an object")
    lower = {str(k).strip().lower(): v for k, v in obj.items()}
    spelled = {str(k).strip().lower(): k for k in obj}
    record: dict[str, list[str]] = {}
    old_schema = coerced = False
    for field in FIELDS:
        key = next((k for k in KEY_ALIASES[field] if k in lower), None)
        if key is None:
            record[field] = []
            continue
        value = lower[key]
        old_schema |= key == "drug_name"
        native = isinstance(value, list) or key == "drug_name" and (value is None or isinstance(value, str))
        coerced |= key not in (field, "drug_name") or spelled[key] != key or not native
        record[field] = _as_list(value, key)
    if not any(k in lower for aliases in KEY_ALIASES.values() for k in aliases):
        raise _SchemaError(f"none of the keys {list(KEY_ALIASES)} (got {sorted(lower)[:5]})")
    for field in FIELDS:
        record[field] = dedupe(s.strip() for s in record[field] if s.strip())
    return record, old_schema, coerced


def _loads_lenient(chunk: str) -> Any:
    """json.loads, then with trailing commas removed, then as a Python literal (single quotes, None)."""
    try:
        return json.loads(chunk)
    except json.JSONDecodeError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", chunk)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError:
        pass
    pythonish = re.sub(r"\bnull\b", "None", re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", fixed)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in the model's text
            obj = ast.literal_eval(pythonish)
        json.dumps(obj)  # only JSON types: rejects `...`, sets, bytes, tuples as keys
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError("not JSON") from None
    return obj


STRING_END = '"'   # what _brackets yields where a quoted string closes


def _brackets(text: str, start: int = 0) -> Iterable[tuple[int, str]]:
    """(index, bracket) of every bracket outside quoted strings from `start`, and (index, STRING_END)
    where a string closes: the one string-aware scan both brace matchers below walk."""
    quote, escaped = "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
                yield i, STRING_END
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "{[]}":
            yield i, ch


def _balanced_object(text: str, start: int) -> tuple[str, bool]:
    """The `{...}` chunk starting at `start`, matched by brace depth outside strings; (chunk, closed)."""
    depth = 0
    for i, ch in _brackets(text, start):
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start:i + 1], True
    return text[start:], False


def _close_truncated(chunk: str) -> str | None:
    """Close a JSON object cut off mid-way: drop an unfinished string item or key, close the brackets."""
    stack: list[str] = []
    last_safe = None
    for i, ch in _brackets(chunk):
        if ch == STRING_END:
            if stack and stack[-1] == "[":
                last_safe = (i + 1, list(stack))
        elif ch in "{[":
            stack.append(ch)
            if ch == "[":
                last_safe = (i + 1, list(stack))
        else:
            if stack:
                stack.pop()
            last_safe = (i + 1, list(stack))
    if last_safe is None:
        return None
    cut, open_ = last_safe
    body = chunk[:cut].rstrip().rstrip(",").rstrip()
    if body.endswith(":"):  # a key with no value yet: drop the key
        body = re.sub(r",?\s*[\"'][^\"']*[\"']\s*:$", "", body)
    closing = "".join("]" if c == "[" else "}" for c in reversed(open_))
    return body + closing


def _candidates(raw: str) -> list[tuple[str, bool, bool]]:
    """Text chunks that may hold the record, as (chunk, needed_extraction, closed), best first."""
    out: list[tuple[str, bool, bool]] = []
    stripped = raw.strip()
    out.append((stripped, False, True))
    for m in _FENCE.finditer(raw):
        inner = m.group(1).strip()
        if inner:
            out.append((inner, True, True))
    budget = SCAN_BUDGET
    for m in re.finditer(r"\{", raw):
        if budget <= 0:
            break
        chunk, closed = _balanced_object(raw, m.start())
        budget -= len(chunk)
        out.append((chunk, True, closed))
    return out


def _too_deep(text: str) -> bool:
    """Brackets nested deeper than MAX_DEPTH (outside strings are not told apart: a cheap bound)."""
    depth = 0
    for ch in text:
        if ch in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "}]":
            depth = max(0, depth - 1)
    return False


def _clean(record: dict[str, list[str]]) -> dict[str, list[str]]:
    """Lone surrogates (an escaped "\\ud83d" in the output) become U+FFFD, so the record can
    be written as UTF-8."""
    return {k: [scrub_surrogates(x) for x in v] for k, v in record.items()}


def parse_output(raw: Any) -> tuple[dict[str, list[str]] | None, str]:
    """Read a model's output as the canonical record, tolerating the usual damage; never raises."""
    if not isinstance(raw, str) or "{" not in raw:
        return None, "no_json"
    if _too_deep(raw):
        return None, "invalid_json"
    try:
        parsed, status = _parse(raw)
    except (RecursionError, MemoryError, ValueError, TypeError):
        return None, "invalid_json"
    return (_clean(parsed) if parsed is not None else None), status


def _parse(raw: str) -> tuple[dict[str, list[str]] | None, str]:
    """parse_output's search over the candidate chunks (may raise on pathological input)."""
    schema_problem = False
    truncated: list[str] = []
    for chunk, extracted, closed in _candidates(raw):
        if not closed:
            truncated.append(chunk)
            continue
        try:
            obj = json.loads(chunk)
            lenient = False
        except json.JSONDecodeError:
            try:
                obj = _loads_lenient(chunk)
            except ValueError:
                continue
            lenient = True
        try:
            record, old_schema, coerced = normalize_record(obj)
        except _SchemaError:
            schema_problem = True
            continue
        if extracted or lenient or coerced:
            return record, "repaired"
        return record, "study2023" if old_schema else "ok"
    for chunk in truncated:
        closed_chunk = _close_truncated(chunk)
        if closed_chunk is None:
            continue
        try:
            obj = _loads_lenient(closed_chunk)
        except ValueError:
            continue
        try:
            record, _, _ = normalize_record(obj)
        except _SchemaError:
            schema_problem = True
            continue
        return record, "truncated"
    return None, "bad_schema" if schema_problem else "invalid_json"
