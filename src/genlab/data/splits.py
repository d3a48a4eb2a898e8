"""What every data source shares: the one train/test split, digit class names, and finding bundled files.

The split is stratified by class (unlabelled data counts as one class) and drawn from a
fixed seed, so a given file always splits the same way on every machine and every run.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from genlab.errors import GenlabError

from .dataset import ImageDataset

SPLITS = ("train", "test")
DIGIT_CLASSES = tuple(str(d) for d in range(10))  # mnist-5k, mnist and digits: class k is the digit k
TEST_FRACTION = 0.2
# Changing the seed changes every derived split (and so every reported test number).
SPLIT_SEED = 0


def split_indices(
    n: int, labels: np.ndarray | None = None, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a seeded split of `n` items, stratified by `labels`.

    The test set has ceil(n * test_fraction) items (scikit-learn's convention: 1,797 digits
    -> 360 test), at most n - 1, shared among classes by largest remainder so each class keeps
    its proportion (500 per class at 0.2 -> exactly 400/100). Each index array is returned in
    a seeded random order, so the first images of a split already cover the classes.
    """
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    # round() first: 5000 * 0.2 must be 1000, not ceil(1000.0000000000001) = 1001.
    n_test = min(math.ceil(round(n * test_fraction, 9)), n - 1) if n > 1 else 0
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / n  # (K,) the ideal number of test items per class
    take = np.floor(quota).astype(np.int64)
    leftover = n_test - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1

    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls, k in zip(classes, take):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[:k])
        train_parts.append(members[k:])
    train = rng.permutation(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    test = rng.permutation(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    return train, test


def check_split(split: str) -> None:
    """Raise a GenlabError unless `split` is "train" or "test" (checked once, where the user's call enters)."""
    if split not in SPLITS:
        raise GenlabError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def select_splits(
    dataset: ImageDataset, splits: tuple[str, ...] = SPLITS, test_fraction: float = TEST_FRACTION
) -> list[ImageDataset]:
    """The parts of `dataset` named by `splits` (valid names) under `split_indices`, stratified when labelled."""
    labels = None if dataset.labels is None else dataset.labels.cpu().numpy()
    train, test = split_indices(len(dataset), labels, test_fraction)
    indices = {"train": train, "test": test}
    return [dataset.subset(indices[split]) for split in splits]


def package_file(package: str, relative: Path) -> Path | None:
    """`relative` inside the installed `package`, found without importing it, or None if absent."""
    spec = importlib.util.find_spec(package)  # locates the package; does not run its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    return None
