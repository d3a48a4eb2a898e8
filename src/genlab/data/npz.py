"""`npz:PATH`: images (and optional labels, class names) in a NumPy .npz file.

Accepted `images`: (N, H, W), (N, C, H, W) or channel-last (N, H, W, C) with C in {1, 3};
uint8 in 0..255, or float in [0, 1] (what `genlab sample --format npz` writes: float32
(N, C, H, W)). Optional `labels` (N,): class indices 0..K-1, with K = len(`class_names`)
when those (K,) strings are given, else max + 1, at most the number of images (and at
most MAX_CLASSES): arbitrary ids must be remapped first. Never unpickles (allow_pickle=False).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.memory import check_fits

from .dataset import ImageDataset
from .spec import MAX_SIDE, ParsedSpec
from .splits import select_splits
from .transforms import to_uint8

MAX_CLASSES = 10_000
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local file header, or an empty zip's end record
KEYS = ("images", "labels", "class_names")
CONVERT_CHUNK = 1 << 24  # float values turned into uint8 at a time: bounds the float working copies
EXPECTED = (
    "expected `images` as uint8 0..255 or float 0..1 with shape (N, H, W), (N, C, H, W) or (N, H, W, C), C in {1, 3}"
)


@dataclass(frozen=True)
class Header:
    """What an .npy member's header declares, read before any of its data: shape, dtype, its zip member."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


