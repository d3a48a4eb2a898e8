"""Model families, one package each, and the registry that builds them by name.

What every family does is `GenerativeModel` (base.py); what only some do is a capability they
inherit (`HasLikelihood`, `HasLatentSpace`, `HasEncoder`, `CanReconstruct`, `CanComplete`,
`HasSamplerOptions`, `ShowsSamplingChain`), checked with isinstance. docs/architecture.md has the map.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from genlab.errors import GenlabError
from genlab.models.base import (
    CanComplete,
    CanReconstruct,
    DataSpec,
    GeneratesText,
    GenerativeModel,
    HasEncoder,
    HasLatentSpace,
    HasLikelihood,
    HasSamplerOptions,
    SamplerOption,
    ShowsSamplingChain,
    TokenSpec,
    spec_of,
)
from genlab.models.ddpm import DDPM, DDPMConfig
from genlab.models.footprint import check_model_fits
from genlab.models.gan import DCGAN, GAN, WGANGP, DCGANConfig, GANConfig, WGANGPConfig
from genlab.models.gpt import GPTConfig, GPTModel
from genlab.models.pixelcnn import PixelCNN, PixelCNNConfig
from genlab.models.realnvp import RealNVP, RealNVPConfig
from genlab.models.vae import VAE, VAEConfig

MODELS: dict[str, type[GenerativeModel]] = {
    "vae": VAE,
    "gan": GAN,
    "dcgan": DCGAN,
    "wgan-gp": WGANGP,
    "ddpm": DDPM,
    "pixelcnn": PixelCNN,
    "realnvp": RealNVP,
    "gpt": GPTModel,
}


def model_class(name: str) -> type[GenerativeModel]:
    """The family class registered under `name`."""
    try:
        return MODELS[name]
    except KeyError:
        raise GenlabError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None


def is_text_family(name: str) -> bool:
    """Whether family `name` writes text (GeneratesText) rather than drawing images."""
    return issubclass(model_class(name), GeneratesText)


def image_families() -> list[str]:
    """The registry names of the families that draw images: every family but the text ones."""
    return [name for name in MODELS if not is_text_family(name)]


def families_with(capability: type) -> list[str]:
    """Registry names of the families that declare `capability`, for messages that say which can."""
    return [name for name, family in MODELS.items() if issubclass(family, capability)]


def families_taking(options: typing.Iterable[str]) -> list[str]:
    """Registry names of the families whose sampler declares any of `options` (by keyword name), for messages."""
    wanted = set(options)
    takers = []
    for name, family in MODELS.items():
        declared: tuple[SamplerOption, ...] = ()
        if issubclass(family, HasSamplerOptions):
            declared = family.sampler_options  # type: ignore[assignment]  # a class attribute, declared abstractly
        if any(option.name in wanted for option in declared):
            takers.append(name)
    return takers


def make_config(name: str, overrides: dict[str, Any] | None = None):
    """The family's config dataclass with `overrides` applied (strings are parsed to the field's type)."""
    config_class = model_class(name).config_class
    hints = typing.get_type_hints(config_class)
    fields = [f.name for f in dataclasses.fields(config_class)]
    values = {}
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key not in fields:
            raise GenlabError(f"{name} has no setting {key!r}; its settings are: {', '.join(fields)}")
        values[key] = _parse(key, value, hints[key])
    return config_class(**values)


def stored_config(name: str, stored: dict[str, Any]):
    """The config a run.json records, read back: a setting it lacks (added to genlab after the run was
    written) takes the value the family had before the setting existed (its
    model class's `absent_in_older_runs`), not today's default, so an older run rebuilds as the model it was."""
    return make_config(name, {**model_class(name).absent_in_older_runs, **stored})


def _parse(key: str, value: Any, hint: Any) -> Any:
    """Parse a command-line string by the field's annotation: bool, int, float, str, X | None, tuple[X, ...]."""
    if not isinstance(value, str):
        return value
    options = [h for h in typing.get_args(hint) if h is not type(None)] if _is_optional(hint) else [hint]
    if len(options) != 1:
        raise GenlabError(f"setting {key} has a type genlab cannot parse from text: {hint}")
    kind = options[0]
    if _is_optional(hint) and value.lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            return tuple(_parse(key, part.strip(), item) for part in value.split(",") if part.strip())
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise GenlabError(f"setting {key}={value!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def _is_optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def build_model(name: str, data, config=None, *, training: bool = True, **overrides) -> GenerativeModel:
    """Build family `name` for `data` (a DataSpec or an ImageDataset; a TokenSpec or a TokenDataset for text).

    `config` is the family's config dataclass (or a dict of its fields); keyword
    `overrides` change single fields, e.g. ``build_model("vae", ds, arch="conv")``. Built for a dataset, the
    fields it leaves out take the family's `data_defaults` for that dataset's size where it has any. Before any
    weight is allocated the model's memory is estimated and refused when it does not fit: for
    training (`training=True`: weights, gradients, Adam's moments) or for sampling (weights only).
    """
    spec = spec_of(data)
    text_family, text_data = is_text_family(name), isinstance(spec, TokenSpec)
    if text_family != text_data:
        wants = "text (--data fortunes or text:PATH)" if text_family else "images"
        raise GenlabError(f"the {name} family learns from {wants}, not {spec.describe()}")
    if config is None or isinstance(config, dict):
        # a dataset (not a bare spec) has a size: the family's defaults for data of that size go under the settings
        sized = (
            model_class(name).data_defaults(spec, len(data)) if data is not spec and isinstance(spec, DataSpec) else {}
        )
        config = make_config(name, {**sized, **(config or {}), **overrides})
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    check_model_fits(name, model_class(name), spec, config, training=training)
    return model_class(name)(config, spec)  # type: ignore[arg-type]  # a text family is built for a TokenSpec


__all__ = [
    "DCGAN",
    "DDPM",
    "GAN",
    "MODELS",
    "VAE",
    "WGANGP",
    "CanComplete",
    "CanReconstruct",
    "DCGANConfig",
    "DDPMConfig",
    "DataSpec",
    "GANConfig",
    "GPTConfig",
    "GPTModel",
    "GenerativeModel",
    "GeneratesText",
    "HasEncoder",
    "HasLatentSpace",
    "HasLikelihood",
    "HasSamplerOptions",
    "PixelCNN",
    "PixelCNNConfig",
    "RealNVP",
    "RealNVPConfig",
    "SamplerOption",
    "ShowsSamplingChain",
    "TokenSpec",
    "VAEConfig",
    "WGANGPConfig",
    "build_model",
    "check_model_fits",
    "families_with",
    "image_families",
    "is_text_family",
    "make_config",
    "model_class",
    "spec_of",
    "training_footprint",
]
