"""Writing images: grids as PNG files (Pillow, no torchvision), and raw arrays as .npz."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genlab.data.transforms import to_uint8
from genlab.io import atomic_write_bytes


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, background: float = 1.0) -> torch.Tensor:
    """Tile images (N, C, H, W) in [0, 1] into one image (C, rows*(H+p)+p, nrow*(W+p)+p)."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), background)
    for index, image in enumerate(images.detach().to("cpu", torch.float32)):
        row, col = divmod(index, ncol)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    return grid


def png_bytes(image: torch.Tensor) -> bytes:
    """Encode one image (C, H, W) in [0, 1], C = 1 or 3, as PNG bytes."""
    from PIL import Image

    pixels = to_uint8(image).permute(1, 2, 0).numpy()  # (H, W, C)
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid, atomically; the same images give the same bytes."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(make_grid(images, nrow=nrow, padding=padding)))
    return path


def save_npz(
    images: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None, class_names: Sequence[str] = ()
) -> Path:
    """Write float32 `images` (N, C, H, W) in [0, 1], optional `labels` (N,) and the model's
    `class_names` as an .npz, atomically. The file loads back as the dataset `npz:PATH`.
    """
    arrays = {"images": images.detach().to("cpu", torch.float32).numpy()}
    if labels is not None:
        arrays["labels"] = labels.detach().cpu().numpy()
        if class_names:  # the label space, even when only some classes were drawn
            arrays["class_names"] = np.array(list(class_names), dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
