"""VAE quality on mnist-5k: genlab's defaults against the plain pytorch/examples loop.

The issue's target: the MLP VAE on mnist-5k, 20 epochs, seed 0: test loss <= 120 nats per
image (a plain loop of the same network with Adam 1e-3, batch 128 reaches about 124 on this
split at 20 epochs: the defaults should beat it). Record MLP and conv figures.

Rows:
  genlab MLP             genlab.train("vae", "mnist-5k", epochs=20, seed=0): genlab's defaults
  genlab conv            the same with model_config={"arch": "conv"}
  genlab MLP, ref. settings  genlab.train with lr 1e-3, batch 128: genlab's loop at the reference's settings
  plain loop (reference) pytorch/examples vae/main.py: its 784-400-20 network, a per-sample
                         DataLoader (batch 128, shuffled), Adam 1e-3, BCE(sum)+KL, seed 0

Test loss is the negative ELBO in nats per image on the 1,000-image test split with one
reparameterized sample, averaged, after each epoch, exactly as genlab's Trainer.validate does
it (batches of 500 in order, under torch.manual_seed(seed)); every final model is re-scored
here by one function to check that. The IW column is -mean log_likelihood(x, k=100): the
importance-weighted bound (Burda et al. 2016) on -log p(x), in nats per image. Test pixels are
the continuous intensities in [0, 1] (not binarized), so these are Bernoulli "likelihoods" of
grey pixels, comparable between rows but not with binarized-MNIST figures in papers.

    python benchmarks/vae_quality.py                 # all rows, 20 epochs (a few minutes on 2 CPU cores)
    python benchmarks/vae_quality.py --write         # also update benchmarks/README.md
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import genlab
from genlab.data.transforms import to_unit
from genlab.models.vae import negative_elbo

from _common import CLASSIC_VAE, ExamplesVAE, LoadMeter, examples_loader, examples_train_epoch, machine_line, markdown_table, write_section

TARGET = 120.0
EVAL_BATCH = 500  # Trainer.validate uses max(batch_size, 500)


@torch.no_grad()
def evaluate(neg_elbo_and_recon, images: torch.Tensor, seed: int) -> tuple[float, float]:
    """(mean negative ELBO in nats, recon accuracy) over `images`, as Trainer.validate computes them."""
    total_loss, total_acc = 0.0, 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(images), EVAL_BATCH):
            x = to_unit(images[start : start + EVAL_BATCH])
            loss, recon = neg_elbo_and_recon(x)
            total_loss += loss.mean().item() * len(x)
            total_acc += ((recon > 0.5) == (x > 0.5)).float().mean().item() * len(x)
    return total_loss / len(images), total_acc / len(images)


def genlab_scorer(model):
    def score(x):
        logits, mean, logvar = model(x)
        return negative_elbo(logits, x, mean, logvar)[0], model.reconstruct(x)
    return score


def examples_scorer(model: ExamplesVAE):
    def score(x):
        probs, mu, logvar = model(x)
        bce = F.binary_cross_entropy(probs, x.view(-1, 784), reduction="none").sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return bce + kl, model.decode(mu).view_as(x)
    return score


@torch.no_grad()
def iw_nll(log_likelihood, images: torch.Tensor, k: int, seed: int, batch: int = 250) -> float:
    """-mean over `images` of the k-sample importance-weighted bound on log p(x), nats per image."""
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(images), batch):
            x = to_unit(images[start : start + batch])
            total += log_likelihood(x, k).sum().item()
    return -total / len(images)


def examples_log_likelihood(model: ExamplesVAE):
    """The IWAE bound for the reference network, the same estimator as genlab's VAE.log_likelihood."""
    def log_likelihood(x, k):
        x = x.view(-1, 784)
        mu, logvar = model.encode(x)
        std = (0.5 * logvar).exp()
        weights = []
        for _ in range(k):
            z = mu + torch.randn_like(mu) * std
            logits = model.fc4(F.relu(model.fc3(z)))
            log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            log_pz = -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(1)
            log_qz = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(1)
            weights.append(log_px + log_pz - log_qz)
        return torch.logsumexp(torch.stack(weights), 0) - math.log(k)
    return log_likelihood


def run_genlab(name, out: Path, test, args, model_config=None, batch_size=None) -> dict:
    with LoadMeter() as load:
        start = time.perf_counter()
        run = genlab.train(
            "vae", "mnist-5k", out=out, epochs=args.epochs, seed=args.seed, progress=False,
            model_config={**CLASSIC_VAE, **(model_config or {})}, batch_size=batch_size, overwrite=True, device="cpu",
        )
        wall = time.perf_counter() - start
    history = run.history
    model = run.model.eval()
    rescored, _ = evaluate(genlab_scorer(model), test.images, args.seed)
    best = min(history, key=lambda r: r["test_loss"])
    return {
        "name": name,
        "settings": f"{model.config.arch}, lr {model.config.lr:g}, batch {run.info['train']['batch_size']}",
        "final": history[-1]["test_loss"],
        "rescored": rescored,
        "best": best["test_loss"],
        "best_epoch": best["epoch"],
        "recon": history[-1]["recon_accuracy"],
        "iw": iw_nll(lambda x, k: model.log_likelihood(x, k=k), test.images, args.iw_samples, args.seed),
        "wall": wall,
        "train_seconds": sum(r["seconds"] for r in history),
        "other_cores": load.other_cores,
    }


