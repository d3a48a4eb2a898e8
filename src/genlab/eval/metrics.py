"""Sample-quality metrics as pure functions over feature tensors, plus two accumulators.

Every function takes features (N, D) from one extractor (real first where the metric is not
symmetric), computes in float64, and depends only on the sets, never on how they were batched.
Pairwise distances are computed in row blocks, so 10,000 x 10,000 (or 10,000 x 60,000) fits
in memory. References:

- FID: Heusel et al. 2017, "GANs trained by a two time-scale update rule ..." (arXiv:1706.08500).
- KID: Bińkowski et al. 2018, "Demystifying MMD GANs" (arXiv:1801.01401).
- Precision/recall: Kynkäänniemi et al. 2019, "Improved precision and recall metric ..." (arXiv:1904.06991).
- Density/coverage: Naeem et al. 2020, "Reliable fidelity and diversity metrics ..." (arXiv:2002.09797).
- Authenticity: Alaa et al. 2022, "How faithful is your synthetic data?" (arXiv:2102.08921).
- Ratio test d1/d2 < 1/3: Gu et al. 2023, "On memorization in diffusion models" (arXiv:2310.02664).
- Inception score: Salimans et al. 2016, "Improved techniques for training GANs" (arXiv:1606.03498).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from genlab.errors import GenlabError

# float64 entries of one block of the pairwise-distance matrix (64 MiB): bounds memory, not results
_BLOCK_ELEMENTS = 1 << 23
_MORE_SAMPLES = "draw more samples (--n)"


# --------------------------------------------------------------------------- input checks


def check_enough(n: int | Mapping[str, int], k: int, what: str, *, hint: str = _MORE_SAMPLES) -> None:
    """Raise GenlabError unless every set has at least k + 1 feature vectors.

    k neighbours of a point, not counting the point itself, need k + 1 points. `n` is a count
    or a mapping from the set's name to its count; `what` names the metric (with its k), e.g.
    ``check_enough({"real": 10, "generated": 2}, 3, "precision/recall with k=3")`` raises
    "precision/recall with k=3 needs at least 4 real and 4 generated feature vectors; got 2
    generated: draw more samples (--n)".
    """
    counts = {"": n} if isinstance(n, int) else dict(n)
    needed = k + 1
    short = [f"{count} {name}".rstrip() for name, count in counts.items() if count < needed]
    if short:
        wanted = " and ".join(f"{needed} {name}".rstrip() for name in counts)
        noun = "feature vector" if needed == 1 else "feature vectors"
        raise GenlabError(f"{what} needs at least {wanted} {noun}; got {', '.join(short)}: {hint}")


def _features(x: torch.Tensor, name: str) -> torch.Tensor:
    """`x` as float64 (N, D), or a GenlabError that says what it was."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 2:
        raise GenlabError(f"{name} features must be a 2-D tensor (N, D); got shape {tuple(x.shape)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise GenlabError(f"{name} features contain NaN or infinite values")
    return _float64(x)


def _float64(x: torch.Tensor) -> torch.Tensor:
    """`x` in float64, on the CPU when its device has no float64 (Apple MPS)."""
    return x.to("cpu" if x.device.type == "mps" else x.device, torch.float64)


def _same_width(*named: tuple[str, torch.Tensor]) -> None:
    widths = {name: x.shape[1] for name, x in named}
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"{name} {width}" for name, width in widths.items())
        raise GenlabError(f"feature dimensions differ ({listed}): use one extractor for every set")


# --------------------------------------------------------------------------- distances


