"""The sections `genlab report` shows for a text run in place of the image ones: the samples written across epochs,
held-out continuations with the spans copied from the training text marked, and the text metrics of `genlab eval`
beside held-out text."""

from __future__ import annotations

from typing import Any

import numpy as np

from genlab.errors import GenlabError
from genlab.explain.html import code, escape, missing, table
from genlab.explain.run_files import epoch_files, text_file
from genlab.explain.trace import trace_rows
from genlab.run import Run

EPOCH_TEXTS = 4  # sample pages shown across epochs: all of them, or an even spread keeping first and last


def text_samples_html(run: Run) -> str:
    """The samples training wrote after some of its epochs (the same seed each time), as preformatted text."""
    pages = epoch_files(run, "txt")
    if not pages:
        return missing(
            f"no samples were written during training (--sample-every 0): write some with "
            f"{code(f'genlab sample {run.path} --n 4 --max-new-tokens 200 --seed 0')}"
        )
    shown = [pages[i] for i in trace_rows(pages, EPOCH_TEXTS)]
    parts = [f'<p class="note">{len(shown)} of {len(pages)} pages, each from the same seed.</p>']
    for epoch, path in shown:
        try:
            parts.append(f'<h3>Epoch {epoch}</h3>\n<pre class="text">{escape(text_file(path))}</pre>')
        except GenlabError as error:
            parts.append(missing(escape(error)))
    return "\n".join(parts)


def marked(pieces: list[tuple[str, bool]]) -> str:
    """HTML of a text cut into (piece, copied) pieces: the copied ones inside <mark>."""
    return "".join(f"<mark>{escape(text)}</mark>" if copied else escape(text) for text, copied in pieces)


def continuations_html(run: Run, metrics: dict[str, Any] | None) -> str:
    """The continuations `genlab eval` kept (held-out prompt, then the model's text), spans of 32 bytes or more found
    verbatim in the training text marked."""
    from genlab.data.text import load_text_splits
    from genlab.eval.text import COPY_WIDTH, copied_pieces, window_keys

    details = (metrics or {}).get("details") or {}
    samples, prompts = details.get("samples"), details.get("prompts")
    if not isinstance(samples, list) or not samples or not all(isinstance(s, str) for s in samples):
        return missing(f"not measured yet: run {code(f'genlab eval {run.path}')}")
    if not isinstance(prompts, list) or len(prompts) != len(samples):
        prompts = [""] * len(samples)  # metrics.json from before prompts were kept
    try:
        train, _ = load_text_splits(run.info["data"]["spec"])
    except GenlabError as error:
        return missing(f"the run's training text cannot be read here, so copies cannot be marked: {escape(error)}")
    train_keys = np.sort(window_keys(train.text.encode("utf-8")))
    blocks = [
        f'<pre class="text"><span class="prompt">{escape(prompt)}</span>'
        f"{marked(copied_pieces(sample, train_keys))}</pre>"
        for prompt, sample in zip(prompts, samples)
    ]
    note = (
        f'<p class="note">Each continues a held-out prompt (grey) of the test text; <mark>marked</mark> text lies in '
        f"a {COPY_WIDTH}-byte window found verbatim in the training text.</p>"
    )
    return note + "\n".join(blocks)


def text_metrics_html(run: Run, metrics: dict[str, Any] | None) -> str:
    """The text metrics of `genlab eval` beside held-out text, and the observations they call for."""
    from genlab.eval.table import metric_text
    from genlab.eval.text import TEXT_ROWS, observe_text

    if metrics is None:
        return missing(f"not measured yet: run {code(f'genlab eval {run.path}')}")
    values, floor = metrics.get("metrics", {}), metrics.get("floor", {})
    rows = [
        (label, metric_text(key, values), metric_text(key, floor), better)
        for key, label, better in TEXT_ROWS
        if key in values or key in floor
    ]
    counts = metrics.get("counts") or {}
    parts = [
        f'<p class="note">Measured by <code>genlab eval</code>: {counts.get("samples", 0):,} continuations of '
        f"{counts.get('prompt_bytes', 0)}-byte held-out prompts, {counts.get('continuation_bytes', 0)} bytes each; "
        f"seed {escape(metrics.get('seed'))}. Bits per byte are of the whole test text; its held-out column is "
        "xz -9e on the same text.</p>",
        table(("Metric", "Value", "Held-out text", "Better"), rows, numeric=(1, 2)),
    ]
    observations = observe_text(values, floor)
    if observations:
        parts.append(
            '<ul class="observations">' + "".join(f"<li>{escape(text)}</li>" for text in observations) + "</ul>"
        )
    return "\n".join(parts)


def text_sections(run: Run, metrics: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(anchor, title, body) of the sections a text run's report has in place of the image ones."""
    return [
        ("samples", "Samples across epochs", text_samples_html(run)),
        ("continuations", "Continuations and copies", continuations_html(run, metrics)),
        ("metrics", "Metrics", text_metrics_html(run, metrics)),
    ]
