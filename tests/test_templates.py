"""Chat templates: every family's rendering equals its published format written out literally here;
prompt + completion == full text; the loss mask covers exactly the answer and end-of-turn;
broken templates are caught."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from helpers import task, templates
from helpers.models import REGISTRY, get_spec
from helpers.templates import JinjaChat, TemplateError

REPORT = "Started Lipitor 20 mg in May. Two weeks later: muscle pain and dark urine.\nNo fever."
ANSWER = '{"drugs": ["Lipitor"], "adverse_events": ["muscle pain", "dark urine"]}'
SYSTEM = "You are a pharmacovigilance assistant."
U = task.user_message(REPORT)
SMOL_SYS = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

KEY_OF = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m", "gemma": "gemma-7b-it",
          "llama2": "llama-2-7b-chat", "mistral": "mistral-7b-instruct-v0.2", "llama3": "llama-3-8b-instruct"}

# The published formats, written out by hand: (prompt, completion) without a system text.
PUBLISHED = {
    "smollm2": (f"<|im_start|>system\n{SMOL_SYS}<|im_end|>\n<|im_start|>user\n{U}<|im_end|>\n"
                f"<|im_start|>assistant\n", f"{ANSWER}<|im_end|>\n"),
    "gemma3": (f"<bos><start_of_turn>user\n{U}<end_of_turn>\n<start_of_turn>model\n", f"{ANSWER}<end_of_turn>\n"),
    "gemma": (f"<bos><start_of_turn>user\n{U}<end_of_turn>\n<start_of_turn>model\n", f"{ANSWER}<end_of_turn>\n"),
    "llama2": (f"<s>[INST] {U} [/INST]", f" {ANSWER} </s>"),
    "mistral": (f"<s> [INST] {U} [/INST]", f" {ANSWER}</s>"),
    "llama3": (f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{U}<|eot_id|>"
               f"<|start_header_id|>assistant<|end_header_id|>\n\n", f"{ANSWER}<|eot_id|>"),
}
# ... and the prompt with a system text (folded into the user turn where the family has no system role).
PUBLISHED_SYSTEM_PROMPT = {
    "smollm2": f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{U}<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": f"<bos><start_of_turn>user\n{SYSTEM}\n\n{U}<end_of_turn>\n<start_of_turn>model\n",
    "gemma": f"<bos><start_of_turn>user\n{SYSTEM}\n\n{U}<end_of_turn>\n<start_of_turn>model\n",
    "llama2": f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{U} [/INST]",
    "mistral": f"<s> [INST] {SYSTEM}\n\n{U} [/INST]",
    "llama3": (f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>"
               f"<|start_header_id|>user<|end_header_id|>\n\n{U}<|eot_id|>"
               f"<|start_header_id|>assistant<|end_header_id|>\n\n"),
}
FAMILIES = sorted(PUBLISHED)


def test_every_registry_family_has_a_published_format_here():
    assert {s.family for s in REGISTRY.values()} == set(FAMILIES) == set(templates.TEMPLATES)


@pytest.mark.parametrize("family", FAMILIES)
def test_rendering_equals_the_published_format(family):
    spec, chat = get_spec(KEY_OF[family]), JinjaChat.for_family(family)
    prompt, completion = PUBLISHED[family]
    assert templates.render_prompt(chat, spec, REPORT) == prompt
    out = templates.render_training(chat, spec, REPORT, ANSWER)
    assert out["text"] == prompt + completion
    assert out["prompt"] == prompt and out["completion"] == completion
    assert out["prompt"] + out["completion"] == out["text"]
    assert out["messages"][-1] == {"role": "assistant", "content": ANSWER}


@pytest.mark.parametrize("family", FAMILIES)
def test_system_text_placement_is_the_published_one(family):
    spec, chat = get_spec(KEY_OF[family]), JinjaChat.for_family(family)
    assert templates.render_prompt(chat, spec, REPORT, system=SYSTEM) == PUBLISHED_SYSTEM_PROMPT[family]
    out = templates.render_training(chat, spec, REPORT, ANSWER, system=SYSTEM)
    assert out["completion"] == PUBLISHED[family][1]
    roles = [m["role"] for m in out["messages"]]
    assert roles == (["system", "user", "assistant"] if spec.system_role else ["user", "assistant"])


@pytest.mark.parametrize("family", ["gemma3", "mistral"])
def test_folding_matches_what_the_official_template_does_with_a_system_turn(family):
    spec, chat = get_spec(KEY_OF[family]), JinjaChat.for_family(family)
    official = chat.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": U}],
                                        add_generation_prompt=True)
    assert templates.render_prompt(chat, spec, REPORT, system=SYSTEM) == official


def test_gemma_7b_template_refuses_a_system_turn_so_we_never_send_one():
    chat = JinjaChat.for_family("gemma")
    with pytest.raises(Exception, match="System role not supported"):
        chat.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": U}])
    assert not get_spec("gemma-7b-it").system_role


def test_jinja_environment_handles_escapes_like_transformers():
    # `\\n` inside a Jinja string literal is a newline (Llama-2's <<SYS>> block relies on it)
    text = JinjaChat("{{ 'a\\nb' }}", "<s>", "</s>").apply_chat_template([])
    assert text == "a\nb"


# ---- broken templates must fail -----------------------------------------------------------------
BROKEN = {
    "missing end-of-turn": ("gemma", "'<end_of_turn>\\n' }}{% endfor %}", "'\\n' }}{% endfor %}"),
    "model header glued to end-of-turn (seed 04)": ("gemma", "{{'<start_of_turn>model\\n'}}",
                                                     "{{'<end_of_turn>model'}}"),
    "literal backslash-n in the header": ("llama3", "<|end_header_id|>\\n\\n' }}", "<|end_header_id|>\\\\n' }}"),
    "eos dropped after the answer": ("llama2", "' ' + eos_token", "' '"),
    "[s] instead of <s>": ("mistral", "{{- bos_token }}", "{{- '[s]' }}"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_template_is_caught(name):
    family, good, bad = BROKEN[name]
    fmt = templates.TEMPLATES[family]
    assert good in fmt.template, "the mutation must apply"
    chat = JinjaChat(fmt.template.replace(good, bad), fmt.bos_token, fmt.eos_token)
    spec = get_spec(KEY_OF[family])
    with pytest.raises(TemplateError):
        templates.render_training(chat, spec, REPORT, ANSWER)


def test_install_chat_template_uses_registry_or_keeps_own():
    class Tok:
        chat_template = "own"
    assert templates.install_chat_template(Tok(), get_spec("smollm2-135m")).chat_template == "own"
    assert templates.install_chat_template(Tok(), get_spec("gemma3-270m")).chat_template == templates.GEMMA3
    bare = Tok()
    bare.chat_template = None
    assert templates.install_chat_template(bare, get_spec("llama-2-7b-chat")).chat_template == templates.LLAMA2
    with pytest.raises(KeyError, match="known"):
        templates.template_format("chatml-typo")


# ---- token masks with a small real BPE tokenizer carrying each family's special tokens ---------------
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
            "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|im_start|>", "<|im_end|>"]


def toy_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the rendered examples, with the family's markers as special tokens."""
    fmt = templates.TEMPLATES[family]
    tok = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([p + c for p, c in PUBLISHED.values()] * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=fmt.bos_token, eos_token=fmt.eos_token,
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = fmt.template
    return fast


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_covers_exactly_answer_and_end_of_turn(family):
    spec, tok = get_spec(KEY_OF[family]), toy_tokenizer(family)
    out = templates.render_training(tok, spec, REPORT, ANSWER)
    ex = templates.tokenize_example(tok, spec, out["prompt"], out["completion"])
    ids, mask = ex["input_ids"], ex["completion_mask"]
    assert len(ids) == len(mask) == len(ex["attention_mask"])
    n_prompt = len(templates.encode(tok, out["prompt"]))
    assert mask[:n_prompt] == [0] * n_prompt
    masked = [i for i, m in zip(ids, mask) if m]
    assert masked[-1] == tok.convert_tokens_to_ids(spec.eot)
    assert tok.decode(masked).strip() == f"{ANSWER}{' ' if family == 'llama2' else ''}{spec.eot}"
    # the masked tokens are one contiguous run and nothing after the end-of-turn is trained on
    first, last = mask.index(1), len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first:last + 1]) and not any(mask[last + 1:])
    # BOS exactly once where the family has one
    if family != "smollm2":
        assert ids.count(tok.bos_token_id) == 1
        assert ids[0] == tok.bos_token_id


def test_tokenizing_does_not_double_the_bos_even_when_the_tokenizer_adds_one():
    spec, tok = get_spec("gemma3-270m"), toy_tokenizer("gemma3")
    from tokenizers import processors
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", bos)])
    assert tok("x")["input_ids"][0] == bos, "this tokenizer adds a BOS on its own"
    out = templates.render_training(tok, spec, REPORT, ANSWER)
    ex = templates.tokenize_example(tok, spec, out["prompt"], out["completion"])
    assert ex["input_ids"].count(bos) == 1


def test_missing_end_of_turn_in_the_tokens_is_an_error():
    spec, tok = get_spec("gemma3-270m"), toy_tokenizer("gemma3")
    prompt, _ = PUBLISHED["gemma3"]
    with pytest.raises(TemplateError, match="end-of-turn"):
        templates.tokenize_example(tok, spec, prompt, ANSWER + "\n")


def test_doubled_bos_is_an_error():
    spec, tok = get_spec("gemma3-270m"), toy_tokenizer("gemma3")
    prompt, completion = PUBLISHED["gemma3"]
    with pytest.raises(TemplateError, match="BOS"):
        templates.tokenize_example(tok, spec, "<bos>" + prompt, completion)
