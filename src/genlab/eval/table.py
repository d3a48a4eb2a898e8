"""The metrics table `genlab eval` prints: one row per metrics.json key, its real-vs-real floor beside it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    """One line of the metrics table: the metrics.json key, its label, and which way is better."""

    key: str
    label: str
    better: str
    metric: str  # the --metrics name that produces it


def metric_text(key: str, values: Mapping[str, Any]) -> str:
    """How tables show metric `key` of `values`: 4 significant digits, "± std" where one was measured, "-" if absent."""
    if key not in values or values[key] is None:
        return "-"
    value = values[key]
    if key == "classes_covered":
        return f"{int(value)}/{int(values.get('num_classes', 0))}"
    spread = values.get(f"{key}_std")
    text = f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return f"{text} ± {spread:.2g}" if spread is not None else text


def metrics_table(
    rows: Iterable[Row],
    metrics: Mapping[str, float],
    floor: Mapping[str, float],
    skipped: Mapping[str, str],
    observations: Iterable[str],
) -> str:
    """Aligned text: each row of `rows` measured in `metrics` or `floor`, its value (when samples were
    measured) and floor, then why any metric was skipped, then the observations."""
    header: tuple[str, ...] = ("Metric", "Value" if metrics else "Real vs real", "Real vs real", "Better")
    lines: list[tuple[str, ...]] = []
    for row in rows:
        if row.key not in metrics and row.key not in floor:
            continue
        value = metric_text(row.key, metrics) if metrics else ""
        low = metric_text(row.key, floor)
        lines.append((row.label, value, low, row.better) if metrics else (row.label, low, "", row.better))
    if not metrics:  # the floor alone: three columns
        header, lines = (header[0], header[1], header[3]), [(r[0], r[1], r[3]) for r in lines]
    widths = [max(len(line[c]) for line in [header, *lines]) for c in range(len(header))]
    text = ["  ".join(cell.ljust(widths[c]) for c, cell in enumerate(line)).rstrip() for line in [header, *lines]]
    text.extend(f"({name}: {why})" for name, why in skipped.items())
    text.extend(f"observation: {observation}" for observation in observations)
    return "\n".join(text)
