"""Pixel transforms between the stored uint8 images and what the networks see.

Every function works on whole batches of tensors (B, C, H, W) and keeps the device.
"""

from __future__ import annotations

import torch


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1] (pixel 150 becomes 150/255 = 0.588)."""
    return images.to(torch.float32) / 255.0


def to_symmetric(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of a tanh output."""
    return x * 2.0 - 1.0


def from_symmetric(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 [0, 255], rounded to nearest."""
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*H*W)."""
    return x.reshape(x.shape[0], -1)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: each pixel becomes 1 with probability equal to its intensity.

    A fresh draw per call (Salakhutdinov & Murray 2008), so the model never sees the same
    binary image twice; pass a seeded `generator` for a fixed binarization (a test split).
    """
    return torch.bernoulli(x, generator=generator)
