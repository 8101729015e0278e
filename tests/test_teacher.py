"""Teacher client against a real OpenAI-compatible server started on 127.0.0.1 by the tests."""
from __future__ import annotations

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import dataset_card, schemas, synthesize as S, teacher as T
from helpers.io import DataError

VOCAB = ("garden", "Tuesday", "pharmacy", "weekend", "holiday", "office", "morning", "neighbour",
         "dog", "kitchen", "train", "letter", "doctor", "evening", "market", "bicycle")


def canned_reports(drug: str, seed: int) -> list[dict]:
    """What the fake teacher writes: exact, case-changed, fuzzy and ungrounded labels."""
    rng = random.Random(seed)
    ctx = lambda: " ".join(rng.choice(VOCAB) for _ in range(10))  # noqa: E731
    shared = f"Hello, I want to ask whether {drug} comes in a smaller pack. {ctx()}."
    return [
        {"text": f"I have been taking {drug} for my arthritis and now I get bad headaches and Nausea. "
                 f"No rash so far. {ctx()}.", "drugs": [drug], "adverse_events": ["headaches", "nausea"]},
        {"text": shared, "drugs": [drug], "adverse_events": []},
        {"text": shared.replace("Hello", "Hallo"), "drugs": [drug], "adverse_events": []},
        {"text": f"Since {drug} I have muscle pain in my legs. {ctx()}.", "drugs": [drug.lower()],
         "adverse_events": ["muscle pains"]},
        {"text": f"My mother on {drug} feels unwell. {ctx()}.", "drugs": [drug],
         "adverse_events": ["hepatotoxicity"]},
        {"text": 42, "drugs": []},
    ]


class FakeTeacher(BaseHTTPRequestHandler):
    calls: dict[str, int] = {}
    auth: list[str] = []
    lock = threading.Lock()

    def log_message(self, *a):  # keep test output quiet
        pass

    def _send(self, code: int, obj) -> None:
        body = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "no such route"})
        with self.lock:
            self.auth.append(self.headers.get("Authorization", ""))
        if req["model"] == "locked":
            return self._send(401, {"error": "invalid api key"})
        prompt = req["messages"][0]["content"]
        drug = re.search(r"involve the drug (\S+) \(", prompt).group(1)
        with self.lock:
            n = self.calls[drug] = self.calls.get(drug, 0) + 1
        if drug.startswith("Flaky") and n == 1:
            return self._send(500, {"error": "overloaded"})
        if drug.startswith("Broken"):
            content = "Sure! Here are some reports: {reports: [oops"
        else:
            content = json.dumps({"reports": canned_reports(drug, req["seed"])})
            if drug.startswith("Fenced"):
                content = "```json\n" + content + "\n```"
        self._send(200, {"id": "x", "object": "chat.completion", "model": req["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 50,
                                   "total_tokens": len(prompt.split()) + 50}})


@pytest.fixture()
def server():
    FakeTeacher.calls, FakeTeacher.auth = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeTeacher)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def drug(name, events=("headache", "nausea", "muscle pain")):
    return schemas.validate_drug_record({
        "name": name, "generic_names": [name.lower() + "ine"], "brand_names": [name], "drug_class": "x",
        "uses": ["arthritis"], "side_effects": {"common": list(events)}, "missing_sections": [],
        "source": "test", "source_url": "", "fetched_at": "", "content_hash": ""})


def cfg(url, tmp_path, **kw):
    base = dict(base_url=url, model="tiny-teacher", cache_dir=str(tmp_path / "cache"), backoff_s=0.01,
                concurrency=3, reports_per_request=6, max_retries=2, timeout_s=10)
    return T.TeacherConfig(**{**base, **kw})


