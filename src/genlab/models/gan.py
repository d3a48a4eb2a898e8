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

Conditional variants embed the class into G (the embedding concatenated to z) and condition
D by projection (Miyato & Koyama 2018: D(x, y) = psi(phi(x)) + <embed(y), phi(x)>) or by
concatenating a one-hot label to the image features. Images are scaled to [-1, 1] inside the
family (G ends in tanh); `sample` returns [0, 1] like every family.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.models.base import Batch, DataSpec, GenerativeModel

CONDITIONING = ("projection", "concat")
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


@dataclass
class DCGANConfig(GANConfig):
    channels: int = 64  # width of D's first conv and G's last hidden layer; doubled per resolution step
    spectral_norm: bool = False  # spectral normalisation on every D layer (then D has no BatchNorm)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "channels")


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
        self.image_shape = data.image_shape
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + classes, 128), nn.LeakyReLU(LEAK),
            nn.Linear(128, 256), nn.BatchNorm1d(256), nn.LeakyReLU(LEAK),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(LEAK),
            nn.Linear(512, data.num_pixels), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z).view(-1, *self.image_shape)


class ConvGenerator(nn.Module):
    """z [+ class embedding] -> Linear -> (C0, H/2^k, W/2^k) -> k x (ConvT 4/2/1, BN, ReLU) -> tanh.

    k upsampling stages (2 for 28x28 and 32x32, one more per doubling beyond); widths halve
    each stage down to `channels`.
    """

    def __init__(self, config: DCGANConfig, data: DataSpec, stages: int):
        super().__init__()
        classes = data.num_classes if config.conditional else 0
        self.embed = nn.Embedding(classes, config.latent_dim) if classes else None
        c, h, w = data.image_shape
        self.base = (config.channels * 2 ** (stages - 1), h >> stages, w >> stages)  # (C0, h0, w0)
        width = self.base[0]
        in_dim = config.latent_dim * (2 if classes else 1)
        self.project = nn.Sequential(
            nn.Linear(in_dim, width * self.base[1] * self.base[2], bias=False),
            nn.BatchNorm1d(width * self.base[1] * self.base[2]), nn.ReLU(),
        )  # fmt: skip
        layers: list[nn.Module] = []
        for stage in range(stages):
            last = stage == stages - 1
            out = c if last else width // 2
            layers.append(nn.ConvTranspose2d(width, out, 4, 2, 1, bias=last))  # doubles H and W
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU()]
            width = out
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(self.project(z).view(-1, *self.base))


class Discriminator(nn.Module):
    """phi: image -> features (B, F); then a linear score, plus the label by projection or concatenation."""

    def __init__(self, features: nn.Module, feature_dim: int, config: GANConfig, data: DataSpec, wrap,
                 pooled_dim: int = 0):
        super().__init__()
        self.features = features
        classes = data.num_classes if config.conditional else 0
        self.mode = config.conditioning if classes else "none"
        self.num_classes = classes
        extra = classes if self.mode == "concat" else 0
        self.score = wrap(nn.Linear(feature_dim + extra, 1))
        self.embed = wrap(nn.Embedding(classes, pooled_dim or feature_dim)) if self.mode == "projection" else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> logits (B,)."""
        maps = self.features(x)  # (B, F) for the MLP, (B, C, h, w) for the convolutional D
        h = maps.flatten(1)
        if self.mode == "concat":
            return self.score(torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], dim=1)).squeeze(1)
        out = self.score(h).squeeze(1)
        if self.mode == "projection":
            # <embed(y), phi(x)> on spatially pooled features (B, C), as projection discriminators do:
            # over all C*h*w flattened features the inner product swings by orders of magnitude per step.
            pooled = maps.mean(dim=(2, 3)) if maps.dim() == 4 else maps
            out = out + (self.embed(labels) * pooled).sum(dim=1)
        return out


def mlp_discriminator(config: GANConfig, data: DataSpec) -> Discriminator:
    features = nn.Sequential(
        nn.Flatten(), nn.Linear(data.num_pixels, 512), nn.LeakyReLU(LEAK), nn.Linear(512, 256), nn.LeakyReLU(LEAK)
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
    width, in_channels = config.channels, c
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
        update_generator = self.generator_update_due()
        z = torch.randn(len(real), self.config.latent_dim, device=real.device)
        with torch.set_grad_enabled(update_generator):  # keep G's graph only when G steps now
            fake = self.generator(z, labels)
        stats = self.discriminator_step(real, fake.detach(), labels, optimizers["discriminator"])
        if update_generator:
            g_loss, g_grad_norm = self.generator_step(fake, labels, optimizers["generator"])
            self.last_generator_stats.copy_(torch.tensor([g_loss, g_grad_norm]))
        # Steps without a G update (WGAN-GP's critic steps) report G's latest numbers, kept in a
        # buffer so that a resumed run reports exactly what the straight run does.
        g_loss, g_grad_norm = self.last_generator_stats.tolist()
        return {**stats, "g_loss": g_loss, "g_grad_norm": g_grad_norm}

    def generator_update_due(self) -> bool:
        """Whether this step (self.steps, counted from 1) also updates G."""
        return True

    def discriminator_step(self, real, fake, labels, optimizer) -> dict[str, float]:
        """Non-saturating loss: BCE(D(real), 1) + BCE(D(fake), 0)."""
        # Real and fake in separate passes: D's BatchNorm then sees the same all-fake batches here
        # as in G's step, so both steps judge fakes alike (as the DCGAN reference code does).
        real_logits, fake_logits = self.discriminator(real, labels), self.discriminator(fake, labels)
        loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
            F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
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
            "d_real": d_real.item(), "d_fake": d_fake.item(), "d_grad_norm": grad_norm,
        }

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Non-saturating: -log D(G(z)), i.e. BCE(D(G(z)), 1)."""
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def generator_step(self, fake, labels, optimizer) -> tuple[float, float]:
        """One G update through the freshly updated D: (loss, gradient norm)."""
        self.discriminator.requires_grad_(False)  # G's backward needs no D parameter gradients
        try:
            loss = self.generator_loss(self.discriminator(fake, labels))
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
        """Diversity: mean pairwise distance of generated images over that of the real batch (~1 healthy)."""
        x, labels = batch
        if len(x) < 2:
            return {}
        fake = self.sample(len(x), labels=labels if self.conditional else None)
        spread = torch.pdist(fake.flatten(1)).mean() / torch.pdist(x.flatten(1)).mean().clamp_min(1e-12)
        return {"diversity": spread.item()}

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


