"""`digits`: scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits), values 0..16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError

from .dataset import ImageDataset
from .splits import DIGIT_CLASSES, SPLITS, package_file, select_splits

HOW_TO_GET = "pip install scikit-learn"
DATA_RELATIVE = Path("datasets", "data", "digits.csv.gz")


def data_path() -> Path | None:
    """scikit-learn's bundled `digits.csv.gz` (found without importing scikit-learn), or None."""
    return package_file("sklearn", DATA_RELATIVE)


def load(splits: tuple[str, ...] = SPLITS) -> list[ImageDataset]:
    """The `splits` of the fixed stratified 1,437 train / 360 test split of scikit-learn's digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise GenlabError(f"the digits dataset comes with scikit-learn: {HOW_TO_GET}") from None
    bunch = load_digits()
    # (1797, 8, 8) float in 0..16 -> uint8 0..255 (16 -> 255, 8 -> 128).
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    dataset = ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), list(DIGIT_CLASSES), "digits")
    return select_splits(dataset, splits)
