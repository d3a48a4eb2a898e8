"""The loop: exact resume, the NaN guard, Ctrl-C, and a SIGKILL in the middle of an epoch."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import genlab
from genlab.errors import GenlabError, TrainingDiverged
from genlab.io import load_tensors
from genlab.run import Run, read_history, read_run_info
from genlab.training import Callback, TrainConfig, Trainer

SMALL_VAE = {"hidden_dim": 64, "latent_dim": 8}


@pytest.fixture(scope="module")
def digits():
    return genlab.load_dataset("digits"), genlab.load_dataset("digits", split="test")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path / "model.safetensors")[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def train_digits(out, epochs, **kwargs):
    return genlab.train("vae", "digits", out, epochs=epochs, seed=3, progress=False, model_config=SMALL_VAE, **kwargs)


def test_resume_is_bitwise_identical_to_a_straight_run(tmp_path):
    train_digits(tmp_path / "straight", 4)
    train_digits(tmp_path / "resumed", 2)
    assert read_run_info(tmp_path / "resumed")["epochs_completed"] == 2
    genlab.train(out=tmp_path / "resumed", epochs=4, resume=True, progress=False)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    # the files themselves are byte for byte the same (metadata included)
    for name in ("model.safetensors", "state.safetensors"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()
    straight, resumed = read_history(tmp_path / "straight"), read_history(tmp_path / "resumed")
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in straight] == [r["loss"] for r in resumed]
    assert [r["test_loss"] for r in straight] == [r["test_loss"] for r in resumed]


def test_run_directory_format(tmp_path):
    run = train_digits(tmp_path / "run", 2)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == [".lock", "history.jsonl", "model.safetensors", "run.json", "samples", "state.safetensors"]
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "completed" and info["epochs_completed"] == 2
    assert info["model"] == {"name": "vae", "config": {**info["model"]["config"], **SMALL_VAE}}
    assert info["data"]["spec"] == "digits" and info["data"]["shape"]["height"] == 8
    assert info["train"] == {"epochs": 2, "batch_size": 64, "seed": 3, "validate_every": 1, "precision": "fp32",
                             "compile": False, "processes": 1}
    for record in run.history:
        assert {"epoch", "seconds", "images_per_second", "loss", "test_loss", "recon_accuracy"} <= record.keys()
        assert record["images_per_second"] > 0 and 0 <= record["recon_accuracy"] <= 1
    # run.json alone rebuilds the model: Run.load needs no flags
    loaded = Run.load(tmp_path / "run")
    g = torch.Generator
    assert torch.equal(loaded.sample(4, generator=g().manual_seed(0)), run.sample(4, generator=g().manual_seed(0)))


def test_loss_falls_and_test_loss_is_reported(tmp_path):
    history = train_digits(tmp_path / "run", 5).history
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["test_loss"] < history[0]["test_loss"]


def test_same_seed_same_weights_and_samples(tmp_path):
    train_digits(tmp_path / "a", 1)
    train_digits(tmp_path / "b", 1)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a/samples/epoch_0001.png").read_bytes() == (tmp_path / "b/samples/epoch_0001.png").read_bytes()


class InjectNaN(Callback):
    """Makes the model report a NaN loss from a given epoch and step on."""

    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_epoch_start(self, trainer):
        if trainer.epoch == self.epoch:
            original = trainer.model.training_step
            calls = iter(range(1, 10**6))

            def poisoned(batch, optimizers):
                metrics = original(batch, optimizers)
                return {**metrics, "loss": float("nan")} if next(calls) >= self.step else metrics

            trainer.model.training_step = poisoned


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 3; the run keeps the weights of epoch 1"):
        train_digits(out, 4, callbacks=[InjectNaN(epoch=2, step=3)])
    info = read_run_info(out)
    assert info["status"] == "diverged" and "epoch 2, step 3" in info["message"]
    assert load_tensors(out / "state.safetensors")[1]["progress"] is None
    assert info["epochs_completed"] == 1
    assert load_tensors(out / "model.safetensors")[1]["epoch"] == 1
    assert [r["epoch"] for r in read_history(out)] == [1]
    train_digits(tmp_path / "one", 1)
    assert_same_weights(out, tmp_path / "one")  # exactly epoch 1's weights, not the poisoned ones


class InterruptAt(Callback):
    """Acts like Ctrl-C at (epoch, step): a clean stop request, or (abort=True) a raw KeyboardInterrupt."""

    def __init__(self, epoch, step, abort=False):
        self.epoch, self.step, self.abort = epoch, step, abort

    def on_step_end(self, trainer, metrics):
        if (trainer.epoch, trainer.step) == (self.epoch, self.step):
            if self.abort:
                raise KeyboardInterrupt
            trainer.request_stop()


def test_ctrl_c_saves_inside_the_epoch_and_resumes_exactly(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_digits(tmp_path / "run", 3, callbacks=[InterruptAt(epoch=2, step=5)])
    info = read_run_info(tmp_path / "run")
    assert info["status"] == "interrupted" and info["epochs_completed"] == 1
    assert info["message"] == "interrupted in epoch 2, step 5; saved there"
    state = load_tensors(tmp_path / "run" / "state.safetensors")[1]
    assert state["epoch"] == 1 and state["progress"]["step"] == 5 and state["progress"]["images_seen"] == 5 * 64
    assert load_tensors(tmp_path / "run" / "model.safetensors")[1]["step"] == 5
    Run.load(tmp_path / "run")  # the saved weights load for sampling
    with pytest.raises(GenlabError, match="stopped inside epoch 2; resume with --epochs 2 or more"):
        genlab.train(out=tmp_path / "run", epochs=1, resume=True, progress=False)

    genlab.train(out=tmp_path / "run", epochs=3, resume=True, progress=False)
    train_digits(tmp_path / "straight", 3)
    assert_same_weights(tmp_path / "run", tmp_path / "straight")
    resumed, straight = read_history(tmp_path / "run"), read_history(tmp_path / "straight")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]  # epoch 2's mean spans the stop
    assert read_run_info(tmp_path / "run")["status"] == "completed"


def test_a_stop_on_the_last_step_of_an_epoch_resumes_into_validation(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_digits(tmp_path / "run", 2, callbacks=[InterruptAt(epoch=1, step=23)])  # ceil(1437 / 64) = 23 steps
    genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False)
    train_digits(tmp_path / "straight", 2)
    assert_same_weights(tmp_path / "run", tmp_path / "straight")
    assert read_history(tmp_path / "run") [0]["test_loss"] == read_history(tmp_path / "straight")[0]["test_loss"]


def test_an_abort_keeps_the_last_whole_epoch(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_digits(tmp_path / "run", 3, callbacks=[InterruptAt(epoch=2, step=5, abort=True)])
    info = read_run_info(tmp_path / "run")
    assert info["status"] == "interrupted" and info["message"] == "interrupted in epoch 2"
    assert load_tensors(tmp_path / "run" / "state.safetensors")[1]["progress"] is None
    genlab.train(out=tmp_path / "run", epochs=3, resume=True, progress=False)
    train_digits(tmp_path / "straight", 3)
    assert_same_weights(tmp_path / "run", tmp_path / "straight")


def test_real_ctrl_c_on_the_command_line(tmp_path):
    """SIGINT to `genlab train`: it finishes the step, saves, says how to resume, exits 130."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "genlab", "train", "vae", "--data", "mnist-5k", "--epochs", "8", "--seed", "3",
               "--set", "hidden_dim=64", "--latent-dim", "8", "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((out / "history.jsonl").exists() and (out / "history.jsonl").read_text()) and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and f"genlab train --resume --out {out}" in err
    info = read_run_info(out)
    assert info["status"] == "interrupted" and info["message"].endswith("saved there")
    resumed = subprocess.run(command[:4] + ["--resume", "--out", str(out), "--epochs", "8", "--quiet"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    genlab.train("vae", "mnist-5k", tmp_path / "straight", epochs=8, seed=3, progress=False, model_config=SMALL_VAE)
    assert_same_weights(out, tmp_path / "straight")


def test_resume_refuses_changed_settings_and_missing_runs(tmp_path):
    train_digits(tmp_path / "run", 1)
    before = (tmp_path / "run" / "state.safetensors").read_bytes()
    with pytest.raises(GenlabError, match="seed 5 \\(the run uses 3\\)"):
        genlab.train(out=tmp_path / "run", epochs=2, seed=5, resume=True, progress=False)
    with pytest.raises(GenlabError, match="latent_dim=3 \\(the run has 8\\)"):
        genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False, model_config={"latent_dim": 3})
    with pytest.raises(GenlabError, match="no run to resume"):
        genlab.train(out=tmp_path / "nothing", epochs=2, resume=True, progress=False)
    assert (tmp_path / "run" / "state.safetensors").read_bytes() == before


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    train_digits(tmp_path / "run", 2)
    before = weights(tmp_path / "run")
    run = genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False)
    assert run.info["status"] == "completed"
    after = weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_trainer_alone_knows_no_run_directory(digits):
    train, test = digits
    torch.manual_seed(0)
    model = genlab.build_model("vae", train, SMALL_VAE)
    seen = []

    class Record(Callback):
        def on_epoch_end(self, trainer, record):
            seen.append(record)

    trainer = Trainer(model, train, test, TrainConfig(epochs=2, batch_size=100, device="cpu"), callbacks=[Record()])
    history = trainer.fit()
    assert history == seen and [r["epoch"] for r in history] == [1, 2]
    assert trainer.steps_per_epoch == 15  # ceil(1437 / 100)


