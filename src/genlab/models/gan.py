"""Generative adversarial networks: the classic MLP GAN, DCGAN and WGAN-GP, optionally conditional.

Training is a contest. A generator G maps noise z ~ N(0, I) to an image; a discriminator D
scores images as real or generated. D learns to tell them apart, G learns to fool D
(Goodfellow et al. 2014). Three variants share one loop and one set of numbers:

- `gan`: MLP generator and discriminator, the non-saturating loss (G maximises log D(G(z))).
- `dcgan`: convolutional G (transposed convolutions) and D (strided convolutions), sized from
  the data (Radford et al. 2016); `spectral_norm=True` constrains D (Miyato et al. 2018).
- `wgan-gp`: a critic without normalisation layers trained to estimate the Wasserstein
  distance, with a gradient penalty of weight 10 and 5 critic steps per generator step
  (Gulrajani et al. 2017).

Conditional variants embed the class into G (the embedding concatenated to z, or for the
convolutional G per-class BatchNorm scales and shifts) and condition D by projection (Miyato &
Koyama 2018: D(x, y) = psi(phi(x)) + <embed(y), sum over positions of phi(x)>) or by concatenating
a one-hot label to D's input (Mirza & Osindero 2014). On little data a conditional G tends to
draw one image per class and ignore z ("collapse by conditioning", Shahbazi et al. 2022): the
label fades in over `condition_ramp` steps, and `mode_seeking` adds Mao et al.'s (2019) term
that rewards different images for different z of one label. `class_loss` gives D an auxiliary
classifier (AC-GAN, Odena et al. 2017) whose cross-entropy teaches G to draw images of the asked
class. Images are scaled to [-1, 1] inside the family (G ends in tanh); `sample` returns [0, 1]
like every family.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genlab.errors import GenlabError
from genlab.models.base import (
    Batch, DataSpec, GenerativeModel, PredictionPass, Stage, example_pixel, format_number, format_pixel, format_values,
)

CONDITIONING = ("projection", "concat")  # how D sees the label
GENERATOR_CONDITIONING = ("input", "batchnorm")  # how the convolutional G does
LEAK = 0.2  # LeakyReLU slope of every GAN in this file (Radford et al. 2016)


@dataclass
class GANConfig:
    """Everything needed to rebuild a GAN (saved in run.json)."""

    latent_dim: int = 100  # z ~ N(0, I) of this size
    conditional: bool = False  # class-conditional G and D
    conditioning: str = "projection"  # how D sees the label: "projection" or "concat"
    lr: float = 2e-4  # Adam step of both networks
    beta1: float = 0.5  # Adam betas (0.5, 0.999), as DCGAN
    beta2: float = 0.999
    ema: float = 0.0  # decay of an exponential moving average of G's weights (0: none), used for sampling
    # Conditional models: the label's weight in G and D grows linearly from 0 at step start to 1 at
    # step end (D steps): unconditional first, so G learns to use z before the label can replace it.
    condition_ramp: tuple[int, int] = (300, 2000)
    mode_seeking: float = 2.0  # conditional G: weight of the mode-seeking term (Mao et al. 2019) in its loss; 0: off
    # Conditional models: weight of an auxiliary classifier on D's features (AC-GAN, Odena et al. 2017), its
    # cross-entropy on real images added to D's loss and on generated ones to G's; 0: off. Faded in with the label.
    # These three defaults, with --ema 0.999, met both label accuracy >= 0.9 and fashion-mnist FID under the
    # plain loop's (benchmarks/README.md); without the classifier label accuracy stayed near 0.76 there.
    class_loss: float = 10.0

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONING:
            raise GenlabError(f"unknown conditioning {self.conditioning!r}; choose one of {', '.join(CONDITIONING)}")
        _positive_int(self, "latent_dim")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise GenlabError(f"GAN setting lr must be a positive number, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise GenlabError(f"GAN setting {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= self.ema < 1.0:
            raise GenlabError(f"--ema must be in [0, 1) (0: off; 0.999 is typical), got {self.ema!r}")
        for name in ("mode_seeking", "class_loss"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise GenlabError(f"GAN setting {name} must be a number >= 0 (0: off), got {value!r}")
        ramp = tuple(self.condition_ramp)
        steps_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ramp)
        if len(ramp) != 2 or not steps_ok or ramp[0] > ramp[1]:
            raise GenlabError(f"condition_ramp must be two steps 0 <= start <= end, got {self.condition_ramp!r}")
        self.condition_ramp = ramp


@dataclass
class DCGANConfig(GANConfig):
    channels: int = 64  # width of D's first conv and G's last hidden layer; doubled per resolution step
    spectral_norm: bool = False  # spectral normalisation on every D layer (then D has no BatchNorm)
    generator_conditioning: str = "input"  # conditional G: class embedding joined to z ("input") or per-class BatchNorm

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "channels")
        if self.generator_conditioning not in GENERATOR_CONDITIONING:
            raise GenlabError(f"unknown generator_conditioning {self.generator_conditioning!r}; "
                              f"choose one of {', '.join(GENERATOR_CONDITIONING)}")


@dataclass
class WGANGPConfig(DCGANConfig):
    lr: float = 1e-4  # Gulrajani et al. 2017: Adam(1e-4, betas (0, 0.9))
    beta1: float = 0.0
    beta2: float = 0.9
    gp_weight: float = 10.0  # lambda of the gradient penalty
    n_critic: int = 5  # critic steps per generator step

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "n_critic")
        if not (math.isfinite(self.gp_weight) and self.gp_weight >= 0):
            raise GenlabError(f"WGAN-GP setting gp_weight must be >= 0, got {self.gp_weight!r}")


def _positive_int(config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GenlabError(f"setting {name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- networks


class MLPGenerator(nn.Module):
    """z (B, latent) [+ class embedding] -> 128 -> 256 -> 512 -> C*H*W, tanh, as images (B, C, H, W)."""

    def __init__(self, config: GANConfig, data: DataSpec):
        super().__init__()
        classes = data.num_classes if config.conditional else 0
        self.embed = nn.Embedding(classes, classes) if classes else None
        self.register_buffer("condition_weight", torch.ones(()))  # the label's weight (GAN.condition_ramp)
        self.image_shape = data.image_shape
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + classes, 128), nn.LeakyReLU(LEAK),
            nn.Linear(128, 256), nn.BatchNorm1d(256), nn.LeakyReLU(LEAK),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(LEAK),
            nn.Linear(512, data.num_pixels), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.condition_weight * self.embed(labels)], dim=1)
        return self.net(z).view(-1, *self.image_shape)


class ConvGenerator(nn.Module):
    """z -> Linear -> (C0, H/2^k, W/2^k) -> k x (ConvT 4/2/1, BN, ReLU) -> tanh.

    k upsampling stages (2 for 28x28 and 32x32, one more per doubling beyond); widths halve
    each stage down to `channels`. A conditional G takes the class as an embedding joined to z
    (generator_conditioning="input", the default) or through every BatchNorm, each class with
    its own scale and shift and z alone as input ("batchnorm": categorical conditional
    BatchNorm, as the projection discriminator's generator, Miyato & Koyama 2018).
    """

    def __init__(self, config: DCGANConfig, data: DataSpec, stages: int):
        super().__init__()
        classes = data.num_classes if config.conditional else 0
        c, h, w = data.image_shape
        self.base = (config.channels * 2 ** (stages - 1), h >> stages, w >> stages)  # (C0, h0, w0)
        width = self.base[0]
        # The reference's first layer, ConvT(latent, C0, h0) on a 1x1 input, is this Linear; its
        # BatchNorm is per channel (BatchNorm1d over all C0*h0*w0 units lets G bias every pixel alone).
        self.embed = nn.Embedding(classes, config.latent_dim) if classes and config.generator_conditioning == "input" else None
        norm_classes = classes if config.generator_conditioning == "batchnorm" else 0
        self.register_buffer("condition_weight", torch.ones(()))  # the label's weight (GAN.condition_ramp)
        in_dim = config.latent_dim * (2 if self.embed is not None else 1)
        self.project = nn.Linear(in_dim, width * self.base[1] * self.base[2], bias=False)
        self.norms = nn.ModuleList([ClassBatchNorm2d(width, norm_classes)])
        self.upsample = nn.ModuleList()
        for stage in range(stages):
            last = stage == stages - 1
            out = c if last else width // 2
            self.upsample.append(nn.ConvTranspose2d(width, out, 4, 2, 1, bias=last))  # doubles H and W
            if not last:
                self.norms.append(ClassBatchNorm2d(out, norm_classes))
            width = out

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.condition_weight * self.embed(labels)], dim=1)
        h = self.project(z).view(-1, *self.base)
        for norm, layer in zip(self.norms, self.upsample):
            h = layer(F.relu(norm(h, labels)))
        return torch.tanh(h)


class ClassBatchNorm2d(nn.Module):
    """BatchNorm2d whose scale and shift are looked up per class (B,); a plain BatchNorm2d without classes."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=not classes)
        self.scale = nn.Embedding(classes, channels) if classes else None
        self.shift = nn.Embedding(classes, channels) if classes else None
        if classes:
            nn.init.ones_(self.scale.weight)  # starts as the identity, as a fresh BatchNorm does
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)  # (B, C, H, W)
        if self.scale is None:
            return x
        return x * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class Discriminator(nn.Module):
    """phi: image -> features (B, F); then a linear score, plus the label by projection or concatenation."""

    def __init__(self, features: nn.Module, feature_dim: int, config: GANConfig, data: DataSpec, wrap,
                 pooled_dim: int = 0):
        super().__init__()
        self.features = features  # built for C + K input channels (or pixels + K) when labels are concatenated
        classes = data.num_classes if config.conditional else 0
        self.mode = config.conditioning if classes else "none"
        self.num_classes = classes
        self.score = wrap(nn.Linear(feature_dim, 1))
        self.register_buffer("condition_weight", torch.ones(()))  # the label's weight (GAN.condition_ramp)
        self.embed = None
        if self.mode == "projection":
            width = pooled_dim or feature_dim
            embed = nn.Embedding(classes, width)
            # Rows of norm ~1 (N(0, 1/width)), so the label term starts on the scale of the score
            # rather than sqrt(width) times larger, as nn.Embedding's N(0, 1) would make it.
            nn.init.normal_(embed.weight, std=width**-0.5)
            self.embed = wrap(embed)
        # AC-GAN's auxiliary classifier: class logits from the features averaged over positions (or the MLP's)
        self.classifier = nn.Linear(pooled_dim or feature_dim, classes) if classes and config.class_loss else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> logits (B,)."""
        return self.score_and_classify(x, labels)[0]

    def score_and_classify(self, x: torch.Tensor, labels: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, C, H, W) -> (logits (B,), the auxiliary classifier's class logits (B, K) or None)."""
        if self.mode == "concat":
            x = concat_labels(x, labels, self.num_classes, flat=isinstance(self.features[0], nn.Flatten),
                              weight=self.condition_weight)
        maps = self.features(x)  # (B, F) for the MLP, (B, C, h, w) for the convolutional D
        out = self.score(maps.flatten(1)).squeeze(1)
        if self.mode == "projection":
            # <embed(y), phi(x)> on features summed over positions (B, C), as projection discriminators
            # do (Miyato & Koyama 2018): one label vector scores every position. (Over all C*h*w
            # flattened features the inner product swung by orders of magnitude per step; a mean
            # over positions made the label term 49x weaker than the score at 7x7, and D ignored it.)
            pooled = maps.sum(dim=(2, 3)) if maps.dim() == 4 else maps
            out = out + self.condition_weight * (self.embed(labels) * pooled).sum(dim=1)
        if self.classifier is None:
            return out, None
        return out, self.classifier(maps.mean(dim=(2, 3)) if maps.dim() == 4 else maps)


