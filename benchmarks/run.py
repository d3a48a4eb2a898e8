"""Throughput of every genlab family on fashion-mnist, in one command: training, its peak memory,
sampling, and the time of an FID; written to benchmarks/results.md (rewritten whole each run).

For each family of `genlab.models.MODELS` (`--families`), on fashion-mnist's 60,000 training
images (`genlab.load_dataset("fashion-mnist", split="train")`, 1x28x28 uint8), on the CPU with
the torch threads the environment gives, seed 0 (so every loop starts from the same weights):

  training  images/s over the family's timed optimizer steps (`STEPS`, about 4-60 s of each
            loop; `--steps` sets one number for all) at its `default_batch_size`, after
            `--warmup-steps` (10) untimed ones, of each loop:
              genlab Trainer   `torch.manual_seed(0)`, `genlab.build_model(FAMILY, train)`, its
                               `configure_optimizers()`, then `Trainer(model, part, None,
                               TrainConfig(epochs=1, batch_size=B, seed=0, device="cpu"),
                               callbacks=[], optimizers=...).fit()`: one epoch over `part`, the
                               next steps x B images of the dataset (the warm-up's part first,
                               then the timed one; both Trainers share the optimizers)
              per-sample loop  the same freshly built model and optimizers, and
                               `model.training_step((x, y), optimizers)` for each batch of a
                               `DataLoader(batch_size=B, shuffle=True, num_workers=0)` over all
                               60,000 images whose Dataset turns one uint8 image into a float in
                               [0, 1] per item (`_common.examples_loader`: gan_throughput.py's
                               lean loop, step-limited and for any family)
              as pytorch/examples feeds it
                               the same, but each item goes the way torchvision's MNIST +
                               ToTensor() takes it: uint8 -> PIL image -> numpy -> float tensor
                               (`_common.MNISTAsTorchvision`), which is how pytorch/examples and
                               most tutorials feed the network
              diffusers (ddpm) `ddpm_vs_diffusers.train_diffusers`: diffusers' UNet2DModel laid
                               out as genlab's small preset with DDPMScheduler, trained in the
                               style of their train_unconditional.py (per-sample PIL + ToTensor +
                               Normalize items, AdamW, cosine schedule, EMA), one epoch over the
                               same steps x 128 images; only where `import diffusers` works
              genlab bf16      with --bf16: the genlab Trainer again, `TrainConfig(precision="bf16")`
                               (bf16 autocast, fp32 weights; opt-in on the CPU), its speed given
                               over the per-sample loop's, which runs in fp32
            Images/s = images trained / wall seconds of the timed steps (the diffusers call also
            builds its UNet, scheduler and EMA inside that time: well under 1% of its steps).
            "Outside the step" = (those wall seconds - the seconds spent inside
            `model.training_step`) / steps: what the loop itself costs a step (fetching and
            converting the batch, bookkeeping), measured by wrapping `training_step` in a timer.
  repeats   the loops of a family run one after another, `--repeats` (3) times over, in fresh
            processes each; a table gives each loop's median images/s, and genlab's speed over
            a loop is the median of the repeats' ratios (genlab and that loop of the same
            repeat, a minute or less apart), with their range.
  memory    each loop runs in a fresh process of its own (this script with `--child`, answering
            one JSON line), whose peak resident set size (`getrusage(RUSAGE_SELF).ru_maxrss`)
            is read right after the timed steps; beside it the peak before the warm-up (the
            imports and the dataset: what the process holds before any training). The dataset tensor itself is given above
            the table for scale (60,000 x 784 bytes = 45 MiB).
  sampling  images/s of `model.sample(n, generator)` under `torch.no_grad()` in eval mode, by the
            model the genlab Trainer of the first repeat just trained (same process, after its memory was read), with
            n = `--sample-n` (256; pixelcnn, which draws pixel by pixel, at most 64) after an
            untimed one-image draw; ddpm samples with its default, DDIM with 50 steps.
  FID       seconds of an FID of `--fid-n` (2,000) against as many fashion-mnist images with the
            shipped "fashion" extractor, through fid_speed.py's functions, each pipeline in a
            fresh process after one untimed run of it: genlab cold (`Extractor.features` of both
            sides, `gaussian_stats`, `fid`; nothing cached) and torchmetrics'
            `FrechetInceptionDistance(feature=GenlabFeatureLayer(...))` where torchmetrics imports
            (both in batches of 500; "real" = the first n test images, "generated" = n training
            images drawn with seed 0, as fid_speed.py).

Every timed block runs under `_common.LoadMeter`: each table says how many cores other processes
kept busy meanwhile (the largest over the repeats); one that says more than ~0.2 was timed on a
busy machine. Nothing is retried.

    python benchmarks/run.py                               # every family, the defaults: see the README
    python benchmarks/run.py --families vae,ddpm --steps 50 --repeats 1
    python benchmarks/run.py --bf16                        # also genlab under bf16 autocast
    python benchmarks/run.py --smoke --families vae,ddpm   # 1 + 3 steps, 1 repeat, 8 samples, FID of 200: a check
"""

