"""The Gated PixelCNN network (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

A vertical stack sees the rows above, a horizontal stack the pixels to the left in the
current row; the vertical stack feeds the horizontal one from the row above only, so neither
stack sees the future and together they have no blind spot. Every layer has gated
activations tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h) (eq. 4), where h is the class
embedding of a conditional model, and a residual connection in the horizontal stack. In
colour, masks order the channels R before G before B within a pixel.

Besides the full pass (`forward`), each piece has a one-row or one-pixel form (`at_pixel`,
`horizontal_pixel`, `pixel_logits`) that the cached sampler (sampling.py) calls.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.transforms import to_symmetric
from genlab.models.base import DataSpec
from genlab.models.pixelcnn.config import PixelCNNConfig

LEVELS = 256  # 8-bit pixel values, the classes of the softmax output


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

    mask: torch.Tensor

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

    def __init__(
        self, in_channels: int, channels: int, kernel_size: int, colours: int, embeddings: int, first: bool, maps: int
    ):
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
        # V h of both stacks, from zero: a conditional model starts as the unconditional one and learns what each class
        # adds (with nn.Embedding's N(0, 1) start, mnist-5k's conditional PixelCNN drew mostly empty images: FID 514)
        self.embedding = nn.Embedding(embeddings, 4 * channels) if embeddings else None  # a row per class (and null)
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)
        # V * s of eq. 5: the class maps s (B, maps, H, W) into both stacks' gates, from zero like the embedding
        self.read_maps = nn.Conv2d(maps, 4 * channels, 1, bias=False) if maps else None
        if self.read_maps is not None:
            nn.init.zeros_(self.read_maps.weight)

    def biases(
        self, labels: torch.Tensor | None, maps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The class terms added inside the vertical and horizontal gates: V h, (B, 2p, 1, 1) each, plus V * s of
        the class maps (B, m, H, W) when given, (B, 2p, H, W) each; or 0 for an unconditional layer."""
        if self.embedding is None:
            return 0.0, 0.0
        terms = self.embedding(labels)[:, :, None, None]  # (B, 4p, 1, 1)
        if self.read_maps is not None and maps is not None:
            terms = terms + self.read_maps(maps)  # (B, 4p, H, W)
        vertical, horizontal = terms.chunk(2, dim=1)
        return vertical, horizontal

    def horizontal_gate(
        self, window: torch.Tensor, link: torch.Tensor, residual: torch.Tensor, bias: torch.Tensor | float
    ) -> torch.Tensor:
        """The horizontal stack's output (B, p, R, W) from its padded input window and the vertical link."""
        out = self.out(gate(self.horizontal(window) + link + bias))
        return out if self.first else out + residual

    def horizontal_pixel(
        self, window: torch.Tensor, link: torch.Tensor, residual: torch.Tensor, bias: torch.Tensor | float
    ) -> torch.Tensor:
        """`horizontal_gate` at one pixel: window (B, Cin, n//2 + 1), link (B, 2p), residual (B, p) -> (B, p)."""
        out = self.out.at_pixel(gate(self.horizontal.at_pixel(window) + link + bias)[:, :, None])
        return out if self.first else out + residual


class GatedPixelCNN(nn.Module):
    """The network: logits of every pixel given the pixels before it, (B, C, K, H, W) (K = 1 or 256)."""

    def __init__(self, data: DataSpec, config: PixelCNNConfig):
        super().__init__()
        colours, p = data.channels, config.channels
        # n//2, the rows above and columns to the left a conv reaches (not `half`: that would shadow Module.half)
        self.half_kernel = config.kernel_size // 2
        self.outputs = 1 if config.binarize else LEVELS  # logits per colour of a pixel
        # The null label (index num_classes) a conditional model trained with label dropout learns p(x) under, for
        # classifier-free guidance; None without one.
        self.null_class = data.num_classes if config.has_null_class else None
        embeddings = 0 if not config.conditional else data.num_classes + (self.null_class is not None)
        # The class maps of location-dependent conditioning: a (class_maps, H, W) template per class (and null),
        # N(0, 1) like any embedding; the layers read them from zero.
        maps = config.map_channels if embeddings else 0
        self.map_shape = (maps, data.height, data.width)
        self.class_maps = nn.Embedding(embeddings, maps * data.height * data.width) if maps else None
        self.layers = nn.ModuleList(
            GatedLayer(
                colours if i == 0 else p,
                p,
                config.kernel_size,
                colours,
                embeddings,
                first=i == 0,
                maps=maps,
            )
            for i in range(config.layers)
        )
        hidden, logits = colour_groups(config.head_channels, colours), colour_groups(colours * self.outputs, colours)
        groups = colour_groups(p, colours)
        self.head = nn.Sequential(  # 1x1 convs, masked so that colour c's logits see colours <= c of the features
            nn.ReLU(),
            MaskedConv2d(p, config.head_channels, (1, 1), centre_mask(hidden, groups, "B")[:, :, None, None]),
            nn.ReLU(),
            MaskedConv2d(
                config.head_channels, colours * self.outputs, (1, 1), centre_mask(logits, hidden, "B")[:, :, None, None]
            ),
        )

    def gated_layers(self) -> list[GatedLayer]:
        """The gated layers, first to last (iterating an nn.ModuleList gives untyped Modules)."""
        return cast("list[GatedLayer]", list(self.layers))

    def head_convs(self) -> tuple[MaskedConv2d, MaskedConv2d]:
        """The head's two masked 1x1 convs (between its ReLUs)."""
        return cast(MaskedConv2d, self.head[1]), cast(MaskedConv2d, self.head[3])

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, p, R, W) features of the last layer -> (B, C, K, R, W) logits."""
        out = self.head(h)
        return out.reshape(out.shape[0], -1, self.outputs, *out.shape[2:])

    def pixel_logits(self, h: torch.Tensor) -> torch.Tensor:
        """`logits` at one pixel: (B, p) -> (B, C, K)."""
        hidden, last = self.head_convs()
        out = last.at_pixel(F.relu(hidden.at_pixel(F.relu(h)[:, :, None]))[:, :, None])
        return out.reshape(len(out), -1, self.outputs)

    def maps_of(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The class maps (B, m, H, W) of labels (B,), or None without them."""
        if self.class_maps is None or labels is None:
            return None
        return self.class_maps(labels).reshape(len(labels), *self.map_shape)

    def layer_biases(self, labels: torch.Tensor | None) -> list[tuple[torch.Tensor | float, torch.Tensor | float]]:
        """Per gated layer, the class terms of its vertical and horizontal gates (`GatedLayer.biases`)."""
        maps = self.maps_of(labels)
        return [layer.biases(labels, maps) for layer in self.gated_layers()]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C, K, H, W) of pixels x (B, C, H, W) on their grid in [0, 1]."""
        half = self.half_kernel
        v = h = to_symmetric(x)  # (B, C, H, W) in [-1, 1]: zero padding is mid-grey
        for layer, (vertical_bias, horizontal_bias) in zip(self.gated_layers(), self.layer_biases(labels)):
            pre = layer.vertical(F.pad(v, (half, half, half, 0)))  # (B, 2p, H, W): rows i - half .. i
            link = layer.link(F.pad(pre, (0, 0, 1, 0))[:, :, :-1])  # shifted down: row i sees rows < i only
            h = layer.horizontal_gate(F.pad(h, (half, 0, 0, 0)), link, h, horizontal_bias)
            v = gate(pre + vertical_bias)
        return self.logits(h)
