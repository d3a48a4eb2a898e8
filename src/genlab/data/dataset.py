"""ImageDataset: a whole dataset as one uint8 tensor, batched by slicing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageDataset:
    """Images as a uint8 tensor (N, C, H, W), optional int64 labels (N,), and names.

    The whole dataset lives in memory (on the GPU when training there); batches are
    tensor slices under a seeded permutation, never per-sample Python.
    """

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None for unlabelled data
    class_names: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for unlabelled data)."""
        if self.class_names:
            return len(self.class_names)
        return 0 if self.labels is None or not len(self.labels) else int(self.labels.max().item()) + 1

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with its tensors on `device` (no copy when already there)."""
        labels = None if self.labels is None else self.labels.to(device)
        return ImageDataset(self.images.to(device), labels, list(self.class_names), self.name)

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> ImageDataset:
        """The images (and labels) at `indices`, in that order."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.images.device)
        labels = None if self.labels is None else self.labels[index]
        return ImageDataset(self.images[index], labels, list(self.class_names), self.name)

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        skip: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield (images uint8 (B, C, H, W), labels (B,) or None) slices.

        With `shuffle`, the order is a permutation drawn from `generator` (on the CPU, so the
        order is the same on every device); the last batch may be smaller. `skip` leaves out
        the first batches of that same order (resuming inside an epoch). `shard` (k, n) yields
        only the k-th of n contiguous, nearly equal pieces of each batch (data-parallel rank k
        of n); a last batch of fewer than n images is then left out, so every piece holds one.
        """
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator).to(self.images.device)
        for low, high in batch_pieces(n, batch_size, skip, shard):
            if shuffle:
                index = order[low:high]
                images = self.images[index]
                labels = None if self.labels is None else self.labels[index]
            else:
                images = self.images[low:high]
                labels = None if self.labels is None else self.labels[low:high]
            yield images, labels


def batch_pieces(
    count: int, batch_size: int, skip: int = 0, shard: tuple[int, int] = (0, 1)
) -> Iterator[tuple[int, int]]:
    """[low, high) of each batch's piece over `count` items in order (ImageDataset.batches and TokenDataset.batches):
    batches of `batch_size` from batch `skip` on; of each, the k-th of n contiguous, nearly equal pieces for
    `shard` (k, n), a last batch of fewer than n items left out so that every piece holds one."""
    part, parts = shard
    for start in range(skip * batch_size, count, batch_size):
        size = min(batch_size, count - start)
        if size < parts:
            return
        # piece k of n covers [size * k // n, size * (k + 1) // n) of the batch
        yield start + size * part // parts, start + size * (part + 1) // parts


def fingerprint(*datasets: ImageDataset | None) -> str:
    """A short sha256 of the images and labels of `datasets`: the same data gives the same string."""
    digest = hashlib.sha256()
    for dataset in datasets:
        if dataset is None:
            digest.update(b"none")
            continue
        digest.update(str(tuple(dataset.images.shape)).encode())
        digest.update(dataset.images.cpu().contiguous().numpy().tobytes())
        if dataset.labels is not None:
            digest.update(dataset.labels.cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
