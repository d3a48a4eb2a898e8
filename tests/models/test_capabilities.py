"""Each family declares what it can do, and callers refuse what a family has not declared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genlab.errors import GenlabError
from genlab.models import MODELS
from genlab.models.base import (
    CanComplete,
    CanReconstruct,
    GeneratesText,
    HasEncoder,
    HasLatentSpace,
    HasLikelihood,
    HasSamplerOptions,
    ShowsSamplingChain,
)
from genlab.models.common import eval_mode
from genlab.run import Run

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
CAPABILITIES = (
    HasLikelihood,
    HasLatentSpace,
    HasEncoder,
    CanReconstruct,
    CanComplete,
    HasSamplerOptions,
    ShowsSamplingChain,
    GeneratesText,
)
DECLARED = {
    "vae": {HasLikelihood, HasLatentSpace, HasEncoder, CanReconstruct},
    "gan": {HasLatentSpace, HasSamplerOptions},
    "dcgan": {HasLatentSpace, HasSamplerOptions},
    "wgan-gp": {HasLatentSpace, HasSamplerOptions},
    "ddpm": {HasLikelihood, HasLatentSpace, HasSamplerOptions, ShowsSamplingChain},
    "pixelcnn": {HasLikelihood, CanComplete, HasSamplerOptions},
    "realnvp": {HasLikelihood, HasLatentSpace, HasEncoder},
    "gpt": {GeneratesText},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_family_declares_what_it_can_do(name):
    assert {capability for capability in CAPABILITIES if issubclass(MODELS[name], capability)} == DECLARED[name]


def test_a_run_without_a_latent_space_refuses_to_interpolate():
    with pytest.raises(GenlabError, match="pixelcnn family has no latent space"):
        Run.load(FIXTURES / "pixelcnn").interpolate(1, 4)


def test_a_run_that_cannot_complete_names_the_families_that_can():
    with pytest.raises(GenlabError, match="use a pixelcnn run"):
        Run.load(FIXTURES / "vae").complete(torch.zeros(1, 8, 8), rows=4, n=2)


def test_sampler_options_go_only_to_families_that_declare_them():
    with pytest.raises(GenlabError, match="vae family samples without --steps; only ddpm models take it"):
        Run.load(FIXTURES / "vae").sample(2, steps=3)
    with pytest.raises(GenlabError, match="--eta must be from 0 to 1"):
        Run.load(FIXTURES / "ddpm").sample(2, eta=2.0)


def test_eval_mode_restores_each_submodule():
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    network[1].eval()
    with eval_mode(network):
        assert not any(module.training for module in network.modules())
    assert [module.training for module in network.modules()] == [True, True, False]
    with pytest.raises(RuntimeError), eval_mode(network):
        raise RuntimeError("restored even when the block fails")
    assert network.training and not network[1].training
