"""Train genlab's shipped feature extractors, reproducibly, on the CPU.

    .venv/bin/python scripts/train_extractors.py                 # both, into src/genlab/eval/weights/
    .venv/bin/python scripts/train_extractors.py --only digits   # one of them

Each recipe below is the whole record of how a shipped weight file was made: dataset,
seed, epochs, optimiser settings and augmentation. Training is seeded (initialisation,
dropout, batch order and jitter) and runs on the CPU with a fixed thread count, so the same
command on the same kind of machine writes the same file. The script prints each epoch's
test accuracy, the final one, the file's sha256 and the registry line to paste into
src/genlab/eval/features.py (EXTRACTORS), which refuses any file whose checksum differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.data import load_splits
from genlab.eval.features import (
    EXTRACTORS,
    WEIGHTS_DIR,
    Augment,
    ClassifierConfig,
    DomainClassifier,
    accuracy,
    save_extractor,
    train_classifier,
)


@dataclass(frozen=True)
class Recipe:
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    aug: Augment
    config: ClassifierConfig
    target: float  # test accuracy the extractor must reach (issue 3)


RECIPES = {
    # 4,000 training digits: small rotations, zooms and shifts stand in for more data.
    "digits": Recipe(
        dataset="mnist-5k", epochs=60, batch_size=128, lr=3e-3, weight_decay=5e-4,
        aug=Augment(degrees=10.0, scale=0.1, shift=2.0), config=ClassifierConfig(), target=0.985,
    ),
    # 60,000 clothing images: left-right mirroring and small shifts keep the classes the same.
    "fashion": Recipe(
        dataset="fashion-mnist", epochs=12, batch_size=128, lr=3e-3, weight_decay=5e-4,
        aug=Augment(shift=2.0, hflip=True), config=ClassifierConfig(), target=0.91,
    ),
}  # fmt: skip


def train_one(name: str, recipe: Recipe, seed: int, out_dir: Path, threads: int) -> None:
    train, test = load_splits(recipe.dataset)
    print(f"== {name}: {recipe.dataset} ({len(train):,} train / {len(test):,} test), seed {seed}, "
          f"{recipe.epochs} epochs, {threads} thread(s)", flush=True)  # fmt: skip
    started = time.perf_counter()

    def report(epoch: int, model: DomainClassifier, stats: dict[str, float]) -> None:
        test_accuracy = accuracy(model, test.images, test.labels)
        print(
            f"epoch {epoch:3d}  loss {stats['loss']:.4f}  train acc {stats['train_accuracy']:.4f}  "
            f"test acc {test_accuracy:.4f}  {time.perf_counter() - started:7.1f}s",
            flush=True,
        )

    model = train_classifier(
        train.images, train.labels, recipe.config,
        epochs=recipe.epochs, seed=seed, batch_size=recipe.batch_size, lr=recipe.lr,
        weight_decay=recipe.weight_decay, aug=recipe.aug, on_epoch=report,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    test_accuracy = accuracy(model, test.images, test.labels)
    metadata = {
        "extractor": name,
        "class_names": list(train.class_names),
        "train": {
            "dataset": recipe.dataset,
            "train_images": len(train),
            "seed": seed,
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "lr": recipe.lr,
            "weight_decay": recipe.weight_decay,
            "augment": vars(recipe.aug),
            "threads": threads,
            "torch": torch.__version__,
        },
        "test_accuracy": round(test_accuracy, 6),
        "test_images": len(test),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EXTRACTORS[name].filename
    sha256 = save_extractor(path, model, metadata)
    verdict = "reached" if test_accuracy >= recipe.target else "MISSED"
    print(f"{name}: test accuracy {test_accuracy:.4f} on {len(test):,} images "
          f"(target {recipe.target:.3f} {verdict}); trained in {seconds:.0f}s")  # fmt: skip
    print(f"{name}: wrote {path} ({path.stat().st_size:,} bytes)")
    print(f'{name}: sha256="{sha256}"', flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="train only this extractor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the .safetensors files")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads (default 1: the shipped files were made with 1; another count may change the bytes)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (experiments only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    for name in args.only or sorted(RECIPES):
        recipe = RECIPES[name]
        if args.epochs is not None:
            recipe = Recipe(**{**vars(recipe), "epochs": args.epochs})
        train_one(name, recipe, args.seed, args.out, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
