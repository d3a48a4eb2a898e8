"""The training trace: a per-epoch table with observations and a loss chart drawn in text.

The family decides what is shown: its ``trace_columns`` (the table's columns), ``monitor``
and ``observer`` (which rules write the observations; see genlab.explain.observations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from genlab.explain.observations import TracedFamily, observe_with, observer_of

OVERLAP = "#"  # chart cell where two series meet
CONTEST_LOSSES = ("d_loss", "g_loss")  # charted for a "contest" family even if not among its columns


def trace_rows(history: Sequence[Any], max_rows: int = 20) -> list[int]:
    """Indices of the epochs to show: all of them, or an even spread that keeps first and last."""
    n = len(history)
    if n <= max_rows:
        return list(range(n))
    return sorted({round(i * (n - 1) / (max_rows - 1)) for i in range(max_rows)})


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return "" if value is None else str(value)


def training_trace_cells(
    history: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]] = (("loss", "Loss"),),
    monitor: str = "loss",
    max_rows: int = 20,
    observer: str = "loss",
) -> tuple[list[str], list[list[str]]]:
    """The training trace's header and rows as text cells (the text table and the HTML report share them)."""
    observations = observe_with(history, observer, monitor)
    speed, unit = (
        ("tokens_per_second", "tokens/s")
        if any("tokens_per_second" in r for r in history)
        else ("images_per_second", "images/s")
    )  # a text run counts its speed in tokens
    header = ["Epoch", *(title for _, title in columns), unit, "Observation"]
    rows = [
        [
            str(history[i]["epoch"]),
            *(_cell(history[i].get(key)) for key, _ in columns),
            f"{history[i].get(speed, 0):,.0f}",
            observations[i],
        ]
        for i in _shown_rows(history, columns, max_rows)
    ]
    return header, rows


def _shown_rows(history: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], max_rows: int) -> list[int]:
    """The trace's rows: every epoch, or an even spread over the epochs that have the most of the columns (a run
    that validates every few epochs has its test numbers in those records only)."""
    if len(history) <= max_rows:
        return list(range(len(history)))
    filled = [sum(key in record for key, _ in columns) for record in history]
    fullest = [i for i, count in enumerate(filled) if count == max(filled)]
    return [fullest[j] for j in trace_rows(fullest, max_rows)]


def training_trace_table(
    history: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]] = (("loss", "Loss"),),
    monitor: str = "loss",
    max_rows: int = 20,
    observer: str = "loss",
) -> str:
    """Epoch | <columns> | images/s | Observation, as an aligned text table.

    The observations follow `monitor` by the "loss" rules, or read the GAN contest by the
    "contest" rules, as `observer` says.
    """
    header, rows = training_trace_cells(history, columns, monitor, max_rows, observer)
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        # numbers right-aligned, the observation left-aligned
        body = [cell.rjust(widths[c]) for c, cell in enumerate(cells[:-1])]
        return " | ".join([*body, cells[-1]])

    rule = "-+-".join("-" * w for w in widths[:-1]) + "-+-" + "-" * widths[-1]
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def text_chart(series: dict[str, list[float]], height: int = 8, width: int = 50, markers: str = "*o+x") -> str:
    """Draw one or more series (same length, one value per epoch) as a text chart.

    Each series gets a marker ('#' where two series share a cell); rows are labelled with
    the value they stand for, and the x axis runs from the first to the last epoch (long
    series are resampled to `width`).
    """
    series = {name: [v for v in values] for name, values in series.items() if values}
    if not series:
        return ""
    length = max(len(v) for v in series.values())
    finite = [v for values in series.values() for v in values if math.isfinite(v)]
    if not finite:
        return "(no finite values to chart)"
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    columns = min(length, width)
    grid = [[" "] * columns for _ in range(height)]
    for marker, values in zip(markers, series.values()):
        for col in range(columns):
            value = values[min(len(values) - 1, round(col * (len(values) - 1) / max(columns - 1, 1)))]
            if math.isfinite(value):
                row = round((high - value) / span * (height - 1))  # row 0 is the top (highest value)
                grid[row][col] = marker if grid[row][col] in (" ", marker) else OVERLAP
    labels = [f"{high - r * span / (height - 1):.4g}" for r in range(height)]
    label_width = max(len(s) for s in labels)
    lines = [f"{labels[r].rjust(label_width)} |{''.join(grid[r])}" for r in range(height)]
    lines.append(" " * label_width + " +" + "-" * columns)
    axis = f"1{str(length).rjust(columns - 1)}" if columns > 1 else "1"
    lines.append(" " * (label_width + 2) + axis + "  epoch")
    legend = "   ".join(f"{m} {name}" for m, name in zip(markers, series))
    if any(OVERLAP in row for row in grid):
        legend += f"   {OVERLAP} both"
    lines.append(" " * (label_width + 2) + legend)
    return "\n".join(lines)


def training_trace(history: list[dict[str, Any]], model_class: type[TracedFamily]) -> str:
    """The whole trace for a family: its table, then its loss chart(s)."""
    if not history:
        return "no epochs were completed"
    observer = observer_of(model_class)
    table = training_trace_table(history, model_class.trace_columns, model_class.monitor, observer=observer)
    chart = text_chart({key: [r.get(key, math.nan) for r in history] for key in charted_losses(history, model_class)})
    return f"Training trace\n{table}\n\n{chart}"


def charted_losses(history: Sequence[dict[str, Any]], model_class: type[TracedFamily]) -> list[str]:
    """The history keys drawn on the loss chart: the family's loss columns (train and test)."""
    loss_keys = [key for key, _ in model_class.trace_columns if key.endswith("loss")]
    if observer_of(model_class) == "contest":  # the contest is read from D's and G's losses: chart both
        loss_keys += [k for k in CONTEST_LOSSES if k not in loss_keys and any(k in r for r in history)]
    return loss_keys
