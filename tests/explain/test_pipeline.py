"""`genlab explain`: every family's stages and layers, measured on a real batch of mnist-5k, and the command."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from torch import nn

import genlab
from genlab.cli import main
from genlab.data import load_dataset
from genlab.explain.pipeline import explain_model, explain_run, trace_layers
from genlab.models import build_model, image_families
from genlab.explain.stages import PredictionPass
from genlab.run import Run

# Small networks of every family, so that the whole file runs in seconds on one thread.
TINY = {
    "vae": {"hidden_dim": 32, "latent_dim": 4},
    "gan": {"latent_dim": 8},
    "dcgan": {"latent_dim": 8, "channels": 8},
    "wgan-gp": {"latent_dim": 8, "channels": 8},
    "ddpm": {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 20, "sample_steps": 3},
    "pixelcnn": {"channels": 8, "layers": 2, "head_channels": 16},
    "realnvp": {"hidden_channels": 8},
}
BATCH = 8
PIXEL = r"pixel \((\d+), (\d+), (\d+), (\d+)\)"


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist-5k")


@pytest.fixture(scope="module")
def explained(mnist):
    """Each family, untrained (seed 0), on the same real batch of mnist-5k."""
    return {family: explain_model(family, mnist, seed=0, model_config=TINY[family]) for family in image_families()}


def traced_network(model) -> nn.Module | list[nn.Module]:
    """The network each family's prediction trace runs, found independently of the family's code."""
    if model.family == "vae":
        return [model.coder.decoder] + ([model.coder.from_latent] if hasattr(model.coder, "from_latent") else [])
    if model.family in ("gan", "dcgan", "wgan-gp"):
        return model.generator
    return {"ddpm": lambda: model.ema_network, "pixelcnn": lambda: model.network, "realnvp": lambda: model.flow}[
        model.family]()


def count(network) -> int:
    networks = network if isinstance(network, list) else [network]
    return sum(p.numel() for n in networks for p in n.parameters())


@pytest.mark.parametrize("family", sorted(image_families()))
def test_stages_start_from_the_real_batch_and_chain(family, explained, mnist):
    explanation = explained[family]
    stages = explanation.stages
    assert stages[0].name == "load" and stages[1].name == "preprocess"
    assert stages[0].input_shape == tuple(mnist.images.shape) == (4000, 1, 28, 28)
    assert stages[0].output_shape == (BATCH, 1, 28, 28) == tuple(mnist.images[explanation.data["indices"]].shape)
    assert [s.path for s in stages] == sorted((s.path for s in stages), key=["training", "generation"].index)
    for before, stage in zip(stages, stages[1:]):
        if stage.path == before.path and stage.input_shape is not None:  # None: it starts from fresh noise
            assert stage.input_shape == before.output_shape, (before.name, stage.name)
    training = [s for s in stages if s.path == "training"]
    generation = [s for s in stages if s.path == "generation"]
    assert training[-1].name in ("loss", "losses")
    assert generation[0].input_shape is None  # noise, a latent, or uniforms
    assert generation[-1].output_shape == (BATCH, 1, 28, 28)  # the generated images
    assert all(s.what and s.example for s in stages)


@pytest.mark.parametrize("family", sorted(image_families()))
def test_examples_are_the_real_pixels(family, explained, mnist):
    explanation = explained[family]
    first = explanation.data["indices"][0]
    load, preprocess = explanation.stages[:2]
    *pixel, level = map(int, re.search(PIXEL + r" = (\d+)", load.example).groups())
    assert pixel[0] == 0 and int(mnist.images[first, pixel[1], pixel[2], pixel[3]]) == level
    assert explanation.data["labels"][0] == int(mnist.labels[first])
    match = re.fullmatch(PIXEL + r" value (\d+) becomes ([\d.]+)", preprocess.example)
    *same_pixel, value, scaled = match.groups()
    assert list(map(int, same_pixel)) == pixel and int(value) == level
    assert scaled == f"{level / 255:.3g}"  # recomputed here: 150 becomes 0.588
    if family in ("gan", "dcgan", "wgan-gp", "ddpm"):  # these families scale once more, to [-1, 1]
        scale = next(s for s in explanation.stages if s.name == "scale to [-1, 1]")
        before, after = map(float, re.search(r"\) ([-\d.]+) becomes ([-\d.]+)", scale.example).groups())
        assert after == pytest.approx(2 * level / 255 - 1, abs=5e-3) and before == pytest.approx(level / 255, abs=5e-4)
    if family == "realnvp":  # (k + u) / 256
        dequantize = explanation.stages[2]
        k, u, result = re.search(r"level (\d+) becomes \((\d+) \+ ([\d.]+)\) / 256 = ([\d.]+)",
                                 dequantize.example).groups()[1:]
        assert int(k) == level and float(result) == pytest.approx((level + float(u)) / 256, abs=1e-3)


def test_the_vae_loss_is_the_models_own_number(mnist):
    """The -ELBO stage on the batch equals the family's own negative_elbo, recomputed from the same draws."""
    from genlab.models.vae import negative_elbo

    explanation = explain_model("vae", mnist, seed=3, model_config=TINY["vae"])
    torch.manual_seed(3)
    model = build_model("vae", mnist, TINY["vae"]).eval()
    generator = torch.Generator().manual_seed(3)
    index = torch.randperm(len(mnist), generator=generator)[:BATCH]
    x = mnist.images[index].float() / 255
    with torch.no_grad():
        mean, logvar = model.encode(x)
        z = mean + torch.randn(mean.shape, generator=generator) * (0.5 * logvar).exp()
        loss, _ = negative_elbo(model.coder.decode_logits(z, None), x, mean, logvar)
    shown = explanation.stages[-3].example
    assert shown.startswith(f"{loss.mean():,.1f} nats per image")


