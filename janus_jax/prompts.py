"""The prompt templates a Janus model is trained and prompted with, built from token pieces so the loss
mask is exact.

Two templates (`data.template`, recorded with a run and written into exports as the tokenizer's
`chat_template`):

  mistral_inst  `<s>[INST] {system}\\n{prompt} [/INST]{response}</s>`: the Janus SFT format (axolotl configs,
                the Janus inference code) and janus-jax's default.
  chatml        `<s><|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{prompt}<|im_end|>\\n`
                `<|im_start|>assistant\\n{response}<|im_end|></s>`: the format of the released Janus+DPO and
                Janus+ORPO (axolotl `chatml.argilla` / `chat_template: chatml`). The system turn is left out
                when the system message is empty. The ChatML markers are plain text to the 32k Mistral
                tokenizer (the released models added no tokens), so no embedding grows.

Sequences are assembled as `[BOS] + encode(prompt part) + encode(response + suffix) + [EOS]`, never by
searching strings, so the prompt part of a training example is token-for-token what sampling and serving
feed the model, and the loss mask covers exactly the response tokens (with ChatML's `<|im_end|>`) and the
EOS. The response is encoded on its own, so it starts with SentencePiece's word boundary; the Jinja
templates put a space before each reply so that transformers' `apply_chat_template` gives the same ids.

In `mistral_inst` the user turn is `(system + "\\n" + prompt).strip()`, as in the Janus inference code; with
`system == ""` it is the bare prompt, in training and at inference alike. ChatML turns keep their text as is.

Reward model: the same piece-wise template is used (`input` = system + "\\n" + prompt in the RM schema, one
user turn), so a reward model scores exactly the sequences the policy produces and reads its value at
their end. The released Janus-RM was trained by OpenRLHF on the string `[INST] {input} [/INST] {response} </s>`;
`render_released_rm_ids` reproduces that format for scoring with imported Janus-RM weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_jax.tokenizer import Tokenizer

DEFAULT_TEMPLATE = "mistral_inst"

# Jinja for transformers' `apply_chat_template` (and vLLM): the same token layout as `render_conversation_ids`.
# Several system messages are joined by newlines; the first user turn carries them (mistral_inst) or they
# form one system turn (chatml).
_JOINED_SYSTEM = (
    "{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | join('\\n') -%}"
)
_MISTRAL_INST_JINJA = (
    "{{- bos_token -}}" + _JOINED_SYSTEM
    + "{%- for message in messages | rejectattr('role', 'equalto', 'system') -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '[INST] ' + ((system + '\\n' + message['content']) if loop.first else message['content']) | trim"
    " + ' [/INST]' -}}"
    "{%- else -%}{{- ' ' + message['content'] + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)
_CHATML_JINJA = (
    "{{- bos_token -}}" + _JOINED_SYSTEM
    + "{%- if system -%}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- for message in messages | rejectattr('role', 'equalto', 'system') -%}"
    "{%- if message['role'] == 'user' -%}{{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- else -%}{{- '<|im_start|>assistant\\n ' + message['content'] + '<|im_end|>' + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class Template:
    """One prompt format: the text before a reply, the text the model learns to end a reply with, and the
    same format as a Hugging Face `chat_template`."""

    name: str
    reply_suffix: str  # written after every reply, before EOS (and a stop string when decoding)
    jinja: str

    def prompt_text(self, system: str, prompt: str) -> str:
        """The text of one exchange up to where the reply starts (without BOS)."""
        if self.name == "mistral_inst":
            return f"[INST] {user_turn(system, prompt)} [/INST]"
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        return f"{head}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"

    def reply_text(self, reply: str) -> str:
        """What the model is trained to write for a reply (EOS follows)."""
        return reply + self.reply_suffix

    def strip_reply(self, text: str) -> str:
        """A decoded reply without the template's end marker (generation stops at EOS, right after it)."""
        if self.reply_suffix and text.endswith(self.reply_suffix):
            return text[: -len(self.reply_suffix)]
        return text


def user_turn(system: str, prompt: str) -> str:
    """The text inside `[INST] ... [/INST]`: system message and instruction on separate lines."""
    return f"{system}\n{prompt}".strip()


TEMPLATES: dict[str, Template] = {
    "mistral_inst": Template("mistral_inst", "", _MISTRAL_INST_JINJA),
    "chatml": Template("chatml", "<|im_end|>", _CHATML_JINJA),
}


