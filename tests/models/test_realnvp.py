"""The Real NVP family: exact inverse, log-determinants against brute-force Jacobians, the likelihood's
transform terms, training, sampling, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import genlab
from genlab.errors import GenlabError
from genlab.models import DataSpec, build_model
from genlab.models.realnvp import AffineCoupling, squeeze, unsqueeze
from tests.models.conformance import FamilyConformance

TINY = {"hidden_channels": 8, "res_blocks": 1}
SPEC = DataSpec(1, 8, 8, 3, ("a", "b", "c"))


class TestRealNVP(FamilyConformance):
    family, settings = "realnvp", TINY


class TestConditionalRealNVP(FamilyConformance):
    family, settings = "realnvp", {**TINY, "conditional": True}


class TestRealNVPWithEMA(FamilyConformance):
    family, settings = "realnvp", {**TINY, "ema": 0.9}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: on 2 busy cores a training step took 16 ms on one thread, 240 ms on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed(module, std=0.01, seed=0):
    """Random weights in the zero-initialised output layers, so that no coupling is the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".output." in name:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module.eval()


def brute_force_log_det(f, x: torch.Tensor) -> torch.Tensor:
    """log |det J| of f at x (one image), from the full Jacobian by autograd."""
    jacobian = torch.autograd.functional.jacobian(lambda v: f(v.reshape(x.shape)).flatten(), x.flatten())
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    assert sign != 0
    return log_abs_det


# ---------------------------------------------------------------- invertibility


@pytest.mark.parametrize(
    "shape, conditional, settings",
    [
        ((1, 28, 28), False, {}),  # the default network
        ((1, 28, 28), True, {"hidden_channels": 16}),
        ((1, 8, 8), False, {"hidden_channels": 16}),
        ((1, 8, 8), True, {"hidden_channels": 16}),
        ((3, 32, 32), True, {"hidden_channels": 16}),
    ],
)
def test_decode_inverts_encode_to_1e_4(shape, conditional, settings):
    torch.manual_seed(0)
    model = perturbed(build_model("realnvp", DataSpec(*shape, 10), conditional=conditional, **settings))
    x = torch.rand(3, *shape)
    labels = torch.tensor([0, 4, 9]) if conditional else None
    with torch.no_grad():
        z, log_det = model.encode(x, labels)
        again = model.decode(z, labels)
    assert z.shape == x.shape and log_det.shape == (3,)
    assert (again - x).abs().max().item() < 1e-4
    # not a trivial check: the perturbed couplings moved z well away from the logit of x
    y = torch.logit(0.05 + 0.9 * x)
    assert (z - y).abs().mean().item() > 0.05


def test_squeeze_is_space_to_depth_and_unsqueeze_its_inverse():
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 2, 4, 6)
    s = squeeze(x)
    assert s.shape == (2, 8, 2, 3)
    assert s[0, :4, 0, 0].tolist() == [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]
    assert torch.equal(unsqueeze(s), x)


# ---------------------------------------------------------------- log-determinants (float64, to 1e-8)


@pytest.mark.parametrize(
    "mask, shape", [("checkerboard", (1, 1, 4, 4)), ("checkerboard", (1, 2, 3, 3)), ("channel", (1, 4, 2, 2))]
)
@pytest.mark.parametrize("parity", [0, 1])
def test_a_coupling_layers_log_det_is_its_jacobians(mask, shape, parity):
    torch.manual_seed(0)
    coupling = perturbed(AffineCoupling(shape[1], mask, parity, hidden=4, blocks=1).double(), std=1.0)
    x = torch.randn(shape, dtype=torch.float64)
    y, log_det = coupling(x)
    assert torch.allclose(coupling.inverse(y), x, atol=1e-12)
    expected = brute_force_log_det(lambda v: coupling(v)[0], x)
    assert (y - x).abs().max().item() > 0.1  # far from the identity
    assert log_det.item() == pytest.approx(expected.item(), abs=1e-8)


