"""DDPM sample quality: FID, precision and recall on fashion-mnist for DDIM-50 and DDPM-1000 sampling,
and the label accuracy of a conditional DDPM on mnist-5k.

The issue's numbers, each from `genlab.train("ddpm", DATA, out, seed=0, progress=False,
sample_every=0, model_config=...)` with genlab's defaults (preset "small": a 1.06M-parameter UNet,
1,000-step linear chain, EMA 0.999, batch 128), then scored by `genlab.evaluate` (genlab's shipped
extractor, the real-vs-real floor beside every number):

  fashion  unconditional `ddpm` on fashion-mnist (60,000 training images) for --fashion-epochs (3),
           or, with --budget-minutes M, for as many whole epochs as fit in M minutes of wall time
           (trained one epoch per `genlab.train(..., resume=True)` call; another epoch starts only
           while the last one's wall time still fits in what is left). Then --n (1,000) samples are
           drawn from the same noise seed twice, with `run.sample(n, sampler="ddim", steps=50,
           eta=0)` and `run.sample(n, sampler="ddpm", steps=1000)` (the full ancestral chain), each
           timed, saved as an .npz of uint8 images and scored by `genlab.evaluate(npz,
           "fashion-mnist", n=N, metrics="fid,precision,recall")` against the 10,000 test images.
  cmnist   conditional `ddpm` on mnist-5k for --mnist-epochs (20), scored by `genlab.evaluate(run,
           n=N, metrics="fid,precision,recall,label_accuracy")` (DDIM-50, guidance 1, the classes in
           turn): label accuracy is the share of samples drawn for class k that the domain classifier
           calls k.

Targets: DDIM-50's FID at most 15% above DDPM-1000's, at >= 15x DDPM-1000's sampling speed
(images/s); conditional label accuracy on mnist-5k >= 90%.

Timed blocks (training, each sampler) wait for a quiet machine first (up to 15 min) and report how
many cores other processes kept busy meanwhile. Runs, samples and a cache of real features of their
own go to a temporary folder unless --keep DIR; with --reuse, finished runs and sample files found
there (same settings) are scored again instead of being trained and drawn again.

    python benchmarks/ddpm_quality.py                       # everything: ~2.5 h on 2 CPU cores
    python benchmarks/ddpm_quality.py --budget-minutes 30   # fashion for a 30-minute training budget
    python benchmarks/ddpm_quality.py --parts cmnist        # mnist-5k only: ~25 min
    python benchmarks/ddpm_quality.py --smoke               # tiny data, model and samples: ~2 min
    python benchmarks/ddpm_quality.py --write               # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.data.transforms import to_uint8
from genlab.eval.evaluate import Evaluation

from _common import LoadMeter, machine_line, markdown_table, publish, timed
from gan_quality import wait_for_quiet

PARTS = ("fashion", "cmnist")
SECTION = "ddpm_quality"
FID_MARGIN = 0.15  # DDIM's FID may exceed DDPM's by this share
SPEED_TARGET = 15.0  # DDIM's sampling images/s over DDPM's
LABEL_TARGET = 0.90
TIMING_FILE = "bench_timing.json"  # a run's training wall time and load, and what it was trained for (--reuse)
# --smoke: a tiny UNet and chain, a few hundred images, a few samples: checks the script end to end.
SMOKE_MODEL = {"channels": 8, "channel_mult": (1, 2), "diffusion_steps": 50}
SMOKE_IMAGES, SMOKE_TEST_IMAGES, SMOKE_N, SMOKE_DDIM_STEPS = 256, 128, 20, 5


# ---------------------------------------------------------------- training


def smoke_splits(data: str, seed: int) -> tuple[genlab.ImageDataset, genlab.ImageDataset]:
    """Seeded subsets of `data`'s splits (SMOKE_IMAGES train, SMOKE_TEST_IMAGES test), in memory."""
    generator = torch.Generator().manual_seed(seed)
    train, test = genlab.load_dataset(data, split="train"), genlab.load_dataset(data, split="test")
    return (train.subset(torch.randperm(len(train), generator=generator)[:SMOKE_IMAGES]),
            test.subset(torch.randperm(len(test), generator=generator)[:SMOKE_TEST_IMAGES]))


