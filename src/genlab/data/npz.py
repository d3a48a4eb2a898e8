"""`npz:PATH`: images (and optional labels, class names) in a NumPy .npz file.

Accepted `images`: (N, H, W), (N, C, H, W) or channel-last (N, H, W, C) with C in {1, 3};
uint8 in 0..255, or float in [0, 1] (what `genlab sample --format npz` writes: float32
(N, C, H, W)). Optional `labels` (N,): class indices 0..K-1, with K = len(`class_names`)
when those (K,) strings are given, else max + 1, at most the number of images (and at
most MAX_CLASSES): arbitrary ids must be remapped first. Never unpickles (allow_pickle=False).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError

from .dataset import ImageDataset
from .spec import ParsedSpec
from .splits import select_splits
from .transforms import to_uint8

MAX_CLASSES = 10_000
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local file header, or an empty zip's end record
EXPECTED = (
    "expected `images` as uint8 0..255 or float 0..1 with shape (N, H, W), (N, C, H, W) or (N, H, W, C), C in {1, 3}"
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


def _labels(array: np.ndarray, n: int, num_names: int | None, where: str) -> torch.Tensor:
    """`array` as int64 (N,) class indices, or a GenlabError.

    Labels index classes 0..K-1: K is len(`class_names`) when there are names (num_names),
    else max + 1, which must be at most the number of images and at most MAX_CLASSES.
    """
    remap = "remap them with np.unique(labels, return_inverse=True)"
    if not np.issubdtype(array.dtype, np.integer) or array.shape != (n,):
        raise GenlabError(
            f"{where}: `labels` is {array.dtype} {array.shape}; expected {n} integer class indices, shape ({n},)"
        )
    low, top = int(array.min()), int(array.max())  # n > 0: empty images were refused before
    if low < 0:
        raise GenlabError(
            f"{where}: `labels` has the negative value {low}, but labels must be class indices 0..K-1, so {remap}"
        )
    if num_names is not None:
        if top >= num_names:
            raise GenlabError(
                f"{where}: label {top} has no entry in `class_names`, which has {num_names} names; "
                "add the missing names or fix the labels"
            )
    elif top + 1 > min(n, MAX_CLASSES):
        raise GenlabError(
            f"{where}: labels must be class indices 0..K-1 with K at most the number of images and at most "
            f"{MAX_CLASSES:,}; found max {top} for {n} images, so {remap} (or save `class_names` naming the classes)"
        )
    return torch.from_numpy(array.astype(np.int64))


def _class_names(array: np.ndarray, where: str) -> list[str]:
    """`array` as a list of at most MAX_CLASSES strings, or a GenlabError."""
    if array.dtype.kind != "U" or array.ndim != 1:
        raise GenlabError(
            f"{where}: `class_names` is {array.dtype} {array.shape}; save a 1-D array of strings, "
            "e.g. np.array(['cat', 'dog'])"
        )
    if len(array) > MAX_CLASSES:
        raise GenlabError(
            f"{where}: `class_names` has {len(array):,} names; genlab handles at most {MAX_CLASSES:,} classes"
        )
    return [str(name) for name in array]


def _arrays(file: Path, spec: str) -> dict[str, np.ndarray]:
    """The `images`, `labels` and `class_names` arrays present in the .npz `file`, never unpickling."""
    with file.open("rb") as stream:
        head = stream.read(6)
    if head == NPY_MAGIC:
        raise GenlabError(f"{spec}: {file} holds one bare array; save an .npz instead: np.savez(path, images=images)")
    if head[:4] not in ZIP_MAGICS:
        raise GenlabError(
            f"{spec}: {file} is not an .npz file (not a zip archive); "
            "save the arrays with np.savez(path, images=images)"
        )
    arrays = {}
    try:
        with np.load(file, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if "images" not in keys:
                raise GenlabError(
                    f"{spec}: {file} has arrays {keys}; expected `images` (and optional `labels`, `class_names`)"
                )
            for key in ("images", "labels", "class_names"):
                if key not in keys:
                    continue
                try:
                    arrays[key] = archive[key]  # bytes, not an array, when the member is not .npy data
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise GenlabError(
                        f"{spec}: `{key}` is an array of Python objects, which genlab never unpickles; "
                        "save it as numbers (or, for `class_names`, strings), e.g. np.asarray(images, dtype=np.uint8)"
                    ) from None
                if not isinstance(arrays[key], np.ndarray):
                    raise GenlabError(
                        f"{spec}: `{key}` in {file} is not NumPy array data; write the file with np.savez"
                    )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise GenlabError(
            f"{spec}: {file} is not a readable .npz file ({error}); write it again with np.savez"
        ) from None
    return arrays


def load(parsed: ParsedSpec) -> list[ImageDataset]:
    """The `parsed.splits` (seeded 80/20, stratified when labelled) of the arrays in the .npz at `parsed.path`."""
    return select_splits(read(parsed), parsed.splits)


def read(parsed: ParsedSpec) -> ImageDataset:
    """Every image (and label) in the .npz at `parsed.path`, unsplit: e.g. samples to evaluate."""
    file, spec = parsed.location, parsed.text
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "is not a regular file"
        what = what if file.exists() else "does not exist"
        raise GenlabError(f"{spec}: {file} {what}; give the path of an .npz file with an `images` array")
    try:
        arrays = _arrays(file, spec)
    except PermissionError as error:
        raise GenlabError(f"{spec}: cannot read {file} ({error.strerror}); check its permissions") from None

    images = _images(arrays["images"], spec)
    labels, names = None, []
    if "labels" in arrays:
        if "class_names" in arrays:
            names = _class_names(arrays["class_names"], spec)
        num_names = len(names) if "class_names" in arrays else None
        labels = _labels(arrays["labels"], len(images), num_names, spec)
        names = names or [str(k) for k in range(int(labels.max()) + 1)]
    elif "class_names" in arrays:
        raise GenlabError(f"{spec}: `class_names` without `labels`; add `labels` (N,) or drop `class_names`")
    return ImageDataset(images, labels, names, spec)
