"""What every model family shares: the data spec it is built for and the family contract."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from genlab.data.transforms import to_unit
from genlab.errors import GenlabError


def bits_per_dim(nats, dims: int):
    """Nats per image -> bits per dimension, nats / (dims ln 2), for a float or a tensor."""
    return nats / (dims * math.log(2))


@dataclass(frozen=True)
class DataSpec:
    """The shape of the data a model is built for; saved in run.json to rebuild it."""

    channels: int
    height: int
    width: int
    num_classes: int = 0
    class_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def num_pixels(self) -> int:
        """Number of dimensions of one image (C*H*W): the denominator of bits/dim."""
        return self.channels * self.height * self.width

    @classmethod
    def from_dataset(cls, dataset) -> "DataSpec":
        c, h, w = dataset.image_shape
        return cls(c, h, w, dataset.num_classes, tuple(dataset.class_names))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values (for run.json)."""
        return {**dataclasses.asdict(self), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataSpec":
        """The spec back from `to_dict`'s values."""
        return cls(
            int(values["channels"]),
            int(values["height"]),
            int(values["width"]),
            int(values.get("num_classes", 0)),
            tuple(values.get("class_names", ())),
        )


Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # (images in [0, 1] (B, C, H, W), labels (B,) or None)


# ---------------------------------------------------------------- explaining a family (`genlab explain`)


def format_number(value: float | torch.Tensor) -> str:
    """A measured number for a reader: 543.2, 12.35, -1.20, 0.588, 0.0346 (3 significant digits below 1)."""
    value = float(value)
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def format_values(values: torch.Tensor) -> str:
    """A few measured values as "[-0.41, 1.2, 0.03]"."""
    return "[" + ", ".join(format_number(v) for v in values.detach().flatten().tolist()) + "]"


def format_pixel(images: torch.Tensor, pixel: tuple[int, ...]) -> str:
    """A generated pixel in [0, 1] and the 8-bit level it stands for: "pixel (0, 0, 14, 15) = 0.322 (level 82)"."""
    value = float(images[pixel])
    return f"pixel {pixel} = {format_number(value)} (level {round(value * 255)} of 255)"


def example_pixel(images: torch.Tensor) -> tuple[int, int, int, int]:
    """The pixel (0, c, h, w) of the first image that the stages quote: its mid-grey pixel (intensity between
    1/4 and 3/4 of the range, where scalings show best) nearest the centre, else its brightest."""
    first = images[0].float().cpu()  # (C, H, W), uint8 levels or floats in [0, 1]
    top = 255.0 if images.dtype == torch.uint8 else 1.0
    c, h, w = first.shape
    rows, columns = torch.arange(h).reshape(-1, 1), torch.arange(w).reshape(1, -1)
    distance = ((rows - (h - 1) / 2) ** 2 + (columns - (w - 1) / 2) ** 2).expand(c, h, w)  # to the centre
    grey = (first >= 0.25 * top) & (first <= 0.75 * top)
    score = torch.where(grey, distance, torch.inf) if grey.any() else -first  # lowest wins; ties: raster order
    index = torch.unravel_index(score.flatten().argmin(), first.shape)
    return (0, *(int(i) for i in index))


@dataclass(frozen=True)
class Stage:
    """One step of a family's data flow, measured on a real batch.

    `input_shape` is None where the stage starts from nothing of the stage before (fresh noise);
    `example` quotes real values of its tensors; `path` is "training" or "generation".
    """

    name: str
    what: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...]
    example: str
    path: str = "training"

    @classmethod
    def measured(cls, name: str, what: str, inputs: torch.Tensor | None, outputs: torch.Tensor, example: str,
                 path: str = "training") -> "Stage":
        """A stage whose shapes are read from the tensors it really took and gave."""
        return cls(name, what, None if inputs is None else tuple(inputs.shape), tuple(outputs.shape), example, path)


@dataclass(frozen=True)
class PredictionPass:
    """One call of a family's network, from its input to its output, for the prediction trace.

    `run` calls the network once on `inputs` (forward hooks on `network` see every layer) and
    returns the output; `note` says which call it is (e.g. one UNet call at one timestep).
    """

    network_name: str
    network: nn.Module
    input_name: str
    inputs: torch.Tensor
    run: Callable[[], torch.Tensor]
    output_name: str
    note: str


def input_stages(dataset_size: int, indices: torch.Tensor, images: torch.Tensor,
                 labels: torch.Tensor | None) -> tuple[list[Stage], torch.Tensor]:
    """The stages every family shares, load and scale to [0, 1], and the batch (B, C, H, W) in [0, 1].

    `images` (B, C, H, W) uint8 are the dataset's images at `indices`.
    """
    pixel = example_pixel(images)
    value = int(images[pixel])
    shown = ", ".join(str(int(i)) for i in indices[:4]) + (", ..." if len(indices) > 4 else "")
    label_text = "" if labels is None else f" (label {int(labels[0])})"
    load = Stage(
        "load", f"take {len(images)} of the {dataset_size:,} images in a seeded random order, as uint8 levels 0..255",
        (dataset_size, *images.shape[1:]), tuple(images.shape),
        f"images {shown}; image {int(indices[0])}{label_text} has pixel {pixel} = {value}",
    )
    x = to_unit(images)  # (B, C, H, W) in [0, 1]
    scale = Stage.measured(
        "preprocess", "divide by 255: floats in [0, 1], the range every family takes", images, x,
        f"pixel {pixel} value {value} becomes {format_number(x[pixel])}",
    )
    return [load, scale], x


