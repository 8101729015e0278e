"""A misbehaving chat-completions server and robots.txt: the teacher client and the polite HTTP
client never lose a run to one odd reply, never leak the API key and honour the server's pacing.
Waits are recorded (time.sleep patched), not timed."""
from __future__ import annotations

import json
import threading
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from helpers import http as H, schemas, synthesize as S, teacher as T

SECRET = "sk-very-secret-key-123456"


def completion(content: Any, usage: Any = None) -> dict[str, Any]:
    body = {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = usage
    return body


def good_content(seed: int) -> str:
    return json.dumps({"reports": [{"text": f"Since Alphazol (case {seed}) I get headaches every day.",
                                    "drugs": ["Alphazol"], "adverse_events": ["headaches"]}]})


Reply = tuple[int, dict[str, str], Any]


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script: a function of (n-th request, request body) -> reply."""
    script: Callable[[int, dict[str, Any], dict[str, str]], Reply] = lambda n, b, h: (500, {}, {})
    bodies: list[dict[str, Any]] = []
    lock = threading.Lock()

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            n = len(self.bodies)
            self.bodies.append(body)
        code, headers, obj = type(self).script(n, body, dict(self.headers))
        data = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    Scripted.bodies = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def sleeps(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(T.time, "sleep", lambda s: waits.append(s))
    return waits


def drugs():
    rec = {"name": "Alphazol", "generic_names": ["alphazoline"], "brand_names": ["Alphazol"],
           "drug_class": "x", "uses": ["arthritis"], "side_effects": {"common": ["headache"]},
           "missing_sections": [], "source": "test", "source_url": "", "fetched_at": "", "content_hash": ""}
    return S.prepare_drugs([schemas.validate_drug_record(rec)])


def cfg(url, tmp_path, **kw):
    base = dict(base_url=url, model="tiny", cache_dir=str(tmp_path / "cache"), backoff_s=0.01,
                concurrency=1, reports_per_request=1, max_retries=2, timeout_s=10)
    return T.TeacherConfig(**{**base, **kw})


@pytest.mark.parametrize("header,expected", [
    ("7", 7.0),
    ("3600", 60.0),                                  # capped at max_wait_s
    (None, 0.01),                                    # no hint: the backoff
])
def test_retry_after_on_429_is_honoured_and_capped(server, tmp_path, sleeps, header, expected):
    def script(n, body, headers):
        if n == 0:
            return 429, ({"Retry-After": header} if header else {}), {"error": "slow down"}
        return 200, {}, completion(good_content(body["seed"]))
    Scripted.script = staticmethod(script)
    reports, st = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    assert len(reports) == 1 and st.http_errors == 1
    assert [s for s in sleeps if s] == [pytest.approx(expected)]


def test_retry_after_as_an_http_date(server, tmp_path, sleeps):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)

    def script(n, body, headers):
        return (503, {"Retry-After": when}, "busy") if n == 0 else (200, {}, completion(good_content(1)))
    Scripted.script = staticmethod(script)
    T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    waits = [s for s in sleeps if s]
    assert len(waits) == 1 and 25 <= waits[0] <= 30


@pytest.mark.parametrize("odd", [
    completion([{"type": "text", "text": "hi"}]),            # content as a list
    completion({"reports": []}),                             # content as an object
    completion(None),                                        # no content
    completion(7),
])
def test_an_odd_reply_is_rejected_counted_and_the_run_goes_on(server, tmp_path, sleeps, odd):
    def script(n, body, headers):
        return (200, {}, odd) if n == 0 else (200, {}, completion(good_content(body["seed"])))
    Scripted.script = staticmethod(script)
    reports, st = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    assert len(reports) == 1 and st.invalid_replies == 1 and st.requests_ok == 1


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": "many", "completion_tokens": 5},
    {"prompt_tokens": 3, "completion_tokens": [1]},
    {"prompt_tokens": float("nan")},
    {"prompt_tokens": -4},
    "lots",
    [1, 2],
])
def test_usage_that_is_not_numbers_is_counted_not_fatal(server, tmp_path, sleeps, usage):
    Scripted.script = staticmethod(lambda n, body, h: (200, {}, completion(good_content(1), usage)))
    reports, st = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    assert len(reports) == 1 and st.odd_usage == 1 and st.prompt_tokens == 0


def test_the_api_key_never_reaches_an_error_message(server, tmp_path, sleeps, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def echo(n, body, headers):
        return 401, {}, {"error": f"bad key; you sent Authorization: {headers.get('Authorization')}",
                         "headers": headers}
    Scripted.script = staticmethod(echo)
    with pytest.raises(T.TeacherError) as err:
        T.generate(drugs(), 1, cfg(server, tmp_path), seed=1)
    assert "HTTP 401" in str(err.value)
    assert SECRET not in str(err.value) and "sk-very" not in str(err.value)
    assert T.redact(f"Bearer {SECRET} and {SECRET}", SECRET) == "Bearer *** and ***"
    assert T.redact('{"authorization": "Token abc123"}') == '{"authorization": "***"}'


def test_a_damaged_cache_file_is_fetched_again(server, tmp_path, sleeps):
    Scripted.script = staticmethod(lambda n, body, h: (200, {}, completion(good_content(body["seed"]))))
    first, _ = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    [cached] = list((tmp_path / "cache").rglob("*.json"))
    for damage in (b"{\"request\": {}, \"resp", b"[]", b'{"response": {"choices": []}}', b"\xff\xfe\x00"):
        cached.write_bytes(damage)
        again, st = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
        assert again == first and st.cache_damaged == 1 and st.http_requests == 1
        assert json.loads(cached.read_text())["response"]["choices"]


def test_response_format_json_schema_is_sent_and_replies_still_validated(server, tmp_path, sleeps):
    def script(n, body, h):
        if n == 0:   # schema-shaped but with a label that is not in the text: still checked
            return 200, {}, completion(json.dumps({"reports": [{"text": "Alphazol made me tired.",
                                                                 "drugs": ["Alphazol"],
                                                                 "adverse_events": ["rash"]}]}))
        return 200, {}, completion(good_content(body["seed"]))
    Scripted.script = staticmethod(script)
    reports, st = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=2)
    fmt = Scripted.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["reports"]["items"]["required"] == \
        ["text", "drugs", "adverse_events"]
    assert st.reports_dropped_ungrounded == 1 and len(reports) == 1 and st.structured_output


def test_a_server_refusing_response_format_gets_plain_requests(server, tmp_path, sleeps):
    def script(n, body, h):
        if "response_format" in body:
            return 400, {}, {"error": {"message": "response_format json_schema is not supported"}}
        return 200, {}, completion(good_content(body["seed"]))
    Scripted.script = staticmethod(script)
    reports, st = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    assert len(reports) == 1 and not st.structured_output
    assert ["response_format" in b for b in Scripted.bodies] == [True, False]
    # the cache key does not depend on the response format: a rerun is served from the cache
    again, st2 = T.generate(drugs(), 1, cfg(server, tmp_path), seed=1, max_rounds=1)
    assert again == reports and st2.cache_hits == 1 and len(Scripted.bodies) == 2


# ---- robots.txt ---------------------------------------------------------------------------------------
def test_fractional_crawl_delay_is_honoured():
    lines = ["User-agent: *", "Crawl-delay: 0.5", "Disallow: /private"]
    assert H.crawl_delay_for(lines, H.USER_AGENT) == 0.5
    assert H.crawl_delay_for(["User-agent: other", "Crawl-delay: 9", "", "User-agent: *",
                              "Crawl-delay: 1.5"], H.USER_AGENT) == 1.5
    assert H.crawl_delay_for(["User-agent: ae-extraction-study", "Crawl-delay: 2.25", "",
                              "User-agent: *", "Crawl-delay: 0.1"], H.USER_AGENT) == 2.25
    assert H.crawl_delay_for(["User-agent: *", "Crawl-delay: soon"], H.USER_AGENT) is None


def test_a_fractional_crawl_delay_paces_the_client(monkeypatch, tmp_path):
    c = H.PoliteClient(tmp_path, rate_limit_s=0.0)

    class Resp:
        status_code, text = 200, "User-agent: *\nCrawl-delay: 0.5\nDisallow: /private\n"
    monkeypatch.setattr(c, "_request", lambda url: Resp())
    assert c.allowed("http://h.test/public")
    assert c._host_delay("http://h.test/x") == 0.5


@pytest.mark.parametrize("path,allowed", [
    ("/private/x", False), ("/./private/x", False), ("/a/../private/x", False),
    ("//private/x", False), ("/%70rivate/x", False), ("/public/../private", False),
    ("/public/x", True), ("/privateer", False), ("/pub/./x", True),
])
def test_paths_are_normalised_before_robots_matching(monkeypatch, tmp_path, path, allowed):
    c = H.PoliteClient(tmp_path, rate_limit_s=0.0)

    class Resp:
        status_code, text = 200, "User-agent: *\nDisallow: /private\n"
    monkeypatch.setattr(c, "_request", lambda url: Resp())
    assert c.allowed("http://h.test" + path) is allowed
