"""The run directory: a documented, stable format for one training run.

    runs/NAME/
      run.json           format version, genlab version, model name + config, data, train config, status
      model.safetensors  weights for sampling (metadata: family, epoch)
      state.safetensors  everything needed to resume exactly, as ONE atomic file: the weights,
                         every optimizer's state and the RNG state at the end of an epoch
      history.jsonl      one JSON object per epoch
      samples/           epoch_0001.png ... grids from a fixed noise seed (and `genlab sample`'s seed_N files)
      metrics.json       what `genlab eval` measured (memorization.png beside it); report.html

Every JSON file is checked against its declared schema (genlab.schema) when it is read.

state.safetensors carries its own copy of the weights so that a crash between writing the
two files can never pair weights of one epoch with optimizer state of another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab import rng, schema
from genlab.data.transforms import binarize
from genlab.errors import GenlabError
from genlab.io import (
    atomic_write_bytes,
    atomic_write_json,
    load_tensors,
    read_json,
    refuse_pickle,
    save_tensors,
    writing,
)
from genlab.models import GenerativeModel, build_model, families_taking, families_with, stored_config
from genlab.models.base import (
    CanComplete,
    GeneratesText,
    HasLatentSpace,
    HasSamplerOptions,
    ShowsSamplingChain,
    flag_list,
    spec_from_dict,
)

FORMAT_VERSION = 1
RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"  # written by `genlab eval`, read by report and compare
SAMPLES_DIR = "samples"
LOCK_FILE = ".lock"
REPORT_FILE = "report.html"  # written by `genlab report`
PAIRS_FILE = "memorization.png"  # written by `genlab eval` beside metrics.json
TOKENIZER_FILE = "tokenizer.json"  # a text run's tokenizer (genlab.data.tokenization), written when it starts
HALF_PRECISION_FROM = 4096  # values in a tensor from which a zoo file stores it as float16

# Everything genlab writes into a run, and nothing else: --overwrite deletes a folder holding only these.
RUN_ENTRIES = (
    RUN_FILE, MODEL_FILE, STATE_FILE, HISTORY_FILE, METRICS_FILE, REPORT_FILE, PAIRS_FILE, LOCK_FILE, TOKENIZER_FILE
)  # fmt: skip
SAMPLE_NAMES = re.compile(
    r"(epoch_\d+\.(png|txt)|seed_\d+\.(png|npz|txt))"
)  # grids of training, `genlab sample`'s default
LEFT_BY_A_CRASH = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")  # an atomic write cut off (genlab.io)

REMEDY = {
    RUN_FILE: "the run description is damaged; restore it from a copy, or train the run again with --overwrite",
    STATE_FILE: "the training state is damaged; restore it from a copy, or train the run again with --overwrite",
    MODEL_FILE: "the weights file is damaged; restore it from a copy, or train the run again with --overwrite",
    HISTORY_FILE: "the history is damaged; restore it from a copy, or delete the line",
}


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the run at `path` (its .lock file) while training it.

    A second `genlab train` on the same run (say, two --resume at once) is refused instead
    of two writers interleaving their checkpoints. Where there is no fcntl (Windows), no lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(Path(path) / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GenlabError(f"another genlab process is training {path}; wait for it or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a folder holding a run.json (which may still be damaged: read_run_info checks it)."""
    return (Path(path) / RUN_FILE).is_file()


def check_replaceable(path: str | Path) -> None:
    """Raise GenlabError unless the folder `path` is a genlab run that --overwrite may delete.

    A run is a run by its format: run.json names the run format and its version, and the folder
    holds nothing that genlab does not write into a run (the message names the first thing that
    does not belong). A file that is merely called run.json proves nothing.
    """
    path = Path(path)
    refusal = f"{path} is not empty and is not a genlab run"
    if not (path / RUN_FILE).is_file():
        raise GenlabError(f"{refusal} (it has no {RUN_FILE}); choose another --out")
    try:
        info = json.loads((path / RUN_FILE).read_bytes())
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested without end
        info = None
    if (
        not isinstance(info, dict)
        or info.get("format") != "genlab-run"
        or schema.kind_of(info.get("format_version")) != "integer"
    ):
        raise GenlabError(
            f"{refusal}: its {RUN_FILE} does not name the genlab run format and version; "
            "choose another --out (or delete the folder yourself)"
        )
    stranger = _foreign_entry(path)
    if stranger is not None:
        raise GenlabError(
            f"{refusal}: genlab never writes {stranger} into a run; choose another --out (or move that away yourself)"
        )


