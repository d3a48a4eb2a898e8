"""Sampler quality: every DDPM sampler genlab ships, against 1,000-step ancestral sampling and diffusers'
DPMSolverMultistepScheduler driving the same network, on trained runs.

The issue's question: does DPM-Solver++ give, in 10-25 network calls, the images 1,000 ancestral steps
give, and is genlab's solver at least as good as diffusers' at equal steps?

For each trained DDPM run in --runs (`genlab.Run.load(path)`, on the CPU) and each setting in --settings:

  ddpm-1000          ancestral (`sampler="ddpm"`), steps = the run's diffusion_steps (1,000 for every preset)
  ddpm-50            ancestral, 50 respaced steps
  ddim-50            DDIM, 50 respaced steps, eta 0
  ddim-250           DDIM, 250 steps, eta 0: the probability-flow ODE solved finely enough that its images change
                     little with more steps, the value an ODE solver converges to (not in the default --settings)
  dpm++-S            DPM-Solver++(2M), the ODE solver, log-SNR spaced steps (`sampler="dpm++"`, eta 0), S = 10, 15,
                     20, 25
  dpm++sde-S         its SDE variant (`sampler="dpm++sde"`, genlab's default of new runs at 20), S = 10, 15, 20, 25
  diffusers-dpm++-S  diffusers' `DPMSolverMultistepScheduler(trained_betas=the run's betas (model.diffusion.betas),
                     prediction_type="epsilon" or "v_prediction" as the run's, algorithm_type="dpmsolver++",
                     solver_order=2, timestep_spacing="linspace", lower_order_final=True)`, S = 10, 20, driving
                     genlab's own sampling network: the loop `scheduler.set_timesteps(S)`; for t in
                     scheduler.timesteps: `x = scheduler.step(network(x, t), t, x).prev_sample`, where network is
                     `model.guided(labels, guidance)` (the EMA UNet genlab samples with, guided for a conditional
                     run), in eval mode; the final x mapped from [-1, 1] to [0, 1] and clamped. diffusers does not
                     clip x̂_0 (its thresholding is off by default), genlab's solvers clip it to [-1, 1]:
                     --diffusers-clip turns on its thresholding with sample_max_value 1 (a plain clip to [-1, 1]).
                     Clipped, and with `use_lu_lambdas=True` (genlab's log-SNR spacing), it gives genlab's dpm++
                     images to 0.02% of the pixel range: the two solve the same ODE on the same network.
  diffusers-dpm++sde-S  the same with algorithm_type="sde-dpmsolver++", S = 10, 20.

Every setting draws --n (1,000) images from the same x_T: one seeded draw `torch.randn((n, C, H, W),
generator=torch.Generator().manual_seed(SEED))` passed as `initial=` (genlab) or as the scheduler's first x
(diffusers); the stochastic samplers' fresh noise comes from a second generator seeded SEED + 1, afresh for
each setting. A conditional run draws the classes in turn (0, 1, ..., 9, 0, ...: what `genlab eval` draws) with
classifier-free guidance --guidance (3.0). Both sides draw the model's `sample_batch_size` images at a time (64
on a CPU). Wall: the drawing of all n images (`_common.timed`, other processes' load beside), after an untimed
warm-up draw of 4 images with the setting's sampler (its steps capped at 10). Network calls per image: the rows
the UNet saw over n (a guided step is one pass over a doubled batch, so it counts twice). The images are saved as
uint8 .npz (with their labels) and scored by `genlab.evaluate(npz, DATA, n=N, metrics="fid,precision,recall"
(+ ",label_accuracy" for a conditional run: the share of samples the shipped classifier assigns to the label
they were drawn with))` against the run's data test split, the real-vs-real floor in the table's first row.

The issue's goals, judged from the numbers: DPM-Solver++ (dpm++-20) within 10% of DDPM-1000's FID and dpm++-10
within 25%; and at equal steps (10 and 20) genlab's DPM-Solver++ (ODE and SDE) at most diffusers' FID.

Cost: 1,300 network calls per image over all settings (DDPM-1000 is 1,000 of them), 1.3M UNet passes of one
image for n = 1,000: about 2.3 ms each for a 0.6M-parameter UNet on one thread, so ~55 min per run with the
scoring; a guided run passes every batch twice, ~2 h.

    .venv/bin/pip install diffusers      # benchmark-only; without it the diffusers rows are skipped
    python benchmarks/sampler_quality.py --runs runs/ddpm              # ~1 h: 0.6M-parameter run, 2 busy cores
    python benchmarks/sampler_quality.py --runs runs/ddpm runs/ddpm-cond --keep runs/sq --write
    python benchmarks/sampler_quality.py --runs runs/ddpm --n 40 --settings ddim-50,dpm++-10,diffusers-dpm++-10
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.data.transforms import from_symmetric, to_uint8
from genlab.models.common import eval_mode

# isort: split
from _common import README, machine_line, markdown_table, timed, write_section

SECTION = "sampler_quality"
WARMUP_IMAGES, WARMUP_MAX_STEPS = 4, 10
GOALS = {20: 0.10, 10: 0.25}  # dpm++ steps -> the most its FID may exceed DDPM-1000's (relative)
DIFFUSERS_STEPS = (10, 20)
INSTALL = "diffusers is not installed (a benchmark-only dependency: .venv/bin/pip install diffusers)"


@dataclass(frozen=True)
class SamplerSetting:
    """One row: `side` "genlab" (`sampler` a genlab sampler name) or "diffusers" (`sampler` its algorithm_type);
    steps None: the run's diffusion_steps."""

    name: str
    title: str
    side: str
    sampler: str
    steps: int | None
    eta: float = 0.0

    def steps_for(self, model) -> int:
        return model.config.diffusion_steps if self.steps is None else self.steps


