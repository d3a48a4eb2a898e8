"""Observations on a training history: computed rules, never canned text.

Each rule reads only the history records up to the epoch it comments on, so the sentence
beside epoch 5 is what could be said at epoch 5.

A family picks its rules with its declared class attribute ``observer`` (`GenerativeModel`):
``"loss"`` (the default) follows one loss, ``monitor``, lower being better (`observe`);
``"contest"`` reads a GAN's discriminator/generator contest (`observe_contest`).
`observe_history` dispatches between them.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, TypeGuard

OBSERVERS = ("loss", "contest")  # the values a family's `observer` attribute may take


class TracedFamily(Protocol):
    """What the trace, its observations and the report read of a family class (`GenerativeModel` declares all three)."""

    trace_columns: ClassVar[tuple[tuple[str, str], ...]]  # (history key, column title) after Epoch
    monitor: ClassVar[str]  # the history key whose trend the observations follow (lower is better)
    observer: ClassVar[str]  # which rules comment on the trace: one of OBSERVERS


CONVERGED_CHANGE = 0.01  # relative change under 1% ...
CONVERGED_WINDOW = 3  # ... over this many epochs counts as converged
OVERFIT_EPOCHS = 2  # test loss up while train loss down for this many epochs in a row


def _relative_change(new: float, old: float) -> float:
    return (new - old) / abs(old) if old else 0.0


def _label(key: str) -> str:
    return key.replace("_", " ")


def observe(history: Sequence[dict[str, Any]], monitor: str = "loss", train_key: str = "loss") -> list[str]:
    """One observation per epoch of `history`, following the `monitor` key (lower is better)."""
    return [observe_epoch(history[: i + 1], monitor, train_key) for i in range(len(history))]


def observe_epoch(history: Sequence[dict[str, Any]], monitor: str = "loss", train_key: str = "loss") -> str:
    """The observation for the last record of `history`.

    A run that validates every few epochs (`--validate-every`) has the monitored test number in some records only:
    the rules then compare the tests there are, and say which epoch a change is measured from."""
    if monitor not in history[-1]:
        monitor = train_key
    if not _finite(history[-1].get(monitor)) and not _non_finite(history[-1].get(monitor)):
        return f"no {_label(monitor)} recorded this epoch"  # a history written by hand, or by another family
    points = [(record.get("epoch", i + 1), record[monitor]) for i, record in enumerate(history) if monitor in record]
    epoch, current = points[-1]
    name = _label(monitor)
    if not math.isfinite(current):
        return f"{name} is {current}: training diverged"
    if len(points) == 1:
        return f"starts learning: {name} {current:.4g}"
    if monitor != train_key and _overfitting(history, monitor, train_key):
        tested = [record for record in history if monitor in record and train_key in record]
        spread = tested[-1].get("epoch", 0) - tested[-1 - OVERFIT_EPOCHS].get("epoch", 0) != OVERFIT_EPOCHS
        return (
            f"overfitting: {name} rose {OVERFIT_EPOCHS} {'tests' if spread else 'epochs'} in a row "
            f"while {_label(train_key)} fell"
        )
    if len(points) > CONVERGED_WINDOW:
        then, old = points[-1 - CONVERGED_WINDOW]
        change = _relative_change(current, old)
        if abs(change) < CONVERGED_CHANGE:
            return f"converged: {name} changed {change:+.1%} over {epoch - then} epochs"
    then, old = points[-2]
    change = _relative_change(current, old)
    since = "since the last epoch" if epoch - then == 1 else f"since epoch {then}"
    if change < 0:
        return f"still improving: {name} {change:+.1%} {since}"
    return f"{name} rose {change:+.1%} {since}"


def _overfitting(history: Sequence[dict[str, Any]], monitor: str, train_key: str) -> bool:
    """Test loss rising while train loss falls, OVERFIT_EPOCHS times in a row: over the last epochs, or over the last
    tests of a run that validates every few epochs."""
    if monitor not in history[-1]:
        return False
    tested = [record for record in history if monitor in record and train_key in record]
    recent = tested[-(OVERFIT_EPOCHS + 1) :]
    if len(recent) < OVERFIT_EPOCHS + 1:
        return False
    pairs = list(zip(recent, recent[1:]))
    return all(b[monitor] > a[monitor] and b[train_key] < a[train_key] for a, b in pairs)


def observer_of(model_class: type[TracedFamily]) -> str:
    """The family's observer: its declared `observer` class attribute ("loss" unless a family says otherwise)."""
    return model_class.observer


