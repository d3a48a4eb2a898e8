"""What `genlab explain vae` shows: the data flow stage by stage, and the network call the prediction trace hooks.

The model's `pipeline_stages` and `prediction_pass` delegate here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from genlab.data.transforms import binarize, flatten
from genlab.explain.stages import PredictionPass, Stage, example_pixel, format_number, format_pixel, format_values
from genlab.models.vae.losses import negative_elbo
from genlab.models.vae.prior import ClassMixturePrior

if TYPE_CHECKING:
    from genlab.models.vae.model import VAE


def pipeline_stages(
    model: VAE, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> list[Stage]:
    """Encode, sample z, decode, -ELBO on the real batch x (B, C, H, W) in [0, 1]; then z ~ N(0, I) -> image."""
    pixel = example_pixel(x)
    onehot = model.onehot(labels)
    label_note = " with the one-hot label joined" if onehot is not None else ""
    stages = []
    if model.config.binarize:
        binary = binarize(x, generator)
        stages.append(
            Stage.measured(
                "binarize",
                "each pixel becomes 1 with probability equal to its intensity (dynamic binarization)",
                x,
                binary,
                f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(binary[pixel])}",
            )
        )
        x = binary
    encoder_input = x
    if model.config.arch == "mlp":
        encoder_input = flatten(x)  # (B, D)
        feature = (pixel[1] * model.data.height + pixel[2]) * model.data.width + pixel[3]
        stages.append(
            Stage.measured(
                "flatten",
                "each image becomes one vector of C*H*W pixel values, the MLP's input",
                x,
                encoder_input,
                f"pixel {pixel} is feature (0, {feature}) = {format_number(encoder_input[0, feature])}",
            )
        )
    mean, logvar = model.coder.encode(x, onehot)  # (B, latent) each
    stages.append(
        Stage.measured(
            "encode",
            f"the encoder network{label_note} gives q(z|x) = N(mean, exp(log-variance)) per image",
            encoder_input,
            mean,
            f"mean[0, :3] = {format_values(mean[0, :3])}, log-variance[0, :3] = {format_values(logvar[0, :3])}",
        )
    )
    noise = model.randn(*mean.shape, generator=generator)
    z = mean + noise * (0.5 * logvar).exp()  # the reparameterization trick, as in `forward`
    stages.append(
        Stage.measured(
            "sample z",
            "z = mean + exp(log-variance / 2) * eps, eps ~ N(0, I): a draw from q(z|x) that gradients flow through",
            mean,
            z,
            f"z[0, :3] = {format_values(z[0, :3])} with eps[0, :3] = {format_values(noise[0, :3])}",
        )
    )
    logits = model.coder.decode_logits(z, onehot)  # (B, C, H, W)
    stages.append(
        Stage.measured(
            "decode",
            f"the decoder network{label_note} gives each pixel's Bernoulli logit",
            z,
            logits,
            f"pixel {pixel} logit {format_number(logits[pixel])}, so p(pixel on) = "
            f"{format_number(torch.sigmoid(logits[pixel]))} (the data says {format_number(x[pixel])})",
        )
    )
    loss, kl = negative_elbo(logits, x, mean, logvar)  # (B,) each
    train_samples = model.config.train_samples
    iwae = f"; training uses the k = {train_samples} IWAE bound" if train_samples > 1 else ""
    if model.config.beta != 1 and train_samples == 1:
        weighted = loss + (model.config.beta - 1) * kl
        iwae = (f"; training weighs the KL by beta = {format_number(model.config.beta)}: "
                f"{format_number(weighted.mean())} nats, for sharper reconstructions")  # fmt: skip
    stages.append(
        Stage.measured(
            "loss",
            "negative ELBO per image: Bernoulli reconstruction cross-entropy + KL(q(z|x) || N(0, I))",
            logits,
            loss,
            f"{format_number(loss.mean())} nats per image on this batch = reconstruction "
            f"{format_number((loss - kl).mean())} + KL {format_number(kl.mean())}{iwae}",
        )
    )
    sample_labels = model.check_labels(len(x), None)  # a conditional model's classes in turn, as `sample`'s
    prior = model.sample_latent(len(x), generator, sample_labels)  # (B, latent)
    stages.append(
        Stage.measured(
            "sample latent",
            prior_description(model),
            None,
            prior,
            f"z[0, :3] = {format_values(prior[0, :3])}",
            path="generation",
        )
    )
    images = model.decode(prior, sample_labels)
    stages.append(
        Stage.measured(
            "decode",
            "the decoder, then a sigmoid: each pixel's Bernoulli mean, the image in [0, 1]",
            prior,
            images,
            format_pixel(images, pixel),
            path="generation",
        )
    )
    return stages


def prediction_pass(
    model: VAE, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> PredictionPass:
    """The decoder's layers (and the conv VAE's dense layers before them) on latents drawn from the prior."""
    sample_labels = model.check_labels(len(x), None)
    z = model.sample_latent(len(x), generator, sample_labels)  # (B, latent)
    parts = ("from_latent", "decoder")  # the modules that decode_logits runs, in order
    decoder = nn.ModuleDict({name: module for name, module in model.coder.named_children() if name in parts})
    return PredictionPass(
        "decoder",
        decoder,
        f"latent z ~ {prior_name(model)}",
        z,
        lambda: model.decode(z, sample_labels),
        "image = sigmoid(logits)",
        f"the decoder on {len(z)} latents z ~ {prior_name(model)}, as `sample` draws images",
    )


def prior_name(model: VAE) -> str:
    """What new latents are drawn from, in a few words."""
    if model.mixture is None:
        return "N(0, I)"
    if isinstance(model.mixture, ClassMixturePrior):
        return f"the fitted mixture of each image's class ({model.mixture.components} components in all)"
    return f"the fitted {int((model.mixture.weights > 0).sum())}-component mixture"


def prior_description(model: VAE) -> str:
    """The generation path's first stage: where z comes from, and why."""
    if model.mixture is None:
        return "draw z from the prior N(0, I)"
    if isinstance(model.mixture, ClassMixturePrior):
        return (
            f"draw z from the Gaussian mixture of its label's class ({model.config.prior_components} full-covariance "
            "components per class, fitted after each epoch to that class's encodings): the latent agrees with the "
            "label the decoder is given (until the first epoch ends, every component is N(0, I))"
        )
    return (
        f"draw z from a Gaussian mixture of {model.config.prior_components} full-covariance components, fitted after "
        "each epoch to the training images' encodings (Ghosh et al. 2020): latents land where the decoder learned "
        "to draw, not in N(0, I)'s empty regions (until the first epoch ends, every component is N(0, I))"
    )
