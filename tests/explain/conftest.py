"""Tiny trained runs for the report, compare and browser tests: trained once per session, a few seconds each."""

from __future__ import annotations

import pytest

import genlab
from genlab.eval.evaluate import write_results

TINY_VAE = {"hidden_dim": 32, "latent_dim": 4, "iw_samples": 5}
TINY_DDPM = {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 20, "sample_steps": 5}


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory):
    """A small MLP VAE on mnist-5k (28x28: the shipped extractor measures it): 3 epochs, FID every 2
    epochs during training, then a cheap `genlab eval` (100 samples) with memorization and NLL."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    run = genlab.train("vae", "mnist-5k", out, epochs=3, seed=0, progress=False, eval_every=2, eval_n=100,
                       model_config=TINY_VAE)
    write_results(genlab.evaluate(run, n=100, metrics="fid,precision,recall,memorization,nll"), out)
    return out


@pytest.fixture(scope="session")
def tiny_gan(tmp_path_factory):
    """The MLP GAN on 8x8 digits, 2 epochs, never evaluated."""
    out = tmp_path_factory.mktemp("runs") / "gan"
    genlab.train("gan", "digits", out, epochs=2, seed=0, progress=False, model_config={"latent_dim": 8})
    return out


@pytest.fixture(scope="session")
def tiny_ddpm(tmp_path_factory):
    """A tiny DDPM on 8x8 digits, 1 epoch, 5 DDIM steps."""
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    genlab.train("ddpm", "digits", out, epochs=1, seed=0, progress=False, model_config=TINY_DDPM)
    return out
