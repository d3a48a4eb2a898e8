"""The run directory: a documented, stable format for one training run.

    runs/NAME/
      run.json           format version, genlab version, model name + config, data, train config, status
      model.safetensors  weights for sampling (metadata: family, epoch)
      state.safetensors  everything needed to resume exactly, as ONE atomic file: the weights,
                         every optimizer's state and the RNG state at the end of an epoch
      history.jsonl      one JSON object per epoch
      samples/           epoch_0001.png ... grids from a fixed noise seed

state.safetensors carries its own copy of the weights so that a crash between writing the
two files can never pair weights of one epoch with optimizer state of another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab import rng
from genlab.data.transforms import binarize
from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes, atomic_write_json, load_tensors, read_json, refuse_pickle, save_tensors
from genlab.models import DataSpec, GenerativeModel, build_model, families_with, make_config
from genlab.models.base import CanComplete, HasLatentSpace, HasSamplerOptions, ShowsSamplingChain, flag_list

FORMAT_VERSION = 1
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"  # written by `genlab eval`, read by report and compare
SAMPLES_DIR = "samples"
LOCK_FILE = ".lock"


# Keys run.json must have, as paths into its JSON object.
REQUIRED_KEYS = (
    ("model", "name"),
    ("model", "config"),
    ("data", "spec"),
    ("data", "shape"),
    ("train", "epochs"),
    ("train", "batch_size"),
    ("train", "seed"),
    ("status",),
    ("epochs_completed",),
)


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the run at `path` (its .lock file) while training it.

    A second `genlab train` on the same run (say, two --resume at once) is refused instead
    of two writers interleaving their checkpoints. Where there is no fcntl (Windows), no lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(Path(path) / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GenlabError(f"another genlab process is training {path}; wait for it or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a folder holding a run.json."""
    return (Path(path) / RUN_FILE).is_file()


def read_run_info(path: str | Path) -> dict[str, Any]:
    """Parse and check run.json of the run at `path`."""
    path = Path(path)
    if path.is_file():
        refuse_pickle(path)
        raise GenlabError(f"{path} is a file; give the run directory that holds {RUN_FILE} and {MODEL_FILE}")
    if not path.is_dir():
        raise GenlabError(f"{path} does not exist: give a run directory written by `genlab train`")
    info = read_json(path / RUN_FILE, "the run's description")
    if not isinstance(info, dict) or info.get("format") != "genlab-run":
        raise GenlabError(f"{path / RUN_FILE} is not a genlab run description")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise GenlabError(
            f"{path} was written by a newer genlab (run format {info['format_version']}, this one reads "
            f"{FORMAT_VERSION}); upgrade genlab to read it"
        )
    for keys in REQUIRED_KEYS:
        value = info
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise GenlabError(f"{path / RUN_FILE} lacks {'.'.join(keys)}: the run description is incomplete")
            value = value[key]
    return info


