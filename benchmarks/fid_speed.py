"""FID speed: genlab's FID pipelines against torchmetrics' FrechetInceptionDistance, same network.

The issue's target: FID of 10,000 against 10,000 images end to end (features and statistics)
on CPU, against torchmetrics' FrechetInceptionDistance given the same feature extractor:
equal to 1e-4 relative, and at least 2x faster.

Images: "real" = the first `--n` Fashion-MNIST test images, "generated" = `--n` Fashion-MNIST
training images (the first `--n` of a permutation seeded with `--seed`): two samples of one
distribution, so the FID is small (~0.8), which makes its relative error the harder test.
Every pipeline gets the same uint8 (N, 1, 28, 28) tensors and runs the same network object:
the penultimate layer of genlab's shipped "fashion" classifier (`load_extractor("fashion")`).

  genlab, cold          `Extractor.features(real, B)`, `Extractor.features(generated, B)`,
                        `gaussian_stats` of each, `fid(...)`; nothing cached. `Extractor` runs
                        the network on at most `Extractor.network_batch` (64) images a call,
                        whatever B the caller passes.
  genlab eval,          the real side read through `real_features(load_dataset("fashion-mnist",
  reference cached      "test"), "test", extractor)` from a warm `$GENLAB_CACHE` (a temporary
                        folder, filled once untimed), then as above for the generated side.
                        This is what a second `genlab eval` of a run pays.
  torchmetrics, B       `FrechetInceptionDistance(feature=GenlabFeatureLayer(extractor.model))`,
  torchmetrics, 64      a fresh metric, `update(batch, real=True)` then `update(batch,
                        real=False)` in batches of B (`--batch-size`, default 500) or of
                        `Extractor.network_batch` (64, like for like), under
                        `torch.inference_mode()`, then `compute()`.

`GenlabFeatureLayer` is the thin module torchmetrics needs: `num_features = 256` (so it does not
probe the network with a 3x299x299 dummy image), uint8 in, float32 features out, with the same
input conversion as genlab's `Extractor` (`to_unit_float`, channels_last), and it never leaves
eval mode (BatchNorm must use its stored statistics; torchmetrics' Metric starts in train mode).

Timing: the metric object, the features (or the cache read, dataset fingerprint included) and
every statistic are inside the timed region; loading the images and the extractor (sha256
check) are not, for any pipeline. Every timed run happens in a fresh process of its own (this
script with `--child`), after one untimed warm-up run of the same pipeline there: how many page
faults a pipeline takes depends on what the process allocated before, so sharing a process made
the result depend on the order. Each repeat runs every pipeline once, alternating the order,
and each speed ratio is taken within a repeat; the headline is the median of those ratios. A
run during which other processes kept more than `--max-other-load` cores busy (from
/proc/stat) is retried (`--retries`, `--pause`); the table says if one never got a quiet run.

    python benchmarks/fid_speed.py                 # 10,000 vs 10,000, 3 repeats, batch 500
    python benchmarks/fid_speed.py --write         # also update benchmarks/fid_speed.md

Needs torchmetrics (`pip install -e .[bench]`); torch-fidelity is not needed, since the
feature network is passed as a module.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import LoadMeter, machine_line, markdown_table, median, write_section
from torch import nn

from genlab.data import load_dataset
from genlab.eval.features import Extractor, load_extractor, to_unit_float
from genlab.eval.metrics import FIDStatistics, fid, gaussian_stats, psd_sqrt
from genlab.eval.reference import cache_path, real_features

TARGET_SPEEDUP = 2.0
TARGET_RELATIVE = 1e-4
DOC = Path(__file__).resolve().parent / "fid_speed.md"
SECTION = "fid_speed_measured"


class GenlabFeatureLayer(nn.Module):
    """genlab's feature layer as torchmetrics' `feature=` module: uint8 (B, 1, 28, 28) -> float32 (B, 256).

    torchmetrics calls `feature(imgs)` as given when a module is passed (`normalize=False`
    leaves uint8 images untouched), reads `num_features` for the size of its statistics, and
    casts the features to float64 before it accumulates them.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.num_features = int(model.feature_dim)
        self.dtype = dtype  # float64 makes compute() return float64 (it casts to the features' dtype)
        self.eval()

    def train(self, mode: bool = True) -> GenlabFeatureLayer:
        """Never leave eval mode (as torchmetrics' own NoTrainInceptionV3)."""
        return super().train(False)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(imgs).contiguous(memory_format=torch.channels_last)  # as Extractor._map
        return self.model.features(x).to(self.dtype)