class GenerativeModel(nn.Module):
    """The family contract the trainer, sampler and evaluator rely on.

    A family subclasses this with its own config dataclass (``config_class``) and
    implements ``configure_optimizers``, ``training_step`` (which does its own
    backward and optimizer steps, so GANs and EMA fit the same loop),
    ``validation_step`` and ``sample``. Images going in and out are floats in [0, 1].
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_batch_size: ClassVar[int] = 128
    # (history key, column title) shown in the training trace, after Epoch.
    trace_columns: ClassVar[tuple[tuple[str, str], ...]] = (("loss", "Loss"),)
    # The history key whose trend the observations follow (lower is better).
    monitor: ClassVar[str] = "loss"
    # Which rules comment on the training trace (genlab.explain.observations): "loss" follows
    # `monitor`; "contest" judges a GAN's discriminator/generator balance.
    observer: ClassVar[str] = "loss"
    # The family's idea in two sentences (`genlab explain`).
    idea: ClassVar[str] = ""

    def __init__(self, config, data: DataSpec):
        super().__init__()
        self.config = config
        self.data = data

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.config, "conditional", False))

    @property
    def sample_batch_size(self) -> int:
        """Images `Run.sample` draws per call of `sample` by default (a family whose activations are large says less)."""
        return 1000

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def randn(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise on the model's device, drawn on the generator's device.

        Drawing on the generator's own device keeps a CPU generator usable (and its draws
        identical) whichever device the model is on.
        """
        return self._draw(torch.randn, shape, generator)

    def rand(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform noise in [0, 1) on the model's device, drawn on the generator's device (as `randn`)."""
        return self._draw(torch.rand, shape, generator)

    def _draw(self, draw, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else self.device
        return draw(shape, generator=generator, device=device).to(self.device)

    def adam(self, parameters, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
        """Adam, fused into one kernel per parameter where this torch and device allow it.

        On the CPU the default per-tensor Adam took about a quarter of a VAE step; the fused
        one is about 5% faster overall, with the same update up to float rounding.
        """
        parameters = list(parameters)
        # torch checks `fused` only at the first step, so decide here: CUDA has the kernel
        # since 2.0, the CPU since 2.4; elsewhere (MPS, older torch) use the plain Adam.
        cpu_ok = torch.torch_version.TorchVersion(torch.__version__) >= "2.4"
        fused = all(p.device.type == "cuda" or (p.device.type == "cpu" and cpu_ok) for p in parameters)
        return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=fused or None)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The family's optimizers by name (saved and restored by name in state.safetensors)."""
        raise NotImplementedError

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        """One step on `batch` (images in [0, 1], labels): compute losses, backward, step the optimizers.

        Returns the step's numbers as floats (their per-image means go into history.jsonl).
        Randomness comes from torch's global generators, which checkpoints save.
        """
        raise NotImplementedError

    def validation_step(self, batch: Batch) -> dict[str, float]:
        """Numbers on a held-out batch (no gradient), e.g. {"test_loss": ...}; none by default."""
        return {}

    def compile_targets(self) -> list[nn.Module]:
        """The networks `compile=True` (--compile) hands to torch.compile, each in place.

        By default every child module with parameters (called by the training or validation step,
        as a DDPM's EMA copy is). A family whose step calls a network through a
        method other than `forward`, or differentiates twice (compiled graphs have no double
        backward), names the modules its step does call.
        """
        return [module for module in self.children() if next(module.parameters(), None) is not None]

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def check_labels(self, n: int, labels: torch.Tensor | int | list[int] | None) -> torch.Tensor | None:
        """Validate sampling labels and return them as a (n,) long tensor on the model's device.

        A conditional model given no labels cycles through the classes (0, 1, ..., K-1, 0, ...).
        """
        if labels is None:
            if not self.conditional:
                return None
            return torch.arange(n, device=self.device) % self.data.num_classes
        if not self.conditional:
            raise GenlabError(f"this {self.family} model is unconditional: it cannot draw given labels; train with --conditional")
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise GenlabError(f"got {labels.numel()} labels for {n} samples; give one label or one per sample")
        bad = labels[(labels < 0) | (labels >= self.data.num_classes)]
        if bad.numel():
            raise GenlabError(
                f"label {int(bad[0])} is outside the model's classes 0..{self.data.num_classes - 1}"
            )
        return labels.to(self.device)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the prior over the latent space, for families that have one."""
        raise GenlabError(f"the {self.family} family has no latent space to interpolate in")

    @torch.no_grad()
    def interpolate(
        self, steps: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode `steps` latents on the straight line between two prior draws: (steps, C, H, W).

        Families whose latent is not Gaussian-like, or who prefer spherical paths, override this.
        """
        z0, z1 = self.sample_latent(2, generator)
        weights = torch.linspace(0.0, 1.0, steps, device=z0.device).reshape(-1, *([1] * z0.dim()))
        z = (1 - weights) * z0 + weights * z1  # (steps, *latent_shape)
        return self.decode(z, self.check_labels(steps, labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] from latents z, for families that have a decoder."""
        raise GenlabError(f"the {self.family} family has no decoder")

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> list[Stage]:
        """The family's data flow on a real batch x (B, C, H, W) in [0, 1], after the shared `input_stages`:
        its training path to the loss, then its generation path to an image, each stage measured."""
        raise GenlabError(f"the {self.family} family cannot explain its pipeline yet")

    def prediction_pass(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> PredictionPass:
        """The network call the prediction trace hooks, for a batch of len(x) (x: a real batch in [0, 1])."""
        raise GenlabError(f"the {self.family} family cannot trace its prediction yet")