def _distance_blocks(
    queries: torch.Tensor, references: torch.Tensor, block_size: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, Euclidean distances (B, M)) for consecutive row blocks of `queries`."""
    rows = block_size or max(1, _BLOCK_ELEMENTS // max(1, references.shape[0]))
    for start in range(0, queries.shape[0], rows):
        yield start, torch.cdist(queries[start : start + rows], references)


def nearest_neighbour_distances(
    queries: torch.Tensor,
    references: torch.Tensor,
    k: int = 1,
    exclude_self: bool = False,
    *,
    block_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (N, k) and indices (N, k) of each query's k nearest references, nearest first.

    Euclidean distances in float64, computed in blocks of `block_size` query rows (default:
    about 8M distances a block). With ``exclude_self=True`` queries and references are the
    same set and row i skips reference i, as the k-NN radii of Kynkäänniemi et al. 2019
    and Naeem et al. 2020 require.
    """
    queries, references = _features(queries, "query"), _features(references, "reference")
    _same_width(("query", queries), ("reference", references))
    if exclude_self and queries.shape[0] != references.shape[0]:
        raise GenlabError("exclude_self needs the queries to be the references (same length)")
    check_enough(
        {"reference": references.shape[0]},
        k if exclude_self else k - 1,
        f"k={k} nearest neighbours" + (" (self excluded)" if exclude_self else ""),
    )
    distances = queries.new_empty(queries.shape[0], k)
    indices = torch.empty(queries.shape[0], k, dtype=torch.long, device=queries.device)
    for start, block in _distance_blocks(queries, references, block_size):  # (B, M)
        if exclude_self:
            rows = torch.arange(block.shape[0], device=block.device)
            block[rows, start + rows] = math.inf
        values, where = torch.topk(block, k, dim=1, largest=False)
        distances[start : start + block.shape[0]] = values
        indices[start : start + block.shape[0]] = where
    return distances, indices


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) distance of each point to its k-th nearest neighbour in its own set (self excluded)."""
    return nearest_neighbour_distances(features, features, k, exclude_self=True)[0][:, -1]


def _ball_tests(
    queries: torch.Tensor, centres: torch.Tensor, centre_radii: torch.Tensor, query_radii: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One blocked pass over the distances between queries and centres, for the k-NN manifold metrics.

    Returns (N_q,) how many closed balls B(centre_j, centre_radius_j) contain each query;
    (N_c,) whether centre j's ball contains some query; and, with `query_radii`, (N_c,)
    whether centre j lies in some ball B(query_i, query_radius_i).
    """
    counts = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
    ball_has_query = torch.zeros(centres.shape[0], dtype=torch.bool, device=centres.device)
    in_query_ball = torch.zeros_like(ball_has_query)
    for start, block in _distance_blocks(queries, centres):  # (B, N_c)
        inside = block <= centre_radii  # (B, N_c)
        counts[start : start + block.shape[0]] = inside.sum(dim=1)
        ball_has_query |= inside.any(dim=0)
        if query_radii is not None:
            in_query_ball |= (block <= query_radii[start : start + block.shape[0], None]).any(dim=0)
    return counts, ball_has_query, None if query_radii is None else in_query_ball


# --------------------------------------------------------------------------- FID


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D), divided by N - 1, in float64 (the Gaussian fit of FID)."""
    x = _features(features, "FID")
    check_enough(x.shape[0], 1, "a covariance")
    mu = x.mean(dim=0)
    centred = x - mu  # (N, D)
    return mu, centred.T @ centred / (x.shape[0] - 1)


def psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix by eigh; round-off negative eigenvalues become 0."""
    sigma = (sigma + sigma.T) / 2
    values, vectors = torch.linalg.eigh(sigma)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Tr((sigma1 sigma2)^(1/2)) for symmetric PSD matrices, stably, in float64.

    sigma1 sigma2 is similar to sqrt(s1) s2 sqrt(s1) = A A^T with A = sqrt(s1) sqrt(s2), so
    its square root has the eigenvalues sqrt(eig(A A^T)) = the singular values of A, and the
    trace is the nuclear norm of A. Square roots come from eigh with round-off negative
    eigenvalues clamped to 0; taking singular values of A, rather than square roots of the
    eigenvalues of A A^T, keeps eigenvalues near 0 at round-off size instead of its square
    root, so the FID of a set against itself is 0 to ~1e-10 even for singular covariances.
    """
    s1 = torch.as_tensor(sigma1, dtype=torch.float64)
    s2 = torch.as_tensor(sigma2, dtype=torch.float64, device=s1.device)
    if s1.ndim != 2 or s1.shape[0] != s1.shape[1] or s1.shape != s2.shape:
        raise GenlabError(f"covariances must be square and of one size; got {tuple(s1.shape)} and {tuple(s2.shape)}")
    return float(torch.linalg.svdvals(psd_sqrt(s1) @ psd_sqrt(s2)).sum())


def fid(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017).

    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the matrix square root
    by `trace_sqrt_product`. Pass `gaussian_stats` of real and generated features.
    """
    mu1 = torch.as_tensor(mu1, dtype=torch.float64)
    mu2 = torch.as_tensor(mu2, dtype=torch.float64, device=mu1.device)
    s1 = torch.as_tensor(sigma1, dtype=torch.float64, device=mu1.device)
    s2 = torch.as_tensor(sigma2, dtype=torch.float64, device=mu1.device)
    if mu1.shape != mu2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise GenlabError(
            f"FID statistics do not fit together: means {tuple(mu1.shape)}, {tuple(mu2.shape)}, "
            f"covariances {tuple(s1.shape)}, {tuple(s2.shape)}"
        )
    diff = mu1 - mu2
    value = float(diff @ diff) + float(s1.trace() + s2.trace()) - 2 * trace_sqrt_product(s1, s2)
    return max(value, 0.0)  # a distance: only round-off can take it below 0


