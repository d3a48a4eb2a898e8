import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from genlab.errors import GenlabError
from genlab.eval.metrics import (
    FeatureBank,
    FIDStatistics,
    check_enough,
    classifier_score,
    confusion_matrix,
    copy_thresholds,
    density_coverage,
    fid,
    gaussian_stats,
    kid,
    memorization,
    mode_coverage,
    nearest_neighbour_distances,
    poisson_tail,
    precision_recall,
    reference_copy_share,
    spurious_counts,
    trace_sqrt_product,
)


def gaussian(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def relu_features(n, d, seed, shift=0.0):
    """Features like a network's penultimate layer: correlated, non-negative, some dimensions dead."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    dead = torch.zeros(d, dtype=torch.float64)
    dead[: d // 8] = -1e3  # these units are always 0 after the ReLU: an exactly singular covariance
    return torch.relu(torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + dead + shift)


def random_spd(d, seed):
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def scipy_trace_sqrt(s1, s2):
    with warnings.catch_warnings():  # "Matrix is singular" for rank-deficient covariances
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return float(np.trace(scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())).real)


# --------------------------------------------------------------------------- FID


def test_gaussian_stats_match_numpy():
    x = relu_features(300, 16, 0)
    mu, sigma = gaussian_stats(x.float())
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.numpy().mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.numpy(), rowvar=False, ddof=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1000, 20])  # 20 < D: singular covariance
def test_fid_of_a_set_against_itself_is_zero(n):
    mu, sigma = gaussian_stats(relu_features(n, 64, 0))
    assert abs(fid(mu, sigma, mu, sigma)) < 1e-6


def test_fid_closed_form_with_exact_statistics():
    mu = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)
    assert fid(torch.zeros(4), eye, mu, eye) == pytest.approx(float(mu @ mu), abs=1e-10)  # ||mu||^2 = 14.25
    sigma = random_spd(4, 0)
    assert fid(torch.zeros(4), sigma, mu, sigma) == pytest.approx(14.25, abs=1e-9)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = torch.tensor([1.0, 4.0, 9.0, 0.25]), torch.tensor([4.0, 1.0, 9.0, 1.0])
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum()) + 14.25  # 1 + 1 + 0 + 0.25 + 14.25
    assert fid(torch.zeros(4), torch.diag(a), mu, torch.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_fid_of_sampled_gaussians_matches_closed_form():
    mu = torch.tensor([2.0] + [0.0] * 7, dtype=torch.float64)
    value = fid(*gaussian_stats(gaussian(20_000, 8, 1)), *gaussian_stats(gaussian(20_000, 8, 2, shift=mu)))
    assert value == pytest.approx(4.0, abs=0.15)  # mean-estimate noise has std ~0.04 here


@pytest.mark.parametrize(
    "make",
    [
        lambda: (random_spd(32, 1), random_spd(32, 2)),
        lambda: (gaussian_stats(relu_features(2000, 64, 1))[1], gaussian_stats(relu_features(2000, 64, 2, 0.5))[1]),
        lambda: (gaussian_stats(relu_features(40, 64, 3))[1], gaussian_stats(relu_features(2000, 64, 4))[1]),  # N < D
        lambda: (gaussian_stats(relu_features(40, 64, 3))[1], gaussian_stats(relu_features(50, 64, 5))[1]),  # both
    ],
    ids=["random-spd", "features", "nearly-singular", "both-singular"],
)
def test_trace_sqrt_product_matches_scipy_sqrtm(make):
    s1, s2 = make()
    expected = scipy_trace_sqrt(s1, s2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-6)
    assert trace_sqrt_product(s2, s1) == pytest.approx(expected, rel=1e-6)


def test_fid_matches_the_scipy_formula():
    x, y = relu_features(1500, 32, 1), relu_features(1500, 32, 2, shift=0.3)
    (mu1, s1), (mu2, s2) = gaussian_stats(x), gaussian_stats(y)
    expected = float((mu1 - mu2) @ (mu1 - mu2) + s1.trace() + s2.trace()) - 2 * scipy_trace_sqrt(s1, s2)
    assert fid(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_trace_sqrt_product_is_exact_for_collinear_features():
    """Collinear features (rank 20 of 24): scipy's sqrtm is off by ~1e-8 relative here, the eigen route is not."""
    mpmath = pytest.importorskip("mpmath")
    x, y = relu_features(800, 20, 1), relu_features(800, 20, 2, shift=0.3)
    x, y = torch.cat([x, x[:, -4:] * 2], 1), torch.cat([y, y[:, -4:] * 2], 1)  # (800, 24)
    s1, s2 = gaussian_stats(x)[1], gaussian_stats(y)[1]
    with mpmath.workdps(40):
        eigenvalues = mpmath.eig(mpmath.matrix(s1.tolist()) * mpmath.matrix(s2.tolist()), left=False, right=False)
        exact = float(sum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in eigenvalues))
    assert trace_sqrt_product(s1, s2) == pytest.approx(exact, rel=1e-12)