def observe_with(history: Sequence[dict[str, Any]], observer: str = "loss", monitor: str = "loss") -> list[str]:
    """One observation per epoch of `history`, by the rules `observer` names ("loss" or "contest")."""
    if observer == "loss":
        return observe(history, monitor)
    if observer == "contest":
        return observe_contest(history)
    raise ValueError(f"unknown observer {observer!r}; expected one of {', '.join(OBSERVERS)}")


def observe_history(history: Sequence[dict[str, Any]], model_class: type[TracedFamily]) -> list[str]:
    """One observation per epoch of `history`, by the rules the family `model_class` chose."""
    return observe_with(history, model_class.observer, model_class.monitor)


# --- The "contest" rules: a GAN's discriminator (D) against its generator (G). ---------------
#
# The history contract, one record per epoch (averages over the epoch's steps): d_loss,
# g_loss, d_accuracy (share of real and fake images D classifies correctly; for WGAN-GP the
# share of (real, fake) pairs the critic ranks correctly), d_real, d_fake (mean D output on
# real / fake images: a probability, or the raw critic value for WGAN-GP), d_grad_norm,
# g_grad_norm, optional wasserstein (WGAN-GP: E[critic(real)] - E[critic(fake)]), diversity
# (mean pairwise L2 distance between generated images over that between real test images) and,
# every few epochs, fid, precision, recall. Any key may be missing from a record.

# Healthy samples are about as spread out as real data (diversity ~1); a generator collapsing
# onto a few modes drives it toward 0. Half leaves room for the noise of a small validation set.
COLLAPSE_DIVERSITY = 0.5
# Low recall with decent precision: the samples look real but cover little of the real data,
# the precision/recall signature of mode collapse (recall, unlike diversity, needs --eval-every).
COLLAPSE_RECALL = 0.1
COLLAPSE_PRECISION = 0.5
# A discriminator right about nearly every image for several epochs gives the generator
# almost no gradient to learn from (saturated loss); one such epoch alone can be a blip.
DOMINANT_ACCURACY = 0.95
DOMINANT_EPOCHS = 3
# A generator loss that keeps rising is losing the contest. For the cross-entropy losses
# (positive, scale-free) require it to be over twice its best; WGAN-GP's loss is a raw critic
# value, of any sign and scale, so there require the rise to be large against the loss's usual
# epoch-to-epoch movement instead (the median absolute change before the rising epochs, of
# which at least G_BASELINE_CHANGES are needed: a median of fewer is noise).
G_RISE_EPOCHS = 3
G_RISE_FACTOR = 2.0
G_BASELINE_CHANGES = 2


def observe_contest(history: Sequence[dict[str, Any]]) -> list[str]:
    """One observation per epoch of a GAN's `history`, by the contest rules."""
    return [observe_contest_epoch(history[: i + 1]) for i in range(len(history))]


def observe_contest_epoch(history: Sequence[dict[str, Any]]) -> str:
    """The contest observation for the last record of `history`.

    Rules, first match wins: a non-finite D or G loss; the first epoch; mode collapse
    suspected; the discriminator dominating; the generator loss diverging; a FID change;
    otherwise the contest is balanced.
    """
    record = history[-1]
    bad = [f"{key} is {record[key]}" for key in ("d_loss", "g_loss") if _non_finite(record.get(key))]
    if bad:
        return f"training diverged: {', '.join(bad)}"
    if len(history) == 1:
        return f"starts learning: {_contest_numbers(record)}"
    collapse = _collapse(history)
    if collapse:
        return f"mode collapse suspected: {collapse}"
    accuracies = [r.get("d_accuracy") for r in history[-DOMINANT_EPOCHS:]]
    if len(accuracies) == DOMINANT_EPOCHS and all(_finite(a) and a >= DOMINANT_ACCURACY for a in accuracies):
        listed = ", ".join(f"{a:.2f}" for a in accuracies)
        return f"discriminator dominating: D accuracy {listed} over the last {DOMINANT_EPOCHS} epochs"
    diverging = _g_diverging(history)
    if diverging:
        return f"generator loss diverging: {diverging}"
    balanced = f"contest balanced: {_contest_numbers(record, history)}"
    if _finite(record.get("fid")):
        earlier = [(i, r["fid"]) for i, r in enumerate(history[:-1]) if _finite(r.get("fid"))]
        if earlier:
            i, old = earlier[-1]
            change = _relative_change(record["fid"], old)
            return f"FID {record['fid']:.3g} ({change:+.0%} since epoch {_epoch(history, i)}); {balanced}"
    return balanced


