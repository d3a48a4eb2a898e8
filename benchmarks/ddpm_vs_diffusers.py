"""genlab's DDPM against Hugging Face diffusers' on the same data and training budget: training and
sampling speed, FID, precision and recall side by side.

diffusers is a benchmark-only dependency (`.venv/bin/pip install diffusers`); genlab never imports it.

Both sides see fashion-mnist's 60,000 training images (from `genlab.load_dataset`, scaled to
[-1, 1]) for --epochs (2) epochs at batch 128, seed 0, in this process with the same torch threads:

  genlab    `genlab.train("ddpm", "fashion-mnist", out, epochs=E, batch_size=128, seed=0,
            progress=False, sample_every=0, model_config={"preset": "small"})`: genlab's defaults
            (UNet 32 x (1, 2, 2), one ResBlock per level, attention in the middle, no dropout, as UNet2DModel; 1,000-step
            linear chain, epsilon prediction; Adam 5e-4, gradient clipping at 1, EMA 0.999 with warm-up).
  diffusers a loop in the style of diffusers' `examples/unconditional_image_generation/train_unconditional.py`:
            `UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
            block_out_channels=(32, 64, 64), DownBlock2D x 3, UpBlock2D x 3)` (genlab's small preset
            restated: 28 -> 14 -> 7, attention in the mid block; the parameter counts are printed and
            match), `DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")`, the example's
            AdamW (betas (0.95, 0.999), weight decay 1e-6, eps 1e-8) with its cosine schedule and
            warm-up, its EMA (`EMAModel(decay=0.9999, use_ema_warmup=True, inv_gamma=1, power=3/4)`),
            gradient clipping at 1, `noise_scheduler.add_noise` and MSE on the noise, fed by a per-sample
            `DataLoader(batch_size=128, shuffle=True, num_workers=0)` whose items go through torchvision's
            `ToTensor()` + `Normalize([0.5], [0.5])` path (PIL image -> float -> [-1, 1]). The example's
            lr (1e-4) and 500 warm-up steps are tuned for 100 epochs; here the lr is genlab's (5e-4,
            --diffusers-lr) and the warm-up min(500, 10% of the steps), so a short budget does not
            handicap the peer. The example's random horizontal flip is left out: both see the same images.

Training images/s: images seen over the training loop's own time (genlab: its steps, from the run's
history; diffusers: its epochs, data loading included); the wall time of `genlab.train` (with its
per-epoch validation and checkpoints) is shown beside. Sampling: --n (1,000) images with DDIM, 50
steps, eta 0, 1,000 at a time (genlab: `run.sample(n, sampler="ddim", steps=50, eta=0)`; diffusers:
`DDIMPipeline` with `DDIMScheduler.from_config(the DDPMScheduler's config)`, `num_inference_steps=50`),
each from its EMA weights, timed after an untimed warm-up draw, saved as uint8 .npz and scored by
`genlab.evaluate(npz, "fashion-mnist", n=N, metrics="fid,precision,recall")` against the 10,000 test
images, the real-vs-real floor beside. Goal: genlab beats diffusers on each.

    .venv/bin/pip install diffusers
    python benchmarks/ddpm_vs_diffusers.py                 # ~1 h on 2 CPU cores
    python benchmarks/ddpm_vs_diffusers.py --smoke         # a few hundred images, 10 samples: ~2 min
    python benchmarks/ddpm_vs_diffusers.py --write         # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import genlab
from genlab.data.transforms import to_uint8
from genlab.models.ddpm import DDPMConfig

from _common import LoadMeter, machine_line, markdown_table, publish, timed
from gan_quality import NormalizedAsTorchvision, wait_for_quiet

SECTION = "ddpm_vs_diffusers"
DATA = "fashion-mnist"
PRESET = "small"
BATCH = 128
SAMPLE_BATCH = 1000  # both sides draw this many at a time (genlab's own default for a DDPM on the CPU is 64)
EXAMPLE_WARMUP = 500  # train_unconditional.py's --lr_warmup_steps
SMOKE_IMAGES, SMOKE_TEST_IMAGES, SMOKE_N, SMOKE_STEPS = 256, 128, 10, 5


def _diffusers():
    """The diffusers module, or a clear exit when it is not installed."""
    try:
        import diffusers
    except ImportError:
        sys.exit("this benchmark needs diffusers: .venv/bin/pip install diffusers")
    return diffusers


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- the diffusers side


def diffusers_unet():
    """UNet2DModel laid out as genlab's preset: a level per channel_mult, num_res_blocks ResBlocks each."""
    preset = DDPMConfig(preset=PRESET)
    levels = len(preset.channel_mult)
    return _diffusers().UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=preset.num_res_blocks,
        block_out_channels=tuple(preset.channels * m for m in preset.channel_mult),
        down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
    )


