"""Train, measure and package a model of genlab's zoo, reproducibly, on the CPU.

    .venv/bin/python scripts/train_zoo.py vae-mnist5k                 # train, measure, package one model
    .venv/bin/python scripts/train_zoo.py --list                       # the recipes
    .venv/bin/python scripts/train_zoo.py ddpm-fashion --work zoo-work # resumable: run it again after a stop

Each recipe below is the whole record of how a zoo model was made: family, data, settings, epochs and seed.
The script
  1. trains the run into --work/NAME (seeded; a fixed number of CPU threads, 2 unless --threads says
     otherwise; resumed exactly if it was stopped, so the same command gives the same weights),
  2. packages it into src/genlab/zoo/models/NAME: run.json, model.safetensors with its large tensors stored as
     float16 (genlab.run.save_half_precision_model: half the bytes), history.jsonl, the last training grid,
     and no optimizer state,
  3. measures the packaged weights (after the float16 round trip) with `genlab.evaluate`: FID, precision and
     recall (and label accuracy for a conditional model) of EVAL_SAMPLES images against the test split,
     beside the real-vs-real floor, into the package's metrics.json,
  4. writes the model card (card.md: data, recipe, time, numbers, known weaknesses) and records every
     file's sha256 in src/genlab/zoo/catalog.json, which `genlab.zoo` checks on every load.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab import zoo
from genlab.io import atomic_write_bytes, atomic_write_json, read_json
from genlab.run import (
    HISTORY_FILE,
    METRICS_FILE,
    RUN_FILE,
    SAMPLES_DIR,
    is_run_dir,
    read_history,
    read_run_info,
    save_half_precision_model,
)

EVAL_SAMPLES = {"mnist-5k": 1000, "fashion-mnist": 5000}  # the issue's: all 1,000 test digits; 5,000 of fashion's


@dataclass(frozen=True)
class Recipe:
    family: str
    data: str
    summary: str
    epochs: int | None = None  # None: the family's default budget of steps for this data
    settings: dict[str, Any] = field(default_factory=dict)  # model config fields (genlab train --set)
    seed: int = 0
    weaknesses: str = ""  # the card's "known weaknesses", from looking at the samples and numbers
    # Config fields that only change how the packaged model samples (a GAN's truncation), set in its run.json at
    # packaging: the trained weights are the same whatever they are.
    sampling: dict[str, Any] = field(default_factory=dict)


# The budgets: the families' defaults where those are the best measured in minutes (benchmarks/README.md, time to
# quality), longer where more training measurably helped; each well inside the 2 hours of this machine.
RECIPES = {
    "vae-mnist5k": Recipe(
        "vae", "mnist-5k", "VAE at its defaults: a mixture prior, blurred but legible digits",
        weaknesses="Samples are the decoder's mean image, so strokes are blurred and recall is low; its "
        "likelihood is a bound (importance-weighted), not exact.",
    ),
    "vae-mnist5k-cond": Recipe(
        "vae", "mnist-5k", "Conditional VAE at its defaults: z from a mixture fitted to its class's encodings",
        settings={"conditional": True},
        weaknesses="Blurred strokes, as every VAE's mean image; within a class its samples vary less than real "
        "digits do (recall is low). Its likelihood is a bound.",
    ),
    "gan-mnist5k": Recipe(
        "gan", "mnist-5k", "The study pages' MLP GAN at its defaults: D dropout 0.3, an EMA of G",
        weaknesses="An MLP generator: strokes are sometimes broken or speckled; no likelihood.",
    ),
    "dcgan-mnist5k": Recipe(
        "dcgan", "mnist-5k", "DCGAN at its defaults: BatchNorm D with lazy R1, 240 epochs",
        weaknesses="Some digits are malformed; no likelihood.",
    ),
    "dcgan-mnist5k-cond": Recipe(
        "dcgan", "mnist-5k", "Conditional DCGAN at its defaults: BatchNorm D with an auxiliary classifier, 240 epochs",
        settings={"conditional": True},
        weaknesses="Less varied within a class than real digits (recall below the unconditional models'); no "
        "likelihood.",
    ),
    "wgan-gp-mnist5k": Recipe(
        "wgan-gp", "mnist-5k", "WGAN-GP, 400 epochs",
        epochs=400,
        weaknesses="Softer strokes than the DCGAN's; no likelihood.",
    ),
    "ddpm-mnist5k": Recipe(
        "ddpm", "mnist-5k", "DDPM, the tiny UNet, 96 epochs, SDE-DPM-Solver++ in 20 steps",
        epochs=96,
        weaknesses="Sampling takes 20 network passes per image; the likelihood is a bound.",
    ),
    # No guidance by default: at the default budget (24 epochs) guidance 1 gave FID 12.7 and 95.8% label accuracy on
    # 500 samples, guidance 3 FID 35.4 and 100% (benchmarks/README.md, time to quality).
    "ddpm-mnist5k-cond": Recipe(
        "ddpm", "mnist-5k", "Conditional DDPM, the tiny UNet, 96 epochs, SDE-DPM-Solver++ in 20 steps",
        epochs=96, settings={"conditional": True},
        weaknesses="`--guidance 2` or more draws the asked-for class more surely, at the cost of FID and variety.",
    ),
    "ddpm-fashion": Recipe(
        "ddpm", "fashion-mnist", "DDPM, the tiny UNet, 10 epochs of Fashion-MNIST, SDE-DPM-Solver++ in 20 steps",
        epochs=10,
        weaknesses="Fine textures (prints, knits) are smoothed over.",
    ),
    # Guidance 2 by default: fashion-mnist's classes overlap (shirt, T-shirt, pullover, coat), so the real test
    # images score 93.1% with the shipped classifier; guidance draws each class's typical garment.
    "ddpm-fashion-cond": Recipe(
        "ddpm", "fashion-mnist", "Conditional DDPM, the tiny UNet, 10 epochs of Fashion-MNIST, guidance 2, "
        "SDE-DPM-Solver++ in 20 steps",
        epochs=10, settings={"conditional": True, "guidance": 2.0},
        weaknesses="Guidance 2 trades variety for class fidelity (`--guidance 1` draws more varied garments, less "
        "surely of the asked-for class); fine textures are smoothed over.",
    ),
    # Truncation 0.9: after its 48 epochs, 5,000 samples, it labelled 95.4% of them right at 1 (FID 42.26; the
    # real test images score 93.1%) and 96.5% at 0.9 (FID 43.05); at 29 epochs, 1,000 samples: 93.5% at 1, 97.0%
    # at 0.8 (FID +4).
    "dcgan-fashion-cond": Recipe(
        "dcgan", "fashion-mnist", "Conditional DCGAN: BatchNorm D with an auxiliary classifier, 48 epochs, "
        "truncation 0.9",
        epochs=48, settings={"conditional": True}, sampling={"truncation": 0.9},
        weaknesses="Recall is near 0 (0.003 against the floor's 0.84): its samples, though varied to the eye, lie in "
        "a small part of the extractor's feature space, which `genlab eval` flags as suspected mode collapse; "
        "truncation 0.9 narrows them a little more (`--truncation 1` for the full prior); coarse textures; no "
        "likelihood.",
    ),
    "pixelcnn-mnist5k": Recipe(
        "pixelcnn", "mnist-5k", "Gated PixelCNN, 15 epochs",
        epochs=15,
        weaknesses="Pixel-by-pixel sampling loses global shape: many samples are not digits; exact likelihood.",
    ),
    "realnvp-mnist5k": Recipe(
        "realnvp", "mnist-5k", "Real NVP, 100 epochs",
        epochs=100,
        weaknesses="Samples are noisy and often not digits, the usual weakness of a small flow; exact likelihood.",
    ),
}  # fmt: skip


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(name: str, recipe: Recipe, work: Path) -> Path:
    """The trained run at work/NAME (trained now, or continued exactly where it stopped)."""
    out = work / name
    resume = is_run_dir(out)
    if resume:
        info = read_run_info(out)
        if info["status"] == "completed" and info["epochs_completed"] == info["train"]["epochs"]:
            print(f"== {name}: {out} is trained ({info['epochs_completed']} epochs); packaging it", flush=True)
            return out
    print(f"== {name}: {'resuming' if resume else 'training'} {recipe.family} on {recipe.data} into {out}", flush=True)
    genlab.train(
        None if resume else recipe.family,
        None if resume else recipe.data,
        out,
        epochs=recipe.epochs,
        seed=None if resume else recipe.seed,
        device="cpu",
        resume=resume,
        model_config=None if resume else dict(recipe.settings),
    )
    return out


def package(name: str, recipe: Recipe, run_dir: Path, threads: int, samples: int | None = None) -> dict[str, Any]:
    """Copy the run's files into the zoo, measure them there (`samples` images, default EVAL_SAMPLES for the
    data), write the card; return the catalog entry."""
    target = zoo.ZOO_DIR / name
    staging = target.with_name(f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / SAMPLES_DIR).mkdir(parents=True)
    for file in (RUN_FILE, HISTORY_FILE):
        shutil.copyfile(run_dir / file, staging / file)
    if recipe.sampling:
        info = read_json(staging / RUN_FILE, "the run's run.json")
        info["model"]["config"].update(recipe.sampling)
        atomic_write_json(staging / RUN_FILE, info)
    save_half_precision_model(staging, run_dir)
    grids = sorted((run_dir / SAMPLES_DIR).glob("epoch_*.png"))
    if grids:
        shutil.copyfile(grids[-1], staging / SAMPLES_DIR / grids[-1].name)
    history = read_history(run_dir)
    train_seconds = sum(record["seconds"] for record in history)

    run = genlab.Run.load(staging)
    n = samples or EVAL_SAMPLES.get(recipe.data, 1000)
    metrics = "fid,precision,recall" + (",label_accuracy" if run.model.conditional else "")
    started = time.perf_counter()
    result = genlab.evaluate(run, n=n, metrics=metrics, seed=0)
    print(result.table(), flush=True)
    document = result.to_dict()
    document["source"]["path"] = zoo.PREFIX + name  # where a user finds it, not where it was measured
    atomic_write_json(staging / METRICS_FILE, document)
    eval_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in run.model.parameters())
    card = model_card(name, recipe, read_run_info(run_dir), document, train_seconds, eval_seconds, threads,
                      parameters)  # fmt: skip
    atomic_write_bytes(staging / zoo.CARD_FILE, card.encode())

    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    files = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    return {
        "summary": recipe.summary,
        "recipe": f"python scripts/train_zoo.py {name} --threads {threads}",
        "train_seconds": round(train_seconds, 1),
        "parameters": parameters,
        "files": {relative: sha256_of(target / relative) for relative in files},
    }


def model_card(name, recipe, info, measured, train_seconds, eval_seconds, threads, parameters) -> str:
    """card.md: what the model is, how it was made, its numbers beside their floors, its known weaknesses."""
    metrics, floor, counts = measured["metrics"], measured["floor"], measured["counts"]
    rows = "\n".join(
        f"| {key} | {value:.4g} | {floor.get(key, float('nan')):.4g} |" for key, value in metrics.items()
        if isinstance(value, (int, float))
    )  # fmt: skip
    settings = ", ".join(f"{k}={v}" for k, v in recipe.settings.items()) or "the family's defaults"
    if recipe.sampling:
        settings += "; sampling with " + ", ".join(f"{k}={v}" for k, v in recipe.sampling.items())
    return f"""# zoo:{name}

