"""The Gated PixelCNN family: causality, exact normalised likelihoods, the cached sampler, completion."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import genlab
from genlab.data import load_splits
from genlab.errors import GenlabError
from genlab.eval.evaluate import negative_log_likelihood
from genlab.models import MODELS, DataSpec, build_model, stored_config
from genlab.models.base import (
    CanComplete,
    CanReconstruct,
    HasEncoder,
    HasLatentSpace,
    HasLikelihood,
    HasSamplerOptions,
    ShowsSamplingChain,
)
from genlab.models.pixelcnn import PixelCNN, PixelCNNConfig, draw, explain, fill
from tests.models.conformance import FamilyConformance

TINY = {"channels": 8, "layers": 3, "kernel_size": 3, "head_channels": 16, "lr": 3e-3}


class TestPixelCNN(FamilyConformance):
    family, settings = "pixelcnn", TINY


class TestConditionalBinarizedPixelCNN(FamilyConformance):
    family, settings = "pixelcnn", {**TINY, "conditional": True, "binarize": True}


class TestPixelCNNWithClassMaps(FamilyConformance):
    family, settings = "pixelcnn", {**TINY, "conditional": True, "class_maps": 2}


class TestColourPixelCNN(FamilyConformance):
    family, settings = "pixelcnn", {**TINY, "channels": 9}
    spec = DataSpec(3, 6, 6, 3, ("a", "b", "c"))


def tiny(colours=1, height=5, width=6, seed=0, **settings):
    """A small model whose receptive field covers a 5x6 image (kernel 5, 4 layers).

    Each colour gets 8 feature maps: with fewer, every ReLU of a colour's group can be off at
    the first pixels for all test images, and a gradient test would see no dependence. A conditional
    model's class terms are moved off their zero start, so that its labels matter.
    """
    torch.manual_seed(seed)
    spec = DataSpec(colours, height, width, 3, ("a", "b", "c"))
    config = {"channels": 8 * colours, "layers": 4, "kernel_size": 5, "head_channels": 8 * colours, **settings}
    model = build_model("pixelcnn", spec, config).eval()
    return with_class_terms(model, seed) if model.conditional else model


def with_class_terms(model, seed=0):
    """A conditional model whose class embeddings (and the layers' reading of its class maps) have moved from their
    zero start, as training moves them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.network.gated_layers():
            for weights in (layer.embedding, layer.read_maps):
                if weights is not None:
                    weights.weight.copy_(torch.randn(weights.weight.shape, generator=generator))
    return model


def random_images(model, n, seed):
    """n images on the model's grid (0/1 or k/255)."""
    g = torch.Generator().manual_seed(seed)
    return model.discretize(torch.rand(n, *model.data.image_shape, generator=g))


def earlier(c, i, j, shape):
    """(C, H, W) bool: the values before colour c of pixel (i, j) in raster order, colours R, G, B within a pixel."""
    colours, height, width = shape
    order = torch.arange(colours * height * width).reshape(height, width, colours).permute(2, 0, 1)
    return order < order[c, i, j]


CASES = [  # colours, settings
    (1, {}),
    (1, {"binarize": True}),
    (1, {"conditional": True}),
    (3, {}),
    (3, {"binarize": True, "conditional": True}),
    (1, {"conditional": True, "class_maps": 2}),
    (3, {"conditional": True, "class_maps": 1}),
]


@pytest.mark.parametrize("colours, settings", CASES)
def test_each_output_sees_every_earlier_value_and_nothing_later(colours, settings):
    model = tiny(colours, **settings)
    labels = torch.arange(8) % 3 if model.conditional else None
    x = random_images(model, 8, seed=1).requires_grad_(True)
    logits = model.network(x, labels)  # (8, C, K, 5, 6)
    other = random_images(model, 8, seed=2)
    for i, j in [(0, 0), (0, 3), (2, 0), (2, 5), (3, 2), (4, 5)]:  # at (0, 0) colour 0, `before` is all False
        for c in range(colours):
            before = earlier(c, i, j, model.data.image_shape)
            # every later value (this pixel's colours from c on, every later pixel) replaced at once
            changed = torch.where(before, x.detach(), other)
            assert not torch.equal(changed, x.detach()) or (i, j, c) == (4, 5, colours - 1)
            moved = model.network(changed, labels)[:, c, :, i, j] - logits[:, c, :, i, j]
            assert moved.abs().max() < 1e-5, (c, i, j)
            # and every earlier value moves them (no blind spot): the gradient is non-zero exactly there
            (gradient,) = torch.autograd.grad(logits[:, c, :, i, j].sum(), x, retain_graph=True)
            depends = gradient.abs().sum(0) > 0  # (C, H, W)
            assert torch.equal(depends, before), (c, i, j)


def test_the_binary_likelihood_sums_to_one_over_every_image():
    """Sum of p(x) over all 2^(C*H*W) binary images is 1: the conditionals chain into one distribution."""
    for colours, height, width in [(1, 3, 3), (3, 1, 2)]:
        model = tiny(colours, height, width, binarize=True, conditional=True)
        d = colours * height * width
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d))).reshape(-1, colours, height, width)
        for label in range(3):
            log_p = model.log_likelihood(bits, torch.full((len(bits),), label))
            assert torch.logsumexp(log_p.double(), 0).item() == pytest.approx(0.0, abs=1e-5)


