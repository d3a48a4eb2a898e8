"""What `genlab explain realnvp` shows: the data flow stage by stage, and the network call the prediction
trace hooks. The model's `pipeline_stages` and `prediction_pass` delegate here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from genlab.explain.stages import PredictionPass, Stage, example_pixel, format_number, format_pixel
from genlab.models.base import bits_per_dim
from genlab.models.realnvp.losses import (
    dequantize,
    inverse_logit_transform,
    logit_transform,
)

if TYPE_CHECKING:
    from genlab.models.realnvp.model import RealNVP


def pipeline_stages(
    model: RealNVP, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> list[Stage]:
    """Dequantize and logit the real batch x (B, C, H, W) in [0, 1], run the flow to z, -log p; then
    z from the prior (N(0, I), or the label's Gaussian) -> the inverse flow -> image."""
    pixel = example_pixel(x)
    labels = model.condition(labels)
    alpha = model.config.alpha
    noise = model.rand(*x.shape, generator=generator)
    dequantized = dequantize(x, noise)  # (k + u) / 256 in [0, 1), as `log_likelihood`
    level = round(float(x[pixel]) * 255)
    stages = [
        Stage.measured(
            "dequantize",
            "(k + u) / 256 with u ~ U[0, 1): 8-bit levels k become a continuous density's values",
            x,
            dequantized,
            f"pixel {pixel} level {level} becomes ({level} + {format_number(noise[pixel])}) / 256 = "
            f"{format_number(dequantized[pixel])}",
        )
    ]
    y, log_det_logit = logit_transform(dequantized, alpha)  # (B, C, H, W), (B,)
    stages.append(
        Stage.measured(
            "logit",
            f"y = logit({format_number(alpha)} + {format_number(1 - 2 * alpha)} x): from [0, 1] to the whole real line",
            dequantized,
            y,
            f"pixel {pixel} {format_number(dequantized[pixel])} becomes {format_number(y[pixel])}",
        )
    )
    flow = model.sampling_flow()  # the EMA copy where there is one: what samples and is scored
    z, log_det_flow = flow(y, labels)  # (B, C, H, W), (B,)
    couplings = flow.count_couplings()
    stages.append(
        Stage.measured(
            "flow",
            f"{couplings} affine couplings over {model.config.scales} scales (2x2 squeezes, half the channels "
            "set aside per scale): an invertible map to a latent of the image's shape"
            + (
                f"; the moving average of the trained weights (decay {model.config.ema:g}) samples and is scored"
                if model.ema_flow is not None
                else ""
            ),
            y,
            z,
            f"z at pixel {pixel} = {format_number(z[pixel])}; log |det| of image 0 = "
            f"{format_number(log_det_logit[0] + log_det_flow[0])} (logit {format_number(log_det_logit[0])})",
        )
    )
    log_prior = flow.log_prior(z, labels)  # (B,)
    prior_name = "N(z; means[y], scales[y]^2)" if flow.prior is not None else "N(z; 0, I)"
    nll = -(log_prior + log_det_logit + log_det_flow - model.data.num_pixels * math.log(256))
    stages.append(
        Stage.measured(
            "loss",
            f"-log p = -(log {prior_name} + log |det| - D log 256), nats per image on the 8-bit scale"
            + (", with a learned Gaussian per class y as the prior" if flow.prior is not None else ""),
            z,
            nll,
            f"{format_number(nll.mean())} nats per image on this batch = "
            f"{format_number(bits_per_dim(nll.mean(), model.data.num_pixels))} bits/dim "
            f"(image 0: log N(z) {format_number(log_prior[0])}, log |det| "
            f"{format_number(log_det_logit[0] + log_det_flow[0])})",
        )
    )
    generation_labels = model.check_labels(len(x), None)  # on the model's device; None when unconditional
    prior = model.sample_latent(len(x), generator, generation_labels)  # (B, C, H, W)
    temperature = f"{model.config.sampling_temperature:g}"
    stages.append(
        Stage.measured(
            "sample latent",
            f"z ~ N(means[y], {temperature}^2 scales[y]^2) of the image's shape, from the label y's Gaussian"
            if flow.prior is not None
            else f"z ~ N(0, {temperature}^2 I) of the image's shape",
            None,
            prior,
            f"z at pixel {pixel} = {format_number(prior[pixel])}",
            path="generation",
        )
    )
    y = flow.inverse(prior, generation_labels)
    stages.append(
        Stage.measured(
            "inverse flow",
            "the couplings run backwards, exactly: y = f^-1(z)",
            prior,
            y,
            f"pixel {pixel} = {format_number(y[pixel])}",
            path="generation",
        )
    )
    images = inverse_logit_transform(y, alpha).clamp(0, 1)  # as `decode`
    stages.append(
        Stage.measured(
            "inverse logit",
            "x = (sigmoid(y) - alpha) / (1 - 2 alpha): images in [0, 1]",
            y,
            images,
            format_pixel(images, pixel),
            path="generation",
        )
    )
    return stages


def prediction_pass(
    model: RealNVP, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> PredictionPass:
    """The flow's forward pass on the real batch, dequantized and logit-transformed, to z.

    Forward, not inverse: forward hooks see the coupling layers only in this direction (the inverse
    calls their networks but not the couplings themselves).
    """
    dequantized = dequantize(x, model.rand(*x.shape, generator=generator))  # (B, C, H, W)
    y, _ = logit_transform(dequantized, model.config.alpha)
    flow_labels = model.condition(labels)
    flow = model.sampling_flow()
    prior = flow.prior if flow_labels is not None else None

    def forward() -> torch.Tensor:
        z = flow(y, flow_labels)[0]
        return z if prior is None else prior(z, flow_labels)  # the class's Gaussian standardizes z

    return PredictionPass(
        "EMA flow" if model.ema_flow is not None else "flow",
        flow,
        "y = logit(dequantized real images)",
        y,
        forward,
        "latent z of the image's shape" if prior is None else "(z - means[y]) / scales[y], z's noise under its class",
        f"the flow's forward pass, image -> z, on the {len(y)} real images"
        + ("" if prior is None else ", then the prior of each image's class standardizes z")
        + " (sampling runs the same couplings backwards, z -> image, with the same parameters)",
    )
