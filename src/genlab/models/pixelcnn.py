"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

An autoregressive model: p(x) = prod_i p(x_i | x_<i) over pixels in raster order (and, in
colour, over R then G then B within a pixel), so log p(x) is exact: one network pass gives
every conditional at once. A vertical stack sees the rows above, a horizontal stack the
pixels to the left in the current row; the vertical stack feeds the horizontal one from
the row above only, so neither stack sees the future and together they have no blind spot.
Every layer has gated activations tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h) (eq. 4),
where h is the class embedding of a conditional model, and a residual connection in the
horizontal stack. Pixels are Bernoulli for binarized data, else 256-way softmaxes over 8-bit
levels. Sampling goes pixel by pixel (and colour by colour); each layer computes only its new
row or position from cached windows of its input, so drawing an image costs about one full
network pass of arithmetic per colour instead of one per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.transforms import binarize
from genlab.errors import GenlabError
from genlab.models.base import (
    Batch, DataSpec, GenerativeModel, PredictionPass, Stage, bits_per_dim, example_pixel, format_number, format_pixel,
)

LEVELS = 256  # 8-bit pixel values, the classes of the softmax output


@dataclass
class PixelCNNConfig:
    """Everything needed to rebuild a Gated PixelCNN (saved in run.json)."""

    channels: int = 64  # feature maps in each stack (p in the paper; the gates see 2p)
    layers: int = 8  # gated layers; the first has mask A (excludes the current pixel), the rest mask B
    kernel_size: int = 5  # n: vertical convs are (n//2 + 1) x n, horizontal ones 1 x (n//2 + 1)
    head_channels: int = 128  # width of the two 1x1 layers between the last layer and the logits
    conditional: bool = False  # a class embedding added inside every gate (eq. 4)
    binarize: bool = False  # Bernoulli pixels, trained on dynamically binarized images (binarized-MNIST protocol)
    lr: float = 1e-3  # Adam step

    def __post_init__(self) -> None:
        for name in ("channels", "layers", "head_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GenlabError(f"PixelCNN setting {name} must be a positive integer, got {value!r}")
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
            raise GenlabError(f"PixelCNN setting kernel_size must be an odd integer of at least 3, got {k!r}")
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise GenlabError(f"PixelCNN setting lr must be a positive number, got {self.lr!r}")


def colour_groups(n: int, colours: int, blocks: int = 1) -> torch.Tensor:
    """The colour (0 = R, 1 = G, 2 = B) each of n channels stands for: (n,).

    The channels form `blocks` equal blocks (the two halves of a gate's input), each split
    into `colours` contiguous groups; group c may see colours < c of the current pixel (mask
    A) or <= c (mask B), which orders R before G before B (van den Oord, Kalchbrenner and
    Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", section 3.4 and Figure 2).
    """
    block = n // blocks
    return (torch.arange(n) % block) * colours // block


def centre_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, kind: str) -> torch.Tensor:
    """(out, in): which input channels of the current pixel an output channel may see."""
    later = out_groups[:, None] > in_groups[None, :]
    return later if kind == "A" else later | (out_groups[:, None] == in_groups[None, :])


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weights are multiplied by a fixed 0/1 mask (not saved: it follows from the shape)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], mask: torch.Tensor):
        super().__init__(in_channels, out_channels, kernel_size)
        self.register_buffer("mask", mask.to(torch.float32).expand_as(self.weight).clone(), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias)

    def at_pixel(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution at one position, as a matrix product: x (B, Cin, kw) of one row -> (B, out).

        Far cheaper than a convolution call on a (B, Cin, 1, kw) input when sampling pixel by pixel.
        """
        return F.linear(x.flatten(1), self.masked_weight().flatten(1), self.bias)


def gate(pre: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) of the two halves of the channels (eq. 2): (B, 2p, ...) -> (B, p, ...)."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks (van den Oord et al. 2016, Figure 2); the caller pads its inputs.

    vertical: (B, Cin, R + n//2, W + 2(n//2)) -> (B, 2p, R, W): output row i sees input rows i - n//2 .. i.
    horizontal: (B, Cin, R, W + n//2) -> (B, 2p, R, W): output column j sees columns j - n//2 .. j,
    the current one through the colour mask (A in the first layer, B after).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, colours: int, num_classes: int,
                 first: bool):
        super().__init__()
        half = kernel_size // 2
        self.first = first  # mask A, and no residual: the input would carry the current pixel
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (half + 1, kernel_size))
        in_groups = colour_groups(in_channels, colours)
        gate_groups = colour_groups(2 * channels, colours, blocks=2)
        mask = torch.ones(2 * channels, in_channels, 1, half + 1)
        mask[:, :, 0, half] = centre_mask(gate_groups, in_groups, "A" if first else "B")
        self.horizontal = MaskedConv2d(in_channels, 2 * channels, (1, half + 1), mask)
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)  # vertical -> horizontal, from the row above
        groups = colour_groups(channels, colours)
        self.out = MaskedConv2d(channels, channels, (1, 1), centre_mask(groups, groups, "B")[:, :, None, None])
        self.embedding = nn.Embedding(num_classes, 4 * channels) if num_classes else None  # V h of both stacks

    def biases(self, labels: torch.Tensor | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The class terms V h added inside the vertical and horizontal gates: (B, 2p, 1, 1) each, or 0."""
        if self.embedding is None:
            return 0.0, 0.0
        vertical, horizontal = self.embedding(labels)[:, :, None, None].chunk(2, dim=1)
        return vertical, horizontal

    def horizontal_gate(self, window: torch.Tensor, link: torch.Tensor, residual: torch.Tensor,
                        bias: torch.Tensor | float) -> torch.Tensor:
        """The horizontal stack's output (B, p, R, W) from its padded input window and the vertical link."""
        out = self.out(gate(self.horizontal(window) + link + bias))
        return out if self.first else out + residual

    def horizontal_pixel(self, window: torch.Tensor, link: torch.Tensor, residual: torch.Tensor,
                         bias: torch.Tensor | float) -> torch.Tensor:
        """`horizontal_gate` at one pixel: window (B, Cin, n//2 + 1), link (B, 2p), residual (B, p) -> (B, p)."""
        out = self.out.at_pixel(gate(self.horizontal.at_pixel(window) + link + bias)[:, :, None])
        return out if self.first else out + residual


class GatedPixelCNN(nn.Module):
    """The network: logits of every pixel given the pixels before it, (B, C, K, H, W) (K = 1 or 256)."""

    def __init__(self, data: DataSpec, config: PixelCNNConfig):
        super().__init__()
        colours, p = data.channels, config.channels
        self.half = config.kernel_size // 2
        self.outputs = 1 if config.binarize else LEVELS  # logits per colour of a pixel
        self.layers = nn.ModuleList(
            GatedLayer(colours if i == 0 else p, p, config.kernel_size, colours,
                       data.num_classes if config.conditional else 0, first=i == 0)
            for i in range(config.layers)
        )
        hidden, logits = colour_groups(config.head_channels, colours), colour_groups(colours * self.outputs, colours)
        groups = colour_groups(p, colours)
        self.head = nn.Sequential(  # 1x1 convs, masked so that colour c's logits see colours <= c of the features
            nn.ReLU(),
            MaskedConv2d(p, config.head_channels, (1, 1), centre_mask(hidden, groups, "B")[:, :, None, None]),
            nn.ReLU(),
            MaskedConv2d(config.head_channels, colours * self.outputs, (1, 1),
                         centre_mask(logits, hidden, "B")[:, :, None, None]),
        )

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, p, R, W) features of the last layer -> (B, C, K, R, W) logits."""
        out = self.head(h)
        return out.reshape(out.shape[0], -1, self.outputs, *out.shape[2:])

    def pixel_logits(self, h: torch.Tensor) -> torch.Tensor:
        """`logits` at one pixel: (B, p) -> (B, C, K)."""
        _, hidden, _, out = self.head
        out = out.at_pixel(F.relu(hidden.at_pixel(F.relu(h)[:, :, None]))[:, :, None])
        return out.reshape(len(out), -1, self.outputs)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C, K, H, W) of pixels x (B, C, H, W) on their grid in [0, 1]."""
        half = self.half
        v = h = x * 2 - 1  # (B, C, H, W) in [-1, 1]: zero padding is mid-grey
        for layer in self.layers:
            vertical_bias, horizontal_bias = layer.biases(labels)
            pre = layer.vertical(F.pad(v, (half, half, half, 0)))  # (B, 2p, H, W): rows i - half .. i
            link = layer.link(F.pad(pre, (0, 0, 1, 0))[:, :, :-1])  # shifted down: row i sees rows < i only
            h = layer.horizontal_gate(F.pad(h, (half, 0, 0, 0)), link, h, horizontal_bias)
            v = gate(pre + vertical_bias)
        return self.logits(h)


