"""Does a generator's labelled output help a classifier that has little real data? (`--metrics augmentation`)

For each real-set size (a stratified, seeded share of the training split) the same small classifier
(`SMALL_CLASSIFIER`, CAS's recipe) is trained on

- the real subset alone (the floor),
- the real subset plus `ratio` times as many synthetic images, balanced per class (for each ratio),
- the real subset plus as many *more real* training images (the ceiling, where the split holds them),

and tested on the real test split, `SEEDS` times with different subsets and initialisations. Each cell is
the mean and standard deviation of those accuracies; the gain is synthetic minus real-only, and the share
recovered is (synthetic − real-only) / (more real − real-only): how much of what more real data would give
the samples give. A verdict ("helps", "hurts") is given where the 95% t-intervals of the two means do not
overlap, and none where they do.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from genlab.data import ImageDataset
from genlab.errors import GenlabError
from genlab.eval.features import SMALL_CLASSIFIER, accuracy

REAL_SHARES = (0.01, 0.05, 0.10, 0.25)  # real-set sizes, as shares of the training split
RATIOS = (1, 4)  # synthetic images added, per real image
SEEDS = 3
T_975 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, 97.5% quantile, by degrees of freedom

# Draws more labelled samples: (labels (N,)) -> uint8 images (N, C, H, W); None for samples from a file.
DrawMore = Callable[[torch.Tensor], torch.Tensor]


def parse_shares(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """Real-set sizes from "1,5,10,25" (percent of the training split) or shares in (0, 1]."""
    if text is None:
        return REAL_SHARES
    if isinstance(text, str):
        try:
            values = [float(part) / 100 for part in text.split(",") if part.strip()]
        except ValueError:
            raise GenlabError(f"--real-sizes must be percentages like 1,5,10,25; got {text!r}") from None
    else:
        values = [float(value) for value in text]
    if not values or any(not math.isfinite(value) or not 0 < value <= 1 for value in values):
        raise GenlabError(f"--real-sizes must be percentages of the training split in (0, 100]; got {text!r}")
    return tuple(sorted(set(values)))


def check_sample_labels(labels: torch.Tensor, num_classes: int, whose: str) -> None:
    """A GenlabError unless every label is a class of the data, 0 to num_classes - 1."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise GenlabError(
            f"{whose} labels run from {int(labels.min())} to {int(labels.max())}; the data's classes are 0 to "
            f"{num_classes - 1}"
        )


def stratified_counts(labels: torch.Tensor, share: float, num_classes: int, what: str) -> list[int]:
    """Images per class in a `share` of a set with these labels (at least one per class, or a GenlabError)."""
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    wanted = [round(share * count) for count in counts]
    empty = [k for k, count in enumerate(wanted) if count == 0]
    if empty:
        raise GenlabError(
            f"a real set of {share:.0%} of {what} ({sum(wanted):,} images) holds no image of class "
            f"{', '.join(map(str, empty[:5]))}: every class needs one; ask for larger sizes (--real-sizes)"
        )
    return wanted


