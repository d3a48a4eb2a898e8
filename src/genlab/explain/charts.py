"""The training curves of `genlab report` and `genlab compare`: panels of history keys, drawn with
matplotlib (imported only here, when a chart is drawn) into one PNG."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genlab.explain.trace import charted_losses

SHARED_PANELS = {"d_real": ("d_real", "d_fake")}  # history keys charted together, on one scale


@dataclass
class Panel:
    """One chart: a title and its series, each (label, epochs, values)."""

    title: str
    series: list[tuple[str, list[float], list[float]]]


def series_of(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of `key` over the records that have it (FID is only there every few epochs)."""
    points = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(history) if isinstance(r.get(key), (int, float))]
    return [float(e) for e, _ in points], [float(v) for _, v in points]


def history_panels(history: Sequence[dict[str, Any]], model_class) -> list[Panel]:
    """The family's curves: its losses together (train and test, or D and G), each other trace
    column apart, the monitored number if not among them, and FID, precision and recall where
    `--eval-every` recorded them."""
    present = {key for record in history for key in record}
    monitor = model_class.monitor

    def label(key: str) -> str:
        return f"{key} (monitored)" if key == monitor else key

    panels = []
    losses = [key for key in charted_losses(history, model_class) if key in present]
    if losses:
        panels.append(Panel("Loss", [(label(key), *series_of(history, key)) for key in losses]))
    shown = set(losses)
    titles = dict(model_class.trace_columns)
    for key, _ in model_class.trace_columns:
        if key in present and key not in shown:
            together = [k for k in SHARED_PANELS.get(key, (key,)) if k in present]  # D(real) beside D(fake)
            panels.append(
                Panel(
                    " and ".join(titles.get(k, k) for k in together),
                    [(label(k), *series_of(history, k)) for k in together],
                )
            )
            shown.update(together)
    if monitor in present and monitor not in shown:
        panels.append(Panel(monitor, [(label(monitor), *series_of(history, monitor))]))
    if "fid" in present and "fid" not in shown:
        panels.append(Panel("FID (during training)", [("fid", *series_of(history, "fid"))]))
    quality = [key for key in ("precision", "recall") if key in present and key not in shown]
    if quality:
        panels.append(Panel("Precision and recall (during training)", [(k, *series_of(history, k)) for k in quality]))
    return panels


def chart_png(panels: Sequence[Panel], columns: int = 3, panel_size: tuple[float, float] = (3.8, 2.6)) -> bytes:
    """Draw `panels` as small charts in a grid and return the PNG.

    matplotlib's object API on the Agg canvas: no pyplot, so no global figure state is
    created or left behind.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    for index, panel in enumerate(panels):
        axes = fig.add_subplot(rows, columns, index + 1)
        for name, epochs, values in panel.series:
            axes.plot(epochs, values, marker="o" if len(epochs) < 12 else None, markersize=3, linewidth=1.5, label=name)
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel("epoch", fontsize=8)
        axes.tick_params(labelsize=8)
        epochs_shown = sorted({e for _, epochs, _ in panel.series for e in epochs})
        if len(epochs_shown) <= 10:
            axes.set_xticks(epochs_shown)  # whole epochs only, even for a single point
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if len(panel.series) > 1 or "(monitored)" in panel.series[0][0]:
            axes.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
