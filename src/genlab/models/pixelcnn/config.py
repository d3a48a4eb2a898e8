"""The Gated PixelCNN's settings: everything needed to rebuild the model (saved in run.json)."""

from __future__ import annotations

from dataclasses import dataclass

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_int, check_number

FAMILY = "PixelCNN"  # the name config errors give
# A conditional model's sampling default (with a null class to guide by). At the default budget on mnist-5k (1,000
# samples), with the class maps below, guidance 1, 2 and 3 drew the asked digit 58.4%, 81.3% and 83.6% of the time at
# FID 67.1, 62.4 and 102.2 (recall 0.79, 0.59, 0.35). Without class maps guidance did not pay: 25.6% at FID 148 at 1,
# 39.8% at 169 at 2 (benchmarks/README.md).
CONDITIONAL_GUIDANCE = 2.0
# A conditional model's class maps (channels per class). At the default budget on mnist-5k (seed 0, 1,000 samples) 4
# drew the asked digit 58.4% of the time at FID 67.1, recall 0.79, against 25.6%, 148.3 and 0.72 without, for about
# the same step time (benchmarks/README.md).
CONDITIONAL_CLASS_MAPS = 4


@dataclass
class PixelCNNConfig:
    """Everything needed to rebuild a Gated PixelCNN (saved in run.json)."""

    # Feature maps in each stack (p in the paper; the gates see 2p). 32 (and a head of 64) rather than 64 and 128:
    # a step costs ~0.4x, so a CPU's 10 minutes train ~2.2x the steps, and mnist-5k's FID is 176.0 against 232.0
    # (benchmarks/README.md). A user with a GPU wants --set channels=64 --set head_channels=128.
    channels: int = 32
    layers: int = 8  # gated layers; the first has mask A (excludes the current pixel), the rest mask B
    kernel_size: int = 5  # n: vertical convs are (n//2 + 1) x n, horizontal ones 1 x (n//2 + 1)
    head_channels: int = 64  # width of the two 1x1 layers between the last layer and the logits
    conditional: bool = False  # a class embedding added inside every gate (eq. 4)
    # Classifier-free guidance (Ho & Salimans 2022, used for autoregressive image models since Parti, Yu et al. 2022):
    # a conditional model also learns p(x) from the training labels replaced by a null class (this share of them),
    # and draws each pixel from logits u + guidance (c - u) of its unconditional (u) and conditional (c) ones.
    # 1 draws from p(x|y) itself; above 1 the label shows more. label_dropout 0: no null class, guidance 1 only.
    # None: CONDITIONAL_GUIDANCE for a conditional model with a null class, else 1 (resolved, so run.json holds it).
    label_dropout: float = 0.1
    guidance: float | None = None
    # Location-dependent conditioning (van den Oord et al. 2016, eq. 5): a conditional model also learns a map of
    # this many channels per class, an image-sized template, which every gate reads through a 1x1 conv; each pixel then
    # knows what its class puts there, where the class embedding tells every pixel the same. 0: off. None:
    # CONDITIONAL_CLASS_MAPS for a conditional model, else 0 (resolved, so run.json holds it).
    class_maps: int | None = None
    binarize: bool = False  # Bernoulli pixels, trained on dynamically binarized images (binarized-MNIST protocol)
    lr: float = 1e-3  # Adam step

    def __post_init__(self) -> None:
        check_bool(FAMILY, "conditional", self.conditional)
        check_number(FAMILY, "label_dropout", self.label_dropout, minimum=0, below=1)
        if self.guidance is None:
            self.guidance = CONDITIONAL_GUIDANCE if self.has_null_class else 1.0
        if self.class_maps is None:
            self.class_maps = CONDITIONAL_CLASS_MAPS if self.conditional else 0
        check_int(FAMILY, "channels", self.channels)
        check_int(FAMILY, "layers", self.layers)
        check_int(FAMILY, "head_channels", self.head_channels)
        check_int(FAMILY, "kernel_size", self.kernel_size, minimum=3)
        if self.kernel_size % 2 == 0:  # the masks centre the kernel on the current pixel
            raise GenlabError(f"{FAMILY} setting kernel_size must be an odd integer, got {self.kernel_size!r}")
        check_number(FAMILY, "guidance", self.guidance, minimum=0)
        if self.guidance != 1 and not self.conditional:
            raise GenlabError(
                f"{FAMILY} setting guidance needs a conditional model (--conditional), got {self.guidance!r}"
            )
        if self.guidance != 1 and not self.has_null_class:
            raise GenlabError(
                f"{FAMILY} setting guidance {self.guidance!r} needs the null class that label_dropout > 0 trains; "
                "set guidance=1 or train with label_dropout above 0"
            )
        check_int(FAMILY, "class_maps", self.class_maps, minimum=0, maximum=64)
        if self.class_maps and not self.conditional:
            raise GenlabError(f"{FAMILY} setting class_maps needs a conditional model (--conditional)")
        check_bool(FAMILY, "binarize", self.binarize)
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")

    @property
    def has_null_class(self) -> bool:
        """Whether a conditional model also learns p(x), from labels dropped to a null class: what guidance needs."""
        return self.conditional and self.label_dropout > 0

    @property
    def sampling_guidance(self) -> float:
        """`guidance` once resolved (never None after __post_init__)."""
        assert self.guidance is not None
        return self.guidance

    @property
    def map_channels(self) -> int:
        """`class_maps` once resolved (never None after __post_init__)."""
        assert self.class_maps is not None
        return self.class_maps
