"""The metrics `genlab eval` computes, by name: each one's function, its table rows and what it needs.

    METRICS["cas"].needs                       # (SAMPLE_IMAGES, LABELLED_DIGITS, SAMPLE_LABELS)
    measure(("fid", "cas"), setting, subject)  # values, details, and why a metric was skipped

A metric is a function of the `Setting` (the real side, the extractor, the seed: the same for the
samples and their floor) and the `Subject` (generated images with their features, or held-out real
images for the floor). A metric whose need is missing is skipped, and `skipped` says "needs <what>"
of the first need missing. Adding a metric is one function and one entry in `METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab.data import ImageDataset
from genlab.errors import GenlabError
from genlab.eval import metrics as M
from genlab.eval.augmentation import REAL_SHARES, headline, measure_augmentation
from genlab.eval.features import IMAGE_SHAPE, SMALL_CLASSIFIER, accuracy
from genlab.eval.likelihood import negative_log_likelihood
from genlab.eval.reference import FeatureExtractor, RealFeatures, real_features
from genlab.eval.sources import Generated, seeded_subset
from genlab.eval.table import Row
from genlab.images import to_uint8
from genlab.models.base import HasLikelihood, bits_per_dim

CAS_STEPS = SMALL_CLASSIFIER.steps  # classifier updates for CAS, whatever the sample count
MEMORIZATION_PAIRS = 16


@dataclass
class Setting:
    """What samples and their floor are measured against: the real splits, the extractor, the seed."""

    train: ImageDataset
    test: ImageDataset
    seed: int
    extractor: FeatureExtractor | None = None  # None when no selected metric needs features (`--metrics nll`)
    reference: RealFeatures | None = None  # the reference split's features (a seeded subset of at most 10,000)
    cas_steps: int = CAS_STEPS
    use_cache: bool = True
    real_shares: tuple[float, ...] = REAL_SHARES  # the augmentation measure's real-set sizes
    augmentation_steps: int | None = None  # its classifier's steps (None: the recipe's)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with the evaluation's seed (each metric's random subsets start here)."""
        return torch.Generator().manual_seed(self.seed)

    def real(self, split: str) -> RealFeatures:
        """Features of every image of the "train" or "test" split (from the cache when `use_cache`)."""
        extractor, _ = self.real_side()
        return real_features(self.train if split == "train" else self.test, split, extractor, use_cache=self.use_cache)

    def real_side(self) -> tuple[FeatureExtractor, RealFeatures]:
        """The extractor and the reference features: there whenever a selected metric needs features."""
        if self.extractor is None or self.reference is None:
            raise AssertionError("a metric that needs features was measured without an extractor")
        return self.extractor, self.reference


