"""The Janus prompt template, built from token pieces so the loss mask is exact.

Training text:  `<s>[INST] {system}\\n{prompt} [/INST]{response}</s>`
Inference:      `<s>[INST] {system}\\n{prompt} [/INST]` and generation continues from there.

Sequences are assembled as `[BOS] + encode(prompt part) + encode(response) + [EOS]`, never by searching
strings, so the prompt part of a training example is token-for-token what sampling and serving feed the
model, and the loss mask covers exactly the response tokens and the EOS.

The user turn is `(system + "\\n" + prompt).strip()`, as in the Janus inference code. This also fixes the
empty-system case: with `system == ""` the turn is the bare prompt, with no leading newline, in training and
at inference alike.

Reward model: the same piece-wise template is used (`input` = system + "\\n" + prompt in the RM schema), so
a reward model scores exactly the sequences the policy produces and reads its value at their end. The
released Janus-RM was trained by OpenRLHF on the string `[INST] {input} [/INST] {response} </s>`;
`render_released_rm_ids` reproduces that format for scoring with imported Janus-RM weights.
"""

from __future__ import annotations

from janus_jax.tokenizer import Tokenizer

TEMPLATE_VERSION = "janus-inst-v1"


def user_turn(system: str, prompt: str) -> str:
    """The text inside `[INST] ... [/INST]`: system message and instruction on separate lines."""
    return f"{system}\n{prompt}".strip()


def prompt_text(system: str, prompt: str) -> str:
    """The inference prompt as text (without BOS): `[INST] {system}\\n{prompt} [/INST]`."""
    return f"[INST] {user_turn(system, prompt)} [/INST]"


def rm_prompt_text(rm_input: str) -> str:
    """Prompt text for an RM-schema row, whose `input` already is `system + "\\n" + prompt`."""
    return f"[INST] {rm_input.strip()} [/INST]"


def render_prompt_ids(tok: Tokenizer, system: str, prompt: str) -> list[int]:
    """Token ids that sampling and serving feed the model: BOS + the prompt part."""
    return [tok.bos_id, *tok.encode(prompt_text(system, prompt))]


def assemble_example(
    tok: Tokenizer, prompt_ids: list[int], response_ids: list[int]
) -> tuple[list[int], list[int]]:
    """Join pre-tokenized pieces: BOS + prompt + response + EOS, loss mask 1 on response and EOS.

    `prompt_ids` excludes the BOS. Used by the data pipeline, which tokenizes pieces in batches.
    """
    ids = [tok.bos_id, *prompt_ids, *response_ids, tok.eos_id]
    n_prompt = 1 + len(prompt_ids)
    mask = [0] * n_prompt + [1] * (len(response_ids) + 1)
    return ids, mask


def render_sft_example(tok: Tokenizer, system: str, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 = train on this token) of one training example."""
    return assemble_example(tok, tok.encode(prompt_text(system, prompt)), tok.encode(response))


def render_rm_example(tok: Tokenizer, rm_input: str, response: str) -> tuple[list[int], list[int]]:
    """An RM-schema (`input`, response) pair in the SFT template; identical to `render_sft_example`
    when `rm_input == system + "\\n" + prompt`."""
    return assemble_example(tok, tok.encode(rm_prompt_text(rm_input)), tok.encode(response))


def render_released_rm_ids(tok: Tokenizer, rm_input: str, response: str) -> list[int]:
    """The exact format the released Janus-RM 7B was trained and evaluated on (OpenRLHF):
    BOS + `[INST] {input} [/INST] {response} ` + EOS; its reward is read at the final EOS."""
    return [tok.bos_id, *tok.encode(f"[INST] {rm_input} [/INST] {response} "), tok.eos_id]
