"""What `genlab eval` measures: images drawn from a run, or read from a file, and the real data they are held to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab.data import ImageDataset, read_npz
from genlab.data.transforms import to_uint8
from genlab.errors import GenlabError
from genlab.eval.reference import FeatureExtractor, RealFeatures
from genlab.run import Run, check_sampler_options, is_run_dir
from genlab.training import distributed
from genlab.zoo import is_zoo_spec


@dataclass
class Generated:
    """Images to evaluate: uint8 (N, C, H, W), optional labels (N,), and where they came from."""

    images: torch.Tensor  # (0, C, H, W) when none were drawn (`--metrics nll` alone)
    labels: torch.Tensor | None
    source: dict[str, Any]
    run: Run | None = None  # the Run they were drawn from, for log-likelihood; None for files


def open_source(source: Any, device: torch.device | None = None) -> tuple[Run | None, ImageDataset | None]:
    """(Run or None, samples dataset or None) from a Run, a run folder (loaded on `device`, default the CPU),
    an .npz path, an ImageDataset, or None (neither)."""
    if source is None or isinstance(source, ImageDataset):
        return None, source
    if isinstance(source, Run):
        return source.require_images("genlab eval"), None
    if is_zoo_spec(source):
        return Run.load(source, device=device or "cpu").require_images("genlab eval"), None
    path = Path(source)
    if path.is_dir():
        if not is_run_dir(path):
            raise GenlabError(f"{path} is not a genlab run (no run.json); give a run folder or --samples FILE.npz")
        return Run.load(path, device=device or "cpu").require_images("genlab eval"), None
    if path.suffix.lower() != ".npz":
        what = "does not exist" if not path.exists() else "is not an .npz file"
        raise GenlabError(f"{path} {what}; give a run folder, or images as --samples FILE.npz")
    return None, read_npz(path)


def check_shape(shape: tuple[int, ...], data: ImageDataset, what: str) -> None:
    """Refuse `what` (images of `shape`, C x H x W) when they are not the shape of `data`'s images."""
    if tuple(shape) != data.image_shape:
        show = "x".join(str(s) for s in shape)
        raise GenlabError(
            f"{what} are {show} but {data.name} images are {'x'.join(map(str, data.image_shape))} "
            "(C x H x W); compare images of the same shape (--data, --size)"
        )


def seeded_subset(count: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded subset of n of `count` indices, or all of them in order when n >= count."""
    return torch.arange(count) if n >= count else torch.randperm(count, generator=generator)[:n]


def run_source(run: Run) -> dict[str, Any]:
    """How metrics.json names a run it evaluated."""
    return {
        "kind": "run",
        "path": run.name,
        "family": run.family,
        "epochs": run.info.get("epochs_completed"),
        "conditional": run.model.conditional,
    }


def draw(run: Run, n: int, seed: int, options: dict[str, Any]) -> Generated:
    """n images from the run, seeded; a conditional model draws the classes in turn (balanced)."""
    check_sampler_options(run.model, options)
    labels = run.model.check_labels(n, None)
    piece = distributed.shard_slice(n)  # under torchrun each rank draws its piece; one process draws all n
    mine = None if labels is None else labels[piece]
    generator = torch.Generator().manual_seed(distributed.rank_seed(seed))
    images = run.sample(piece.stop - piece.start, generator=generator, labels=mine, **options)
    source = run_source(run)
    if options:
        source["sample_options"] = dict(options)
    return Generated(distributed.gather_rows(to_uint8(images)), None if labels is None else labels.cpu(), source, run)


def sample_features(extractor: FeatureExtractor, images: torch.Tensor, labels: torch.Tensor | None) -> RealFeatures:
    """Features and class probabilities of generated images (N, C, H, W) with their labels: each rank computes
    its piece, all ranks get all."""
    piece = images[distributed.shard_slice(len(images))]
    return RealFeatures(
        distributed.gather_rows(extractor.features(piece)),
        distributed.gather_rows(extractor.probabilities(piece)),
        labels,
    )
