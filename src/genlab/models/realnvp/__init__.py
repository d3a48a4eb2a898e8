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

config.py     RealNVPConfig, the settings saved in run.json, and how many scales an image size allows
networks.py   squeeze, the checkerboard mask, AffineCoupling and its CouplingNetwork, Scale and Flow
losses.py     dequantization, the logit transform and its log-determinant, the standard normal density
model.py      RealNVP, the family (log p(x), training steps, encode/decode/sample)
explain.py    the family's pipeline stages and prediction pass
"""

from genlab.models.realnvp.config import MAX_AUTO_SCALES, RealNVPConfig, count_scales
from genlab.models.realnvp.losses import (
    dequantize,
    inverse_logit_transform,
    logit_transform,
    standard_normal_log_density,
)
from genlab.models.realnvp.model import RealNVP
from genlab.models.realnvp.networks import (
    CHANNEL_COUPLINGS,
    CHECKERBOARD_COUPLINGS,
    FINAL_COUPLINGS,
    AffineCoupling,
    CouplingNetwork,
    Flow,
    ResidualBlock,
    Scale,
    checkerboard,
    squeeze,
    unsqueeze,
)

__all__ = [
    "CHANNEL_COUPLINGS",
    "CHECKERBOARD_COUPLINGS",
    "FINAL_COUPLINGS",
    "MAX_AUTO_SCALES",
    "AffineCoupling",
    "CouplingNetwork",
    "Flow",
    "RealNVP",
    "RealNVPConfig",
    "ResidualBlock",
    "Scale",
    "checkerboard",
    "count_scales",
    "dequantize",
    "inverse_logit_transform",
    "logit_transform",
    "squeeze",
    "standard_normal_log_density",
    "unsqueeze",
]
