import numpy as np
import pytest
import torch

from genlab.data import load_dataset
from genlab.errors import GenlabError

N = 10


def write(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def pixels(shape, dtype=np.uint8):
    return np.random.default_rng(0).integers(0, 256, shape).astype(dtype)


@pytest.mark.parametrize(
    "shape, to_nchw",
    [
        ((N, 5, 6), lambda a: a[:, None]),
        ((N, 1, 5, 6), lambda a: a),
        ((N, 3, 5, 6), lambda a: a),
        ((N, 5, 6, 3), lambda a: a.transpose(0, 3, 1, 2)),
        ((N, 5, 6, 1), lambda a: a.transpose(0, 3, 1, 2)),
    ],
)
def test_layouts(tmp_path, shape, to_nchw):
    images = pixels(shape)
    spec = write(tmp_path, images=images)
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert (len(train), len(test)) == (8, 2) and train.labels is None
    expected = torch.from_numpy(np.ascontiguousarray(to_nchw(images)))
    # Unlabelled: a seeded split; together the two splits hold every image exactly once.
    both = torch.cat([train.images, test.images])
    assert both.shape[1:] == expected.shape[1:] and train.name == spec
    assert sorted(map(bytes, both.reshape(N, -1).numpy())) == sorted(map(bytes, expected.reshape(N, -1).numpy()))


def test_float_rounds_to_uint8(tmp_path):
    values = np.array([0.0, 1.0, 150 / 255, 0.5, 1 / 255, 0.999], np.float32)
    images = np.repeat(values[:, None, None], 5, axis=0).reshape(-1, 1, 1) * np.ones((1, 2, 2), np.float32)
    spec = write(tmp_path, images=images)
    every = torch.cat([load_dataset(spec, "train").images, load_dataset(spec, "test").images])
    assert sorted(set(every.flatten().tolist())) == [0, 1, 128, 150, 255]  # 0.999*255 = 254.7 -> 255


def test_sample_format_round_trip(tmp_path):
    # What `genlab sample --format npz` writes: float32 (N, C, H, W) in [0, 1] plus labels.
    images = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    labels = np.arange(20) % 4
    spec = write(tmp_path, images=images, labels=labels)
    train = load_dataset(spec, "train")
    assert train.image_shape == (1, 28, 28) and len(train) == 16
    assert torch.bincount(train.labels).tolist() == [4] * 4  # stratified 80/20
    assert train.class_names == ["0", "1", "2", "3"]


def test_labels_and_class_names(tmp_path):
    spec = write(tmp_path, images=pixels((N, 4, 4)), labels=np.arange(N) % 2, class_names=np.array(["cat", "dog"]))
    test = load_dataset(spec, "test")
    assert test.class_names == ["cat", "dog"] and test.labels.dtype == torch.int64
    assert sorted(test.labels.tolist()) == [0, 1]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"pictures": pixels((N, 4, 4))}, r"has arrays \['pictures'\]; expected `images`"),
        ({"images": pixels((N, 16))}, r"uint8 \(10, 16\); expected `images`"),
        ({"images": pixels((N, 2, 4, 4))}, r"\(10, 2, 4, 4\)"),
        ({"images": pixels((N, 4, 4, 4))}, r"\(10, 4, 4, 4\)"),
        ({"images": pixels((0, 4, 4))}, "holds no pixels"),
        ({"images": pixels((N, 4, 4), np.float32)}, r"values in \[0, 2\d\d\]"),
        ({"images": -pixels((N, 4, 4), np.float64) / 255}, r"values in \[-1"),
        ({"images": np.full((N, 4, 4), np.nan, np.float32)}, "NaN"),
        ({"images": pixels((N, 4, 4), np.int16)}, "int16.*astype"),
        ({"images": pixels((N, 4, 4)), "labels": np.zeros(N - 1, int)}, r"is int64 \(9,\); expected `labels` as 10"),
        ({"images": pixels((N, 4, 4)), "labels": np.zeros(N, np.float32)}, "float32"),
        ({"images": pixels((N, 4, 4)), "labels": -np.ones(N, int)}, "negative value -1"),
        ({"images": pixels((N, 4, 4)), "labels": np.arange(N), "class_names": np.array(["a"])}, "label 9 has no entry"),
        ({"images": pixels((N, 4, 4)), "labels": np.arange(N), "class_names": np.arange(N)}, "1-D array of strings"),
        ({"images": pixels((N, 4, 4)), "class_names": np.array(["a"])}, "without `labels`"),
    ],
)
def test_bad_contents(tmp_path, arrays, message):
    with pytest.raises(GenlabError, match=message):
        load_dataset(write(tmp_path, **arrays))


def test_bad_files(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(GenlabError, match="not a readable .npz file"):
        load_dataset(f"npz:{tmp_path / 'text.npz'}")
    np.save(tmp_path / "bare.npy", pixels((N, 4, 4)))
    with pytest.raises(GenlabError, match="one bare array"):
        load_dataset(f"npz:{tmp_path / 'bare.npy'}")
    np.savez(tmp_path / "pickled.npz", images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GenlabError, match="not a readable .npz file"):  # never unpickled
        load_dataset(f"npz:{tmp_path / 'pickled.npz'}")