def pick_per_class(
    labels: torch.Tensor, counts: Sequence[int], generator: torch.Generator, exclude: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Indices of counts[k] images of each class k, drawn without replacement (none from `exclude`); None where
    some class has too few."""
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    chosen = []
    for k, count in enumerate(counts):
        pool = torch.nonzero((labels == k) & allowed).flatten()
        if len(pool) < count:
            return None
        chosen.append(pool[torch.randperm(len(pool), generator=generator)[:count]])
    return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)


def summary(accuracies: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and the single runs of a cell."""
    return {
        "mean": statistics.fmean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "runs": accuracies,
    }


def interval(cell: dict[str, Any]) -> tuple[float, float]:
    """The 95% t-interval of a cell's mean."""
    runs = len(cell["runs"])
    if runs < 2:
        return cell["mean"], cell["mean"]
    half = T_975.get(runs - 1, 1.96) * cell["std"] / math.sqrt(runs)
    return cell["mean"] - half, cell["mean"] + half


def verdict(real_only: dict[str, Any], synthetic: dict[str, Any]) -> str | None:
    """ "helps" or "hurts" where the two 95% intervals do not overlap, else None."""
    (low, high), (syn_low, syn_high) = interval(real_only), interval(synthetic)
    if syn_low > high:
        return "helps"
    if syn_high < low:
        return "hurts"
    return None


def measure_augmentation(
    train: ImageDataset,
    test: ImageDataset,
    samples: torch.Tensor,
    sample_labels: torch.Tensor,
    *,
    seed: int,
    shares: Sequence[float] = REAL_SHARES,
    ratios: Sequence[int] = RATIOS,
    seeds: int = SEEDS,
    steps: int | None = None,
    draw_more: DrawMore | None = None,
) -> dict[str, Any]:
    """The augmentation grid (see the module's docstring) for uint8 `samples` (N, C, H, W) with `sample_labels`.

    Where a cell needs more samples of a class than given, `draw_more` draws the shortfall (a run); without it
    (a file) the cell is left out, saying how many it needs. `steps` overrides the classifier's steps (tests).
    """
    if train.labels is None or test.labels is None:
        raise GenlabError("the augmentation measure needs labelled real data (a train and a test split with labels)")
    num_classes = train.num_classes
    sample_labels = sample_labels.long().cpu()
    check_sample_labels(sample_labels, num_classes, "the samples'")
    started = time.perf_counter()
    plans = [(share, stratified_counts(train.labels, share, num_classes, "the training split")) for share in shares]
    # the synthetic pool: enough of each class for the largest cell, drawn now where a run can draw more
    needed = [max(max(ratios) * counts[k] for _, counts in plans) for k in range(num_classes)]
    have = torch.bincount(sample_labels, minlength=num_classes).tolist()
    drawn = 0
    if draw_more is not None and any(n > h for n, h in zip(needed, have, strict=True)):
        extra = torch.cat([torch.full((max(0, n - h),), k) for k, (n, h) in enumerate(zip(needed, have, strict=True))])
        samples = torch.cat([samples.cpu(), draw_more(extra).cpu()])
        sample_labels = torch.cat([sample_labels, extra])
        drawn = len(extra)
    draw_seconds = time.perf_counter() - started
    recipe = SMALL_CLASSIFIER if steps is None else SMALL_CLASSIFIER.with_steps(steps)

    test_labels = test.labels

    def trained_accuracy(images: torch.Tensor, labels: torch.Tensor, run_seed: int) -> float:
        classifier = recipe.train(images, labels, num_classes, seed=run_seed)
        return accuracy(classifier, test.images, test_labels)

    rows = []
    for row_index, (share, counts) in enumerate(plans):
        real_runs: list[float] = []
        synthetic_runs: dict[int, list[float] | str] = {ratio: [] for ratio in ratios}
        more_runs: dict[int, list[float] | str] = {ratio: [] for ratio in ratios}
        for repeat in range(seeds):
            run_seed = seed * 1_000_003 + 1_000 * row_index + repeat
            generator = torch.Generator().manual_seed(run_seed)
            real = pick_per_class(train.labels, counts, generator)
            assert real is not None  # stratified_counts: each count is at most the class's images
            real_images, real_labels = train.images[real], train.labels[real]
            real_runs.append(trained_accuracy(real_images, real_labels, run_seed))
            for ratio in ratios:
                added = balanced_counts(ratio * sum(counts), num_classes)
                chosen = pick_per_class(sample_labels, added, generator)
                if chosen is None:
                    synthetic_runs[ratio] = shortfall(added, sample_labels, num_classes)
                elif isinstance(synthetic_runs[ratio], list):
                    images = torch.cat([real_images, samples[chosen]])
                    labels = torch.cat([real_labels, sample_labels[chosen]])
                    synthetic_runs[ratio].append(trained_accuracy(images, labels, run_seed))  # type: ignore[union-attr]
                more = pick_per_class(train.labels, [ratio * count for count in counts], generator, exclude=real)
                if more is None:
                    more_runs[ratio] = (
                        f"the training split holds too few more real images ({ratio}x {sum(counts):,} needed)"
                    )
                elif isinstance(more_runs[ratio], list):
                    images = torch.cat([real_images, train.images[more]])
                    labels = torch.cat([real_labels, train.labels[more]])
                    more_runs[ratio].append(trained_accuracy(images, labels, run_seed))  # type: ignore[union-attr]
        rows.append(grid_row(share, sum(counts), summary(real_runs), synthetic_runs, more_runs, ratios))
    return {
        "classifier": recipe.describe(),
        "shares": list(shares),
        "ratios": list(ratios),
        "seeds": seeds,
        "train_images": len(train),
        "test_images": len(test),
        "rows": rows,
        "samples_drawn_for_it": drawn,
        "draw_seconds": round(draw_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }


def balanced_counts(total: int, num_classes: int) -> list[int]:
    """`total` split as evenly as the classes allow (the first classes take the remainder)."""
    return [total // num_classes + (1 if k < total % num_classes else 0) for k in range(num_classes)]


def shortfall(wanted: Sequence[int], labels: torch.Tensor, num_classes: int) -> str:
    """Why a cell cannot be measured from the samples given: the class short of samples."""
    have = torch.bincount(labels, minlength=num_classes).tolist()
    k = next(k for k in range(num_classes) if have[k] < wanted[k])
    return f"needs {wanted[k]:,} samples of class {k}; the samples hold {have[k]:,} (draw more: --n)"


def grid_row(
    share: float,
    real_images: int,
    real_only: dict[str, Any],
    synthetic_runs: dict[int, list[float] | str],
    more_runs: dict[int, list[float] | str],
    ratios: Sequence[int],
) -> dict[str, Any]:
    """One real-set size: its cells, gains, shares recovered and verdicts, by ratio (keys "1", "4")."""
    row: dict[str, Any] = {"share": share, "real_images": real_images, "real_only": real_only,
                           "synthetic": {}, "more_real": {}, "gain": {}, "recovered": {}, "verdict": {}}  # fmt: skip
    for ratio in ratios:
        key = str(ratio)
        synthetic, more = synthetic_runs[ratio], more_runs[ratio]
        row["synthetic"][key] = synthetic if isinstance(synthetic, str) else summary(synthetic)
        row["more_real"][key] = more if isinstance(more, str) else summary(more)
        if isinstance(synthetic, str):
            row["gain"][key] = row["recovered"][key] = row["verdict"][key] = None
            continue
        gain = row["synthetic"][key]["mean"] - real_only["mean"]
        row["gain"][key] = gain
        row["verdict"][key] = verdict(real_only, row["synthetic"][key])
        ceiling = None if isinstance(more, str) else row["more_real"][key]["mean"] - real_only["mean"]
        row["recovered"][key] = gain / ceiling if ceiling is not None and ceiling > 1e-9 else None
    return row


def headline(grid: dict[str, Any]) -> dict[str, float]:
    """The metrics table's two numbers: at the first ratio, the mean gain over the sizes and the mean share of
    the real-data gain recovered (over the sizes where both are measured)."""
    key = str(grid["ratios"][0])
    gains = [row["gain"][key] for row in grid["rows"] if row["gain"][key] is not None]
    recovered = [row["recovered"][key] for row in grid["rows"] if row["recovered"][key] is not None]
    found = {}
    if gains:
        found["augmentation_gain"] = statistics.fmean(gains)
    if recovered:
        found["augmentation_recovered"] = statistics.fmean(recovered)
    return found


def augmentation_table(grid: dict[str, Any]) -> str:
    """The grid as a text table: accuracy (mean ± std over the seeds) per real-set size and arm."""

    def cell(value: dict[str, Any] | str) -> str:
        return "-" if isinstance(value, str) else f"{value['mean']:.3f} ± {value['std']:.3f}"

    header = ["real images", "real only"]
    for ratio in grid["ratios"]:
        header += [f"+{ratio}x synthetic", f"+{ratio}x real (ceiling)", "gain", "recovered"]
    lines = []
    for row in grid["rows"]:
        cells = [f"{row['real_images']:,} ({row['share']:.0%})", cell(row["real_only"])]
        for ratio in grid["ratios"]:
            key = str(ratio)
            gain, recovered, said = row["gain"][key], row["recovered"][key], row["verdict"][key]
            cells += [
                cell(row["synthetic"][key]),
                cell(row["more_real"][key]),
                "-" if gain is None else f"{gain:+.3f}" + (f" ({said})" if said else ""),
                "-" if recovered is None else f"{recovered:.0%}",
            ]
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    text = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text.append("-+-".join("-" * w for w in widths))
    text += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    notes = sorted({value for row in grid["rows"] for arm in ("synthetic", "more_real")
                    for value in row[arm].values() if isinstance(value, str)})  # fmt: skip
    return (
        f"Augmentation: test accuracy of {grid['classifier']}, mean ± std over {grid['seeds']} seeds, "
        f"trained on a share of the {grid['train_images']:,} training images, alone, with synthetic images, "
        f"and with more real ones ({grid['seconds']:.0f} s)\n"
        + "\n".join(text)
        + "".join(f"\n- {note}" for note in notes)
    )


def observe_augmentation(grid: dict[str, Any] | None) -> list[str]:
    """Sentences on where samples help or hurt a small real set (the 95% intervals apart), one per verdict."""
    if not grid:
        return []
    found = []
    for said in ("helps", "hurts"):
        where = [(row, key) for row in grid["rows"] for key, value in row["verdict"].items() if value == said]
        if where:
            cells = ", ".join(
                f"{row['real_images']:,} real + {key}x synthetic: {row['real_only']['mean']:.3f} -> "
                f"{row['synthetic'][key]['mean']:.3f}"
                for row, key in where
            )
            found.append(f"samples {'help' if said == 'helps' else 'hurt'} a small real set ({cells})")
    return found


def write_augmented(
    run: Any, per_class: int, out: str | Path, *, seed: int = 0, **sample_options: Any
) -> tuple[Path, float]:
    """`per_class` samples of every class of a conditional run (a Run, a run folder or zoo:NAME), drawn with
    `seed` in class order and written to `out` as an .npz with their labels and class names (npz:PATH loads
    it); (the file, the seconds the drawing took). Refuses an unconditional run and any file the write could
    clobber, before drawing."""
    from genlab.images import save_npz
    from genlab.outputs import NPZ_ARRAYS, check_output
    from genlab.run import Run

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0:
        raise GenlabError(f"--per-class must be a positive number of samples, got {per_class!r}")
    loaded = run if isinstance(run, Run) else Run.load(run)
    loaded.require_images("genlab augment")
    model = loaded.model
    if not model.conditional:
        raise GenlabError(
            f"{loaded.name} is not conditional: augmenting a labelled training set needs samples of a class on "
            f"demand; train one with --conditional (genlab train {loaded.family} --conditional ...)"
        )
    path = check_output(out, dataclasses.replace(NPZ_ARRAYS, writer="genlab augment"), run=loaded.path)
    classes = model.data.num_classes
    loaded.check_size(classes * per_class, hint="ask for fewer samples of each class (--per-class)")
    labels = torch.arange(classes).repeat_interleave(per_class)  # (classes * per_class,): class by class
    started = time.perf_counter()
    images = loaded.sample(len(labels), generator=torch.Generator().manual_seed(seed), labels=labels, **sample_options)
    seconds = time.perf_counter() - started
    return save_npz(images, path, labels, model.data.class_names), seconds
