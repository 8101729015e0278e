"""Polite HTTP for step 1 (drug pages and the openFDA label API).

One `requests.Session` per client, and every request goes through the same rules:

- a descriptive User-Agent (`USER_AGENT`), a connect/read timeout on every request;
- retries with exponential backoff on 429, 5xx, timeouts and connection errors; a `Retry-After`
  header (seconds or an HTTP date) replaces the backoff, and a wait above `max_wait_s` gives up
  instead of stalling the run;
- a per-host rate limit: at least `rate_limit_s` seconds between two requests to the same host
  (or the host's robots.txt `Crawl-delay`, whichever is longer);
- robots.txt is read once per host and respected (401/403 = everything disallowed, other 4xx =
  nothing disallowed, unreachable after retries = refuse to crawl that host);
- an on-disk cache of the raw responses (status 200 and 404, which are final answers), one JSON
  file per URL holding the URL, status, content type, fetch time and body, written atomically,
  so a rerun fetches nothing it already has and `source=cache` can rebuild records offline.

Final answers other than 429/5xx (200, 404, 403, ...) come back as a `Fetched` whose `status`
the caller checks; what could not be fetched at all raises `FetchError` with the reason.
"""
from __future__ import annotations

import email.utils
import re
import time
import urllib.robotparser
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from .io import DataError, read_json, sha256_text, write_json

USER_AGENT = ("ae-extraction-study/0.1 (research crawler of an adverse-event extraction study; "
              "fetches a few public drug pages slowly, honours robots.txt)")
CACHEABLE = (200, 404)
RETRY_STATUS = (429, 500, 502, 503, 504)


class FetchError(RuntimeError):
    """A URL that could not be fetched; `reason` says why (timeout, robots.txt, HTTP 503, ...)."""

    def __init__(self, url: str, reason: str, status: int | None = None):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.status = url, reason, status


@dataclass(frozen=True)
class Fetched:
    """One HTTP answer, fresh or from the on-disk cache."""

    url: str
    status: int
    text: str
    content_type: str
    fetched_at: str
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (second precision), for fetch times."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cache_path(cache_dir: Path | str, url: str) -> Path:
    """Where the cached response of `url` lives: <cache>/<host>/<sha256(url)[:32]>.json."""
    host = urlsplit(url).netloc.replace(":", "_") or "local"
    return Path(cache_dir) / host / f"{sha256_text(url)[:32]}.json"


def read_cached(cache_dir: Path | str | None, url: str) -> Fetched | None:
    """The cached response of `url`, or None; a corrupt cache file raises DataError naming it."""
    if cache_dir is None:
        return None
    path = cache_path(cache_dir, url)
    if not path.exists():
        return None
    entry = read_json(path)
    try:
        if entry["url"] != url:
            raise DataError(f"{path}: cache entry is for {entry['url']!r}, not {url!r}")
        return Fetched(url=url, status=int(entry["status"]), text=entry["text"],
                       content_type=entry.get("content_type", ""),
                       fetched_at=entry["fetched_at"], from_cache=True)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: malformed cache entry ({e})") from e


def write_cached(cache_dir: Path | str, fetched: Fetched) -> Path:
    """Store a response in the cache atomically (never a half-written entry)."""
    entry = asdict(fetched)
    entry.pop("from_cache")
    return write_json(cache_path(cache_dir, fetched.url), entry)


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_UNRESERVED = re.compile(r"%(2[DdEe]|3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|7[Ee])")


def normalize_url(url: str) -> str:
    """The URL with its path normalised the way a server reads it, for robots.txt matching:
    percent-encoded unreserved characters decoded, `.` and `..` segments removed, `//` collapsed."""
    parts = urlsplit(url)
    path = _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), parts.path)
    out: list[str] = []
    for seg in re.sub(r"/{2,}", "/", path).split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if path.endswith(("/.", "/..")):
        out.append("")
    return urlunsplit(parts._replace(path="/" + "/".join(out)))


def crawl_delay_for(lines: list[str], user_agent: str) -> float | None:
    """Crawl-delay of the robots.txt group that applies to us (our product token, else `*`),
    fractional values included (urllib.robotparser reads only whole seconds)."""
    token = user_agent.split("/")[0].lower()
    groups: dict[str, float] = {}
    agents: list[str] = []
    in_rules = False
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, value = (x.strip() for x in line.split(":", 1))
        key = key.lower()
        if key == "user-agent":
            if in_rules:
                agents, in_rules = [], False
            agents.append(value.lower())
        else:
            in_rules = True
            if key == "crawl-delay":
                try:
                    delay = float(value)
                except ValueError:
                    continue
                if delay >= 0 and delay == delay and delay != float("inf"):
                    for a in agents:
                        groups.setdefault(a, delay)
    own = next((d for a, d in groups.items() if a != "*" and a in token), None)
    return own if own is not None else groups.get("*")


def decode(resp: requests.Response) -> str:
    """Body text: the charset the server names, else UTF-8 (not requests' ISO-8859-1 default for
    text/* without a charset, which garbles UTF-8 pages and JSON)."""
    declared = "charset=" in resp.headers.get("Content-Type", "").lower()
    return resp.text if declared else resp.content.decode("utf-8", errors="replace")


