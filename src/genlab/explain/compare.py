"""`genlab compare`: runs side by side, one table and one HTML page.

    comparison = genlab.compare(["runs/vae", "runs/gan"], out="compare.html")
    print(comparison.table()); comparison.rows[0].fid

Every number is read from the runs' own files (run.json, history.jsonl, metrics.json):
nothing is measured again, and "—" marks what `genlab eval` has not measured yet. As in
`genlab likelihood`, numbers are only comparable between runs measured the same way, and
the table says where they are not: runs on different data, metrics from different sample
counts or feature extractors, likelihoods under different data models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.explain.charts import Panel, chart_png, history_panels, series_of
from genlab.explain.html import chart_tag, escape, figure, missing, page, table
from genlab.explain.run_files import (
    damaged_grid,
    data_text,
    duration_text,
    epoch_files,
    epoch_grids,
    load_run,
    png_file,
    read_metrics,
    text_file,
    trainable_parameters,
    training_seconds,
)
from genlab.models.base import GeneratesText, HasLikelihood
from genlab.outputs import COMPARE_PAGE, check_output, naming
from genlab.run import writes_text

COMPARE_FILE = "compare.html"
NOT_MEASURED = "—"
# (metrics.json key, column title): the measured columns of the table
MEASURED = (
    ("fid", "FID"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("bits_per_dim", "Bits/dim"),
    ("copy_share", "Copies"),
)
# ... and a text run's (genlab.eval.text): bits per byte compares runs whatever their tokenizers
MEASURED_TEXT = (
    ("bits_per_byte", "Bits/byte"),
    ("copy_share", "Copied windows"),
    ("longest_copy", "Longest copy"),
    ("distinct_2", "Distinct-2"),
    ("self_bleu", "Self-BLEU"),
)


@dataclass
class ComparedRun:
    """One run's row: its facts and what `genlab eval` measured (metrics.json's flat `metrics`)."""

    path: str
    family: str
    data: str
    data_fingerprint: str
    parameters: int
    epochs: int
    seconds: float
    has_likelihood: bool
    metrics: dict[str, float] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)  # metrics.json's counts, extractor, epochs, nll data model
    conditional: bool = False
    text: bool = False  # a text run (its columns are MEASURED_TEXT)


@dataclass
class Comparison:
    """The compared runs, in the order given, and what keeps their numbers apart."""

    rows: list[ComparedRun]
    notes: list[str]
    out: Path | None = None  # compare.html, where one was written

    @property
    def measured_columns(self) -> tuple[tuple[str, str], ...]:
        """(metrics.json key, title) of the measured columns: the text ones when the runs write text."""
        return MEASURED_TEXT if self.rows and self.rows[0].text else MEASURED

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """The table's header and rows as text."""
        from genlab.eval.evaluate import metric_text

        columns = self.measured_columns
        header = ["Run", "Family", "Data", "Parameters", "Epochs", "Training time", *(t for _, t in columns)]
        rows = [
            [
                row.path,
                row.family + (" (conditional)" if row.conditional else ""),
                row.data,
                f"{row.parameters:,}",
                str(row.epochs),
                duration_text(row.seconds),
                *(metric_text(key, row.metrics) if key in row.metrics else NOT_MEASURED for key, _ in columns),
            ]
            for row in self.rows
        ]
        return header, rows

    def table(self) -> str:
        """Aligned text: one line per run, then the notes."""
        from genlab.explain.pipeline import aligned

        return "\n".join(aligned(*self.cells()) + [f"note: {note}" for note in self.notes])


def compared_run(run) -> ComparedRun:
    """A run's row of the comparison, from its files."""
    info = run.info
    metrics = read_metrics(run) or {}
    details = metrics.get("details") or {}
    measured = {
        "samples": (metrics.get("counts") or {}).get("samples"),
        "extractor": (metrics.get("extractor") or {}).get("name"),
        "epochs": (metrics.get("source") or {}).get("epochs"),
        "nll_data_model": (details.get("nll") or {}).get("data_model"),
    }
    return ComparedRun(
        path=run.name,
        family=run.family,
        data=info["data"]["spec"],
        data_fingerprint=info["data"].get("fingerprint", info["data"]["spec"]),
        parameters=trainable_parameters(run.model),
        epochs=info["epochs_completed"],
        seconds=training_seconds(run.history),
        has_likelihood=isinstance(run.model, HasLikelihood),
        metrics={k: v for k, v in (metrics.get("metrics") or {}).items() if isinstance(v, (int, float))},
        measured=measured,
        conditional=run.model.conditional,
        text=isinstance(run.model, GeneratesText),
    )


