"""The VAE's ex-post prior: a Gaussian mixture fitted to the training images' encodings.

A VAE trained toward N(0, I) does not reach it: the encodings of the training images (the
aggregate posterior) leave holes and dense clusters in that Gaussian, and latents drawn from
N(0, I) that land in a hole decode to blurred in-between images. Fitting a density to where the
encodings really are and drawing from it instead (Ghosh et al. 2020, "From variational to
deterministic autoencoders", section 4: ex-post density estimation) keeps the model a VAE (the
same encoder, decoder and training loss) and changes only where new latents come from.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MixturePrior(nn.Module):
    """A K-component full-covariance Gaussian mixture over the latent space, in buffers (saved with the model).

    Before its first `fit` it is one component at N(0, I) repeated K times: the standard prior.
    """

    weights: torch.Tensor
    means: torch.Tensor
    scale_tril: torch.Tensor

    def __init__(self, components: int, latent_dim: int):
        super().__init__()
        self.register_buffer("weights", torch.full((components,), 1 / components))  # (K,), sum 1
        self.register_buffer("means", torch.zeros(components, latent_dim))  # (K, D)
        self.register_buffer("scale_tril", torch.eye(latent_dim).repeat(components, 1, 1))  # (K, D, D) Cholesky

    @property
    def components(self) -> int:
        return len(self.weights)

    @torch.no_grad()
    def fit(self, latents: torch.Tensor, seed: int = 0) -> float:
        """Fit the mixture to `latents` (N, D) by EM (scikit-learn's GaussianMixture, k-means start, seeded);
        return the mean log density of the latents under it, in nats. With fewer latents than components
        the spare components get no weight; with fewer than 2 there is nothing to fit and it stays as it is."""
        if len(latents) < 2:
            return float(self.log_density(latents).mean()) if len(latents) else 0.0
        from sklearn.mixture import GaussianMixture  # imported here: only fitting needs scikit-learn

        points = latents.detach().double().cpu().numpy()
        used = max(1, min(self.components, len(points)))
        # reg_covar keeps each covariance positive definite when a component sits on a few near-equal codes.
        mixture = GaussianMixture(used, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(points)
        weights = torch.zeros(self.components, dtype=torch.float64)
        weights[:used] = torch.from_numpy(mixture.weights_)
        means = self.means.new_zeros(self.means.shape, dtype=torch.float64)
        means[:used] = torch.from_numpy(mixture.means_)
        scale_tril = torch.eye(self.means.shape[1], dtype=torch.float64).repeat(self.components, 1, 1)
        scale_tril[:used] = torch.linalg.cholesky(torch.from_numpy(mixture.covariances_))
        self.weights.copy_(weights)
        self.means.copy_(means)
        self.scale_tril.copy_(scale_tril)
        return float(mixture.score(points))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents (n, D) drawn from the mixture on the generator's device (CPU when None)."""
        device = generator.device if generator is not None else torch.device("cpu")
        weights, means, scale_tril = (t.to(device) for t in (self.weights, self.means, self.scale_tril))
        component = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        noise = torch.randn(n, means.shape[1], 1, generator=generator, device=device)  # (n, D, 1)
        return means[component] + (scale_tril[component] @ noise).squeeze(-1)

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) under the mixture, (B,) for z (B, D): the log of sum_k w_k N(z; mean_k, L_k L_k^T)."""
        used = self.weights > 0
        weights, means, scale_tril = self.weights[used], self.means[used], self.scale_tril[used]
        diff = (z.unsqueeze(1) - means).unsqueeze(-1)  # (B, K, D, 1)
        solved = torch.linalg.solve_triangular(scale_tril, diff, upper=False).squeeze(-1)  # L^-1 (z - mean)
        log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,) log |L| = 1/2 log |covariance|
        dims = z.shape[1]
        log_normal = -0.5 * (solved.pow(2).sum(-1) + dims * math.log(2 * math.pi)) - log_det  # (B, K)
        return torch.logsumexp(log_normal + weights.log(), dim=1)
