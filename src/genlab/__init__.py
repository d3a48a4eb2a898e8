"""genlab: train, sample, evaluate and explain generative models of images in PyTorch.

    import genlab
    train, test = genlab.load_dataset("mnist-5k"), genlab.load_dataset("mnist-5k", split="test")
    run = genlab.train("vae", "mnist-5k", out="runs/vae", epochs=20, seed=0)
    images = genlab.Run.load("runs/vae").sample(64, generator=torch.Generator().manual_seed(1))
    run = genlab.load("zoo:ddpm-mnist5k")       # a pretrained model shipped with genlab (`genlab zoo` lists them)
    print(genlab.evaluate("runs/vae").table())   # FID, precision/recall ... beside the real-vs-real floor

Names are imported on first use, so `import genlab` (and `genlab --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_dataset": "genlab.data",
    "ImageDataset": "genlab.data",
    "dataset_catalog": "genlab.data",
    "build_model": "genlab.models",
    "MODELS": "genlab.models",
    "DataSpec": "genlab.models",
    "train": "genlab.training.api",
    "TrainConfig": "genlab.training.trainer",
    "Trainer": "genlab.training.trainer",
    "Run": "genlab.run",
    "load": "genlab.run",
    "evaluate": "genlab.eval.evaluate",
    "likelihoods": "genlab.eval.likelihood",
    "explain_model": "genlab.explain.pipeline",
    "explain_run": "genlab.explain.pipeline",
    "report": "genlab.explain.report",
    "compare": "genlab.explain.compare",
    "GenlabError": "genlab.errors",
}

if TYPE_CHECKING:
    from genlab.data import ImageDataset, dataset_catalog, load_dataset
    from genlab.errors import GenlabError
    from genlab.eval.evaluate import evaluate
    from genlab.eval.likelihood import likelihoods
    from genlab.explain.compare import compare
    from genlab.explain.pipeline import explain_model, explain_run
    from genlab.explain.report import report
    from genlab.models import MODELS, DataSpec, build_model
    from genlab.run import Run, load
    from genlab.training.api import train
    from genlab.training.trainer import TrainConfig, Trainer


_SUBMODULES = (
    "data", "models", "training", "eval", "explain", "run", "io", "images", "rng", "errors", "cli", "zoo", "export"
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # `import genlab; genlab.data.load_dataset(...)` works too
        return importlib.import_module(f"genlab.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genlab' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [  # the names of _EXPORTS (tests/test_api.py checks they agree)
    "DataSpec",
    "GenlabError",
    "ImageDataset",
    "MODELS",
    "Run",
    "TrainConfig",
    "Trainer",
    "build_model",
    "compare",
    "dataset_catalog",
    "evaluate",
    "explain_model",
    "explain_run",
    "likelihoods",
    "load",
    "load_dataset",
    "report",
    "train",
]