SETTINGS = (
    SamplerSetting("ddpm-1000", "DDPM ancestral, all T steps", "genlab", "ddpm", None, 1.0),
    SamplerSetting("ddpm-50", "DDPM ancestral-50", "genlab", "ddpm", 50, 1.0),
    SamplerSetting("ddim-50", "DDIM-50 (eta 0)", "genlab", "ddim", 50),
    SamplerSetting("ddim-250", "DDIM-250 (eta 0): the probability-flow ODE, near its converged images", "genlab",
                   "ddim", 250),  # fmt: skip
    *(SamplerSetting(f"dpm++-{s}", f"DPM-Solver++-{s}", "genlab", "dpm++", s) for s in (10, 15, 20, 25)),
    *(SamplerSetting(f"dpm++sde-{s}", f"SDE-DPM-Solver++-{s}", "genlab", "dpm++sde", s, 1.0) for s in (10, 15, 20, 25)),
    *(SamplerSetting(f"diffusers-dpm++-{s}", f"diffusers DPM-Solver++-{s}", "diffusers", "dpmsolver++", s)
      for s in DIFFUSERS_STEPS),
    *(SamplerSetting(f"diffusers-dpm++sde-{s}", f"diffusers SDE-DPM-Solver++-{s}", "diffusers", "sde-dpmsolver++", s,
                     1.0) for s in DIFFUSERS_STEPS),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETTINGS}


# ---------------------------------------------------------------- drawing


def diffusers_missing() -> str | None:
    """Why the diffusers rows cannot run here, or None."""
    return INSTALL if importlib.util.find_spec("diffusers") is None else None


def diffusers_scheduler(model, algorithm: str, clip: bool = False):
    """DPMSolverMultistepScheduler on the run's own chain: its betas, its prediction, second order; `clip`: its
    thresholding with sample_max_value 1, which clips x̂_0 to [-1, 1] as genlab's solvers do."""
    import diffusers

    diffusion = model.diffusion
    clipping = {"thresholding": True, "sample_max_value": 1.0} if clip else {}
    return diffusers.DPMSolverMultistepScheduler(
        **clipping,
        num_train_timesteps=diffusion.steps,
        trained_betas=diffusion.betas.double().cpu().numpy(),
        prediction_type={"epsilon": "epsilon", "v": "v_prediction"}[diffusion.prediction],
        algorithm_type=algorithm,
        solver_order=2,
        timestep_spacing="linspace",
        lower_order_final=True,
    )


@torch.no_grad()
def diffusers_batch(model, scheduler, x: torch.Tensor, labels, guidance: float, steps: int, generator) -> torch.Tensor:
    """Images in [0, 1] from x_T `x` (B, C, H, W): diffusers' scheduler loop around genlab's guided network."""
    network = model.guided(labels, guidance)
    scheduler.set_timesteps(steps, device=x.device)  # also resets the solver's history
    with eval_mode(model.sampling_network()):
        for t in scheduler.timesteps:
            output = network(x, t.expand(len(x)).to(x.device))
            x = scheduler.step(output, t, x, generator=generator).prev_sample
    return from_symmetric(x)  # [-1, 1] -> [0, 1], clamped