# --------------------------------------------------------------------------- KID


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two equal-size sets with k(a, b) = (a.b / d + 1)^3 (Bińkowski et al. 2018)."""
    m, d = x.shape
    one = x.new_ones(())
    k_xx = torch.addmm(one, x, x.T, alpha=1 / d).pow_(3)  # (m, m)
    k_yy = torch.addmm(one, y, y.T, alpha=1 / d).pow_(3)
    k_xy = torch.addmm(one, x, y.T, alpha=1 / d).pow_(3)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.mean()


def kid(
    features1: torch.Tensor,
    features2: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): mean and std of the unbiased MMD^2.

    Over `subsets` random subsets of `subset_size` (clipped to the smaller set) drawn without
    replacement from each set, the unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3; the std is the population std over subsets (as torchmetrics).
    Unbiased: its expectation is 0 when both sets come from one distribution, so small
    negative values are normal. `generator` draws the subsets; None means a fresh one seeded
    with 0, so the same features always give the same numbers. Names in error messages
    assume features1 is real and features2 generated; the metric is symmetric.
    """
    x, y = _features(features1, "real"), _features(features2, "generated")
    _same_width(("real", x), ("generated", y))
    check_enough({"real": x.shape[0], "generated": y.shape[0]}, 1, "KID")
    if subsets < 1:
        raise GenlabError(f"KID needs at least one subset; got subsets={subsets}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    m = max(2, min(subset_size, x.shape[0], y.shape[0]))
    scores = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        pick_x = torch.randperm(x.shape[0], generator=generator, device=generator.device)[:m]
        pick_y = torch.randperm(y.shape[0], generator=generator, device=generator.device)[:m]
        scores[s] = _mmd2_unbiased(x[pick_x.to(x.device)], y[pick_y.to(y.device)])
    return float(scores.mean()), float(scores.std(unbiased=False))


# --------------------------------------------------------------------------- k-NN manifolds


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-2), k = 3 by default.

    Each set's manifold is the union of closed balls around its points, with radius the
    distance to the point's k-th nearest neighbour in its own set (itself excluded).
    Precision: the share of generated features inside the real manifold (fidelity);
    recall: the share of real features inside the generated manifold (diversity).
    """
    real, fake = _features(real, "real"), _features(fake, "generated")
    _same_width(("real", real), ("generated", fake))
    check_enough({"real": real.shape[0], "generated": fake.shape[0]}, k, f"precision/recall with k={k}")
    in_real_balls, _, real_in_fake_balls = _ball_tests(fake, real, _knn_radii(real, k), _knn_radii(fake, k))
    assert real_in_fake_balls is not None  # given the generated set's radii, _ball_tests tests the real points
    return float((in_real_balls > 0).double().mean()), float(real_in_fake_balls.double().mean())


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), k = 5 by default; both use real k-NN balls only.

    With B_i the closed ball around real X_i of radius its k-th nearest-neighbour distance
    among the reals (itself excluded):
    density = 1/(k M) sum_j #{i : Y_j in B_i}  (about 1 when the sets match; above 1 when
    samples crowd dense real regions);
    coverage = 1/N #{i : some Y_j in B_i}  (the share of real balls that hold a sample).
    Closed balls (<=) as in the papers; the prdc code uses <, which differs only at exact ties.
    """
    real, fake = _features(real, "real"), _features(fake, "generated")
    _same_width(("real", real), ("generated", fake))
    check_enough({"real": real.shape[0]}, k, f"density/coverage with k={k}")
    check_enough({"generated": fake.shape[0]}, 0, "density/coverage")
    radii = _knn_radii(real, k)  # (N,)
    in_real_balls, covered, _ = _ball_tests(fake, real, radii)
    return int(in_real_balls.sum()) / (k * fake.shape[0]), float(covered.double().mean())