def test_squeeze_then_coupling_log_det_is_the_jacobians():
    torch.manual_seed(1)
    coupling = perturbed(AffineCoupling(8, "channel", 1, hidden=4, blocks=1).double(), std=1.0)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    _, log_det = coupling(squeeze(x))  # the squeeze is a permutation: log-det 0
    expected = brute_force_log_det(lambda v: coupling(squeeze(v))[0], x)
    assert log_det.item() == pytest.approx(expected.item(), abs=1e-8)


@pytest.mark.parametrize("conditional", [False, True])
def test_the_whole_flows_log_det_from_pixels_is_the_jacobians(conditional):
    """x in [0, 1] (before the logit) -> z, 64 dimensions, through 2 scales of 10 couplings."""
    torch.manual_seed(2)
    model = perturbed(
        build_model("realnvp", SPEC, hidden_channels=4, res_blocks=1, conditional=conditional).double(), std=0.2
    )
    labels = torch.tensor([2]) if conditional else None
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    _, log_det = model.encode(x, labels)
    expected = brute_force_log_det(lambda v: model.encode(v, labels)[0], x)
    assert log_det.item() == pytest.approx(expected.item(), abs=1e-8)


# ---------------------------------------------------------------- the likelihood


def test_log_likelihood_at_initialisation_is_the_gaussian_of_the_logits_plus_the_transform_terms():
    """Zero-initialised couplings are the identity, and squeezes only permute, so by hand:

    v = 255 x + u (the 8-bit scale), y = logit(0.05 + 0.9 v / 256),
    log p(v) = sum log N(y; 0, 1) + sum log |dy/dv|.
    """
    torch.manual_seed(0)
    model = build_model("realnvp", SPEC, **TINY).eval()
    x = torch.randint(0, 256, (4, 1, 8, 8)).float() / 255
    torch.manual_seed(5)
    log_p = model.log_likelihood(x)
    torch.manual_seed(5)  # the same dequantization noise
    v = (x * 255 + torch.rand_like(x)).requires_grad_()
    y = torch.logit(0.05 + 0.9 * v / 256)
    (dy_dv,) = torch.autograd.grad(y.sum(), v)  # elementwise map: the gradient is the Jacobian's diagonal
    expected = (torch.distributions.Normal(0.0, 1.0).log_prob(y) + dy_dv.log()).sum((1, 2, 3))
    torch.testing.assert_close(log_p, expected.detach(), rtol=1e-5, atol=1e-3)
    midpoints = (x * 255 + 0.5) / 256
    z, log_det = model.encode(midpoints)
    logits = torch.logit(0.05 + 0.9 * midpoints)
    assert torch.allclose(z.flatten(1).sort(1).values, logits.flatten(1).sort(1).values, atol=1e-5)  # a permutation
    assert not torch.equal(z, logits)  # the squeezes did move the units


def test_log_likelihood_is_a_seeded_per_image_figure_and_training_reports_bits_per_dim():
    torch.manual_seed(0)
    model = perturbed(build_model("realnvp", SPEC, **TINY))
    x = torch.randint(0, 256, (6, 1, 8, 8)).float() / 255
    torch.manual_seed(1)
    first = model.log_likelihood(x)
    torch.manual_seed(1)
    assert first.shape == (6,) and torch.equal(first, model.log_likelihood(x))
    assert not torch.equal(first, model.log_likelihood(x))  # other dequantization noise
    metrics = model.validation_step((x, None))
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_loss"] / (64 * math.log(2)))


