"""What `genlab report` and `genlab compare` read of a run: the run itself, its metrics, its numbers
in words, and its sample PNGs (checked before they go into a page)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genlab.errors import GenlabError
from genlab.explain.html import escape, missing
from genlab.io import read_json
from genlab.run import HISTORY_FILE, METRICS_FILE, RUN_FILE, SAMPLES_DIR, Run, is_run_dir

# A PNG of the run larger than this is left out of the page: grids genlab draws are far smaller,
# and a page of that size would not open.
SHOWN_BYTES = 32 * 2**20
SHOWN_PIXELS = 4096 * 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk that closes every PNG (empty, so always these bytes)


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
        run = Run.load(source)  # run.json (and its format version), model.safetensors; zoo:NAME checked
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
    """The run's data as run.json names it: 'mnist-5k (4,000 train / 1,000 test)', 'fortunes (2,186,191 train /
    235,929 test tokens, bytes)'."""
    data = info["data"]
    spec = data["spec"] + (f" at size {data['size']}" if data.get("size") else "")
    if "train_tokens" in data:  # a text run
        tokenizer = (data.get("shape") or {}).get("tokenizer", "")
        counts = f"{data['train_tokens']:,} train / {data.get('test_tokens', 0):,} test tokens, {tokenizer}"
        return f"{spec} ({counts.rstrip(', ')})"
    counts = f"{data.get('train_images', 0):,} train / {data.get('test_images', 0):,} test"
    return f"{spec} ({counts}{', in memory' if data.get('in_memory') else ''})"


def png_file(path: Path) -> bytes:
    """The bytes of a PNG of the run that the page shows, checked whole (every chunk, every pixel):
    GenlabError naming the file when it is damaged, not a PNG, or too large to show."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
        if size > SHOWN_BYTES:
            raise GenlabError(f"{path} is {size / 1e6:,.0f} MB, too large to show in a page")
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE) and PNG_END not in data:
            raise GenlabError(f"{path} is damaged (a PNG cut off before its end)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if image.width * image.height > SHOWN_PIXELS:
                    raise GenlabError(f"{path} is {image.width}x{image.height} pixels, too large to show in a page")
                image.verify()  # chunk checksums
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                image.load()  # every pixel: a cut-off or corrupt image fails here
    except UnidentifiedImageError:
        raise GenlabError(f"{path} is damaged (not a PNG image)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise GenlabError(f"{path} has too many pixels to show in a page") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise GenlabError(f"{path} is damaged (not a readable PNG: {error})") from None
    return data


SHOWN_TEXT_BYTES = 2**20  # a text run's sample page larger than this is left out: training writes about 1 kB


def text_file(path: Path) -> str:
    """A text run's sample page for a page (undecodable bytes replaced): GenlabError naming the file when it is too
    large to show."""
    size = path.stat().st_size
    if size > SHOWN_TEXT_BYTES:
        raise GenlabError(f"{path.name} is {size:,} bytes, too large to show: left out")
    return path.read_bytes().decode("utf-8", errors="replace")


def damaged_grid(error: GenlabError) -> str:
    """The notice that stands for a training grid that cannot be shown."""
    return missing(
        f"{escape(error)}: left out of this page; training drew it and cannot draw it again, "
        "so delete it (or put back a good copy) to silence this notice"
    )


def epoch_files(run: Run, suffix: str = "png") -> list[tuple[int, Path]]:
    """(epoch, file) of every samples/epoch_NNNN.<suffix> of the run (png: its grids; txt: a text run's samples),
    oldest first."""
    found = []
    for path in sorted((run.path / SAMPLES_DIR).glob(f"epoch_*.{suffix}")):
        number = path.stem.partition("_")[2]
        if number.isdigit():
            found.append((int(number), path))
    return found


def epoch_grids(run: Run) -> list[tuple[int, Path]]:
    """(epoch, file) of every samples/epoch_NNNN.png of the run, oldest first."""
    return epoch_files(run, "png")
