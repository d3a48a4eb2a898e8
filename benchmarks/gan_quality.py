"""GAN sample quality: FID, precision and recall of genlab's GANs, and a plain DCGAN loop for scale.

The issue's numbers, each from `genlab.train(FAMILY, DATA, out, epochs=E, seed=0, progress=False,
sample_every=0, model_config=...)` with genlab's defaults, then `genlab.evaluate(out, n=N,
metrics="fid,precision,recall[,label_accuracy]")` (genlab's shipped extractor, the real-vs-real
floor beside every number):

  mnist      `gan`, `dcgan`, `wgan-gp` on mnist-5k, --mnist-epochs (30) each; N = 1,000 samples
             against the 1,000 test images (`genlab.evaluate`'s default for this dataset)
  cmnist     conditional `dcgan` on mnist-5k (`conditional=True, ema=0.999`: `genlab train dcgan
             --conditional --ema 0.999`), --mnist-epochs: also `label_accuracy`, the share of
             samples drawn for class k that the domain classifier calls k (target >= 90%)
  fashion    `gan`, `dcgan`, `wgan-gp` on fashion-mnist (60,000 training images), --fashion-epochs
             (3 = 180,000 images) each; N = --fashion-n (5,000) samples against the 10,000 test
             images (fewer than evaluate's default 10,000 samples, to save time)
  cfashion   the same conditional `dcgan` on fashion-mnist, --fashion-epochs, N = --fashion-n
  plain      a plain DCGAN loop in the pytorch/examples `dcgan/main.py` style on fashion-mnist
             (below), --fashion-epochs, seed 0; its samples are saved as an .npz of floats in
             [0, 1] and scored by `genlab.evaluate(npz, "fashion-mnist", n=N)`

The plain loop: the examples' G and D layout (transposed convs with BatchNorm + ReLU and a tanh;
strided convs with LeakyReLU(0.2), BatchNorm from the second conv, a final conv to one
sigmoid output) adapted to 28x28 single-channel images at genlab's DCGAN widths (G 100 ->
128x7x7 -> 64x14x14 -> 1x28x28; D 1 -> 64x14x14 -> 128x7x7 -> 1), the examples' `weights_init`
(N(0, 0.02) convs, N(1, 0.02) BatchNorm scales), BCELoss on sigmoid outputs, Adam(2e-4,
(0.5, 0.999)) for both, batch 64, its step order (D on real, then on G(z).detach(), then G
through D with the real label), fed by a per-sample `DataLoader(shuffle=True, num_workers=0)`
over the uint8 fashion-mnist tensor, each item converted as torchvision's `ToTensor()` +
`Normalize((0.5,), (0.5,))` do (PIL image -> float in [0, 1] -> (x - 0.5) / 0.5). The example
never puts G in eval mode; its samples are scored both ways: drawn as the example draws them
(G in train mode: BatchNorm on the statistics of each batch of 64) and in eval mode (BatchNorm's
running statistics, as genlab samples).

Target: genlab's conditional DCGAN beats the plain loop's FID at equal epochs on fashion-mnist
(the verdict takes the plain loop's better sampling mode).

Runs, and a cache of real features and floors of their own, go to a temporary folder unless
--keep DIR. The training health of every run (D's accuracy, D(real), D(fake), the validation
diversity, non-finite values) is read back from its history and printed beside the scores.

    python benchmarks/gan_quality.py                      # everything: ~40 min on 2 CPU cores
    python benchmarks/gan_quality.py --parts mnist,cmnist # mnist-5k only: ~10 min
    python benchmarks/gan_quality.py --write              # also update benchmarks/README.md
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
from torch import nn
from torch.utils.data import DataLoader

import genlab
from genlab.data.transforms import to_unit
from genlab.eval.evaluate import Evaluation

from _common import LoadMeter, MNISTAsTorchvision, machine_line, markdown_table, publish

PARTS = ("mnist", "cmnist", "fashion", "cfashion", "plain")
FAMILIES = ("gan", "dcgan", "wgan-gp")
LABEL_TARGET = 0.90
CONDITIONAL = {"conditional": True, "ema": 0.999}  # the conditional rows: --conditional --ema 0.999
SECTION = "gan_quality"
TIMING_FILE = "bench_timing.json"  # wall seconds and load of a run's training, for --reuse


# ---------------------------------------------------------------- the plain loop (pytorch/examples dcgan/main.py style)


class ExamplesGenerator(nn.Module):
    """pytorch/examples dcgan `Generator`, adapted to 1x28x28: z (B, nz, 1, 1) -> tanh image (B, 1, 28, 28)."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 2, 7, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 7 x 7
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 14 x 14
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 28 x 28
        )

    def forward(self, input):
        return self.main(input)


