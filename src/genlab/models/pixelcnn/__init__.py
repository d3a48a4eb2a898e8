"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

An autoregressive model: p(x) = prod_i p(x_i | x_<i) over pixels in raster order (and, in
colour, over R then G then B within a pixel), so log p(x) is exact: one network pass gives
every conditional at once. Pixels are Bernoulli for binarized data, else 256-way softmaxes
over 8-bit levels. Sampling goes pixel by pixel (and colour by colour) from cached rows.

config.py     PixelCNNConfig, the settings saved in run.json
networks.py   the masks, MaskedConv2d, GatedLayer and the GatedPixelCNN network
sampling.py   drawing a level by inverting its CDF, and filling an image row by row from the network
model.py      PixelCNN, the family (likelihood, training steps, sample, complete)
explain.py    the family's pipeline stages and prediction pass
"""

from genlab.models.pixelcnn.config import PixelCNNConfig
from genlab.models.pixelcnn.model import PixelCNN
from genlab.models.pixelcnn.networks import (
    LEVELS,
    GatedLayer,
    GatedPixelCNN,
    MaskedConv2d,
    centre_mask,
    colour_groups,
    gate,
)
from genlab.models.pixelcnn.sampling import draw, fill

__all__ = [
    "LEVELS",
    "GatedLayer",
    "GatedPixelCNN",
    "MaskedConv2d",
    "PixelCNN",
    "PixelCNNConfig",
    "centre_mask",
    "colour_groups",
    "draw",
    "fill",
    "gate",
]
