"""GAN training throughput: genlab's loop against a per-sample DataLoader loop driving the same networks.

The issue's target: training images per second of each GAN (`gan`, `dcgan`, `wgan-gp`) on
mnist-5k through genlab's Trainer at least 1.0x that of a plain per-sample DataLoader loop of
the same networks.

In one process, on mnist-5k (train split, 4,000 images), batch 64 everywhere, each repeat
times, for each family in turn:

  genlab.train   `genlab.train(FAMILY, "mnist-5k", tmp, epochs=W+E, seed=0, progress=False,
                 sample_every=0)`: the first W epochs are a warm-up; over the last E, two
                 figures: "steps" is history's `images_per_second` (the training steps' own
                 time, as genlab reports it) and "epoch wall" is the time from each epoch's
                 start to its last step's end (adds batch slicing and the callbacks' per-step
                 work; leaves out the per-epoch validation and checkpoint, as the peers have none)
  as written     `genlab.build_model(FAMILY, train)` (same seed, so the same initial weights), its
                 `configure_optimizers()`, and `model.training_step((x, y), optimizers)` for each
                 batch of a `DataLoader(dataset, batch_size=64, shuffle=True, num_workers=0)`
                 whose per-sample Dataset does what torchvision's `MNIST.__getitem__` +
                 `ToTensor()` do (a PIL image per sample, back to a float tensor in [0, 1])
  lean           the same, with a leaner per-sample Dataset (a uint8 slice to float / 255 per
                 sample, no PIL round trip): the fastest a per-sample DataLoader gets
The peers get W untimed epochs, then E timed ones; images/s = images / wall seconds of those.
The loops run back to back within a repeat; genlab's speed-up is taken within each repeat
and the median over `--repeats` is the headline (this shared machine's speed drifts).

A measurement during which other processes kept more than `--max-other-load` cores busy
(from /proc/stat) is retried after a pause, up to `--retries` times; the quietest is kept.

    python benchmarks/gan_throughput.py              # 1 warm-up + 2 timed epochs, 3 repeats: ~6 min
    python benchmarks/gan_throughput.py --write      # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.training.trainer import Callback

from _common import MNISTAsTorchvision, PerSampleImages, machine_line, markdown_table, median, publish, quietest

FAMILIES = ("gan", "dcgan", "wgan-gp")
TARGET = 1.0
SECTION = "gan_throughput"
BATCH = 64


class EpochClock(Callback):
    """Per epoch: seconds from its start to its last step's end, and the images trained."""

    def __init__(self):
        self.epochs: list[tuple[float, int]] = []

    def on_epoch_start(self, trainer) -> None:
        self.start, self.last, self.images = time.perf_counter(), None, 0

    def on_step_end(self, trainer, metrics) -> None:
        self.last = time.perf_counter()
        self.images = trainer.progress.images_seen

    def on_epoch_end(self, trainer, record) -> None:
        self.epochs.append((self.last - self.start, self.images))


def time_genlab(family: str, train, args) -> dict[str, float]:
    """{"steps": history images/s, "wall": epoch-wall images/s} over the timed epochs of genlab.train."""
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as out:
        run = genlab.train(family, "mnist-5k", Path(out) / "run", epochs=args.warmup + args.epochs, seed=args.seed,
                           batch_size=BATCH, progress=False, sample_every=0, callbacks=[clock])
        history = run.history[args.warmup:]
    assert len(history) == args.epochs and all(r["d_loss"] == r["d_loss"] for r in history)
    images = sum(r["images_per_second"] * r["seconds"] for r in history)
    timed = clock.epochs[args.warmup:]
    return {"steps": images / sum(r["seconds"] for r in history),
            "wall": sum(n for _, n in timed) / sum(s for s, _ in timed)}


def time_dataloader(family: str, train, args, dataset_class) -> float:
    """Images/s of the model's own training_step driven by a per-sample DataLoader (batch 64, shuffled)."""
    torch.manual_seed(args.seed)
    model = genlab.build_model(family, train)
    optimizers = model.configure_optimizers()
    model.train()
    loader = torch.utils.data.DataLoader(dataset_class(train.images, train.labels), batch_size=BATCH, shuffle=True,
                                         num_workers=0)

    def run_epochs(n: int) -> int:
        seen = 0
        for _ in range(n):
            for x, y in loader:
                metrics = model.training_step((x, y), optimizers)
                seen += len(x)
            assert metrics["d_loss"] == metrics["d_loss"], "the loop's D loss became NaN"  # per epoch: n may be 0
        return seen

    run_epochs(args.warmup)
    start = time.perf_counter()
    seen = run_epochs(args.epochs)
    return seen / (time.perf_counter() - start)


