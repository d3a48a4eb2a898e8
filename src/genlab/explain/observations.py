"""Observations on a training history: computed rules, never canned text.

Each rule reads only the history records up to the epoch it comments on, so the sentence
beside epoch 5 is what could be said at epoch 5.
"""

from __future__ import annotations

import math
from typing import Any

CONVERGED_CHANGE = 0.01  # relative change under 1% ...
CONVERGED_WINDOW = 3  # ... over this many epochs counts as converged
OVERFIT_EPOCHS = 2  # test loss up while train loss down for this many epochs in a row


def _relative_change(new: float, old: float) -> float:
    return (new - old) / abs(old) if old else 0.0


def _label(key: str) -> str:
    return key.replace("_", " ")


def observe(history: list[dict[str, Any]], monitor: str = "loss", train_key: str = "loss") -> list[str]:
    """One observation per epoch of `history`, following the `monitor` key (lower is better)."""
    return [observe_epoch(history[: i + 1], monitor, train_key) for i in range(len(history))]


def observe_epoch(history: list[dict[str, Any]], monitor: str = "loss", train_key: str = "loss") -> str:
    """The observation for the last record of `history`."""
    if monitor not in history[-1]:
        monitor = train_key
    values = [record[monitor] for record in history if monitor in record]
    current = values[-1]
    name = _label(monitor)
    if not math.isfinite(current):
        return f"{name} is {current}: training diverged"
    if len(values) == 1:
        return f"starts learning: {name} {current:.4g}"
    if monitor != train_key and _overfitting(history, monitor, train_key):
        return f"overfitting: {name} rose {OVERFIT_EPOCHS} epochs in a row while {_label(train_key)} fell"
    if len(values) > CONVERGED_WINDOW:
        change = _relative_change(current, values[-1 - CONVERGED_WINDOW])
        if abs(change) < CONVERGED_CHANGE:
            return f"converged: {name} changed {change:+.1%} over {CONVERGED_WINDOW} epochs"
    change = _relative_change(current, values[-2])
    if change < 0:
        return f"still improving: {name} {change:+.1%} since the last epoch"
    return f"{name} rose {change:+.1%} since the last epoch"


def _overfitting(history: list[dict[str, Any]], monitor: str, train_key: str) -> bool:
    """Test loss rising while train loss falls, for OVERFIT_EPOCHS consecutive epochs."""
    recent = history[-(OVERFIT_EPOCHS + 1):]
    if len(recent) < OVERFIT_EPOCHS + 1 or any(monitor not in r or train_key not in r for r in recent):
        return False
    pairs = list(zip(recent, recent[1:]))
    return all(b[monitor] > a[monitor] and b[train_key] < a[train_key] for a, b in pairs)