@pytest.mark.parametrize("family", sorted(image_families()))
def test_layers_come_from_hooks_and_sum_to_the_network(family, explained, mnist):
    explanation = explained[family]
    torch.manual_seed(0)
    model = build_model(family, mnist, TINY[family])
    network = traced_network(model)
    layers = explanation.layers
    assert explanation.parameters == sum(layer.parameters for layer in layers) == count(network)
    assert "took no part" not in explanation.trace_note
    assert layers[0].name == "input" and layers[-1].name == "output"
    modules = dict(n for net in (network if isinstance(network, list) else [network]) for n in net.named_modules())
    for layer in layers[1:-1]:  # real modules, with their own parameter counts
        name = layer.name.split(".", 1)[1] if family == "vae" else layer.name  # the VAE names its decoder parts
        module = modules[name]
        assert type(module).__name__ == layer.type
        assert layer.parameters == sum(p.numel() for p in module.parameters(recurse=False))
        assert layer.output_shape[0] == BATCH
    expected = {"pixelcnn": (BATCH, 1, 256, 28, 28)}.get(family, (BATCH, 1, 28, 28))
    assert layers[-1].output_shape == expected  # the image (PixelCNN: every pixel's 256 logits)
    assert layers[0].output_shape[0] == BATCH


def test_trace_layers_hooks_each_module_once_and_removes_its_hooks():
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    network = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), shared, shared)  # `shared` runs twice
    x = torch.randn(5, 3)
    layers = trace_layers(PredictionPass("net", network, "x", x, lambda: network(x), "y", "a test"))
    assert [(layer.name, layer.type, layer.output_shape, layer.parameters) for layer in layers] == [
        ("input", "x", (5, 3), 0), ("0", "Linear", (5, 4), 16), ("1", "ReLU", (5, 4), 0), ("2", "Linear", (5, 4), 20),
        ("output", "y", (5, 4), 0),
    ]
    assert all(not module._forward_hooks for module in network.modules())


@pytest.mark.parametrize("family", sorted(image_families()))
def test_same_seed_same_json_and_the_caller_rng_is_untouched(family, explained, mnist):
    state = torch.get_rng_state()
    again = explain_model(family, mnist, seed=0, model_config=TINY[family]).to_dict()
    other = explain_model(family, mnist, seed=1, model_config=TINY[family]).to_dict()
    assert torch.equal(state, torch.get_rng_state())
    first = explained[family].to_dict()
    assert json.dumps(first) == json.dumps(again)
    assert json.loads(json.dumps(first)) == first  # JSON-ready as it is
    assert set(first) >= {"family", "idea", "data", "stages", "layers", "parameters", "trace_note"}
    assert set(first["stages"][0]) >= {"name", "what", "input_shape", "output_shape", "example"}
    assert set(first["layers"][0]) == {"name", "type", "output_shape", "parameters"}
    assert first["data"]["indices"] != other["data"]["indices"]
    assert [s["example"] for s in first["stages"]] != [s["example"] for s in other["stages"]]
    assert first["idea"].count(". ") + 1 == 2 and first["idea"].endswith(".")  # two sentences