def _layout(shape: tuple[int, ...]) -> str | None:
    """How `images` of `shape` are laid out: "NHW", "NCHW" (preferred when both readings fit), "NHWC", or None."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4 and shape[1] in (1, 3):
        return "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC"
    return None


def _check_images(header: Header, where: str) -> None:
    """Refuse `images` whose declared layout, dtype or size is wrong, before reading their data."""
    shape, dtype = header.shape, header.dtype
    found = f"{where}: `images` is {dtype} {shape}"
    layout = _layout(shape)
    if layout is None:
        raise GenlabError(f"{found}; {EXPECTED}")
    h, w = (shape[1], shape[2]) if layout in ("NHW", "NHWC") else (shape[2], shape[3])
    if header.elements == 0:
        raise GenlabError(f"{found}, which holds no pixels; {EXPECTED}")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise GenlabError(f"{found}; {EXPECTED} (convert it, e.g. images.astype(np.uint8))")
    if max(h, w) > MAX_SIDE:
        raise GenlabError(
            f"{found}: images of {h}x{w} pixels, but genlab takes at most {MAX_SIDE} per side; "
            "resize them before saving the .npz"
        )


def _images(array: np.ndarray, where: str) -> torch.Tensor:
    """`array` (its layout and dtype checked by _check_images) as uint8 (N, C, H, W), or a GenlabError
    for float values outside [0, 1]. Floats are converted CONVERT_CHUNK values at a time."""
    found = f"{where}: `images` is {array.dtype} {array.shape}"
    layout = _layout(array.shape)
    if layout == "NHW":
        array = array[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif layout == "NHWC":
        array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    dtype = np.float64 if array.dtype == np.float64 else np.float32
    out = torch.empty(array.shape, dtype=torch.uint8)
    step = max(1, CONVERT_CHUNK // math.prod(array.shape[1:]))
    finite, low, high = True, math.inf, -math.inf
    for start in range(0, len(array), step):
        part = array[start : start + step]
        finite = finite and bool(np.isfinite(part).all())
        if finite:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
            out[start : start + step] = to_uint8(torch.from_numpy(np.ascontiguousarray(part, dtype=dtype)))
    if not finite:
        raise GenlabError(f"{found} with NaN or infinite values; {EXPECTED}")
    if low < 0.0 or high > 1.0:
        raise GenlabError(f"{found} with values in [{low:g}, {high:g}]; {EXPECTED}")
    return out


def _check_labels(dtype: np.dtype, shape: tuple[int, ...], n: int, where: str) -> None:
    """Refuse `labels` (as declared or read) that are not N integers."""
    if not np.issubdtype(dtype, np.integer) or shape != (n,):
        raise GenlabError(f"{where}: `labels` is {dtype} {shape}; expected {n} integer class indices, shape ({n},)")


def _labels(array: np.ndarray, n: int, num_names: int | None, where: str) -> torch.Tensor:
    """`array` as int64 (N,) class indices, or a GenlabError.

    Labels index classes 0..K-1: K is len(`class_names`) when there are names (num_names),
    else max + 1, which must be at most the number of images and at most MAX_CLASSES.
    """
    remap = "remap them with np.unique(labels, return_inverse=True)"
    _check_labels(array.dtype, array.shape, n, where)
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
    _check_class_names(array.dtype, array.shape, where)
    return [str(name) for name in array]


def _check_class_names(dtype: np.dtype, shape: tuple[int, ...], where: str) -> None:
    """Refuse `class_names` (as declared or read) that are not a 1-D array of at most MAX_CLASSES strings."""
    if dtype.kind != "U" or len(shape) != 1:
        raise GenlabError(
            f"{where}: `class_names` is {dtype} {shape}; save a 1-D array of strings, e.g. np.array(['cat', 'dog'])"
        )
    if shape[0] > MAX_CLASSES:
        raise GenlabError(
            f"{where}: `class_names` has {shape[0]:,} names; genlab handles at most {MAX_CLASSES:,} classes"
        )


def _open_error(file: Path, spec: str, error: Exception) -> GenlabError:
    return GenlabError(f"{spec}: {file} is not a readable .npz file ({error}); write it again with np.savez")


def _members(archive: zipfile.ZipFile, file: Path, spec: str) -> dict[str, str]:
    """The zip member of each of KEYS present, named as np.load names them (a raw `images` member before
    `images.npy`); a GenlabError when there is no `images`."""
    names = archive.namelist()
    keys = [name[:-4] if name.endswith(".npy") else name for name in names]
    if "images" not in keys:
        raise GenlabError(f"{spec}: {file} has arrays {keys}; expected `images` (and optional `labels`, `class_names`)")
    return {key: key if key in names else f"{key}.npy" for key in KEYS if key in keys}


def _header(archive: zipfile.ZipFile, key: str, member: str, file: Path, spec: str) -> Header:
    """The shape and dtype `member` declares, from its .npy header alone (its data stays compressed)."""
    with archive.open(member) as stream:
        magic = stream.read(len(NPY_MAGIC) + 2)  # the magic string, then the format version (major, minor)
        if magic[: len(NPY_MAGIC)] != NPY_MAGIC or len(magic) < len(NPY_MAGIC) + 2:
            raise GenlabError(f"{spec}: `{key}` in {file} is not NumPy array data; write the file with np.savez")
        if magic[-2:] == b"\x01\x00":
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif magic[-2:] in (b"\x02\x00", b"\x03\x00"):  # 3.0 is 2.0 with a UTF-8 header
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"`{key}` has an unknown .npy format version {tuple(magic[-2:])}")
    if any(side < 0 for side in shape):
        raise ValueError(f"`{key}` declares the shape {shape}")
    if dtype.hasobject:
        raise GenlabError(
            f"{spec}: `{key}` is an array of Python objects, which genlab never unpickles; "
            "save it as numbers (or, for `class_names`, strings), e.g. np.asarray(images, dtype=np.uint8)"
        )
    return Header(member, tuple(shape), dtype)


def _check_fits(headers: dict[str, Header], spec: str) -> None:
    """Refuse an .npz whose arrays, as their headers declare them, would not fit in memory once read.

    Reading holds each array once; then one uint8 copy of the images (the conversion from
    float, or from channel-last) and one more when the split copies them out, plus labels as int64.
    """
    images = headers["images"]
    needed = sum(header.nbytes for header in headers.values()) + 2 * images.elements
    if "labels" in headers:
        needed += 2 * 8 * headers["labels"].elements
    check_fits(
        needed,
        f"{spec}: reading `images` {images.dtype} {images.shape}",
        "save fewer images (e.g. np.savez(path, images=images[:10000])) or smaller ones",
    )


def _arrays(file: Path, spec: str) -> dict[str, np.ndarray]:
    """The `images`, `labels` and `class_names` arrays present in the .npz `file`, never unpickling.

    Every array's header is read and checked (layout, dtype, size, memory) before any array's data.
    """
    with file.open("rb") as stream:
        head = stream.read(6)
    if head == NPY_MAGIC:
        raise GenlabError(f"{spec}: {file} holds one bare array; save an .npz instead: np.savez(path, images=images)")
    if head[:4] not in ZIP_MAGICS:
        raise GenlabError(
            f"{spec}: {file} is not an .npz file (not a zip archive); "
            "save the arrays with np.savez(path, images=images)"
        )
    try:
        with zipfile.ZipFile(file) as archive:
            members = _members(archive, file, spec)
            headers = {key: _header(archive, key, member, file, spec) for key, member in members.items()}
            _check_images(headers["images"], spec)
            if "labels" in headers:
                _check_labels(headers["labels"].dtype, headers["labels"].shape, headers["images"].shape[0], spec)
            if "class_names" in headers:
                if "labels" not in headers:
                    raise GenlabError(
                        f"{spec}: `class_names` without `labels`; add `labels` (N,) or drop `class_names`"
                    )
                _check_class_names(headers["class_names"].dtype, headers["class_names"].shape, spec)
            _check_fits(headers, spec)
            arrays = {}
            for key, header in headers.items():
                with archive.open(header.member) as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise _open_error(file, spec, error) from None
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
    return ImageDataset(images, labels, names, spec)
