"""The `genlab` command end to end: datasets, train, sample, and every bad input."""

import hashlib
import json
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli import main

SMALL = ["--set", "hidden_dim=32", "--latent-dim", "4"]


def snapshot(folder: Path) -> dict[str, str]:
    """Content hash and modification time of every file under `folder`."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "vae"
    assert main(["train", "vae", "--data", "digits", "--epochs", "2", "--out", str(out), "--quiet", *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cvae"
    assert main(["train", "vae", "--data", "digits", "--epochs", "2", "--conditional", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_prints_the_training_trace(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "vae", "--data", "digits", "--epochs", "3", "--out", tmp_path / "r", *SMALL)
    assert code == 0
    assert "Epoch | Loss | Test loss | Recon. accuracy | images/s | Observation" in out.replace("  ", " ").replace("  ", " ")
    assert "epoch 1/3" in out and "epoch 3/3" in out  # per-epoch lines
    assert "starts learning" in out and "* loss" in out and "o test_loss" in out
    assert "genlab sample" in out


def test_sample_same_seed_same_file(trained, tmp_path, capsys):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for path, seed in ((a, 1), (b, 1), (c, 2)):
        assert run_cli(capsys, "sample", trained, "--n", 64, "--seed", seed, "--out", path)[0] == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    grid = Image.open(a)
    assert grid.size == (8 * 10 + 2, 8 * 10 + 2)  # 8x8 images of 8 pixels with 2-pixel padding


def test_sample_npz_round_trips_as_a_dataset(trained, tmp_path, capsys):
    path = tmp_path / "s.npz"
    assert run_cli(capsys, "sample", trained, "--n", 20, "--format", "npz", "--out", path)[0] == 0
    with np.load(path) as arrays:
        assert arrays["images"].shape == (20, 1, 8, 8) and arrays["images"].dtype == np.float32
        assert 0 <= arrays["images"].min() and arrays["images"].max() <= 1
        assert "labels" not in arrays
    loaded = genlab.load_dataset(f"npz:{path}", split="train")
    assert loaded.image_shape == (1, 8, 8)


def test_interpolation_strip(trained, tmp_path, capsys):
    path = tmp_path / "strip.png"
    assert run_cli(capsys, "sample", trained, "--interpolate", "--steps", 7, "--out", path)[0] == 0
    assert Image.open(path).size == (7 * 10 + 2, 12)
    assert run_cli(capsys, "sample", trained, "--interpolate", "--n", 3, "--out", path)[0] == 0
    assert Image.open(path).size == (10 * 10 + 2, 3 * 10 + 2)


def test_labels_on_a_conditional_model(conditional, tmp_path, capsys):
    path = tmp_path / "threes.npz"
    assert run_cli(capsys, "sample", conditional, "--n", 6, "--labels", 3, "--out", path)[0] == 0
    with np.load(path) as arrays:
        assert arrays["labels"].tolist() == [3] * 6
        assert arrays["class_names"].tolist() == [str(d) for d in range(10)]
        threes = arrays["images"]
    assert genlab.load_dataset(f"npz:{path}", split="train").num_classes == 10  # loads back as data
    run_cli(capsys, "sample", conditional, "--n", 6, "--labels", 5, "--out", path)
    with np.load(path) as arrays:
        assert not np.array_equal(arrays["images"], threes)
    code, _, err = run_cli(capsys, "sample", conditional, "--labels", 10)
    assert code == 2 and "label 10 is outside the model's classes 0..9" in err


def test_conditional_grids_put_one_class_per_column(conditional, tmp_path, capsys):
    epoch_grid = Image.open(conditional / "samples" / "epoch_0002.png")
    assert epoch_grid.size == (10 * 10 + 2, 8 * 10 + 2)  # 10 classes across, 8 rows
    path = tmp_path / "all.png"
    assert run_cli(capsys, "sample", conditional, "--n", 30, "--out", path)[0] == 0
    assert Image.open(path).size == (10 * 10 + 2, 3 * 10 + 2)


def test_rgb_folder_end_to_end(tmp_path, capsys):
    """Colour images in class folders: train a conv VAE, sample an RGB grid."""
    rng = np.random.default_rng(0)
    for label, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / "data" / f"class{label}").mkdir(parents=True)
        for index in range(20):
            pixels = (rng.random((12, 12, 1)) * np.array(colour)).astype(np.uint8)
            Image.fromarray(pixels, mode="RGB").save(tmp_path / "data" / f"class{label}" / f"{index}.png")
    code, _, err = run_cli(capsys, "train", "vae", "--data", f"folder:{tmp_path / 'data'}", "--arch", "conv",
                           "--epochs", 2, "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    assert run_cli(capsys, "sample", tmp_path / "run", "--n", 4, "--out", tmp_path / "rgb.png")[0] == 0
    grid = Image.open(tmp_path / "rgb.png")
    assert grid.mode == "RGB" and grid.size == (4 * 14 + 2, 14 + 2)


def test_datasets_lists_everything_and_how_to_get_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path))
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    for name in ("mnist-5k", "mnist", "fashion-mnist", "digits", "folder:PATH", "npz:PATH"):
        assert name in out
    assert "4,000" in out and "1,000" in out and "1x28x28" in out
    assert "genlab datasets --download mnist" in out


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def make_folder(root: Path, sizes) -> Path:
    for index, size in enumerate(sizes):
        (root / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros(size, np.uint8)).save(root / "a" / f"{index}.png")
    return root


BAD_TRAIN_INPUTS = [
    (["train", "gan9", "--data", "digits"], "unknown model 'gan9'; choose one of: dcgan, ddpm, gan, gpt, pixelcnn, realnvp, vae, wgan-gp"),
    (["train", "vae", "--data", "cifar"], "unknown dataset 'cifar'"),
    (["train", "vae", "--data", "mnist"], "genlab datasets --download mnist"),
    (["train", "vae", "--data", "digits", "--epochs", "0"], "--epochs: must be a positive integer, got 0"),
    (["train", "vae", "--data", "digits", "--batch-size", "-3"], "--batch-size: must be a positive integer, got -3"),
    (["train", "vae", "--data", "digits", "--arch", "rnn"], "unknown VAE arch 'rnn'"),
    (["train", "vae", "--data", "digits", "--set", "depth=3"], "vae has no setting 'depth'"),
]


@pytest.mark.parametrize("argv, message", BAD_TRAIN_INPUTS)
def test_bad_train_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "data"))
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "new")
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "new").exists()


def test_bad_data_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = make_folder(tmp_path / "mixed", [(8, 8), (9, 9)])
    corrupt = make_folder(tmp_path / "corrupt", [(8, 8)])
    (corrupt / "a" / "bad.png").write_bytes(b"\x89PNG not really")
    idx = tmp_path / "idx" / "mnist"
    idx.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (idx / name).write_bytes(b"\x00\x00\x08\x03garbage")
    cases = [
        (f"folder:{empty}", "has no", {}),
        (f"folder:{mixed}", "--size", {}),
        (f"folder:{corrupt}", "bad.png", {}),
        ("mnist", "not a valid IDX file", {"GENLAB_DATA": str(tmp_path / "idx")}),
    ]
    for spec, message, env in cases:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            code, _, err = run_cli(capsys, "train", "vae", "--data", spec, "--out", tmp_path / "new", "--epochs", 1)
        assert code == 2, spec
        assert message in one_error_line(err), spec
    assert not (tmp_path / "new").exists()
    # --size fixes mixed sizes
    code, _, err = run_cli(capsys, "train", "vae", "--data", f"folder:{mixed}", "--size", 8, "--epochs", 1,
                           "--out", tmp_path / "sized", "--quiet")
    assert code == 0, err


def test_existing_run_is_never_touched_by_bad_input(trained, tmp_path, capsys):
    before = snapshot(trained)
    attempts = [
        (["train", "vae", "--data", "digits", "--out", trained], "already holds a run; pass --resume"),
        (["train", "vae", "--data", "digits", "--out", trained, "--epochs", "0", "--overwrite"], "positive integer"),
        (["train", "vae", "--data", "cifar", "--out", trained, "--overwrite"], "unknown dataset"),
        (["train", "vae", "--data", "digits", "--out", trained, "--resume", "--seed", "9"], "keeps its settings"),
        (["train", "vae", "--data", "digits", "--out", trained, "--resume", "--overwrite"], "not allowed with"),
        (["sample", trained, "--labels", "3"], "unconditional"),
    ]
    for argv, message in attempts:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert message in one_error_line(err), argv
    assert snapshot(trained) == before


def test_bad_checkpoints_offered_to_sample(trained, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for item in trained.iterdir():
        if item.is_file():
            (run / item.name).write_bytes(item.read_bytes())
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[:100])
    code, _, err = run_cli(capsys, "sample", run)
    assert code == 2 and "truncated or corrupt" in one_error_line(err)

    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer)
    (tmp_path / "model.pt").write_bytes(buffer.getvalue())
    code, _, err = run_cli(capsys, "sample", tmp_path / "model.pt")
    assert code == 2 and "pickled PyTorch file" in one_error_line(err)
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"a": 1}))
    code, _, err = run_cli(capsys, "sample", tmp_path / "raw.pkl")
    assert code == 2 and "pickled" in one_error_line(err)


def test_overwrite_replaces_a_run(trained, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "vae", "--data", "digits", "--epochs", 2, "--out", out, "--quiet", *SMALL)[0] == 0
    assert run_cli(capsys, "train", "vae", "--data", "digits", "--epochs", 1, "--out", out, "--quiet", "--overwrite",
                   *SMALL)[0] == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_0001.png"]


def test_help_is_fast_and_imports_nothing_heavy():
    probe = (
        "import sys; from genlab.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "genlab", "train", "vae", "--data", "nothing-here", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith("genlab train: error: unknown dataset 'nothing-here'")


def test_interpolation_as_npz(trained, tmp_path, capsys):
    path = tmp_path / "strip.npz"
    assert run_cli(capsys, "sample", trained, "--interpolate", "--steps", 5, "--n", 2, "--out", path)[0] == 0
    with np.load(path) as arrays:
        assert arrays["images"].shape == (10, 1, 8, 8)


def test_labels_alone_set_the_number_of_images(conditional, tmp_path, capsys):
    path = tmp_path / "three.npz"
    assert run_cli(capsys, "sample", conditional, "--labels", "0,1,2", "--out", path)[0] == 0
    with np.load(path) as arrays:
        assert arrays["labels"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("argv, message", [
    (["--seed", "100000000000000000000"], "--seed: expected an integer from 0 to 4294967295"),
    (["--device", "meta"], "unknown device 'meta'"),
    (["--device", "cpu:1"], "unknown device 'cpu:1'"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--set", "hidden_dim=0"], "hidden_dim must be a positive integer"),
])
def test_more_bad_train_input(argv, message, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vae", "--data", "digits", "--epochs", 1, "--out", tmp_path / "r", *argv)
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("out, message", [
    ("grid.jpg", "must end in .png"),
    ("folder", "must end in .png"),
    ("x.png --format npz", "must end in .npz"),
])
def test_bad_sample_outputs(trained, tmp_path, capsys, out, message):
    name, *extra = out.split()
    code, _, err = run_cli(capsys, "sample", trained, "--out", tmp_path / name, *extra)
    assert code == 2 and message in one_error_line(err)


def test_divergence_on_the_command_line_is_exit_1_and_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vae", "--data", "digits", "--epochs", 2, "--lr", "1e30",
                           "--out", tmp_path / "run", "--quiet")
    assert code == 1
    line = one_error_line(err)
    assert "training diverged" in line and "at epoch 1, step" in line and "--lr" in line
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "diverged"


def test_pixelcnn_completes_the_bottom_of_an_image_file(tmp_path, capsys):
    from PIL import Image

    from genlab.data import load_dataset
    from genlab.data.folder import read_image

    settings = ["--set", "channels=8", "--set", "layers=3", "--set", "kernel_size=3", "--set", "head_channels=16"]
    out = tmp_path / "pcnn"
    assert main(["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--quiet", "--sample-every", "0",
                 "--out", str(out), "--conditional", *settings]) == 0
    digit = load_dataset("digits", split="test")
    Image.fromarray(digit.images[0, 0].numpy()).resize((16, 16)).save(tmp_path / "digit.png")  # resized back to 8x8
    kept_rows = 3
    npz = tmp_path / "done.npz"
    argv = ["sample", str(out), "--complete", str(tmp_path / "digit.png"), "--rows", str(kept_rows), "--n", "5",
            "--labels", str(int(digit.labels[0])), "--seed", "4", "--format", "npz", "--out", str(npz)]
    assert main(argv) == 0
    assert "wrote 7 images" in capsys.readouterr().out
    with np.load(npz) as saved:
        images = (torch.from_numpy(saved["images"]) * 255).round().to(torch.uint8)  # image, kept part, 5 completions
    original = read_image(tmp_path / "digit.png", 1, (8, 8))
    assert torch.equal(images[0], original)
    assert torch.equal(images[2:, :, :kept_rows], original[:, :kept_rows].expand(5, -1, -1, -1))  # kept exactly
    assert len({images[i, :, kept_rows:].numpy().tobytes() for i in range(2, 7)}) > 1  # the rest is drawn
    assert main([*argv[:-2], "--out", str(tmp_path / "again.npz")]) == 0  # the same seed, the same completions
    with np.load(tmp_path / "again.npz") as again:
        assert np.array_equal((again["images"] * 255).round().astype(np.uint8), images.numpy())
    capsys.readouterr()
    for extra, message in (([], "pass its label (--labels K)"), (["--rows", "8", "--labels", "1"], "rows to keep"),
                           (["--interpolate", "--labels", "1"], "give one of them")):
        assert main(["sample", str(out), "--complete", str(tmp_path / "digit.png"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["sample", str(out), "--rows", "3"]) == 2
    assert "give --complete IMAGE too" in capsys.readouterr().err
    assert main(["sample", str(out), "--complete", str(tmp_path / "none.png"), "--labels", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--quiet", "--out", str(vae)]) == 0
    assert main(["sample", str(vae), "--complete", str(tmp_path / "digit.png")]) == 2
    assert "use a pixelcnn run" in capsys.readouterr().err