def test_the_256_way_likelihood_sums_to_one_over_every_two_pixel_image():
    model = tiny(1, 1, 2)
    levels = torch.arange(256.0) / 255
    pairs = torch.cartesian_prod(levels, levels).reshape(-1, 1, 1, 2)  # all 65,536 images
    log_p = model.log_likelihood(pairs)
    assert torch.isfinite(log_p).all()
    assert torch.logsumexp(log_p.double(), 0).item() == pytest.approx(0.0, abs=1e-4)


def test_likelihoods_equal_the_cross_entropy_written_out():
    for settings in ({}, {"binarize": True}):
        model = tiny(1, 2, 3, **settings)
        x = random_images(model, 2, seed=3)
        logits = model.network(x)  # (2, 1, K, 2, 3)
        expected = torch.zeros(2, dtype=torch.float64)
        for b, i, j in itertools.product(range(2), range(2), range(3)):
            z = logits[b, 0, :, i, j].double()
            if settings:  # Bernoulli: log sigmoid(z) for a 1, log(1 - sigmoid(z)) for a 0
                p = 1 / (1 + math.exp(-z.item()))
                expected[b] += math.log(p if x[b, 0, i, j] == 1 else 1 - p)
            else:  # softmax over the 256 levels, at the pixel's level round(255 x)
                probabilities = z.exp() / z.exp().sum()
                assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)
                expected[b] += probabilities[round(x[b, 0, i, j].item() * 255)].log()
        log_p = model.log_likelihood(x)
        assert log_p.shape == (2,) and torch.isfinite(log_p).all() and (log_p < 0).all()
        torch.testing.assert_close(log_p.double(), expected, rtol=1e-5, atol=1e-4)
        with torch.no_grad():  # the training loss is the same number per image
            assert model.nll(x).mean().item() == pytest.approx(-expected.mean().item(), rel=1e-5)


def test_the_likelihood_takes_images_as_given_and_only_puts_them_on_the_grid():
    model = tiny(1, 2, 3)
    x = random_images(model, 2, seed=4)
    torch.testing.assert_close(model.log_likelihood(x + 0.4 / 255), model.log_likelihood(x))
    binary = tiny(1, 2, 3, binarize=True)
    grey = torch.full((1, 1, 2, 3), 0.7)
    torch.testing.assert_close(binary.log_likelihood(grey), binary.log_likelihood(torch.ones(1, 1, 2, 3)))
    assert model.likelihood_data_model == "256-way discrete (8-bit pixels)"
    assert binary.likelihood_data_model == "binarized"