from __future__ import annotations

import argparse
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
from itertools import islice
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
SMOKE = {"steps": 3, "warmup_steps": 1, "repeats": 1, "sample_n": 8, "fid_n": 200}
# Timed steps per family: a few seconds of the fast families' loops, under a minute of the slow
# ones' (measured speeds in results.md), so the machine's drift of a second or two averages out.
STEPS = {"vae": 900, "gan": 600, "dcgan": 100, "wgan-gp": 100, "ddpm": 50, "pixelcnn": 40, "realnvp": 40}
MAX_SAMPLE_N = {"pixelcnn": 64}  # draws pixel by pixel: 784 network calls whatever n is
FID_BATCH = 500  # fid_speed.py's default caller batch
FID_MAX_N = 10_000  # the test split's size
LOOP_LABELS = {  # the training children
    "genlab": "genlab Trainer",
    "genlab-bf16": "genlab Trainer, `--precision bf16` (opt-in on the CPU)",
    "peer": "per-sample DataLoader loop, same `training_step`",
    "peer-torchvision": "the same, items as pytorch/examples makes them (PIL + ToTensor)",
    "diffusers": "diffusers UNet2DModel, train_unconditional-style loop",
}
CHILDREN = (*LOOP_LABELS, "fid-genlab", "fid-torchmetrics")


# ---------------------------------------------------------------- measuring, in a child process


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


def time_training(train_timed_steps, steps: int, batch: int, peak_before_mib: float,
                  step_timer: StepTimer | None = None) -> dict:
    """Run `train_timed_steps()` (`steps` steps of `batch` images) timed: its images/s, load, peak memory,
    and with `step_timer` the milliseconds a step spent outside `training_step`."""
    if step_timer is not None:
        step_timer.seconds = 0.0
    _, seconds, other_cores = timed(train_timed_steps)
    outside = None if step_timer is None else (seconds - step_timer.seconds) / steps * 1e3
    return {"batch": batch, "images_per_second": steps * batch / seconds, "seconds": seconds,
            "outside_step_ms": outside, "other_cores": other_cores, "peak_rss_mib": peak_rss_mib(),
            "peak_rss_before_mib": peak_before_mib}


def time_sampling(model, n: int) -> dict:
    """Images/s of `model.sample(n)` (eval mode, no gradients) after an untimed one-image draw."""
    model.eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        model.sample(1, generator=generator)
        _, seconds, other_cores = timed(lambda: model.sample(n, generator=generator))
    return {"sample_n": n, "sample_images_per_second": n / seconds, "sample_other_cores": other_cores}


def measure_genlab(family: str, train: genlab.ImageDataset, args, precision: str = "fp32") -> dict:
    """genlab's Trainer: warm-up steps, then the timed steps on the next images; then sampling (unless skipped)."""
    peak_before = peak_rss_mib()
    model, optimizers = fresh_model(family, train)
    step_timer = StepTimer(model)
    batch = model.default_batch_size
    config = TrainConfig(epochs=1, batch_size=batch, seed=SEED, device="cpu", precision=precision)
    warmup_images = args.warmup_steps * batch
    if warmup_images:
        Trainer(model, image_range(train, 0, warmup_images), None, config, callbacks=[], optimizers=optimizers).fit()
    timed_part = image_range(train, warmup_images, warmup_images + args.steps * batch)
    trainer = Trainer(model, timed_part, None, config, callbacks=[], optimizers=optimizers)
    result = time_training(trainer.fit, args.steps, batch, peak_before, step_timer)
    if args.skip_sampling:
        return result
    sample_n = min(args.sample_n, MAX_SAMPLE_N.get(family, args.sample_n))
    return {**result, **time_sampling(model, sample_n)}


def per_sample_steps(model, optimizers, batches, steps: int) -> int:
    """`steps` calls of `model.training_step` on the next batches of `batches`; returns the images trained."""
    images = 0
    for x, y in islice(batches, steps):
        metrics = model.training_step((x, y), optimizers)
        if not all(math.isfinite(value) for value in metrics.values()):
            raise SystemExit(f"the per-sample loop's step numbers became non-finite: {metrics}")
        images += len(x)
    return images


