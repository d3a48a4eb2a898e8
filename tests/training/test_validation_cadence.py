"""Validation every few epochs (`validate_every`): which epochs are tested, what run.json keeps, resume, the CLI,
and how the trace and its observations read a history whose test numbers come every few epochs."""

import json

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.explain.observations import observe_epoch
from genlab.explain.trace import training_trace_cells
from genlab.io import load_tensors
from genlab.run import read_history, read_run_info
from genlab.training import TrainConfig, Trainer
from genlab.training.trainer import VALIDATIONS_PER_RUN, default_validate_every

TINY_VAE = {"hidden_dim": 16, "latent_dim": 4}


def train_digits(out, epochs, **kwargs):
    kwargs = {"seed": 3, "progress": False, "model_config": TINY_VAE, "batch_size": 256, **kwargs}
    return genlab.train("vae", "digits", out, epochs=epochs, **kwargs)


def epochs_tested(out) -> list[int]:
    return [record["epoch"] for record in read_history(out) if "test_loss" in record]


def test_the_default_cadence_tests_about_fifty_times_a_run():
    assert [default_validate_every(e) for e in (1, 20, 50, 51, 100, 101, 240, 350)] == [1, 1, 1, 2, 2, 3, 5, 7]
    for epochs in (1, 49, 51, 240, 1000, 12345):
        every = default_validate_every(epochs)
        assert epochs // every <= VALIDATIONS_PER_RUN  # at most about 50 tests (the last epoch may add one)


@pytest.mark.parametrize("every", [0, -2, True, 1.5, "3"])
def test_a_cadence_that_is_no_positive_number_of_epochs_is_refused(every):
    with pytest.raises(GenlabError, match="--validate-every"):
        TrainConfig(validate_every=every).validate()


def test_tests_every_n_epochs_and_after_the_last_with_grids_alike(tmp_path):
    train_digits(tmp_path / "run", 7, validate_every=3)
    history = read_history(tmp_path / "run")
    assert [r["epoch"] for r in history] == list(range(1, 8)) and all("loss" in r for r in history)
    assert epochs_tested(tmp_path / "run") == [3, 6, 7]
    assert read_run_info(tmp_path / "run")["train"]["validate_every"] == 3
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "epoch_0003.png", "epoch_0006.png", "epoch_0007.png"
    ]  # fmt: skip
    train_digits(tmp_path / "grids", 4, validate_every=3, sample_every=1)  # an explicit grid cadence wins
    assert len(list((tmp_path / "grids" / "samples").iterdir())) == 4


def test_a_long_run_tests_about_fifty_times_by_default(tmp_path):
    train_digits(tmp_path / "run", 51, batch_size=1024)  # 2 steps an epoch
    assert read_run_info(tmp_path / "run")["train"]["validate_every"] == 2
    assert epochs_tested(tmp_path / "run") == [*range(2, 51, 2), 51]
    train_digits(tmp_path / "short", 3)
    assert epochs_tested(tmp_path / "short") == [1, 2, 3]  # up to 50 epochs: every one, as ever


