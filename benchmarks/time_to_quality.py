"""Time to quality: every family trained with genlab's defaults, against its plain reference loop at equal wall time.

Issue 20's question: do `genlab train FAMILY --data mnist-5k` and nothing else give good images in
minutes on a CPU, and better ones than the loop a user would otherwise copy, given the same time?

For each family in --families and each dataset in --data:

  genlab     `genlab.train(FAMILY, DATA, out, seed=S, progress=False, sample_every=0)` with no epochs:
             the family's budget of optimizer steps (`budget_steps`: `default_steps`, a class attribute of
             the model, grown up to 2.5x on data larger than mnist-5k's 4,000 training images,
             turned into epochs for the data by `GenerativeModel.default_epochs`; run.json records
             train.default_steps). W: the wall time of `genlab.train`, end to end (data loading, the
             validation at its default cadence (`default_validate_every`) and the per-epoch checkpoints
             included). Then `genlab.eval.evaluate.evaluate(out, n=N, seed=0)`: the `genlab eval` defaults
             (every metric that applies, against the test split), timed: eval time, and total = W + eval time.
  reference  the family's plain loop, trained for the same W seconds (it stops at the first step
             boundary past W), then N samples saved as uint8 .npz and scored by
             `evaluate(npz, DATA, n=N, seed=0)`, timed the same way (sampling included):
    gan        the study pages' MLP GAN (G z(100) -> 128 -> 256 (BN) -> 512 (BN) -> 784, tanh; D 784 ->
               512 -> 256 -> 1, sigmoid: the layers genlab's `gan` reproduces) in the loop of
               eriklindernoren/PyTorch-GAN `implementations/gan/gan.py`: Adam 2e-4 (0.5, 0.999) for
               both, BCE, batch 64, G step then D step ((real + fake) / 2).
    dcgan      the pytorch/examples `dcgan/main.py` loop of benchmarks/gan_quality.py
               (`train_plain_dcgan`, `plain_samples`).
    wgan-gp    Gulrajani et al. 2017 in PyTorch-GAN's `wgan_gp.py` loop: the DCGAN generator above, a
               DCGAN-style critic without BatchNorm (Conv 4/2/1 64, LeakyReLU 0.2, Conv 4/2/1 128,
               LeakyReLU, Conv 7 -> 1 score), Adam 1e-4 (0, 0.9), n_critic 5, lambda 10, batch 64.
    vae        the pytorch/examples `vae/main.py` loop (`_common.ExamplesVAE`, `examples_loss`,
               `examples_loader`): Adam 1e-3, batch 128; samples are decode(z), z ~ N(0, I), as it saves.
    ddpm       the diffusers loop of benchmarks/ddpm_vs_diffusers.py (UNet2DModel laid out as genlab's
               default preset, DDPMScheduler, AdamW with its cosine schedule planned over genlab's step
               count, EMA); samples from its EMA UNet with DDPMPipeline, 50 ancestral steps (genlab's
               default sampler). diffusers is a benchmark-only dependency: without it the row is skipped.
    pixelcnn, realnvp  no external reference: genlab's row only.
  baseline   with --baseline DIR: genlab as an earlier checkout of it (DIR holds its src/) trains the
             family with *its* defaults, `python -m genlab train FAMILY --data DATA` in a process of its
             own on the same threads, for the same W seconds (its imports not counted): then Ctrl-C, at
             which that trainer saves the step it reached (a run that ends sooner keeps its own end).
             That checkout draws N samples (`genlab sample --format npz`, its default sampler) and they
             are scored here as the reference's are. Issue 20 asks the defaults on fashion-mnist to reach
             at most half the FID the defaults of the time (checkout 47b2353) reach in the same time.
  Every reference is fed as its example feeds it: a per-sample DataLoader(shuffle=True, num_workers=0)
  through torchvision's ToTensor (+ Normalize(0.5, 0.5) for the GANs and diffusers), restated in
  _common.py / gan_quality.py. A generator with BatchNorm is scored two ways: as its example draws
  (train mode, batches of 64) and in eval mode (as genlab samples); the verdict takes the better.

The issue's targets on mnist-5k (FID <= / recall >=): gan 35 / 0.45, dcgan 20 / 0.60, wgan-gp 35 / 0.50,
vae 80 / 0.30, ddpm 25 / 0.50; and the wall goal: the default training ends within 10 minutes on
mnist-5k, 30 minutes on fashion-mnist. Times depend on the threads and on what else runs: both are
recorded (other processes' load from /proc/stat, _common.LoadMeter).

    python benchmarks/time_to_quality.py                          # every family on mnist-5k
    python benchmarks/time_to_quality.py --data mnist-5k,fashion-mnist --keep runs/ttq --write
    python benchmarks/time_to_quality.py --families vae,gan --side-by-side   # a shared machine: 1 thread each
    python benchmarks/time_to_quality.py --keep runs/ttq --reuse --reference-only   # re-run the references
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import genlab
from genlab.data.transforms import to_uint8
from genlab.eval.evaluate import Evaluation, evaluate
from genlab.models import MODELS

# isort: split
from _common import ExamplesVAE, LoadMeter, examples_loader, examples_loss, machine_line, markdown_table, publish
from gan_quality import ExamplesGenerator, NormalizedAsTorchvision, plain_samples, train_plain_dcgan, weights_init

SECTION = "time_to_quality"
FAMILIES = ("gan", "dcgan", "wgan-gp", "vae", "ddpm", "pixelcnn", "realnvp")
DATASETS = ("mnist-5k", "fashion-mnist")
TARGETS = {
    "gan": (35.0, 0.45),
    "dcgan": (20.0, 0.60),
    "wgan-gp": (35.0, 0.50),
    "vae": (80.0, 0.30),
    "ddpm": (25.0, 0.50),
}  # mnist-5k: (FID <=, recall >=)
WALL_GOAL_MINUTES = {"mnist-5k": 10, "fashion-mnist": 30}
BASELINE_SIDE = "genlab before: the defaults of an earlier checkout"
BASELINE_FID_RATIO = 0.5  # issue 20 on fashion-mnist: at most half the FID of the earlier defaults in the same time
NZ = 100  # every reference GAN's z
TIMING_SUFFIX = ".timing.json"  # beside a run (genlab refuses to overwrite a run holding foreign files): for --reuse

Stop = Callable[[float], bool]  # seconds since the reference loop began -> stop after this step?


# ---------------------------------------------------------------- reference: the MLP GAN (PyTorch-GAN gan.py)


class StudyGenerator(nn.Module):
    """The study page's MLP generator: z (B, 100) -> 128 -> 256 (BN) -> 512 (BN) -> 784, tanh, (B, 1, 28, 28)."""

    def __init__(self, latent_dim: int = NZ, img_shape=(1, 28, 28)):
        super().__init__()
        self.img_shape = img_shape
        self.model = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(128, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, int(np.prod(img_shape))), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z):
        img = self.model(z)
        return img.view(img.size(0), *self.img_shape)