def comparability_notes(rows: Sequence[ComparedRun]) -> list[str]:
    """Sentences saying which numbers of `rows` are not measured alike (empty when all are)."""
    notes = []
    if len({row.data_fingerprint for row in rows}) > 1:
        named = "; ".join(f"{row.path}: {row.data}" for row in rows)
        measures = (
            "bits per byte, copies and diversity" if rows[0].text else "FID, precision, recall, bits/dim and copies"
        )
        notes.append(
            f"the runs were trained on different data ({named}): their {measures} are measured against different "
            "real data; do not rank them against each other"
        )
    evaluated = [row for row in rows if row.metrics]
    for key, what in (("samples", "sample counts"), ("extractor", "feature extractors")):
        if len({row.measured[key] for row in evaluated if row.measured[key] is not None}) > 1:
            named = "; ".join(f"{row.path}: {row.measured[key]}" for row in evaluated)
            notes.append(
                f"the metrics come from different {what} ({named}): compare FID only at the same --n and extractor"
            )
    models = {row.measured["nll_data_model"] for row in rows if row.measured["nll_data_model"]}
    if len(models) > 1:
        notes.append(
            "bits/dim under different data models ("
            + "; ".join(
                f"{row.path}: {row.measured['nll_data_model']}" for row in rows if row.measured["nll_data_model"]
            )
            + ") measure different things: do not rank them against each other"
        )
    for row in rows:
        if row.metrics and row.measured["epochs"] not in (None, row.epochs):
            notes.append(
                f"{row.path}'s metrics are from epoch {row.measured['epochs']} of its {row.epochs}: "
                f"measure again with `genlab eval {row.path}`"
            )
    unmeasured = [row.path for row in rows if not row.metrics]
    if unmeasured:
        notes.append(f"{NOT_MEASURED} not measured yet: run `genlab eval RUN` for {', '.join(unmeasured)}")
    for row in evaluated:
        if not row.text and "bits_per_dim" not in row.metrics:
            notes.append(
                f"{row.path}: no bits/dim, "
                + (
                    "measure it with `genlab eval " + row.path + " --metrics nll`"
                    if row.has_likelihood
                    else f"the {row.family} family has no likelihood"
                )
            )
    return notes


def curve_panels(runs: Sequence, rows: Sequence[ComparedRun]) -> list[Panel]:
    """One chart of the monitored number with a line per run where every run monitors the same one,
    otherwise one small chart of each run's losses; and one of FID where training recorded it."""
    monitors = {run.model.monitor for run in runs}
    histories = [run.history for run in runs]
    if len(monitors) == 1:
        monitor = monitors.pop()
        panels = [Panel(monitor, [(row.path, *series_of(h, monitor)) for row, h in zip(rows, histories)])]
    else:
        panels = []
        for run, row, history in zip(runs, rows, histories):
            own = history_panels(history, type(run.model))
            if own:
                panels.append(Panel(f"{row.path}: {own[0].title}", own[0].series))
    with_fid = [(row.path, *series_of(h, "fid")) for row, h in zip(rows, histories) if any("fid" in r for r in h)]
    if with_fid:  # FID is FID whatever the family: one chart
        panels.append(Panel("FID (during training)", with_fid))
    return [panel for panel in panels if any(epochs for _, epochs, _ in panel.series)]


def latest_text(run, row: ComparedRun) -> str:
    """A text run's last page of samples written in training, or why there is none."""
    found = epoch_files(run, "txt")
    if not found:
        return missing(f"{escape(row.path)}: no samples written (trained with --sample-every 0)")
    epoch, path = found[-1]
    try:
        text = text_file(path)
    except GenlabError as error:
        return missing(f"{escape(row.path)}: {escape(error)}")
    caption = f"<figcaption>{escape(row.path)}, epoch {epoch}</figcaption>"
    return f'<figure><pre class="text">{escape(text)}</pre>{caption}</figure>'


def compare_page(runs: Sequence, comparison: Comparison) -> bytes:
    header, rows = comparison.cells()
    names = ", ".join(row.path for row in comparison.rows)
    facts = table(header, rows, numeric=range(3, len(header)))
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in comparison.notes)
    data = (
        "<ul>"
        + "".join(
            f"<li>{escape(row.path)}: {escape(data_text(run.info))}</li>" for run, row in zip(runs, comparison.rows)
        )
        + "</ul>"
    )
    panels = curve_panels(runs, comparison.rows)
    curves = chart_png(panels, columns=min(3, len(panels))) if panels else None
    grids = []
    for run, row in zip(runs, comparison.rows):
        if row.text:
            grids.append(latest_text(run, row))
            continue
        found = epoch_grids(run)
        if found:
            epoch, path = found[-1]
            try:
                grids.append(figure(png_file(path), f"{row.path} ({row.family}), epoch {epoch}"))
            except GenlabError as error:
                grids.append(damaged_grid(error))
        else:
            grids.append(missing(f"{escape(row.path)}: no sample grid saved (trained with --sample-every 0)"))
    sections = [
        ("table", "Side by side", facts + notes + f'<p class="note">Data:</p>{data}'),
        (
            "curves",
            "Training curves",
            chart_tag(curves, "training curves") if curves else missing("no epoch has been completed yet"),
        ),
        ("samples", "Latest samples", f'<div class="images">{"".join(grids)}</div>'),
    ]
    title = f"genlab compare: {names}"
    return page(title, sections, f"<h1>{escape(title)}</h1>")


def compare(runs: Sequence, out: str | Path | None = COMPARE_FILE) -> Comparison:
    """Compare two or more runs (folders or Runs): the table, and compare.html at `out` (None: no page).

    Bad input (fewer than two runs, a folder that is not a run, a missing or damaged file, an
    `out` that is a file of a run or not an HTML page: see genlab.outputs) raises GenlabError
    before anything is written. A damaged sample grid is left out, and the page says which file it was.
    """
    if isinstance(runs, (str, Path)) or len(runs) < 2:
        raise GenlabError("give two or more run directories to compare, e.g. genlab compare runs/vae runs/gan")
    loaded = [load_run(run) for run in runs]
    writes_text(loaded, "compare runs of one kind", "no measure is shared by both")
    page_path = None if out is None else check_output(out, COMPARE_PAGE)
    rows = [compared_run(run) for run in loaded]
    comparison = Comparison(rows, comparability_notes(rows))
    if page_path is not None:
        from genlab.io import atomic_write_bytes

        document = compare_page(loaded, comparison)
        with naming(page_path):
            page_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(page_path, document)
        comparison.out = page_path
    return comparison