class DiffusersTraining:
    """The train_unconditional.py loop on `train` for `epochs`, taken one optimizer step at a time.

    Everything is built from `seed` when made: the UNet, DDPMScheduler, AdamW with its cosine
    schedule, the EMA and the per-sample DataLoader. `steps()` runs the loop, yielding after each
    step; `ema_unet()` gives the EMA weights in a copy of the UNet, for sampling.
    """

    def __init__(self, train: genlab.ImageDataset, epochs: int, seed: int, lr: float):
        diffusers = _diffusers()
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        torch.manual_seed(seed)
        self.epochs = epochs
        self.model = diffusers_unet()
        self.noise_scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=(0.95, 0.999), weight_decay=1e-6,
                                           eps=1e-8)
        self.dataloader = DataLoader(NormalizedAsTorchvision(train.images, train.labels), batch_size=BATCH,
                                     shuffle=True, num_workers=0)
        total_steps = len(self.dataloader) * epochs
        self.lr_scheduler = get_scheduler("cosine", optimizer=self.optimizer,
                                          num_warmup_steps=min(EXAMPLE_WARMUP, total_steps // 10),
                                          num_training_steps=total_steps)
        self.ema_model = EMAModel(self.model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0,
                                  power=3 / 4)

    def steps(self):
        """The loop: yields (epoch, images in the step, the step's loss) after each optimizer step."""
        model = self.model
        for epoch in range(1, self.epochs + 1):
            model.train()
            for clean_images, _ in self.dataloader:
                noise = torch.randn(clean_images.shape)
                bsz = clean_images.shape[0]
                timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,)).long()
                noisy_images = self.noise_scheduler.add_noise(clean_images, noise, timesteps)
                noise_pred = model(noisy_images, timesteps).sample
                loss = F.mse_loss(noise_pred.float(), noise.float())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.ema_model.step(model.parameters())
                self.optimizer.zero_grad(set_to_none=True)
                yield epoch, bsz, loss.item()

    def ema_unet(self):
        """A copy of the UNet holding the EMA weights, in eval mode."""
        ema_unet = copy.deepcopy(self.model)
        self.ema_model.copy_to(ema_unet.parameters())
        return ema_unet.eval()


def train_diffusers(train: genlab.ImageDataset, epochs: int, seed: int, lr: float, log):
    """The train_unconditional.py loop on `train`; returns (EMA UNet for sampling, scheduler config, records)."""
    training = DiffusersTraining(train, epochs, seed, lr)
    records = []
    epoch_start = last_step_end = time.perf_counter()

    def close_epoch(epoch: int, seen: int, total_loss: float) -> None:
        records.append({"epoch": epoch, "seconds": last_step_end - epoch_start, "images": seen, "loss": total_loss / seen})
        log(f"  diffusers epoch {epoch}: {records[-1]['seconds']:.0f} s, {seen / records[-1]['seconds']:.1f} images/s, "
            f"loss {records[-1]['loss']:.4f}")

    current, seen, total_loss = 1, 0, 0.0
    for epoch, bsz, loss in training.steps():
        if epoch != current:  # the first step of the next epoch: the last one ended where this epoch began
            close_epoch(current, seen, total_loss)
            current, seen, total_loss, epoch_start = epoch, 0, 0.0, last_step_end
        seen, total_loss = seen + bsz, total_loss + loss * bsz
        last_step_end = time.perf_counter()
    close_epoch(current, seen, total_loss)
    return training.ema_unet(), training.noise_scheduler.config, records


@torch.no_grad()
def diffusers_samples(unet, scheduler_config, n: int, steps: int, seed: int) -> torch.Tensor:
    """n images uint8 (n, 1, 28, 28) from diffusers' DDIMPipeline (eta 0), SAMPLE_BATCH at a time."""
    diffusers = _diffusers()
    pipeline = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler.from_config(scheduler_config))
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n, SAMPLE_BATCH):
        images = pipeline(batch_size=min(SAMPLE_BATCH, n - start), generator=generator, eta=0.0,
                          num_inference_steps=steps, output_type="np").images  # (B, H, W, C) float in [0, 1]
        chunks.append(to_uint8(torch.from_numpy(images).permute(0, 3, 1, 2)))
    return torch.cat(chunks)


# ---------------------------------------------------------------- both sides


def quiet_timed(draw, max_wait: float, log) -> tuple[torch.Tensor, float, float]:
    """(images, seconds, other processes' cores) of `draw()`, after waiting up to `max_wait` s for a quiet machine."""
    wait_for_quiet(log, max_wait=max_wait)
    return timed(draw)


