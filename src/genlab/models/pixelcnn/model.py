"""The Gated PixelCNN family: exact log p(x) as the training loss, sampling and completion pixel by pixel."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genlab.data.transforms import binarize
from genlab.errors import GenlabError
from genlab.models.base import (
    Batch,
    CanComplete,
    DataSpec,
    GenerativeModel,
    HasLikelihood,
    HasSamplerOptions,
    SamplerOption,
    bits_per_dim,
)
from genlab.models.common import drop_labels
from genlab.models.pixelcnn import explain
from genlab.models.pixelcnn.config import PixelCNNConfig
from genlab.models.pixelcnn.networks import LEVELS, GatedPixelCNN
from genlab.models.pixelcnn.sampling import fill


class PixelCNN(GenerativeModel, HasLikelihood, CanComplete, HasSamplerOptions):
    """Gated PixelCNN with Bernoulli or 256-way pixels, optionally class-conditional; exact log p(x)."""

    family = "pixelcnn"
    config_class = PixelCNNConfig
    default_batch_size = 32
    # 7 epochs of mnist-5k. The network of 64 channels (the default until 2026-12-06) took 1.25 s a step of 32 on 2
    # CPU cores, so its 20 epochs before budgets took ~50 minutes and its budget was 400 steps. The 32-channel one
    # trained 8 epochs in 594 s on 2 quiet cores (FID 176.7), past 10 minutes with the Quality section; 7 gave 176.0.
    default_steps = 875
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"), ("test_bits_per_dim", "Test bits/dim"))
    monitor = "test_loss"
    likelihood_kind = "exact"  # log p(x) is the sum of the per-pixel conditionals, no bound
    # Runs written before guidance (no null class) and before class maps
    absent_in_older_runs = {"label_dropout": 0.0, "guidance": 1.0, "class_maps": 0}
    sampler_options = (
        SamplerOption(
            "guidance",
            float,
            "conditional PixelCNN: classifier-free guidance scale (0 unconditional, 1 conditional, above 1 the label "
            "shows more)",
            config_field="guidance",
            minimum=0.0,
        ),
    )
    explanation = explain  # what `genlab explain` measures: explain.py
    idea = (
        "The probability of an image is a product of one distribution per pixel given the pixels before it in raster "
        "order, computed for all pixels in one pass by masked convolutions that cannot see ahead, so log p(x) is "
        "exact. Generating draws the pixels one at a time, each from its distribution given those already drawn."
    )
    config: PixelCNNConfig

    def __init__(self, config: PixelCNNConfig, data: DataSpec):
        super().__init__(config, data)
        if data.channels > 1 and min(config.channels, config.head_channels) < data.channels:
            raise GenlabError(
                f"PixelCNN settings channels and head_channels must be at least the {data.channels} colour channels "
                "(each colour gets its own group of feature maps)"
            )
        self.network = GatedPixelCNN(data, config)

    @property
    def binary_pixels(self) -> bool:
        return self.config.binarize

    @property
    def likelihood_data_model(self) -> str:
        return "binarized" if self.config.binarize else "256-way discrete (8-bit pixels)"

    def discretize(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] on the model's grid: 0/1 (x rounded) for a binarizing model, else k/255."""
        x = x.to(self.device).clamp(0, 1)
        return x.round() if self.config.binarize else (x * (LEVELS - 1)).round() / (LEVELS - 1)

    def nll(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x) in nats per image, (B,), of x (B, C, H, W) already on the model's grid."""
        logits = self.network(x, self.condition(labels))  # (B, C, K, H, W)
        if self.config.binarize:
            return F.binary_cross_entropy_with_logits(logits[:, :, 0], x, reduction="none").flatten(1).sum(1)
        levels = (x * (LEVELS - 1)).round().long()  # (B, C, H, W) in 0..255
        log_probs = logits.log_softmax(dim=2).gather(2, levels[:, :, None]).squeeze(2)
        return -log_probs.flatten(1).sum(1)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        x, labels = batch
        x = binarize(x) if self.config.binarize else self.discretize(x)
        labels = self.condition(labels)
        if labels is not None and self.network.null_class is not None:  # p(x) too, under the null label
            labels = drop_labels(labels, self.config.label_dropout, self.network.null_class)
        loss = self.nll(x, labels).mean()
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        return {"loss": value, "bits_per_dim": bits_per_dim(value, self.data.num_pixels)}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        x, labels = batch
        x = binarize(x) if self.config.binarize else self.discretize(x)
        loss = self.nll(x, labels).mean().item()
        return {"test_loss": loss, "test_bits_per_dim": bits_per_dim(loss, self.data.num_pixels)}

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) in nats per image, (B,), of x (B, C, H, W) in [0, 1].

        x is taken as given and only put on the model's grid (k/255, or 0/1 for a binarizing
        model): binarize the images first for the binarized-MNIST protocol, as `genlab eval` does.
        """
        return -self.nll(self.discretize(x), labels)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1], drawn pixel by pixel in raster order (0/1 when binarizing); a conditional
        model's pixels under classifier-free `guidance` (default the run's)."""
        drawn_labels = self.check_labels(n, labels)
        uniform = self.rand(n, *self.data.image_shape, generator=generator)
        x = torch.zeros(n, *self.data.image_shape, device=self.device)
        return fill(self.network, x, 0, uniform, drawn_labels, guidance=self.checked_guidance(guidance))

    def checked_guidance(self, guidance: float | None) -> float:
        """The guidance a draw uses: the run's when None; other than 1 only for a model trained with a null class."""
        guidance = self.config.sampling_guidance if guidance is None else float(guidance)
        if guidance != 1.0 and not self.conditional:
            raise GenlabError("--guidance needs a conditional model (train with --conditional)")
        if guidance != 1.0 and self.network.null_class is None:
            raise GenlabError(
                "--guidance needs a model trained with label dropout (a null class); this run has none: "
                "sample with --guidance 1, or train a new run"
            )
        return guidance

    @torch.no_grad()
    def complete(
        self,
        images: torch.Tensor,
        rows: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        on_row: Callable[[int, torch.Tensor], None] | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Keep the top `rows` rows of images (B, C, H, W) in [0, 1] (put on the model's grid) and draw the rest;
        `on_row` hears each drawn row (its index, the images so far); a conditional model draws under `guidance`
        (default the run's), as `sample` does."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.data.image_shape or not images.is_floating_point():
            raise GenlabError(
                f"complete needs float images in [0, 1] of shape (B, {', '.join(map(str, self.data.image_shape))}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        height = self.data.height
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows < height:
            raise GenlabError(f"rows to keep must be an integer from 0 to {height - 1}, got {rows!r}")
        drawn_labels = self.check_labels(len(images), labels)
        uniform = self.rand(*images.shape, generator=generator)
        guidance = self.checked_guidance(guidance)
        return fill(self.network, self.discretize(images), rows, uniform, drawn_labels, on_row, guidance)
