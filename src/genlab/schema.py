"""What the JSON that genlab reads back from a run must look like: one declared schema per file, one check.

    validate(info, RUN, "runs/vae/run.json", "restore it or train the run again")
    # GenlabError: runs/vae/run.json field data.shape must be an object, not 5: restore it or ...

A schema is a tuple of `Field`s. A field's path leads into the JSON value: "model.config" is the key
"config" of the object under "model", "*" stands for every key of an object or every item of a list,
and "" is the value itself. Fields are checked in order, parents before their children; a child whose
parent is absent (an optional parent) or of another kind (checked by the parent's own field) is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from genlab.errors import GenlabError

# JSON kinds by name, with the words a message uses for each.
KINDS = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
STATUSES = ("running", "completed", "interrupted", "failed", "diverged")
MAX_EPOCHS = 2**31 - 1  # epoch numbers seed generators with (seed, epoch): far below where that would overflow


@dataclass(frozen=True)
class Field:
    """One value of a JSON document: where it is, its kinds ("integer|null"), and its bounds."""

    path: str
    kinds: str
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    length: int | None = None  # of a list


# run.json: what a run is (the format's name and version come first: a newer format may differ in the rest).
RUN_HEADER = (
    Field("", "object"),
    Field("format", "string", choices=("genlab-run",)),
    Field("format_version", "integer", minimum=1),
)
RUN = (
    *RUN_HEADER,
    Field("genlab_version", "string", optional=True),
    Field("model", "object"),
    Field("model.name", "string"),
    Field("model.config", "object"),
    Field("data", "object"),
    Field("data.spec", "string"),
    Field("data.in_memory", "boolean", optional=True),
    Field("data.size", "integer|array|null", optional=True, minimum=1, length=2),
    Field("data.size.*", "integer", minimum=1),
    Field("data.train_images", "integer", optional=True, minimum=0),
    Field("data.test_images", "integer", optional=True, minimum=0),
    Field("data.fingerprint", "string"),
    Field("data.shape", "object"),
    Field("data.shape.channels", "integer", optional=True, minimum=1),  # images (a text run has none)
    Field("data.shape.height", "integer", optional=True, minimum=1),
    Field("data.shape.width", "integer", optional=True, minimum=1),
    Field("data.shape.vocabulary", "integer", optional=True, minimum=2),  # text: its tokens
    Field("data.shape.tokenizer", "string", optional=True),
    Field("data.train_tokens", "integer", optional=True, minimum=0),
    Field("data.test_tokens", "integer", optional=True, minimum=0),
    Field("data.train_bytes", "integer", optional=True, minimum=0),
    Field("data.test_bytes", "integer", optional=True, minimum=0),
    Field("data.shape.num_classes", "integer", optional=True, minimum=0),
    Field("data.shape.class_names", "array|null", optional=True),
    Field("data.shape.class_names.*", "string"),
    Field("train", "object"),
    Field("train.epochs", "integer", minimum=1, maximum=MAX_EPOCHS),
    Field("train.batch_size", "integer", minimum=1),
    Field("train.seed", "integer", minimum=0, maximum=2**32 - 1),
    Field("train.precision", "string", optional=True),
    Field("train.compile", "boolean", optional=True),
    Field("train.processes", "integer", optional=True, minimum=1),
    Field("train.default_steps", "integer", optional=True, minimum=1),  # when epochs came from the family's budget
    # Epochs between validations; absent (runs written before the setting): every epoch.
    Field("train.validate_every", "integer", optional=True, minimum=1, maximum=MAX_EPOCHS),
    Field("train.init_from", "string", optional=True),  # the run or zoo model whose weights it started from
    Field("status", "string", choices=STATUSES),
    Field("epochs_completed", "integer", minimum=0, maximum=MAX_EPOCHS),
    Field("message", "string", optional=True),
)

# The metadata of model.safetensors (older files may lack any of it).
MODEL = (
    Field("", "object"),
    Field("format", "string", optional=True, choices=("genlab-model",)),
    Field("family", "string", optional=True),
    Field("epoch", "integer", optional=True, minimum=0),
    Field("step", "integer", optional=True, minimum=0),
    Field("storage", "string", optional=True, choices=("float16",)),  # zoo files: weights stored at half precision
)

# The metadata of state.safetensors: where training stopped, and each optimizer's state that is not a tensor.
STATE = (
    Field("", "object"),
    Field("format", "string", choices=("genlab-state",)),
    Field("epoch", "integer", minimum=0, maximum=MAX_EPOCHS),
    Field("progress", "object|null", optional=True),
    Field("progress.step", "integer", minimum=0),
    Field("progress.images_seen", "integer", minimum=0),
    Field("progress.seconds", "number", minimum=0),
    Field("progress.totals", "object"),
    Field("progress.totals.*", "number"),
    Field("optimizers", "object"),
    Field("optimizers.*", "object"),
    Field("optimizers.*.param_groups", "array"),
    Field("optimizers.*.param_groups.*", "object"),
    Field("optimizers.*.param_groups.*.params", "array"),
    Field("optimizers.*.param_groups.*.params.*", "integer", minimum=0),
    Field("optimizers.*.plain_state", "object"),
    Field("optimizers.*.plain_state.*", "object"),
    Field("optimizers.*.plain_state.*.*", "number|boolean|null"),
)

# One line of history.jsonl: the epoch, and numbers (seconds, images/s, the family's losses and scores).
HISTORY_RECORD = (
    Field("", "object"),
    Field("epoch", "integer", minimum=1, maximum=MAX_EPOCHS),
    Field("seconds", "number", minimum=0),
    Field("images_per_second", "number", minimum=0),
    Field("*", "number"),
)

# What `genlab train`'s Quality section reads of a metrics.json already in the run: whose weights it measured
# (genlab.eval.final.save keeps one of the same epoch).
METRICS_SOURCE = (
    Field("", "object"),
    Field("source", "object"),
    Field("source.kind", "string"),
    Field("source.epochs", "integer|null", optional=True, minimum=0),
    Field("counts", "object", optional=True),
    Field("counts.samples", "integer", optional=True, minimum=0),
    Field("metrics_selected", "array", optional=True),
    Field("metrics_selected.*", "string"),
)


def validate(value: Any, schema: Sequence[Field], source: str, remedy: str) -> None:
    """Raise GenlabError naming `source` (a file, or a line of one) and the first field of `value` that
    breaks `schema`; `remedy` says what to do about it."""
    for field in schema:
        keys = field.path.split(".") if field.path else []
        for path, present, found in _values(value, keys, []):
            if not present and not field.optional:
                raise GenlabError(f"{source} lacks {path}: {remedy}")
            problem = _problem(field, found) if present else ""
            if problem:
                where = f"{source} field {path}" if path else source
                raise GenlabError(f"{where} {problem}: {remedy}")


def kind_of(value: Any) -> str:
    """The JSON kind of a parsed value ("integer", "object", ...), or its Python type's name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    kinds = {float: "number", str: "string", list: "array", dict: "object"}
    return kinds.get(type(value), type(value).__name__)


