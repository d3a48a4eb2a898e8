"""What each view of the explorer computes for one run: plain, synchronous functions of a loaded `Run`.

The HTTP layer (`genlab.serve.app`) checks the request's numbers and calls these on the run's own worker
thread; the streamed views hand each step to `emit` as it is computed and call `ticket.check()` between
steps, which raises to stop a superseded or over-long request. Images leave as PNG data URLs, each with an
id that the nearest view takes back (no pixels from the client reach a model, except a drawn canvas).
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genlab.errors import GenlabError
from genlab.images import png_bytes
from genlab.models.base import (
    CanComplete,
    GeneratesText,
    HasEncoder,
    HasLatentSpace,
    HasSamplerOptions,
    ShowsSamplingChain,
)
from genlab.run import Run, WholeCharacters

LATENT_DIRECTIONS = 8  # sliders in the latent view
NEIGHBOURS = 5  # training images shown by the nearest view
KEPT_IMAGES = 4096  # images the server remembers for the nearest view, newest kept
TOP_TOKENS = 5  # alternatives shown for each written token
PCA_IMAGES = 5000  # training images (a seeded subset of larger splits) whose latents give the principal directions
GREY_LEVELS = 15  # a canvas pixel is one hex digit: level / 15

Emit = Callable[[str, dict[str, Any]], None]  # (event name, its JSON data)
SUPERSEDED = "superseded by a newer request"  # why a cancelled request stopped


class Ticket:
    """One request's right to go on: cancelled when a newer request of the same view arrives, when its client
    goes away, or past its deadline (`check` raises `Stopped`)."""

    def __init__(self, seconds: float):
        self._clock = time.monotonic
        self.deadline = self._clock() + seconds
        self.seconds = seconds
        self.cancelled = threading.Event()
        self._listeners: list[Callable[[], Any]] = []  # told once, on the first cancel
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def on_cancel(self, listener: Callable[[], Any]) -> None:
        """Call `listener` when this ticket is cancelled (at once if it already is)."""
        with self._lock:
            if not self.cancelled.is_set():
                self._listeners.append(listener)
                return
        listener()

    def check(self) -> None:
        """Raise `Stopped` if this request should not go on."""
        if self.cancelled.is_set():
            raise Stopped(SUPERSEDED, timed_out=False)
        if self._clock() > self.deadline:
            raise Stopped(f"stopped after the {self.seconds:g} s a request may take", timed_out=True)


class Stopped(Exception):
    """A request stopped before its end: superseded, its client gone, or past its time limit."""

    def __init__(self, reason: str, timed_out: bool):
        super().__init__(reason)
        self.timed_out = timed_out


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator from `seed`, as `genlab sample --seed` makes it (the same seed, the same images)."""
    return torch.Generator().manual_seed(seed)


def data_url(image: torch.Tensor) -> str:
    """One image (C, H, W) in [0, 1] as a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image.detach().float().cpu())).decode("ascii")


@dataclass
class NearestIndex:
    """Features of a run's training and held-out images under the domain classifier, for the nearest view."""

    train_images: torch.Tensor  # (N, C, H, W) uint8
    train_labels: torch.Tensor | None
    train_features: torch.Tensor  # (N, D)
    held_out_distances: torch.Tensor  # (M,): each held-out image's distance to its nearest training image
    thresholds: torch.Tensor  # (K,): per predicted class, the 5% quantile of those distances
    extractor: Any