def score(images: torch.Tensor, path: Path, n: int):
    """genlab.evaluate of uint8 `images` saved to `path` against fashion-mnist's test images."""
    np.savez(path, images=images.numpy())
    return genlab.evaluate(str(path), DATA, n=n, metrics="fid,precision,recall")


def run_genlab(train, test, args, folder: Path, log) -> dict:
    """Train genlab's ddpm, draw and score its DDIM samples."""
    out = folder / "genlab_ddpm"
    wait_for_quiet(log, max_wait=args.max_wait)
    with LoadMeter() as load:
        start = time.perf_counter()
        genlab.train("ddpm", DATA if train is None else train, out, test_data=test, epochs=args.epochs,
                     batch_size=BATCH, seed=args.seed, progress=False, sample_every=0, model_config={"preset": PRESET},
                     overwrite=True)
        wall = time.perf_counter() - start
    run = genlab.Run.load(out)
    history = run.history
    for r in history:
        log(f"  genlab epoch {r['epoch']}: {r['seconds']:.0f} s, {r['images_per_second']:.1f} images/s, "
            f"loss {r['loss']:.4f}, test loss {r.get('test_loss', float('nan')):.4f}")
    log(f"sampling genlab: {args.n} images, DDIM {args.steps} steps")
    run.sample(2, generator=torch.Generator().manual_seed(args.seed), sampler="ddim", steps=1)  # warm-up
    images, seconds, other = quiet_timed(lambda: to_uint8(run.sample(
        args.n, generator=torch.Generator().manual_seed(args.seed), sampler="ddim", steps=args.steps, eta=0.0,
        batch_size=SAMPLE_BATCH)),
        args.max_wait, log)
    seen = sum(r["seconds"] * r["images_per_second"] for r in history)
    return {"label": f"genlab ddpm ({PRESET})", "parameters": parameters(run.model.network), "images": seen,
            "train_seconds": sum(r["seconds"] for r in history), "wall": wall, "train_other": load.other_cores,
            "loss": history[-1]["loss"], "sample_seconds": seconds, "sample_other": other,
            "result": score(images, folder / "genlab_ddim.npz", args.n)}


def run_diffusers(train, args, folder: Path, log) -> dict:
    """Train the diffusers loop, draw and score its DDIM samples."""
    wait_for_quiet(log, max_wait=args.max_wait)
    with LoadMeter() as load:
        start = time.perf_counter()
        unet, config, records = train_diffusers(train, args.epochs, args.seed, args.diffusers_lr, log)
        wall = time.perf_counter() - start
    unet.save_pretrained(folder / "diffusers_unet")
    log(f"sampling diffusers: {args.n} images, DDIM {args.steps} steps")
    diffusers_samples(unet, config, 2, 1, args.seed)  # warm-up
    images, seconds, other = quiet_timed(lambda: diffusers_samples(unet, config, args.n, args.steps, args.seed),
                                   args.max_wait, log)
    return {"label": "diffusers UNet2DModel + DDPMScheduler", "parameters": parameters(unet),
            "images": sum(r["images"] for r in records), "train_seconds": sum(r["seconds"] for r in records),
            "wall": wall, "train_other": load.other_cores, "loss": records[-1]["loss"], "sample_seconds": seconds,
            "sample_other": other, "result": score(images, folder / "diffusers_ddim.npz", args.n)}


# ---------------------------------------------------------------- tables