# ---------------------------------------------------------------- the pipelines


def run_genlab(extractor: Extractor, real: torch.Tensor, generated: torch.Tensor, batch_size: int):
    """(FID, {phase: seconds}) of genlab's pipeline with nothing cached."""
    t0 = time.perf_counter()
    f_real = extractor.features(real, batch_size)
    f_gen = extractor.features(generated, batch_size)
    t1 = time.perf_counter()
    mu1, s1 = gaussian_stats(f_real)
    mu2, s2 = gaussian_stats(f_gen)
    t2 = time.perf_counter()
    value = fid(mu1, s1, mu2, s2)
    t3 = time.perf_counter()
    return value, {"features": t1 - t0, "statistics": t2 - t1, "fid": t3 - t2}


def run_genlab_cached(extractor: Extractor, test, n: int, generated: torch.Tensor, batch_size: int):
    """(FID, {phase: seconds}) of genlab eval's pipeline with the real side's features in the cache.

    `test` is the whole Fashion-MNIST test split as `load_dataset` gives it; its first `n`
    images are the "real" images of the other pipelines, so the first `n` cached rows are theirs.
    """
    t0 = time.perf_counter()
    f_real = real_features(test, "test", extractor).features[:n]
    t1 = time.perf_counter()
    f_gen = extractor.features(generated, batch_size)
    t2 = time.perf_counter()
    mu1, s1 = gaussian_stats(f_real)
    mu2, s2 = gaussian_stats(f_gen)
    t3 = time.perf_counter()
    value = fid(mu1, s1, mu2, s2)
    t4 = time.perf_counter()
    return value, {"cache read": t1 - t0, "features": t2 - t1, "statistics": t3 - t2, "fid": t4 - t3}


