"""The GAN family: the contract, the architectures, the losses, EMA, resume, and training health."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import genlab
from genlab.errors import GenlabError
from genlab.models import DataSpec, build_model
from genlab.models.gan import (
    concat_labels,
    conv_stages,
    gradient_penalty,
    mean_pairwise_distance,
    mode_seeking_loss,
)
from tests.models.conformance import FamilyConformance

# Without the default EMA (0.999): in a few hundred steps its average still lags far behind G, and the contract
# tests judge G's own progress; TestGANWithEMA and the EMA tests below cover the average.
TINY = {"latent_dim": 8, "lr": 1e-3, "ema": 0.0}
TINY_CONV = {"latent_dim": 8, "channels": 8, "lr": 1e-3, "ema": 0.0}


class GANConformance(FamilyConformance):
    contest_steps = 200  # steps the contract test trains for

    def test_training_loss_falls_on_a_fixed_batch(self):
        """A contest has no falling loss: instead samples must move towards the batch's images."""
        model = self.make_model()
        optimizers = model.configure_optimizers()
        batch = self.make_batch(32)
        real = batch[0].flatten(1)  # (32, D)

        def gap():  # mean pixel distance from each sample to its nearest real image
            fake = model.sample(64, generator=torch.Generator().manual_seed(0)).flatten(1)
            return torch.cdist(fake, real, p=1).min(dim=1).values.mean() / real.shape[1]

        before = gap()
        for _ in range(self.contest_steps):
            model.training_step(batch, optimizers)
        assert gap() < 0.8 * before


    def make_batch(self, n: int = 16, seed: int = 0):
        """The prototypes with noise: real images of one class must differ for a diversity ratio to exist."""
        images, labels = super().make_batch(n, seed)
        noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.1 - 0.05
        return images + noise, labels


class TestGAN(GANConformance):
    family, settings = "gan", TINY


class TestConditionalGANProjection(GANConformance):
    family, settings = "gan", {**TINY, "conditional": True}


class TestConditionalGANConcat(GANConformance):
    family, settings = "gan", {**TINY, "conditional": True, "conditioning": "concat"}


class TestDCGAN(GANConformance):
    family, settings = "dcgan", TINY_CONV


# The default label ramp starts at step 300, after the contract test's 200 steps: here the label (and the
# default auxiliary classifier) come in early, without mode seeking (see the class-norm case below).
class TestConditionalDCGANSpectral(GANConformance):
    family, settings = "dcgan", {**TINY_CONV, "conditional": True, "spectral_norm": True, "condition_ramp": (0, 100),
                                 "mode_seeking": 0.0}


# Without mode seeking: on a batch of one identical image per class it pushes samples apart, away
# from the images the contract test wants them to approach (tested on its own below). The
# convolutional concat D is checked by test_concatenated_labels_reach_the_discriminators_input.
class TestConditionalDCGANClassNorm(GANConformance):
    family, settings = "dcgan", {**TINY_CONV, "conditional": True, "generator_conditioning": "batchnorm",
                                 "mode_seeking": 0.0}



class TestConditionalGANAuxiliaryClassifier(GANConformance):
    family, settings = "gan", {**TINY, "conditional": True, "class_loss": 1.0}


class TestConditionalWGANGPAuxiliaryClassifier(GANConformance):
    family, settings = "wgan-gp", {**TINY_CONV, "n_critic": 2, "lr": 1e-3, "conditional": True, "class_loss": 1.0}
    # From G's N(0, 0.02) start the gap shrinks slowly at first: 0.443 -> 0.402 after 200 steps, 0.265 after 500.
    contest_steps = 500


class TestWGANGP(GANConformance):
    family, settings = "wgan-gp", {**TINY_CONV, "n_critic": 2, "lr": 1e-3}


class TestGANWithEMA(GANConformance):
    family, settings = "gan", {**TINY, "ema": 0.9}


# D sees shifted and cut images: G's samples approach the batch more slowly, as D's signal is blurred.
class TestDCGANWithAugmentation(GANConformance):
    family, settings = "dcgan", {**TINY_CONV, "augment": ("translation", "cutout")}
    contest_steps = 600


class TestWGANGPWithAugmentation(GANConformance):
    family, settings = "wgan-gp", {**TINY_CONV, "n_critic": 2, "lr": 1e-3, "augment": ("translation",)}
    contest_steps = 600


MNIST = DataSpec(1, 28, 28, 10, tuple(str(k) for k in range(10)))


