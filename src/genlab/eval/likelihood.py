"""`genlab likelihood`: one table of negative log-likelihoods across families, on one test subset.

    table = likelihoods(["runs/vae", "runs/pixelcnn", "runs/ddpm"])
    print(table.table()); table.rows[0].bits_per_dim

Exact likelihoods (PixelCNN, RealNVP) and bounds (the VAE's importance-weighted bound, DDPM's
variational bound) in nats per image and bits per dimension, every run scored on the same
seeded subset of the same test split. Each row states the data model its number assumes
(binarized pixels, 256-way discrete 8-bit pixels, or a dequantized continuous density): only
rows with the same data model measure the same thing, and the table says which those are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from genlab.data import ImageDataset, fingerprint, load_splits
from genlab.data.transforms import binarize, to_unit
from genlab.errors import GenlabError
from genlab.eval.sources import check_shape, seeded_subset
from genlab.models.base import GenerativeModel, HasLikelihood, bits_per_dim
from genlab.models.common import eval_mode

NLL_BATCH = 500  # test images per `log_likelihood` call


@dataclass
class LikelihoodRow:
    """One run's likelihood: NLL in nats per image (None: the family has none) and how it is defined."""

    path: str
    family: str
    epochs: int | None
    kind: str  # "exact", "bound", or "" for families without a likelihood
    data_model: str
    nll_nats: float | None
    bits_per_dim: float | None
    seconds: float


@dataclass
class LikelihoodTable:
    """The rows and what they share: the data, the test subset, the seed."""

    rows: list[LikelihoodRow]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            **self.info,
            "rows": [asdict(row) for row in self.rows],
            "comparable": self.comparable(),
        }

    def comparable(self) -> dict[str, list[str]]:
        """Data model -> the runs measured under it (only these may be ranked against each other)."""
        return {data_model: [row.path for row in rows] for data_model, rows in self._groups().items()}

    def _groups(self) -> dict[str, list[LikelihoodRow]]:
        """Data model -> the rows with a likelihood under it, in table order."""
        groups: dict[str, list[LikelihoodRow]] = {}
        for row in self.rows:
            if row.nll_nats is not None:
                groups.setdefault(row.data_model, []).append(row)
        return groups

    def heading(self) -> str:
        """What every row was scored on, in one line."""
        info = self.info
        if info.get("unit") == "byte":
            return (
                f"{info['data']['spec']} test text: all {info['bytes']:,} bytes, every window, the same for every run"
            )
        return (
            f"{info['data']['spec']} test split: {info['images']:,} of {info['test_images']:,} images "
            f"(seed {info['seed']}), the same for every run"
        )

    def table(self) -> str:
        """Aligned text: one line per run, then which runs are comparable."""
        per_byte = self.info.get("unit") == "byte"  # text runs: per byte of the test text
        header = (
            "Run",
            "Family",
            "Epochs",
            "Likelihood",
            "Data model",
            "NLL (nats)",
            "Bits/byte" if per_byte else "Bits/dim",
        )
        lines = [header]
        for row in self.rows:
            nll = "-" if row.nll_nats is None else f"{row.nll_nats:.2f}"
            bpd = "-" if row.bits_per_dim is None else f"{row.bits_per_dim:.4f}"
            lines.append(
                (
                    row.path,
                    row.family,
                    str(row.epochs if row.epochs is not None else "-"),
                    row.kind or "none",
                    row.data_model,
                    nll,
                    bpd,
                )
            )
        widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
        text = ["  ".join(cell.ljust(widths[c]) for c, cell in enumerate(line)).rstrip() for line in lines]
        groups = self._groups()
        for data_model, rows in groups.items():
            if len(rows) > 1:
                best = min(rows, key=lambda row: math.inf if row.nll_nats is None else row.nll_nats)
                text.append(
                    f"comparable ({data_model}): {', '.join(row.path for row in rows)}; lowest NLL: {best.path}"
                )
        if len(groups) > 1:
            text.append(
                "rows under different data models measure different things: do not rank them against each other"
            )
        return "\n".join(text)


