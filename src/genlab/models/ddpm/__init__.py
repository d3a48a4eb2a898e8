"""Denoising diffusion (Ho et al. 2020): a UNet learns to predict the noise added to an image.

Training picks a timestep t, noises the image with the closed form q(x_t | x_0) and regresses
the UNet's output on the noise (or on v). Generating starts from pure noise and denoises step
by step with DDPM's ancestral sampler or DDIM (deterministic with eta 0), either over any
number of steps up to the training chain's 1,000. The default is the ancestral sampler over 50
respaced steps (DDIM with eta 1): on networks trained for a CPU budget its fresh noise corrects
errors that deterministic DDIM carries forward, for a better FID than DDIM's at the same step
count (benchmarks/README.md has the figures). Conditional models drop the label 10% of the time
during training, so one network gives both the conditional and the unconditional prediction,
which classifier-free guidance mixes: ε̃ = ε(x, ∅) + s (ε(x, y) − ε(x, ∅)) (Ho & Salimans 2022;
s = 0 is unconditional, 1 conditional, > 1 guided). Samples come from an exponential moving
average of the weights (default 0.999).

The process is apart from the network: `GaussianDiffusion` and the samplers take any function
of (x_t, t), so samplers swap without touching the UNet.

config.py     DDPMConfig and its UNet presets, the settings saved in run.json
unet.py       the denoising UNet ε_θ(x_t, t[, y]) and its timestep embedding
process.py    GaussianDiffusion: the noise schedule, q(x_t | x_0), the posterior, training_losses, the bound
samplers.py   DDPM's ancestral sampler and DDIM, respaced timesteps, the registry of sampler names, run_sampler
model.py      DDPM, the family (training step, EMA, likelihood bound, sample, sample_chain, the x_T latent)
explain.py    the family's pipeline stages and prediction pass
"""

from genlab.models.ddpm.config import PRESETS, DDPMConfig, UNetPreset
from genlab.models.ddpm.model import DDPM
from genlab.models.ddpm.process import (
    PREDICTIONS,
    SCHEDULES,
    GaussianDiffusion,
    NetworkFn,
    beta_schedule,
    discretized_gaussian_log_likelihood,
)
from genlab.models.ddpm.samplers import (
    SAMPLER_REGISTRY,
    SAMPLERS,
    Sampler,
    ancestral,
    ddim,
    dpm_solver,
    log_snr_spaced,
    respaced,
    run_sampler,
)
from genlab.models.ddpm.unet import AttentionBlock, ResBlock, UNet, timestep_embedding

__all__ = [
    "DDPM",
    "PREDICTIONS",
    "PRESETS",
    "SAMPLERS",
    "SAMPLER_REGISTRY",
    "SCHEDULES",
    "AttentionBlock",
    "DDPMConfig",
    "GaussianDiffusion",
    "NetworkFn",
    "ResBlock",
    "Sampler",
    "UNet",
    "UNetPreset",
    "ancestral",
    "beta_schedule",
    "ddim",
    "dpm_solver",
    "log_snr_spaced",
    "discretized_gaussian_log_likelihood",
    "respaced",
    "run_sampler",
    "timestep_embedding",
]
