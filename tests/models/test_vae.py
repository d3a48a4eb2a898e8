import math

import pytest
import torch
import torch.nn.functional as F

from genlab.errors import GenlabError
from genlab.models import DataSpec, build_model
from genlab.models.vae import gaussian_log_density, negative_elbo
from tests.models.conformance import FamilyConformance


class TestMLPVAE(FamilyConformance):
    family = "vae"
    settings = {"arch": "mlp", "hidden_dim": 32, "latent_dim": 4}


class TestConvVAE(FamilyConformance):
    family = "vae"
    settings = {"arch": "conv", "hidden_dim": 32, "latent_dim": 4, "conv_channels": 4, "lr": 3e-3}


class TestConditionalVAE(FamilyConformance):
    family = "vae"
    settings = {"arch": "mlp", "hidden_dim": 32, "latent_dim": 4, "conditional": True}


class TestConditionalConvVAE(FamilyConformance):
    family = "vae"
    settings = {"arch": "conv", "hidden_dim": 32, "latent_dim": 4, "conv_channels": 4, "conditional": True, "lr": 3e-3}


MNIST_SPEC = DataSpec(1, 28, 28, 10)


def test_default_is_the_classic_784_400_20_network():
    model = build_model("vae", MNIST_SPEC)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["coder.encoder.0.weight"] == (400, 784)
    assert shapes["coder.to_mean.weight"] == (20, 400)
    assert shapes["coder.to_logvar.weight"] == (20, 400)
    assert shapes["coder.decoder.2.weight"] == (784, 400)
    # 784*400+400 + 2*(400*20+20) + 20*400+400 + 400*784+784
    assert sum(p.numel() for p in model.parameters()) == 652_824


def test_encode_decode_reconstruct_shapes():
    model = build_model("vae", MNIST_SPEC, arch="conv").eval()
    x = torch.rand(3, 1, 28, 28)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (3, 20)
    assert model.decode(mean).shape == (3, 1, 28, 28)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and 0 <= recon.min() and recon.max() <= 1


def test_negative_elbo_matches_its_formula():
    torch.manual_seed(0)
    logits, x = torch.randn(2, 1, 2, 2), torch.rand(2, 1, 2, 2)
    mean, logvar = torch.randn(2, 3), torch.randn(2, 3)
    loss, kl = negative_elbo(logits, x, mean, logvar)
    bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").sum((1, 2, 3))
    # KL(N(m, s^2) || N(0, 1)) = 1/2 (s^2 + m^2 - 1 - log s^2), summed over dimensions
    expected_kl = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(1)
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(loss, bce + expected_kl, rtol=1e-5, atol=1e-4)


def test_gaussian_log_density_matches_torch_distributions():
    z, mean, logvar = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    reference = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_log_density(z, mean, logvar), reference)


def test_importance_weighted_bound_is_at_least_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    model = build_model("vae", DataSpec(1, 8, 8), hidden_dim=32, latent_dim=4).eval()
    x = torch.bernoulli(torch.rand(64, 1, 8, 8))
    torch.manual_seed(1)
    elbo = model.log_likelihood(x, k=1).mean().item()
    torch.manual_seed(1)
    iw = model.log_likelihood(x, k=64).mean().item()
    assert math.isfinite(elbo) and math.isfinite(iw)
    assert iw > elbo + 0.1  # log mean exp >= mean log (Jensen), strictly for an untrained model
    assert iw < 0  # a probability of binary pixels is below 1


def test_k1_bound_equals_minus_the_loss_in_expectation():
    torch.manual_seed(0)
    model = build_model("vae", DataSpec(1, 8, 8), hidden_dim=32, latent_dim=4).eval()
    x = torch.bernoulli(torch.rand(2000, 1, 8, 8))
    with torch.no_grad():
        logits, mean, logvar = model(x)
        loss = negative_elbo(logits, x, mean, logvar)[0].mean().item()
    bound = model.log_likelihood(x, k=1).mean().item()
    assert abs(bound + loss) < 0.02 * abs(loss)


