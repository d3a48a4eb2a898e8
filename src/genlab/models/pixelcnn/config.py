"""The Gated PixelCNN's settings: everything needed to rebuild the model (saved in run.json)."""

from __future__ import annotations

from dataclasses import dataclass

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_int, check_number

FAMILY = "PixelCNN"  # the name config errors give


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
    binarize: bool = False  # Bernoulli pixels, trained on dynamically binarized images (binarized-MNIST protocol)
    lr: float = 1e-3  # Adam step

    def __post_init__(self) -> None:
        check_int(FAMILY, "channels", self.channels)
        check_int(FAMILY, "layers", self.layers)
        check_int(FAMILY, "head_channels", self.head_channels)
        check_int(FAMILY, "kernel_size", self.kernel_size, minimum=3)
        if self.kernel_size % 2 == 0:  # the masks centre the kernel on the current pixel
            raise GenlabError(f"{FAMILY} setting kernel_size must be an odd integer, got {self.kernel_size!r}")
        check_bool(FAMILY, "conditional", self.conditional)
        check_bool(FAMILY, "binarize", self.binarize)
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")