class PyTorchGANDiscriminator(nn.Module):
    """PyTorch-GAN gan.py's discriminator: 784 -> 512 -> 256 -> 1, LeakyReLU(0.2), sigmoid."""

    def __init__(self, pixels: int = 784):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(pixels, 512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, img):
        return self.model(img.view(img.size(0), -1))


def _gan_loader(train, batch_size: int = 64) -> DataLoader:
    return DataLoader(NormalizedAsTorchvision(train.images, train.labels), batch_size=batch_size, shuffle=True,
                      num_workers=0)  # fmt: skip


def _forever(loader: DataLoader):
    """The loader's batches, epoch after epoch (the loops below stop on time, not on an epoch count)."""
    while True:
        yield from loader


def train_plain_gan(train, seed: int, stop: Stop) -> tuple[nn.Module, int]:
    """PyTorch-GAN gan.py's loop until `stop`; returns (generator, steps)."""
    torch.manual_seed(seed)
    generator, discriminator = StudyGenerator(), PyTorchGANDiscriminator()
    adversarial_loss = nn.BCELoss()
    optimizer_G = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    began, steps = time.perf_counter(), 0
    for imgs, _ in _forever(_gan_loader(train)):
        valid = torch.ones(imgs.size(0), 1)
        fake = torch.zeros(imgs.size(0), 1)
        #  Train Generator
        optimizer_G.zero_grad()
        z = torch.randn(imgs.shape[0], NZ)
        gen_imgs = generator(z)
        g_loss = adversarial_loss(discriminator(gen_imgs), valid)
        g_loss.backward()
        optimizer_G.step()
        #  Train Discriminator
        optimizer_D.zero_grad()
        real_loss = adversarial_loss(discriminator(imgs), valid)
        fake_loss = adversarial_loss(discriminator(gen_imgs.detach()), fake)
        d_loss = (real_loss + fake_loss) / 2
        d_loss.backward()
        optimizer_D.step()
        steps += 1
        if stop(time.perf_counter() - began):
            return generator, steps
    raise AssertionError("unreachable")


@torch.no_grad()
def mlp_gan_samples(generator: nn.Module, n: int, seed: int, train_mode: bool, batch: int = 64) -> torch.Tensor:
    """n uint8 images from the MLP generator, `batch` at a time with seeded z."""
    rng = torch.Generator().manual_seed(seed)
    generator.train(train_mode)
    out = [generator(torch.randn(min(batch, n - s), NZ, generator=rng)) for s in range(0, n, batch)]
    generator.train(True)
    return to_uint8((torch.cat(out) + 1) / 2)


