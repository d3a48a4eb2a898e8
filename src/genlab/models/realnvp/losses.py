"""The terms of Real NVP's log p(x) besides the flow's own log-determinant: dequantization, the logit
transform (section 4.1) and its log-determinant, and the standard normal prior's density."""

from __future__ import annotations

import math

import torch


def dequantize(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(k + u) / 256 in [0, 1) for 8-bit pixels k held as x = k/255 and noise u ~ U[0, 1) of x's shape."""
    return (x * 255 + noise) / 256


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
