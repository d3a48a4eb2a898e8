"""Issue 25's numbers: what each conditional model's samples add to a small real training set.

For each model, `genlab eval MODEL --metrics augmentation,label_accuracy,fid` (1,000 samples against the test
split; the augmentation grid draws what more samples its cells need): test accuracy of the shared small
classifier (CAS's recipe) trained on 1/5/10/25% of the training split alone, with +1x and +4x synthetic images
(balanced per class), and with as many more real images (the ceiling), mean ± std over 3 seeds.

A model is a zoo name (`zoo:ddpm-mnist5k-cond`) or `FAMILY@DATA`: that family trained with `--conditional` at
its default budget (seed 0) into --keep (reused when there), its training wall time recorded.

    .venv/bin/python benchmarks/augmentation_table.py [--models zoo:ddpm-mnist5k-cond,vae@mnist-5k,...]
        [--real-sizes 1,5,10,25] [--keep DIR] [--threads N] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import LoadMeter, machine_line, markdown_table, publish  # benchmarks/, on sys.path

import genlab
from genlab.eval.augmentation import augmentation_table
from genlab.eval.evaluate import evaluate

DEFAULT_MODELS = "zoo:ddpm-mnist5k-cond,vae@mnist-5k,gan@mnist-5k,dcgan@mnist-5k"
TRAINED = "trained.json"  # in each kept run: the wall time of its training


def model_run(spec: str, keep: Path) -> tuple[str, float | None]:
    """(the run to evaluate, its training seconds or None for a zoo model)."""
    if spec.startswith("zoo:"):
        return spec, None
    family, _, data = spec.partition("@")
    out = keep / f"{family}-{data}-cond"
    record = out / TRAINED
    if record.exists():
        return str(out), json.loads(record.read_text())["seconds"]
    started = time.perf_counter()
    genlab.train(family, data, out, seed=0, model_config={"conditional": True}, progress=False, overwrite=True)
    seconds = time.perf_counter() - started
    record.write_text(json.dumps({"seconds": seconds}))
    return str(out), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    parser.add_argument("--keep", default="augmentation-runs", help="folder of the trained runs (reused)")
    parser.add_argument("--real-sizes", help="real-set sizes, percent of the training split (default 1,5,10,25)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--write", action="store_true", help="replace the section of benchmarks/README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep = Path(args.keep)
    keep.mkdir(parents=True, exist_ok=True)

    rows, grids = [], []
    for spec in [m for m in args.models.split(",") if m]:
        run, train_seconds = model_run(spec, keep)
        with LoadMeter() as load:
            started = time.perf_counter()
            measures = "augmentation,label_accuracy,fid"
            result = evaluate(run, metrics=measures, n=1000, seed=0, real_sizes=args.real_sizes)
            seconds = time.perf_counter() - started
        grid = result.details["augmentation"]
        metrics = result.metrics
        rows.append([
            spec, "-" if train_seconds is None else f"{train_seconds / 60:.1f} min",
            f"{metrics['fid']:.2f} ({result.floor['fid']:.2f})",
            f"{metrics['label_accuracy']:.1%}", f"{metrics.get('augmentation_gain', float('nan')):+.3f}",
            f"{metrics.get('augmentation_recovered', float('nan')):.0%}",
            f"{grid['seconds'] - grid['draw_seconds']:.0f} s (+{grid['draw_seconds']:.0f} s drawing "
            f"{grid['samples_drawn_for_it']:,})", f"{seconds:.0f} s", f"{load.other_cores:.2f}",
        ])  # fmt: skip
        observations = [line for line in result.observations if "small real set" in line]
        said = "".join(f"\n- {line}" for line in observations) or "\n- no verdict: at every size the intervals overlap"
        grids.append(f"**{spec}**\n\n```\n{augmentation_table(grid)}\n```\n{said}\n")
        print(grids[-1], flush=True)
    table = markdown_table(
        ["Model", "Training", "FID (floor)", "Label acc.", "Gain, +1x (mean over sizes)",
         "Real-data gain recovered, +1x", "Augmentation grid", "Whole eval", "Other procs (cores)"],
        rows,
    )  # fmt: skip
    body = (
        f"Measured with `python benchmarks/augmentation_table.py --models {args.models} --threads {args.threads}"
        + (f" --real-sizes {args.real_sizes}" if args.real_sizes else "")
        + "` "
        f"on {machine_line()}.\n\n{table}\n\n" + "\n".join(grids)
    )
    return publish("augmentation", body, args.write)


if __name__ == "__main__":
    sys.exit(main())