def test_iwae_training_optimises_the_k_sample_bound_and_tightens_it():
    from genlab.data import load_dataset

    digits = load_dataset("digits").images[:64].float() / 255  # (64, 1, 8, 8) real digits
    x = torch.bernoulli(digits, generator=torch.Generator().manual_seed(0))
    models = {}
    for k in (1, 8):
        torch.manual_seed(0)
        model = build_model("vae", DataSpec(1, 8, 8), hidden_dim=32, latent_dim=4, train_samples=k)
        optimizers = model.configure_optimizers()
        torch.manual_seed(1)
        losses = [model.training_step((x, None), optimizers)["loss"] for _ in range(150)]
        assert losses[-1] < 0.8 * losses[0], k
        models[k] = model.eval()
    # The reported loss is the k-sample bound: at k = 8 it is minus log_likelihood(k=8) in expectation.
    torch.manual_seed(2)
    bound = -models[8].log_likelihood(x, k=8).mean().item()
    torch.manual_seed(2)
    with torch.no_grad():
        _, _, log_weights = models[8].importance_log_weights(x, None, 8)
    assert -(torch.logsumexp(log_weights, 0) - math.log(8)).mean().item() == pytest.approx(bound)
    # Trained on the tighter bound, the IWAE's k = 64 bound beats the VAE's on the data it saw.
    torch.manual_seed(3)
    vae = models[1].log_likelihood(x, k=64).mean().item()
    torch.manual_seed(3)
    iwae = models[8].log_likelihood(x, k=64).mean().item()
    assert iwae > vae


def test_conditional_decoder_depends_on_the_label():
    torch.manual_seed(0)
    model = build_model("vae", MNIST_SPEC, conditional=True).eval()
    g = torch.Generator
    threes = model.sample(4, generator=g().manual_seed(0), labels=3)
    sevens = model.sample(4, generator=g().manual_seed(0), labels=7)
    assert not torch.equal(threes, sevens)


def test_learning_rate_defaults_per_arch_and_is_recorded():
    assert build_model("vae", MNIST_SPEC).config.lr == 2e-3
    assert build_model("vae", MNIST_SPEC, arch="conv").config.lr == 1e-3
    assert build_model("vae", MNIST_SPEC, arch="conv", lr=5e-4).config.lr == 5e-4



def test_a_training_set_of_10_000_images_or_more_gets_the_conv_net_by_default(tmp_path):
    import genlab
    from genlab.data.dataset import ImageDataset

    def dataset(n: int, side: int = 8) -> ImageDataset:
        images = torch.randint(0, 256, (n, 1, side, side), generator=torch.Generator().manual_seed(0))
        return ImageDataset(images.to(torch.uint8), None, [], f"noise-{n}")

    big = dataset(10_000)
    assert (build_model("vae", big).config.arch, build_model("vae", big).config.lr) == ("conv", 1e-3)
    assert build_model("vae", dataset(9_999)).config.arch == "mlp"  # below: the MLP, quick and good on mnist-5k
    assert build_model("vae", dataset(10_000, side=10)).config.arch == "mlp"  # the conv net needs sides of 4k
    assert build_model("vae", big, arch="mlp").config.arch == "mlp"  # a setting given wins
    assert build_model("vae", DataSpec(1, 8, 8)).config.arch == "mlp"  # a bare spec has no size
    run = genlab.train("vae", big, tmp_path / "run", test_data=dataset(64), epochs=1, progress=False,
                       sample_every=0, final_eval=False, model_config={"conv_channels": 4, "hidden_dim": 16})
    assert run.model.config.arch == "conv" and genlab.Run.load(tmp_path / "run").model.config.arch == "conv"

def test_conv_vae_rejects_sizes_not_divisible_by_4():
    with pytest.raises(GenlabError, match="divisible by 4"):
        build_model("vae", DataSpec(1, 30, 30), arch="conv")