def likelihoods(runs: Sequence, images: int | None = None, seed: int = 0) -> LikelihoodTable:
    """NLL of every run in `runs` (folders or Runs) on one seeded subset of their common test split.

    `images`: test images to score (default: all of them, or the fewest any family asks for:
    DDPM's bound costs `likelihood_images` = 1,000 by default). Runs must share their data.
    """
    from genlab.run import Run, writes_text

    if not runs:
        raise GenlabError("give one or more run directories to compare, e.g. genlab likelihood runs/vae runs/pixelcnn")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images <= 0):
        raise GenlabError(f"--images must be a positive number of test images, got {images!r}")
    loaded = [run if isinstance(run, Run) else Run.load(run) for run in runs]
    if writes_text(loaded, "give runs of one kind", "their likelihoods are per byte and per image"):
        if images is not None:
            raise GenlabError("--images counts test images; text runs are scored on their whole test text: drop it")
        return text_likelihoods(loaded)
    specs = {run.data_spec() for run in loaded}
    if len(specs) > 1:
        named = "; ".join(f"{run.path}: {run.data_spec()[0]}" for run in loaded)
        raise GenlabError(
            f"the runs were trained on different data ({named}); likelihoods are only compared "
            "on one test split: give runs of one dataset"
        )
    ((data, size),) = specs
    train, test = load_splits(data, size=size)
    for run in loaded:
        check_shape(run.model.data.image_shape, train, f"{run.path}'s images")
    limits = [run.model.likelihood_images for run in loaded if isinstance(run.model, HasLikelihood)]
    count = min([len(test), *(limit for limit in limits if limit), *([images] if images else [])])
    subset = test.subset(seeded_subset(len(test), count, torch.Generator().manual_seed(seed)))
    dims = math.prod(test.image_shape)
    rows = []
    for run in loaded:
        started = time.perf_counter()
        model = run.model
        nll = data_model = None
        kind = ""  # no likelihood
        if isinstance(model, HasLikelihood):
            nll, data_model = negative_log_likelihood(model, subset, seed)
            kind = model.likelihood_kind
        rows.append(
            LikelihoodRow(
                path=run.name,
                family=run.family,
                epochs=run.info.get("epochs_completed"),
                kind=kind,
                data_model=data_model or "-",
                nll_nats=nll,
                bits_per_dim=None if nll is None else bits_per_dim(nll, dims),
                seconds=round(time.perf_counter() - started, 2),
            )
        )
    info = {
        "data": {"spec": data, "size": size, "split": "test", "fingerprint": fingerprint(train, test)},
        "images": count,
        "test_images": len(test),
        "seed": seed,
    }
    return LikelihoodTable(rows, info)


def text_likelihoods(runs: Sequence) -> LikelihoodTable:
    """Exact bits per byte of text runs over every window of their common test text: comparable whatever their
    tokenizers (nats per token x tokens per byte)."""
    from genlab.data.tokens import load_token_splits
    from genlab.eval.text import windows_bits_per_byte  # here: genlab.eval.text imports the registry, which imports us

    specs = {run.info["data"]["spec"] for run in runs}
    if len(specs) > 1:
        named = "; ".join(f"{run.path}: {run.info['data']['spec']}" for run in runs)
        raise GenlabError(f"the runs were trained on different text ({named}); give runs of one corpus")
    (spec,) = specs
    rows = []
    for run in runs:
        started = time.perf_counter()
        _, test = load_token_splits(spec, run.tokenizer, run.model.context)
        with eval_mode(run.model):
            bits = windows_bits_per_byte(run.model, test)
        rows.append(
            LikelihoodRow(
                path=run.name,
                family=f"{run.family} ({test.tokenizer.name})",
                epochs=run.info.get("epochs_completed"),
                kind="exact",
                data_model="UTF-8 bytes",
                nll_nats=bits * math.log(2),
                bits_per_dim=bits,
                seconds=round(time.perf_counter() - started, 2),
            )
        )
    info = {"data": {"spec": spec, "split": "test"}, "bytes": test.num_bytes, "unit": "byte"}
    return LikelihoodTable(rows, info)


def negative_log_likelihood(
    model: GenerativeModel, test: ImageDataset, seed: int, batch_size: int = NLL_BATCH
) -> tuple[float, str]:
    """Mean negative log-likelihood (or its bound) of `test` in nats per image, and the data model it assumes.

    Binarizing models see one fixed binarization of the test images (seeded), as in the
    binarized-MNIST protocol; the others see pixel values in [0, 1]. The model is scored in
    eval mode and left in the mode it was in.
    """
    if not isinstance(model, HasLikelihood):
        raise GenlabError(f"the {model.family} family has no log-likelihood")
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the importance samples
        for images, labels in test.batches(batch_size, shuffle=False):
            x = to_unit(images)
            if model.binary_pixels:
                x = binarize(x, generator)
            total += float(model.log_likelihood(x, labels if model.conditional else None).double().sum())
    return -total / len(test), model.likelihood_data_model
