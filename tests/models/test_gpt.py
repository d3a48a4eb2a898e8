"""The GPT family's model: token windows, a loss that falls on real text, and generation (cache, temperature,
top-k, top-p, seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.data.text import load_text_splits
from genlab.data.tokenization import ByteTokenizer, encode_corpus
from genlab.data.tokens import TokenDataset, token_fingerprint
from genlab.errors import GenlabError
from genlab.models.base import TokenSpec
from genlab.models.gpt import GPTConfig, GPTModel
from genlab.models.gpt.model import draw_token
from genlab.training.trainer import TrainConfig, Trainer


def test_windows_cover_the_split_once_per_epoch_from_a_seeded_offset():
    data = TokenDataset(torch.arange(103), context=10, num_bytes=103)
    assert len(data) == 10  # (103 - 1) // 10 windows of 11 tokens, neighbours sharing one
    plain = torch.cat([w for w, _ in data.batches(4, shuffle=False)])
    assert plain.shape == (10, 11) and plain[0].tolist() == list(range(11)) and plain[1, 0] == 10
    shuffled = torch.cat([w for w, _ in data.batches(4, torch.Generator().manual_seed(5))])
    offset = int(shuffled[:, 0].min())
    assert 0 <= offset <= 2 and sorted(shuffled[:, 0].tolist()) == [offset + 10 * i for i in range(10)]
    again = torch.cat([w for w, _ in data.batches(4, torch.Generator().manual_seed(5))])
    assert torch.equal(shuffled, again)
    rest = torch.cat([w for w, _ in data.batches(4, torch.Generator().manual_seed(5), skip=1)])
    assert torch.equal(rest, shuffled[4:])  # resuming inside an epoch skips whole batches of the same order
    halves = [torch.cat([w for w, _ in data.batches(4, torch.Generator().manual_seed(5), shard=(k, 2))]) for k in (0, 1)]
    assert sorted(torch.cat(halves)[:, 0].tolist()) == sorted(shuffled[:, 0].tolist())
    assert token_fingerprint(data) == token_fingerprint(TokenDataset(torch.arange(103), 4, 1)) != token_fingerprint(None)


@pytest.fixture(scope="module")
def fortunes_tokens():
    train, test = load_text_splits("fortunes")
    tokenizer = ByteTokenizer()
    context = GPTConfig(preset="tiny").context
    return (
        TokenDataset(encode_corpus(train, tokenizer)[:40_000], context, 40_000),
        TokenDataset(encode_corpus(test, tokenizer)[:10_000], context, 10_000),
    )


def tiny_model(seed: int = 0, **settings) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(preset="tiny", **settings), TokenSpec(256, "bytes"))


def test_the_trainer_runs_the_text_family_and_the_loss_falls(fortunes_tokens):
    train, test = fortunes_tokens
    model = tiny_model(schedule="constant")  # 39 steps: a cosine schedule would spend most of them below the peak
    history = Trainer(model, train, test, TrainConfig(epochs=2, batch_size=32, seed=0)).fit()
    first, last = history
    assert first["loss"] < math.log(256) and last["loss"] < first["loss"] and last["test_loss"] < first["test_loss"]
    assert last["test_loss"] / math.log(2) < 5.0  # bits per byte, far under the 8 of a uniform guess (39 steps)
    assert 0.2 < last["test_accuracy"] < 1
    again = tiny_model(schedule="constant")
    Trainer(again, train, test, TrainConfig(epochs=2, batch_size=32, seed=0)).fit()
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # the same seed gives the same weights


def test_generation_with_the_cache_equals_generation_without_it():
    model = tiny_model().eval()
    prompt = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(0))
    for temperature in (0.0, 1.0):
        cached = model.generate(prompt, 100, temperature, generator=torch.Generator().manual_seed(1))  # past the window
        plain = model.generate(prompt, 100, temperature, generator=torch.Generator().manual_seed(1), use_cache=False)
        assert cached.shape == (2, 105) and torch.equal(cached[:, :5], prompt)
        assert torch.equal(cached[:, : model.context], plain[:, : model.context])  # until the window first fills
    a = model.generate(prompt, 30, 0.8, top_k=10, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 30, 0.8, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_top_k_and_top_p_keep_only_the_likeliest_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    assert set(draw_token(logits, 1.0, top_k=2, generator=g).flatten().tolist()) == {0, 1}
    counts = torch.bincount(draw_token(logits, 1.0, top_p=0.7, generator=g).flatten(), minlength=4)
    assert counts[2:].sum() == 0 and abs(counts[0] / counts[:2].sum() - 0.5 / 0.8) < 0.03  # renormalised over {0, 1}
    assert draw_token(logits, 1.0, top_p=0.4, generator=g).unique().tolist() == [0]  # the likeliest always stays
    assert draw_token(logits[:1], 0.0).item() == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_new_tokens": 0}, "--max-new-tokens must be a positive integer"),
        ({"temperature": -1}, "--temperature must be 0"),
        ({"top_k": 0}, "--top-k must be a positive integer"),
        ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
        ({"top_p": 0}, r"--top-p must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_settings(options, message):
    model = tiny_model()
    settings = {"max_new_tokens": 5, **options}
    with pytest.raises(GenlabError, match=message):
        model.generate(torch.zeros(1, 3, dtype=torch.long), **settings)
