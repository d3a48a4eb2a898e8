"""Writing images: grids as PNG files (Pillow, no torchvision), and raw arrays as .npz.

Both check memory before they allocate: a grid of many images is built as uint8 (the float grid
of make_grid would hold four bytes a value), and an .npz is streamed into its zip member, so
writing N images holds no second copy of them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genlab.data.transforms import to_uint8
from genlab.io import atomic_write_bytes, atomic_writer
from genlab.memory import check_fits


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


def grid_shape(n: int, channels: int, height: int, width: int, nrow: int = 8, padding: int = 2) -> tuple[int, int, int]:
    """(C, H, W) of the grid of `n` images of (channels, height, width) that make_grid tiles."""
    ncol = max(1, min(nrow, n))
    nrows = math.ceil(max(0, n) / ncol)
    return channels, nrows * (height + padding) + padding, ncol * (width + padding) + padding


def grid_bytes(n: int, channels: int, height: int, width: int, nrow: int = 8, padding: int = 2) -> int:
    """The most memory save_grid holds besides the images: the uint8 grid, PIL's copy of it (RGB at four
    bytes a pixel) and the PNG bytes twice (the buffer and its value), at most about the raw size each."""
    c, h, w = grid_shape(n, channels, height, width, nrow, padding)
    return h * w * (c + (4 if c == 3 else 1) + 2 * (c + 1))


def grid_pixels(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """make_grid's tiling of images (N, C, H, W) in [0, 1] as uint8 (H', W', C), built one grid row at a time:
    the same pixels as to_uint8(make_grid(...)), without the float grid."""
    n, c, h, w = images.shape
    _, height, width = grid_shape(n, c, h, w, nrow, padding)
    ncol = max(1, min(nrow, n))
    grid = np.full((height, width, c), 255, dtype=np.uint8)  # the background, 1.0
    for row, start in enumerate(range(0, n, ncol)):
        part = to_uint8(images[start : start + ncol].detach().to("cpu", torch.float32))  # (k, C, H, W)
        top, k = padding + row * (h + padding), len(part)
        band = grid[top : top + h, padding : padding + k * (w + padding)].reshape(h, k, w + padding, c)
        band[:, :, :w] = part.permute(2, 0, 3, 1).numpy()  # (H, k, W, C): image j at columns j*(w+p) ...
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG grid, atomically; the same images give the same bytes.

    A GenlabError, before anything is built, when the grid would not fit in memory.
    """
    from PIL import Image

    path = Path(path)
    n, c, h, w = images.shape
    check_fits(
        grid_bytes(n, c, h, w, nrow, padding),
        f"writing {path} (a grid of {n:,} images)",
        "draw fewer images (--n), or write them as arrays (--format npz)",
    )
    pixels = grid_pixels(images, nrow=nrow, padding=padding)
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_npz(
    images: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None, class_names: Sequence[str] = ()
) -> Path:
    """Write float32 `images` (N, C, H, W) in [0, 1], optional `labels` (N,) and the model's
    `class_names` as an .npz, atomically. The file loads back as the dataset `npz:PATH`.

    The arrays are streamed into the file's zip members a block at a time (np.savez on a file),
    so float32 images on the CPU are written without a copy of them in memory.
    """
    arrays = {"images": images.detach().to("cpu", torch.float32).numpy()}  # a view when already float32 on the CPU
    if labels is not None:
        arrays["labels"] = labels.detach().cpu().numpy()
        if class_names:  # the label space, even when only some classes were drawn
            arrays["class_names"] = np.array(list(class_names), dtype=str)
    path = Path(path)
    with atomic_writer(path) as handle:
        np.savez(handle, allow_pickle=False, **arrays)
    return path