def _foreign_entry(path: Path) -> str | None:
    """The first entry of the run folder `path` that genlab does not write there (relative), or None."""
    for entry in sorted(path.iterdir()):
        if entry.is_symlink():
            return f"the link {entry.name}"
        if entry.name == SAMPLES_DIR and entry.is_dir():
            for sample in sorted(entry.iterdir()):
                if sample.is_symlink() or not sample.is_file() or not _written_here(sample.name, SAMPLE_NAMES):
                    return f"{SAMPLES_DIR}/{sample.name}" + ("/" if sample.is_dir() else "")
        elif entry.is_dir():
            return f"the folder {entry.name}"
        elif not entry.is_file() or not _written_here(entry.name, None):
            return entry.name
    return None


def _written_here(name: str, pattern: re.Pattern[str] | None) -> bool:
    """Whether genlab writes a file called `name`: a run's own file (or, with `pattern`, a name it matches),
    or what an atomic write of one left behind."""
    crashed = LEFT_BY_A_CRASH.fullmatch(name)
    if crashed:
        name = crashed["name"]
    return bool(pattern.fullmatch(name)) if pattern is not None else name in RUN_ENTRIES


def read_run_info(path: str | Path) -> dict[str, Any]:
    """Parse run.json of the run at `path` and check it against its schema (genlab.schema.RUN)."""
    path = Path(path)
    if path.is_file():
        refuse_pickle(path)
        raise GenlabError(f"{path} is a file; give the run directory that holds {RUN_FILE} and {MODEL_FILE}")
    if not path.is_dir():
        raise GenlabError(f"{path} does not exist: give a run directory written by `genlab train`")
    source = path / RUN_FILE
    info = read_json(source, "the run's description")
    if not isinstance(info, dict) or info.get("format") != "genlab-run":
        raise GenlabError(f"{source} is not a genlab run description")
    schema.validate(info, schema.RUN_HEADER, str(source), REMEDY[RUN_FILE])
    if info["format_version"] > FORMAT_VERSION:
        raise GenlabError(
            f"{path} was written by a newer genlab (run format {info['format_version']}, this one reads "
            f"{FORMAT_VERSION}); upgrade genlab to read it"
        )
    schema.validate(info, schema.RUN, str(source), REMEDY[RUN_FILE])
    return info