@pytest.mark.parametrize(
    "colours, settings",
    [(1, {}), (1, {"binarize": True}), (3, {"conditional": True}), (1, {"conditional": True, "class_maps": 2}),
     (3, {"conditional": True, "class_maps": 1})],
)  # fmt: skip
def test_the_cached_sampler_draws_what_the_full_network_gives(colours, settings):
    """Each value `fill` draws equals the one the full forward pass's logits give for the same uniform."""
    model = tiny(colours, **settings)
    labels = torch.tensor([0, 2, 1]) if model.conditional else None
    uniform = torch.rand(3, *model.data.image_shape, generator=torch.Generator().manual_seed(5))
    images = fill(model.network, torch.zeros(3, *model.data.image_shape), 0, uniform, labels)
    logits = model.network(images, labels)  # (3, C, K, H, W): teacher forcing on the drawn images
    top = max(model.network.outputs - 1, 1)
    redrawn = torch.stack(
        [
            draw(logits[:, c, :, i, j], uniform[:, c, i, j]) / top
            for c, i, j in itertools.product(*map(range, model.data.image_shape))
        ],
        1,
    )
    assert torch.equal(redrawn, images.reshape(3, -1))
    assert len(images.unique()) > 2 or settings.get("binarize")


def test_samples_lie_on_the_grid_and_follow_the_seed():
    model = tiny(1, 4, 4)
    g = torch.Generator
    images = model.sample(6, generator=g().manual_seed(0))
    assert images.shape == (6, 1, 4, 4) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, (images * 255).round() / 255)
    assert torch.equal(images, model.sample(6, generator=g().manual_seed(0)))
    assert not torch.equal(images, model.sample(6, generator=g().manual_seed(1)))
    binary = tiny(1, 4, 4, binarize=True).sample(6, generator=g().manual_seed(0))
    assert set(binary.unique().tolist()) == {0.0, 1.0}


def test_completion_keeps_the_top_rows_and_draws_the_rest():
    model = tiny(1, 5, 6)
    images = random_images(model, 4, seed=6)
    g = torch.Generator
    done = model.complete(images, 2, generator=g().manual_seed(0))
    assert done.shape == images.shape
    assert torch.equal(done[:, :, :2], images[:, :, :2])  # kept exactly
    assert not torch.equal(done[:, :, 2:], images[:, :, 2:])
    assert torch.equal(done, (done * 255).round() / 255)
    again = model.complete(images, 2, generator=g().manual_seed(0))
    other = model.complete(images, 2, generator=g().manual_seed(1))
    assert torch.equal(done, again) and not torch.equal(done[:, :, 2:], other[:, :, 2:])
    # the drawn rows follow from the kept ones: other kept rows give other completions from the same draws
    shifted = model.complete(random_images(model, 4, seed=7), 2, generator=g().manual_seed(0))
    assert not torch.equal(shifted[:, :, 2:], done[:, :, 2:])
    # keeping no rows is sampling from scratch with the same draws
    assert torch.equal(model.complete(images, 0, generator=g().manual_seed(3)), model.sample(4, g().manual_seed(3)))
    for rows in (-1, 5, 2.0, True):
        with pytest.raises(GenlabError, match="rows to keep must be an integer from 0 to 4"):
            model.complete(images, rows)
    with pytest.raises(GenlabError, match=r"complete needs float images in \[0, 1\] of shape \(B, 1, 5, 6\)"):
        model.complete(images[:, :, :4], 2)
    with pytest.raises(GenlabError, match="got torch.uint8"):
        model.complete((images * 255).to(torch.uint8), 2)


def test_a_conditional_model_starts_as_the_unconditional_one_and_training_moves_its_class_terms():
    spec = DataSpec(1, 4, 4, 3, ("a", "b", "c"))
    model = build_model("pixelcnn", spec, channels=8, layers=4, kernel_size=5, head_channels=8, conditional=True)
    x = random_images(model, 2, seed=3)
    with torch.no_grad():
        assert torch.equal(model.log_likelihood(x, torch.tensor([0, 0])), model.log_likelihood(x, torch.tensor([2, 2])))
    model.train()
    model.training_step((x, torch.tensor([0, 2])), model.configure_optimizers())
    assert all(layer.embedding.weight.abs().sum() > 0 for layer in model.network.gated_layers())


