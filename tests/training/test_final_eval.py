"""The Quality section at the end of `genlab train`: the sample-count rule, the section, and when it is skipped."""

import contextlib
import io
import json

import pytest

import genlab
from genlab.cli import main
from genlab.eval import final
from genlab.eval.final import MAX_SAMPLES, MIN_SAMPLES, final_quality, final_sample_count
from genlab.run import Run
from genlab.training import api
from genlab.training.trainer import Callback

TINY_GAN = ["--epochs", "1", "--latent-dim", "8", "--quiet", "--sample-every", "0"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A one-epoch GAN on mnist-5k, trained by `genlab train` with the Quality section on (its stdout too)."""
    out = tmp_path_factory.mktemp("final") / "gan"
    printed = io.StringIO()  # capsys is function-scoped: the module's run is read from its own capture
    with contextlib.redirect_stdout(printed):
        assert main(["train", "gan", "--data", "mnist-5k", "--out", str(out), *TINY_GAN]) == 0
    return out, printed.getvalue()


@pytest.mark.parametrize(
    ("seconds_per_image", "available", "processes", "count", "why"),
    [
        (0.0, 1000, 1, 1000, ""),  # instant: the cap
        (0.01, 10_000, 1, 1000, ""),  # 1,000 take 10 s: all of them
        (0.03, 10_000, 1, 1000, ""),  # exactly 30 s
        (0.05, 10_000, 1, 600, "drawing 1,000 would take ~50 s"),  # 600 fit 30 s
        (0.18, 10_000, 1, MIN_SAMPLES, "drawing 1,000 would take ~3 min"),  # 166 fit: the floor of 300
        (5.0, 10_000, 1, MIN_SAMPLES, "drawing 1,000 would take ~83 min"),
        (0.05, 10_000, 2, 1000, ""),  # two processes share the drawing
        (0.001, 500, 1, 500, "the test split holds 500"),  # never more than the reference holds
        (1.0, 200, 1, 200, "the test split holds 200"),  # nor under the floor of 300 by asking for more
    ],
)
def test_sample_count_fits_the_budget(seconds_per_image, available, processes, count, why):
    assert final_sample_count(seconds_per_image, available, processes) == (count, why)
    assert final_sample_count(seconds_per_image, available, processes)[0] <= MAX_SAMPLES


def test_train_prints_quality_beside_the_floor_and_saves_metrics(gan_run):
    out, printed = gan_run
    trace, _, section = printed.partition("\nQuality\n")
    assert "Epoch" in trace and "D loss" in trace  # the training trace comes first
    assert "1,000 samples vs mnist-5k test (1,000 images)" in section
    assert f"genlab eval {out} --metrics fid,precision,recall --n 1000" in section
    header = next(line for line in section.splitlines() if line.startswith("Metric"))
    assert header.split() == ["Metric", "Value", "Real", "vs", "real", "Better"]
    for label in ("FID", "Precision (k=3)", "Recall (k=3)"):
        assert any(line.startswith(label) for line in section.splitlines()), label
    assert f"saved in {out / 'metrics.json'}" in section and "quality measured in " in section
    assert section.index("quality measured in") < section.index("run saved in")
    document = json.loads((out / "metrics.json").read_text())
    assert document["metrics_selected"] == ["fid", "precision", "recall"]
    assert document["counts"]["samples"] == 1000 and document["source"]["epochs"] == 1
    assert set(document["metrics"]) >= {"fid", "precision", "recall"} and document["floor"]["fid"] >= 0


def test_slow_sampling_draws_fewer_and_keeps_evals_of_the_same_weights(gan_run, monkeypatch):
    out, _ = gan_run
    before = (out / "metrics.json").read_bytes()
    monkeypatch.setattr(final, "seconds_per_image", lambda run: 0.2)  # 1,000 samples would take 200 s
    quality = final_quality(Run.load(out))
    assert quality.samples == MIN_SAMPLES and quality.evaluation.info["counts"]["samples"] == MIN_SAMPLES
    assert "300 samples (drawing 1,000 would take ~3 min)" in quality.text()
    assert quality.saved.startswith(f"kept {out / 'metrics.json'}")  # the run's metrics of this epoch stay
    assert (out / "metrics.json").read_bytes() == before


def test_a_resumed_run_replaces_metrics_of_older_weights(gan_run, capsys):
    out, _ = gan_run
    code, printed, err = run_cli(capsys, "train", "--resume", "--out", out, "--epochs", 2, "--quiet")
    assert code == 0, err
    assert "(replacing the one of epoch 1, older weights)" in printed
    assert json.loads((out / "metrics.json").read_text())["source"]["epochs"] == 2


@pytest.mark.parametrize("damage", ['{"source": 5}', "[1, 2]", '{"source": {"kind": "run", "epochs": "one"}}',
                                    "not json", "\u00ff"])
def test_a_damaged_metrics_file_is_replaced_and_said(gan_run, damage):
    out, _ = gan_run
    (out / "metrics.json").write_text(damage)
    quality = final_quality(Run.load(out))
    assert quality.saved.startswith(f"saved in {out / 'metrics.json'} (replacing a damaged one: ")
    assert set(json.loads((out / "metrics.json").read_text())["metrics"]) >= {"fid", "precision", "recall"}


def test_no_final_eval_omits_the_section(tmp_path, capsys):
    out = tmp_path / "gan"
    code, printed, err = run_cli(capsys, "train", "gan", "--data", "mnist-5k", "--out", out, *TINY_GAN,
                                 "--no-final-eval")  # fmt: skip
    assert code == 0, err
    assert "Quality" not in printed and "quality measured" not in printed and "run saved in" in printed
    assert not (out / "metrics.json").exists()


def test_data_without_an_extractor_skips_it_in_one_line(tmp_path, capsys):
    genlab.train("vae", "digits", tmp_path / "vae", epochs=1, progress=False, final_eval=True,
                 model_config={"hidden_dim": 16, "latent_dim": 2})  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.startswith("Quality: not measured: no shipped extractor fits images of shape 1x8x8")
    assert len(printed.splitlines()) == 1 and not (tmp_path / "vae" / "metrics.json").exists()


def test_the_api_leaves_it_off_by_default(tmp_path, capsys):
    genlab.train("vae", "digits", tmp_path / "vae", epochs=1, progress=False,
                 model_config={"hidden_dim": 16, "latent_dim": 2})  # fmt: skip
    assert "Quality" not in capsys.readouterr().out
    with pytest.raises(genlab.GenlabError, match="final_eval must be True or False"):
        genlab.train("vae", "digits", tmp_path / "other", final_eval="yes")  # type: ignore[arg-type]


def test_an_interrupted_run_skips_it(tmp_path, capsys, monkeypatch):
    class StopAtFirstStep(Callback):  # what Ctrl-C does: a clean stop after the step under way
        def on_step_end(self, trainer, metrics):
            trainer.request_stop()

    train = api.train
    monkeypatch.setattr(api, "train", lambda *args, **kwargs: train(*args, **kwargs, callbacks=[StopAtFirstStep()]))
    out = tmp_path / "gan"
    code, printed, err = run_cli(capsys, "train", "gan", "--data", "mnist-5k", "--out", out, *TINY_GAN)
    assert code == 130
    assert "quality not measured: the run was interrupted" in err and "Quality" not in printed
    assert not (out / "metrics.json").exists()
