"""`genlab likelihood`: one NLL table across families on the same test images, with each row's data model."""

from __future__ import annotations

import json
import math

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data import load_splits
from genlab.errors import GenlabError
from genlab.eval.evaluate import evaluate
from genlab.eval.likelihood import likelihoods, negative_log_likelihood

TINY_DDPM = {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 50, "likelihood_timesteps": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs on the 8x8 digits: two binarized VAEs, an 8-bit DDPM and a GAN (no likelihood)."""
    folder = tmp_path_factory.mktemp("likelihood")
    quiet = {"progress": False, "sample_every": 0, "seed": 0}
    genlab.train("vae", "digits", folder / "vae", epochs=2, model_config={"binarize": True, "iw_samples": 5}, **quiet)
    genlab.train("vae", "digits", folder / "vae1", epochs=1, model_config={"binarize": True, "iw_samples": 5}, **quiet)
    genlab.train("ddpm", "digits", folder / "ddpm", epochs=1, model_config=TINY_DDPM, **quiet)
    genlab.train("gan", "digits", folder / "gan", epochs=1, **quiet)
    return folder


def test_every_run_is_scored_on_the_same_test_images(runs):
    table = likelihoods([runs / "vae", runs / "ddpm", runs / "gan"], images=40, seed=3)
    assert table.info["images"] == 40 and table.info["data"]["spec"] == "digits"
    vae, ddpm, gan = table.rows
    # The VAE's row is its bound on exactly the seeded subset the table names.
    _, test = load_splits("digits")
    subset = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(3))[:40])
    expected, data_model = negative_log_likelihood(genlab.Run.load(runs / "vae").model, subset, 3)
    assert vae.nll_nats == pytest.approx(expected, rel=1e-9) and data_model == vae.data_model == "binarized"
    assert vae.bits_per_dim == pytest.approx(vae.nll_nats / (64 * math.log(2)))
    assert vae.kind.startswith("bound: importance-weighted") and "k = 5" in vae.kind
    assert ddpm.data_model == "256-way discrete (8-bit pixels)" and ddpm.kind.startswith("bound: variational")
    assert 0 < ddpm.bits_per_dim < 20 and math.isfinite(ddpm.nll_nats)
    assert gan.nll_nats is None and gan.bits_per_dim is None and gan.kind == ""
    assert table.comparable() == {"binarized": [str(runs / "vae")], "256-way discrete (8-bit pixels)": [str(runs / "ddpm")]}
    assert "do not rank them against each other" in table.table()


def test_the_whole_test_split_matches_genlab_eval(runs):
    table = likelihoods([runs / "vae"])
    assert table.info["images"] == table.info["test_images"]
    assert table.rows[0].nll_nats == pytest.approx(evaluate(runs / "vae", metrics="nll").metrics["nll_nats"], rel=1e-9)


def test_a_ddpm_caps_the_subset_for_every_run(runs, monkeypatch):
    from genlab.models.ddpm import DDPM

    monkeypatch.setattr(DDPM, "likelihood_images", 30)
    table = likelihoods([runs / "vae", runs / "ddpm"])
    assert table.info["images"] == 30  # the fewest any family asks for, shared by all rows


def test_runs_of_one_data_model_are_ranked(runs):
    table = likelihoods([runs / "vae", runs / "vae1"], images=100)
    text = table.table()
    best = min(table.rows, key=lambda row: row.nll_nats)
    assert f"comparable (binarized): {runs / 'vae'}, {runs / 'vae1'}; lowest NLL: {best.path}" in text
    assert table.rows[0].nll_nats < table.rows[1].nll_nats  # two epochs bound the digits tighter than one


def test_the_command_prints_the_table_and_writes_json(runs, tmp_path, capsys):
    out = tmp_path / "nll.json"
    assert main(["likelihood", str(runs / "vae"), str(runs / "gan"), "--images", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "digits test split: 20 of" in printed and "Bits/dim" in printed and "binarized" in printed
    saved = json.loads(out.read_text())
    assert [row["family"] for row in saved["rows"]] == ["vae", "gan"]
    assert saved["rows"][1]["nll_nats"] is None and saved["images"] == 20


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    genlab.train("vae", "mnist-5k", tmp_path / "other", epochs=1, progress=False, sample_every=0)
    assert main(["likelihood", str(runs / "vae"), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "trained on different data" in err and "digits" in err and "mnist-5k" in err and len(err.strip().splitlines()) == 1
    assert main(["likelihood", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(GenlabError, match="--images must be a positive"):
        likelihoods([runs / "vae"], images=0)


def test_scoring_runs_in_eval_mode_and_leaves_the_model_in_the_mode_it_was_in():
    train, test = load_splits("digits")
    model = genlab.build_model("vae", train, hidden_dim=16, latent_dim=2, iw_samples=2).train()
    held = next(module for module in model.modules() if module is not model).eval()  # one submodule kept in eval
    modes = {name: module.training for name, module in model.named_modules()}
    scored_in = []
    score = model.log_likelihood
    model.log_likelihood = lambda x, labels=None: scored_in.append(model.training) or score(x, labels)
    negative_log_likelihood(model, test.subset(torch.arange(20)), seed=0)
    assert scored_in == [False]  # dropout and batch statistics off while scoring
    # The named fix of issue 17: scoring used to leave the whole model in eval mode.
    assert {name: module.training for name, module in model.named_modules()} == modes and not held.training


def test_a_family_without_a_likelihood_is_refused():
    train, test = load_splits("digits")
    with pytest.raises(GenlabError, match="the gan family has no log-likelihood"):
        negative_log_likelihood(genlab.build_model("gan", train), test, seed=0)
