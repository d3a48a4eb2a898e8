"""Throughput of every genlab family on fashion-mnist, in one command: training, its peak memory,
sampling, and the time of an FID; written to benchmarks/results.md (rewritten whole each run).

For each family of `genlab.models.MODELS` (`--families`), on fashion-mnist's 60,000 training
images (`genlab.load_dataset("fashion-mnist", split="train")`, 1x28x28 uint8), on the CPU with
the torch threads the environment gives, seed 0 (so every loop starts from the same weights):

  training  the family's loops, each with a model of its own built from seed 0, at the family's
            `default_batch_size` B:
              genlab Trainer   `genlab.build_model(FAMILY, train)`, its `configure_optimizers()`,
                               then for each block `Trainer(model, part, None, TrainConfig(
                               epochs=1, batch_size=B, seed=0, device="cpu"), callbacks=[],
                               optimizers=...).fit()`: one epoch over `part`, the next steps x B
                               images of the dataset (views; every block's Trainer shares the
                               model and optimizers)
              per-sample loop  `model.training_step((x, y), optimizers)` for each batch of a
                               `DataLoader(batch_size=B, shuffle=True, num_workers=0)` over all
                               60,000 images whose Dataset turns one uint8 image into a float in
                               [0, 1] per item (`_common.examples_loader`: gan_throughput.py's
                               lean loop, for any family)
              as pytorch/examples feeds it
                               the same, but each item goes the way torchvision's MNIST +
                               ToTensor() takes it: uint8 -> PIL image -> numpy -> float tensor
                               (`_common.MNISTAsTorchvision`), which is how pytorch/examples and
                               most tutorials feed the network
              diffusers (ddpm) `ddpm_vs_diffusers.DiffusersTraining`: diffusers' UNet2DModel laid
                               out as genlab's small preset with DDPMScheduler, trained as their
                               train_unconditional.py does (per-sample PIL + ToTensor + Normalize
                               items, AdamW, cosine schedule, EMA), at batch 128; only where
                               diffusers is installed
              genlab bf16      with --bf16: the genlab Trainer again, `TrainConfig(precision="bf16")`
                               (bf16 autocast, fp32 weights; opt-in on the CPU), its speed given
                               over the per-sample loop's, which runs in fp32
              genlab compile   with --compile: the genlab Trainer again, `TrainConfig(compile=True)`
                               (torch.compile of the family's `compile_targets()`, compiled during
                               the warm-up), its speed given over the per-sample loop's
            All of a family's loops live in one process (this script with `--child speed`). Each
            first runs `--warmup-steps` (10) untimed steps; then they take turns, a block of
            timed steps each (`BLOCKS`: 0.5-5 s of a loop; --block-steps, --blocks), the order
            reversed every other round. The machine's speed drifts (processes started a minute
            apart ran the same loop up to 2x apart here), and taking turns every few seconds
            puts that drift on every loop alike.
            Images/s = all blocks' images / their wall seconds. genlab / a loop = the median over
            the rounds of (genlab's images/s in the round's block / the loop's), with the range.
            "Outside the step" = (the blocks' wall seconds - the seconds spent inside
            `model.training_step`) / steps: what the loop itself costs a step (fetching and
            converting the batch, bookkeeping), measured by wrapping `training_step` in a timer.
            genlab's includes a Trainer made for every block (1-2 ms for the larger models:
            `Module.to` and `train()` walk every module), which a real run makes once.
  memory    each loop again, alone in a fresh process (`--child memory`, answering one JSON
            line), for the warm-up and one block of steps; its peak resident set size
            (`getrusage(RUSAGE_SELF).ru_maxrss`) then, and beside it the peak before the loop
            was made (the imports and the dataset: what the process holds before any training).
            The dataset tensor itself is given above the table for scale (60,000 x 784 bytes = 45 MiB).
  sampling  images/s of `model.sample(n, generator)` under `torch.no_grad()` in eval mode, by the
            model the genlab Trainer just trained in its memory process (after the memory was
            read), with n = `--sample-n` (256; pixelcnn, which draws pixel by pixel, at most 64)
            after an untimed one-image draw, the call repeated until a second has passed;
            ddpm samples with its default, DDPM's ancestral sampler over 50 steps.
  FID       seconds of an FID of `--fid-n` (2,000) against as many fashion-mnist images with the
            shipped "fashion" extractor, through fid_speed.py's functions, each pipeline in a
            fresh process after one untimed run of it: genlab cold (`Extractor.features` of both
            sides, `gaussian_stats`, `fid`; nothing cached) and torchmetrics'
            `FrechetInceptionDistance(feature=GenlabFeatureLayer(...))` where torchmetrics imports
            (both in batches of 500; "real" = the first n test images, "generated" = n training
            images drawn with seed 0, as fid_speed.py).

Every timed block runs under `_common.LoadMeter`: each table says how many cores other processes
kept busy meanwhile (for training, the most in any block); one that says more than ~0.2 was timed
on a busy machine. Nothing is retried.

    python benchmarks/run.py                               # every family, the defaults: see the README
    python benchmarks/run.py --families vae,ddpm --blocks 4
    python benchmarks/run.py --bf16                        # also genlab under bf16 autocast
    python benchmarks/run.py --compile --out F.md          # also genlab with torch.compile
    python benchmarks/run.py --smoke --families vae,ddpm   # 1 + 2 x 2 steps, 8 samples, FID of 200: a check
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import genlab
from genlab.models import MODELS
from genlab.models.ddpm import DDPMConfig
from genlab.training.trainer import TrainConfig, Trainer

from _common import examples_loader, machine_line, markdown_table, timed

DATA = "fashion-mnist"
SEED = 0
RESULTS = Path(__file__).resolve().parent / "results.md"
TRAIN_IMAGES = 60_000  # fashion-mnist's training split
SMOKE = {"block_steps": 2, "blocks": 2, "warmup_steps": 1, "sample_n": 8, "fid_n": 200}
# (timed steps per block, blocks) per family: a block is 0.5-5 s of one loop, and the loops take
# turns block by block, so a drift of the machine's speed (up to 2x between processes started a
# minute apart, on this shared machine) falls on every loop alike.
BLOCKS = {"vae": (100, 9), "gan": (60, 10), "dcgan": (10, 10), "wgan-gp": (10, 10), "ddpm": (5, 10),
          "pixelcnn": (4, 10), "realnvp": (4, 10)}
MAX_SAMPLE_N = {"pixelcnn": 64}  # draws pixel by pixel: 784 network calls whatever n is
FID_BATCH = 500  # fid_speed.py's default caller batch
FID_MAX_N = 10_000  # the test split's size
LOOP_LABELS = {
    "genlab": "genlab Trainer",
    "peer": "per-sample DataLoader loop, same `training_step`",
    "peer-torchvision": "the same, items as pytorch/examples makes them (PIL + ToTensor)",
    "diffusers": "diffusers UNet2DModel, train_unconditional-style loop",
    "genlab-bf16": "genlab Trainer, `--precision bf16` (opt-in on the CPU)",
    "genlab-compile": "genlab Trainer, `--compile` (torch.compile, inductor)",
}
CHILDREN = ("speed", "memory", "fid-genlab", "fid-torchmetrics")


# ---------------------------------------------------------------- the loops


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def image_range(train: genlab.ImageDataset, start: int, stop: int) -> genlab.ImageDataset:
    """Images start..stop-1 of `train` (and their labels) as a dataset of their own: views, no copy,
    so the peak memory of the genlab loop holds the dataset once, as the other loops' does."""
    return genlab.ImageDataset(train.images[start:stop], train.labels[start:stop], list(train.class_names), train.name)


