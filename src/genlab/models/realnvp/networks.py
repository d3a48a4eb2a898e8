"""Real NVP's invertible network (Dinh, Sohl-Dickstein & Bengio 2017): affine coupling layers (eq. 7-9)
with checkerboard and channel-wise masks, squeezes, and the multi-scale flow (section 3.6).

Per scale: 3 checkerboard couplings, a 2x2 squeeze (space to depth), 3 channel-wise couplings,
and half the channels factored out as latents; the last scale has 4 checkerboard couplings.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.realnvp.losses import standard_normal_log_density

CHECKERBOARD_COUPLINGS = 3  # per scale before the squeeze (the paper's numbers)
CHANNEL_COUPLINGS = 3  # per scale after the squeeze
FINAL_COUPLINGS = 4  # checkerboard couplings of the last scale


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """Space to depth: (B, C, H, W) -> (B, 4C, H/2, W/2); a permutation, log-det 0."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, H/2, W/2)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Depth to space, the inverse of `squeeze`: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, H, 2, W, 2)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


def checkerboard(height: int, width: int, parity: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) mask: 1 where (row + column + parity) is even (the units that pass unchanged)."""
    rows = torch.arange(height, device=like.device).reshape(-1, 1)
    columns = torch.arange(width, device=like.device).reshape(1, -1)
    return ((rows + columns + parity) % 2 == 0).to(like.dtype).reshape(1, 1, height, width)


class ResidualBlock(nn.Module):
    """h + conv(relu(conv(relu(h)))), 3x3 convolutions, no normalisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class CouplingNetwork(nn.Module):
    """The small ResNet that gives a coupling layer its log-scales and shifts.

    No BatchNorm (the paper's nets had it): without batch statistics the map is one fixed
    function in training and eval mode alike, so inversion is exact and independent of the
    batch. The last convolution starts at zero, so every coupling starts as the identity.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, blocks: int, num_classes: int):
        super().__init__()
        self.input = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.embedding = nn.Embedding(num_classes, hidden) if num_classes else None
        self.blocks = nn.Sequential(*(ResidualBlock(hidden) for _ in range(blocks)))
        self.output = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(cast(torch.Tensor, self.output.bias))  # built with bias=True: never None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.input(x)  # (B, hidden, H, W)
        if self.embedding is not None:
            h = h + self.embedding(labels)[:, :, None, None]  # the class as a per-channel bias
        return self.output(F.relu(self.blocks(h)))


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(s(x_a)) + t(x_a), y_a = x_a (eq. 7-9); log |det| = sum of s over the changed units.

    `mask` "checkerboard" keeps the units where (row + column + parity) is even; "channel" keeps
    the first half of the channels (parity 0) or the second (parity 1). The log-scale is
    s = scale * tanh(raw), with a learned scale per channel (section 4.1), so it stays bounded.
    """

    def __init__(self, channels: int, mask: str, parity: int, hidden: int, blocks: int, num_classes: int = 0):
        super().__init__()
        self.mask, self.parity = mask, parity
        if mask == "checkerboard":  # the net sees the kept units and the mask itself (so it knows which is which)
            in_channels, changed = channels + 1, channels
        else:
            in_channels = changed = channels // 2
        self.net = CouplingNetwork(in_channels, hidden, 2 * changed, blocks, num_classes)
        self.scale = nn.Parameter(torch.ones(1, changed, 1, 1))

    def _scale_shift(self, kept: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raw, shift = self.net(kept, labels).chunk(2, dim=1)
        return self.scale * torch.tanh(raw), shift

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = x.chunk(2, dim=1)
        return (second, first) if self.parity else (first, second)  # (kept, changed)

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([changed, kept] if self.parity else [kept, changed], dim=1)

    def _checkerboard_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = checkerboard(x.shape[2], x.shape[3], self.parity, x)  # (1, 1, H, W)
        return b, torch.cat([x * b, b.expand(len(x), 1, -1, -1)], dim=1)  # (B, C + 1, H, W)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, log |det dy/dx|) with y shaped as x, log-det (B,)."""
        if self.mask == "checkerboard":
            b, kept = self._checkerboard_inputs(x)
            s, t = self._scale_shift(kept, labels)
            s, t = s * (1 - b), t * (1 - b)  # the kept units get scale 1 and shift 0
            return x * s.exp() + t, s.flatten(1).sum(1)
        kept, changed = self._split(x)
        s, t = self._scale_shift(kept, labels)
        return self._join(kept, changed * s.exp() + t), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x from y: the kept units are unchanged, so s and t can be recomputed from them."""
        if self.mask == "checkerboard":
            b, kept = self._checkerboard_inputs(y)
            s, t = self._scale_shift(kept, labels)
            s, t = s * (1 - b), t * (1 - b)
            return (y - t) * (-s).exp()
        kept, changed = self._split(y)
        s, t = self._scale_shift(kept, labels)
        return self._join(kept, (changed - t) * (-s).exp())


class Scale(nn.Module):
    """One scale: checkerboard couplings, then (unless it is the last) a squeeze and channel-wise couplings."""

    def __init__(self, channels: int, last: bool, hidden: int, blocks: int, num_classes: int):
        super().__init__()
        count = FINAL_COUPLINGS if last else CHECKERBOARD_COUPLINGS
        self.checkerboard = nn.ModuleList(
            AffineCoupling(channels, "checkerboard", i % 2, hidden, blocks, num_classes) for i in range(count)
        )
        self.channelwise = nn.ModuleList(
            []
            if last
            else (
                AffineCoupling(4 * channels, "channel", i % 2, hidden, blocks, num_classes)
                for i in range(CHANNEL_COUPLINGS)
            )
        )
        self.last = last

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (B, 4C, H/2, W/2) (or the same shape for the last scale), log-det (B,)."""
        log_det = x.new_zeros(len(x))
        for coupling in self.checkerboard:
            x, part = coupling(x, labels)
            log_det = log_det + part
        if not self.last:
            x = squeeze(x)
            for coupling in self.channelwise:
                x, part = coupling(x, labels)
                log_det = log_det + part
        return x, log_det

    def inverse(self, y: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The input x (B, C, H, W) from the output y (B, 4C, H/2, W/2), or the same shape for the last scale."""
        checkerboard, channelwise = self.couplings()
        for coupling in reversed(channelwise):
            y = coupling.inverse(y, labels)
        if not self.last:
            y = unsqueeze(y)
        for coupling in reversed(checkerboard):
            y = coupling.inverse(y, labels)
        return y

    def couplings(self) -> tuple[list[AffineCoupling], list[AffineCoupling]]:
        """The checkerboard couplings and the channel-wise ones (none in the last scale), in forward order."""
        return cast("list[AffineCoupling]", list(self.checkerboard)), cast(
            "list[AffineCoupling]", list(self.channelwise)
        )


class ClassGaussianPrior(nn.Module):
    """A conditional flow's base density: z ~ N(means[y], diag(exp(log_scales[y]))^2) for class y, learned
    with the flow (Glow's class-conditional prior, Kingma & Dhariwal 2018). Both start at zero, so the
    prior starts as N(0, I); the label then moves where a class's latents sit, not only the couplings."""

    def __init__(self, num_classes: int, shape: tuple[int, ...]):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(num_classes, *shape))  # (K, C, H, W)
        self.log_scales = nn.Parameter(torch.zeros(num_classes, *shape))  # (K, C, H, W)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(z - means[y]) / scales[y]: latents (B, C, H, W) standardized by their class's Gaussian."""
        return (z - self.means[labels]) * torch.exp(-self.log_scales[labels])

    def log_density(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log N(z; means[y], scales[y]^2) summed per image: (B,)."""
        return standard_normal_log_density(self(z, labels)) - self.log_scales[labels].flatten(1).sum(1)

    def draw(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """means[y] + scales[y] * noise: noise (B, C, H, W) ~ N(0, I) (times a temperature) into latents."""
        return self.means[labels] + torch.exp(self.log_scales[labels]) * noise


class Flow(nn.Module):
    """The multi-scale flow on logit-space images (B, C, H, W) -> latents of the same shape (section 3.6).

    After each scale but the last, half the channels leave as latents (z_i) and the rest go on.
    The latents are put back into one (B, C, H, W) tensor by undoing the squeezes and splits,
    which are permutations: so one density over the image-shaped z is the prior of every scale,
    N(0, I), or given `class_prior_size` a learned Gaussian per class (`ClassGaussianPrior`), which the
    flow owns so that its moving average covers both.
    """

    def __init__(
        self,
        channels: int,
        scales: int,
        hidden: int,
        blocks: int,
        num_classes: int = 0,
        class_prior_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        widths = [channels * 2**i for i in range(scales)]  # channels entering each scale: C, 2C, 4C ...
        self.scales = nn.ModuleList(
            Scale(width, i == scales - 1, hidden, blocks, num_classes) for i, width in enumerate(widths)
        )
        # class_prior_size: the image's (H, W), for a conditional flow whose prior depends on the class
        self.prior = ClassGaussianPrior(num_classes, (channels, *class_prior_size)) if class_prior_size else None

    def log_prior(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """log p(z) per image (B,): the class's Gaussian with a class prior, else N(0, I)."""
        if self.prior is None or labels is None:
            return standard_normal_log_density(z)
        return self.prior.log_density(z, labels)

    def draw_latent(self, noise: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Latents from noise (B, C, H, W) ~ N(0, T^2 I): the noise itself, or moved into each label's Gaussian."""
        if self.prior is None or labels is None:
            return noise
        return self.prior.draw(noise, labels)

    def forward(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents z shaped as y (B, C, H, W), and log |det dz/dy| per image (B,)."""
        log_det = y.new_zeros(len(y))
        factored = []
        for scale in self.scales[:-1]:
            y, part = scale(y, labels)  # (B, 4C, H/2, W/2)
            y, z = y.chunk(2, dim=1)  # half go on, half are latents (B, 2C, H/2, W/2) each
            factored.append(z)
            log_det = log_det + part
        y, part = self.scales[-1](y, labels)
        log_det = log_det + part
        for z in reversed(factored):
            y = unsqueeze(torch.cat([y, z], dim=1))  # back to the previous scale's shape
        return y, log_det

    def inverse(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """y = f^-1(z), shaped as z (B, C, H, W)."""
        scales = self.each_scale()
        factored = []
        for _ in scales[:-1]:  # the forward pass's reassembly, undone
            z, latent = squeeze(z).chunk(2, dim=1)
            factored.append(latent)
        y = scales[-1].inverse(z, labels)
        for scale, latent in zip(reversed(scales[:-1]), reversed(factored)):
            y = scale.inverse(torch.cat([y, latent], dim=1), labels)
        return y

    def each_scale(self) -> list[Scale]:
        """The scales, from the image's down to the smallest."""
        return cast("list[Scale]", list(self.scales))

    def count_couplings(self) -> int:
        """The number of affine coupling layers over all scales."""
        return sum(len(scale.checkerboard) + len(scale.channelwise) for scale in self.each_scale())
