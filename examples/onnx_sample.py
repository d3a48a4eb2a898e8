"""Draw images from a `genlab export` folder with numpy and onnxruntime alone (no torch, no genlab).

    genlab export runs/dcgan --format onnx --out exports/dcgan
    python examples/onnx_sample.py exports/dcgan --n 64 --seed 1 --out grid.png
    python examples/onnx_sample.py exports/ddpm --noise x_T.npy --steps 20 --out grid.png --save-npy images.npy

Latent families (gan, dcgan, wgan-gp, vae, realnvp): draw z as genlab_export.json's `sampling.noise`
says, run the graph once, map its output to pixels as `output.pixels` says. DDPM: DDIM (Song et al.
2021) over respaced timesteps, one graph call per step, as genlab's `ddim` sampler does; eta 0
(the default) is deterministic given x_T, so the same x_T gives genlab's images
(`model.sample(n, initial=x_T, sampler="ddim", eta=0.0, steps=K)`). PixelCNN exports are not
sampled here (they draw pixel by pixel: one graph call per pixel and colour).

`--noise FILE.npy` gives the graph's noise input (z, or x_T for DDPM) for n images, (n, *shape) as
the JSON's `sampling.noise.shape`, already drawn; `--seed` draws it with numpy instead (other numbers
than torch's generator gives, so other images than `genlab sample --seed`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

LATENT_FAMILIES = ("vae", "gan", "dcgan", "wgan-gp", "realnvp")


def load_export(folder: Path) -> tuple[dict, onnxruntime.InferenceSession]:
    """The export's description (genlab_export.json) and an onnxruntime session of its graph."""
    description = json.loads((folder / "genlab_export.json").read_text())
    if description.get("format") != "genlab-export":
        raise SystemExit(f"{folder} holds no genlab export (genlab_export.json names another format)")
    session = onnxruntime.InferenceSession(
        str(folder / description["onnx"]["file"]), providers=["CPUExecutionProvider"]
    )
    return description, session


def draw_noise(noise: dict, n: int, rng: np.random.Generator, labels: np.ndarray | None = None) -> np.ndarray:
    """n draws of the graph's noise input, (n, *shape) float32, from the distribution the JSON names (a
    conditional VAE's per-class mixture, a conditional flow's Gaussian per class: each from its label's)."""
    shape = tuple(noise["shape"])
    if noise["distribution"] == "normal":
        return (rng.standard_normal((n, *shape)) * noise["std"]).astype(np.float32)
    if noise["distribution"] == "gaussian_mixture":  # the VAE's fitted prior: z = mean_k + L_k e
        return mixture_draws(noise["weights"], noise["means"], noise["scale_tril"], n, rng)
    if noise["distribution"] == "class_gaussian_mixture" and labels is not None:  # one mixture per class
        z = np.empty((n, shape[0]), dtype=np.float32)
        for label in np.unique(labels):
            chosen = labels == label
            weights, means, scale_tril = (noise[key][label] for key in ("weights", "means", "scale_tril"))
            z[chosen] = mixture_draws(weights, means, scale_tril, int(chosen.sum()), rng)
        return z
    if noise["distribution"] == "class_normal" and labels is not None:  # a conditional flow's Gaussian per class
        e = rng.standard_normal((n, *shape)) * noise["std"]
        return (np.asarray(noise["means"])[labels] + np.asarray(noise["scales"])[labels] * e).astype(np.float32)
    raise SystemExit(f"cannot draw noise of kind {noise['distribution']!r}")