@dataclass
class Subject:
    """What is measured: generated images with their features, or (for the floor) held-out real images'."""

    features: RealFeatures | None  # (N, D) features, (N, K) probabilities, labels; None when none are needed
    generated: Generated | None = None  # None: `features` are held-out real images (the floor)
    shared: dict[str, Any] = field(default_factory=dict)  # computed once for two metrics (precision and recall)

    @property
    def is_floor(self) -> bool:
        return self.generated is None

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()`, called the first time `key` is asked for (precision and recall come from one pass)."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]


@dataclass(frozen=True)
class Need:
    """Something a metric needs; `what` completes the skip message "needs ..." when it is missing.

    `met` says whether it is there; `of_samples` marks what comes of the images measured (their pixels,
    features, class probabilities or labels): a metric with no such need draws no images, needs no
    feature extractor and has no floor (`--metrics nll`). `why` replaces "needs <what>" where that
    would not say enough.
    """

    what: str
    met: Callable[[Setting, Subject], bool]
    of_samples: bool = False
    why: Callable[[Setting, Subject], str] | None = None

    def skip_reason(self, setting: Setting, subject: Subject) -> str:
        return self.why(setting, subject) if self.why is not None else f"needs {self.what}"


@dataclass
class Measured:
    """What one metric gives: its metrics.json keys and values, details, and the closest pairs where it draws them."""

    values: dict[str, Any]
    details: dict[str, Any] | None = None
    pair_images: torch.Tensor | None = None  # (2P, C, H, W) uint8: closest samples over their training images


@dataclass(frozen=True)
class Metric:
    """A metric `genlab eval` computes: its --metrics name, function, table rows and needs."""

    name: str
    compute: Callable[[Setting, Subject], Measured]
    rows: tuple[Row, ...]
    needs: tuple[Need, ...]
    floor: bool = True  # whether held-out real images give it a real-vs-real floor
    default: bool = True  # measured when no --metrics are named (the augmentation grid takes minutes: by name only)

    def missing(self, setting: Setting, subject: Subject) -> str | None:
        """Why the metric cannot be measured on `subject` (its first need missing), or None."""
        for need in self.needs:
            if not need.met(setting, subject):
                return need.skip_reason(setting, subject)
        return None

    @property
    def needs_samples(self) -> bool:
        """Whether the metric measures images (drawn from a run or read from a file) with the feature extractor."""
        return any(need.of_samples for need in self.needs)


# ---------------------------------------------------------------- needs


def _always(setting: Setting, subject: Subject) -> bool:
    return True


def _labelled(setting: Setting, subject: Subject) -> bool:
    # The floor's real images carry the test split's labels; samples carry the labels they were drawn with.
    labels = setting.test.labels if subject.generated is None else subject.generated.labels
    return labels is not None


def _own_classes(setting: Setting, subject: Subject) -> bool:
    extractor, reference = setting.real_side()
    return reference.labels is not None and setting.train.num_classes == extractor.num_classes


def _shipped_classifier(setting: Setting, subject: Subject) -> bool:
    extractor, _ = setting.real_side()
    return setting.train.num_classes == extractor.num_classes and bool(extractor.class_names)


def _held_out_labels(setting: Setting, subject: Subject) -> bool:
    return setting.test.labels is not None and len(setting.test) > 0


def _labelled_digits(setting: Setting, subject: Subject) -> bool:
    return setting.train.image_shape == IMAGE_SHAPE and setting.test.labels is not None


def _likelihood_run(setting: Setting, subject: Subject) -> bool:
    run = None if subject.generated is None else subject.generated.run
    return run is not None and isinstance(run.model, HasLikelihood)


def _no_likelihood(setting: Setting, subject: Subject) -> str:
    run = None if subject.generated is None else subject.generated.run
    who = "images from a file carry" if run is None else f"the {run.family} family has"
    return f"{who} no log-likelihood (it needs a run of a likelihood family)"


SAMPLE_IMAGES = Need("the images themselves", _always, of_samples=True)
SAMPLE_FEATURES = Need("features of the images", _always, of_samples=True)
CLASS_PROBABILITIES = Need("class probabilities of the images", _always, of_samples=True)
TRAINING_FEATURES = Need("features of the training and test images", _always)
OWN_CLASSES = Need(
    "labelled data and a classifier of the data's own classes "
    "(the shipped extractors; Inception's ImageNet classes are not the data's)",
    _own_classes,
)
SHIPPED_CLASSIFIER = Need("the shipped classifier of the data's classes", _shipped_classifier)
HELD_OUT_LABELS = Need(
    "labelled held-out images (the test split) to measure the classifier's confusion", _held_out_labels
)
SAMPLE_LABELS = Need("labelled samples (a conditional model, or `labels` in the .npz)", _labelled, of_samples=True)
LABELLED_DIGITS = Need("labelled 1x28x28 data", _labelled_digits)
LIKELIHOOD_RUN = Need("a run of a likelihood family", _likelihood_run, why=_no_likelihood)


# ---------------------------------------------------------------- the metrics


def _features(setting: Setting, subject: Subject) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference features (R, D), the subject's features (N, D))."""
    _, reference = setting.real_side()
    if subject.features is None:
        raise AssertionError("a metric that needs features was measured without them")
    return reference.features, subject.features.features


def _fid(setting: Setting, subject: Subject) -> Measured:
    ref, feats = _features(setting, subject)
    return Measured({"fid": M.fid(*M.gaussian_stats(ref), *M.gaussian_stats(feats))})


def _kid(setting: Setting, subject: Subject) -> Measured:
    ref, feats = _features(setting, subject)
    size = max(2, min(1000, len(ref) // 2, len(feats) // 2))  # subsets smaller than the sets, so std means something
    mean, std = M.kid(ref, feats, subset_size=size, generator=setting.generator())
    return Measured({"kid": mean, "kid_std": std})


def _precision(setting: Setting, subject: Subject) -> Measured:
    return Measured({"precision": subject.once("pr", lambda: M.precision_recall(*_features(setting, subject)))[0]})


def _recall(setting: Setting, subject: Subject) -> Measured:
    return Measured({"recall": subject.once("pr", lambda: M.precision_recall(*_features(setting, subject)))[1]})


def _density(setting: Setting, subject: Subject) -> Measured:
    return Measured({"density": subject.once("dc", lambda: M.density_coverage(*_features(setting, subject)))[0]})


def _coverage(setting: Setting, subject: Subject) -> Measured:
    return Measured({"coverage": subject.once("dc", lambda: M.density_coverage(*_features(setting, subject)))[1]})


def _probabilities(subject: Subject) -> torch.Tensor:
    """The subject's class probabilities (N, K)."""
    if subject.features is None:
        raise AssertionError("a metric that needs class probabilities was measured without them")
    return subject.features.probabilities


def _classifier_score(setting: Setting, subject: Subject) -> Measured:
    probabilities = _probabilities(subject)
    score, std = M.classifier_score(probabilities, splits=min(10, len(probabilities)), generator=setting.generator())
    return Measured({"classifier_score": score, "classifier_score_std": std})


def _mode_coverage(setting: Setting, subject: Subject) -> Measured:
    """Classes covered, judged against the classifier's own errors (M.mode_coverage), and the class KL.

    The confusion comes from the test split with its true labels: held-out images the shipped
    classifiers were never trained on (the training split would hide their errors).
    """
    _, reference = setting.real_side()
    assert reference.labels is not None  # OWN_CLASSES
    num_classes = setting.train.num_classes
    test = setting.real("test")
    assert test.labels is not None  # HELD_OUT_LABELS
    confusion = M.confusion_matrix(test.probabilities, test.labels, num_classes)
    counts = torch.bincount(reference.labels.cpu(), minlength=num_classes)
    coverage = M.mode_coverage(_probabilities(subject), num_classes, counts, confusion=confusion)
    return Measured(
        {"classes_covered": coverage["classes_covered"], "num_classes": num_classes,
         "class_kl": coverage["kl_to_reference"]},
        details={key: coverage[key] for key in ("counts", "expected_spurious", "p_values", "covered", "level",
                                                "min_count", "min_fraction", "reference")}
                | {"confusion_images": len(test), "confusion_prior": M.CONFUSION_PRIOR},
    )  # fmt: skip


def _label_accuracy(setting: Setting, subject: Subject) -> Measured:
    """Share of labelled samples the domain classifier assigns to the label they were drawn with.

    The floor is the classifier's accuracy on the real test images with their true labels
    (never the training split, which the shipped classifiers were trained on).
    """
    seen = setting.real("test") if subject.generated is None else subject.features
    labels = setting.test.labels if subject.generated is None else subject.generated.labels
    assert seen is not None and labels is not None  # SAMPLE_LABELS
    predicted = seen.probabilities.argmax(dim=1)
    return Measured({"label_accuracy": float((predicted == labels.cpu()).double().mean())})


def _memorization(setting: Setting, subject: Subject) -> Measured:
    """Copies of training images, each sample judged against held-out (test) images of its predicted class,
    and samples that coincide with the reference images themselves (`M.memorization`, `M.reference_copy_share`).

    Classes are those the shipped classifier assigns (argmax of the class probabilities, for samples and
    held-out images alike); without a classifier of the data's classes (Inception) the threshold is pooled.
    """
    _, reference = setting.real_side()
    train, test = setting.real("train"), setting.real("test")
    if subject.features is None:
        raise AssertionError("memorization was measured without features")
    per_class = _shipped_classifier(setting, subject)
    classes: dict[str, Any] = {}
    if per_class:
        classes = {"sample_classes": subject.features.probabilities.argmax(dim=1),
                   "held_out_classes": test.probabilities.argmax(dim=1),
                   "num_classes": setting.train.num_classes}  # fmt: skip
    if subject.generated is None:
        # held-out images score the quantile by construction (per class as pooled); the ratio test and the
        # reference coincidence are measured: the held-out split against the reference, as samples are
        held = subject.features.features
        two = {**classes, "sample_classes": classes["sample_classes"][:2]} if per_class else {}
        found = M.memorization(held[:2], train.features, test.features, **two)  # the thresholds and the ratio floor
        own: torch.Tensor | float = found["copy_threshold"]
        if per_class:
            by_class = torch.tensor([found["class_thresholds"][str(c)] for c in range(classes["num_classes"])])
            own = by_class[classes["sample_classes"].cpu()]
        coincide = M.reference_copy_share(held, reference.features, own)
        return Measured({"copy_share": found["quantile"], "ratio_test_share": found["held_out_ratio_test_share"],
                         "reference_copy_share": coincide})  # fmt: skip
    feats = subject.features.features
    found = M.memorization(feats, train.features, test.features, num_pairs=MEMORIZATION_PAIRS, **classes)
    reference_images = _reference_images(setting)
    identical = (
        _same_bytes(subject.generated.images, reference_images)
        if reference_images is not None
        else torch.zeros(len(feats), dtype=torch.bool)
    )
    coincide = M.reference_copy_share(feats, reference.features, found["sample_thresholds"], identical)
    details = {k: v for k, v in found.items() if k not in ("copy_share", "ratio_test_share", "sample_thresholds")}
    if not per_class:
        details["calibration"] = "pooled (no classifier of the data's own classes)"
    details["identical_to_reference_images"] = int(identical.sum())
    return Measured(
        {"copy_share": found["copy_share"], "ratio_test_share": found["ratio_test_share"],
         "reference_copy_share": coincide},
        details=details,
        pair_images=pair_strip(subject.generated.images, setting.train.images, found["closest_pairs"]),
    )  # fmt: skip


def _reference_images(setting: Setting) -> torch.Tensor | None:
    """The images of the split the reference features were taken from (the one whose features hold the
    reference's first row exactly: both come from `real_features`), or None when neither does."""
    _, reference = setting.real_side()
    if len(reference) == 0:
        return None
    for split, data in (("test", setting.test), ("train", setting.train)):
        features = setting.real(split).features
        if features.shape[1:] == reference.features.shape[1:] and bool(
            (features == reference.features[0]).all(dim=1).any()
        ):
            return data.images
    return None


def _same_bytes(images: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N,) bool: whether each image of `images` is byte for byte one of `others` (same dtype and shape)."""
    if images.dtype != others.dtype or images.shape[1:] != others.shape[1:]:
        return torch.zeros(len(images), dtype=torch.bool)
    known = {row.tobytes() for row in others.cpu().numpy()}
    return torch.tensor([row.tobytes() in known for row in images.cpu().numpy()], dtype=torch.bool)


def _cas(setting: Setting, subject: Subject) -> Measured:
    """Classification accuracy score (Ravuri & Vinyals 2019): train on labelled images, test on real test.

    The floor trains the same classifier, for the same number of steps, on as many real
    training images: the accuracy a perfect generator would reach.
    """
    train, test = setting.train, setting.test
    if subject.generated is None:
        assert subject.features is not None and train.labels is not None
        index = seeded_subset(len(train), len(subject.features), setting.generator())
        images, labels = train.images[index], train.labels[index]
    else:
        assert subject.generated.labels is not None  # SAMPLE_LABELS
        images, labels = subject.generated.images, subject.generated.labels
    assert test.labels is not None  # LABELLED_DIGITS
    recipe = SMALL_CLASSIFIER.with_steps(setting.cas_steps)
    classifier = recipe.train(images, labels, train.num_classes, seed=setting.seed)
    return Measured({"cas": accuracy(classifier, test.images, test.labels)})


def _augmentation(setting: Setting, subject: Subject) -> Measured:
    """What the samples add to a small real training set (genlab.eval.augmentation); measured on samples only
    (held-out real images added to real ones would be the ceiling itself)."""
    generated = subject.generated
    assert generated is not None and generated.labels is not None  # SAMPLE_LABELS; floor=False
    run = generated.run

    def draw_more(labels: torch.Tensor) -> torch.Tensor:
        assert run is not None
        options = generated.source.get("sample_options", {})
        generator = torch.Generator().manual_seed(setting.seed + 1)  # not the draws the eval already holds
        return to_uint8(run.sample(len(labels), generator=generator, labels=labels, **options))

    grid = measure_augmentation(
        setting.train, setting.test, generated.images, generated.labels, seed=setting.seed,
        shares=setting.real_shares, steps=setting.augmentation_steps, draw_more=None if run is None else draw_more,
    )  # fmt: skip
    return Measured(headline(grid), details=grid)


def _nll(setting: Setting, subject: Subject) -> Measured:
    """Negative log-likelihood of the test split (a seeded subset where the family names a smaller count)."""
    run = None if subject.generated is None else subject.generated.run
    assert run is not None and isinstance(run.model, HasLikelihood)  # LIKELIHOOD_RUN
    model = run.model
    limit = model.likelihood_images or len(setting.test)  # DDPM's bound costs many network passes per image
    test = setting.test.subset(seeded_subset(len(setting.test), limit, setting.generator()))
    nll, data_model = negative_log_likelihood(model, test, setting.seed)
    return Measured(
        {"nll_nats": nll, "bits_per_dim": bits_per_dim(nll, math.prod(setting.test.image_shape))},
        details={"data_model": data_model, "kind": model.likelihood_kind, "split": "test", "images": len(test)},
    )


def pair_strip(samples: torch.Tensor, train_images: torch.Tensor, pairs: Sequence[Sequence[Any]]) -> torch.Tensor:
    """(2P, C, H, W) uint8: the P closest samples, then their nearest training images (a 2-row grid).

    `pairs`: (sample index, training index, distance) of each of the P closest samples."""
    top = torch.stack([samples[i] for i, _, _ in pairs])
    bottom = torch.stack([train_images[j] for _, j, _ in pairs])
    return torch.cat([top, bottom])


def _metric(
    name: str,
    compute: Callable[[Setting, Subject], Measured],
    rows: Iterable[tuple[str, str, str]],
    needs: tuple[Need, ...],
    floor: bool = True,
    default: bool = True,
) -> Metric:
    return Metric(
        name, compute, tuple(Row(key, label, better, name) for key, label, better in rows), needs, floor, default
    )


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    _metric("fid", _fid, [("fid", "FID", "lower")], (SAMPLE_FEATURES,)),
    _metric("kid", _kid, [("kid", "KID", "lower")], (SAMPLE_FEATURES,)),
    _metric("precision", _precision, [("precision", "Precision (k=3)", "higher")], (SAMPLE_FEATURES,)),
    _metric("recall", _recall, [("recall", "Recall (k=3)", "higher")], (SAMPLE_FEATURES,)),
    _metric("density", _density, [("density", "Density (k=5)", "near floor")], (SAMPLE_FEATURES,)),
    _metric("coverage", _coverage, [("coverage", "Coverage (k=5)", "higher")], (SAMPLE_FEATURES,)),
    _metric("classifier_score", _classifier_score, [("classifier_score", "Classifier score", "higher")],
            (CLASS_PROBABILITIES,)),
    _metric("mode_coverage", _mode_coverage,
            [("classes_covered", "Classes covered", "higher"), ("class_kl", "Class KL to data (nats)", "lower")],
            (CLASS_PROBABILITIES, OWN_CLASSES, HELD_OUT_LABELS)),
    _metric("label_accuracy", _label_accuracy, [("label_accuracy", "Drawn label recognised", "higher")],
            (CLASS_PROBABILITIES, SHIPPED_CLASSIFIER, SAMPLE_LABELS)),
    _metric("memorization", _memorization,
            [("copy_share", "Copies (d1 < 5% of its class)", "lower"),
             ("ratio_test_share", "Ratio test d1/d2 < 1/3", "lower"),
             ("reference_copy_share", "Coincide with reference", "lower")],
            (SAMPLE_IMAGES, SAMPLE_FEATURES, TRAINING_FEATURES)),
    _metric("cas", _cas, [("cas", "CAS accuracy", "higher")], (SAMPLE_IMAGES, LABELLED_DIGITS, SAMPLE_LABELS)),
    _metric("nll", _nll, [("nll_nats", "NLL (nats/image)", "lower"), ("bits_per_dim", "Bits/dim", "lower")],
            (LIKELIHOOD_RUN,), floor=False),  # a likelihood has no real-vs-real counterpart
    _metric("augmentation", _augmentation,
            [("augmentation_gain", "Augmentation gain (+1x synthetic)", "higher"),
             ("augmentation_recovered", "Real-data gain recovered (+1x)", "higher")],
            (SAMPLE_IMAGES, LABELLED_DIGITS, SAMPLE_LABELS), floor=False, default=False),
)}  # fmt: skip
METRIC_NAMES = tuple(METRICS)
ROWS = tuple(row for metric in METRICS.values() for row in metric.rows)  # the table's lines, in this order


def parse_metrics(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """The metric names to compute ("fid,kid" or a list), in `METRICS`' order; None means the default ones (all
    but those asked for by name only, like augmentation)."""
    if names is None:
        return tuple(name for name in METRIC_NAMES if METRICS[name].default)
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in wanted if n not in METRICS]
    if unknown or not wanted:
        raise GenlabError(
            f"unknown metric {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRIC_NAMES)}"
        )
    return tuple(n for n in METRIC_NAMES if n in wanted)


@dataclass
class Measurements:
    """What `measure` found: metric name -> {key: value}, details by metric name, skip reasons, the closest pairs."""

    found: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    pair_images: torch.Tensor | None = None

    def flat(self) -> dict[str, Any]:
        """Every metric's keys in one dict (metrics.json's "metrics" or "floor")."""
        return {key: value for values in self.found.values() for key, value in values.items()}


def measure(
    names: Sequence[str], setting: Setting, subject: Subject, known: dict[str, dict[str, Any]] | None = None
) -> Measurements:
    """Each metric of `names` on `subject`, in order; names in `known` (cached floor values) are taken as they
    are, a metric without a floor is passed over on the floor, one whose need is missing is skipped with why."""
    measured = Measurements()
    for name in names:
        metric = METRICS[name]
        if known and name in known:
            measured.found[name] = known[name]
            continue
        if subject.is_floor and not metric.floor:
            continue
        why = metric.missing(setting, subject)
        if why is not None:
            measured.skipped[name] = why
            continue
        result = metric.compute(setting, subject)
        measured.found[name] = result.values
        if result.details is not None:
            measured.details[name] = result.details
        if result.pair_images is not None:
            measured.pair_images = result.pair_images
    return measured