def fresh_model(family: str, train: genlab.ImageDataset):
    """(model, its optimizers), built from seed 0: every loop starts from the same weights."""
    torch.manual_seed(SEED)
    model = genlab.build_model(family, train)
    return model, model.configure_optimizers()


class StepTimer:
    """Times every call of `model.training_step` (wrapped on the instance): `seconds` inside the steps."""

    def __init__(self, model):
        self.seconds = 0.0
        step = model.training_step

        def timed_step(*args, **kwargs):
            start = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        model.training_step = timed_step


class GenlabLoop:
    """genlab's Trainer, `run(steps)` at a time: one epoch over the next steps x B images (views), same optimizers."""

    def __init__(self, family: str, train: genlab.ImageDataset, precision: str = "fp32", compile: bool = False):
        self.model, self.optimizers = fresh_model(family, train)
        self.step_timer = StepTimer(self.model)
        self.batch = self.model.default_batch_size
        # With compile, the first block's Trainer compiles the family's networks (during the warm-up) and
        # the later ones find them compiled (acceleration.compile_networks leaves those as they are).
        self.config = TrainConfig(epochs=1, batch_size=self.batch, seed=SEED, device="cpu", precision=precision,
                                  compile=compile)
        self.train, self.next_image = train, 0

    def run(self, steps: int) -> int:
        """Train `steps` more steps; the images trained."""
        stop = self.next_image + steps * self.batch  # parse_args checks that every loop's steps fit in one epoch
        part = image_range(self.train, self.next_image, stop)
        Trainer(self.model, part, None, self.config, callbacks=[], optimizers=self.optimizers).fit()
        self.next_image = stop
        return steps * self.batch


