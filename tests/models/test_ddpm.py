"""The DDPM family: the contract, the UNet, guidance, EMA, resume, and overfitting a few images."""

from __future__ import annotations

import pytest
import torch

import genlab
from genlab.errors import GenlabError
from genlab.models import DataSpec, build_model
from genlab.models.ddpm import timestep_embedding
from tests.models.conformance import FamilyConformance

TINY = {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 20, "sample_steps": 5, "lr": 2e-3}


class TestDDPM(FamilyConformance):
    family, settings = "ddpm", TINY


class TestConditionalDDPM(FamilyConformance):
    family, settings = "ddpm", {**TINY, "conditional": True, "prediction": "v", "schedule": "cosine"}


class TestDDPMWithoutEMA(FamilyConformance):
    family, settings = "ddpm", {**TINY, "ema": 0.0, "attention": False}


SPEC = DataSpec(1, 8, 8, 3, ("a", "b", "c"))


def test_presets_are_resolved_into_the_config():
    model = build_model("ddpm", DataSpec(1, 28, 28, 10, tuple("0123456789")))
    assert (model.config.channels, model.config.channel_mult, model.config.num_res_blocks) == (16, (1, 2, 4), 1)
    small = build_model("ddpm", DataSpec(1, 28, 28, 0, ()), preset="small")
    assert (small.config.channels, small.config.channel_mult, small.config.num_res_blocks) == (32, (1, 2, 2), 1)
    base = build_model("ddpm", DataSpec(1, 28, 28, 0, ()), preset="base")
    assert base.config.channels == 64 and base.config.num_res_blocks == 2
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    assert model.network(images, torch.tensor([0, 999])).shape == (2, 1, 28, 28)


def test_sizes_the_unet_cannot_take_and_bad_settings_are_named():
    with pytest.raises(GenlabError, match="multiples of 4; these are 30x30"):
        build_model("ddpm", DataSpec(1, 30, 30, 0, ()))
    with pytest.raises(GenlabError, match="unknown DDPM preset 'huge'"):
        build_model("ddpm", SPEC, preset="huge")
    with pytest.raises(GenlabError, match="sample_steps must be from 1 to diffusion_steps"):
        build_model("ddpm", SPEC, **{**TINY, "sample_steps": 50})
    with pytest.raises(GenlabError, match="--guidance needs a conditional model"):
        build_model("ddpm", SPEC, **TINY).sample(2, guidance=3.0)