def test_bad_settings_are_named():
    with pytest.raises(GenlabError, match="unknown VAE arch"):
        build_model("vae", MNIST_SPEC, arch="transformer")
    with pytest.raises(GenlabError, match="train_samples must be a positive integer"):
        build_model("vae", MNIST_SPEC, train_samples=0)
    with pytest.raises(GenlabError, match="has no setting 'depth'"):
        build_model("vae", MNIST_SPEC, {"depth": 3})
    with pytest.raises(GenlabError, match="not a valid int"):
        build_model("vae", MNIST_SPEC, {"latent_dim": "many"})
    with pytest.raises(GenlabError, match="unknown model 'vea'; choose one of: dcgan, ddpm, gan, gpt, pixelcnn, realnvp, vae, wgan-gp"):
        build_model("vea", MNIST_SPEC)
    with pytest.raises(GenlabError, match="labelled data"):
        build_model("vae", DataSpec(1, 28, 28, 0), conditional=True)
    with pytest.raises(GenlabError, match="unknown VAE prior 'uniform'"):
        build_model("vae", MNIST_SPEC, prior="uniform")
    with pytest.raises(GenlabError, match="prior_components must be an integer from 1 to 1,000"):
        build_model("vae", MNIST_SPEC, prior_components=10**9)
    with pytest.raises(GenlabError, match="prior_components"):
        build_model("vae", MNIST_SPEC, prior_components=True)
    with pytest.raises(GenlabError, match="kl_weight must be a positive number"):
        build_model("vae", MNIST_SPEC, kl_weight=-1.0)


def test_interpolation_runs_between_two_latents():
    model = build_model("vae", MNIST_SPEC).eval()
    strip = model.interpolate(6, generator=torch.Generator().manual_seed(0))
    assert strip.shape == (6, 1, 28, 28)
    z0, z1 = model.sample_latent(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(strip[0], model.decode(z0[None])[0])
    torch.testing.assert_close(strip[-1], model.decode(z1[None])[0])


def test_declares_likelihood_encoder_and_reconstruction():
    from genlab.models import CanComplete, CanReconstruct, HasEncoder, HasLatentSpace, HasLikelihood

    model = build_model("vae", MNIST_SPEC, arch="conv").eval()
    assert isinstance(model, HasLikelihood) and isinstance(model, HasEncoder) and isinstance(model, HasLatentSpace)
    assert isinstance(model, CanReconstruct) and not isinstance(model, CanComplete)
    x = torch.rand(3, 1, 28, 28)
    z = model.latent_of(x)
    mean, _ = model.encode(x)
    assert z.shape == (3, 20) and torch.equal(z, mean)  # the posterior mean
    torch.testing.assert_close(model.reconstruct(x), model.decode(z))


def test_binarizing_declares_binary_pixels_and_its_data_model():
    plain, binary = build_model("vae", MNIST_SPEC), build_model("vae", MNIST_SPEC, binarize=True)
    assert (plain.binary_pixels, binary.binary_pixels) == (False, True)
    assert (plain.likelihood_data_model, binary.likelihood_data_model) == ("unit-interval pixels", "binarized")
    assert plain.likelihood_kind == "bound: importance-weighted (Burda et al. 2016), k = 100, p(z) the fitted mixture prior"


@pytest.mark.parametrize("setting, value", [("latent_dim", True), ("binarize", 1), ("lr", True), ("arch", "MLP")])
def test_settings_of_the_wrong_type_are_refused(setting, value):
    with pytest.raises(GenlabError, match=setting):
        build_model("vae", MNIST_SPEC, **{setting: value})


# ---------------------------------------------------------------- the mixture prior and beta (issue 20)


def test_an_unfitted_mixture_is_the_standard_normal():
    from genlab.models.vae.prior import MixturePrior

    prior = MixturePrior(3, 5)
    z = torch.randn(7, 5)
    torch.testing.assert_close(prior.log_density(z), torch.distributions.Normal(0, 1).log_prob(z).sum(-1))


def test_the_mixture_log_density_matches_torch_distributions_after_a_fit():
    from genlab.models.vae.prior import MixturePrior

    torch.manual_seed(0)
    # two well-separated clusters: the fit finds both, half the weight each
    points = torch.cat([torch.randn(300, 3) * 0.5 + 4, torch.randn(300, 3) * 0.5 - 4])
    prior = MixturePrior(2, 3)
    mean_log_density = prior.fit(points)
    assert sorted(prior.weights.tolist()) == pytest.approx([0.5, 0.5], abs=0.01)
    assert sorted(prior.means[:, 0].tolist()) == pytest.approx([-4, 4], abs=0.15)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(prior.weights),
        torch.distributions.MultivariateNormal(prior.means, scale_tril=prior.scale_tril),
    )
    torch.testing.assert_close(prior.log_density(points), reference.log_prob(points), rtol=1e-5, atol=1e-4)
    assert mean_log_density == pytest.approx(reference.log_prob(points).mean().item(), abs=1e-3)
    draws = prior.sample(4000, torch.Generator().manual_seed(1))
    assert draws.shape == (4000, 3)
    assert (draws[:, 0] > 0).double().mean().item() == pytest.approx(0.5, abs=0.03)  # both clusters drawn