LOOPS = {  # name -> fn(family, train, args) -> {figure: images/s}
    "genlab.train": time_genlab,
    "DataLoader loop, as written (PIL + ToTensor per sample)":
        lambda f, t, a: {"wall": time_dataloader(f, t, a, MNISTAsTorchvision)},
    "DataLoader loop, lean (uint8 -> float per sample)":
        lambda f, t, a: {"wall": time_dataloader(f, t, a, PerSampleImages)},
}
PEERS = [name for name in LOOPS if name != "genlab.train"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before timing (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--max-other-load", type=float, default=0.2,
                        help="retry a measurement when other processes kept more cores than this busy (default 0.2)")
    parser.add_argument("--retries", type=int, default=3, help="attempts per measurement (default 3)")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds to wait before a retry (default 10)")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]

    train = genlab.load_dataset("mnist-5k", split="train")
    # results[family][(loop, figure)] = [images/s per repeat]; loads[family][loop] = [cores per repeat]
    results = {f: {} for f in families}
    loads = {f: {name: [] for name in LOOPS} for f in families}
    began = time.perf_counter()
    print(f"{machine_line()}\nmnist-5k train: {len(train)} images, batch {BATCH}, {args.warmup} warm-up + "
          f"{args.epochs} timed epochs, {args.repeats} repeats", file=sys.stderr, flush=True)
    for repeat in range(1, args.repeats + 1):
        for family in families:
            for name, fn in LOOPS.items():  # interleaved: a busy spell hits every loop alike
                rates, other = quietest(lambda: fn(family, train, args), args)
                for figure, rate in rates.items():
                    results[family].setdefault((name, figure), []).append(rate)
                loads[family][name].append(other)
            print(f"[{time.perf_counter() - began:5.0f} s] repeat {repeat}, {family}: " + ", ".join(
                f"{n} {fig}: {v[-1]:,.0f} img/s" for (n, fig), v in results[family].items()), file=sys.stderr, flush=True)

    rows, verdicts = [], []
    for family in families:
        res = results[family]
        genlab_steps, genlab_wall = res[("genlab.train", "steps")], res[("genlab.train", "wall")]
        rows.append([family, "genlab.train: history images/s (steps only)", f"{median(genlab_steps):,.0f}",
                     " / ".join(f"{v:,.0f}" for v in genlab_steps), "-", "-",
                     f"{max(loads[family]['genlab.train']):.2f}"])
        rows.append([family, "genlab.train: epoch wall", f"{median(genlab_wall):,.0f}",
                     " / ".join(f"{v:,.0f}" for v in genlab_wall), "-", "-", ""])
        for peer in PEERS:
            values = res[(peer, "wall")]
            r_steps = [g / v for g, v in zip(genlab_steps, values)]
            r_wall = [g / v for g, v in zip(genlab_wall, values)]
            rows.append([family, peer, f"{median(values):,.0f}", " / ".join(f"{v:,.0f}" for v in values),
                         f"**{median(r_steps):.2f}x** ({' / '.join(f'{r:.2f}' for r in r_steps)})",
                         f"**{median(r_wall):.2f}x** ({' / '.join(f'{r:.2f}' for r in r_wall)})",
                         f"{max(loads[family][peer]):.2f}"])
            for figure, ratios in (("history images/s", r_steps), ("epoch wall", r_wall)):
                ratio = median(ratios)
                verdicts.append((family, peer, figure, ratio, ratio >= TARGET))
    table = markdown_table(
        ["Family", "Loop", "Images/s (median)", "Images/s, each repeat", "genlab (history) / this loop",
         "genlab (epoch wall) / this loop", "Other procs (cores, worst)"], rows)
    lines = []
    for family, peer, figure, ratio, ok in verdicts:
        lines.append(f"{family}: genlab ({figure}) / {peer.split(',')[1].split('(')[0].strip()} per-sample loop "
                     f"= {ratio:.3f}x (target >= {TARGET}x): {'met' if ok else 'NOT met'}")
    all_met = all(ok for *_, ok in verdicts)
    missed = sorted({f"{family} against the {peer.split(',')[1].split('(')[0].strip()} loop"
                     for family, peer, _, _, ok in verdicts if not ok})
    summary = (f"Target >= {TARGET}x for every family against both per-sample loops: "
               + ("met." if all_met else f"NOT met for {', '.join(missed)}."))
    total = time.perf_counter() - began
    command = (f"python benchmarks/gan_throughput.py --families {','.join(families)} --epochs {args.epochs} "
               f"--warmup {args.warmup} --repeats {args.repeats} --seed {args.seed}")
    body = (f"Measured with `{command}` on {machine_line()}; took {total / 60:.0f} min.\n\n{table}\n\n"
            + "\n".join(f"- {line}." for line in lines) + f"\n\n**{summary}**")
    return publish(SECTION, body, args.write)


if __name__ == "__main__":
    sys.exit(main())
