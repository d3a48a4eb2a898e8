"""Latency of one generation call per family: torch eager against the ONNX export under onnxruntime, on the CPU.

For each family at its default settings on 28x28 images (mnist-5k's shape), a run is trained for one
step on 64 mnist-5k images (the weights do not change the time of a call), exported with
`genlab.export.export_onnx`, and one call of the network genlab's `sample` runs is timed at batch 1
and 64, both ways, with the same inputs:

    vae                   decoder: z -> images             ddpm       one UNet denoising call (x_t, t)
    gan, dcgan, wgan-gp   generator: z -> images           pixelcnn   one full pass: images -> logits
    realnvp               inverse flow: z -> images

A call is warmed up, then repeated for about `--seconds` (at least `--min-repeats` times); the table
gives the median in milliseconds. Both run on `--threads` threads (torch.set_num_threads and
onnxruntime's intra_op_num_threads), 1 by default: other jobs may share the machine, and the table
says how many cores they kept busy meanwhile (/proc/stat).

    OMP_NUM_THREADS=1 python benchmarks/export_latency.py
    OMP_NUM_THREADS=1 python benchmarks/export_latency.py --families ddpm,dcgan --seconds 2
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from _common import LoadMeter, machine_line, markdown_table  # benchmarks/, on sys.path as the script's folder

import genlab
from genlab.data import ImageDataset, load_dataset
from genlab.export import ONNX_FILE, export_onnx
from genlab.run import Run

FAMILIES = ("vae", "gan", "dcgan", "wgan-gp", "realnvp", "ddpm", "pixelcnn")
NETWORK = {
    "vae": "decoder",
    "gan": "generator",
    "dcgan": "generator",
    "wgan-gp": "generator",
    "realnvp": "inverse flow",
    "ddpm": "UNet, one step",
    "pixelcnn": "full pass",
}
BATCHES = (1, 64)


def torch_call(run: Run, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The network call genlab's `sample` makes, in torch eager mode (the export's reference)."""
    model = run.model
    if model.family in ("gan", "dcgan", "wgan-gp"):
        return model.sampler()(inputs["z"])
    if model.family in ("vae", "realnvp"):
        return model.decode(inputs["z"])
    if model.family == "ddpm":
        return model.sampling_network()(inputs["x_t"], inputs["t"])
    return model.network(inputs["images"])


def inputs_for(run: Run, session: onnxruntime.InferenceSession, batch: int) -> dict[str, torch.Tensor]:
    """Random inputs of the graph's names and shapes, in the ranges genlab feeds them."""
    generator = torch.Generator().manual_seed(batch)
    inputs = {}
    for spec in session.get_inputs():
        shape = (batch, *spec.shape[1:])
        if spec.name == "t":
            inputs["t"] = torch.randint(0, run.model.config.diffusion_steps, shape, generator=generator)
        elif spec.name == "images":
            inputs["images"] = torch.randint(0, 256, shape, generator=generator).float() / 255
        else:
            inputs[spec.name] = torch.randn(shape, generator=generator)
    return inputs


def median_ms(call, seconds: float, min_repeats: int) -> float:
    """Median wall time of `call()` in ms after two warm-up calls, over about `seconds` of repeats."""
    call()
    call()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def trained_run(family: str, data: ImageDataset, root: Path) -> Run:
    """A run of `family` at its default settings after one step on `data` (64 images, batch 64)."""
    return genlab.train(
        family,
        data,
        root / family,
        epochs=1,
        batch_size=len(data),
        seed=0,
        test_data=data,
        progress=False,
        sample_every=0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default all)")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch and onnxruntime (default 1)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent repeating each call (default 1)")
    parser.add_argument("--min-repeats", type=int, default=5, help="at least this many timed calls (default 5)")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")

    torch.set_num_threads(args.threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    mnist = load_dataset("mnist-5k")
    data = ImageDataset(mnist.images[:64], None, [], "mnist-5k[:64]")  # unconditional: the default runs

    rows = []
    with tempfile.TemporaryDirectory() as folder, LoadMeter() as load:
        root = Path(folder)
        for family in families:
            run = trained_run(family, data, root / "runs")
            export = export_onnx(run.path, root / "exports" / family)
            session = onnxruntime.InferenceSession(str(export / ONNX_FILE), options, providers=["CPUExecutionProvider"])
            for batch in BATCHES:
                inputs = inputs_for(run, session, batch)
                feed = {name: value.numpy() for name, value in inputs.items()}
                with torch.no_grad():
                    eager = median_ms(functools.partial(torch_call, run, inputs), args.seconds, args.min_repeats)
                onnx = median_ms(functools.partial(session.run, None, feed), args.seconds, args.min_repeats)
                rows.append(
                    [family, NETWORK[family], str(batch), f"{eager:.2f}", f"{onnx:.2f}", f"{eager / onnx:.2f}x"]
                )
                print(f"{family} batch {batch}: torch {eager:.2f} ms, onnxruntime {onnx:.2f} ms", file=sys.stderr)

    header = ["Family", "Network", "Batch", "torch eager (ms)", "onnxruntime (ms)", "Speed-up"]
    print(
        f"One generation call, median over about {args.seconds:g} s of repeats, {args.threads} thread(s) each; "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}.\n"
        f"{machine_line()}; other processes kept {load.other_cores:.1f} cores busy on average meanwhile.\n"
    )
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