# --------------------------------------------------------------------------- memorization

# Held-out images a predicted class needs for a threshold of its own; a class with fewer takes the
# pooled threshold (with fewer, a 5% quantile rests on the single nearest image of the class).
MIN_CLASS_HELD_OUT = 40


def copy_thresholds(
    held_out_distances: torch.Tensor,
    held_out_classes: torch.Tensor | None,
    num_classes: int,
    quantile: float = 0.05,
    min_count: int = MIN_CLASS_HELD_OUT,
) -> tuple[torch.Tensor, float, list[int]]:
    """Per-class copy thresholds: (thresholds (K,), the pooled threshold, the classes that fell back to it).

    Class c's threshold is the `quantile` (linear interpolation) of the nearest-training-feature
    distances of the held-out features assigned to c; a class with fewer than `min_count` of them
    (or every class when `held_out_classes` is None) takes the quantile over all held-out features.
    Calibrating per class matters because classes differ in how near their nearest training image
    lies (a thin stroke has few ways to differ): one pooled threshold calls new images of a tight
    class copies and hides copies of a loose one.
    """
    d = _float64(torch.as_tensor(held_out_distances)).reshape(-1)
    pooled = torch.quantile(d, quantile)
    thresholds = pooled.repeat(max(num_classes, 1))
    fallback = []
    for c in range(num_classes):
        mine = d[held_out_classes.to(d.device) == c] if held_out_classes is not None else d[:0]
        if mine.numel() >= max(min_count, 1):
            thresholds[c] = torch.quantile(mine, quantile)
        else:
            fallback.append(c)
    return thresholds, float(pooled), fallback


