"""What `genlab explain ddpm` shows: the data flow stage by stage, and the network call the prediction trace hooks.

The model's `pipeline_stages` and `prediction_pass` delegate here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from genlab.data.transforms import to_symmetric
from genlab.explain.stages import PredictionPass, Stage, example_pixel, format_number, format_pixel

if TYPE_CHECKING:
    from genlab.models.ddpm.model import DDPM


def pipeline_stages(
    model: DDPM, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> list[Stage]:
    """Noise the real batch x (B, C, H, W) in [0, 1] at random timesteps, predict the noise, L_simple; then
    x_T ~ N(0, I) -> the sampler -> image."""
    pixel = example_pixel(x)
    labels = model.condition(labels)
    diffusion = model.diffusion
    target = "noise eps" if model.config.prediction == "epsilon" else "v = sqrt(abar) eps - sqrt(1 - abar) x_0"
    x0 = to_symmetric(x)  # (B, C, H, W) in [-1, 1]
    stages = [
        Stage.measured(
            "scale to [-1, 1]",
            "x * 2 - 1: the diffusion runs on images in [-1, 1]",
            x,
            x0,
            f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(x0[pixel])}",
        )
    ]
    t = torch.randint(0, diffusion.steps, (len(x0),), generator=generator).to(model.device)  # (B,)
    noise = model.randn(*x0.shape, generator=generator)
    x_t = diffusion.q_sample(x0, t, noise)
    alpha_bar = diffusion.alpha_bar[t[0]]
    stages.append(
        Stage.measured(
            "add noise",
            f"a random timestep t of {diffusion.steps} per image; x_t = sqrt(abar_t) x_0 + "
            "sqrt(1 - abar_t) eps, eps ~ N(0, I)",
            x0,
            x_t,
            f"image 0 at t = {int(t[0])} (abar = {format_number(alpha_bar)}): pixel {pixel} "
            f"{format_number(x0[pixel])} becomes {format_number(x_t[pixel])} with eps = {format_number(noise[pixel])}",
        )
    )
    output = model.network(x_t, t, labels)  # (B, C, H, W)
    true = diffusion.target(x0, t, noise)
    stages.append(
        Stage.measured(
            "UNet",
            f"the UNet, told t{' and the label' if labels is not None else ''}, predicts the {target}",
            x_t,
            output,
            f"at pixel {pixel}: predicted {format_number(output[pixel])}, true {format_number(true[pixel])}",
        )
    )
    losses = diffusion.training_losses(model.network, x0, t, noise=noise, labels=labels)  # (B,)
    stages.append(
        Stage.measured(
            "loss",
            "mean squared error between the prediction and its target, per image (L_simple)",
            output,
            losses,
            f"{format_number(losses.mean())} on this batch (image 0: {format_number(losses[0])})",
        )
    )
    x_T = model.sample_latent(len(x), generator)  # (B, C, H, W)
    stages.append(
        Stage.measured(
            "sample noise",
            "x_T ~ N(0, I), pure noise of the image's shape",
            None,
            x_T,
            f"pixel {pixel} = {format_number(x_T[pixel])}",
            path="generation",
        )
    )
    images = model.sample(len(x), generator=generator, labels=model.check_labels(len(x), None), initial=x_T)
    stages.append(
        Stage.measured(
            "denoise",
            f"{model.chain_sampler}: {model.chain_steps} UNet calls from t = {diffusion.steps - 1} "
            "down to 0, each removing predicted noise, then (x + 1) / 2: images in [0, 1]",
            x_T,
            images,
            format_pixel(images, pixel),
            path="generation",
        )
    )
    return stages


def prediction_pass(
    model: DDPM, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> PredictionPass:
    """One call of the sampling UNet on x_T ~ N(0, I) at the last timestep: the sampler's first step."""
    x_T = model.sample_latent(len(x), generator)  # (B, C, H, W)
    last = model.diffusion.steps - 1
    t = torch.full((len(x),), last, dtype=torch.long, device=model.device)
    drawn_labels = model.check_labels(len(x), None)
    network = model.sampling_network()
    name = "EMA UNet" if model.ema_network is not None else "UNet"
    output = "predicted noise eps" if model.config.prediction == "epsilon" else "predicted v"
    return PredictionPass(
        name,
        network,
        "noise x_T ~ N(0, I)",
        x_T,
        lambda: network(x_T, t, drawn_labels),
        output,
        f"one {name} call at timestep t = {last} on pure noise, the first of the "
        f"{model.chain_steps} calls {model.chain_sampler} makes per image",
    )
