"""Reverse the diffusion: DDPM's ancestral sampler and DDIM, both for any number of steps, by name.

Both walk a subsequence τ_S > ... > τ_1 of the T training timesteps (evenly spaced, always
ending at t = 0) and take, from x at τ_i to τ_{i-1} (ᾱ_prev = 1 after the last step):

    x̂_0, ε̂ = the network's prediction at (x, τ_i), x̂_0 clipped to [-1, 1] and ε̂ made consistent
    x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z,   z ~ N(0, I)

DDIM (Song et al. 2021) uses σ = η sqrt((1 − ᾱ_prev)/(1 − ᾱ)) sqrt(1 − ᾱ/ᾱ_prev); η = 0 is
deterministic given x_T. DDPM's ancestral step (Ho et al. 2020) is the same update with η = 1:
its mean is exactly the posterior mean of q(x_prev | x, x̂_0) and σ² the posterior variance β̃ of
the respaced chain (Nichol & Dhariwal 2021 respacing). All noise comes from `generator`.

`SAMPLER_REGISTRY` maps each sampler's name (what --sampler takes) to its function; `run_sampler`
looks one up by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

import torch

from genlab.errors import GenlabError
from genlab.models.ddpm.process import GaussianDiffusion, NetworkFn


class Sampler(Protocol):
    """What every registered sampler takes and gives: images x_0 in [-1, 1] and the kept x_t."""

    def __call__(
        self,
        network: NetworkFn,
        diffusion: GaussianDiffusion,
        shape: tuple[int, ...],
        *,
        steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        trajectory_every: int = 0,
        initial: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


def respaced(total: int, steps: int) -> torch.Tensor:
    """`steps` timesteps from 0 .. total-1, evenly spaced, increasing, first 0 and last total-1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
        raise GenlabError(f"--steps must be from 1 to the model's {total} diffusion steps, got {steps!r}")
    return torch.linspace(0, total - 1, steps, dtype=torch.float64).round().long().unique()


@torch.no_grad()
def ddim(
    network: NetworkFn,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    trajectory_every: int = 0,
    initial: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM over `steps` respaced timesteps with noise scale `eta` in [0, 1] (0: deterministic given x_T).

    Returns x_0 (shape) in [-1, 1] and every `trajectory_every`-th x_t from x_T to x_0 (0: none).
    `initial` replaces the first draw x_T (e.g. a latent to interpolate from).
    `network(x_t, t)` returns the diffusion's prediction (ε or v); wrap it for labels or guidance.
    """
    if not 0.0 <= eta <= 1.0:
        raise GenlabError(f"DDIM's eta must be in [0, 1], got {eta}")
    timesteps = respaced(diffusion.steps, steps).to(device)

    def noise() -> torch.Tensor:  # drawn on the generator's device, moved to the model's
        where = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=where).to(device)

    x = noise() if initial is None else initial.to(device)  # x_T ~ N(0, I)
    trajectory = [x.clone()] if trajectory_every else []
    for i in range(len(timesteps) - 1, -1, -1):
        t = timesteps[i].expand(shape[0])  # (B,)
        x0, eps = diffusion.split(network(x, t), x, t)
        alpha_bar = diffusion.at(diffusion.alpha_bar, t, x)
        x0 = x0.clamp(-1, 1)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()  # consistent with the clipped x̂_0
        if i == 0:
            x = x0
        else:
            previous = diffusion.at(diffusion.alpha_bar, timesteps[i - 1].expand(shape[0]), x)
            sigma = eta * ((1 - previous) / (1 - alpha_bar) * (1 - alpha_bar / previous)).sqrt()
            x = previous.sqrt() * x0 + (1 - previous - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0:
                x = x + sigma * noise()
        if trajectory_every and ((len(timesteps) - i) % trajectory_every == 0 or i == 0):
            trajectory.append(x.clone())
    return x, trajectory


@torch.no_grad()
def ancestral(
    network: NetworkFn, diffusion: GaussianDiffusion, shape: tuple[int, ...], **options: Any
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DDPM's ancestral sampler: the DDIM update with η = 1, whatever `eta` says (see the module's docstring);
    `options` are the other keyword arguments of `Sampler`."""
    return ddim(network, diffusion, shape, **{**options, "eta": 1.0})


# The samplers by the name --sampler takes; the first is the configs' default.
SAMPLER_REGISTRY: Mapping[str, Sampler] = MappingProxyType({"ddpm": ancestral, "ddim": ddim})
SAMPLERS = tuple(SAMPLER_REGISTRY)


def run_sampler(
    network: NetworkFn, diffusion: GaussianDiffusion, shape: tuple[int, ...], *, sampler: str = "ddim", **options: Any
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images x_0 (shape) in [-1, 1] from the sampler registered as `sampler`, and every
    `trajectory_every`-th x_t (0: none); `options` are the keyword arguments every `Sampler` takes."""
    if sampler not in SAMPLER_REGISTRY:
        raise GenlabError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLER_REGISTRY[sampler](network, diffusion, shape, **options)
