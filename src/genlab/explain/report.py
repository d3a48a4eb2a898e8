"""`genlab report`: one self-contained HTML page about a run.

    path = genlab.report("runs/vae")        # runs/vae/report.html

The page holds the run's facts, the pipeline (genlab.explain.pipeline), training curves
(matplotlib), the epoch table with its observations, sample grids across epochs,
reconstructions, an interpolation strip, a denoising trajectory, the metrics of
`genlab eval` beside their real-vs-real floor, and run.json. Every image is inline (a
data: URI) and so is the style sheet; the page runs no script and its Content-Security-
Policy forbids loading anything else. A section the run has no data for says how to get it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab.errors import GenlabError
from genlab.explain.observations import observe_metrics
from genlab.explain.trace import charted_losses, trace_rows, training_trace_cells
from genlab.io import atomic_write_bytes, read_json
from genlab.models.base import CanReconstruct, ShowsSamplingChain
from genlab.run import HISTORY_FILE, METRICS_FILE, RUN_FILE, SAMPLES_DIR, Run, is_run_dir

REPORT_FILE = "report.html"
EPOCH_GRIDS = 6  # sample grids shown across epochs: all of them, or an even spread keeping first and last
EPOCH_ROWS = 100  # rows of the epoch table, chosen the same way
RECONSTRUCTIONS = 8  # test images (top row) over their reconstructions (bottom row)
INTERPOLATION_STRIPS, INTERPOLATION_STEPS = 3, 8
TRAJECTORY_IMAGES, TRAJECTORY_FRAMES = 4, 8
SHOWN_WIDTH = 240  # small images are scaled up (pixelated) to about this many CSS pixels
SHARED_PANELS = {"d_real": ("d_real", "d_fake")}  # history keys charted together, on one scale

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; background: #fff;
       max-width: 1180px; margin: 0 auto; padding: 16px 28px 48px; }
h1 { font-size: 1.6em; margin: 0.4em 0; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccd;
     padding-bottom: 4px; margin-top: 1.8em; } h3 { font-size: 1.05em; }
nav a { margin-right: 12px; color: #2255aa; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #d4d4dc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f1f5; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
.facts th { width: 11em; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
.note { color: #555; font-size: 0.9em; }
.observations { color: #8a1f11; font-weight: 600; }
.idea { font-size: 1.05em; background: #f4f7fc; border-left: 4px solid #2255aa; padding: 8px 12px; }
.images { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; margin-top: 4px; }
img.pixels { image-rendering: pixelated; border: 1px solid #ddd; }
code { background: #f3f3f6; padding: 0 3px; border-radius: 3px; }
"""


# --------------------------------------------------------------------------- the run and its files


def load_run(source: str | Path | Run) -> Run:
    """The run at `source` (a folder is loaded on the CPU), checked for every file a report or comparison reads.

    Raises GenlabError naming the file that is missing, damaged, or from a newer genlab.
    """
    if isinstance(source, Run):
        run = source
    else:
        path = Path(source)
        if path.is_dir() and not is_run_dir(path):
            raise GenlabError(
                f"{path} is not a genlab run: it has no {RUN_FILE}; give a run directory written by `genlab train`"
            )
        run = Run.load(path)  # run.json (and its format version), model.safetensors
    epochs = run.info["epochs_completed"]
    if epochs and not (run.path / HISTORY_FILE).is_file():
        raise GenlabError(
            f"{run.path / HISTORY_FILE} is missing, though {RUN_FILE} records {epochs} epochs: "
            "copy the run directory again with all its files, or train it again"
        )
    return run


def read_metrics(run: Run) -> dict[str, Any] | None:
    """metrics.json as `genlab eval` wrote it, or None when the run was never evaluated."""
    path = run.path / METRICS_FILE
    if not path.exists():
        return None
    try:
        document = read_json(path, "the run's metrics")
    except GenlabError as error:
        raise GenlabError(f"{error}; measure again with `genlab eval {run.path}`") from None
    if not isinstance(document, dict) or not isinstance(document.get("metrics"), dict):
        raise GenlabError(f"{path} is not a metrics file of `genlab eval`; measure again with `genlab eval {run.path}`")
    return document