class PerSampleLoop:
    """`model.training_step` on the batches of a per-sample DataLoader (`_common.examples_loader`), epoch after epoch."""

    def __init__(self, family: str, train: genlab.ImageDataset, as_torchvision: bool = False):
        self.model, self.optimizers = fresh_model(family, train)
        self.step_timer = StepTimer(self.model)
        self.batch = self.model.default_batch_size
        loader = examples_loader(train, self.batch, as_torchvision=as_torchvision)  # shuffled by the seeded global RNG
        self.batches = (batch for _ in itertools.count() for batch in loader)
        self.model.train()

    def run(self, steps: int) -> int:
        """Train `steps` more steps; the images trained."""
        images = 0
        for x, y in itertools.islice(self.batches, steps):
            metrics = self.model.training_step((x, y), self.optimizers)
            if not all(math.isfinite(value) for value in metrics.values()):
                raise SystemExit(f"the per-sample loop's step numbers became non-finite: {metrics}")
            images += len(x)
        return images


class DiffusersLoop:
    """ddpm_vs_diffusers.DiffusersTraining (diffusers' UNet2DModel, train_unconditional.py's loop), `run(steps)` at a time."""

    def __init__(self, train: genlab.ImageDataset):
        from ddpm_vs_diffusers import BATCH, DiffusersTraining  # imported here: only ddpm's children need it

        self.step_timer = None  # not a genlab training_step: the loop's own cost is not separated
        self.batch = BATCH
        self.steps = DiffusersTraining(train, 1, SEED, DDPMConfig().lr).steps()

    def run(self, steps: int) -> int:
        """Train `steps` more steps (within its one epoch); the images trained."""
        return sum(images for _, images, _ in itertools.islice(self.steps, steps))


def family_loops(family: str, args) -> list[str]:
    """The loops measured for `family`, in the order they take turns."""
    diffusers = ["diffusers"] if family == "ddpm" and importlib.util.find_spec("diffusers") else []
    return ["genlab", "peer", "peer-torchvision", *diffusers, *(["genlab-bf16"] if args.bf16 else []),
            *(["genlab-compile"] if args.compile else [])]


def make_loop(kind: str, family: str, train: genlab.ImageDataset):
    """A fresh loop of `kind` (a LOOP_LABELS key) for `family`."""
    if kind.startswith("genlab"):
        return GenlabLoop(family, train, "bf16" if kind == "genlab-bf16" else "fp32", compile=kind == "genlab-compile")
    if kind in ("peer", "peer-torchvision"):
        return PerSampleLoop(family, train, as_torchvision=kind == "peer-torchvision")
    return DiffusersLoop(train)


# ---------------------------------------------------------------- measuring, in a child process


def measure_speed(family: str, train: genlab.ImageDataset, args) -> dict:
    """Every loop of `family` in this process, taking turns block by block; per loop its totals and per-block rates."""
    kinds = family_loops(family, args)
    loops = {kind: make_loop(kind, family, train) for kind in kinds}
    for loop in loops.values():
        loop.run(args.warmup_steps)
    block_steps, blocks = block_plan(family, args)
    blocks_of = {kind: [] for kind in kinds}  # per block: (images, seconds, seconds inside training_step, other cores)
    for block in range(blocks):
        for kind in kinds if block % 2 == 0 else kinds[::-1]:  # alternate, so no loop always runs right after another
            loop = loops[kind]
            if loop.step_timer is not None:
                loop.step_timer.seconds = 0.0
            images, seconds, other_cores = timed(lambda: loop.run(block_steps))
            inside = None if loop.step_timer is None else loop.step_timer.seconds
            blocks_of[kind].append((images, seconds, inside, other_cores))
    return {kind: {"batch": loops[kind].batch, "steps": block_steps * blocks, "blocks": blocks_of[kind]}
            for kind in kinds}