def _values(value: Any, keys: list[str], trail: list[str]) -> Iterator[tuple[str, bool, Any]]:
    """(dotted path, present, value) of every value that `keys` lead to from `value`."""
    if not keys:
        yield ".".join(trail), True, value
        return
    key, rest = keys[0], keys[1:]
    if key == "*":
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for name, item in items:
            yield from _values(item, rest, [*trail, str(name)])
    elif isinstance(value, dict):
        if key in value:
            yield from _values(value[key], rest, [*trail, key])
        elif not rest:
            yield ".".join([*trail, key]), False, None


def _problem(field: Field, value: Any) -> str:
    """What is wrong with `value` under `field`, or ""."""
    allowed = field.kinds.split("|")
    kind = kind_of(value)
    if kind not in allowed and not (kind == "integer" and "number" in allowed):
        expected = " or ".join(KINDS[k] for k in allowed)
        return f"must be {expected}, not {_shown(value)}"
    if field.choices and value not in field.choices:
        return f"must be one of {', '.join(map(str, field.choices))}, not {_shown(value)}"
    if kind in ("integer", "number"):
        if field.minimum is not None and value < field.minimum:
            return f"must be at least {field.minimum}, not {_shown(value)}"
        if field.maximum is not None and value > field.maximum:
            return f"must be at most {field.maximum}, not {_shown(value)}"
    if kind == "array" and field.length is not None and len(value) != field.length:
        return f"must be a list of {field.length} items, not {len(value)}"
    return ""


def _shown(value: Any) -> str:
    """`value` as the message quotes it: short, on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
