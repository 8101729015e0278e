"""Polite HTTP (helpers.http) against a real HTTP server on 127.0.0.1: no mocking of requests."""
from __future__ import annotations

import importlib.util
import socket
import sys
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers.http import (USER_AGENT, FetchError, PoliteClient, cache_path, read_cached,
                          retry_after_s)

def _load_local_server():
    """The shared test server module (tests/fixtures/scrape/local_server.py), loaded once."""
    name = "scrape_local_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).parent / "fixtures" / "scrape" / "local_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local_server = _load_local_server()
Answer, LocalServer = local_server.Answer, local_server.LocalServer

ROBOTS_OK = Answer(200, "User-agent: *\nDisallow:\n")


def client(tmp_path: Path, **kw) -> PoliteClient:
    """Fast settings: short timeout, tiny backoff, no rate limit unless a test asks for one."""
    opts = dict(timeout_s=0.5, retries=2, backoff_s=0.01, rate_limit_s=0.0)
    opts.update(kw)
    return PoliteClient(tmp_path / "cache", **opts)


def test_200_is_fetched_cached_and_not_refetched(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK, "/a.html": Answer(200, "<h1>A</h1>", {"Content-Type": "text/html"})}
    with LocalServer(routes) as srv, client(tmp_path) as c:
        first = c.get(srv.url + "/a.html")
        again = c.get(srv.url + "/a.html")
        with client(tmp_path) as fresh:          # a new run reuses the on-disk cache too
            third = fresh.get(srv.url + "/a.html")
    assert (first.status, first.text, first.from_cache) == (200, "<h1>A</h1>", False)
    assert again.from_cache and third.from_cache and third.text == first.text
    assert third.fetched_at == first.fetched_at
    assert srv.count("/a.html") == 1
    assert cache_path(tmp_path / "cache", srv.url + "/a.html").exists()


def test_utf8_without_a_declared_charset_is_read_as_utf8(tmp_path):
    body = "na\u00efve \u2013 caf\u00e9 \u2265 2%"
    routes = {"/robots.txt": ROBOTS_OK, "/u.html": Answer(200, body, {"Content-Type": "text/html"}),
              "/l.html": Answer(200, body, {"Content-Type": "text/html; charset=utf-8"})}
    with LocalServer(routes) as srv, client(tmp_path) as c:
        assert c.get(srv.url + "/u.html").text == body
        assert c.get(srv.url + "/l.html").text == body
        assert c.get(srv.url + "/u.html").text == body           # and from the cache


def test_404_is_an_answer_not_retried_and_cached(tmp_path):
    with LocalServer({"/robots.txt": ROBOTS_OK}) as srv, client(tmp_path) as c:
        got = c.get(srv.url + "/missing.html")
        assert c.get(srv.url + "/missing.html").from_cache
    assert got.status == 404 and not got.ok
    assert srv.count("/missing.html") == 1


def test_500_then_200_is_retried(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK,
              "/flaky.html": [Answer(500, "oops"), Answer(503, "busy"), Answer(200, "fine")]}
    with LocalServer(routes) as srv, client(tmp_path, retries=3) as c:
        got = c.get(srv.url + "/flaky.html")
        assert c.stats["retries"] == 2
    assert (got.status, got.text) == (200, "fine")
    assert srv.count("/flaky.html") == 3


def test_5xx_every_time_gives_up_with_the_reason_and_caches_nothing(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK, "/down.html": Answer(502, "bad gateway")}
    with LocalServer(routes) as srv, client(tmp_path, retries=2) as c:
        with pytest.raises(FetchError, match=r"HTTP 502 after 3 attempt") as err:
            c.get(srv.url + "/down.html")
    assert err.value.status == 502
    assert srv.count("/down.html") == 3
    assert read_cached(tmp_path / "cache", srv.url + "/down.html") is None


def test_429_waits_for_retry_after(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK,
              "/busy.html": [Answer(429, "slow down", {"Retry-After": "1"}), Answer(200, "ok")]}
    with LocalServer(routes) as srv, client(tmp_path) as c:
        got = c.get(srv.url + "/busy.html")
    times = [t for p, _, t in srv.hits if p == "/busy.html"]
    assert got.text == "ok" and len(times) == 2
    assert times[1] - times[0] >= 0.95          # the server's 1 s, not the 0.01 s backoff


def test_429_asking_for_too_long_a_wait_gives_up_at_once(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK, "/busy.html": Answer(429, "", {"Retry-After": "3600"})}
    with LocalServer(routes) as srv, client(tmp_path, max_wait_s=5) as c:
        start = time.monotonic()
        with pytest.raises(FetchError, match="asked to wait 3600"):
            c.get(srv.url + "/busy.html")
    assert time.monotonic() - start < 2 and srv.count("/busy.html") == 1