# ---------------------------------------------------------------- reference: WGAN-GP (Gulrajani et al. 2017)


class WGANCritic(nn.Module):
    """The DCGAN discriminator without BatchNorm (the penalty is per sample) and without the sigmoid: a score."""

    def __init__(self, ndf: int = 64, nc: int = 1):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),  # (ndf, 14, 14)
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),  # (2 ndf, 7, 7)
            nn.Conv2d(ndf * 2, 1, 7, 1, 0),  # (1, 1, 1)
        )  # fmt: skip

    def forward(self, x):
        return self.main(x).view(-1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] at x_hat on lines between real and fake (Gulrajani et al. 2017, eq. 3)."""
    alpha = torch.rand(real.size(0), 1, 1, 1)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(interpolates)
    gradients = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)[0]  # (B, 1, 28, 28)
    return ((gradients.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def train_plain_wgan_gp(train, seed: int, stop: Stop, n_critic: int = 5, lambda_gp: float = 10.0):
    """PyTorch-GAN wgan_gp.py's loop (a critic step per batch, a G step every n_critic) until `stop`."""
    torch.manual_seed(seed)
    generator, critic = ExamplesGenerator(NZ), WGANCritic()
    generator.apply(weights_init)
    critic.apply(weights_init)
    optimizer_G = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.9))
    optimizer_D = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    began, steps = time.perf_counter(), 0
    for real, _ in _forever(_gan_loader(train)):
        optimizer_D.zero_grad()
        z = torch.randn(real.size(0), NZ, 1, 1)
        fake = generator(z).detach()
        d_loss = critic(fake).mean() - critic(real).mean() + lambda_gp * gradient_penalty(critic, real, fake)
        d_loss.backward()
        optimizer_D.step()
        if steps % n_critic == 0:
            optimizer_G.zero_grad()
            g_loss = -critic(generator(torch.randn(real.size(0), NZ, 1, 1))).mean()
            g_loss.backward()
            optimizer_G.step()
        steps += 1
        if stop(time.perf_counter() - began):
            return generator, steps
    raise AssertionError("unreachable")


def conv_gan_samples(generator: nn.Module, n: int, seed: int, train_mode: bool) -> torch.Tensor:
    return to_uint8(torch.from_numpy(plain_samples(generator, n, seed, train_mode)))


# ---------------------------------------------------------------- reference: VAE (pytorch/examples vae/main.py)


def train_plain_vae(train, seed: int, stop: Stop) -> tuple[ExamplesVAE, int]:
    """The example's `train(epoch)` steps (Adam 1e-3, batch 128, BCE(sum) + KL) until `stop`."""
    torch.manual_seed(seed)
    model = ExamplesVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    began, steps = time.perf_counter(), 0
    for data, _ in _forever(examples_loader(train, 128, as_torchvision=True)):
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        examples_loss(recon_batch, data, mu, logvar).backward()
        optimizer.step()
        steps += 1
        if stop(time.perf_counter() - began):
            return model, steps
    raise AssertionError("unreachable")


@torch.no_grad()
def vae_samples(model: ExamplesVAE, n: int, seed: int) -> torch.Tensor:
    """decode(z), z ~ N(0, I) (n, 20), as the example saves its samples: Bernoulli means, as uint8."""
    model.eval()
    z = torch.randn(n, 20, generator=torch.Generator().manual_seed(seed))
    return to_uint8(model.decode(z).view(n, 1, 28, 28))


# ---------------------------------------------------------------- reference: diffusers (ddpm_vs_diffusers.py)


def diffusers_missing() -> str | None:
    """Why the diffusers reference cannot run here, or None."""
    if importlib.util.find_spec("diffusers") is None:
        return "diffusers is not installed (a benchmark-only dependency: .venv/bin/pip install diffusers)"
    return None


def train_plain_diffusers(train, seed: int, stop: Stop, planned_epochs: int):
    """ddpm_vs_diffusers.py's train_unconditional.py loop until `stop`; returns ((EMA UNet, config), steps)."""
    from ddpm_vs_diffusers import DiffusersTraining

    from genlab.models.ddpm import DDPMConfig

    training = DiffusersTraining(train, planned_epochs, seed, DDPMConfig().lr)
    began, steps = time.perf_counter(), 0
    for _ in training.steps():
        steps += 1
        if stop(time.perf_counter() - began):
            break
    return (training.ema_unet(), training.noise_scheduler.config), steps


@torch.no_grad()
def diffusers_ancestral_samples(model, n: int, seed: int, steps: int = 50, batch: int = 1000) -> torch.Tensor:
    """n uint8 images from DDPMPipeline (ancestral sampling, `steps` steps: genlab's default sampler)."""
    import diffusers

    unet, config = model
    pipeline = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler.from_config(config))
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n, batch):
        images = pipeline(
            batch_size=min(batch, n - start), generator=generator, num_inference_steps=steps, output_type="np"
        ).images  # (B, H, W, C) float in [0, 1]
        chunks.append(to_uint8(torch.from_numpy(images).permute(0, 3, 1, 2)))
    return torch.cat(chunks)