def time_sampling(model, n: int, min_seconds: float = 1.0) -> dict:
    """Images/s of `model.sample(n)` (eval mode, no gradients) after an untimed one-image draw, the
    call repeated until `min_seconds` have passed (a VAE draws 256 images in 2 ms, under the
    10 ms resolution of the load meter)."""
    model.eval()
    generator = torch.Generator().manual_seed(SEED)

    def draw_for_a_while() -> int:
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < min_seconds:
            model.sample(n, generator=generator)
            calls += 1
        return calls

    with torch.no_grad():
        model.sample(1, generator=generator)
        calls, seconds, other_cores = timed(draw_for_a_while)
    return {"sample_n": n, "sample_calls": calls, "sample_images_per_second": calls * n / seconds,
            "sample_other_cores": other_cores}


def measure_memory(family: str, kind: str, train: genlab.ImageDataset, args) -> dict:
    """One loop alone in this fresh process: peak memory before and after the warm-up plus one block
    of steps; genlab's loop then times sampling with the model it trained."""
    before = peak_rss_mib()
    loop = make_loop(kind, family, train)
    loop.run(args.warmup_steps + block_plan(family, args)[0])
    result = {"peak_rss_mib": peak_rss_mib(), "peak_rss_before_mib": before}
    if kind == "genlab":
        result.update(time_sampling(loop.model, min(args.sample_n, MAX_SAMPLE_N.get(family, args.sample_n))))
    return result


def measure_fid(pipeline: str, args) -> dict:
    """Seconds of one FID of --fid-n vs --fid-n fashion-mnist images, after an untimed run of the same pipeline."""
    from fid_speed import GenlabFeatureLayer, load_images, run_genlab, run_torchmetrics  # only this child needs them
    from genlab.eval.features import load_extractor

    _, real, generated = load_images(args.fid_n, SEED)
    extractor = load_extractor("fashion")
    if pipeline == "fid-genlab":
        compute = partial(run_genlab, extractor, real, generated, FID_BATCH)
    else:
        try:
            import torchmetrics  # noqa: F401  (only whether it imports)
        except ImportError:
            return {"missing": "torchmetrics not installed"}
        compute = partial(run_torchmetrics, GenlabFeatureLayer(extractor.model), real, generated, FID_BATCH)
    compute()
    (value, _), seconds, other_cores = timed(compute)
    return {"fid": value, "seconds": seconds, "other_cores": other_cores}


def child(args) -> int:
    """`--child speed|memory|fid-...`: one measurement; prints its JSON as the last line of stdout."""
    if args.child.startswith("fid-"):
        result = measure_fid(args.child, args)
    else:
        train = genlab.load_dataset(DATA, split="train")
        family = args.families[0]
        if args.child == "speed":
            result = measure_speed(family, train, args)
        else:
            result = measure_memory(family, args.loop, train, args)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- the parent: children, tables, results.md


def block_plan(family: str, args) -> tuple[int, int]:
    """(timed steps per block, blocks) of `family`'s loops: BLOCKS, or --block-steps / --blocks."""
    block_steps, blocks = BLOCKS[family]
    return args.block_steps or block_steps, args.blocks or blocks


