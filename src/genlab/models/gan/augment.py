"""Differentiable augmentation of everything D sees (DiffAugment, Zhao et al. 2020).

On a few thousand images D soon memorises the training set: its accuracy nears 1 and G's
gradient stops saying anything useful. Shifting and cutting both real and generated images,
the same random way, before every D call (G's step included, through which gradients flow)
makes memorising useless while leaving what D must learn (real vs generated) unchanged; G
still draws whole, unshifted images. Images are (B, C, H, W) in [-1, 1]; the randomness comes
from torch's global generator, which checkpoints save.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("translation", "cutout")


def augment(images: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`images` with each named augmentation applied in turn, independently per image."""
    for name in policy:
        images = translate(images) if name == "translation" else cut_out(images)
    return images


def translate(images: torch.Tensor, fraction: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels, up to `fraction` of its height and width each way; what moves in is 0."""
    b, c, h, w = images.shape
    pad_h, pad_w = int(h * fraction + 0.5), int(w * fraction + 0.5)
    dy = torch.randint(-pad_h, pad_h + 1, (b, 1, 1), device=images.device)
    dx = torch.randint(-pad_w, pad_w + 1, (b, 1, 1), device=images.device)
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h))  # (B, C, H + 2 pad_h, W + 2 pad_w), zeros around
    rows = torch.arange(h, device=images.device).view(1, h, 1) + pad_h - dy  # (B, H, 1): source row of each row
    cols = torch.arange(w, device=images.device).view(1, 1, w) + pad_w - dx  # (B, 1, W)
    index = (rows * (w + 2 * pad_w) + cols).flatten(1)  # (B, H*W) into the flattened padded image
    return padded.flatten(2).gather(2, index.unsqueeze(1).expand(b, c, -1)).view(b, c, h, w)


def cut_out(images: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """Set a square of `fraction` of the height and width to 0, centred anywhere in each image."""
    b, _, h, w = images.shape
    size_h, size_w = int(h * fraction + 0.5), int(w * fraction + 0.5)
    centre_y = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=images.device)
    centre_x = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    inside = ((rows - centre_y + size_h // 2) >= 0) & ((rows - centre_y + size_h // 2) < size_h)
    inside = inside & ((cols - centre_x + size_w // 2) >= 0) & ((cols - centre_x + size_w // 2) < size_w)
    return images * (~inside).unsqueeze(1).to(images.dtype)  # (B, 1, H, W) mask over every channel