# ---------------------------------------------------------------- the references, by family


class Reference:
    """A family's plain loop: `train(train_set, seed, stop, genlab_epochs) -> (model, steps)`, its batch size,
    and its sampling modes: (label, draw(model, n, seed) -> uint8 images (n, C, H, W))."""

    def __init__(self, name, train, batch_size, modes, missing=lambda: None):
        self.name, self.train, self.batch_size, self.modes, self.missing = name, train, batch_size, modes, missing


REFERENCES = {
    "gan": Reference(
        "study-page MLP GAN, PyTorch-GAN gan.py loop", lambda d, s, stop, e: train_plain_gan(d, s, stop), 64,
        [("as gan.py draws (G in train mode)", lambda m, n, s: mlp_gan_samples(m, n, s, True)),
         ("G in eval mode", lambda m, n, s: mlp_gan_samples(m, n, s, False))]),
    "dcgan": Reference(
        "pytorch/examples dcgan loop", lambda d, s, stop, e: _dcgan(d, s, stop), 64,
        [("as the example draws (G in train mode)", lambda m, n, s: conv_gan_samples(m, n, s, True)),
         ("G in eval mode", lambda m, n, s: conv_gan_samples(m, n, s, False))]),
    "wgan-gp": Reference(
        "WGAN-GP loop (Gulrajani et al., PyTorch-GAN wgan_gp.py)",
        lambda d, s, stop, e: train_plain_wgan_gp(d, s, stop), 64,
        [("as wgan_gp.py draws (G in train mode)", lambda m, n, s: conv_gan_samples(m, n, s, True)),
         ("G in eval mode", lambda m, n, s: conv_gan_samples(m, n, s, False))]),
    "vae": Reference(
        "pytorch/examples vae loop", lambda d, s, stop, e: train_plain_vae(d, s, stop), 128,
        [("decode(z)", vae_samples)]),
    "ddpm": Reference(
        "diffusers UNet2DModel + DDPMScheduler loop", train_plain_diffusers, 128,
        [("DDPMPipeline, 50 steps, EMA", diffusers_ancestral_samples)], missing=diffusers_missing),
}  # fmt: skip


def _dcgan(train, seed: int, stop: Stop):
    netG, records = train_plain_dcgan(train, 10**9, seed, stop=stop)
    return netG, sum(r["steps"] for r in records)


# ---------------------------------------------------------------- genlab's side


def timing_file(out: Path) -> Path:
    """Where the wall seconds and load of the genlab run at `out` are kept: beside it, not in it."""
    return out.with_name(out.name + TIMING_SUFFIX)


def _reusable(out: Path, family: str, seed: int, epochs: int | None) -> dict | None:
    """The timing sidecar of a finished run at `out` trained as this invocation would train it, else None."""
    try:
        timing = json.loads(timing_file(out).read_text())
        run = genlab.Run.load(out)
    except (OSError, ValueError, genlab.GenlabError):
        return None
    train = run.info["train"]
    images = run.info["data"]["train_images"]
    budget = (train.get("default_steps") == MODELS[family].budget_steps(images) if epochs is None
              else "default_steps" not in train and run.info.get("epochs_completed") == epochs)  # fmt: skip
    same = run.family == family and train["seed"] == seed and run.info["status"] == "completed" and budget
    return timing if same else None


def train_genlab(
    family: str, data: str, out: Path, seed: int, epochs: int | None, threads: int | None, started=None
) -> dict:
    """genlab.train with the family's defaults (or `epochs`, testing only); writes and returns the timing sidecar.
    `started`: called just before the clock starts."""
    if threads:
        torch.set_num_threads(threads)
    if started is not None:
        started()
    with LoadMeter() as load:
        start = time.perf_counter()
        genlab.train(family, data, out, seed=seed, progress=False, sample_every=0, overwrite=True,
                     **({} if epochs is None else {"epochs": epochs}))  # fmt: skip
        wall = time.perf_counter() - start
    timing = {"wall": wall, "other": load.other_cores, "threads": torch.get_num_threads()}
    timing_file(out).write_text(json.dumps(timing))
    return timing


def _genlab_child(family, data, out, seed, epochs, started, done, errors) -> None:
    """--side-by-side: genlab's training in a process of its own, one thread; `started` is set as its clock
    starts (after the process's imports), `done` when it ends."""
    try:
        train_genlab(family, data, Path(out), seed, epochs, 1, started=started.set)
    except BaseException as error:  # noqa: BLE001 - reported by the parent
        errors.put(f"{type(error).__name__}: {error}")
        raise
    finally:
        done.set()