def mixture_draws(weights: list, means: list, scale_tril: list, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws (n, D) float32 of a full-covariance Gaussian mixture: z = mean_k + L_k e, k ~ weights."""
    weights_array = np.asarray(weights, dtype=np.float64)
    components = rng.choice(len(weights_array), size=n, p=weights_array / weights_array.sum())
    means_array, tril_array = np.asarray(means), np.asarray(scale_tril)
    e = rng.standard_normal((n, means_array.shape[1], 1))
    return (means_array[components] + (tril_array[components] @ e)[:, :, 0]).astype(np.float32)


def class_labels(description: dict, n: int, given: list[int] | None) -> np.ndarray | None:
    """(n,) int64 labels for a conditional export: those given (one for all, or one each), else classes in turn."""
    if not description["conditional"]:
        return None
    if not given:
        return np.arange(n, dtype=np.int64) % description["num_classes"]
    labels = np.asarray(given, dtype=np.int64)
    return np.broadcast_to(labels, (n,)).copy() if labels.size == 1 else labels


def to_pixels(output: np.ndarray, pixels: dict) -> np.ndarray:
    """The graph's images mapped to [0, 1] as `output.pixels.kind` says."""
    if pixels["kind"] == "tanh":
        return np.clip((output + 1) / 2, 0, 1)
    return np.clip(output, 0, 1)


def sample_latent_family(
    description: dict, session: onnxruntime.InferenceSession, z: np.ndarray, labels: np.ndarray | None
) -> np.ndarray:
    """One graph call: z (n, *latent) [, labels] -> images (n, C, H, W) in [0, 1]."""
    feed = {"z": z} if labels is None else {"z": z, "labels": labels}
    (output,) = session.run(None, feed)
    return to_pixels(output, description["output"]["pixels"])


def respaced(total: int, steps: int) -> np.ndarray:
    """`steps` timesteps from 0 .. total-1, evenly spaced, increasing: genlab's `respaced`."""
    return np.unique(np.round(np.linspace(0, total - 1, steps)).astype(np.int64))


def ddim(
    description: dict,
    session: onnxruntime.InferenceSession,
    x_t: np.ndarray,
    labels: np.ndarray | None,
    steps: int,
    eta: float = 0.0,
    guidance: float = 1.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """DDIM from x_T (n, C, H, W) to images in [0, 1]: from τ_i to τ_{i-1},

        x̂_0 = split(network(x, τ_i)) clipped to [-1, 1], ε̂ = (x − sqrt(ᾱ) x̂_0) / sqrt(1 − ᾱ)
        x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z,  σ = η sqrt((1 − ᾱ_prev)/(1 − ᾱ)) sqrt(1 − ᾱ/ᾱ_prev)

    and x̂_0 itself after the last step (τ_1 = 0). eta 1 is DDPM's ancestral sampler. With labels and
    guidance ≠ 1, the prediction is u + guidance (c − u), u at the null class (classifier-free guidance).
    """
    diffusion = description["sampling"]["diffusion"]
    alpha_bar = np.asarray(diffusion["alpha_bar"], dtype=np.float32)  # the float32 values genlab indexes
    epsilon = diffusion["prediction"] == "epsilon"
    timesteps = respaced(diffusion["diffusion_steps"], steps)
    n = len(x_t)
    x = x_t.astype(np.float32)

    def predict(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        if labels is None:
            return session.run(None, {"x_t": x, "t": t})[0]
        conditional = session.run(None, {"x_t": x, "t": t, "labels": labels})[0]
        if guidance == 1.0:
            return conditional
        null = np.full_like(labels, diffusion["null_class"])
        unconditional = session.run(None, {"x_t": x, "t": t, "labels": null})[0]
        return unconditional + np.float32(guidance) * (conditional - unconditional)

    for i in range(len(timesteps) - 1, -1, -1):
        t = np.full(n, timesteps[i], dtype=np.int64)
        output = predict(x, t)
        a = alpha_bar[timesteps[i]]
        root_a, root_1a = np.sqrt(a), np.sqrt(1 - a)
        x0 = (x - root_1a * output) / root_a if epsilon else root_a * x - root_1a * output
        x0 = np.clip(x0, -1, 1)
        eps = (x - root_a * x0) / root_1a  # consistent with the clipped x̂_0
        if i == 0:
            x = x0
            break
        previous = alpha_bar[timesteps[i - 1]]
        sigma = np.float32(eta) * np.sqrt((1 - previous) / (1 - a) * (1 - a / previous))
        x = np.sqrt(previous) * x0 + np.sqrt(np.maximum(1 - previous - sigma**2, 0)) * eps
        if eta > 0:
            assert rng is not None, "eta > 0 draws fresh noise at each step: give a generator"
            x = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
    return np.clip((x + 1) / 2, 0, 1)


def save_grid(images: np.ndarray, path: Path, nrow: int = 8, padding: int = 2) -> None:
    """Images (n, C, H, W) in [0, 1] as one PNG grid on white, as genlab's grids."""
    n, c, h, w = images.shape
    columns = min(nrow, n)
    rows = -(-n // columns)
    grid = np.ones((rows * (h + padding) + padding, columns * (w + padding) + padding, c), dtype=np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = padding + row * (h + padding), padding + column * (w + padding)
        grid[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    pixels = (grid * 255).round().astype(np.uint8)
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="folder written by `genlab export --format onnx`")
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG grid to write (default grid.png)")
    parser.add_argument("--n", type=int, help="images (default 64, or as many as --noise holds)")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed of the noise (ignored for z with --noise)")
    parser.add_argument("--noise", type=Path, help=".npy of the graph's noise input (z or x_T), (n, *shape)")
    parser.add_argument("--labels", help="conditional exports: a class, or one per image: 3 or 0,1,2")
    parser.add_argument("--steps", type=int, help="ddpm: denoising steps (default the export's sampler default)")
    parser.add_argument("--eta", type=float, default=0.0, help="ddpm: DDIM's eta, 0 deterministic .. 1 ancestral")
    parser.add_argument("--guidance", type=float, help="conditional ddpm: guidance scale (default the export's)")
    parser.add_argument("--nrow", type=int, default=8, help="images per grid row (default 8)")
    parser.add_argument("--save-npy", type=Path, help="also write the images (n, C, H, W) in [0, 1] as .npy")
    parser.add_argument("--assert-no-torch", action="store_true", help="fail if torch was imported (a test's check)")
    args = parser.parse_args(argv)

    description, session = load_export(args.export)
    family = description["family"]
    rng = np.random.default_rng(args.seed)
    noise_spec = description["sampling"]["noise"]
    if family not in LATENT_FAMILIES and family != "ddpm":
        raise SystemExit(f"this example samples latent families and ddpm, not {family}")
    noise = np.load(args.noise).astype(np.float32) if args.noise else None
    n = args.n or (len(noise) if noise is not None else 64)
    labels = class_labels(description, n, [int(p) for p in args.labels.split(",")] if args.labels else None)
    if noise is None:
        noise = draw_noise(noise_spec, n, rng, labels)
    if noise.shape != (n, *noise_spec["shape"]):
        raise SystemExit(f"--noise holds {noise.shape}, not (n, {', '.join(map(str, noise_spec['shape']))})")

    if family == "ddpm":
        defaults = description["sampling"]["diffusion"]["sampler_defaults"]
        guidance = defaults["guidance"] if args.guidance is None else args.guidance
        steps = args.steps or defaults["steps"]
        if defaults["sampler"] != "ddim":  # genlab's own default differs: say so, the images will too
            print(f"note: the run samples with {defaults['sampler']}; this example runs DDIM, eta {args.eta:g}")
        images = ddim(description, session, noise, labels, steps, args.eta, guidance, rng)
    else:
        images = sample_latent_family(description, session, noise, labels)

    save_grid(images, args.out, nrow=args.nrow)
    if args.save_npy:
        np.save(args.save_npy, images.astype(np.float32))
    print(f"wrote {n} {family} images to {args.out}")
    if args.assert_no_torch:
        assert "torch" not in sys.modules, "torch was imported"
    return 0


if __name__ == "__main__":
    sys.exit(main())
