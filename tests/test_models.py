"""The model registry and offline loading: GGUF packages, the cached plain copy, tokenizer set-up."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import models, paths, templates
from helpers.models import REGISTRY, get_spec

PAPER = ("gemma-7b-it", "llama-2-7b-chat", "mistral-7b-instruct-v0.2", "llama-3-8b-instruct")
OFFLINE = ("smollm2-135m", "gemma3-270m")


def test_registry_has_the_offline_and_paper_models():
    assert set(OFFLINE + PAPER) <= set(REGISTRY)
    for key, spec in REGISTRY.items():
        assert spec.key == key
        assert spec.family in templates.TEMPLATES
        assert spec.template is None or spec.template in templates.TEMPLATES
        assert isinstance(spec.max_seq_length, int) and spec.max_seq_length > 0
        assert spec.eot
    for key in OFFLINE:
        s = get_spec(key)
        assert s.offline and s.gguf_package and s.gguf_module and s.gguf_file.endswith(".gguf")
    for key in PAPER:
        s = get_spec(key)
        assert s.source == "hub" and s.template is None and s.unsloth_id.endswith("-bnb-4bit")


def test_paper_ids_are_the_published_ones():
    assert get_spec("gemma-7b-it").hub_id == "google/gemma-7b-it"
    assert get_spec("llama-2-7b-chat").unsloth_id == "unsloth/llama-2-7b-chat-bnb-4bit"
    assert get_spec("mistral-7b-instruct-v0.2").hub_id == "mistralai/Mistral-7B-Instruct-v0.2"
    assert get_spec("llama-3-8b-instruct").unsloth_id == "unsloth/llama-3-8b-Instruct-bnb-4bit"


def test_system_role_and_eot_agree_with_the_published_templates():
    # families whose template takes a system turn as its own block, and the token closing a turn
    assert {k: get_spec(k).system_role for k in PAPER + OFFLINE} == {
        "gemma-7b-it": False, "llama-2-7b-chat": True, "mistral-7b-instruct-v0.2": False,
        "llama-3-8b-instruct": True, "smollm2-135m": True, "gemma3-270m": False}
    for key in PAPER + OFFLINE:
        spec = get_spec(key)
        fmt = templates.TEMPLATES[spec.family]
        assert spec.eot in fmt.template or spec.eot == fmt.eos_token


def test_registry_file_with_a_wrong_field_names_the_file_the_model_and_the_field(tmp_path):
    text = models.REGISTRY_FILE.read_text(encoding="utf-8")
    bad = tmp_path / "models.yaml"
    bad.write_text(text.replace("  max_seq_length: 2048\n", "  max_seq_len: 2048\n", 1), encoding="utf-8")
    with pytest.raises(ValueError, match=r"models.yaml: model 'smollm2-135m': unknown fields \['max_seq_len'\], "
                                         r"missing fields \['max_seq_length'\]"):
        models.read_registry(bad)
    assert models.read_registry(models.REGISTRY_FILE) == REGISTRY


def test_unknown_key_names_the_known_ones():
    with pytest.raises(KeyError, match="smollm2-135m") as err:
        get_spec("gpt-5")
    assert "gpt-5" in str(err.value)


def test_specs_are_immutable():
    with pytest.raises(Exception):
        get_spec("smollm2-135m").max_seq_length = 10


def test_gguf_files_come_from_their_packages():
    for key in OFFLINE:
        path = models.gguf_path(get_spec(key))
        assert path.name == get_spec(key).gguf_file and path.stat().st_size > 50_000_000
    with pytest.raises(ValueError, match="hub model"):
        models.gguf_path(get_spec("gemma-7b-it"))


def test_publish_is_all_or_nothing(tmp_path):
    target = tmp_path / "plain"
    target.mkdir()
    (target / "half-written.bin").write_text("x")          # a crash left an unfinished folder
    tmp = tmp_path / ".plain.new"
    tmp.mkdir()
    (tmp / "model.safetensors").write_text("weights")
    (tmp / models.DONE).write_text("{}")
    models._publish(tmp, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(["model.safetensors", models.DONE])
    assert not tmp.exists()
    # a second writer that finished later keeps the first finished copy and drops its own
    tmp2 = tmp_path / ".plain.other"
    tmp2.mkdir()
    (tmp2 / models.DONE).write_text('{"other": 1}')
    models._publish(tmp2, target)
    assert (target / models.DONE).read_text() == "{}" and not tmp2.exists()


def test_padding_side_helper():
    class Tok:
        padding_side = "right"
    assert models.set_padding_side(Tok(), "generation").padding_side == "left"
    assert models.set_padding_side(Tok(), "training").padding_side == "right"
    with pytest.raises(ValueError):
        models.set_padding_side(Tok(), "sideways")


# ---- real offline tokenizers (cached after the first build) --------------------------------------
@pytest.fixture(scope="module")
def smol_tok():
    return models.load_tokenizer("smollm2-135m")


def test_smollm2_tokenizer_carries_the_published_chatml_template(smol_tok):
    assert smol_tok.chat_template == templates.SMOLLM2
    assert smol_tok.pad_token not in (None, "<|im_end|>")      # padding never looks like an end-of-turn
    assert smol_tok.padding_side == "right"
    assert (paths.model_cache_dir("smollm2-135m") / "tokenizer" / models.DONE).exists() or \
        (paths.model_cache_dir("smollm2-135m") / "plain" / models.DONE).exists()


@pytest.mark.slow
def test_gemma3_gguf_has_no_template_and_gets_the_official_one():
    from gguf import GGUFReader
    reader = GGUFReader(str(models.gguf_path(get_spec("gemma3-270m"))))
    assert not any(k.startswith("tokenizer.chat_template") for k in reader.fields)
    tok = models.load_tokenizer("gemma3-270m")
    assert tok.chat_template == templates.GEMMA3
    assert tok.bos_token == "<bos>" and tok.pad_token == "<pad>"
    assert tok("<start_of_turn>", add_special_tokens=False)["input_ids"] == [105]
    assert tok("<end_of_turn>", add_special_tokens=False)["input_ids"] == [106]


@pytest.mark.slow
def test_plain_copy_equals_the_dequantized_gguf_model():
    import torch
    from transformers import AutoModelForCausalLM

    spec = get_spec("smollm2-135m")
    model = models.load_model("smollm2-135m")
    folder = models.plain_copy("smollm2-135m")
    marker = json.loads((folder / models.DONE).read_text())
    assert marker["gguf_file"] == spec.gguf_file and (folder / "model.safetensors").exists()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    gguf = models.gguf_path(spec)
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([[1, 9690, 198, 504, 2134, 28, 1]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("system", [None, "Answer in JSON."])
def test_plain_jinja_rendering_matches_transformers_on_the_real_tokenizer(smol_tok, system):
    # the tests render the GPU families with templates.JinjaChat: it must agree with transformers
    spec = get_spec("smollm2-135m")
    chat = templates.JinjaChat(smol_tok.chat_template, smol_tok.bos_token, smol_tok.eos_token)
    msgs = templates.build_messages(spec, "Took Crestor, got cramps.", answer='{"drugs": []}', system=system)
    for messages, gen in ((msgs, False), (msgs[:-1], True)):
        assert chat.apply_chat_template(messages, add_generation_prompt=gen) == \
            smol_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