def genlab_budget(run: genlab.Run, images: int) -> dict:
    train = run.info["train"]
    epochs = run.info.get("epochs_completed") or train["epochs"]
    steps = epochs * -(-images // train["batch_size"])
    return {"steps": steps, "epochs": float(epochs), "default_steps": train.get("default_steps"),
            "batch_size": train["batch_size"]}  # fmt: skip


def timed_eval(make_source, data: str | None, n: int) -> tuple[Evaluation, float]:
    """(evaluate(source, data, n=n, seed=0) with `genlab eval`'s default metrics, seconds incl. making the source)."""
    start = time.perf_counter()
    result = evaluate(make_source(), data, n=n, seed=0)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- one family on one dataset


def run_family(family: str, data: str, folder: Path, args, log) -> list[dict]:
    out = folder / f"genlab_{family}"
    train_set = genlab.load_dataset(data, split="train")
    reference = REFERENCES.get(family) if not args.genlab_only else None
    skip_reason = reference.missing() if reference else None
    rows: list[dict] = []
    timing = _reusable(out, family, args.seed, args.epochs) if (args.reuse or args.reference_only) else None
    side_by_side = args.side_by_side and timing is None and not args.reference_only and reference and not skip_reason
    ref_result = None

    if timing is not None:
        log(f"{family} on {data}: reusing the finished genlab run at {out} (wall {timing['wall']:.0f} s)")
        timing["reused"] = True
    elif args.reference_only:
        log(f"{family} on {data}: no finished genlab run in {out}; its wall time is unknown")
    elif side_by_side:
        log(f"{family} on {data}: genlab and the reference side by side, one thread each")
        context = multiprocessing.get_context("spawn")
        started, done, errors = context.Event(), context.Event(), context.Queue()
        child = context.Process(target=_genlab_child, args=(family, data, str(out), args.seed, args.epochs, started,
                                                            done, errors))  # fmt: skip
        child.start()
        while not started.wait(0.2) and child.is_alive():  # both clocks start together, past the child's imports
            pass
        ref_result = train_reference(reference, train_set, args, log, lambda seconds: done.is_set(), threads=1,
                                     planned_epochs=_planned_epochs(family, train_set, args))  # fmt: skip
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"genlab's {family} failed in its process: {errors.get() if not errors.empty() else ''}")
        timing = json.loads(timing_file(out).read_text())
        timing["side_by_side"] = True
    else:
        log(f"{family} on {data}: training genlab with its defaults")
        timing = train_genlab(family, data, out, args.seed, args.epochs, args.threads)

    if timing is not None and not args.reference_only:
        run = genlab.Run.load(out)
        log(f"  genlab: {timing['wall']:.0f} s, {run.info.get('epochs_completed')} epochs; evaluating {args.n}")
        result, seconds = timed_eval(lambda: str(out), None, args.n)
        rows.append({"family": family, "data": data, "side": "genlab defaults", "budget": genlab_budget(
            run, len(train_set)), "wall": timing["wall"], "eval": seconds, "result": result, "other":
            timing["other"], "threads": timing.get("threads"), "reused": timing.get("reused", False),
            "side_by_side": timing.get("side_by_side", False)})  # fmt: skip
        log(f"  genlab {family}: FID {result.metrics.get('fid', float('nan')):.2f}, eval {seconds:.0f} s")

    if args.baseline and timing is not None and not args.reference_only:
        rows.append(run_baseline(family, data, len(train_set), folder, args, timing["wall"], log))
    if reference is None:
        return rows
    if skip_reason:
        rows.append({"family": family, "data": data, "side": f"reference: {reference.name}", "skipped": skip_reason})
        log(f"  reference skipped: {skip_reason}")
        return rows
    limit = timing["wall"] if timing is not None else None
    if args.max_minutes is not None:
        limit = min(limit or float("inf"), 60 * args.max_minutes)
    if limit is None:
        rows.append(
            {
                "family": family,
                "data": data,
                "side": f"reference: {reference.name}",
                "skipped": "no genlab wall time to match (no finished run in --keep) and no --max-minutes",
            }
        )
        return rows
    if ref_result is None:
        log(f"  reference {reference.name}: {limit:.0f} s")
        ref_result = train_reference(
            reference,
            train_set,
            args,
            log,
            lambda seconds: seconds >= limit,
            threads=args.threads,
            planned_epochs=_planned_epochs(family, train_set, args),
        )
    model, steps, wall, other, threads = ref_result
    for mode, draw in reference.modes:
        path = folder / f"reference_{family}_{re.sub(r'[^A-Za-z0-9]+', '_', mode).strip('_')}.npz"

        def make_source(draw=draw, path=path):
            np.savez(path, images=draw(model, args.n, args.seed).numpy())
            return str(path)

        result, seconds = timed_eval(make_source, data, args.n)
        rows.append({"family": family, "data": data, "side": f"reference: {reference.name}, {mode}",
                     "budget": {"steps": steps, "epochs": steps * reference.batch_size / len(train_set),
                                "default_steps": None, "batch_size": reference.batch_size},
                     "wall": wall, "eval": seconds, "result": result, "other": other, "threads": threads,
                     "reused": False, "side_by_side": side_by_side, "matched": limit})  # fmt: skip
        log(f"  reference ({mode}): FID {result.metrics.get('fid', float('nan')):.2f}, eval {seconds:.0f} s")
    return rows


