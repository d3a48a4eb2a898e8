"""What every model family shares: the data spec it is built for and the family contract."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

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

    def __init__(self, config, data: DataSpec):
        super().__init__()
        self.config = config
        self.data = data

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.config, "conditional", False))

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
