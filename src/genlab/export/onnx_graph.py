"""ONNX: a run's generation network as an ONNX graph, with a JSON file that says how to sample from it.

    export_onnx("runs/dcgan", "exports/dcgan")  # exports/dcgan/model.onnx + genlab_export.json

What each family exports is the network its `sample` runs after drawing its noise, with a
dynamic batch axis (docs/export.md has the JSON schema and a numpy + onnxruntime sampler):

    vae                   decoder      z (B, latent) [, labels (B,)] -> images (B, C, H, W) in [0, 1]
    gan, dcgan, wgan-gp   generator    z (B, latent) [, labels] -> images in [-1, 1] (tanh); the EMA one if any
    realnvp               inverse flow z (B, C, H, W) [, labels] -> images in [0, 1] (logit transform undone)
    ddpm                  UNet, one    x_t (B, C, H, W), t (B,) [, labels] -> the ε or v prediction; the EMA
                          denoising    one if any; the schedule and the sampler defaults are in the JSON
    pixelcnn              network      images (B, C, H, W) on the model's grid [, labels] -> logits (B, C, K, H, W)

onnx, onnxscript and onnxruntime are the optional `export` extra: nothing here imports them
until an export runs, and without them the export says how to install them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

import genlab
from genlab.errors import GenlabError
from genlab.export.folder import (
    EXPORT_FILE,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    check_export_out,
    fsync,
    move_into_place,
)
from genlab.io import writing
from genlab.models import GenerativeModel
from genlab.models.realnvp.losses import inverse_logit_transform
from genlab.models.vae.prior import ClassMixturePrior
from genlab.run import Run

ONNX_FILE = "model.onnx"
# Everything export_onnx writes into its folder, and nothing else: --overwrite replaces a folder holding only these.
EXPORT_ENTRIES = (EXPORT_FILE, ONNX_FILE)
OPSET = 18  # the opset torch's dynamo exporter targets natively (no version conversion pass)
INSTALL_HINT = "pip install 'genlab[export]'"
EXPORT_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra: the exporter needs the first two
VERIFY_BATCHES = (1, 3)  # batch sizes at which each export is checked against torch, other than the traced one
VERIFY_TOLERANCE = 1e-4  # max |onnxruntime - torch|; float32 graphs agree to ~1e-6 on these networks


@dataclass
class GraphInput:
    """One input of the exported graph: its name, shape per image, dtype and what it means."""

    name: str
    shape: tuple[int, ...]  # without the batch axis
    dtype: torch.dtype
    meaning: str
    upper: int = 0  # an int64 input: values 0 .. upper - 1 (what random test inputs are drawn from)

    def example(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """A random input (batch, *shape) of the right kind, to trace and to check the graph with."""
        if self.dtype == torch.int64:
            return torch.randint(0, self.upper, (batch, *self.shape), generator=generator)
        return torch.randn((batch, *self.shape), generator=generator)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": ["batch", *self.shape],
            "dtype": "int64" if self.dtype == torch.int64 else "float32",
            "meaning": self.meaning,
        }


@dataclass
class Exportable:
    """What one family exports: the network as a module of plain tensors, its inputs, and the JSON that
    tells a sampler what to draw, what the output means and how it maps to pixels."""

    network: nn.Module
    inputs: list[GraphInput]
    output: dict[str, Any]  # name, shape, meaning, and "pixels": how the output maps to images in [0, 1]
    sampling: dict[str, Any] = field(default_factory=dict)  # what `sample` draws and does around the network


# ---------------------------------------------------------------- the networks, as plain tensor functions


class LatentDecoder(nn.Module):
    """`decode(z, labels)` of a latent-space family as a graph: z (B, *latent) [, labels (B,)] -> images."""

    def __init__(self, decode: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], networks: list[nn.Module]):
        super().__init__()
        self.networks = nn.ModuleList(networks)  # held so that their weights are the graph's initializers
        self.decode = decode

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(z, labels)


class DenoisingCall(nn.Module):
    """One call of DDPM's UNet: x_t (B, C, H, W), t (B,) [, labels (B,)] -> prediction (B, C, H, W)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x_t, t, labels)


class PixelLogits(nn.Module):
    """PixelCNN's full pass: images (B, C, H, W) on the model's grid [, labels (B,)] -> logits (B, C, K, H, W)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.network(images, labels)


def _one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(B,) int64 -> (B, K) float32, as a comparison (F.one_hot's graph is data-dependent in some exporters)."""
    return (labels[:, None] == torch.arange(classes, device=labels.device)[None, :]).to(torch.float32)


# ---------------------------------------------------------------- per family: what to export


