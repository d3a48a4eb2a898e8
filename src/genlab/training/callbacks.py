"""Callbacks that give the loop its side effects: the run directory, sample grids, progress."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genlab.images import save_grid
from genlab.models.base import GeneratesText
from genlab.models.common import eval_mode
from genlab.run import SAMPLES_DIR, append_history, save_checkpoint, write_run_info
from genlab.training.trainer import Callback, Trainer, due

if TYPE_CHECKING:
    from tqdm import tqdm


class RunWriter(Callback):
    """Keeps the run directory current: history line, checkpoint, then run.json, each epoch.

    The order matters for a crash at any instant: history may run ahead of the checkpoint
    (resume truncates it), and state.safetensors is complete before run.json says so.
    """

    def __init__(self, path: str | Path, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info

    def on_train_start(self, trainer: Trainer) -> None:
        self.info.update(status="running", message="")
        write_run_info(self.path, self.info)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        append_history(self.path, record)
        save_checkpoint(self.path, trainer.model, trainer.optimizers, trainer.epoch)
        self.info["epochs_completed"] = trainer.epoch
        write_run_info(self.path, self.info)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        if status == "interrupted" and trainer.stopped_cleanly:  # a step boundary: save where it stopped
            save_checkpoint(self.path, trainer.model, trainer.optimizers, trainer.epoch - 1, trainer.progress.to_dict())
            trainer.message += "; saved there"
        self.info.update(status=status, message=trainer.message)
        write_run_info(self.path, self.info)


MAX_GRID_CLASSES = 16  # more classes than this: a plain 8-wide grid cycling through them


class SampleGrids(Callback):
    """A grid of samples from the same fixed noise after every `every` epochs (samples/epoch_0001.png).

    A conditional model's grid has one column per class (8 rows), so each column is one label
    (up to MAX_GRID_CLASSES classes).
    """

    def __init__(self, path: str | Path, every: int = 1, n: int = 64, seed: int = 0):
        self.folder = Path(path) / SAMPLES_DIR
        self.every, self.n, self.seed = every, n, seed

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not due(trainer.epoch, self.every, trainer.config.epochs):
            return
        self.folder.mkdir(exist_ok=True)
        model = trainer.model
        classes = model.data.num_classes if model.conditional else 0
        n, nrow = (8 * classes, classes) if 0 < classes <= MAX_GRID_CLASSES else (self.n, 8)
        with eval_mode(model), torch.no_grad():  # a conditional model given no labels cycles through the classes
            images = model.sample(n, generator=torch.Generator().manual_seed(self.seed))
        save_grid(images, self.folder / f"epoch_{trainer.epoch:04d}.png", nrow=nrow)


class TextNumbers(Callback):
    """Adds what a text run's trace shows beside the loss: bits per byte of the training and test text (nats per
    token x tokens per byte / ln 2, comparable across tokenizers) and tokens per second. Runs before RunWriter."""

    def __init__(self, train_data, test_data):
        self.train_data, self.test_data = train_data, test_data

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        record["tokens_per_second"] = record["images_per_second"] * self.train_data.context  # windows -> tokens
        record["bits_per_byte"] = record["loss"] * self.train_data.tokens_per_byte / math.log(2)
        if "test_loss" in record and self.test_data is not None:
            record["test_bits_per_byte"] = record["test_loss"] * self.test_data.tokens_per_byte / math.log(2)


class TextSamples(Callback):
    """A text run's counterpart of SampleGrids: TEXT_SAMPLES continuations of the start of a new document after
    every `every` epochs, from the same seed (samples/epoch_0001.txt), so their progress can be read."""

    def __init__(self, path: str | Path, tokenizer, every: int = 1, seed: int = 0):
        self.folder = Path(path) / SAMPLES_DIR
        self.tokenizer, self.every, self.seed = tokenizer, every, seed

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        from genlab.data.text import DOCUMENT_SEPARATOR
        from genlab.io import atomic_write_bytes

        if not due(trainer.epoch, self.every, trainer.config.epochs):
            return
        self.folder.mkdir(exist_ok=True)
        model = trainer.model
        assert isinstance(model, GeneratesText), "TextSamples follows a text family"
        prompt = torch.tensor([self.tokenizer.encode(DOCUMENT_SEPARATOR)] * TEXT_SAMPLES)
        with eval_mode(model), torch.no_grad():
            ids = model.generate(prompt, TEXT_SAMPLE_TOKENS, generator=torch.Generator().manual_seed(self.seed))
        texts = [self.tokenizer.decode(row[prompt.shape[1] :].tolist()) for row in ids.cpu()]
        page = "".join(
            f"--- sample {i + 1} (seed {self.seed}, epoch {trainer.epoch})\n{text}\n" for i, text in enumerate(texts)
        )
        atomic_write_bytes(self.folder / f"epoch_{trainer.epoch:04d}.txt", page.encode("utf-8"))


TEXT_SAMPLES, TEXT_SAMPLE_TOKENS = 4, 200


class EvalEvery(Callback):
    """Adds FID, precision and recall to the epoch's record every `every` epochs (and after the last).

    `monitor(model) -> dict` measures the model (genlab.eval.monitor.TrainingMonitor); this
    callback must run before RunWriter so that history.jsonl holds the numbers.
    """

    def __init__(self, monitor, every: int):
        self.monitor, self.every = monitor, every

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if due(trainer.epoch, self.every, trainer.config.epochs):
            record.update(self.monitor(trainer.model))


def format_record(record: dict[str, Any], total_epochs: int) -> str:
    """One line per epoch: 'epoch  3/20  loss 120.31  test_loss 118.20  ...  9,812 img/s  0.4s'."""
    width = len(str(total_epochs))
    parts = [f"epoch {record['epoch']:>{width}}/{total_epochs}"]
    for key, value in record.items():
        if key in ("epoch", "seconds", "images_per_second", "tokens_per_second"):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    if "tokens_per_second" in record:  # a text run
        parts.append(f"{record['tokens_per_second']:,.0f} tokens/s")
    else:
        parts.append(f"{record['images_per_second']:,.0f} img/s")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


def counted(number: int, noun: str) -> str:
    """'1 epoch', '2 epochs', '1,875 steps': a count and its noun, singular for one."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


class ProgressBar(Callback):
    """A line saying how long the run will train, then a tqdm bar over each epoch's steps (stderr) and one
    summary line per epoch (stdout). `default_steps`: the family's budget the epochs came from, if they did."""

    def __init__(self, default_steps: int | None = None) -> None:
        self.bar: tqdm | None = None
        self.default_steps = default_steps

    def on_train_start(self, trainer: Trainer) -> None:
        epochs, steps = trainer.config.epochs, trainer.steps_per_epoch
        line = (
            f"training {counted(epochs, 'epoch')} of {counted(steps, 'step')} ({counted(epochs * steps, 'step')}, "
            f"batch {trainer.batch_size})"
        )
        if trainer.epoch:
            line += f", resuming after epoch {trainer.epoch}"
        if self.default_steps:
            line += (
                f": the family's default budget for this data, {counted(self.default_steps, 'step')} (--epochs N sets "
                "another)"
            )
        if trainer.config.validate_every > 1 and trainer.test_data is not None:
            line += f"; the test set every {trainer.config.validate_every} epochs and after the last (--validate-every)"
        print(line, flush=True)

    def on_epoch_start(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=trainer.steps_per_epoch,
            desc=f"epoch {trainer.epoch}/{trainer.config.epochs}",
            leave=False,
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if trainer.step % 10 == 0:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._close()
        print(format_record(record, trainer.config.epochs), flush=True)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