{recipe.summary}.

- **Family**: {recipe.family} ({parameters:,} parameters); **data**: {recipe.data} ({info["data"]["train_images"]:,} \
training images)
- **Recipe**: {settings}; {info["train"]["epochs"]} epochs of batch {info["train"]["batch_size"]}, seed {recipe.seed}, \
on the CPU with {threads} thread(s), torch {torch.__version__}: {train_seconds / 60:.1f} minutes of optimizer steps \
(the sum of history.jsonl's `seconds`; per-epoch sample grids and validation come on top)
- **Reproduce**: `python scripts/train_zoo.py {name} --threads {threads}` (seeded: the same weights on the same \
kind of machine and thread count)
- **Storage**: weight tensors as float16 (half the bytes); the numbers below were measured after that round trip

| metric | value | real vs real |
|---|---|---|
{rows}

{counts["samples"]:,} samples against the {counts["reference"]:,} images of the test split, the shipped \
`{measured["extractor"]["name"]}` extractor, seed 0 ({eval_seconds:.0f} s to measure).

**Known weaknesses**: {recipe.weaknesses or "none recorded"}
"""


def write_catalog(name: str, record: dict[str, Any]) -> None:
    """Put `record` under `name` in catalog.json (atomically), keeping the other entries."""
    values = read_json(zoo.CATALOG_FILE, "the zoo's catalog") if zoo.CATALOG_FILE.is_file() else {}
    models = dict(values.get("models", {}))
    models[name] = record
    atomic_write_json(
        zoo.CATALOG_FILE, {"format": "genlab-zoo", "format_version": 1, "models": dict(sorted(models.items()))}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="recipes to train and package")
    parser.add_argument("--list", action="store_true", help="print the recipes and stop")
    parser.add_argument("--work", type=Path, default=Path("zoo-work"), help="folder of the training runs")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the shipped models: 2)")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, recipe in RECIPES.items():
            print(f"{name:22s} {recipe.family:9s} {recipe.data:14s} {recipe.summary}")
        return 0
    unknown = [name for name in args.names if name not in RECIPES]
    if unknown:
        parser.error(f"no recipe {', '.join(unknown)}; --list shows them")
    torch.set_num_threads(args.threads)
    for name in args.names:
        run_dir = train(name, RECIPES[name], args.work)
        write_catalog(name, package(name, RECIPES[name], run_dir, args.threads))
        print(f"{name}: packaged into {zoo.ZOO_DIR / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