def _labels_input(model: GenerativeModel, null_class: bool = False) -> list[GraphInput]:
    """The `labels` input of a conditional model (none for an unconditional one)."""
    if not model.conditional:
        return []
    classes = model.data.num_classes
    meaning = f"class index per image, 0 .. {classes - 1}"
    if null_class:
        meaning += f", or {classes}: the null class (the unconditional prediction, for guidance)"
    return [GraphInput("labels", (), torch.int64, meaning, upper=classes + int(null_class))]


def _images_output(model: GenerativeModel, meaning: str, pixels: dict[str, Any]) -> dict[str, Any]:
    return {"name": "images", "shape": ["batch", *model.data.image_shape], "meaning": meaning, "pixels": pixels}


UNIT_PIXELS = {"kind": "unit", "range": [0.0, 1.0], "to_pixels": "x (already in [0, 1])"}
TANH_PIXELS = {"kind": "tanh", "range": [-1.0, 1.0], "to_pixels": "clip((x + 1) / 2, 0, 1)"}


def _vae(model: Any) -> Exportable:
    coder, classes = model.coder, model.data.num_classes

    def decode(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        onehot = None if labels is None else _one_hot(labels, classes)
        return torch.sigmoid(coder.decode_logits(z, onehot))  # Bernoulli means, as VAE.decode

    latent = model.config.latent_dim
    if model.mixture is None:
        noise: dict[str, Any] = {"input": "z", "shape": [latent], "distribution": "normal", "std": 1.0}
    elif isinstance(model.mixture, ClassMixturePrior):  # one mixture per class (ClassMixturePrior.sample)
        mixtures = model.mixture.mixtures()
        noise = {
            "input": "z",
            "shape": [latent],
            "distribution": "class_gaussian_mixture",
            "draw": "for label y: k ~ Categorical(weights[y]); z = means[y][k] + scale_tril[y][k] @ e, e ~ N(0, I)",
            "weights": [m.weights.double().tolist() for m in mixtures],
            "means": [m.means.double().tolist() for m in mixtures],
            "scale_tril": [m.scale_tril.double().tolist() for m in mixtures],
        }
    else:  # z = means[k] + scale_tril[k] @ N(0, I), k ~ Categorical(weights) (MixturePrior.sample)
        mixture = model.mixture
        noise = {
            "input": "z",
            "shape": [latent],
            "distribution": "gaussian_mixture",
            "draw": "k ~ Categorical(weights); z = means[k] + scale_tril[k] @ e, e ~ N(0, I)",
            "weights": mixture.weights.double().tolist(),
            "means": mixture.means.double().tolist(),
            "scale_tril": mixture.scale_tril.double().tolist(),
        }
    return Exportable(
        LatentDecoder(decode, [coder]),
        [GraphInput("z", (latent,), torch.float32, "latent, drawn as `sampling.noise` says"), *_labels_input(model)],
        _images_output(model, "the decoder's Bernoulli means p(x|z), which genlab's samples are", UNIT_PIXELS),
        {"noise": noise},
    )


def _gan(model: Any) -> Exportable:
    generator = model.sampler()  # the EMA generator when the model has one: what `sample` draws from
    latent = model.config.latent_dim
    return Exportable(
        LatentDecoder(lambda z, labels: generator(z, labels), [generator]),
        [GraphInput("z", (latent,), torch.float32, "latent z ~ N(0, I)"), *_labels_input(model)],
        _images_output(model, "the generator's images (tanh)", TANH_PIXELS),
        {
            # std: the run's truncation (z ~ N(0, truncation² I)), as its `sample` draws
            "noise": {"input": "z", "shape": [latent], "distribution": "normal", "std": model.config.truncation},
            "network": "ema_generator" if model.ema_generator is not None else "generator",
        },
    )


def _realnvp(model: Any) -> Exportable:
    flow, alpha = model.sampling_flow(), model.config.alpha

    def decode(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return inverse_logit_transform(flow.inverse(z, labels), alpha).clamp(0, 1)  # as RealNVP.decode

    shape = model.data.image_shape
    noise: dict[str, Any] = {
        "input": "z",
        "shape": list(shape),
        "distribution": "normal",
        "std": model.config.sampling_temperature,
    }
    if flow.prior is not None:  # a Gaussian per class (ClassGaussianPrior.draw, after the temperature)
        noise.update(
            distribution="class_normal",
            draw="for label y: z = means[y] + scales[y] * e, e ~ N(0, std^2 I)",
            means=flow.prior.means.double().tolist(),
            scales=flow.prior.log_scales.exp().double().tolist(),
        )
    return Exportable(
        LatentDecoder(decode, [flow]),
        [GraphInput("z", shape, torch.float32, "latent of the image's shape"), *_labels_input(model)],
        _images_output(model, "x = f^-1(z), the logit transform undone and clamped", UNIT_PIXELS),
        {
            "noise": noise,
            "network": "ema_flow" if model.ema_flow is not None else "flow",
        },
    )


def _ddpm(model: Any) -> Exportable:
    config, diffusion, data = model.config, model.diffusion, model.data
    shape = data.image_shape
    inputs = [
        GraphInput("x_t", shape, torch.float32, "the noisy images at step t, in the diffusion's [-1, 1] scale"),
        GraphInput(
            "t", (), torch.int64, f"the training timestep per image, 0 .. {diffusion.steps - 1}", diffusion.steps
        ),
        *_labels_input(model, null_class=True),
    ]
    prediction = "epsilon" if diffusion.prediction == "epsilon" else "v"
    schedule = {
        "diffusion_steps": diffusion.steps,
        "schedule": diffusion.schedule,
        "prediction": prediction,
        # float32 values, as genlab's samplers index them (ᾱ_t = prod_{s<=t} (1 - β_s), t = 0 .. T-1)
        "betas": diffusion.betas.double().tolist(),
        "alpha_bar": diffusion.alpha_bar.double().tolist(),
        "respacing": "unique(round(linspace(0, diffusion_steps - 1, steps))), walked from the last to 0",
        "x0_clip": [-1.0, 1.0],
        "split": (
            "epsilon: x0 = (x_t - sqrt(1 - ab) * out) / sqrt(ab)"
            if prediction == "epsilon"
            else "v: x0 = sqrt(ab) * x_t - sqrt(1 - ab) * out"
        ),
        "sampler_defaults": {
            "sampler": config.sampler,
            "steps": config.sample_steps,
            "eta": config.eta,
            "guidance": config.guidance,
        },
        "null_class": data.num_classes if model.conditional else None,
    }
    return Exportable(
        DenoisingCall(model.sampling_network()),  # the EMA UNet where there is one, as `sample` uses
        inputs,
        {
            "name": "prediction",
            "shape": ["batch", *shape],
            "meaning": f"the network's {prediction} prediction at (x_t, t)",
            "pixels": {**TANH_PIXELS, "kind": "diffusion", "to_pixels": "clip((x0 + 1) / 2, 0, 1) of the final x0"},
        },
        {
            "noise": {"input": "x_t", "shape": list(shape), "distribution": "normal", "std": 1.0, "is": "x_T"},
            "network": "ema_network" if model.ema_network is not None else "network",
            "diffusion": schedule,
        },
    )


def _pixelcnn(model: Any) -> Exportable:
    network, data = model.network, model.data
    levels = network.outputs  # 1 (a Bernoulli logit) or 256 levels
    binary = bool(model.config.binarize)
    grid = "0 or 1 (binarized)" if binary else "k / 255, k = 0 .. 255"
    images = GraphInput("images", data.image_shape, torch.float32, f"images on the model's grid: {grid}")
    return Exportable(
        PixelLogits(network),
        [images, *_labels_input(model)],
        {
            "name": "logits",
            "shape": ["batch", data.channels, levels, data.height, data.width],
            "meaning": "per pixel and colour, the logits of its level given the pixels before it in raster order "
            "(rows, then columns, then colours R before G before B)",
            "pixels": {
                "kind": "logits",
                "levels": levels,
                "to_pixels": "sigmoid(logit) is P(pixel = 1)"
                if binary
                else "softmax over the 256 levels; pixel = k / 255",
            },
        },
        {
            "noise": {"input": None, "distribution": "uniform", "shape": list(data.image_shape)},
            "draw": "start from zeros; for each row i, column j, colour c: run the graph on the images so far and "
            "set pixel (c, i, j) to the level whose CDF first reaches a uniform draw u"
            + (" (level 1 when u < sigmoid(logit))" if binary else " (k / 255)"),
            "binarize": binary,
        },
    )


# Each family's generation network, by family name.
EXPORTERS: Mapping[str, Callable[[Any], Exportable]] = MappingProxyType(
    {
        "vae": _vae,
        "gan": _gan,
        "dcgan": _gan,
        "wgan-gp": _gan,
        "realnvp": _realnvp,
        "ddpm": _ddpm,
        "pixelcnn": _pixelcnn,
    }
)


# ---------------------------------------------------------------- the export


def require_export_extra() -> None:
    """Raise GenlabError (one line: how to install) unless onnx, onnxscript and onnxruntime import."""
    missing = []
    for name in EXPORT_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise GenlabError(f"ONNX export needs {', '.join(missing)}: install them with {INSTALL_HINT}")


def export_onnx(run_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Export the run at `run_path` to the folder `out_dir`: model.onnx (its generation network, dynamic batch
    axis) and genlab_export.json (what to feed it and what its output means). Returns the folder.

    The folder appears whole or not at all (written beside it, checked with onnxruntime against
    torch, then renamed into place). `overwrite` replaces a previous export there, never anything else.
    """
    require_export_extra()
    out = check_export_out(out_dir, run_path, overwrite, EXPORT_ENTRIES)  # before loading anything
    run = Run.load(run_path)
    model = run.model.eval()
    if model.family not in EXPORTERS:
        raise GenlabError(f"the {model.family} family has no ONNX export yet; it exports {', '.join(EXPORTERS)}")
    exportable = EXPORTERS[model.family](model)
    exportable.network.eval()
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
        staging.mkdir()
        try:
            _write_graph(exportable, staging / ONNX_FILE)
            _verify(exportable, staging / ONNX_FILE)
            description = _description(run, exportable)
            (staging / EXPORT_FILE).write_text(json.dumps(description, indent=2) + "\n")
            for name in EXPORT_ENTRIES:
                fsync(staging / name)
            move_into_place(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return out


def _write_graph(exportable: Exportable, path: Path) -> None:
    """torch.export in strict mode (Dynamo reads the Python, so `len(x)` stays the symbolic batch size, where
    the non-strict tracer would fix it to the example's), then torch.onnx's dynamo exporter (onnxscript)."""
    example = _examples(exportable, batch=2, seed=0)  # 2, not 1: torch.export fixes a size-1 axis
    batch = torch.export.Dim("batch", min=1)
    dynamic = {spec.name: {0: batch} for spec in exportable.inputs}
    with _quiet_exporter(), torch.no_grad():
        program = torch.export.export(exportable.network, tuple(example.values()), dynamic_shapes=dynamic, strict=True)
        onnx_program = torch.onnx.export(
            program,
            (),
            input_names=list(example),
            output_names=[exportable.output["name"]],
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        assert onnx_program is not None  # the dynamo exporter returns the program when given no file
        first_shape = onnx_program.model.graph.inputs[0].shape
        assert first_shape is not None
        onnx_program.rename_axes({str(first_shape[0]): "batch"})  # torch's symbol ("s6") -> "batch"
        onnx_program.save(str(path), external_data=False)


def _examples(exportable: Exportable, batch: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {spec.name: spec.example(batch, generator) for spec in exportable.inputs}


def _verify(exportable: Exportable, path: Path) -> None:
    """Run the graph with onnxruntime at other batch sizes than the traced one and compare with torch."""
    onnxruntime = importlib.import_module("onnxruntime")  # untyped: imported by name, as Any

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in VERIFY_BATCHES:
        inputs = _examples(exportable, batch, seed=batch)
        with torch.no_grad():
            expected = exportable.network(*inputs.values()).numpy()
        (got,) = session.run(None, {name: value.numpy() for name, value in inputs.items()})
        difference = float(abs(got - expected).max())
        if got.shape != expected.shape or not difference <= VERIFY_TOLERANCE:
            raise RuntimeError(
                f"the exported graph disagrees with torch at batch {batch}: shape {got.shape} vs "
                f"{expected.shape}, max difference {difference:.2e}"
            )


def _description(run: Run, exportable: Exportable) -> dict[str, Any]:
    """genlab_export.json: the format, the source run, the graph's inputs and output, and how to sample."""
    import onnx

    model, data = run.model, run.model.data

    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "genlab_version": genlab.__version__,
        "family": model.family,
        "source": {
            "run": str(run.path.resolve()),
            "epochs_completed": run.info.get("epochs_completed"),
            "model_config": run.info["model"]["config"],
        },
        "onnx": {
            "file": ONNX_FILE,
            "opset": OPSET,
            "exporter": "torch.export.export(strict=True), then torch.onnx.export(dynamo=True)",
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "batch_axis": "dynamic (axis 0 of every input and the output)",
        },
        "image_shape": list(data.image_shape),
        "conditional": model.conditional,
        "num_classes": data.num_classes if model.conditional else 0,
        "class_names": list(data.class_names) if model.conditional else [],
        "default_labels": "classes in turn: image i gets i % num_classes" if model.conditional else None,
        "inputs": [spec.describe() for spec in exportable.inputs],
        "output": exportable.output,
        "sampling": exportable.sampling,
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and its warnings about optional packages (torchvision)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