def run_child(kind: str, args, family: str | None = None, loop: str | None = None) -> dict:
    """One measurement in a fresh process of this script; its JSON answer."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
               "--warmup-steps", str(args.warmup_steps), "--sample-n", str(args.sample_n), "--fid-n", str(args.fid_n)]
    command += ["--block-steps", str(args.block_steps)] if args.block_steps else []
    command += ["--blocks", str(args.blocks)] if args.blocks else []
    command += ["--families", family] if family else []
    command += ["--loop", loop] if loop else []
    command += ["--bf16"] if args.bf16 else []
    command += ["--compile"] if args.compile else []
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # stderr: straight through
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def overall_rate(result: dict) -> float:
    """Images/s of one loop over all its blocks."""
    return sum(block[0] for block in result["blocks"]) / sum(block[1] for block in result["blocks"])


def block_rates(result: dict) -> list[float]:
    """Images/s of each block of one loop."""
    return [images / seconds for images, seconds, _, _ in result["blocks"]]


def ratio_text(ratios: list[float], bold: bool = False) -> str:
    """The median of per-block speed ratios, with their range when there are several."""
    middle = f"{statistics.median(ratios):.2f}x"
    middle = f"**{middle}**" if bold else middle
    return middle if len(ratios) == 1 else f"{middle} ({min(ratios):.2f}-{max(ratios):.2f})"


def loop_row(family: str, kind: str, speed: dict[str, dict], memory: dict) -> list[str]:
    """A training-table row: one loop of one family.

    Other loops are compared with genlab's Trainer block by block (the blocks of one round ran
    seconds apart); the bf16 row is given as its speed over the per-sample loop's (fp32).
    """
    result = speed[kind]
    blocks = result["blocks"]
    if kind == "genlab":
        ratio = "-"
    elif kind in ("genlab-bf16", "genlab-compile"):
        ratio = ratio_text([a / b for a, b in zip(block_rates(result), block_rates(speed["peer"]))])
        ratio += " the per-sample loop"
    else:
        ratio = ratio_text([a / b for a, b in zip(block_rates(speed["genlab"]), block_rates(result))], bold=True)
    inside = [b[2] for b in blocks]
    seconds = sum(b[1] for b in blocks)
    outside = "-" if None in inside else f"{(seconds - sum(inside)) / result['steps'] * 1e3:.2f}"
    return [family, LOOP_LABELS[kind], str(result["batch"]), f"{overall_rate(result):,.1f}", ratio, outside,
            f"{memory['peak_rss_mib']:,.0f} ({memory['peak_rss_before_mib']:,.0f})",
            f"{max(b[3] for b in blocks):.2f}"]


def fid_row(label: str, result: dict, genlab_seconds: float | None) -> list[str]:
    """An FID-table row: one pipeline; with `genlab_seconds`, genlab's speed-up over it."""
    if "missing" in result:
        return [label, f"- ({result['missing']})", "-", "-", "-"]
    speedup = "-" if genlab_seconds is None else f"**{result['seconds'] / genlab_seconds:.2f}x**"
    return [label, f"{result['seconds']:.3f}", f"{result['fid']:.4f}", speedup, f"{result['other_cores']:.2f}"]


def smoke_results_path() -> Path:
    """A new, empty temporary file for a smoke run's results (kept, so it can be read)."""
    handle, name = tempfile.mkstemp(prefix="genlab-results-smoke-", suffix=".md")
    os.close(handle)
    return Path(name)


def plan_text(args, families: list[str]) -> str:
    """Each family's warm-up and timed steps, as the results say them."""
    parts = []
    for family in families:
        block_steps, blocks = block_plan(family, args)
        parts.append(f"{family} {args.warmup_steps} + {blocks} x {block_steps}")
    return ", ".join(parts)


def invocation() -> str:
    """The command line this process was started with, thread settings from the environment first."""
    settings = [f"{name}={os.environ[name]}" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ]
    return " ".join(settings + [shlex.join(sys.orig_argv)])


def family_list(text: str) -> list[str]:
    """--families: comma-separated names from genlab.models.MODELS."""
    families = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in families if name not in MODELS]
    if unknown or not families:
        raise argparse.ArgumentTypeError(f"unknown or no families ({', '.join(unknown) or text!r}); "
                                         f"choose from {', '.join(MODELS)}")
    return families


def at_least(minimum: int):
    """An argparse type: an integer of at least `minimum`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    """The options, --smoke applied and checked against the data."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", type=family_list, default=list(MODELS),
                        help=f"comma-separated (default all: {','.join(MODELS)})")
    plans = ", ".join(f"{family} {blocks} x {steps}" for family, (steps, blocks) in BLOCKS.items())
    parser.add_argument("--block-steps", type=at_least(1), default=None,
                        help=f"timed steps of a block, for every family (default per family; blocks x steps: {plans})")
    parser.add_argument("--blocks", type=at_least(1), default=None,
                        help="blocks each loop runs, taking turns with the others (default per family, above)")
    parser.add_argument("--warmup-steps", type=at_least(0), default=10,
                        help="untimed steps of each loop before the blocks (default 10)")
    parser.add_argument("--sample-n", type=at_least(1), default=256,
                        help=f"images each family samples, timed (default 256; pixelcnn at most {MAX_SAMPLE_N['pixelcnn']})")
    parser.add_argument("--fid-n", type=at_least(2), default=2000, help="images on each side of the FID (default 2,000)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the results file (default benchmarks/results.md; with --smoke a new temporary file)")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check of the script, no benchmark: {warmup_steps} + {blocks} x {block_steps} "
                             "steps, {sample_n} samples, FID of {fid_n} (overrides those options)".format(**SMOKE))
    parser.add_argument("--bf16", action="store_true",
                        help="also time genlab's Trainer under bf16 autocast (--precision bf16): fast on CPUs with "
                             "native bf16 (AVX512-BF16, AMX)")
    parser.add_argument("--compile", action="store_true",
                        help="also time genlab's Trainer with --compile (torch.compile of the family's networks; "
                             "the compiling happens in the untimed warm-up)")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=LOOP_LABELS, help=argparse.SUPPRESS)  # the loop a memory child runs
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.fid_n > FID_MAX_N:
        parser.error(f"--fid-n must be at most {FID_MAX_N:,} (the test split's size)")
    for family in args.families:  # every loop's steps within one epoch of the data
        (block_steps, blocks), batch = block_plan(family, args), MODELS[family].default_batch_size
        if (args.warmup_steps + blocks * block_steps) * batch > TRAIN_IMAGES:
            parser.error(f"{args.warmup_steps} + {blocks} x {block_steps} steps of {family}'s {batch} images exceed "
                         f"fashion-mnist's {TRAIN_IMAGES:,}")
    return args