def measure_peer(family: str, train: genlab.ImageDataset, args, as_torchvision: bool = False) -> dict:
    """The per-sample DataLoader loop driving the same freshly built model's `training_step`."""
    peak_before = peak_rss_mib()
    model, optimizers = fresh_model(family, train)
    step_timer = StepTimer(model)
    batch = model.default_batch_size
    batches = iter(examples_loader(train, batch, as_torchvision=as_torchvision))  # shuffled by the seeded global generator
    model.train()
    per_sample_steps(model, optimizers, batches, args.warmup_steps)
    return time_training(lambda: per_sample_steps(model, optimizers, batches, args.steps), args.steps, batch,
                         peak_before, step_timer)


def measure_diffusers(train: genlab.ImageDataset, args) -> dict:
    """ddpm_vs_diffusers.py's diffusers loop: an untimed run of the warm-up steps, then one of the timed steps."""
    try:
        import diffusers  # noqa: F401  (only whether it imports)
    except ImportError:
        return {"missing": "diffusers not installed"}
    from ddpm_vs_diffusers import BATCH, train_diffusers  # imported here: the other children never need it

    def train_on(start: int, stop: int):
        return train_diffusers(image_range(train, start, stop), 1, SEED, DDPMConfig().lr,
                               log=lambda text: print(text, file=sys.stderr))

    peak_before = peak_rss_mib()
    warmup_images = args.warmup_steps * BATCH
    if warmup_images:
        train_on(0, warmup_images)
    return time_training(lambda: train_on(warmup_images, warmup_images + args.steps * BATCH), args.steps, BATCH,
                         peak_before)


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
    """`--child KIND --families FAMILY`: one measurement; prints its JSON as the last line of stdout."""
    if args.child.startswith("fid-"):
        result = measure_fid(args.child, args)
    else:
        train = genlab.load_dataset(DATA, split="train")
        family = args.families[0]
        args.steps = timed_steps(family, args)
        if args.child in ("genlab", "genlab-bf16"):
            result = measure_genlab(family, train, args, "bf16" if args.child == "genlab-bf16" else "fp32")
        elif args.child in ("peer", "peer-torchvision"):
            result = measure_peer(family, train, args, as_torchvision=args.child == "peer-torchvision")
        else:
            result = measure_diffusers(train, args)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- the parent: children, tables, results.md


def timed_steps(family: str, args) -> int:
    """The timed optimizer steps of `family`'s loops: --steps, else its entry in STEPS."""
    return args.steps or STEPS[family]


def run_child(kind: str, args, family: str | None = None, sample: bool = True) -> dict:
    """One measurement in a fresh process of this script; its JSON answer."""
    steps = timed_steps(family, args) if family else 1
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
               "--steps", str(steps), "--warmup-steps", str(args.warmup_steps),
               "--sample-n", str(args.sample_n), "--fid-n", str(args.fid_n)]
    command += ["--families", family] if family else []
    command += [] if sample else ["--skip-sampling"]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # stderr: straight through
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio_text(ratios: list[float], bold: bool = False) -> str:
    """The median of per-repeat speed ratios, with their range when there are several."""
    middle = f"**{statistics.median(ratios):.2f}x**" if bold else f"{statistics.median(ratios):.2f}x"
    return middle if len(ratios) == 1 else f"{middle} ({min(ratios):.2f}-{max(ratios):.2f})"


def loop_row(family: str, kind: str, repeats: list[dict[str, dict]]) -> list[str]:
    """A training-table row: one loop of one family over the repeats (medians; ratios per repeat).

    Other loops are compared with genlab's Trainer of the same repeat; the bf16 row is given as
    its speed over the per-sample loop (fp32) of the same repeat.
    """
    results = [repeat[kind] for repeat in repeats]
    if any("missing" in result for result in results):
        return [family, LOOP_LABELS[kind], "-", f"- ({results[0]['missing']})", "-", "-", "-", "-"]
    rate = statistics.median(result["images_per_second"] for result in results)
    if kind == "genlab":
        ratio = "-"
    elif kind == "genlab-bf16":
        ratio = ratio_text([r[kind]["images_per_second"] / r["peer"]["images_per_second"] for r in repeats])
        ratio += " the per-sample loop"
    else:
        ratio = ratio_text([r["genlab"]["images_per_second"] / r[kind]["images_per_second"] for r in repeats], bold=True)
    outside = [result["outside_step_ms"] for result in results if result.get("outside_step_ms") is not None]
    outside_text = f"{statistics.median(outside):.2f}" if outside else "-"
    peak = max(result["peak_rss_mib"] for result in results)
    before = max(result["peak_rss_before_mib"] for result in results)
    return [family, LOOP_LABELS[kind], str(results[0]["batch"]), f"{rate:,.1f}", ratio, outside_text,
            f"{peak:,.0f} ({before:,.0f})", f"{max(result['other_cores'] for result in results):.2f}"]


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