def test_the_classic_mlp_generator():
    model = build_model("gan", MNIST)
    linears = [m for m in model.generator.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(100, 128), (128, 256), (256, 512), (512, 784)]
    assert [m.num_features for m in model.generator.net if isinstance(m, nn.BatchNorm1d)] == [256, 512]
    assert [m.negative_slope for m in model.generator.net if isinstance(m, nn.LeakyReLU)] == [0.2] * 3
    assert isinstance(model.generator.net[-1], nn.Tanh)
    optimizers = model.configure_optimizers()
    assert optimizers["generator"].defaults["lr"] == 2e-4 and optimizers["generator"].defaults["betas"] == (0.5, 0.999)
    wgan = build_model("wgan-gp", MNIST).configure_optimizers()["discriminator"].defaults
    assert wgan["lr"] == 2e-4 and wgan["betas"] == (0.0, 0.9)


@pytest.mark.parametrize("shape, stages", [((28, 28), 2), ((32, 32), 2), ((20, 20), 2), ((64, 64), 3), ((32, 64), 3)])
def test_dcgan_sizes_itself_from_the_data(shape, stages):
    spec = DataSpec(3, *shape, 0, ())
    assert conv_stages(spec, "dcgan") == stages
    model = build_model("dcgan", spec, channels=8)
    images = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, *shape)
    assert model.discriminator(images * 2 - 1).shape == (2,)


@pytest.mark.parametrize("shape", [(30, 30), (28, 30), (4, 4)])
def test_dcgan_names_the_sizes_it_can_take(shape):
    with pytest.raises(GenlabError, match=r"multiples of 4 and at least 8 \(28x28, 32x32"):
        build_model("dcgan", DataSpec(1, *shape, 0, ()))


def test_gradient_penalty_of_a_linear_critic_is_exact():
    """C(x) = w.x has gradient w everywhere: the penalty is (||w|| - 1)^2 whatever the mix."""
    weight = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def critic(x, labels=None):
        return (x * weight).flatten(1).sum(dim=1)

    real, fake = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    penalty = gradient_penalty(critic, real, fake, None, torch.rand(5, 1, 1, 1))
    assert penalty.item() == pytest.approx((weight.norm().item() - 1) ** 2, rel=1e-5)
    unit = weight / weight.norm()
    assert gradient_penalty(lambda x, y: (x * unit).flatten(1).sum(1), real, fake, None,
                            torch.rand(5, 1, 1, 1)).item() == pytest.approx(0.0, abs=1e-10)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm_and_trains_d():
    from genlab.models.gan.losses import r1_penalty

    weight = torch.randn(1, 2, 3, 3)
    real = torch.rand(5, 2, 3, 3).requires_grad_(True)
    logits = (real * weight).flatten(1).sum(1)  # D(x) = <w, x>: its gradient is w for every image
    assert r1_penalty(real, logits).item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-5)
    torch.manual_seed(0)
    model = build_model("dcgan", MNIST, channels=8, latent_dim=8, ema=0.0, r1=10.0, r1_every=2, d_lr=4e-4, lr=1e-4)
    optimizers = model.configure_optimizers()
    assert optimizers["discriminator"].param_groups[0]["lr"] == 4e-4 and optimizers["generator"].param_groups[0]["lr"] == 1e-4
    batch = (torch.rand(8, 1, 28, 28), None)
    assert "r1_penalty" not in model.training_step(batch, optimizers)  # lazy: every second D step
    stats = model.training_step(batch, optimizers)
    assert stats["r1_penalty"] > 0 and math.isfinite(stats["d_loss"])
    plain = build_model("dcgan", MNIST, channels=8, latent_dim=8, ema=0.0)
    assert "r1_penalty" not in plain.training_step((torch.rand(8, 1, 28, 28), None), plain.configure_optimizers())
    with pytest.raises(GenlabError, match="r1 is for gan and dcgan"):
        build_model("wgan-gp", MNIST, r1=1.0)
    with pytest.raises(GenlabError, match="d_lr must be a positive number"):
        build_model("gan", MNIST, d_lr=0.0)


