"""The model-agnostic training loop. It knows the family contract, never a family."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab import rng
from genlab.data.dataset import ImageDataset
from genlab.data.tokens import TokenDataset
from genlab.data.transforms import to_unit
from genlab.errors import GenlabError, TrainingDiverged
from genlab.models.base import GenerativeModel
from genlab.models.common import eval_mode
from genlab.training import acceleration, distributed

MAX_SEED = 2**32  # seeds are 32-bit, so (seed, epoch) -> one 64-bit generator seed never overflows
# A run validates (and draws its sample grid) about this many times at most: a budget of many short epochs (240
# epochs of 63 steps for the DCGAN on mnist-5k) would otherwise spend 5% of its wall on the test set.
VALIDATIONS_PER_RUN = 50


def due(epoch: int, every: int, last: int) -> bool:
    """Whether something done every `every` epochs (0 or less: never) and after the `last` one is due after `epoch`."""
    return every > 0 and (epoch % every == 0 or epoch == last)


def default_validate_every(epochs: int) -> int:
    """Epochs between validations when none is asked for: every epoch up to VALIDATIONS_PER_RUN epochs, then
    spread so that a run validates about VALIDATIONS_PER_RUN times (and always after its last epoch)."""
    return max(1, math.ceil(epochs / VALIDATIONS_PER_RUN))


@dataclass
class TrainConfig:
    """Settings of the loop itself (the family's settings live in its own config)."""

    epochs: int = 20
    batch_size: int | None = None  # None: the family's default_batch_size
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "fp32", "bf16" (autocast), or "auto": bf16 on a CUDA GPU that has it, else fp32
    compile: bool = False  # torch.compile the family's compile_targets() before training
    channels_last: bool | None = None  # NHWC weights and batches; None: on CUDA for convolutional models
    validate_every: int = 1  # validate on the test set every N epochs, and always after the last

    def validates(self, epoch: int) -> bool:
        """Whether the loop measures the test set after `epoch`: every validate_every epochs and after the last."""
        return due(epoch, self.validate_every, self.epochs)

    def validate(self) -> None:
        """Raise GenlabError for settings the loop cannot run with."""
        if not isinstance(self.seed, int) or not 0 <= self.seed < MAX_SEED:
            raise GenlabError(f"seed must be an integer from 0 to {MAX_SEED - 1}, got {self.seed!r}")
        if not isinstance(self.epochs, int) or self.epochs <= 0:
            raise GenlabError(f"epochs must be a positive integer, got {self.epochs!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size <= 0):
            raise GenlabError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if (
            isinstance(self.validate_every, bool)
            or not isinstance(self.validate_every, int)
            or self.validate_every <= 0
        ):
            raise GenlabError(f"--validate-every must be a positive number of epochs, got {self.validate_every!r}")
        acceleration.check_precision(self.precision)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; otherwise cpu, cuda, cuda:N or mps, checked to exist."""
    mps = getattr(torch.backends, "mps", None)
    mps_available = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index):
        raise GenlabError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenlabError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise GenlabError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    if device.type == "mps" and not mps_available:
        raise GenlabError(f"device {name!r} asked for, but MPS is not available; use --device cpu")
    return device


@dataclass
class EpochProgress:
    """How far the current epoch has got, at a step boundary: enough to resume inside it."""

    step: int = 0  # steps done in this epoch
    images_seen: int = 0
    seconds: float = 0.0  # training seconds spent in this epoch so far
    totals: dict[str, float] = field(default_factory=dict)  # sum over images of each step metric

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "images_seen": self.images_seen, "seconds": self.seconds, "totals": self.totals}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochProgress:
        return cls(int(values["step"]), int(values["images_seen"]), float(values["seconds"]), dict(values["totals"]))


class Callback:
    """Hooks around the loop; every method is optional."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer, status: str) -> None: ...


class Trainer:
    """Runs epochs of `training_step` over seeded slices of a device-resident dataset.

    Each epoch's order comes from its own generator seeded by (seed, epoch), and validation
    runs under a forked, fixed RNG, so training randomness depends only on the global RNG
    state saved at each epoch's end: resuming from a checkpoint repeats the run bit for bit.

    Under a torch.distributed process group (genlab.training.distributed) the loop is data
    parallel: every rank takes its piece of each global batch of `batch_size` images, draws its
    noise from generators seeded per (seed, epoch, step, rank), has its gradients averaged over
    the ranks at every backward pass, and records the step's numbers averaged over all images.
    """

    def __init__(
        self,
        model: GenerativeModel,
        train_data: ImageDataset | TokenDataset,
        test_data: ImageDataset | TokenDataset | None = None,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callback] = (),
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        start_epoch: int = 0,
        device: torch.device | None = None,
        progress: EpochProgress | None = None,
    ):
        self.config = config or TrainConfig()
        self.config.validate()
        self.device = device or distributed.rank_device(pick_device(self.config.device))
        self.model = model.to(self.device)
        self.precision = acceleration.resolve_precision(self.config.precision, self.device)
        self.channels_last = self.config.channels_last
        if self.channels_last is None:
            self.channels_last = self.device.type == "cuda" and acceleration.uses_convolutions(model)
        self.optimizers = optimizers or model.configure_optimizers()
        if self.channels_last:
            acceleration.to_channels_last(self.model, self.optimizers)
        if self.config.compile:
            acceleration.compile_networks(model.compile_targets())
        self.train_data = train_data.to(self.device)
        self.test_data = None if test_data is None else test_data.to(self.device)
        self.validation_data = self.test_data  # what `validate` measures: the test split, or the family's subset
        limit = model.validation_images
        if isinstance(self.test_data, ImageDataset) and limit is not None and len(self.test_data) > limit:
            chosen = torch.randperm(len(self.test_data), generator=torch.Generator().manual_seed(0))[:limit]
            self.validation_data = self.test_data.subset(chosen.sort().values)
        self.batch_size = self.config.batch_size or model.default_batch_size  # images a step, over all ranks
        distributed.check_batch_size(self.batch_size)
        self.averaging: distributed.GradientAveraging | None = None  # while fitting under a process group
        self.callbacks = list(callbacks)
        self.start_epoch = start_epoch
        self.epoch = start_epoch
        self.step = 0  # step within the current epoch
        # Where epoch start_epoch + 1 resumes, then the live progress of the current epoch.
        self.progress = progress or EpochProgress()
        self.stop_requested = False  # set by request_stop(): stop at the next step boundary
        self.stopped_cleanly = False  # True when training stopped at a step boundary on request
        self.history: list[dict[str, Any]] = []
        self.message = ""
        # A model used without genlab.train (which plans before writing run.json) hears the steps planned here.
        model.plan_steps(self.config.epochs * self.steps_per_epoch)

    @property
    def steps_per_epoch(self) -> int:
        # With N ranks a last batch of fewer than N images is left out (ImageDataset.batches' shard).
        n = len(self.train_data)
        return n // self.batch_size + int(n % self.batch_size >= distributed.world_size())

    def _step_images(self, step: int) -> int:
        """Images in global batch `step` (from 1) of an epoch, over all ranks."""
        return min(self.batch_size, len(self.train_data) - (step - 1) * self.batch_size)

    def _call(self, hook: str, *args) -> None:
        # Each callback runs with the generators put back afterwards: whatever it draws
        # (sample grids, metrics) never shifts the stream training sees, so resume stays exact.
        for callback in self.callbacks:
            with rng.preserved(self.device):
                getattr(callback, hook)(self, *args)

    def request_stop(self) -> None:
        """Stop after the step under way; `fit` then raises KeyboardInterrupt with `stopped_cleanly` set."""
        self.stop_requested = True

    @contextlib.contextmanager
    def _ctrl_c_stops_cleanly(self) -> Iterator[None]:
        """While training, a first Ctrl-C asks for a clean stop at the next step; a second one aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def on_sigint(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            if distributed.is_main_process():
                print("\nstopping after this step to save the run (Ctrl-C again to abort at once)", file=sys.stderr)
            self.request_stop()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def fit(self) -> list[dict[str, Any]]:
        """Train from `start_epoch` to `config.epochs`; return the new epochs' records.

        A non-finite loss stops training (TrainingDiverged); Ctrl-C (or `request_stop`) stops
        it at the next step boundary and raises KeyboardInterrupt with `stopped_cleanly` set,
        so callbacks can save a checkpoint inside the epoch. Callbacks hear the status first.
        """
        with self._ctrl_c_stops_cleanly(), self._data_parallel(), acceleration.tf32_on_cuda(self.device):
            return self._fit()

    @contextlib.contextmanager
    def _data_parallel(self) -> Iterator[None]:
        """Under a process group: rank 0's weights on every rank, then gradients averaged while training."""
        if not distributed.is_distributed():
            yield
            return
        distributed.broadcast_module(self.model)  # equal already (same seed or checkpoint); now surely
        try:
            with distributed.GradientAveraging(self.optimizers.values()) as self.averaging:
                yield
        finally:
            self.averaging = None

    def _fit(self) -> list[dict[str, Any]]:
        self._call("on_train_start")
        status = "failed"
        failing = True  # until the last epoch ends: an error in on_train_end must not hide the first one
        try:
            for epoch in range(self.start_epoch + 1, self.config.epochs + 1):
                self.epoch = epoch
                record = {"epoch": epoch, **self._train_epoch(epoch)}
                record.update(self._end_epoch())
                if self.test_data is not None and len(self.test_data) and self.config.validates(epoch):
                    record.update(self.validate())
                self.history.append(record)
                self._call("on_epoch_end", record)
            status, failing = "completed", False
        except TrainingDiverged as error:
            status, self.message = "diverged", str(error)
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            where = f"epoch {self.epoch}, step {self.progress.step}" if self.stopped_cleanly else f"epoch {self.epoch}"
            self.message = f"interrupted in {where}"
            raise
        except Exception as error:  # a bug or an environment problem: say so in run.json, keep the traceback
            self.message = f"failed in epoch {self.epoch}: {type(error).__name__}: {error}"
            raise
        finally:
            try:
                self._call("on_train_end", status)
            except Exception:
                if not failing:
                    raise
                # Recording the failure failed too (the same full disk, say): the first error tells what happened.
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self._call("on_epoch_start")
        order = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        progress = self.progress  # empty, or where a resumed run stopped inside this epoch
        rank = distributed.rank()
        batches = self.train_data.batches(
            self.batch_size, order, skip=progress.step, shard=(rank, distributed.world_size())
        )
        for self.step, (images, labels) in enumerate(batches, start=progress.step + 1):
            start = time.perf_counter()  # times the step alone: images/s leaves out callbacks and validation
            if self.averaging is not None:
                # Noise independent across ranks and a function of the step alone, so resume is exact anywhere.
                rng.seed(distributed.step_seed(self.config.seed, epoch, self.step, rank), self.device)
                self.averaging.share = len(images) / self._step_images(
                    self.step
                )  # per-image mean on a short last batch
            with acceleration.autocast(self.precision, self.device):
                metrics = self.model.training_step((self._prepared(images), labels), self.optimizers)
            # The global batch's numbers; with several ranks a stop asked for during this step's
            # callbacks travels with the next step's numbers, so every rank stops at the same step.
            metrics, count, stop = distributed.average_metrics(metrics, len(images), self.stop_requested)
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                kept = f"the weights of epoch {epoch - 1}" if epoch > 1 else "no weights (it never finished an epoch)"
                raise TrainingDiverged(
                    f"{bad[0]} became {metrics[bad[0]]} at epoch {epoch}, step {self.step}; the run keeps {kept}; "
                    "start a new run with a lower learning rate (--lr)"
                )
            progress.seconds += time.perf_counter() - start
            progress.step, progress.images_seen = self.step, progress.images_seen + count
            for key, value in metrics.items():
                progress.totals[key] = progress.totals.get(key, 0.0) + value * count
            self._call("on_step_end", metrics)
            if stop if self.averaging is not None else self.stop_requested:  # one process: callbacks' requests too
                self.stopped_cleanly = True
                raise KeyboardInterrupt
        distributed.broadcast_buffers(
            self.model
        )  # BatchNorm statistics: rank 0's on every rank, for validation and saving
        self.progress = EpochProgress()  # the next epoch starts from nothing
        record = {key: total / progress.images_seen for key, total in progress.totals.items()}
        return {"seconds": progress.seconds, "images_per_second": progress.images_seen / progress.seconds, **record}

    def _prepared(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the step takes it: floats in [0, 1], NHWC when training channels_last. A text batch
        (token windows of a TokenDataset) goes to the step as it is."""
        if isinstance(self.train_data, TokenDataset):
            return images
        x = to_unit(images)
        return acceleration.batch_channels_last(x) if self.channels_last else x

    @torch.no_grad()
    def _end_epoch(self) -> dict[str, float]:
        """The family's end-of-epoch fit (`GenerativeModel.end_epoch`) over the training set in a fixed order."""
        batches = (
            (self._prepared(images), labels)
            for images, labels in self.train_data.batches(self.batch_size, shuffle=False)
        )
        with eval_mode(self.model), rng.preserved(self.device):
            return self.model.end_epoch(batches)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The family's validation numbers over the whole test set, under a fixed RNG."""
        assert self.validation_data is not None, "validate() needs test data"
        totals: dict[str, float] = {}
        with eval_mode(self.model), rng.preserved(self.device):
            torch.manual_seed(self.config.seed)
            for images, labels in self.validation_data.batches(max(self.batch_size, 500), shuffle=False):
                with acceleration.autocast(self.precision, self.device):
                    numbers = self.model.validation_step((self._prepared(images), labels))
                for key, value in numbers.items():
                    totals[key] = totals.get(key, 0.0) + value * len(images)
        return {key: total / len(self.validation_data) for key, total in totals.items()}
