"""The shipped feature extractors: checksums, accuracy on real test images, features, bad input."""

from __future__ import annotations

import shutil

import pytest
import torch

from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.eval.features import (
    EXTRACTORS,
    WEIGHTS_DIR,
    Augment,
    ClassifierConfig,
    DomainClassifier,
    augment,
    extractor_for,
    load_extractor,
    sha256_of,
    train_classifier,
)


@pytest.fixture(scope="module")
def digits():
    return load_extractor("digits")


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("mnist-5k", split="test")


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_shipped_weights_match_their_recorded_sha256(name):
    spec = EXTRACTORS[name]
    assert sha256_of(WEIGHTS_DIR / spec.filename) == spec.sha256
    extractor = load_extractor(name)
    assert (extractor.name, extractor.sha256) == (name, spec.sha256)
    assert (extractor.feature_dim, extractor.num_classes) == (256, 10)
    assert len(extractor.class_names) == 10
    assert not extractor.model.training


def test_digits_extractor_classifies_the_mnist5k_test_split(digits, digits_test):
    assert len(digits_test) == 1000
    accuracy = (digits.predict(digits_test.images) == digits_test.labels).float().mean().item()
    assert accuracy >= 0.985, accuracy


def test_fashion_extractor_classifies_fashion_mnist_test_images():
    try:
        test = load_dataset("fashion-mnist", split="test")
    except GenlabError as error:
        pytest.skip(f"fashion-mnist is not installed here: {error}")
    images, labels = test.images[:2000], test.labels[:2000]
    accuracy = (load_extractor("fashion").predict(images) == labels).float().mean().item()
    assert accuracy >= 0.91, accuracy


def test_features_have_shape_n_by_d_and_do_not_depend_on_the_batch_size(digits, digits_test):
    images = digits_test.images[:600].float() / 255  # (600, 1, 28, 28) in [0, 1]
    by_500 = digits.features(images, batch_size=500)
    by_50 = digits.features(images, batch_size=50)
    assert by_500.shape == (600, digits.feature_dim) and by_500.dtype == torch.float32
    torch.testing.assert_close(by_50, by_500, rtol=1e-5, atol=1e-5)
    assert torch.equal(digits.features(images), by_500)  # deterministic
    assert torch.equal(digits.features(digits_test.images[:600]), by_500)  # uint8 means /255
    assert digits.features(images[:0]).shape == (0, digits.feature_dim)
    # Dense, full-rank features: no unit is constant (FID fits a full covariance).
    assert (by_500.std(dim=0) > 1e-3).all()


def test_probabilities_are_a_distribution_per_image(digits, digits_test):
    probs = digits.probabilities(digits_test.images[:100].float() / 255, batch_size=32)
    assert probs.shape == (100, 10)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(100))
    assert torch.equal(probs.argmax(dim=1), digits.predict(digits_test.images[:100]))


def test_a_corrupted_weight_file_is_refused_by_its_sha256(tmp_path):
    corrupt = tmp_path / "digits.safetensors"
    shutil.copyfile(WEIGHTS_DIR / EXTRACTORS["digits"].filename, corrupt)
    data = bytearray(corrupt.read_bytes())
    data[-100] ^= 0xFF  # one byte of one weight: still a valid safetensors file
    corrupt.write_bytes(bytes(data))
    with pytest.raises(GenlabError, match="sha256"):
        load_extractor("digits", path=corrupt)
    with pytest.raises(GenlabError, match="missing"):
        load_extractor("digits", path=tmp_path / "absent.safetensors")
    with pytest.raises(GenlabError, match="shipped extractors: digits, fashion"):
        load_extractor("inception")


def test_extractor_for_picks_by_dataset_name():
    assert extractor_for("mnist-5k", (1, 28, 28)).name == "digits"
    assert extractor_for("mnist", torch.Size([1, 28, 28])).name == "digits"
    assert extractor_for("fashion-mnist", [1, 28, 28]).name == "fashion"


@pytest.mark.parametrize(
    "name, shape",
    [("folder:pets", (3, 32, 32)), ("digits", (1, 8, 8)), ("mnist-5k", (1, 32, 32)), ("npz:samples.npz", (1, 28, 28))],
)
def test_extractor_for_refuses_what_no_shipped_extractor_fits(name, shape):
    with pytest.raises(GenlabError, match="--inception PATH"):
        extractor_for(name, shape)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(4, 3, 28, 28), r"shape \(N, 1, 28, 28\)"),
        (torch.rand(4, 28, 28), r"shape \(N, 1, 28, 28\)"),
        (torch.rand(4, 1, 28, 28) * 2 - 1, r"in \[0, 1\]"),
        (torch.full((4, 1, 28, 28), float("nan")), r"in \[0, 1\]"),
        (torch.ones(4, 1, 28, 28, dtype=torch.int32), "float"),
    ],
)
def test_bad_images_are_refused(digits, images, message):
    with pytest.raises(GenlabError, match=message):
        digits.features(images)
    with pytest.raises(GenlabError, match="batch_size"):
        digits.features(torch.rand(2, 1, 28, 28), batch_size=0)


def test_training_is_seeded_and_leaves_the_global_rng_alone(digits_test):
    images, labels = digits_test.images[:256], digits_test.labels[:256]
    config = ClassifierConfig(channels=(4, 8), hidden=16)
    before = torch.get_rng_state()
    kwargs = dict(epochs=1, seed=3, batch_size=64, aug=Augment(degrees=10, scale=0.1, shift=2, hflip=True))
    first = train_classifier(images, labels, config, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    second = train_classifier(images, labels, config, **kwargs)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert isinstance(first, DomainClassifier) and not first.training


def test_augment_without_jitter_is_the_identity():
    images = torch.rand(8, 1, 28, 28)
    out = augment(images, Augment(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, images, rtol=0, atol=1e-5)
    shifted = augment(images, Augment(shift=2.0), torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and not torch.allclose(shifted, images)
