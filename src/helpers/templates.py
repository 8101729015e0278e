"""Chat templates: the official formats of every family, conversations for the task, and the
training text split into prompt and completion with a loss mask over the answer only.

Where a tokenizer carries its own chat template (SmolLM2, and every hub model at run time on a
GPU) that template is used. This module keeps a small registry of the *published* templates
(Jinja text exactly as in the families' tokenizer_config.json) for two uses:
- tokenizers that lack one (Gemma 3 270M ships as a base-model GGUF with no template embedded);
- tests that render each family's format without downloading its tokenizer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import jinja2
import jinja2.ext
import jinja2.sandbox

from . import task

# ---- the published templates ------------------------------------------------------------------
# google/gemma-3-*-it tokenizer_config.json (text part; image items kept as published).
GEMMA3 = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

# google/gemma-7b-it tokenizer_config.json: refuses a system turn.
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

# meta-llama/Llama-2-7b-chat-hf tokenizer_config.json (`\\n` is a Jinja escape inside the string).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# mistralai/Mistral-7B-Instruct-v0.2 tokenizer_config.json: no system role of its own; a leading
# system message is folded into the first user turn followed by a blank line.
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# HuggingFaceTB/SmolLM2-135M-Instruct (ChatML with a default system turn); the GGUF embeds it.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class FamilyFormat:
    """A family's published template and the special-token strings it is rendered with."""
    template: str
    bos_token: str
    eos_token: str
    starts_with_bos: bool = True     # ChatML (SmolLM2) has no BOS; every other family opens with one


TEMPLATES: dict[str, FamilyFormat] = {
    "smollm2": FamilyFormat(SMOLLM2, "<|im_start|>", "<|im_end|>", starts_with_bos=False),
    "gemma3": FamilyFormat(GEMMA3, "<bos>", "<eos>"),
    "gemma": FamilyFormat(GEMMA, "<bos>", "<eos>"),
    "llama2": FamilyFormat(LLAMA2, "<s>", "</s>"),
    "mistral": FamilyFormat(MISTRAL, "<s>", "</s>"),
    "llama3": FamilyFormat(LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
}


class TemplateError(ValueError):
    """A chat template that does not produce the expected prompt/answer/end-of-turn layout."""


# ---- rendering without a tokenizer (same Jinja set-up as transformers) ------------------------
def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def compile_template(template: str) -> jinja2.Template:
    """Compile a chat template the way transformers does (sandbox, trim/lstrip blocks, loop controls)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


class JinjaChat:
    """A tokenizer stand-in that only renders: `apply_chat_template(..., tokenize=False)` from a
    template string, so families whose tokenizer is not here can be rendered and tested."""

    def __init__(self, template: str, bos_token: str, eos_token: str):
        self.chat_template = template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._compiled = compile_template(template)

    @classmethod
    def for_family(cls, name: str) -> "JinjaChat":
        """The published format of a registry template (`TEMPLATES` key)."""
        fmt = template_format(name)
        return cls(fmt.template, fmt.bos_token, fmt.eos_token)

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], tokenize: bool = False,
                            add_generation_prompt: bool = False, **kwargs: Any) -> str:
        if tokenize:
            raise TypeError("JinjaChat renders text only; use a real tokenizer to tokenize")
        return self._compiled.render(messages=list(messages), bos_token=self.bos_token,
                                     eos_token=self.eos_token,
                                     add_generation_prompt=add_generation_prompt, **kwargs)


def template_format(name: str) -> FamilyFormat:
    """A registry template by key; unknown keys name the known ones."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def install_chat_template(tokenizer: Any, spec: Any) -> Any:
    """Give the tokenizer the spec's registry template, or its family's published one if it has none."""
    if spec.template is not None:
        tokenizer.chat_template = template_format(spec.template).template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template_format(spec.family).template
    return tokenizer


# ---- conversations for the task ---------------------------------------------------------------
def build_messages(spec: Any, report_text: str, answer: str | None = None,
                   system: str | None = None) -> list[dict[str, str]]:
    """The task as chat messages: (system,) user instruction + report, (assistant answer).
    Families without a system role get the system text folded into the first user turn,
    followed by a blank line, as Gemma 3's and Mistral's own templates fold it."""
    user = task.user_message(report_text)
    messages: list[dict[str, str]] = []
    if system:
        if spec.system_role:
            messages.append({"role": "system", "content": system})
        else:
            user = f"{system}\n\n{user}"
    messages.append({"role": "user", "content": user})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def render_prompt(tokenizer: Any, spec: Any, report_text: str, system: str | None = None) -> str:
    """The generation prompt: everything up to and including the assistant header."""
    return tokenizer.apply_chat_template(build_messages(spec, report_text, system=system),
                                         tokenize=False, add_generation_prompt=True)


def _completion_pattern(answer: str, eot: str) -> re.Pattern[str]:
    """What the template may put around the answer: one optional space before, one optional space
    between answer and end-of-turn (Llama-2), and only whitespace after the end-of-turn."""
    return re.compile(r"\A ?" + re.escape(answer) + r" ?" + re.escape(eot) + r"\s*\Z")


def render_training(tokenizer: Any, spec: Any, report_text: str, answer: str,
                    system: str | None = None) -> dict[str, Any]:
    """The full training conversation split at the assistant header: text == prompt + completion,
    completion == answer + end-of-turn (+ what the template writes after the turn).
    Raises TemplateError when the template breaks that layout (e.g. a missing end-of-turn)."""
    messages = build_messages(spec, report_text, answer=answer, system=system)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    prompt = render_prompt(tokenizer, spec, report_text, system=system)
    if not text.startswith(prompt):
        raise TemplateError(f"{spec.key}: the generation prompt is not a prefix of the full conversation "
                            f"(prompt ends {prompt[-40:]!r}, text has {text[len(prompt) - 40:len(prompt)]!r})")
    completion = text[len(prompt):]
    if not _completion_pattern(answer, spec.eot).match(completion):
        raise TemplateError(f"{spec.key}: the assistant turn must be the answer followed by "
                            f"{spec.eot!r}; the template rendered {completion[:80]!r}...{completion[-40:]!r}")
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos + bos):
        raise TemplateError(f"{spec.key}: the rendered text starts with a doubled BOS {bos!r}")
    if bos and TEMPLATES[spec.family].starts_with_bos and not text.startswith(bos):
        raise TemplateError(f"{spec.key}: the rendered text must open with BOS {bos!r}, got {text[:20]!r}")
    return {"messages": messages, "prompt": prompt, "completion": completion, "text": text}


