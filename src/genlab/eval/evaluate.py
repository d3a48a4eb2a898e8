"""`genlab eval`: every sample-quality metric for a run or any set of images, beside its real-vs-real floor.

    result = evaluate("runs/vae")                                  # the run's own data, test split
    result = evaluate("samples.npz", "fashion-mnist", n=5000)      # images made by anything
    result = evaluate(None, "mnist-5k")                            # the floor alone
    print(result.table()); result.metrics["fid"], result.floor["fid"]

The floor is what real images score: held-out real images (the split that is not the
reference, as many as the samples) measured exactly as the samples are. A metric is never
shown without it, because "FID 4.2" means nothing until one knows that real data scores 0.9
on the same extractor, reference and sample count.

The metrics themselves are declared in `genlab.eval.registry`; the floor's cache is
`genlab.eval.floors`, the likelihood `genlab.eval.likelihood`, the table `genlab.eval.table`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.data import ImageDataset, fingerprint, load_splits
from genlab.errors import GenlabError
from genlab.eval.augmentation import (
    REAL_SHARES,
    augmentation_table,
    check_sample_labels,
    observe_augmentation,
    parse_shares,
    stratified_counts,
)
from genlab.eval.features import SMALL_CLASSIFIER, extractor_for
from genlab.eval.floors import read_floor, write_floor
from genlab.eval.likelihood import negative_log_likelihood
from genlab.eval.monitor import TrainingMonitor
from genlab.eval.reference import FeatureExtractor, real_features
from genlab.eval.registry import (
    CAS_STEPS,
    METRIC_NAMES,
    METRICS,
    ROWS,
    Setting,
    Subject,
    measure,
    parse_metrics,
)
from genlab.eval.sources import (
    Generated,
    check_shape,
    draw,
    open_source,
    run_source,
    sample_features,
    seeded_subset,
)
from genlab.eval.table import Row, metric_text, metrics_table
from genlab.run import Run
from genlab.training import distributed
from genlab.training.trainer import pick_device

# Names importers have taken from this module since before it was split (`from genlab.eval.evaluate import X`).
__all__ = [
    "DEFAULT_N", "MAX_REFERENCE", "METRIC_NAMES", "ROWS", "Evaluation", "Row", "TrainingMonitor", "choose_extractor",
    "evaluate", "metric_text", "negative_log_likelihood", "parse_metrics", "seeded_subset", "write_results",
]  # fmt: skip

DEFAULT_N = 10_000  # samples drawn when --n is not given (fewer when the reference split is smaller)
MAX_REFERENCE = 10_000  # real reference images: a seeded subset of larger splits


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
        }  # fmt: skip

    @property
    def observations(self) -> list[str]:
        """What the numbers say against their floor (genlab.explain.observations.observe_metrics)."""
        from genlab.explain.observations import observe_metrics

        return observe_metrics(self.metrics, self.floor) + observe_augmentation(self.details.get("augmentation"))

    def table(self) -> str:
        """The metrics as an aligned text table, the real-vs-real floor beside each, then any observations (and the
        augmentation grid, when it was measured)."""
        table = metrics_table(ROWS, self.metrics, self.floor, self.skipped, self.observations)
        grid = self.details.get("augmentation")
        return table + ("\n\n" + augmentation_table(grid) if grid else "")


def choose_extractor(data: ImageDataset, inception: str | Path | None = None) -> FeatureExtractor:
    """Inception-v3 from the user's weight file when given, else the shipped classifier for `data`."""
    if inception is not None:
        from genlab.eval.inception import load_inception

        return load_inception(inception)
    return extractor_for(data.name, data.image_shape)


