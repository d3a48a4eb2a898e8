"""The GAN family's losses: each variant's formulas on D's scores, the gradient penalty, the
mode-seeking term, and the diversity measure. Scores are D's outputs (B,) on images in [-1, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Critic = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]  # (images, labels) -> scores (B,)


def nonsaturating_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(D(real), 1) + BCE(D(fake), 0) (Goodfellow et al. 2014)."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)), i.e. BCE(D(G(z)), 1): G maximises log D(G(z)) rather than minimising log(1 - D(G(z)))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def wasserstein_estimate(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[C(real)] - E[C(fake)]: the critic's estimate of the Wasserstein distance (Arjovsky et al. 2017)."""
    return real_scores.mean() - fake_scores.mean()


def critic_loss(wasserstein: torch.Tensor, penalty: torch.Tensor, gp_weight: float) -> torch.Tensor:
    """-(E[C(real)] - E[C(fake)]) + lambda * gradient penalty (Gulrajani et al. 2017, eq. 3)."""
    return -wasserstein + gp_weight * penalty


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E[C(G(z))]: G raises the critic's score of its images."""
    return -fake_scores.mean()


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None, mix: torch.Tensor
) -> torch.Tensor:
    """E[(||grad_x C(x_hat)||_2 - 1)^2] at x_hat = mix * real + (1 - mix) * fake (Gulrajani et al. 2017, eq. 3).

    `mix` (B, 1, 1, 1) in [0, 1] places each x_hat on the line between a real and a fake image;
    the graph is kept (create_graph) so the penalty trains the critic.
    """
    mixed = (mix * real + (1 - mix) * fake).requires_grad_(True)  # (B, C, H, W)
    (gradient,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||_2^2] on real images x (Mescheder et al. 2018, R1), the graph kept so it trains D.

    `real` must have required grad when D scored it into `real_logits` (B,).
    """
    (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # (B, C, H, W)
    return gradient.flatten(1).pow(2).sum(dim=1).mean()


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """1 / (|G(z1, y) - G(z2, y)| / |z1 - z2|) over the pairs (i, half + i) (Mao et al. 2019, MSGAN).

    Small when two noise vectors of one label give different images: it penalises a G that
    ignores z within a class.
    """
    half = len(fake) // 2
    images = (fake[:half] - fake[half : 2 * half]).abs().mean()
    noise = (z[:half] - z[half : 2 * half]).abs().mean()
    return 1 / (images / noise + 1e-5)


def mean_pairwise_distance(images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L2 distance over pairs of images (B, ...), only pairs with equal labels when given; NaN if none."""
    flat = images.flatten(1).float()
    distances = torch.cdist(flat, flat)  # (B, B)
    pairs = torch.ones_like(distances, dtype=torch.bool).triu(diagonal=1)
    if labels is not None:
        pairs &= labels[:, None] == labels[None, :]
    return distances[pairs].mean()
