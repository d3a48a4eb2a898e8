"""DDPM's settings: everything needed to rebuild a diffusion model (saved in run.json, presets resolved)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_choice, check_int, check_number
from genlab.models.ddpm.process import PREDICTIONS, SCHEDULES
from genlab.models.ddpm.samplers import SAMPLERS

FAMILY = "DDPM"  # the name config errors give


MAX_DIFFUSION_STEPS = 100_000


@dataclass(frozen=True)
class UNetPreset:
    """The UNet's sizes a preset stands for (each overridable by the config field of the same name)."""

    channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    dropout: float


# UNet sizes. "tiny" (0.64M parameters at 28x28, the default) is sized for minutes on a CPU: 16 channels
# at full resolution, where a step costs most, and 64 at the lowest; a step of 64 costs ~2.5x less than
# "small"'s, and in the default budget it reached FID 21.1 on mnist-5k (benchmarks/README.md, time to
# quality). "small" (1.06M) was the default before; neither has dropout, because a short CPU budget
# underfits rather than overfits (and dropout's random masks cost a noticeable share of a CPU step).
# "base" is the usual small-image UNet, with the dropout 0.1 Ho et al. used on CIFAR-10.
PRESETS: Mapping[str, UNetPreset] = MappingProxyType(
    {
        "tiny": UNetPreset(channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, dropout=0.0),
        "small": UNetPreset(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, dropout=0.0),
        "base": UNetPreset(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, dropout=0.1),
    }
)


@dataclass
class DDPMConfig:
    """Everything needed to rebuild a diffusion model (saved in run.json, presets resolved)."""

    preset: str = "tiny"
    channels: int | None = None  # None: the preset's
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int | None = None
    attention: bool = True  # self-attention at the lowest resolution
    dropout: float | None = None  # None: the preset's
    diffusion_steps: int = 1000  # T of the training chain
    schedule: str = "linear"  # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    prediction: str = "epsilon"  # "epsilon" or "v"
    conditional: bool = False
    label_dropout: float = 0.1  # share of training labels replaced by the null class (for guidance)
    lr: float = 1e-3  # Adam; 1e-3 for a short budget (5e-4 before)
    ema: float = 0.999  # 0: sample from the raw weights
    # The defaults of `sample` (and of the per-epoch grids and the Quality section): SDE-DPM-Solver++, 20 steps.
    # On an undertrained network (mnist-5k, 12 epochs of a 0.6M UNet) it scored FID 52.3 on 500 samples in 27 s,
    # ancestral DDPM-50 76.9 in 78 s, deterministic DDIM and DPM-Solver++ far worse (speckled backgrounds).
    sampler: str = "dpm++sde"
    sample_steps: int = 20
    eta: float = 0.0
    guidance: float = 1.0
    likelihood_timesteps: int = 100  # timesteps per image in the bound's stratified estimate (T − 1: all)

    def __post_init__(self) -> None:
        check_choice(FAMILY, "preset", self.preset, tuple(PRESETS))
        if self.channel_mult is not None:
            if not isinstance(self.channel_mult, (tuple, list)):
                raise GenlabError(f"{FAMILY} setting channel_mult must be positive integers, got {self.channel_mult!r}")
            self.channel_mult = tuple(self.channel_mult)  # run.json holds a list
        sizes = self.unet()
        self.channels, self.channel_mult = sizes.channels, sizes.channel_mult
        self.num_res_blocks, self.dropout = sizes.num_res_blocks, sizes.dropout

        check_int(FAMILY, "channels", sizes.channels, minimum=8)
        if sizes.channels % 8:  # GroupNorm's groups divide every width the UNet has
            raise GenlabError(f"{FAMILY} setting channels must be a positive multiple of 8, got {sizes.channels!r}")
        if not sizes.channel_mult:
            raise GenlabError(f"{FAMILY} setting channel_mult must be positive integers, got ()")
        for mult in sizes.channel_mult:
            check_int(FAMILY, "channel_mult", mult)
        check_int(FAMILY, "num_res_blocks", sizes.num_res_blocks)
        check_bool(FAMILY, "attention", self.attention)
        check_number(FAMILY, "dropout", sizes.dropout, minimum=0, below=1)
        # Bounded above: the schedule is computed for real even while the model is sized on the meta
        # device (genlab.models.footprint), and no diffusion is trained with more steps than this.
        check_int(FAMILY, "diffusion_steps", self.diffusion_steps, minimum=2, maximum=MAX_DIFFUSION_STEPS)
        check_choice(FAMILY, "schedule", self.schedule, SCHEDULES)
        check_choice(FAMILY, "prediction", self.prediction, PREDICTIONS)
        check_bool(FAMILY, "conditional", self.conditional)
        check_number(FAMILY, "label_dropout", self.label_dropout, minimum=0, below=1)
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")
        check_number(FAMILY, "ema", self.ema, minimum=0, below=1)
        check_choice(FAMILY, "sampler", self.sampler, SAMPLERS)
        check_int(FAMILY, "sample_steps", self.sample_steps)
        if self.sample_steps > self.diffusion_steps:
            raise GenlabError(
                f"{FAMILY} setting sample_steps must be from 1 to diffusion_steps "
                f"({self.diffusion_steps}), got {self.sample_steps!r}"
            )
        check_number(FAMILY, "eta", self.eta, minimum=0, maximum=1)
        check_number(FAMILY, "guidance", self.guidance, minimum=0)
        check_int(FAMILY, "likelihood_timesteps", self.likelihood_timesteps)

    def unet(self) -> UNetPreset:
        """The UNet's sizes: the fields given, the preset's for those left None."""
        preset = PRESETS[self.preset]
        return UNetPreset(
            preset.channels if self.channels is None else self.channels,
            preset.channel_mult if self.channel_mult is None else self.channel_mult,
            preset.num_res_blocks if self.num_res_blocks is None else self.num_res_blocks,
            preset.dropout if self.dropout is None else self.dropout,
        )