def test_testing_less_often_changes_no_weight_and_no_training_number(tmp_path):
    train_digits(tmp_path / "every", 4, validate_every=1)
    train_digits(tmp_path / "sparse", 4, validate_every=3)
    a, b = (
        load_tensors(tmp_path / "every" / "model.safetensors")[0],
        load_tensors(tmp_path / "sparse" / "model.safetensors")[0],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    every, sparse = read_history(tmp_path / "every"), read_history(tmp_path / "sparse")
    assert [r["loss"] for r in every] == [r["loss"] for r in sparse]
    assert [r["test_loss"] for r in every if r["epoch"] in (3, 4)] == [
        r["test_loss"] for r in sparse if "test_loss" in r
    ]


def test_resume_keeps_the_runs_cadence_and_an_older_run_tests_every_epoch(tmp_path):
    train_digits(tmp_path / "straight", 6, validate_every=2)
    train_digits(tmp_path / "resumed", 3, validate_every=2)
    genlab.train(out=tmp_path / "resumed", epochs=6, resume=True, progress=False)
    assert epochs_tested(tmp_path / "resumed") == [2, 3, 4, 6]  # 3 was the end of the first part
    a = load_tensors(tmp_path / "straight" / "model.safetensors")[0]
    b = load_tensors(tmp_path / "resumed" / "model.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)

    train_digits(tmp_path / "older", 2)
    info = json.loads((tmp_path / "older" / "run.json").read_text())
    del info["train"]["validate_every"]  # as runs before the setting were written
    (tmp_path / "older" / "run.json").write_text(json.dumps(info))
    genlab.train(out=tmp_path / "older", epochs=4, resume=True, progress=False)
    assert epochs_tested(tmp_path / "older") == [1, 2, 3, 4]
    genlab.train(out=tmp_path / "older", epochs=8, resume=True, progress=False, validate_every=4)  # set on resume
    assert (
        epochs_tested(tmp_path / "older")[-2:] == [4, 8]
        and read_run_info(tmp_path / "older")["train"]["validate_every"] == 4
    )


def test_the_command_line_sets_the_cadence_and_says_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "vae", "--data", "digits", "--epochs", "4", "--validate-every", "2", "--out", str(out),
                 "--set", "hidden_dim=16", "--latent-dim", "4", "--no-final-eval", "--seed", "1"]) == 0  # fmt: skip
    assert "the test set every 2 epochs and after the last (--validate-every)" in capsys.readouterr().out
    assert epochs_tested(out) == [2, 4]
    assert main(["train", "vae", "--data", "digits", "--validate-every", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    assert "--validate-every" in capsys.readouterr().err


def history_tested_every(every: int, train: list[float], test: dict[int, float]) -> list[dict]:
    return [
        {"epoch": e, "loss": loss, "images_per_second": 1.0, **({"test_loss": test[e]} if e in test else {})}
        for e, loss in enumerate(train, start=1)
    ]


def test_observations_measure_changes_from_the_last_test():
    train = [200.0, 180.0, 170.0, 160.0, 150.0, 140.0]
    history = history_tested_every(3, train, {3: 160.0, 6: 144.0})
    assert observe_epoch(history, "test_loss") == "still improving: test loss -10.0% since epoch 3"
    assert observe_epoch(history[:5], "test_loss").startswith("still improving: loss")  # an untested epoch: train loss
    flat = history_tested_every(2, [100.0 - e for e in range(10)], {2: 90.0, 4: 89.9, 6: 89.8, 8: 89.7, 10: 89.6})
    assert observe_epoch(flat, "test_loss") == "converged: test loss changed -0.3% over 6 epochs"
    rising = history_tested_every(2, [100.0 - e for e in range(6)], {2: 90.0, 4: 91.0, 6: 92.0})
    assert observe_epoch(rising, "test_loss").startswith("overfitting: test loss rose 2 tests in a row")


def test_the_trace_spreads_its_rows_over_the_epochs_tested():
    history = history_tested_every(5, [100.0 - e / 10 for e in range(240)], {e: 50.0 for e in range(5, 241, 5)})
    _, rows = training_trace_cells(history, (("loss", "Loss"), ("test_loss", "Test loss")), "test_loss", max_rows=20)
    assert len(rows) == 20 and rows[0][0] == "5" and rows[-1][0] == "240"
    assert all(int(row[0]) % 5 == 0 and row[2] == "50.00" for row in rows)


def test_a_family_may_validate_on_a_seeded_subset_of_the_test_split():
    train, test = genlab.load_dataset("digits"), genlab.load_dataset("digits", split="test")
    model = genlab.models.build_model("vae", train, TINY_VAE)
    model.validation_images = 50  # as a family declares it (the GANs: 2,000)
    trainer = Trainer(model, train, test, TrainConfig(epochs=1, batch_size=256, device="cpu"))
    chosen = trainer.validation_data
    assert len(chosen) == 50 and len(trainer.test_data) == len(test) > 50
    again = Trainer(model, train, test, TrainConfig(epochs=1, batch_size=256, device="cpu")).validation_data
    assert torch.equal(chosen.images, again.images) and torch.equal(chosen.labels, again.labels)  # seeded
    assert len(torch.unique(chosen.labels)) == 10  # a random subset, not the split's first images
    whole = Trainer(model, train, chosen, TrainConfig(epochs=1, batch_size=256, device="cpu"))
    model.validation_images = None
    assert trainer.validate() == pytest.approx(whole.validate())  # the numbers of those 50 images
    assert (
        genlab.models.MODELS["dcgan"].validation_images == 2_000
        and genlab.models.MODELS["vae"].validation_images is None
    )
