"""The tokenizer: the bundled Mistral v1 model, a `.model` path, and an HF tokenizer directory."""

import json
import shutil

import pytest

from janus_jax.tokenizer import default_model_path, load_tokenizer

TEXTS = ["hello", "a  b ", "\tdef f(x):\n    return x  \n", "ﬁne café 日本語 🙂", "[INST] sys\nhi [/INST]", ""]


@pytest.fixture(scope="module")
def sp_tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A Hugging Face tokenizer directory in the layout of the Janus checkpoints (LlamaTokenizer, pad = </s>)."""
    d = tmp_path_factory.mktemp("hf_tokenizer")
    shutil.copy(default_model_path(), d / "tokenizer.model")
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


def test_default_is_mistral_v1(sp_tok):
    assert (sp_tok.vocab_size, sp_tok.bos_id, sp_tok.eos_id, sp_tok.pad_id) == (32000, 1, 2, 2)
    assert sp_tok.kind == "sentencepiece"
    assert sp_tok.encode("[INST]") == [733, 16289, 28793]


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_round_trip_without_special_tokens(sp_tok, text):
    ids = sp_tok.encode(text)
    assert sp_tok.bos_id not in ids and sp_tok.eos_id not in ids
    assert sp_tok.decode(ids) == text


def test_eos_string_in_text_is_not_a_control_id(sp_tok):
    ids = sp_tok.encode("stop</s>here")
    assert sp_tok.eos_id not in ids
    assert sp_tok.decode(ids) == "stop</s>here"


def test_decode_drops_control_ids(sp_tok):
    assert sp_tok.decode([sp_tok.bos_id, *sp_tok.encode("hi there"), sp_tok.eos_id]) == "hi there"


def test_encode_batch_matches_encode(sp_tok):
    assert sp_tok.encode_batch(TEXTS) == [sp_tok.encode(t) for t in TEXTS]


def test_model_file_path(sp_tok):
    tok = load_tokenizer(str(default_model_path()))
    assert tok.encode("The quick brown fox") == sp_tok.encode("The quick brown fox")
    assert tok.fingerprint() == sp_tok.fingerprint()


def test_hf_directory(hf_dir, sp_tok):
    tok = load_tokenizer(hf_dir)
    assert tok.kind == "hf"
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (32000, 1, 2, 2)
    for text in ["hello world", "[INST] You are terse.\nName a color. [/INST]", "ﬁne café 日本語 🙂"]:
        assert tok.encode(text) == sp_tok.encode(text)
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("stop</s>here")
    assert tok.eos_id not in ids and tok.decode(ids) == "stop</s>here"
    assert tok.encode_batch(["a b", "c"]) == [tok.encode("a b"), tok.encode("c")]
    assert tok.fingerprint() != sp_tok.fingerprint()


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        load_tokenizer(tmp_path / "nope.model")


def test_encode_rejects_non_strings(sp_tok):
    with pytest.raises(TypeError, match="expects a str"):
        sp_tok.encode(None)