def memorization(
    samples: torch.Tensor,
    train: torch.Tensor,
    held_out: torch.Tensor,
    quantile: float = 0.05,
    ratio: float = 1 / 3,
    num_pairs: int = 16,
    *,
    sample_classes: torch.Tensor | None = None,
    held_out_classes: torch.Tensor | None = None,
    num_classes: int | None = None,
    min_per_class: int = MIN_CLASS_HELD_OUT,
) -> dict[str, Any]:
    """How many samples look copied from the training set, judged against held-out real images of their class.

    With d1(x), d2(x) the distances from a feature x to its nearest and second-nearest
    training feature:

    - ``copy_share``: the share of samples with d1 below the copy threshold of the sample's
      class: the `quantile` (default 0.05, linear interpolation) of d1 over the held-out real
      features the classifier assigns to that class (`copy_thresholds`; samples nearer to a
      training image than 95% of unseen real images of their class are, the authenticity idea of
      Alaa et al. 2022 with held-out data as the reference). Without classes (`sample_classes`
      None) every sample takes the pooled threshold, ``copy_threshold``. A generator that does
      not copy scores about `quantile`, whichever classes it favours; a copying one approaches 1.
      ``pooled_copy_share`` is the share under the pooled threshold, for comparison.
    - ``ratio_test_share``: the share of samples with d1 < ratio * d2, i.e. d1/d2 < 1/3 by
      default (Gu et al. 2023): much nearer one training image than any other. Samples that
      copy a training image duplicated exactly in the training set (d2 = 0) fail this test;
      copy_share still counts them. ``held_out_ratio_test_share`` is the same for held-out
      real features, the floor.
    - per class (with classes): ``class_copy_shares``, ``class_ratio_test_shares``,
      ``class_samples`` (classes with samples only) and ``class_thresholds`` (every class),
      keyed by the class index as a string; ``fallback_classes``: the classes with fewer than
      `min_per_class` held-out features, which took the pooled threshold.
    - ``closest_pairs``: the `num_pairs` (sample index, training index, d1) with smallest d1,
      closest first, for a picture of sample/training pairs.
    - ``sample_thresholds``: each sample's threshold (S,), a tensor (for `reference_copy_share`).

    Also returns the quantile, ratio and median d1 of samples and of held-out features.
    """
    samples, train = _features(samples, "sample"), _features(train, "training")
    held_out = _features(held_out, "held-out")
    _same_width(("sample", samples), ("training", train), ("held-out", held_out))
    check_enough(
        {"training": train.shape[0]},
        1,
        "memorization (nearest and second-nearest training feature)",
        hint="use a larger training set",
    )
    check_enough({"sample": samples.shape[0], "held-out": held_out.shape[0]}, 0, "memorization")
    if not 0 < quantile < 1 or not 0 < ratio <= 1:
        raise GenlabError(f"memorization needs 0 < quantile < 1 and 0 < ratio <= 1; got {quantile}, {ratio}")
    if (sample_classes is None) != (held_out_classes is None):
        raise GenlabError("memorization per class needs the classes of both the samples and the held-out features")
    if sample_classes is not None and held_out_classes is not None:
        sample_classes = torch.as_tensor(sample_classes).reshape(-1).long().cpu()
        held_out_classes = torch.as_tensor(held_out_classes).reshape(-1).long().cpu()
        if len(sample_classes) != samples.shape[0] or len(held_out_classes) != held_out.shape[0]:
            raise GenlabError("memorization needs one class per sample and per held-out feature")
        seen = int(max(sample_classes.max(), held_out_classes.max())) + 1
        num_classes = max(num_classes or 0, seen)
    d_sample, nearest = nearest_neighbour_distances(samples, train, 2)  # (S, 2)
    d_held = nearest_neighbour_distances(held_out, train, 2)[0]  # (H, 2)
    thresholds, pooled, fallback = copy_thresholds(
        d_held[:, 0].cpu(), held_out_classes, num_classes or 0, quantile, min_per_class
    )
    d1 = d_sample[:, 0].cpu()
    per_sample = thresholds[sample_classes] if sample_classes is not None else torch.full_like(d1, pooled)
    copies = d1 < per_sample
    passes_ratio = (d_sample[:, 0] < ratio * d_sample[:, 1]).cpu()
    order = torch.argsort(d_sample[:, 0])[:num_pairs]
    found: dict[str, Any] = {
        "copy_share": float(copies.double().mean()),
        "copy_threshold": pooled,
        "pooled_copy_share": float((d1 < pooled).double().mean()),
        "quantile": quantile,
        "ratio_test_share": float(passes_ratio.double().mean()),
        "held_out_ratio_test_share": float((d_held[:, 0] < ratio * d_held[:, 1]).double().mean()),
        "ratio": ratio,
        "sample_median_distance": float(d_sample[:, 0].median()),
        "held_out_median_distance": float(d_held[:, 0].median()),
        "closest_pairs": [(int(i), int(nearest[i, 0]), float(d_sample[i, 0])) for i in order.tolist()],
        "sample_thresholds": per_sample,
    }
    if sample_classes is not None:
        present = sorted(set(sample_classes.tolist()))
        found.update({
            "calibration": "per class",
            "min_per_class": min_per_class,
            "class_thresholds": {str(c): float(t) for c, t in enumerate(thresholds.tolist())},
            "fallback_classes": fallback,
            "class_samples": {str(c): int((sample_classes == c).sum()) for c in present},
            "class_copy_shares": {str(c): float(copies[sample_classes == c].double().mean()) for c in present},
            "class_ratio_test_shares": {
                str(c): float(passes_ratio[sample_classes == c].double().mean()) for c in present
            },
        })  # fmt: skip
    else:
        found["calibration"] = "pooled"
    return found