def _same(recorded: dict, key: dict) -> bool:
    """Whether a sidecar was written for `key` (compared as JSON: tuples read back as lists)."""
    return recorded.get("key") == json.loads(json.dumps(key))


def train_ddpm(out: Path, data, test_data, settings: dict, epochs: int | None, budget_s: float | None,
               seed: int, log, reuse: bool = False, max_wait: float = 900.0) -> dict:
    """Train a ddpm into `out` for `epochs`, or epoch by epoch within `budget_s` wall seconds.

    Returns {"wall", "other", "epochs", "reused"}; reuses a finished run there trained for the same
    key when `reuse`.
    """
    key = {"data": data if isinstance(data, str) else data.name, "size": len(data), "settings": settings,
           "epochs": epochs, "budget_s": budget_s, "seed": seed}
    if reuse:
        try:
            timing = json.loads((out / TIMING_FILE).read_text())
            if _same(timing, key) and genlab.Run.load(out).info["status"] == "completed":
                log(f"  reusing the finished run at {out} (trained earlier: wall {timing['wall']:.0f} s)")
                return {**timing, "reused": True}
        except (OSError, ValueError, genlab.GenlabError):
            pass
    wait_for_quiet(log, max_wait=max_wait)
    common = {"test_data": None if isinstance(data, str) else test_data, "seed": seed, "progress": False,
              "sample_every": 0}
    with LoadMeter() as load:
        start = time.perf_counter()
        if budget_s is None:
            genlab.train("ddpm", data, out, epochs=epochs, model_config=settings, overwrite=True, **common)
            done = epochs
        else:
            done, last = 0, 0.0
            while done == 0 or time.perf_counter() - start + last <= budget_s:
                began = time.perf_counter()
                if done == 0:
                    genlab.train("ddpm", data, out, epochs=1, model_config=settings, overwrite=True, **common)
                else:  # continue the same run: its stored settings, data, RNG state and optimizer
                    genlab.train("ddpm", data, out, epochs=done + 1, resume=True, **common)
                last, done = time.perf_counter() - began, done + 1
                log(f"  epoch {done} took {last:.0f} s; {time.perf_counter() - start:.0f} s of the "
                    f"{budget_s:.0f} s budget spent")
        wall = time.perf_counter() - start
    timing = {"key": key, "wall": wall, "other": load.other_cores, "epochs": done}
    (out / TIMING_FILE).write_text(json.dumps(timing))
    return {**timing, "reused": False}