def new_run_info(model: GenerativeModel, data: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """run.json of a fresh run: enough to rebuild the model without any command-line flags."""
    return {
        "format": "genlab-run",
        "format_version": FORMAT_VERSION,
        "genlab_version": genlab.__version__,
        "model": {"name": model.family, "config": dataclasses.asdict(model.config)},
        "data": {**data, "shape": model.data.to_dict()},
        "train": train,
        "status": "running",
        "epochs_completed": 0,
        "message": "",
    }


def save_tokenizer(path: str | Path, tokenizer) -> None:
    """A text run's tokenizer.json: its name, and for BPE the whole trained tokenizer (atomically)."""
    atomic_write_json(Path(path) / TOKENIZER_FILE, tokenizer.to_dict())


def load_tokenizer(path: str | Path):
    """The tokenizer a text run saved (genlab.data.tokenization), checked: a damaged file, or one that is not the
    tokenizer run.json says the model reads (its name and vocabulary), is one clear error."""
    from genlab.data.tokenization import tokenizer_from_dict

    source = Path(path) / TOKENIZER_FILE
    tokenizer = tokenizer_from_dict(read_json(source, "the run's tokenizer"), str(source))
    if (Path(path) / RUN_FILE).is_file():
        shape = read_run_info(path)["data"].get("shape") or {}
        expected = (shape.get("tokenizer"), shape.get("vocabulary"))
        if None not in expected and expected != (tokenizer.name, tokenizer.vocabulary_size):
            raise GenlabError(
                f"{source} holds a {tokenizer.name} tokenizer of {tokenizer.vocabulary_size:,} tokens, but the run's "
                f"model reads {expected[0]} ({expected[1]:,} tokens): the file is not this run's; put back its "
                "own tokenizer.json or train the run again"
            )
    return tokenizer


def writes_text(runs: Sequence[Run], refusal: str, reason: str) -> bool:
    """Whether every run of `runs` writes text (False: every one draws images); a mix raises one GenlabError that
    starts with `refusal`, names the text runs and gives `reason`."""
    writers = [run.name for run in runs if isinstance(run.model, GeneratesText)]
    if writers and len(writers) < len(runs):
        raise GenlabError(
            f"{refusal}: {', '.join(writers)} {'writes' if len(writers) == 1 else 'write'} text and the other runs "
            f"draw images; {reason}"
        )
    return bool(writers)


def write_run_info(path: str | Path, info: dict[str, Any]) -> None:
    """Write run.json atomically."""
    atomic_write_json(Path(path) / RUN_FILE, info)


def model_from_info(info: dict[str, Any], path: str | Path, *, training: bool = False) -> GenerativeModel:
    """Rebuild the (untrained) model that run.json of the run at `path` describes (checked by read_run_info),
    refused if it would not fit in memory to sample from or, with `training=True`, to train."""
    try:
        config = stored_config(info["model"]["name"], info["model"]["config"])
        return build_model(info["model"]["name"], spec_from_dict(info["data"]["shape"]), config, training=training)
    except GenlabError as error:  # an unknown family, a setting out of range, a shape the family cannot take
        raise GenlabError(
            f"{Path(path) / RUN_FILE} fields model and data.shape describe no model genlab can build: {error}"
        ) from None


# ---------------------------------------------------------------- weights and training state


def save_model(path: str | Path, model: GenerativeModel, epoch: int, step: int = 0) -> None:
    """model.safetensors: the weights after `epoch` whole epochs and `step` steps of the next."""
    metadata = {"format": "genlab-model", "family": model.family, "epoch": epoch, "step": step}
    save_tensors(Path(path) / MODEL_FILE, model.state_dict(), metadata)


def save_half_precision_model(path: str | Path, source: str | Path) -> None:
    """Write the model.safetensors of `source` (a run directory) into the run directory `path` with its large
    float32 tensors (HALF_PRECISION_FROM values or more: the weight matrices and kernels, nearly all the bytes)
    stored as float16, for the zoo; biases, norms and small buffers (a VAE's prior) keep float32. `Run.load`
    computes in float32 again."""
    tensors, metadata = load_tensors(Path(source) / MODEL_FILE, "model checkpoint")
    half = {
        key: value.half() if value.dtype == torch.float32 and value.numel() >= HALF_PRECISION_FROM else value
        for key, value in tensors.items()
    }
    save_tensors(Path(path) / MODEL_FILE, half, {**metadata, "storage": "float16"})


def load_model_weights(model: GenerativeModel, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load `tensors` into `model`, with one clear error when they belong to another model."""
    check_model_weights(model, tensors, source)
    model.load_state_dict(tensors)


def check_model_weights(model: GenerativeModel, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Raise GenlabError unless `tensors` are weights of `model`: the same names, shapes and dtypes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    wrong_dtype = [k for k in expected if k in tensors and tensors[k].dtype != expected[k].dtype]
    if missing or unexpected or wrong_shape or wrong_dtype:
        detail = (
            (missing and f"missing {missing[:3]}")
            or (unexpected and f"unexpected {unexpected[:3]}")
            or (wrong_shape and f"wrong shape {wrong_shape[:3]}")
            or f"wrong dtype {wrong_dtype[:3]}"
        )
        raise GenlabError(f"{source} does not hold the weights of the {model.family} model in run.json ({detail})")


def save_checkpoint(
    path: str | Path,
    model: GenerativeModel,
    optimizers: dict[str, torch.optim.Optimizer],
    epoch: int,
    progress: dict[str, Any] | None = None,
) -> None:
    """Write state.safetensors (resume) and then model.safetensors (sampling), each atomically.

    `epoch` is the number of whole epochs done; `progress` (a trainer's EpochProgress as a
    dict) marks a stop inside the next epoch, at a step boundary.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    metadata: dict[str, Any] = {"format": "genlab-state", "epoch": epoch, "progress": progress, "optimizers": {}}
    for name, optimizer in optimizers.items():
        state_tensors, state_json = _flatten_optimizer_state(optimizer.state_dict())
        tensors.update({f"optimizer.{name}.{k}": v for k, v in state_tensors.items()})
        metadata["optimizers"][name] = state_json
    device = next(model.parameters()).device
    tensors.update({f"rng.{kind}": state for kind, state in rng.capture(device).items()})
    save_tensors(Path(path) / STATE_FILE, tensors, metadata)
    save_model(path, model, epoch, progress["step"] if progress else 0)


@dataclasses.dataclass
class Checkpoint:
    """state.safetensors, read and checked against the model and optimizers it is for, not yet loaded."""

    epoch: int  # whole epochs done
    progress: dict[str, Any] | None  # how far the next epoch got (a stop at a step boundary), or None
    weights: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]]  # name -> a state_dict for Optimizer.load_state_dict
    rng: dict[str, torch.Tensor]


