"""`npz:PATH`: images (and optional labels, class names) in a NumPy .npz file.

Accepted `images`: (N, H, W), (N, C, H, W) or channel-last (N, H, W, C) with C in {1, 3};
uint8 in 0..255, or float in [0, 1] (what `genlab sample --format npz` writes: float32
(N, C, H, W)). Optional `labels` (N,) non-negative ints and `class_names` (K,) strings.
Never unpickles (allow_pickle=False).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError

from .dataset import ImageDataset
from .splits import check_split, select_split
from .transforms import to_uint8

EXPECTED = (
    "expected `images` as uint8 0..255 or float 0..1 with shape (N, H, W), (N, C, H, W) "
    "or (N, H, W, C), C in {1, 3}"
)


def _images(array: np.ndarray, where: str) -> torch.Tensor:
    """`array` as uint8 (N, C, H, W), or a GenlabError saying what is wrong with it."""
    found = f"{where}: `images` is {array.dtype} {array.shape}"
    if array.ndim == 3:
        array = array[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif array.ndim == 4 and array.shape[1] in (1, 3):
        pass  # already (N, C, H, W); preferred when both readings fit
    elif array.ndim == 4 and array.shape[3] in (1, 3):
        array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    else:
        raise GenlabError(f"{found}; {EXPECTED}")
    if array.shape[0] == 0 or 0 in array.shape[2:]:
        raise GenlabError(f"{found}, which holds no pixels; {EXPECTED}")

    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise GenlabError(f"{found} with NaN or infinite values; {EXPECTED}")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise GenlabError(f"{found} with values in [{low:g}, {high:g}]; {EXPECTED}")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64 if array.dtype == np.float64 else np.float32))
        return to_uint8(x)  # round(x * 255)
    raise GenlabError(f"{found}; {EXPECTED} (convert it, e.g. images.astype(np.uint8))")


def _labels(array: np.ndarray, n: int, where: str) -> torch.Tensor:
    """`array` as int64 (N,), or a GenlabError."""
    expected = f"expected `labels` as {n} non-negative integers, shape ({n},)"
    if not np.issubdtype(array.dtype, np.integer) or array.shape != (n,):
        raise GenlabError(f"{where}: `labels` is {array.dtype} {array.shape}; {expected}")
    if n and array.min() < 0:
        raise GenlabError(f"{where}: `labels` has the negative value {int(array.min())}; {expected}")
    return torch.from_numpy(array.astype(np.int64))


def _class_names(array: np.ndarray, labels: torch.Tensor, where: str) -> list[str]:
    """`array` as a list of strings covering every label, or a GenlabError."""
    if array.dtype.kind != "U" or array.ndim != 1:
        raise GenlabError(f"{where}: `class_names` is {array.dtype} {array.shape}; expected a 1-D array of strings")
    names = [str(name) for name in array]
    top = int(labels.max()) if len(labels) else -1
    if top >= len(names):
        raise GenlabError(f"{where}: label {top} has no entry in `class_names`, which has {len(names)} names")
    return names


def load(path: str | Path, split: str, spec: str | None = None) -> ImageDataset:
    """The seeded 80/20 `split` (stratified when labelled) of the arrays in the .npz at `path`."""
    check_split(split)
    file = Path(path).expanduser()
    spec = spec or f"npz:{path}"
    if not file.is_file():
        raise GenlabError(f"{spec}: {file} {'is not a file' if file.exists() else 'does not exist'}")
    try:
        archive = np.load(file, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy array
            raise GenlabError(f"{spec}: {file} holds one bare array; expected an .npz with an `images` array")
        with archive:
            keys = list(archive.keys())
            if "images" not in keys:
                raise GenlabError(
                    f"{spec}: {file} has arrays {keys}; expected `images` (and optional `labels`, `class_names`)"
                )
            arrays = {key: archive[key] for key in ("images", "labels", "class_names") if key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # ValueError: pickled object arrays
        raise GenlabError(f"{spec}: {file} is not a readable .npz file ({error})") from None

    images = _images(arrays["images"], spec)
    labels, names = None, []
    if "labels" in arrays:
        labels = _labels(arrays["labels"], len(images), spec)
        if "class_names" in arrays:
            names = _class_names(arrays["class_names"], labels, spec)
        else:
            names = [str(k) for k in range(int(labels.max()) + 1)] if len(labels) else []
    elif "class_names" in arrays:
        raise GenlabError(f"{spec}: `class_names` without `labels`; add `labels` (N,) or drop `class_names`")
    return select_split(ImageDataset(images, labels, names, spec), split)