def test_a_mixture_with_more_components_than_points_gives_the_spare_ones_no_weight():
    from genlab.models.vae.prior import MixturePrior

    prior = MixturePrior(5, 2)
    prior.fit(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]))
    assert (prior.weights > 0).sum().item() == 3
    assert prior.sample(50, torch.Generator().manual_seed(0)).isfinite().all()
    assert prior.log_density(torch.zeros(2, 2)).isfinite().all()


def test_training_fits_the_mixture_to_the_encodings_and_samples_from_it(tmp_path):
    import genlab

    settings = {"hidden_dim": 32, "latent_dim": 4, "prior_components": 3}
    run = genlab.train("vae", "digits", tmp_path / "run", epochs=2, progress=False, sample_every=0,
                       model_config=settings)  # fmt: skip
    model = run.model
    assert model.mixture is not None and (model.mixture.weights > 0).sum().item() == 3
    assert all("prior_log_density" in record for record in run.history)
    from genlab.data import load_dataset
    from genlab.data.transforms import to_unit

    x = to_unit(load_dataset("digits", "train").images[:400])
    with torch.no_grad():
        encodings = model.latent_of(x)
    # the prior sits where the encodings are: they are far likelier under it than under N(0, I)
    standard = torch.distributions.Normal(0, 1).log_prob(encodings).sum(-1).mean()
    assert model.log_prior(encodings).mean() > standard + 1
    first = run.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, run.sample(6, generator=torch.Generator().manual_seed(3)))
    assert torch.isfinite(model.log_likelihood(x[:8], k=4)).all()


def test_kl_weight_scales_the_kl_term_of_the_training_loss_only():
    torch.manual_seed(0)
    model = build_model("vae", DataSpec(1, 8, 8), hidden_dim=32, latent_dim=4, kl_weight=0.25)
    x = torch.rand(16, 1, 8, 8)
    optimizers = model.configure_optimizers()
    for group in optimizers["model"].param_groups:
        group["lr"] = 0.0  # measure the loss without changing the weights
    torch.manual_seed(1)
    numbers = model.training_step((x, None), optimizers)
    torch.manual_seed(1)
    logits, mean, logvar = model(x)
    elbo_loss, kl = negative_elbo(logits, x, mean, logvar)
    assert numbers["loss"] == pytest.approx((elbo_loss - 0.75 * kl).mean().item(), rel=1e-5)
    with pytest.raises(GenlabError, match="kl_weight"):
        build_model("vae", MNIST_SPEC, kl_weight=0.5, train_samples=4)


def test_a_run_written_before_the_mixture_prior_rebuilds_with_the_standard_one():
    from genlab.models import stored_config

    older = {"arch": "mlp", "latent_dim": 2, "hidden_dim": 16}  # no `prior`: written before it existed
    assert stored_config("vae", older).prior == "standard"
    assert stored_config("vae", {**older, "prior": "mixture"}).prior == "mixture"
    assert build_model("vae", MNIST_SPEC).config.prior == "mixture"  # a new run's default