def test_class_maps_give_each_pixel_its_own_class_term_and_start_as_the_embedding_alone():
    """Location-dependent conditioning: a (maps, H, W) template per class (and null), read by every gate through a
    1x1 conv from zero; 4 maps by default for a conditional model, none for an unconditional one or an older run."""
    spec = DataSpec(1, 4, 5, 3, ("a", "b", "c"))
    model = build_model("pixelcnn", spec, channels=8, layers=2, kernel_size=3, head_channels=8, conditional=True,
                        class_maps=2)  # fmt: skip
    network = model.network
    assert network.class_maps.weight.shape == (4, 2 * 4 * 5)  # 3 classes and the null one
    labels = torch.tensor([0, 2])
    assert network.maps_of(labels).shape == (2, 2, 4, 5)
    vertical, horizontal = network.layer_biases(labels)[0]
    assert vertical.shape == horizontal.shape == (2, 16, 4, 5)  # 2p per gate, one term per pixel
    assert torch.equal(vertical, vertical[:, :, :1, :1].expand_as(vertical))  # read from zero: the same everywhere
    with torch.no_grad():
        network.gated_layers()[0].read_maps.weight.normal_()
    vertical, _ = network.layer_biases(labels)[0]
    assert not torch.equal(vertical[:, :, 0, 0], vertical[:, :, 3, 4])  # now each pixel gets its class's own term
    x = random_images(model, 2, seed=3)
    model.train()
    model.training_step((x, labels), model.configure_optimizers())
    assert all(layer.read_maps.weight.abs().sum() > 0 for layer in network.gated_layers())
    default = build_model("pixelcnn", spec, conditional=True)
    assert default.config.class_maps == 4 and default.network.class_maps.weight.shape == (4, 4 * 4 * 5)
    assert build_model("pixelcnn", spec).config.class_maps == 0
    assert build_model("pixelcnn", spec, conditional=True, class_maps=0).network.class_maps is None
    older = stored_config("pixelcnn", {"conditional": True})  # a run.json written before class maps
    assert older.class_maps == 0 and build_model("pixelcnn", spec, older).network.class_maps is None


