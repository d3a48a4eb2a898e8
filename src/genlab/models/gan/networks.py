"""The GAN family's networks: the MLP and convolutional generators, the discriminator (or critic) with
its label conditioning, their builders sized from the data, and DCGAN's initialisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from genlab.errors import GenlabError
from genlab.models.base import DataSpec
from genlab.models.gan.config import DCGANConfig, GANConfig

LEAK = 0.2  # LeakyReLU slope of every GAN network (Radford et al. 2016)

Wrap = Callable[[nn.Module], nn.Module]  # applied to each of D's weighted layers: spectral norm, or nothing
NetworkT = TypeVar("NetworkT", bound=nn.Module)


def unwrapped(module: nn.Module) -> nn.Module:
    return module


class Generator(nn.Module):
    """What the family asks of a generator: forward(z (B, latent), labels (B,) or None) -> images (B, C, H, W)
    in [-1, 1], a `condition_weight` buffer (the label's weight, GAN.set_condition_weight) and, where the
    class is joined to z, its embedding."""

    condition_weight: torch.Tensor
    embed: nn.Embedding | None


class MLPGenerator(Generator):
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


class ConvGenerator(Generator):
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
        joined = classes and config.generator_conditioning == "input"
        self.embed = nn.Embedding(classes, config.latent_dim) if joined else None
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
        if self.scale is not None and self.shift is not None:
            nn.init.ones_(self.scale.weight)  # starts as the identity, as a fresh BatchNorm does
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)  # (B, C, H, W)
        if self.scale is None or self.shift is None:
            return x
        return x * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class Discriminator(nn.Module):
    """phi: image -> features (B, F); then a linear score, plus the label by projection or concatenation."""

    condition_weight: torch.Tensor

    def __init__(
        self,
        features: nn.Sequential,
        feature_dim: int,
        config: GANConfig,
        data: DataSpec,
        wrap: Wrap,
        pooled_dim: int = 0,
        classifier_features: str = "pooled",
    ):
        super().__init__()
        self.features = features  # built for C + K input channels (or pixels + K) when labels are concatenated
        classes = data.num_classes if config.conditional else 0
        self.mode = config.conditioning if classes else "none"
        self.num_classes = classes
        self.score = wrap(nn.Linear(feature_dim, 1))
        self.register_buffer("condition_weight", torch.ones(()))  # the label's weight (GAN.condition_ramp)
        self.embed: nn.Module | None = None
        if self.mode == "projection":
            width = pooled_dim or feature_dim
            embed = nn.Embedding(classes, width)
            # Rows of norm ~1 (N(0, 1/width)), so the label term starts on the scale of the score
            # rather than sqrt(width) times larger, as nn.Embedding's N(0, 1) would make it.
            nn.init.normal_(embed.weight, std=width**-0.5)
            self.embed = wrap(embed)
        # AC-GAN's auxiliary classifier: class logits from the conv maps averaged over positions ("pooled") or
        # flattened ("flattened"), or from the MLP's features
        self.classify_pooled = bool(pooled_dim) and classifier_features == "pooled"
        class_inputs = pooled_dim if self.classify_pooled else feature_dim
        self.classifier = nn.Linear(class_inputs, classes) if classes and config.class_loss else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> logits (B,)."""
        return self.score_and_classify(x, labels)[0]

    def score_and_classify(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, C, H, W) -> (logits (B,), the auxiliary classifier's class logits (B, K) or None)."""
        if self.mode == "concat":
            assert labels is not None, "a conditional discriminator needs labels"
            x = concat_labels(
                x, labels, self.num_classes, flat=isinstance(self.features[0], nn.Flatten), weight=self.condition_weight
            )
        maps = self.features(x)  # (B, F) for the MLP, (B, C, h, w) for the convolutional D
        out = self.score(maps.flatten(1)).squeeze(1)
        if self.embed is not None:  # projection
            # <embed(y), phi(x)> on features summed over positions (B, C), as projection discriminators
            # do (Miyato & Koyama 2018): one label vector scores every position. Over all C*h*w
            # flattened features the inner product's scale swung from step to step; a mean over
            # positions would shrink the label term h*w times below the score, and D ignored it.
            pooled = maps.sum(dim=(2, 3)) if maps.dim() == 4 else maps
            out = out + self.condition_weight * (self.embed(labels) * pooled).sum(dim=1)
        if self.classifier is None:
            return out, None
        return out, self.classifier(maps.mean(dim=(2, 3)) if self.classify_pooled else maps.flatten(1))


def concat_labels(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, flat: bool, weight: torch.Tensor | float = 1.0
) -> torch.Tensor:
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
    """Flattened pixels [+ one-hot label] -> 512 -> 256 features, LeakyReLU (then dropout, if any) after each."""
    inputs = data.num_pixels + concatenated_classes(config, data)
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in ((inputs, 512), (512, 256)):
        layers += [nn.Linear(width_in, width_out), nn.LeakyReLU(LEAK), *discriminator_dropout(config)]
    return Discriminator(nn.Sequential(*layers), 256, config, data, wrap=unwrapped)


def discriminator_dropout(config: GANConfig) -> list[nn.Module]:
    """[Dropout(config.dropout)] after each of D's activations, or [] when it is 0: then D's layers keep the
    indices (and checkpoint keys) they had before the setting existed."""
    return [nn.Dropout(config.dropout)] if config.dropout else []


def conv_discriminator(config: DCGANConfig, data: DataSpec, stages: int, norm: str) -> Discriminator:
    """k x (Conv 4/2/1 [+ BN], LeakyReLU) from `channels` doubling: phi(x) maps (B, C_k, h, w).

    `norm`: "batch" (DCGAN), "spectral" (every layer spectrally normalised) or "none" (the
    WGAN-GP critic: the gradient penalty is per sample, which BatchNorm would couple).
    """
    wrap: Wrap = nn.utils.parametrizations.spectral_norm if norm == "spectral" else unwrapped
    c, h, w = data.image_shape
    layers: list[nn.Module] = []
    width, in_channels = config.channels, c + concatenated_classes(config, data)  # + one plane per class
    for stage in range(stages):
        layers.append(wrap(nn.Conv2d(in_channels, width, 4, 2, 1, bias=norm != "batch" or stage == 0)))
        if norm == "batch" and stage > 0:  # no BN on the first layer (Radford et al. 2016)
            layers.append(nn.BatchNorm2d(width))
        layers += [nn.LeakyReLU(LEAK), *discriminator_dropout(config)]
        in_channels, width = width, width * 2
    feature_dim = in_channels * (h >> stages) * (w >> stages)  # flattened by the Discriminator
    return Discriminator(
        nn.Sequential(*layers), feature_dim, config, data, wrap, in_channels, config.classifier_features
    )


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


def dcgan_init(network: NetworkT) -> NetworkT:
    """Radford et al. 2016: conv and linear weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0.

    Chosen with the per-channel BatchNorm after G's first layer, which together lowered the
    unconditional DCGAN's FID (benchmarks/README.md). Embeddings keep their own initialisation.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(raw_weight(module), 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d) and module.affine:
            nn.init.normal_(module.weight, 1.0, 0.02)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return network


def raw_weight(module: nn.Module) -> torch.Tensor:
    """A layer's weight parameter; under spectral normalisation, the unnormalised one it is computed from."""
    if parametrize.is_parametrized(module, "weight"):
        parametrizations = cast(nn.ModuleDict, module.parametrizations)
        return cast(torch.Tensor, parametrizations["weight"].original)
    return cast(torch.Tensor, module.weight)