def test_fid_statistics_are_independent_of_batch_size():
    x = (relu_features(5000, 64, 0) + 100.0).float()  # a large offset stresses the accumulation
    stats = {}
    for batch in (50, 1000):
        acc = FIDStatistics()
        for start in range(0, len(x), batch):
            acc.update(x[start : start + batch])
        stats[batch] = acc.compute()
        assert acc.count == 5000
    (mu50, s50), (mu1000, s1000) = stats[50], stats[1000]
    torch.testing.assert_close(mu50, mu1000, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s50, s1000, rtol=1e-6, atol=1e-6)
    mu, sigma = gaussian_stats(x)
    torch.testing.assert_close(s50, sigma, rtol=1e-9, atol=1e-9)
    other = gaussian_stats(relu_features(3000, 64, 9) + 100.0)
    assert fid(mu50, s50, *other) == pytest.approx(fid(mu1000, s1000, *other), rel=1e-6)
    assert fid(mu50, s50, *other) == pytest.approx(fid(mu, sigma, *other), rel=1e-6)


def test_fid_statistics_reset_and_too_few():
    acc = FIDStatistics()
    acc.update(torch.randn(1, 4))
    with pytest.raises(GenlabError, match="at least 2 feature vectors; got 1"):
        acc.compute()
    acc.reset()
    acc.update(gaussian(10, 4, 0))
    torch.testing.assert_close(acc.compute()[1], gaussian_stats(gaussian(10, 4, 0))[1])
    with pytest.raises(GenlabError, match="feature dimensions differ"):
        acc.update(torch.randn(5, 3))


