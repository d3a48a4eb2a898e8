"""The torch-free names `genlab --help` lists equal the registries they mirror."""

from __future__ import annotations

import dataclasses

from genlab import names
from genlab.cli import build_parser
from genlab.models import MODELS
from genlab.models.base import HasSamplerOptions
from genlab.models.ddpm import SAMPLERS


def test_family_names_are_the_model_registry():
    assert names.FAMILIES == tuple(MODELS)


def test_sampler_names_are_the_diffusion_sampler_registry():
    assert names.DIFFUSION_SAMPLERS == tuple(SAMPLERS)


def test_ema_families_are_those_whose_config_has_an_ema_field():
    with_ema = tuple(
        name for name, family in MODELS.items() if "ema" in {f.name for f in dataclasses.fields(family.config_class)}
    )
    assert names.EMA_FAMILIES == with_ema


def test_sampler_flags_are_every_declared_sampler_option():
    declared = {
        option.name
        for family in MODELS.values()
        if issubclass(family, HasSamplerOptions)
        for option in family.sampler_options
    }
    assert set(names.SAMPLER_OPTIONS) == declared


def test_train_help_names_every_family():
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    text = train.format_help()
    assert all(family in text for family in MODELS)