def test_conditional_sampling_follows_the_label_and_checks_it():
    model = tiny(1, 4, 4, conditional=True)
    g = torch.Generator
    a = model.sample(3, g().manual_seed(0), labels=0)
    assert torch.equal(a, model.sample(3, g().manual_seed(0), labels=torch.tensor([0, 0, 0])))
    assert not torch.equal(a, model.sample(3, g().manual_seed(0), labels=2))
    x = random_images(model, 2, seed=8)
    assert not torch.equal(model.log_likelihood(x, torch.tensor([0, 0])), model.log_likelihood(x, torch.tensor([1, 1])))
    with pytest.raises(GenlabError, match="label 3 is outside the model's classes 0..2"):
        model.sample(2, labels=3)
    with pytest.raises(GenlabError, match="got 3 labels for 2 samples"):
        model.complete(x, 1, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(GenlabError, match="needs labels"):
        model.log_likelihood(x)
    with pytest.raises(GenlabError, match="unconditional"):
        tiny(1, 4, 4).sample(2, labels=1)


def test_bad_settings_are_named():
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    for settings, message in [
        ({"channels": 0}, "setting channels must be a positive integer, got 0"),
        ({"layers": -1}, "setting layers must be a positive integer, got -1"),
        ({"head_channels": 2.5}, "setting head_channels must be a positive integer, got 2.5"),
        ({"kernel_size": 4}, "setting kernel_size must be an odd integer, got 4"),
        ({"kernel_size": 1}, "setting kernel_size must be an integer >= 3, got 1"),
        ({"kernel_size": True}, "setting kernel_size must be an integer >= 3, got True"),
        ({"channels": True}, "setting channels must be a positive integer, got True"),
        ({"lr": True}, "setting lr must be a positive number, got True"),
        ({"binarize": 1}, "setting binarize must be true or false, got 1"),
        ({"conditional": "yes please"}, "setting conditional='yes please' is not a valid bool"),
        ({"lr": 0.0}, "setting lr must be a positive number, got 0.0"),
        ({"lr": "nan"}, "setting lr must be a positive number, got nan"),
        ({"layers": "many"}, "setting layers='many' is not a valid int"),
        ({"depth": 3}, "pixelcnn has no setting 'depth'"),
        ({"class_maps": 2}, "setting class_maps needs a conditional model"),
        ({"class_maps": 65, "conditional": True}, "setting class_maps must be an integer from 0 to 64, got 65"),
        ({"class_maps": -1, "conditional": True}, "setting class_maps must be an integer from 0 to 64, got -1"),
    ]:
        with pytest.raises(GenlabError, match=message):
            build_model("pixelcnn", spec, settings)
    with pytest.raises(GenlabError, match="conditional pixelcnn needs labelled data with at least 2 classes"):
        build_model("pixelcnn", DataSpec(1, 8, 8), conditional=True)
    with pytest.raises(GenlabError, match="channels and head_channels must be at least the 3 colour channels"):
        build_model("pixelcnn", DataSpec(3, 8, 8), channels=2)
    assert build_model("pixelcnn", spec, {"kernel_size": "3"}).config.kernel_size == 3  # as the CLI's --set gives it


def test_training_through_the_api_lowers_the_nll_and_eval_measures_it(tmp_path):
    train, test = load_splits("digits")
    config = {**TINY, "lr": 1e-2}
    torch.manual_seed(0)  # genlab.train seeds the initial weights the same way
    before, _ = negative_log_likelihood(build_model("pixelcnn", train, config), test, 0)
    run = genlab.train(
        "pixelcnn", "digits", tmp_path / "run", epochs=2, batch_size=128, seed=0, progress=False, model_config=config
    )  # 2 x 12 steps
    first, last = run.history[0], run.history[-1]
    assert {"loss", "bits_per_dim", "test_loss", "test_bits_per_dim"} <= set(last)
    assert before > 300  # about 64 ln 256 = 355 nats: near-uniform over the 256 levels
    # the loss falls fast: digits use 17 of the 256 grey levels, which is learnt first
    assert last["test_loss"] < 0.8 * first["test_loss"] and last["test_loss"] < 0.5 * before
    assert last["test_bits_per_dim"] == pytest.approx(last["test_loss"] / (64 * math.log(2)))
    assert (tmp_path / "run" / "samples" / "epoch_0002.png").exists()
    result = genlab.evaluate(tmp_path / "run", metrics="nll")
    assert math.isfinite(result.metrics["nll_nats"])
    assert result.metrics["nll_nats"] == pytest.approx(last["test_loss"], rel=1e-4)  # exact: no sampling in it
    assert result.details["nll"]["data_model"] == "256-way discrete (8-bit pixels)"
    assert result.details["nll"]["kind"] == "exact"


def test_it_declares_a_likelihood_and_completion_and_no_other_capability():
    assert MODELS["pixelcnn"] is PixelCNN and PixelCNN.config_class is PixelCNNConfig
    model, binary = tiny(1, 2, 3), tiny(1, 2, 3, binarize=True, conditional=True)
    for each in (model, binary):
        assert isinstance(each, HasLikelihood) and isinstance(each, CanComplete)
        assert isinstance(each, HasSamplerOptions) and [o.name for o in each.sampler_options] == ["guidance"]
        for capability in (HasLatentSpace, HasEncoder, CanReconstruct, ShowsSamplingChain):
            assert not isinstance(each, capability), capability.__name__
        assert each.likelihood_kind == "exact"
    assert PixelCNN.likelihood_images is None  # one network pass per image: eval scores the whole test split
    assert not model.binary_pixels and binary.binary_pixels  # the config's binarize
    assert (model.likelihood_data_model, binary.likelihood_data_model) == (
        "256-way discrete (8-bit pixels)",
        "binarized",
    )


def test_labels_reach_the_network_only_on_a_conditional_model():
    model = tiny(1, 2, 3)
    x = random_images(model, 2, seed=9)
    assert model.condition(torch.tensor([0, 1])) is None  # an unconditional model ignores labels it is given
    assert torch.equal(model.log_likelihood(x, torch.tensor([0, 1])), model.log_likelihood(x))
    conditional = tiny(1, 2, 3, conditional=True)
    told = conditional.condition(torch.tensor([2, 1]))
    assert told is not None and torch.equal(told, torch.tensor([2, 1]))
    with torch.no_grad():
        expected = -conditional.nll(x, torch.tensor([2, 1]))
        assert torch.equal(conditional.log_likelihood(x, torch.tensor([2, 1])), expected)
    with pytest.raises(GenlabError, match="a conditional pixelcnn needs labels"):
        conditional.condition(None)


@pytest.mark.parametrize("settings", [{}, {"binarize": True, "conditional": True}])
def test_the_explain_methods_are_the_explain_functions(settings):
    """The model's pipeline_stages and prediction_pass delegate to explain.py, draw for draw."""
    model = tiny(1, 4, 4, **settings)
    x = random_images(model, 3, seed=10)
    labels = torch.tensor([0, 2, 1]) if model.conditional else None
    g = torch.Generator
    with torch.no_grad():
        stages = model.pipeline_stages(x, labels, g().manual_seed(0))
        assert stages == explain.pipeline_stages(model, x, labels, g().manual_seed(0))
        assert [stage.name for stage in stages][0] == ("binarize" if settings else "discretize")
        assert stages[-1].output_shape == (3, 1, 4, 4) and stages[-1].path == "generation"
        traced = model.prediction_pass(x, labels, g().manual_seed(0))
        again = explain.prediction_pass(model, x, labels, g().manual_seed(0))
        assert traced.network is model.network and torch.equal(traced.inputs, again.inputs)
        torch.testing.assert_close(traced.run(), model.network(traced.inputs, labels), rtol=0, atol=0)


def test_the_network_still_converts_like_any_module():
    """Its kernel reach is `half_kernel`: an attribute named `half` would shadow nn.Module.half()."""
    network = tiny(1, 2, 3).network
    assert network.half_kernel == 2
    assert next(network.half().parameters()).dtype == torch.float16


# ---------------------------------------------------------------- classifier-free guidance


def guided_redraw(model, images, labels, uniform, guidance):
    """The levels that logits u + guidance (c - u) of the full network, teacher-forced on `images`, give for `uniform`."""
    null = torch.full_like(labels, model.data.num_classes)
    conditional, unconditional = model.network(images, labels), model.network(images, null)  # (B, C, K, H, W)
    logits = unconditional + guidance * (conditional - unconditional)
    top = max(model.network.outputs - 1, 1)
    return torch.stack(
        [
            draw(logits[:, c, :, i, j], uniform[:, c, i, j]) / top
            for c, i, j in itertools.product(*map(range, model.data.image_shape))
        ],
        1,
    )


@pytest.mark.parametrize("colours, settings", [(1, {}), (1, {"binarize": True}), (3, {}), (1, {"class_maps": 2})])
def test_guided_sampling_draws_what_the_mixed_logits_of_the_full_network_give(colours, settings):
    model = tiny(colours, conditional=True, **settings)
    assert model.network.null_class == 3 and model.network.gated_layers()[0].embedding.num_embeddings == 4
    labels = torch.tensor([0, 2, 1])
    uniform = torch.rand(3, *model.data.image_shape, generator=torch.Generator().manual_seed(5))
    for guidance in (3.0, 0.0):
        images = fill(model.network, torch.zeros(3, *model.data.image_shape), 0, uniform, labels, guidance=guidance)
        assert torch.equal(guided_redraw(model, images, labels, uniform, guidance), images.reshape(3, -1))
    # guidance 0 is the unconditional model: the null label drawn unguided
    null = fill(model.network, torch.zeros(3, *model.data.image_shape), 0, uniform, torch.full_like(labels, 3))
    assert torch.equal(images, null)


def test_guidance_is_the_runs_default_an_option_of_sample_and_of_completion():
    model = tiny(1, 4, 4, conditional=True, guidance=2.0)
    g = torch.Generator
    assert model.config.guidance == 2.0
    a = model.sample(3, g().manual_seed(0), labels=1)
    assert torch.equal(a, model.sample(3, g().manual_seed(0), labels=1, guidance=2.0))
    assert not torch.equal(a, model.sample(3, g().manual_seed(0), labels=1, guidance=1.0))
    assert torch.equal(
        model.complete(torch.zeros(3, 1, 4, 4), 0, g().manual_seed(0), labels=torch.tensor([1, 1, 1])), a
    )
    assert model.check_sampler_options({"guidance": 3}) == {"guidance": 3.0}
    with pytest.raises(GenlabError, match="--guidance must be from 0"):
        model.check_sampler_options({"guidance": -1})


def test_training_teaches_the_null_class_on_a_share_of_the_labels():
    spec = DataSpec(1, 4, 4, 3, ("a", "b", "c"))
    model = build_model("pixelcnn", spec, channels=8, layers=2, kernel_size=3, head_channels=8, conditional=True,
                        label_dropout=0.5)  # fmt: skip
    model.train()
    torch.manual_seed(0)
    model.training_step(
        (random_images(model, 64, seed=3), torch.zeros(64, dtype=torch.long)), model.configure_optimizers()
    )
    rows = model.network.gated_layers()[0].embedding.weight.abs().sum(1)  # (4,): classes a, b, c and the null class
    assert rows[0] > 0 and rows[3] > 0 and rows[1] == 0 and rows[2] == 0  # only label 0 was shown, and half went null


def test_guidance_needs_a_conditional_model_trained_with_a_null_class():
    spec = DataSpec(1, 4, 4, 3, ("a", "b", "c"))
    small = {"channels": 8, "layers": 2, "kernel_size": 3, "head_channels": 8}
    assert build_model("pixelcnn", spec, **small).config.guidance == 1.0
    assert build_model("pixelcnn", spec, conditional=True, **small).config.guidance == 2.0  # the conditional default
    assert build_model("pixelcnn", spec, conditional=True, label_dropout=0.0, **small).config.guidance == 1.0
    with pytest.raises(GenlabError, match="guidance needs a conditional model"):
        build_model("pixelcnn", spec, guidance=2.0, **small)
    with pytest.raises(GenlabError, match="needs the null class that label_dropout > 0 trains"):
        build_model("pixelcnn", spec, conditional=True, label_dropout=0.0, guidance=2.0, **small)
    for settings, message in [
        ({"label_dropout": 1.0}, "label_dropout"), ({"label_dropout": "some"}, "label_dropout"),
        ({"guidance": -1.0}, "guidance"), ({"guidance": True}, "guidance"),
    ]:  # fmt: skip
        with pytest.raises(GenlabError, match=message):
            build_model("pixelcnn", spec, conditional=True, **small, **settings)
    with pytest.raises(GenlabError, match="--guidance needs a conditional model"):
        build_model("pixelcnn", spec, **small).sample(2, guidance=2.0)
    # a run written before guidance: no null class, so it draws unguided and refuses --guidance
    older = stored_config("pixelcnn", {"conditional": True, **small})
    assert (older.label_dropout, older.guidance) == (0.0, 1.0)
    model = build_model("pixelcnn", spec, older)
    assert model.network.null_class is None and model.network.gated_layers()[0].embedding.num_embeddings == 3
    model.sample(2, labels=0)
    with pytest.raises(GenlabError, match="trained with label dropout"):
        model.sample(2, labels=0, guidance=2.0)


def test_explain_draws_with_the_runs_guidance_and_says_so():
    model = tiny(1, 4, 4, conditional=True, guidance=2.0)
    x = random_images(model, 3, seed=10)
    with torch.no_grad():
        stages = model.pipeline_stages(x, torch.tensor([0, 2, 1]), torch.Generator().manual_seed(0))
    assert "classifier-free guidance 2: logits u + 2 (c - u)" in stages[-1].what
    unguided = tiny(1, 4, 4, conditional=True, guidance=1.0)
    with torch.no_grad():
        plain = unguided.pipeline_stages(x, torch.tensor([0, 2, 1]), torch.Generator().manual_seed(0))
    assert "guidance" not in plain[-1].what


def test_explain_says_how_the_network_is_told_the_class():
    def network_stage(model):
        x = random_images(model, 2, seed=4)
        labels = torch.tensor([0, 1]) if model.conditional else None
        with torch.no_grad():
            stages = model.pipeline_stages(x, labels, torch.Generator().manual_seed(0))
        return next(stage.what for stage in stages if stage.name == "masked network")

    assert "to its left, all pixels" in network_stage(tiny(1, 4, 4))
    assert "and the class (an embedding in every gate)," in network_stage(tiny(1, 4, 4, conditional=True, class_maps=0))
    mapped = network_stage(tiny(1, 4, 4, conditional=True, class_maps=3))
    assert "a learned 3-channel map of the class read at each pixel" in mapped