def run_torchmetrics(feature: nn.Module, real: torch.Tensor, generated: torch.Tensor, batch_size: int):
    """(FID, {phase: seconds}) of a fresh torchmetrics FrechetInceptionDistance with `feature`."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    t0 = time.perf_counter()
    metric = FrechetInceptionDistance(feature=feature, normalize=False)
    with torch.inference_mode():
        for is_real, images in ((True, real), (False, generated)):
            for start in range(0, len(images), batch_size):
                metric.update(images[start : start + batch_size], real=is_real)
        t1 = time.perf_counter()
        value = metric.compute()
    t2 = time.perf_counter()
    return float(value), {"update (features + sums)": t1 - t0, "compute": t2 - t1}


# ---------------------------------------------------------------- timed runs, each in a fresh process


def load_images(n: int, seed: int):
    """(test split, real, generated): real and generated uint8 (n, 1, 28, 28), test and permuted training images."""
    test = load_dataset("fashion-mnist", split="test")
    train = load_dataset("fashion-mnist", split="train")
    if not 2 <= n <= min(len(test), len(train)):
        raise SystemExit(f"--n must be in [2, {min(len(test), len(train))}]")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return test, test.images[:n].contiguous(), train.images[order].contiguous()


def child(args) -> int:
    """`--child NAME`: one warm-up and one timed run of pipeline NAME; prints one JSON line."""
    test, real, generated = load_images(args.n, args.seed)
    extractor = load_extractor("fashion")
    if args.child == "genlab":
        fn = lambda: run_genlab(extractor, real, generated, args.batch_size)
    elif args.child == "genlab-cached":
        if not cache_path(test, "test", extractor).is_file():  # never time a cold cache by mistake
            raise SystemExit(f"no cached features at {cache_path(test, 'test', extractor)}")
        fn = lambda: run_genlab_cached(extractor, test, args.n, generated, args.batch_size)
    else:
        feature = GenlabFeatureLayer(extractor.model)
        fn = lambda: run_torchmetrics(feature, real, generated, args.batch_size)
    fn()  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    with LoadMeter() as load:
        start = time.perf_counter()
        value, phases = fn()
        seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "seconds": seconds, "value": value, "phases": phases, "other_cores": load.other_cores,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "sys_seconds": after.ru_stime - before.ru_stime, "user_seconds": after.ru_utime - before.ru_utime,
    }))
    return 0


def measure(name: str, batch_size: int, args) -> dict:
    """The quietest of up to `args.retries` timed runs of pipeline `name`, each in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--n", str(args.n),
               "--batch-size", str(batch_size), "--seed", str(args.seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    best = None
    for attempt in range(args.retries):
        if attempt:
            time.sleep(args.pause)
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["attempts"] = attempt + 1
        if best is None or result["other_cores"] < best["other_cores"]:
            best = result
        if result["other_cores"] <= args.max_other_load:
            break
    return best


# ---------------------------------------------------------------- checks and profile


def reference_fid(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's formula (scipy.linalg.sqrtm of s1 s2, float64): a third opinion."""
    import numpy as np
    from scipy import linalg

    s1, s2 = s1.numpy(), s2.numpy()
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    diff = (mu1 - mu2).numpy()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _faults() -> tuple[int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_stime


def profile_genlab(extractor: Extractor, real: torch.Tensor, generated: torch.Tensor, batch_size: int) -> str:
    """Where genlab's time goes: phases (wall, best of 2) and the network's ops (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    def best_of(fn, k=2):
        best = None
        for _ in range(k):
            faults, sys_s = _faults()
            start = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - start
            faults2, sys_s2 = _faults()
            if best is None or seconds < best[0]:
                best = (seconds, faults2 - faults, sys_s2 - sys_s, out)
        return best

    feat = best_of(lambda: (extractor.features(real, batch_size), extractor.features(generated, batch_size)))
    f_real, f_gen = feat[3]
    stats = best_of(lambda: (gaussian_stats(f_real), gaussian_stats(f_gen)))
    (mu1, s1), (mu2, s2) = stats[3]

    def streamed():
        out = []
        for f in (f_real, f_gen):
            acc = FIDStatistics()
            for start in range(0, len(f), batch_size):
                acc.update(f[start : start + batch_size])
            out.append(acc.compute())
        return out

    stream = best_of(streamed)
    (smu1, ss1), (smu2, ss2) = stream[3]
    sqrt = best_of(lambda: (psd_sqrt(s1), psd_sqrt(s2)))
    r1, r2 = sqrt[3]
    svd = best_of(lambda: torch.linalg.svdvals(r1 @ r2).sum())
    fid_t = best_of(lambda: fid(mu1, s1, mu2, s2))
    value = fid(mu1, s1, mu2, s2)
    stream_rel = abs(fid(smu1, ss1, smu2, ss2) - value) / value
    total = feat[0] + stats[0] + fid_t[0]

    def row(label, m, share=True, note=""):
        return [label, f"{m[0]:.3f}", f"{m[0] / total:.0%}" if share else note, f"{m[1]:,}", f"{m[2]:.2f}"]

    rows = [
        row(f"`Extractor.features`, {len(real):,} + {len(generated):,} images, caller batch {batch_size}, network batch "
            f"{min(batch_size, extractor.network_batch)}", feat),
        row("`gaussian_stats` x 2 (float64 mean and (N, 256)^T (N, 256))", stats),
        row("`fid` (traces, 2 eigh square roots, svdvals)", fid_t),
        row("- of which `psd_sqrt` x 2 (eigh of 256x256)", sqrt, False),
        row("- of which `svdvals` (256x256)", svd, False),
        row(f"(instead of `gaussian_stats`) `FIDStatistics.update` per {batch_size} features, x 2", stream, False,
            f"FID rel. diff. {stream_rel:.0e}"),
    ]
    phases = markdown_table(["genlab phase (best of 2, in one process)", "Seconds", "Share", "Minor page faults",
                             "System CPU s"], rows)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        extractor.features(real, batch_size)
    groups = {
        "convolution (`mkldnn_convolution`)": ("convolution",),
        "BatchNorm (`native_batch_norm`)": ("batch_norm",),
        "max-pool (`max_pool2d_with_indices`)": ("max_pool",),
        "ReLU (`clamp_min_`)": ("clamp_min", "relu"),
        "linear (`mm`)": ("aten::mm", "addmm"),
        "uint8 -> float, copies (`to`, `div`, `copy_`)": ("copy_", "aten::div", "aten::to", "_to_copy"),
    }
    shares = {name: 0.0 for name in groups}
    total_us = 0.0
    for event in prof.key_averages():
        total_us += event.self_cpu_time_total
        for name, keys in groups.items():
            if any(k in event.key for k in keys):
                shares[name] += event.self_cpu_time_total
                break
    other = total_us - sum(shares.values())
    op_rows = [[name, f"{us / 1e6:.3f}", f"{us / total_us:.0%}"] for name, us in sorted(shares.items(), key=lambda kv: -kv[1])]
    op_rows.append(["everything else", f"{other / 1e6:.3f}", f"{other / total_us:.0%}"])
    title = (f"Ops in one `Extractor.features` of {len(real):,} images (torch.profiler, self CPU; "
             "includes the page faults of each op's new output)")
    ops = markdown_table([title, "Seconds", "Share"], op_rows)
    return phases + "\n\n" + ops


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images per set (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="the caller's batch: genlab's `features(..., B)` and torchmetrics' update (default 500)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for all (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of 'generated' training images")
    parser.add_argument("--max-other-load", type=float, default=0.2,
                        help="retry a run when other processes kept more cores than this busy (default 0.2)")
    parser.add_argument("--retries", type=int, default=5, help="attempts per run (default 5)")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds to wait before a retry (default 10)")
    parser.add_argument("--profile", action="store_true", help="also print where genlab cold's time goes")
    parser.add_argument("--write", action="store_true", help="replace the measured section of benchmarks/fid_speed.md")
    parser.add_argument("--child", choices=("genlab", "genlab-cached", "torchmetrics"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import torchmetrics
    except ImportError:
        print("fid_speed.py needs torchmetrics: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory(prefix="genlab-fid-speed-") as cache:
        os.environ["GENLAB_CACHE"] = cache  # the children inherit it
        return _main(args, torchmetrics.__version__)


def _main(args, tm_version: str) -> int:
    test, real, generated = load_images(args.n, args.seed)
    extractor = load_extractor("fashion")
    batch, net = args.batch_size, Extractor.network_batch
    # (key, child, batch, label)
    pipelines = [
        ("cold", "genlab", batch, (f"genlab, cold: `Extractor.features` x 2 (caller batch {batch}, network "
                                   f"batch {min(batch, net)}) + `gaussian_stats` + `fid`")),
        ("cached", "genlab-cached", batch, ("genlab eval, reference cached: `real_features` (cache read) + "
                                            "`Extractor.features` (generated) + `gaussian_stats` + `fid`")),
        ("tm", "torchmetrics", batch, f"torchmetrics {tm_version} `FrechetInceptionDistance(feature=...)`, batch {batch}"),
    ]
    if batch != net:
        pipelines.append(("tm_net", "torchmetrics", net,
                          f"torchmetrics {tm_version} `FrechetInceptionDistance(feature=...)`, batch {net} (genlab's network batch)"))
    genlab_keys = [p[0] for p in pipelines if p[1].startswith("genlab")]
    tm_keys = [p[0] for p in pipelines if p[1] == "torchmetrics"]

    # warm the reference cache once, untimed; it must hold exactly the cold pipeline's real features
    reference = real_features(test, "test", extractor)
    assert cache_path(test, "test", extractor).is_file(), "the feature cache was not written"
    cache_matches = torch.equal(reference.features[: args.n], extractor.features(real, batch))

    print(f"{machine_line()}\ntorchmetrics {tm_version}; Fashion-MNIST: {args.n:,} test images (real) "
          f"against {args.n:,} training images (generated, seed {args.seed}); caller batch {batch}, genlab network "
          f"batch {net}; {args.repeats} repeats, each run in a fresh process after 1 warm-up run; "
          f"GENLAB_CACHE={os.environ['GENLAB_CACHE']} (warm; cached real features equal the computed ones: "
          f"{cache_matches})", flush=True)

    runs: dict[str, list[dict]] = {p[0]: [] for p in pipelines}
    for repeat in range(args.repeats):
        for key, name, size, _ in pipelines if repeat % 2 == 0 else reversed(pipelines):
            runs[key].append(measure(name, size, args))
        print(f"repeat {repeat + 1}: " + ", ".join(
            f"{k} {runs[k][-1]['seconds']:.3f} s (FID {runs[k][-1]['value']:.8f}, {runs[k][-1]['minor_faults']:,} "
            f"faults, others {runs[k][-1]['other_cores']:.2f} cores, attempt {runs[k][-1]['attempts']})"
            for k in runs), flush=True)
    seconds = {k: [r["seconds"] for r in v] for k, v in runs.items()}
    values = {k: [r["value"] for r in v] for k, v in runs.items()}
    value = {k: v[0] for k, v in values.items()}
    stable = all(len(set(v)) == 1 for v in values.values())
    worst_load = max(r["other_cores"] for v in runs.values() for r in v)
    retried = sum(r["attempts"] - 1 for v in runs.values() for r in v)

    def rel(a: float, b: float) -> float:
        return abs(a - b) / abs(b)

    # ---- third opinions on the value (computed here: they do not depend on the process)
    t64_value = run_torchmetrics(GenlabFeatureLayer(extractor.model, torch.float64), real, generated, batch)[0]
    (mu1, s1), (mu2, s2) = gaussian_stats(extractor.features(real)), gaussian_stats(extractor.features(generated))
    scipy_value = reference_fid(mu1, s1, mu2, s2)

    def med(key: str, field: str) -> float:
        return median([r[field] for r in runs[key]])

    rows = []
    for key, _, _, label in pipelines:
        phase_keys = list(runs[key][0]["phases"])
        rows.append([
            label, f"**{median(seconds[key]):.3f}**", " / ".join(f"{s:.3f}" for s in seconds[key]),
            ", ".join(f"{k} {median([r['phases'][k] for r in runs[key]]):.3f}" for k in phase_keys),
            f"{med(key, 'minor_faults'):,.0f}", f"{med(key, 'sys_seconds'):.2f} / {med(key, 'user_seconds'):.2f}",
            f"{value[key]:.8f}", "-" if key == "cold" else f"{rel(value[key], value['cold']):.1e}",
            f"{max(r['other_cores'] for r in runs[key]):.2f}",
        ])
    table = markdown_table(
        [f"Pipeline ({args.n:,} vs {args.n:,})", "Seconds (median)", "Each repeat", "Median seconds by phase",
         "Minor page faults (median)", "System / user CPU s (median)", "FID", "Rel. diff. to genlab cold",
         "Other procs (cores, worst)"],
        rows,
    )

    # ---- speed: each genlab pipeline against each torchmetrics one, ratio within each repeat, then its median
    labels = {"cold": "genlab, cold", "cached": "genlab eval, reference cached",
              "tm": f"torchmetrics, batch {batch}", "tm_net": f"torchmetrics, batch {net}"}
    ratio_rows, ratio_lines = [], []
    for g in genlab_keys:
        cells = []
        for t in tm_keys:
            ratios = [ts / gs for gs, ts in zip(seconds[g], seconds[t])]
            speedup = median(ratios)
            cells.append(f"**{speedup:.2f}x** ({' / '.join(f'{r:.2f}' for r in ratios)}): "
                         f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}")
            ratio_lines.append(f"{labels[g]} vs {labels[t]}: {speedup:.2f}x")
        ratio_rows.append([labels[g]] + cells)
    ratio_table = markdown_table(
        ["Speed-up = torchmetrics s / genlab s: median of the within-repeat ratios (each repeat's)"]
        + [f"vs {labels[t]}" for t in tm_keys],
        ratio_rows,
    )
    verdict = (
        f"Equal to {TARGET_RELATIVE:g} relative: genlab cold vs torchmetrics (batch {batch}) "
        f"{rel(value['cold'], value['tm']):.1e}, genlab eval cached vs torchmetrics "
        f"{rel(value['cached'], value['tm']):.1e}: **"
        f"{'met' if max(rel(value[g], value['tm']) for g in genlab_keys) <= TARGET_RELATIVE else 'NOT met'}**. "
        f"Third opinions on genlab cold's value: torchmetrics with a feature module returning float64 "
        f"{rel(value['cold'], t64_value):.1e}, pytorch-fid's formula (`scipy.linalg.sqrtm`, float64) on genlab's "
        f"statistics {rel(value['cold'], scipy_value):.1e}. Cached real features equal the computed ones: "
        f"{'yes' if cache_matches else 'NO'}. Every repeat gave the same FID to the last digit: "
        f"{'yes' if stable else 'no'}. Quiet machine (other processes <= {args.max_other_load:g} cores in every "
        f"timed run): {'yes' if worst_load <= args.max_other_load else 'NO, worst ' + format(worst_load, '.2f')}"
        f" ({retried} run{'s' if retried != 1 else ''} retried for load)."
    )
    print("\n" + table + "\n\n" + ratio_table + "\n\n" + verdict, flush=True)

    if args.profile:
        print("\nWhere genlab cold's time goes:\n\n" + profile_genlab(extractor, real, generated, batch))

    if args.write:
        command = (f"python benchmarks/fid_speed.py --n {args.n} --repeats {args.repeats} --batch-size {batch}"
                   + (f" --threads {args.threads}" if args.threads else ""))
        body = (f"Measured with `{command}` on {machine_line()}; torchmetrics {tm_version}.\n\n"
                f"{table}\n\n{ratio_table}\n\n{verdict}")
        write_section(SECTION, body, DOC)
        print(f"\nwrote the measured section of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
