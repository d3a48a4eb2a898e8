"""One likelihood table across families, measured as `genlab likelihood` measures it.

  binarized  the binarized-MNIST protocol (dynamic binarization for training, one seeded
             binarization of the test images) on --data (mnist-5k here; `mnist`, the full
             60,000 digits, where its IDX files are present): a VAE trained on the ELBO, an
             IWAE trained on the k = 50 bound (Burda et al. 2016), both scored by their
             importance-weighted bound with k = --iw-samples (5,000 as in the paper), and a
             PixelCNN with a Bernoulli output (exact). Published on binarized MNIST (60,000
             training images): VAE 86.76 and IWAE 84.78 nats (Burda et al. 2016, k = 5,000),
             PixelCNN 81.30 (van den Oord et al. 2016); genlab's must rank the same way.
  discrete   8-bit pixels of --data-8bit (default mnist-5k): PixelCNN's 256-way softmax (exact),
             RealNVP (a dequantized continuous density: an estimate of a lower bound on the
             discrete likelihood) and DDPM's variational bound, in bits per dimension.

Every run: `genlab.train(family, data, out, epochs=E, seed=0, progress=False, sample_every=0,
model_config=...)`, then `genlab.likelihoods(runs)` on the test split (DDPM's bound costs 100
network passes per image: a part with a DDPM scores a seeded 1,000-image subset for all rows).

    python benchmarks/likelihood_table.py                     # both parts, default epochs
    python benchmarks/likelihood_table.py --parts binarized --epochs vae=50,iwae=50,pixelcnn=10
    python benchmarks/likelihood_table.py --write             # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import genlab

from _common import LoadMeter, machine_line, markdown_table, publish

SECTION = "likelihood_table"
PARTS = ("binarized", "discrete")
PUBLISHED = {"vae": 86.76, "iwae": 84.78, "pixelcnn": 81.30}  # binarized MNIST, nats (see the docstring)
SAMPLES = 64  # images drawn at once for the sampling speed (PixelCNN: pixel by pixel, the whole batch together)
DEFAULT_EPOCHS = {"vae": 50, "iwae": 50, "pixelcnn": 10, "pixelcnn-8bit": 10, "realnvp": 10, "ddpm": 20}


def plan(part: str, iw_samples: int) -> list[tuple[str, str, dict]]:
    """(label, family, settings) of every run in a part."""
    if part == "binarized":
        return [
            ("vae", "vae", {"binarize": True, "iw_samples": iw_samples}),
            ("iwae", "vae", {"binarize": True, "iw_samples": iw_samples, "train_samples": 50}),
            ("pixelcnn", "pixelcnn", {"binarize": True}),
        ]
    return [("pixelcnn-8bit", "pixelcnn", {}), ("realnvp", "realnvp", {}), ("ddpm", "ddpm", {})]


def sampling_speed(out: Path, seed: int) -> tuple[float, float]:
    """(images/s, other processes' cores) of drawing SAMPLES images from the run in one batch, seeded."""
    import torch

    run = genlab.Run.load(out)
    with LoadMeter() as load:
        start = time.perf_counter()
        run.sample(SAMPLES, generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - start
    return SAMPLES / seconds, load.other_cores


def parse_epochs(text: str | None) -> dict[str, int]:
    epochs = dict(DEFAULT_EPOCHS)
    for item in (text or "").split(","):
        if item.strip():
            label, _, value = item.partition("=")
            if label.strip() not in DEFAULT_EPOCHS or not value.strip().isdigit():
                raise SystemExit(f"--epochs takes LABEL=N items with labels from {', '.join(DEFAULT_EPOCHS)}; got {item!r}")
            epochs[label.strip()] = int(value)
    return epochs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--data", default="mnist-5k", help="data of the binarized part (mnist where present)")
    parser.add_argument("--data-8bit", default="mnist-5k", help="data of the discrete part")
    parser.add_argument("--epochs", help=f"LABEL=N,... (defaults {DEFAULT_EPOCHS})")
    parser.add_argument("--iw-samples", type=int, default=5000, help="k of the VAE and IWAE bounds (default 5,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep the runs in DIR; finished runs found there are reused")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if bad := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {bad}; choose from {PARTS}")
    epochs = parse_epochs(args.epochs)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    log(machine_line())
    sections = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        for part in parts:
            data = args.data if part == "binarized" else args.data_8bit
            runs, walls = [], {}
            for label, family, settings in plan(part, args.iw_samples):
                out = folder / part / label
                try:
                    finished = genlab.Run.load(out).info.get("epochs_completed") == epochs[label]
                except genlab.GenlabError:  # not there, or cut off in its first epoch
                    finished = False
                if finished:
                    log(f"reusing {out}")
                else:
                    log(f"training {label} ({family}) on {data}, {epochs[label]} epochs")
                    with LoadMeter() as load:
                        start = time.perf_counter()
                        genlab.train(family, data, out, epochs=epochs[label], seed=args.seed, progress=False,
                                     sample_every=0, model_config=settings, overwrite=True)
                    walls[label] = (time.perf_counter() - start, load.other_cores)
                runs.append(out)
            log(f"scoring {part}")
            table = genlab.likelihoods(runs, seed=args.seed)
            speeds = {out.name: sampling_speed(out, args.seed) for out in runs}
            rows = []
            for (label, family, _), row in zip(plan(part, args.iw_samples), table.rows):
                wall = walls.get(label)
                rows.append([
                    label, family, str(row.epochs), row.kind, row.data_model, f"{row.nll_nats:.2f}",
                    f"{row.bits_per_dim:.4f}", f"{PUBLISHED[label]:.2f}" if part == "binarized" else "-",
                    "-" if wall is None else f"{wall[0] / 60:.1f} min ({wall[1]:.2f})",
                    f"{speeds[label][0]:,.1f} ({speeds[label][1]:.2f})",
                ])
            header = ["run", "family", "epochs", "likelihood", "data model", "NLL (nats)", "bits/dim",
                      "published, binarized MNIST (60k)", "training wall (other procs' cores)",
                      f"sampling images/s, {SAMPLES} at once (other procs' cores)"]
            ranking = " < ".join(r.path.rsplit("/", 1)[-1] for r in sorted(table.rows, key=lambda r: r.nll_nats))
            verdict = ""
            if part == "binarized":
                by_label = {label: row.nll_nats for (label, _, _), row in zip(plan(part, args.iw_samples), table.rows)}
                same = by_label["pixelcnn"] < by_label["iwae"] < by_label["vae"]
                verdict = (f"\n\n**Ranking (lowest NLL first): {ranking}; the literature's is pixelcnn < iwae < vae: "
                           f"{'the same' if same else 'NOT the same'}.**")
            sections.append(
                f"**{part}**, {data} test split: {table.info['images']:,} of {table.info['test_images']:,} images "
                f"(seed {args.seed}), the same for every row.\n\n" + markdown_table(header, rows) + verdict
            )
    command = " ".join(["python benchmarks/likelihood_table.py", *(argv if argv is not None else sys.argv[1:])])
    body = (f"Measured with `{command.replace(' --write', '')}` on {machine_line()}; took "
            f"{(time.perf_counter() - began) / 60:.0f} min.\n\n" + "\n\n".join(sections))
    return publish(SECTION, body, args.write)


if __name__ == "__main__":
    os.environ.setdefault("GENLAB_CACHE", tempfile.gettempdir() + "/genlab-bench-cache")
    sys.exit(main())
