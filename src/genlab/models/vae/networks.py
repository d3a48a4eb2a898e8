"""The VAE's encoder/decoder pairs ("coders"): q(z|x)'s mean and log-variance from an image, and
p(x|z)'s Bernoulli logits from a latent. A conditional coder is told the one-hot label on both sides."""

from __future__ import annotations

import torch
from torch import nn

from genlab.data.transforms import flatten
from genlab.errors import GenlabError
from genlab.models.base import DataSpec
from genlab.models.vae.config import VAEConfig


class MLPCoder(nn.Module):
    """MLP encoder and decoder: D -> hidden -> (mu, logvar); latent -> hidden -> D logits."""

    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__()
        d, k = data.num_pixels, data.num_classes if config.conditional else 0
        self.image_shape = data.image_shape
        self.encoder = nn.Sequential(nn.Linear(d + k, config.hidden_dim), nn.ReLU())
        self.to_mean = nn.Linear(config.hidden_dim, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden_dim, config.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim + k, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, d)
        )

    def encode(self, x: torch.Tensor, onehot: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s mean and log-variance, (B, latent) each, for images x (B, C, H, W) and one-hot labels (B, K)."""
        h = flatten(x)  # (B, D)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        h = self.encoder(h)  # (B, hidden)
        return self.to_mean(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        """Bernoulli logits (B, C, H, W) of p(x|z) for latents z (B, latent)."""
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        return self.decoder(z).reshape(-1, *self.image_shape)  # (B, C, H, W)


def conv_takes(height: int, width: int) -> bool:
    """Whether the conv net takes images of this size: its two stride-2 convolutions need sides divisible by 4."""
    return height % 4 == 0 and width % 4 == 0


class ConvCoder(nn.Module):
    """Two stride-2 convolutions down (H/4 x W/4), a dense layer, and the mirror image up."""

    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__()
        c, h, w = data.image_shape
        if not conv_takes(h, w):
            raise GenlabError(
                f"the conv VAE needs height and width divisible by 4, got {h}x{w}; use --arch mlp or --size"
            )
        k = data.num_classes if config.conditional else 0
        c1, c2 = config.conv_channels, 2 * config.conv_channels
        self.feature_shape = (c2, h // 4, w // 4)
        features = c2 * (h // 4) * (w // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1),
            nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 4, 2, 1),
            nn.ReLU(),  # (B, c2, H/4, W/4)
            nn.Flatten(),
        )
        self.dense = nn.Sequential(nn.Linear(features + k, config.hidden_dim), nn.ReLU())
        self.to_mean = nn.Linear(config.hidden_dim, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden_dim, config.latent_dim)
        self.from_latent = nn.Sequential(
            nn.Linear(config.latent_dim + k, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, features),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1),
            nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c, 4, 2, 1),  # (B, C, H, W) logits
        )

    def encode(self, x: torch.Tensor, onehot: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s mean and log-variance, (B, latent) each, for images x (B, C, H, W) and one-hot labels (B, K)."""
        h = self.encoder(x)  # (B, c2*H/4*W/4)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        h = self.dense(h)
        return self.to_mean(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        """Bernoulli logits (B, C, H, W) of p(x|z) for latents z (B, latent)."""
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        h = self.from_latent(z).reshape(-1, *self.feature_shape)  # (B, c2, H/4, W/4)
        return self.decoder(h)
