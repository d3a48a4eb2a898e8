"""Real NVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP"): an exact-likelihood flow.

An invertible map f sends an image x to a latent z of the same size with a standard normal
prior, and the change of variables gives log p(x) = log N(f(x); 0, I) + log |det df/dx|
(eq. 3). f is built from affine coupling layers (eq. 7-9): half of the units, picked by a
checkerboard or a channel-wise mask, pass unchanged and set a scale and a shift for the other
half, so the Jacobian is triangular and its log-determinant is the sum of the log-scales.
The multi-scale architecture (section 3.6) alternates, per scale, 3 checkerboard couplings,
a 2x2 squeeze (space to depth), 3 channel-wise couplings, and factors out half the channels
as latents; the last scale has 4 checkerboard couplings. Generating runs f backwards from
z ~ N(0, I).

Pixels are dequantized and logit-transformed first (section 4.1), and the likelihood counts
both transforms, so it is a density of the dequantized data on the 8-bit scale [0, 256)^D:
NLL / (D ln 2) is the usual bits/dim.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.models.base import (
    Batch, DataSpec, GenerativeModel, PredictionPass, Stage, bits_per_dim, example_pixel, format_number, format_pixel,
)

MAX_AUTO_SCALES = 3  # scales=None: as many as the size allows, up to this (28x28: 28 -> 14 -> 7)
CHECKERBOARD_COUPLINGS = 3  # per scale before the squeeze (the paper's numbers)
CHANNEL_COUPLINGS = 3  # per scale after the squeeze
FINAL_COUPLINGS = 4  # checkerboard couplings of the last scale


@dataclass
class RealNVPConfig:
    """Everything needed to rebuild a Real NVP flow (saved in run.json, scales resolved)."""

    hidden_channels: int = 32  # width of every coupling network (64: about 4x slower on a CPU)
    res_blocks: int = 1  # residual blocks per coupling network (the paper used several; each costs about as much again)
    scales: int | None = None  # None: as many as the image size allows, up to 3 (28x28: 3, 8x8: 2, 32x32: 3)
    conditional: bool = False  # a class embedding added inside every coupling network
    alpha: float = 0.05  # logit transform y = logit(alpha + (1 - 2 alpha) x), as in the paper
    temperature: float = 1.0  # sampling draws z ~ N(0, temperature^2 I)
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0  # L2 penalty in Adam (the paper: 5e-5 on weight-norm scales)
    grad_clip: float = 100.0  # largest gradient norm per step (0: no clipping); tames rare spikes

    def __post_init__(self) -> None:
        for name in ("hidden_channels", "res_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GenlabError(f"RealNVP setting {name} must be a positive integer, got {value!r}")
        if self.scales is not None and (not isinstance(self.scales, int) or self.scales < 1):
            raise GenlabError(f"RealNVP setting scales must be a positive integer or None (auto), got {self.scales!r}")
        checks = [
            ("alpha", 0 < self.alpha < 0.5, "a number in (0, 0.5)"),
            ("temperature", math.isfinite(self.temperature) and self.temperature > 0, "a positive number"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "a number >= 0"),
            ("grad_clip", math.isfinite(self.grad_clip) and self.grad_clip >= 0, "a number >= 0 (0: off)"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise GenlabError(f"RealNVP setting {name} must be {what}, got {getattr(self, name)!r}")


def count_scales(scales: int | None, height: int, width: int) -> int:
    """The number of scales for an image of this size, or a GenlabError saying why it cannot be built.

    Each scale but the last squeezes 2x2, so it needs even sizes; the last scale's checkerboard
    needs at least 2x2 pixels. `None` picks the most scales up to MAX_AUTO_SCALES whose
    smallest scale keeps at least 4x4 pixels, and at least one squeeze.
    """
    if scales is None:
        scales, h, w = 1, height, width
        while scales < MAX_AUTO_SCALES and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
            scales, h, w = scales + 1, h // 2, w // 2
        if scales == 1:
            raise GenlabError(
                f"RealNVP's multi-scale architecture squeezes the image 2x2 at least once, so height and width "
                f"must be even and at least 8 (e.g. 8x8, 28x28, 32x32); these are {height}x{width}: resize with "
                "--size, or --set scales=1 for a single-scale flow without squeezes"
            )
        return scales
    factor = 2 ** (scales - 1)
    if height % factor or width % factor or min(height, width) // factor < 2:
        raise GenlabError(
            f"RealNVP with scales={scales} squeezes 2x2 {scales - 1} times, so height and width must be multiples "
            f"of {factor} and at least {2 * factor}; these are {height}x{width}: lower scales or resize with --size"
        )
    return scales


# ------------------------------------------------------------------ invertible pieces


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


def logit_transform(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y = logit(alpha + (1 - 2 alpha) x) for x in [0, 1] (section 4.1), and log |dy/dx| per image (B,).

    alpha keeps y finite at x = 0 and 1: dy/dx = (1 - 2 alpha) / (p (1 - p)), p = alpha + (1 - 2 alpha) x.
    """
    p = alpha + (1 - 2 * alpha) * x
    y = torch.log(p) - torch.log1p(-p)
    log_det = (math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    return y, log_det


def inverse_logit_transform(y: torch.Tensor, alpha: float) -> torch.Tensor:
    """x = (sigmoid(y) - alpha) / (1 - 2 alpha), the inverse of `logit_transform`."""
    return (torch.sigmoid(y) - alpha) / (1 - 2 * alpha)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed per image: (B,)."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)


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
        nn.init.zeros_(self.output.bias)

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
            [] if last else
            (AffineCoupling(4 * channels, "channel", i % 2, hidden, blocks, num_classes)
             for i in range(CHANNEL_COUPLINGS))
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
        for coupling in reversed(self.channelwise):
            y = coupling.inverse(y, labels)
        if not self.last:
            y = unsqueeze(y)
        for coupling in reversed(self.checkerboard):
            y = coupling.inverse(y, labels)
        return y


class Flow(nn.Module):
    """The multi-scale flow on logit-space images (B, C, H, W) -> latents of the same shape (section 3.6).

    After each scale but the last, half the channels leave as latents (z_i) and the rest go on.
    The latents are put back into one (B, C, H, W) tensor by undoing the squeezes and splits,
    which are permutations: so z ~ N(0, I) of the image's shape is the prior of every scale.
    """

    def __init__(self, channels: int, scales: int, hidden: int, blocks: int, num_classes: int = 0):
        super().__init__()
        widths = [channels * 2**i for i in range(scales)]  # channels entering each scale: C, 2C, 4C ...
        self.scales = nn.ModuleList(
            Scale(width, i == scales - 1, hidden, blocks, num_classes) for i, width in enumerate(widths)
        )

    def forward(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        factored = []
        for _ in self.scales[:-1]:  # the forward pass's reassembly, undone
            z, latent = squeeze(z).chunk(2, dim=1)
            factored.append(latent)
        y = self.scales[-1].inverse(z, labels)
        for scale, latent in zip(reversed(self.scales[:-1]), reversed(factored)):
            y = scale.inverse(torch.cat([y, latent], dim=1), labels)
        return y


# ------------------------------------------------------------------ the family


class RealNVP(GenerativeModel):
    """Real NVP: multi-scale affine coupling flow with exact log-likelihood, optionally class-conditional."""

    family = "realnvp"
    config_class = RealNVPConfig
    default_batch_size = 64
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"), ("test_bits_per_dim", "Test bits/dim"))
    monitor = "test_loss"
    likelihood_data_model = "dequantized continuous (uniform noise on 8-bit pixels)"
    likelihood_kind = "exact for the dequantized density (one noise draw per image)"
    idea = (
        "An invertible network of affine coupling layers maps an image to a latent of the same size with a standard "
        "normal density, and the change-of-variables formula makes log p(x) exact. Generating runs the network "
        "backwards on a latent drawn from N(0, I)."
    )

    def __init__(self, config: RealNVPConfig, data: DataSpec):
        # the scales resolved for this size, so run.json holds the number
        config = dataclasses.replace(config, scales=count_scales(config.scales, data.height, data.width))
        super().__init__(config, data)
        if config.conditional and data.num_classes < 2:
            raise GenlabError("a conditional realnvp needs labelled data with at least 2 classes")
        num_classes = data.num_classes if config.conditional else 0
        self.flow = Flow(data.channels, config.scales, config.hidden_channels, config.res_blocks, num_classes)

    def _labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise GenlabError("a conditional realnvp needs labels")
        return torch.as_tensor(labels, dtype=torch.long, device=self.device)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x) for x (B, C, H, W) in [0, 1] (not dequantized here), and log |det dz/dx| per image (B,).

        The log-det counts the logit transform and every coupling layer.
        """
        y, log_det_logit = logit_transform(x.to(self.device), self.config.alpha)
        z, log_det_flow = self.flow(y, self._labels(labels))
        return z, log_det_logit + log_det_flow

    forward = encode

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x = f^-1(z): images (B, C, H, W) in [0, 1] from latents of the image's shape."""
        y = self.flow.inverse(z.to(self.device), self._labels(labels))
        return inverse_logit_transform(y, self.config.alpha).clamp(0, 1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, temperature^2 I) of the image's shape (n, C, H, W)."""
        return self.randn(n, *self.data.image_shape, generator=generator) * self.config.temperature

    @torch.no_grad()
    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        """Decode n latents from the (tempered) prior: (n, C, H, W) in [0, 1]."""
        labels = self.check_labels(n, labels)
        return self.decode(self.sample_latent(n, generator), labels)

    def _log_density(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """log p of one dequantization of x (k/255 pixels) on the 8-bit scale [0, 256)^D, (B,); keeps the graph."""
        x = x.to(self.device)
        dequantized = (x * 255 + torch.rand_like(x)) / 256  # (k + u) / 256, u ~ U[0, 1): in [0, 1)
        z, log_det = self.encode(dequantized, labels)
        # v = 256 * dequantized in [0, 256): dv/d(dequantized) = 256 per dimension
        return standard_normal_log_density(z) + log_det - self.data.num_pixels * math.log(256)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(k + u) in nats per image, (B,), for x holding 8-bit pixels k as k/255, u ~ U[0, 1)^D.

        p is the density of the dequantized pixels on [0, 256)^D, so -log p / (D ln 2) is bits/dim.
        One draw of u (from torch's global generator: seed it for a reproducible figure) is an
        unbiased estimate of E_u[log p(k + u)], a lower bound on the discrete log P(k) =
        log of the integral of p over the unit cube at k (Theis et al. 2016; Jensen's inequality).
        """
        return self._log_density(x, labels)

    def configure_optimizers(self):
        optimizer = self.adam(self.parameters(), lr=self.config.lr)
        for group in optimizer.param_groups:  # Adam's L2 penalty, off by default
            group["weight_decay"] = self.config.weight_decay
        return {"model": optimizer}

    def _numbers(self, nll: torch.Tensor, prefix: str = "") -> dict[str, float]:
        loss = nll.detach().mean()
        bits = bits_per_dim(loss, self.data.num_pixels)
        loss_value, bits_value = torch.stack([loss, bits]).tolist()  # one device sync
        return {f"{prefix}loss": loss_value, f"{prefix}bits_per_dim": bits_value}

    def training_step(self, batch: Batch, optimizers) -> dict[str, float]:
        x, labels = batch
        nll = -self._log_density(x, labels)  # (B,) nats per image
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        nll.mean().backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        optimizer.step()
        return self._numbers(nll)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        x, labels = batch
        return self._numbers(-self._log_density(x, labels), prefix="test_")

    # ---------------------------------------------------------------- explain

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> list[Stage]:
        """Dequantize and logit the real batch x (B, C, H, W) in [0, 1], run the flow to z, -log p; then
        z ~ N(0, I) -> the inverse flow -> image."""
        pixel = example_pixel(x)
        labels = self._labels(labels)
        alpha = self.config.alpha
        noise = self.rand(*x.shape, generator=generator)
        dequantized = (x * 255 + noise) / 256  # (k + u) / 256 in [0, 1), as `log_likelihood`
        level = round(float(x[pixel]) * 255)
        stages = [Stage.measured(
            "dequantize", "(k + u) / 256 with u ~ U[0, 1): 8-bit levels k become a continuous density's values",
            x, dequantized, f"pixel {pixel} level {level} becomes ({level} + {format_number(noise[pixel])}) / 256 = "
            f"{format_number(dequantized[pixel])}",
        )]
        y, log_det_logit = logit_transform(dequantized, alpha)  # (B, C, H, W), (B,)
        stages.append(Stage.measured(
            "logit", f"y = logit({format_number(alpha)} + {format_number(1 - 2 * alpha)} x): from [0, 1] to the whole "
            "real line", dequantized, y, f"pixel {pixel} {format_number(dequantized[pixel])} becomes {format_number(y[pixel])}",
        ))
        z, log_det_flow = self.flow(y, labels)  # (B, C, H, W), (B,)
        couplings = sum(len(scale.checkerboard) + len(scale.channelwise) for scale in self.flow.scales)
        stages.append(Stage.measured(
            "flow", f"{couplings} affine couplings over {self.config.scales} scales (2x2 squeezes, half the channels "
            "set aside per scale): an invertible map to a latent of the image's shape", y, z,
            f"z at pixel {pixel} = {format_number(z[pixel])}; log |det| of image 0 = "
            f"{format_number(log_det_logit[0] + log_det_flow[0])} (logit {format_number(log_det_logit[0])})",
        ))
        log_prior = standard_normal_log_density(z)  # (B,)
        nll = -(log_prior + log_det_logit + log_det_flow - self.data.num_pixels * math.log(256))
        stages.append(Stage.measured(
            "loss", "-log p = -(log N(z; 0, I) + log |det| - D log 256), nats per image on the 8-bit scale", z, nll,
            f"{format_number(nll.mean())} nats per image on this batch = "
            f"{format_number(bits_per_dim(nll.mean(), self.data.num_pixels))} bits/dim "
            f"(image 0: log N(z) {format_number(log_prior[0])}, log |det| "
            f"{format_number(log_det_logit[0] + log_det_flow[0])})",
        ))
        generation_labels = self._labels(self.check_labels(len(x), None))
        prior = self.sample_latent(len(x), generator)  # (B, C, H, W)
        stages.append(Stage.measured(
            "sample latent", f"z ~ N(0, {self.config.temperature:g}^2 I) of the image's shape", None, prior,
            f"z at pixel {pixel} = {format_number(prior[pixel])}", path="generation",
        ))
        y = self.flow.inverse(prior, generation_labels)
        stages.append(Stage.measured(
            "inverse flow", "the couplings run backwards, exactly: y = f^-1(z)", prior, y,
            f"pixel {pixel} = {format_number(y[pixel])}", path="generation",
        ))
        images = inverse_logit_transform(y, alpha).clamp(0, 1)  # as `decode`
        stages.append(Stage.measured(
            "inverse logit", "x = (sigmoid(y) - alpha) / (1 - 2 alpha): images in [0, 1]", y, images,
            format_pixel(images, pixel),
            path="generation",
        ))
        return stages

    def prediction_pass(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> PredictionPass:
        """The flow's forward pass on the real batch, dequantized and logit-transformed, to z.

        Forward, not inverse: forward hooks see the coupling layers only in this direction (the inverse
        calls their networks but not the couplings themselves).
        """
        dequantized = (x * 255 + self.rand(*x.shape, generator=generator)) / 256  # (B, C, H, W)
        y, _ = logit_transform(dequantized, self.config.alpha)
        labels = self._labels(labels)
        return PredictionPass(
            "flow", self.flow, "y = logit(dequantized real images)", y, lambda: self.flow(y, labels)[0],
            "latent z of the image's shape",
            f"the flow's forward pass, image -> z, on the {len(y)} real images (sampling runs the same couplings "
            "backwards, z -> image, with the same parameters)",
        )