def reference_copy_share(
    samples: torch.Tensor,
    reference: torch.Tensor,
    thresholds: torch.Tensor | float,
    identical: torch.Tensor | None = None,
) -> float:
    """The share of samples that coincide with a reference image (the set they are compared with).

    A sample coincides when its nearest reference feature is nearer than its copy threshold
    (`thresholds`: one per sample, from `memorization`, or one for all) or when it is byte for
    byte a reference image (`identical`, a bool per sample). Samples that are the reference
    images themselves score FID 0 against them, which says nothing about a model; the same
    test as for copies of the training set (Alaa et al. 2022) finds them.
    """
    samples, reference = _features(samples, "sample"), _features(reference, "reference")
    _same_width(("sample", samples), ("reference", reference))
    check_enough({"sample": samples.shape[0], "reference": reference.shape[0]}, 0, "reference coincidence")
    d = nearest_neighbour_distances(samples, reference, 1)[0][:, 0].cpu()
    near = d < _float64(torch.as_tensor(thresholds)).cpu()
    if identical is not None:
        near = near | torch.as_tensor(identical, dtype=torch.bool).reshape(-1).cpu()
    return float(near.double().mean())


# --------------------------------------------------------------------------- class-based metrics


def _probabilities(probs: torch.Tensor) -> torch.Tensor:
    p = _float64(torch.as_tensor(probs))
    if p.ndim != 2 or p.shape[1] < 1:
        raise GenlabError(f"class probabilities must be (N, K); got shape {tuple(p.shape)}")
    if (
        not bool(torch.isfinite(p).all())
        or bool((p < 0).any())
        or not torch.allclose(p.sum(dim=1), torch.ones(1, dtype=p.dtype, device=p.device), atol=1e-3)
    ):
        raise GenlabError("class probabilities must be finite, non-negative and sum to 1 per row (apply softmax)")
    return p / p.sum(dim=1, keepdim=True)


def classifier_score(
    probs: torch.Tensor, splits: int = 10, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """The Inception score formula exp(E_x KL(p(y|x) || p(y))) with any classifier (Salimans et al. 2016).

    `probs` (N, K) are the classifier's p(y|x); p(y) is their mean within each split. As in
    the original code the samples are cut into `splits` (default 10) parts, the score taken
    on each, and the mean and population std returned; the rows are shuffled first (by
    `generator`, None: seeded with 0) so that samples ordered by class do not bias the
    splits. Between 1 (every sample gets the same prediction) and K (confident and uniform
    over K classes); small splits bias it down, by about a factor exp(-(K - 1) / (2 n)) for
    n samples a split. ``splits=1`` gives the score of the whole set and std 0.
    """
    p = _probabilities(probs)
    if not 1 <= splits <= p.shape[0]:
        raise GenlabError(f"classifier score with {splits} splits needs at least {splits} samples; got {p.shape[0]}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    order = torch.randperm(p.shape[0], generator=generator, device=generator.device).to(p.device)
    scores = []
    for part in torch.tensor_split(p[order], splits):  # (n, K) each
        marginal = part.mean(dim=0, keepdim=True)  # p(y)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # (n,) 0 log 0 = 0
        scores.append(torch.exp(kl.mean()))
    scores_t = torch.stack(scores)
    return float(scores_t.mean()), float(scores_t.std(unbiased=False))


# A class counts as covered only when its count is unlikely to be the classifier's misreadings of
# the other classes: a one-sided test at this level (ten classes tested at 0.001 give about a 1%
# chance that any spurious class passes) ...
COVERAGE_LEVEL = 1e-3
# ... and only from this many samples: one image is never evidence of a mode.
COVERAGE_MIN_COUNT = 2
# Pseudo-images added to each row of the confusion matrix, spread evenly over its classes (Perks'
# prior): a confusion never seen among a class's held-out images is rare, not impossible.
CONFUSION_PRIOR = 1.0


def _class_labels(probs_or_labels: torch.Tensor, num_classes: int, what: str) -> torch.Tensor:
    """(N,) int64 class labels from probabilities (N, K) (their argmax) or integer labels (N,)."""
    x = torch.as_tensor(probs_or_labels)
    if x.ndim == 2 and x.shape[1] == num_classes:
        labels = x.argmax(dim=1)
    elif x.ndim == 1 and not x.is_floating_point():
        labels = x.long()
    else:
        raise GenlabError(
            f"{what} takes probabilities (N, {num_classes}) or integer labels (N,); "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= num_classes).any())):
        raise GenlabError(f"class labels must lie in [0, {num_classes}); got {int(labels.min())}..{int(labels.max())}")
    return labels.cpu()