class ExamplesDiscriminator(nn.Module):
    """pytorch/examples dcgan `Discriminator`, adapted to 1x28x28: image -> probability (B,)."""

    def __init__(self, ndf: int = 64, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            # input is (nc) x 28 x 28
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 14 x 14
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 7 x 7
            nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input):
        output = self.main(input)
        return output.view(-1, 1).squeeze(1)


def weights_init(m):
    """pytorch/examples dcgan `weights_init`."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


class NormalizedAsTorchvision(MNISTAsTorchvision):
    """torchvision's MNIST item with `Compose([ToTensor(), Normalize((0.5,), (0.5,))])`: float in [-1, 1]."""

    def __getitem__(self, index):
        tensor, label = super().__getitem__(index)  # PIL image -> ToTensor: float (1, 28, 28) in [0, 1]
        return tensor.sub_(0.5).div_(0.5), label  # Normalize((0.5,), (0.5,))


def train_plain_dcgan(train, epochs: int, seed: int, batch_size: int = 64, nz: int = 100, log=None, stop=None):
    """The examples' training loop; returns (netG, per-epoch records).

    `stop`: called with the seconds since the loop began after each step; True ends training there (a
    time-limited run; the last epoch's record then covers the steps it took)."""
    torch.manual_seed(seed)
    netG, netD = ExamplesGenerator(nz), ExamplesDiscriminator()
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    dataloader = DataLoader(NormalizedAsTorchvision(train.images, train.labels), batch_size=batch_size,
                            shuffle=True, num_workers=0)
    real_label, fake_label = 1.0, 0.0
    records = []
    began, stopped = time.perf_counter(), False
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        totals = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0, "d_accuracy": 0.0}
        seen = steps = 0
        for i, data in enumerate(dataloader, 0):
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            netD.zero_grad()
            real_cpu = data[0]
            batch_size_now = real_cpu.size(0)
            label = torch.full((batch_size_now,), real_label, dtype=real_cpu.dtype)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            correct = (output > 0.5).sum().item()

            noise = torch.randn(batch_size_now, nz, 1, 1)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            correct += (output < 0.5).sum().item()
            errD = errD_real + errD_fake
            optimizerD.step()

            ############################
            # (2) Update G network: maximize log(D(G(z)))
            ###########################
            netG.zero_grad()
            label.fill_(real_label)  # fake labels are real for generator cost
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            optimizerG.step()

            n = batch_size_now
            for key, value in (("d_loss", errD.item()), ("g_loss", errG.item()), ("d_real", D_x),
                               ("d_fake", D_G_z1), ("d_accuracy", correct / (2 * n))):
                totals[key] += value * n
            seen += n
            steps += 1
            if stop is not None and stop(time.perf_counter() - began):
                stopped = True
                break
        record = {"epoch": epoch, "seconds": time.perf_counter() - start, **{k: v / seen for k, v in totals.items()}}
        if stop is not None:
            record["steps"] = steps
        records.append(record)
        if log:
            log(f"  plain epoch {epoch}: " + ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k != "epoch"))
        if stopped:
            break
    return netG, records