def test_fid_rejects_mismatched_statistics():
    with pytest.raises(GenlabError, match="do not fit"):
        fid(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


# --------------------------------------------------------------------------- KID


def numpy_mmd2_unbiased(x, y):
    d, m = x.shape[1], x.shape[0]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    off = ~np.eye(m, dtype=bool)
    return kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()


def test_kid_matches_brute_force_on_whole_sets():
    x, y = gaussian(60, 5, 0), gaussian(60, 5, 1, shift=0.3)
    mean, std = kid(x, y, subsets=3, subset_size=1000)  # clipped to 60: every subset is the whole set
    assert mean == pytest.approx(numpy_mmd2_unbiased(x.numpy(), y.numpy()), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_for_one_distribution():
    mean, std = kid(gaussian(1000, 16, 0), gaussian(1000, 16, 1), subsets=20, subset_size=300)
    assert abs(mean) < 3 * std
    # over many independent pairs of draws the estimates average to 0 (a V-statistic would not)
    estimates = np.array([kid(gaussian(40, 4, 2 * r), gaussian(40, 4, 2 * r + 1), subsets=1)[0] for r in range(300)])
    assert abs(estimates.mean()) < 3 * estimates.std() / math.sqrt(len(estimates))
    assert (estimates < 0).mean() > 0.3  # negative values are normal for an unbiased estimator


def test_kid_is_clearly_positive_for_shifted_distributions():
    mean, std = kid(gaussian(1000, 16, 0), gaussian(1000, 16, 1, shift=0.5), subsets=20, subset_size=300)
    assert mean > 0.5 and mean > 10 * std


def test_kid_is_reproducible():
    x, y = gaussian(300, 8, 0), gaussian(300, 8, 1)
    assert kid(x, y, subsets=10, subset_size=100) == kid(x, y, subsets=10, subset_size=100)
    a = kid(x, y, subsets=10, subset_size=100, generator=torch.Generator().manual_seed(5))
    assert a == kid(x, y, subsets=10, subset_size=100, generator=torch.Generator().manual_seed(5))


# --------------------------------------------------------------------------- k-NN metrics against brute force


def reference_prdc(real, fake, k_pr, k_dc):
    """Brute force with scikit-learn: radii from kneighbors() (which leaves each point out), full distance matrix."""
    real, fake = real.numpy(), fake.numpy()
    radius = lambda x, k: NearestNeighbors(n_neighbors=k).fit(x).kneighbors()[0][:, -1]
    d = pairwise_distances(fake, real)  # (M, N)
    precision = (d <= radius(real, k_pr)[None]).any(axis=1).mean()
    recall = (d.T <= radius(fake, k_pr)[None]).any(axis=1).mean()
    r = radius(real, k_dc)
    density = (d <= r[None]).sum() / (k_dc * len(fake))
    coverage = (d.min(axis=0) <= r).mean()
    return precision, recall, density, coverage


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_density_coverage_match_brute_force(seed):
    real = gaussian(200, 5, seed)
    fake = gaussian(150, 5, seed + 10, shift=0.4) * 1.3
    p, r, d, c = reference_prdc(real, fake, 3, 5)
    assert precision_recall(real, fake, k=3) == (p, r)
    density, coverage = density_coverage(real, fake, k=5)
    assert density == pytest.approx(d, abs=1e-12) and coverage == c
    assert 0 < p < 1 and 0 < r < 1 and 0 < c < 1  # a case where the sets partly overlap


def test_nearest_neighbour_distances_match_sklearn_in_any_block_size():
    queries, refs = gaussian(103, 6, 0), gaussian(211, 6, 1)
    want_d, want_i = NearestNeighbors(n_neighbors=4).fit(refs.numpy()).kneighbors(queries.numpy())
    for block in (None, 7, 1000):
        d, i = nearest_neighbour_distances(queries, refs, k=4, block_size=block)
        np.testing.assert_allclose(d.numpy(), want_d, rtol=1e-10)
        np.testing.assert_array_equal(i.numpy(), want_i)
    self_d, self_i = NearestNeighbors(n_neighbors=3).fit(refs.numpy()).kneighbors()
    d, i = nearest_neighbour_distances(refs, refs, k=3, exclude_self=True, block_size=10)
    np.testing.assert_allclose(d.numpy(), self_d, rtol=1e-10)
    np.testing.assert_array_equal(i.numpy(), self_i)


# --------------------------------------------------------------------------- k-NN metrics: behaviour


@pytest.mark.parametrize("dim", [2, 5, 10])
def test_precision_recall_of_identical_distributions_are_high(dim):
    precision, recall = precision_recall(gaussian(1000, dim, 0), gaussian(1000, dim, 1), k=3)
    assert precision > 0.8 and recall > 0.8  # 0.98/0.97 at 2-D, 0.86/0.86 at 10-D


def test_precision_recall_of_disjoint_distributions_are_zero():
    real = gaussian(500, 5, 0)
    assert precision_recall(real, gaussian(500, 5, 1, shift=100.0)) == (0.0, 0.0)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)


def test_precision_without_recall_for_a_collapsed_generator():
    real = gaussian(1000, 2, 0)
    fake = gaussian(1000, 2, 1) * 0.1  # all samples in the centre of the real distribution
    precision, recall = precision_recall(real, fake)
    assert precision > 0.95 and recall < 0.2


@pytest.mark.parametrize("dim", [2, 10])
def test_density_and_coverage(dim):
    real = gaussian(1000, dim, 0)
    density, coverage = density_coverage(real, gaussian(1000, dim, 1))
    assert density == pytest.approx(1.0, abs=0.1) and coverage > 0.9
    assert density_coverage(real, gaussian(1000, dim, 2, shift=100.0)) == (0.0, 0.0)


def test_too_few_samples_for_k_say_how_many_are_needed():
    with pytest.raises(GenlabError, match=r"precision/recall with k=3 needs at least 4 real and 4 generated "
                                          r"feature vectors; got 2 generated: draw more samples \(--n\)"):
        precision_recall(gaussian(10, 3, 0), gaussian(2, 3, 1))
    with pytest.raises(GenlabError, match=r"density/coverage with k=5 needs at least 6 real feature vectors; got 5 real"):
        density_coverage(gaussian(5, 3, 0), gaussian(20, 3, 1))
    with pytest.raises(GenlabError, match="KID needs at least 2 real and 2 generated feature vectors; got 1 generated"):
        kid(gaussian(10, 3, 0), gaussian(1, 3, 1))
    with pytest.raises(GenlabError, match="needs at least 2 training feature vectors; got 1 training"):
        memorization(gaussian(5, 3, 0), gaussian(1, 3, 1), gaussian(5, 3, 2))
    with pytest.raises(GenlabError, match="at least 4 feature vectors; got 3"):
        check_enough(3, 3, "something with k=3")
    check_enough({"real": 4, "generated": 4}, 3, "precision/recall with k=3")  # enough: no error


def test_bad_feature_shapes_are_clear_errors():
    with pytest.raises(GenlabError, match="feature dimensions differ"):
        precision_recall(gaussian(10, 3, 0), gaussian(10, 4, 1))
    with pytest.raises(GenlabError, match="2-D tensor"):
        density_coverage(torch.randn(10, 3, 2), gaussian(10, 3, 1))
    with pytest.raises(GenlabError, match="NaN"):
        precision_recall(torch.full((10, 3), math.nan), gaussian(10, 3, 1))


# --------------------------------------------------------------------------- memorization


def test_memorization_flags_a_generator_that_returns_training_points():
    train, held_out = gaussian(2000, 8, 0), gaussian(500, 8, 1)
    picked = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:500]
    result = memorization(train[picked], train, held_out)
    assert result["copy_share"] >= 0.9 and result["ratio_test_share"] >= 0.9
    assert result["held_out_ratio_test_share"] < 0.05
    assert len(result["closest_pairs"]) == 16
    for sample, training, distance in result["closest_pairs"]:
        assert int(picked[sample]) == training and distance < 1e-6
    # slightly noisy copies are still copies
    noisy = train[picked] + 0.01 * gaussian(500, 8, 2)
    result = memorization(noisy, train, held_out)
    assert result["copy_share"] >= 0.9 and result["ratio_test_share"] >= 0.9