def concat_labels(x: torch.Tensor, labels: torch.Tensor, num_classes: int, flat: bool,
                  weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Join one-hot labels to D's input: (B, C*H*W + K) when `flat`, else K constant planes (B, C + K, H, W).

    At the input every layer of D sees the label (a conditional GAN, Mirza & Osindero 2014); joined
    just before the last linear layer it could only shift the score per class.
    """
    one_hot = weight * F.one_hot(labels, num_classes).to(x.dtype)  # (B, K), scaled by the ramp
    if flat:
        return torch.cat([x.flatten(1), one_hot], dim=1)
    return torch.cat([x, one_hot[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)


def concatenated_classes(config: GANConfig, data: DataSpec) -> int:
    """How many one-hot values concat_labels joins to D's input: K with conditioning=concat, else 0."""
    return data.num_classes if config.conditional and config.conditioning == "concat" else 0


def mlp_discriminator(config: GANConfig, data: DataSpec) -> Discriminator:
    inputs = data.num_pixels + concatenated_classes(config, data)
    features = nn.Sequential(
        nn.Flatten(), nn.Linear(inputs, 512), nn.LeakyReLU(LEAK), nn.Linear(512, 256), nn.LeakyReLU(LEAK)
    )
    return Discriminator(features, 256, config, data, wrap=lambda module: module)


def conv_discriminator(config: DCGANConfig, data: DataSpec, stages: int, norm: str) -> Discriminator:
    """k x (Conv 4/2/1 [+ BN], LeakyReLU) from `channels` doubling: phi(x) maps (B, C_k, h, w).

    `norm`: "batch" (DCGAN), "spectral" (every layer spectrally normalised) or "none" (the
    WGAN-GP critic: the gradient penalty is per sample, which BatchNorm would couple).
    """
    wrap = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda module: module)
    c, h, w = data.image_shape
    layers: list[nn.Module] = []
    width, in_channels = config.channels, c + concatenated_classes(config, data)  # + one plane per class
    for stage in range(stages):
        layers.append(wrap(nn.Conv2d(in_channels, width, 4, 2, 1, bias=norm != "batch" or stage == 0)))
        if norm == "batch" and stage > 0:  # no BN on the first layer (Radford et al. 2016)
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.LeakyReLU(LEAK))
        in_channels, width = width, width * 2
    feature_dim = in_channels * (h >> stages) * (w >> stages)  # flattened by the Discriminator
    return Discriminator(nn.Sequential(*layers), feature_dim, config, data, wrap, pooled_dim=in_channels)