def get_template(name: str) -> Template:
    """The template called `name`; an unknown name is an error that lists the known ones."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def template_of(source: Any) -> str:
    """The name of the template a run, checkpoint or HF directory formats its prompts with.

    `source` is a run config (`cfg.data.template`), a checkpoint's metadata or any mapping with a
    `template` key (or a `data` section that has one), or an HF model directory, whose tokenizer
    `chat_template` is matched against ours (a foreign ChatML or `[INST]` template, such as the released
    Janus checkpoints carry, is recognised by its markers). Configs and checkpoints that name no template
    were trained with `mistral_inst`, the only format before the setting existed; so are HF directories
    without a `chat_template`, like the released Janus 7B.
    """
    if isinstance(source, (str, os.PathLike)):
        return _template_of_hf_dir(Path(source))
    if isinstance(source, Mapping) or hasattr(source, "get"):
        name = source.get("template")
        data = source.get("data")
        if name is None and data is not None:
            name = data.get("template")
        name = name or DEFAULT_TEMPLATE
        get_template(name)
        return name
    raise TypeError(f"template_of: expected a config, a metadata mapping or a directory, got {type(source).__name__}")


def _template_of_hf_dir(directory: Path) -> str:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    jinja = directory / "chat_template.jinja"
    config = directory / "tokenizer_config.json"
    text = jinja.read_text() if jinja.is_file() else None
    if text is None and config.is_file():
        text = json.loads(config.read_text()).get("chat_template")
    if not text:
        return DEFAULT_TEMPLATE
    for name, template in TEMPLATES.items():
        if text == template.jinja:
            return name
    if isinstance(text, str) and "<|im_start|>" in text:
        return "chatml"
    if isinstance(text, str) and "[INST]" in text:
        return "mistral_inst"
    raise ValueError(f"{directory}: its chat_template is neither ChatML nor [INST] (known: {sorted(TEMPLATES)})")


# ---- single exchanges (training data, sampling) ----------------------------------------------------------
def prompt_text(system: str, prompt: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The inference prompt as text (without BOS), e.g. `[INST] {system}\\n{prompt} [/INST]`."""
    return get_template(template).prompt_text(system, prompt)


def rm_prompt_text(rm_input: str, template: str = DEFAULT_TEMPLATE) -> str:
    """Prompt text for an RM-schema row, whose `input` already is `system + "\\n" + prompt` (one user turn)."""
    return get_template(template).prompt_text("", rm_input.strip())


def render_prompt_ids(tok: Tokenizer, system: str, prompt: str, template: str = DEFAULT_TEMPLATE) -> list[int]:
    """Token ids that sampling and serving feed the model: BOS + the prompt part."""
    return [tok.bos_id, *tok.encode(prompt_text(system, prompt, template))]


def assemble_example(
    tok: Tokenizer, prompt_ids: list[int], response_ids: list[int]
) -> tuple[list[int], list[int]]:
    """Join pre-tokenized pieces: BOS + prompt + response + EOS, loss mask 1 on response and EOS.

    `prompt_ids` excludes the BOS; `response_ids` encode the reply with the template's suffix
    (`Template.reply_text`). Used by the data pipeline, which tokenizes pieces in batches.
    """
    ids = [tok.bos_id, *prompt_ids, *response_ids, tok.eos_id]
    n_prompt = 1 + len(prompt_ids)
    mask = [0] * n_prompt + [1] * (len(response_ids) + 1)
    return ids, mask


def render_sft_example(
    tok: Tokenizer, system: str, prompt: str, response: str, template: str = DEFAULT_TEMPLATE
) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 = train on this token) of one training example."""
    t = get_template(template)
    return assemble_example(tok, tok.encode(t.prompt_text(system, prompt)), tok.encode(t.reply_text(response)))


def render_rm_example(
    tok: Tokenizer, rm_input: str, response: str, template: str = DEFAULT_TEMPLATE
) -> tuple[list[int], list[int]]:
    """An RM-schema (`input`, response) pair in the SFT template; identical to `render_sft_example`
    when `rm_input == system + "\\n" + prompt` (with `mistral_inst`, which joins them the same way)."""
    t = get_template(template)
    return assemble_example(tok, tok.encode(rm_prompt_text(rm_input, template)), tok.encode(t.reply_text(response)))


def render_released_rm_ids(tok: Tokenizer, rm_input: str, response: str) -> list[int]:
    """The exact format the released Janus-RM 7B was trained and evaluated on (OpenRLHF):
    BOS + `[INST] {input} [/INST] {response} ` + EOS; its reward is read at the final EOS."""
    return [tok.bos_id, *tok.encode(f"[INST] {rm_input} [/INST] {response} "), tok.eos_id]


# ---- conversations (janus-serve) ---------------------------------------------------------------------------
def render_conversation_ids(
    tok: Tokenizer, system: str, turns: Sequence[str], template: str = DEFAULT_TEMPLATE
) -> list[int]:
    """Prompt ids of a conversation: `turns` alternate user, assistant, ..., user.

    The first exchange is exactly `render_prompt_ids`; each earlier reply continues as training writes a
    response (`reply + suffix`, then EOS), and each later user turn is a new exchange without the system
    message. `Template.jinja` renders the same ids through transformers.
    """
    if len(turns) % 2 != 1:
        raise ValueError(f"turns must alternate user, assistant, ... and end with a user turn; got {len(turns)}")
    t = get_template(template)
    ids = [tok.bos_id]
    for k in range(0, len(turns), 2):
        ids += tok.encode(t.prompt_text(system if k == 0 else "", turns[k]))
        if k + 1 < len(turns):
            ids += [*tok.encode(t.reply_text(turns[k + 1])), tok.eos_id]
    return ids
