"""The Python API a user meets first: the names on `genlab` itself."""

import pytest
import torch

import genlab
from genlab.errors import GenlabError
from genlab.training import pick_device


def test_the_documented_path_works_from_the_top_level(tmp_path):
    train = genlab.load_dataset("digits")
    assert isinstance(train, genlab.ImageDataset) and train.images.shape == (1437, 1, 8, 8)
    model = genlab.build_model("vae", train, hidden_dim=32, latent_dim=4)
    assert isinstance(model, genlab.MODELS["vae"])
    run = genlab.train("vae", "digits", tmp_path / "vae", epochs=1, progress=False,
                       model_config={"hidden_dim": 32, "latent_dim": 4})
    assert isinstance(run, genlab.Run)
    images = genlab.Run.load(tmp_path / "vae").sample(9, generator=torch.Generator().manual_seed(1))
    assert images.shape == (9, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, run.sample(9, generator=torch.Generator().manual_seed(1)))


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError):
        genlab.no_such_thing  # noqa: B018


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(GenlabError, match="unknown device 'gpu9'"):
        pick_device("gpu9")
    if not torch.cuda.is_available():
        with pytest.raises(GenlabError, match="no CUDA GPU; use --device cpu"):
            pick_device("cuda")


def test_train_accepts_datasets_in_memory(tmp_path):
    train, test = genlab.load_dataset("digits"), genlab.load_dataset("digits", split="test")
    run = genlab.train("vae", train.subset(range(200)), tmp_path / "vae", test_data=test, epochs=2, progress=False,
                       model_config={"hidden_dim": 32, "latent_dim": 4})
    assert run.info["data"]["train_images"] == 200 and run.info["data"]["test_images"] == 360
    assert [r["epoch"] for r in run.history] == [1, 2] and "test_loss" in run.history[0]


def test_the_public_names_are_the_lazy_exports():
    import genlab

    assert genlab.__all__ == sorted(genlab._EXPORTS)
    assert all(getattr(genlab, name) is not None for name in genlab.__all__)