def trainable_parameters(model: torch.nn.Module) -> int:
    """Parameters that training updates (an EMA copy of the weights is not counted twice)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_seconds(history: Sequence[dict[str, Any]]) -> float:
    """Seconds spent in the training epochs, from history.jsonl."""
    return float(sum(record.get("seconds", 0.0) for record in history))


def duration_text(seconds: float) -> str:
    """'3.4 s', '12 min 5 s', '2 h 3 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def data_text(info: dict[str, Any]) -> str:
    """The run's data as run.json names it: 'mnist-5k (4,000 train / 1,000 test)'."""
    data = info["data"]
    spec = data["spec"] + (f" at size {data['size']}" if data.get("size") else "")
    counts = f"{data.get('train_images', 0):,} train / {data.get('test_images', 0):,} test"
    return f"{spec} ({counts}{', in memory' if data.get('in_memory') else ''})"


def epoch_grids(run: Run) -> list[tuple[int, Path]]:
    """(epoch, file) of every samples/epoch_NNNN.png of the run, oldest first."""
    found = []
    for path in sorted((run.path / SAMPLES_DIR).glob("epoch_*.png")):
        number = path.stem.partition("_")[2]
        if number.isdigit():
            found.append((int(number), path))
    return found


# --------------------------------------------------------------------------- HTML pieces


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_tag(png: bytes, alt: str, shown_width: int = SHOWN_WIDTH, css: str = "pixels") -> str:
    """<img> of a PNG; one narrower than `shown_width` is scaled up by a whole factor (pixels kept sharp)."""
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    scale = max(1, round(shown_width / width)) if width < shown_width else 1
    return (
        f'<img class="{css}" src="{data_uri(png)}" alt="{escape(alt)}" '
        f'width="{width * scale}" height="{height * scale}">'
    )


def figure(png: bytes, caption: str, alt: str | None = None, shown_width: int = SHOWN_WIDTH) -> str:
    return f"<figure>{image_tag(png, alt or caption, shown_width)}<figcaption>{escape(caption)}</figcaption></figure>"