def _finite(value: Any) -> TypeGuard[float]:
    """A real number (an int counts) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _non_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isfinite(value)


def _epoch(history: Sequence[dict[str, Any]], i: int) -> Any:
    return history[i].get("epoch", i + 1)


def _contest_numbers(record: dict[str, Any], history: Sequence[dict[str, Any]] | None = None) -> str:
    """D accuracy and D's outputs (or the Wasserstein estimate) from `record`, as far as present."""
    parts = []
    if _finite(record.get("d_accuracy")):
        parts.append(f"D accuracy {record['d_accuracy']:.2f}")
    if _finite(record.get("wasserstein")):
        parts.append(_wasserstein(record["wasserstein"], history or []))
    else:
        parts += _present(record, (("d_real", "D(real)"), ("d_fake", "D(fake)")))
    if not parts:  # a record with the losses only
        parts = _present(record, (("d_loss", "D loss"), ("g_loss", "G loss")))
    return ", ".join(parts) or "no D/G numbers recorded"


def _present(record: dict[str, Any], keys: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"{title} {record[key]:.3g}" for key, title in keys if _finite(record.get(key))]


def _wasserstein(current: float, history: Sequence[dict[str, Any]]) -> str:
    """The Wasserstein estimate and its trend since the previous record that had one."""
    earlier = [r["wasserstein"] for r in history[:-1] if _finite(r.get("wasserstein"))]
    if not earlier:
        return f"Wasserstein estimate {current:.3g}"
    trend = "falling" if current < earlier[-1] else "rising" if current > earlier[-1] else "unchanged"
    return f"Wasserstein estimate {current:.3g} ({trend} from {earlier[-1]:.3g})"


def _collapse(history: Sequence[dict[str, Any]]) -> str:
    """Why mode collapse is suspected at the last record, or "" if it is not.

    Diversity is measured every epoch, so only the last record's counts; precision and recall
    come every few epochs, so the latest measurement so far counts (its epoch named if older).
    """
    diversity = history[-1].get("diversity")
    if _finite(diversity) and diversity < COLLAPSE_DIVERSITY:
        return f"samples are {diversity:.2f} of real data's diversity"
    measured = [i for i, r in enumerate(history) if _finite(r.get("precision")) and _finite(r.get("recall"))]
    if measured:
        i = measured[-1]
        precision, recall = history[i]["precision"], history[i]["recall"]
        if recall < COLLAPSE_RECALL and precision > COLLAPSE_PRECISION:
            when = "" if i == len(history) - 1 else f" at epoch {_epoch(history, i)}"
            return (
                f"recall {recall:.2f} with precision {precision:.2f}{when}:"
                " samples look real but cover little of the data"
            )
    return ""


def _g_diverging(history: Sequence[dict[str, Any]]) -> str:
    """Why the generator loss is diverging at the last record, or "" if it is not."""
    recent = history[-(G_RISE_EPOCHS + 1) :]
    if len(recent) < G_RISE_EPOCHS + 1 or not all(_finite(r.get("g_loss")) for r in recent):
        return ""
    losses = [r["g_loss"] for r in recent]
    if not all(b > a for a, b in itertools.pairwise(losses)):
        return ""
    so_far = [r["g_loss"] for r in history if _finite(r.get("g_loss"))]
    current = losses[-1]
    rose = f"g_loss rose {G_RISE_EPOCHS} epochs in a row"
    wasserstein = any("wasserstein" in r for r in history)
    if not wasserstein and min(so_far) > 0:
        best = min(so_far)
        if current > G_RISE_FACTOR * best:
            return f"{rose} to {current:.3g}, {current / best:.1f}x its minimum {best:.3g}"
        return ""
    # WGAN-GP, or a loss that went non-positive: compare the rise with the usual movement
    before = [r["g_loss"] for r in history[:-G_RISE_EPOCHS] if _finite(r.get("g_loss"))]
    changes = [abs(b - a) for a, b in itertools.pairwise(before)]
    if len(changes) < G_BASELINE_CHANGES:
        return ""
    typical = statistics.median(changes)
    rise = current - losses[0]
    if rise > G_RISE_FACTOR * typical:
        return f"{rose} by {rise:.3g} in all, over {G_RISE_FACTOR:g}x its typical epoch change {typical:.3g}"
    return ""