def initial_noise(model, n: int, seed: int) -> torch.Tensor:
    """x_T (n, C, H, W): one seeded draw, the same for every setting."""
    return torch.randn((n, *model.data.image_shape), generator=torch.Generator().manual_seed(seed))


def draw(model, setting: SamplerSetting, initial: torch.Tensor, labels, guidance: float, seed: int,
         steps: int | None = None, clip: bool = False) -> torch.Tensor:  # fmt: skip
    """uint8 images (n, C, H, W) from x_T `initial` with `setting` (or `steps` in its place), batch by batch."""
    steps = steps or setting.steps_for(model)
    n, batch = len(initial), model.sample_batch_size
    noise = torch.Generator().manual_seed(seed + 1)  # the stochastic samplers' fresh noise
    scheduler = diffusers_scheduler(model, setting.sampler, clip) if setting.side == "diffusers" else None
    images = torch.empty((n, *model.data.image_shape), dtype=torch.uint8)
    for start in range(0, n, batch):
        x = initial[start : start + batch].to(model.device)
        part = None if labels is None else labels[start : start + batch]
        if scheduler is None:
            out = model.sample(len(x), generator=noise, labels=part, sampler=setting.sampler, steps=steps,
                               eta=setting.eta, guidance=guidance, initial=x)  # fmt: skip
        else:
            out = diffusers_batch(model, scheduler, x, part, guidance, steps, noise)
        images[start : start + len(x)] = to_uint8(out.cpu())
    return images


class RowCounter:
    """The rows the sampling network sees (a forward hook): network calls per image = rows / n."""

    def __init__(self, network: torch.nn.Module):
        self.rows = 0
        self.handle = network.register_forward_hook(self._count)

    def _count(self, module, inputs, output) -> None:
        self.rows += len(output)

    def close(self) -> None:
        self.handle.remove()