def test_a_linear_schedule_falls_from_lr_to_zero_over_the_planned_d_steps():
    model = build_model("wgan-gp", MNIST, channels=8, latent_dim=8, lr_schedule="linear", d_lr=4e-4, lr=1e-4)
    model.plan_steps(4)
    assert model.config.decay_steps == 4  # planned: recorded in run.json
    optimizers = model.configure_optimizers()
    rates = []
    for _ in range(5):
        model.training_step((torch.rand(4, 1, 28, 28), None), optimizers)
        rates.append((optimizers["generator"].param_groups[0]["lr"], optimizers["discriminator"].param_groups[0]["lr"]))
    assert rates == [(pytest.approx(1e-4 * f), pytest.approx(4e-4 * f)) for f in (1, 0.75, 0.5, 0.25, 0)]
    constant = build_model("wgan-gp", MNIST, channels=8, latent_dim=8)
    constant.plan_steps(4)
    assert constant.config.decay_steps is None and constant.config.lr_schedule == "constant"
    given = build_model("gan", MNIST, latent_dim=8, lr_schedule="linear", decay_steps=10)
    given.plan_steps(4)
    assert given.config.decay_steps == 10  # a decay the user set is kept
    with pytest.raises(GenlabError, match="lr_schedule 'cosine'; choose one of constant, linear"):
        build_model("gan", MNIST, lr_schedule="cosine")
    with pytest.raises(GenlabError, match="decay_steps must be a positive integer"):
        build_model("gan", MNIST, lr_schedule="linear", decay_steps=0)


def test_projection_discriminator_adds_the_label_inner_product():
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    torch.manual_seed(0)
    model = build_model("gan", spec, conditional=True, latent_dim=4)
    d = model.discriminator.eval()  # its dropout off: the formula is checked on one function
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0])
    h = d.features(x)  # the MLP's features are (B, 256): projected as they are
    expected = d.score(h).squeeze(1) + (d.embed(labels) * h).sum(1)
    assert torch.allclose(d(x, labels), expected)
    assert not torch.allclose(d(x, labels), d(x, (labels + 1) % 3))  # the label matters


def test_concatenated_labels_reach_the_discriminators_input():
    """concat: K one-hot planes join the image (conv D) or its pixels (MLP D), so every layer sees the label."""
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    x, labels = torch.rand(2, 1, 8, 8) * 2 - 1, torch.tensor([0, 2])
    joined = concat_labels(x, labels, 3, flat=False)  # (B, 1 + 3, 8, 8)
    assert joined.shape == (2, 4, 8, 8) and torch.equal(joined[:, :1], x)
    assert joined[0, 1].eq(1).all() and joined[0, 2:].eq(0).all() and joined[1, 3].eq(1).all()
    assert concat_labels(x, labels, 3, flat=True).shape == (2, 64 + 3)
    conv = build_model("dcgan", spec, conditional=True, conditioning="concat", channels=8)
    assert conv.discriminator.features[0].in_channels == 1 + 3
    mlp = build_model("gan", spec, conditional=True, conditioning="concat", latent_dim=4)
    assert mlp.discriminator.features[1].in_features == 64 + 3
    for model in (conv, mlp):
        scores = model.discriminator(x, labels)
        assert not torch.allclose(scores, model.discriminator(x, (labels + 1) % 3))


def test_the_conditional_conv_generator_takes_the_class_through_its_batchnorms():
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    torch.manual_seed(0)
    model = build_model("dcgan", spec, conditional=True, channels=8, latent_dim=4, generator_conditioning="batchnorm")
    norm = model.generator.norms[0]
    h = torch.randn(6, 16, 2, 2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = nn.BatchNorm2d(16, affine=False)(h)
    assert torch.allclose(norm(h, labels), plain, atol=1e-6)  # scale 1, shift 0 at the start: a plain BatchNorm
    with torch.no_grad():
        norm.scale.weight[1] = 2.0
        norm.shift.weight[2] = -1.0
    out = norm(h, labels)
    assert torch.allclose(out[1], 2 * plain[1], atol=1e-6) and torch.allclose(out[2], plain[2] - 1, atol=1e-6)
    z = torch.randn(3, 4)
    images = model.generator(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(images[0], model.generator(z, torch.tensor([1, 1, 2]))[0])  # the class matters


def test_conditional_diversity_counts_pairs_of_one_class_only():
    """A G that draws one fixed image per class is collapsed: diversity ~0 however different the classes."""
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    model = build_model("gan", spec, conditional=True, latent_dim=4)
    prototypes = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model.sample = lambda n, labels=None, **_: prototypes[labels]  # ignores z
    real = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(12) % 3
    assert model.validation_step((real, labels))["diversity"] == pytest.approx(0.0, abs=1e-6)
    assert mean_pairwise_distance(prototypes[labels]) > 1.0  # across classes they differ
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    assert mean_pairwise_distance(points).item() == pytest.approx((5 + 8 + 5) / 3)
    assert mean_pairwise_distance(points, torch.tensor([0, 1, 0])).item() == pytest.approx(8.0)


def test_the_label_fades_in_over_the_condition_ramp():
    """Weight 0 before the ramp (G and D ignore the label), linear inside it, 1 after; sampled as trained."""
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    torch.manual_seed(0)
    model = build_model("dcgan", spec, conditional=True, channels=8, latent_dim=4, condition_ramp=(2, 6), ema=0.9)
    optimizers = model.configure_optimizers()
    batch = (torch.rand(8, 1, 8, 8), torch.arange(8) % 3)
    weights = []
    for _ in range(8):
        model.training_step(batch, optimizers)
        weights.append(model.generator.condition_weight.item())
        assert model.discriminator.condition_weight.item() == weights[-1]
        assert model.ema_generator.condition_weight.item() == weights[-1]
    assert weights == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1, 1, 1])
    model.set_condition_weight_to(0.0)
    z, x = torch.randn(2, 4), torch.rand(2, 1, 8, 8)
    model.generator.eval()
    model.discriminator.eval()  # spectral norm's power iteration steps on every training-mode call
    assert torch.equal(model.generator(z, torch.tensor([0, 1])), model.generator(z, torch.tensor([2, 2])))
    assert torch.equal(model.discriminator(x, torch.tensor([0, 1])), model.discriminator(x, torch.tensor([2, 2])))
    with pytest.raises(GenlabError, match="condition_ramp must be two steps"):
        build_model("gan", MNIST, condition_ramp=(5, 2))
    with pytest.raises(GenlabError, match="mode_seeking must be a number >= 0"):
        build_model("gan", MNIST, mode_seeking=-1.0)