def read_checkpoint(
    path: str | Path, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer]
) -> Checkpoint:
    """Read state.safetensors of the run at `path` and check all of it before anything is loaded: its
    metadata against its schema, the weights against `model`, every optimizer state tensor's shape and
    dtype against its parameter, and the random-number state. A crafted file is refused, never loaded."""
    source = Path(path) / STATE_FILE
    tensors, metadata = load_tensors(source, "training state")
    if metadata.get("format") != "genlab-state":
        raise GenlabError(f"{source} is not a genlab training state")
    schema.validate(metadata, schema.STATE, f"{source} metadata", REMEDY[STATE_FILE])
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    check_model_weights(model, weights, source)
    states = {}
    for name, optimizer in optimizers.items():
        if name not in metadata["optimizers"]:
            raise GenlabError(f"{source} has no state for optimizer {name!r}")
        prefix = f"optimizer.{name}."
        state_tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        states[name] = _checked_optimizer_state(optimizer, name, state_tensors, metadata["optimizers"][name], source)
    if "rng.cpu" not in tensors:
        raise GenlabError(f"{source} has no random-number state; it cannot resume exactly")
    random_states = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    _check_random_states(random_states, next(model.parameters()).device, source)
    return Checkpoint(metadata["epoch"], metadata.get("progress"), weights, states, random_states)


def load_checkpoint(
    path: str | Path, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer]
) -> tuple[int, dict[str, Any] | None]:
    """Restore weights, optimizer state and RNG state from state.safetensors (checked whole first).

    Returns (whole epochs done, progress inside the next epoch or None).
    """
    checkpoint = read_checkpoint(path, model, optimizers)
    model.load_state_dict(checkpoint.weights)
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint.optimizers[name])
    rng.restore(checkpoint.rng, next(model.parameters()).device)  # a state from another device kind is ignored
    return checkpoint.epoch, checkpoint.progress


def _flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors ("state.<param>.<key>") and JSON for the rest."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value
            else:
                plain.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain}


def _checked_optimizer_state(
    optimizer: torch.optim.Optimizer,
    name: str,
    tensors: dict[str, torch.Tensor],
    state_json: dict[str, Any],
    source: Path,
) -> dict[str, Any]:
    """The state_dict that `_flatten_optimizer_state` split, put together again once every part of it fits
    `optimizer`: its parameter groups, each state tensor's shape and dtype against its parameter (a wrong
    one would be read out of bounds by the fused and foreach kernels), and the step counts."""
    remedy = REMEDY[STATE_FILE]
    field = f"{source} metadata field optimizers.{name}.param_groups"
    groups, saved_groups = optimizer.param_groups, state_json["param_groups"]
    if len(saved_groups) != len(groups):
        raise GenlabError(f"{field} has {len(saved_groups)} groups, the model's optimizer has {len(groups)}: {remedy}")
    params: dict[int, torch.Tensor] = {}
    merged_groups = []
    for index, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(saved["params"]) != len(group["params"]):
            raise GenlabError(
                f"{field}.{index}.params lists {len(saved['params'])} parameters, "
                f"the model's optimizer has {len(group['params'])}: {remedy}"
            )
        params.update(zip(saved["params"], group["params"]))
        for key, value in group.items():
            if key != "params" and key in saved and not _same_kind(value, saved[key]):
                raise GenlabError(
                    f"{field}.{index}.{key} is {saved[key]!r}, unlike the optimizer's {value!r}: {remedy}"
                )
        # a setting the file lacks (one a newer torch added) keeps the value the run's config gives
        merged_groups.append({**{k: v for k, v in group.items() if k != "params"}, **saved})
    if len(params) != sum(len(group["params"]) for group in groups):
        raise GenlabError(f"{field} names a parameter twice: {remedy}")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        match = re.fullmatch(r"state\.(\d+)\.(.+)", key)
        if match is None or int(match[1]) not in params:
            raise GenlabError(
                f"{source} tensor optimizer.{name}.{key} is the state of none of the optimizer's parameters: {remedy}"
            )
        state.setdefault(int(match[1]), {})[match[2]] = value
    for key, entries in state_json["plain_state"].items():
        if not key.isdigit() or int(key) not in params:
            raise GenlabError(
                f"{source} metadata field optimizers.{name}.plain_state.{key} is the state of none of "
                f"the optimizer's parameters: {remedy}"
            )
        state.setdefault(int(key), {}).update(entries)
    reference = _state_reference(optimizer)
    for param_id, entries in state.items():
        if reference is not None and set(entries) != set(reference):
            raise GenlabError(
                f"{source} holds state {sorted(entries)} of optimizer {name}'s parameter {param_id}, "
                f"not {sorted(reference)}: {remedy}"
            )
        for key, value in entries.items():
            problem = _state_problem(key, value, params[param_id], None if reference is None else reference[key])
            if problem:
                raise GenlabError(f"{source} state optimizer.{name}.state.{param_id}.{key} {problem}: {remedy}")
    return {"state": state, "param_groups": merged_groups}


