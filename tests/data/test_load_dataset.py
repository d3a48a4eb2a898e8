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
