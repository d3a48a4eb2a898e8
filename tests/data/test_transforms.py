import torch

from genlab.data.transforms import binarize, flatten, from_symmetric, to_symmetric, to_uint8, to_unit


def test_to_unit_maps_150_to_0588():
    x = to_unit(torch.tensor([[[[0, 150, 255]]]], dtype=torch.uint8))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([0.0, 150 / 255, 1.0]))
    assert round(x.flatten()[1].item(), 3) == 0.588


def test_symmetric_range_round_trips():
    x = torch.rand(4, 1, 3, 3)
    y = to_symmetric(x)
    assert y.min() >= -1 and y.max() <= 1
    torch.testing.assert_close(from_symmetric(y), x)
    assert from_symmetric(torch.tensor([-2.0, 2.0])).tolist() == [0.0, 1.0]  # clamped


def test_to_uint8_inverts_to_unit_exactly():
    images = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_unit(images)), images)


def test_flatten_keeps_the_batch():
    assert flatten(torch.zeros(5, 3, 4, 4)).shape == (5, 48)


def test_dynamic_binarization_is_bernoulli_of_the_intensity():
    x = torch.full((200, 1, 28, 28), 0.3)
    b = binarize(x, generator=torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) == {0.0, 1.0}
    assert abs(b.mean().item() - 0.3) < 0.01
    again = binarize(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, again)  # a seeded generator gives a fixed binarization
    assert not torch.equal(binarize(x), binarize(x))  # a fresh draw each call otherwise
