"""The Gaussian diffusion process (Ho et al. 2020) with linear or cosine schedules, ε- or v-prediction.

Forward: q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 − ᾱ_t) I), with ᾱ_t = prod_{s<=t} (1 − β_s) and
t = 0 .. T−1 (index t here is step t+1 of the papers). Images live in [-1, 1]. A network
predicts either the noise ε (Ho et al. 2020) or v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0 (Salimans &
Ho 2022); `split` turns either prediction into (x̂_0, ε̂). Schedules are computed in float64
and stored as float32 buffers, indexed by integer timesteps (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("epsilon", "v")
NetworkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, C, H, W), t (B,)) -> output


def beta_schedule(name: str, steps: int) -> torch.Tensor:
    """β_1..β_T in float64 (T,): "linear" 1e-4 → 0.02 scaled to T (Ho et al. 2020), or "cosine"
    ᾱ(t) = cos²(((t/T) + s) / (1 + s) · π/2), s = 0.008, β clipped at 0.999 (Nichol & Dhariwal 2021)."""
    if steps < 1:
        raise GenlabError(f"a diffusion needs at least 1 step, got {steps}")
    # device="cpu": the schedule is a small constant, computed for real even while genlab.models.footprint
    # sizes a model on the meta device (arithmetic on meta tensors would load torch's compiler).
    if name == "linear":
        scale = 1000 / steps  # keeps ᾱ_T near 0 for any T, as improved DDPM does
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64, device="cpu")
    if name == "cosine":
        s = 0.008
        t = torch.arange(steps + 1, dtype=torch.float64, device="cpu") / steps
        alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise GenlabError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


class GaussianDiffusion(nn.Module):
    """The schedule's constants as buffers (so they follow the model's device) and the closed forms."""

    betas: torch.Tensor  # β_t (T,)
    alpha_bar: torch.Tensor  # ᾱ_t (T,)
    alpha_bar_previous: torch.Tensor  # ᾱ_{t-1} (T,)
    posterior_variance: torch.Tensor  # β̃_t (T,)
    posterior_log_variance: torch.Tensor  # log β̃_t (T,), β̃_0 replaced by β̃_1
    posterior_mean_x0: torch.Tensor  # the posterior mean's coefficients (T,) of x_0 ...
    posterior_mean_xt: torch.Tensor  # ... and of x_t

    def __init__(self, steps: int = 1000, schedule: str = "linear", prediction: str = "epsilon"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise GenlabError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.steps, self.schedule, self.prediction = steps, schedule, prediction
        betas = beta_schedule(schedule, steps)
        alpha_bar = torch.cumprod(1 - betas, dim=0)  # ᾱ_t (T,)
        previous = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), alpha_bar[:-1]])  # ᾱ_{t-1}, ᾱ_{-1} = 1
        posterior_variance = betas * (1 - previous) / (1 - alpha_bar)  # β̃_t (Ho et al. eq. 7)
        constants = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_previous": previous,
            "posterior_variance": posterior_variance,
            # log β̃ with β̃_0 = 0 replaced by β̃_1, as the reference code does
            "posterior_log_variance": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            "posterior_mean_x0": betas * previous.sqrt() / (1 - alpha_bar),
            "posterior_mean_xt": (1 - previous) * (1 - betas).sqrt() / (1 - alpha_bar),
        }
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)  # rebuilt from the config

    @staticmethod
    def at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1, 1) to broadcast over images like `like`."""
        return values[t].reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε: a draw from q(x_t | x_0)."""
        alpha_bar = self.at(self.alpha_bar, t, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: ε, or v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0."""
        if self.prediction == "epsilon":
            return noise
        alpha_bar = self.at(self.alpha_bar, t, x0)
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0

    def split(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's output at (x_t, t) as (x̂_0, ε̂), exact inverses of q_sample and `target`."""
        alpha_bar = self.at(self.alpha_bar, t, x_t)
        a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        if self.prediction == "epsilon":
            return (x_t - b * output) / a, output
        return a * x_t - b * output, b * x_t + a * output  # x_0 = a x_t − b v, ε = b x_t + a v

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7)."""
        mean = self.at(self.posterior_mean_x0, t, x_t) * x0 + self.at(self.posterior_mean_xt, t, x_t) * x_t
        return mean, self.at(self.posterior_log_variance, t, x_t)

    def training_losses(
        self,
        network: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        **network_kwargs: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-image mean squared error between the network's output at (x_t, t) and its target, (B,).

        With ε-prediction this is Ho et al.'s simplified objective L_simple. `network_kwargs` (the
        labels) go to the network unchanged.
        """
        noise = torch.randn_like(x0) if noise is None else noise
        output = network(self.q_sample(x0, t, noise), t, **network_kwargs)
        return F.mse_loss(output, self.target(x0, t, noise), reduction="none").flatten(1).mean(dim=1)

    # ---------------------------------------------------------------- the variational bound

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) ‖ N(0, I)) in nats per image (B,): what pure noise fails to forget of x_0."""
        alpha_bar = self.alpha_bar[-1].double()
        mean, variance = alpha_bar.sqrt() * x0.double(), 1 - alpha_bar
        return (0.5 * (variance - 1 - variance.log() + mean**2)).flatten(1).sum(dim=1)

    def bound_term(self, network: NetworkFn, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One term of the bound at timestep t (B,), in nats per image, for one draw x_t ~ q(x_t | x_0).

        t > 0: L_t = KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)), both Gaussian with the posterior
        variance β̃_t, the model's mean from its clipped x̂_0. t = 0: L_0 = −log p(x_0 | x_1), the
        discretized Gaussian decoder over the 256 pixel levels (Ho et al. 2020, eq. 13).
        """
        x_t = self.q_sample(x0, t, torch.randn_like(x0))
        x0_hat, _ = self.split(network(x_t, t), x_t, t)
        model_mean, log_variance = self.posterior(x0_hat.clamp(-1, 1), x_t, t)
        true_mean, _ = self.posterior(x0, x_t, t)
        kl = ((true_mean - model_mean) ** 2 / (2 * log_variance.exp())).flatten(1).sum(dim=1)
        decoder = -discretized_gaussian_log_likelihood(x0, model_mean, log_variance).flatten(1).sum(dim=1)
        return torch.where(t == 0, decoder, kl).double()

    def variational_bound(self, network: NetworkFn, x0: torch.Tensor, strata: int) -> torch.Tensor:
        """−log p(x_0) ≤ L_T + Σ_{t>0} L_t + L_0, in nats per image (B,), for x_0 on the 8-bit grid in [-1, 1].

        The sum over the T − 1 KL terms is estimated without bias by stratified sampling: the
        timesteps 1 .. T−1 are cut into `strata` equal runs, one t drawn per run and image, its term
        weighted by the run's length (strata = T − 1 sums every term). Noise comes from torch's
        global generator: seed it for a reproducible estimate.
        """
        batch = len(x0)
        total = self.prior_kl(x0) + self.bound_term(network, x0, torch.zeros(batch, dtype=torch.long, device=x0.device))
        strata = max(1, min(strata, self.steps - 1))
        edges = torch.linspace(1, self.steps, strata + 1, dtype=torch.float64).round().long().tolist()
        for low, high in zip(edges[:-1], edges[1:]):
            t = torch.randint(low, high, (batch,), device=x0.device)
            total = total + (high - low) * self.bound_term(network, x0, t)
        return total


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor
) -> torch.Tensor:
    """log P(x) per pixel for x on the 256-level grid of [-1, 1] under N(mean, exp(log_variance)) binned.

    Each level owns [x − 1/255, x + 1/255]; the end levels own everything below −1 + 1/255 and above
    1 − 1/255, so the 256 probabilities sum to 1.
    """
    x, mean = x.double(), mean.double()
    inverse_std = torch.exp(-0.5 * log_variance.double())
    upper, lower = inverse_std * (x - mean + 1 / 255), inverse_std * (x - mean - 1 / 255)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= x + 1/255)
    log_survival_lower = torch.special.log_ndtr(-lower)  # log P(X >= x − 1/255)
    middle = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_survival_lower, middle))