# ---------------------------------------------------------------- baseline: genlab's earlier defaults


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action, so that Python there turns it into KeyboardInterrupt
    (a shell without job control starts background commands with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _checkout_python(source: Path, threads: int | None, *arguments: str) -> tuple[list[str], dict]:
    """The command and environment that run `python -m genlab ARGUMENTS` from the checkout at `source`."""
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return [sys.executable, "-m", "genlab", *arguments], env


def _import_seconds(source: Path, threads: int | None) -> float:
    """How long the checkout's CLI takes to start (python, torch, genlab): not counted in its training time."""
    _, env = _checkout_python(source, threads)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, genlab.cli, genlab.training"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def run_baseline(family: str, data: str, images: int, folder: Path, args, limit: float, log) -> dict:
    """The earlier checkout's defaults trained for `limit` seconds, sampled by it and scored here: one table row."""
    source = Path(args.baseline)
    out = folder / f"baseline_{family}"
    side = f"{BASELINE_SIDE} ({args.baseline_label})"
    startup = _import_seconds(source, args.threads)
    arguments = ["train", family, "--data", data, "--out", str(out), "--seed", str(args.seed), "--sample-every", "0"]
    command, env = _checkout_python(source, args.threads, *arguments, "--quiet", "--overwrite")
    log(f"  baseline {family}: {limit:.0f} s (+{startup:.0f} s to start) from {source}")
    with open(folder / f"baseline_{family}.log", "w") as output, LoadMeter() as load:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   preexec_fn=_default_sigint)  # fmt: skip
        while process.poll() is None and time.perf_counter() - start < limit + startup:
            time.sleep(0.2)
        interrupted = process.poll() is None
        if interrupted:
            process.send_signal(signal.SIGINT)  # the trainer saves the step it reached, then exits
        process.wait()
        wall = time.perf_counter() - start - startup
    info = json.loads((out / "run.json").read_text())
    status, message = info.get("status"), info.get("message") or ""
    if interrupted and status != "interrupted":
        return {"family": family, "data": data, "side": side, "skipped": f"stopped at {wall:.0f} s: {status}"}
    if not interrupted and status != "completed":
        return {"family": family, "data": data, "side": side, "skipped": f"ended {status}: {message}"}
    samples = folder / f"baseline_{family}.npz"

    def make_source() -> str:
        sample, sample_env = _checkout_python(source, args.threads, "sample", str(out), "--n", str(args.n),
                                              "--seed", "0", "--format", "npz", "--out", str(samples))  # fmt: skip
        subprocess.run(sample, env=sample_env, check=True, capture_output=True)
        return str(samples)

    result, seconds = timed_eval(make_source, data, args.n)
    train = info["train"]
    per_epoch = -(-images // train["batch_size"])
    done = re.search(r"epoch (\d+), step (\d+)", message)  # "interrupted in epoch E, step S" (S within E)
    epochs = int(info.get("epochs_completed") or 0)
    steps = (int(done.group(1)) - 1) * per_epoch + int(done.group(2)) if done else epochs * per_epoch
    log(f"  baseline {family}: {status} after {steps:,} steps ({message or 'its own end'}); "
        f"FID {result.metrics.get('fid', float('nan')):.2f}, eval {seconds:.0f} s")  # fmt: skip
    return {"family": family, "data": data, "side": side, "budget": {"steps": steps, "epochs": steps / per_epoch,
            "default_steps": None, "batch_size": train["batch_size"], "planned_epochs": train["epochs"]},
            "wall": wall, "eval": seconds, "result": result, "other": load.other_cores, "threads": args.threads,
            "reused": False, "side_by_side": False, "matched": limit}  # fmt: skip


def _planned_epochs(family: str, train_set, args) -> int:
    """The epochs genlab's default budget plans (the diffusers loop plans its cosine schedule over them)."""
    model = MODELS[family]
    return args.epochs or model.default_epochs(len(train_set), model.default_batch_size)


def train_reference(reference: Reference, train_set, args, log, stop: Stop, threads, planned_epochs):
    """(model, steps, wall seconds, other processes' cores, threads) of the reference loop run until `stop`."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with LoadMeter() as load:
            start = time.perf_counter()
            model, steps = reference.train(train_set, args.seed, stop, planned_epochs)
            wall = time.perf_counter() - start
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    log(f"  reference: {steps:,} steps in {wall:.0f} s")
    return model, steps, wall, load.other_cores, used


# ---------------------------------------------------------------- tables


def _with_floor(result: Evaluation, key: str, fmt: str) -> str:
    if key not in result.metrics:
        return "-"
    floor = result.floor.get(key)
    return fmt.format(result.metrics[key]) + ("" if floor is None else f" ({fmt.format(floor)})")


def score_table(rows: list[dict]) -> str:
    body = []
    for row in rows:
        if "skipped" in row:
            body.append([row["family"], row["side"], f"skipped: {row['skipped']}"] + ["-"] * 11)
            continue
        r, b = row["result"], row["budget"]
        budget = f"{b['steps']:,} steps ({b['epochs']:.1f} epochs, batch {b['batch_size']})"
        if b.get("default_steps"):
            budget += f"; default {b['default_steps']:,}"
        if b.get("planned_epochs"):
            budget += f" of its {b['planned_epochs']} planned"
        covered = ("-" if "classes_covered" not in r.metrics else
                   f"{r.metrics['classes_covered']:.0f}/{r.metrics.get('num_classes', 0):.0f}")  # fmt: skip
        marks = (" *" if row["reused"] else "") + (" †" if row["side_by_side"] else "")
        body.append([
            row["family"], row["side"], budget, f"{row['wall']:.0f} s{marks}", f"{row['eval']:.0f} s",
            f"{row['wall'] + row['eval']:.0f} s", f"{r.info['counts']['samples']:,}",
            f"**{r.metrics['fid']:.2f}** ({r.floor['fid']:.2f})", _with_floor(r, "precision", "{:.3f}"),
            _with_floor(r, "recall", "{:.3f}"), covered, _with_floor(r, "label_accuracy", "{:.3f}"),
            str(row["threads"] or "-"), f"{row['other']:.2f}",
        ])  # fmt: skip
    return markdown_table(
        [
            "Family",
            "Side",
            "Budget",
            "Wall (train)",
            "Eval",
            "Total",
            "Samples",
            "FID (floor)",
            "Precision (floor)",
            "Recall (floor)",
            "Classes covered",
            "Label acc. (floor)",
            "Threads",
            "Other procs (cores)",
        ],
        body,
    )


def verdicts(rows: list[dict], data: str) -> list[str]:
    lines = []
    goal = WALL_GOAL_MINUTES.get(data)
    for family in dict.fromkeys(r["family"] for r in rows):
        ours = next((r for r in rows if r["family"] == family and r["side"] == "genlab defaults"), None)
        theirs = [r for r in rows if r["family"] == family and r["side"].startswith("reference") and "result" in r]
        before = next((r for r in rows if r["family"] == family and r["side"].startswith(BASELINE_SIDE)
                       and "result" in r), None)  # fmt: skip
        skipped = [r for r in rows if r["family"] == family and "skipped" in r]
        parts = []
        if ours is not None:
            fid = ours["result"].metrics["fid"]
            if theirs:
                best = min(theirs, key=lambda r: r["result"].metrics["fid"])
                other = best["result"].metrics["fid"]
                parts.append(f"genlab FID {fid:.2f} vs reference {other:.2f} at equal wall time "
                             f"({ours['wall']:.0f} s vs {best['wall']:.0f} s): "
                             f"{'beats' if fid < other else 'does not beat'}")  # fmt: skip
            elif skipped:
                parts.append(f"genlab FID {fid:.2f}; reference skipped ({skipped[0]['skipped']})")
            else:
                parts.append(f"genlab FID {fid:.2f} (no external reference)")
            if before is not None:
                earlier = before["result"].metrics["fid"]
                met = fid <= BASELINE_FID_RATIO * earlier
                parts.append(f"against the earlier defaults' FID {earlier:.2f} in the same time "
                             f"({before['wall']:.0f} s): {fid / earlier:.2f}x (goal <= {BASELINE_FID_RATIO:g}x): "
                             f"{'met' if met else 'NOT met'}")  # fmt: skip
            if data == "mnist-5k" and family in TARGETS:
                fid_target, recall_target = TARGETS[family]
                recall = ours["result"].metrics.get("recall", float("nan"))
                met = fid <= fid_target and recall >= recall_target
                parts.append(f"target FID <= {fid_target:g} and recall >= {recall_target:.2f} (recall {recall:.3f}): "
                             f"{'met' if met else 'NOT met'}")  # fmt: skip
            if goal is not None:
                minutes = ours["wall"] / 60
                parts.append(f"training wall {minutes:.1f} min (with eval {(ours['wall'] + ours['eval']) / 60:.1f}) "
                             f"against the {goal}-minute goal: {'met' if minutes <= goal else 'NOT met'}")  # fmt: skip
        elif theirs:
            best = min(theirs, key=lambda r: r["result"].metrics["fid"])
            parts.append(f"reference only: FID {best['result'].metrics['fid']:.2f} in {best['wall']:.0f} s")
        if parts:
            lines.append(f"{family} on {data}: " + "; ".join(parts) + ".")
    return lines


# ---------------------------------------------------------------- main


def _names(text: str, allowed: tuple[str, ...], what: str, parser) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if bad := [t for t in names if t not in allowed]:
        parser.error(f"unknown {what} {bad}; choose from {', '.join(allowed)}")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated (default all: {','.join(FAMILIES)})",
    )
    parser.add_argument("--data", default="mnist-5k", help=f"comma-separated, from {', '.join(DATASETS)}")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both sides (default 0)")
    parser.add_argument("--n", type=int, default=1000, help="samples scored per row (default 1,000)")
    parser.add_argument("--threads", type=int, help="torch threads for each side (default: torch's)")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="train genlab and the reference at the same time, in two processes of one thread each "
        "(the reference stops when genlab's training ends): for a machine that must be shared",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--genlab-only", action="store_true", help="genlab's rows only, no reference loops")
    only.add_argument(
        "--reference-only",
        action="store_true",
        help="the reference loops only, matched to the finished genlab runs in --keep",
    )
    parser.add_argument(
        "--max-minutes", type=float, help="stop each reference loop after this many minutes at most (for testing)"
    )
    parser.add_argument("--keep", metavar="DIR", help="keep runs and sample files in DIR (default: a temporary folder)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: score a finished genlab run found there (same family, seed and budget) "
        "instead of training it again; its wall time is the one recorded then",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also train the defaults of an earlier genlab checkout in DIR (its src/) for the same wall time, "
        "sampled by it and scored here (e.g. `git worktree add DIR 47b2353`, the defaults before issue 20)",
    )
    parser.add_argument("--baseline-label", default="47b2353", help="what --baseline is, for the table")
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)  # testing only: not the default budget
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    args = parser.parse_args(argv)
    families = _names(args.families, FAMILIES, "family", parser)
    datasets = _names(args.data, DATASETS, "dataset", parser)
    if (args.reuse or args.reference_only) and not args.keep:
        parser.error("--reuse and --reference-only need --keep DIR (where the genlab runs are)")
    if args.baseline and not (Path(args.baseline) / "src" / "genlab").is_dir():
        parser.error(f"--baseline {args.baseline}: no src/genlab there; give a genlab checkout")
    if args.write and (args.epochs is not None or args.max_minutes is not None):
        parser.error("--epochs and --max-minutes are for testing: their numbers are no benchmark; drop --write")

    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    log(machine_line())
    tables = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        os.environ["GENLAB_CACHE"] = str(folder / "cache")  # real features and floors of this run's own
        for data in datasets:
            rows: list[dict] = []
            for family in families:
                (folder / data).mkdir(parents=True, exist_ok=True)
                rows += run_family(family, data, folder / data, args, log)
            tables.append((data, rows))

    total = time.perf_counter() - began
    options = (f" --threads {args.threads}" if args.threads else "") + (" --side-by-side" if args.side_by_side else "")
    options += f" --baseline DIR --baseline-label {args.baseline_label}" if args.baseline else ""
    options += " --genlab-only" if args.genlab_only else ""
    command = (
        f"python benchmarks/time_to_quality.py --families {','.join(families)} --data {','.join(datasets)} "
        f"--seed {args.seed} --n {args.n}{options}"
    )
    budgets = ", ".join(f"{f} {MODELS[f].default_steps:,}" for f in families) + " (x sqrt(images / 4,000), 1 to 2.5)"
    parts = [
        f"Measured with `{command}` on {machine_line()}; this invocation took {total / 60:.0f} min. "
        f"Default budgets (optimizer steps): {budgets}.",
        "genlab: `genlab.train(FAMILY, DATA, out, seed=S)` with no epochs (the family's default budget); wall: "
        "`genlab.train` end to end. Reference: the family's plain loop trained for the same wall time (it stops at "
        "the first step past it). Eval: drawing the samples and `evaluate(..., n=N, seed=0)` (`genlab eval`'s "
        "defaults, every metric that applies) against the test split; total = wall + eval. In brackets the "
        "real-vs-real floor. * reused run (its time recorded by an earlier invocation); † trained side by side "
        "with the other side, one thread each.",
    ]
    for data, rows in tables:
        parts += [f"### {data}", score_table(rows), "\n".join(f"**{v}**" for v in verdicts(rows, data))]
    return publish(SECTION, "\n\n".join(parts), args.write)


if __name__ == "__main__":
    sys.exit(main())