def test_memorization_of_fresh_samples_is_near_the_quantile():
    train, held_out = gaussian(2000, 8, 0), gaussian(1000, 8, 1)
    result = memorization(gaussian(1000, 8, 2), train, held_out, quantile=0.05)
    assert result["copy_share"] < 0.1  # 0.05 in expectation
    assert result["ratio_test_share"] < 0.05
    assert result["copy_threshold"] == pytest.approx(
        float(np.quantile(NearestNeighbors(n_neighbors=1).fit(train).kneighbors(held_out)[0][:, 0], 0.05)), rel=1e-9
    )
    closest = [d for _, _, d in result["closest_pairs"]]
    assert closest == sorted(closest)


def two_classes(n_tight, n_loose, seed):
    """Features of two classes around well-separated centres: class 0 tight (scale 0.1), class 1 loose (scale 1)."""
    tight = 0.1 * gaussian(n_tight, 8, seed)
    loose = gaussian(n_loose, 8, seed + 100, shift=20.0)
    classes = torch.cat([torch.zeros(n_tight), torch.ones(n_loose)]).long()
    return torch.cat([tight, loose]), classes


def test_memorization_calibrates_each_class_on_its_own_held_out_features():
    # A tight class sits nearer its training neighbours than any loose one: the pooled threshold calls all of
    # its new samples copies; per class they score about the quantile, and copies of the loose class are found.
    train, _ = two_classes(1000, 1000, 0)
    held_out, held_classes = two_classes(45, 955, 1)  # the tight class a minority: the pooled 5% lies above it
    fresh, fresh_classes = two_classes(400, 0, 2)
    result = memorization(fresh, train, held_out, sample_classes=fresh_classes, held_out_classes=held_classes)
    assert result["pooled_copy_share"] > 0.9 and result["copy_share"] < 0.12
    assert result["calibration"] == "per class" and result["fallback_classes"] == []
    assert set(result["class_copy_shares"]) == {"0"} and result["class_samples"] == {"0": 400}
    d_held = NearestNeighbors(n_neighbors=1).fit(train).kneighbors(held_out)[0][:, 0]
    for c in (0, 1):
        assert result["class_thresholds"][str(c)] == pytest.approx(
            float(np.quantile(d_held[held_classes.numpy() == c], 0.05)), rel=1e-9
        )
    assert result["copy_threshold"] == pytest.approx(float(np.quantile(d_held, 0.05)), rel=1e-9)
    copies = train[1000:1200]  # loose-class training points returned as samples
    result = memorization(copies, train, held_out, sample_classes=torch.ones(200).long(), held_out_classes=held_classes)
    assert result["copy_share"] == 1.0 and result["class_copy_shares"] == {"1": 1.0}
    assert result["class_ratio_test_shares"]["1"] > 0.9


