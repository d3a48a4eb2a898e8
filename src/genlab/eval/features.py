"""Feature extractors for `genlab eval`: small CNN classifiers shipped with the package.

Inception-v3 weights cannot be downloaded here, so each 28x28 grayscale domain gets its own
classifier, trained by `scripts/train_extractors.py` (seeded, reproducible) and shipped as a
safetensors file whose sha256 is recorded below and checked on every load (DESIGN.md,
"Metric definitions"; docs/extractors.md has the accuracies and the numbers).

    extractor = extractor_for("fashion-mnist", (1, 28, 28))   # by dataset name, shape checked
    features = extractor.features(images)                       # float32 (N, 256), images in [0, 1]
    probs = extractor.probabilities(images)                     # float32 (N, 10)
    extractor.name, extractor.sha256                            # what metrics.json records

The feature is the penultimate layer: the 256 units before the classifier's last ReLU
(the hidden linear layer after its BatchNorm). Taken before the ReLU, the features are
dense and roughly Gaussian, which is what FID's Gaussian fit (Heusel et al. 2017) assumes,
and no unit is constant zero, so the covariance keeps full rank.

`train_classifier` is the one training loop, used by the script and open to any caller
that needs a classifier of the same shape (e.g. CAS, Ravuri & Vinyals 2019).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.io import parse_tensors
from genlab.models.common import eval_mode

IMAGE_SHAPE = (1, 28, 28)  # (C, H, W): the only input the shipped extractors take
WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class ClassifierConfig:
    """The shape of a DomainClassifier; saved in its weight file to rebuild it."""

    channels: tuple[int, ...] = (32, 64)  # the two conv blocks' widths (checked: two of them)
    hidden: int = 256  # the penultimate layer: the feature dimension
    num_classes: int = 10
    dropout: float = 0.3  # before the last layer, training only

    def __post_init__(self) -> None:
        if len(self.channels) != 2 or min(self.channels) <= 0 or self.hidden <= 0 or self.num_classes < 2:
            raise GenlabError(f"invalid classifier config {self}: widths must be positive, num_classes >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise GenlabError(f"classifier dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClassifierConfig:
        return cls(
            channels=tuple(int(c) for c in values["channels"]),
            hidden=int(values["hidden"]),
            num_classes=int(values["num_classes"]),
            dropout=float(values["dropout"]),
        )


class FeatureNetwork(nn.Module):
    """A classifier whose penultimate layer gives the features: what an `Extractor` runs.

    `features(x)` maps images to (B, feature_dim); calling the network gives logits (B, num_classes).
    """

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DomainClassifier(FeatureNetwork):
    """A small CNN for grayscale 1x28x28 images in [0, 1].

    conv3x3 c1 -> BN -> ReLU -> maxpool   (B, c1, 14, 14)
    conv3x3 c2 -> BN -> ReLU -> maxpool   (B, c2, 7, 7)
    linear hidden -> BN                   (B, hidden)      = features(x)
    ReLU -> dropout -> linear K           (B, K)           = forward(x), the logits

    Two conv blocks keep it fast on a CPU (about 4.7M multiply-adds per image).
    """

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        c1, c2 = self.config.channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),  # BN's shift replaces the bias
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.hidden = nn.Linear(c2 * 7 * 7, self.config.hidden, bias=False)
        self.hidden_norm = nn.BatchNorm1d(self.config.hidden)
        self.dropout = nn.Dropout(self.config.dropout)
        self.head = nn.Linear(self.config.hidden, self.config.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.config.hidden

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> (B, hidden): the penultimate layer, before its ReLU."""
        return self.hidden_norm(self.hidden(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> logits (B, K)."""
        return self.head(self.dropout(F.relu(self.features(x))))


# ---------------------------------------------------------------------------------------------
# Shipped extractors


@dataclass(frozen=True)
class ExtractorSpec:
    """One shipped extractor: its weight file, the file's sha256, and the datasets it serves."""

    name: str
    filename: str
    sha256: str
    datasets: tuple[str, ...]
    description: str


EXTRACTORS = MappingProxyType({
    "digits": ExtractorSpec(
        name="digits",
        filename="digits.safetensors",
        sha256="ac6f53cd9bae2d77a834fb7d1afebe86b2db8688e33b3c259500fe800fbfe1db",
        datasets=("mnist-5k", "mnist"),
        description="handwritten digits 0-9, trained on mnist-5k's 4,000 training images",
    ),
    "fashion": ExtractorSpec(
        name="fashion",
        filename="fashion.safetensors",
        sha256="e31b27925314e4f1e422deeeebcc66373d409fc65af6e341bcf43dfb929c0870",
        datasets=("fashion-mnist",),
        description="Zalando's 10 clothing classes, trained on Fashion-MNIST's 60,000 training images",
    ),
})  # fmt: skip


class Extractor:
    """A loaded, verified classifier that turns images into features and class probabilities.

    Every call runs in eval mode without autograd, in batches of `batch_size` (None: the
    extractor's `default_batch_size`); a batch's results do not depend on the other images
    in it (BatchNorm uses its stored statistics). Images are float (N, 1, 28, 28) in [0, 1]
    (uint8 0..255 is accepted too); results are float32 on the CPU. Subclasses (Inception-v3)
    change the accepted shapes (`check`), the sizes and the memory layout.
    """

    default_batch_size = DEFAULT_BATCH_SIZE
    # The most images one network call sees, whatever batch_size asks: at 500 images the
    # activations (50 MB a layer) exceed glibc's mmap threshold, and fresh pages for every call
    # cost more page faults than the convolutions themselves (benchmarks/fid_speed.md).
    network_batch = 64
    # NHWC lets oneDNN run these small convolutions faster on a CPU, with the same features up to float
    # rounding (docs/extractors.md has the figures).
    memory_format = torch.channels_last

    def __init__(self, name: str, sha256: str, model: FeatureNetwork, info: dict[str, Any] | None = None):
        self.name = name
        self.sha256 = sha256
        self.model = model  # each call runs it in eval mode and restores its mode after
        self.info = dict(info or {})  # the weight file's metadata: training recipe, test accuracy

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("class_names", []))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Extractor:
        """Run the network on `device` (results still come back on the CPU)."""
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, sha256={self.sha256[:12]}..., "
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes})"
        )

    def check(self, images: Any) -> torch.Tensor:
        """`images` as a tensor this extractor takes, or a GenlabError saying why not."""
        return check_images(images)

    def features(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """float32 (N, feature_dim): the penultimate layer for each image."""
        return self._map(self.model.features, images, batch_size, self.feature_dim)

    def logits(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """float32 (N, num_classes): the classifier's logits."""
        return self._map(self.model, images, batch_size, self.num_classes)

    def probabilities(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """float32 (N, num_classes): softmax of the logits; each row sums to 1."""
        return torch.softmax(self.logits(images, batch_size), dim=1)

    def predict(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """int64 (N,): the most probable class of each image."""
        return self.logits(images, batch_size).argmax(dim=1)

    def _map(
        self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int | None, width: int
    ) -> torch.Tensor:
        images = self.check(images)
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise GenlabError(f"batch_size must be a positive int, got {batch_size!r}")
        batch_size = min(batch_size, self.network_batch)  # results do not depend on it; speed does
        out = torch.empty((len(images), width), dtype=torch.float32)
        device = self.device
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = to_unit_float(images[start : start + batch_size]).to(device)  # (B, C, H, W)
                out[start : start + len(x)] = fn(x.contiguous(memory_format=self.memory_format)).float().cpu()
        return out


def as_image_tensor(images: Any) -> torch.Tensor:
    """`images` (a tensor or array) as a tensor, or a GenlabError naming what it was."""
    if isinstance(images, torch.Tensor):
        return images
    try:
        return torch.as_tensor(images)
    except (TypeError, ValueError, RuntimeError):
        raise GenlabError(f"images must be a tensor or array (N, C, H, W), got {type(images).__name__}") from None


def check_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """`images` unchanged when uint8, or float with every value in [0, 1]; else a GenlabError."""
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise GenlabError(f"images must be float in [0, 1] or uint8, got {images.dtype}")
    if images.numel():
        low, high = images.min().item(), images.max().item()
        if not (0.0 <= low and high <= 1.0):  # also false for NaN
            raise GenlabError(f"images must be in [0, 1], got values from {low:.4g} to {high:.4g}")
    return images


def check_images(images: Any) -> torch.Tensor:
    """`images` as a tensor, after checking it is (N, 1, 28, 28), uint8 or float in [0, 1]."""
    images = as_image_tensor(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise GenlabError(f"the shipped extractors take images of shape (N, 1, 28, 28), got {tuple(images.shape)}")
    return check_pixel_values(images)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images.to(torch.float32)


def sha256_of(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_extractor(name: str, path: str | Path | None = None) -> Extractor:
    """The shipped extractor `name` ("digits" or "fashion"), its file's sha256 verified.

    `path` replaces the packaged file (the same checksum is still required): a file that
    does not match raises GenlabError, so no metric is ever computed with unknown weights.
    """
    spec = EXTRACTORS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise GenlabError(f"unknown extractor {name!r}; shipped extractors: {', '.join(EXTRACTORS)}")
    path = Path(path) if path is not None else WEIGHTS_DIR / spec.filename
    if not path.is_file():
        raise GenlabError(
            f"the weights of the {name!r} extractor are missing ({path}); reinstall genlab, "
            "or run scripts/train_extractors.py from the repository"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise GenlabError(
            f"{path} has sha256 {digest}, but the {name!r} extractor must have {spec.sha256}: "
            "the file is corrupt or was replaced; reinstall genlab"
        )
    tensors, metadata = parse_tensors(data, path, "extractor weights file")
    try:
        model = DomainClassifier(ClassifierConfig.from_dict(metadata["config"]))
        model.load_state_dict(tensors, strict=True)
        model.to(memory_format=Extractor.memory_format)  # type: ignore[call-overload]  # torch's stubs omit it
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise GenlabError(f"{path} does not hold a {name!r} extractor ({error})") from None
    return Extractor(name, digest, model.eval(), metadata)


def extractor_for(data_spec_name: str, image_shape: Sequence[int]) -> Extractor:
    """The shipped extractor for the dataset `data_spec_name` with images of `image_shape` (C, H, W).

    mnist-5k and mnist get "digits", fashion-mnist gets "fashion". Any other dataset, or any
    shape but 1x28x28 (RGB, resized, 8x8 digits ...), raises GenlabError pointing at
    `--inception PATH`.
    """
    shape = tuple(int(s) for s in image_shape)
    if shape != IMAGE_SHAPE:
        shown = "x".join(str(s) for s in shape) if len(shape) == 3 else str(shape)
        raise GenlabError(
            f"no shipped extractor fits images of shape {shown} (C x H x W): genlab's own extractors "
            "take 1x28x28 grayscale images only; pass --inception PATH with pytorch-fid's Inception "
            "weight file to evaluate these images"
        )
    for spec in EXTRACTORS.values():
        if data_spec_name in spec.datasets:
            return load_extractor(spec.name)
    served = "; ".join(f"{spec.name}: {', '.join(spec.datasets)}" for spec in EXTRACTORS.values())
    raise GenlabError(
        f"no shipped extractor was trained on {data_spec_name!r} images ({served}); "
        "pass --inception PATH with pytorch-fid's Inception weight file to evaluate them"
    )


# ---------------------------------------------------------------------------------------------
# Training (scripts/train_extractors.py; CAS)


@dataclass(frozen=True)
class Augment:
    """Random affine jitter for training: each image gets its own rotation, scale, shift, flip."""

    degrees: float = 0.0  # rotation in [-degrees, degrees]
    scale: float = 0.0  # zoom factor in [1 - scale, 1 + scale]
    shift: float = 0.0  # translation in [-shift, shift] pixels, each axis
    hflip: bool = False  # mirror half of the images left-right


def augment(images: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """float (B, C, H, W) -> (B, C, H, W), resampled bilinearly; outside pixels are 0 (background)."""
    b, _, h, w = images.shape
    u = torch.rand(b, 5, generator=generator).mul_(2).sub_(1)  # (B, 5) uniform in [-1, 1], on the CPU
    angle = u[:, 0] * math.radians(aug.degrees)
    zoom = 1.0 + u[:, 1] * aug.scale
    flip = torch.where(u[:, 4] < 0, -1.0, 1.0) if aug.hflip else torch.ones(b)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output to input coordinates in [-1, 1]: 2/W per pixel (align_corners=False).
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, u[:, 2] * aug.shift * 2 / w], dim=1),
            torch.stack([sin * flip, cos, u[:, 3] * aug.shift * 2 / h], dim=1),
        ],
        dim=1,
    ).to(images)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def accuracy(model: DomainClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of `images` (uint8 or [0, 1] float (N, 1, 28, 28)) that `model` classifies as `labels`."""
    return float((Extractor("", "", model).predict(images, batch_size) == labels.cpu()).float().mean())


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ClassifierConfig | None = None,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    aug: Augment | None = None,
    on_epoch: Callable[[int, DomainClassifier, dict[str, float]], None] | None = None,
) -> DomainClassifier:
    """A DomainClassifier trained on `images` (uint8 or [0, 1] float (N, 1, 28, 28)) and int `labels` (N,).

    AdamW under a one-cycle learning rate (peak `lr`), cross-entropy, optional `aug` jitter.
    Deterministic for a given seed on one machine and thread count: initialisation and dropout
    come from `seed` inside a forked RNG (the caller's global generator is left as it was),
    batch order and jitter from a generator seeded with `seed`. `on_epoch(epoch, model, stats)`
    runs after each epoch (the model in eval mode; it is put back in training mode after).
    """
    images = check_images(images)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (len(images),):
        raise GenlabError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    config = config or ClassifierConfig(num_classes=int(labels.max()) + 1)
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise GenlabError(f"labels must be in 0..{config.num_classes - 1}")
    if epochs <= 0 or batch_size <= 0:
        raise GenlabError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    n = len(images)
    steps_per_epoch = math.ceil(n / batch_size)
    generator = torch.Generator().manual_seed(seed)  # batch order and jitter
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # initialisation and dropout
        model = DomainClassifier(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
        )
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n, generator=generator)
            total_loss, correct = 0.0, 0
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                x, y = to_unit_float(images[index]), labels[index]  # (B, 1, 28, 28), (B,)
                if aug is not None:
                    x = augment(x, aug, generator)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
            if on_epoch is not None:
                model.eval()
                on_epoch(epoch, model, {"loss": total_loss / n, "train_accuracy": correct / n})
    return model.eval()


@dataclass(frozen=True)
class ClassifierRecipe:
    """A classifier trained from scratch the same way wherever genlab compares training sets (CAS, augmentation):
    `steps` AdamW updates of `batch_size` images under `train_classifier`'s one-cycle schedule, whatever the
    set's size (a small set is seen for more epochs)."""

    config: ClassifierConfig
    steps: int
    batch_size: int

    def with_steps(self, steps: int) -> ClassifierRecipe:
        return dataclasses.replace(self, steps=steps)

    def train(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, seed: int) -> DomainClassifier:
        """The recipe's classifier of `num_classes` trained on `images` (N, 1, 28, 28) and `labels` (N,)."""
        steps_per_epoch = math.ceil(len(images) / self.batch_size)
        config = dataclasses.replace(self.config, num_classes=num_classes)
        return train_classifier(images, labels, config, epochs=math.ceil(self.steps / steps_per_epoch), seed=seed,
                                batch_size=self.batch_size)  # fmt: skip

    def describe(self) -> str:
        widths = "/".join(map(str, self.config.channels))
        return (
            f"a CNN ({widths} channels, {self.config.hidden} features) trained for {self.steps} steps of "
            f"{self.batch_size}"
        )

    def key(self) -> list[Any]:
        """What a cached number made with this recipe depends on."""
        return [self.config.to_dict(), self.steps, self.batch_size]


# CAS's and the augmentation measure's classifier: a quarter of the shipped extractors' convolution work, so that
# the augmentation grid's 57 trainings take minutes on a CPU (about 98% on mnist-5k's 4,000 training images).
SMALL_CLASSIFIER = ClassifierRecipe(ClassifierConfig(channels=(16, 32), hidden=128), steps=200, batch_size=64)


def save_extractor(path: str | Path, model: DomainClassifier, metadata: dict[str, Any]) -> str:
    """Write `model`'s weights with its config and `metadata` as safetensors, atomically; return the sha256."""
    from genlab.io import save_tensors

    save_tensors(path, model.state_dict(), {**metadata, "config": model.config.to_dict()})
    return sha256_of(path)
