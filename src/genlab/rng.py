"""The random-number state that training depends on: captured, restored, and kept apart.

Training draws its noise from torch's global generators: the CPU one, and the one of the
device it trains on (CUDA or MPS). Checkpoints save exactly these, and everything that is not
training (validation, callbacks, sample grids) runs inside `preserved`, so it can never shift
the stream that training sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def capture(device: torch.device) -> dict[str, torch.Tensor]:
    """The CPU generator's state and that of `device` (CUDA or MPS) as uint8 tensors."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device.index or 0)
    elif device.type == "mps":
        states["mps"] = torch.mps.get_rng_state()
    return states


def restore(states: dict[str, torch.Tensor], device: torch.device) -> None:
    """Set the states `capture` returned; a device state from another kind of device is ignored."""
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device.index or 0)
    elif device.type == "mps" and "mps" in states:
        torch.mps.set_rng_state(states["mps"])


def seed(value: int, device: torch.device) -> None:
    """Seed the CPU generator and that of `device` (CUDA or MPS) alone.

    These are all training draws from; skipping the other devices' generators makes this far
    cheaper than torch.manual_seed, cheap enough to call every step (benchmarks/README.md).
    """
    torch.default_generator.manual_seed(value)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(value)
    elif device.type == "mps":
        torch.mps.manual_seed(value)


@contextlib.contextmanager
def preserved(device: torch.device) -> Iterator[None]:
    """Run a block, then put the generators back as they were before it."""
    states = capture(device)
    try:
        yield
    finally:
        restore(states, device)