def test_memorization_falls_back_to_the_pooled_threshold_for_a_class_with_few_held_out_features():
    train, _ = two_classes(500, 500, 0)
    held_out, held_classes = two_classes(500, 10, 1)  # 10 loose held-out features: too few for a quantile
    samples, sample_classes = two_classes(0, 50, 2)
    result = memorization(samples, train, held_out, sample_classes=sample_classes, held_out_classes=held_classes,
                          num_classes=3)  # fmt: skip
    assert result["fallback_classes"] == [1, 2]  # class 2 has no held-out features at all
    assert result["class_thresholds"]["1"] == result["class_thresholds"]["2"] == result["copy_threshold"]
    assert result["copy_share"] == result["pooled_copy_share"]
    thresholds, pooled, fallback = copy_thresholds(torch.arange(100.0), torch.zeros(100).long(), 2, min_count=40)
    assert thresholds[0] == pytest.approx(4.95) and thresholds[1] == pooled and fallback == [1]
    with pytest.raises(GenlabError, match="classes of both"):
        memorization(samples, train, held_out, sample_classes=sample_classes)


def test_reference_copy_share_finds_samples_that_are_the_reference():
    reference = gaussian(300, 8, 0)
    samples = torch.cat([reference[:100], gaussian(100, 8, 1)])
    assert reference_copy_share(samples, reference, 0.5) == pytest.approx(0.5)
    assert reference_copy_share(samples, reference, torch.full((200,), 1e-3)) == pytest.approx(0.5)
    identical = torch.zeros(200, dtype=torch.bool)
    identical[150:] = True  # byte-equal images count whatever their features' distance
    assert reference_copy_share(samples, reference, 0.0, identical) == pytest.approx(0.25)


# --------------------------------------------------------------------------- class-based metrics


def one_hot_uniform(num_classes, per_class):
    labels = torch.arange(num_classes).repeat_interleave(per_class)  # ordered by class on purpose
    return torch.nn.functional.one_hot(labels, num_classes).double()


def test_classifier_score_bounds():
    probs = one_hot_uniform(10, 1000)
    assert classifier_score(probs, splits=1) == (pytest.approx(10.0, rel=1e-12), 0.0)
    mean, std = classifier_score(probs)  # 10 splits of 1,000: the small-split bias is about 0.5 %
    assert 9.8 < mean < 10.0 and std < 0.1
    same = torch.tensor([[0.2, 0.5, 0.3]]).repeat(500, 1)
    assert classifier_score(same) == (pytest.approx(1.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))


def test_classifier_score_matches_the_formula():
    probs = torch.distributions.Dirichlet(torch.full((5,), 0.3)).sample((400,)).double()
    probs /= probs.sum(1, keepdim=True)
    marginal = probs.mean(0)
    expected = math.exp(float((probs * (probs.log() - marginal.log())).sum(1).mean()))
    assert classifier_score(probs, splits=1)[0] == pytest.approx(expected, rel=1e-10)
    with pytest.raises(GenlabError, match="sum to 1"):
        classifier_score(torch.rand(20, 5) + 1)


def test_mode_coverage_flags_a_single_class_generator():
    result = mode_coverage(torch.full((1000,), 3), 10)
    assert result["classes_covered"] == 1
    assert result["counts"][3] == 1000
    assert result["kl_to_reference"] == pytest.approx(math.log(10), rel=1e-6)
    balanced = mode_coverage(one_hot_uniform(10, 100), 10)  # probabilities: argmax
    assert balanced["classes_covered"] == 10 and balanced["kl_to_reference"] == pytest.approx(0.0, abs=1e-9)


