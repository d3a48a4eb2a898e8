import numpy as np
import torch

from genlab.data import ImageDataset
from genlab.data.splits import DIGIT_CLASSES, package_file, select_splits, split_indices


def test_balanced_classes_split_exactly():
    labels = np.repeat(np.arange(10), 500)  # 500 per class, like mnist-5k
    train, test = split_indices(len(labels), labels)
    assert len(train) == 4000 and len(test) == 1000
    assert np.bincount(labels[train]).tolist() == [400] * 10
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(5000))


def test_uneven_classes_follow_sklearn_test_size():
    # The class counts of scikit-learn's digits: ceil(0.2 * 1797) = 360 go to test.
    counts = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    labels = np.repeat(np.arange(10), counts)
    train, test = split_indices(len(labels), labels)
    assert (len(train), len(test)) == (1437, 360)
    per_class = np.bincount(labels[test])
    assert np.all(np.abs(per_class - np.array(counts) * 0.2) < 1)  # each class keeps its share


def test_split_is_fixed_and_shuffled():
    labels = np.repeat(np.arange(3), 20)
    first, second = split_indices(60, labels), split_indices(60, labels)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], np.sort(first[0]))  # a seeded order, not sorted by class
    assert not np.array_equal(split_indices(60, labels, seed=1)[1], first[1])


def test_unlabelled_and_tiny():
    train, test = split_indices(10)
    assert (len(train), len(test)) == (8, 2)
    assert [len(part) for part in split_indices(1)] == [1, 0]  # one image stays in train
    assert [len(part) for part in split_indices(2)] == [1, 1]


def test_select_splits():
    dataset = ImageDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10) % 2, ["a", "b"], "x")
    train, test = select_splits(dataset)
    assert (len(train), len(test)) == (8, 2) and test.labels.tolist().count(0) == 1
    (only_test,) = select_splits(dataset, ("test",))
    assert torch.equal(only_test.labels, test.labels)


def test_digit_classes_defined_once():
    from genlab.data import digits, idx, mnist5k

    assert DIGIT_CLASSES == tuple("0123456789")
    assert idx.SOURCES["mnist"].class_names is DIGIT_CLASSES
    for module in (digits, mnist5k):
        assert not hasattr(module, "CLASS_NAMES")  # one definition, imported


def test_package_file():
    assert package_file("numpy", "__init__.py") is not None
    assert package_file("numpy", "no/such/file") is None
    assert package_file("no_such_package_genlab", "x") is None
