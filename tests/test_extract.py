"""The extractor command: every input kind it reads, bad records reported with file and line and
skipped, the run's settings; and (slow) its predictions equal step 5's for the same adapter."""
from __future__ import annotations

import io
import json

import pytest

from helpers import extract
from helpers.io import write_json

GOOD = {"id": "a1", "text": "Zoloft gave me a dry mouth.", "drugs": ["Zoloft"], "adverse_events": ["a dry mouth"]}


def _jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_bad_lines_are_reported_with_file_and_line_and_the_rest_read(tmp_path):
    f = _jsonl(tmp_path / "in.jsonl", [
        json.dumps(GOOD),
        '{"id": "a2", "text": "broken',                                   # invalid JSON
        json.dumps({"id": "a3", "drugs": []}),                            # no text
        "",
        json.dumps({"text": "No labels here, Ambien made me dizzy."}),    # labels optional, id from the line
        json.dumps({"input": "Lipitor, muscle pain.", "output": '{"drug_name": "Lipitor", "adverse_events": []}'}),
        json.dumps({"id": "a1", "text": "the same id again"}),            # duplicate id
    ])
    got = extract.read_inputs(str(f))
    assert [r["id"] for r in got.reports] == ["a1", "in-5", "in-6"]
    assert got.reports[1]["drugs"] == [] and got.reports[2]["drugs"] == ["Lipitor"]
    assert len(got.problems) == 3
    assert got.problems[0].startswith(f"{f}:2: invalid JSON")
    assert got.problems[1].startswith(f"{f}:3: ") and "'text'" in got.problems[1]
    assert "'a1' appears again" in got.problems[2]


def test_stdin_and_text_lines_are_one_report_per_line(tmp_path):
    got = extract.read_inputs("-", io.StringIO("I took Nexium and got a rash.\n\n" + json.dumps(GOOD) + "\n"))
    assert [(r["id"], r["text"]) for r in got.reports] == [("stdin-1", "I took Nexium and got a rash."),
                                                           ("a1", GOOD["text"])]
    txt = tmp_path / "mail.txt"
    txt.write_text("First report.\nSecond report.\n", encoding="utf-8")
    assert [r["id"] for r in extract.read_inputs(str(txt)).reports] == ["mail-1", "mail-2"]


