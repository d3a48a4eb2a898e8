"""Drawing from a Gated PixelCNN pixel by pixel (and colour by colour) in raster order.

Each layer computes only its new row or position from cached windows of its input, so
drawing an image costs about one full network pass of arithmetic per colour instead of one
per pixel. Every level is picked by inverting its CDF at a given uniform, so the draws
follow the caller's generator alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genlab.data.transforms import to_symmetric
from genlab.models.pixelcnn.networks import GatedPixelCNN, gate


def draw(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Levels drawn by inverting the CDF at `uniform` (B,): Bernoulli for (B, 1) logits, else categorical."""
    if logits.shape[1] == 1:
        return (uniform < torch.sigmoid(logits[:, 0])).to(torch.float32)
    cdf = torch.softmax(logits.double(), dim=1).cumsum(dim=1)  # double: the sum of 256 terms reaches 1
    return (cdf < uniform.double()[:, None]).sum(dim=1).clamp(max=logits.shape[1] - 1).to(torch.float32)


@torch.no_grad()
def fill(
    network: GatedPixelCNN,
    x: torch.Tensor,
    first_row: int,
    uniform: torch.Tensor,
    labels: torch.Tensor | None,
    on_row: Callable[[int, torch.Tensor], None] | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Draw rows first_row.. of x (B, C, H, W) on its grid (k/255 or 0/1) given the rows above, in raster order.

    Every layer keeps a window of its last n//2 + 1 input rows (vertical stack) and its input
    along the current row (horizontal stack); each finished row, and each pixel, computes one
    row or one position per layer, equal to the full forward pass's (the tests check it).
    `uniform` (B, C, H, W) in [0, 1) picks each level by inverting its CDF. `on_row` hears each drawn
    row's index and x so far.

    `guidance` other than 1 (classifier-free guidance; the network must have a null class) runs the batch twice in
    one pass, under `labels` and under the null label, and draws each level from the logits u + guidance (c - u).
    """
    n = len(x)
    if n == 0:  # nothing to draw (the row windows below cannot be shaped for an empty batch)
        return x.clone()
    guided = labels is not None and guidance != 1.0
    if guided:
        assert labels is not None and network.null_class is not None, "guidance needs a network with a null class"
        x, labels = torch.cat([x, x]), torch.cat([labels, torch.full_like(labels, network.null_class)])
    x = x.clone()
    batch, colours, height, width = x.shape
    half, top = network.half_kernel, max(network.outputs - 1, 1)  # level k -> k / top in [0, 1]
    layers = network.gated_layers()
    # per layer: vertical, horizontal class terms, (B, 2p, 1, 1), or (B, 2p, H, W) with class maps, or 0
    biases = network.layer_biases(labels)
    windows = []  # per layer: (B, Cin, half + 1, W + 2 half), input rows i - half .. i of its vertical conv
    links = []  # per layer: (B, 2p, W), the vertical stack's link into the row being drawn (rows < i)
    for layer in layers:
        windows.append(x.new_zeros(batch, layer.vertical.in_channels, half + 1, width + 2 * half))
        links.append(layer.link(x.new_zeros(batch, layer.link.in_channels, 1, width))[:, :, 0])

    for i in range(height):
        if i >= first_row:
            # per layer: its input along row i, (B, Cin, half + W), left-padded like the full pass
            rows = [x.new_zeros(batch, layer.vertical.in_channels, half + width) for layer in layers]
            for j in range(width):
                for c in range(colours):  # one pass per colour: G's logits see this pixel's R
                    for k, layer in enumerate(layers):
                        h = layer.horizontal_pixel(
                            rows[k][:, :, j : j + half + 1],
                            links[k][:, :, j],
                            rows[k][:, :, half + j],
                            at_pixel(biases[k][1], i, j),
                        )  # (B, p)
                        if k + 1 < len(rows):
                            rows[k + 1][:, :, half + j] = h  # the next layer's input at this pixel
                    logits = network.pixel_logits(h)[:, c]  # (B, K), or (2B, K) guided
                    if guided:
                        conditional, unconditional = logits.chunk(2)
                        logits = unconditional + guidance * (conditional - unconditional)
                    level = draw(logits, uniform[:, c, i, j])  # (n,)
                    x[:, c, i, j] = (level / top).repeat(2 if guided else 1)  # both halves draw the same pixel
                    rows[0][:, c, half + j] = to_symmetric(x[:, c, i, j])
            if on_row is not None:
                on_row(i, x[:n])
        if i + 1 == height:
            break
        row = to_symmetric(x[:, :, i : i + 1])  # (B, C, 1, W): the finished row goes up the vertical stack
        for k, layer in enumerate(layers):
            windows[k] = torch.cat([windows[k][:, :, 1:], F.pad(row, (half, half))], dim=2)
            pre = layer.vertical(windows[k])  # (B, 2p, 1, W): row i of the full pass
            links[k] = layer.link(pre)[:, :, 0]  # what row i + 1 sees of the rows above it
            row = gate(pre + at_row(biases[k][0], i))
    return x[:n]


def at_row(bias: torch.Tensor | float, i: int) -> torch.Tensor | float:
    """A gate's class term for row i, (B, 2p, 1, W or 1): its row of a spatial term (B, 2p, H, W); else itself."""
    if isinstance(bias, float) or bias.shape[2] == 1:
        return bias
    return bias[:, :, i : i + 1]


def at_pixel(bias: torch.Tensor | float, i: int, j: int) -> torch.Tensor | float:
    """A gate's class term at pixel (i, j), (B, 2p), from (B, 2p, H, W) or (B, 2p, 1, 1); 0 stays 0."""
    if isinstance(bias, float):
        return bias
    if bias.shape[2] == 1:  # one term for every pixel
        return bias[:, :, 0, 0]
    return bias[:, :, i, j]