def main(argv=None) -> int:
    """Every measurement in a child process of its own, then the tables: printed and written to --out."""
    args = parse_args(argv)
    if args.child:
        return child(args)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    train = genlab.load_dataset(DATA, split="train")
    dataset_mib = train.images.numel() * train.images.element_size() / 2**20
    log(machine_line())  # torch's threads among the rest

    training_rows, sampling_rows = [], []
    for family in args.families:
        kinds = family_loops(family, args)
        log(f"{family}: speed, {len(kinds)} loops taking turns ({plan_text(args, [family])})")
        speed = run_child("speed", args, family)
        log(f"{family}: " + ", ".join(f"{kind} {overall_rate(r):,.1f} images/s" for kind, r in speed.items()))
        memory = {}
        for kind in kinds:
            log(f"{family}: peak memory of {LOOP_LABELS[kind]}, alone")
            memory[kind] = run_child("memory", args, family, loop=kind)
        training_rows += [loop_row(family, kind, speed, memory[kind]) for kind in kinds]
        ours = memory["genlab"]
        sampling_rows.append([family, f"{ours['sample_n']:,} x {ours['sample_calls']}",
                              f"{ours['sample_images_per_second']:,.1f}", f"{ours['sample_other_cores']:.2f}"])

    log(f"FID of {args.fid_n:,} vs {args.fid_n:,} images")
    fid_results = {kind: run_child(kind, args) for kind in ("fid-genlab", "fid-torchmetrics")}
    genlab_seconds = fid_results["fid-genlab"]["seconds"]
    fid_rows = [fid_row("genlab, cold (`Extractor.features` x 2, `gaussian_stats`, `fid`)", fid_results["fid-genlab"],
                        None),
                fid_row("torchmetrics `FrechetInceptionDistance(feature=GenlabFeatureLayer(...))`",
                        fid_results["fid-torchmetrics"], genlab_seconds)]

    minutes = (time.perf_counter() - began) / 60
    body = "\n\n".join([
        "# genlab throughput on fashion-mnist",
        f"Machine: {machine_line()}.",
        f"Command: `{invocation()}`; this invocation took {minutes:.1f} min.",
        *(["**A smoke run (`--smoke`): a check of the script, not a benchmark.**"] if args.smoke else []),
        (f"Data: fashion-mnist train, {len(train):,} images 1x28x28; the uint8 dataset tensor itself is "
         f"{dataset_mib:.0f} MiB. On the CPU, seed 0, at each family's default batch; a family's loops share one "
         f"process and take turns, block by block, after their warm-up (untimed + blocks x timed steps: "
         f"{plan_text(args, args.families)}); each loop's peak memory comes from a fresh process of its own. What is "
         f"measured and how: the docstring of benchmarks/run.py."),
        "## Training",
        markdown_table(["Family", "Loop", "Batch", "Images/s (all blocks)",
                        "genlab / this loop (median of the blocks' ratios, range)",
                        "Outside the step, ms per step", "Peak RSS MiB (before the loop)",
                        "Other procs (cores, most in a block)"], training_rows),
        "## Sampling",
        markdown_table(["Family", "Images (per `model.sample` call) x calls", "Images/s", "Other procs (cores)"],
                       sampling_rows),
        f"## FID of {args.fid_n:,} vs {args.fid_n:,} images (shipped \"fashion\" extractor, batches of {FID_BATCH})",
        markdown_table(["Pipeline", "Seconds", "FID", "Speed-up of genlab (this s / genlab s)", "Other procs (cores)"],
                       fid_rows),
    ]) + "\n"
    print(body)
    out = args.out or (smoke_results_path() if args.smoke else RESULTS)
    out.write_text(body)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
