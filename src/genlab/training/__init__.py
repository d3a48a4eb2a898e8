"""The model-agnostic training loop, its callbacks, and the `train` entry point."""

from genlab.training.api import train
from genlab.training.callbacks import ProgressBar, RunWriter, SampleGrids
from genlab.training.trainer import Callback, EpochProgress, TrainConfig, Trainer, pick_device

__all__ = [
    "Callback",
    "EpochProgress",
    "ProgressBar",
    "RunWriter",
    "SampleGrids",
    "TrainConfig",
    "Trainer",
    "pick_device",
    "train",
]
