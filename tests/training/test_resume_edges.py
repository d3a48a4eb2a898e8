"""Resume and run-directory edge cases: what must be refused, and what must still be exact."""

import json

import pytest
import torch

import genlab
from genlab.errors import GenlabError
from genlab.io import load_tensors
from genlab.run import Run, read_history, read_run_info
from genlab.training import Callback

SMALL_VAE = {"hidden_dim": 32, "latent_dim": 4}


def train_digits(out, epochs=None, **kwargs):
    return genlab.train("vae", "digits", out, epochs=epochs, seed=1, progress=False, model_config=SMALL_VAE, **kwargs)


def same_weights(a, b) -> bool:
    wa, wb = load_tensors(a / "model.safetensors")[0], load_tensors(b / "model.safetensors")[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(GenlabError, match="is not empty and is not a genlab run"):
            train_digits(precious, 1, overwrite=overwrite)
    assert (precious / "thesis.tex").read_text() == "years of work" and (precious / "sub").is_dir()


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GenlabError, match="is a file"):
        train_digits(tmp_path / "afile", 1)


class Explode(Callback):
    def on_step_end(self, trainer, metrics):
        if trainer.epoch == 2 and trainer.step == 2:
            raise RuntimeError("disk on fire")


def test_an_unexpected_error_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_digits(tmp_path / "run", 3, callbacks=[Explode()])
    info = read_run_info(tmp_path / "run")
    assert info["status"] == "failed" and info["epochs_completed"] == 1
    assert info["message"] == "failed in epoch 2: RuntimeError: disk on fire"


def test_resume_without_epochs_takes_the_runs_own_total(tmp_path):
    class StopAt(Callback):
        def on_step_end(self, trainer, metrics):
            if (trainer.epoch, trainer.step) == (2, 3):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_digits(tmp_path / "run", 4, callbacks=[StopAt()])
    run = genlab.train(out=tmp_path / "run", resume=True, progress=False)
    assert run.info["status"] == "completed" and run.info["epochs_completed"] == 4
    assert run.info["train"]["epochs"] == 4
    # asking for fewer epochs than done changes nothing, not even the recorded total
    again = genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False)
    assert again.info["train"]["epochs"] == 4 and again.info["epochs_completed"] == 4


def test_in_memory_data_must_be_given_again_and_be_the_same(tmp_path):
    train = genlab.load_dataset("digits").subset(range(300))
    test = genlab.load_dataset("digits", split="test").subset(range(50))
    kwargs = dict(progress=False, model_config=SMALL_VAE, seed=1)
    genlab.train("vae", train, tmp_path / "straight", test_data=test, epochs=3, **kwargs)
    genlab.train("vae", train, tmp_path / "run", test_data=test, epochs=2, **kwargs)
    with pytest.raises(GenlabError, match="dataset in memory; pass it again"):
        genlab.train(out=tmp_path / "run", epochs=3, resume=True, progress=False)
    with pytest.raises(GenlabError, match="not what .* was trained on"):
        genlab.train(out=tmp_path / "run", data=train.subset(range(299)), test_data=test, epochs=3, resume=True,
                     progress=False)
    genlab.train(out=tmp_path / "run", data=train, test_data=test, epochs=3, resume=True, progress=False)
    assert same_weights(tmp_path / "run", tmp_path / "straight")


def test_resume_compares_settings_by_value_and_checks_size(tmp_path):
    train_digits(tmp_path / "run", 1)
    genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False,
                 model_config={"conditional": "false", "lr": "2e-3", "latent_dim": "4"})
    with pytest.raises(GenlabError, match="size 16 \\(the run uses None\\)"):
        genlab.train(out=tmp_path / "run", epochs=3, resume=True, size=16, progress=False)
    with pytest.raises(GenlabError, match="has no setting 'depth'"):
        genlab.train(out=tmp_path / "run", epochs=3, resume=True, progress=False, model_config={"depth": 3})


def test_a_history_line_cut_by_a_crash_is_dropped_on_resume(tmp_path):
    train_digits(tmp_path / "run", 2)
    with open(tmp_path / "run" / "history.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "loss": 12')  # a crash in the middle of an append
    assert [r["epoch"] for r in read_history(tmp_path / "run")] == [1, 2]
    genlab.train(out=tmp_path / "run", epochs=3, resume=True, progress=False)
    assert [r["epoch"] for r in read_history(tmp_path / "run")] == [1, 2, 3]


def test_damaged_state_or_description_is_refused(tmp_path):
    train_digits(tmp_path / "run", 1)
    state = tmp_path / "run" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:200])
    with pytest.raises(GenlabError, match="state.safetensors is not a valid safetensors training state"):
        genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    del info["model"]["name"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    with pytest.raises(GenlabError, match="lacks model.name"):
        Run.load(tmp_path / "run")


class DrawsNoise(Callback):
    """A callback that uses the global RNG, as a metrics-during-training callback might."""

    def on_epoch_end(self, trainer, record):
        torch.randn(100)

    def on_step_end(self, trainer, metrics):
        torch.rand(3)


def test_callbacks_that_draw_noise_do_not_break_exact_resume(tmp_path):
    train_digits(tmp_path / "plain", 3)
    train_digits(tmp_path / "noisy", 2, callbacks=[DrawsNoise()])
    genlab.train(out=tmp_path / "noisy", epochs=3, resume=True, progress=False)
    assert same_weights(tmp_path / "plain", tmp_path / "noisy")


@pytest.mark.parametrize("settings, message", [
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"lr": "nan"}, "lr must be a positive number"),
    ({"hidden_dim": 0}, "hidden_dim must be a positive integer"),
    ({"latent_dim": "-1"}, "latent_dim must be a positive integer"),
])
def test_bad_model_settings_are_refused_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(GenlabError, match=message):
        genlab.train("vae", "digits", tmp_path / "run", epochs=1, progress=False, model_config=settings)
    assert not (tmp_path / "run").exists()


def test_bad_seeds_are_refused(tmp_path):
    for seed in (-1, 2**32, 10**20):
        with pytest.raises(GenlabError, match="seed must be an integer from 0 to"):
            genlab.train("vae", "digits", tmp_path / "run", epochs=1, seed=seed, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_being_trained_is_locked(tmp_path):
    from genlab.run import run_lock

    train_digits(tmp_path / "run", 1)
    with run_lock(tmp_path / "run"):  # as if another process were training it
        with pytest.raises(GenlabError, match="another genlab process is training"):
            genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False)
        with pytest.raises(GenlabError, match="another genlab process is training"):
            train_digits(tmp_path / "run", 1, overwrite=True)
    assert read_run_info(tmp_path / "run")["epochs_completed"] == 1
    genlab.train(out=tmp_path / "run", epochs=2, resume=True, progress=False)  # free again