class Explorer:
    """The views of one run (a run directory or a zoo model), computed on demand and cached where costly."""

    def __init__(self, index: int, run: Run, images: ImageStore):
        self.index = index
        self.run = run
        self.model = run.model
        self.images = images
        self._directions: torch.Tensor | None = None  # (LATENT_DIRECTIONS, latent size), lazily
        self._nearest: NearestIndex | None = None
        self._splits: tuple[Any, Any] | None = None
        self._extractor_problem: str | None = None  # "" once an extractor was found

    # ---------------------------------------------------------------- what the page is told

    def describe(self) -> dict[str, Any]:
        """The run as the page's run picker and view tabs see it."""
        model, text = self.model, isinstance(self.model, GeneratesText)
        data = self.run.info.get("data", {})
        image_shape = None if text else list(model.data.image_shape)
        return {
            "id": self.index,
            "name": self.run.name,
            "family": self.run.family,
            "data": data.get("spec") or data.get("name") or "",
            "kind": "text" if text else "images",
            "conditional": bool(not text and model.conditional),
            "classes": self.classes(),
            "image_shape": image_shape,
            "views": [{"name": name, "available": reason is None, "reason": reason} for name, reason in self.views()],
            "sampler_options": self.sampler_options(),
            "latent": {"directions": self.direction_count(), "kind": self.direction_kind()}
            if self.has_latent
            else None,
        }

    def classes(self) -> list[str] | None:
        """The class names a conditional image run draws on demand, else None."""
        model = self.model
        if isinstance(model, GeneratesText) or not model.conditional:
            return None
        return list(model.data.class_names) or [str(k) for k in range(model.data.num_classes)]

    @property
    def has_latent(self) -> bool:
        # A diffusion model's latent is its noise x_T (one value per pixel): a slider on one pixel's noise barely
        # moves the image, so its view is the denoising chain instead.
        return isinstance(self.model, HasLatentSpace) and not isinstance(self.model, ShowsSamplingChain)

    def views(self) -> list[tuple[str, str | None]]:
        """(view, None) for each view this run has, (view, why not) for the others."""
        family, text = self.run.family, isinstance(self.model, GeneratesText)
        images_only = f"a {family} run writes text, not images" if text else None
        latent = None
        if not self.has_latent:
            latent = images_only or (
                "its latent is the noise x_T, one value per pixel: the denoise view shows how it becomes an image"
                if isinstance(self.model, ShowsSamplingChain)
                else f"a {family} model has no latent space (it draws pixel by pixel)"
            )
        return [
            ("sample", images_only),
            ("latent", latent),
            ("denoise", None if isinstance(self.model, ShowsSamplingChain) else f"a {family} model draws no chain"),
            ("complete", None if isinstance(self.model, CanComplete) else f"a {family} model does not draw row by row"),
            ("text", None if text else f"a {family} run draws images"),
            ("nearest", images_only or self.nearest_problem()),
            ("run", None),
        ]

    def nearest_problem(self) -> str | None:
        """Why the nearest view cannot be shown (the run's data cannot be loaded again, or no shipped feature
        extractor fits its images), or None."""
        data = self.run.info.get("data", {})
        if data.get("in_memory"):
            return "the run was trained on data given in memory, which cannot be loaded again"
        if self._extractor_problem is None:
            from genlab.eval.features import extractor_for

            try:
                extractor_for(self.run.data_spec()[0], tuple(self.model.data.image_shape))
                self._extractor_problem = ""
            except GenlabError as error:
                self._extractor_problem = str(error).split(";")[0]
        return self._extractor_problem or None

    def sampler_options(self) -> list[dict[str, Any]]:
        """The family's declared sampler options, each with the run's default."""
        if not isinstance(self.model, HasSamplerOptions):
            return []
        return [
            {
                "name": option.name,
                "kind": option.kind.__name__,
                "choices": list(option.choices),
                "minimum": option.minimum,
                "maximum": option.maximum,
                "default": getattr(self.model.config, option.config_field),
                "help": option.help,
            }
            for option in self.model.sampler_options
        ]

    # ---------------------------------------------------------------- sample

    def image(self, image: torch.Tensor, label: int | None = None) -> dict[str, Any]:
        """An image as the page gets it: its id (kept for the nearest view), PNG data URL and class."""
        return {"id": self.images.keep(self.index, image), "png": data_url(image), "label": label}

    def sample(
        self, n: int, seed: int, label: int | None, options: dict[str, Any], ticket: Ticket
    ) -> list[dict[str, Any]]:
        """n images from `seed` (the classes in turn for a conditional model unless `label`), drawn in the
        family's batches like `genlab sample`, stoppable between batches (and between steps or rows)."""
        model = self.model
        options = self.run_options(options)
        labels = model.check_labels(n, label)
        generator = seeded_generator(seed)
        batch_size = model.sample_batch_size
        drawn: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                ticket.check()
                count = min(batch_size, n - start)
                part = None if labels is None else labels[start : start + count]
                drawn.append(self._draw(count, generator, part, options, ticket).cpu())
        images = torch.cat(drawn)
        return [self.image(image, None if labels is None else int(labels[i])) for i, image in enumerate(images)]

    def _draw(self, n: int, generator, labels, options: dict[str, Any], ticket: Ticket) -> torch.Tensor:
        """One batch of `Run.sample`'s draw, with the ticket checked inside the slow samplers."""
        model = self.model
        if isinstance(model, ShowsSamplingChain):
            images, _ = model.sample_chain(
                n, 1 << 30, generator, labels, on_step=lambda *_: ticket.check(), **options
            )  # a chain kept only at its two ends: the same draws as `sample`
            return images
        if isinstance(model, CanComplete):  # rows 0.. of a blank image: the same draws as `sample` (its options too)
            blank = torch.zeros(n, *model.data.image_shape, device=model.device)
            return model.complete(blank, 0, generator, labels, on_row=lambda *_: ticket.check(), **options)
        return model.sample(n, generator=generator, labels=labels, **options)

    def run_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The sampler options as the family declares them (a GenlabError for any it does not take)."""
        from genlab.run import check_sampler_options

        return check_sampler_options(self.model, options)

    # ---------------------------------------------------------------- latent

    def direction_count(self) -> int:
        """Sliders of the latent view: LATENT_DIRECTIONS, or fewer for a smaller latent space."""
        assert isinstance(self.model, HasLatentSpace)
        return min(LATENT_DIRECTIONS, self.model.sample_latent(1, seeded_generator(0))[0].numel())

    def direction_kind(self) -> str:
        if isinstance(self.model, HasEncoder):
            return "the principal directions of the aggregate posterior (training images' latents), in their std"
        return f"the first {LATENT_DIRECTIONS} latent coordinates"

    def directions(self) -> torch.Tensor:
        """(LATENT_DIRECTIONS, latent size): unit coordinates, or for a model with an encoder the top principal
        directions of its training images' latents scaled by their standard deviations."""
        if self._directions is not None:
            return self._directions
        model = self.model
        assert isinstance(model, HasLatentSpace)
        size = model.sample_latent(1, seeded_generator(0))[0].numel()
        count = self.direction_count()
        if isinstance(model, HasEncoder) and not self.run.info.get("data", {}).get("in_memory"):
            train, _ = self.splits()
            chosen = torch.randperm(len(train), generator=seeded_generator(0))[:PCA_IMAGES].sort().values
            images = train.images[chosen].float().div(255)  # (N, C, H, W)
            labels = None if train.labels is None or not model.conditional else train.labels[chosen]
            with torch.no_grad():
                latents = torch.cat(
                    [
                        model.latent_of(
                            images[start : start + 500].to(model.device),
                            None if labels is None else labels[start : start + 500].to(model.device),
                        )
                        .flatten(1)
                        .cpu()
                        for start in range(0, len(images), 500)
                    ]
                )  # (N, latent size)
            centred = latents.double() - latents.double().mean(0)
            _, singular, vectors = torch.linalg.svd(centred, full_matrices=False)  # rows of `vectors`: directions
            scale = singular[:count] / max(len(latents) - 1, 1) ** 0.5  # each direction's std
            directions = (vectors[:count] * scale[:, None]).float()
        else:
            directions = torch.eye(size)[:count]
        self._directions = directions
        return directions

    def latent(self, seed: int, offsets: list[float], label: int | None) -> dict[str, Any]:
        """The image of z(seed) moved by offsets[i] along direction i (all 0: z(seed) itself)."""
        model = self.model
        assert isinstance(model, HasLatentSpace)
        directions = self.directions()
        if len(offsets) > len(directions):
            raise GenlabError(f"offsets: at most {len(directions)} values (one per slider), got {len(offsets)}")
        labels = model.check_labels(1, label)
        z = model.sample_latent(1, seeded_generator(seed), labels)  # (1, ...)
        moved = z.flatten(1).cpu() + sum(
            (value * directions[i] for i, value in enumerate(offsets)), torch.zeros(z[0].numel())
        )
        with torch.no_grad():
            image = model.decode(moved.reshape(z.shape).to(model.device), labels).cpu()[0]
        return self.image(image, label)

    def interpolate(
        self, seed: int, n: int, ends: tuple[int, int] | None, steps: int, label: int | None
    ) -> dict[str, Any]:
        """n candidates decoded from z(seed) (n latents), and the straight path from candidate a to b."""
        model = self.model
        assert isinstance(model, HasLatentSpace)
        labels = model.check_labels(n, label)
        z = model.sample_latent(n, seeded_generator(seed), labels)
        with torch.no_grad():
            candidates = model.decode(z, labels).cpu()
            path: list[dict[str, Any]] = []
            if ends is not None:
                a, b = ends
                if not (0 <= a < n and 0 <= b < n):
                    raise GenlabError(f"a and b must be candidates 0 to {n - 1}, got {a} and {b}")
                weights = torch.linspace(0, 1, steps, device=z.device).reshape(-1, *[1] * (z.dim() - 1))
                between = (1 - weights) * z[a] + weights * z[b]  # (steps, ...)
                path_labels = model.check_labels(steps, label)
                path = [self.image(image, label) for image in model.decode(between, path_labels).cpu()]
        return {"candidates": [self.image(image, label) for image in candidates], "path": path}

    # ---------------------------------------------------------------- denoise

    def denoise(self, seed: int, label: int | None, options: dict[str, Any], emit: Emit, ticket: Ticket) -> None:
        """The chain of one image from x_T to x_0: an event per step with x_t and the predicted x̂_0."""
        model = self.model
        assert isinstance(model, ShowsSamplingChain)
        options = self.run_options(options)
        labels = model.check_labels(1, label)

        def on_step(step: int, steps: int, x: torch.Tensor, x0: torch.Tensor) -> None:
            ticket.check()
            emit("step", {"step": step, "total": steps, "x_t": data_url(x[0]), "x0": data_url(x0[0])})

        steps = options.get("steps") or model.chain_steps
        emit("start", {"sampler": options.get("sampler") or model.chain_sampler, "total": steps})
        started = time.perf_counter()
        with torch.no_grad():
            images, _ = model.sample_chain(1, 1 << 30, seeded_generator(seed), labels, on_step=on_step, **options)
        emit("done", {"image": self.image(images[0].cpu(), label), "seconds": time.perf_counter() - started})

    # ---------------------------------------------------------------- complete

    def test_image(self, index: int) -> dict[str, Any]:
        """Test image `index` as the page shows it and as a canvas (one hex digit per pixel)."""
        _, test = self.splits()
        if not 0 <= index < len(test.images):
            raise GenlabError(f"index must be from 0 to {len(test.images) - 1}, got {index}")
        image = test.images[index].float() / 255
        label = None if test.labels is None else int(test.labels[index])
        return {"png": data_url(image), "label": label, "canvas": canvas_of(image)}

    def complete(
        self, canvas: str, rows: int, n: int, seed: int, label: int | None, emit: Emit, ticket: Ticket
    ) -> None:
        """n completions of the image drawn on `canvas` (one hex digit a pixel) keeping its top `rows` rows: an
        event per drawn row."""
        model = self.model
        assert isinstance(model, CanComplete)
        image = image_of_canvas(canvas, model.data.image_shape)  # (C, H, W)
        if model.conditional and label is None:
            raise GenlabError("a conditional model completes an image of a known class: pick its class (label)")
        kept = image.clone()
        kept[:, rows:] = 0
        emit("start", {"kept": data_url(kept), "rows": rows, "height": image.shape[1]})
        generator = seeded_generator(seed)
        labels = model.check_labels(n, label)
        start = image.to(model.device)
        if model.binary_pixels:
            from genlab.data.transforms import binarize

            start = binarize(start, generator)

        def on_row(row: int, x: torch.Tensor) -> None:
            ticket.check()
            shown = x.detach().cpu().clone()
            shown[:, :, row + 1 :] = 0  # rows not drawn yet still hold the input
            emit("row", {"row": row, "images": [data_url(one) for one in shown]})

        started = time.perf_counter()
        with torch.no_grad():
            images = model.complete(start.expand(n, *start.shape), rows, generator, labels, on_row=on_row).cpu()
        emit("done", {"images": [self.image(one, label) for one in images], "seconds": time.perf_counter() - started})

    # ---------------------------------------------------------------- text

    def text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int,
        emit: Emit,
        ticket: Ticket,
    ) -> None:
        """A continuation of `prompt`, an event per token with its probability and the likeliest alternatives
        (the model's own next-token distribution, before temperature and top-k)."""
        from genlab.data.text import DOCUMENT_SEPARATOR

        model = self.model
        assert isinstance(model, GeneratesText)
        tokenizer = self.run.tokenizer
        ids = tokenizer.encode(prompt or DOCUMENT_SEPARATOR)
        written = WholeCharacters(tokenizer)

        def on_token(token: torch.Tensor, logits: torch.Tensor) -> None:
            ticket.check()
            chosen = int(token[0, 0])
            probabilities = logits[0].float().softmax(-1)
            top = torch.topk(probabilities, min(TOP_TOKENS, len(probabilities)))
            emit(
                "token",
                {
                    "text": written.add(chosen),
                    "token": tokenizer.decode([chosen]),
                    "probability": float(probabilities[chosen]),
                    "top": [
                        {"text": tokenizer.decode([int(k)]), "probability": float(p)}
                        for p, k in zip(top.values, top.indices, strict=True)
                    ],
                },
            )

        started = time.perf_counter()
        drawn = model.generate(
            torch.tensor([ids]), max_new_tokens, temperature, top_k, top_p,
            generator=seeded_generator(seed), on_token=on_token,
        )  # fmt: skip
        text = tokenizer.decode(drawn[0, len(ids) :].tolist())
        emit("done", {"text": text, "seconds": time.perf_counter() - started})

    # ---------------------------------------------------------------- nearest

    def splits(self):
        """The run's (train, test) image splits, loaded once."""
        if self._splits is None:
            from genlab.data import load_splits

            if self.run.info.get("data", {}).get("in_memory"):
                raise GenlabError("the run was trained on data given in memory, which cannot be loaded again")
            spec, size = self.run.data_spec()
            self._splits = load_splits(spec, size)
        return self._splits

    def nearest_index(self) -> NearestIndex:
        """The training set's features and the held-out calibration, computed once."""
        if self._nearest is None:
            from genlab.eval.features import extractor_for
            from genlab.eval.metrics import copy_thresholds, nearest_neighbour_distances

            train, test = self.splits()
            spec, _ = self.run.data_spec()
            extractor = extractor_for(spec, tuple(self.model.data.image_shape))
            train_features = extractor.features(train.images.float() / 255)
            test_images = test.images.float() / 255
            held_out = extractor.features(test_images)
            distances = nearest_neighbour_distances(held_out, train_features, 1)[0][:, 0].cpu()
            classes = extractor.predict(test_images).cpu()
            thresholds, _, _ = copy_thresholds(distances, classes, extractor.num_classes)
            self._nearest = NearestIndex(train.images, train.labels, train_features, distances, thresholds, extractor)
        return self._nearest

    def nearest(self, image_id: str) -> dict[str, Any]:
        """A kept image's nearest training images under the domain classifier's features, and how its distance
        compares with held-out real images' (the memorization measure of `genlab eval`)."""
        from genlab.eval.metrics import nearest_neighbour_distances

        image = self.images.get(self.index, image_id)
        index = self.nearest_index()
        feature = index.extractor.features(image[None])
        distances, nearest = nearest_neighbour_distances(feature, index.train_features, NEIGHBOURS)
        distance = float(distances[0, 0])
        predicted = int(index.extractor.predict(image[None])[0])
        threshold = float(index.thresholds[predicted])
        closer = float((index.held_out_distances < distance).double().mean())
        names = index.extractor.class_names
        name = names[predicted] if predicted < len(names) else str(predicted)
        if distance < threshold:
            verdict = (
                f"nearer its nearest training image than 95% of held-out real images of class {name} are to "
                "theirs: it may be a copy"
            )
        else:
            verdict = f"as far from the training set as unseen real images of class {name}: not a copy"
        return {
            "image": data_url(image),
            "neighbours": [
                {
                    "png": data_url(index.train_images[int(k)].float() / 255),
                    "distance": float(d),
                    "label": None if index.train_labels is None else int(index.train_labels[int(k)]),
                }
                for d, k in zip(distances[0], nearest[0], strict=True)
            ],
            "distance": distance,
            "held_out_closer": closer,
            "threshold": threshold,
            "predicted_class": name,
            "verdict": verdict,
        }

    # ---------------------------------------------------------------- run

    def facts(self) -> dict[str, Any]:
        """The run's facts, its history (one record per epoch) and its metrics.json, if measured."""
        from genlab.explain.run_files import read_metrics

        info = self.run.info
        return {
            "name": self.run.name,
            "family": self.run.family,
            "data": info.get("data", {}),
            "epochs": info.get("epochs_completed"),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "config": info.get("model", {}).get("config", {}),
            "train": info.get("train", {}),
            "history": self.run.history,
            "metrics": read_metrics(self.run),
        }