# --- The "evaluation" rules: what `genlab eval`'s numbers say, each against its real-vs-real floor. ---
#
# metrics and floor are metrics.json's "metrics" and "floor" (genlab.eval.evaluate); the
# floor is the same measurement with held-out real images in place of samples, so a rule
# fires only where samples do clearly worse than real data would.

# Memorization (DESIGN.md: Alaa et al. 2022; Gu et al. 2023): held-out real images fall under
# the copy threshold at its quantile (5%) by construction; samples at twice that share and at
# least COPY_EXCESS above it are nearer the training set than new real images are.
COPY_FACTOR = 2.0
COPY_EXCESS = 0.02
# The ratio test d1/d2 < 1/3 flags near-duplicates; real held-out images almost never pass it.
RATIO_TEST_EXCESS = 0.01
# Samples that coincide with the reference images (the same per-class threshold, against the set they are
# compared with): held-out real images rarely do; samples at twice their share and at least
# REFERENCE_COPY_EXCESS above it make FID and the other reference metrics meaningless.
REFERENCE_COPY_EXCESS = 0.05


def _well_above(share: Any, real_share: Any, excess: float) -> bool:
    """A share of samples at least COPY_FACTOR times its real-vs-real floor and `excess` above it."""
    return _finite(share) and _finite(real_share) and share >= COPY_FACTOR * real_share and share - real_share >= excess


def observe_metrics(metrics: dict[str, Any], floor: dict[str, Any] | None = None) -> list[str]:
    """Sentences on an evaluation: samples copying training images, mode collapse. Empty when none applies."""
    floor = floor or {}
    found = []
    copies, real_copies = metrics.get("copy_share"), floor.get("copy_share")
    if _well_above(copies, real_copies, COPY_EXCESS):
        found.append(
            f"samples copying training images: {copies:.1%} of samples lie as close to a training image "
            f"as only {real_copies:.1%} of held-out real images do"
        )
    ratio, real_ratio = metrics.get("ratio_test_share"), floor.get("ratio_test_share", 0.0)
    if _finite(ratio) and _finite(real_ratio) and ratio - real_ratio >= RATIO_TEST_EXCESS:
        found.append(
            f"samples copying training images: {ratio:.1%} pass the near-duplicate ratio test "
            f"d1/d2 < 1/3 (held-out real images: {real_ratio:.1%})"
        )
    coincide, real_coincide = metrics.get("reference_copy_share"), floor.get("reference_copy_share")
    if _well_above(coincide, real_coincide, REFERENCE_COPY_EXCESS):
        found.append(
            f"samples coincide with the reference images: {coincide:.1%} of samples lie as close to a reference "
            f"image as only {real_coincide:.1%} of held-out real images do; FID against them means nothing"
        )
    # classes_covered counts only classes beyond what the classifier's own misreadings of the other classes
    # would give (eval.metrics.mode_coverage), so a collapsed generator's misread samples are no modes here
    covered, classes = metrics.get("classes_covered"), metrics.get("num_classes")
    if _finite(covered) and _finite(classes) and covered < classes:
        found.append(f"mode collapse suspected: samples cover {covered:g} of {classes:g} classes")
    recall, precision = metrics.get("recall"), metrics.get("precision")
    if _finite(recall) and _finite(precision) and recall < COLLAPSE_RECALL and precision > COLLAPSE_PRECISION:
        found.append(_low_recall(recall, precision, covered, classes))
    return found


def _low_recall(recall: float, precision: float, covered: Any, classes: Any) -> str:
    """The sentence for samples that look real (precision) yet cover little of the data (recall).

    Precision and recall alone cannot tell a collapsed generator from a blurred one: both put every
    sample in a small region of the extractor's feature space. Class coverage can, where measured:
    samples of every class are not a collapse onto a few modes, but too little variety within each.
    """
    numbers = f"recall {recall:.3f} with precision {precision:.3f}"
    if _finite(covered) and _finite(classes) and covered >= classes:
        return (
            f"little variety within classes: {numbers}, though samples cover all {classes:g} classes "
            "(blurred or near-identical samples of each class; the sample grid shows which)"
        )
    return (
        f"mode collapse suspected: {numbers} (the samples look real but cover little of the data; "
        "blurred samples give the same signature, the sample grid tells them apart)"
    )
