"""Evaluation: feature extractors and sample-quality metrics.

`genlab.eval.metrics` holds the metrics as pure functions over feature tensors (N, D) and
class probabilities (N, K), plus the `FIDStatistics` and `FeatureBank` accumulators
(update/compute/reset). Evaluation takes a run or a sample source; it never lives in the trainer.
"""

from __future__ import annotations

from genlab.eval.metrics import (
    FeatureBank,
    FIDStatistics,
    check_enough,
    classifier_score,
    density_coverage,
    fid,
    gaussian_stats,
    kid,
    memorization,
    mode_coverage,
    nearest_neighbour_distances,
    precision_recall,
    psd_sqrt,
    trace_sqrt_product,
)

__all__ = [
    "FIDStatistics",
    "FeatureBank",
    "check_enough",
    "classifier_score",
    "density_coverage",
    "fid",
    "gaussian_stats",
    "kid",
    "memorization",
    "mode_coverage",
    "nearest_neighbour_distances",
    "precision_recall",
    "psd_sqrt",
    "trace_sqrt_product",
]
