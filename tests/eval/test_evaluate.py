"""`genlab eval` end to end on real data: a run, an .npz from anywhere, the real-vs-real floor, and bad input."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.data import load_splits
from genlab.errors import GenlabError
from genlab.eval.evaluate import evaluate, write_results
from genlab.eval.features import load_extractor
from genlab.eval.monitor import TrainingMonitor
from genlab.eval.reference import cache_dir, cache_path, real_features
from genlab.eval.registry import METRIC_NAMES, parse_metrics

FAST = "fid,kid,precision,recall,density,coverage,classifier_score,mode_coverage"


@pytest.fixture(scope="module")
def digits():
    return load_splits("mnist-5k")  # (train 4,000, test 1,000) real 1x28x28 digits


def save_npz(path, images, labels=None):
    arrays = {"images": images.numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    np.savez(path, **arrays)
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "vae"
    assert main(["train", "vae", "--data", "mnist-5k", "--epochs", "2", "--out", str(out), "--quiet",
                 "--sample-every", "0"]) == 0
    return out


def test_a_generator_returning_training_images_is_flagged_as_memorizing(digits, tmp_path):
    train, _ = digits
    path = save_npz(tmp_path / "copies.npz", train.images[:500])
    result = evaluate(str(path), "mnist-5k", metrics="memorization,fid")
    assert result.metrics["copy_share"] >= 0.9  # nearer a training image than 95% of unseen images are
    assert result.floor["copy_share"] == pytest.approx(0.05)
    assert result.details["memorization"]["closest_pairs"][0][2] == pytest.approx(0.0, abs=1e-6)
    assert result.pair_images.shape == (32, 1, 28, 28)  # 16 samples over their 16 training neighbours
    assert torch.equal(result.pair_images[0], result.pair_images[16])  # an exact copy sits over its original
    assert any(text.startswith("samples copying training images") for text in result.observations)
    assert "observation: samples copying training images" in result.table()


def test_held_out_real_images_score_like_the_floor(digits, tmp_path):
    _, test = digits
    path = save_npz(tmp_path / "real.npz", test.images, test.labels)
    result = evaluate(str(path), "mnist-5k", reference="train", metrics=FAST + ",memorization")
    assert result.metrics["copy_share"] < 0.15  # unseen real images are not copies
    assert result.metrics["fid"] == pytest.approx(result.floor["fid"], rel=1e-9)  # the floor is exactly this set
    assert result.metrics["precision"] > 0.7 and result.metrics["recall"] > 0.7
    assert result.metrics["classes_covered"] == 10 and result.metrics["class_kl"] < 0.02
    assert result.metrics["classifier_score"] > 8.5  # 10 balanced, confidently classified classes
    assert result.observations == []  # real images copy nothing and collapse nowhere


def test_a_single_class_generator_is_flagged_by_mode_coverage(digits, tmp_path):
    train, _ = digits
    threes = train.images[train.labels == 3][:300]
    result = evaluate(str(save_npz(tmp_path / "threes.npz", threes)), "mnist-5k", metrics=FAST)
    assert result.metrics["classes_covered"] == 1 and result.floor["classes_covered"] == 10
    assert result.metrics["class_kl"] == pytest.approx(math.log(10), abs=0.1)  # KL of one class to ~uniform
    assert result.metrics["recall"] < 0.2 < result.floor["recall"]  # the other nine digits are missed
    assert result.metrics["fid"] > 10 * result.floor["fid"]
    assert result.metrics["classifier_score"] < 1.5


def test_cas_on_real_labelled_images_approaches_the_real_accuracy(digits, tmp_path):
    train, _ = digits
    path = save_npz(tmp_path / "labelled.npz", train.images[:1000], train.labels[:1000])
    result = evaluate(str(path), "mnist-5k", metrics="cas,label_accuracy", cas_steps=120)
    assert result.metrics["label_accuracy"] > 0.98  # training images: the classifier has seen them
    assert result.floor["label_accuracy"] == pytest.approx(0.988, abs=1e-9)  # digits: 98.80% on the test split
    assert result.metrics["cas"] > 0.9  # the shipped digits classifier reaches 0.988 with far more training
    assert abs(result.metrics["cas"] - result.floor["cas"]) < 0.03  # the floor is the same recipe on real data
    shuffled = train.labels[:1000][torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    noise = evaluate(str(save_npz(tmp_path / "wrong.npz", train.images[:1000], shuffled)), "mnist-5k",
                     metrics="cas,label_accuracy", cas_steps=120)
    assert noise.metrics["cas"] < 0.3  # wrong labels teach nothing
    assert noise.metrics["label_accuracy"] < 0.2  # and are not what the images show


def test_eval_of_a_run_writes_metrics_json_with_the_extractor(vae_run, capsys):
    code, out, err = run_cli(capsys, "eval", vae_run, "--n", "500")
    assert code == 0, err
    assert "Real vs real" in out and "FID" in out and "NLL (nats/image)" in out
    assert "cas: needs labelled samples" in out  # an unconditional model says why CAS is missing
    document = json.loads((vae_run / "metrics.json").read_text())
    extractor = load_extractor("digits")
    assert document["extractor"] == {"name": "digits", "sha256": extractor.sha256, "feature_dim": 256}
    assert document["source"]["family"] == "vae" and document["counts"]["samples"] == 500
    assert document["data"] == {**document["data"], "spec": "mnist-5k", "reference": "test"}
    for key in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "classifier_score",
                "classes_covered", "class_kl", "copy_share", "ratio_test_share", "nll_nats", "bits_per_dim"):
        assert math.isfinite(document["metrics"][key]), key
    for key in ("fid", "precision", "recall", "copy_share"):
        assert key in document["floor"]
    assert document["floor"]["fid"] < document["metrics"]["fid"]  # 2 epochs of a VAE are far from real
    nll = document["metrics"]["nll_nats"]
    assert 60 < nll < 300 and document["metrics"]["bits_per_dim"] == pytest.approx(nll / (784 * math.log(2)))
    assert document["details"]["memorization"]["pairs_png"] == "memorization.png"
    assert (vae_run / "memorization.png").stat().st_size > 0


def test_the_same_seed_gives_the_same_numbers(vae_run):
    first = evaluate(vae_run, n=300, metrics="fid,kid,precision,recall")
    second = evaluate(vae_run, n=300, metrics="fid,kid,precision,recall", use_cache=False)
    assert first.metrics == second.metrics and first.floor == second.floor
    other = evaluate(vae_run, n=300, seed=1, metrics="fid")
    assert other.metrics["fid"] != first.metrics["fid"]


def test_metrics_selection_computes_only_those(vae_run, tmp_path):
    result = evaluate(vae_run, n=200, metrics="fid,nll")
    assert set(result.metrics) == {"fid", "nll_nats", "bits_per_dim"}
    assert set(result.floor) == {"fid"}  # a likelihood has no real-vs-real counterpart
    write_results(result, tmp_path)
    assert not (tmp_path / "memorization.png").exists()
    assert parse_metrics(None) == tuple(name for name in METRIC_NAMES if name != "augmentation")  # by name only
    with pytest.raises(GenlabError, match="unknown metric fidd; choose from fid, kid"):
        parse_metrics("fidd")
    likelihood = evaluate(vae_run, metrics="nll")  # alone: no samples, no extractor, no floor
    assert likelihood.metrics["nll_nats"] == pytest.approx(result.metrics["nll_nats"])
    assert likelihood.floor == {} and likelihood.info["extractor"] is None
    with pytest.raises(GenlabError, match="the vae family samples without --sampler"):
        evaluate(vae_run, n=200, metrics="fid", sample_options={"sampler": "ddim"})


def test_real_vs_real_prints_the_floor(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "eval", "--real-vs-real", "--data", "mnist-5k", "--metrics", "fid,precision",
                           "--out", tmp_path)
    assert code == 0
    assert "1,000 held-out real images" in out and "FID" in out and "Precision (k=3)" in out
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["metrics"] == {} and 0 < document["floor"]["fid"] < 20
    assert document["source"] == {"kind": "real-vs-real"}


def test_real_features_are_cached_and_a_damaged_cache_is_rebuilt(digits):
    _, test = digits
    extractor = load_extractor("digits")
    path = cache_path(test, "test", extractor)
    fresh = real_features(test, "test", extractor, use_cache=False)
    assert path.parent.parent == cache_dir()
    real_features(test, "test", extractor)
    assert path.is_file()
    cached = real_features(test, "test", extractor)
    assert torch.equal(cached.features, fresh.features) and torch.equal(cached.probabilities, fresh.probabilities)
    path.write_bytes(b"not a safetensors file")
    rebuilt = real_features(test, "test", extractor)
    assert torch.equal(rebuilt.features, fresh.features) and path.stat().st_size > 1000


def test_training_monitor_and_eval_every_write_fid_to_history(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "vae", "--data", "mnist-5k", "--epochs", "2", "--eval-every", "2",
                           "--out", out, "--quiet", "--sample-every", "0")
    assert code == 0, err
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert "fid" not in history[0]
    assert history[1]["fid"] > 0 and 0 <= history[1]["precision"] <= 1 and 0 <= history[1]["recall"] <= 1
    train, test = load_splits("mnist-5k")
    monitor = TrainingMonitor(train, test, n=100)

    class Real(torch.nn.Module):  # a "model" whose samples are real test images
        def sample(self, n, generator=None):
            return test.images[:n].float() / 255

    scores = monitor(Real())
    assert scores["precision"] > 0.6 and scores["recall"] > 0.6


def test_the_training_monitor_samples_in_eval_mode_and_gives_every_module_its_mode_back():
    train, test = load_splits("mnist-5k")
    monitor = TrainingMonitor(train, test, n=20)

    class Real(torch.nn.Module):  # real test images, recording the modes it samples in
        def __init__(self):
            super().__init__()
            self.network, self.average = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
            self.seen = []

        def sample(self, n, generator=None):
            self.seen.append((self.training, self.network.training, self.average.training))
            return test.images[:n].float() / 255

    model = Real().train()
    model.average.eval()  # a submodule its family keeps in eval mode (an EMA copy)
    monitor(model)
    assert model.seen == [(False, False, False)]
    assert model.training and model.network.training and not model.average.training


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((10, 1, 32, 32), np.uint8), "are 1x32x32 but mnist-5k images are 1x28x28"),
        (np.full((10, 1, 28, 28), 2.0, np.float32), "with values in [2, 2]"),
        (np.zeros((10, 28), np.uint8), "expected `images`"),
    ],
)
def test_bad_npz_is_one_line_and_exit_2(tmp_path, capsys, images, message):
    path = tmp_path / "bad.npz"
    np.savez(path, images=images)
    code, out, err = run_cli(capsys, "eval", "--samples", path, "--data", "mnist-5k", "--metrics", "fid")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_too_few_samples_say_how_many_are_needed(digits, tmp_path, capsys):
    train, _ = digits
    path = save_npz(tmp_path / "three.npz", train.images[:3])
    code, _, err = run_cli(capsys, "eval", "--samples", path, "--data", "mnist-5k", "--metrics", "precision")
    assert code == 2 and "precision/recall with k=3 needs at least 4 real and 4 generated" in err


def test_more_samples_than_the_file_holds(digits, tmp_path, capsys):
    train, _ = digits
    path = save_npz(tmp_path / "ten.npz", train.images[:10])
    code, _, err = run_cli(capsys, "eval", "--samples", path, "--data", "mnist-5k", "--n", "50")
    assert code == 2 and "pass --n 10 or fewer" in err


@pytest.mark.parametrize("option", [["--truncation", "0.7"], ["--guidance", "2"], ["--steps", "10"]])
def test_sampler_options_without_a_run_are_refused(digits, tmp_path, capsys, option):
    """Images from a file were drawn already: how a run would draw them cannot apply, and nothing is written."""
    train, _ = digits
    path = save_npz(tmp_path / "ten.npz", train.images[:10])
    code, _, err = run_cli(capsys, "eval", "--samples", path, "--data", "mnist-5k", "--n", "10", *option)
    assert code == 2 and "--truncation" in err and "choose how a run draws its images: give a run" in err
    assert len(err.strip().splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ten.npz"]


def test_run_without_weights_and_missing_arguments(vae_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((vae_run / "run.json").read_text())
    code, _, err = run_cli(capsys, "eval", broken)
    assert code == 2 and "has no model.safetensors" in err
    code, _, err = run_cli(capsys, "eval")
    assert code == 2 and "give one of: a run directory, --samples" in err
    code, _, err = run_cli(capsys, "eval", "--samples", tmp_path / "x.npz")
    assert code == 2 and "--samples needs --data" in err
    code, _, err = run_cli(capsys, "eval", vae_run, "--metrics", "fid,bogus")
    assert code == 2 and "unknown metric bogus" in err
    code, _, err = run_cli(capsys, "eval", tmp_path)
    assert code == 2 and "is not a genlab run" in err


def test_data_without_a_shipped_extractor_points_at_inception(tmp_path, capsys):
    code, _, err = run_cli(capsys, "eval", "--real-vs-real", "--data", "digits")
    assert code == 2 and "--inception PATH" in err


def test_inception_weights_from_a_file_drive_the_whole_evaluation(tmp_path, capsys):
    from safetensors.torch import save_file

    from genlab.eval.inception import InceptionV3

    torch.manual_seed(0)
    weights = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in InceptionV3().state_dict().items()}, str(weights))
    rgb = torch.randint(0, 256, (40, 3, 20, 20), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    data = save_npz(tmp_path / "data.npz", rgb)  # 32 train, 8 test images of 3x20x20: no shipped extractor fits
    samples = save_npz(tmp_path / "samples.npz", rgb[:8])
    code, out, err = run_cli(capsys, "eval", "--samples", samples, "--data", f"npz:{data}", "--inception", weights,
                             "--metrics", "fid,precision,classifier_score,mode_coverage", "--out", tmp_path / "out")
    assert code == 0, err
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["extractor"]["name"] == "inception-v3-fid" and document["extractor"]["feature_dim"] == 2048
    assert document["extractor"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert math.isfinite(document["metrics"]["fid"]) and 1 <= document["metrics"]["classifier_score"] <= 1008
    assert "mode_coverage" in document["skipped"]  # ImageNet's classes are not the data's


def test_a_conditional_run_gets_cas_with_its_floor(tmp_path):
    out = tmp_path / "cvae"
    assert main(["train", "vae", "--data", "mnist-5k", "--epochs", "1", "--conditional", "--out", str(out),
                 "--quiet", "--sample-every", "0"]) == 0
    result = evaluate(out, n=200, metrics="cas", cas_steps=40)
    assert 0.1 < result.metrics["cas"] <= 1 and result.floor["cas"] > 0.5  # labels drawn 0..9 in turn
    assert result.info["source"]["conditional"] is True and "cas" not in result.skipped