def test_the_auxiliary_classifier_learns_the_classes_and_teaches_the_generator():
    """AC-GAN: D's classifier learns the real classes (its cross-entropy falls from log K), and G's
    images come to be classified as the labels they were drawn for."""
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    torch.manual_seed(0)
    model = build_model("dcgan", spec, conditional=True, channels=8, latent_dim=4, lr=2e-3, class_loss=1.0,
                        condition_ramp=(0, 0), mode_seeking=0.0)
    optimizers = model.configure_optimizers()
    bands = torch.zeros(3, 1, 8, 8)  # class k: a bright band of rows in the k-th third of the image
    for k, rows in enumerate((slice(0, 3), slice(3, 5), slice(5, 8))):
        bands[k, :, rows] = 1.0
    labels = torch.arange(48) % 3
    batch = (bands[labels] * 0.9 + 0.1 * torch.rand(48, 1, 8, 8), labels)
    losses = [model.training_step(batch, optimizers)["d_class_loss"] for _ in range(120)]
    assert losses[0] == pytest.approx(math.log(3), abs=0.3)  # a fresh classifier knows nothing
    assert max(losses[-10:]) < 0.3 * losses[0]
    model.discriminator.eval()
    fake = model.sample(30, labels=torch.arange(30) % 3) * 2 - 1  # (30, 1, 8, 8) in D's range
    _, class_logits = model.discriminator.score_and_classify(fake, torch.arange(30) % 3)
    assert (class_logits.argmax(dim=1) == torch.arange(30) % 3).float().mean() > 0.9


