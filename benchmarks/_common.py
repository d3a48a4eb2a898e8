"""What the benchmark scripts share: the pytorch/examples reference VAE and its per-sample
data pipeline, the machine description, and writing a section of benchmarks/README.md.

Not part of genlab: this file exists so that both benchmarks time and score the *same*
reference, and so that nothing here can change what genlab itself does.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

README = Path(__file__).resolve().parent / "README.md"
# The VAE of issue 2, as the VAE tables were first measured: the ELBO (beta 1) and the N(0, I) prior. Today's
# default weighs the KL by 0.5 and draws from a fitted mixture (benchmarks/time_to_quality.py measures it).
CLASSIC_VAE = {"kl_weight": 1.0, "prior": "standard"}


# ---------------------------------------------------------------- the reference (pytorch/examples vae/main.py)


class ExamplesVAE(nn.Module):
    """A line-for-line copy of the network in pytorch/examples `vae/main.py`: 784-400-20 MLP.

    Same layer sizes as genlab's `VAEConfig(arch="mlp")` (784 -> 400 -> 20 (mu, logvar);
    20 -> 400 -> 784); the decoder ends in a sigmoid and the loss is BCE on probabilities,
    as in the example (genlab uses BCE on logits: the same function, computed more stably).
    """

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def examples_loss(recon_x, x, mu, logvar):
    """The example's `loss_function`: BCE summed over pixels and images, plus the KL term."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


class PerSampleImages(Dataset):
    """torchvision-MNIST style: `__getitem__` returns one (float image (1, 28, 28) in [0, 1], label).

    Leaner than torchvision's MNIST (no PIL round trip per sample), so it flatters the reference.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images  # (N, 1, 28, 28) uint8
        self.labels = labels  # (N,) int64

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].float().div(255.0), int(self.labels[index])


class MNISTAsTorchvision(PerSampleImages):
    """What pytorch/examples actually runs: torchvision's `MNIST.__getitem__` + `ToTensor()`.

    torchvision cannot be imported here, so its per-sample path is restated: the uint8 image
    becomes a PIL image (`Image.fromarray(img.numpy(), mode="L")`), and ToTensor turns it
    back into a float tensor (np.array -> from_numpy -> permute -> float / 255).
    """

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(self.images[index, 0].numpy(), mode="L")  # MNIST.__getitem__
        array = np.array(image, np.uint8, copy=True)  # ToTensor on a mode-L image
        tensor = torch.from_numpy(array).view(image.size[1], image.size[0], 1).permute(2, 0, 1).contiguous()
        return tensor.float().div(255.0), int(self.labels[index])


def examples_loader(dataset, batch_size: int, shuffle: bool = True, as_torchvision: bool = False) -> DataLoader:
    """The example's loader: per-sample dataset, default collate, num_workers=0 on the CPU.

    `as_torchvision=True` adds torchvision's per-sample PIL round trip, as the example really has it.
    """
    kind = MNISTAsTorchvision if as_torchvision else PerSampleImages
    return DataLoader(kind(dataset.images, dataset.labels), batch_size=batch_size, shuffle=shuffle, num_workers=0)


def examples_train_epoch(model, loader, optimizer, device="cpu") -> tuple[float, int]:
    """One epoch of the example's `train(epoch)` loop; returns (summed loss, images seen)."""
    model.train()
    train_loss, seen = 0.0, 0
    for data, _ in loader:
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = examples_loss(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        seen += len(data)
    return train_loss, seen


# ---------------------------------------------------------------- load from other processes


def _busy_seconds() -> float | None:
    """CPU seconds all processes on this machine have spent busy (user+nice+system+irq+steal)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and of its children waited for (a training run it started and reaped)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class LoadMeter:
    """How many cores *other* processes kept busy while the block ran (from /proc/stat).

    The machine is shared: a test suite started elsewhere takes a core, and torch's two
    threads then wait on each other, so a timing taken then says little. `other_cores`
    lets a benchmark retry such a measurement and report how quiet the machine was.
    """

    def __enter__(self):
        self.start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = time.perf_counter(), _busy_seconds(), _own_seconds()
        if busy is None or self.start[1] is None:
            self.other_cores = float("nan")
        else:
            self.other_cores = max(0.0, (busy - self.start[1]) - (own - self.start[2])) / (wall - self.start[0])
        return False


def timed(fn):
    """(fn()'s result, wall seconds, cores other processes kept busy meanwhile)."""
    with LoadMeter() as load:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, load.other_cores


# ---------------------------------------------------------------- reporting


def quietest(measure_once, args):
    """(result, other processes' cores) of the quietest of up to `args.retries` calls of `measure_once()`.

    Stops at the first call during which others kept at most `args.max_other_load` cores busy,
    pausing `args.pause` seconds between attempts.
    """
    best = None
    for _ in range(args.retries):
        with LoadMeter() as load:
            result = measure_once()
        if best is None or load.other_cores < best[1]:
            best = (result, load.other_cores)
        if load.other_cores <= args.max_other_load:
            break
        time.sleep(args.pause)
    return best


def median(values):
    return statistics.median(values)


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "date": datetime.date.today().isoformat(),
    }


def machine_line() -> str:
    m = machine_info()
    return (
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"Python {m['python']}, GPU: {m['gpu']}, {m['date']}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, readme: Path = README) -> None:
    """Replace (or append) the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in README."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = readme.read_text() if readme.exists() else "# genlab benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


def publish(section: str, body: str, write: bool) -> int:
    """Print a benchmark's tables; with --write also replace its section of benchmarks/README.md. Returns 0."""
    print(body)
    if write:
        write_section(section, body)
        print(f"\nwrote the {section} section of benchmarks/README.md", file=sys.stderr)
    return 0
