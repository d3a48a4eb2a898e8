"""ONNX export: every family's generation network agrees with torch at any batch size, the JSON is enough to
sample from it without genlab (examples/onnx_sample.py), and bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data.transforms import from_symmetric
from genlab.run import MODEL_FILE, Run

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from genlab.export import EXPORT_FILE, ONNX_FILE, export_onnx  # noqa: E402
from genlab.export.folder import check_export_out  # noqa: E402
from genlab.export.onnx_graph import EXPORT_ENTRIES  # noqa: E402  (after the skip: it needs the extra)

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "onnx_sample.py"
DDPM_TINY = {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 20, "sample_steps": 5, "lr": 2e-3}
# name -> (family, settings): tiny networks, each trained 1 epoch on digits (8x8), conditional where it matters.
CASES = {
    "vae": ("vae", {"latent_dim": 4, "hidden_dim": 32, "prior_components": 3, "conditional": True}),
    "vae-conv": ("vae", {"arch": "conv", "latent_dim": 4, "hidden_dim": 16, "conv_channels": 4, "prior": "standard"}),
    "gan": ("gan", {"latent_dim": 8, "lr": 1e-3, "ema": 0.9, "conditional": True}),
    "dcgan": (
        "dcgan",
        {
            "latent_dim": 8,
            "channels": 8,
            "lr": 1e-3,
            "ema": 0.9,
            "conditional": True,
            "generator_conditioning": "batchnorm",
        },
    ),  # fmt: skip
    "wgan-gp": ("wgan-gp", {"latent_dim": 8, "channels": 8, "lr": 1e-3, "n_critic": 2, "ema": 0.0}),
    "ddpm": ("ddpm", {**DDPM_TINY, "ema": 0.9, "conditional": True, "prediction": "v", "schedule": "cosine"}),
    "ddpm-plain": ("ddpm", {**DDPM_TINY, "ema": 0.0, "attention": False}),
    "pixelcnn": ("pixelcnn", {"channels": 8, "layers": 3, "kernel_size": 3, "head_channels": 16, "conditional": True}),
    "realnvp": ("realnvp", {"hidden_channels": 8, "res_blocks": 1, "conditional": True, "temperature": 0.8}),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (Run, export folder): each case trained and exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    cache: dict[str, tuple[Run, Path]] = {}

    def get(name: str) -> tuple[Run, Path]:
        if name not in cache:
            family, settings = CASES[name]
            run = genlab.train(
                family, "digits", root / "runs" / name, epochs=1, seed=0, progress=False, sample_every=0,
                model_config=settings,
            )  # fmt: skip
            cache[name] = (run, export_onnx(run.path, root / "exports" / name))
        return cache[name]

    return get


def reference(run: Run, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What genlab's own code computes for the graph's inputs: the network `sample` runs after drawing noise."""
    model, labels = run.model, inputs.get("labels")
    with torch.no_grad():
        if model.family in ("gan", "dcgan", "wgan-gp"):
            return model.sampler().eval()(inputs["z"], labels)
        if model.family in ("vae", "realnvp"):
            return model.decode(inputs["z"], labels)
        if model.family == "ddpm":
            return model.sampling_network().eval()(inputs["x_t"], inputs["t"], labels)
        return model.network(inputs["images"], labels)  # pixelcnn


