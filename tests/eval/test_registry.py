"""The metric registry, the table, the floor cache and the module split, without training anything."""

from __future__ import annotations

import pytest
import torch

from genlab.data import ImageDataset
from genlab.errors import GenlabError
from genlab.eval import floors
from genlab.eval import metrics as M
from genlab.eval.reference import RealFeatures
from genlab.eval.registry import METRIC_NAMES, METRICS, ROWS, Setting, Subject, measure, parse_metrics
from genlab.eval.sources import Generated
from genlab.eval.table import Row, metric_text, metrics_table

LABELLED = "needs labelled samples (a conditional model, or `labels` in the .npz)"


class Extractor:
    """The parts of a feature extractor the needs look at."""

    name, sha256, feature_dim = "stub", "0" * 64, 4

    def __init__(self, num_classes: int, class_names: list[str]):
        self.num_classes, self.class_names = num_classes, class_names

    def features(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return torch.randn(len(images), self.feature_dim, generator=torch.Generator().manual_seed(2))

    def probabilities(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        # mode coverage measures the classifier's confusion on the test split's images
        return torch.softmax(torch.randn(len(images), self.num_classes, generator=torch.Generator().manual_seed(3)), 1)


def dataset(n: int, shape=(1, 28, 28), labelled: bool = True) -> ImageDataset:
    images = torch.zeros((n, *shape), dtype=torch.uint8)
    labels = torch.arange(n) % 10 if labelled else None
    return ImageDataset(images, labels, [str(k) for k in range(10)] if labelled else [], "stub")


def features(n: int, labelled: bool = True, seed: int = 0) -> RealFeatures:
    generator = torch.Generator().manual_seed(seed)
    probabilities = torch.softmax(torch.randn(n, 10, generator=generator), dim=1)
    labels = torch.arange(n) % 10 if labelled else None
    return RealFeatures(torch.randn(n, 4, generator=generator), probabilities, labels)


def setting(extractor: Extractor | None = None, shape=(1, 28, 28), labelled: bool = True) -> Setting:
    extractor = extractor or Extractor(10, [str(k) for k in range(10)])
    return Setting(dataset(40, shape, labelled), dataset(20, shape, labelled), 0, extractor, features(30, labelled))


def samples(labels: torch.Tensor | None) -> Subject:
    return Subject(features(12, seed=1), Generated(torch.zeros((12, 1, 28, 28), dtype=torch.uint8), labels, {}))


def test_every_metric_declares_its_rows_and_needs_in_the_table_order():
    assert METRIC_NAMES == tuple(METRICS) == (
        "fid", "kid", "precision", "recall", "density", "coverage", "classifier_score",
        "mode_coverage", "label_accuracy", "memorization", "cas", "nll", "augmentation",
    )  # fmt: skip
    assert [(row.key, row.label, row.better, row.metric) for row in ROWS] == [
        ("fid", "FID", "lower", "fid"),
        ("kid", "KID", "lower", "kid"),
        ("precision", "Precision (k=3)", "higher", "precision"),
        ("recall", "Recall (k=3)", "higher", "recall"),
        ("density", "Density (k=5)", "near floor", "density"),
        ("coverage", "Coverage (k=5)", "higher", "coverage"),
        ("classifier_score", "Classifier score", "higher", "classifier_score"),
        ("classes_covered", "Classes covered", "higher", "mode_coverage"),
        ("class_kl", "Class KL to data (nats)", "lower", "mode_coverage"),
        ("label_accuracy", "Drawn label recognised", "higher", "label_accuracy"),
        ("copy_share", "Copies (d1 < 5% of its class)", "lower", "memorization"),
        ("ratio_test_share", "Ratio test d1/d2 < 1/3", "lower", "memorization"),
        ("reference_copy_share", "Coincide with reference", "lower", "memorization"),
        ("cas", "CAS accuracy", "higher", "cas"),
        ("nll_nats", "NLL (nats/image)", "lower", "nll"),
        ("bits_per_dim", "Bits/dim", "lower", "nll"),
        ("augmentation_gain", "Augmentation gain (+1x synthetic)", "higher", "augmentation"),
        ("augmentation_recovered", "Real-data gain recovered (+1x)", "higher", "augmentation"),
    ]
    # Only the likelihood measures no images (so `--metrics nll` draws none); it and the augmentation grid (whose
    # ceiling is more real images) have no real-vs-real floor; only the grid is left out of the default set.
    assert [name for name, metric in METRICS.items() if not metric.needs_samples] == ["nll"]
    assert [name for name, metric in METRICS.items() if not metric.floor] == ["nll", "augmentation"]
    assert [name for name, metric in METRICS.items() if not metric.default] == ["augmentation"]


def test_parse_metrics_keeps_the_registry_order():
    assert parse_metrics(None) == METRIC_NAMES[:-1]  # augmentation by name only
    assert parse_metrics("nll, fid,") == parse_metrics(["fid", "nll"]) == ("fid", "nll")
    with pytest.raises(GenlabError, match=r"unknown metric \(none given\); choose from fid, kid"):
        parse_metrics(" , ")


def test_skip_messages_name_the_first_missing_need():
    labelled = setting()
    measurable = [name for name in METRIC_NAMES if name != "nll"]
    assert [METRICS[name].missing(labelled, samples(torch.arange(12) % 10)) for name in measurable] == [None] * 12
    unlabelled_samples = samples(None)
    assert METRICS["augmentation"].missing(labelled, unlabelled_samples) == LABELLED
    assert METRICS["label_accuracy"].missing(labelled, unlabelled_samples) == LABELLED
    assert METRICS["cas"].missing(labelled, unlabelled_samples) == LABELLED
    assert METRICS["nll"].missing(labelled, unlabelled_samples) == (
        "images from a file carry no log-likelihood (it needs a run of a likelihood family)"
    )
    imagenet = setting(Extractor(1008, []))  # Inception: classes that are not the data's
    assert METRICS["mode_coverage"].missing(imagenet, unlabelled_samples) == (
        "needs labelled data and a classifier of the data's own classes "
        "(the shipped extractors; Inception's ImageNet classes are not the data's)"
    )
    assert METRICS["label_accuracy"].missing(imagenet, unlabelled_samples) == (
        "needs the shipped classifier of the data's classes"
    )  # named before the missing labels
    small = setting(shape=(1, 8, 8))
    assert METRICS["cas"].missing(small, unlabelled_samples) == "needs labelled 1x28x28 data"
    floor = Subject(features(12))
    assert METRICS["cas"].missing(labelled, floor) is None  # real training images carry their labels
    assert METRICS["label_accuracy"].missing(setting(labelled=False), floor) == (
        "needs the shipped classifier of the data's classes"
    )


def test_measure_takes_known_floor_values_and_passes_over_what_has_no_floor(monkeypatch):
    calls = []
    original = M.precision_recall
    monkeypatch.setattr(M, "precision_recall", lambda *a: calls.append(1) or original(*a))
    found = measure(("fid", "precision", "recall", "nll"), setting(), Subject(features(12)), {"fid": {"fid": 1.5}})
    assert found.found["fid"] == {"fid": 1.5} and set(found.found) == {"fid", "precision", "recall"}
    assert found.skipped == {} and found.details == {} and found.pair_images is None
    assert len(calls) == 1  # precision and recall come from one pass
    assert found.flat() == {"fid": 1.5, **found.found["precision"], **found.found["recall"]}


def test_a_skipped_metric_is_recorded_and_the_rest_measured():
    found = measure(("label_accuracy", "mode_coverage", "nll"), setting(), samples(None))
    assert found.skipped == {"label_accuracy": LABELLED, "nll": METRICS["nll"].missing(setting(), samples(None))}
    assert set(found.found) == {"mode_coverage"} and set(found.details) == {"mode_coverage"}
    assert found.found["mode_coverage"]["num_classes"] == 10


def test_the_table_shows_the_floor_alone_in_three_columns():
    rows = (Row("fid", "FID", "lower", "fid"), Row("classes_covered", "Classes covered", "higher", "mode_coverage"))
    floor = {"fid": 0.25, "classes_covered": 10, "num_classes": 10}
    assert metrics_table(rows, {}, floor, {"cas": "needs x"}, ["note"]).splitlines() == [
        "Metric           Real vs real  Better",
        "FID              0.25          lower",
        "Classes covered  10/10         higher",
        "(cas: needs x)",
        "observation: note",
    ]
    table = metrics_table(rows, {"fid": 3.0, "fid_std": 0.5}, {"fid": 2e-4}, {}, [])
    assert table.splitlines()[1].split() == ["FID", "3", "±", "0.5", "2.000e-04", "lower"]
    assert metric_text("kid", {"kid": None}) == metric_text("kid", {}) == "-"


def test_the_floor_cache_reads_what_it_wrote_and_ignores_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    key = ["fingerprint", "test", 100, 100, 0, "sha", 300]
    assert floors.read_floor(key) == {}
    floors.write_floor(key, {"fid": {"fid": 1.0}})
    floors.write_floor(key, {"kid": {"kid": 0.1, "kid_std": 0.01}})  # added to what is there
    assert floors.read_floor(key) == {"fid": {"fid": 1.0}, "kid": {"kid": 0.1, "kid_std": 0.01}}
    assert floors.floor_path(key).parent == tmp_path / "floors"
    assert floors.floor_path([*key[:-1], 40]) != floors.floor_path(key)  # another CAS budget: another floor
    floors.floor_path(key).write_text("{not json")
    assert floors.read_floor(key) == {}


def test_names_importers_take_from_evaluate_are_still_there():
    from genlab.eval import evaluate, likelihood, monitor, registry, sources, table

    for name, home in [
        ("METRIC_NAMES", registry), ("ROWS", registry), ("parse_metrics", registry), ("Row", table),
        ("metric_text", table), ("TrainingMonitor", monitor), ("negative_log_likelihood", likelihood),
        ("seeded_subset", sources),
    ]:  # fmt: skip
        assert getattr(evaluate, name) is getattr(home, name), name
    for name in ("evaluate", "Evaluation", "write_results", "choose_extractor"):
        assert callable(getattr(evaluate, name))


def test_eval_help_names_every_metric_in_order(capsys):
    from genlab.cli import main

    assert main(["eval", "--help"]) == 0
    assert ", ".join(METRIC_NAMES) in " ".join(capsys.readouterr().out.split())  # the help is written without torch
