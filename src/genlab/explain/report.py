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

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genlab.errors import GenlabError
from genlab.explain.charts import chart_png, history_panels
from genlab.explain.html import chart_tag, code, escape, figure, missing, page, table
from genlab.explain.observations import observe_metrics
from genlab.explain.run_files import (
    damaged_grid,
    data_text,
    duration_text,
    epoch_grids,
    load_run,
    png_file,
    read_metrics,
    trainable_parameters,
    training_seconds,
)
from genlab.explain.trace import trace_rows, training_trace_cells
from genlab.io import atomic_write_bytes
from genlab.models.base import CanReconstruct, GeneratesText, ShowsSamplingChain
from genlab.outputs import REPORT_PAGE, check_output, naming
from genlab.run import PAIRS_FILE, REPORT_FILE, Run

EPOCH_GRIDS = 6  # sample grids shown across epochs: all of them, or an even spread keeping first and last
EPOCH_ROWS = 100  # rows of the epoch table, chosen the same way
RECONSTRUCTIONS = 8  # test images (top row) over their reconstructions (bottom row)
INTERPOLATION_STRIPS, INTERPOLATION_STEPS = 3, 8
TRAJECTORY_IMAGES, TRAJECTORY_FRAMES = 4, 8


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
    parts += text_pipeline_parts(explanation)
    return "\n".join(parts) or missing("the pipeline trace is empty")


def text_pipeline_parts(explanation: dict[str, Any]) -> list[str]:
    """A text model's prediction over the blocks and next-token table (genlab.explain.text), when it has them."""
    from genlab.explain.text import LENS_HEADER, TABLE_HEADER, lens_cells, next_token_cells

    lens, rows = explanation.get("lens") or [], explanation.get("next_tokens") or []
    parts = []
    if lens and rows:
        last = escape(rows[-1]["token"])
        parts.append(f"<h3>Prediction over the blocks at the prompt's last position ('{last}')</h3>")
        parts.append(table(LENS_HEADER, lens_cells(lens), numeric=(2, 3)))
    if rows:
        parts.append(f"<h3>Next-token table of the prompt {escape(repr(explanation.get('prompt', '')))}</h3>")
        parts.append(table(TABLE_HEADER, next_token_cells(rows), numeric=(0, 3)))
    return parts


def curves_html(run: Run, history: Sequence[dict[str, Any]]) -> str:
    if not history:
        resume = code(f"genlab train --resume --out {run.path}")
        return missing(f"no epoch has been completed yet: train with {resume}")
    panels = history_panels(history, type(run.model))
    parts = [chart_tag(chart_png(panels), f"training curves of {run.path.name}")] if panels else []
    if not isinstance(run.model, GeneratesText) and not any(p.title.startswith("FID") for p in panels):
        parts.append(
            missing(
                "FID during training was not recorded: train with "
                f"{code('genlab train ... --eval-every N')} to follow it over the epochs"
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
            f"{code(f'genlab sample {run.path} --n 64 --seed 1 --out grid.png')}"
        )
    shown = [grids[i] for i in trace_rows(grids, EPOCH_GRIDS)]
    note = f'<p class="note">{len(shown)} of {len(grids)} grids, from the same noise seed every epoch.</p>'
    figures = []
    for epoch, path in shown:
        try:
            figures.append(figure(png_file(path), f"epoch {epoch}"))
        except GenlabError as error:
            figures.append(damaged_grid(error))
    return f'{note}<div class="images">{"".join(figures)}</div>'


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
        f"{steps} {model.chain_sampler} steps (seed {seed})",
    )


def metrics_html(run: Run, metrics: dict[str, Any] | None) -> str:
    from genlab.eval.evaluate import ROWS, metric_text

    if metrics is None:
        return missing(f"not measured yet: run {code(f'genlab eval {run.path}')}")
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
            f"measure again with {code(f'genlab eval {run.path}')}."
        )
    return f'<p class="note">{text}</p>'


def memorization_html(run: Run, metrics: dict[str, Any]) -> str:
    values, floor = metrics.get("metrics", {}), metrics.get("floor", {})
    if "copy_share" not in values:
        return missing(f"not measured: run {code(f'genlab eval {run.path} --metrics memorization')}")
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
    pairs = run.path / Path(str(details.get("pairs_png", PAIRS_FILE))).name  # eval writes it beside metrics.json
    if not pairs.is_file():
        parts.append(missing(f"{escape(pairs.name)} is missing: run {code(f'genlab eval {run.path}')} again"))
        return "\n".join(parts)
    try:
        png = png_file(pairs)
    except GenlabError as error:
        parts.append(missing(f"{escape(error)}: left out; run {code(f'genlab eval {run.path}')} again"))
        return "\n".join(parts)
    parts.append(
        figure(png, "top: the samples closest to a training image; bottom: that training image", shown_width=480)
    )
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
    Bad input (not a run, a missing or damaged file, a newer run format, an `out` that is a
    file of a run or not an HTML page: see genlab.outputs) raises GenlabError before anything
    is written. A damaged sample grid is left out, and the page says which file it was.
    """
    run = load_run(source)
    out = check_output(
        out if out is not None else run.output_path(REPORT_FILE, "_report.html"), REPORT_PAGE, run=run.path
    )
    history = run.history
    metrics = read_metrics(run)
    if isinstance(run.model, GeneratesText):
        from genlab.explain.text_report import text_sections

        shown = text_sections(run, metrics)
    else:
        shown = [
            ("samples", "Samples across epochs", sample_grids_html(run)),
            ("reconstructions", "Reconstructions", reconstructions_html(run, seed)),
            ("interpolation", "Interpolation", interpolation_html(run, seed)),
            ("trajectory", "Denoising trajectory", trajectory_html(run, seed)),
            ("metrics", "Metrics", metrics_html(run, metrics)),
        ]
    sections = [
        ("pipeline", "The pipeline", pipeline_html(run)),
        ("curves", "Training curves", curves_html(run, history)),
        ("epochs", "Epoch by epoch", epoch_table_html(run, history)),
        *shown,
        ("config", "Configuration (run.json)", config_html(run)),
    ]
    document = page(f"genlab report: {run.path.name} ({run.family})", sections, header_html(run, history))
    with naming(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, document)
    return out