def test_the_critics_classifier_reads_the_flattened_maps_and_older_runs_keep_the_pooled_one():
    """WGAN-GP's auxiliary classifier sees where each stroke is (all C*h*w features); the DCGAN's reads the maps
    averaged over positions; a WGAN-GP run.json written before the setting rebuilds with the pooled classifier."""
    from genlab.models import stored_config

    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"))
    critic = build_model("wgan-gp", spec, conditional=True, channels=8, latent_dim=4).discriminator
    maps = critic.features(torch.rand(5, 1, 8, 8))  # (5, 16, 2, 2)
    assert critic.classifier.in_features == maps[0].numel() == 64
    dcgan = build_model("dcgan", spec, conditional=True, channels=8, latent_dim=4).discriminator
    assert dcgan.classifier.in_features == 16 and dcgan.classify_pooled
    pooled = build_model("wgan-gp", spec, conditional=True, channels=8, classifier_features="pooled").discriminator
    assert pooled.classifier.in_features == 16
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    _, logits = critic.score_and_classify(x, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(logits, critic.classifier(critic.features(x).flatten(1)))  # (2, 3)
    _, logits = pooled.score_and_classify(x, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(logits, pooled.classifier(pooled.features(x).mean(dim=(2, 3))))
    assert stored_config("wgan-gp", {"conditional": True}).classifier_features == "pooled"
    assert stored_config("dcgan", {"conditional": True}).classifier_features == "pooled"
    with pytest.raises(GenlabError, match="unknown WGAN-GP classifier_features 'attention'; choose one of pooled, flattened"):
        build_model("wgan-gp", spec, classifier_features="attention")


def test_without_class_loss_there_is_no_classifier():
    model = build_model("dcgan", DataSpec(1, 8, 8, 3, ("a", "b", "c")), conditional=True, channels=8, class_loss=0.0)
    assert model.discriminator.classifier is None
    metrics = model.training_step((torch.rand(8, 1, 8, 8), torch.arange(8) % 3), model.configure_optimizers())
    assert "d_class_loss" not in metrics
    assert build_model("dcgan", DataSpec(1, 8, 8, 3, ("a", "b", "c")), class_loss=1.0).discriminator.classifier is None
    with pytest.raises(GenlabError, match="class_loss must be a number >= 0"):
        build_model("gan", MNIST, class_loss=-1.0)


def test_mode_seeking_loss_punishes_a_generator_that_ignores_z():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    same = torch.ones(8, 1, 4, 4)  # pairs (i, 4 + i) identical: G ignores z
    assert mode_seeking_loss(same, z).item() == pytest.approx(1e5)
    varied = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ratio = (varied[:4] - varied[4:]).abs().mean() / (z[:4] - z[4:]).abs().mean()
    assert mode_seeking_loss(varied, z).item() == pytest.approx(1 / (ratio.item() + 1e-5), rel=1e-5)
    model = build_model("dcgan", DataSpec(1, 8, 8, 3, ("a", "b", "c")), conditional=True, channels=8, mode_seeking=1.0)
    optimizers = model.configure_optimizers()
    assert math.isfinite(model.training_step((torch.rand(8, 1, 8, 8), torch.arange(8) % 3), optimizers)["g_loss"])


def test_dcgan_starts_from_the_papers_initialisation():
    torch.manual_seed(0)
    model = build_model("dcgan", MNIST, spectral_norm=False)  # the paper's D, with BatchNorm
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05) and abs(weights.mean().item()) < 1e-3
    scales = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and 0.01 < scales.std().item() < 0.03


def test_dcgan_keeps_batchnorm_in_d_with_r1_when_unconditional_and_wgan_gp_has_neither():
    from torch.nn.utils import parametrize

    dcgan, wgan = build_model("dcgan", MNIST), build_model("wgan-gp", MNIST)
    assert dcgan.config.spectral_norm is False and dcgan.config.r1 == 1.0 and dcgan.config.r1_every == 4
    assert not any(parametrize.is_parametrized(m) for m in dcgan.discriminator.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in dcgan.discriminator.modules())
    assert not any(parametrize.is_parametrized(m) for m in wgan.discriminator.modules()) and wgan.config.r1 == 0.0
    # a conditional DCGAN's D keeps BatchNorm without R1 (its auxiliary classifier learns the classes there)
    conditional = build_model("dcgan", MNIST, conditional=True)
    assert conditional.config.spectral_norm is False and conditional.config.r1 == 0.0
    assert any(isinstance(m, nn.BatchNorm2d) for m in conditional.discriminator.modules())
    spectral = build_model("dcgan", MNIST, spectral_norm=True, r1=0.0)  # --set: the default before R1
    d_layers = [m for m in spectral.discriminator.features if isinstance(m, nn.Conv2d)]
    assert d_layers and all(parametrize.is_parametrized(m, "weight") for m in d_layers)
    assert build_model("wgan-gp", MNIST, conditional=True).config.spectral_norm is False
    # a run.json written before R1 and spectral normalisation rebuilds as it was trained
    from genlab.models import stored_config

    older = stored_config("dcgan", {"latent_dim": 100, "channels": 32})
    assert older.r1 == 0.0 and older.spectral_norm is False


def test_ema_follows_the_generator_with_warm_up_and_is_sampled_from():
    torch.manual_seed(0)
    model = build_model("gan", DataSpec(1, 8, 8, 0, ()), latent_dim=4, ema=0.999)
    before = [p.clone() for p in model.ema_generator.parameters()]
    optimizers = model.configure_optimizers()
    batch = (torch.rand(16, 1, 8, 8), None)
    model.training_step(batch, optimizers)
    decay = min(0.999, 2 / 11)  # warm-up after the first G step: (1 + t) / (10 + t), t = 1
    for old, new, g in zip(before, model.ema_generator.parameters(), model.generator.parameters()):
        assert torch.allclose(new, decay * old + (1 - decay) * g, atol=1e-6)
    z = model.sample_latent(3, torch.Generator().manual_seed(1))
    model.ema_generator.eval()
    assert torch.allclose(model.decode(z), (model.ema_generator(z) + 1) / 2)


def test_wgan_gp_updates_the_generator_every_n_critic_steps():
    torch.manual_seed(0)
    model = build_model("wgan-gp", DataSpec(1, 8, 8, 0, ()), channels=4, latent_dim=4, n_critic=3)
    optimizers = model.configure_optimizers()
    batch = (torch.rand(8, 1, 8, 8), None)
    generator_before = [p.clone() for p in model.generator.parameters()]
    for step in range(1, 7):
        stats = model.training_step(batch, optimizers)
        moved = any(not torch.equal(a, b) for a, b in zip(generator_before, model.generator.parameters()))
        assert moved == (step >= 3)
        assert {"wasserstein", "gradient_penalty", "d_accuracy"} <= set(stats)
    assert int(model.generator_steps) == 2


def test_labels_outside_the_classes_and_labels_on_unconditional_models():
    conditional = build_model("dcgan", MNIST, conditional=True, channels=8)
    with pytest.raises(GenlabError, match=r"label 10 is outside the model's classes 0..9"):
        conditional.sample(2, labels=torch.tensor([1, 10]))
    with pytest.raises(GenlabError, match="unconditional"):
        build_model("gan", MNIST).sample(2, labels=3)


def test_bad_settings_are_named():
    with pytest.raises(GenlabError, match="conditioning"):
        build_model("gan", MNIST, conditioning="film")
    with pytest.raises(GenlabError, match="generator_conditioning 'film'; choose one of input, batchnorm"):
        build_model("dcgan", MNIST, generator_conditioning="film")
    with pytest.raises(GenlabError, match=r"ema must be in \[0, 1\)"):
        build_model("gan", MNIST, ema=1.5)
    with pytest.raises(GenlabError, match="n_critic"):
        build_model("wgan-gp", MNIST, n_critic=0)
    with pytest.raises(GenlabError, match="needs labelled data"):
        build_model("gan", DataSpec(1, 28, 28, 0, ()), conditional=True)


@pytest.mark.parametrize("family, settings", [("dcgan", {"channels": 8, "ema": 0.99, "augment": ("translation", "cutout")}),
                                              ("wgan-gp", {"channels": 8, "n_critic": 3, "lr_schedule": "linear"})])
def test_resume_repeats_the_straight_run_bit_for_bit(tmp_path, family, settings):
    kwargs = dict(epochs=3, seed=2, progress=False, sample_every=0, model_config={**settings, "latent_dim": 8})
    planned = genlab.train(family, "digits", tmp_path / "straight", **kwargs).info["model"]["config"]["decay_steps"]
    # The run stopped after 2 epochs planned 3 (a linear schedule's decay over 3 epochs' steps, as the straight run)
    config = {**kwargs["model_config"], "decay_steps": planned}
    genlab.train(family, "digits", tmp_path / "resumed", **{**kwargs, "epochs": 2, "model_config": config})
    genlab.train(family, "digits", tmp_path / "resumed", resume=True, epochs=3, progress=False, sample_every=0)
    for name in ("model.safetensors", "state.safetensors"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name
    straight = (tmp_path / "straight" / "history.jsonl").read_text().splitlines()
    resumed = (tmp_path / "resumed" / "history.jsonl").read_text().splitlines()
    drop = lambda line: {k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_second")}  # noqa: E731
    assert [drop(line) for line in straight] == [drop(line) for line in resumed]


def test_resuming_past_the_end_of_a_linear_schedule_is_refused_and_the_run_kept(tmp_path):
    """Its learning rates are 0 after decay_steps: more epochs would cost their time and change nothing."""
    kwargs = dict(seed=0, progress=False, sample_every=0)
    settings = {"latent_dim": 8, "lr_schedule": "linear"}
    run = genlab.train("gan", "digits", tmp_path / "run", epochs=2, model_config=settings, **kwargs)
    decay = run.info["model"]["config"]["decay_steps"]
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(GenlabError, match=rf"falls to 0 at step {decay:,} .* resume with --epochs 2 or fewer"):
        genlab.train(out=tmp_path / "run", resume=True, epochs=3, **kwargs)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == before
    # A schedule set longer than the planned run leaves room to resume into it.
    longer = {**settings, "decay_steps": 2 * decay}
    genlab.train("gan", "digits", tmp_path / "longer", epochs=2, model_config=longer, **kwargs)
    resumed = genlab.train(out=tmp_path / "longer", resume=True, epochs=4, **kwargs)
    assert len(resumed.history) == 4


def test_a_short_gan_run_is_a_healthy_contest(tmp_path):
    """MLP GAN on mnist-5k: D neither loses nor dominates, samples are images, noise matters."""
    # G's own samples (ema 0): 4 epochs are too few for the default average to say anything about the contest.
    run = genlab.train("gan", "mnist-5k", tmp_path / "gan", epochs=4, seed=0, progress=False, sample_every=0,
                       model_config={"ema": 0.0})  # fmt: skip
    history = run.history
    accuracy = sum(r["d_accuracy"] for r in history[-2:]) / 2
    assert 0.5 < accuracy < 0.99
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm", "diversity"):
        assert all(math.isfinite(r[key]) for r in history), key
    images = run.sample(16, generator=torch.Generator().manual_seed(0))
    assert images.min() >= 0 and images.max() <= 1
    assert (images[0] - images[1]).abs().mean() > 0.05  # different noise, different images
    assert history[-1]["diversity"] > 0.5


def test_a_convolutional_projection_sums_features_over_positions():
    torch.manual_seed(0)
    model = build_model("dcgan", MNIST, conditional=True, channels=8)
    d = model.discriminator.eval()  # spectral norm's power iteration would step between the two calls
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    labels = torch.tensor([1, 5, 9])
    maps = d.features(x)  # (3, 16, 7, 7)
    expected = d.score(maps.flatten(1)).squeeze(1) + (d.embed(labels) * maps.sum(dim=(2, 3))).sum(1)
    assert d.embed.weight.shape == (10, 16) and torch.allclose(d(x, labels), expected, atol=1e-5)


# ---------------------------------------------------------------- differentiable augmentation (issue 20)


def test_translation_shifts_whole_images_by_at_most_an_eighth_filling_zeros():
    from genlab.models.gan.augment import translate

    torch.manual_seed(0)
    x = torch.rand(64, 2, 16, 16) + 1  # every pixel nonzero, so the filled border shows
    y = translate(x)
    assert y.shape == x.shape
    shifts = set()
    for image, shifted in zip(x, y):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(shifted[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)],
                                image[:, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)])]  # fmt: skip
        assert len(found) == 1  # one shift of at most 16 / 8 = 2 pixels explains the image
        dy, dx = found[0]
        shifts.add(found[0])
        assert int((shifted == 0).all(dim=0).sum()) == 16 * 16 - (16 - abs(dy)) * (16 - abs(dx))
    assert len(shifts) > 10  # drawn per image