# ---------------------------------------------------------------- one mixture per class (conditional VAE, issue 20)


def test_a_class_mixture_draws_each_latent_from_its_labels_own_mixture():
    from genlab.models.vae.prior import ClassMixturePrior, MixturePrior

    torch.manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])  # class k's encodings sit around centres[k]
    labels = torch.arange(600) % 3
    latents = centres[labels] + 0.3 * torch.randn(600, 2)
    prior = ClassMixturePrior(3, 2, 2)
    mean_log_density = prior.fit(latents, labels)
    asked = torch.tensor([2, 0, 1, 1] * 50)
    draws = prior.sample(asked, torch.Generator().manual_seed(1))
    assert draws.shape == (200, 2)
    assert (draws - centres[asked]).norm(dim=1).max() < 2.0  # every draw near its own class's encodings
    assert torch.equal(draws, prior.sample(asked, torch.Generator().manual_seed(1)))  # seeded
    # p(z|y) is the class's own mixture, fitted to its latents alone
    alone = MixturePrior(2, 2)
    alone.fit(latents[labels == 1])
    z = torch.randn(5, 2)
    torch.testing.assert_close(prior.log_density(z, torch.ones(5, dtype=torch.long)), alone.log_density(z))
    assert mean_log_density == pytest.approx(prior.log_density(latents, labels).mean().item(), abs=1e-3)
    assert prior.log_density(latents, labels).mean() > prior.log_density(latents, (labels + 1) % 3).mean() + 10


def test_a_conditional_vae_defaults_to_one_mixture_per_class_and_an_unconditional_one_cannot_have_it():
    from genlab.models import stored_config
    from genlab.models.vae.prior import ClassMixturePrior

    conditional = build_model("vae", MNIST_SPEC, conditional=True)
    assert conditional.config.prior == "class_mixture" and isinstance(conditional.mixture, ClassMixturePrior)
    assert len(conditional.mixture.per_class) == 10
    assert build_model("vae", MNIST_SPEC, conditional=True, prior="mixture").config.prior == "mixture"  # by --set
    with pytest.raises(GenlabError, match="class_mixture fits one mixture per class: it needs --conditional"):
        build_model("vae", MNIST_SPEC, prior="class_mixture")
    # a conditional run written with the pooled mixture keeps it
    stored = stored_config("vae", {"latent_dim": 2, "hidden_dim": 16, "conditional": True, "prior": "mixture"})
    assert stored.prior == "mixture"


def test_a_trained_conditional_vae_fits_each_class_and_samples_each_label_from_its_own(tmp_path):
    import genlab

    settings = {"hidden_dim": 32, "latent_dim": 4, "prior_components": 2, "conditional": True}
    run = genlab.train("vae", "digits", tmp_path / "run", epochs=2, progress=False, sample_every=0,
                       model_config=settings)  # fmt: skip
    model = run.model
    assert all((mixture.weights > 0).sum() == 2 for mixture in model.mixture.mixtures())
    assert model.mixture.components == 20
    from genlab.data import load_dataset
    from genlab.data.transforms import to_unit

    train = load_dataset("digits", "train")
    x, y = to_unit(train.images[:400]), train.labels[:400]
    with torch.no_grad():
        encodings = model.latent_of(x, y)
    # each class's encodings are likelier under their own class's mixture than under another's
    assert model.log_prior(encodings, y).mean() > model.log_prior(encodings, (y + 1) % 10).mean()
    labels = torch.tensor([3] * 6)
    images = run.sample(6, generator=torch.Generator().manual_seed(3), labels=labels)
    z = model.mixture.sample(labels, torch.Generator().manual_seed(3))
    torch.testing.assert_close(images, model.decode(z, labels).cpu())  # z from class 3's own mixture
    assert torch.isfinite(model.log_likelihood(x[:8], y[:8], k=4)).all()
