"""Step 3 formatting: rows from real offline tokenizers, over-long records excluded (never cut),
external datasets (canonical JSONL, 2023-study JSON) in, files and statistics out."""
from __future__ import annotations

import json

import pytest

from helpers import formatting, models, paths, schemas, templates
from helpers.io import DataError, read_jsonl, write_json, write_jsonl
from helpers.models import get_spec

REPORTS = [
    {"id": "r1", "text": "I started Lipitor last month and now I have muscle pain.",
     "drugs": ["Lipitor"], "adverse_events": ["muscle pain"]},
    {"id": "r2", "text": "My mother takes something for her heart; since then she is dizzy. No nausea.",
     "drugs": [], "adverse_events": ["dizzy"]},
    {"id": "r3", "text": "On Zoloft and Ambien together I get headaches and vivid dreams.",
     "drugs": ["Zoloft", "Ambien"], "adverse_events": ["headaches", "vivid dreams"]},
]
LONG = {"id": "r-long", "text": "I took Nexium every day. " + "It was a long week. " * 200 + "Then a rash.",
        "drugs": ["Nexium"], "adverse_events": ["rash"]}


@pytest.fixture(scope="module")
def smol():
    return models.load_tokenizer("smollm2-135m"), get_spec("smollm2-135m")


def test_rows_have_the_contract_and_split_exactly(smol):
    tok, spec = smol
    rows, excluded = formatting.format_split(tok, spec, REPORTS, max_length=512)
    assert excluded == [] and [r["id"] for r in rows] == ["r1", "r2", "r3"]
    for row, rep in zip(rows, REPORTS):
        assert set(formatting.ROW_KEYS) <= set(row)
        assert row["text"] == row["prompt"] + row["completion"]
        assert row["completion"] == schemas.answer_json(rep) + "<|im_end|>\n"
        assert rep["text"] in row["prompt"]
        assert row["messages"][-1] == {"role": "assistant", "content": schemas.answer_json(rep)}
        ex = templates.tokenize_example(tok, spec, row["prompt"], row["completion"])
        assert row["n_tokens"] == len(ex["input_ids"]) == len(templates.encode(tok, row["text"]))
        assert row["n_prompt_tokens"] == ex["completion_mask"].index(1)
        masked = [i for i, m in zip(ex["input_ids"], ex["completion_mask"]) if m]
        assert tok.decode(masked) == schemas.answer_json(rep) + "<|im_end|>"


def test_long_records_are_listed_and_excluded_never_cut(smol):
    tok, spec = smol
    rows, excluded = formatting.format_split(tok, spec, REPORTS + [LONG], max_length=256)
    assert [r["id"] for r in rows] == ["r1", "r2", "r3"]
    assert len(excluded) == 1 and excluded[0]["id"] == "r-long"
    assert excluded[0]["n_tokens"] > 256 and "max_length 256" in excluded[0]["reason"]
    # with room for it, the same record is kept whole
    rows, excluded = formatting.format_split(tok, spec, [LONG], max_length=2048)
    assert not excluded and LONG["text"] in rows[0]["text"] and rows[0]["n_tokens"] > 256


def test_features_label_only_the_answer(smol):
    tok, spec = smol
    rows, _ = formatting.format_split(tok, spec, REPORTS, max_length=512)
    feats = formatting.features(tok, spec, rows)
    for row, rep, f in zip(rows, REPORTS, feats):
        assert f["id"] == row["id"] and len(f["input_ids"]) == row["n_tokens"]
        trained = [t for t in f["labels"] if t != -100]
        assert tok.decode(trained) == schemas.answer_json(rep) + "<|im_end|>"
        assert f["labels"][:row["n_prompt_tokens"]] == [-100] * row["n_prompt_tokens"]
    with pytest.raises(DataError, match="re-run 03_format"):
        formatting.features(tok, spec, [{**rows[0], "n_tokens": rows[0]["n_tokens"] + 1}])


def test_max_length_is_capped_by_the_model(smol):
    tok, spec = smol
    huge = {**LONG, "id": "r-huge", "text": LONG["text"] * 3}
    rows, excluded = formatting.format_split(tok, spec, [LONG, huge], max_length=10**6)
    assert [r["id"] for r in rows] == ["r-long"]
    assert excluded[0]["id"] == "r-huge" and excluded[0]["reason"].endswith(f"max_length {spec.max_seq_length}")
    assert formatting.length_stats([], [])["rows"] == 0


