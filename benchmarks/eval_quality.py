"""The evaluation numbers in the README: the real-vs-real floor, and every metric for the VAE.

The issue's target: record the real-vs-real floor on mnist-5k and fashion-mnist, and the full
table (every `genlab eval` metric) for the VAE of issue 2.

Rows of the VAE table: the classic VAE of issue 2 (beta 1, the N(0, I) prior; today's defaults differ:
benchmarks/time_to_quality.py measures those) trained for 20 epochs with seed 0 (MLP, conv,
conditional MLP on mnist-5k; MLP on fashion-mnist), each evaluated by `genlab.evaluate` with
its defaults: as many samples as the test split holds (1,000 for mnist-5k, 10,000 for
fashion-mnist), seed 0, against the test split, the floor from as many held-out training
images. Runs and caches go to a temporary folder unless --keep DIR is given.

    python benchmarks/eval_quality.py               # about 6 minutes on 2 CPU cores
    python benchmarks/eval_quality.py --write       # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import genlab
from genlab.eval.evaluate import Evaluation, evaluate

from _common import CLASSIC_VAE, machine_line, markdown_table, write_section

RUNS = [  # (label, data, model settings)
    ("MLP VAE, mnist-5k", "mnist-5k", CLASSIC_VAE),
    ("conv VAE, mnist-5k", "mnist-5k", {**CLASSIC_VAE, "arch": "conv"}),
    ("conditional MLP VAE, mnist-5k", "mnist-5k", {**CLASSIC_VAE, "conditional": True}),
    ("MLP VAE, fashion-mnist", "fashion-mnist", CLASSIC_VAE),
]
COLUMNS = [  # (header, key, format)
    ("FID", "fid", "{:.2f}"), ("KID", "kid", "{:.3f}"), ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"), ("density", "density", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
    ("classifier score", "classifier_score", "{:.2f}"), ("class KL", "class_kl", "{:.4f}"),
    ("copies", "copy_share", "{:.4f}"), ("ratio test", "ratio_test_share", "{:.4f}"), ("CAS", "cas", "{:.3f}"),
    ("NLL (nats)", "nll_nats", "{:.1f}"), ("bits/dim", "bits_per_dim", "{:.4f}"),
]  # fmt: skip


def cells(values: dict) -> list[str]:
    return [fmt.format(values[key]) if key in values else "-" for _, key, fmt in COLUMNS]


def floor_table(floors: dict[str, Evaluation]) -> str:
    rows = []
    for data, result in floors.items():
        counts = result.info["counts"]
        rows.append([f"{data} ({counts['held_out']:,} held-out vs {counts['reference']:,} test)", *cells(result.floor),
                     f"{result.info['seconds']:.0f} s"])
    return markdown_table(["real vs real", *(h for h, _, _ in COLUMNS), "time (cold cache)"], rows)


def vae_table(results: list[tuple[str, Evaluation]]) -> str:
    rows = [[label, f"{r.info['counts']['samples']:,}", *cells(r.metrics), f"{r.info['seconds']:.0f} s"]
            for label, r in results]
    return markdown_table(["model (20 epochs, seed 0)", "samples", *(h for h, _, _ in COLUMNS), "eval time"], rows)


def old_classes_covered(coverage: dict) -> int:
    """Classes covered under the rule before issue 19: one sample is enough, at >= 10% of the data's share."""
    counts, reference = coverage["counts"], coverage["reference"]
    total = sum(counts)
    return sum(1 for c, r in zip(counts, reference) if r > 0 and c > 0 and c / total >= coverage["min_fraction"] * r)


def calibration_table(results: list[tuple[str, Evaluation]]) -> str:
    """Issue 19's before/after: copies under the pooled and the per-class threshold, classes covered by the
    old rule (one sample) and the new one (against the classifier's confusion), reference coincidence."""
    rows = []
    for label, r in results:
        memorized, coverage = r.details["memorization"], r.details["mode_coverage"]
        rows.append([label, f"{memorized['pooled_copy_share']:.4f}", f"{r.metrics['copy_share']:.4f}",
                     f"{r.metrics['reference_copy_share']:.4f}", str(old_classes_covered(coverage)),
                     str(int(r.metrics["classes_covered"]))])
    return markdown_table(["model", "copies, pooled threshold (before)", "copies, per class (now)",
                           "coincide with reference", "classes covered (before)", "classes covered (now)"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="keep runs and caches in DIR (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="replace the eval section of benchmarks/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        os.environ["GENLAB_CACHE"] = str(folder / "cache")  # a cold cache: the floor times include features
        floors = {data: evaluate(None, data) for data in ("mnist-5k", "fashion-mnist")}
        results = []
        for label, data, settings in RUNS:
            out = folder / label.replace(" ", "_").replace(",", "")
            genlab.train("vae", data, out, epochs=args.epochs, seed=0, progress=False, sample_every=0,
                         model_config=settings, overwrite=True)
            results.append((label, evaluate(out)))
            print(f"{label}: {results[-1][1].metrics}", file=sys.stderr)
    body = "\n\n".join([
        "## Evaluation: the real-vs-real floor and the VAE (`benchmarks/eval_quality.py`)",
        machine_line(), floor_table(floors), vae_table(results),
        "Before and after issue 19's calibration, the same samples:", calibration_table(results),
    ])
    print(body)
    if args.write:
        write_section("eval-quality", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