def evaluate(
    source: Any = None,
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
    real_sizes: str | Sequence[float] | None = None,
    augmentation_steps: int | None = None,
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
    eta, guidance), recorded with the source. `real_sizes`: the augmentation measure's real-set sizes
    ("1,5,10,25" percent of the training split, or shares); `augmentation_steps` its classifier's steps.
    """
    if is_text_run(source):  # bits per byte, copies and diversity beside held-out text (genlab.eval.text)
        from genlab.eval.text import evaluate_text

        options = (("--metrics", metrics), ("--data", data), ("--inception", inception))
        given = [flag for flag, value in options if value]
        if given or sample_options or reference != "test":
            flags = given + list(sample_options or {}) + (["--reference"] if reference != "test" else [])
            raise GenlabError(
                f"a text run is measured on its own test text by bits per byte, copies and diversity together: "
                f"drop {', '.join(flags)}"
            )
        return evaluate_text(source, n=n, seed=seed)
    # Under torchrun, each rank draws its piece of the samples (on its own GPU where there are
    # GPUs) and extracts their features; all ranks then hold every sample's features.
    device = distributed.rank_device(pick_device("auto")) if distributed.launched_by_torchrun() else None
    with distributed.process_group_from_env(device or torch.device("cpu")):
        return _evaluate(source, data, reference, n, seed, metrics, inception, use_cache, cas_steps,
                         sample_options, device, parse_shares(real_sizes), augmentation_steps)  # fmt: skip


def is_text_run(source: Any) -> bool:
    """Whether `source` is a text run (a Run, a run folder or zoo:NAME), read from run.json without loading it."""
    from genlab import zoo
    from genlab.models import is_text_family
    from genlab.run import is_run_dir, read_run_info

    if isinstance(source, Run):
        return is_text_family(source.family)
    if isinstance(source, (str, Path)) and (zoo.is_zoo_spec(source) or is_run_dir(source)):
        return is_text_family(read_run_info(zoo.run_path(source))["model"]["name"])
    return False


def _evaluate(
    source: Any,
    data: str | None,
    reference: str,
    n: int | None,
    seed: int,
    metrics: str | Sequence[str] | None,
    inception: str | Path | None,
    use_cache: bool,
    cas_steps: int,
    sample_options: dict[str, Any] | None,
    device: torch.device | None,
    real_shares: tuple[float, ...] = REAL_SHARES,
    augmentation_steps: int | None = None,
) -> Evaluation:
    """`evaluate` inside the process group, if any; `device`: where a run's model goes (None: the CPU)."""
    if reference not in ("test", "train"):
        raise GenlabError(f"--reference must be test or train, got {reference!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise GenlabError(f"--n must be a positive number of samples, got {n!r}")
    selected = parse_metrics(metrics)
    run, samples = open_source(source, device)
    size = None
    if data is None:
        if run is None:
            raise GenlabError("name the real data to compare with, e.g. --data fashion-mnist")
        data, size = run.data_spec()
    started = time.perf_counter()
    train, test = load_splits(data, size=size)
    if not any(METRICS[name].needs_samples for name in selected):  # nll alone: no samples, extractor or floor
        return _likelihood_only(run, train, test, data, size, seed, started)
    if "augmentation" in selected:  # refused before anything is drawn
        check_augmentation(run, samples, train, real_shares)
    reference_split, held_out_split = (test, train) if reference == "test" else (train, test)
    extractor = choose_extractor(train, inception)
    generator = torch.Generator().manual_seed(seed)

    real_ref = real_features(reference_split, reference, extractor, use_cache=use_cache)
    real_ref = real_ref.subset(seeded_subset(len(real_ref), MAX_REFERENCE, generator))
    generated = None
    if samples is None:
        count = n or min(DEFAULT_N, len(real_ref))
        if run is not None:
            check_shape(run.model.data.image_shape, train, f"{run.path}'s images")
            generated = draw(run, count, seed, sample_options or {})
    else:
        check_shape(samples.image_shape, train, "the samples")
        count = n or min(DEFAULT_N, len(samples))
        if count > len(samples):
            raise GenlabError(f"--n {count} asks for more images than the {len(samples):,} in {samples.name}; "
                              f"pass --n {len(samples)} or fewer")  # fmt: skip
        index = seeded_subset(len(samples), count, torch.Generator().manual_seed(seed))
        labels = None if samples.labels is None else samples.labels[index]
        origin = {"kind": "samples", "path": samples.name.partition(":")[2], "fingerprint": fingerprint(samples)}
        generated = Generated(samples.images[index], labels, origin)
    held = real_features(held_out_split, "train" if reference == "test" else "test", extractor, use_cache=use_cache)
    held = held.subset(seeded_subset(len(held), count, generator))

    result = Evaluation(info={
        "source": generated.source if generated is not None else {"kind": "real-vs-real"},
        "data": {"spec": data, "size": size, "reference": reference, "fingerprint": fingerprint(train, test)},
        "extractor": {"name": extractor.name, "sha256": extractor.sha256, "feature_dim": extractor.feature_dim},
        "counts": {"samples": count if generated is not None else 0, "reference": len(real_ref), "held_out": len(held),
                   "train": len(train), "test": len(test)},
        "seed": seed, "metrics_selected": list(selected),
    })  # fmt: skip
    setting = Setting(train, test, seed, extractor, real_ref, cas_steps, use_cache, real_shares, augmentation_steps)
    skipped: dict[str, str] = {}
    floor_names = selected
    if generated is not None:
        samples_measured = Subject(sample_features(extractor, generated.images, generated.labels), generated)
        measured = measure(selected, setting, samples_measured)
        result.metrics, result.details, result.pair_images = measured.flat(), measured.details, measured.pair_images
        skipped = measured.skipped
        floor_names = tuple(name for name in measured.found if METRICS[name].floor)  # the floor of what was measured
    key = [result.info["data"]["fingerprint"], reference, len(held), len(real_ref), seed, extractor.sha256, cas_steps,
           SMALL_CLASSIFIER.key()]  # fmt: skip
    known = read_floor(key) if use_cache else {}
    floor = measure(floor_names, setting, Subject(held), known)
    if use_cache and set(floor.found) - set(known):
        write_floor(key, floor.found)
    result.floor = floor.flat()
    result.skipped = {**skipped, **floor.skipped}
    result.info["seconds"] = round(time.perf_counter() - started, 2)
    return result


def check_augmentation(
    run: Run | None, samples: ImageDataset | None, train: ImageDataset, shares: Sequence[float]
) -> None:
    """The augmentation measure's inputs: labelled samples of the data's classes, real sets of every class."""
    if run is not None and not run.model.conditional:
        raise GenlabError(
            f"the augmentation measure adds labelled samples to real ones; {run.name} is not conditional: train a "
            f"model that draws a class on demand (genlab train {run.family} --conditional ...)"
        )
    if samples is not None:
        if samples.labels is None:
            raise GenlabError(f"the augmentation measure needs labelled samples: {samples.name} has no `labels` array")
        check_sample_labels(samples.labels, train.num_classes, f"{samples.name}'s")
    if train.labels is None:
        raise GenlabError(f"the augmentation measure needs labelled real data; {train.name} has no labels")
    for share in shares:
        stratified_counts(train.labels, share, train.num_classes, f"{train.name}'s {len(train):,} training images")


def _likelihood_only(
    run: Run | None, train: ImageDataset, test: ImageDataset, data: str, size: Any, seed: int, started: float
) -> Evaluation:
    """`--metrics nll` alone: the bound or exact likelihood of the test split, on any image shape."""
    if run is None:
        raise GenlabError("nll needs a run of a likelihood family; images from a file carry no likelihood")
    check_shape(run.model.data.image_shape, train, f"{run.path}'s images")
    result = Evaluation(info={
        "source": run_source(run),
        "data": {"spec": data, "size": size, "reference": "test", "fingerprint": fingerprint(train, test)},
        "extractor": None, "seed": seed, "metrics_selected": ["nll"],
    })  # fmt: skip
    nothing_drawn = torch.empty((0, *run.model.data.image_shape), dtype=torch.uint8)
    subject = Subject(None, Generated(nothing_drawn, None, result.info["source"], run))
    measured = measure(("nll",), Setting(train, test, seed, cas_steps=0, use_cache=False), subject)
    result.metrics, result.details, result.skipped = measured.flat(), measured.details, measured.skipped
    result.info["counts"] = {"samples": 0, "reference": 0, "held_out": 0, "train": len(train), "test": len(test)}
    result.info["seconds"] = round(time.perf_counter() - started, 2)
    return result


def write_results(result: Evaluation, folder: str | Path) -> dict[str, Path]:
    """metrics.json (and memorization.png with the closest pairs) into `folder`, atomically.

    `folder` is the evaluated run, or a folder of no other run that holds nothing else
    (genlab.outputs.EVAL_FOLDER); otherwise GenlabError before anything is written.
    """
    from genlab.images import save_grid
    from genlab.io import atomic_write_json
    from genlab.outputs import EVAL_FOLDER, check_output, naming
    from genlab.run import METRICS_FILE, PAIRS_FILE

    source = result.info.get("source") or {}
    folder = check_output(folder, EVAL_FOLDER, run=source.get("path") if source.get("kind") == "run" else None)
    written = {}
    document = result.to_dict()
    with naming(folder):
        folder.mkdir(parents=True, exist_ok=True)
    if result.pair_images is not None:
        strip = result.pair_images
        with naming(folder / PAIRS_FILE):
            written["memorization"] = save_grid(strip.float() / 255, folder / PAIRS_FILE, nrow=len(strip) // 2)
        document["details"]["memorization"] = {**document["details"]["memorization"], "pairs_png": PAIRS_FILE}
    with naming(folder / METRICS_FILE):
        atomic_write_json(folder / METRICS_FILE, document)
    written["metrics"] = folder / METRICS_FILE
    return written
