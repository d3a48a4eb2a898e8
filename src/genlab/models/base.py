"""The family contract: the data spec a model is built for, what every family does
(`GenerativeModel`), and what only some can do, declared as capabilities.

Callers ask a model what it can do with isinstance, never by probing attributes:

    if isinstance(model, HasLikelihood): nll = -model.log_likelihood(x, labels)

A family declares a capability by inheriting it; the abstract methods make a family that
declares one without implementing it fail when it is built, not when it is called.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from genlab.errors import GenlabError

if TYPE_CHECKING:
    from genlab.explain.stages import PredictionPass, Stage

BUDGET_REFERENCE_IMAGES = 4_000  # mnist-5k's training split, on which every family's default_steps was sized


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of `images` in batches of `batch_size`, the last one partial (one process)."""
    return -(-images // batch_size)


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

    def describe(self) -> str:
        return f"{self.channels}x{self.height}x{self.width} images"

    @property
    def num_pixels(self) -> int:
        """Number of dimensions of one image (C*H*W): the denominator of bits/dim."""
        return self.channels * self.height * self.width

    @classmethod
    def from_dataset(cls, dataset) -> DataSpec:
        c, h, w = dataset.image_shape
        return cls(c, h, w, dataset.num_classes, tuple(dataset.class_names))

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values (for run.json)."""
        return {**dataclasses.asdict(self), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataSpec:
        """The spec back from `to_dict`'s values."""
        return cls(
            int(values["channels"]),
            int(values["height"]),
            int(values["width"]),
            int(values.get("num_classes", 0)),
            tuple(values.get("class_names", ())),
        )


@dataclass(frozen=True)
class TokenSpec:
    """The text a model is built for: its tokenizer's name and vocabulary; saved in run.json to rebuild it.

    The text family's counterpart of DataSpec (docs/architecture.md, "Where a sequence family bends the
    contract"): token ids 0 .. vocabulary - 1 in place of an image shape, and no classes.
    """

    vocabulary: int
    tokenizer: str  # "bytes" or "bpe:N"
    num_classes: int = 0  # text is not drawn per class

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values (for run.json)."""
        return {"vocabulary": self.vocabulary, "tokenizer": self.tokenizer}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TokenSpec:
        """The spec back from `to_dict`'s values."""
        return cls(int(values["vocabulary"]), str(values["tokenizer"]))

    @classmethod
    def from_dataset(cls, dataset) -> TokenSpec:
        """The spec of a TokenDataset: its tokenizer's vocabulary and name."""
        return cls(dataset.tokenizer.vocabulary_size, dataset.tokenizer.name)

    def describe(self) -> str:
        return f"text of a {self.vocabulary:,}-token vocabulary ({self.tokenizer})"


def spec_from_dict(values: dict[str, Any]) -> DataSpec | TokenSpec:
    """The data spec run.json's data.shape holds: a TokenSpec for text (it names a vocabulary), else a DataSpec."""
    if "vocabulary" in values:
        return TokenSpec.from_dict(values)
    missing = [key for key in ("channels", "height", "width") if key not in values]
    if missing:
        raise GenlabError(f"data.shape has no {missing[0]}: it describes neither images nor text")
    return DataSpec.from_dict(values)


def spec_of(data) -> DataSpec | TokenSpec:
    """The spec of a dataset or a spec: a TokenDataset's TokenSpec, an ImageDataset's DataSpec, a spec itself."""
    from genlab.data.tokens import TokenDataset

    if isinstance(data, (DataSpec, TokenSpec)):
        return data
    return TokenSpec.from_dataset(data) if isinstance(data, TokenDataset) else DataSpec.from_dataset(data)


Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # (images in [0, 1] (B, C, H, W), labels (B,) or None)


class FamilyExplanation(Protocol):
    """A family's explain module (models/FAMILY/explain.py): what `genlab explain` measures of it."""

    def pipeline_stages(
        self, model: Any, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
    ) -> list[Stage]: ...

    def prediction_pass(
        self, model: Any, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
    ) -> PredictionPass: ...


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
    # Optimizer steps (batches) a run takes when no epoch count is given: the family's time budget, turned
    # into epochs for the data at hand (`default_epochs`). Each family declares its own, sized so that
    # `genlab train FAMILY --data mnist-5k` ends within 10 minutes on 2 CPU cores (benchmarks/README.md,
    # "Time to quality", has the figures).
    default_steps: ClassVar[int]
    # How far the budget grows on a dataset larger than mnist-5k's 4,000 training images: x sqrt(images / 4,000),
    # at most this (1: never). Issue 20 gives mnist-5k 10 minutes and fashion-mnist's 60,000 images 30; 2.5 leaves
    # room for the larger test split each epoch is scored on. (`budget_steps`)
    largest_budget_scale: ClassVar[float] = 2.5
    # Test images `validation_step` sees each time the loop validates: None, the whole test split; a number, a seeded
    # subset of that many (a family whose validation draws a sample per test image says how many are enough).
    validation_images: ClassVar[int | None] = None
    # Settings added after runs were written whose default is not what those runs did: the value each had
    # before it existed, which a run.json without it is read back with (`genlab.models.stored_config`).
    absent_in_older_runs: ClassVar[dict[str, Any]] = {}
    # Config fields `plan_steps` fills in for a new run; a run started from another one's weights plans its own.
    planned_settings: ClassVar[tuple[str, ...]] = ()
    # (history key, column title) shown in the training trace, after Epoch.
    trace_columns: ClassVar[tuple[tuple[str, str], ...]] = (("loss", "Loss"),)
    # The history key whose trend the observations follow (lower is better).
    monitor: ClassVar[str] = "loss"
    # Which rules comment on the training trace (genlab.explain.observations): "loss" follows
    # `monitor`; "contest" judges a GAN's discriminator/generator balance.
    observer: ClassVar[str] = "loss"
    # The family's idea in two sentences (`genlab explain`).
    idea: ClassVar[str] = ""
    # The family's explain module (models/FAMILY/explain.py), which `pipeline_stages` and
    # `prediction_pass` call: the stages live beside the family, apart from its model code.
    explanation: FamilyExplanation | None = None

    def __init__(self, config: Any, data: DataSpec):
        super().__init__()
        self.config = config
        self.data = data
        if self.conditional and data.num_classes < 2:
            raise GenlabError(f"a conditional {self.family} needs labelled data with at least 2 classes")

    @classmethod
    def budget_steps(cls, images: int) -> int:
        """The family's budget of optimizer steps on `images` training images: `default_steps`, grown for data
        larger than mnist-5k's as x sqrt(images / 4,000), by at most `largest_budget_scale` (60,000 images: 2.5x
        by default)."""
        scale = min(cls.largest_budget_scale, max(1.0, math.sqrt(images / BUDGET_REFERENCE_IMAGES)))
        return round(cls.default_steps * scale)

    @classmethod
    def data_defaults(cls, data: DataSpec, images: int) -> dict[str, Any]:
        """Settings whose default depends on the training data, its shape `data` and its size `images`: they go
        under the user's own when a model is built for a dataset. None unless a family says otherwise."""
        return {}

    @classmethod
    def default_epochs(cls, images: int, batch_size: int) -> int:
        """Epochs that come nearest `budget_steps` on `images` training images in batches of `batch_size`
        (at least 1): a small dataset gets many epochs, a large one few."""
        return max(1, round(cls.budget_steps(images) / steps_per_epoch(images, batch_size)))

    @property
    def conditional(self) -> bool:
        """Whether the model draws given class labels (every family's config has `conditional`)."""
        return bool(self.config.conditional)

    @property
    def binary_pixels(self) -> bool:
        """Whether the model sees pixels binarized to 0/1 (the binarized-MNIST protocol), not levels in [0, 1]."""
        return False

    @property
    def sample_batch_size(self) -> int:
        """Images `Run.sample` draws per call of `sample` by default (a family with large activations says less)."""
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

        On the CPU the default per-tensor Adam is a sizeable share of a small network's step; the
        fused one gives the same update up to float rounding (benchmarks/README.md has the figure).
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

    def end_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Called after each epoch's steps, before validation, in eval mode without autograd, with the whole
        training set in a fixed order (`batches`: images in [0, 1], labels). A family that fits something to
        the trained networks (the VAE's density over its encodings) does it here; the numbers it returns join
        the epoch's record. Nothing by default (the batches are then never read)."""
        return {}

    def plan_steps(self, steps: int) -> None:
        """Told by `genlab.train`, before a new run starts, how many optimizer steps it plans (its epochs x steps per
        epoch): a family whose settings depend on it (a learning-rate schedule) records them in its config. Most
        families ignore it."""

    def last_useful_step(self) -> int | None:
        """The optimizer step after which training would change nothing (a learning-rate schedule that has fallen
        to 0), or None: `genlab.train` refuses to resume a run for more epochs past it. None by default."""
        return None

    def compile_targets(self) -> list[nn.Module]:
        """The networks `compile=True` (--compile) hands to torch.compile, each in place.

        By default every child module with parameters (called by the training or validation step,
        as a DDPM's EMA copy is). A family whose step calls a network through a
        method other than `forward`, or differentiates twice (compiled graphs have no double
        backward), names the modules its step does call.
        """
        return [module for module in self.children() if next(module.parameters(), None) is not None]

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]. A family with a latent space (`HasLatentSpace`) gets this one:
        its decoder's images of n draws from its prior; every other family writes its own sampler."""
        if not isinstance(self, HasLatentSpace):
            raise NotImplementedError(f"the {self.family} family must implement sample")
        labels = self.check_labels(n, labels)
        return self.decode(self.sample_latent(n, generator, labels), labels)

    def condition(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels (B,) a network is told, on the model's device: None for an unconditional model,
        which ignores any it is given; a conditional one refuses to go without."""
        if not self.conditional:
            return None
        if labels is None:
            raise GenlabError(f"a conditional {self.family} needs labels")
        return labels.to(self.device)

    def check_labels(self, n: int, labels: torch.Tensor | int | list[int] | None) -> torch.Tensor | None:
        """Validate sampling labels and return them as a (n,) long tensor on the model's device.

        A conditional model given no labels cycles through the classes (0, 1, ..., K-1, 0, ...).
        """
        if labels is None:
            if not self.conditional:
                return None
            return torch.arange(n, device=self.device) % self.data.num_classes
        if not self.conditional:
            raise GenlabError(
                f"this {self.family} model is unconditional: it cannot draw given labels; train with --conditional"
            )
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise GenlabError(f"got {labels.numel()} labels for {n} samples; give one label or one per sample")
        bad = labels[(labels < 0) | (labels >= self.data.num_classes)]
        if bad.numel():
            raise GenlabError(f"label {int(bad[0])} is outside the model's classes 0..{self.data.num_classes - 1}")
        return labels.to(self.device)

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> list[Stage]:
        """The family's data flow on a real batch x (B, C, H, W) in [0, 1], after the shared `input_stages`:
        its training path to the loss, then its generation path to an image, each stage measured."""
        return self._explanation().pipeline_stages(self, x, labels, generator)

    def prediction_pass(
        self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
    ) -> PredictionPass:
        """The network call the prediction trace hooks, for a batch of len(x) (x: a real batch in [0, 1])."""
        return self._explanation().prediction_pass(self, x, labels, generator)

    def _explanation(self) -> FamilyExplanation:
        if self.explanation is None:
            raise GenlabError(f"the {self.family} family cannot explain itself yet (it has no explain module)")
        return self.explanation


# ---------------------------------------------------------------- capabilities: what only some families can do


class HasLikelihood(abc.ABC):
    """A family that gives log p(x) (or a bound on it) in nats per image, the same definition everywhere."""

    # How many test images `genlab eval` scores (a seeded subset); None: the whole split. A family
    # whose estimate costs many network passes per image (DDPM) names a smaller number.
    likelihood_images: ClassVar[int | None] = None

    @property
    @abc.abstractmethod
    def likelihood_kind(self) -> str:
        """How `log_likelihood` relates to log p(x): "exact", or which bound (tables put families side by side)."""

    @property
    @abc.abstractmethod
    def likelihood_data_model(self) -> str:
        """What the pixels are taken to be ("binarized", "256-way discrete (8-bit pixels)", ...)."""

    @abc.abstractmethod
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) (or its bound) in nats per image (B,) for images x (B, C, H, W) in [0, 1]."""


class HasLatentSpace(abc.ABC):
    """A family whose images are a function of a latent drawn from a prior: draw, decode, interpolate."""

    @abc.abstractmethod
    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n draws from the prior over the latent space, (n, *latent_shape). `labels` (n,): a conditional model
        whose prior depends on the class (the VAE's per-class mixture) draws each from its label's; the others
        ignore them."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] from latents z (B, *latent_shape)."""

    @torch.no_grad()
    def interpolate(
        self, steps: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode `steps` latents on the straight line between two prior draws: (steps, C, H, W).

        Families whose latent is not Gaussian-like, or who prefer spherical paths, override this.
        """
        assert isinstance(self, GenerativeModel)
        path_labels = self.check_labels(steps, labels)
        ends = None if path_labels is None else path_labels[[0, -1]]  # each end from its label's prior
        z0, z1 = self.sample_latent(2, generator, ends)
        weights = torch.linspace(0.0, 1.0, steps, device=z0.device).reshape(-1, *([1] * z0.dim()))
        z = (1 - weights) * z0 + weights * z1  # (steps, *latent_shape)
        return self.decode(z, path_labels)


class HasEncoder(HasLatentSpace):
    """A latent-space family that also maps an image to its latent (the VAE's posterior mean, a flow's z)."""

    @abc.abstractmethod
    def latent_of(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The latent (B, *latent_shape) that stands for images x (B, C, H, W) in [0, 1]."""


class CanReconstruct(abc.ABC):
    """A family that reconstructs an image through its bottleneck (an autoencoder)."""

    @abc.abstractmethod
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's deterministic reconstruction (B, C, H, W) in [0, 1] of images x in [0, 1]."""


class CanComplete(abc.ABC):
    """A family that draws pixel by pixel, so it can finish an image whose top rows are given."""

    @abc.abstractmethod
    def complete(
        self,
        images: torch.Tensor,
        rows: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        on_row: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] that keep the top `rows` rows of `images` and draw the rest; `on_row` hears
        each drawn row's index and the images so far (B, C, H, W), and may raise to stop."""


@dataclass(frozen=True)
class SamplerOption:
    """One option a family's sampler takes beyond n, generator and labels (e.g. DDPM's `steps`).

    `kind` is the value's type; `choices` or `minimum`/`maximum` bound it; `config_field` names
    the config field that holds the run's default; `help` is what the CLI says of it.
    """

    name: str
    kind: type
    help: str
    config_field: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: Any) -> Any:
        """`value` as this option's type, or a GenlabError that says which values it takes."""
        flag = "--" + self.name.replace("_", "-")
        if self.kind is str:
            if value not in self.choices:
                raise GenlabError(f"{flag} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and value != int(value)):
            raise GenlabError(f"{flag} must be {'an integer' if self.kind is int else 'a number'}, got {value!r}")
        if (
            not math.isfinite(value)
            or (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            bounds = f"from {self.minimum:g}" + ("" if self.maximum is None else f" to {self.maximum:g}")
            raise GenlabError(f"{flag} must be {bounds}, got {value!r}")
        return self.kind(value)


class HasSamplerOptions(abc.ABC):
    """A family whose `sample` takes options (a sampler, its step count ...), declared by name."""

    @property
    @abc.abstractmethod
    def sampler_options(self) -> tuple[SamplerOption, ...]:
        """The options `sample` takes, declared (a family sets this as a class attribute)."""

    def check_sampler_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as their declared types; an unknown name or a value out of range is a GenlabError."""
        declared = {option.name: option for option in self.sampler_options}
        unknown = [name for name in options if name not in declared]
        if unknown:
            raise GenlabError(
                f"{flag_list(unknown)} is not an option of this sampler; it takes {flag_list(list(declared))}"
            )
        return {name: declared[name].check(value) for name, value in options.items()}


class GeneratesText(abc.ABC):
    """A family that writes text (token ids) instead of drawing images: it continues a prompt."""

    @property
    @abc.abstractmethod
    def context(self) -> int:
        """Tokens the model reads at once."""

    @abc.abstractmethod
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        on_token: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """The prompt ids (B, P) followed by `max_new_tokens` drawn ones: (B, P + max_new_tokens); `on_token` hears
        each step's new tokens (B, 1) and the logits (B, V) they were drawn from (before temperature and top-k)."""


class ShowsSamplingChain(abc.ABC):
    """A family whose sampler passes through intermediate images worth showing (diffusion's x_T ... x_0)."""

    @property
    @abc.abstractmethod
    def chain_steps(self) -> int:
        """How many steps the default sampler takes from the start of the chain to an image."""

    @property
    @abc.abstractmethod
    def chain_sampler(self) -> str:
        """The default sampler's name as captions show it (e.g. "DDPM", "SDE-DPM-Solver++")."""

    @abc.abstractmethod
    def sample_chain(
        self,
        n: int,
        every: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
        **options: Any,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """n images in [0, 1] and the chain's states in [0, 1] every `every` steps, from the start to the end;
        `options` are the sampler options the family declares (`HasSamplerOptions`). `on_step` hears each step
        as it is taken: (step 1..S, S, the state, the image predicted from it), both in [0, 1]; it may raise to
        stop the chain."""


def flag_list(names: list[str]) -> str:
    """Option names as command-line flags: ["sampler", "eta"] -> "--sampler, --eta"."""
    return ", ".join("--" + name.replace("_", "-") for name in names)