def test_a_folder_reads_txt_files_one_report_each_and_jsonl_files(tmp_path):
    (tmp_path / "b.txt").write_text("Humira, headache.\nstill the same report", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    _jsonl(tmp_path / "c.jsonl", [json.dumps(GOOD)])
    got = extract.read_inputs(str(tmp_path))
    assert [r["id"] for r in got.reports] == ["b", "a1"]
    assert got.reports[0]["text"] == "Humira, headache.\nstill the same report"
    assert got.problems == [f"{tmp_path / 'empty.txt'}: empty report"]


def test_cadec_folder_skips_a_post_whose_annotations_are_broken(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "original").mkdir()
    (tmp_path / "text" / "p1.txt").write_text("Lipitor made me a bit drowsy.", encoding="utf-8")
    (tmp_path / "original" / "p1.ann").write_text("T1\tDrug 0 7\tLipitor\nT2\tADR 18 28\tbit drowsy\n",
                                                  encoding="utf-8")
    (tmp_path / "text" / "p2.txt").write_text("Voltaren, stomach ache.", encoding="utf-8")
    (tmp_path / "original" / "p2.ann").write_text("T1\tDrug zero 8\tVoltaren\n", encoding="utf-8")
    got = extract.read_inputs(str(tmp_path))
    assert [r["id"] for r in got.reports] == ["p1"] and got.reports[0]["drugs"] == ["Lipitor"]
    assert len(got.problems) == 1 and "p2.ann:1" in got.problems[0] and "bad offsets" in got.problems[0]


def test_ade_file_skips_a_malformed_line(tmp_path):
    rel = tmp_path / "DRUG-AE.rel"
    rel.write_text("1|Aspirin caused gastric bleeding.|gastric bleeding|100|116|Aspirin|85|92\n"
                   "2|only three|fields\n"
                   "3|Nausea after metformin.|Nausea|10|16|metformin|23|32\n", encoding="utf-8")
    got = extract.read_inputs(str(rel))
    assert [r["text"] for r in got.reports] == ["Aspirin caused gastric bleeding.", "Nausea after metformin."]
    assert len(got.problems) == 1 and got.problems[0].startswith(f"{rel}:2: expected 8")


def test_model_argument_and_missing_input(tmp_path):
    assert extract.resolve_model("cpu/smollm2-135m") == ("cpu", "smollm2-135m")
    adapter = tmp_path / "models" / "smoke" / "smollm2-135m"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    assert extract.resolve_model(str(adapter)) == ("smoke", "smollm2-135m")
    with pytest.raises(ValueError, match="RUN/MODEL"):
        extract.resolve_model("smollm2-135m")
    assert extract.main(["--model", "cpu/smollm2-135m", str(tmp_path / "nope.jsonl")]) == 1


def test_no_readable_report_stops_before_loading_a_model(tmp_path, capsys):
    f = _jsonl(tmp_path / "bad.jsonl", ["{oops", "[1, 2]"])
    assert extract.main(["--model", "cpu/smollm2-135m", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}:1: invalid JSON" in err and f"{f}:2: expected a JSON object" in err
    assert "no readable reports" in err


def test_settings_come_from_the_runs_05_manifest_else_its_profile(tmp_path, monkeypatch):
    from tiny_adapter import scratch_root

    from helpers import paths
    scratch_root(tmp_path, monkeypatch)
    settings, source = extract.run_settings("cpu", "smollm2-135m")
    assert source == "configs/cpu.yaml" and settings["constrained"] == "spans"
    write_json(paths.step_manifest("05_infer", "cpu", "smollm2-135m"),
               {"params": {"constrained": "schema", "batch_size": 2, "max_new_tokens": 50}})
    settings, source = extract.run_settings("cpu", "smollm2-135m")
    assert source.endswith("manifest-smollm2-135m.json")
    assert (settings["constrained"], settings["batch_size"], settings["max_new_tokens"]) == ("schema", 2, 50)
    assert extract.run_settings("no-such-run", "smollm2-135m") == (extract.SETTINGS, "defaults")


# ---- with a real (tiny) adapter -------------------------------------------------------------------
@pytest.mark.slow
def test_extract_equals_step5_predictions_and_skips_a_malformed_line(tmp_path, monkeypatch, capsys):
    from tiny_adapter import MODEL, reports, scratch_root, train_tiny_adapter

    from helpers import infer, models, paths
    scratch_root(tmp_path, monkeypatch)
    adapter = train_tiny_adapter("t")
    data = reports(10, 20)
    lines = [json.dumps(r) for r in data]
    lines.insert(3, '{"id": "bad", "text": ')
    src = _jsonl(tmp_path / "reports.jsonl", lines)
    out = tmp_path / "pred.jsonl"
    args = ["--model", f"t/{MODEL}", str(src), "-o", str(out), "--constrained", "spans", "--batch-size", "4",
            "--max-new-tokens", "64", "--no-progress"]
    assert extract.main(args) == 0
    err = capsys.readouterr().err
    assert f"{src}:4: invalid JSON" in err and "10 predictions" in err
    got = [json.loads(line) for line in out.read_text().splitlines()]
    # what 05_infer does for the same adapter and settings
    tok = models.set_padding_side(models.load_tokenizer(MODEL), "generation")
    net = infer.apply_adapter(models.load_model(MODEL), adapter, merge=True)
    want = infer.predict(net, tok, models.get_spec(MODEL), data, batch_size=4, max_new_tokens=64,
                         constrained="spans", system=infer.system_name(MODEL, "lora"),
                         adapter=paths.rel(adapter), progress=False)
    assert [json.loads(json.dumps(r)) for r in want] == got
    assert all(r["parse_ok"] for r in got) and got[0]["adapter"] == f"artifacts/models/t/{MODEL}"