def run_reference(train, test, args) -> dict:
    with LoadMeter() as load:
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        model = ExamplesVAE()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = examples_loader(train, 128)
        history, train_seconds = [], 0.0
        for epoch in range(1, args.epochs + 1):
            epoch_start = time.perf_counter()
            examples_train_epoch(model, loader, optimizer)
            train_seconds += time.perf_counter() - epoch_start
            model.eval()
            loss, recon = evaluate(examples_scorer(model), test.images, args.seed)
            history.append({"epoch": epoch, "test_loss": loss, "recon_accuracy": recon})
        wall = time.perf_counter() - start
    model.eval()
    best = min(history, key=lambda r: r["test_loss"])
    return {
        "name": "plain loop (reference)",
        "settings": "pytorch/examples MLP, Adam 1e-3, batch 128",
        "final": history[-1]["test_loss"],
        "rescored": history[-1]["test_loss"],
        "best": best["test_loss"],
        "best_epoch": best["epoch"],
        "recon": history[-1]["recon_accuracy"],
        "iw": iw_nll(examples_log_likelihood(model), test.images, args.iw_samples, args.seed),
        "wall": wall,
        "train_seconds": train_seconds,
        "other_cores": load.other_cores,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted bound (default 100)")
    parser.add_argument("--skip-conv", action="store_true", help="leave out the conv VAE (the slow row)")
    parser.add_argument("--out", help="keep the genlab run directories here (default: a temporary folder)")
    parser.add_argument("--write", action="store_true", help="replace the quality section of benchmarks/README.md")
    args = parser.parse_args(argv)

    train = genlab.load_dataset("mnist-5k", split="train")
    test = genlab.load_dataset("mnist-5k", split="test")
    print(f"{machine_line()}\nmnist-5k: {len(train)} train / {len(test)} test images, {args.epochs} epochs, seed {args.seed}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        jobs = [
            ("genlab MLP (defaults)", lambda: run_genlab("genlab MLP (defaults)", root / "mlp", test, args)),
            ("genlab conv (defaults)", lambda: run_genlab("genlab conv (defaults)", root / "conv", test, args, {"arch": "conv"})),
            ("genlab MLP, reference settings", lambda: run_genlab(
                "genlab MLP, reference settings", root / "mlp-ref", test, args, {"lr": 1e-3}, batch_size=128)),
            ("plain loop (reference)", lambda: run_reference(train, test, args)),
        ]
        for name, job in jobs:
            if args.skip_conv and "conv" in name:
                continue
            row = job()
            rows.append(row)
            print(f"{name}: final {row['final']:.2f}, best {row['best']:.2f} (epoch {row['best_epoch']}), "
                  f"recon {row['recon']:.4f}, IW {row['iw']:.2f}, {row['wall']:.1f}s "
                  f"(others {row['other_cores']:.2f} cores)", flush=True)
            if abs(row["rescored"] - row["final"]) > 1e-3 * abs(row["final"]):
                print(f"  warning: re-scored test loss {row['rescored']:.3f} differs from the run's {row['final']:.3f}")

    table = markdown_table(
        ["Run", "Settings", f"Test loss, epoch {args.epochs}", "Best (epoch)", "Recon. acc.",
         f"IW bound, k={args.iw_samples}", "Wall s (train s)", "Other procs (cores)"],
        [[
            r["name"], r["settings"], f"{r['final']:.2f}", f"{r['best']:.2f} ({r['best_epoch']})", f"{r['recon']:.4f}",
            f"{r['iw']:.2f}", f"{r['wall']:.1f} ({r['train_seconds']:.1f})", f"{r['other_cores']:.2f}",
        ] for r in rows],
    )
    mlp = next(r for r in rows if r["name"] == "genlab MLP (defaults)")
    verdict = (f"genlab MLP test loss at epoch {args.epochs}: {mlp['final']:.2f} nats/image "
               f"(target <= {TARGET:g}): {'met' if mlp['final'] <= TARGET else 'NOT met'}")
    print("\n" + table + "\n\n" + verdict)
    if args.write:
        body = (
            f"Measured with `python benchmarks/vae_quality.py --epochs {args.epochs} --seed {args.seed} "
            f"--iw-samples {args.iw_samples}` on {machine_line()}.\n\n{table}\n\n**{verdict}.**"
        )
        write_section("vae_quality", body)
        print("\nwrote the quality section of benchmarks/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
