"""The names `genlab --help` lists, kept here without torch so that help answers at once.

Each tuple is tested equal to the registry it mirrors (tests/test_names.py): the model
registry `genlab.models.MODELS`, the diffusion sampler registry, and the families whose
config has an `ema` field.
"""

from __future__ import annotations

FAMILIES = ("vae", "gan", "dcgan", "wgan-gp", "ddpm", "pixelcnn", "realnvp", "gpt")
DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpm++", "dpm++sde")
EMA_FAMILIES = ("gan", "dcgan", "wgan-gp", "ddpm", "realnvp")
# The flags of `genlab sample`/`genlab eval` that go to a family's sampler: every option any
# family declares (`HasSamplerOptions.sampler_options`), by its keyword name.
SAMPLER_OPTIONS = ("sampler", "steps", "eta", "guidance", "truncation")
