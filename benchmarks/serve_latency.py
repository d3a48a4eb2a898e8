"""Latency of the explorer's latent slider: `genlab serve` under load, on 127.0.0.1.

`genlab serve zoo:vae-mnist5k zoo:gan-mnist5k zoo:ddpm-mnist5k-cond` runs in its own process (as a user starts
it); this script is the browser. Each scenario fires `--requests` slider requests (`/api/runs/K/latent` with
distinct offsets, each from its own client id so that none supersedes another) all at once, on the VAE and then
on the GAN, and times each request from sending to the last byte of its reply:

- alone: nothing else asked of the server;
- beside a chain: a DDPM denoising chain of 1,000 steps streams in another "tab" meanwhile (issue 24's case:
  the slider's runs have their own worker threads, so the chain must not hold them up).

Then a drag: one client moves a slider `--requests` times, 20 ms apart (each request superseding the one
before), and the time from the last move to its image is the latency a user feels. The issue's target: p95
under 100 ms for a VAE or GAN slider while a DDPM chain runs.

    .venv/bin/python benchmarks/serve_latency.py [--requests 50] [--rounds 3] [--workers threads,auto] [--write]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from _common import LoadMeter, machine_line, markdown_table, publish  # benchmarks/, on sys.path

RUNS = ["zoo:vae-mnist5k", "zoo:gan-mnist5k", "zoo:ddpm-mnist5k-cond"]
SLIDERS = {"vae": 0, "gan": 1}  # run index on the server
CHAIN_RUN = 2


def start_server(workers: str) -> tuple[subprocess.Popen, str]:
    """`genlab serve --workers WORKERS` on a free port, in its own process; (the process, its URL)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "genlab", "serve", *RUNS, "--port", "0", "--workers", workers],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    words = line.split()
    if "at" not in words:
        process.kill()
        raise SystemExit(f"genlab serve did not start: {line!r}")
    return process, words[words.index("at") + 1]


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process `pid` and its children (the runs' worker processes) have used."""
    total = 0.0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if stat == f"/proc/{pid}/stat" or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def fetch(url: str) -> float:
    """Seconds from sending a GET to its reply's last byte."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as reply:
        reply.read()
    return time.perf_counter() - start


def slider_url(base: str, run: int, client: str, offset: float) -> str:
    query = urllib.parse.urlencode({"seed": 1, "offsets": f"{offset:.3f},0,0", "client": client})
    return f"{base}api/runs/{run}/latent?{query}"


def burst(base: str, run: int, requests: int, tag: str) -> list[float]:
    """`requests` slider requests at once, each its own client: their latencies."""
    urls = [slider_url(base, run, f"{tag}-{i}", -2 + 4 * i / requests) for i in range(requests)]
    with ThreadPoolExecutor(max_workers=requests) as pool:
        return list(pool.map(fetch, urls))


def drag(base: str, run: int, requests: int, tag: str) -> float:
    """One client moving a slider `requests` times 20 ms apart: seconds from the last move to its image."""
    threads = []
    finished: dict[int, float] = {}

    def move(i: int) -> None:
        try:
            finished[i] = fetch(slider_url(base, run, tag, -2 + 4 * i / requests))
        except OSError:
            pass  # a superseded request answers 409: expected

    for i in range(requests):
        thread = threading.Thread(target=move, args=(i,))
        thread.start()
        threads.append(thread)
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    return finished[requests - 1]


class Chain:
    """A DDPM chain of 1,000 steps streaming from the server in a background thread (another tab)."""

    def __init__(self, base: str, client: str):
        query = urllib.parse.urlencode({"seed": 1, "label": 3, "steps": 1000, "sampler": "ddim", "client": client})
        self.url = f"{base}api/runs/{CHAIN_RUN}/denoise?{query}"
        stop = urllib.parse.urlencode({"seed": 1, "label": 3, "steps": 1, "client": client})
        self.stop_url = f"{base}api/runs/{CHAIN_RUN}/denoise?{stop}"  # a one-step chain of the same tab supersedes it
        self.steps = 0
        self.thread = threading.Thread(target=self.read, daemon=True)

    def read(self) -> None:
        with urllib.request.urlopen(self.url, timeout=600) as reply:
            for line in reply:
                self.steps += line.startswith(b"event: step")

    def __enter__(self) -> Chain:
        self.thread.start()
        while self.steps < 5:  # under way
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        fetch(self.stop_url)
        self.thread.join(timeout=60)  # the long chain has stopped: the next scenario runs without it


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="slider requests per burst (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per scenario (default 3)")
    parser.add_argument("--write", action="store_true", help="replace the section of benchmarks/README.md")
    parser.add_argument(
        "--workers", default="threads,auto",
        help="genlab serve's --workers layouts to measure, in turn (default threads,auto)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rows = []
    for workers in args.workers.split(","):
        rows += measure(workers, args.requests, args.rounds)
    table = markdown_table(
        ["Workers", "Slider", "While", "Requests", "p50 ms", "p95 ms", "max ms",
         "drag: last move to image, ms (median)", "Server (cores)", "Other procs (cores)"],
        rows,
    )  # fmt: skip
    body = (
        f"Measured with `python benchmarks/serve_latency.py --requests {args.requests} --rounds {args.rounds} "
        f"--workers {args.workers}` on {machine_line()}.\n\n{table}\n"
    )
    return publish("serve_latency", body, args.write)


def measure(workers: str, requests: int, rounds: int) -> list[list[str]]:
    """The table's rows for one layout of the server's workers."""
    process, base = start_server(workers)
    rows = []
    try:
        fetch(f"{base}api/runs")  # as the page does first
        for name in ("vae", "gan"):  # warm-up: the VAE's principal directions are computed on first use
            fetch(slider_url(base, SLIDERS[name], "warm", 0.0))
        # Warm-up: the first long chain after the server starts holds every run up for 100-150 ms once, whatever
        # the workers' layout (a one-off, cause not found; README below); the bursts measure the steady state.
        with Chain(base, "warm-chain"):
            pass
        for name, run in SLIDERS.items():
            for beside_chain in (False, True):
                latencies, drags = [], []
                server_before, started = process_seconds(process.pid), time.perf_counter()
                with LoadMeter() as load:
                    for round_ in range(rounds):
                        tag = f"{name}-{beside_chain}-{round_}"
                        if beside_chain:
                            with Chain(base, "chain-tab") as chain:
                                latencies += burst(base, run, requests, tag)
                                drags.append(drag(base, run, requests, tag + "-drag"))
                                assert chain.thread.is_alive(), "the chain ended before the burst: lengthen it"
                        else:
                            latencies += burst(base, run, requests, tag)
                            drags.append(drag(base, run, requests, tag + "-drag"))
                server_cores = (process_seconds(process.pid) - server_before) / (time.perf_counter() - started)
                ms = [1000 * value for value in latencies]
                rows.append([
                    workers, name, "beside a 1,000-step DDPM chain" if beside_chain else "alone",
                    f"{len(ms)} ({rounds} x {requests})", f"{statistics.median(ms):.0f}",
                    f"**{percentile(ms, 0.95):.0f}**", f"{max(ms):.0f}",
                    f"{1000 * statistics.median(drags):.0f}", f"{server_cores:.2f}",
                    f"{max(0.0, load.other_cores - server_cores):.2f}",
                ])  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
    return rows


if __name__ == "__main__":
    sys.exit(main())
