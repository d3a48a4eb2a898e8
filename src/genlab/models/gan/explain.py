"""The GAN family's explain stages: one round of the contest on a real batch, measured, and the
network call the prediction trace hooks. The models' `pipeline_stages` and `prediction_pass` call these.
The variant is read from what the model declares: `judge` (its name for D) and `objective`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from genlab.data.transforms import to_symmetric
from genlab.explain.stages import PredictionPass, Stage, example_pixel, format_number, format_pixel, format_values
from genlab.models.gan.config import DCGANConfig, WGANGPConfig
from genlab.models.gan.losses import critic_loss, gradient_penalty, wasserstein_estimate

if TYPE_CHECKING:
    from genlab.models.gan.model import GAN


def pipeline_stages(
    model: GAN, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> list[Stage]:
    """One round of the contest on the real batch x (B, C, H, W) in [0, 1]: D on real, G on noise, D on fake,
    both losses; then z ~ N(0, I) -> the sampling G -> image."""
    pixel = example_pixel(x)
    labels = model.condition(labels)
    critic = model.judge
    real = to_symmetric(x)  # (B, C, H, W) in [-1, 1], as training_step
    stages = [
        Stage.measured(
            "scale to [-1, 1]",
            "x * 2 - 1: real images in the range of G's tanh output",
            x,
            real,
            f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(real[pixel])}",
        )
    ]
    if labels is not None:
        stages.append(label_stage(model, labels))
    real_scores, class_logits = model.discriminator.score_and_classify(real, labels)  # (B,), (B, K) or None
    stages.append(
        Stage.measured(
            f"{critic} on real",
            f"the {critic} network{normalised(model)} scores each real image ({score_meaning(model)})",
            real,
            real_scores,
            f"scores[:3] = {format_values(real_scores[:3])}" + probability_note(model, real_scores),
        )
    )
    if class_logits is not None and labels is not None:
        weighted, cross_entropy = model.auxiliary_class_loss(class_logits, labels)
        guess = int(class_logits[0].argmax())
        stages.append(
            Stage.measured(
                "auxiliary classifier",
                f"a linear layer on the {critic}'s features{classifier_reads(model)} names the "
                "class of each real image (AC-GAN); its cross-entropy joins the "
                f"{critic}'s loss here and, on generated images, G's",
                real,
                class_logits,
                f"image 0: class {guess} predicted for label {int(labels[0])}; CE {format_number(cross_entropy)} x "
                f"class_loss {format_number(model.config.class_loss)} x label weight "
                f"{format_number(model.discriminator.condition_weight)} = {format_number(weighted)}",
            )
        )
    z = model.randn(len(x), model.config.latent_dim, generator=generator)  # (B, latent): training's noise
    stages.append(
        Stage.measured(
            "sample noise",
            "z ~ N(0, I), one vector per image",
            None,
            z,
            f"z[0, :3] = {format_values(z[0, :3])}",
        )
    )
    fake = model.generator(z, labels)  # (B, C, H, W) in [-1, 1]
    stages.append(
        Stage.measured(
            "generator",
            "G maps each z to an image in [-1, 1] (tanh output)",
            z,
            fake,
            f"fake pixel {pixel} = {format_number(fake[pixel])}",
        )
    )
    fake_scores = model.discriminator(fake, labels)  # (B,)
    stages.append(
        Stage.measured(
            f"{critic} on fake",
            f"the same {critic} scores the generated images",
            fake,
            fake_scores,
            f"scores[:3] = {format_values(fake_scores[:3])}" + probability_note(model, fake_scores),
        )
    )
    d_loss, g_loss, formula = explained_losses(model, real, fake, real_scores, fake_scores, labels, generator)
    stages.append(
        Stage.measured(
            "losses",
            f"the {critic}'s loss (the {critic} steps on it) and the generator's (G steps on it)",
            fake_scores,
            d_loss,
            formula,
        )
    )
    prior = model.sample_latent(len(x), generator)
    stages.append(
        Stage.measured(
            "sample noise",
            f"{sampling_noise(model)}, one vector per image",
            None,
            prior,
            f"z[0, :3] = {format_values(prior[0, :3])}",
            path="generation",
        )
    )
    images = model.decode(prior, model.check_labels(len(x), None))
    network = "the EMA generator" if model.ema_generator is not None else "the generator"
    stages.append(
        Stage.measured(
            "generate",
            f"{network} in eval mode, then (x + 1) / 2: images in [0, 1]",
            prior,
            images,
            format_pixel(images, pixel),
            path="generation",
        )
    )
    return stages


def label_stage(model: GAN, labels: torch.Tensor) -> Stage:
    """How the class labels (B,) enter both networks, with the label's weight at this step."""
    into_g = (
        "a class embedding joined to z"
        if model.generator.embed is not None
        else "per-class BatchNorm scales and shifts"
    )
    into_d = {
        "projection": "the inner product of a class embedding with its pooled features (projection)",
        "concat": "one-hot planes joined to the image",
    }[model.discriminator.mode]
    onehot = F.one_hot(labels, model.data.num_classes).float()  # (B, K)
    start, end = model.config.condition_ramp
    label = int(labels[0])
    names = model.data.class_names
    name = f" ({names[label]})" if names and names[label] != str(label) else ""
    return Stage.measured(
        "labels",
        f"each image's class conditions G through {into_g} and the {model.judge} through {into_d}, "
        f"weighted by w, which training fades in from 0 to 1 over steps {start} to {end}",
        labels,
        onehot,
        f"label[0] = {label}{name}; w = {format_number(model.discriminator.condition_weight)} in these weights "
        f"(after {int(model.steps)} training steps)",
    )