def training_row(label: str, out: Path, timing: dict, budget_s: float | None, log) -> dict:
    """What a run's history says: images seen, steps' own images/s, last losses; its size and wall time."""
    run = genlab.Run.load(out)
    history = run.history
    for r in history:
        log(f"  {label} epoch {r['epoch']}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in r.items() if k != "epoch" and isinstance(v, (int, float))))
    seconds = sum(r["seconds"] for r in history)
    images = sum(r["seconds"] * r["images_per_second"] for r in history)
    nonfinite = sorted({k for r in history for k, v in r.items() if isinstance(v, float) and not math.isfinite(v)})
    config = run.info["model"]["config"]
    return {"label": label, "data": run.info["data"]["spec"], "run": run, "epochs": len(history),
            "images": images, "train_seconds": seconds, "images_per_second": images / seconds,
            "wall": timing["wall"], "other": timing["other"], "reused": timing["reused"], "budget_s": budget_s,
            "parameters": sum(p.numel() for p in run.model.network.parameters()),
            "model": f"{config['channels']} x {tuple(config['channel_mult'])}, T = {config['diffusion_steps']}",
            "loss": history[-1].get("loss"), "test_loss": history[-1].get("test_loss"), "nonfinite": nonfinite}


# ---------------------------------------------------------------- sampling


def draw(run, trained_wall: float, path: Path, sampler: str, steps: int, n: int, seed: int, log,
         reuse: bool = False, max_wait: float = 900.0) -> dict:
    """n samples of `run` with `sampler` for `steps` steps (eta 0 for DDIM), timed, saved to `path` (.npz uint8).

    Returns {"seconds", "other", "reused"}; reuses the file when `reuse` and it was drawn for the same
    key from this very run (its recorded training wall time, `trained_wall`, stands in for its identity).
    """
    key = {"sampler": sampler, "steps": steps, "n": n, "seed": seed, "run": str(run.path),
           "epochs": run.info.get("epochs_completed"), "trained_wall": trained_wall}
    sidecar = path.with_suffix(".json")
    if reuse and path.exists() and sidecar.exists():
        timing = json.loads(sidecar.read_text())
        if _same(timing, key):
            log(f"  reusing {path.name} ({sampler}, {steps} steps: drawn earlier in {timing['seconds']:.0f} s)")
            return {**timing, "reused": True}
    wait_for_quiet(log, max_wait=max_wait)
    options = {"sampler": sampler, "steps": steps} | ({"eta": 0.0} if sampler == "ddim" else {})
    run.sample(2, generator=torch.Generator().manual_seed(seed), sampler="ddim", steps=1)  # warm-up, untimed
    images, seconds, other_cores = timed(lambda: run.sample(n, generator=torch.Generator().manual_seed(seed), **options))
    np.savez(path, images=to_uint8(images).numpy())
    timing = {"key": key, "seconds": seconds, "other": other_cores}
    sidecar.write_text(json.dumps(timing))
    return {**timing, "reused": False}


def fashion_part(args, folder: Path, log) -> tuple[dict, list[dict]]:
    """Train on fashion-mnist, draw with DDIM and DDPM, score both: (training row, [DDIM row, DDPM row])."""
    data = "fashion-mnist"
    if args.smoke:
        data, test_data = smoke_splits(data, args.seed)
        settings = dict(SMOKE_MODEL)
    else:
        test_data, settings = None, {}
    budget_s = None if args.budget_minutes is None else args.budget_minutes * 60
    stated = f"a {args.budget_minutes:g}-minute budget" if budget_s else f"{args.fashion_epochs} epoch(s)"
    log(f"training ddpm on fashion-mnist for {stated}")
    out = folder / "fashion-mnist" / "ddpm"
    timing = train_ddpm(out, data, test_data, settings, None if budget_s else args.fashion_epochs, budget_s,
                        args.seed, log, args.reuse, max_wait=args.max_wait)
    trained = training_row("genlab ddpm", out, timing, budget_s, log)
    run = trained["run"]
    chain = run.model.config.diffusion_steps
    rows = []
    for sampler, steps in (("ddim", args.ddim_steps), ("ddpm", chain)):
        name = f"{sampler.upper()}-{steps}"
        log(f"drawing {args.n} samples with {name}")
        path = out.parent / f"samples_{sampler}_{steps}.npz"
        timed = draw(run, trained["wall"], path, sampler, steps, args.n, args.seed, log, args.reuse,
                     max_wait=args.max_wait)
        result = genlab.evaluate(str(path), "fashion-mnist", n=args.n, metrics="fid,precision,recall")
        log(f"  {name}: {timed['seconds']:.0f} s ({args.n / timed['seconds']:.2f} images/s), "
            f"{result.metrics} (floor {result.floor})")
        rows.append({"label": name, "passes": steps, "result": result, **timed,
                     "images_per_second": args.n / timed["seconds"]})
    return trained, rows


def cmnist_part(args, folder: Path, log) -> tuple[dict, Evaluation]:
    """Train a conditional ddpm on mnist-5k and score it with label accuracy: (training row, evaluation)."""
    data = "mnist-5k"
    if args.smoke:
        data, test_data = smoke_splits(data, args.seed)
        settings = {**SMOKE_MODEL, "conditional": True}
    else:
        test_data, settings = None, {"conditional": True}
    log(f"training a conditional ddpm on mnist-5k for {args.mnist_epochs} epoch(s)")
    out = folder / "mnist-5k" / "conditional_ddpm"
    timing = train_ddpm(out, data, test_data, settings, args.mnist_epochs, None, args.seed, log, args.reuse,
                        max_wait=args.max_wait)
    trained = training_row("genlab conditional ddpm", out, timing, None, log)
    result = genlab.evaluate(trained["run"], "mnist-5k", n=args.n, metrics="fid,precision,recall,label_accuracy")
    log(f"  conditional ddpm on mnist-5k: {result.metrics} (floor {result.floor})")
    return trained, result


# ---------------------------------------------------------------- tables


def _f(value, fmt="{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def training_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        budget = "-" if r["budget_s"] is None else f"{r['budget_s'] / 60:g} min"
        body.append([
            r["label"], r["data"], f"{r['model']}, {r['parameters']:,} params", f"{r['epochs']} ({r['images']:,.0f})",
            budget, f"{r['wall']:.0f} s ({r['train_seconds']:.0f} s){' *' if r['reused'] else ''}",
            f"{r['images_per_second']:,.0f}", _f(r["loss"]), _f(r["test_loss"]), ", ".join(r["nonfinite"]) or "none",
            f"{r['other']:.2f}",
        ])
    return markdown_table(
        ["Run", "Data", "UNet", "Epochs (images seen)", "Budget", "Wall (train steps)", "Train images/s",
         "Loss (last epoch)", "Test loss", "Non-finite", "Other procs (cores)"], body)


def _scores(result: Evaluation) -> list[str]:
    m, fl = result.metrics, result.floor
    return [f"{result.info['counts']['samples']:,} vs {result.info['counts']['reference']:,}",
            f"**{m['fid']:.2f}** ({fl['fid']:.2f})", f"{m['precision']:.3f} ({fl['precision']:.3f})",
            f"{m['recall']:.3f} ({fl['recall']:.3f})"]


def sampler_table(rows: list[dict]) -> str:
    body = [[r["label"], str(r["passes"]), *_scores(r["result"]),
             f"{r['seconds']:.0f} s{' *' if r['reused'] else ''}", f"{r['images_per_second']:.2f}",
             f"{r['other']:.2f}"] for r in rows]
    return markdown_table(
        ["Sampler", "Network passes per image", "Samples vs test images", "FID (floor)", "Precision (floor)",
         "Recall (floor)", "Sampling wall", "Sampling images/s", "Other procs (cores)"], body)


def conditional_table(result: Evaluation) -> str:
    m, fl = result.metrics, result.floor
    return markdown_table(
        ["Run", "Samples vs test images", "FID (floor)", "Precision (floor)", "Recall (floor)",
         "Label accuracy (floor)"],
        [["genlab conditional ddpm, DDIM", *_scores(result),
          f"**{m['label_accuracy']:.3f}** ({fl['label_accuracy']:.3f})"]])


def verdicts(samplers: list[dict], trained: dict | None, conditional: tuple[dict, Evaluation] | None) -> list[str]:
    out = []
    if samplers:
        ddim, ddpm = samplers
        ratio = ddim["result"].metrics["fid"] / ddpm["result"].metrics["fid"]
        speed = ddim["images_per_second"] / ddpm["images_per_second"]
        after = f"{trained['epochs']} epoch(s), {trained['wall'] / 60:.1f} min of training"
        out.append(f"Fashion-MNIST after {after}: {ddim['label']} FID {ddim['result'].metrics['fid']:.2f} against "
                   f"{ddpm['label']}'s {ddpm['result'].metrics['fid']:.2f}, ratio {ratio:.3f} (target <= "
                   f"{1 + FID_MARGIN:.2f}): {'met' if ratio <= 1 + FID_MARGIN else 'NOT met'}.")
        out.append(f"Sampling speed: {ddim['label']} {ddim['images_per_second']:.2f} images/s against "
                   f"{ddpm['label']}'s {ddpm['images_per_second']:.2f}, {speed:.1f}x (target >= {SPEED_TARGET:.0f}x): "
                   f"{'met' if speed >= SPEED_TARGET else 'NOT met'}.")
    if conditional:
        row, result = conditional
        accuracy = result.metrics["label_accuracy"]
        out.append(f"Conditional DDPM on mnist-5k, {row['epochs']} epoch(s): label accuracy {accuracy:.1%} (target >= "
                   f"{LABEL_TARGET:.0%}): {'met' if accuracy >= LABEL_TARGET else 'NOT met'}.")
    return out


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)} (default all)")
    parser.add_argument("--fashion-epochs", type=int, default=3, help="default 3 (180,000 images)")
    parser.add_argument("--budget-minutes", type=float, metavar="M",
                        help="instead of --fashion-epochs: train fashion-mnist for whole epochs within M minutes "
                             "of wall time")
    parser.add_argument("--mnist-epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000, help="samples per sampler (and held-out images for the floor)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep runs and sample files in DIR (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: score finished runs and sample files found there (same settings) "
                             "instead of training and drawing them again; their times are the ones recorded then")
    parser.add_argument("--smoke", action="store_true",
                        help=f"check the script end to end: {SMOKE_IMAGES} training images, a tiny UNet {SMOKE_MODEL}, "
                             f"1 epoch, {SMOKE_N} samples, DDIM-{SMOKE_DDIM_STEPS}, no waiting for a quiet machine")
    parser.add_argument("--max-wait", type=float, default=900.0,
                        help="seconds to wait for a quiet machine before each timed block (default 900)")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep DIR (where the earlier runs are)")
    if args.smoke and args.write:
        parser.error("--smoke numbers are no benchmark: drop --write")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if bad := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {bad}; choose from {PARTS}")
    if args.smoke:
        args.fashion_epochs = args.mnist_epochs = 1
        args.n, args.ddim_steps, args.max_wait = SMOKE_N, SMOKE_DDIM_STEPS, 0.0

    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    log(machine_line())
    trained_rows, samplers, conditional = [], [], None
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        os.environ["GENLAB_CACHE"] = str(folder / "cache")  # real features and floors of this run's own
        if "fashion" in parts:
            trained, samplers = fashion_part(args, folder, log)
            trained_rows.append(trained)
        if "cmnist" in parts:
            conditional = cmnist_part(args, folder, log)
            trained_rows.append(conditional[0])

    total = time.perf_counter() - began
    command = "python benchmarks/ddpm_quality.py " + " ".join(filter(None, [
        f"--parts {','.join(parts)}",
        f"--budget-minutes {args.budget_minutes:g}" if args.budget_minutes is not None
        else f"--fashion-epochs {args.fashion_epochs}",
        f"--mnist-epochs {args.mnist_epochs} --n {args.n} --ddim-steps {args.ddim_steps} --seed {args.seed}",
        "--smoke" if args.smoke else ""]))
    reused = any(r["reused"] for r in trained_rows) or any(r["reused"] for r in samplers)
    sections = [
        f"Measured with `{command}` on {machine_line()}; this invocation took {total / 60:.0f} min"
        + (" (rows marked * were trained or drawn by an earlier invocation into the same --keep folder and "
           "re-scored here with --reuse; their times are those recorded then)." if reused else "."),
        ("Training (`genlab.train` with genlab's defaults; wall: end to end, with per-epoch validation and "
         "checkpoints, and for a budget one `genlab.train(resume=True)` call per epoch; in brackets the "
         "training steps' own time):"),
        training_table(trained_rows),
    ]
    if samplers:
        sections += [
            ("Fashion-MNIST samples, the same noise seed for both samplers (DDIM with eta 0; DDPM: the ancestral "
             "chain). Scores by genlab's shipped extractor; in brackets the real-vs-real floor: as many held-out "
             "training images as samples, against the same test images. Sampling wall: `run.sample(n)` at its "
             "default batch (`sample_batch_size`: 64 for a diffusion model on the CPU)."),
            sampler_table(samplers),
        ]
    if conditional:
        sections += [
            ("Conditional DDPM on mnist-5k (`genlab.evaluate(run)`: DDIM-50, the classes in turn; the "
             "label-accuracy floor is the classifier's accuracy on the real test images):"),
            conditional_table(conditional[1]),
        ]
    sections.append("\n".join(f"**{v}**" for v in verdicts(samplers, trained_rows[0] if samplers else None,
                                                           conditional)))
    body = "\n\n".join(sections)
    return publish(SECTION, body, args.write)


if __name__ == "__main__":
    sys.exit(main())