@torch.no_grad()
def plain_samples(netG, n: int, seed: int, train_mode: bool, nz: int = 100, batch: int = 64) -> np.ndarray:
    """n samples (n, 1, 28, 28) float32 in [0, 1] from netG, drawn 64 at a time with fixed noise."""
    generator = torch.Generator().manual_seed(seed)
    netG.train(train_mode)
    out = []
    for start in range(0, n, batch):
        z = torch.randn(min(batch, n - start), nz, 1, 1, generator=generator)
        out.append(((netG(z) + 1) / 2).clamp(0, 1))
    netG.train(True)
    return torch.cat(out).numpy().astype(np.float32)


# ---------------------------------------------------------------- one row


def wait_for_quiet(log, threshold: float = 0.3, max_wait: float = 900.0) -> None:
    """Before a timed training run: wait (up to `max_wait` s) until other processes keep < `threshold` cores busy."""
    waited = 0.0
    while True:
        with LoadMeter() as load:
            time.sleep(3.0)
        if load.other_cores < threshold or waited >= max_wait:
            if waited:
                log(f"  waited {waited:.0f} s for a quiet machine (others now {load.other_cores:.2f} cores)")
            return
        time.sleep(30.0)
        waited += 33.0


def health(history: list[dict]) -> dict:
    """What the run's history says about the contest: last epoch's D numbers and diversity, any non-finite value."""
    last = history[-1]
    nonfinite = sorted({k for r in history for k, v in r.items() if isinstance(v, float) and not math.isfinite(v)})
    diversity = [r["diversity"] for r in history if "diversity" in r]
    return {
        "d_accuracy": last.get("d_accuracy"), "d_real": last.get("d_real"), "d_fake": last.get("d_fake"),
        "g_loss": last.get("g_loss"), "wasserstein": last.get("wasserstein"),
        "diversity": last.get("diversity"), "min_diversity": min(diversity) if diversity else None,
        "d_acc_mean": sum(r.get("d_accuracy", 0.0) for r in history) / len(history),
        "nonfinite": nonfinite,
    }


def _reusable(out: Path, family: str, epochs: int, seed: int, settings: dict) -> dict | None:
    """The timing sidecar of a finished run at `out` trained with these settings, else None."""
    try:
        timing = json.loads((out / TIMING_FILE).read_text())
        run = genlab.Run.load(out)
    except (OSError, ValueError, genlab.GenlabError):
        return None
    config = run.info["model"]["config"]
    same = (run.family == family and run.info["train"]["seed"] == seed and run.info["status"] == "completed"
            and run.info.get("epochs_completed") == epochs and all(config.get(k) == v for k, v in settings.items()))
    return timing if same else None


@torch.no_grad()
def within_class_diversity(run, data: str, per_class: int = 100, seed: int = 0) -> tuple[float, float]:
    """(mean, min) over classes of: mean pairwise distance of `per_class` samples drawn for class k over that
    of (up to `per_class`) real test images of class k. ~1 healthy; near 0: G ignores z within a class."""
    test = genlab.load_dataset(data, split="test")
    generator = torch.Generator().manual_seed(seed)
    ratios = []
    for k in range(test.num_classes):
        fake = run.sample(per_class, generator=generator, labels=torch.full((per_class,), k, dtype=torch.long))
        real = to_unit(test.images[test.labels == k][:per_class])
        ratios.append(float(torch.pdist(fake.flatten(1)).mean() / torch.pdist(real.flatten(1)).mean()))
    return sum(ratios) / len(ratios), min(ratios)


