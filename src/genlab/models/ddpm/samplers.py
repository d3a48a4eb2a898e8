"""Reverse the diffusion: DDPM's ancestral sampler, DDIM and DPM-Solver++, for any number of steps, by name.

Both walk a subsequence τ_S > ... > τ_1 of the T training timesteps (evenly spaced, always
ending at t = 0) and take, from x at τ_i to τ_{i-1} (ᾱ_prev = 1 after the last step):

    x̂_0, ε̂ = the network's prediction at (x, τ_i), x̂_0 clipped to [-1, 1] and ε̂ made consistent
    x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z,   z ~ N(0, I)

DDIM (Song et al. 2021) uses σ = η sqrt((1 − ᾱ_prev)/(1 − ᾱ)) sqrt(1 − ᾱ/ᾱ_prev); η = 0 is
deterministic given x_T. DDPM's ancestral step (Ho et al. 2020) is the same update with η = 1:
its mean is exactly the posterior mean of q(x_prev | x, x̂_0) and σ² the posterior variance β̃ of
the respaced chain (Nichol & Dhariwal 2021 respacing). All noise comes from `generator`.

DPM-Solver++ (Lu et al. 2022) is `dpm_solver` below. `SAMPLER_REGISTRY` maps each sampler's name
(what --sampler takes) to its function; `run_sampler` looks one up by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import torch

from genlab.errors import GenlabError
from genlab.models.ddpm.process import GaussianDiffusion, NetworkFn

# Hears each step as it is taken: (step 1..S, S, x_t after the step, the step's prediction x̂_0), both in [-1, 1];
# it may raise to stop the sampler (the explorer's cancelled requests).
StepListener = Callable[[int, int, torch.Tensor, torch.Tensor], None]


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
        on_step: StepListener | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


def respaced(total: int, steps: int) -> torch.Tensor:
    """`steps` timesteps from 0 .. total-1, evenly spaced, increasing, first 0 and last total-1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
        raise GenlabError(f"--steps must be from 1 to the model's {total} diffusion steps, got {steps!r}")
    return torch.linspace(0, total - 1, steps, dtype=torch.float64).round().long().unique()


def gaussian_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """N(0, I) of `shape`, drawn on the generator's device (so a seed gives the same draw anywhere), moved to
    the model's `device`."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


def respaced_timesteps(diffusion: GaussianDiffusion, steps: int) -> torch.Tensor:
    """`respaced` over the diffusion's T timesteps: the grid DDIM and the ancestral sampler walk."""
    return respaced(diffusion.steps, steps)


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
    on_step: StepListener | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM over `steps` respaced timesteps with noise scale `eta` in [0, 1] (0: deterministic given x_T).

    Returns x_0 (shape) in [-1, 1] and every `trajectory_every`-th x_t from x_T to x_0 (0: none).
    `initial` replaces the first draw x_T (e.g. a latent to interpolate from); `on_step` hears every step.
    `network(x_t, t)` returns the diffusion's prediction (ε or v); wrap it for labels or guidance.
    """
    if not 0.0 <= eta <= 1.0:
        raise GenlabError(f"DDIM's eta must be in [0, 1], got {eta}")
    timesteps = respaced(diffusion.steps, steps).to(device)

    def noise() -> torch.Tensor:
        return gaussian_noise(shape, generator, device)

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
        if on_step is not None:
            on_step(len(timesteps) - i, len(timesteps), x, x0)
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


# ᾱ is floored here before λ is taken: a schedule whose last β is 1 (the linear one over a short chain) has
# ᾱ_T = 0 and λ_T = −∞, which the step sizes cannot hold; at this floor x_T is still pure noise to 1e-5.
MIN_ALPHA_BAR = 1e-10


def log_signal_to_noise(alpha_bar: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ) = ½ log(ᾱ / (1 − ᾱ)), with ᾱ floored at MIN_ALPHA_BAR (finite for every schedule)."""
    alpha_bar = alpha_bar.clamp(min=MIN_ALPHA_BAR)
    return 0.5 * torch.log(alpha_bar / (1 - alpha_bar))


def log_snr_spaced(diffusion: GaussianDiffusion, steps: int) -> torch.Tensor:
    """`steps` timesteps (increasing, first 0 and last T − 1) evenly spaced in λ = log(α/σ), each the
    training timestep nearest its λ; DPM-Solver's spacing for small images, where evenly spaced t would
    leave few steps where a low-resolution image takes shape. Where two λ round to one timestep (near
    t = 0 of a short chain), the later ones move up one timestep at a time, so there are always `steps`."""
    respaced(diffusion.steps, steps)  # the same check of `steps`
    log_snr = log_signal_to_noise(diffusion.alpha_bar.double().cpu())  # λ_t (T,), decreasing in t
    wanted = torch.linspace(float(log_snr[0]), float(log_snr[-1]), steps, dtype=torch.float64)  # decreasing
    timesteps = (log_snr[None, :] - wanted[:, None]).abs().argmin(dim=1).tolist()  # non-decreasing
    for k in range(1, steps):  # strictly increasing ...
        timesteps[k] = max(timesteps[k], timesteps[k - 1] + 1)
    timesteps[-1] = diffusion.steps - 1
    for k in range(steps - 2, -1, -1):  # ... and still ending at T − 1
        timesteps[k] = min(timesteps[k], timesteps[k + 1] - 1)
    return torch.tensor(timesteps, dtype=torch.long)