def test_timestep_embedding_is_sinusoidal():
    embedding = timestep_embedding(torch.tensor([0, 5]), 8)
    assert embedding.shape == (2, 8)
    assert torch.allclose(embedding[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert torch.allclose(embedding[1, 0], torch.cos(torch.tensor(5.0)))


def perturbed(model, seed=0):
    """Random output layers, so that the zero-initialised UNet's prediction depends on its input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for network in (model.network, model.ema_network):
            for p in network.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def test_guidance_0_is_the_unconditional_path_and_1_the_conditional_one():
    torch.manual_seed(0)
    model = perturbed(build_model("ddpm", SPEC, **TINY, conditional=True))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = model.sample(4, g(), labels=0, guidance=0.0)
    b = model.sample(4, g(), labels=2, guidance=0.0)
    assert torch.equal(a, b)  # the label plays no part
    null = torch.full((4,), SPEC.num_classes)  # the null class: what guidance 0 conditions on
    x = torch.rand(4, 1, 8, 8)
    t = torch.tensor([3, 3, 3, 3])
    mixed = model.guided(torch.zeros(4, dtype=torch.long), 0.0)(x, t)
    assert torch.allclose(mixed, model.ema_network(x, t, null))
    guided = model.guided(torch.zeros(4, dtype=torch.long), 3.0)(x, t)
    conditional = model.ema_network(x, t, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(guided, mixed + 3.0 * (conditional - mixed), atol=1e-5)
    assert not torch.equal(model.sample(4, g(), labels=0, guidance=1.0), a)


def test_ddim_eta_0_is_deterministic_and_trajectory_runs_from_noise_to_image():
    torch.manual_seed(0)
    model = perturbed(build_model("ddpm", SPEC, **TINY))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(model.sample(3, g(), sampler="ddim", steps=10), model.sample(3, g(), sampler="ddim", steps=10))
    images, strip = model.sample_chain(3, 5, g(), sampler="ddpm", steps=20)
    assert len(strip) == 5 and torch.equal(strip[-1], images)  # x_T, every 5 steps, x_0
    assert images.min() >= 0 and images.max() <= 1
    assert not torch.equal(strip[0], strip[1])  # each shown step changes the image


def test_sample_chain_runs_from_x_T_to_the_images_sample_draws():
    torch.manual_seed(0)
    model = perturbed(build_model("ddpm", SPEC, **TINY, conditional=True))
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    labels = torch.tensor([0, 1, 2])
    images, chain = model.sample_chain(3, 2, g(), labels)
    assert model.chain_steps == TINY["sample_steps"] == 5 and model.chain_sampler == "SDE-DPM-Solver++"
    assert len(chain) == 4  # x_T, after steps 2 and 4, and x_0 after the 5th
    assert all(state.shape == (3, 1, 8, 8) and 0 <= state.min() and state.max() <= 1 for state in chain)
    assert torch.equal(chain[-1], images) and torch.equal(images, model.sample(3, g(), labels))
    images, chain = model.sample_chain(2, 3, g(), labels=1, sampler="ddim", steps=7, eta=0.0, guidance=2.0)
    assert images.shape == (2, 1, 8, 8) and len(chain) == 1 + 2 + 1  # x_T, after 3 and 6 steps, x_0
    for every in (0, -1, True, 1.5):
        with pytest.raises(GenlabError, match="positive integer"):
            model.sample_chain(2, every, g())


def test_declared_sampler_options_take_good_values_and_refuse_bad_ones():
    model = build_model("ddpm", SPEC, **TINY)
    assert [option.name for option in model.sampler_options] == ["sampler", "steps", "eta", "guidance"]
    assert [option.config_field for option in model.sampler_options] == ["sampler", "sample_steps", "eta", "guidance"]
    checked = model.check_sampler_options({"sampler": "ddim", "steps": 20.0, "eta": 1, "guidance": 0})
    assert checked == {"sampler": "ddim", "steps": 20, "eta": 1.0, "guidance": 0.0}
    assert type(checked["steps"]) is int and type(checked["eta"]) is float
    bad = [
        ({"sampler": "euler"}, "--sampler must be one of ddpm, ddim, dpm\\+\\+"),
        ({"steps": 0}, "--steps must be from 1"),
        ({"steps": 2.5}, "--steps must be an integer"),
        ({"steps": True}, "--steps must be an integer"),
        ({"steps": 21}, "--steps must be from 1 to the model's 20 diffusion steps, got 21"),
        ({"eta": 1.5}, "--eta must be from 0 to 1"),
        ({"eta": -0.1}, "--eta must be from 0 to 1"),
        ({"eta": float("nan")}, "--eta must be from 0 to 1"),
        ({"guidance": -1.0}, "--guidance must be from 0"),
        ({"guidance": "strong"}, "--guidance must be a number"),
        ({"trajectory_every": 5}, "--trajectory-every is not an option of this sampler"),
    ]
    for options, message in bad:
        with pytest.raises(GenlabError, match=message):
            model.check_sampler_options(options)


def test_integer_and_number_settings_are_checked_one_way():
    for settings, message in [
        ({"channels": 12}, "channels must be a positive multiple of 8"),
        ({"channels": True}, "channels must be an integer >= 8"),
        ({"channel_mult": (1, 0)}, "channel_mult must be a positive integer"),
        ({"channel_mult": (1, True)}, "channel_mult must be a positive integer"),
        ({"num_res_blocks": 0}, "num_res_blocks must be a positive integer"),
        ({"diffusion_steps": 1}, "diffusion_steps must be an integer from 2 to 100,000"),
        ({"diffusion_steps": 10**9}, "diffusion_steps must be an integer from 2 to 100,000"),
        ({"dropout": 1.0}, "dropout must be a number >= 0 and < 1"),
        ({"ema": True}, "ema must be a number"),
        ({"eta": 2.0}, "eta must be a number >= 0 and <= 1"),
        ({"guidance": -0.5}, "guidance must be a number >= 0"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"schedule": "quadratic"}, "unknown DDPM schedule 'quadratic'"),
        ({"sampler": "euler"}, "unknown DDPM sampler 'euler'"),
        ({"attention": 1}, "attention must be true or false"),
    ]:
        with pytest.raises(GenlabError, match=message):
            build_model("ddpm", SPEC, **{**TINY, **settings})


def test_a_tiny_model_overfits_eight_images():
    torch.manual_seed(0)
    model = build_model("ddpm", SPEC, **{**TINY, "dropout": 0.0, "lr": 3e-3})
    optimizers = model.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    images = torch.bernoulli(torch.full((8, 1, 8, 8), 0.5), generator=g)  # on the 8-bit grid: 0 and 1

    def nll():  # the variational bound, every one of the 19 KL terms, in nats per image
        torch.manual_seed(1)
        return -model.log_likelihood(images, timesteps=19).mean().item()

    before = nll()
    losses = [model.training_step((images, None), optimizers)["loss"] for _ in range(400)]
    first, last = sum(losses[:20]) / 20, sum(losses[-50:]) / 50
    assert first > 0.6 and last < 0.25  # L_simple starts near E[eps^2] = 1 (the UNet outputs 0 at first)
    after = nll()
    assert 0 < after < 0.7 * before  # the bound tightens as the model learns the eight images
    assert nll() == after  # seeded: the same figure twice


def test_a_checkpoint_resumes_with_the_ema_intact(tmp_path):
    kwargs = dict(epochs=2, seed=1, progress=False, sample_every=0, model_config={**TINY, "ema": 0.9})
    genlab.train("ddpm", "digits", tmp_path / "straight", **kwargs)
    genlab.train("ddpm", "digits", tmp_path / "resumed", **{**kwargs, "epochs": 1})
    genlab.train("ddpm", "digits", tmp_path / "resumed", resume=True, epochs=2, progress=False, sample_every=0)
    for name in ("model.safetensors", "state.safetensors"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name
    run = genlab.Run.load(tmp_path / "resumed")
    assert run.model.ema_network is not None
    assert not torch.equal(next(run.model.ema_network.parameters()), next(run.model.network.parameters()))


def test_sampling_options_from_the_command_line(tmp_path, capsys):
    from genlab.cli import main

    settings = ["--set", "channels=8", "--set", "channel_mult=1,2", "--set", "diffusion_steps=50",
                "--set", "sample_steps=10", "--conditional"]
    out = tmp_path / "ddpm"
    assert main(["train", "ddpm", "--data", "digits", "--epochs", "1", "--quiet", "--sample-every", "0",
                 "--out", str(out), *settings]) == 0
    for extra in (["--sampler", "ddpm", "--steps", "50"], ["--labels", "7", "--guidance", "3.0"],
                  ["--sampler", "ddim", "--eta", "0.5", "--steps", "7"], ["--sampler", "dpm++", "--steps", "8"]):
        assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "a.png"), *extra]) == 0
    assert main(["sample", str(out), "--n", "2", "--trajectory", "5", "--steps", "20", "--format", "npz",
                 "--out", str(tmp_path / "t.npz")]) == 0
    import numpy as np

    with np.load(tmp_path / "t.npz") as saved:
        assert saved["images"].shape == (2 * 5, 1, 8, 8)  # x_T, after 5, 10, 15 and 20 steps, per image
    assert main(["eval", str(out), "--metrics", "nll", "--n", "20"]) == 0
    import json

    nll = json.loads((out / "metrics.json").read_text())
    assert nll["metrics"]["bits_per_dim"] > 0
    assert nll["details"]["nll"]["data_model"].startswith("256-way discrete")
    assert main(["sample", str(out), "--steps", "51"]) == 2
    assert "--steps must be from 1 to the model's 50" in capsys.readouterr().err
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--quiet", "--out", str(vae)]) == 0
    assert main(["sample", str(vae), "--sampler", "ddim"]) == 2
    assert "the vae family samples without --sampler; only ddpm models take it" in capsys.readouterr().err


def test_eval_draws_with_the_sampler_options_it_is_given(tmp_path, capsys):
    from genlab.cli import main

    out = tmp_path / "ddpm"
    genlab.train("ddpm", "mnist-5k", out, epochs=1, seed=0, progress=False, sample_every=0,
                 model_config={**TINY, "diffusion_steps": 40})
    ddim = genlab.evaluate(out, n=40, metrics="fid")
    ancestral = genlab.evaluate(out, n=40, metrics="fid", sample_options={"sampler": "ddpm", "steps": 40})
    assert ancestral.info["source"]["sample_options"] == {"sampler": "ddpm", "steps": 40}
    assert "sample_options" not in ddim.info["source"]
    assert ancestral.metrics["fid"] != ddim.metrics["fid"]  # other images
    assert main(["eval", str(out), "--n", "40", "--metrics", "fid", "--steps", "41"]) == 2
    assert "--steps must be from 1 to the model's 40" in capsys.readouterr().err
    assert main(["eval", "--samples", str(tmp_path / "x.npz"), "--data", "mnist-5k", "--sampler", "ddpm"]) == 2
    assert "give a run" in capsys.readouterr().err


def test_run_sample_draws_a_cpu_diffusion_model_64_images_at_a_time(tmp_path):
    from genlab.run import Run

    model = build_model("ddpm", SPEC, **TINY)
    assert model.sample_batch_size == 64 and build_model("vae", SPEC).sample_batch_size == 1000
    sizes, draw = [], model.sample
    model.sample = lambda n, **options: sizes.append(n) or draw(n, **options)
    images = Run(tmp_path, {}, model).sample(130, generator=torch.Generator().manual_seed(0))
    assert sizes == [64, 64, 2] and images.shape == (130, 1, 8, 8)
