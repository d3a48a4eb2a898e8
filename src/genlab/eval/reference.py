"""Features of real images, computed once per dataset, split and extractor and cached on disk.

Every evaluation compares generated images with real ones; the real side is the same each
time, so its features (and class probabilities) are stored under ``$GENLAB_CACHE`` (default
``$XDG_CACHE_HOME/genlab`` or ``~/.cache/genlab``) as safetensors, keyed by the dataset's
name, its content fingerprint, the split and the extractor's sha256. Changed data or other
extractor weights give another key, so a stale entry is never read. An entry is checked when
read (its metadata's types and values, the extractor's sha256 among them, and finite tensors of
the expected shapes and dtype); one that fails is recomputed and replaced, saying so on stderr.
Statistics (mean, covariance, k-NN radii) are derived from the features in milliseconds, so the
features are what is kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from genlab.data import ImageDataset, fingerprint
from genlab.errors import GenlabError
from genlab.io import load_tensors, save_tensors

CACHE_FORMAT = 1  # bump when what a cache file holds changes
HEADER_ALLOWANCE = 1 << 20  # bytes a cache file may hold beyond its tensors (its JSON header)
PROBABILITY_TOLERANCE = 1e-3  # how far a cached row of class probabilities may sum from 1 (float32 softmax)


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
    """Features and probabilities of every image of `dataset` (its `split`), from the cache when there.

    A cache entry is used only when it passes `check_entry`; one that fails is recomputed and
    replaced, and one line on stderr says which file and why.
    """
    path = cache_path(dataset, split, extractor)
    metadata = entry_metadata(dataset, split, extractor)
    if use_cache and path.is_file():
        cached, problem = read_entry(path, metadata, extractor)
        if cached is not None:
            return RealFeatures(cached["features"], cached["probabilities"], dataset.labels)
        print(f"recomputing the cached reference features in {path}: {problem}", file=sys.stderr)
    features = extractor.features(dataset.images)
    probabilities = extractor.probabilities(dataset.images)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_tensors(path, {"features": features, "probabilities": probabilities}, metadata)
        except (OSError, GenlabError):  # read-only, full, or a folder in the way
            pass  # a cache that cannot be written costs time, not correctness
    return RealFeatures(features, probabilities, dataset.labels)


def entry_metadata(dataset: ImageDataset, split: str, extractor: FeatureExtractor) -> dict[str, Any]:
    """The metadata a cache entry of `dataset`'s `split` under `extractor` is written with, and must be read with."""
    return {
        "format": CACHE_FORMAT,
        "dataset": dataset.name,
        "split": split,
        "fingerprint": fingerprint(dataset),
        "extractor": extractor.name,
        "extractor_sha256": extractor.sha256,
        "images": len(dataset),
    }


def read_entry(
    path: Path, metadata: dict[str, Any], extractor: FeatureExtractor
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(the tensors of the cache file `path`, "") when it passes `check_entry`, else (None, what is wrong)."""
    count = metadata["images"]
    try:
        size = path.stat().st_size
    except OSError as error:
        return None, f"it cannot be read ({error.strerror or error})"
    # float32 features and probabilities, and a header well under this allowance
    largest = 4 * count * (extractor.feature_dim + extractor.num_classes) + HEADER_ALLOWANCE
    if size > largest:
        return None, f"it has {size:,} bytes, more than the {largest:,} its tensors and header can take"
    try:
        tensors, stored = load_tensors(path, "feature cache")
    except GenlabError:
        return None, "it is not a valid safetensors file with genlab's metadata (truncated or corrupt)"
    except OSError as error:
        return None, f"it cannot be read ({error.strerror or error})"
    problem = check_entry(tensors, stored, metadata, extractor)
    if problem:
        return None, problem
    return {"features": tensors["features"], "probabilities": tensors["probabilities"]}, ""


def check_entry(
    tensors: dict[str, torch.Tensor], stored: Any, metadata: dict[str, Any], extractor: FeatureExtractor
) -> str:
    """What is wrong with a cache entry (its `tensors` and `stored` metadata) expected to hold `metadata`;
    "" when nothing is: the metadata's fields with their types and values (the extractor's sha256 among
    them), then (N, D) float32 features and (N, K) float32 probabilities, finite, each row a distribution."""
    if not isinstance(stored, dict):
        return f"its metadata is a {type(stored).__name__}, not an object"
    for key, expected in metadata.items():
        if key not in stored:
            return f"its metadata lacks {key!r}"
        value = stored[key]
        if type(value) is not type(expected):  # exact: a bool is no count, a float no format number
            return f"its metadata's {key!r} is a {type(value).__name__}, not a {type(expected).__name__}"
        if value != expected:
            if key == "extractor_sha256":
                return f"they were made by extractor weights {value[:12]}, not these ({expected[:12]})"
            return f"its metadata's {key!r} is {value!r}, not {expected!r}"
    count = metadata["images"]
    for name, what, width in (
        ("features", "they", extractor.feature_dim),
        ("probabilities", "their class probabilities", extractor.num_classes),
    ):
        tensor = tensors.get(name)
        if tensor is None:
            return f"it lacks the {name} tensor"
        if tensor.dtype != torch.float32:
            return f"{what} are {str(tensor.dtype).removeprefix('torch.')}, not float32"
        if tuple(tensor.shape) != (count, width):
            return f"{what} have shape {tuple(tensor.shape)}, not {(count, width)}"
        if torch.isnan(tensor).any():
            return f"{what} hold NaN"
        if torch.isinf(tensor).any():
            return f"{what} hold infinite values"
    probabilities = tensors["probabilities"]
    if count and (
        probabilities.min() < 0
        or probabilities.max() > 1
        or (probabilities.double().sum(dim=1) - 1).abs().max() > PROBABILITY_TOLERANCE
    ):
        return "their class probabilities are not distributions (each row in [0, 1], summing to 1)"
    return ""