def random_inputs(run: Run, description: dict, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every input the export declares, in the ranges genlab feeds them."""
    generator = torch.Generator().manual_seed(seed)
    classes = run.model.data.num_classes
    inputs = {}
    for spec in description["inputs"]:
        shape = (batch, *spec["shape"][1:])
        if spec["name"] == "labels":  # DDPM also takes the null class
            inputs["labels"] = torch.randint(0, classes + (run.family == "ddpm"), shape, generator=generator)
        elif spec["name"] == "t":
            inputs["t"] = torch.randint(0, run.model.config.diffusion_steps, shape, generator=generator)
        elif spec["name"] == "images":  # PixelCNN's grid: k / 255
            inputs["images"] = torch.randint(0, 256, shape, generator=generator).float() / 255
        else:
            inputs[spec["name"]] = torch.randn(shape, generator=generator)
    return inputs


@pytest.mark.parametrize("name", list(CASES))
def test_onnxruntime_agrees_with_torch_at_two_batch_sizes(exported, name):
    run, folder = exported(name)
    assert sorted(p.name for p in folder.iterdir()) == sorted([EXPORT_FILE, ONNX_FILE])
    description = json.loads((folder / EXPORT_FILE).read_text())
    assert description["format"] == "genlab-export" and description["family"] == run.family
    assert description["image_shape"] == list(run.model.data.image_shape)
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [spec["name"] for spec in description["inputs"]]
    assert all(i.shape[0] == "batch" for i in session.get_inputs())  # the dynamic axis
    assert ("labels" in description["inputs"][-1]["name"]) == run.model.conditional
    for batch in (1, 7):
        inputs = random_inputs(run, description, batch, seed=batch)
        (got,) = session.run(None, {name: value.numpy() for name, value in inputs.items()})
        expected = reference(run, inputs).numpy()
        assert got.shape == expected.shape and got.shape[0] == batch
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_the_json_describes_the_noise_the_range_and_the_schedule(exported):
    gan, gan_folder = exported("gan")
    description = json.loads((gan_folder / EXPORT_FILE).read_text())
    assert description["sampling"]["noise"] == {"input": "z", "shape": [8], "distribution": "normal", "std": 1.0}
    assert description["sampling"]["network"] == "ema_generator"  # what GAN.sample draws from
    assert description["output"]["pixels"]["kind"] == "tanh" and description["num_classes"] == 10
    z = torch.randn(3, 8)
    labels = torch.tensor([0, 1, 2])
    raw = torch.from_numpy(
        onnxruntime.InferenceSession(str(gan_folder / ONNX_FILE)).run(None, {"z": z.numpy(), "labels": labels.numpy()})[
            0
        ]
    )
    assert torch.allclose(from_symmetric(raw), gan.model.decode(z, labels), atol=1e-5)
    assert not torch.allclose(raw, gan.model.generator.eval()(z, labels), atol=1e-4)  # not the raw generator

    ddpm, ddpm_folder = exported("ddpm")
    diffusion = json.loads((ddpm_folder / EXPORT_FILE).read_text())["sampling"]["diffusion"]
    assert diffusion["prediction"] == "v" and diffusion["diffusion_steps"] == 20 and diffusion["null_class"] == 10
    assert diffusion["alpha_bar"] == ddpm.model.diffusion.alpha_bar.double().tolist()
    config = ddpm.model.config
    assert diffusion["sampler_defaults"] == {"sampler": config.sampler, "steps": 5, "eta": 0.0, "guidance": 1.0}

    vae, vae_folder = exported("vae")
    noise = json.loads((vae_folder / EXPORT_FILE).read_text())["sampling"]["noise"]
    # a conditional VAE draws z from its label's own mixture: one per class, each of 3 components
    assert noise["distribution"] == "class_gaussian_mixture" and np.shape(noise["weights"]) == (10, 3)
    mixtures = vae.model.mixture.mixtures()
    assert np.allclose(noise["means"], np.stack([m.means.numpy() for m in mixtures]))
    assert np.allclose(noise["scale_tril"][7], mixtures[7].scale_tril.numpy())

    realnvp, realnvp_folder = exported("realnvp")
    noise = json.loads((realnvp_folder / EXPORT_FILE).read_text())["sampling"]["noise"]
    assert noise["std"] == pytest.approx(0.8) and noise["shape"] == [1, 8, 8]
    # a conditional flow draws z from its label's Gaussian, the moving average's (what sampling uses)
    prior = realnvp.model.sampling_flow().prior
    assert noise["distribution"] == "class_normal" and np.shape(noise["means"]) == (10, 1, 8, 8)
    assert np.allclose(noise["means"], prior.means.numpy()) and not np.allclose(noise["means"], 0)
    assert np.allclose(noise["scales"], prior.log_scales.exp().numpy())


def run_example(*args: str | Path) -> subprocess.CompletedProcess:
    """examples/onnx_sample.py in a fresh Python, told to fail if torch was imported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXAMPLE), *map(str, args), "--assert-no-torch"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_the_example_draws_genlabs_gan_images_without_torch(exported, tmp_path):
    run, folder = exported("gan")
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "z.npy", z.numpy())
    done = run_example(folder, "--noise", tmp_path / "z.npy", "--out", tmp_path / "grid.png", "--save-npy",
                       tmp_path / "images.npy")  # fmt: skip
    assert done.returncode == 0, done.stderr
    labels = run.model.check_labels(6, None)  # the classes in turn, as the example's default
    expected = run.model.decode(z, labels).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "images.npy"), expected, rtol=0, atol=1e-3)
    assert (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["ddpm", "ddpm-plain"])
def test_the_example_runs_genlabs_ddim_in_numpy(exported, tmp_path, name):
    run, folder = exported(name)
    x_T = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    np.save(tmp_path / "x_T.npy", x_T.numpy())
    done = run_example(folder, "--noise", tmp_path / "x_T.npy", "--steps", "4", "--out", tmp_path / "grid.png",
                       "--save-npy", tmp_path / "images.npy")  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = run.model.sample(5, initial=x_T, sampler="ddim", eta=0.0, steps=4).numpy()
    images = np.load(tmp_path / "images.npy")
    assert images.std() > 0.01  # the trained network's images, not a constant
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["vae", "realnvp"])
def test_the_example_draws_from_a_seed(exported, tmp_path, name):
    _, folder = exported(name)  # the VAE's fitted mixture prior, the flow's Gaussian per class, drawn in numpy
    done = run_example(folder, "--n", "12", "--seed", "3", "--out", tmp_path / "grid.png")
    assert done.returncode == 0, done.stderr
    assert f"wrote 12 {name} images" in done.stdout and (tmp_path / "grid.png").is_file()


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


