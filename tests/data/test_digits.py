import numpy as np
import pytest
import torch

from genlab.data import dataset_catalog, load_dataset

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_sizes_and_shape(splits):
    train, test = splits
    assert (len(train), len(test)) == (1437, 360)
    assert train.image_shape == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.class_names == [str(d) for d in range(10)] and train.name == "digits"
    # Stratified: every class keeps about 20% of its images in test.
    total = torch.bincount(train.labels) + torch.bincount(test.labels)
    assert torch.all((torch.bincount(test.labels) - 0.2 * total).abs() < 1)


def test_values_scaled_from_0_16(splits):
    train, _ = splits
    allowed = {int(np.round(v * 255 / 16)) for v in range(17)}  # 0, 16, 32, ..., 128, ..., 255
    values = set(torch.unique(train.images).tolist())
    assert values <= allowed and {0, 255} <= values


def test_fixed_split(splits):
    _, test = splits
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_catalog_entry():
    info = next(i for i in dataset_catalog() if i.name == "digits")
    assert info.available and info.location.endswith("digits.csv.gz")
    assert (info.train_size, info.test_size, info.image_shape) == (1437, 360, (1, 8, 8))