@pytest.mark.parametrize("family", sorted(image_families()))
def test_text_and_markdown_show_every_stage_and_layer(family, explained):
    explanation = explained[family]
    text, markdown = explanation.to_text(), explanation.to_markdown()
    for stage in explanation.stages:
        assert stage.name in text and stage.example.split()[0] in text
        assert f"| {stage.name} |" in markdown
    assert f"Data flow - {len(explanation.stages)} stages" in text
    assert f"{explanation.parameters:,}" in text and f"**{explanation.parameters:,}**" in markdown
    rows = [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(explanation.stages)


@pytest.mark.parametrize("family, settings, stage", [
    ("vae", {"arch": "conv", "conditional": True}, "encode"),
    ("vae", {"binarize": True, "train_samples": 2}, "binarize"),
    ("dcgan", {"conditional": True, "generator_conditioning": "batchnorm", "ema": 0.9}, "generate"),
    ("dcgan", {"conditional": True}, "auxiliary classifier"),
    ("gan", {"conditional": True, "conditioning": "concat"}, "labels"),
    ("ddpm", {"conditional": True, "prediction": "v", "ema": 0.0}, "UNet"),
    ("pixelcnn", {"binarize": True, "conditional": True}, "binarize"),
    ("realnvp", {"conditional": True}, "flow"),
])
def test_variants_chain_and_count_their_parameters(family, settings, stage, mnist):
    explanation = explain_model(family, mnist, seed=0, model_config={**TINY[family], **settings})
    assert stage in [s.name for s in explanation.stages]
    # A conditional GAN's labels and auxiliary classifier are side branches into its networks
    main = [s for s in explanation.stages if s.name not in ("labels", "auxiliary classifier")]
    for before, after in zip(main, main[1:]):
        if after.path == before.path and after.input_shape is not None:
            assert after.input_shape == before.output_shape
    assert "took no part" not in explanation.trace_note
    assert explanation.parameters == sum(layer.parameters for layer in explanation.layers) > 0
    if family == "vae" and settings.get("arch") == "conv":
        assert "flatten" not in [s.name for s in explanation.stages]


def test_a_built_model_is_explained_as_it_is(mnist):
    torch.manual_seed(0)
    model = build_model("gan", mnist, TINY["gan"]).train()
    explanation = explain_model(model, mnist, seed=0)
    by_name = explain_model("gan", mnist, seed=0, model_config=TINY["gan"])
    assert explanation.stages == by_name.stages and explanation.layers == by_name.layers
    assert model.training  # its mode is put back
    with pytest.raises(genlab.GenlabError, match="this gan model takes 1x28x28 images, but digits has 1x8x8"):
        explain_model(model, "digits")


# ---------------------------------------------------------------- a trained run and the command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "vae"
    genlab.train("vae", "digits", out, epochs=1, seed=0, progress=False, sample_every=0,
                 model_config=TINY["vae"])
    return out


def files(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_trained_run_is_explained_with_its_model_and_data(tiny_run):
    before = files(tiny_run)
    explanation = explain_run(tiny_run, seed=2)
    assert files(tiny_run) == before  # explaining writes nothing
    run = Run.load(tiny_run)
    assert explanation.family == "vae" and explanation.model["run"] == str(tiny_run)
    assert explanation.model["weights"].startswith("trained (1 epoch")
    assert explanation.data["spec"] == "digits" and explanation.stages[0].input_shape == (1437, 1, 8, 8)
    assert explanation.layers[-1].output_shape == (BATCH, 1, 8, 8)
    assert explanation.parameters == count(traced_network(run.model))
    assert explain_run(run, seed=2).to_dict() == explanation.to_dict()  # a loaded Run or its path: the same
    untrained = explain_model("vae", "digits", seed=2, model_config=TINY["vae"]).to_dict()
    assert untrained["data"] == explanation.to_dict()["data"]  # the same batch ...
    assert untrained["stages"][-3]["example"] != explanation.stages[-3].example  # ... another loss: trained weights


def test_cli_explains_a_run_in_every_format(tiny_run, capsys):
    assert main(["explain", str(tiny_run), "--format", "json", "--seed", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(explain_run(tiny_run, seed=2).to_dict()))
    assert main(["explain", str(tiny_run), "--format", "markdown"]) == 0
    assert "### Data flow" in capsys.readouterr().out
    assert main(["explain", str(tiny_run)]) == 0
    text = capsys.readouterr().out
    assert "Prediction trace" in text and "Weights: trained (1 epoch" in text


def test_cli_explains_a_family(capsys):
    argv = ["explain", "vae", "--data", "digits", "--set", "hidden_dim=32", "--set", "latent_dim=4", "--batch-size", "4"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "genlab explain vae: digits, train split (1,437 images of 1x8x8), a batch of 4, seed 0" in text
    assert "(4, 1, 8, 8)" in text and "Generation path" in text
    assert main([*argv, "--conditional", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["conditional"] is True


@pytest.mark.parametrize("argv, message", [
    (["explain", "vea"], "'vea' is neither a model family (did you mean vae?) nor a run directory"),
    (["explain", "nosuch"], "'nosuch' is neither a model family nor a run directory"),
    (["explain", "vae", "--data", "mnst"], "unknown dataset 'mnst'"),
    (["explain", "vae", "--set", "nosuch=1"], "vae has no setting 'nosuch'"),
    (["explain", "vae", "--batch-size", "0"], "must be a positive integer"),
    (["explain", "vae", "--data", "npz:{tmp}/none.npz"], "none.npz"),
    (["explain", "{tmp}"], "is neither a model family nor a run directory"),
    (["explain", "{tmp}/file.txt"], "is neither a model family nor a run directory"),
    (["explain", "vae", "--format", "html"], "invalid choice: 'html'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a run")
    code = main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and message in lines[0], err


def test_a_run_refuses_family_settings(tiny_run, capsys):
    assert main(["explain", str(tiny_run), "--set", "hidden_dim=8"]) == 2
    err = capsys.readouterr().err
    assert "a run is explained with its own model and settings; drop model settings" in err
    assert len(err.strip().splitlines()) == 1


def test_a_conditional_gan_shows_its_labels_and_auxiliary_classifier(mnist):
    explanation = explain_model("dcgan", mnist, seed=0, model_config={**TINY["dcgan"], "conditional": True})
    stages = {s.name: s for s in explanation.stages}
    assert stages["labels"].input_shape == (8,) and stages["labels"].output_shape == (8, 10)
    assert "class embedding joined to z" in stages["labels"].what and "projection" in stages["labels"].what
    assert stages["auxiliary classifier"].output_shape == (8, 10)
    assert re.search(r"CE [\d.]+ x class_loss 10\.0+ x label weight", stages["auxiliary classifier"].example)
    assert "discriminator's features averaged over positions names" in stages["auxiliary classifier"].what
    critic = explain_model("wgan-gp", mnist, seed=0, model_config={**TINY["wgan-gp"], "conditional": True})
    what = next(s.what for s in critic.stages if s.name == "auxiliary classifier")
    assert "critic's features (all positions, flattened) names" in what
    plain = explain_model("dcgan", mnist, seed=0, model_config=TINY["dcgan"])
    assert not {"labels", "auxiliary classifier"} & {s.name for s in plain.stages}


def test_explain_says_when_d_is_spectrally_normalised(mnist):
    def d_stage(family, **settings):
        explanation = explain_model(family, mnist, seed=0, model_config={**TINY[family], **settings})
        return next(s for s in explanation.stages if s.name.endswith("on real")).what

    assert "spectrally normalised" in d_stage("dcgan", spectral_norm=True)
    assert "spectrally normalised" not in d_stage("dcgan")  # the default: BatchNorm, with R1
    assert "spectrally normalised" not in d_stage("gan")


def test_explain_names_the_r1_penalty_in_ds_loss(mnist):
    def losses(family, **settings):
        explanation = explain_model(family, mnist, seed=0, model_config={**TINY[family], **settings})
        return next(s for s in explanation.stages if s.name == "losses").example

    assert "R1 1.00/2 x 4 x E||grad D(real)||^2 every 4th D step" in losses("dcgan")  # the default
    assert "R1" not in losses("dcgan", r1=0.0) and "R1" not in losses("gan")


def test_explain_names_the_learning_rate_schedule_and_critic_steps_in_the_losses(mnist):
    def losses(family, **settings):
        explanation = explain_model(family, mnist, seed=0, model_config={**TINY[family], **settings})
        return next(s for s in explanation.stages if s.name == "losses").example

    assert "fall linearly to 0 over 1,000 D steps" in losses("wgan-gp", lr_schedule="linear", decay_steps=1000)
    assert "one G step after every critic step" in losses("wgan-gp", n_critic=1)
    assert "one G step after every 5 critic steps" in losses("wgan-gp", n_critic=5)
    assert "fall linearly to 0 over 500 D steps" in losses("gan", lr_schedule="linear", decay_steps=500)
    assert "over the run's planned D steps" in losses("dcgan", lr_schedule="linear")  # planned when it trains
    assert "fall linearly" not in losses("dcgan")
