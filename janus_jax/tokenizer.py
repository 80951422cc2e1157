"""One small tokenizer interface over SentencePiece models and Hugging Face tokenizer directories.

The default is the Mistral v1 SentencePiece model (32,000 pieces) that ships inside the `mistral-common`
package, so nothing is downloaded: it is the tokenizer of Mistral-7B-v0.2 and of the Janus checkpoints.

Padding: SentencePiece's Mistral model has no pad piece. Like the Janus tokenizer config (`pad_token: </s>`)
we pad with the EOS id. Pads never reach the loss or attention because every batch carries segment ids
(0 on padding) and loss weights, so the pad value itself is never interpreted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MODEL_FILE = "tokenizer.model.v1"


def default_model_path() -> Path:
    """Path of the Mistral v1 SentencePiece model bundled with `mistral-common`."""
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / DEFAULT_MODEL_FILE


class Tokenizer:
    """Text <-> ids without special tokens; BOS/EOS are added explicitly by the prompt template.

    `encode` never adds BOS/EOS and never turns text such as "</s>" inside user data into a control id,
    so a response cannot end a sequence early by containing the EOS string.
    """

    def __init__(self, backend, *, kind: str, name: str, bos_id: int, eos_id: int, pad_id: int, vocab_size: int):
        self._backend = backend
        self.kind = kind  # "sentencepiece" or "hf"
        self.name = name
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)
        self.pad_id = int(pad_id)
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer.encode expects a str, got {type(text).__name__}")
        if self.kind == "sentencepiece":
            return self._backend.encode(text)
        return self._backend.encode(text, add_special_tokens=False, split_special_tokens=True)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts at once (multi-threaded in both backends); same ids as `encode` per text."""
        texts = list(texts)
        if self.kind == "sentencepiece":
            return self._backend.encode(texts, num_threads=os.cpu_count() or 1)
        out = self._backend(texts, add_special_tokens=False, split_special_tokens=True)
        return [list(ids) for ids in out["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids to text; BOS/EOS/pad control ids decode to nothing."""
        ids = [int(i) for i in ids]
        if self.kind == "sentencepiece":
            return self._backend.decode(ids)
        return self._backend.decode(ids, skip_special_tokens=True)

    def fingerprint(self) -> str:
        """A short content hash of the vocabulary, so that caches of token ids never mix tokenizers."""
        h = hashlib.sha256()
        if self.kind == "sentencepiece":
            h.update(self._backend.serialized_model_proto())
        else:
            for piece, idx in sorted(self._backend.get_vocab().items(), key=lambda kv: kv[1]):
                h.update(f"{idx}\t{piece}\n".encode())
        h.update(f"{self.kind}:{self.bos_id}:{self.eos_id}:{self.pad_id}".encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.kind}, {self.name!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, "
            f"eos={self.eos_id}, pad={self.pad_id})"
        )


def _load_sentencepiece(path: Path) -> Tokenizer:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    bos, eos = sp.bos_id(), sp.eos_id()
    if bos < 0 or eos < 0:
        raise ValueError(f"SentencePiece model {path} defines no BOS/EOS piece (bos={bos}, eos={eos})")
    pad = sp.pad_id() if sp.pad_id() >= 0 else eos
    return Tokenizer(sp, kind="sentencepiece", name=str(path), bos_id=bos, eos_id=eos, pad_id=pad,
                     vocab_size=sp.vocab_size())


def _load_hf(path: Path) -> Tokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise ValueError(f"tokenizer in {path} has no BOS/EOS token (bos={tok.bos_token}, eos={tok.eos_token})")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Tokenizer(tok, kind="hf", name=str(path), bos_id=tok.bos_token_id, eos_id=tok.eos_token_id,
                     pad_id=pad, vocab_size=len(tok))


def load_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    """Load the tokenizer used by every stage.

    `None` or "" gives the bundled Mistral v1 SentencePiece model; a `.model` file is loaded with
    SentencePiece; a directory is loaded with `transformers.AutoTokenizer` (offline, local files only).
    """
    if path is None or str(path) == "":
        return _load_sentencepiece(default_model_path())
    p = Path(path).expanduser()
    if p.is_dir():
        return _load_hf(p)
    if p.is_file():
        return _load_sentencepiece(p)
    raise FileNotFoundError(
        f"tokenizer path {str(path)!r} is neither a SentencePiece .model file nor a tokenizer directory"
    )