def confusion_matrix(
    predicted: torch.Tensor, true_labels: torch.Tensor, num_classes: int, prior: float = CONFUSION_PRIOR
) -> torch.Tensor:
    """(K, K) float64 P(predict c | true k) of a classifier, row k column c, from labelled held-out images.

    `predicted`: the classifier's probabilities (N, K) or predicted labels (N,); `true_labels` (N,).
    Each row is (n_kc + prior / K) / (n_k + prior): the counts with `prior` pseudo-images spread
    evenly over the K classes, so that a confusion not seen among few images keeps a small rate and a
    class without held-out images gets a uniform row. Use images the classifier was not trained on.
    """
    guess = _class_labels(predicted, num_classes, "a confusion matrix")
    truth = _class_labels(torch.as_tensor(true_labels).long(), num_classes, "a confusion matrix")
    if guess.shape != truth.shape:
        raise GenlabError(f"a confusion matrix needs one true label per prediction; got {len(truth)} for {len(guess)}")
    if prior <= 0:
        raise GenlabError(f"the confusion prior must be positive; got {prior}")
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((truth, guess), torch.ones(len(guess), dtype=torch.float64), accumulate=True)
    return (counts + prior / num_classes) / (counts.sum(dim=1, keepdim=True) + prior)


def spurious_counts(counts: torch.Tensor, confusion: torch.Tensor) -> torch.Tensor:
    """(K,) float64 expected count of each class c made by the classifier's errors alone:
    sum over k != c of counts_k * P(predict c | true k), taking the predicted counts as the true ones."""
    off_diagonal = confusion * (1 - torch.eye(len(confusion), dtype=confusion.dtype))
    return counts.double() @ off_diagonal


