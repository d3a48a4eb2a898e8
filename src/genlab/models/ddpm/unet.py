"""The denoising UNet of DDPM (Ho et al. 2020), sized for small images: ε_θ(x_t, t[, y]).

    x (B, C, H, W) -> conv 3x3 -> [ResBlock x n, (downsample)] per level   -> middle: Res, Attn, Res
                   <- conv 3x3 <- [ResBlock x (n+1) with skips, (upsample)] <-

Every ResBlock adds the timestep's sinusoidal embedding (passed through an MLP) to its
features; self-attention runs at the lowest resolution. With classes, a learned class
embedding is added to the timestep embedding; index `num_classes` is the null class that
classifier-free guidance (Ho & Salimans 2022) uses for the unconditional prediction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): cos and sin of t at geometrically spaced frequencies."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]  # (B, half)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 as in the paper when the width allows, else the largest divisor up to 8."""
    if channels % 32 == 0:
        return 32
    return max(g for g in (8, 4, 2, 1) if channels % g == 0)


def zeroed(conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` with its weight and bias set to 0, so that it outputs 0 until trained."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class ResBlock(nn.Module):
    """GN, SiLU, conv; + time embedding; GN, SiLU, dropout, conv; plus the (1x1-projected) input."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        # zeroed: each block starts as the identity, which eases early training
        self.conv2 = zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(F.silu(embedding))[:, :, None, None]  # (B, out, 1, 1) broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zeroed(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)  # (B, HW, C) each
        attended = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        return x + self.out(attended.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε_θ(x_t, t, y): `channels` wide at full resolution, times `channel_mult[i]` at level i."""

    def __init__(
        self,
        image_channels: int,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = True,
        dropout: float = 0.1,
        num_classes: int = 0,
    ):
        super().__init__()
        embed_dim = 4 * channels
        self.channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.class_embedding = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None  # +1: null class
        self.num_classes = num_classes
        self.stem = nn.Conv2d(image_channels, channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, width = [channels], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(width, channels * mult, embed_dim, dropout))
                width = channels * mult
                skips.append(width)
            if level < len(channel_mult) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))  # halves H and W
                skips.append(width)
        self.middle = nn.ModuleList(
            [
                ResBlock(width, width, embed_dim, dropout),
                AttentionBlock(width) if attention else nn.Identity(),
                ResBlock(width, width, embed_dim, dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(width + skips.pop(), channels * mult, embed_dim, dropout))
                width = channels * mult
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1))
                )
        self.head = nn.Sequential(  # zeroed: predict 0 at first, the mean of ε
            nn.GroupNorm(_groups(width), width), nn.SiLU(), zeroed(nn.Conv2d(width, image_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,), labels (B,) with `num_classes` as the null class -> prediction (B, C, H, W)."""
        embedding = self.time_mlp(timestep_embedding(t, self.channels))
        if self.class_embedding is not None:
            if labels is None:
                labels = torch.full((len(x),), self.num_classes, device=x.device, dtype=torch.long)
            embedding = embedding + self.class_embedding(labels)
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(h, embedding) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        for block in self.middle:
            h = block(h, embedding) if isinstance(block, ResBlock) else block(h)
        for block in self.up:
            if isinstance(block, ResBlock):
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            else:
                h = block(h)
        return self.head(h)
