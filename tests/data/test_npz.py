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
        (
            {"images": pixels((N, 4, 4)), "labels": np.zeros(N - 1, int)},
            r"is int64 \(9,\); expected 10 integer class indices",
        ),
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
    with pytest.raises(GenlabError, match=r"is not an .npz file \(not a zip archive\); save the arrays"):
        load_dataset(f"npz:{tmp_path / 'text.npz'}")
    np.save(tmp_path / "bare.npy", pixels((N, 4, 4)))
    with pytest.raises(GenlabError, match="one bare array"):
        load_dataset(f"npz:{tmp_path / 'bare.npy'}")
    np.savez(tmp_path / "pickled.npz", images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GenlabError, match="`images` is an array of Python objects, which genlab never unpickles"):
        load_dataset(f"npz:{tmp_path / 'pickled.npz'}")


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.arange(N) + 2_999_990, "found max 2999999 for 10 images"),  # ids, not class indices
        (np.array([0] * (N - 1) + [N]), "found max 10 for 10 images"),  # K = 11 > 10 images
        (-np.arange(N), "negative value -9"),
    ],
)
def test_labels_must_be_class_indices(tmp_path, labels, message):
    with pytest.raises(GenlabError, match=message) as error:
        load_dataset(write(tmp_path, images=pixels((N, 4, 4)), labels=labels))
    assert "np.unique(labels, return_inverse=True)" in str(error.value)


def test_many_classes_need_many_images_or_names(tmp_path):
    n = 12_000
    images = np.zeros((n, 1, 1), np.uint8)
    with pytest.raises(GenlabError, match="at most 10,000; found max 10999"):
        load_dataset(write(tmp_path, images=images, labels=np.arange(n) % 11_000))
    names = np.array([f"c{k}" for k in range(10_001)])
    with pytest.raises(GenlabError, match="10,001 names; genlab handles at most 10,000"):
        load_dataset(write(tmp_path, images=images, labels=np.zeros(n, int), class_names=names))


def test_class_names_define_k(tmp_path):
    # Four samples of class 7 (`genlab sample --labels 7 --n 4`): fine when the names say there are 10 classes.
    names = np.array([str(d) for d in range(10)])
    spec = write(tmp_path, images=pixels((4, 4, 4)), labels=np.full(4, 7), class_names=names)
    train = load_dataset(spec)
    assert train.labels.tolist() == [7] * 3 and train.class_names == list(names)


def test_more_bad_files(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(GenlabError, match=r"dir.npz is a folder, not a file; give the path of an .npz file"):
        load_dataset(f"npz:{tmp_path / 'dir.npz'}")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(GenlabError, match="not a zip archive"):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}")
    good = tmp_path / "good.npz"
    np.savez_compressed(good, images=pixels((N, 8, 8)))
    data = bytearray(good.read_bytes())
    data[60:90] = b"\xff" * 30  # corrupt the compressed member
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    with pytest.raises(GenlabError, match="is not a readable .npz file"):
        load_dataset(f"npz:{tmp_path / 'corrupt.npz'}")
    np.savez(tmp_path / "names.npz", images=pixels((N, 4, 4)), labels=np.zeros(N, int),
             class_names=np.array(["a", None], dtype=object))  # fmt: skip
    with pytest.raises(GenlabError, match="`class_names` is an array of Python objects"):
        load_dataset(f"npz:{tmp_path / 'names.npz'}")


def test_one_image_leaves_an_empty_labelled_test_split(tmp_path):
    test = load_dataset(write(tmp_path, images=pixels((1, 4, 4)), labels=np.zeros(1, int)), "test")
    assert len(test) == 0 and test.num_classes == 1 and test.labels.shape == (0,)


def test_zip_member_that_is_not_an_array(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as archive:
        archive.writestr("images.npy", b"not numpy data")
    with pytest.raises(GenlabError, match="`images` in .* is not NumPy array data; write the file with np.savez"):
        load_dataset(f"npz:{tmp_path / 'odd.npz'}")


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_unknown_user_in_path(kind):
    with pytest.raises(GenlabError, match="cannot expand ~no_such_user_genlab/x, .*; give the full path"):
        load_dataset(f"{kind}:~no_such_user_genlab/x")


def test_float_images_convert_in_chunks_as_whole(tmp_path, monkeypatch):
    from genlab.data import npz, read_npz
    from genlab.data.transforms import to_uint8

    images = np.random.default_rng(1).random((37, 8, 8, 3), dtype=np.float32)  # channel-last, converted in chunks
    spec = write(tmp_path, images=images)
    monkeypatch.setattr(npz, "CONVERT_CHUNK", 500)  # a few images at a time, the last chunk shorter
    chunked = read_npz(spec[len("npz:") :]).images
    whole = to_uint8(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    assert torch.equal(chunked, whole)
    images[30, 2, 2, 1] = np.nan  # in the last chunk: still found
    with pytest.raises(GenlabError, match="NaN"):
        load_dataset(write(tmp_path, images=images))


def test_header_is_checked_before_the_data_is_read(tmp_path):
    # A member whose data is cut short but whose header declares a size beyond any machine: refused on the size.
    import zipfile

    with zipfile.ZipFile(tmp_path / "declared.npz", "w") as archive:
        with archive.open("images.npy", "w") as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 64, 64)}
            )
    with pytest.raises(GenlabError, match=r"reading `images` uint8 \(1000000000000, 64, 64\) would take"):
        load_dataset(f"npz:{tmp_path / 'declared.npz'}")