# ---------------------------------------------------------------- training and evaluation on real data


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny flow trained for 2 epochs on the 1,437 training digits, and the test NLL of its initial weights."""
    from genlab.eval.evaluate import negative_log_likelihood

    settings = {"hidden_channels": 16, "res_blocks": 1, "lr": 3e-3}
    torch.manual_seed(0)  # as genlab.train seeds the initial weights
    initial = build_model("realnvp", genlab.load_dataset("digits"), settings)
    before, _ = negative_log_likelihood(initial, genlab.load_dataset("digits", split="test"), seed=0)
    out = tmp_path_factory.mktemp("realnvp") / "run"
    run = genlab.train(
        "realnvp", "digits", out, epochs=2, seed=0, progress=False, sample_every=0, model_config=settings
    )
    return run, before


def test_training_lowers_the_test_nll(digits_run):
    run, before = digits_run
    history = run.history
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["test_loss"]) for r in history)
    assert history[1]["test_loss"] < history[0]["test_loss"]
    assert history[1]["test_bits_per_dim"] == pytest.approx(history[1]["test_loss"] / (64 * math.log(2)))
    result = genlab.evaluate(run.path, metrics="nll")
    after = result.metrics["nll_nats"]
    assert math.isfinite(after) and after < 0.75 * before  # measured: 440 -> 267 nats
    assert result.metrics["bits_per_dim"] == pytest.approx(after / (64 * math.log(2)))
    assert result.to_dict()["details"]["nll"]["data_model"].startswith("dequantized continuous")
    assert result.to_dict()["details"]["nll"]["kind"].startswith("exact for the dequantized density")


def test_a_trained_run_samples_and_interpolates(digits_run):
    run, _ = digits_run
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    images = run.sample(6, generator=g(0))
    assert images.shape == (6, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, run.sample(6, generator=g(0))) and not torch.equal(images, run.sample(6, generator=g(1)))
    strips, labels = run.interpolate(2, 5, generator=g(0))
    assert strips.shape == (10, 1, 8, 8) and labels is None
    z0, z1 = run.model.sample_latent(2, g(0))
    torch.testing.assert_close(strips[0], run.model.decode(z0[None])[0])
    torch.testing.assert_close(strips[4], run.model.decode(z1[None])[0])


# ---------------------------------------------------------------- sampling


def test_conditional_sampling_follows_the_labels_and_refuses_bad_ones():
    torch.manual_seed(0)
    model = perturbed(build_model("realnvp", DataSpec(1, 8, 8, 10), conditional=True, **TINY))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    threes, sevens = model.sample(4, g(), labels=3), model.sample(4, g(), labels=7)
    assert threes.shape == (4, 1, 8, 8) and not torch.equal(threes, sevens)
    assert torch.equal(model.sample(2, g(), labels=[3, 7])[1], model.sample(2, g(), labels=[7, 7])[1])
    with pytest.raises(GenlabError, match="label 10 is outside the model's classes 0..9"):
        model.sample(2, labels=[1, 10])
    with pytest.raises(GenlabError, match="got 3 labels for 2 samples"):
        model.sample(2, labels=[1, 2, 3])
    with pytest.raises(GenlabError, match="needs labels"):
        model.log_likelihood(torch.rand(2, 1, 8, 8))
    with pytest.raises(GenlabError, match="unconditional"):
        build_model("realnvp", SPEC, **TINY).sample(2, labels=[0, 1])


def test_temperature_scales_the_prior_draws():
    model = build_model("realnvp", SPEC, **TINY, temperature=0.5)
    z = model.sample_latent(4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 1, 8, 8) and z.std().item() == pytest.approx(0.5, rel=0.01)


def test_a_conditional_flow_samples_cooler_by_default_and_records_it():
    from genlab.models import stored_config
    from genlab.models.realnvp.config import CONDITIONAL_TEMPERATURE

    assert build_model("realnvp", SPEC, **TINY).config.temperature == 1.0
    assert build_model("realnvp", SPEC, **TINY, conditional=True).config.temperature == CONDITIONAL_TEMPERATURE == 0.6
    assert build_model("realnvp", SPEC, **TINY, conditional=True, temperature=1.0).config.temperature == 1.0
    model = build_model("realnvp", SPEC, **TINY, conditional=True, ema=0.0)  # its prior still N(0, I): std 0.6
    z = model.sample_latent(4000, torch.Generator().manual_seed(0))
    assert z.std().item() == pytest.approx(0.6, rel=0.01)
    # a run.json holds the resolved value, so an older conditional run keeps its own
    assert stored_config("realnvp", {"conditional": True, "temperature": 1.0}).temperature == 1.0


def test_a_conditional_flows_prior_is_a_learned_gaussian_per_class_that_starts_as_the_standard_normal():
    from genlab.models import stored_config
    from genlab.models.realnvp import standard_normal_log_density

    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    model = build_model("realnvp", spec, conditional=True, temperature=0.5, **TINY, ema=0.0)
    prior = model.flow.prior
    assert prior is not None and prior.means.shape == prior.log_scales.shape == (3, 1, 8, 8)
    z, labels = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(model.flow.log_prior(z, labels), standard_normal_log_density(z))  # N(0, I) at first
    with torch.no_grad():
        prior.means[1].fill_(3.0)
        prior.log_scales[1].fill_(math.log(2.0))
    reference = torch.distributions.Normal(3.0, 2.0).log_prob(z[1]).sum()
    assert model.flow.log_prior(z, labels)[1].item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(model.flow.log_prior(z, labels)[0], standard_normal_log_density(z)[:1])  # class 0 kept
    # draws of class 1: mean 3, std temperature * 2 = 1; decoded with the same label, they invert exactly
    draws = model.sample_latent(4000, torch.Generator().manual_seed(0), labels=torch.ones(4000, dtype=torch.long))
    assert draws.mean().item() == pytest.approx(3.0, abs=0.01) and draws.std().item() == pytest.approx(1.0, rel=0.01)
    # it is trained with the flow: one step moves it
    before = prior.means.clone()
    model.training_step((torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])), model.configure_optimizers())
    assert not torch.equal(before, prior.means)
    assert build_model("realnvp", spec, conditional=True, class_prior=False, **TINY).flow.prior is None
    assert build_model("realnvp", spec, **TINY).flow.prior is None  # unconditional: N(0, I)
    assert build_model("realnvp", spec, conditional=True, **TINY).ema_flow.prior is not None  # averaged too
    assert stored_config("realnvp", {"conditional": True}).class_prior is False  # a run.json written before it


# ---------------------------------------------------------------- sizes and settings


def test_the_number_of_scales_follows_the_image_size():
    scales = {
        (c, h, w): build_model("realnvp", DataSpec(c, h, w), **TINY).config.scales
        for c, h, w in [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 12, 20)]
    }
    assert scales == {(1, 28, 28): 3, (1, 8, 8): 2, (3, 32, 32): 3, (1, 12, 20): 2}  # 28 -> 14 -> 7; 8 -> 4
    assert build_model("realnvp", DataSpec(1, 28, 28), scales=2, **TINY).config.scales == 2
    assert build_model("realnvp", DataSpec(1, 7, 9), scales=1, **TINY).sample(1).shape == (1, 1, 7, 9)


def test_sizes_it_cannot_take_are_refused_with_the_reason():
    with pytest.raises(GenlabError, match="even and at least 8.*these are 27x27.*--set scales=1"):
        build_model("realnvp", DataSpec(1, 27, 27))
    with pytest.raises(GenlabError, match="these are 6x6"):
        build_model("realnvp", DataSpec(1, 6, 6))
    with pytest.raises(GenlabError, match="scales=4 squeezes 2x2 3 times.*multiples of 8.*these are 28x28"):
        build_model("realnvp", DataSpec(1, 28, 28), scales=4)
    with pytest.raises(GenlabError, match="at least 8; these are 4x4"):
        build_model("realnvp", DataSpec(1, 4, 4), scales=3)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("hidden_channels", 0, "hidden_channels must be a positive integer"),
        ("res_blocks", -1, "res_blocks must be a positive integer"),
        ("scales", 0, "scales must be a positive integer or None"),
        ("alpha", 0.5, r"alpha must be a number in \(0, 0.5\)"),
        ("temperature", 0.0, "temperature must be a positive number"),
        ("lr", -1e-3, "lr must be a positive number"),
        ("weight_decay", -1.0, "weight_decay must be a number >= 0"),
        ("grad_clip", float("nan"), "grad_clip must be a number >= 0"),
        ("ema", 1.0, r"ema must be in \[0, 1\)"),
    ],
)
def test_bad_settings_are_named(setting, value, message):
    with pytest.raises(GenlabError, match=message):
        build_model("realnvp", SPEC, **{setting: value})


def test_settings_parse_from_the_command_line_and_conditional_needs_classes():
    model = build_model("realnvp", SPEC, {"hidden_channels": "8", "res_blocks": "1", "scales": "none", "lr": "2e-3"})
    assert (model.config.hidden_channels, model.config.scales, model.config.lr) == (8, 2, 2e-3)
    with pytest.raises(GenlabError, match="needs labelled data"):
        build_model("realnvp", DataSpec(1, 8, 8), conditional=True)


def test_declares_an_exact_likelihood_and_an_encoder_whose_latent_is_its_z():
    from genlab.models import CanReconstruct, HasEncoder, HasLatentSpace, HasLikelihood

    torch.manual_seed(0)
    model = perturbed(build_model("realnvp", SPEC, conditional=True, **TINY))
    assert isinstance(model, HasLikelihood) and isinstance(model, HasEncoder) and isinstance(model, HasLatentSpace)
    assert not isinstance(model, CanReconstruct) and not model.binary_pixels
    x, labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        z = model.latent_of(x, labels)
        assert z.shape == x.shape and torch.equal(z, model.encode(x, labels)[0])
        assert (model.decode(z, labels) - x).abs().max().item() < 1e-4
    with pytest.raises(GenlabError, match="needs labels"):
        model.latent_of(x)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("hidden_channels", True), ("scales", True), ("conditional", 1), ("alpha", True), ("ema", True),
        ("ema", "0.9x"), ("class_prior", 1), ("class_prior", "yes please"), ("temperature", True),
        ("temperature", "0.6x"),
    ],
)  # fmt: skip
def test_settings_of_the_wrong_type_are_refused(setting, value):
    with pytest.raises(GenlabError, match=setting):
        build_model("realnvp", SPEC, **{setting: value})


# ---------------------------------------------------------------- the moving average of the weights


def test_the_ema_flow_follows_the_trained_one_with_warm_up_and_samples_encodes_and_scores():
    torch.manual_seed(0)
    model = build_model("realnvp", SPEC, **TINY, ema=0.999)
    assert model.sampling_flow() is model.ema_flow
    before = [p.clone() for p in model.ema_flow.parameters()]
    optimizers = model.configure_optimizers()
    assert sum(len(group["params"]) for group in optimizers["model"].param_groups) == len(list(model.flow.parameters()))
    model.training_step((torch.rand(16, 1, 8, 8), None), optimizers)
    decay = min(0.999, 2 / 11)  # warm-up after the first step: (1 + t) / (10 + t), t = 1
    for old, new, trained in zip(before, model.ema_flow.parameters(), model.flow.parameters()):
        assert torch.allclose(new, decay * old + (1 - decay) * trained, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(model.ema_flow.parameters(), model.flow.parameters()))
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        z = model.latent_of(x)
        assert torch.equal(z, model.encode(x, flow=model.ema_flow)[0])
        assert not torch.equal(z, model.encode(x, flow=model.flow)[0])
        assert (model.decode(z) - x).abs().max().item() < 1e-4  # decode inverts the same (EMA) flow


def test_runs_without_ema_keep_their_weights_layout():
    """ema=0: no `ema_flow` and no `updates` in the weights, which is how runs saved before EMA existed rebuild."""
    from genlab.models import stored_config

    model = build_model("realnvp", SPEC, **TINY, ema=0.0)
    assert model.ema_flow is None and model.sampling_flow() is model.flow
    assert not any(key.startswith("ema_flow.") or key == "updates" for key in model.state_dict())
    assert build_model("realnvp", SPEC, **TINY).config.ema == 0.999  # today's default
    assert stored_config("realnvp", {"hidden_channels": 8}).ema == 0.0  # a run.json written before it


def test_a_checkpoint_resumes_with_the_ema_intact(tmp_path):
    kwargs = dict(epochs=2, seed=1, progress=False, sample_every=0, final_eval=False, model_config={**TINY, "ema": 0.9})
    genlab.train("realnvp", "digits", tmp_path / "straight", **kwargs)
    genlab.train("realnvp", "digits", tmp_path / "resumed", **{**kwargs, "epochs": 1})
    genlab.train(
        "realnvp",
        "digits",
        tmp_path / "resumed",
        resume=True,
        epochs=2,
        progress=False,
        sample_every=0,
        final_eval=False,
    )
    for name in ("model.safetensors", "state.safetensors"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name
    run = genlab.Run.load(tmp_path / "resumed")
    assert run.model.ema_flow is not None and int(run.model.updates) > 0