def test_cutout_zeroes_one_square_of_half_the_size_per_image_on_every_channel():
    from genlab.models.gan.augment import cut_out

    torch.manual_seed(0)
    x = torch.rand(200, 3, 16, 16) + 1
    y = cut_out(x)
    zeroed = y == 0
    assert torch.equal(zeroed[:, 0], zeroed[:, 1]) and torch.equal(zeroed[:, 0], zeroed[:, 2])
    areas = zeroed[:, 0].flatten(1).sum(1)
    assert int(areas.max()) == 64 and int(areas.min()) > 0  # an 8 x 8 square, clipped at the edges
    kept = ~zeroed
    assert torch.equal(y[kept], x[kept])


def test_augmentation_passes_gradients_to_the_generator_and_is_named_in_errors():
    from genlab.models.gan.augment import augment

    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    augment(x, ("translation", "cutout")).sum().backward()
    assert x.grad is not None and 0 < float(x.grad.sum()) <= 4 * 64
    with pytest.raises(GenlabError, match="augment"):
        build_model("dcgan", MNIST, augment=("rotation",))
    model = build_model("dcgan", MNIST, augment="translation,cutout")  # as --set augment=translation,cutout gives it
    assert model.config.augment == ("translation", "cutout")


def test_the_class_loss_weight_is_1_for_the_mlp_gan_10_for_the_conv_ones_and_0_for_runs_before_the_classifier():
    """The MLP GAN's auxiliary classifier weighs 1 in its losses (at 10 it spread the samples: benchmarks/README.md),
    the convolutional variants' 10; a run.json written before the classifier existed rebuilds without one."""
    from genlab.models import stored_config

    assert build_model("gan", MNIST, conditional=True).config.class_loss == 1.0
    assert build_model("dcgan", MNIST, conditional=True, channels=8).config.class_loss == 10.0
    assert build_model("wgan-gp", MNIST, conditional=True, channels=8).config.class_loss == 10.0
    for family, size in (("gan", {}), ("dcgan", {"channels": 8}), ("wgan-gp", {"channels": 8})):
        older = stored_config(family, {"conditional": True, **size})
        assert older.class_loss == 0.0, family
        assert build_model(family, MNIST, **vars(older)).discriminator.classifier is None
    assert stored_config("gan", {"conditional": True, "class_loss": 10.0}).class_loss == 10.0  # as it was saved


