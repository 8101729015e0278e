"""Teacher-LLM report generator: an OpenAI-compatible chat-completions client (a hosted API or a
local `vllm serve`), with an on-disk response cache, bounded concurrency and retries, schema
checks of every reply, and grounding of every label as a span of the report's text.

The prompt is a file (default: teacher_prompt.txt beside this module) with `$`-placeholders:
$drug, $names, $uses, $side_effects, $n. The API key is read from the environment variable
named in the config and is never logged, cached or written anywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import requests
from rapidfuzz import fuzz, process

from . import grounding, paths, schemas
from .http import retry_after_s
from .io import DataError, read_json, write_json
from .splits import normalize_text

log = logging.getLogger(__name__)

DEFAULT_PROMPT = Path(__file__).with_name("teacher_prompt.txt")


class TeacherError(RuntimeError):
    """The teacher endpoint cannot be used (bad URL, refused key, every request failed)."""


class ReplyError(ValueError):
    """A teacher reply that is not valid JSON or not in the expected shape."""


@dataclass
class TeacherConfig:
    """Where the teacher is and how hard to push it."""
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    prompt_file: str | None = None
    concurrency: int = 4
    reports_per_request: int = 4
    temperature: float = 0.9
    max_tokens: int = 3000
    max_retries: int = 3          # extra attempts for an HTTP failure or an invalid reply
    timeout_s: float = 120.0
    backoff_s: float = 1.0
    fuzzy_threshold: float = 90.0
    dedupe_threshold: float = 92.0
    keep_partial: bool = False    # keep a report whose other labels could not be grounded
    cache_dir: str | None = None
    structured_output: bool = True  # send response_format json_schema (dropped if the server refuses)
    max_wait_s: float = 60.0      # the longest Retry-After we honour (longer hints are capped)

    def __post_init__(self) -> None:
        if not self.base_url or not self.model:
            raise TeacherError("generator 'llm' needs base_url (e.g. http://localhost:8000/v1) and teacher_model")


def teacher_cache_dir() -> Path:
    """Default cache of teacher responses (inside data/raw/cache/, which git ignores)."""
    return paths.http_cache_dir() / "teacher"


# ---- prompt -----------------------------------------------------------------------------------
def load_prompt(prompt_file: str | Path | None = None) -> str:
    """The prompt template (the packaged default when no file is given)."""
    path = Path(prompt_file) if prompt_file else DEFAULT_PROMPT
    if not path.exists():
        raise FileNotFoundError(f"{path}: teacher prompt file not found")
    text = path.read_text(encoding="utf-8")
    unknown = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)
               if m.group("named") or m.group("braced")} - {"drug", "names", "uses", "side_effects", "n"}
    if unknown:
        raise DataError(f"{path}: unknown placeholders {sorted(unknown)}; "
                        "use $drug, $names, $uses, $side_effects, $n")
    return text


def fill_teacher_prompt(template: str, drug: Any, n: int) -> str:
    """The prompt for one drug (a synthesize.Drug) asking for n reports."""
    return string.Template(template).safe_substitute(
        drug=drug.name, names=", ".join(drug.mentions) or drug.name,
        uses=", ".join(drug.diseases) or "see the product label",
        side_effects="; ".join(drug.events), n=n)


def request_body(cfg: TeacherConfig, prompt: str, seed: int) -> dict[str, Any]:
    """The chat-completions request (no secrets in it, so it can be hashed and cached)."""
    return {"model": cfg.model, "messages": [{"role": "user", "content": prompt}],
            "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": seed}


REPLY_SCHEMA = {
    "type": "object",
    "properties": {"reports": {"type": "array", "items": {
        "type": "object",
        "properties": {"text": {"type": "string"},
                       "drugs": {"type": "array", "items": {"type": "string"}},
                       "adverse_events": {"type": "array", "items": {"type": "string"}}},
        "required": ["text", "drugs", "adverse_events"]}}},
    "required": ["reports"],
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "reports", "schema": REPLY_SCHEMA}}


def redact(text: str, secret: str | None = None) -> str:
    """Text for an error message with the API key (and any bearer token or Authorization header
    value a server echoes back) replaced by ***."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    text = re.sub(r"(?i)(bearer\s+)[^\s\"',}]+", r"\1***", text)
    return re.sub(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer)[^\"',}\n]+", r"\1***", text)