def measure(run, setting: SamplerSetting, args, folder: Path, log) -> dict:
    """Draw (timed, after a warm-up), save and score one setting on one run."""
    model = run.model
    labels = model.check_labels(args.n, None)  # the classes in turn, as `genlab eval` draws; None: unconditional
    guidance = args.guidance if model.conditional else 1.0
    initial = initial_noise(model, args.n, args.seed)
    steps = setting.steps_for(model)
    warm_labels = None if labels is None else labels[:WARMUP_IMAGES]
    draw(model, setting, initial[:WARMUP_IMAGES], warm_labels, guidance, args.seed, min(steps, WARMUP_MAX_STEPS),
         args.diffusers_clip)  # fmt: skip
    counter = RowCounter(model.sampling_network())
    try:
        images, seconds, other = timed(
            lambda: draw(model, setting, initial, labels, guidance, args.seed, clip=args.diffusers_clip)
        )
    finally:
        counter.close()
    path = folder / f"{Path(run.path).name}_{setting.name}.npz"
    arrays = {"images": images.numpy()}
    metrics = "fid,precision,recall"
    if labels is not None:
        arrays |= {"labels": labels.cpu().numpy(), "class_names": np.array(model.data.class_names)}
        metrics += ",label_accuracy"
    np.savez(path, **arrays)
    data, _ = run.data_spec()
    result = genlab.evaluate(str(path), data, n=args.n, metrics=metrics)
    log(f"  {setting.name}: {seconds:.1f} s, " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
    return {"setting": setting, "steps": steps, "calls": counter.rows / args.n, "seconds": seconds, "other": other,
            "result": result}  # fmt: skip


# ---------------------------------------------------------------- tables


def _relative(fid: float, base: float | None) -> str:
    return "-" if base is None else f"{(fid / base - 1) * 100:+.0f}%"


def score_table(rows: list[dict], n: int, conditional: bool) -> str:
    done = [r for r in rows if "result" in r]
    base = next((r["result"].metrics["fid"] for r in done if r["setting"].name == "ddpm-1000"), None)
    keys = ["fid", "precision", "recall"] + (["label_accuracy"] if conditional else [])
    formats = {"fid": "{:.2f}", "precision": "{:.3f}", "recall": "{:.3f}", "label_accuracy": "{:.3f}"}
    header = ["Setting", "Network calls / image", "FID", "Precision", "Recall"]
    header += (["Label acc."] if conditional else []) + ["Wall (s)", "Images/s", "FID vs DDPM-1000", "Other procs"]
    body = []
    if done:
        floor = done[0]["result"].floor  # the same data, n and seed for every row: one floor
        body.append(["real vs real (floor)", "-", *(formats[k].format(floor[k]) if k in floor else "-" for k in keys),
                     "-", "-", "-", "-"])  # fmt: skip
    for r in rows:
        setting = r["setting"]
        name = f"{setting.name} ({setting.title})"
        if "result" not in r:
            body.append([name, "-", *("-" for _ in keys), "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        m = r["result"].metrics
        body.append([
            name, f"{r['calls']:g}", *(formats[k].format(m[k]) if k in m else "-" for k in keys),
            f"{r['seconds']:.1f}", f"{n / r['seconds']:.2f}", _relative(m["fid"], base), f"{r['other']:.2f}",
        ])  # fmt: skip
    return markdown_table(header, body)


def goals(rows: list[dict]) -> list[str]:
    """The issue's goals, each met or not met from the numbers (or not measured, saying which rows it needs)."""
    fid = {r["setting"].name: r["result"].metrics["fid"] for r in rows if "result" in r}
    lines = []
    for steps, tolerance in GOALS.items():
        name = f"dpm++-{steps}"
        goal = f"DPM-Solver++ at {steps} steps within {tolerance:.0%} of DDPM-1000's FID"
        if name in fid and "ddpm-1000" in fid:
            ratio = fid[name] / fid["ddpm-1000"]
            met = ratio <= 1 + tolerance
            lines.append(f"{goal}: {fid[name]:.2f} against {fid['ddpm-1000']:.2f} ({(ratio - 1) * 100:+.0f}%): "
                         f"{'met' if met else 'not met'}.")  # fmt: skip
        else:
            lines.append(f"{goal}: not measured (needs ddpm-1000 and {name} in --settings).")
    for steps, tolerance in GOALS.items():  # the same tolerances against the ODE's own converged images
        name = f"dpm++-{steps}"
        goal = f"DPM-Solver++ at {steps} steps within {tolerance:.0%} of the ODE's converged FID (DDIM-250)"
        if name in fid and "ddim-250" in fid:
            ratio = fid[name] / fid["ddim-250"]
            lines.append(f"{goal}: {fid[name]:.2f} against {fid['ddim-250']:.2f} ({(ratio - 1) * 100:+.0f}%): "
                         f"{'met' if ratio <= 1 + tolerance else 'not met'}.")  # fmt: skip
    for ours in ("dpm++", "dpm++sde"):
        for steps in DIFFUSERS_STEPS:
            mine, theirs = f"{ours}-{steps}", f"diffusers-{ours}-{steps}"
            goal = f"genlab {mine} against diffusers' DPMSolverMultistepScheduler ({theirs}) at equal steps"
            if mine in fid and theirs in fid:
                met = fid[mine] <= fid[theirs]
                lines.append(f"{goal}: FID {fid[mine]:.2f} against {fid[theirs]:.2f} "
                             f"({_relative(fid[mine], fid[theirs])}): {'met' if met else 'not met'}.")  # fmt: skip
            else:
                lines.append(f"{goal}: not measured (needs {mine} and {theirs}).")
    return lines


def describe(run) -> str:
    """The run as the section names it: path, family, data, parameters, epochs, conditioning."""
    info, config = run.info, run.model.config
    parameters = sum(p.numel() for p in run.model.network.parameters())
    conditional = "conditional" if run.model.conditional else "unconditional"
    return (f"`{run.path}`: {run.family}, {info['data']['spec']}, {parameters:,} parameters, "
            f"{info.get('epochs_completed')} epochs, {conditional}, {config.diffusion_steps}-step {config.schedule} "
            f"chain, {config.prediction} prediction")  # fmt: skip


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="trained DDPM run folders")
    parser.add_argument("--n", type=int, default=1000, help="samples per setting (default 1,000)")
    parser.add_argument("--seed", type=int, default=0, help="x_T's seed (the fresh noise's is SEED + 1; default 0)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    default = [name for name in BY_NAME if name != "ddim-250"]  # 250 calls an image: asked for by name
    parser.add_argument("--settings", default=",".join(default),
                        help=f"comma-separated, from {','.join(BY_NAME)} (default: all but ddim-250)")  # fmt: skip
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="classifier-free guidance of the conditional runs (default 3.0)")  # fmt: skip
    parser.add_argument("--diffusers-clip", action="store_true",
                        help="diffusers' rows with thresholding=True, sample_max_value=1: x̂_0 clipped to [-1, 1] as "
                             "genlab's solvers clip it (default: diffusers' own default, no clipping)")  # fmt: skip
    parser.add_argument("--keep", metavar="DIR", help="keep the .npz samples in DIR (default: a temporary folder)")
    parser.add_argument("--write", action="store_true", help=f"replace the {SECTION} section of benchmarks/README.md")
    parser.add_argument("--readme", default=str(README), help=argparse.SUPPRESS)  # testing --write on a copy
    args = parser.parse_args(argv)
    names = [t.strip() for t in args.settings.split(",") if t.strip()]
    if bad := [t for t in names if t not in BY_NAME]:
        parser.error(f"unknown settings {bad}; choose from {', '.join(BY_NAME)}")
    settings = [BY_NAME[name] for name in BY_NAME if name in names]  # the table's order
    if args.threads:
        torch.set_num_threads(args.threads)

    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {text}", file=sys.stderr, flush=True)

    log(machine_line())
    wants_diffusers = any(s.side == "diffusers" for s in settings)
    missing = diffusers_missing() if wants_diffusers else None
    if missing:
        log(f"skipping the diffusers rows: {missing}")
    elif wants_diffusers:
        import diffusers

        log(f"diffusers {diffusers.__version__}")
    parts, runs = [], []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["GENLAB_CACHE"] = str(folder / "cache")  # real features and floors of this run's own
        for path in args.runs:
            run = genlab.Run.load(path)
            if run.family != "ddpm":
                parser.error(f"{path} is a {run.family} run; this benchmark compares DDPM samplers")
            runs.append(describe(run))
            log(f"{runs[-1]}: {len(settings)} settings, {args.n} images each")
            rows = []
            for setting in settings:
                if setting.side == "diffusers" and missing:
                    rows.append({"setting": setting, "skipped": missing})
                    continue
                rows.append(measure(run, setting, args, folder, log))
            guided = f", guidance {args.guidance:g}" if run.model.conditional else ""
            parts += [f"### {Path(path).name} ({run.info['data']['spec']}{guided})",
                      score_table(rows, args.n, run.model.conditional),
                      "\n".join(f"**{line}**" for line in goals(rows))]  # fmt: skip

    total = time.perf_counter() - began
    options = (
        (f" --threads {args.threads}" if args.threads else "")
        + (" --diffusers-clip" if args.diffusers_clip else "")
        + (f" --settings {','.join(names)}" if len(settings) < len(SETTINGS) else "")
    )
    command = (f"python benchmarks/sampler_quality.py --runs {' '.join(args.runs)} --n {args.n} --seed {args.seed} "
               f"--guidance {args.guidance:g}{options}")  # fmt: skip
    clipped = (
        " with x̂_0 clipped to [-1, 1] (--diffusers-clip: thresholding, sample_max_value 1)"
        if args.diffusers_clip
        else ""
    )
    header = [
        f"Measured with `{command}` on {machine_line()}; this invocation took {total / 60:.0f} min. Runs: "
        + "; ".join(runs)
        + ".",
        f"Each setting draws {args.n:,} images from the same seeded x_T, a conditional run the classes in turn with "
        "classifier-free guidance; wall: drawing all of them after an untimed warm-up; network calls per image: "
        "UNet rows over images (a guided step passes a doubled batch: it counts twice). Scored by `genlab.evaluate` "
        "against the test split; the first row is the real-vs-real floor. diffusers' rows: DPMSolverMultistepScheduler "
        "(trained_betas = the run's, linspace timesteps, solver order 2, lower_order_final) driving genlab's EMA "
        f"UNet{clipped}. Other procs: cores other processes kept busy while the row drew.",
    ]
    body = "\n\n".join(header + parts)
    print(body)
    if args.write:
        write_section(SECTION, body, Path(args.readme))
        print(f"\nwrote the {SECTION} section of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