def conv_stages(data: DataSpec, family: str) -> int:
    """Upsampling stages for an image size: 2 (base H/4 x W/4), one more per halving above 8 pixels."""
    _, h, w = data.image_shape
    if h % 4 or w % 4 or min(h, w) < 8:
        raise GenlabError(
            f"{family} takes images whose height and width are multiples of 4 and at least 8 (28x28, 32x32, "
            f"64x64 ...); these are {h}x{w}: resize them with --size 28 or --size 32, or use the MLP `gan`"
        )
    stages = 2
    while (h >> stages) % 2 == 0 and (w >> stages) % 2 == 0 and max(h >> stages, w >> stages) > 8:
        stages += 1
    return stages


# --------------------------------------------------------------------------- the family


class GAN(GenerativeModel):
    """The classic MLP GAN with the non-saturating loss; the base of DCGAN and WGAN-GP."""

    family = "gan"
    config_class = GANConfig
    default_batch_size = 64
    trace_columns = (
        ("d_loss", "D loss"), ("g_loss", "G loss"), ("d_accuracy", "D acc."),
        ("d_real", "D(real)"), ("d_fake", "D(fake)"), ("diversity", "Diversity"),
    )  # fmt: skip
    monitor = "g_loss"
    observer = "contest"  # the GAN rules of genlab.explain.observations
    judge = "discriminator"  # what `genlab explain` calls the network that scores images
    idea = (
        "A generator G maps noise z ~ N(0, I) to images and a discriminator D scores images as real or generated; "
        "they are trained against each other, D to tell real from generated and G to make D call its images real. "
        "New images are G's output for fresh noise."
    )

    def __init__(self, config: GANConfig, data: DataSpec):
        super().__init__(config, data)
        if config.conditional and data.num_classes < 2:
            raise GenlabError(f"a conditional {self.family} needs labelled data with at least 2 classes")
        self.generator, self.discriminator = self.build_networks(config, data)
        # The EMA copy of G: sampled from when config.ema > 0; saved with the weights.
        self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False) if config.ema else None
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))  # for EMA warm-up, n_critic
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_generator_stats", torch.zeros(2, dtype=torch.float64))  # (g_loss, grad norm)

    def build_networks(self, config: GANConfig, data: DataSpec) -> tuple[nn.Module, Discriminator]:
        return MLPGenerator(config, data), mlp_discriminator(config, data)

    def compile_targets(self) -> list[nn.Module]:
        return [self.generator, self.discriminator.features]  # D is called through score_and_classify too

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        return {
            "generator": self.adam(self.generator.parameters(), self.config.lr, betas),
            "discriminator": self.adam(self.discriminator.parameters(), self.config.lr, betas),
        }

    # ---------------------------------------------------------------- training

    def training_step(self, batch: Batch, optimizers) -> dict[str, float]:
        x, labels = batch
        real = x * 2 - 1  # (B, C, H, W) in [-1, 1], G's range
        labels = labels if self.conditional else None
        self.steps += 1
        if self.conditional:
            self.set_condition_weight()
        update_generator = self.generator_update_due()
        z = torch.randn(len(real), self.config.latent_dim, device=real.device)
        fake_labels = labels
        if labels is not None and self.config.mode_seeking:
            half = len(labels) // 2  # fakes come in pairs of one label and two z: (i, half + i)
            fake_labels = torch.cat([labels[:half], labels[:half], labels[2 * half:]])
        with torch.set_grad_enabled(update_generator):  # keep G's graph only when G steps now
            fake = self.generator(z, fake_labels)
        stats = self.discriminator_step(real, fake.detach(), labels, optimizers["discriminator"], fake_labels)
        if update_generator:
            g_loss, g_grad_norm = self.generator_step(fake, fake_labels, optimizers["generator"], z)
            self.last_generator_stats.copy_(torch.tensor([g_loss, g_grad_norm]))
        # Steps without a G update (WGAN-GP's critic steps) report G's latest numbers, kept in a
        # buffer so that a resumed run reports exactly what the straight run does.
        g_loss, g_grad_norm = self.last_generator_stats.tolist()
        return {**stats, "g_loss": g_loss, "g_grad_norm": g_grad_norm}

    def generator_update_due(self) -> bool:
        """Whether this step (self.steps, counted from 1) also updates G."""
        return True

    def set_condition_weight(self) -> None:
        """The label's weight in G and D at this step: 0 before condition_ramp[0], 1 from condition_ramp[1].

        Class-conditional GANs trained on little data collapse within each class early on: G
        learns one image per label and ignores z (Shahbazi et al. 2022, "Collapse by
        conditioning"); starting unconditional and fading the label in avoids it.
        """
        start, end = self.config.condition_ramp
        step = int(self.steps)
        self.set_condition_weight_to(1.0 if step >= end else 0.0 if step <= start else (step - start) / (end - start))

    def set_condition_weight_to(self, weight: float) -> None:
        for network in (self.generator, self.discriminator, self.ema_generator):
            if network is not None:
                network.condition_weight.fill_(weight)

    def discriminator_step(self, real, fake, labels, optimizer, fake_labels=None) -> dict[str, float]:
        """Non-saturating loss: BCE(D(real), 1) + BCE(D(fake), 0)."""
        fake_labels = labels if fake_labels is None else fake_labels
        # Real and fake in separate passes: D's BatchNorm then sees the same all-fake batches here
        # as in G's step, so both steps judge fakes alike (as the DCGAN reference code does).
        (real_logits, real_classes), fake_logits = self.discriminator.score_and_classify(real, labels), \
            self.discriminator(fake, fake_labels)
        loss = self.discriminator_loss(real_logits, fake_logits)
        class_stats = {}
        if real_classes is not None:
            class_loss, class_stats["d_class_loss"] = self.auxiliary_class_loss(real_classes, labels)
            loss = loss + class_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = _grad_norm(self.discriminator)
        optimizer.step()
        with torch.no_grad():
            correct = (real_logits > 0).sum() + (fake_logits < 0).sum()
            total = len(real_logits) + len(fake_logits)
            d_real, d_fake = torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()
        return {
            "d_loss": loss.item(), "d_accuracy": correct.item() / total,
            "d_real": d_real.item(), "d_fake": d_fake.item(), "d_grad_norm": grad_norm, **class_stats,
        }

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Non-saturating D loss: BCE(D(real), 1) + BCE(D(fake), 0)."""
        return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
            F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))

    def auxiliary_class_loss(self, class_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(class_loss * label weight * CE(classifier, labels), the plain CE): AC-GAN's term, faded in with the label."""
        cross_entropy = F.cross_entropy(class_logits, labels)
        return self.config.class_loss * self.discriminator.condition_weight * cross_entropy, cross_entropy.item()

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Non-saturating: -log D(G(z)), i.e. BCE(D(G(z)), 1)."""
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def generator_step(self, fake, labels, optimizer, z=None) -> tuple[float, float]:
        """One G update through the freshly updated D: (loss, gradient norm)."""
        self.discriminator.requires_grad_(False)  # G's backward needs no D parameter gradients
        try:
            fake_logits, fake_classes = self.discriminator.score_and_classify(fake, labels)
            loss = self.generator_loss(fake_logits)
            if fake_classes is not None:  # G draws images D's classifier assigns to their label
                loss = loss + self.auxiliary_class_loss(fake_classes, labels)[0]
            if labels is not None and self.config.mode_seeking and z is not None:
                loss = loss + self.config.mode_seeking * mode_seeking_loss(fake, z)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.discriminator.requires_grad_(True)
        grad_norm = _grad_norm(self.generator)
        optimizer.step()
        self.generator_steps += 1
        self.update_ema()
        return loss.item(), grad_norm

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * G, with d warmed up as min(decay, (1 + t) / (10 + t))."""
        if self.ema_generator is None:
            return
        t = float(self.generator_steps)
        decay = min(self.config.ema, (1 + t) / (10 + t))
        for averaged, current in zip(self.ema_generator.parameters(), self.generator.parameters()):
            averaged.lerp_(current, 1 - decay)
        for averaged, current in zip(self.ema_generator.buffers(), self.generator.buffers()):
            averaged.copy_(current)  # BatchNorm statistics follow G

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """Diversity: mean pairwise distance of generated images over that of the real batch (~1 healthy).

        A conditional G draws the batch's labels and only pairs of one class count, in both
        batches: a G that draws one image per class is collapsed, however different the classes.
        """
        x, labels = batch
        labels = labels if self.conditional else None
        fake = self.sample(len(x), labels=labels)
        real_spread = mean_pairwise_distance(x, labels)
        if not real_spread > 0:
            return {}  # fewer than two images (of one class)
        return {"diversity": (mean_pairwise_distance(fake, labels) / real_spread).item()}

    # ---------------------------------------------------------------- sampling

    def sampler(self) -> nn.Module:
        """The network samples come from: the EMA generator when there is one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None):
        labels = self.check_labels(n, labels)
        return self.decode(self.sample_latent(n, generator), labels)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.randn(n, self.config.latent_dim, generator=generator)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent) -> images (B, C, H, W) in [0, 1], G in eval mode (BatchNorm's running statistics)."""
        network = self.sampler()
        was_training = network.training
        network.eval()
        try:
            images = network(z.to(self.device), labels)
        finally:
            network.train(was_training)
        return ((images + 1) / 2).clamp_(0, 1)

    # ---------------------------------------------------------------- explain

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> list[Stage]:
        """One round of the contest on the real batch x (B, C, H, W) in [0, 1]: D on real, G on noise, D on fake,
        both losses; then z ~ N(0, I) -> the sampling G -> image."""
        pixel = example_pixel(x)
        labels = labels if self.conditional else None
        critic = self.judge
        real = x * 2 - 1  # (B, C, H, W) in [-1, 1], as training_step
        stages = [Stage.measured(
            "scale to [-1, 1]", "x * 2 - 1: real images in the range of G's tanh output", x, real,
            f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(real[pixel])}",
        )]
        if labels is not None:
            stages.append(self._label_stage(labels))
        real_scores, class_logits = self.discriminator.score_and_classify(real, labels)  # (B,), (B, K) or None
        stages.append(Stage.measured(
            f"{critic} on real", f"the {critic} network scores each real image ({self._explain_score()})",
            real, real_scores, f"scores[:3] = {format_values(real_scores[:3])}" + self._explain_probability(real_scores),
        ))
        if class_logits is not None:
            weighted, cross_entropy = self.auxiliary_class_loss(class_logits, labels)
            guess = int(class_logits[0].argmax())
            stages.append(Stage.measured(
                "auxiliary classifier", f"a linear layer on the {critic}'s features averaged over positions names the "
                "class of each real image (AC-GAN); its cross-entropy joins the "
                f"{critic}'s loss here and, on generated images, G's", real, class_logits,
                f"image 0: class {guess} predicted for label {int(labels[0])}; CE {format_number(cross_entropy)} x "
                f"class_loss {format_number(self.config.class_loss)} x label weight "
                f"{format_number(self.discriminator.condition_weight)} = {format_number(weighted)}",
            ))
        z = self.sample_latent(len(x), generator)  # (B, latent)
        stages.append(Stage.measured(
            "sample noise", "z ~ N(0, I), one vector per image", None, z, f"z[0, :3] = {format_values(z[0, :3])}",
        ))
        fake = self.generator(z, labels)  # (B, C, H, W) in [-1, 1]
        stages.append(Stage.measured(
            "generator", "G maps each z to an image in [-1, 1] (tanh output)", z, fake,
            f"fake pixel {pixel} = {format_number(fake[pixel])}",
        ))
        fake_scores = self.discriminator(fake, labels)  # (B,)
        stages.append(Stage.measured(
            f"{critic} on fake", f"the same {critic} scores the generated images", fake, fake_scores,
            f"scores[:3] = {format_values(fake_scores[:3])}" + self._explain_probability(fake_scores),
        ))
        d_loss, g_loss, formula = self.explained_losses(real, fake, real_scores, fake_scores, labels, generator)
        stages.append(Stage.measured(
            "losses", f"the {critic}'s loss (the {critic} steps on it) and the generator's (G steps on it)",
            fake_scores, d_loss, formula,
        ))
        prior = self.sample_latent(len(x), generator)
        stages.append(Stage.measured(
            "sample noise", "z ~ N(0, I), one vector per image", None, prior, f"z[0, :3] = {format_values(prior[0, :3])}",
            path="generation",
        ))
        images = self.decode(prior, self.check_labels(len(x), None))
        network = "the EMA generator" if self.ema_generator is not None else "the generator"
        stages.append(Stage.measured(
            "generate", f"{network} in eval mode, then (x + 1) / 2: images in [0, 1]", prior, images,
            format_pixel(images, pixel),
            path="generation",
        ))
        return stages

    def _label_stage(self, labels: torch.Tensor) -> Stage:
        """How the class labels (B,) enter both networks, with the label's weight at this step."""
        into_g = "a class embedding joined to z" if self.generator.embed is not None else "per-class BatchNorm scales and shifts"
        into_d = {"projection": "the inner product of a class embedding with its pooled features (projection)",
                  "concat": "one-hot planes joined to the image"}[self.discriminator.mode]
        onehot = F.one_hot(labels, self.data.num_classes).float()  # (B, K)
        start, end = self.config.condition_ramp
        label = int(labels[0])
        names = self.data.class_names
        name = f" ({names[label]})" if names and names[label] != str(label) else ""
        return Stage.measured(
            "labels", f"each image's class conditions G through {into_g} and the {self.judge} through {into_d}, "
            f"weighted by w, which training fades in from 0 to 1 over steps {start} to {end}", labels, onehot,
            f"label[0] = {label}{name}; w = {format_number(self.discriminator.condition_weight)} in these weights "
            f"(after {int(self.steps)} training steps)",
        )

    def _explain_score(self) -> str:
        return "a logit, higher for 'real'"

    def _explain_probability(self, scores: torch.Tensor) -> str:
        return f", D = sigmoid(score) = {format_number(torch.sigmoid(scores).mean())} on average"

    def explained_losses(self, real, fake, real_scores, fake_scores, labels, generator):
        """(D loss, G loss, the formula with its numbers) of these scores, as training computes them."""
        d_loss = self.discriminator_loss(real_scores, fake_scores)
        g_loss = self.generator_loss(fake_scores)
        return d_loss, g_loss, (
            f"D loss {format_number(d_loss)} = BCE(D(real), 1) + BCE(D(fake), 0); "
            f"G loss {format_number(g_loss)} = BCE(D(G(z)), 1) (non-saturating)"
        )

    def prediction_pass(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> PredictionPass:
        """The sampling generator's layers on z ~ N(0, I)."""
        z = self.sample_latent(len(x), generator)  # (B, latent)
        labels = self.check_labels(len(x), None)
        name = "EMA generator" if self.ema_generator is not None else "generator"
        return PredictionPass(
            name, self.sampler(), "noise z ~ N(0, I)", z, lambda: self.decode(z, labels),
            "image = (tanh output + 1) / 2", f"the {name} (eval mode) on {len(z)} noise vectors, as `sample` draws images",
        )


class DCGAN(GAN):
    """Convolutional G and D sized from the data (Radford et al. 2016)."""

    family = "dcgan"
    config_class = DCGANConfig
    idea = (
        "A convolutional generator G (transposed convolutions) maps noise z ~ N(0, I) to images and a convolutional "
        "discriminator D (strided convolutions) scores images as real or generated; D learns to tell them apart and "
        "G to make D call its images real. New images are G's output for fresh noise."
    )

    def build_networks(self, config: DCGANConfig, data: DataSpec) -> tuple[nn.Module, Discriminator]:
        stages = conv_stages(data, self.family)
        norm = "spectral" if config.spectral_norm else "batch"
        return dcgan_init(ConvGenerator(config, data, stages)), dcgan_init(conv_discriminator(config, data, stages, norm))


def dcgan_init(network: nn.Module) -> nn.Module:
    """Radford et al. 2016: conv and linear weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0.

    Measured together with the per-channel BatchNorm after G's first layer: unconditional DCGAN
    mnist-5k FID 106 -> 70, D accuracy 0.98 -> 0.96 at epoch 30. Embeddings keep their own initialisation.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral = parametrize.is_parametrized(module, "weight")
            nn.init.normal_(module.parametrizations.weight.original if spectral else module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d) and module.affine:
            nn.init.normal_(module.weight, 1.0, 0.02)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return network


class WGANGP(DCGAN):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017): a critic, lambda = 10, n_critic = 5."""

    family = "wgan-gp"
    config_class = WGANGPConfig
    trace_columns = (
        ("d_loss", "Critic loss"), ("g_loss", "G loss"), ("wasserstein", "W estimate"),
        ("d_accuracy", "Ranking acc."), ("diversity", "Diversity"),
    )  # fmt: skip
    monitor = "wasserstein"
    judge = "critic"
    idea = (
        "A critic learns to estimate the Wasserstein distance between real and generated images, kept 1-Lipschitz by "
        "a penalty on its gradient, and a convolutional generator maps noise z ~ N(0, I) to images that shrink that "
        "distance. New images are the generator's output for fresh noise."
    )

    def build_networks(self, config: WGANGPConfig, data: DataSpec) -> tuple[nn.Module, Discriminator]:
        stages = conv_stages(data, self.family)
        norm = "spectral" if config.spectral_norm else "none"
        return ConvGenerator(config, data, stages), conv_discriminator(config, data, stages, norm)

    def compile_targets(self) -> list[nn.Module]:
        return [self.generator]  # the gradient penalty differentiates the critic twice: it stays eager

    def generator_update_due(self) -> bool:
        return int(self.steps) % self.config.n_critic == 0  # after every n_critic critic steps

    def discriminator_step(self, real, fake, labels, optimizer, fake_labels=None) -> dict[str, float]:
        """Critic loss E[C(fake)] - E[C(real)] + lambda * E[(||grad C(x_hat)|| - 1)^2] on random mixes x_hat."""
        fake_labels = labels if fake_labels is None else fake_labels
        scores, classes = self.discriminator.score_and_classify(
            torch.cat([real, fake]), None if labels is None else torch.cat([labels, fake_labels]))
        real_scores, fake_scores = scores.chunk(2)
        mix = torch.rand(len(real), 1, 1, 1, device=real.device)
        penalty = gradient_penalty(self.discriminator, real, fake, labels, mix)
        wasserstein = real_scores.mean() - fake_scores.mean()
        loss = -wasserstein + self.config.gp_weight * penalty
        class_stats = {}
        if classes is not None:  # the critic's classifier learns from the real half only
            class_loss, class_stats["d_class_loss"] = self.auxiliary_class_loss(classes[: len(real)], labels)
            loss = loss + class_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = _grad_norm(self.discriminator)
        optimizer.step()
        return {
            "d_loss": loss.item(), "wasserstein": wasserstein.item(), "gradient_penalty": penalty.item(),
            "d_accuracy": (real_scores > fake_scores).float().mean().item(),  # pairs ranked right
            "d_real": real_scores.mean().item(), "d_fake": fake_scores.mean().item(), "d_grad_norm": grad_norm,
            **class_stats,
        }

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return -fake_scores.mean()

    def _explain_score(self) -> str:
        return "an unbounded score, higher for 'more real'"

    def _explain_probability(self, scores: torch.Tensor) -> str:
        return ""  # a critic's score is not a probability

    def explained_losses(self, real, fake, real_scores, fake_scores, labels, generator):
        """Critic loss -(W estimate) + lambda * gradient penalty, and G's -E[C(G(z))], with their numbers."""
        mix = self.rand(len(real), 1, 1, 1, generator=generator)
        with torch.enable_grad():  # the penalty differentiates the critic with respect to its input
            penalty = gradient_penalty(self.discriminator, real, fake, labels, mix).detach()
        wasserstein = real_scores.mean() - fake_scores.mean()
        d_loss = -wasserstein + self.config.gp_weight * penalty
        g_loss = self.generator_loss(fake_scores)
        return d_loss, g_loss, (
            f"critic loss {format_number(d_loss)} = -W estimate {format_number(wasserstein)} + "
            f"{self.config.gp_weight:g} x gradient penalty {format_number(penalty)}; "
            f"G loss {format_number(g_loss)} = -mean C(G(z))"
        )


def gradient_penalty(critic, real, fake, labels, mix: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x C(x_hat)||_2 - 1)^2] at x_hat = mix * real + (1 - mix) * fake (Gulrajani et al. 2017, eq. 3).

    `mix` (B, 1, 1, 1) in [0, 1] places each x_hat on the line between a real and a fake image;
    the graph is kept (create_graph) so the penalty trains the critic.
    """
    mixed = (mix * real + (1 - mix) * fake).requires_grad_(True)  # (B, C, H, W)
    (gradient,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1).pow(2).mean()


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """1 / (|G(z1, y) - G(z2, y)| / |z1 - z2|) over the pairs (i, half + i) (Mao et al. 2019, MSGAN).

    Small when two noise vectors of one label give different images: it penalises a G that
    ignores z within a class.
    """
    half = len(fake) // 2
    images = (fake[:half] - fake[half:2 * half]).abs().mean()
    noise = (z[:half] - z[half:2 * half]).abs().mean()
    return 1 / (images / noise + 1e-5)


def mean_pairwise_distance(images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L2 distance over pairs of images (B, ...), only pairs with equal labels when given; NaN if none."""
    flat = images.flatten(1).float()
    distances = torch.cdist(flat, flat)  # (B, B)
    pairs = torch.ones_like(distances, dtype=torch.bool).triu(diagonal=1)
    if labels is not None:
        pairs &= labels[:, None] == labels[None, :]
    return distances[pairs].mean()


def _grad_norm(module: nn.Module) -> float:
    """The L2 norm of all of `module`'s parameter gradients together."""
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0
