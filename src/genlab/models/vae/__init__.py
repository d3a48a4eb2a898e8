"""Variational autoencoder (Kingma & Welling 2014).

An encoder maps an image x to a Gaussian q(z|x) = N(mu, diag(sigma^2)) over a small latent
space; a decoder maps a latent z to Bernoulli pixel probabilities p(x|z). Training maximises
the evidence lower bound (ELBO) on log p(x) (or, with train_samples > 1, the IWAE bound);
generating decodes z ~ N(0, I).

config.py     VAEConfig, the settings saved in run.json, and each architecture's default learning rate
networks.py   MLPCoder and ConvCoder: q(z|x)'s parameters from an image, p(x|z)'s logits from a latent
losses.py     the Gaussian and Bernoulli log-densities, the KL to the prior, the negative ELBO
model.py      VAE, the family (training steps, the importance-weighted likelihood, encode/decode/sample)
explain.py    the family's pipeline stages and prediction pass
"""

from genlab.models.vae.config import ARCHITECTURES, DEFAULT_LR, VAEConfig
from genlab.models.vae.losses import (
    bernoulli_log_likelihood,
    gaussian_log_density,
    kl_to_standard_normal,
    negative_elbo,
)
from genlab.models.vae.model import VAE
from genlab.models.vae.networks import ConvCoder, MLPCoder

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_LR",
    "VAE",
    "ConvCoder",
    "MLPCoder",
    "VAEConfig",
    "bernoulli_log_likelihood",
    "gaussian_log_density",
    "kl_to_standard_normal",
    "negative_elbo",
]
