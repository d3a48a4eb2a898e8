"""The augmentation measure (`--metrics augmentation`) and `genlab augment`: what samples add to a small real set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data import load_splits, read_npz
from genlab.errors import GenlabError
from genlab.eval.augmentation import (
    augmentation_table,
    balanced_counts,
    measure_augmentation,
    observe_augmentation,
    parse_shares,
    pick_per_class,
    stratified_counts,
    summary,
    verdict,
)
from genlab.eval.evaluate import evaluate, parse_metrics
from genlab.images import to_uint8

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
COND_DDPM_FIXTURE = str(FIXTURES / "ddpm")  # conditional, 8x8 digits: draws in milliseconds
VAE_FIXTURE = str(FIXTURES / "vae")  # unconditional
STEPS = 150  # classifier steps where accuracies are compared (fewer leave a 40-image classifier at chance's mercy)


@pytest.fixture(scope="module")
def mnist():
    return load_splits("mnist-5k")


def test_real_sets_are_stratified_and_refused_when_a_class_would_be_empty(mnist):
    train, _ = mnist
    counts = stratified_counts(train.labels, 0.01, 10, "mnist-5k")
    assert counts == [round(0.01 * c) for c in torch.bincount(train.labels).tolist()] and sum(counts) == 40
    with pytest.raises(GenlabError, match="holds no image of class 0.*--real-sizes"):
        stratified_counts(train.labels, 0.0001, 10, "mnist-5k")
    assert parse_shares("25, 1,5") == (0.01, 0.05, 0.25) and parse_shares(None) == (0.01, 0.05, 0.10, 0.25)
    for bad in ("0", "ten", "101", "nan"):
        with pytest.raises(GenlabError, match="--real-sizes"):
            parse_shares(bad)


def test_picks_are_per_class_without_replacement_and_avoid_the_excluded():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    generator = torch.Generator().manual_seed(0)
    first = pick_per_class(labels, [2, 1, 2], generator)
    assert torch.bincount(labels[first], minlength=3).tolist() == [2, 1, 2] and len(set(first.tolist())) == 5
    rest = pick_per_class(labels, [1, 1, 2], generator, exclude=first)
    assert not set(rest.tolist()) & set(first.tolist())
    assert pick_per_class(labels, [1, 2, 2], generator, exclude=first) is None  # class 1 has one image left
    assert balanced_counts(23, 10) == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]


def test_a_verdict_needs_the_95_percent_intervals_apart():
    low, high = summary([0.70, 0.71, 0.72]), summary([0.80, 0.81, 0.82])
    assert verdict(low, high) == "helps" and verdict(high, low) == "hurts"
    noisy = summary([0.60, 0.75, 0.90])
    assert verdict(low, noisy) is None  # t(0.975, 2) = 4.30: a wide interval with three seeds
    assert summary([0.5, 0.7])["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_real_images_as_samples_recover_what_more_real_images_give_and_noise_does_not(mnist):
    train, test = mnist
    # "samples" that are real training images: as good as more real data; labelled noise: no help
    generator = torch.Generator().manual_seed(1)
    real_like = pick_per_class(train.labels, [40] * 10, generator)
    good = measure_augmentation(train, test, train.images[real_like], train.labels[real_like], seed=0,
                                shares=(0.01,), ratios=(1,), seeds=1, steps=STEPS)  # fmt: skip
    noise = torch.randint(0, 256, (400, 1, 28, 28), generator=generator, dtype=torch.uint8)
    bad = measure_augmentation(train, test, noise, torch.arange(10).repeat(40), seed=0,
                               shares=(0.01,), ratios=(1,), seeds=1, steps=STEPS)  # fmt: skip
    row, bad_row = good["rows"][0], bad["rows"][0]
    assert row["real_images"] == 40 and row["real_only"] == bad_row["real_only"]  # the same real subsets and seeds
    assert row["gain"]["1"] > 0.03 and row["recovered"]["1"] > 0.5
    assert bad_row["gain"]["1"] < row["gain"]["1"] - 0.03
    assert 0.2 < row["real_only"]["mean"] < row["more_real"]["1"]["mean"] <= 1
    table = augmentation_table(good)
    assert "40 (1%)" in table and "+1x synthetic" in table and "recovered" in table
    assert good["samples_drawn_for_it"] == 0


def test_a_cell_without_enough_samples_says_how_many_it_needs(mnist):
    train, test = mnist
    few = torch.zeros(5, 1, 28, 28, dtype=torch.uint8)
    found = measure_augmentation(train, test, few, torch.arange(5), seed=0, shares=(0.01,), ratios=(1,), seeds=1,
                                 steps=5)  # fmt: skip
    cell = found["rows"][0]["synthetic"]["1"]
    assert isinstance(cell, str) and "needs 4 samples of class 0" in cell and found["rows"][0]["gain"]["1"] is None


def test_a_run_draws_the_samples_its_cells_lack(mnist):
    train, test = mnist
    drawn = []

    def draw_more(labels):
        drawn.append(labels)
        return train.images[:len(labels)]

    found = measure_augmentation(train, test, train.images[:0], torch.zeros(0, dtype=torch.long), seed=0,
                                 shares=(0.01,), ratios=(1, 4), seeds=1, steps=5, draw_more=draw_more)  # fmt: skip
    assert torch.bincount(drawn[0], minlength=10).tolist() == [4 * c for c in stratified_counts(train.labels, 0.01,
                                                                                                10, "")]  # fmt: skip
    assert found["samples_drawn_for_it"] == len(drawn[0])


def test_observations_name_where_samples_help_or_hurt():
    def row(real, before, after, said):
        return {"real_images": real, "real_only": {"mean": before}, "synthetic": {"1": {"mean": after}},
                "verdict": {"1": said}}  # fmt: skip

    grid = {"rows": [row(40, 0.70, 0.85, "helps"), row(400, 0.95, 0.93, "hurts"), row(1000, 0.97, 0.97, None)]}
    said = observe_augmentation(grid)
    assert said == ["samples help a small real set (40 real + 1x synthetic: 0.700 -> 0.850)",
                    "samples hurt a small real set (400 real + 1x synthetic: 0.950 -> 0.930)"]  # fmt: skip
    assert observe_augmentation(None) == []


def test_augmentation_is_measured_by_name_only_with_its_headline_in_the_table(mnist, tmp_path):
    assert "augmentation" not in parse_metrics(None) and "augmentation" in parse_metrics("augmentation")
    train, _ = mnist
    path = tmp_path / "labelled.npz"
    np.savez(path, images=train.images[:400].numpy(), labels=train.labels[:400].numpy())
    result = evaluate(str(path), "mnist-5k", metrics="augmentation", real_sizes="5", augmentation_steps=5)
    assert set(result.metrics) == {"augmentation_gain", "augmentation_recovered"}
    grid = result.details["augmentation"]  # about 40 samples of each class: +1x of 200 real fits, +4x (80 each) not
    assert grid["shares"] == [0.05] and isinstance(grid["rows"][0]["synthetic"]["4"], str)
    assert "Augmentation gain (+1x synthetic)" in result.table() and "real images" in result.table()


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", VAE_FIXTURE, "--metrics", "augmentation"], "is not conditional"),
        (["eval", VAE_FIXTURE, "--real-sizes", "5"], "add --metrics augmentation"),
        (["eval", "zoo:ddpm-mnist5k-cond", "--metrics", "augmentation", "--real-sizes", "0.01"],
         "holds no image of class"),
        (["eval", "zoo:ddpm-mnist5k-cond", "--metrics", "augmentation", "--real-sizes", "150"], "in (0, 100]"),
        (["augment", VAE_FIXTURE, "--per-class", "5", "--out", "x.npz"], "is not conditional"),
        (["augment", COND_DDPM_FIXTURE, "--per-class", "0", "--out", "x.npz"], "must be a positive integer"),
        (["augment", COND_DDPM_FIXTURE, "--per-class", "100000000", "--out", "x.npz"],
         "ask for fewer samples of each class (--per-class)"),
        (["augment", COND_DDPM_FIXTURE, "--per-class", "2", "--out", "x.png"],
         "must end in .npz (genlab augment writes an .npz of images there)"),
    ],
)
def test_bad_augmentation_input_is_one_line_and_exit_2(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert words in error and "Traceback" not in error


def test_npz_labels_outside_the_data_classes_are_refused(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((20, 1, 28, 28), np.float32), labels=np.full(20, 12))
    assert main(["eval", "--samples", str(path), "--data", "mnist-5k", "--metrics", "augmentation"]) == 2
    assert "labels run from 12 to 12; the data's classes are 0 to 9" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=np.zeros((20, 1, 28, 28), np.float32))
    assert main(["eval", "--samples", str(unlabelled), "--data", "mnist-5k", "--metrics", "augmentation"]) == 2
    error = capsys.readouterr().err
    assert "needs labelled samples" in error and "has no `labels` array" in error and error.count("\n") == 1


def test_genlab_augment_writes_balanced_labelled_samples_that_load_as_data(tmp_path, capsys):
    out = tmp_path / "synthetic.npz"
    assert main(["augment", COND_DDPM_FIXTURE, "--per-class", "3", "--out", str(out), "--seed", "2"]) == 0
    assert "3 samples of each class" in capsys.readouterr().out
    data = read_npz(out)
    assert data.labels.tolist() == [k for k in range(10) for _ in range(3)]
    assert data.class_names == [str(k) for k in range(10)] and data.images.shape == (30, 1, 8, 8)
    again = tmp_path / "again.npz"
    assert main(["augment", COND_DDPM_FIXTURE, "--per-class", "3", "--out", str(again), "--seed", "2"]) == 0
    assert torch.equal(read_npz(again).images, data.images)  # seeded
    expected = genlab.load(COND_DDPM_FIXTURE).sample(30, generator=torch.Generator().manual_seed(2),
                                                     labels=data.labels)  # fmt: skip
    assert torch.equal(data.images, to_uint8(expected))
    assert main(["augment", COND_DDPM_FIXTURE, "--per-class", "3", "--out", f"{COND_DDPM_FIXTURE}/run.json"]) == 2
