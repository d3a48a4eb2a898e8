"""The pieces every family's explanation is made of: measured stages, the traced network call,
and the number formatting they quote real values with (`genlab explain`, the report)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from genlab.data.transforms import to_unit


def format_number(value: float | torch.Tensor) -> str:
    """A measured number for a reader: 543.2, 12.35, -1.20, 0.588, 0.0346 (3 significant digits below 1)."""
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def format_values(values: torch.Tensor) -> str:
    """A few measured values as "[-0.41, 1.2, 0.03]"."""
    return "[" + ", ".join(format_number(v) for v in values.detach().flatten().tolist()) + "]"


def format_pixel(images: torch.Tensor, pixel: tuple[int, ...]) -> str:
    """A generated pixel in [0, 1] and the 8-bit level it stands for: "pixel (0, 0, 14, 15) = 0.322 (level 82)"."""
    value = float(images[pixel])
    return f"pixel {pixel} = {format_number(value)} (level {round(value * 255)} of 255)"


def example_pixel(images: torch.Tensor) -> tuple[int, int, int, int]:
    """The pixel (0, c, h, w) of the first image that the stages quote: its mid-grey pixel (intensity between
    1/4 and 3/4 of the range, where scalings show best) nearest the centre, else its brightest."""
    first = images[0].float().cpu()  # (C, H, W), uint8 levels or floats in [0, 1]
    top = 255.0 if images.dtype == torch.uint8 else 1.0
    c, h, w = first.shape
    rows, columns = torch.arange(h).reshape(-1, 1), torch.arange(w).reshape(1, -1)
    distance = ((rows - (h - 1) / 2) ** 2 + (columns - (w - 1) / 2) ** 2).expand(c, h, w)  # to the centre
    grey = (first >= 0.25 * top) & (first <= 0.75 * top)
    score = torch.where(grey, distance, torch.inf) if grey.any() else -first  # lowest wins; ties: raster order
    channel, row, column = (int(i) for i in torch.unravel_index(score.flatten().argmin(), first.shape))
    return (0, channel, row, column)


@dataclass(frozen=True)
class Stage:
    """One step of a family's data flow, measured on a real batch.

    `input_shape` is None where the stage starts from nothing of the stage before (fresh noise);
    `example` quotes real values of its tensors; `path` is "training" or "generation".
    """

    name: str
    what: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...]
    example: str
    path: str = "training"

    @classmethod
    def measured(
        cls,
        name: str,
        what: str,
        inputs: torch.Tensor | None,
        outputs: torch.Tensor,
        example: str,
        path: str = "training",
    ) -> Stage:
        """A stage whose shapes are read from the tensors it really took and gave."""
        return cls(name, what, None if inputs is None else tuple(inputs.shape), tuple(outputs.shape), example, path)


@dataclass(frozen=True)
class PredictionPass:
    """One call of a family's network, from its input to its output, for the prediction trace.

    `run` calls the network once on `inputs` (forward hooks on `network` see every layer) and
    returns the output; `note` says which call it is (e.g. one UNet call at one timestep).
    """

    network_name: str
    network: nn.Module
    input_name: str
    inputs: torch.Tensor
    run: Callable[[], torch.Tensor]
    output_name: str
    note: str


def input_stages(
    dataset_size: int, indices: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None
) -> tuple[list[Stage], torch.Tensor]:
    """The stages every family shares, load and scale to [0, 1], and the batch (B, C, H, W) in [0, 1].

    `images` (B, C, H, W) uint8 are the dataset's images at `indices`.
    """
    pixel = example_pixel(images)
    value = int(images[pixel])
    shown = ", ".join(str(int(i)) for i in indices[:4]) + (", ..." if len(indices) > 4 else "")
    label_text = "" if labels is None else f" (label {int(labels[0])})"
    load = Stage(
        "load",
        f"take {len(images)} of the {dataset_size:,} images in a seeded random order, as uint8 levels 0..255",
        (dataset_size, *images.shape[1:]),
        tuple(images.shape),
        f"images {shown}; image {int(indices[0])}{label_text} has pixel {pixel} = {value}",
    )
    x = to_unit(images)  # (B, C, H, W) in [0, 1]
    scale = Stage.measured(
        "preprocess",
        "divide by 255: floats in [0, 1], the range every family takes",
        images,
        x,
        f"pixel {pixel} value {value} becomes {format_number(x[pixel])}",
    )
    return [load, scale], x
