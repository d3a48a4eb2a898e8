"""`genlab eval`: every sample-quality metric for a run or any set of images, beside its real-vs-real floor.

    result = evaluate("runs/vae")                                  # the run's own data, test split
    result = evaluate("samples.npz", "fashion-mnist", n=5000)      # images made by anything
    result = evaluate(None, "mnist-5k")                            # the floor alone
    print(result.table()); result.metrics["fid"], result.floor["fid"]

The floor is what real images score: held-out real images (the split that is not the
reference, as many as the samples) measured exactly as the samples are. A metric is never
shown without it, because "FID 4.2" means nothing until one knows that real data scores 0.9
on the same extractor, reference and sample count.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.data import ImageDataset, fingerprint, load_splits, read_npz
from genlab.data.transforms import binarize, to_uint8, to_unit
from genlab.errors import GenlabError
from genlab.eval import metrics as M
from genlab.eval.features import IMAGE_SHAPE, ClassifierConfig, accuracy, extractor_for, train_classifier
from genlab.eval.reference import FeatureExtractor, RealFeatures, cache_dir, real_features
from genlab.models.base import bits_per_dim
from genlab.training import distributed
from genlab.training.trainer import pick_device

METRIC_NAMES = (
    "fid", "kid", "precision", "recall", "density", "coverage", "classifier_score",
    "mode_coverage", "label_accuracy", "memorization", "cas", "nll",
)  # fmt: skip
DEFAULT_N = 10_000  # samples drawn when --n is not given (fewer when the reference split is smaller)
MAX_REFERENCE = 10_000  # real reference images: a seeded subset of larger splits
CAS_STEPS = 300  # classifier updates for CAS, whatever the sample count
CAS_BATCH = 128
NLL_BATCH = 500
MEMORIZATION_PAIRS = 16


@dataclass(frozen=True)
class Row:
    """One line of the metrics table: the metrics.json key, its label, and which way is better."""

    key: str
    label: str
    better: str
    metric: str  # the --metrics name that produces it


ROWS = (
    Row("fid", "FID", "lower", "fid"),
    Row("kid", "KID", "lower", "kid"),
    Row("precision", "Precision (k=3)", "higher", "precision"),
    Row("recall", "Recall (k=3)", "higher", "recall"),
    Row("density", "Density (k=5)", "near floor", "density"),
    Row("coverage", "Coverage (k=5)", "higher", "coverage"),
    Row("classifier_score", "Classifier score", "higher", "classifier_score"),
    Row("classes_covered", "Classes covered", "higher", "mode_coverage"),
    Row("class_kl", "Class KL to data (nats)", "lower", "mode_coverage"),
    Row("label_accuracy", "Drawn label recognised", "higher", "label_accuracy"),
    Row("copy_share", "Copies (d1 < 5% held-out)", "lower", "memorization"),
    Row("ratio_test_share", "Ratio test d1/d2 < 1/3", "lower", "memorization"),
    Row("cas", "CAS accuracy", "higher", "cas"),
    Row("nll_nats", "NLL (nats/image)", "lower", "nll"),
    Row("bits_per_dim", "Bits/dim", "lower", "nll"),
)


@dataclass
class Evaluation:
    """What `evaluate` measured: flat `metrics` and `floor` (key -> number), details, skips, provenance."""

    metrics: dict[str, float] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric name -> why it was not computed
    info: dict[str, Any] = field(default_factory=dict)
    pair_images: torch.Tensor | None = None  # (2P, C, H, W) uint8: closest samples over their training images

    def to_dict(self) -> dict[str, Any]:
        """The content of metrics.json."""
        return {
            "format_version": 1, **self.info, "metrics": self.metrics, "floor": self.floor,
            "details": self.details, "skipped": self.skipped,
        }

    @property
    def observations(self) -> list[str]:
        """What the numbers say against their floor (genlab.explain.observations.observe_metrics)."""
        from genlab.explain.observations import observe_metrics

        return observe_metrics(self.metrics, self.floor)

    def table(self) -> str:
        """The metrics as an aligned text table, the real-vs-real floor beside each, then any observations."""
        header = ("Metric", "Value" if self.metrics else "Real vs real", "Real vs real", "Better")
        rows = []
        for row in ROWS:
            if row.key not in self.metrics and row.key not in self.floor:
                continue
            value = metric_text(row.key, self.metrics) if self.metrics else ""
            floor = metric_text(row.key, self.floor)
            rows.append((row.label, value, floor, row.better) if self.metrics else (row.label, floor, "", row.better))
        if not self.metrics:
            header, rows = (header[0], header[1], header[3]), [(r[0], r[1], r[3]) for r in rows]
        widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
        lines = ["  ".join(str(cell).ljust(widths[c]) for c, cell in enumerate(line)).rstrip() for line in [header, *rows]]
        for name, why in self.skipped.items():
            lines.append(f"({name}: {why})")
        lines.extend(f"observation: {text}" for text in self.observations)
        return "\n".join(lines)


def metric_text(key: str, values: dict[str, float]) -> str:
    """How tables show metric `key` of `values`: 4 significant digits, "± std" where one was measured, "-" if absent."""
    if key not in values or values[key] is None:
        return "-"
    value = values[key]
    if key == "classes_covered":
        return f"{int(value)}/{int(values.get('num_classes', 0))}"
    spread = values.get(f"{key}_std")
    text = f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return f"{text} ± {spread:.2g}" if spread is not None else text


def parse_metrics(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """The metric names to compute ("fid,kid" or a list); None means all of them."""
    if names is None:
        return METRIC_NAMES
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in wanted if n not in METRIC_NAMES]
    if unknown or not wanted:
        raise GenlabError(f"unknown metric {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRIC_NAMES)}")
    return tuple(n for n in METRIC_NAMES if n in wanted)


def choose_extractor(data: ImageDataset, inception: str | Path | None = None) -> FeatureExtractor:
    """Inception-v3 from the user's weight file when given, else the shipped classifier for `data`."""
    if inception is not None:
        from genlab.eval.inception import load_inception

        return load_inception(inception)
    return extractor_for(data.name, data.image_shape)