def canvas_of(image: torch.Tensor) -> str:
    """An image (C, H, W) in [0, 1] as one hex digit (16 grey levels) per value, channel by channel, row by row."""
    levels = (image.clamp(0, 1) * GREY_LEVELS).round().to(torch.int64).flatten().tolist()
    return "".join("0123456789abcdef"[level] for level in levels)


def image_of_canvas(canvas: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """The image (C, H, W) in [0, 1] a canvas string stands for; a GenlabError for a wrong length or digit."""
    size = shape[0] * shape[1] * shape[2]
    if len(canvas) != size:
        raise GenlabError(
            f"canvas must be {size} hex digits ({'x'.join(map(str, shape))}, one per pixel), got {len(canvas)}"
        )
    try:
        levels = [int(digit, 16) for digit in canvas]
    except ValueError:
        raise GenlabError("canvas must hold hex digits 0-9 and a-f only (16 grey levels per pixel)") from None
    return torch.tensor(levels, dtype=torch.float32).reshape(shape) / GREY_LEVELS


class ImageStore:
    """The images the server has sent, by id, newest `KEPT_IMAGES` kept: what the nearest view looks up."""

    def __init__(self, capacity: int = KEPT_IMAGES):
        self.capacity = capacity
        self._images: OrderedDict[str, tuple[int, torch.Tensor]] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the runs' worker threads share it

    def keep(self, run_index: int, image: torch.Tensor) -> str:
        with self._lock:
            image_id = f"i{next(self._ids)}"
            self._images[image_id] = (run_index, image.detach().float().cpu().clone())
            while len(self._images) > self.capacity:
                self._images.popitem(last=False)
            return image_id

    def get(self, run_index: int, image_id: str) -> torch.Tensor:
        with self._lock:
            found = self._images.get(image_id)
        if found is None or found[0] != run_index:
            raise GenlabError(f"no image {image_id!r} of this run: it was never drawn here, or is too old; draw again")
        return found[1]