def new_run_info(model: GenerativeModel, data: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """run.json of a fresh run: enough to rebuild the model without any command-line flags."""
    return {
        "format": "genlab-run",
        "format_version": FORMAT_VERSION,
        "genlab_version": genlab.__version__,
        "model": {"name": model.family, "config": dataclasses.asdict(model.config)},
        "data": {**data, "shape": model.data.to_dict()},
        "train": train,
        "status": "running",
        "epochs_completed": 0,
        "message": "",
    }


def write_run_info(path: str | Path, info: dict[str, Any]) -> None:
    """Write run.json atomically."""
    atomic_write_json(Path(path) / RUN_FILE, info)


def model_from_info(info: dict[str, Any]) -> GenerativeModel:
    """Rebuild the (untrained) model that run.json describes."""
    name = info["model"]["name"]
    config = make_config(name, info["model"]["config"])
    return build_model(name, DataSpec.from_dict(info["data"]["shape"]), config)


# ---------------------------------------------------------------- weights and training state


def save_model(path: str | Path, model: GenerativeModel, epoch: int, step: int = 0) -> None:
    """model.safetensors: the weights after `epoch` whole epochs and `step` steps of the next."""
    metadata = {"format": "genlab-model", "family": model.family, "epoch": epoch, "step": step}
    save_tensors(Path(path) / MODEL_FILE, model.state_dict(), metadata)


def load_model_weights(model: GenerativeModel, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load `tensors` into `model`, with one clear error when they belong to another model."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        detail = (
            (missing and f"missing {missing[:3]}")
            or (unexpected and f"unexpected {unexpected[:3]}")
            or f"wrong shape {wrong_shape[:3]}"
        )
        raise GenlabError(f"{source} does not hold the weights of the {model.family} model in run.json ({detail})")
    model.load_state_dict(tensors)


def save_checkpoint(
    path: str | Path,
    model: GenerativeModel,
    optimizers: dict[str, torch.optim.Optimizer],
    epoch: int,
    progress: dict[str, Any] | None = None,
) -> None:
    """Write state.safetensors (resume) and then model.safetensors (sampling), each atomically.

    `epoch` is the number of whole epochs done; `progress` (a trainer's EpochProgress as a
    dict) marks a stop inside the next epoch, at a step boundary.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    metadata: dict[str, Any] = {"format": "genlab-state", "epoch": epoch, "progress": progress, "optimizers": {}}
    for name, optimizer in optimizers.items():
        state_tensors, state_json = _flatten_optimizer_state(optimizer.state_dict())
        tensors.update({f"optimizer.{name}.{k}": v for k, v in state_tensors.items()})
        metadata["optimizers"][name] = state_json
    device = next(model.parameters()).device
    tensors.update({f"rng.{kind}": state for kind, state in rng.capture(device).items()})
    save_tensors(Path(path) / STATE_FILE, tensors, metadata)
    save_model(path, model, epoch, progress["step"] if progress else 0)


def load_checkpoint(
    path: str | Path, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer]
) -> tuple[int, dict[str, Any] | None]:
    """Restore weights, optimizer state and RNG state from state.safetensors.

    Returns (whole epochs done, progress inside the next epoch or None).
    """
    source = Path(path) / STATE_FILE
    tensors, metadata = load_tensors(source, "training state")
    if metadata.get("format") != "genlab-state":
        raise GenlabError(f"{source} is not a genlab training state")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_model_weights(model, weights, source)
    for name, optimizer in optimizers.items():
        prefix = f"optimizer.{name}."
        state_tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if name not in metadata["optimizers"]:
            raise GenlabError(f"{source} has no state for optimizer {name!r}")
        optimizer.load_state_dict(_unflatten_optimizer_state(state_tensors, metadata["optimizers"][name]))
    if "rng.cpu" not in tensors:
        raise GenlabError(f"{source} has no random-number state; it cannot resume exactly")
    states = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    rng.restore(states, next(model.parameters()).device)  # a state from another device kind is ignored
    return int(metadata["epoch"]), metadata.get("progress")


def _flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors ("state.<param>.<key>") and JSON for the rest."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value
            else:
                plain.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], state_json: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in state_json["plain_state"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": state_json["param_groups"]}


# ---------------------------------------------------------------- history


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of history.jsonl, oldest first; a last line cut off by a crash is left out."""
    file = Path(path) / HISTORY_FILE
    if not file.exists():
        return []
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # an append cut off by a crash: that epoch was never checkpointed
                break
            raise GenlabError(f"{file} line {number} is not valid JSON: the history is corrupt") from None
    return records


def append_history(path: str | Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to history.jsonl and fsync it."""
    with open(Path(path) / HISTORY_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def truncate_history(path: str | Path, epochs: int) -> None:
    """Keep the history of the first `epochs` epochs (a resumed run redoes the rest)."""
    kept = [r for r in read_history(path) if r["epoch"] <= epochs]
    atomic_write_bytes(Path(path) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in kept).encode())


# ---------------------------------------------------------------- the loaded run


def check_sampler_options(model: GenerativeModel, options: dict[str, Any]) -> dict[str, Any]:
    """The sampler options (e.g. --sampler, --guidance) as the family declares them; a family that declares
    none refuses any, naming the families that take them."""
    if isinstance(model, HasSamplerOptions):
        return model.check_sampler_options(options)
    if options:
        takers = families_with(HasSamplerOptions)
        raise GenlabError(
            f"the {model.family} family samples without {flag_list(list(options))}; "
            f"only {', '.join(takers)} models take sampler options"
        )
    return {}


class Run:
    """A finished (or interrupted) run, loaded for sampling and inspection."""

    def __init__(self, path: str | Path, info: dict[str, Any], model: GenerativeModel):
        self.path = Path(path)
        self.info = info
        self.model = model

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Run:
        """Read run.json, rebuild the model and load model.safetensors (never unpickles)."""
        info = read_run_info(path)
        model = model_from_info(info)
        source = Path(path) / MODEL_FILE
        if not source.exists():
            if info["status"] == "running":
                raise GenlabError(f"{path} has no {MODEL_FILE} yet: it is still in its first epoch; wait for it to end")
            raise GenlabError(
                f"{path} has no {MODEL_FILE}: the run stopped ({info['status']}) before its first epoch ended; "
                f"continue it with: genlab train --resume --out {path}"
            )
        tensors, metadata = load_tensors(source, "model checkpoint")
        if metadata.get("family") not in (None, model.family):
            raise GenlabError(f"{source} holds a {metadata['family']} model but run.json describes a {model.family}")
        load_model_weights(model, tensors, source)
        return cls(path, info, model.to(device).eval())

    @property
    def family(self) -> str:
        """The model family's registry name, e.g. "vae"."""
        return self.model.family

    def data_spec(self) -> tuple[str, Any]:
        """(data spec, size) the run was trained on, to load its splits again; a dataset given in memory has none."""
        data = self.info["data"]
        if data.get("in_memory"):
            raise GenlabError(f"{self.path} was trained on a dataset in memory; name the data to compare with (--data)")
        return data["spec"], data.get("size")

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of history.jsonl."""
        return read_history(self.path)

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels=None, batch_size: int | None = None, **options
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] on the CPU, drawn `batch_size` at a time (default: the
        family's `sample_batch_size`, 1,000; a diffusion model on the CPU 64).

        `labels` (conditional models): one class for all, or one per image; by default the
        classes in turn. The same generator seed gives the same images for any batch size
        that divides the draws the same way (keep the default to reproduce a file).
        `options` go to the family's sampler (diffusion: sampler, steps, eta, guidance).
        """
        options = check_sampler_options(self.model, options)
        self._check_size(n)
        labels = self.model.check_labels(n, labels)
        batch_size = batch_size or self.model.sample_batch_size
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                part = None if labels is None else labels[start : start + batch_size]
                count = min(batch_size, n - start)
                chunks.append(self.model.sample(count, generator=generator, labels=part, **options).cpu())
        return torch.cat(chunks)

    def sample_chain(
        self, n: int, every: int, generator: torch.Generator | None = None, labels=None, **options
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The sampler's chain for n images, a state every `every` steps from the start to the image:
        (n * states, C, H, W) on the CPU, one row of states per image, their labels, and states per row."""
        model = self.model
        if not isinstance(model, ShowsSamplingChain):
            showing = families_with(ShowsSamplingChain)
            raise GenlabError(
                f"the {self.family} family does not draw through a chain of images; "
                f"--trajectory needs a {' or '.join(showing)} run"
            )
        options = check_sampler_options(model, options)
        self._check_size(n)
        labels = model.check_labels(n, labels)
        with torch.no_grad():
            _, chain = model.sample_chain(n, every, generator=generator, labels=labels, **options)
        images = torch.stack(chain, dim=1).flatten(0, 1).cpu()  # (n * states, C, H, W): one row per image
        return images, None if labels is None else labels.cpu().repeat_interleave(len(chain)), len(chain)

    def interpolate(
        self, strips: int, steps: int, generator: torch.Generator | None = None, labels=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`strips` latent interpolations of `steps` images each: images (strips*steps, C, H, W) and their labels."""
        model = self.model
        if not isinstance(model, HasLatentSpace):
            raise GenlabError(f"the {self.family} family has no latent space to interpolate in")
        self._check_size(strips * steps)
        labels = model.check_labels(strips, labels)
        with torch.no_grad():
            images = torch.cat(
                [
                    model.interpolate(steps, generator, None if labels is None else labels[i]).cpu()
                    for i in range(strips)
                ]
            )
        return images, None if labels is None else labels.cpu().repeat_interleave(steps)

    def complete(
        self,
        image: torch.Tensor,
        rows: int,
        n: int,
        generator: torch.Generator | None = None,
        labels=None,
        batch_size: int = 1000,
    ) -> torch.Tensor:
        """n completions (n, C, H, W) of one image (C, H, W) in [0, 1] that keep its top `rows` rows.

        Autoregressive families only (they draw pixel by pixel, so the rest follows the kept rows).
        A conditional model needs the image's class as `labels`; a binarizing one sees the image
        binarized once with `generator`.
        """
        model = self.model
        if not isinstance(model, CanComplete):
            completers = families_with(CanComplete)
            raise GenlabError(
                f"a {self.family} run cannot complete an image (it does not draw pixel by pixel); "
                f"use a {' or '.join(completers)} run"
            )
        self._check_size(n)
        if model.conditional and labels is None:
            raise GenlabError("a conditional model completes an image of a known class: pass its label (--labels K)")
        labels = model.check_labels(n, labels)
        image = image.to(model.device, torch.float32)
        if model.binary_pixels:
            image = binarize(image, generator)  # the model knows only 0/1 pixels: one seeded binarization
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                part = None if labels is None else labels[start : start + count]
                chunks.append(
                    model.complete(image.expand(count, *image.shape), rows, generator=generator, labels=part).cpu()
                )
        return torch.cat(chunks)

    def _check_size(self, n: int) -> None:
        gigabytes = n * self.model.data.num_pixels * 4 / 1e9  # float32 images
        if gigabytes > 4:
            raise GenlabError(f"{n:,} images would take {gigabytes:.0f} GB of memory; draw fewer at a time")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, family={self.family!r}, epochs={self.info.get('epochs_completed')})"