def run_genlab(label, family, data, settings, epochs, n, seed, folder, log, reuse=False, max_wait=900.0) -> dict:
    out = folder / label.replace(" ", "_").replace(",", "").replace("/", "-")
    timing = _reusable(out, family, epochs, seed, settings) if reuse else None
    if timing is None:
        wait_for_quiet(log, max_wait=max_wait)
        with LoadMeter() as load:
            start = time.perf_counter()
            genlab.train(family, data, out, epochs=epochs, seed=seed, progress=False, sample_every=0,
                         model_config=settings, overwrite=True)
            wall = time.perf_counter() - start
        timing = {"wall": wall, "other": load.other_cores}
        (out / TIMING_FILE).write_text(json.dumps(timing))
    else:
        log(f"  reusing the finished run at {out} (trained earlier: wall {timing['wall']:.0f} s)")
        timing["reused"] = True
    wall = timing["wall"]
    history = genlab.Run.load(out).history
    for r in history:
        log(f"  {label} epoch {r['epoch']}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in r.items() if k not in ("epoch",) and isinstance(v, (int, float))))
    metrics = "fid,precision,recall" + (",label_accuracy" if settings.get("conditional") else "")
    result = genlab.evaluate(out, n=n, metrics=metrics)
    train_seconds = sum(r["seconds"] for r in history)
    images = sum(r["seconds"] * r["images_per_second"] for r in history)
    state = health(history)
    if settings.get("conditional"):
        state["within_class"] = within_class_diversity(genlab.Run.load(out), data, seed=seed)
    return {"label": label, "data": data, "epochs": epochs, "result": result, "wall": wall,
            "train_seconds": train_seconds, "images_per_second": images / train_seconds,
            "other": timing["other"], "health": state, "reused": timing.get("reused", False)}


def run_plain(data, epochs, n, seed, folder, log, reuse=False, max_wait=900.0) -> list[dict]:
    train = genlab.load_dataset(data, split="train")
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / f"plain_dcgan_{epochs}_epochs_seed{seed}.pt"
    if reuse and saved.exists():
        state = torch.load(saved, weights_only=True)
        netG = ExamplesGenerator()
        netG.load_state_dict(state["netG"])
        records, wall, other, reused = state["records"], state["wall"], state["other"], True
        log(f"  reusing the plain loop's generator at {saved} (trained earlier: wall {wall:.0f} s)")
    else:
        wait_for_quiet(log, max_wait=max_wait)
        with LoadMeter() as load:
            start = time.perf_counter()
            netG, records = train_plain_dcgan(train, epochs, seed, log=log)
            wall = time.perf_counter() - start
        other, reused = load.other_cores, False
        torch.save({"netG": netG.state_dict(), "records": records, "wall": wall, "other": other}, saved)
    rows = []
    for mode, train_mode in (("G in train mode, as the example samples", True), ("G in eval mode", False)):
        path = folder / f"plain_dcgan_{'train' if train_mode else 'eval'}_mode.npz"
        np.savez(path, images=plain_samples(netG, n, seed, train_mode))
        result = genlab.evaluate(str(path), data, n=n, metrics="fid,precision,recall")
        rows.append({"label": f"plain DCGAN loop (pytorch/examples style), {mode}", "data": data, "epochs": epochs,
                     "result": result, "wall": wall, "train_seconds": sum(r["seconds"] for r in records),
                     "images_per_second": epochs * len(train) / sum(r["seconds"] for r in records),
                     "other": other, "health": health(records), "reused": reused})
    return rows


# ---------------------------------------------------------------- tables


def _f(value, fmt="{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def score_table(rows: list[dict]) -> str:
    body = []
    for row in rows:
        r: Evaluation = row["result"]
        m, fl = r.metrics, r.floor
        label_acc = "-" if "label_accuracy" not in m else f"{m['label_accuracy']:.3f} ({fl['label_accuracy']:.3f})"
        body.append([
            row["label"], row["data"], str(row["epochs"]),
            f"{r.info['counts']['samples']:,} vs {r.info['counts']['reference']:,}",
            f"**{m['fid']:.2f}** ({fl['fid']:.2f})", f"{m['precision']:.3f} ({fl['precision']:.3f})",
            f"{m['recall']:.3f} ({fl['recall']:.3f})", label_acc,
            f"{row['wall']:.0f} s ({row['train_seconds']:.0f} s){' *' if row['reused'] else ''}",
            f"{row['images_per_second']:,.0f}",
            f"{row['other']:.2f}",
        ])
    return markdown_table(
        ["Run", "Data", "Epochs", "Samples vs test images", "FID (floor)", "Precision (floor)", "Recall (floor)",
         "Label acc. (floor)", "Wall (train steps)", "Train images/s", "Other procs (cores)"], body)


def health_table(rows: list[dict]) -> str:
    body = []
    seen = set()
    for row in rows:
        h = row["health"]
        key = (row["data"], row["label"].split(", G in")[0])
        if key in seen:  # the plain loop's two sampling modes share one training run
            continue
        seen.add(key)
        body.append([
            row["label"].split(", G in")[0], row["data"], _f(h["d_accuracy"]), _f(h["d_acc_mean"]),
            _f(h["d_real"]), _f(h["d_fake"]), _f(h["g_loss"]), _f(h["wasserstein"], "{:.2f}"),
            _f(h["diversity"]), _f(h["min_diversity"]),
            "-" if "within_class" not in h else "{:.3f} / {:.3f}".format(*h["within_class"]),
            ", ".join(h["nonfinite"]) or "none",
        ])
    return markdown_table(
        ["Run", "Data", "D acc. (last epoch)", "D acc. (mean of epochs)", "D(real)", "D(fake)", "G loss",
         "W estimate", "Diversity (last)", "Diversity (min)", "Within-class diversity (mean / worst class)",
         "Non-finite"], body)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        m = row["result"].metrics
        if "label_accuracy" in m and row["data"] == "mnist-5k":
            ok = m["label_accuracy"] >= LABEL_TARGET
            out.append(f"Conditional DCGAN on mnist-5k, {row['epochs']} epochs: label accuracy "
                       f"{m['label_accuracy']:.1%} (target >= {LABEL_TARGET:.0%}): {'met' if ok else 'NOT met'}.")
    cond = [r for r in rows if r["data"] == "fashion-mnist" and "label_accuracy" in r["result"].metrics]
    plain = [r for r in rows if r["label"].startswith("plain DCGAN")]
    uncond = [r for r in rows if r["data"] == "fashion-mnist" and r["label"] == "genlab dcgan"]
    if uncond and plain:  # like for like: both unconditional (no target; for scale)
        best = min(plain, key=lambda r: r["result"].metrics["fid"])
        out.append(f"For scale, like for like (both unconditional), fashion-mnist, {uncond[0]['epochs']} epochs: genlab "
                   f"DCGAN FID {uncond[0]['result'].metrics['fid']:.2f} against the plain loop's "
                   f"{best['result'].metrics['fid']:.2f}.")
    if cond and plain:
        best = min(plain, key=lambda r: r["result"].metrics["fid"])
        c, p = cond[0]["result"].metrics["fid"], best["result"].metrics["fid"]
        same = cond[0]["epochs"] == best["epochs"]
        out.append(f"Fashion-MNIST, {cond[0]['epochs']} epochs: genlab conditional DCGAN FID {c:.2f} against the plain "
                   f"loop's {p:.2f} (its better sampling mode; target: lower{'' if same else ', epochs differ!'}): "
                   f"{'met' if c < p and same else 'NOT met'}.")
    for row in cond:
        accuracy = row["result"].metrics["label_accuracy"]
        out.append(f"Conditional DCGAN on fashion-mnist, {row['epochs']} epochs: label accuracy {accuracy:.1%} "
                   f"(target >= {LABEL_TARGET:.0%}): {'met' if accuracy >= LABEL_TARGET else 'NOT met'}.")
    return out


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)} (default all)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="families for the mnist and fashion parts")
    parser.add_argument("--fashion-families", help="families for the fashion part (default: --families)")
    parser.add_argument("--mnist-epochs", type=int, default=30)
    parser.add_argument("--fashion-epochs", type=int, default=3, help="default 3 (180,000 images per run)")
    parser.add_argument("--fashion-n", type=int, default=5000, help="samples (and held-out images) on fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep runs and sample files in DIR (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: score finished runs found there (same family, settings, epochs, seed) "
                             "instead of training them again; their training times are the ones recorded then")
    parser.add_argument("--max-wait", type=float, default=900.0,
                        help="seconds to wait for a quiet machine before each timed run (default 900)")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep DIR (where the earlier runs are)")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    fashion_families = [f.strip() for f in (args.fashion_families or args.families).split(",") if f.strip()]
    if bad := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {bad}; choose from {PARTS}")

    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    log(machine_line())
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        # A cache of real features and floors of this run's own (kept with --keep): a user cache can hold
        # floors computed under an earlier definition of a metric (genlab keys them by FLOOR_FORMAT only).
        os.environ["GENLAB_CACHE"] = str(folder / "cache")
        plan = []
        if "mnist" in parts:
            plan += [(f"{f}", f, "mnist-5k", {}, args.mnist_epochs, None) for f in families]
        if "cmnist" in parts:
            plan.append(("conditional dcgan, ema 0.999", "dcgan", "mnist-5k", CONDITIONAL, args.mnist_epochs, None))
        if "fashion" in parts:
            plan += [(f"{f}", f, "fashion-mnist", {}, args.fashion_epochs, args.fashion_n) for f in fashion_families]
        if "cfashion" in parts:
            plan.append(("conditional dcgan, ema 0.999", "dcgan", "fashion-mnist", CONDITIONAL, args.fashion_epochs,
                         args.fashion_n))
        for label, family, data, settings, epochs, n in plan:
            log(f"training {label} on {data}, {epochs} epochs")
            row = run_genlab(f"genlab {label}", family, data, settings, epochs, n, args.seed,
                             folder / data, log, args.reuse, args.max_wait)
            rows.append(row)
            log(f"{row['label']} on {data}: {row['result'].metrics} (floor {row['result'].floor}); "
                f"wall {row['wall']:.0f} s, health {row['health']}")
        if "plain" in parts:
            log(f"training the plain DCGAN loop on fashion-mnist, {args.fashion_epochs} epochs")
            for row in run_plain("fashion-mnist", args.fashion_epochs, args.fashion_n, args.seed,
                                 folder / "fashion-mnist", log, args.reuse, args.max_wait):
                rows.append(row)
                log(f"{row['label']}: {row['result'].metrics} (floor {row['result'].floor}); wall {row['wall']:.0f} s")

    total = time.perf_counter() - began
    trained = {(r["data"], r["label"].split(", G in")[0]): r["wall"] for r in rows}  # the plain loop trains once
    reused = sum(r["reused"] for r in rows if "eval mode" not in r["label"])
    command = (f"python benchmarks/gan_quality.py --parts {','.join(parts)} --families {','.join(families)} "
               + (f"--fashion-families {','.join(fashion_families)} " if fashion_families != families else "")
               + f"--mnist-epochs {args.mnist_epochs} --fashion-epochs {args.fashion_epochs} "
               f"--fashion-n {args.fashion_n} --seed {args.seed}")
    body = "\n\n".join([
        f"Measured with `{command}` on {machine_line()}. Training took {sum(trained.values()) / 60:.0f} min "
        f"(the runs' wall times added up); this invocation took {total / 60:.0f} min"
        + (f" ({reused} run(s) marked * were trained by an earlier invocation into the same --keep folder and "
           f"re-scored here with --reuse; their times are those recorded then)." if reused else "."),
        "Scores (genlab's shipped extractor; in brackets the real-vs-real floor: as many held-out training "
        "images as samples, against the same test images). Wall: `genlab.train` end to end (with its per-epoch "
        "validation and checkpoints); in brackets the sum of the training steps' own time (for the plain loop: "
        "its epochs, data loading included).",
        score_table(rows),
        "Training health, from each run's history (D acc.: the share of real and fake images D puts on the "
        "right side of 0.5, for WGAN-GP the share of (real, fake) pairs the critic ranks right; D(real), "
        "D(fake): D's mean probability, for WGAN-GP the critic's mean score; diversity: the validation "
        "split's mean pairwise distance of samples over that of real images, ~1 healthy; within-class diversity, "
        "conditional runs only: the same ratio for 100 samples drawn for one class against that class's test "
        "images, averaged over the classes and for the worst class: near 0 means G ignores z within a class).",
        health_table(rows),
        "\n".join(f"**{v}**" for v in verdicts(rows)),
    ])
    return publish(SECTION, body, args.write)


if __name__ == "__main__":
    sys.exit(main())
