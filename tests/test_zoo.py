"""The model zoo: zoo:NAME wherever a run goes, read-only, checksummed; the shipped entries; the packaging script."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab import zoo
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.run import MODEL_FILE, Run, read_run_info

SCRIPT = Path(__file__).parents[1] / "scripts" / "train_zoo.py"
SMALL = {"hidden_dim": 32, "latent_dim": 4}
SHIPPED = zoo.catalog()  # the real entries, read before any test swaps the zoo for a temporary one
REAL_ZOO = (zoo.ZOO_DIR, zoo.CATALOG_FILE)


def load_script():
    spec = importlib.util.spec_from_file_location("train_zoo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """A temporary zoo holding one small VAE, made by the packaging script itself (1 epoch of mnist-5k)."""
    root = tmp_path_factory.mktemp("zoo")
    patcher = pytest.MonkeyPatch()
    patcher.setattr(zoo, "ZOO_DIR", root / "models")
    patcher.setattr(zoo, "CATALOG_FILE", root / "catalog.json")
    script = load_script()
    recipe = script.Recipe("vae", "mnist-5k", "a test VAE", epochs=1, settings=SMALL, weaknesses="one epoch")
    run_dir = script.train("tiny-vae", recipe, root / "work")
    script.write_catalog("tiny-vae", script.package("tiny-vae", recipe, run_dir, threads=1, samples=300))
    yield run_dir
    patcher.undo()


def test_the_script_packages_a_checked_run_without_optimizer_state(packaged):
    entry = zoo.entry("zoo:tiny-vae")
    files = set(entry.files)
    assert {"run.json", MODEL_FILE, "history.jsonl", "metrics.json", "card.md"} <= files
    assert not any(name.startswith("state") for name in files)  # no optimizer state in the package
    assert any(name.startswith("samples/epoch_") for name in files)
    assert zoo.resolve("zoo:tiny-vae") == zoo.ZOO_DIR / "tiny-vae"
    card = (entry.path / "card.md").read_text()
    assert "# zoo:tiny-vae" in card and "scripts/train_zoo.py tiny-vae" in card and "one epoch" in card
    metrics = json.loads((entry.path / "metrics.json").read_text())
    assert metrics["source"]["path"] == "zoo:tiny-vae" and metrics["counts"]["samples"] == 300
    assert {"fid", "precision", "recall"} <= set(metrics["metrics"]) <= set(metrics["floor"]) | {"label_accuracy"}


def test_a_recipes_sampling_settings_go_into_the_packaged_run_only(packaged):
    script = load_script()
    recipe = script.Recipe("vae", "mnist-5k", "a test VAE", epochs=1, settings=SMALL, sampling={"iw_samples": 7})
    script.package("tiny-vae-measured", recipe, packaged, threads=1, samples=300)
    shipped = zoo.ZOO_DIR / "tiny-vae-measured"
    assert json.loads((shipped / "run.json").read_text())["model"]["config"]["iw_samples"] == 7
    assert json.loads((packaged / "run.json").read_text())["model"]["config"]["iw_samples"] == 100  # untouched
    assert "sampling with iw_samples=7" in (shipped / "card.md").read_text()


def test_half_precision_weights_load_as_float32_and_sample_like_the_original(packaged):
    shipped = genlab.load("zoo:tiny-vae")
    original = Run.load(packaged)
    assert shipped.zoo_name == "tiny-vae" and shipped.name == "zoo:tiny-vae"
    assert all(t.dtype == torch.float32 for t in shipped.model.state_dict().values() if t.is_floating_point())
    assert (zoo.ZOO_DIR / "tiny-vae" / MODEL_FILE).stat().st_size < 0.6 * (packaged / MODEL_FILE).stat().st_size
    a = shipped.sample(16, generator=torch.Generator().manual_seed(3))
    b = original.sample(16, generator=torch.Generator().manual_seed(3))
    assert a.shape == (16, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert (a - b).abs().max() < 0.02  # float16 weights: the same images to about 1% of the pixel range


def test_zoo_table_and_card_on_the_command_line(packaged, capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("tiny-vae"))
    fid = json.loads((zoo.ZOO_DIR / "tiny-vae" / "metrics.json").read_text())["metrics"]["fid"]
    assert "vae" in line and "mnist-5k" in line and f"{fid:.1f}" in line
    assert main(["zoo", "tiny-vae"]) == 0
    assert capsys.readouterr().out.startswith("# zoo:tiny-vae")


def test_commands_write_beside_the_user_never_into_the_zoo(packaged, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (zoo.ZOO_DIR / "tiny-vae").rglob("*")}
    assert main(["sample", "zoo:tiny-vae", "--n", "4", "--seed", "2"]) == 0
    assert (tmp_path / "tiny-vae_seed_2.png").is_file()
    assert main(["eval", "zoo:tiny-vae", "--n", "300", "--metrics", "fid"]) == 0
    assert json.loads((tmp_path / "tiny-vae_eval" / "metrics.json").read_text())["source"]["path"] == "zoo:tiny-vae"
    assert main(["report", "zoo:tiny-vae"]) == 0
    assert (tmp_path / "tiny-vae_report.html").is_file()
    assert main(["explain", "zoo:tiny-vae"]) == 0
    capsys.readouterr()
    assert {p: p.stat().st_mtime_ns for p in (zoo.ZOO_DIR / "tiny-vae").rglob("*")} == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "zoo:nope"], "there is no zoo model 'nope'; the zoo has: tiny-vae"),
        (["train", "vae", "--data", "digits", "--out", "zoo:tiny-vae"], "zoo models are read-only"),
        (["train", "--resume", "--out", "zoo:tiny-vae"], "zoo models are read-only"),
        (["train", "vae", "--data", "digits", "--out", "{zoo}/tiny-vae", "--overwrite"], "zoo models are read-only"),
        (["sample", "zoo:tiny-vae", "--out", "{zoo}/tiny-vae/samples/x.png"], "inside genlab's model zoo"),
        (["eval", "zoo:tiny-vae", "--out", "{zoo}/tiny-vae"], "inside genlab's model zoo"),
        (["train", "--from", "zoo:tiny-vae", "--resume", "--out", "{tmp}/r"], "--from starts a new run"),
        (["train", "gan", "--from", "zoo:tiny-vae", "--out", "{tmp}/r"], "is a vae model"),
    ],
)
def test_zoo_misuse_is_one_line_and_exit_2(packaged, tmp_path, capsys, argv, message):
    argv = [a.format(zoo=zoo.ZOO_DIR, tmp=tmp_path) for a in argv]
    before = {p: p.stat().st_mtime_ns for p in (zoo.ZOO_DIR / "tiny-vae").rglob("*")}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in (zoo.ZOO_DIR / "tiny-vae").rglob("*")} == before


def test_a_damaged_zoo_file_fails_its_checksum_and_says_reinstall(packaged, capsys):
    weights = zoo.ZOO_DIR / "tiny-vae" / MODEL_FILE
    good = weights.read_bytes()
    try:
        weights.write_bytes(good[:-8] + bytes(8))
        assert main(["sample", "zoo:tiny-vae", "--n", "2"]) == 2
        err = capsys.readouterr().err
        assert "model.safetensors has sha256" in err and "reinstall genlab" in err
    finally:
        weights.write_bytes(good)


def test_train_from_a_zoo_model_starts_from_its_weights_with_a_fresh_optimizer(packaged, tmp_path, capsys):
    out = tmp_path / "mine"
    assert (
        main(["train", "--from", "zoo:tiny-vae", "--out", str(out), "--epochs", "1", "--quiet", "--no-final-eval"]) == 0
    )
    assert "the optimizer starts afresh" in capsys.readouterr().out
    info = read_run_info(out)
    assert info["train"]["init_from"] == "zoo:tiny-vae" and info["epochs_completed"] == 1
    assert info["model"]["config"] == read_run_info(zoo.ZOO_DIR / "tiny-vae")["model"]["config"]
    assert info["data"]["spec"] == "mnist-5k"
    # one more epoch from the zoo's weights: a lower test loss than one epoch from scratch had
    source_loss = json.loads((zoo.ZOO_DIR / "tiny-vae" / "history.jsonl").read_text().splitlines()[-1])["test_loss"]
    assert genlab.Run.load(out).history[-1]["test_loss"] < source_loss


def test_an_empty_zoo_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "CATALOG_FILE", tmp_path / "catalog.json")
    assert main(["zoo"]) == 0 and "ships no zoo models" in capsys.readouterr().out
    with pytest.raises(GenlabError, match="ships no zoo models"):
        zoo.entry("zoo:anything")


def test_a_damaged_catalog_is_refused_by_its_schema(tmp_path, monkeypatch):
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"format": "genlab-zoo", "format_version": 1, "models": {"x": {"summary": 3}}}))
    monkeypatch.setattr(zoo, "CATALOG_FILE", catalog)
    with pytest.raises(GenlabError, match="models.x.summary must be a string"):
        zoo.catalog()


# ------------------------------------------------------------------ the shipped entries


@pytest.fixture
def real_zoo(monkeypatch):
    """The installed zoo, even while the module's temporary one is in place."""
    monkeypatch.setattr(zoo, "ZOO_DIR", REAL_ZOO[0])
    monkeypatch.setattr(zoo, "CATALOG_FILE", REAL_ZOO[1])


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_loads_samples_and_carries_its_numbers(name, real_zoo):
    run = genlab.load(f"zoo:{name}")  # every file's checksum verified
    images = run.sample(8, generator=torch.Generator().manual_seed(0))
    assert images.shape == (8, *run.model.data.image_shape) and 0 <= images.min() and images.max() <= 1
    row = next(row for row in zoo.zoo_rows() if row["name"] == name)
    for key in ("fid", "fid_floor", "recall", "samples", "parameters", "train_seconds"):
        assert row[key] is not None and math.isfinite(row[key]), key
    if row["conditional"]:
        assert row["label_accuracy"] is not None
    assert row["parameters"] == sum(p.numel() for p in run.model.parameters())
    assert (zoo.ZOO_DIR / name / zoo.CARD_FILE).read_text().startswith(f"# zoo:{name}")


FAST_SAMPLERS = ("vae", "gan", "dcgan", "wgan-gp", "realnvp")  # one network pass per image: measured in seconds


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_models_fid_is_what_its_metrics_say(name, real_zoo):
    shipped = json.loads((zoo.ZOO_DIR / name / "metrics.json").read_text())
    family = read_run_info(zoo.ZOO_DIR / name)["model"]["name"]
    if family not in FAST_SAMPLERS:
        pytest.skip(f"{family} samples slowly; its FID is measured by scripts/train_zoo.py")
    result = genlab.evaluate(f"zoo:{name}", n=shipped["counts"]["samples"], metrics="fid", seed=0)
    # the same samples and reference as the shipped number: equal up to the float rounding of another thread count
    assert result.metrics["fid"] == pytest.approx(shipped["metrics"]["fid"], rel=0.01)