def poisson_tail(observed: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """P(X >= observed) for X ~ Poisson(mean), elementwise (float64): the lower regularised incomplete
    gamma P(observed, mean); 1 where observed is 0, 0 where mean is 0 and observed is not. A sum of
    independent Bernoulli trials with this mean (the spurious count) has a tail no heavier above its mean."""
    k, lam = observed.double(), mean.double()
    tail = torch.special.gammainc(k.clamp(min=1), lam.clamp(min=0))
    return torch.where(k <= 0, torch.ones_like(tail), tail)


def mode_coverage(
    probs_or_labels: torch.Tensor,
    num_classes: int,
    reference_distribution: torch.Tensor | None = None,
    min_fraction: float = 0.1,
    eps: float = 1e-10,
    confusion: torch.Tensor | None = None,
    level: float = COVERAGE_LEVEL,
    min_count: int = COVERAGE_MIN_COUNT,
) -> dict:
    """Class histogram of samples under a classifier: how many modes a generator covers.

    Input: probabilities (N, K) (argmax is the class) or integer labels (N,). A class c counts as
    covered when all of these hold:

    - its count is at least `min_count` (default 2);
    - its count is unlikely to be the classifier's errors alone: with `confusion` (K, K) =
      P(predict c | true k) measured on held-out real images (`confusion_matrix`), the expected
      spurious count is s_c = sum over k != c of count_k * P(c | k), and the one-sided test
      P(Poisson(s_c) >= count_c) must be below `level` (default 0.001). Without `confusion` the
      labels are taken as true (s_c = 0);
    - its share of the samples is at least `min_fraction` (default 0.1) of its share in the
      reference distribution (uniform when None); classes the reference gives no mass never count.

    ``kl_to_reference`` = KL(sample class distribution || reference) in nats, the reference mixed
    with `eps` so that it is finite: 0 for a perfect match, log K for a generator drawing one of K
    balanced classes.
    """
    labels = _class_labels(probs_or_labels, num_classes, "mode coverage")
    if labels.numel() == 0:
        raise GenlabError("mode coverage needs at least 1 sample; got 0: " + _MORE_SAMPLES)
    if not 0 < level < 1 or min_count < 1:
        raise GenlabError(f"mode coverage needs 0 < level < 1 and min_count >= 1; got {level} and {min_count}")
    counts = torch.bincount(labels, minlength=num_classes)  # (K,)
    share = counts.double() / counts.sum()
    if reference_distribution is None:
        reference = torch.full((num_classes,), 1 / num_classes, dtype=torch.float64)
    else:
        reference = torch.as_tensor(reference_distribution, dtype=torch.float64).cpu()
        if reference.shape != (num_classes,) or bool((reference < 0).any()) or float(reference.sum()) <= 0:
            raise GenlabError(f"the reference class distribution must be {num_classes} non-negative numbers")
        reference = reference / reference.sum()
    if confusion is None:
        spurious = torch.zeros(num_classes, dtype=torch.float64)
    else:
        matrix = torch.as_tensor(confusion, dtype=torch.float64).cpu()
        if matrix.shape != (num_classes, num_classes) or not bool(torch.isfinite(matrix).all()):
            raise GenlabError(f"the confusion matrix must be {num_classes} x {num_classes} finite rates")
        spurious = spurious_counts(counts, matrix)
    p_values = poisson_tail(counts, spurious)
    smoothed = (reference + eps) / (1 + num_classes * eps)
    kl = (torch.xlogy(share, share) - torch.xlogy(share, smoothed)).sum()
    covered = (reference > 0) & (counts >= min_count) & (share >= min_fraction * reference) & (p_values < level)
    return {
        "counts": counts.tolist(),
        "classes_covered": int(covered.sum()),
        "num_classes": num_classes,
        "kl_to_reference": float(kl),
        "min_fraction": min_fraction,
        "reference": reference.tolist(),
        "expected_spurious": spurious.tolist(),
        "p_values": p_values.tolist(),
        "covered": covered.tolist(),
        "level": level,
        "min_count": min_count,
    }


# --------------------------------------------------------------------------- accumulators


class FIDStatistics:
    """Running mean and covariance of features in float64, batch by batch (update/compute/reset).

    Batches are merged with the pairwise update of Chan et al. (1979), so the result is the
    same (to round-off, ~1e-12) however the features were batched, and it does not suffer
    the cancellation of accumulating raw sums of squares.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._mean: torch.Tensor | None = None  # (D,)
        self._scatter: torch.Tensor | None = None  # (D, D) sum of outer products of deviations

    def update(self, features: torch.Tensor) -> None:
        x = _features(features, "FID")
        if x.shape[0] == 0:
            return
        if self._mean is not None:
            _same_width(("earlier", self._mean[None]), ("new", x))
        mean = x.mean(dim=0)
        centred = x - mean
        scatter = centred.T @ centred
        if self._mean is None or self._scatter is None:  # the first batch (both are set together)
            self.count, self._mean, self._scatter = x.shape[0], mean, scatter
            return
        total = self.count + x.shape[0]
        delta = mean - self._mean
        self._mean = self._mean + delta * (x.shape[0] / total)
        self._scatter = self._scatter + scatter + torch.outer(delta, delta) * (self.count * x.shape[0] / total)
        self.count = total

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and unbiased covariance (D, D), as `gaussian_stats` of all features seen."""
        check_enough(self.count, 1, "a covariance")
        assert self._mean is not None and self._scatter is not None  # set by the first non-empty batch
        return self._mean.clone(), self._scatter / (self.count - 1)


class FeatureBank:
    """Collects feature batches for the k-NN metrics (update/compute/reset)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._batches: list[torch.Tensor] = []

    def __len__(self) -> int:
        return sum(batch.shape[0] for batch in self._batches)

    def update(self, features: torch.Tensor) -> None:
        if features.ndim != 2:
            raise GenlabError(f"features must be a 2-D tensor (N, D); got shape {tuple(features.shape)}")
        if self._batches:
            _same_width(("earlier", self._batches[0]), ("new", features))
        self._batches.append(features.detach())

    def compute(self) -> torch.Tensor:
        """All features seen, (N, D), in the order they came."""
        if not self._batches:
            raise GenlabError("no features collected yet: " + _MORE_SAMPLES)
        return torch.cat(self._batches)
