"""The Janus template: exact loss masks, prompt parity with sampling, and the RM formats."""

import pytest

from janus_jax.prompts import (
    prompt_text,
    render_prompt_ids,
    render_released_rm_ids,
    render_rm_example,
    render_sft_example,
)
from janus_jax.tokenizer import load_tokenizer

SYSTEM = "You are a terse assistant. Answer in one line."
PROMPT = "Name a primary color."
RESPONSES = [
    "Red.",
    " leading space",
    "trailing spaces   ",
    "\n\nstarts with newlines\nand has more\n",
    "- bullet one\n- bullet two",
    "Unicode: naïve café, 日本語, emoji 🙂, ﬁ ligature",
    "```python\ndef add(a, b):\n    return a + b\n```",
    "\tindented\ttabs",
    "contains [/INST] and </s> literally",
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.mark.parametrize("response", RESPONSES)
def test_masked_tokens_are_exactly_the_response_and_eos(tok, response):
    ids, mask = render_sft_example(tok, SYSTEM, PROMPT, response)
    assert len(ids) == len(mask)
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained[-1] == tok.eos_id and ids[-1] == tok.eos_id
    assert tok.eos_id not in trained[:-1]
    assert tok.decode(trained[:-1]) == response


@pytest.mark.parametrize("response", RESPONSES)
def test_prompt_part_is_what_sampling_feeds(tok, response):
    ids, mask = render_sft_example(tok, SYSTEM, PROMPT, response)
    n_prompt = mask.index(1)
    assert ids[:n_prompt] == render_prompt_ids(tok, SYSTEM, PROMPT)
    assert all(m == 1 for m in mask[n_prompt:])


def test_template_text(tok):
    ids = render_prompt_ids(tok, SYSTEM, PROMPT)
    assert ids[0] == tok.bos_id
    assert tok.decode(ids) == f"[INST] {SYSTEM}\n{PROMPT} [/INST]"
    full, _ = render_sft_example(tok, SYSTEM, PROMPT, "Red.")
    # The response's own first piece carries the word boundary, so the decoded text reads "[/INST] Red.".
    assert tok.decode(full) == f"[INST] {SYSTEM}\n{PROMPT} [/INST] Red."


def test_empty_system_message_has_no_leading_newline(tok):
    assert prompt_text("", PROMPT) == f"[INST] {PROMPT} [/INST]"
    ids, mask = render_sft_example(tok, "", PROMPT, "Blue.")
    assert ids[: mask.index(1)] == render_prompt_ids(tok, "", PROMPT)
    assert render_prompt_ids(tok, "", PROMPT) == [tok.bos_id, *tok.encode(f"[INST] {PROMPT} [/INST]")]
    assert 13 not in render_prompt_ids(tok, "", PROMPT)  # 13 = the "\n" byte piece


def test_rm_template_matches_sft(tok):
    rm_input = f"{SYSTEM}\n{PROMPT}"
    assert render_rm_example(tok, rm_input, "Red.") == render_sft_example(tok, SYSTEM, PROMPT, "Red.")


def test_released_rm_format(tok):
    ids = render_released_rm_ids(tok, f"{SYSTEM}\n{PROMPT}", "Red.")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == f"[INST] {SYSTEM}\n{PROMPT} [/INST] Red. "
