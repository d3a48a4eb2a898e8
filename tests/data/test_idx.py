import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.data import data_root, dataset_catalog, load_dataset
from genlab.data.idx import SYSTEM_ROOT, read_idx
from genlab.errors import GenlabError

FASHION_SYSTEM = SYSTEM_ROOT / "fashion-mnist"
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


# --------------------------------------------------------------------------- the reader


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("shape", [(7, 4, 5), (7,), (2, 3, 4, 5)])
def test_round_trip(tmp_path, write_idx, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    back = read_idx(write_idx(tmp_path / "file", array, gz=gz))
    assert back.dtype == np.uint8 and back.shape == shape
    assert np.array_equal(back, array)
    assert back.flags.writeable


def test_gzip_detected_by_magic_not_name(tmp_path, write_idx):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "plain.gz", array, gz=False)), array)
    assert np.array_equal(read_idx(write_idx(tmp_path / "packed-ubyte", array, gz=True)), array)


def test_truncated_payload(tmp_path, write_idx):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8))
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: 16 + 1200]))  # header + 1,200 of the 7,840 pixels
    with pytest.raises(GenlabError) as error:
        read_idx(path)
    message = str(error.value)
    assert str(path) in message and "not a valid IDX file" in message
    assert "expected 7840 bytes" in message and "found 1200" in message and "delete it" in message


def test_extra_bytes(tmp_path, write_idx):
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8), gz=False)
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(GenlabError, match="expected 5 bytes of data for 5, found 7"):
        read_idx(path)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"\x12\x34\x08\x01\x00\x00\x00\x01\x00", "starts with bytes 12 34"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "type code 0x0d"),
        (b"\x00\x00\x08\x03\x00\x00", "announces 3 dimensions"),
        (b"\x00\x00", "fewer than the 4-byte header"),
        (b"", "fewer than the 4-byte header"),
    ],
)
def test_bad_header(tmp_path, raw, problem):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(GenlabError, match=problem):
        read_idx(path)


def test_broken_gzip_stream(tmp_path, write_idx):
    path = write_idx(tmp_path / "images.gz", np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-30])  # cut off the end of the compressed stream
    with pytest.raises(GenlabError, match="gzip stream is broken"):
        read_idx(path)
    with pytest.raises(GenlabError, match="does not exist"):
        read_idx(tmp_path / "missing.gz")


# --------------------------------------------------------------------------- mnist and fashion-mnist


def test_mnist_from_genlab_data(genlab_data, make_idx_dataset):
    arrays = make_idx_dataset(genlab_data / "mnist", n_train=30, n_test=10)
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    assert (len(train), len(test)) == (30, 10)
    assert train.image_shape == (1, 4, 5) and train.name == "mnist"
    assert torch.equal(train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert train.class_names == [str(d) for d in range(10)]
    info = next(i for i in dataset_catalog() if i.name == "mnist")
    assert info.available and info.location == str(genlab_data / "mnist") and info.how_to_get is None


def test_mnist_plain_files(genlab_data, make_idx_dataset):
    make_idx_dataset(genlab_data / "mnist", n_train=20, n_test=5, gz=False)
    assert len(load_dataset("mnist", "test")) == 5


def test_mnist_missing(genlab_data):
    with pytest.raises(GenlabError) as error:
        load_dataset("mnist")
    message = str(error.value)
    assert "genlab datasets --download mnist" in message
    assert str(genlab_data / "mnist") in message and "/usr/share/datasets/mnist" in message


def test_mnist_partly_there(genlab_data, make_idx_dataset):
    make_idx_dataset(genlab_data / "mnist")
    (genlab_data / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(GenlabError, match=r"mnist lacks t10k-labels-idx1-ubyte\)"):
        load_dataset("mnist", "train")


def test_count_mismatch(genlab_data, make_idx_dataset, write_idx):
    make_idx_dataset(genlab_data / "mnist", n_train=30)
    write_idx(genlab_data / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(GenlabError, match="30 images but .* 29 labels"):
        load_dataset("mnist")


def test_bad_label_value(genlab_data, make_idx_dataset, write_idx):
    make_idx_dataset(genlab_data / "mnist", n_train=30)
    write_idx(genlab_data / "mnist" / "train-labels-idx1-ubyte.gz", np.full(30, 12, np.uint8))
    with pytest.raises(GenlabError, match="label 12 is outside 0..9"):
        load_dataset("mnist")


def test_fashion_genlab_data_comes_first(genlab_data, make_idx_dataset):
    make_idx_dataset(genlab_data / "fashion-mnist", n_train=20, n_test=10)
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10 and test.class_names == FASHION_CLASSES


def test_fashion_missing_message(genlab_data, monkeypatch):
    monkeypatch.setattr("genlab.data.idx.SYSTEM_ROOT", genlab_data / "nowhere")
    with pytest.raises(GenlabError) as error:
        load_dataset("fashion-mnist")
    message = str(error.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message and "$GENLAB_DATA/fashion-mnist" in message
    assert str(genlab_data / "fashion-mnist") in message
    info = next(i for i in dataset_catalog() if i.name == "fashion-mnist")
    assert not info.available and info.how_to_get == "sudo apt-get install dataset-fashion-mnist"


@pytest.mark.skipif(
    not FASHION_SYSTEM.is_dir(), reason=f"{FASHION_SYSTEM} absent (sudo apt-get install dataset-fashion-mnist)"
)
def test_fashion_from_system(genlab_data):
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.image_shape == (1, 28, 28) and train.class_names == FASHION_CLASSES
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    info = next(i for i in dataset_catalog() if i.name == "fashion-mnist")
    assert info.available and info.location == str(FASHION_SYSTEM)


# --------------------------------------------------------------------------- data_root


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "g"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "g"
    monkeypatch.delenv("GENLAB_DATA")
    assert data_root() == tmp_path / "xdg" / "genlab"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == Path(tmp_path / "home" / ".local" / "share" / "genlab")
