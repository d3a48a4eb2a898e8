"""The VAE's densities and its loss: log q(z|x) and log p(z), log p(x|z), and the negative ELBO."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 / logvar.exp()).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of pixels x in [0, 1] under Bernoulli(sigmoid(logits)), summed per image: (B,)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per row, (B,), in closed form
    (Kingma & Welling 2014, Appendix B): -1/2 * sum(1 + logvar - mean^2 - exp(logvar))."""
    return -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)


def negative_elbo(
    logits: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image negative ELBO in nats and its KL term, both (B,).

    -ELBO = -E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), the expectation estimated by the one z behind `logits`.
    """
    kl = kl_to_standard_normal(mean, logvar)
    return -bernoulli_log_likelihood(logits, x) + kl, kl
