"""How much memory a model will take, counted before any weight is allocated (a model built on the
meta device), so that a setting too large for this machine is refused with its estimate."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch.nn import init
from torch.overrides import TorchFunctionMode

from genlab.errors import GenlabError
from genlab.memory import check_fits
from genlab.models.base import DataSpec, GenerativeModel, TokenSpec

# torch.nn.init's in-place initializers (kaiming_uniform_, normal_, zeros_ ...), which SkipFills skips.
INITIALIZERS = {value for key, value in vars(init).items() if key.endswith("_") and not key.startswith("_")}


class SkipFills(TorchFunctionMode):
    """Skips the initializers (torch.nn.init's functions, Tensor.normal_) while a model is built on the meta
    device: a meta tensor holds no values to fill, and a meta normal_ would import torch's compiler (seconds)
    into a process that only samples."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.normal_ or func in INITIALIZERS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def footprint(
    name: str, family: type[GenerativeModel], spec: DataSpec | TokenSpec, config: Any
) -> tuple[int, int, int]:
    """(parameters, bytes to train, bytes to hold) of `family` built with `config` for `spec`, counted on a
    model built on the meta device: no memory is allocated, and torch's global RNG is left as it was, so
    the real build draws the same initial weights.

    Training holds each trainable parameter four times (weight, gradient, Adam's two moments) and each
    frozen parameter (an EMA copy) and buffer once; holding the model to sample from, each once.
    """
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), SkipFills():
            model = family(config, spec)  # type: ignore[arg-type]  # a text family is built for a TokenSpec
    except (RuntimeError, TypeError, OverflowError) as error:
        if "overflow" not in str(error).lower():
            raise
        raise GenlabError(
            f"{name} with {_settings(family, config) or 'these settings'} asks for tensors too large to describe; "
            "make the model smaller (--set)"
        ) from None
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    trained = sum(p.numel() * p.element_size() * (4 if p.requires_grad else 1) for p in model.parameters())
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    return parameters, trained + buffers, held + buffers


def check_model_fits(
    name: str, family: type[GenerativeModel], spec: DataSpec | TokenSpec, config: Any, *, training: bool = True
) -> None:
    """Refuse, before any weight is allocated, a model that would not fit in this machine's memory, for training
    (weights, gradients, Adam's moments) or, with `training=False`, to hold for sampling."""
    parameters, trained, held = footprint(name, family, spec, config)
    changed = _settings(family, config)
    images = spec.describe()
    check_fits(
        trained if training else held,
        f"training the {name} model ({parameters:,} parameters for {images}: "
        "weights, gradients, Adam's two moments and EMA copies)"
        if training
        else f"holding the {name} model ({parameters:,} parameters for {images})",
        f"make the model smaller than {changed} (--set)"
        if changed
        else "use smaller images (--size) or settings (--set)",
    )


def _settings(family: type[GenerativeModel], config: Any) -> str:
    """The fields of `config` that differ from the family's defaults, as "key=value" (the first three)."""
    default = dataclasses.asdict(family.config_class())
    changed = [f"{key}={value}" for key, value in dataclasses.asdict(config).items() if default.get(key) != value]
    return ", ".join(changed[:3])