def comparison(ours: dict, theirs: dict, n: int) -> tuple[str, list[str]]:
    """The side-by-side table and the verdict lines (goal: genlab beats diffusers on each)."""
    def speed(row, kind):
        return row["images"] / row["train_seconds"] if kind == "train" else n / row["sample_seconds"]

    lines = [  # (what, genlab value, diffusers value, higher is better, format)
        ("Training images/s", speed(ours, "train"), speed(theirs, "train"), True, "{:,.1f}"),
        ("Sampling images/s (DDIM)", speed(ours, "sample"), speed(theirs, "sample"), True, "{:,.2f}"),
        ("FID", ours["result"].metrics["fid"], theirs["result"].metrics["fid"], False, "{:.2f}"),
        ("Precision", ours["result"].metrics["precision"], theirs["result"].metrics["precision"], True, "{:.3f}"),
        ("Recall", ours["result"].metrics["recall"], theirs["result"].metrics["recall"], True, "{:.3f}"),
    ]
    floor = ours["result"].floor  # the same n, seed and reference for both: one floor
    rows = [["Parameters (UNet)", f"{ours['parameters']:,}", f"{theirs['parameters']:,}",
             f"{ours['parameters'] / theirs['parameters']:.3f}", "-"],
            ["Images seen", f"{ours['images']:,.0f}", f"{theirs['images']:,.0f}", "-", "-"],
            ["Training wall (loop's own time)", f"{ours['wall']:.0f} s ({ours['train_seconds']:.0f} s)",
             f"{theirs['wall']:.0f} s ({theirs['train_seconds']:.0f} s)", "-", "-"],
            ["Training loss (last epoch)", f"{ours['loss']:.4f}", f"{theirs['loss']:.4f}", "-", "-"]]
    verdicts = []
    for what, a, b, higher, fmt in lines:
        ratio = f"{a / b:.2f}x" if b else "-"
        beats = a > b if higher else a < b
        key = what.split(" ")[0].lower()
        shown_floor = f" (floor {fmt.format(floor[key])})" if key in floor else ""
        rows.append([what + shown_floor, fmt.format(a), fmt.format(b), ratio,
                     "beats" if beats else "**does not beat**"])
        verdicts.append(f"{what}: genlab {fmt.format(a)} against diffusers' {fmt.format(b)} ({ratio}; "
                        f"{'higher' if higher else 'lower'} is better): {'beaten' if beats else 'NOT beaten'}.")
    others = (f"Other processes kept {ours['train_other']:.2f} / {theirs['train_other']:.2f} cores busy while genlab / "
              f"diffusers trained, {ours['sample_other']:.2f} / {theirs['sample_other']:.2f} while they sampled.")
    table = markdown_table(["", ours["label"], theirs["label"], "genlab / diffusers", "Goal: beat each"], rows)
    return table + "\n\n" + others, verdicts


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs of fashion-mnist for each side (default 2)")
    parser.add_argument("--n", type=int, default=1000, help="samples per side (and held-out images for the floor)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps for both samplers")
    parser.add_argument("--diffusers-lr", type=float, default=DDPMConfig().lr,
                        help="the diffusers loop's AdamW learning rate (default genlab's; the example's is 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR",
                        help="keep runs, weights and sample files in DIR (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"check the script end to end: {SMOKE_IMAGES} training images, 1 epoch, "
                             f"{SMOKE_N} samples, DDIM-{SMOKE_STEPS}, no waiting for a quiet machine")
    parser.add_argument("--max-wait", type=float, default=900.0,
                        help="seconds to wait for a quiet machine before each timed block (default 900)")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.smoke and args.write:
        parser.error("--smoke numbers are no benchmark: drop --write")
    if args.smoke:
        args.epochs, args.n, args.steps, args.max_wait = 1, SMOKE_N, SMOKE_STEPS, 0.0

    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    log(machine_line())
    log(f"diffusers {_diffusers().__version__}")
    train = genlab.load_dataset(DATA, split="train")
    genlab_train = genlab_test = None  # genlab.train loads fashion-mnist itself (validating on its test split)
    if args.smoke:
        from ddpm_quality import smoke_splits

        genlab_train, genlab_test = smoke_splits(DATA, args.seed)
        train = genlab_train
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["GENLAB_CACHE"] = str(folder / "cache")  # real features and floors of this run's own
        log(f"training genlab's ddpm on {len(train):,} images for {args.epochs} epoch(s)")
        ours = run_genlab(genlab_train, genlab_test, args, folder, log)
        log(f"  genlab: {ours['result'].metrics} (floor {ours['result'].floor})")
        log(f"training the diffusers loop on {len(train):,} images for {args.epochs} epoch(s)")
        theirs = run_diffusers(train, args, folder, log)
        log(f"  diffusers: {theirs['result'].metrics} (floor {theirs['result'].floor})")
    log(f"parameters: genlab {ours['parameters']:,}, diffusers {theirs['parameters']:,}")

    total = time.perf_counter() - began
    table, verdicts = comparison(ours, theirs, args.n)
    command = (f"python benchmarks/ddpm_vs_diffusers.py --epochs {args.epochs} --n {args.n} --steps {args.steps} "
               f"--diffusers-lr {args.diffusers_lr:g} --seed {args.seed}" + (" --smoke" if args.smoke else ""))
    body = "\n\n".join([
        (f"Measured with `{command}` on {machine_line()}, diffusers {_diffusers().__version__}; this invocation "
         f"took {total / 60:.0f} min. Both sides: {len(train):,} fashion-mnist training images x {args.epochs} "
         f"epoch(s) at batch {BATCH}; {args.n:,} samples each with DDIM, {args.steps} steps, eta 0, scored by genlab's "
         f"shipped extractor against the {ours['result'].info['counts']['reference']:,} test images (in brackets "
         f"the real-vs-real floor: as many held-out training images as samples)."),
        table,
        "\n".join(f"**{v}**" for v in verdicts),
    ])
    return publish(SECTION, body, args.write)


if __name__ == "__main__":
    sys.exit(main())
