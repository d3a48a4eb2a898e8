"""Real NVP's settings (everything needed to rebuild the flow, saved in run.json) and the number of
scales an image size allows."""

from __future__ import annotations

from dataclasses import dataclass

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_int, check_number

FAMILY = "RealNVP"  # the name config errors give
MAX_AUTO_SCALES = 3  # scales=None: as many as the size allows, up to this (28x28: 28 -> 14 -> 7)
# A conditional flow samples cooler by default: nearer each class's mode, its samples read as their label. On
# mnist-5k at the default budget with the class prior (benchmarks/README.md): temperature 1 labelled 62.9% right
# (FID 91.4, recall 0.54), 0.8 77.7% (70.7, 0.37), 0.7 84.3% (63.2, 0.28), 0.6 90.2% (59.4, 0.17).
CONDITIONAL_TEMPERATURE = 0.6


@dataclass
class RealNVPConfig:
    """Everything needed to rebuild a Real NVP flow (saved in run.json, scales resolved)."""

    hidden_channels: int = 32  # width of every coupling network (the cost grows with its square)
    res_blocks: int = 1  # residual blocks per coupling network (the paper used several; each adds two convolutions)
    scales: int | None = None  # None: as many as the image size allows, up to 3 (28x28: 3, 8x8: 2, 32x32: 3)
    conditional: bool = False  # a class embedding added inside every coupling network
    # A conditional flow's prior: a learned Gaussian per class (Glow's class-conditional prior) rather than N(0, I)
    # for every class, so the label also moves where a class's latents sit. Ignored without `conditional`.
    class_prior: bool = True
    alpha: float = 0.05  # logit transform y = logit(alpha + (1 - 2 alpha) x), as in the paper
    # Sampling draws z ~ N(0, temperature^2 I) (from a class's Gaussian: means[y] + temperature * scales[y] * e).
    # None: 1 for an unconditional flow; CONDITIONAL_TEMPERATURE for a conditional one (resolved, so run.json holds it).
    temperature: float | None = None
    # Adam's step. 3e-3 is no better: on mnist-5k at the default budget it gave FID 114.8 on one thread and 164.1 on
    # two (the same seed; its test bits/dim wobble between epochs), against 155.8 at 1e-3 (benchmarks/README.md).
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 penalty in Adam (the paper: 5e-5 on weight-norm scales)
    grad_clip: float = 100.0  # largest gradient norm per step (0: no clipping); tames rare spikes
    # A moving average of the flow's weights, used for sampling, encoding and the test likelihood (0: the raw
    # weights). The flow has no batch statistics, so the average is of parameters only. It smooths the test
    # bits/dim that wobble between epochs (2.12 -> 1.86 at epoch 15 of mnist-5k) and brought FID from 155.8 to 135.5
    # at 16 epochs (benchmarks/README.md, time to quality).
    ema: float = 0.999

    def __post_init__(self) -> None:
        check_int(FAMILY, "hidden_channels", self.hidden_channels)
        check_int(FAMILY, "res_blocks", self.res_blocks)
        if self.scales is not None and (
            isinstance(self.scales, bool) or not isinstance(self.scales, int) or self.scales < 1
        ):
            raise GenlabError(f"{FAMILY} setting scales must be a positive integer or None (auto), got {self.scales!r}")
        check_bool(FAMILY, "conditional", self.conditional)
        check_bool(FAMILY, "class_prior", self.class_prior)
        if self.temperature is None:
            self.temperature = CONDITIONAL_TEMPERATURE if self.conditional else 1.0
        check_number(FAMILY, "alpha", self.alpha, above=0, below=0.5, what="a number in (0, 0.5)")
        check_number(FAMILY, "temperature", self.temperature, above=0, what="a positive number")
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")
        check_number(FAMILY, "weight_decay", self.weight_decay, minimum=0, what="a number >= 0")
        check_number(FAMILY, "grad_clip", self.grad_clip, minimum=0, what="a number >= 0 (0: off)")
        check_number(FAMILY, "ema", self.ema, minimum=0, below=1, what="in [0, 1) (0: off; 0.999 is typical)")

    @property
    def sampling_temperature(self) -> float:
        """`temperature` once resolved (never None after __post_init__)."""
        assert self.temperature is not None
        return self.temperature


def count_scales(scales: int | None, height: int, width: int) -> int:
    """The number of scales for an image of this size, or a GenlabError saying why it cannot be built.

    Each scale but the last squeezes 2x2, so it needs even sizes; the last scale's checkerboard
    needs at least 2x2 pixels. `None` picks the most scales up to MAX_AUTO_SCALES whose
    smallest scale keeps at least 4x4 pixels, and at least one squeeze.
    """
    if scales is None:
        scales, h, w = 1, height, width
        while scales < MAX_AUTO_SCALES and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
            scales, h, w = scales + 1, h // 2, w // 2
        if scales == 1:
            raise GenlabError(
                f"RealNVP's multi-scale architecture squeezes the image 2x2 at least once, so height and width "
                f"must be even and at least 8 (e.g. 8x8, 28x28, 32x32); these are {height}x{width}: resize with "
                "--size, or --set scales=1 for a single-scale flow without squeezes"
            )
        return scales
    factor = 2 ** (scales - 1)
    if height % factor or width % factor or min(height, width) // factor < 2:
        raise GenlabError(
            f"RealNVP with scales={scales} squeezes 2x2 {scales - 1} times, so height and width must be multiples "
            f"of {factor} and at least {2 * factor}; these are {height}x{width}: lower scales or resize with --size"
        )
    return scales