def _same_kind(current: Any, saved: Any) -> bool:
    """Whether a saved optimizer setting may stand where the optimizer now has `current`."""
    if current is None or isinstance(current, bool):  # flags such as fused: None or a bool, by device
        return saved is None or isinstance(saved, bool)
    if isinstance(current, (int, float)):
        return schema.kind_of(saved) in ("integer", "number") and _finite(saved)
    if isinstance(current, (tuple, list)):
        return isinstance(saved, list) and len(saved) == len(current) and all(map(_same_kind, current, saved))
    if isinstance(current, str):
        return isinstance(saved, str)
    return True


def _state_reference(optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """The state this kind of optimizer keeps per parameter ({key: an example value}), from one step of
    a copy with the same settings on a one-number parameter; None for one that cannot step on its own."""
    first = optimizer.param_groups[0]["params"][0]
    probe = torch.zeros(1, dtype=first.dtype, device=first.device, requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    try:
        copy = type(optimizer)([probe], **optimizer.defaults)
        copy.step()
    except (TypeError, RuntimeError):  # an optimizer that needs a closure, or settings it takes otherwise
        return None
    return dict(copy.state[probe])


def _state_problem(key: str, value: Any, param: torch.Tensor, example: Any) -> str:
    """What is wrong with one saved optimizer state entry of `param`, or "". `example` is what a fresh
    optimizer keeps under `key` (None when unknown: then "step" is a count, the rest shaped as `param`)."""
    if example is None:
        example = torch.zeros(()) if key == "step" else torch.zeros(1, dtype=param.dtype)
    if not isinstance(example, torch.Tensor):  # a plain number or flag
        numeric = ("integer", "number")
        kinds = {schema.kind_of(value), schema.kind_of(example)}
        if isinstance(value, torch.Tensor) or not (kinds <= set(numeric) or len(kinds) == 1):
            return f"must be {schema.KINDS[schema.kind_of(example)]}, not {value!r}"
        number = value if kinds <= set(numeric) else 0
    elif not isinstance(value, torch.Tensor):
        return f"must be a tensor, not {value!r}"
    elif example.dim() > 0:  # one value per element of the parameter (Adam's moments)
        if value.shape != param.shape or value.dtype != param.dtype:
            return (
                f"has shape {list(value.shape)} and dtype {value.dtype}, "
                f"but its parameter has {list(param.shape)} and {param.dtype}"
            )
        return ""
    elif value.shape != () or value.dtype != example.dtype:  # a count (Adam's step)
        return f"must be one {example.dtype} number, not shape {list(value.shape)} and dtype {value.dtype}"
    else:
        number = float(value)
    if not _finite(number) or (key == "step" and number < 0):
        return f"must be a finite count, not {number}"
    return ""


def _finite(number: float) -> bool:
    """Whether a JSON number is a finite float (an integer too long for one is not: torch computes in floats)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _check_random_states(states: dict[str, torch.Tensor], device: torch.device, source: Path) -> None:
    """Raise GenlabError unless the saved states of the generators that `rng.restore` will set are valid,
    by setting each on a throwaway generator (the global ones are untouched until everything is checked)."""
    for kind, current in rng.capture(device).items():
        if kind not in states:
            continue  # a state from another device kind is not restored
        saved = states[kind]
        valid = saved.shape == current.shape and saved.dtype == current.dtype
        if valid:
            try:
                torch.Generator(device=device if kind != "cpu" else "cpu").set_state(saved)
            except RuntimeError:
                valid = False
        if not valid:
            raise GenlabError(f"{source} holds an invalid {kind} random-number state: {REMEDY[STATE_FILE]}")


# ---------------------------------------------------------------- history


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of history.jsonl, oldest first, each checked against its schema (genlab.schema.HISTORY_RECORD);
    a last line cut off by a crash is left out."""
    file = Path(path) / HISTORY_FILE
    if not file.exists():
        return []
    lines = [line for line in file.read_bytes().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line.decode())
        except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, nested without end
            if number == len(lines):  # an append cut off by a crash: that epoch was never checkpointed
                break
            reason = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "is not valid JSON"
            raise GenlabError(f"{file} line {number} {reason}: {REMEDY[HISTORY_FILE]}") from None
        schema.validate(record, schema.HISTORY_RECORD, f"{file} line {number}", REMEDY[HISTORY_FILE])
        records.append(record)
    return records


def append_history(path: str | Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to history.jsonl and fsync it."""
    file = Path(path) / HISTORY_FILE
    with writing(file), open(file, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def truncate_history(path: str | Path, epochs: int) -> None:
    """Keep the history of the first `epochs` epochs (a resumed run redoes the rest)."""
    kept = [r for r in read_history(path) if r["epoch"] <= epochs]
    atomic_write_bytes(Path(path) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in kept).encode())


# ---------------------------------------------------------------- the loaded run


def check_sampler_options(model: GenerativeModel, options: dict[str, Any]) -> dict[str, Any]:
    """The sampler options (e.g. --sampler, --guidance) as the family declares them; a family that declares
    none refuses any, naming the families that take them."""
    if isinstance(model, HasSamplerOptions):
        return model.check_sampler_options(options)
    if options:
        takers = families_taking(options)
        raise GenlabError(
            f"the {model.family} family samples without {flag_list(list(options))}; "
            f"only {', '.join(takers) or 'other'} models take {'it' if len(options) == 1 else 'them'}"
        )
    return {}


class WholeCharacters:
    """Tokens decoded as they are drawn, passed on in whole characters: a byte-level token may end inside a
    UTF-8 character, which is held back until a later token completes it."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.shown = ""  # the text passed on so far

    def add(self, token: int) -> str:
        """The characters `token` completes ("" while one is still incomplete)."""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return ""
        piece, self.shown = text[len(self.shown) :], text
        return piece


class Run:
    """A finished (or interrupted) run, loaded for sampling and inspection."""

    def __init__(self, path: str | Path, info: dict[str, Any], model: GenerativeModel, zoo_name: str | None = None):
        self.path = Path(path)
        self.info = info
        self.model = model
        self.zoo_name = zoo_name  # a model of genlab's zoo (read-only): its name, else None

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Run:
        """Read run.json, rebuild the model and load model.safetensors (never unpickles).

        `path` is a run directory or a zoo model, "zoo:NAME" (its files' checksums verified first).
        """
        from genlab import zoo

        shipped = zoo.entry(str(path)) if zoo.is_zoo_spec(path) else None  # the catalog read once
        zoo_name = None if shipped is None else shipped.name
        path = Path(path) if shipped is None else zoo.resolve(shipped)
        info = read_run_info(path)
        model = model_from_info(info, path)
        source = Path(path) / MODEL_FILE
        if not source.exists():
            if info["status"] == "running":
                raise GenlabError(f"{path} has no {MODEL_FILE} yet: it is still in its first epoch; wait for it to end")
            raise GenlabError(
                f"{path} has no {MODEL_FILE}: the run stopped ({info['status']}) before its first epoch ended; "
                f"continue it with: genlab train --resume --out {path}"
            )
        tensors, metadata = load_tensors(source, "model checkpoint")
        schema.validate(metadata, schema.MODEL, f"{source} metadata", REMEDY[MODEL_FILE])
        if metadata.get("family") not in (None, model.family):
            raise GenlabError(f"{source} holds a {metadata['family']} model but run.json describes a {model.family}")
        if metadata.get("storage") == "float16":  # a zoo file: float weights kept at half size, computed in float32
            tensors = {key: value.float() if value.dtype == torch.float16 else value for key, value in tensors.items()}
        load_model_weights(model, tensors, source)
        return cls(path, info, model.to(device).eval(), zoo_name)

    def output_path(self, inside_run: str, zoo_suffix: str) -> Path:
        """Where a command writes its output by default: `inside_run` within the run directory, or, for a
        zoo model (read-only), NAME`zoo_suffix` in the current folder."""
        return Path(self.zoo_name + zoo_suffix) if self.zoo_name else self.path / inside_run

    @property
    def name(self) -> str:
        """How a command names this run: zoo:NAME for a zoo model, else its path."""
        return f"zoo:{self.zoo_name}" if self.zoo_name else str(self.path)

    @property
    def family(self) -> str:
        """The model family's registry name, e.g. "vae"."""
        return self.model.family

    def data_spec(self) -> tuple[str, Any]:
        """(data spec, size) the run was trained on, to load its splits again; a dataset given in memory has none."""
        data = self.info["data"]
        if data.get("in_memory"):
            raise GenlabError(f"{self.path} was trained on a dataset in memory; name the data to compare with (--data)")
        return data["spec"], data.get("size")

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of history.jsonl."""
        return read_history(self.path)

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels=None, batch_size: int | None = None, **options
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] on the CPU, drawn `batch_size` at a time (default: the
        family's `sample_batch_size`, 1,000; a diffusion model on the CPU 64).

        `labels` (conditional models): one class for all, or one per image; by default the
        classes in turn. The same generator seed gives the same images for any batch size
        that divides the draws the same way (keep the default to reproduce a file).
        `options` go to the family's sampler (diffusion: sampler, steps, eta, guidance).
        """
        options = check_sampler_options(self.model, options)
        batch_size = batch_size or self.model.sample_batch_size
        self.check_size(n, batch_size)
        labels = self.model.check_labels(n, labels)
        images = torch.empty((0, *self.model.data.image_shape))
        with torch.no_grad():
            for start in range(0, n, batch_size):
                part = None if labels is None else labels[start : start + batch_size]
                count = min(batch_size, n - start)
                batch = self.model.sample(count, generator=generator, labels=part, **options).cpu()
                if start == 0:  # filled in place: the images are held once, not as batches and their concatenation
                    images = torch.empty((n, *batch.shape[1:]), dtype=batch.dtype)
                images[start : start + count] = batch
        return images

    def generate(
        self,
        prompt: str,
        n: int = 1,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        stream: Callable[[str], None] | None = None,
    ) -> list[str]:
        """n continuations of `prompt` by a text run, each `max_new_tokens` tokens long, as text (the prompt not
        repeated). A prompt longer than the model's context keeps its last context - 1 tokens (the model reads no
        more). An empty prompt starts a new document. The same generator seed gives the same text. `stream` (one
        continuation, n = 1) hears the text as it is written, piece by piece (never half a character)."""
        from genlab.data.text import DOCUMENT_SEPARATOR
        from genlab.memory import check_fits

        model = self.text_model()
        tokenizer = self.tokenizer
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenlabError(f"--n must be a positive integer, got {n!r}")
        ids = tokenizer.encode(prompt or DOCUMENT_SEPARATOR)
        check_fits(8 * n * (len(ids) + max_new_tokens), f"writing {n:,} texts", "ask for fewer (--n)")
        written = WholeCharacters(tokenizer)

        def show(token: torch.Tensor, logits: torch.Tensor) -> None:
            assert stream is not None
            piece = written.add(int(token[0, 0]))
            if piece:
                stream(piece)

        drawn = model.generate(
            torch.tensor([ids] * n), max_new_tokens, temperature, top_k, top_p, generator=generator,
            on_token=show if stream is not None and n == 1 else None,
        )  # fmt: skip
        texts = [tokenizer.decode(row[len(ids) :].tolist()) for row in drawn.cpu()]
        if stream is not None and n == 1 and texts[0] != written.shown and texts[0].startswith(written.shown):
            stream(texts[0][len(written.shown) :])  # what was held back (a last, broken character)
        return texts

    def require_images(self, command: str) -> Run:
        """This run, when it draws images; a text run raises one clear error naming `command` and where its numbers
        are (an image measure asked of a text run, e.g. `genlab.evaluate` with image data or metrics)."""
        if isinstance(self.model, GeneratesText):
            raise GenlabError(
                f"{command} measures image models here; {self.name} is a text run: `genlab eval {self.name}` with no "
                "image data or metrics measures its bits per byte, copies and diversity"
            )
        return self

    @functools.cached_property
    def tokenizer(self) -> Any:
        """A text run's tokenizer, read from its directory and checked once (load_tokenizer)."""
        self.text_model()  # a text run, or one clear error
        return load_tokenizer(self.path)

    def text_model(self) -> GeneratesText:
        """The model of a text run; an image run raises one clear error (--prompt needs a text run)."""
        if not isinstance(self.model, GeneratesText):
            raise GenlabError(
                f"a {self.family} run draws images, not text: --prompt needs a text run (genlab train gpt)"
            )
        return self.model

    def sample_chain(
        self, n: int, every: int, generator: torch.Generator | None = None, labels=None, **options
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The sampler's chain for n images, a state every `every` steps from the start to the image:
        (n * states, C, H, W) on the CPU, one row of states per image, their labels, and states per row."""
        model = self.model
        if not isinstance(model, ShowsSamplingChain):
            showing = families_with(ShowsSamplingChain)
            raise GenlabError(
                f"the {self.family} family does not draw through a chain of images; "
                f"--trajectory needs a {' or '.join(showing)} run"
            )
        options = check_sampler_options(model, options)
        steps = options.get("steps") or model.chain_steps
        self.check_size(n * (steps // every + 2))  # x_T, a state every `every` steps, and x_0
        labels = model.check_labels(n, labels)
        with torch.no_grad():
            _, chain = model.sample_chain(n, every, generator=generator, labels=labels, **options)
        images = torch.stack(chain, dim=1).flatten(0, 1).cpu()  # (n * states, C, H, W): one row per image
        return images, None if labels is None else labels.cpu().repeat_interleave(len(chain)), len(chain)

    def interpolate(
        self, strips: int, steps: int, generator: torch.Generator | None = None, labels=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`strips` latent interpolations of `steps` images each: images (strips*steps, C, H, W) and their labels."""
        model = self.model
        if not isinstance(model, HasLatentSpace):
            raise GenlabError(f"the {self.family} family has no latent space to interpolate in")
        self.check_size(strips * steps)
        labels = model.check_labels(strips, labels)
        with torch.no_grad():
            images = torch.cat(
                [
                    model.interpolate(steps, generator, None if labels is None else labels[i]).cpu()
                    for i in range(strips)
                ]
            )
        return images, None if labels is None else labels.cpu().repeat_interleave(steps)

    def complete(
        self,
        image: torch.Tensor,
        rows: int,
        n: int,
        generator: torch.Generator | None = None,
        labels=None,
        batch_size: int = 1000,
    ) -> torch.Tensor:
        """n completions (n, C, H, W) of one image (C, H, W) in [0, 1] that keep its top `rows` rows.

        Autoregressive families only (they draw pixel by pixel, so the rest follows the kept rows).
        A conditional model needs the image's class as `labels`; a binarizing one sees the image
        binarized once with `generator`.
        """
        model = self.model
        if not isinstance(model, CanComplete):
            completers = families_with(CanComplete)
            raise GenlabError(
                f"a {self.family} run cannot complete an image (it does not draw pixel by pixel); "
                f"use a {' or '.join(completers)} run"
            )
        self.check_size(n)
        if model.conditional and labels is None:
            raise GenlabError("a conditional model completes an image of a known class: pass its label (--labels K)")
        labels = model.check_labels(n, labels)
        image = image.to(model.device, torch.float32)
        if model.binary_pixels:
            image = binarize(image, generator)  # the model knows only 0/1 pixels: one seeded binarization
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                part = None if labels is None else labels[start : start + count]
                chunks.append(
                    model.complete(image.expand(count, *image.shape), rows, generator=generator, labels=part).cpu()
                )
        return torch.cat(chunks)

    def check_size(
        self,
        n: int,
        batch_size: int | None = None,
        hint: str = "draw fewer at a time (--n), e.g. into several --format npz files",
    ) -> None:
        """Refuse `n` images that would not fit in memory, before drawing any, with `hint` (what to do): what
        `genlab sample` holds is the float32 images, one batch in flight, and (the default output) their PNG
        grid; an .npz is streamed from the images and needs less."""
        from genlab.images import grid_bytes
        from genlab.memory import check_fits

        data = self.model.data
        in_flight = min(n, batch_size or self.model.sample_batch_size)
        floats = 4 * (n + in_flight) * data.num_pixels
        check_fits(
            floats + grid_bytes(n, data.channels, data.height, data.width),
            f"drawing {n:,} images of {data.channels}x{data.height}x{data.width}",
            hint,
        )

    def __repr__(self) -> str:
        return f"Run({self.name!r}, family={self.family!r}, epochs={self.info.get('epochs_completed')})"


def load(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """A trained run, from its directory or the zoo ("zoo:NAME"): `Run.load`'s short name, `genlab.load`."""
    return Run.load(path, device=device)
