"""Features of real images, computed once per dataset, split and extractor and cached on disk.

Every evaluation compares generated images with real ones; the real side is the same each
time, so its features (and class probabilities) are stored under ``$GENLAB_CACHE`` (default
``$XDG_CACHE_HOME/genlab`` or ``~/.cache/genlab``) as safetensors, keyed by the dataset's
name, its content fingerprint, the split and the extractor's sha256. Changed data or other
extractor weights give another key, so a stale entry is never read; a damaged entry is
recomputed and replaced. Statistics (mean, covariance, k-NN radii) are derived from the
features in milliseconds, so the features are what is kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from genlab.data import ImageDataset, fingerprint
from genlab.errors import GenlabError
from genlab.io import load_tensors, save_tensors

CACHE_FORMAT = 1  # bump when what a cache file holds changes


class FeatureExtractor(Protocol):
    """What evaluation needs from an extractor (the shipped classifiers and Inception-v3 both fit)."""

    name: str
    sha256: str

    @property
    def feature_dim(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def class_names(self) -> list[str]: ...  # the data's classes the classifier tells apart; [] for ImageNet's

    def features(self, images: torch.Tensor, batch_size: int = ...) -> torch.Tensor: ...

    def probabilities(self, images: torch.Tensor, batch_size: int = ...) -> torch.Tensor: ...


@dataclass
class RealFeatures:
    """The features (N, D) and class probabilities (N, K) of one real split, with its labels (N,) or None."""

    features: torch.Tensor
    probabilities: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, index: torch.Tensor) -> RealFeatures:
        labels = None if self.labels is None else self.labels[index]
        return RealFeatures(self.features[index], self.probabilities[index], labels)


def cache_dir() -> Path:
    """$GENLAB_CACHE, else $XDG_CACHE_HOME/genlab, else ~/.cache/genlab."""
    if os.environ.get("GENLAB_CACHE"):
        return Path(os.environ["GENLAB_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "genlab"
    return Path.home() / ".cache" / "genlab"


def cache_path(dataset: ImageDataset, split: str, extractor: FeatureExtractor) -> Path:
    """The cache file for `dataset`'s `split` under `extractor`: readable name, content-addressed key."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name or "data").strip("_")[:40] or "data"
    if dataset.name.startswith(("folder:", "npz:")):  # user paths: keep them apart by the full spec
        readable += "-" + hashlib.sha256(dataset.name.encode()).hexdigest()[:8]
    key = f"{readable}-{split}-{fingerprint(dataset)}-{extractor.name}-{extractor.sha256[:16]}"
    return cache_dir() / "features" / f"{key}.safetensors"


def real_features(
    dataset: ImageDataset, split: str, extractor: FeatureExtractor, *, use_cache: bool = True
) -> RealFeatures:
    """Features and probabilities of every image of `dataset` (its `split`), from the cache when there."""
    path = cache_path(dataset, split, extractor)
    if use_cache and path.is_file():
        cached = _read(path, len(dataset), extractor)
        if cached is not None:
            return RealFeatures(cached["features"], cached["probabilities"], dataset.labels)
    features = extractor.features(dataset.images)
    probabilities = extractor.probabilities(dataset.images)
    if use_cache:
        metadata = {
            "format": CACHE_FORMAT,
            "dataset": dataset.name,
            "split": split,
            "fingerprint": fingerprint(dataset),
            "extractor": extractor.name,
            "extractor_sha256": extractor.sha256,
            "images": len(dataset),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_tensors(path, {"features": features, "probabilities": probabilities}, metadata)
        except OSError:
            pass  # a read-only cache costs time, not correctness
    return RealFeatures(features, probabilities, dataset.labels)


def _read(path: Path, count: int, extractor: FeatureExtractor) -> dict[str, torch.Tensor] | None:
    """The cached tensors when the file is whole and matches; None otherwise (it is then rewritten)."""
    try:
        tensors, metadata = load_tensors(path, "feature cache")
    except GenlabError:
        return None
    features, probabilities = tensors.get("features"), tensors.get("probabilities")
    if (
        metadata.get("format") != CACHE_FORMAT
        or metadata.get("extractor_sha256") != extractor.sha256
        or features is None
        or probabilities is None
        or tuple(features.shape) != (count, extractor.feature_dim)
        or tuple(probabilities.shape) != (count, extractor.num_classes)
    ):
        return None
    return {"features": features, "probabilities": probabilities}