def normalised(model: GAN) -> str:
    """What explain adds after D's name when its layers are spectrally normalised; else nothing."""
    if not (isinstance(model.config, DCGANConfig) and model.config.spectral_norm):
        return ""
    return " (every layer spectrally normalised: its largest singular value divided out, Miyato et al. 2018)"


def score_meaning(model: GAN) -> str:
    """What one of D's scores is."""
    if model.objective == "wasserstein":
        return "an unbounded score, higher for 'more real'"
    return "a logit, higher for 'real'"


def probability_note(model: GAN, scores: torch.Tensor) -> str:
    """D's mean probability of 'real' for these scores (B,); nothing for a critic, whose score is not one."""
    if model.objective == "wasserstein":
        return ""
    return f", D = sigmoid(score) = {format_number(torch.sigmoid(scores).mean())} on average"


def explained_losses(
    model: GAN,
    real: torch.Tensor,
    fake: torch.Tensor,
    real_scores: torch.Tensor,
    fake_scores: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(D loss, G loss, the formula with its numbers) of these scores (B,), as training computes them
    for the model's objective (real, fake: (B, C, H, W) in [-1, 1])."""
    if model.objective == "wasserstein":
        return critic_losses(model, real, fake, real_scores, fake_scores, labels, generator)
    return contest_losses(model, real_scores, fake_scores)


def contest_losses(
    model: GAN, real_scores: torch.Tensor, fake_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(D loss, G loss, the formula with its numbers) of the non-saturating contest on these scores (B,)."""
    d_loss = model.discriminator_loss(real_scores, fake_scores)
    g_loss = model.generator_loss(fake_scores)
    return (
        d_loss,
        g_loss,
        (
            f"D loss {format_number(d_loss)} = BCE(D(real), 1) + BCE(D(fake), 0){r1_note(model)}; "
            f"G loss {format_number(g_loss)} = BCE(D(G(z)), 1) (non-saturating){schedule_note(model)}"
        ),
    )


def r1_note(model: GAN) -> str:
    """The R1 term of D's loss in words, when the model has one (on real images, every r1_every-th D step)."""
    config = model.config
    if not config.r1:
        return ""
    return (
        f", plus R1 {format_number(config.r1)}/2 x {config.r1_every} x E||grad D(real)||^2 every "
        f"{config.r1_every}th D step (lazy: not in this number)"
    )


def critic_steps(model: GAN) -> str:
    """How many critic steps come before each G step, in words."""
    n_critic = model.config.n_critic if isinstance(model.config, WGANGPConfig) else 1
    return "critic step" if n_critic == 1 else f"{n_critic} critic steps"


def schedule_note(model: GAN) -> str:
    """How the learning rates move over training, when they do (config.lr_schedule)."""
    config = model.config
    if config.lr_schedule == "constant":
        return ""
    steps = "the run's planned" if config.decay_steps is None else f"{config.decay_steps:,}"
    return f"; both learning rates fall linearly to 0 over {steps} D steps"


def critic_losses(
    model: GAN,
    real: torch.Tensor,
    fake: torch.Tensor,
    real_scores: torch.Tensor,
    fake_scores: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Critic loss -(W estimate) + lambda * gradient penalty on mixes drawn from `generator`, and G's
    -E[C(G(z))], with their numbers."""
    mix = model.rand(len(real), 1, 1, 1, generator=generator)
    with torch.enable_grad():  # the penalty differentiates the critic with respect to its input
        penalty = gradient_penalty(model.discriminator, real, fake, labels, mix).detach()
    wasserstein = wasserstein_estimate(real_scores, fake_scores)
    d_loss = critic_loss(wasserstein, penalty, model.config.gp_weight)
    g_loss = model.generator_loss(fake_scores)
    return (
        d_loss,
        g_loss,
        (
            f"critic loss {format_number(d_loss)} = -W estimate {format_number(wasserstein)} + "
            f"{model.config.gp_weight:g} x gradient penalty {format_number(penalty)}; "
            f"G loss {format_number(g_loss)} = -mean C(G(z)), one G step after every {critic_steps(model)}"
            f"{schedule_note(model)}"
        ),
    )


def sampling_noise(model: GAN) -> str:
    """How `sample` draws z, in words: the prior, or the prior narrowed by the run's truncation."""
    psi = model.config.truncation
    return "z ~ N(0, I)" if psi == 1 else f"z ~ N(0, {psi:g}² I) (truncation {psi:g}: more typical, less varied)"


def prediction_pass(
    model: GAN, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> PredictionPass:
    """The sampling generator's layers on the sampling noise (z ~ N(0, truncation² I)), for a batch of len(x)."""
    z = model.sample_latent(len(x), generator)  # (B, latent)
    sampling_labels = model.check_labels(len(x), None)
    name = "EMA generator" if model.ema_generator is not None else "generator"
    return PredictionPass(
        name,
        model.sampler(),
        f"noise {sampling_noise(model)}",
        z,
        lambda: model.decode(z, sampling_labels),
        "image = (tanh output + 1) / 2",
        f"the {name} (eval mode) on {len(z)} noise vectors, as `sample` draws images",
    )


def classifier_reads(model: GAN) -> str:
    """How the auxiliary classifier sees D's features, for the stage's description."""
    if model.discriminator.classify_pooled:
        return " averaged over positions"
    return " (all positions, flattened)" if isinstance(model.config, DCGANConfig) else ""
