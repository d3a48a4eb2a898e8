"""`genlab.train`: one call from a model name and a dataset to a finished run directory."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.data import ImageDataset, load_dataset
from genlab.errors import GenlabError
from genlab.models import build_model
from genlab.run import (
    STATE_FILE,
    Run,
    is_run_dir,
    load_checkpoint,
    model_from_info,
    new_run_info,
    read_run_info,
    save_model,
    truncate_history,
    write_run_info,
)
from genlab.training.callbacks import ProgressBar, RunWriter, SampleGrids
from genlab.training.trainer import Callback, EpochProgress, TrainConfig, Trainer, pick_device


def train(
    model: str | None = None,
    data: str | ImageDataset | None = None,
    out: str | Path | None = None,
    *,
    epochs: int = 20,
    batch_size: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    size: int | tuple[int, int] | None = None,
    test_data: ImageDataset | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    sample_every: int = 1,
    callbacks: Sequence[Callback] = (),
    model_config: dict[str, Any] | None = None,
) -> Run:
    """Train family `model` on `data` into the run directory `out` and return the loaded Run.

    `data` is a dataset name ("mnist-5k", "folder:PATH", ...) whose train split is used for
    training and test split for validation, or an ImageDataset (then pass `test_data` for
    validation). `resume=True` continues the run at `out` exactly where its last epoch
    ended, with its stored settings; only `epochs` (the new total) may change.
    Nothing at `out` is touched until every input has been checked.
    """
    out = Path(out if out is not None else f"runs/{model or 'run'}")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=0 if seed is None else seed, device=device)
    config.validate()
    if resume:
        info = _resumable_info(out, model, data, batch_size, seed, model_config)
        data, size = info["data"]["spec"], info["data"]["size"]
        config = dataclasses.replace(config, batch_size=info["train"]["batch_size"], seed=info["train"]["seed"])
    elif is_run_dir(out) or (out.exists() and any(out.iterdir())):
        if not overwrite:
            raise GenlabError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if model is None and not resume:
        raise GenlabError("name a model family to train, e.g. `genlab train vae`")
    if data is None:
        raise GenlabError("name the data to train on, e.g. --data mnist-5k")

    train_data, test_data, data_info = _load_data(data, size, test_data)
    run_device = pick_device(device)
    torch.manual_seed(config.seed)  # the initial weights depend on the seed only
    if resume:
        network = model_from_info(info)
    else:
        network = build_model(model, train_data, model_config)
        config = dataclasses.replace(config, batch_size=config.batch_size or network.default_batch_size)
        info = new_run_info(
            network, data_info, {"epochs": config.epochs, "batch_size": config.batch_size, "seed": config.seed}
        )
    network.to(run_device)
    optimizers = network.configure_optimizers()

    start_epoch, epoch_progress = 0, None
    if resume:
        for debris in out.glob(".*.tmp"):  # atomic writes cut off by a crash
            debris.unlink()
        if (out / STATE_FILE).exists():
            start_epoch, epoch_progress = load_checkpoint(out, network, optimizers)
        if epoch_progress and config.epochs <= start_epoch:
            raise GenlabError(
                f"{out} stopped inside epoch {start_epoch + 1}; resume with --epochs {start_epoch + 1} or more"
            )
        truncate_history(out, start_epoch)
        info.update(epochs_completed=start_epoch)
        info["train"]["epochs"] = config.epochs
    else:
        if out.exists() and overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)

    if start_epoch >= config.epochs:  # nothing left to train: make sure the run is whole
        if start_epoch:
            save_model(out, network, start_epoch)
        info.update(status="completed", message=f"already trained for {start_epoch} epochs")
        write_run_info(out, info)
        return Run.load(out, device=run_device)

    standard = [RunWriter(out, info), SampleGrids(out, every=sample_every, seed=config.seed)]
    trainer = Trainer(
        network, train_data, test_data, config,
        callbacks=standard + ([ProgressBar()] if progress else []) + list(callbacks),
        optimizers=optimizers, start_epoch=start_epoch, device=run_device,
        progress=EpochProgress.from_dict(epoch_progress) if epoch_progress else None,
    )
    trainer.fit()
    return Run.load(out, device=run_device)


def _resumable_info(out: Path, model, data, batch_size, seed, model_config) -> dict[str, Any]:
    """run.json of the run to resume, checked against what the caller asked for."""
    if not is_run_dir(out):
        raise GenlabError(f"there is no run to resume at {out} (no run.json); drop --resume to start one")
    info = read_run_info(out)
    stored = info["model"]
    conflicts = []
    if model is not None and model != stored["name"]:
        conflicts.append(f"model {model} (the run is a {stored['name']})")
    if isinstance(data, str) and data != info["data"]["spec"]:
        conflicts.append(f"data {data} (the run uses {info['data']['spec']})")
    if batch_size is not None and batch_size != info["train"]["batch_size"]:
        conflicts.append(f"batch size {batch_size} (the run uses {info['train']['batch_size']})")
    if seed is not None and seed != info["train"]["seed"]:
        conflicts.append(f"seed {seed} (the run uses {info['train']['seed']})")
    for key, value in (model_config or {}).items():
        if str(stored["config"].get(key.replace("-", "_"))) != str(value):
            conflicts.append(f"{key}={value} (the run has {stored['config'].get(key.replace('-', '_'))})")
    if conflicts:
        raise GenlabError(f"a resumed run keeps its settings; drop these or start a new run: {'; '.join(conflicts)}")
    return info


def _load_data(data, size, test_data) -> tuple[ImageDataset, ImageDataset | None, dict[str, Any]]:
    if isinstance(data, ImageDataset):
        train_data = data
    else:
        train_data = load_dataset(data, split="train", size=size)
        test_data = load_dataset(data, split="test", size=size)
    info = {
        "spec": train_data.name if isinstance(data, ImageDataset) else data,
        "size": list(size) if isinstance(size, tuple) else size,
        "train_images": len(train_data),
        "test_images": 0 if test_data is None else len(test_data),
    }
    return train_data, test_data, info