def chart_tag(png: bytes, alt: str) -> str:
    """<img> of a matplotlib chart, at its own size."""
    return image_tag(png, alt, shown_width=0, css="chart")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; columns listed in `numeric` are right-aligned."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=number' if c in numeric else ''}>{escape(cell)}</td>" for c, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def missing(text: str) -> str:
    """A notice for data the run does not have, with how to get it (text may hold <code>)."""
    return f'<p class="missing">{text}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]], header: str) -> bytes:
    """The whole document: no script, nothing loaded from anywhere (the CSP says so to the browser)."""
    nav = "".join(f'<a href="#{anchor}">{escape(name)}</a>' for anchor, name, _ in sections)
    body = "\n".join(section(anchor, name, content) for anchor, name, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
{header}
<nav>{nav}</nav>
{body}
</body>
</html>
""".encode()


def _code(text: str) -> str:
    return f"<code>{escape(text)}</code>"


# --------------------------------------------------------------------------- charts


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


# --------------------------------------------------------------------------- sections


def speed_text(train: dict[str, Any]) -> str:
    """ "bf16, compiled, 4 processes" from run.json's train settings (runs from before they were recorded: fp32, 1)."""
    parts = [train.get("precision", "fp32")] + (["compiled"] if train.get("compile") else [])
    processes = train.get("processes", 1)
    return ", ".join(parts + [f"{processes} process" + ("es" if processes != 1 else "")])


def header_html(run: Run, history: Sequence[dict[str, Any]]) -> str:
    info = run.info
    status = info["status"] + (f": {info['message']}" if info.get("message") else "")
    facts = [
        ("Family", run.family + (" (conditional)" if run.model.conditional else "")),
        ("Data", data_text(info)),
        ("Parameters", f"{trainable_parameters(run.model):,}"),
        ("Epochs", f"{info['epochs_completed']} of {info['train']['epochs']}"),
        ("Training time", duration_text(training_seconds(history))),
        ("Batch size", info["train"]["batch_size"]),
        ("Seed", info["train"]["seed"]),
        ("Precision, processes", speed_text(info["train"])),
        ("genlab version", info.get("genlab_version", "unknown")),
        ("Status", status),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f'<h1>genlab report: {escape(run.path.name)}</h1>\n<table class="facts">{rows}</table>'


def pipeline_html(run: Run) -> str:
    """The pipeline of genlab.explain.pipeline for this run, measured on a batch of its data."""
    try:
        from genlab.explain.pipeline import explain_run
    except ModuleNotFoundError as error:
        if error.name != "genlab.explain.pipeline":
            raise
        return missing("this genlab has no pipeline trace yet (genlab.explain.pipeline)")
    try:
        explanation = explain_run(run)
    except GenlabError as error:  # e.g. the run's data is not on this machine, or was a dataset in memory
        return missing(f"the pipeline cannot be traced here: {escape(error)}")
    return render_pipeline(explanation.to_dict())


def _shape(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return "" if value is None else str(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _shape(value)


def _pairs(values: dict[str, Any]) -> str:
    """'spec: mnist-5k; images: 4,000; ...' of the values that are there."""
    return "; ".join(
        f"{key.replace('_', ' ')}: {_count(value)}"
        for key, value in values.items()
        if value not in (None, "", []) and not isinstance(value, dict)
    )  # run.json's config: below


def render_pipeline(explanation: dict[str, Any]) -> str:
    """HTML of an Explanation's dict (genlab.explain.pipeline): the idea, the data, the stages
    (grouped by path: training, generation) and the prediction trace's layers."""
    parts = []
    if explanation.get("idea"):
        parts.append(f'<p class="idea">{escape(explanation["idea"])}</p>')
    for key, title in (("data", "Data"), ("model", "Model")):
        value = explanation.get(key)
        if value:
            parts.append(f"<p><b>{title}:</b> {escape(_pairs(value) if isinstance(value, dict) else value)}</p>")
    paths: dict[str, list[dict[str, Any]]] = {}
    for stage in explanation.get("stages") or []:
        paths.setdefault(stage.get("path") or "", []).append(stage)
    for path, stages in paths.items():
        parts.append(f"<h3>{escape(path.capitalize() + ' path' if path else 'Stages')}</h3>")
        parts.append(
            table(
                ("Stage", "What it does", "Input shape", "Output shape", "Example"),
                [
                    (
                        s.get("name", ""),
                        s.get("what", ""),
                        "—" if s.get("input_shape") is None else _shape(s["input_shape"]),
                        _shape(s.get("output_shape")),
                        _shape(s.get("example")),
                    )
                    for s in stages
                ],
            )
        )
    layers = explanation.get("layers") or []
    network = explanation.get("network") or "network"
    if layers:
        parts.append(f"<h3>Prediction trace: the {escape(network)}, layer by layer</h3>")
        parts.append(
            table(
                ("Layer", "Type", "Output shape", "Parameters"),
                [
                    (
                        layer.get("name", ""),
                        layer.get("type", ""),
                        _shape(layer.get("output_shape")),
                        _count(layer.get("parameters", "")),
                    )
                    for layer in layers
                ],
                numeric=(3,),
            )
        )
    if explanation.get("parameters") is not None:
        parts.append(f"<p><b>Parameters of the {escape(network)}:</b> {escape(_count(explanation['parameters']))}</p>")
    if explanation.get("trace_note"):
        parts.append(f'<p class="note">{escape(explanation["trace_note"])}</p>')
    return "\n".join(parts) or missing("the pipeline trace is empty")


def curves_html(run: Run, history: Sequence[dict[str, Any]]) -> str:
    if not history:
        resume = _code(f"genlab train --resume --out {run.path}")
        return missing(f"no epoch has been completed yet: train with {resume}")
    panels = history_panels(history, type(run.model))
    parts = [chart_tag(chart_png(panels), f"training curves of {run.path.name}")] if panels else []
    if not any(p.title.startswith("FID") for p in panels):
        parts.append(
            missing(
                "FID during training was not recorded: train with "
                f"{_code('genlab train ... --eval-every N')} to follow it over the epochs"
            )
        )
    return "\n".join(parts)


def epoch_table_html(run: Run, history: Sequence[dict[str, Any]]) -> str:
    if not history:
        return missing("no epoch has been completed yet")
    model_class = type(run.model)
    header, rows = training_trace_cells(
        history,
        model_class.trace_columns,
        model_class.monitor,
        max_rows=EPOCH_ROWS,
        observer=model_class.observer,
    )
    spread = len(rows) < len(history)
    shown = f'<p class="note">{len(rows)} of {len(history)} epochs, evenly spread.</p>' if spread else ""
    return shown + table(header, rows, numeric=range(len(header) - 1))


def sample_grids_html(run: Run) -> str:
    grids = epoch_grids(run)
    if not grids:
        return missing(
            f"no sample grids were saved during training (--sample-every 0): draw some with "
            f"{_code(f'genlab sample {run.path} --n 64 --seed 1 --out grid.png')}"
        )
    shown = [grids[i] for i in trace_rows(grids, EPOCH_GRIDS)]
    note = f'<p class="note">{len(shown)} of {len(grids)} grids, from the same noise seed every epoch.</p>'
    figures = "".join(figure(path.read_bytes(), f"epoch {epoch}") for epoch, path in shown)
    return f'{note}<div class="images">{figures}</div>'


def grid_png(images: torch.Tensor, nrow: int) -> bytes:
    from genlab.images import make_grid, png_bytes

    return png_bytes(make_grid(images, nrow=nrow))


def reconstructions_html(run: Run, seed: int) -> str:
    model = run.model
    if not isinstance(model, CanReconstruct):
        return missing(f"the {run.family} family does not reconstruct images (it has no encoder)")
    data = run.info["data"]
    if data.get("in_memory"):
        return missing("the run was trained on a dataset in memory: there are no test images to reconstruct")
    from genlab.data import load_splits
    from genlab.eval.evaluate import seeded_subset

    try:
        train, test = load_splits(data["spec"], size=data.get("size"))
    except GenlabError as error:
        return missing(f"the run's data cannot be read here: {escape(error)}")
    split, name = (test, "test") if len(test) else (train, "training")
    index = seeded_subset(len(split), RECONSTRUCTIONS, torch.Generator().manual_seed(seed))
    images = split.images[index].float() / 255  # (8, C, H, W) in [0, 1]
    labels = split.labels[index] if model.conditional and split.labels is not None else None
    with torch.no_grad():
        rebuilt = model.reconstruct(images, labels).cpu()
    png = grid_png(torch.cat([images, rebuilt]), nrow=len(images))
    return figure(
        png,
        f"top: {len(images)} real {name} images of {data['spec']} (seed {seed}); "
        "bottom: the model's reconstructions of them",
    )


def interpolation_html(run: Run, seed: int) -> str:
    try:
        images, _ = run.interpolate(INTERPOLATION_STRIPS, INTERPOLATION_STEPS, torch.Generator().manual_seed(seed))
    except GenlabError as error:  # e.g. a family without a latent space
        return missing(escape(error))
    return figure(
        grid_png(images, INTERPOLATION_STEPS),
        f"{INTERPOLATION_STRIPS} paths between two latent draws (the family's interpolation), "
        f"{INTERPOLATION_STEPS} images each (seed {seed})",
    )


def trajectory_html(run: Run, seed: int) -> str:
    model = run.model
    if not isinstance(model, ShowsSamplingChain):
        return missing(f"the {run.family} family does not denoise step by step (only diffusion models do)")
    steps = model.chain_steps
    every = max(1, math.ceil(steps / (TRAJECTORY_FRAMES - 1)))
    labels = model.check_labels(TRAJECTORY_IMAGES, None)
    with torch.no_grad():  # as `genlab sample --trajectory K`: one row per image, x_T to x_0
        _, strip = model.sample_chain(
            TRAJECTORY_IMAGES, every, generator=torch.Generator().manual_seed(seed), labels=labels
        )
    images = torch.stack(strip, dim=1).flatten(0, 1).cpu()
    return figure(
        grid_png(images, len(strip)),
        f"{TRAJECTORY_IMAGES} images denoised from x_T (left) to x_0 (right), every {every} of "
        f"{steps} {model.chain_sampler.upper()} steps (seed {seed})",
    )


def metrics_html(run: Run, metrics: dict[str, Any] | None) -> str:
    from genlab.eval.evaluate import ROWS, metric_text

    if metrics is None:
        return missing(f"not measured yet: run {_code(f'genlab eval {run.path}')}")
    values, floor = metrics.get("metrics", {}), metrics.get("floor", {})
    rows = [
        (row.label, metric_text(row.key, values), metric_text(row.key, floor), row.better)
        for row in ROWS
        if row.key in values or row.key in floor
    ]
    parts = [_provenance(run, metrics)]
    parts.append(table(("Metric", "Value", "Real vs real", "Better"), rows, numeric=(1, 2)))
    observations = observe_metrics(values, floor)
    if observations:
        parts.append(
            '<ul class="observations">' + "".join(f"<li>{escape(text)}</li>" for text in observations) + "</ul>"
        )
    skipped = metrics.get("skipped") or {}
    if skipped:
        parts.append(
            "<ul class=note>" + "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in skipped.items()) + "</ul>"
        )
    nll = (metrics.get("details") or {}).get("nll")
    if nll:
        parts.append(
            f'<p class="note">Likelihood: {escape(nll.get("kind") or "")}, data model '
            f"{escape(nll.get('data_model', ''))}, on {nll.get('images', 0):,} {escape(nll.get('split', ''))} "
            "images.</p>"
        )
    parts.append("<h3>Memorization</h3>")
    parts.append(memorization_html(run, metrics))
    return "\n".join(parts)


def _provenance(run: Run, metrics: dict[str, Any]) -> str:
    counts, data = metrics.get("counts") or {}, metrics.get("data") or {}
    extractor = metrics.get("extractor")
    what = (
        [
            f"{counts.get('samples', 0):,} samples against {counts.get('reference', 0):,} {data.get('spec', '')} "
            f"{data.get('reference', '')} images"
        ]
        if counts.get("samples")
        else []
    )
    if extractor:
        what.append(f"features: {extractor.get('name')} ({str(extractor.get('sha256', ''))[:12]})")
    what.append(f"seed {metrics.get('seed')}")
    text = "Measured by <code>genlab eval</code>: " + escape("; ".join(what)) + "."
    measured_at = (metrics.get("source") or {}).get("epochs")
    if measured_at is not None and measured_at != run.info["epochs_completed"]:
        text += (
            f" These numbers are from epoch {measured_at}; the run now has {run.info['epochs_completed']}: "
            f"measure again with {_code(f'genlab eval {run.path}')}."
        )
    return f'<p class="note">{text}</p>'


def memorization_html(run: Run, metrics: dict[str, Any]) -> str:
    values, floor = metrics.get("metrics", {}), metrics.get("floor", {})
    if "copy_share" not in values:
        return missing(f"not measured: run {_code(f'genlab eval {run.path} --metrics memorization')}")
    details = (metrics.get("details") or {}).get("memorization") or {}
    numbers = (
        f"{values['copy_share']:.1%} of the samples lie closer to a training image than "
        f"{details.get('quantile', 0.05):.0%} of held-out real images do "
        f"(floor {floor.get('copy_share', 0):.1%}); "
        f"{values.get('ratio_test_share', 0):.1%} pass the ratio test d1/d2 &lt; 1/3 "
        f"(floor {floor.get('ratio_test_share', 0):.1%})."
    )
    if "sample_median_distance" in details:
        numbers += (
            f" Median distance to the nearest training image: samples {details['sample_median_distance']:.3g}, "
            f"held-out real images {details['held_out_median_distance']:.3g}."
        )
    parts = [f"<p>{numbers}</p>"]
    pairs = run.path / Path(details.get("pairs_png", "memorization.png")).name  # eval writes it beside metrics.json
    if pairs.is_file():
        parts.append(
            figure(
                pairs.read_bytes(),
                "top: the samples closest to a training image; bottom: that training image",
                shown_width=480,
            )
        )
    else:
        parts.append(missing(f"{escape(pairs.name)} is missing: run {_code(f'genlab eval {run.path}')} again"))
    return "\n".join(parts)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested run.json as (dotted key, text) rows."""
    if isinstance(value, dict):
        return [row for key, item in value.items() for row in flatten(item, f"{prefix}{key}.")]
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return [(prefix.rstrip("."), text)]


def config_html(run: Run) -> str:
    return table(("Key", "Value"), flatten(run.info))


# --------------------------------------------------------------------------- the report


def report(source: str | Path | Run, out: str | Path | None = None, seed: int = 0) -> Path:
    """Write the run's report.html (or `out`), atomically, and return its path.

    `seed` seeds every image drawn for the page (reconstructions, interpolation, trajectory).
    Bad input (not a run, a missing or damaged file, a newer run format) raises GenlabError
    before anything is written.
    """
    run = load_run(source)
    history = run.history
    metrics = read_metrics(run)
    out = Path(out) if out is not None else run.path / REPORT_FILE
    sections = [
        ("pipeline", "The pipeline", pipeline_html(run)),
        ("curves", "Training curves", curves_html(run, history)),
        ("epochs", "Epoch by epoch", epoch_table_html(run, history)),
        ("samples", "Samples across epochs", sample_grids_html(run)),
        ("reconstructions", "Reconstructions", reconstructions_html(run, seed)),
        ("interpolation", "Interpolation", interpolation_html(run, seed)),
        ("trajectory", "Denoising trajectory", trajectory_html(run, seed)),
        ("metrics", "Metrics", metrics_html(run, metrics)),
        ("config", "Configuration (run.json)", config_html(run)),
    ]
    document = page(f"genlab report: {run.path.name} ({run.family})", sections, header_html(run, history))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, document)
    return out
