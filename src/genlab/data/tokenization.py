"""Tokenizers of the text family: text <-> token ids, saved whole in a run and rebuilt from it.

    tokenizer = build_tokenizer("bytes")            # 256 ids: the UTF-8 bytes themselves (the default)
    tokenizer = build_tokenizer("bpe:2048", train)  # byte-level BPE (Hugging Face `tokenizers`), trained on train
    ids = tokenizer.encode("To be"); text = tokenizer.decode(ids)
    tokenizer.to_dict() -> JSON for run.json; tokenizer_from_dict(values) rebuilds it

Both work on bytes underneath, so any text encodes, and bits per byte (nats per token summed over
a text, divided by its UTF-8 bytes and ln 2) compare across them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from genlab.errors import GenlabError

from .text import TextCorpus

BYTE_VOCABULARY = 256
MIN_BPE_VOCABULARY = 256  # the 256 bytes (no merge: the bytes themselves) and up
MAX_BPE_VOCABULARY = 65_536
TEXT_EXTRA = "the tokenizers library is missing: pip install 'genlab[text]'"


@runtime_checkable
class Tokenizer(Protocol):
    """What the text family needs of a tokenizer."""

    @property
    def name(self) -> str:
        """The spec it was built from: "bytes", "bpe:2048"."""
        ...

    @property
    def vocabulary_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_text(self, token: int) -> str:
        """How one token reads in a table (its bytes, undecodable ones escaped)."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """Each UTF-8 byte is one token (ids 0-255): no training, nothing unknown, one token per byte."""

    name: str = "bytes"

    @property
    def vocabulary_size(self) -> int:
        return BYTE_VOCABULARY

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        return _shown(bytes([int(token)]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant) from Hugging Face `tokenizers`: the 256
    bytes, then merges learned on the training split until `vocabulary_size` tokens."""

    def __init__(self, name: str, backend):
        self.name = name
        self.backend = backend  # tokenizers.Tokenizer

    @property
    def vocabulary_size(self) -> int:
        return int(self.backend.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.backend.decode([int(i) for i in ids]))

    def token_text(self, token: int) -> str:
        return _shown(self.decode([token]).encode("utf-8"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tokenizer": json.loads(self.backend.to_str())}


def _shown(data: bytes) -> str:
    """Bytes as readable text: printable characters as they are, newline and tab escaped, others as \\xNN."""
    text = data.decode("utf-8", errors="backslashreplace")
    return text.replace("\n", "\\n").replace("\t", "\\t")


def parse_tokenizer(spec: str) -> tuple[str, int | None]:
    """("bytes", None) or ("bpe", vocabulary size) from a spec, or a GenlabError saying what is accepted."""
    kind, _, size = str(spec).partition(":")
    if kind == "bytes" and not size:
        return "bytes", None
    if kind == "bpe" and size.isdigit() and MIN_BPE_VOCABULARY <= int(size) <= MAX_BPE_VOCABULARY:
        return "bpe", int(size)
    raise GenlabError(
        f"tokenizer {spec!r} is not one genlab has: bytes (the default), or bpe:N with N from "
        f"{MIN_BPE_VOCABULARY} to {MAX_BPE_VOCABULARY:,} tokens (e.g. --set tokenizer=bpe:2048)"
    )


def build_tokenizer(spec: str, train: TextCorpus | None = None) -> Tokenizer:
    """The tokenizer `spec` names; a BPE one is trained on `train` (deterministic for the same text)."""
    kind, size = parse_tokenizer(spec)
    if kind == "bytes":
        return ByteTokenizer()
    if train is None:
        raise GenlabError(f"tokenizer {spec} is trained on the training text: pass the training split")
    assert size is not None
    tokenizers = _tokenizers()
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=size,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),  # every byte, so nothing is unknown
        show_progress=False,
    )
    backend.train_from_iterator(list(train.documents), trainer=trainer)
    return BPETokenizer(f"bpe:{size}", backend)


def tokenizer_from_dict(values: dict[str, Any], source: str) -> Tokenizer:
    """Rebuild a saved tokenizer (`to_dict`), with one clear error naming `source` when it is damaged."""
    name = values.get("name") if isinstance(values, dict) else None
    try:
        kind, size = parse_tokenizer(str(name))
    except GenlabError as error:
        raise GenlabError(f"{source}: {error}") from None
    if kind == "bytes":
        return ByteTokenizer()
    tokenizers = _tokenizers()
    try:
        backend = tokenizers.Tokenizer.from_str(json.dumps(values["tokenizer"]))
    except (KeyError, TypeError, ValueError, Exception) as error:  # the library raises its own Exception type
        raise GenlabError(f"{source}: the saved BPE tokenizer cannot be read ({error}); train the run again") from None
    tokenizer = BPETokenizer(str(name), backend)
    if tokenizer.vocabulary_size != size:
        raise GenlabError(f"{source}: the saved tokenizer has {tokenizer.vocabulary_size} tokens, its name says {size}")
    return tokenizer


def encode_corpus(corpus: TextCorpus, tokenizer: Tokenizer, check: Callable[[int], None] | None = None) -> torch.Tensor:
    """The corpus's joined text as token ids: (N,) int64. `check(bytes)` may refuse a size before encoding."""
    text = corpus.text
    if check is not None:
        check(len(text.encode("utf-8")))
    return torch.tensor(tokenizer.encode(text), dtype=torch.int64)


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise GenlabError(TEXT_EXTRA) from None
    return tokenizers