def refused(capsys, argv: list[str], *phrases: str) -> str:
    """Run `genlab` with argv; assert exit 2 and one line on stderr holding every phrase; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err
    return err


def leftovers(folder: Path) -> list[str]:
    """What an interrupted export would have left: staging folders beside the output."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_the_cli_exports_and_replaces_only_a_previous_export(exported, tmp_path, capsys):
    run, _ = exported("dcgan")
    out = tmp_path / "dcgan-onnx"
    assert main(["export", str(run.path), "--format", "onnx", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    first = (out / ONNX_FILE).read_bytes()
    refused(capsys, ["export", str(run.path), "--out", str(out)], "already exists", "--overwrite")
    assert main(["export", str(run.path), "--out", str(out), "--overwrite"]) == 0
    assert (out / ONNX_FILE).read_bytes() == first  # the same run exports the same bytes
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_export_out(empty, run.path, False, EXPORT_ENTRIES) == empty  # an empty folder holds nothing to lose


def test_bad_runs_are_refused(exported, tmp_path, capsys):
    run, _ = exported("wgan-gp")
    weightless = tmp_path / "weightless"
    shutil.copytree(run.path, weightless)
    (weightless / MODEL_FILE).unlink()
    refused(capsys, ["export", str(weightless), "--out", str(tmp_path / "a")], MODEL_FILE)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    refused(capsys, ["export", str(stranger), "--out", str(tmp_path / "b")], "run.json")
    refused(capsys, ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")], "does not exist")
    refused(capsys, ["export", str(run.path), "--format", "tflite", "--out", str(tmp_path / "d")], "--format")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stranger", "weightless"]


def test_overwrite_never_deletes_a_run_or_the_users_folder(exported, tmp_path, capsys):
    run, _ = exported("wgan-gp")
    other, _ = exported("gan")
    before = sorted(p.name for p in other.path.iterdir())
    refused(capsys, ["export", str(run.path), "--out", str(other.path), "--overwrite"], "not a genlab export", "run")
    assert sorted(p.name for p in other.path.iterdir()) == before
    refused(capsys, ["export", str(run.path), "--out", str(run.path), "--overwrite"], "inside the run")
    refused(capsys, ["export", str(run.path), "--out", str(run.path / "onnx")], "inside the run")
    assert not (run.path / "onnx").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    refused(capsys, ["export", str(run.path), "--out", str(mine), "--overwrite"], "not a genlab export")
    assert (mine / "thesis.tex").read_text() == "years of work"
    # an export folder with something of the user's in it is not replaced either
    export = export_onnx(run.path, tmp_path / "export")
    (export / "notes.txt").write_text("mine")
    refused(capsys, ["export", str(run.path), "--out", str(export), "--overwrite"], "notes.txt")
    assert (export / "notes.txt").is_file() and (export / ONNX_FILE).is_file()
    a_file = tmp_path / "file.onnx"
    a_file.write_text("x")
    refused(capsys, ["export", str(run.path), "--out", str(a_file), "--overwrite"], "is a file")


def test_a_failed_export_leaves_nothing_and_keeps_the_previous_one(exported, tmp_path, monkeypatch):
    import genlab.export.onnx_graph

    run, done = exported("wgan-gp")
    previous = Path(shutil.copytree(done, tmp_path / "export"))  # a previous export, as export_onnx wrote it
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("the graph disagrees")

    monkeypatch.setattr(genlab.export.onnx_graph, "_write_graph", broken)  # fails inside the staging folder
    with pytest.raises(RuntimeError):
        export_onnx(run.path, tmp_path / "new")
    with pytest.raises(RuntimeError):
        export_onnx(run.path, previous, overwrite=True)
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before


def test_without_the_extra_the_command_says_how_to_install_it(exported, tmp_path, capsys, monkeypatch):
    run, _ = exported("wgan-gp")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    refused(capsys, ["export", str(run.path), "--out", str(tmp_path / "x")], "pip install 'genlab[export]'")
    assert not (tmp_path / "x").exists()


def test_genlab_does_not_import_onnx_when_imported():
    extra = ("onnx", "onnxscript", "onnxruntime", "onnx_ir")
    code = f"import sys, genlab, genlab.cli, genlab.run, genlab.export; print([m for m in sys.modules if m in {extra}])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
