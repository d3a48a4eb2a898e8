"""The pieces every family shares: the EMA of weights and the config checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_choice, check_int, check_number, ema_copy, ema_decay, update_ema


def test_ema_decay_warms_up_to_the_configured_decay():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the first average mostly follows
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999


def test_update_ema_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = ema_copy(network)
    assert not any(p.requires_grad for p in average.parameters())
    before = average[0].weight.clone()
    with torch.no_grad():
        network[0].weight.add_(1.0)
    network(torch.randn(8, 3))  # moves BatchNorm's running statistics
    update_ema(average, network, decay=0.999, updates=90)  # d = 0.91
    torch.testing.assert_close(average[0].weight, 0.91 * before + 0.09 * network[0].weight)
    torch.testing.assert_close(average[1].running_mean, network[1].running_mean)
    assert int(average[1].num_batches_tracked) == 1


@pytest.mark.parametrize("value", [True, 0, 2.0, "3"])
def test_check_int_refuses_bools_floats_strings_and_too_small(value):
    with pytest.raises(GenlabError, match="VAE setting latent_dim must be a positive integer"):
        check_int("VAE", "latent_dim", value)
    check_int("VAE", "latent_dim", 3)


def test_check_number_says_its_range():
    check_number("DDPM", "eta", 0.5, 0, 1)
    with pytest.raises(GenlabError, match=r"eta must be a number >= 0 and <= 1, got 1.5"):
        check_number("DDPM", "eta", 1.5, 0, 1)
    with pytest.raises(GenlabError, match="lr must be a positive number, got True"):
        check_number("GAN", "lr", True, above=0, what="a positive number")
    with pytest.raises(GenlabError, match="got nan"):
        check_number("GAN", "lr", float("nan"), above=0)


def test_check_choice_and_bool():
    check_choice("VAE", "arch", "mlp", ("mlp", "conv"))
    with pytest.raises(GenlabError, match="unknown VAE arch 'rnn'; choose one of mlp, conv"):
        check_choice("VAE", "arch", "rnn", ("mlp", "conv"))
    with pytest.raises(GenlabError, match="must be true or false, got 1"):
        check_bool("VAE", "binarize", 1)


def test_check_int_bounds_from_above_where_asked():
    check_int("DDPM", "diffusion_steps", 100_000, minimum=2, maximum=100_000)
    with pytest.raises(GenlabError, match="diffusion_steps must be an integer from 2 to 100,000, got 100001"):
        check_int("DDPM", "diffusion_steps", 100_001, minimum=2, maximum=100_000)