# ---- tokens and the loss mask -----------------------------------------------------------------
def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered chat text. Every template here writes its own BOS (or, ChatML, has
    none), so the tokenizer must not add another: add_special_tokens=False, as
    apply_chat_template(tokenize=True) does."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eot_token_id(tokenizer: Any, spec: Any) -> int:
    """The id of the family's end-of-turn token; it must be a single token."""
    ids = tokenizer(spec.eot, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise TemplateError(f"{spec.key}: end-of-turn {spec.eot!r} is not one token for this tokenizer "
                            f"(got {ids})")
    return int(ids[0])


def tokenize_example(tokenizer: Any, spec: Any, prompt: str, completion: str) -> dict[str, list[int]]:
    """input_ids, attention_mask and completion_mask of prompt + completion; the mask is 1 exactly
    on the answer tokens through the end-of-turn token (0 on the prompt and anything after)."""
    ids = encode(tokenizer, prompt + completion)
    prompt_ids = encode(tokenizer, prompt)
    n_prompt = len(prompt_ids)
    if ids[:n_prompt] != prompt_ids:
        raise TemplateError(f"{spec.key}: tokens of the prompt change when the answer follows it "
                            f"(a token spans the assistant header); training and generation would differ")
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is not None and len(ids) > 1 and ids[0] == bos_id and ids[1] == bos_id:
        raise TemplateError(f"{spec.key}: doubled BOS at the start of the tokenized example")
    eot_id = eot_token_id(tokenizer, spec)
    try:
        end = ids.index(eot_id, n_prompt)
    except ValueError:
        raise TemplateError(f"{spec.key}: no end-of-turn token {spec.eot!r} after the prompt") from None
    if end == n_prompt:
        raise TemplateError(f"{spec.key}: the completion has no answer tokens before {spec.eot!r}")
    mask = [0] * n_prompt + [1] * (end + 1 - n_prompt) + [0] * (len(ids) - end - 1)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "completion_mask": mask}
