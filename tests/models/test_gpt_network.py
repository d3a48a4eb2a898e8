"""The GPT-2 layout network: causal, its key/value cache exact, its settings checked, and equal to transformers'
GPT2LMHeadModel given the same weights."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import GenlabError
from genlab.models.gpt.config import GPTConfig
from genlab.models.gpt.networks import GPT


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return GPT(GPTConfig(preset="tiny"), vocabulary=97).eval()


def test_logits_depend_only_on_the_past(network):
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))
    logits, cache = network(ids)
    assert logits.shape == (3, 20, 97) and len(cache) == 2 and cache[0][0].shape == (3, 2, 20, 32)
    changed = ids.clone()
    changed[:, 10:] = 5
    torch.testing.assert_close(network(changed)[0][:, :10], logits[:, :10], rtol=0, atol=1e-6)
    assert (network(changed)[0][:, 10:] - logits[:, 10:]).abs().max() > 1e-3


def test_the_cache_gives_the_logits_of_the_whole_sequence(network):
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(2))
    whole, _ = network(ids)
    logits, cache = network(ids[:, :9])
    steps = [logits]
    for t in range(9, 24):  # one new position at a time
        logits, cache = network(ids[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, rtol=0, atol=1e-5)
    first, cache = network(ids[:, :5])  # several new positions after a cache
    torch.testing.assert_close(torch.cat([first, network(ids[:, 5:17], cache)[0]], dim=1), whole[:, :17], rtol=0, atol=1e-5)


def test_the_context_is_enforced_and_the_output_is_tied(network):
    with pytest.raises(ValueError, match="65 positions exceed the context of 64"):
        network(torch.zeros(1, 65, dtype=torch.long))
    names = [name for name, _ in network.named_parameters()]
    assert not any("lm_head" in name for name in names)  # the output projection is wte itself
    width, layers, vocabulary, context = 64, 2, 97, 64
    per_block = 12 * width**2 + 13 * width  # attention 4C^2 + 4C, MLP 8C^2 + 5C, two LayerNorms 4C
    assert sum(p.numel() for p in network.parameters()) == (vocabulary + context) * width + layers * per_block + 2 * width


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"width": 100, "heads": 3}, "must be a multiple of heads"),
        ({"preset": "huge"}, "unknown GPT preset 'huge'"),
        ({"context": 1}, "context must be an integer from 2"),
        ({"layers": True}, "layers must be an integer"),
        ({"conditional": True}, "not conditional"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"tokenizer": "words"}, "tokenizer 'words' is not one genlab has"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(GenlabError, match=message):
        GPTConfig(**settings)


def test_same_logits_as_transformers_gpt2_with_the_same_weights(network):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=97, n_positions=64, n_embd=64, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, activation_function="gelu_new", bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    reference = transformers.GPT2LMHeadModel(config).eval()
    transposed = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # transformers' Conv1D holds (in, out)
    weights = {
        f"transformer.{name}": value.T if name.endswith(transposed) else value
        for name, value in network.state_dict().items()
    }
    missing, unexpected = reference.load_state_dict({**weights, "lm_head.weight": network.wte.weight}, strict=False)
    assert not unexpected and all("attn.bias" in name or "masked_bias" in name for name in missing)
    ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(reference(ids).logits, network(ids)[0], rtol=0, atol=1e-5)