def test_slow_response_hits_the_timeout(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK, "/slow.html": Answer(200, "late", delay_s=2.0)}
    with LocalServer(routes) as srv, client(tmp_path, timeout_s=0.3, retries=1) as c:
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"timeout after 0.3 s after 2 attempt"):
            c.get(srv.url + "/slow.html")
    assert time.monotonic() - start < 1.5
    assert srv.count("/slow.html") == 2


def test_robots_disallow_is_respected_and_the_page_never_requested(tmp_path):
    robots = Answer(200, "User-agent: *\nDisallow: /private/\n\nUser-agent: ae-extraction-study\n"
                         "Disallow: /private/\nDisallow: /nobots/\n")
    routes = {"/robots.txt": robots, "/private/x.html": Answer(200, "secret"),
              "/nobots/y.html": Answer(200, "no"), "/public.html": Answer(200, "hello")}
    with LocalServer(routes) as srv, client(tmp_path) as c:
        for path in ("/private/x.html", "/nobots/y.html"):
            with pytest.raises(FetchError, match="robots.txt"):
                c.get(srv.url + path)
        assert c.get(srv.url + "/public.html").text == "hello"
        assert c.stats["robots_blocked"] == 2
    assert srv.count("/private/x.html") == 0 and srv.count("/nobots/y.html") == 0
    assert srv.count("/robots.txt") == 1             # read once per host


def test_robots_403_disallows_everything_and_404_allows(tmp_path):
    with LocalServer({"/robots.txt": Answer(403, "")}) as srv, client(tmp_path) as c:
        with pytest.raises(FetchError, match="robots.txt"):
            c.get(srv.url + "/page.html")
    with LocalServer({"/page.html": Answer(200, "p")}) as srv, client(tmp_path) as c:
        assert c.get(srv.url + "/page.html").text == "p"


def test_user_agent_and_rate_limit(tmp_path):
    routes = {"/robots.txt": ROBOTS_OK, "/1.html": Answer(200, "1"), "/2.html": Answer(200, "2"),
              "/3.html": Answer(200, "3")}
    with LocalServer(routes) as srv, client(tmp_path, rate_limit_s=0.3) as c:
        for n in (1, 2, 3):
            c.get(f"{srv.url}/{n}.html")
    times = [t for p, _, t in srv.hits if p.endswith(".html")]
    assert all(b - a >= 0.28 for a, b in zip(times, times[1:])), times
    assert all(h.get("User-Agent") == USER_AGENT for _, h, _ in srv.hits)


def test_robots_crawl_delay_slows_us_down(tmp_path):
    routes = {"/robots.txt": Answer(200, "User-agent: *\nCrawl-delay: 1\n"),
              "/1.html": Answer(200, "1"), "/2.html": Answer(200, "2")}
    with LocalServer(routes) as srv, client(tmp_path) as c:
        c.get(srv.url + "/1.html")
        c.get(srv.url + "/2.html")
    t1, t2 = (t for p, _, t in srv.hits if p in ("/1.html", "/2.html"))
    assert t2 - t1 >= 0.95


def test_connection_refused_is_retried_then_reported(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client(tmp_path, retries=1, respect_robots=False) as c:
        with pytest.raises(FetchError, match="connection error") as err:
            c.get(f"http://127.0.0.1:{port}/x.html")
        assert c.stats["requests"] == 2
    assert err.value.status is None


def test_unreachable_robots_means_we_do_not_crawl(tmp_path):
    routes = {"/robots.txt": Answer(503, "down"), "/page.html": Answer(200, "p")}
    with LocalServer(routes) as srv, client(tmp_path, retries=1) as c:
        with pytest.raises(FetchError, match="robots.txt"):
            c.get(srv.url + "/page.html")
    assert srv.count("/page.html") == 0


def test_retry_after_header_forms():
    assert retry_after_s("7") == 7.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_s(later) <= 31
    past = format_datetime(datetime.now(timezone.utc) - timedelta(days=1), usegmt=True)
    assert retry_after_s(past) == 0.0


def test_corrupt_cache_entry_is_reported_with_its_file(tmp_path):
    url = "http://127.0.0.1:9/x.html"
    path = cache_path(tmp_path, url)
    path.parent.mkdir(parents=True)
    path.write_text('{"url": "http://elsewhere/", "status": 200}', encoding="utf-8")
    with pytest.raises(ValueError, match=str(path.name)):
        read_cached(tmp_path, url)
