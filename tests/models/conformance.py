"""The family contract, as tests every model family inherits (like diffusers' ModelTesterMixin).

A family's test module subclasses `FamilyConformance`, names the family and the settings
to test, and gets every check below for free.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch

from genlab.errors import GenlabError
from genlab.models import DataSpec, build_model, model_class
from genlab.models.base import (
    CanComplete, CanReconstruct, HasEncoder, HasLatentSpace, HasLikelihood, HasSamplerOptions, ShowsSamplingChain,
)
from genlab.run import load_model_weights
from genlab.io import load_tensors, save_tensors


class FamilyConformance:
    family: str = ""
    settings: dict = {}
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))

    def make_model(self, seed: int = 0):
        torch.manual_seed(seed)
        return build_model(self.family, self.spec, dict(self.settings))

    def make_batch(self, n: int = 16, seed: int = 0):
        """n images (n, C, H, W) in [0, 1]: one binary prototype per class, so there is structure to learn."""
        g = torch.Generator().manual_seed(seed)
        prototypes = torch.bernoulli(torch.full((self.spec.num_classes, *self.spec.image_shape), 0.5), generator=g)
        labels = torch.randint(0, self.spec.num_classes, (n,), generator=g)
        return prototypes[labels] * 0.9 + 0.05, labels

    def test_sample_shape_and_range(self):
        images = self.make_model().eval().sample(5, generator=torch.Generator().manual_seed(0))
        assert images.shape == (5, *self.spec.image_shape)
        assert images.dtype == torch.float32
        assert 0.0 <= images.min().item() and images.max().item() <= 1.0

    def test_no_samples_is_an_empty_batch(self):
        images = self.make_model().eval().sample(0, generator=torch.Generator().manual_seed(0))
        assert images.shape == (0, *self.spec.image_shape) and images.dtype == torch.float32

    def test_sample_is_deterministic_under_a_generator(self):
        model = self.make_model().eval()
        first = model.sample(4, generator=torch.Generator().manual_seed(7))
        again = model.sample(4, generator=torch.Generator().manual_seed(7))
        other = model.sample(4, generator=torch.Generator().manual_seed(8))
        assert torch.equal(first, again)
        assert not torch.equal(first, other)

    def test_sampling_leaves_the_global_rng_alone(self):
        model = self.make_model().eval()
        state = torch.get_rng_state()
        model.sample(3, generator=torch.Generator().manual_seed(0))
        assert torch.equal(state, torch.get_rng_state())

    def test_same_seed_same_weights(self):
        a, b = self.make_model(seed=3), self.make_model(seed=3)
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name

    def test_training_step_returns_finite_floats_and_updates_weights(self):
        model = self.make_model()
        before = [p.detach().clone() for p in model.parameters()]
        metrics = model.training_step(self.make_batch(), model.configure_optimizers())
        assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
        assert any(changed)

    def test_training_loss_falls_on_a_fixed_batch(self):
        model = self.make_model()
        optimizers = model.configure_optimizers()
        batch = self.make_batch(32)
        losses = [model.training_step(batch, optimizers)["loss"] for _ in range(60)]
        assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5

    def test_validation_step_returns_finite_floats(self):
        metrics = self.make_model().eval().validation_step(self.make_batch())
        assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())

    def test_weights_round_trip_through_safetensors(self, tmp_path):
        model = self.make_model(seed=1)
        save_tensors(tmp_path / "w.safetensors", model.state_dict(), {"family": self.family})
        tensors, metadata = load_tensors(tmp_path / "w.safetensors")
        fresh = self.make_model(seed=2)
        load_model_weights(fresh, tensors, tmp_path / "w.safetensors")
        g = torch.Generator
        assert torch.equal(
            model.eval().sample(2, generator=g().manual_seed(0)), fresh.eval().sample(2, generator=g().manual_seed(0))
        )
        assert metadata == {"family": self.family}

    def test_labels_are_checked(self):
        model = self.make_model().eval()
        if model.conditional:
            with pytest.raises(GenlabError, match="outside the model's classes"):
                model.sample(2, labels=torch.tensor([0, self.spec.num_classes]))
            assert model.check_labels(4, None).tolist() == [0, 1, 2, 0]
        else:
            with pytest.raises(GenlabError, match="unconditional"):
                model.sample(2, labels=torch.tensor([0, 1]))

    # ---------------------------------------------------------------- the declared capabilities do what they say

    def test_sampling_gives_back_every_submodule_its_mode(self):
        model = self.make_model()
        model.train()
        next(model.children()).eval()  # a mixed state: the first network in eval mode, the rest training
        modes = [m.training for m in model.modules()]
        model.sample(2, generator=torch.Generator().manual_seed(0))
        assert [m.training for m in model.modules()] == modes

    def test_integer_settings_refuse_booleans(self):
        config_class = model_class(self.family).config_class
        hints = typing.get_type_hints(config_class)
        integers = [f.name for f in dataclasses.fields(config_class) if hints[f.name] is int]
        assert integers, "every family has integer settings"
        for name in integers:
            with pytest.raises(GenlabError, match=name):
                build_model(self.family, self.spec, {**self.settings, name: True})

    def test_a_conditional_model_needs_two_classes(self):
        one_class = DataSpec(1, 8, 8, 1, ("only",))
        with pytest.raises(GenlabError, match="at least 2 classes"):
            build_model(self.family, one_class, {**self.settings, "conditional": True})

    def test_likelihood_if_declared(self):
        model = self.make_model().eval()
        if not isinstance(model, HasLikelihood):
            pytest.skip(f"{self.family} declares no likelihood")
        x, labels = self.make_batch(4)
        torch.manual_seed(0)
        log_p = model.log_likelihood(x, labels if model.conditional else None)
        assert log_p.shape == (4,) and torch.isfinite(log_p).all()
        assert model.likelihood_kind and model.likelihood_data_model

    def test_latent_space_if_declared(self):
        model = self.make_model().eval()
        if not isinstance(model, HasLatentSpace):
            pytest.skip(f"{self.family} declares no latent space")
        z = model.sample_latent(3, generator=torch.Generator().manual_seed(0))
        labels = model.check_labels(3, None)
        images = model.decode(z, labels)
        assert images.shape == (3, *self.spec.image_shape)
        assert 0.0 <= images.min().item() and images.max().item() <= 1.0
        path = model.interpolate(4, generator=torch.Generator().manual_seed(0))
        assert path.shape == (4, *self.spec.image_shape)
        if isinstance(model, HasEncoder):
            x, labels = self.make_batch(3)
            assert model.latent_of(x, labels if model.conditional else None).shape == z.shape

    def test_reconstruction_if_declared(self):
        model = self.make_model().eval()
        if not isinstance(model, CanReconstruct):
            pytest.skip(f"{self.family} declares no reconstruction")
        x, labels = self.make_batch(3)
        rebuilt = model.reconstruct(x, labels if model.conditional else None)
        assert rebuilt.shape == x.shape and 0.0 <= rebuilt.min().item() and rebuilt.max().item() <= 1.0

    def test_completion_if_declared(self):
        model = self.make_model().eval()
        if not isinstance(model, CanComplete):
            pytest.skip(f"{self.family} declares no completion")
        x, labels = self.make_batch(2)
        x = torch.bernoulli(x) if model.binary_pixels else (x * 255).round() / 255
        done = model.complete(x, 3, generator=torch.Generator().manual_seed(0),
                              labels=labels if model.conditional else None)
        assert done.shape == x.shape
        torch.testing.assert_close(done[:, :, :3], x[:, :, :3])

    def test_sampler_options_if_declared(self):
        model = self.make_model().eval()
        if not isinstance(model, HasSamplerOptions):
            pytest.skip(f"{self.family} declares no sampler options")
        fields = {f.name for f in dataclasses.fields(model.config)}
        assert model.sampler_options and all(option.config_field in fields for option in model.sampler_options)
        assert model.check_sampler_options({}) == {}
        with pytest.raises(GenlabError, match="--colour"):
            model.check_sampler_options({"colour": 1})

    def test_sampling_chain_if_declared(self):
        model = self.make_model().eval()
        if not isinstance(model, ShowsSamplingChain):
            pytest.skip(f"{self.family} declares no sampling chain")
        images, chain = model.sample_chain(2, 1, generator=torch.Generator().manual_seed(0))
        assert images.shape == (2, *self.spec.image_shape)
        assert len(chain) == model.chain_steps + 1 and all(state.shape == images.shape for state in chain)
        torch.testing.assert_close(chain[-1], images)

    def test_declares_its_own_training_budget(self):
        """Every family class sizes its own default budget (`default_steps`), none inherits another's."""
        model = self.make_model()
        assert "default_steps" in vars(type(model)), f"{type(model).__name__} declares no default_steps"
        assert isinstance(type(model).default_steps, int) and type(model).default_steps > 0
        steps = type(model).default_steps
        assert type(model).default_epochs(4000, 64) == max(1, round(steps / 63))  # 63 batches an epoch
        assert type(model).default_epochs(10**9, 64) == 1  # never none
        scale = type(model).largest_budget_scale
        assert type(model).budget_steps(1_000) == type(model).budget_steps(4_000) == steps  # small data: the budget
        assert type(model).budget_steps(16_000) == round(steps * min(scale, 2.0))  # x sqrt(16,000 / 4,000)
        assert type(model).budget_steps(60_000) == round(steps * min(scale, 60_000**0.5 / 4_000**0.5))
