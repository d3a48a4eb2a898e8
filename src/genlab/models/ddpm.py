"""Denoising diffusion (Ho et al. 2020): a UNet learns to predict the noise added to an image.

Training picks a timestep t, noises the image with the closed form q(x_t | x_0) and regresses
the UNet's output on the noise (or on v). Generating starts from pure noise and denoises step
by step with DDPM's ancestral sampler or DDIM (deterministic with eta 0), either over any
number of steps up to the training chain's 1,000. The default is the ancestral sampler over 50
respaced steps (DDIM with eta 1): on networks trained for a CPU budget its fresh noise corrects
errors that deterministic DDIM carries forward (fashion-mnist, 3 epochs: FID 80.7 against
DDIM's 148.9, and DDPM-1000's 76.5; benchmarks/README.md). Conditional models drop the label 10% of the time
during training, so one network gives both the conditional and the unconditional prediction,
which classifier-free guidance mixes: ε̃ = ε(x, ∅) + s (ε(x, y) − ε(x, ∅)) (Ho & Salimans 2022;
s = 0 is unconditional, 1 conditional, > 1 guided). Samples come from an exponential moving
average of the weights (default 0.999).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from genlab.errors import GenlabError
from genlab.models.base import (
    Batch, DataSpec, GenerativeModel, PredictionPass, Stage, example_pixel, format_number, format_pixel,
)
from genlab.models.diffusion.process import PREDICTIONS, SCHEDULES, GaussianDiffusion
from genlab.models.diffusion.samplers import SAMPLERS, respaced, sample as run_sampler
from genlab.models.diffusion.unet import UNet

# UNet sizes. "small" (1.06M parameters at 28x28) trains a Fashion-MNIST epoch in about 10 minutes on
# 2 CPU cores; it has no dropout, because a short CPU budget underfits rather than overfits (and
# dropout's random masks cost ~8% of a CPU step). "base" is the usual small-image UNet, with the
# dropout 0.1 Ho et al. used on CIFAR-10.
PRESETS = {
    "small": {"channels": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "dropout": 0.0},
    "base": {"channels": 64, "channel_mult": (1, 2, 2), "num_res_blocks": 2, "dropout": 0.1},
}


@dataclass
class DDPMConfig:
    """Everything needed to rebuild a diffusion model (saved in run.json, presets resolved)."""

    preset: str = "small"
    channels: int | None = None  # None: the preset's
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int | None = None
    attention: bool = True  # self-attention at the lowest resolution
    dropout: float | None = None  # None: the preset's
    diffusion_steps: int = 1000  # T of the training chain
    schedule: str = "linear"  # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    prediction: str = "epsilon"  # "epsilon" or "v"
    conditional: bool = False
    label_dropout: float = 0.1  # share of training labels replaced by the null class (for guidance)
    lr: float = 5e-4
    ema: float = 0.999  # 0: sample from the raw weights
    sampler: str = "ddpm"  # the defaults of `sample` (and of the per-epoch grids): ancestral, 50 steps
    sample_steps: int = 50
    eta: float = 0.0
    guidance: float = 1.0
    likelihood_timesteps: int = 100  # timesteps per image in the bound's stratified estimate (T − 1: all)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise GenlabError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.channel_mult = tuple(self.channel_mult)
        checks = [
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.prediction in PREDICTIONS, f"prediction must be one of {', '.join(PREDICTIONS)}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}"),
            (self.channels >= 8 and self.channels % 8 == 0, "channels must be a positive multiple of 8"),
            (len(self.channel_mult) >= 1 and min(self.channel_mult) >= 1, "channel_mult must be positive integers"),
            (self.num_res_blocks >= 1 and self.diffusion_steps >= 2, "num_res_blocks >= 1, diffusion_steps >= 2"),
            (1 <= self.sample_steps <= self.diffusion_steps, "sample_steps must be from 1 to diffusion_steps"),
            (0 <= self.dropout < 1 and 0 <= self.label_dropout < 1 and 0 <= self.ema < 1,
             "dropout, label_dropout and ema must be in [0, 1)"),
            (0 <= self.eta <= 1, "eta must be in [0, 1]"),
            (self.likelihood_timesteps >= 1, "likelihood_timesteps must be at least 1"),
            (math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number"),
        ]
        for ok, message in checks:
            if not ok:
                raise GenlabError(f"DDPM setting: {message}")


class DDPM(GenerativeModel):
    """A UNet noise predictor, the Gaussian diffusion it reverses, and its EMA copy for sampling."""

    family = "ddpm"
    config_class = DDPMConfig
    default_batch_size = 128
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"))
    monitor = "test_loss"
    likelihood_data_model = "256-way discrete (8-bit pixels)"
    likelihood_kind = "bound: variational (Ho et al. 2020), discretized Gaussian decoder"
    likelihood_images = 1000  # `genlab eval` bounds a seeded subset this large: each image costs K + 1 passes
    idea = (
        "Training adds Gaussian noise to each image at a random step t of a fixed noising chain and teaches a UNet "
        "to predict that noise from the noisy image and t. Generating starts from pure noise and removes the "
        "predicted noise step by step until an image remains."
    )

    def __init__(self, config: DDPMConfig, data: DataSpec):
        super().__init__(config, data)
        factor = 2 ** (len(config.channel_mult) - 1)
        if data.height % factor or data.width % factor:
            raise GenlabError(
                f"this UNet halves the image {len(config.channel_mult) - 1} times, so height and width must be "
                f"multiples of {factor}; these are {data.height}x{data.width}: resize with --size or change channel_mult"
            )
        if config.conditional and data.num_classes < 2:
            raise GenlabError("a conditional ddpm needs labelled data with at least 2 classes")
        self.network = UNet(
            data.channels, config.channels, config.channel_mult, config.num_res_blocks, config.attention,
            config.dropout, data.num_classes if config.conditional else 0,
        )
        self.ema_network = copy.deepcopy(self.network).requires_grad_(False) if config.ema else None
        self.diffusion = GaussianDiffusion(config.diffusion_steps, config.schedule, config.prediction)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # optimizer steps, for EMA warm-up

    @property
    def sample_batch_size(self) -> int:
        # Each of the 50-1,000 UNet passes holds (B, 32-64, 28, 28) activations: at B = 1,000 they
        # outgrow a CPU's caches and one core denoises 58 images/s, at B = 64 115 (measured, small UNet).
        return 1000 if self.device.type == "cuda" else 64

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"network": self.adam(self.network.parameters(), self.config.lr)}

    def _labels_for_training(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Labels with `label_dropout` of them replaced by the null class (index num_classes)."""
        if not self.conditional:
            return None
        drop = torch.rand(labels.shape, device=labels.device) < self.config.label_dropout
        return torch.where(drop, torch.full_like(labels, self.data.num_classes), labels)

    def _loss(self, batch: Batch, network: nn.Module) -> torch.Tensor:
        x, labels = batch
        x0 = x * 2 - 1  # (B, C, H, W) in [-1, 1]
        t = torch.randint(0, self.diffusion.steps, (len(x0),), device=x0.device)
        return self.diffusion.training_losses(network, x0, t, labels=self._labels_for_training(labels)).mean()

    def training_step(self, batch: Batch, optimizers) -> dict[str, float]:
        loss = self._loss(batch, self.network)
        optimizer = optimizers["network"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)  # as the reference code: tames rare spikes
        optimizer.step()
        self.updates += 1
        self._update_ema()
        return {"loss": loss.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_network is None:
            return
        t = float(self.updates)
        decay = min(self.config.ema, (1 + t) / (10 + t))  # warm-up: early averages forget the random start
        for averaged, current in zip(self.ema_network.parameters(), self.network.parameters()):
            averaged.lerp_(current, 1 - decay)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """The training loss (L_simple) of the sampling network on held-out images, at random timesteps."""
        return {"test_loss": self._loss(batch, self.sampling_network()).item()}

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                       timesteps: int | None = None) -> torch.Tensor:
        """The variational lower bound on log p(x) in nats per image, (B,) (Ho et al. 2020, eq. 5).

        `x` (B, C, H, W) holds 8-bit pixels as k/255 in [0, 1]; the bound is on their 256-level
        distribution. The sum over the chain's T terms is a stratified estimate from `timesteps`
        (default the config's `likelihood_timesteps`) network passes per image, plus the decoder's;
        seed torch for a reproducible figure.
        """
        network = self.sampling_network()
        labels = labels.to(self.device) if labels is not None and self.conditional else None
        was_training = network.training
        network.eval()
        try:
            x0 = x.to(self.device) * 2 - 1  # (B, C, H, W) on the 256-level grid of [-1, 1]
            bound = self.diffusion.variational_bound(lambda x_t, t: network(x_t, t, labels), x0,
                                                     timesteps or self.config.likelihood_timesteps)
        finally:
            network.train(was_training)
        return -bound.float()

    # ---------------------------------------------------------------- sampling

    def sampling_network(self) -> nn.Module:
        return self.ema_network if self.ema_network is not None else self.network

    def guided(self, labels: torch.Tensor | None, guidance: float):
        """The prediction function the samplers call: conditional, unconditional, or guided."""
        network = self.sampling_network()
        if labels is None or guidance == 1.0:
            return lambda x, t: network(x, t, labels)
        null = torch.full_like(labels, self.data.num_classes)
        if guidance == 0.0:
            return lambda x, t: network(x, t, null)

        def mix(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # one batched pass
            conditional, unconditional = both.chunk(2)
            return unconditional + guidance * (conditional - unconditional)

        return mix

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
        trajectory_every: int = 0,
        initial: torch.Tensor | None = None,
    ):
        """n images in [0, 1]; with `trajectory_every` k > 0, (images, [x_T, ..., x_0] every k steps) instead."""
        labels = self.check_labels(n, labels)
        guidance = self.config.guidance if guidance is None else float(guidance)
        if guidance != 1.0 and not self.conditional:
            raise GenlabError("--guidance needs a conditional model (train with --conditional)")
        network = self.sampling_network()
        was_training = network.training
        network.eval()
        try:
            images, trajectory = run_sampler(
                self.guided(labels, guidance), self.diffusion, (n, *self.data.image_shape),
                sampler=sampler or self.config.sampler, steps=steps or self.config.sample_steps,
                eta=self.config.eta if eta is None else eta, generator=generator, device=self.device,
                trajectory_every=trajectory_every, initial=initial,
            )
        finally:
            network.train(was_training)
        images = ((images + 1) / 2).clamp(0, 1)
        if trajectory_every:
            return images, [((x + 1) / 2).clamp(0, 1) for x in trajectory]
        return images

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I) (n, C, H, W): DDIM with eta 0 maps it to one image."""
        return self.randn(n, *self.data.image_shape, generator=generator)

    def interpolate(self, steps: int, generator=None, labels=None) -> torch.Tensor:
        """Spherical interpolation between two x_T (Song et al. 2021), each decoded by deterministic DDIM."""
        z0, z1 = self.sample_latent(2, generator)
        theta = torch.arccos((z0 * z1).sum() / (z0.norm() * z1.norm()))
        weights = torch.linspace(0, 1, steps, device=z0.device)
        z = torch.stack([(torch.sin((1 - w) * theta) * z0 + torch.sin(w * theta) * z1) / torch.sin(theta)
                         for w in weights])
        return self.decode(z, self.check_labels(steps, labels))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.sample(len(z), labels=labels, sampler="ddim", eta=0.0, initial=z)

    # ---------------------------------------------------------------- explain

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> list[Stage]:
        """Noise the real batch x (B, C, H, W) in [0, 1] at random timesteps, predict the noise, L_simple; then
        x_T ~ N(0, I) -> the sampler -> image."""
        pixel = example_pixel(x)
        labels = labels if self.conditional else None
        target = "noise eps" if self.config.prediction == "epsilon" else "v = sqrt(abar) eps - sqrt(1 - abar) x_0"
        x0 = x * 2 - 1  # (B, C, H, W) in [-1, 1]
        stages = [Stage.measured(
            "scale to [-1, 1]", "x * 2 - 1: the diffusion runs on images in [-1, 1]", x, x0,
            f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(x0[pixel])}",
        )]
        t = torch.randint(0, self.diffusion.steps, (len(x0),), generator=generator).to(self.device)  # (B,)
        noise = self.randn(*x0.shape, generator=generator)
        x_t = self.diffusion.q_sample(x0, t, noise)
        alpha_bar = self.diffusion.alpha_bar[t[0]]
        stages.append(Stage.measured(
            "add noise", f"a random timestep t of {self.diffusion.steps} per image; x_t = sqrt(abar_t) x_0 + "
            "sqrt(1 - abar_t) eps, eps ~ N(0, I)", x0, x_t,
            f"image 0 at t = {int(t[0])} (abar = {format_number(alpha_bar)}): pixel {pixel} "
            f"{format_number(x0[pixel])} becomes {format_number(x_t[pixel])} with eps = {format_number(noise[pixel])}",
        ))
        output = self.network(x_t, t, labels)  # (B, C, H, W)
        true = self.diffusion.target(x0, t, noise)
        stages.append(Stage.measured(
            "UNet", f"the UNet, told t{' and the label' if labels is not None else ''}, predicts the {target}",
            x_t, output, f"at pixel {pixel}: predicted {format_number(output[pixel])}, true {format_number(true[pixel])}",
        ))
        losses = self.diffusion.training_losses(self.network, x0, t, noise=noise, labels=labels)  # (B,)
        stages.append(Stage.measured(
            "loss", "mean squared error between the prediction and its target, per image (L_simple)", output, losses,
            f"{format_number(losses.mean())} on this batch (image 0: {format_number(losses[0])})",
        ))
        x_T = self.sample_latent(len(x), generator)  # (B, C, H, W)
        stages.append(Stage.measured(
            "sample noise", "x_T ~ N(0, I), pure noise of the image's shape", None, x_T,
            f"pixel {pixel} = {format_number(x_T[pixel])}", path="generation",
        ))
        images = self.sample(len(x), generator=generator, labels=self.check_labels(len(x), None), initial=x_T)
        steps = len(respaced(self.diffusion.steps, self.config.sample_steps))
        stages.append(Stage.measured(
            "denoise", f"{self.config.sampler.upper()}: {steps} UNet calls from t = {self.diffusion.steps - 1} down "
            "to 0, each removing predicted noise, then (x + 1) / 2: images in [0, 1]", x_T, images,
            format_pixel(images, pixel),
            path="generation",
        ))
        return stages

    def prediction_pass(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> PredictionPass:
        """One call of the sampling UNet on x_T ~ N(0, I) at the last timestep: the sampler's first step."""
        x_T = self.sample_latent(len(x), generator)  # (B, C, H, W)
        last = self.diffusion.steps - 1
        t = torch.full((len(x),), last, dtype=torch.long, device=self.device)
        labels = self.check_labels(len(x), None)
        network = self.sampling_network()
        name = "EMA UNet" if self.ema_network is not None else "UNet"
        output = "predicted noise eps" if self.config.prediction == "epsilon" else "predicted v"
        return PredictionPass(
            name, network, "noise x_T ~ N(0, I)", x_T, lambda: network(x_T, t, labels), output,
            f"one {name} call at timestep t = {last} on pure noise, the first of the "
            f"{len(respaced(self.diffusion.steps, self.config.sample_steps))} calls {self.config.sampler.upper()} "
            "makes per image",
        )
