"""Runs written before the families became packages still load, sample and resume, bit for bit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.run import Run, read_history
from genlab.training.api import train

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
FAMILIES = ["vae", "gan", "dcgan", "wgan-gp", "ddpm", "pixelcnn", "realnvp"]
TIMING_KEYS = {"seconds", "images_per_second"}


@pytest.mark.parametrize("name", FAMILIES)
def test_an_old_run_loads_and_draws_the_same_images(name):
    expected = load_file(FIXTURES / "expected_samples.safetensors")[name]
    run = Run.load(FIXTURES / name)
    images = run.sample(4, generator=torch.Generator().manual_seed(7))
    assert images.shape == expected.shape
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [name for name in FAMILIES if name != "gan"])
def test_an_old_run_resumes_to_the_same_numbers(name, tmp_path):
    expected = json.loads((FIXTURES / "expected_resume.json").read_text())[name]
    copy = tmp_path / name
    shutil.copytree(FIXTURES / name, copy)
    epochs = expected["last_epoch"]["epoch"]
    train(out=copy, resume=True, epochs=epochs, progress=False)
    record = read_history(copy)[-1]
    assert record["epoch"] == epochs
    for key, value in expected["last_epoch"].items():
        if key not in TIMING_KEYS:
            assert math.isclose(record[key], value, rel_tol=1e-5, abs_tol=1e-7), key
    model = Run.load(copy).model
    weights_sum = sum(float(t.double().abs().sum()) for t in model.state_dict().values() if t.is_floating_point())
    assert math.isclose(weights_sum, expected["weights_sum"], rel_tol=1e-6)