def _valid_response(resp: Any) -> bool:
    """A chat completion whose first choice has a message (its content is checked later)."""
    try:
        return isinstance(resp, dict) and "content" in resp["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return False


def request_key(base_url: str, body: dict[str, Any]) -> str:
    """Cache key: hash of the endpoint and the request body."""
    blob = json.dumps({"url": base_url.rstrip("/"), "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---- client -----------------------------------------------------------------------------------
class TeacherClient:
    """POST /chat/completions with retries and a response cache keyed by request hash."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.cache = Path(cfg.cache_dir) if cfg.cache_dir else teacher_cache_dir()
        self._local = threading.local()
        self.lock = threading.Lock()
        self.stats = {"http_requests": 0, "http_errors": 0, "cache_hits": 0, "cache_damaged": 0}
        self.structured = cfg.structured_output

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env, "")
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _bump(self, name: str) -> None:
        with self.lock:
            self.stats[name] += 1

    def _cached(self, path: Path) -> dict[str, Any] | None:
        """A cached response; a damaged cache file is removed (and counted) so it is fetched again."""
        if not path.exists():
            return None
        try:
            resp = read_json(path)["response"]
            if _valid_response(resp):
                self._bump("cache_hits")
                return resp
        except (DataError, OSError, KeyError, TypeError):
            pass
        log.warning("teacher cache file %s is damaged; fetching it again", paths.rel(path))
        self._bump("cache_damaged")
        path.unlink(missing_ok=True)
        return None

    def _post(self, body: dict[str, Any]) -> requests.Response:
        """One POST; the JSON-schema response format rides along unless the server refused it."""
        sent = {**body, "response_format": RESPONSE_FORMAT} if self.structured else body
        return self._session().post(self.url, json=sent, headers=self._headers(),
                                    timeout=self.cfg.timeout_s)

    def _refused_format(self, r: requests.Response) -> bool:
        """A 400/422 that blames response_format: stop sending it (once for the client)."""
        if not self.structured or r.status_code not in (400, 422):
            return False
        if not re.search(r"response_format|json_schema|guided|structured", r.text or "", re.I):
            return False
        with self.lock:
            self.structured = False
        log.warning("teacher server refused response_format json_schema; asking without it")
        return True

    def _wait(self, attempt: int, r: requests.Response | None) -> float:
        """Seconds before the next attempt: the server's Retry-After (capped), else backoff."""
        hinted = retry_after_s(r.headers.get("Retry-After")) if r is not None else None
        if hinted is not None:
            return min(hinted, self.cfg.max_wait_s)
        return self.cfg.backoff_s * 2 ** attempt

    def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The response JSON for a request body, and whether it came from the cache."""
        key = request_key(self.cfg.base_url, body)
        path = self.cache / key[:2] / f"{key}.json"
        cached = self._cached(path)
        if cached is not None:
            return cached, True
        last, secret, wait = "", os.environ.get(self.cfg.api_key_env, ""), 0.0
        for attempt in range(self.cfg.max_retries + 1):
            time.sleep(wait)
            self._bump("http_requests")
            try:
                r = self._post(body)
            except requests.RequestException as e:
                self._bump("http_errors")
                last, wait = redact(f"{type(e).__name__}: {e}", secret), self._wait(attempt, None)
                continue
            if r.status_code == 200:
                try:
                    resp = r.json()
                except ValueError:
                    resp = None
                if not _valid_response(resp):
                    self._bump("http_errors")
                    last, wait = "HTTP 200 with a body that is not a chat completion", self._wait(attempt, None)
                    continue
                write_json(path, {"request": body, "response": resp})
                return resp, False
            self._bump("http_errors")
            last, wait = f"HTTP {r.status_code}: {redact(r.text, secret)[:200]}", self._wait(attempt, r)
            if self._refused_format(r):
                wait = 0.0
                continue
            if r.status_code in (400, 401, 403, 404):
                raise TeacherError(f"{self.url}: {last} (check base_url, teacher_model and "
                                   f"${self.cfg.api_key_env})")
        raise TeacherError(f"{self.url}: gave up after {self.cfg.max_retries + 1} attempts ({last})")


# ---- replies ----------------------------------------------------------------------------------
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.I)


def parse_reply(content: str) -> list[dict[str, Any]]:
    """Reports in a teacher reply ({"reports": [...]} or a bare list); ReplyError if not JSON."""
    if content is not None and not isinstance(content, str):
        raise ReplyError(f"reply content is a {type(content).__name__}, not text")
    text = _FENCE.sub("", content or "").strip()
    try:
        data = json.loads(text)
    except RecursionError:
        raise ReplyError("reply JSON nested too deeply") from None
    except json.JSONDecodeError:
        lo, hi = text.find("{"), text.rfind("}")
        try:
            data = json.loads(text[lo:hi + 1]) if 0 <= lo < hi else None
        except (json.JSONDecodeError, RecursionError):
            data = None
        if data is None:
            raise ReplyError(f"reply is not valid JSON: {text[:80]!r}")
    if isinstance(data, dict):
        data = data.get("reports", [data] if "text" in data else None)
    if not isinstance(data, list):
        raise ReplyError("reply JSON has no 'reports' list")
    return data


def check_item(item: Any) -> dict[str, Any] | None:
    """One teacher report in the schema (text str, drugs and adverse_events lists of str), else None."""
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
        return None
    out = {"text": item["text"].strip()}
    for k in schemas.FIELDS:
        v = item.get(k, [])
        if isinstance(v, str):
            v = [v] if v else []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return None
        out[k] = schemas.dedupe(x.strip() for x in v if x.strip())
    return out


# ---- grounding ----------------------------------------------------------------------------------
def ground_item(item: dict[str, Any], threshold: float) -> tuple[dict[str, Any], dict[str, int]]:
    """Replace each label by the text it was found at (helpers.grounding.locate: exact, case, fuzzy),
    with its span; drop and count the rest."""
    text = item["text"]
    counts = {"labels": 0, "exact": 0, "case": 0, "fuzzy": 0, "dropped": 0}
    spans, out = [], {"drugs": [], "adverse_events": []}
    for field_name, label in (("drugs", "drug"), ("adverse_events", "adverse_event")):
        for value in item[field_name]:
            counts["labels"] += 1
            hit = grounding.locate(value, text, threshold)
            if hit["status"] == "not_found":
                counts["dropped"] += 1
                continue
            counts[hit["status"]] += 1
            spans.append({"label": label, "start": hit["start"], "end": hit["end"], "text": hit["text"]})
            out[field_name].append(hit["text"])
    rec = {"text": text, "drugs": schemas.dedupe(out["drugs"]),
           "adverse_events": schemas.dedupe(out["adverse_events"]),
           "spans": sorted(spans, key=lambda s: (s["start"], s["end"]))}
    return rec, counts


def remove_near_duplicates(reports: Sequence[dict[str, Any]], threshold: float
                           ) -> tuple[list[dict[str, Any]], int]:
    """Keep the first of every group of reports whose texts are >= threshold similar (rapidfuzz ratio)."""
    kept, keys = [], []
    for r in reports:
        k = normalize_text(r["text"])
        if keys and process.extractOne(k, keys, scorer=fuzz.ratio, score_cutoff=threshold):
            continue
        kept.append(r)
        keys.append(k)
    return kept, len(reports) - len(kept)


# ---- generation -------------------------------------------------------------------------------
@dataclass
class TeacherStats:
    requests_planned: int = 0
    requests_ok: int = 0
    requests_rejected: int = 0      # every attempt invalid or failed
    invalid_replies: int = 0        # replies that were not JSON / not the schema (then retried)
    http_requests: int = 0
    http_errors: int = 0
    cache_hits: int = 0
    reports_received: int = 0
    reports_bad_schema: int = 0
    reports_dropped_ungrounded: int = 0
    reports_dropped_no_label_left: int = 0
    near_duplicates_removed: int = 0
    reports_kept: int = 0
    labels: int = 0
    labels_exact: int = 0
    labels_case: int = 0
    labels_fuzzy: int = 0
    labels_dropped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    odd_usage: int = 0              # replies whose usage block was not numbers (ignored, counted)
    cache_damaged: int = 0          # damaged cache files fetched again
    structured_output: bool = True  # whether response_format json_schema was still sent at the end
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grounding_rate(self) -> float:
        return round((self.labels - self.labels_dropped) / self.labels, 4) if self.labels else 1.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["grounding_rate"] = self.grounding_rate
        d.update(self.extra)
        return d


def _job_seed(seed: int, tag: str, job: int, attempt: int) -> int:
    h = hashlib.sha256(f"{seed}:{tag}:{job}:{attempt}".encode()).digest()
    return int.from_bytes(h[:4], "big")


def _run_job(client: TeacherClient, cfg: TeacherConfig, prompt: str, seed: int, tag: str, job: int
             ) -> dict[str, Any]:
    """One request with retries on invalid replies: the parsed items, or why it was rejected."""
    out: dict[str, Any] = {"items": None, "invalid": 0, "usage": [0, 0], "error": None, "key": None,
                           "tag": tag}
    for attempt in range(cfg.max_retries + 1):
        body = request_body(cfg, prompt, _job_seed(seed, tag, job, attempt))
        try:
            resp, _ = client.complete(body)
        except TeacherError as e:
            out["error"] = str(e)
            if "gave up" not in str(e):
                raise
            return out
        prompt_t, completion_t, odd = _usage(resp)
        out["usage"][0] += prompt_t
        out["usage"][1] += completion_t
        out["odd_usage"] = out.get("odd_usage", 0) + odd
        try:
            items = parse_reply(resp["choices"][0]["message"]["content"])
        except ReplyError as e:
            out["invalid"] += 1
            out["error"] = str(e)
            continue
        out["items"], out["key"] = items, request_key(cfg.base_url, body)[:16]
        return out
    return out


def _usage(resp: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, 1 if the usage block was not numbers) of a reply: odd
    usage is counted, never fatal."""
    usage = resp.get("usage")
    if usage is None:
        return 0, 0, 0
    counts = []
    for k in ("prompt_tokens", "completion_tokens"):
        v = usage.get(k) if isinstance(usage, dict) else None
        ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
        if not isinstance(usage, dict) or not ok:
            return 0, 0, 1
        counts.append(int(v or 0))
    return counts[0], counts[1], 0


def generate(drugs: Sequence[Any], n_reports: int, cfg: TeacherConfig, seed: int, tag: str = "pool",
             progress: bool = False, max_rounds: int = 3) -> tuple[list[dict[str, Any]], TeacherStats]:
    """About n_reports teacher reports over `drugs` (round robin), grounded and de-duplicated, in a
    deterministic order; rounds of further requests top up what grounding and dedupe removed.
    A rerun with the same arguments is served from the cache."""
    if not drugs:
        raise DataError("teacher: no drugs to write reports for")
    template = load_prompt(cfg.prompt_file)
    client = TeacherClient(cfg)
    per = max(1, cfg.reports_per_request)
    stats = TeacherStats()
    reports: list[dict[str, Any]] = []
    errors: list[str] = []
    next_job = 0
    for _ in range(max_rounds):
        need = n_reports - len(reports)
        if need <= 0:
            break
        jobs = [(j, drugs[j % len(drugs)]) for j in range(next_job, next_job + math.ceil(need / per))]
        next_job += len(jobs)
        stats.requests_planned += len(jobs)
        with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency)) as pool:
            futures = [pool.submit(_run_job, client, cfg, fill_teacher_prompt(template, d, per), seed, tag, j)
                       for j, d in jobs]
            it = futures
            if progress:
                from tqdm import tqdm
                it = tqdm(futures, desc=f"teacher {tag}", mininterval=2.0)
            results = [f.result() for f in it]
        fresh = _collect(jobs, results, cfg, stats, errors)
        reports, removed = remove_near_duplicates(reports + fresh, cfg.dedupe_threshold)
        stats.near_duplicates_removed += removed
        if stats.requests_ok == 0:
            break
    for name in ("http_requests", "http_errors", "cache_hits"):
        setattr(stats, name, client.stats[name])
    stats.cache_damaged = client.stats["cache_damaged"]
    stats.structured_output = client.structured
    if stats.requests_ok == 0:
        raise TeacherError(f"teacher: all {stats.requests_planned} requests failed; "
                           f"last error: {errors[-1] if errors else '?'}")
    reports = reports[:n_reports]
    stats.reports_kept = len(reports)
    log.info("teacher %s: %d reports kept, grounding rate %.3f", tag, len(reports), stats.grounding_rate)
    return reports, stats


def _collect(jobs: list[tuple[int, Any]], results: list[dict[str, Any]], cfg: TeacherConfig,
             stats: TeacherStats, errors: list[str]) -> list[dict[str, Any]]:
    """Schema-check and ground the reports of a round of requests, counting every loss."""
    reports = []
    for (j, drug), res in zip(jobs, results):
        stats.invalid_replies += res["invalid"]
        stats.odd_usage += res.get("odd_usage", 0)
        stats.prompt_tokens += res["usage"][0]
        stats.completion_tokens += res["usage"][1]
        if res["items"] is None:
            stats.requests_rejected += 1
            errors.append(res["error"])
            continue
        stats.requests_ok += 1
        for k, raw in enumerate(res["items"]):
            stats.reports_received += 1
            item = check_item(raw)
            if item is None:
                stats.reports_bad_schema += 1
                continue
            rec, c = ground_item(item, cfg.fuzzy_threshold)
            stats.labels += c["labels"]
            stats.labels_exact += c["exact"]
            stats.labels_case += c["case"]
            stats.labels_fuzzy += c["fuzzy"]
            stats.labels_dropped += c["dropped"]
            if c["dropped"] and not cfg.keep_partial:
                stats.reports_dropped_ungrounded += 1
                continue
            if c["dropped"] and not (rec["drugs"] or rec["adverse_events"]):
                stats.reports_dropped_no_label_left += 1
                continue
            rec = {"id": f"llm-{res['tag']}-{j:05d}-{k}", **rec,
                   "meta": {"generator": "llm", "teacher_model": cfg.model, "drug_names": [drug.name],
                            "request": res["key"], "labels_dropped": c["dropped"],
                            "grounding": {m: c[m] for m in ("exact", "case", "fuzzy")}}}
            reports.append(schemas.validate_report(rec, rec["id"]))
    return reports
