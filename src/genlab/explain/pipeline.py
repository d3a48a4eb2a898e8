"""`genlab explain`: a family's pipeline, stage by stage, and its prediction trace, measured on real data.

    explanation = explain_model("vae", "mnist-5k", seed=0)  # an untrained model on one real batch
    explanation = explain_run("runs/vae")                     # a trained run: its model, its config, its data
    print(explanation.to_text())                              # or .to_markdown(), or .to_dict() for JSON

Every shape and example value comes from running the stage on one real batch (the family's
`pipeline_stages`); the prediction trace's layers come from forward hooks on one call of the
family's network (its `prediction_pass`). Nothing is trained, and the caller's random-number
state is left as it was.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import textwrap
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genlab import rng
from genlab.data import ImageDataset, load_dataset
from genlab.errors import GenlabError
from genlab.explain.stages import PredictionPass, Stage, input_stages
from genlab.models import MODELS, GeneratesText, GenerativeModel, build_model, is_text_family
from genlab.models.common import eval_mode
from genlab.run import Run, is_run_dir
from genlab.zoo import is_zoo_spec

DEFAULT_DATA = "mnist-5k"
DEFAULT_BATCH_SIZE = 8
PATHS = {"training": "Training path: data -> loss", "generation": "Generation path: noise -> image"}
WIDTH = 100  # columns the text form wraps its prose at


@dataclass(frozen=True)
class Layer:
    """One row of the prediction trace: a module as its forward hook saw it (or the pass's input or output)."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    parameters: int  # the module's own parameters (its children have their own rows)


@dataclass
class Explanation:
    """What `genlab explain` prints: the idea, the measured stages and the hooked layers of one model."""

    family: str
    idea: str
    data: dict[str, Any]
    model: dict[str, Any]
    seed: int
    stages: list[Stage]
    layers: list[Layer]
    parameters: int  # sum of the layers' parameters: the hooked network's
    network: str  # which network the layers belong to, e.g. "decoder"
    trace_note: str
    paths: ClassVar[dict[str, str]] = PATHS  # the titles of the stages' paths

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (shapes as lists; a stage starting from fresh noise has input_shape None)."""
        return {
            "family": self.family,
            "idea": self.idea,
            "data": self.data,
            "model": self.model,
            "seed": self.seed,
            "stages": [
                {
                    "name": s.name,
                    "what": s.what,
                    "input_shape": None if s.input_shape is None else list(s.input_shape),
                    "output_shape": list(s.output_shape),
                    "example": s.example,
                    "path": s.path,
                }
                for s in self.stages
            ],
            "layers": [
                {
                    "name": layer.name,
                    "type": layer.type,
                    "output_shape": list(layer.output_shape),
                    "parameters": layer.parameters,
                }
                for layer in self.layers
            ],
            "parameters": self.parameters,
            "network": self.network,
            "trace_note": self.trace_note,
        }

    def _heading(self) -> str:
        data = self.data
        split = f", {data['split']} split" if data.get("split") else ""
        return (
            f"genlab explain {self.family}: {data['spec']}{split} ({data['images']:,} images of "
            f"{'x'.join(map(str, data['image_shape']))}), a batch of {data['batch_size']}, seed {self.seed}"
        )

    def _trace_title(self) -> str:
        return f"Prediction trace - {len(self.layers) - 2} layers of the {self.network}"

    def to_text(self) -> str:
        """The aligned text form `genlab explain` prints."""
        lines = [self._heading(), f"Weights: {self.model['weights']}; model in eval mode", "", "Idea"]
        lines += wrap(self.idea, "  ", "  ")
        counts = ", ".join(f"{sum(s.path == p for s in self.stages)} {p}" for p in self.paths)
        lines += ["", f"Data flow - {len(self.stages)} stages ({counts}), measured on the batch"]
        header = ["#", "Stage", "Input shape", "Output shape"]
        rows = [
            [str(i), s.name, format_shape(s.input_shape), format_shape(s.output_shape)]
            for i, s in enumerate(self.stages, start=1)
        ]
        table = aligned(header, rows, right={0})
        indent = " " * (2 + table[0].index("Stage"))  # what it does and the example go under the stage's name
        lines.append("  " + table[0])
        path = None
        for stage, row in zip(self.stages, table[1:]):
            if stage.path != path:
                path = stage.path
                lines.append(f"  {self.paths.get(path, path)}")
            lines.append("  " + row)
            lines += wrap(stage.what, indent, indent)
            lines += wrap(f"e.g. {stage.example}", indent, indent + " " * 5)
        lines += ["", self._trace_title()]
        lines += wrap(self.trace_note, "  ", "  ")
        rows = [
            [layer.name, layer.type, format_shape(layer.output_shape), f"{layer.parameters:,}"] for layer in self.layers
        ]
        rows.append(["total", "", "", f"{self.parameters:,}"])
        lines.append("")
        lines += ["  " + line for line in aligned(["Layer", "Type", "Output shape", "Parameters"], rows, right={3})]
        return "\n".join(line.rstrip() for line in lines)

    def to_markdown(self) -> str:
        """The same as Markdown, for docs: headings and two tables."""

        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [
            f"## {self._heading()}",
            "",
            f"**Idea.** {self.idea}",
            "",
            f"Weights: {self.model['weights']}; model in eval mode.",
            "",
            f"### Data flow - {len(self.stages)} stages",
            "",
            "| # | Path | Stage | What it does | Input shape | Output shape | Example |",
            "|---:|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {i} | {s.path} | {cell(s.name)} | {cell(s.what)} | {format_shape(s.input_shape)} | "
            f"{format_shape(s.output_shape)} | {cell(s.example)} |"
            for i, s in enumerate(self.stages, start=1)
        ]
        lines += [
            "",
            f"### {self._trace_title()}",
            "",
            cell(self.trace_note),
            "",
            "| Layer | Type | Output shape | Parameters |",
            "|---|---|---|---:|",
        ]
        lines += [
            f"| {cell(layer.name)} | {cell(layer.type)} | {format_shape(layer.output_shape)} | {layer.parameters:,} |"
            for layer in self.layers
        ]
        lines.append(f"| **total** | | | **{self.parameters:,}** |")
        return "\n".join(lines)


def wrap(text: str, first: str, rest: str) -> list[str]:
    """`text` in lines of at most WIDTH columns, the first indented by `first`, the others by `rest`."""
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def format_shape(shape: tuple[int, ...] | None) -> str:
    """(8, 1, 28, 28) as "(8, 1, 28, 28)"; None (a stage that starts from fresh noise) as "-"."""
    if shape is None:
        return "-"
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def aligned(header: list[str], rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    """Rows as text lines with aligned columns (the `right` ones right-aligned), the header first."""
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(cells)
        ).rstrip()

    return [line(header), *(line(row) for row in rows)]


# ---------------------------------------------------------------- the entry points


def explain_model(
    model: str | Path | GenerativeModel | Run,
    data: str | ImageDataset | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    size: int | tuple[int, int] | None = None,
    model_config: dict[str, Any] | None = None,
    prompt: str | None = None,
) -> Explanation:
    """Explain family `model` (a registry name, untrained, its weights drawn with `seed`) on `data`.

    `data` is a dataset name (default mnist-5k, fortunes for a text family; its train split is used,
    resized to `size` when given) or an ImageDataset; `model_config` sets fields of the family's
    config, as for `genlab.train`. `model` may also be a built GenerativeModel (explained as it is),
    or a Run or a run directory (then this is `explain_run`). A text family's explanation
    (genlab.explain.text) also reads `prompt`. The same seed gives the same Explanation.
    """
    if isinstance(model, (Run, Path)) or (isinstance(model, str) and model not in MODELS):
        if not isinstance(model, Run) and not is_zoo_spec(model) and not is_run_dir(model):
            close = difflib.get_close_matches(str(model), MODELS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise GenlabError(
                f"{str(model)!r} is neither a model family{hint} nor a run directory (a folder with "
                f"run.json, written by `genlab train`); families: {', '.join(sorted(MODELS))}"
            )
        given = [flag for flag, value in (("a size", size), ("model settings", model_config)) if value]
        if given:
            raise GenlabError(f"a run is explained with its own model and settings; drop {' and '.join(given)}")
        return explain_run(model, seed, batch_size=batch_size, data=data, prompt=prompt)
    if isinstance(model, str) and is_text_family(model):
        from genlab.explain.text import explain_text_model

        if size is not None:
            raise GenlabError("--size resizes images; a text family reads tokens: drop --size")
        return explain_text_model(
            model,
            data,
            batch_size=batch_size,
            seed=seed,
            model_config=model_config,
            prompt=prompt,
        )
    _no_prompt(prompt, model.family if isinstance(model, GenerativeModel) else model)
    dataset = _load(data if data is not None else DEFAULT_DATA, size)
    if isinstance(model, GenerativeModel):
        network, weights = model, "the model's as given"
    else:
        with rng.preserved(torch.device("cpu")):
            torch.manual_seed(seed)  # the initial weights depend on the seed only, as in `genlab.train`
            network = build_model(model, dataset, model_config)
        weights = f"untrained (initialised with seed {seed})"
    split = None if isinstance(data, ImageDataset) else "train"
    return _explain(network, dataset, split, size, batch_size, seed, {"weights": weights, "run": None})


def explain_run(
    run: str | Path | Run,
    seed: int = 0,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    data: str | ImageDataset | None = None,
    prompt: str | None = None,
) -> Explanation:
    """Explain a trained run: its model and weights on a batch of its training data (or of `data`); a text run
    also on `prompt` (genlab.explain.text)."""
    run = run if isinstance(run, Run) else Run.load(run)
    if isinstance(run.model, GeneratesText):
        from genlab.explain.text import explain_text_run

        return explain_text_run(run, seed, batch_size=batch_size, data=data, prompt=prompt)
    _no_prompt(prompt, run.family)
    info = run.info["data"]
    size = info.get("size")
    if data is None:
        if info.get("in_memory"):
            raise GenlabError(f"{run.path} was trained on a dataset in memory; pass that dataset as data")
        data = info["spec"]
    dataset = _load(data, size)
    split = None if isinstance(data, ImageDataset) else "train"
    return _explain(
        run.model, dataset, split, size, batch_size, seed, {"weights": trained_weights(run), "run": run.name}
    )


def trained_weights(run: Run) -> str:
    """How an explanation names a trained run's weights: "trained (N epochs, PATH)"."""
    epochs = run.info["epochs_completed"]
    return f"trained ({epochs} epoch{'s' if epochs != 1 else ''}, {run.path})"


def _no_prompt(prompt: str | None, family: str) -> None:
    if prompt is not None:
        raise GenlabError(f"--prompt belongs to text models; a {family} model draws images: drop --prompt")


def _load(data: str | ImageDataset, size) -> ImageDataset:
    if isinstance(data, ImageDataset):
        return data
    return load_dataset(data, "train", size=tuple(size) if isinstance(size, list) else size)


def _explain(
    model: GenerativeModel,
    dataset: ImageDataset,
    split: str | None,
    size,
    batch_size: int,
    seed: int,
    model_info: dict[str, Any],
) -> Explanation:
    """Measure the stages and trace the prediction pass of `model` on a seeded batch of `dataset`
    (its `split`, resized to `size`: for the record)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GenlabError(f"the batch size must be a positive integer, got {batch_size!r}")
    if not len(dataset):
        raise GenlabError(f"the dataset {dataset.name} has no images to explain with")
    if dataset.image_shape != model.data.image_shape:
        raise GenlabError(
            f"this {model.family} model takes {'x'.join(map(str, model.data.image_shape))} images, "
            f"but {dataset.name} has {'x'.join(map(str, dataset.image_shape))}"
        )
    generator = torch.Generator().manual_seed(seed)  # the batch and every noise draw of the stages
    indices = torch.randperm(len(dataset), generator=generator)[:batch_size]
    batch = dataset.subset(indices)
    device = model.device
    # Eval mode: BatchNorm's running statistics, no dropout, what sampling and validation see.
    with eval_mode(model), torch.no_grad(), rng.preserved(device):
        torch.manual_seed(seed)  # anything a family draws from torch's global generator
        stages, x = input_stages(len(dataset), indices, batch.images, batch.labels)
        x = x.to(device)  # (B, C, H, W) in [0, 1]
        labels = batch.labels.to(device) if batch.labels is not None and model.conditional else None
        stages += model.pipeline_stages(x, labels, generator)
        prediction = model.prediction_pass(x, labels, generator)
        layers = trace_layers(prediction)
    parameters = sum(layer.parameters for layer in layers)
    note = f"{prediction.note}; a forward hook on every layer"
    unused = sum(p.numel() for p in prediction.network.parameters()) - parameters
    if unused:
        note += f" ({unused:,} of its parameters took no part in this call)"
    data = {
        "spec": dataset.name,
        "split": split,
        "size": list(size) if isinstance(size, (tuple, list)) else size,
        "images": len(dataset),
        "image_shape": list(dataset.image_shape),
        "batch_size": len(indices),
        "indices": indices.tolist(),
        "labels": None if batch.labels is None else batch.labels.tolist(),
    }
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))  # tuples as lists, as in run.json
    model_info = {"config": config, "conditional": model.conditional, **model_info}
    return Explanation(
        model.family, model.idea, data, model_info, seed, stages, layers, parameters, prediction.network_name, note
    )


# ---------------------------------------------------------------- the prediction trace


def trace_layers(prediction: PredictionPass) -> list[Layer]:
    """Run the pass once with a forward hook on every layer: the input, each layer at its first call, the output.

    A layer is a module without children, or one with parameters of its own (e.g. a coupling's
    scale); each row counts the module's own parameters, so the rows sum to the network's.
    """
    network = prediction.network
    seen: dict[nn.Module, Layer] = {}  # insertion order is call order

    def own_parameters(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters(recurse=False))

    def hook_for(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if module not in seen:  # a module called twice keeps its first row
                seen[module] = Layer(name, type(module).__name__, first_shape(output), own_parameters(module))

        return hook

    handles = [
        module.register_forward_hook(hook_for(name or prediction.network_name))
        for name, module in network.named_modules()
        if own_parameters(module) or (name and next(module.children(), None) is None)
    ]
    try:
        output = prediction.run()
    finally:
        for handle in handles:
            handle.remove()
    return [
        Layer("input", prediction.input_name, tuple(prediction.inputs.shape), 0),
        *seen.values(),
        Layer("output", prediction.output_name, first_shape(output), 0),
    ]


def first_shape(output: Any) -> tuple[int, ...]:
    """The shape of a module's output: a tensor's, or the first tensor's of a tuple (e.g. (y, log-det))."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return tuple(item.shape)
    return ()