class DCGAN(GAN):
    """Convolutional G and D sized from the data (Radford et al. 2016)."""

    family = "dcgan"
    config_class = DCGANConfig

    def build_networks(self, config: DCGANConfig, data: DataSpec) -> tuple[nn.Module, Discriminator]:
        stages = conv_stages(data, self.family)
        norm = "spectral" if config.spectral_norm else "batch"
        return ConvGenerator(config, data, stages), conv_discriminator(config, data, stages, norm)


class WGANGP(DCGAN):
    """Wasserstein GAN with gradient penalty (Gulrajani et al. 2017): a critic, lambda = 10, n_critic = 5."""

    family = "wgan-gp"
    config_class = WGANGPConfig
    trace_columns = (
        ("d_loss", "Critic loss"), ("g_loss", "G loss"), ("wasserstein", "W estimate"),
        ("d_accuracy", "Ranking acc."), ("diversity", "Diversity"),
    )  # fmt: skip
    monitor = "wasserstein"

    def build_networks(self, config: WGANGPConfig, data: DataSpec) -> tuple[nn.Module, Discriminator]:
        stages = conv_stages(data, self.family)
        norm = "spectral" if config.spectral_norm else "none"
        return ConvGenerator(config, data, stages), conv_discriminator(config, data, stages, norm)

    def generator_update_due(self) -> bool:
        return int(self.steps) % self.config.n_critic == 0  # after every n_critic critic steps

    def discriminator_step(self, real, fake, labels, optimizer) -> dict[str, float]:
        """Critic loss E[C(fake)] - E[C(real)] + lambda * E[(||grad C(x_hat)|| - 1)^2] on random mixes x_hat."""
        scores = self.discriminator(torch.cat([real, fake]), None if labels is None else labels.repeat(2))
        real_scores, fake_scores = scores.chunk(2)
        mix = torch.rand(len(real), 1, 1, 1, device=real.device)
        penalty = gradient_penalty(self.discriminator, real, fake, labels, mix)
        wasserstein = real_scores.mean() - fake_scores.mean()
        loss = -wasserstein + self.config.gp_weight * penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = _grad_norm(self.discriminator)
        optimizer.step()
        return {
            "d_loss": loss.item(), "wasserstein": wasserstein.item(), "gradient_penalty": penalty.item(),
            "d_accuracy": (real_scores > fake_scores).float().mean().item(),  # pairs ranked right
            "d_real": real_scores.mean().item(), "d_fake": fake_scores.mean().item(), "d_grad_norm": grad_norm,
        }

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return -fake_scores.mean()


def gradient_penalty(critic, real, fake, labels, mix: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x C(x_hat)||_2 - 1)^2] at x_hat = mix * real + (1 - mix) * fake (Gulrajani et al. 2017, eq. 3).

    `mix` (B, 1, 1, 1) in [0, 1] places each x_hat on the line between a real and a fake image;
    the graph is kept (create_graph) so the penalty trains the critic.
    """
    mixed = (mix * real + (1 - mix) * fake).requires_grad_(True)  # (B, C, H, W)
    (gradient,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _grad_norm(module: nn.Module) -> float:
    """The L2 norm of all of `module`'s parameter gradients together."""
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0
