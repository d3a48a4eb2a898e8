"""Small pieces several families share, written once: eval mode, the EMA of a network's weights,
and the checks of config fields."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from genlab.errors import GenlabError


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run the block with `modules` in eval mode, then give every submodule back the mode it had."""
    modes = [(module, module.training) for network in modules for module in network.modules()]
    for network in modules:
        network.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


# ---------------------------------------------------------------- exponential moving average of weights


def ema_copy(network: nn.Module) -> nn.Module:
    """A frozen copy of `network` to hold its running average (a submodule: saved with the weights)."""
    return copy.deepcopy(network).requires_grad_(False)


def ema_decay(decay: float, updates: int) -> float:
    """The decay at update t, warmed up as min(decay, (1 + t) / (10 + t)): early averages forget the random start."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def update_ema(average: nn.Module, network: nn.Module, decay: float, updates: int) -> None:
    """average <- d * average + (1 - d) * network for parameters, d = `ema_decay(decay, updates)`;
    buffers (BatchNorm statistics) are copied, so the average normalises as the network does."""
    weight = 1 - ema_decay(decay, updates)
    for averaged_weight, weight_now in zip(average.parameters(), network.parameters()):
        averaged_weight.lerp_(weight_now, weight)
    for averaged_buffer, buffer_now in zip(average.buffers(), network.buffers()):
        averaged_buffer.copy_(buffer_now)


# ---------------------------------------------------------------- config fields, checked one way everywhere


def check_int(family: str, name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    """An integer field (a bool is not one) from `minimum` to `maximum` (no bound above when None)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if maximum is not None:
            what = f"an integer from {minimum:,} to {maximum:,}"
        raise GenlabError(f"{family} setting {name} must be {what}, got {value!r}")


def check_number(
    family: str,
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    what: str = "",
) -> None:
    """A finite real field (a bool is not one) within [minimum, maximum] and (above, below) where given;
    `what` says the range in words when the default wording would not ("a positive number")."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        if not what:
            low = "" if minimum is None and above is None else (f">= {minimum:g}" if above is None else f"> {above:g}")
            high = "" if maximum is None and below is None else (f"<= {maximum:g}" if below is None else f"< {below:g}")
            what = "a number " + " and ".join(part for part in (low, high) if part) if low or high else "a number"
        raise GenlabError(f"{family} setting {name} must be {what.strip()}, got {value!r}")


def check_choice(family: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """A field that is one of `choices`."""
    if value not in choices:
        raise GenlabError(f"unknown {family} {name} {value!r}; choose one of {', '.join(choices)}")


def check_bool(family: str, name: str, value: Any) -> None:
    """A true/false field (0 and 1 are not booleans here)."""
    if not isinstance(value, bool):
        raise GenlabError(f"{family} setting {name} must be true or false, got {value!r}")


def drop_labels(labels: torch.Tensor, share: float, null_class: int) -> torch.Tensor:
    """`labels` (B,) with about `share` of them, drawn from the global RNG, replaced by `null_class`: the labels a
    network learns classifier-free guidance's unconditional prediction from (Ho & Salimans 2022)."""
    drop = torch.rand(labels.shape, device=labels.device) < share
    return torch.where(drop, torch.full_like(labels, null_class), labels)