# --------------------------------------------------------------------------- sources


@dataclass
class Generated:
    """Images to evaluate: uint8 (N, C, H, W), optional labels (N,), and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    source: dict[str, Any]
    run: Any = None  # the Run they were drawn from, for log-likelihood; None for files


def _open_source(source, device: torch.device | None = None) -> tuple[Any, ImageDataset | None]:
    """(Run or None, samples dataset or None) from a Run, a run folder (loaded on `device`, default the CPU),
    an .npz path or an ImageDataset."""
    from genlab.run import Run, is_run_dir

    if source is None or isinstance(source, (Run, ImageDataset)):
        return (source, None) if isinstance(source, Run) else (None, source)
    path = Path(source)
    if path.is_dir():
        if not is_run_dir(path):
            raise GenlabError(f"{path} is not a genlab run (no run.json); give a run folder or --samples FILE.npz")
        return Run.load(path, device=device or "cpu"), None
    if path.suffix.lower() != ".npz":
        what = "does not exist" if not path.exists() else "is not an .npz file"
        raise GenlabError(f"{path} {what}; give a run folder, or images as --samples FILE.npz")
    return None, read_npz(path)


def _run_data_spec(run) -> tuple[str, Any]:
    data = run.info["data"]
    if data.get("in_memory"):
        raise GenlabError(f"{run.path} was trained on a dataset in memory; name the data to compare with (--data)")
    return data["spec"], data.get("size")


def _draw(run, n: int, seed: int, options: dict[str, Any]) -> Generated:
    """n images from the run, seeded; a conditional model draws the classes in turn (balanced)."""
    from genlab.run import check_sampler_options

    check_sampler_options(run.model, options)
    labels = run.model.check_labels(n, None)
    piece = distributed.shard_slice(n)  # under torchrun each rank draws its piece; one process draws all n
    mine = None if labels is None else labels[piece]
    images = run.sample(piece.stop - piece.start, generator=torch.Generator().manual_seed(distributed.rank_seed(seed)),
                        labels=mine, **options)
    source = _run_source(run)
    if options:
        source["sample_options"] = dict(options)
    return Generated(distributed.gather_rows(to_uint8(images)), None if labels is None else labels.cpu(), source, run)


def _sample_features(extractor: FeatureExtractor, generated: Generated) -> RealFeatures:
    """Features and class probabilities of the generated images: each rank computes its piece, all ranks get all."""
    piece = generated.images[distributed.shard_slice(len(generated.images))]
    return RealFeatures(distributed.gather_rows(extractor.features(piece)),
                        distributed.gather_rows(extractor.probabilities(piece)), generated.labels)


def _run_source(run) -> dict[str, Any]:
    """How metrics.json names a run it evaluated."""
    return {"kind": "run", "path": str(run.path), "family": run.family,
            "epochs": run.info.get("epochs_completed"), "conditional": run.model.conditional}


def seeded_subset(count: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded subset of n of `count` indices, or all of them in order when n >= count."""
    return torch.arange(count) if n >= count else torch.randperm(count, generator=generator)[:n]