class PoliteClient:
    """A rate-limited, robots-aware, retrying, caching HTTP client (see the module docstring)."""

    def __init__(self, cache_dir: Path | str | None = None, *, user_agent: str = USER_AGENT,
                 timeout_s: float = 20.0, retries: int = 3, backoff_s: float = 1.0,
                 rate_limit_s: float = 1.0, max_wait_s: float = 120.0,
                 respect_robots: bool = True):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or rate_limit_s < 0:
            raise ValueError("timeout_s must be > 0; retries, backoff_s and rate_limit_s >= 0")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.user_agent = user_agent
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.rate_limit_s, self.max_wait_s = rate_limit_s, max_wait_s
        self.respect_robots = respect_robots
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": user_agent,
                                     "Accept": "text/html,application/json;q=0.9,*/*;q=0.5"})
        self._last_request: dict[str, float] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._crawl_delays: dict[str, float] = {}
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "robots_blocked": 0}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "PoliteClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- public -------------------------------------------------------------------------------
    def get(self, url: str, *, use_cache: bool = True) -> Fetched:
        """The response of `url`: from the cache if there, else fetched politely (and cached)."""
        if use_cache:
            cached = read_cached(self.cache_dir, url)
            if cached is not None:
                self.stats["cache_hits"] += 1
                return cached
        if self.respect_robots and not self.allowed(url):
            self.stats["robots_blocked"] += 1
            raise FetchError(url, "disallowed by robots.txt")
        resp = self._request(url)
        fetched = Fetched(url=url, status=resp.status_code, text=decode(resp),
                          content_type=resp.headers.get("Content-Type", ""),
                          fetched_at=utc_now())
        if self.cache_dir is not None and fetched.status in CACHEABLE:
            write_cached(self.cache_dir, fetched)
        return fetched

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of the URL's host lets our User-Agent fetch it (read once per host);
        the path is normalised first (`/./private/x`, `/a/../private`, `%70rivate` are `/private`)."""
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        if base not in self._robots:
            self._robots[base] = self._read_robots(base)
        parser = self._robots[base]
        return parser is not None and parser.can_fetch(self.user_agent, normalize_url(url))

    # ---- internals ----------------------------------------------------------------------------
    def _read_robots(self, base: str) -> urllib.robotparser.RobotFileParser | None:
        """Parse robots.txt of a host; None (crawl nothing) when it cannot be read at all."""
        parser = urllib.robotparser.RobotFileParser(base + "/robots.txt")
        try:
            resp = self._request(base + "/robots.txt")
        except FetchError:
            return None
        if resp.status_code in (401, 403):
            parser.disallow_all = True
        elif resp.status_code >= 400:
            parser.allow_all = True
        else:
            lines = resp.text.splitlines()
            parser.parse(lines)
            delay = crawl_delay_for(lines, self.user_agent)
            if delay is not None:
                self._crawl_delays[base] = min(delay, self.max_wait_s)
        parser.modified()
        return parser

    def _host_delay(self, url: str) -> float:
        parts = urlsplit(url)
        parser = self._robots.get(f"{parts.scheme}://{parts.netloc}")
        crawl_delay = self._crawl_delays.get(f"{parts.scheme}://{parts.netloc}")
        if crawl_delay is None and parser is not None:
            crawl_delay = parser.crawl_delay(self.user_agent)
        return max(self.rate_limit_s, float(crawl_delay or 0))

    def _wait_turn(self, url: str) -> None:
        """Sleep until this host may be asked again (per-host rate limit)."""
        host = urlsplit(url).netloc
        last = self._last_request.get(host)
        if last is not None:
            wait = self._host_delay(url) - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)
        self._last_request[host] = time.monotonic()

    def _request(self, url: str) -> requests.Response:
        """GET with retries: 429/5xx/timeouts/connection errors back off and try again."""
        reason, status = "no attempt made", None
        for attempt in range(self.retries + 1):
            self._wait_turn(url)
            self.stats["requests"] += 1
            wait = self.backoff_s * (2 ** attempt)
            try:
                resp = self.session.get(url, timeout=self.timeout_s)
            except requests.Timeout:
                reason, status = f"timeout after {self.timeout_s:g} s", None
            except requests.ConnectionError as e:
                reason, status = f"connection error ({type(e).__name__})", None
            else:
                if resp.status_code not in RETRY_STATUS:
                    return resp
                reason, status = f"HTTP {resp.status_code}", resp.status_code
                hinted = retry_after_s(resp.headers.get("Retry-After"))
                if hinted is not None:
                    wait = hinted
                resp.close()
            if attempt == self.retries:
                break
            if wait > self.max_wait_s:
                raise FetchError(url, f"{reason}; asked to wait {wait:g} s (> {self.max_wait_s:g} s)",
                                 status)
            self.stats["retries"] += 1
            time.sleep(wait)
        raise FetchError(url, f"{reason} after {self.retries + 1} attempt(s)", status)