def draw(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Levels drawn by inverting the CDF at `uniform` (B,): Bernoulli for (B, 1) logits, else categorical."""
    if logits.shape[1] == 1:
        return (uniform < torch.sigmoid(logits[:, 0])).to(torch.float32)
    cdf = torch.softmax(logits.double(), dim=1).cumsum(dim=1)  # double: the sum of 256 terms reaches 1
    return (cdf < uniform.double()[:, None]).sum(dim=1).clamp(max=logits.shape[1] - 1).to(torch.float32)


@torch.no_grad()
def fill(network: GatedPixelCNN, x: torch.Tensor, first_row: int, uniform: torch.Tensor,
         labels: torch.Tensor | None) -> torch.Tensor:
    """Draw rows first_row.. of x (B, C, H, W) on its grid (k/255 or 0/1) given the rows above, in raster order.

    Every layer keeps a window of its last n//2 + 1 input rows (vertical stack) and its input
    along the current row (horizontal stack); each finished row, and each pixel, computes one
    row or one position per layer, equal to the full forward pass's (the tests check it).
    `uniform` (B, C, H, W) in [0, 1) picks each level by inverting its CDF.
    """
    x = x.clone()
    batch, colours, height, width = x.shape
    half, top = network.half, max(network.outputs - 1, 1)  # level k -> k / top in [0, 1]
    biases = [layer.biases(labels) for layer in network.layers]  # per layer: vertical, horizontal (B, 2p, 1, 1)
    pixel_biases = [b if isinstance(b, float) else b[:, :, 0, 0] for _, b in biases]  # (B, 2p)
    windows = []  # per layer: (B, Cin, half + 1, W + 2 half), input rows i - half .. i of its vertical conv
    links = []  # per layer: (B, 2p, W), the vertical stack's link into the row being drawn (rows < i)
    for layer in network.layers:
        windows.append(x.new_zeros(batch, layer.vertical.in_channels, half + 1, width + 2 * half))
        links.append(layer.link(x.new_zeros(batch, layer.link.in_channels, 1, width))[:, :, 0])

    for i in range(height):
        if i >= first_row:
            # per layer: its input along row i, (B, Cin, half + W), left-padded like the full pass
            rows = [x.new_zeros(batch, layer.vertical.in_channels, half + width) for layer in network.layers]
            for j in range(width):
                for c in range(colours):  # one pass per colour: G's logits see this pixel's R
                    for k, layer in enumerate(network.layers):
                        h = layer.horizontal_pixel(rows[k][:, :, j : j + half + 1], links[k][:, :, j],
                                                   rows[k][:, :, half + j], pixel_biases[k])  # (B, p)
                        if k + 1 < len(rows):
                            rows[k + 1][:, :, half + j] = h  # the next layer's input at this pixel
                    level = draw(network.pixel_logits(h)[:, c], uniform[:, c, i, j])  # (B,)
                    x[:, c, i, j] = level / top
                    rows[0][:, c, half + j] = x[:, c, i, j] * 2 - 1
        if i + 1 == height:
            break
        row = x[:, :, i : i + 1] * 2 - 1  # (B, C, 1, W): the finished row goes up the vertical stack
        for k, layer in enumerate(network.layers):
            windows[k] = torch.cat([windows[k][:, :, 1:], F.pad(row, (half, half))], dim=2)
            pre = layer.vertical(windows[k])  # (B, 2p, 1, W): row i of the full pass
            links[k] = layer.link(pre)[:, :, 0]  # what row i + 1 sees of the rows above it
            row = gate(pre + biases[k][0])
    return x


class PixelCNN(GenerativeModel):
    """Gated PixelCNN with Bernoulli or 256-way pixels, optionally class-conditional; exact log p(x)."""

    family = "pixelcnn"
    config_class = PixelCNNConfig
    default_batch_size = 32
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"), ("test_bits_per_dim", "Test bits/dim"))
    monitor = "test_loss"
    likelihood_kind = "exact"  # log p(x) is the sum of the per-pixel conditionals, no bound
    idea = (
        "The probability of an image is a product of one distribution per pixel given the pixels before it in raster "
        "order, computed for all pixels in one pass by masked convolutions that cannot see ahead, so log p(x) is exact. "
        "Generating draws the pixels one at a time, each from its distribution given those already drawn."
    )

    def __init__(self, config: PixelCNNConfig, data: DataSpec):
        super().__init__(config, data)
        if config.conditional and data.num_classes < 2:
            raise GenlabError("a conditional PixelCNN needs labelled data with at least 2 classes")
        if data.channels > 1 and min(config.channels, config.head_channels) < data.channels:
            raise GenlabError(
                f"PixelCNN settings channels and head_channels must be at least the {data.channels} colour channels "
                "(each colour gets its own group of feature maps)"
            )
        self.network = GatedPixelCNN(data, config)

    @property
    def likelihood_data_model(self) -> str:
        return "binarized" if self.config.binarize else "256-way discrete (8-bit pixels)"

    def discretize(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] on the model's grid: 0/1 (x rounded) for a binarizing model, else k/255."""
        x = x.to(self.device).clamp(0, 1)
        return x.round() if self.config.binarize else (x * (LEVELS - 1)).round() / (LEVELS - 1)

    def _labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise GenlabError("a conditional PixelCNN needs labels")
        return labels.to(self.device)

    def nll(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x) in nats per image, (B,), of x (B, C, H, W) already on the model's grid."""
        logits = self.network(x, self._labels(labels))  # (B, C, K, H, W)
        if self.config.binarize:
            return F.binary_cross_entropy_with_logits(logits[:, :, 0], x, reduction="none").flatten(1).sum(1)
        levels = (x * (LEVELS - 1)).round().long()  # (B, C, H, W) in 0..255
        log_probs = logits.log_softmax(dim=2).gather(2, levels[:, :, None]).squeeze(2)
        return -log_probs.flatten(1).sum(1)

    def configure_optimizers(self):
        return {"model": self.adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, optimizers) -> dict[str, float]:
        x, labels = batch
        x = binarize(x) if self.config.binarize else self.discretize(x)
        loss = self.nll(x, labels).mean()
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.item()
        return {"loss": loss, "bits_per_dim": bits_per_dim(loss, self.data.num_pixels)}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        x, labels = batch
        x = binarize(x) if self.config.binarize else self.discretize(x)
        loss = self.nll(x, labels).mean().item()
        return {"test_loss": loss, "test_bits_per_dim": bits_per_dim(loss, self.data.num_pixels)}

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) in nats per image, (B,), of x (B, C, H, W) in [0, 1].

        x is taken as given and only put on the model's grid (k/255, or 0/1 for a binarizing
        model): binarize the images first for the binarized-MNIST protocol, as `genlab eval` does.
        """
        return -self.nll(self.discretize(x), labels)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None):
        """n images (n, C, H, W) in [0, 1], drawn pixel by pixel in raster order (0/1 when binarizing)."""
        labels = self.check_labels(n, labels)
        uniform = self.rand(n, *self.data.image_shape, generator=generator)
        x = torch.zeros(n, *self.data.image_shape, device=self.device)
        return fill(self.network, x, 0, uniform, labels)

    @torch.no_grad()
    def complete(self, images: torch.Tensor, rows: int, generator: torch.Generator | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the top `rows` rows of images (B, C, H, W) in [0, 1] (put on the model's grid) and draw the rest."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.data.image_shape or not images.is_floating_point():
            raise GenlabError(
                f"complete needs float images in [0, 1] of shape (B, {', '.join(map(str, self.data.image_shape))}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        height = self.data.height
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows < height:
            raise GenlabError(f"rows to keep must be an integer from 0 to {height - 1}, got {rows!r}")
        labels = self.check_labels(len(images), labels)
        uniform = self.rand(*images.shape, generator=generator)
        return fill(self.network, self.discretize(images), rows, uniform, labels)

    # ---------------------------------------------------------------- explain

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> list[Stage]:
        """Put the real batch x (B, C, H, W) in [0, 1] on the model's grid, one network pass, -log p(x); then
        uniform noise -> pixel-by-pixel drawing -> image."""
        pixel = example_pixel(x)
        labels = self._labels(labels)
        if self.config.binarize:
            grid = binarize(x, generator)
            stages = [Stage.measured(
                "binarize", "each pixel becomes 1 with probability equal to its intensity: Bernoulli pixels",
                x, grid, f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(grid[pixel])}",
            )]
        else:
            grid = self.discretize(x)
            stages = [Stage.measured(
                "discretize", f"pixels on the 8-bit grid k/255: level k is the class of a {LEVELS}-way softmax",
                x, grid, f"pixel {pixel} {format_number(x[pixel])} is level {round(float(grid[pixel]) * 255)}",
            )]
        logits = self.network(grid, labels)  # (B, C, K, H, W)
        if self.config.binarize:
            probability = torch.sigmoid(logits[pixel[0], pixel[1], 0, pixel[2], pixel[3]])
            if grid[pixel] == 0:
                probability = 1 - probability
            value = format_number(grid[pixel])
        else:
            level = round(float(grid[pixel]) * (LEVELS - 1))
            probability = logits[pixel[0], pixel[1], :, pixel[2], pixel[3]].softmax(0)[level]
            value = f"level {level}"
        stages.append(Stage.measured(
            "masked network", "gated masked convolutions: every pixel's distribution given only the pixels above and "
            "to its left, all pixels in one pass", grid, logits,
            f"p(pixel {pixel} = {value} | the pixels before it) = {format_number(probability)}",
        ))
        nll = self.nll(grid, labels)  # (B,)
        stages.append(Stage.measured(
            "loss", "-log p(x), the sum of every pixel's -log p(x_i | x_<i): exact, in nats per image", logits, nll,
            f"{format_number(nll.mean())} nats per image on this batch = "
            f"{format_number(bits_per_dim(nll.mean(), self.data.num_pixels))} bits/dim",
        ))
        generation_labels = self.check_labels(len(x), None)
        uniform = self.rand(len(x), *self.data.image_shape, generator=generator)  # (B, C, H, W), as `sample`
        stages.append(Stage.measured(
            "sample uniforms", "one u ~ U[0, 1) per pixel: it picks the pixel's level by inverting its CDF",
            None, uniform, f"pixel {pixel}: u = {format_number(uniform[pixel])}", path="generation",
        ))
        images = fill(self.network, torch.zeros_like(uniform), 0, uniform, generation_labels)
        stages.append(Stage.measured(
            "draw pixel by pixel", f"{self.data.num_pixels} draws in raster order, each from the network's "
            "distribution given the pixels drawn before it", uniform, images,
            format_pixel(images, pixel),
            path="generation",
        ))
        return stages

    def prediction_pass(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> PredictionPass:
        """One full network pass over the real batch on the model's grid: every pixel's distribution at once."""
        grid = binarize(x, generator) if self.config.binarize else self.discretize(x)  # (B, C, H, W)
        labels = self._labels(labels)
        outputs = "Bernoulli logit" if self.config.binarize else f"{LEVELS}-way logits"
        return PredictionPass(
            "network", self.network, "real images on the model's grid", grid, lambda: self.network(grid, labels),
            f"{outputs} per pixel",
            f"one full network pass over the {len(grid)} real images: every pixel's distribution at once "
            "(sampling computes the same layers pixel by pixel, from cached rows)",
        )