@pytest.mark.slow
def test_gemma3_rows_have_one_bos_and_an_answer_only_mask():
    tok, spec = models.load_tokenizer("gemma3-270m"), get_spec("gemma3-270m")
    rows, _ = formatting.format_split(tok, spec, REPORTS, max_length=512)
    for row, rep in zip(rows, REPORTS):
        assert row["text"].startswith("<bos><start_of_turn>user\n")
        assert row["completion"] == schemas.answer_json(rep) + "<end_of_turn>\n"
        ex = templates.tokenize_example(tok, spec, row["prompt"], row["completion"])
        assert ex["input_ids"][0] == tok.bos_token_id and ex["input_ids"].count(tok.bos_token_id) == 1
        masked = [i for i, m in zip(ex["input_ids"], ex["completion_mask"]) if m]
        assert tok.decode(masked) == schemas.answer_json(rep) + "<end_of_turn>"
        assert ex["input_ids"][len(masked) + row["n_prompt_tokens"]:] == tok("\n", add_special_tokens=False)["input_ids"]


# ---- inputs -------------------------------------------------------------------------------------
def test_default_inputs_are_the_synthetic_splits():
    files = formatting.input_files("smoke")
    assert files == {"train": paths.synthetic_dir("smoke") / "train.jsonl",
                     "val": paths.synthetic_dir("smoke") / "val.jsonl"}
    with pytest.raises(ValueError, match="train_file"):
        formatting.input_files("smoke", val_file="v.jsonl")


def test_2023_study_file_trains_with_a_carved_val_split(tmp_path):
    old = [schemas.to_2023_study(r) for r in REPORTS * 4]
    path = write_json(tmp_path / "study2023.json", old)
    splits = formatting.load_splits(formatting.input_files("x", train_file=path), seed=13)
    assert len(splits["train"]) + len(splits["val"]) == 12 and len(splits["val"]) == 1
    again = formatting.load_splits(formatting.input_files("x", train_file=path), seed=13)
    assert [r["id"] for r in again["val"]] == [r["id"] for r in splits["val"]]
    # the 2023-study bridge is lossless where the schemas overlap
    for item in old:
        assert schemas.to_2023_study(schemas.from_2023_study(json.loads(json.dumps(item)), 0)) == item


def test_canonical_train_and_val_files(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", REPORTS[:2])
    val = write_jsonl(tmp_path / "val.jsonl", REPORTS[2:])
    splits = formatting.load_splits(formatting.input_files("x", train, val), seed=1)
    assert [r["id"] for r in splits["train"]] == ["r1", "r2"] and [r["id"] for r in splits["val"]] == ["r3"]


def test_bad_inputs_name_the_problem(tmp_path):
    dup = write_jsonl(tmp_path / "val.jsonl", REPORTS[:1])
    train = write_jsonl(tmp_path / "train.jsonl", REPORTS)
    with pytest.raises(DataError, match="r1"):
        formatting.load_splits(formatting.input_files("x", train, dup), seed=1)
    with pytest.raises(FileNotFoundError, match="02_synthesize"):
        formatting.load_splits(formatting.input_files("x", tmp_path / "nope.jsonl"), seed=1)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "b", "text": "x", "drugs": "Lipitor", "adverse_events": []}])
    with pytest.raises(DataError, match="bad.jsonl"):
        formatting.load_splits({"train": bad, "val": None}, seed=1)


# ---- outputs ------------------------------------------------------------------------------------
def test_outputs_statistics_and_plot(smol, tmp_path, monkeypatch):
    monkeypatch.setenv("AE_STUDY_ROOT", str(tmp_path))
    tok, spec = smol
    formatted = {"train": formatting.format_split(tok, spec, REPORTS + [LONG], 256),
                 "val": formatting.format_split(tok, spec, REPORTS[:1], 256)}
    written = formatting.write_formatted("t", "smollm2-135m", formatted)
    files = formatting.output_files("t", "smollm2-135m")
    assert set(written) == {files["train"], files["val"], files["excluded"]}
    assert [r["id"] for r in read_jsonl(files["train"])] == ["r1", "r2", "r3"]
    assert read_jsonl(files["excluded"]) == [{**formatted["train"][1][0], "split": "train"}]
    assert formatting.read_formatted("t", "smollm2-135m", "val")[0]["id"] == "r1"
    table = formatting.length_table(formatted)
    assert list(table.index) == ["train", "val"]
    assert table.loc["train", "rows"] == 3 and table.loc["train", "excluded"] == 1
    assert table.loc["val", "max"] == formatted["val"][0][0]["n_tokens"]
    png = formatting.plot_lengths(formatted, 256, files["lengths_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smollm2_trains_on_formatted_rows_with_the_answer_only_loss(smol):
    import torch

    tok, spec = smol
    rows, _ = formatting.format_split(tok, spec, REPORTS[:1], max_length=512)
    feat = formatting.features(tok, spec, rows)[0]
    model = models.load_model("smollm2-135m")
    ids, labels = torch.tensor([feat["input_ids"]]), torch.tensor([feat["labels"]])
    out = model(input_ids=ids, labels=labels)
    # the loss is the mean cross-entropy of the next-token predictions on the answer + end-of-turn only
    logits, target = out.logits[0, :-1], labels[0, 1:]
    keep = target != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    assert torch.allclose(out.loss, manual, atol=1e-5) and int(keep.sum()) == sum(feat["completion_mask"])
    opt = torch.optim.SGD(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