def test_the_mode_seeking_term_is_off_for_the_mlp_gan_and_weighs_2_for_the_conv_ones():
    """The MLP GAN labels more of its samples right at a lower FID without the term (benchmarks/README.md); the
    convolutional variants keep the 2 they met their targets with. A stored weight is kept."""
    from genlab.models import stored_config

    assert build_model("gan", MNIST, conditional=True).config.mode_seeking == 0.0
    assert stored_config("gan", {"conditional": True, "mode_seeking": 0.5}).mode_seeking == 0.5  # as it was saved
    assert build_model("dcgan", MNIST, conditional=True, channels=8).config.mode_seeking == 2.0
    assert build_model("wgan-gp", MNIST, conditional=True, channels=8).config.mode_seeking == 2.0
    assert stored_config("gan", {"conditional": True, "mode_seeking": 2.0}).mode_seeking == 2.0  # as it was saved


def test_discriminator_dropout_is_the_mlp_default_and_keeps_older_layouts():
    from genlab.models import stored_config

    default = build_model("gan", MNIST)
    assert default.config.dropout == 0.3
    assert [type(m).__name__ for m in default.discriminator.features] == [
        "Flatten", "Linear", "LeakyReLU", "Dropout", "Linear", "LeakyReLU", "Dropout"]  # fmt: skip
    without = build_model("gan", MNIST, dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in without.discriminator.modules())
    assert "discriminator.features.3.weight" in without.state_dict()  # the layout of runs made before dropout
    assert stored_config("gan", {"latent_dim": 100}).dropout == 0.0  # a run.json without the setting
    conv = build_model("dcgan", MNIST, dropout=0.25)
    assert build_model("dcgan", MNIST).config.dropout == 0.0
    assert sum(isinstance(m, torch.nn.Dropout) for m in conv.discriminator.modules()) == 2  # one per conv stage
    with pytest.raises(GenlabError, match="dropout"):
        build_model("gan", MNIST, dropout=1.0)