def steps_text(args) -> str:
    """The timed steps of each family, as the results say them."""
    if args.steps:
        return str(args.steps)
    return "(" + ", ".join(f"{family} {timed_steps(family, args)}" for family in args.families) + ")"


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
    parser.add_argument("--steps", type=at_least(1), default=None,
                        help="timed optimizer steps of every loop (default per family: " +
                             ", ".join(f"{family} {steps}" for family, steps in STEPS.items()) + ")")
    parser.add_argument("--repeats", type=at_least(1), default=3,
                        help="times each family's loops run, one after another (default 3)")
    parser.add_argument("--warmup-steps", type=at_least(0), default=10, help="untimed steps before them (default 10)")
    parser.add_argument("--sample-n", type=at_least(1), default=256,
                        help=f"images each family samples, timed (default 256; pixelcnn at most {MAX_SAMPLE_N['pixelcnn']})")
    parser.add_argument("--fid-n", type=at_least(2), default=2000, help="images on each side of the FID (default 2,000)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the results file (default benchmarks/results.md; with --smoke a new temporary file)")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check of the script, no benchmark: {warmup_steps} + {steps} steps, {sample_n} "
                             "samples, FID of {fid_n} (overrides those options)".format(**SMOKE))
    parser.add_argument("--bf16", action="store_true",
                        help="also time genlab's Trainer under bf16 autocast (--precision bf16): fast on CPUs with "
                             "native bf16 (AVX512-BF16, AMX)")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--skip-sampling", action="store_true", help=argparse.SUPPRESS)  # a genlab child that only trains
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.fid_n > FID_MAX_N:
        parser.error(f"--fid-n must be at most {FID_MAX_N:,} (the test split's size)")
    for family in args.families:
        batch, steps = MODELS[family].default_batch_size, timed_steps(family, args)
        if (args.warmup_steps + steps) * batch > TRAIN_IMAGES:
            parser.error(f"{args.warmup_steps} + {steps} steps of {family}'s {batch} images exceed fashion-mnist's "
                         f"{TRAIN_IMAGES:,}")
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
        kinds = ["genlab", "peer", "peer-torchvision"] + (["diffusers"] if family == "ddpm" else []) + \
            (["genlab-bf16"] if args.bf16 else [])
        repeats = []  # per repeat: {kind: result}
        for repeat in range(args.repeats):
            results = {}
            for kind in kinds:
                log(f"{family}, repeat {repeat + 1}/{args.repeats}: {LOOP_LABELS[kind]}")
                results[kind] = run_child(kind, args, family, sample=kind == "genlab" and repeat == 0)
            log(f"{family}: " + ", ".join(f"{kind} {r['images_per_second']:,.1f} images/s"
                                          for kind, r in results.items() if "missing" not in r))
            repeats.append(results)
        training_rows += [loop_row(family, kind, repeats) for kind in kinds]
        ours = repeats[0]["genlab"]
        sampling_rows.append([family, f"{ours['sample_n']:,}", f"{ours['sample_images_per_second']:,.1f}",
                              f"{ours['sample_other_cores']:.2f}"])

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
         f"{dataset_mib:.0f} MiB. Each loop: {args.warmup_steps} untimed + "
         f"{steps_text(args)} timed optimizer steps at the family's default batch, on the CPU, seed 0, in a fresh "
         f"process; a family's loops one after another, {args.repeats} time(s) over. What is measured and how: the "
         f"docstring of benchmarks/run.py."),
        "## Training",
        markdown_table(["Family", "Loop", "Batch", f"Images/s (median of {args.repeats})",
                        "genlab / this loop (median of the repeats' ratios, range)",
                        "Outside the step, ms per step", "Peak RSS MiB (before the warm-up)",
                        "Other procs (cores, most)"], training_rows),
        "## Sampling",
        markdown_table(["Family", "Images (one `model.sample` call)", "Images/s", "Other procs (cores)"],
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
