"""TokenDataset: a text split as one tensor of token ids, batched as windows at seeded offsets.

The text family's counterpart of ImageDataset, with the same rule: the whole split is held in memory
(on the GPU when training there) and a batch is tensor slices, never per-item Python. An item is a
window of `context + 1` tokens (the model reads the first `context` and predicts the last `context`),
and an epoch is one pass over the split's tokens: windows side by side from a random offset, in a
random order, both drawn from the epoch's generator, so each epoch cuts the text at other places.
`batches` yields (windows (B, context + 1) int64, None), the shape of an image batch's
(images, labels), so the Trainer runs it unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from genlab.memory import check_fits

from .dataset import batch_pieces
from .text import load_text_splits
from .tokenization import ByteTokenizer, Tokenizer, build_tokenizer, encode_corpus


@dataclass
class TokenDataset:
    """Token ids (N,) int64 of one split, the window length, and what the ids came from."""

    tokens: torch.Tensor  # (N,) int64
    context: int  # tokens a model reads per window
    num_bytes: int  # UTF-8 bytes of the text the tokens encode: bits per byte = nats / (bytes ln 2)
    name: str = ""
    tokenizer: Tokenizer = field(default_factory=ByteTokenizer)  # what the ids mean

    def __post_init__(self) -> None:
        if self.tokens.dtype != torch.int64 or self.tokens.ndim != 1:
            raise ValueError(f"tokens must be int64 (N,), got {self.tokens.dtype} {tuple(self.tokens.shape)}")
        if self.context < 1:
            raise ValueError(f"context must be positive, got {self.context}")

    def __len__(self) -> int:
        """Windows in one pass: each holds context + 1 tokens, and neighbours share one."""
        return max(0, (len(self.tokens) - 1) // self.context)

    @property
    def tokens_per_byte(self) -> float:
        """Tokens over UTF-8 bytes of the text (1 for the byte tokenizer): nats per token x this = nats per byte."""
        return len(self.tokens) / max(1, self.num_bytes)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def to(self, device: torch.device | str) -> TokenDataset:
        """The same dataset with its tokens on `device` (no copy when already there)."""
        return TokenDataset(self.tokens.to(device), self.context, self.num_bytes, self.name, self.tokenizer)

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        skip: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, None]]:
        """Yield (windows (B, context + 1) int64, None), as ImageDataset.batches yields images.

        With `shuffle`, the windows start at a random offset (0 .. the tokens left over) and come in a
        random order, both drawn from `generator` on the CPU; without it they start at 0, in order.
        `skip` and `shard` work as ImageDataset.batches' (resuming inside an epoch; data-parallel ranks).
        """
        count = len(self)
        offset = 0
        if shuffle:
            spare = len(self.tokens) - 1 - count * self.context  # tokens past the last whole window
            offset = int(torch.randint(0, spare + 1, (1,), generator=generator))
            order = torch.randperm(count, generator=generator)
        span = torch.arange(self.context + 1)  # positions inside one window
        for low, high in batch_pieces(count, batch_size, skip, shard):
            windows = order[low:high] if shuffle else torch.arange(low, high)
            index = offset + windows[:, None] * self.context + span  # (B, context + 1)
            yield self.tokens[index.to(self.tokens.device)], None


def token_fingerprint(*datasets: TokenDataset | None) -> str:
    """A short sha256 of the token ids of `datasets`: the same text and tokenizer give the same string."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(b"none" if dataset is None else dataset.tokens.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_token_splits(spec: str, tokenizer: str | Tokenizer, context: int) -> tuple[TokenDataset, TokenDataset]:
    """(train, test) token datasets of the text dataset `spec`, read in windows of `context` tokens.

    `tokenizer`: a spec ("bytes", "bpe:N": trained here on the train split) or a tokenizer already built
    (a resumed run's). The ids are held as int64: the memory they take is checked before encoding.
    """
    train, test = load_text_splits(spec)
    if isinstance(tokenizer, str):
        tokenizer = build_tokenizer(tokenizer, train)

    def fits(num_bytes: int) -> None:  # at most one token per byte, 8 bytes each
        check_fits(8 * num_bytes, f"the token ids of {spec}", "train on a smaller part of the text")

    return (
        TokenDataset(encode_corpus(train, tokenizer, fits), context, train.num_bytes, spec, tokenizer),
        TokenDataset(encode_corpus(test, tokenizer, fits), context, test.num_bytes, spec, tokenizer),
    )