def test_bad_loop_settings():
    with pytest.raises(GenlabError, match="epochs must be a positive integer"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(GenlabError, match="batch size must be a positive integer"):
        TrainConfig(batch_size=-1).validate()


def test_sigkill_mid_epoch_then_resume_gives_the_straight_run(tmp_path):
    """Kill -9 at a random moment of training; the run stays loadable and resumes exactly."""
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "genlab", "train", "vae", "--data", "mnist-5k", "--epochs", "8", "--seed", "3",
               "--set", "hidden_dim=64", "--latent-dim", "8", "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    history = out / "history.jsonl"
    chance = random.Random()
    kill_after = chance.randint(1, 6)  # completed epochs before the kill
    deadline = time.time() + 120

    def recorded() -> int:  # epochs run.json says are complete: it is written last, after the history line
        # and the checkpoint, atomically, so a read sees a whole document
        return read_run_info(out)["epochs_completed"] if (out / "run.json").exists() else 0

    while recorded() < kill_after and time.time() < deadline:
        time.sleep(0.005)
    epoch_seconds = json.loads(history.read_text().splitlines()[0])["seconds"]
    pause = chance.uniform(0.0, epoch_seconds)
    where = f"killed {pause:.3f} s after epoch {kill_after} was recorded"  # to reproduce a failure
    time.sleep(pause)  # somewhere inside the next epoch or its checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (where, process.stderr.read().decode())

    killed_at = read_run_info(out)["epochs_completed"]
    assert 1 <= killed_at < 8, where
    Run.load(out)  # loadable as it lies
    resumed = subprocess.run(
        [sys.executable, "-m", "genlab", "train", "--resume", "--out", str(out), "--epochs", "8", "--quiet"],
        capture_output=True, text=True,
    )
    assert resumed.returncode == 0, (where, resumed.stderr)
    genlab.train("vae", "mnist-5k", tmp_path / "straight", epochs=8, seed=3, progress=False, model_config=SMALL_VAE)
    assert_same_weights(out, tmp_path / "straight")
    assert [r["epoch"] for r in read_history(out)] == list(range(1, 9)), where
    assert not list(out.glob(".*.tmp"))  # a write cut off by the kill leaves no debris after resume


UNFITTED_PRIOR = {"prior": "standard"}  # the default VAE otherwise: beta 0.5, the same networks and steps


def test_default_vae_reaches_the_quality_bar_on_mnist_5k(tmp_path):
    """The issue's bar: the default MLP VAE, 20 epochs, seed 0, test loss <= 120 nats per image.

    (A plain loop of the same network with Adam 1e-3 and batch 128 reaches about 124.)
    """
    # The mixture prior is fitted after training and changes neither the steps nor the test loss; refitting it
    # 20 times would only cost time here (about 40 s), so these bars train with the standard prior.
    run = genlab.train("vae", "mnist-5k", tmp_path / "vae", epochs=20, seed=0, progress=False,
                       model_config=UNFITTED_PRIOR)
    history = run.history
    assert history[-1]["test_loss"] <= 120.0
    assert history[-1]["recon_accuracy"] >= 0.95
    assert history[-1]["loss"] < history[0]["loss"] - 50


def test_conv_vae_learns_digits_on_mnist_5k(tmp_path):
    """The conv variant with its defaults (Adam 1e-3, batch 64), seed 0: 208.0 nats after one epoch, 121.7 after 10
    (about 110.5 after 20, below the MLP's bar of 120: benchmarks/README.md)."""
    run = genlab.train("vae", "mnist-5k", tmp_path / "conv", epochs=10, seed=0, progress=False,
                       model_config={"arch": "conv", **UNFITTED_PRIOR})
    losses = [record["test_loss"] for record in run.history]
    assert losses[-1] <= 125.0 and losses[0] - losses[-1] >= 70


def test_conditional_vae_draws_the_asked_digit(tmp_path):
    """`labels=k` draws k: a logistic-regression digit classifier (89% on real test digits) agrees
    with the asked label far above chance (10%), and label k is its most frequent answer for k."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    train = genlab.load_dataset("mnist-5k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; the fit is good enough to judge
        classifier = LogisticRegression(max_iter=200).fit(train.images.reshape(len(train), -1).numpy() / 255,
                                                          train.labels.numpy())
    run = genlab.train("vae", "mnist-5k", tmp_path / "cvae", epochs=20, seed=0, progress=False,
                       model_config={"conditional": True, "latent_dim": 8, **UNFITTED_PRIOR})  # no refit: 3x faster
    asked = torch.arange(500) % 10
    images = run.sample(500, generator=torch.Generator().manual_seed(1), labels=asked)
    predicted = torch.as_tensor(classifier.predict(images.reshape(500, -1).numpy()))
    assert (predicted == asked).float().mean() >= 0.6
    for digit in range(10):
        assert torch.bincount(predicted[asked == digit], minlength=10).argmax() == digit


def test_an_error_while_recording_a_failure_does_not_hide_the_failure(digits):
    train, test = digits
    torch.manual_seed(0)
    model = genlab.build_model("vae", train, SMALL_VAE)

    class FullDisk(Callback):
        def on_epoch_end(self, trainer, record):
            raise GenlabError("could not write state.safetensors: no space left on device")

        def on_train_end(self, trainer, status):
            raise OSError(28, "No space left on device", "run.json")  # recording the failure fails too

    trainer = Trainer(model, train, test, TrainConfig(epochs=1, batch_size=500, device="cpu"), callbacks=[FullDisk()])
    with pytest.raises(GenlabError, match="state.safetensors"):
        trainer.fit()

    class OnlyTheEnd(Callback):
        def on_train_end(self, trainer, status):
            raise OSError(28, "No space left on device", "run.json")

    trainer = Trainer(model, train, test, TrainConfig(epochs=1, batch_size=500, device="cpu"), callbacks=[OnlyTheEnd()])
    with pytest.raises(OSError, match="No space left"):  # a run that ended well still reports its own error
        trainer.fit()


def test_the_opening_line_counts_one_epoch_in_the_singular(tmp_path, capsys):
    def train(out, epochs):
        genlab.train("vae", "digits", out, epochs=epochs, seed=3, model_config=SMALL_VAE)  # progress on

    train(tmp_path / "one", 1)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("training 1 epoch of ") and " epochs" not in line
    settings = Run.load(tmp_path / "one").info["train"]
    assert line.endswith(f"batch {settings['batch_size']})"), line

    train(tmp_path / "two", 2)
    assert capsys.readouterr().out.splitlines()[0].startswith("training 2 epochs of ")