def test_truncation_narrows_the_sampling_prior_only_and_is_a_sampler_option(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("dcgan", MNIST, channels=8, latent_dim=8, ema=0.0)
    assert model.config.truncation == 1.0 and [o.name for o in model.sampler_options] == ["truncation"]
    z = model.sample_latent(6, torch.Generator().manual_seed(3))
    assert torch.equal(model.sample(6, torch.Generator().manual_seed(3)), model.decode(z))  # 1: the plain prior
    narrowed = model.sample(6, torch.Generator().manual_seed(3), truncation=0.5)
    assert torch.allclose(narrowed, model.decode(0.5 * z), atol=1e-6)
    truncated = build_model("dcgan", MNIST, channels=8, latent_dim=8, ema=0.0, truncation=0.5)
    truncated.load_state_dict(model.state_dict())
    assert torch.allclose(truncated.sample_latent(6, torch.Generator().manual_seed(3)), 0.5 * z)  # the run's default
    assert torch.allclose(truncated.sample(6, torch.Generator().manual_seed(3)), narrowed, atol=1e-6)
    # training draws z ~ N(0, I) whatever the truncation: the same seed, the same step, the same weights
    batch = (torch.rand(8, 1, 28, 28), None)
    for candidate in (model, truncated):
        torch.manual_seed(1)
        candidate.training_step(batch, candidate.configure_optimizers())
    for a, b in zip(model.generator.parameters(), truncated.generator.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(GenlabError, match="truncation must be a number >= 0"):
        build_model("gan", MNIST, truncation=-0.1)
    with pytest.raises(GenlabError, match="--steps is not an option of this sampler; it takes --truncation"):
        model.check_sampler_options({"steps": 3})


def test_genlab_sample_and_eval_take_truncation_for_a_gan_run_and_refuse_it_elsewhere(tmp_path, capsys):
    from pathlib import Path

    import numpy as np

    from genlab.cli import main

    fixtures = Path(__file__).parents[1] / "fixtures" / "runs"
    out = tmp_path / "narrow.npz"
    assert main(["sample", str(fixtures / "gan"), "--n", "5", "--seed", "2", "--truncation", "0.6", "--out", str(out)]) == 0
    run = genlab.load(fixtures / "gan")
    expected = run.model.sample(5, torch.Generator().manual_seed(2), truncation=0.6)
    assert np.allclose(np.load(out)["images"], expected.numpy(), atol=1e-6)
    capsys.readouterr()
    assert main(["sample", str(fixtures / "vae"), "--truncation", "0.6", "--out", str(tmp_path / "v.png")]) == 2
    assert "the vae family samples without --truncation; only gan, dcgan, wgan-gp models take it" in capsys.readouterr().err