@torch.no_grad()
def dpm_solver(
    network: NetworkFn,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    *,
    steps: int = 20,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    trajectory_every: int = 0,
    initial: torch.Tensor | None = None,
    on_step: StepListener | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DPM-Solver++(2M) (Lu et al. 2022): the multistep second-order solver of the diffusion ODE in data
    prediction; with `eta` > 0 its SDE variant, adding eta times the SDE's fresh noise at each step.

    Write α = sqrt(ᾱ), σ = sqrt(1 − ᾱ) and λ = log(α/σ) (the log signal-to-noise ratio, which grows
    as t falls). In λ the probability-flow ODE is solved exactly by variation of constants:

        x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^λ x̂_0(x_λ) dλ

    and with x̂_0 held constant over a step of h = λ_t − λ_s that is the first-order step (DDIM's):
    x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) x̂_0(s). The second-order multistep method replaces x̂_0(s)
    by a linear extrapolation from the last two predictions, with r = h_previous / h:

        D = (1 + 1/(2r)) x̂_0(s) − 1/(2r) x̂_0(previous)

    The SDE variant (the paper's SDE-DPM-Solver++(2M)) solves the reverse SDE the same way:
    x_t = (σ_t/σ_s) e^{−h} x_s + α_t (1 − e^{−2h}) D + σ_t sqrt(1 − e^{−2h}) z, with z ~ N(0, I),
    here interpolated by eta: e^{−h} and e^{−2h} become e^{−eta h} and the noise eta-weighted (eta = 0
    is the ODE solver exactly, 1 the SDE solver).

    The network is evaluated at `steps` respaced timesteps τ_S > ... > τ_1 = 0, and the last step goes
    from τ_1 to the clean image (σ = 0, λ = ∞), where the update is x = x̂_0(τ_1). The first step
    (no history) and the last are first order, as the paper does at few steps. x̂_0 is clipped to
    [-1, 1] (the paper's thresholding for pixel data). Returns x_0 and every `trajectory_every`-th x_t;
    `on_step` hears every step.
    """
    if not 0.0 <= eta <= 1.0:
        raise GenlabError(f"DPM-Solver++'s eta must be in [0, 1] (0: the ODE solver, 1: the SDE solver), got {eta}")
    timesteps = log_snr_spaced(diffusion, steps).to(device).flip(0)  # τ_S, ..., τ_1 = 0: decreasing

    def noise() -> torch.Tensor:
        return gaussian_noise(shape, generator, device)

    def coefficients(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha_bar = diffusion.alpha_bar[t].double().clamp(min=MIN_ALPHA_BAR)
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), log_signal_to_noise(alpha_bar)  # α, σ, λ (float64)

    x = noise() if initial is None else initial.to(device)  # x_T ~ N(0, I)
    trajectory = [x.clone()] if trajectory_every else []
    previous_x0: torch.Tensor | None = None
    previous_h = 0.0
    for i, t in enumerate(timesteps):
        output = network(x, t.expand(shape[0]))
        x0 = diffusion.split(output, x, t.expand(shape[0]))[0].clamp(-1, 1)
        _, sigma_s, lambda_s = coefficients(t)
        if i == len(timesteps) - 1:  # τ_1 -> the clean image: σ_t = 0, λ_t = ∞, e^{-h} = 0
            x = x0
        else:
            alpha_t, sigma_t, lambda_t = coefficients(timesteps[i + 1])
            h = float(lambda_t - lambda_s)
            decay = math.exp(-eta * h)  # e^{−h} of the SDE step, 1 for the ODE
            data = x0
            if previous_x0 is not None:  # second order from the second step on
                r = previous_h / h
                data = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * previous_x0
            keep = float(sigma_t / sigma_s) * decay  # the share of x_s carried over
            x = keep * x + float(alpha_t) * (1 - math.exp(-h) * decay) * data
            if eta > 0:
                x = x + float(sigma_t) * math.sqrt(1 - decay**2) * noise()
            previous_x0, previous_h = x0, h
        if on_step is not None:
            on_step(i + 1, len(timesteps), x, x0)
        if trajectory_every and ((i + 1) % trajectory_every == 0 or i == len(timesteps) - 1):
            trajectory.append(x.clone())
    return x, trajectory


@torch.no_grad()
def dpm_solver_sde(
    network: NetworkFn, diffusion: GaussianDiffusion, shape: tuple[int, ...], **options: Any
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """SDE-DPM-Solver++(2M): `dpm_solver` with η = 1, whatever `eta` says. Its fresh noise at every step
    corrects the errors of an undertrained network that the ODE solver carries to the image as speckles."""
    return dpm_solver(network, diffusion, shape, **{**options, "eta": 1.0})


# Each sampler's name in captions and tables.
SAMPLER_TITLES: Mapping[str, str] = MappingProxyType(
    {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM-Solver++", "dpm++sde": "SDE-DPM-Solver++"}
)
# The samplers by the name --sampler takes.
SAMPLER_REGISTRY: Mapping[str, Sampler] = MappingProxyType(
    {"ddpm": ancestral, "ddim": ddim, "dpm++": dpm_solver, "dpm++sde": dpm_solver_sde}
)
SAMPLERS = tuple(SAMPLER_REGISTRY)


def run_sampler(
    network: NetworkFn, diffusion: GaussianDiffusion, shape: tuple[int, ...], *, sampler: str = "ddim", **options: Any
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images x_0 (shape) in [-1, 1] from the sampler registered as `sampler`, and every
    `trajectory_every`-th x_t (0: none); `options` are the keyword arguments every `Sampler` takes."""
    if sampler not in SAMPLER_REGISTRY:
        raise GenlabError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLER_REGISTRY[sampler](network, diffusion, shape, **options)
