"""What `genlab explain pixelcnn` shows: the data flow stage by stage, and the network call the prediction trace hooks.

The model's `pipeline_stages` and `prediction_pass` delegate here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from genlab.data.transforms import binarize
from genlab.explain.stages import PredictionPass, Stage, example_pixel, format_number, format_pixel
from genlab.models.base import bits_per_dim
from genlab.models.pixelcnn.networks import LEVELS
from genlab.models.pixelcnn.sampling import fill

if TYPE_CHECKING:
    from genlab.models.pixelcnn.model import PixelCNN


def pipeline_stages(
    model: PixelCNN, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> list[Stage]:
    """Put the real batch x (B, C, H, W) in [0, 1] on the model's grid, one network pass, -log p(x); then
    uniform noise -> pixel-by-pixel drawing -> image."""
    pixel = example_pixel(x)
    labels = model.condition(labels)
    if model.config.binarize:
        grid = binarize(x, generator)
        stages = [
            Stage.measured(
                "binarize",
                "each pixel becomes 1 with probability equal to its intensity: Bernoulli pixels",
                x,
                grid,
                f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(grid[pixel])}",
            )
        ]
    else:
        grid = model.discretize(x)
        stages = [
            Stage.measured(
                "discretize",
                f"pixels on the 8-bit grid k/255: level k is the class of a {LEVELS}-way softmax",
                x,
                grid,
                f"pixel {pixel} {format_number(x[pixel])} is level {round(float(grid[pixel]) * 255)}",
            )
        ]
    logits = model.network(grid, labels)  # (B, C, K, H, W)
    if model.config.binarize:
        probability = torch.sigmoid(logits[pixel[0], pixel[1], 0, pixel[2], pixel[3]])
        if grid[pixel] == 0:
            probability = 1 - probability
        value = format_number(grid[pixel])
    else:
        level = round(float(grid[pixel]) * (LEVELS - 1))
        probability = logits[pixel[0], pixel[1], :, pixel[2], pixel[3]].softmax(0)[level]
        value = f"level {level}"
    stages.append(
        Stage.measured(
            "masked network",
            "gated masked convolutions: every pixel's distribution given only the pixels above and "
            f"to its left{class_terms(model)}, all pixels in one pass",
            grid,
            logits,
            f"p(pixel {pixel} = {value} | the pixels before it) = {format_number(probability)}",
        )
    )
    nll = model.nll(grid, labels)  # (B,)
    stages.append(
        Stage.measured(
            "loss",
            "-log p(x), the sum of every pixel's -log p(x_i | x_<i): exact, in nats per image",
            logits,
            nll,
            f"{format_number(nll.mean())} nats per image on this batch = "
            f"{format_number(bits_per_dim(nll.mean(), model.data.num_pixels))} bits/dim",
        )
    )
    generation_labels = model.check_labels(len(x), None)
    uniform = model.rand(len(x), *model.data.image_shape, generator=generator)  # (B, C, H, W), as `sample`
    stages.append(
        Stage.measured(
            "sample uniforms",
            "one u ~ U[0, 1) per pixel: it picks the pixel's level by inverting its CDF",
            None,
            uniform,
            f"pixel {pixel}: u = {format_number(uniform[pixel])}",
            path="generation",
        )
    )
    guidance = model.checked_guidance(None)  # the run's (an unconditional model's config holds 1)
    images = fill(model.network, torch.zeros_like(uniform), 0, uniform, generation_labels, guidance=guidance)
    guided = (
        f", under classifier-free guidance {guidance:g}: logits u + {guidance:g} (c - u) of the unconditional (null "
        "label) and conditional passes, run together"
        if guidance != 1.0
        else ""
    )
    stages.append(
        Stage.measured(
            "draw pixel by pixel",
            f"{model.data.num_pixels} draws in raster order, each from the network's "
            f"distribution given the pixels drawn before it{guided}",
            uniform,
            images,
            format_pixel(images, pixel),
            path="generation",
        )
    )
    return stages


def prediction_pass(
    model: PixelCNN, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> PredictionPass:
    """One full network pass over the real batch on the model's grid: every pixel's distribution at once."""
    grid = binarize(x, generator) if model.config.binarize else model.discretize(x)  # (B, C, H, W)
    labels = model.condition(labels)
    outputs = "Bernoulli logit" if model.config.binarize else f"{LEVELS}-way logits"
    return PredictionPass(
        "network",
        model.network,
        "real images on the model's grid",
        grid,
        lambda: model.network(grid, labels),
        f"{outputs} per pixel",
        f"one full network pass over the {len(grid)} real images: every pixel's distribution at once "
        "(sampling computes the same layers pixel by pixel, from cached rows)",
    )


def class_terms(model: PixelCNN) -> str:
    """How a conditional network is told the class, for the network stage's description; else nothing."""
    if not model.conditional:
        return ""
    if model.config.class_maps:
        return (
            f" and the class (an embedding in every gate, and a learned {model.config.class_maps}-channel map of the "
            "class read at each pixel)"
        )
    return " and the class (an embedding in every gate)"