def test_mode_coverage_rule_and_reference():
    labels = torch.cat([torch.zeros(900), torch.ones(95), torch.full((5,), 2)]).long()  # 2: 0.5 % < 10 % of 1/3
    result = mode_coverage(labels, 3)
    assert result["classes_covered"] == 2
    reference = torch.tensor([0.9, 0.095, 0.005])
    matched = mode_coverage(labels, 3, reference_distribution=reference)
    assert matched["classes_covered"] == 3 and matched["kl_to_reference"] == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(GenlabError, match="labels must lie"):
        mode_coverage(torch.tensor([0, 3]), 3)


def test_confusion_matrix_counts_with_an_even_prior():
    truth = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 1, 2])
    found = confusion_matrix(predicted, truth, 3, prior=0.3)
    assert found[0].tolist() == pytest.approx([2.1 / 3.3, 1.1 / 3.3, 0.1 / 3.3])  # (n_kc + prior / K) / (n_k + prior)
    assert found.sum(dim=1).tolist() == pytest.approx([1.0] * 3)
    assert confusion_matrix(torch.eye(3)[predicted], truth, 3, prior=0.3).equal(found)  # probabilities: argmax
    assert confusion_matrix(torch.tensor([0]), torch.tensor([0]), 2)[1].tolist() == [0.5, 0.5]  # no images: uniform


def test_spurious_counts_and_the_poisson_tail():
    confusion = torch.tensor([[0.9, 0.1, 0.0], [0.02, 0.98, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    counts = torch.tensor([100, 10, 4])
    # s_c = sum over k != c of counts_k P(c | k): the diagonal (a class misread as itself) never counts
    assert spurious_counts(counts, confusion).tolist() == pytest.approx([0.2, 10 + 2, 0.0])
    observed, mean = torch.tensor([0, 1, 3, 5, 2]), torch.tensor([0.0, 0.0, 0.5, 2.4, 0.0], dtype=torch.float64)
    pairs = zip(observed.tolist(), mean.tolist())
    tail = [1 - sum(math.exp(-m) * m**j / math.factorial(j) for j in range(k)) for k, m in pairs]  # P(X >= k)
    assert poisson_tail(observed, mean).tolist() == pytest.approx(tail, abs=1e-12)


def test_a_collapsed_generator_misread_a_few_times_covers_one_class():
    # 1000 samples of class 0 that a classifier erring 2% of the time reads as 980 zeros, 10 ones and 10 twos
    # (the share rule set aside, min_fraction=0, as it is for 10 balanced classes: 1% is 10% of their share)
    labels = torch.cat([torch.zeros(980), torch.ones(10), torch.full((10,), 2)]).long()
    assert mode_coverage(labels, 3, min_fraction=0)["classes_covered"] == 3  # labels taken as true
    confusion = torch.tensor([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]])
    found = mode_coverage(labels, 3, min_fraction=0, confusion=confusion)
    assert found["classes_covered"] == 1 and found["covered"] == [True, False, False]
    assert found["expected_spurious"] == pytest.approx([0.2, 9.9, 9.9])
    # the same 10 ones are a mode when nothing explains them: a perfect classifier's confusion
    assert mode_coverage(labels, 3, min_fraction=0, confusion=torch.eye(3))["classes_covered"] == 3


def test_mode_coverage_needs_a_minimum_count_and_a_level():
    labels = torch.cat([torch.zeros(8), torch.ones(1), torch.full((1,), 2)]).long()
    found = mode_coverage(labels, 3, confusion=torch.eye(3))
    assert found["classes_covered"] == 1  # one image is never a mode, however unlikely as an error
    assert mode_coverage(labels, 3, confusion=torch.eye(3), min_count=1)["classes_covered"] == 3
    assert found["level"] == 1e-3 and found["min_count"] == 2
    with pytest.raises(GenlabError, match="level"):
        mode_coverage(labels, 3, level=0.0)
    with pytest.raises(GenlabError, match="3 x 3"):
        mode_coverage(labels, 3, confusion=torch.eye(2))


def test_feature_bank_collects_batches():
    bank = FeatureBank()
    x = gaussian(25, 4, 0)
    for start in range(0, 25, 10):
        bank.update(x[start : start + 10])
    assert len(bank) == 25
    torch.testing.assert_close(bank.compute(), x)
    bank.reset()
    with pytest.raises(GenlabError, match="no features"):
        bank.compute()