# --------------------------------------------------------------------------- the evaluation


def evaluate(
    source=None,
    data: str | None = None,
    *,
    reference: str = "test",
    n: int | None = None,
    seed: int = 0,
    metrics: str | Sequence[str] | None = None,
    inception: str | Path | None = None,
    use_cache: bool = True,
    cas_steps: int = CAS_STEPS,
    sample_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Measure `source` against real images of `data`, with the real-vs-real floor beside every number.

    `source`: a run folder or Run (n images are drawn with `seed`), an .npz of images (and
    labels) or an ImageDataset of generated images, or None for the floor alone. `data`: the
    dataset spec (default: the run's). `reference`: the split the samples are compared with
    ("test" or "train"; at most MAX_REFERENCE images, a seeded subset). `n`: samples to
    use (default: all the file's images, or for a run as many as the reference has; at most
    DEFAULT_N). `metrics`: names from
    METRIC_NAMES (default all); those that do not apply are listed in `skipped` with why.
    `sample_options`: keyword arguments of the run's `sample` (a diffusion run's sampler, steps,
    eta, guidance), recorded with the source.
    """
    # Under torchrun, each rank draws its piece of the samples (on its own GPU where there are
    # GPUs) and extracts their features; all ranks then hold every sample's features.
    device = distributed.rank_device(pick_device("auto")) if distributed.launched_by_torchrun() else None
    with distributed.process_group_from_env(device or torch.device("cpu")):
        return _evaluate(source, data, reference, n, seed, metrics, inception, use_cache, cas_steps,
                         sample_options, device)


def _evaluate(source, data, reference, n, seed, metrics, inception, use_cache, cas_steps, sample_options,
              device) -> Evaluation:
    """`evaluate` inside the process group, if any; `device`: where a run's model goes (None: the CPU)."""
    if reference not in ("test", "train"):
        raise GenlabError(f"--reference must be test or train, got {reference!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise GenlabError(f"--n must be a positive number of samples, got {n!r}")
    selected = parse_metrics(metrics)
    run, samples = _open_source(source, device)
    size = None
    if data is None:
        if run is None:
            raise GenlabError("name the real data to compare with, e.g. --data fashion-mnist")
        data, size = _run_data_spec(run)
    started = time.perf_counter()
    train, test = load_splits(data, size=size)
    if selected == ("nll",):  # a likelihood needs no samples, no feature extractor and no floor
        return _likelihood_only(run, train, test, data, size, seed, started)
    reference_split, held_out_split = (test, train) if reference == "test" else (train, test)
    extractor = choose_extractor(train, inception)
    generator = torch.Generator().manual_seed(seed)

    real_ref = real_features(reference_split, reference, extractor, use_cache=use_cache)
    real_ref = real_ref.subset(seeded_subset(len(real_ref), MAX_REFERENCE, generator))
    generated = None
    if samples is None:
        n = n or min(DEFAULT_N, len(real_ref))
    if run is not None:
        _check_shape(run.model.data.image_shape, train, f"{run.path}'s images")
        generated = _draw(run, n, seed, sample_options or {})
    elif samples is not None:
        _check_shape(samples.image_shape, train, "the samples")
        n = n or min(DEFAULT_N, len(samples))
        if n > len(samples):
            raise GenlabError(f"--n {n} asks for more images than the {len(samples):,} in {samples.name}; "
                              f"pass --n {len(samples)} or fewer")
        index = seeded_subset(len(samples), n, torch.Generator().manual_seed(seed))
        labels = None if samples.labels is None else samples.labels[index]
        generated = Generated(samples.images[index], labels, {"kind": "samples", "path": samples.name.partition(":")[2],
                                                               "fingerprint": fingerprint(samples)})
    held = real_features(held_out_split, "train" if reference == "test" else "test", extractor, use_cache=use_cache)
    held = held.subset(seeded_subset(len(held), n, generator))

    result = Evaluation(info={
        "source": generated.source if generated is not None else {"kind": "real-vs-real"},
        "data": {"spec": data, "size": size, "reference": reference, "fingerprint": fingerprint(train, test)},
        "extractor": {"name": extractor.name, "sha256": extractor.sha256, "feature_dim": extractor.feature_dim},
        "counts": {"samples": n if generated is not None else 0, "reference": len(real_ref), "held_out": len(held),
                   "train": len(train), "test": len(test)},
        "seed": seed, "metrics_selected": list(selected),
    })
    context = _Context(selected, extractor, real_ref, train, test, seed, cas_steps, use_cache)
    if generated is not None:
        fake = _sample_features(extractor, generated)
        found, result.details = context.measure(fake, generated)
        result.metrics = _flat(found)
        context.selected = tuple(name for name in found if name != "nll")  # the floor of what was measured
    key = [result.info["data"]["fingerprint"], reference, len(held), len(real_ref), seed, extractor.sha256, cas_steps]
    known = _read_floor(key) if use_cache else {}
    floor, _ = context.measure(held, None, known)
    if use_cache and set(floor) - set(known):
        _write_floor(key, floor)
    result.floor = _flat(floor)
    result.skipped, result.pair_images = context.skipped, context.pair_images
    result.info["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _likelihood_only(run, train: ImageDataset, test: ImageDataset, data: str, size, seed: int,
                     started: float) -> Evaluation:
    """`--metrics nll` alone: the bound or exact likelihood of the test split, on any image shape."""
    if run is None:
        raise GenlabError("nll needs a run of a likelihood family; images from a file carry no likelihood")
    _check_shape(run.model.data.image_shape, train, f"{run.path}'s images")
    context = _Context(("nll",), None, None, train, test, seed, 0, False)
    result = Evaluation(info={
        "source": _run_source(run),
        "data": {"spec": data, "size": size, "reference": "test", "fingerprint": fingerprint(train, test)},
        "extractor": None, "seed": seed, "metrics_selected": ["nll"],
    })
    result.metrics = context._nll(Generated(None, None, result.info["source"], run), result.details) or {}
    result.info["counts"] = {"samples": 0, "reference": 0, "held_out": 0, "train": len(train), "test": len(test)}
    result.skipped = context.skipped
    result.info["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _flat(found: dict[str, dict]) -> dict[str, float]:
    return {key: value for values in found.values() for key, value in values.items()}


FLOOR_FORMAT = 2  # bump when a floor metric's definition changes (2: label_accuracy on the test split)


def _floor_path(key: list) -> Path:
    digest = hashlib.sha256(json.dumps([FLOOR_FORMAT, *key]).encode()).hexdigest()[:24]
    return cache_dir() / "floors" / f"{digest}.json"


def _read_floor(key: list) -> dict[str, dict]:
    """Floor values measured before with the same data, reference, counts, seed and extractor."""
    try:
        cached = json.loads(_floor_path(key).read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_floor(key: list, floor: dict[str, dict]) -> None:
    from genlab.io import atomic_write_json

    try:
        _floor_path(key).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_floor_path(key), {**_read_floor(key), **floor})
    except OSError:
        pass  # a read-only cache costs time, not correctness


def _check_shape(shape, data: ImageDataset, what: str) -> None:
    if tuple(shape) != data.image_shape:
        show = "x".join(str(s) for s in shape)
        raise GenlabError(f"{what} are {show} but {data.name} images are {'x'.join(map(str, data.image_shape))} "
                          "(C x H x W); compare images of the same shape (--data, --size)")


@dataclass
class _Context:
    """What every measurement shares: the real side, the extractor, the seed; collects skip reasons."""

    selected: tuple[str, ...]
    extractor: FeatureExtractor
    reference: RealFeatures
    train: ImageDataset
    test: ImageDataset
    seed: int
    cas_steps: int
    use_cache: bool
    skipped: dict[str, str] = field(default_factory=dict)
    pair_images: torch.Tensor | None = None

    def measure(
        self, fake: RealFeatures, generated: Generated | None, known: dict[str, dict] | None = None
    ) -> tuple[dict[str, dict], dict[str, Any]]:
        """Each selected metric of `fake` against the reference: ({metric name: {key: value}}, details).

        `generated` None means `fake` is held-out real data (the floor); names in `known`
        (cached floor values) are taken as they are.
        """
        found: dict[str, dict] = {}
        details: dict[str, Any] = {}
        pairs: dict[str, tuple[float, float]] = {}  # precision/recall and density/coverage come in twos
        for name in self.selected:
            if known and name in known:
                found[name] = known[name]
                continue
            value = self._metric(name, fake, generated, pairs, details)
            if value is not None:
                found[name] = value
        return found, details

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def _skip(self, name: str, why: str) -> None:
        self.skipped[name] = why

    def _metric(self, name: str, fake: RealFeatures, generated: Generated | None, pairs: dict, details: dict):
        ref, feats = self.reference.features, fake.features
        if name == "fid":
            return {"fid": M.fid(*M.gaussian_stats(ref), *M.gaussian_stats(feats))}
        if name == "kid":
            size = max(2, min(1000, len(ref) // 2, len(feats) // 2))  # subsets smaller than the sets, so std means something
            mean, std = M.kid(ref, feats, subset_size=size, generator=self._generator())
            return {"kid": mean, "kid_std": std}
        if name in ("precision", "recall"):
            pairs.setdefault("pr", M.precision_recall(ref, feats))
            return {name: pairs["pr"][name == "recall"]}
        if name in ("density", "coverage"):
            pairs.setdefault("dc", M.density_coverage(ref, feats))
            return {name: pairs["dc"][name == "coverage"]}
        if name == "classifier_score":
            score, std = M.classifier_score(fake.probabilities, splits=min(10, len(feats)), generator=self._generator())
            return {"classifier_score": score, "classifier_score_std": std}
        if name == "mode_coverage":
            return self._mode_coverage(fake, details)
        if name == "label_accuracy":
            return self._label_accuracy(fake, generated)
        if name == "memorization":
            return self._memorization(fake, generated, details)
        if name == "cas":
            return self._cas(fake, generated)
        if name == "nll":
            return None if generated is None else self._nll(generated, details)
        raise AssertionError(name)

    def _mode_coverage(self, fake: RealFeatures, details: dict) -> dict | None:
        num_classes = self.train.num_classes
        if self.reference.labels is None or num_classes != self.extractor.num_classes:
            self._skip("mode_coverage", "needs labelled data and a classifier of the data's own classes "
                                        "(the shipped extractors; Inception's ImageNet classes are not the data's)")
            return None
        reference = torch.bincount(self.reference.labels.cpu(), minlength=num_classes)
        coverage = M.mode_coverage(fake.probabilities, num_classes, reference)
        details["mode_coverage"] = {"counts": coverage["counts"], "min_fraction": coverage["min_fraction"]}
        return {"classes_covered": coverage["classes_covered"], "num_classes": num_classes,
                "class_kl": coverage["kl_to_reference"]}

    def _label_accuracy(self, fake: RealFeatures, generated: Generated | None) -> dict | None:
        """Share of labelled samples the domain classifier assigns to the label they were drawn with.

        The floor is the classifier's accuracy on the real test images with their true labels
        (never the training split, which the shipped classifiers were trained on).
        """
        if self.train.num_classes != self.extractor.num_classes or not self.extractor.class_names:
            self._skip("label_accuracy", "needs the shipped classifier of the data's classes")
            return None
        if generated is None:
            fake = real_features(self.test, "test", self.extractor, use_cache=self.use_cache)
        labels = fake.labels if generated is None else generated.labels
        if labels is None:
            self._skip("label_accuracy", "needs labelled samples (a conditional model, or `labels` in the .npz)")
            return None
        predicted = fake.probabilities.argmax(dim=1)
        return {"label_accuracy": float((predicted == labels.cpu()).double().mean())}

    def _memorization(self, fake: RealFeatures, generated: Generated | None, details: dict) -> dict:
        train = real_features(self.train, "train", self.extractor, use_cache=self.use_cache).features
        test = real_features(self.test, "test", self.extractor, use_cache=self.use_cache).features
        if generated is None:  # held-out images score the quantile by construction; the ratio test has its own floor
            found = M.memorization(test[:2], train, test)
            return {"copy_share": found["quantile"], "ratio_test_share": found["held_out_ratio_test_share"]}
        found = M.memorization(fake.features, train, test, num_pairs=MEMORIZATION_PAIRS)
        details["memorization"] = {k: v for k, v in found.items() if k not in ("copy_share", "ratio_test_share")}
        self.pair_images = _pair_strip(generated.images, self.train.images, found["closest_pairs"])
        return {"copy_share": found["copy_share"], "ratio_test_share": found["ratio_test_share"]}

    def _cas(self, fake: RealFeatures, generated: Generated | None) -> dict | None:
        """Classification accuracy score (Ravuri & Vinyals 2019): train on labelled images, test on real test.

        The floor trains the same classifier, for the same number of steps, on as many real
        training images: the accuracy a perfect generator would reach.
        """
        if self.train.image_shape != IMAGE_SHAPE or self.test.labels is None:
            self._skip("cas", "needs labelled 1x28x28 data")
            return None
        if generated is None:
            index = seeded_subset(len(self.train), len(fake), self._generator())
            images, labels = self.train.images[index], self.train.labels[index]
        elif generated.labels is None:
            self._skip("cas", "needs labelled samples (a conditional model, or `labels` in the .npz)")
            return None
        else:
            images, labels = generated.images, generated.labels
        steps_per_epoch = math.ceil(len(images) / CAS_BATCH)
        config = ClassifierConfig(num_classes=self.train.num_classes)
        classifier = train_classifier(images, labels, config, epochs=math.ceil(self.cas_steps / steps_per_epoch),
                                      seed=self.seed, batch_size=CAS_BATCH)
        return {"cas": accuracy(classifier, self.test.images, self.test.labels)}

    def _nll(self, generated: Generated, details: dict) -> dict | None:
        model = None if generated.run is None else generated.run.model
        if model is None or not hasattr(model, "log_likelihood"):
            who = "images from a file carry" if model is None else f"the {model.family} family has"
            self._skip("nll", f"{who} no log-likelihood (it needs a run of a likelihood family)")
            return None
        # Families whose bound costs many network passes per image (DDPM) name a seeded test subset.
        limit = getattr(model, "likelihood_images", None) or len(self.test)
        test = self.test.subset(seeded_subset(len(self.test), limit, self._generator()))
        nll, data_model = negative_log_likelihood(model, test, self.seed)
        details["nll"] = {"data_model": data_model, "kind": getattr(model, "likelihood_kind", ""), "split": "test",
                          "images": len(test)}
        return {"nll_nats": nll, "bits_per_dim": bits_per_dim(nll, math.prod(self.test.image_shape))}


def negative_log_likelihood(model, test: ImageDataset, seed: int, batch_size: int = NLL_BATCH) -> tuple[float, str]:
    """Mean negative log-likelihood (or its bound) of `test` in nats per image, and the data model it assumes.

    Binarizing models see one fixed binarization of the test images (seeded), as in the
    binarized-MNIST protocol; the others see pixel values in [0, 1].
    """
    binary = bool(getattr(model.config, "binarize", False))
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the importance samples
        for images, labels in test.batches(batch_size, shuffle=False):
            x = to_unit(images)
            if binary:
                x = binarize(x, generator)
            labels = labels if getattr(model, "conditional", False) else None
            total += float(model.log_likelihood(x, labels).double().sum())
    data_model = getattr(model, "likelihood_data_model", None) or ("binarized" if binary else "unit-interval pixels")
    return -total / len(test), data_model


def _pair_strip(samples: torch.Tensor, train_images: torch.Tensor, pairs) -> torch.Tensor:
    """(2P, C, H, W) uint8: the P closest samples, then their nearest training images (a 2-row grid)."""
    top = torch.stack([samples[i] for i, _, _ in pairs])
    bottom = torch.stack([train_images[j] for _, j, _ in pairs])
    return torch.cat([top, bottom])


# --------------------------------------------------------------------------- writing


def write_results(result: Evaluation, folder: str | Path) -> dict[str, Path]:
    """metrics.json (and memorization.png with the closest pairs) into `folder`, atomically."""
    from genlab.images import save_grid
    from genlab.io import atomic_write_json
    from genlab.run import METRICS_FILE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    document = result.to_dict()
    if result.pair_images is not None:
        strip = result.pair_images
        written["memorization"] = save_grid(strip.float() / 255, folder / "memorization.png", nrow=len(strip) // 2)
        document["details"]["memorization"] = {**document["details"]["memorization"], "pairs_png": "memorization.png"}
    atomic_write_json(folder / METRICS_FILE, document)
    written["metrics"] = folder / METRICS_FILE
    return written


# --------------------------------------------------------------------------- during training


class TrainingMonitor:
    """FID, precision and recall of a model's samples on a small budget, for `genlab train --eval-every`.

    The reference is a fixed seeded subset of `n` real images (the test split when there is
    one) whose features come from the cache; each call draws `n` samples from the same noise
    seed, so epoch-to-epoch changes are the model's, not the sampling's. FID from 1,000
    samples is biased upwards against the full-size number: compare it across epochs and
    runs of the same budget, and use `genlab eval` for the final figure.
    """

    def __init__(self, train: ImageDataset, test: ImageDataset | None = None, n: int = 1000, seed: int = 0):
        if n < 4:
            raise GenlabError(f"evaluation during training needs at least 4 samples (precision/recall k=3); got {n}")
        self.extractor = extractor_for(train.name, train.image_shape)
        split, data = ("test", test) if test is not None and len(test) else ("train", train)
        reference = real_features(data, split, self.extractor)
        self.reference = reference.features[seeded_subset(len(reference), n, torch.Generator().manual_seed(seed))]
        self.stats = M.gaussian_stats(self.reference)
        self.n, self.seed = n, seed

    def __call__(self, model) -> dict[str, float]:
        """{"fid", "precision", "recall"} of n fresh samples of `model` (drawn without autograd, seeded)."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                images = model.sample(self.n, generator=torch.Generator().manual_seed(self.seed))
        finally:
            model.train(was_training)
        features = self.extractor.features(to_uint8(images.cpu()))
        precision, recall = M.precision_recall(self.reference, features)
        return {"fid": M.fid(*self.stats, *M.gaussian_stats(features)), "precision": precision, "recall": recall}
