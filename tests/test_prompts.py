"""The prompt templates: exact loss masks, prompt parity with sampling and with transformers'
`apply_chat_template` on an exported tokenizer, the RM formats, and reading a model's template back."""

import json

import pytest
from transformers import AutoTokenizer

from configs import dpo, orpo, sft
from janus_jax.data import build_data, default_data_config
from janus_jax.data.sources import REPO_ROOT
from janus_jax.prompts import (
    TEMPLATES,
    get_template,
    prompt_text,
    render_conversation_ids,
    render_prompt_ids,
    render_released_rm_ids,
    render_rm_example,
    render_sft_example,
    template_of,
)
from janus_jax.tokenizer import load_tokenizer
from janus_jax.train.export import write_tokenizer_files

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


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("response", RESPONSES)
def test_masked_tokens_are_exactly_the_response_and_eos(tok, response, template):
    ids, mask = render_sft_example(tok, SYSTEM, PROMPT, response, template)
    assert len(ids) == len(mask)
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained[-1] == tok.eos_id and ids[-1] == tok.eos_id
    assert tok.eos_id not in trained[:-1]
    assert tok.decode(trained[:-1]) == get_template(template).reply_text(response)
    assert get_template(template).strip_reply(tok.decode(trained[:-1])) == response


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("response", RESPONSES)
def test_prompt_part_is_what_sampling_feeds(tok, response, template):
    ids, mask = render_sft_example(tok, SYSTEM, PROMPT, response, template)
    n_prompt = mask.index(1)
    assert ids[:n_prompt] == render_prompt_ids(tok, SYSTEM, PROMPT, template)
    assert all(m == 1 for m in mask[n_prompt:])


def test_chatml_text(tok):
    assert prompt_text(SYSTEM, PROMPT, "chatml") == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt_text("", PROMPT, "chatml") == f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    ids, _ = render_sft_example(tok, SYSTEM, PROMPT, "Red.", "chatml")
    assert tok.decode(ids).endswith("<|im_start|>assistant\n Red.<|im_end|>")
    assert max(ids) < 32000  # the markers are plain text: no token is added to the Mistral vocabulary
    with pytest.raises(ValueError, match=r"template 'llama3'; choose one of \['chatml', 'mistral_inst'\]"):
        render_prompt_ids(tok, SYSTEM, PROMPT, "llama3")


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


# ---- the exported chat_template ----------------------------------------------------------------------------
def _exported(tmp_path, template):
    out = tmp_path / template
    out.mkdir()
    write_tokenizer_files(out, template=template)
    return out, AutoTokenizer.from_pretrained(out)


def _ids(encoded):
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def _messages(system, *turns):
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": ("user", "assistant")[k % 2], "content": text} for k, text in enumerate(turns)]


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("system", [SYSTEM, ""], ids=["system", "no_system"])
def test_exported_chat_template_gives_the_trained_prompt(tok, tmp_path, template, system):
    directory, hf = _exported(tmp_path, template)
    assert template_of(directory) == template
    # (no runs of spaces: transformers >= 5 reads the SentencePiece model through its `tokenizers` conversion,
    # which splits them differently from SentencePiece whatever the template; see README "Prompt format")
    for prompt in (PROMPT, "Two lines,\nand a tab:\tthere.\n", "Unicode: naïve café, 日本語 🙂"):
        expected = render_prompt_ids(tok, system, prompt, template)
        assert _ids(hf.apply_chat_template(_messages(system, prompt), add_generation_prompt=True)) == expected
    # whole conversations, earlier replies included, as janus-serve renders them
    turns = ["Hi.", "Hello! How can I help?", PROMPT, "Red.\n- and blue", "Another one?"]
    assert _ids(hf.apply_chat_template(_messages(system, *turns), add_generation_prompt=True)) == (
        render_conversation_ids(tok, system, turns, template)
    )
    # a training example is the whole exchange (replies that start with whitespace or contain "</s>" are the
    # exceptions: transformers tokenizes the joined text, and reads "</s>" in it as the EOS token)
    for response in ("Red.", "- bullet one\n- bullet two", "```python\nx = 1\n```"):
        ids, _ = render_sft_example(tok, system, PROMPT, response, template)
        assert _ids(hf.apply_chat_template(_messages(system, PROMPT, response))) == ids


def test_conversations_render_as_janus_serve_renders_them(tok):
    """`render_conversation_ids` in mistral_inst is what janus-serve's chat endpoint feeds the model today."""
    from janus_jax.serve.chat import render_chat_ids

    turns = ["Hi.", "Hello! How can I help?", PROMPT, "Red.", "Another one?"]
    for system in (SYSTEM, ""):
        assert render_chat_ids(tok, _messages(system, *turns)) == render_conversation_ids(tok, system, turns)
        assert render_chat_ids(tok, _messages(system, PROMPT)) == render_prompt_ids(tok, system, PROMPT)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_preference_data_trains_on_the_exported_prompt(tok, tmp_path, template):
    """What a DPO run with `data.template` tokenizes is what its export's chat_template produces."""
    cfg = default_data_config()
    cfg.update(source=str(REPO_ROOT / "data" / "samples" / "dpo.jsonl"), format="dpo", packing=False, seq_len=512,
               template=template)
    bundle = build_data(cfg, global_batch_size=2, num_epochs=1, process_index=0, process_count=1, tokenizer=tok)
    chosen = bundle.train.chosen
    rows = [json.loads(line) for line in (REPO_ROOT / "data" / "samples" / "dpo.jsonl").read_text().splitlines()]
    _, hf = _exported(tmp_path, template)
    for i in range(len(chosen)):
        row = rows[chosen.rows[i]]
        prompt_ids = chosen.ids(i)[: chosen.prompt_lengths[i]].tolist()
        assert _ids(hf.apply_chat_template(_messages(row["system"], row["prompt"]), add_generation_prompt=True)) == (
            prompt_ids
        )
    assert len(chosen) == len(rows)


def test_template_of_configs_checkpoints_and_directories(tmp_path):
    assert template_of(dpo.get_config("janus_dpo_7b")) == template_of(orpo.get_config("janus_orpo_7b")) == "chatml"
    assert template_of(sft.get_config("janus_7b")) == template_of(dpo.get_config("tiny")) == "mistral_inst"
    cfg = default_data_config()
    cfg.template = "chatml"
    assert template_of({"data": cfg}) == "chatml"
    assert template_of({"template": "chatml", "model_config": {}}) == "chatml"
    assert template_of({"data_step": 10, "model_config": {}}) == "mistral_inst"  # written before the setting
    with pytest.raises(ValueError, match="unknown prompt template 'alpaca'"):
        template_of({"template": "alpaca"})
    bare = tmp_path / "released_janus_7b"
    bare.mkdir()
    (bare / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert template_of(bare) == "mistral_inst"  # no chat_template, as the released Janus 7B
    axolotl = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}{% endfor %}"
    (bare / "tokenizer_config.json").write_text(json.dumps({"chat_template": axolotl}))
    assert template_of(bare) == "chatml"
    (bare / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    with pytest.raises(ValueError, match="neither ChatML nor"):
        template_of(bare)
