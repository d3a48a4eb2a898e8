"""The Inception-v3 extractor: pytorch-fid's key names and shapes, features, loading files, bad input.

The real weight file cannot be downloaded here, so every test uses a seeded random init; the
loaders are tested on files written from it in both torch.save formats and as safetensors.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
import torch
from safetensors.torch import save, save_file

from genlab.errors import GenlabError
from genlab.eval.inception import (
    BasicConv2d,
    InceptionExtractor,
    InceptionV3,
    _avg_pool_3x3,
    inception_from_module,
    load_inception,
)

# torchvision's documented parameter count of inception_v3 (1000 classes, with the auxiliary
# classifier): https://pytorch.org/vision/stable/models/generated/torchvision.models.inception_v3.html
TORCHVISION_INCEPTION_V3_PARAMS = 27_161_264
# The auxiliary classifier pytorch-fid's network drops: 1x1 conv 768->128 + BN, 5x5 conv 128->768 + BN, fc 768->1000.
AUX_PARAMS = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
# pytorch-fid's fc has 1008 outputs instead of 1000: 8 more rows of 2048 weights and 8 biases.
FID_INCEPTION_PARAMS = TORCHVISION_INCEPTION_V3_PARAMS - AUX_PARAMS + 8 * 2048 + 8


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return InceptionV3().eval()


@pytest.fixture(scope="module")
def extractor(network):
    return inception_from_module(network)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 28, 28, generator=generator)  # resized to 299x299 inside


@pytest.fixture(scope="module")
def features(extractor, images):
    return extractor.features(images)


@pytest.fixture(scope="module")
def state_dict(network):
    return {key: value.clone() for key, value in network.state_dict().items()}


def test_state_dict_has_pytorch_fid_keys_and_shapes(network):
    state = network.state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_1a_3x3.bn.running_mean"] == (32,)
    assert shapes["Conv2d_4a_3x3.conv.weight"] == (192, 80, 3, 3)
    assert shapes["Mixed_5b.branch1x1.conv.weight"] == (64, 192, 1, 1)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch3x3dbl_3a.conv.weight"] == (384, 384, 1, 3)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048)
    assert shapes["fc.bias"] == (1008,)
    assert not any(key.startswith("AuxLogits") for key in state)
    # 94 BasicConv2d: each conv.weight + bn.{weight, bias, running_mean, running_var, num_batches_tracked}
    suffixes = Counter(".".join(key.split(".")[-2:]) for key in state)
    assert suffixes["conv.weight"] == suffixes["bn.running_var"] == suffixes["bn.num_batches_tracked"] == 94
    assert len(state) == 94 * 6 + 2
    assert sum(p.numel() for p in network.parameters()) == FID_INCEPTION_PARAMS == 23_850_960
    convs = [m for m in network.modules() if isinstance(m, BasicConv2d)]
    assert all(m.conv.bias is None and m.bn.eps == 0.001 for m in convs)
    assert (network.Mixed_7b.pool, network.Mixed_7c.pool) == ("avg", "max")


def test_average_pool_branches_leave_the_zero_padding_out():
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(_avg_pool_3x3(x), x)  # counting the padding would give 4/9 in the corners


def test_preprocess_resizes_to_299_and_scales_to_minus_one_one(network):
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(network.preprocess(x), 2 * x - 1, atol=1e-6)  # same size: no resampling
    y = network.preprocess(torch.rand(2, 1, 28, 40, generator=torch.Generator().manual_seed(3)))
    assert y.shape == (2, 3, 299, 299) and -1 <= y.min() and y.max() <= 1


def test_features_are_finite_2048_vectors(extractor, features):
    assert features.shape == (4, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert features.std(dim=0).mean() > 0  # different images, different features
    assert (extractor.name, extractor.sha256) == ("inception-v3-fid", "random-init")
    assert (extractor.feature_dim, extractor.num_classes, extractor.class_names) == (2048, 1008, [])
    assert extractor.device == torch.device("cpu") and extractor.to("cpu") is extractor
    assert "inception-v3-fid" in repr(extractor)


def test_logits_probabilities_and_predictions(extractor, images):
    one = images[:1]  # each call is a full 299x299 forward pass: one image keeps the test fast
    logits = extractor.logits(one)
    probs = extractor.probabilities(one)
    assert logits.shape == probs.shape == (1, 1008)
    assert torch.allclose(probs, torch.softmax(logits, dim=1)) and abs(probs.sum().item() - 1) < 1e-5
    assert torch.equal(extractor.predict(one), logits.argmax(dim=1))


def test_results_do_not_depend_on_the_batch_size(extractor, images, features):
    one_by_one = extractor.features(images, batch_size=1)
    assert torch.allclose(one_by_one, features, atol=1e-5, rtol=1e-5)


def test_uint8_images_equal_float_images_divided_by_255(extractor):
    raw = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(extractor.features(raw), extractor.features(raw.float() / 255), atol=1e-6)


def test_grayscale_equals_the_image_repeated_to_three_channels(extractor, images):
    gray = images[:1, :1]  # (1, 1, 28, 28)
    assert torch.allclose(extractor.features(gray), extractor.features(gray.repeat(1, 3, 1, 1)), atol=1e-6)


def test_calls_run_in_eval_mode_and_restore_the_training_mode(network, extractor, images, features):
    network.train()
    try:
        again = extractor.features(images[:1])  # BatchNorm in training mode would use batch statistics
        assert network.training
    finally:
        network.eval()
    assert torch.allclose(again, features[:1], atol=1e-5)


def _same_weights(extractor: InceptionExtractor, state_dict: dict[str, torch.Tensor]) -> bool:
    loaded = extractor.model.state_dict()
    return loaded.keys() == state_dict.keys() and all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def test_a_torch_save_file_loads_with_its_sha256(tmp_path, state_dict, images, features):
    path = tmp_path / "pt_inception.pth"
    torch.save(state_dict, path)
    loaded = load_inception(path)
    assert isinstance(loaded, InceptionExtractor)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _same_weights(loaded, state_dict)
    assert torch.allclose(loaded.features(images[:1]), features[:1], atol=1e-5)


def test_a_legacy_torch_save_file_without_batch_counters_loads(tmp_path, state_dict):
    # Files written by torch < 1.6 are raw pickles, and BatchNorm had no batch counter before 0.4.1.
    path = tmp_path / "old.pth"
    old = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"
    loaded = load_inception(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _same_weights(loaded, state_dict)  # the counters come back as 0, as in `state_dict`


def test_a_safetensors_file_loads_with_its_sha256(tmp_path, state_dict, images, features):
    path = tmp_path / "inception.safetensors"
    save_file(state_dict, str(path))
    loaded = load_inception(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _same_weights(loaded, state_dict)
    assert torch.allclose(loaded.features(images[:1]), features[:1], atol=1e-5)


def test_a_missing_key_or_a_wrong_shape_is_refused(tmp_path, state_dict):
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state_dict.items() if k != "Mixed_6c.branch7x7_1.conv.weight"}, missing)
    with pytest.raises(GenlabError, match=r"missing keys: Mixed_6c\.branch7x7_1\.conv\.weight.*pt_inception-2015"):
        load_inception(missing)
    wrong = tmp_path / "wrong.safetensors"
    save_file({**state_dict, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, str(wrong))
    with pytest.raises(GenlabError, match=r"wrong shapes: fc\.weight \(1000, 2048\) instead of \(1008, 2048\)"):
        load_inception(wrong)
    extra = tmp_path / "extra.pth"
    torch.save({**state_dict, "AuxLogits.fc.weight": torch.zeros(1000, 768)}, extra)
    with pytest.raises(GenlabError, match=r"unexpected keys: AuxLogits\.fc\.weight"):
        load_inception(extra)


def test_a_safetensors_header_that_starts_like_a_pickle_is_read_as_safetensors(tmp_path):
    # A header of 640 bytes is written as 80 02 00 .. 00, the first bytes of a protocol-2 pickle.
    tensors = {"fc.bias": torch.zeros(1008)}
    data = next(d for pad in range(700) if (d := save(tensors, {"pad": "x" * pad}))[:2] == b"\x80\x02")
    path = tmp_path / "small.safetensors"
    path.write_bytes(data)
    with pytest.raises(GenlabError, match="missing keys: Conv2d_1a_3x3"):
        load_inception(path)


class _Payload:  # a class torch.load(weights_only=True) must refuse to build
    pass


@pytest.mark.parametrize(
    "content",
    [[1, 2, 3], {"model": {"fc.weight": torch.zeros(2)}}, _Payload()],
    ids=["list", "nested-dict", "object"],
)
def test_a_pickle_of_something_else_is_refused(tmp_path, content):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(GenlabError, match="must be pytorch-fid's pt_inception-2015-12-05-6726825d.pth"):
        load_inception(path)


def test_garbage_and_missing_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a weight file at all")
    with pytest.raises(GenlabError, match="neither a torch.save file nor a safetensors file"):
        load_inception(garbage)
    truncated = tmp_path / "truncated.safetensors"
    save_file({"fc.bias": torch.zeros(1008)}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(GenlabError, match="not a valid safetensors file"):
        load_inception(truncated)
    with pytest.raises(GenlabError, match="does not exist"):
        load_inception(tmp_path / "nope.pth")
    with pytest.raises(GenlabError, match="InceptionV3"):
        inception_from_module(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 28, 28), "shape"),
        (torch.rand(2, 2, 28, 28), "shape"),
        (torch.rand(2, 3, 15, 28), "shape"),
        (torch.full((1, 1, 28, 28), 1.5), r"\[0, 1\]"),
        (torch.full((1, 1, 28, 28), -0.1), r"\[0, 1\]"),
        (torch.full((1, 1, 28, 28), float("nan")), r"\[0, 1\]"),
        (torch.zeros((1, 1, 28, 28), dtype=torch.int32), "uint8"),
        ("images", "tensor"),
    ],
    ids=["rank3", "two-channels", "too-small", "above-1", "below-0", "nan", "int32", "string"],
)
def test_bad_images_are_refused(extractor, bad, message):
    with pytest.raises(GenlabError, match=message):
        extractor.features(bad)


def test_bad_batch_size_is_refused(extractor, images):
    with pytest.raises(GenlabError, match="batch_size"):
        extractor.features(images, batch_size=0)


def test_a_pth_converts_once_to_safetensors_that_load_with_no_unpickler(tmp_path, state_dict, images):
    from genlab.eval.inception import convert_inception

    pth, out = tmp_path / "pt_inception.pth", tmp_path / "inception.safetensors"
    torch.save(state_dict, pth)
    assert convert_inception(pth, out) == out
    assert out.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    from_pth, from_safetensors = load_inception(pth), load_inception(out)
    torch.testing.assert_close(from_safetensors.features(images[:1]), from_pth.features(images[:1]))
    with pytest.raises(GenlabError, match="exists"):
        convert_inception(pth, out)
    with pytest.raises(GenlabError, match="must end in .safetensors"):
        convert_inception(pth, tmp_path / "inception.pth2")