def test_generate_grounds_dedupes_retries_and_counts(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    drugs = S.prepare_drugs([drug("Alphazol"), drug("Flakyvir"), drug("Brokenil"), drug("Fencedex")])
    reports, st = T.generate(drugs, 24, cfg(server, tmp_path), seed=7, max_rounds=1)
    assert st.requests_planned == 4 and st.requests_ok == 3 and st.requests_rejected == 1
    assert st.invalid_replies == 3                      # Brokenil: first try + 2 retries
    assert st.http_errors == 1                          # Flakyvir's 500, then retried
    assert st.reports_received == 18 and st.reports_bad_schema == 3
    assert st.labels_case >= 3 and st.labels_fuzzy >= 3 and st.labels_dropped == 3
    assert st.reports_dropped_ungrounded == 3 and st.near_duplicates_removed == 3
    assert st.reports_kept == len(reports) == 9
    assert 0.8 < st.grounding_rate < 1.0
    assert st.prompt_tokens > 0 and st.completion_tokens == 50 * 6
    for r in reports:
        S.check_report(r, r["id"])
    first = next(r for r in reports if "Nausea" in r["text"])
    assert first["adverse_events"] == ["headaches", "Nausea"]
    fuzzy = next(r for r in reports if "muscle pain" in r["text"])
    assert fuzzy["adverse_events"] == ["muscle pain"] and fuzzy["drugs"] == [fuzzy["meta"]["drug_names"][0]]
    assert set(FakeTeacher.auth) == {"Bearer sk-test-secret"}
    cached = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert "sk-test-secret" not in cached

    # a rerun is served from the cache (only the never-valid request goes out again) and is identical
    calls = dict(FakeTeacher.calls)
    again, st2 = T.generate(drugs, 24, cfg(server, tmp_path), seed=7, max_rounds=1)
    assert again == reports
    assert st2.cache_hits >= 6
    assert {k: v for k, v in FakeTeacher.calls.items() if not k.startswith("Broken")} == \
        {k: v for k, v in calls.items() if not k.startswith("Broken")}

    # further rounds top up what grounding and dedupe removed, keeping the first round's reports
    more, st3 = T.generate(drugs, 24, cfg(server, tmp_path), seed=7)
    assert st3.requests_planned > 4 and len(more) > len(reports) and more[:len(reports)] == reports


def test_refused_key_and_unreachable_server_fail_clearly(server, tmp_path):
    drugs = S.prepare_drugs([drug("Alphazol")])
    with pytest.raises(T.TeacherError, match="HTTP 401"):
        T.generate(drugs, 4, cfg(server, tmp_path, model="locked"), seed=1)
    with pytest.raises(T.TeacherError, match="all 1 requests failed"):
        T.generate(drugs, 4, cfg("http://127.0.0.1:9/v1", tmp_path, max_retries=1), seed=1)
    with pytest.raises(T.TeacherError, match="base_url"):
        T.TeacherConfig(base_url="", model="")


def test_llm_generator_builds_all_splits(server, tmp_path):
    recs = [drug(n) for n in ("Alphazol", "Betamab", "Gammaprid", "Deltavir", "Epsilonex")]
    params = {"run": "t", "seed": 3, "generator": "llm", "n_train": 4, "n_val": 2, "n_test": 2,
              "n_test_unseen": 2, "n_unseen_drugs": 1, "base_url": server, "teacher_model": "tiny",
              "concurrency": 2, "reports_per_request": 6}
    params_cfg = S.teacher_config(params)
    params_cfg.cache_dir = str(tmp_path / "c")
    splits, info = S.build_llm_splits(recs, {s: params[f"n_{s}"] for s in S.SPLITS}, 1, 3, params_cfg)
    assert {s: len(v) for s, v in splits.items()} == {"train": 4, "val": 2, "test": 2, "test_unseen": 2}
    assert info["teacher"]["grounding_rate"] < 1.0 and len(info["unseen_drugs"]) == 1
    paths = S.write_splits(splits, tmp_path / "out")
    assert len(paths) == 4
    card = dataset_card.dataset_card(splits, params, info)
    assert "## Teacher" in card and "grounding_rate" in card


def test_ground_item_keeps_located_labels_as_spans_and_drops_the_rest():
    text = "Since Lipitor I get Headaches, muscle pain in my legs and a headache-like pressure."
    item = {"text": text, "drugs": ["Lipitor", "Zocor"],
            "adverse_events": ["headaches", "muscle pains", "liver damage"]}
    rec, counts = T.ground_item(item, threshold=90)
    assert rec["drugs"] == ["Lipitor"]
    assert rec["adverse_events"] == ["Headaches", "muscle pain"]     # the report's own text
    assert counts == {"labels": 5, "exact": 1, "case": 1, "fuzzy": 1, "dropped": 2}
    for span in rec["spans"]:
        assert text[span["start"]:span["end"]] == span["text"]
    assert T.ground_item({"text": "I get ach", "drugs": [], "adverse_events": ["ache"]},
                         threshold=90)[1]["dropped"] == 1


def test_parse_reply_shapes():
    good = {"reports": [{"text": "t", "drugs": [], "adverse_events": []}]}
    assert T.parse_reply(json.dumps(good)) == good["reports"]
    assert T.parse_reply("```json\n" + json.dumps(good) + "\n```") == good["reports"]
    assert T.parse_reply("Here you go: " + json.dumps(good) + " Enjoy!") == good["reports"]
    assert T.parse_reply(json.dumps(good["reports"])) == good["reports"]
    for bad in ("not json", "{\"other\": 1}", ""):
        with pytest.raises(T.ReplyError):
            T.parse_reply(bad)
    assert T.check_item({"text": "x", "drugs": "Zoloft", "adverse_events": ["a", "A", " "]}) == \
        {"text": "x", "drugs": ["Zoloft"], "adverse_events": ["a"]}
    assert T.check_item({"text": "x", "adverse_events": [1]}) is None


def test_prompt_file_is_editable(tmp_path):
    d = S.prepare_drugs([drug("Alphazol")])[0]
    default = T.fill_teacher_prompt(T.load_prompt(), d, 3)
    assert "Alphazol" in default and "3 different reports" in default and "$" not in default
    custom = tmp_path / "p.txt"
    custom.write_text("Write $n reports about $drug ($side_effects).")
    assert T.fill_teacher_prompt(T.load_prompt(custom), d, 2) == \
        "Write 2 reports about Alphazol (headache; nausea; muscle pain)."
    custom.write_text("About $medicine")
    with pytest.raises(DataError, match="medicine"):
        T.load_prompt(custom)


def test_near_duplicates_removed():
    reps = [{"text": "I have a headache from Zoloft since Monday."},
            {"text": "I have a headache from Zoloft since monday!"},
            {"text": "Completely different report about Ambien."}]
    kept, n = T.remove_near_duplicates(reps, 92)
    assert n == 1 and [r["text"] for r in kept] == [reps[0]["text"], reps[2]["text"]]
