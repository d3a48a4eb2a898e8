"""Hostile run files (issue 18): the formats of a run's files, what --overwrite may delete, resuming
without the training state, crafted optimizer state, tampered JSON, and a full disk.

Each damaged file comes from a small generator of mutations of a fixture run; every case asserts the
promise: exit 2, one line naming the file (and the field), no traceback, the run byte-identical.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load, save

from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes, load_tensors, tensor_format
from genlab.run import append_history, check_replaceable
from tests.hostile.conftest import refused, refused_in_subprocess, run_cli, snapshot

# ---------------------------------------------------------------- helpers: reading and rewriting a run's files


def tensors_and_metadata(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A safetensors file's tensors and genlab's metadata (the JSON under the key "genlab")."""
    data = file.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return load(data), json.loads(header.get("__metadata__", {}).get("genlab", "{}"))


def write_safetensors(file: Path, tensors: dict[str, torch.Tensor], genlab: str, **extra: str) -> None:
    file.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata={"genlab": genlab, **extra}))


def header_length(file: Path) -> int:
    return int.from_bytes(file.read_bytes()[:8], "little")


def pad_header_to(file: Path, length: int) -> None:
    """Rewrite the safetensors `file` (same tensors) so that its header is exactly `length` bytes, by padding
    its metadata with one more key (genlab's own metadata is left out where it alone is too long)."""
    tensors, metadata = tensors_and_metadata(file)
    for kept in ({"genlab": json.dumps(metadata, sort_keys=True)}, {}):
        shortest = len(save(tensors, metadata={**kept, "padding": ""})) - file_bytes(tensors)
        for pad in range(max(0, length - shortest - 8), length - shortest + 8):  # safetensors aligns to 8 bytes
            data = save(tensors, metadata={**kept, "padding": "x" * pad})
            if int.from_bytes(data[:8], "little") == length:
                file.write_bytes(data)
                return
    raise AssertionError(f"no header of {length} bytes for {file}")


def file_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return 8 + sum(t.numel() * t.element_size() for t in tensors.values())


def edit_json(file: Path, change: Callable[[Any], Any]) -> None:
    value = json.loads(file.read_text())
    file.write_text(json.dumps(change(value)))


def setting(path: str, value: Any) -> Callable[[Any], Any]:
    """A change of a JSON document that sets (or, with DELETE, removes) the value at dotted `path`."""

    def change(document: Any) -> Any:
        *parents, last = path.split(".")
        target = document
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return document

    return change


DELETE = object()


# ---------------------------------------------------------------- 1. safetensors or pickle: told apart by structure


PICKLE_LIKE = [640, 896, 1152, 1408]  # little-endian 80 02, 80 03, 80 04, 80 05: a pickle's first two bytes


@pytest.mark.parametrize("length", PICKLE_LIKE)
def test_a_header_length_that_looks_like_a_pickle_opcode_is_still_safetensors(tmp_path, length):
    file = tmp_path / "weights.safetensors"
    file.write_bytes(save({"w": torch.arange(6.0).reshape(2, 3)}))
    pad_header_to(file, length)
    data = file.read_bytes()
    assert data[0] == 0x80 and 2 <= data[1] <= 5
    assert tensor_format(len(data), lambda at, n: data[at : at + n]) == "safetensors"
    assert torch.equal(load_tensors(file)[0]["w"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("length", PICKLE_LIKE)
def test_such_a_file_cut_short_is_called_truncated_not_pickled(tmp_path, length):
    file = tmp_path / "weights.safetensors"
    file.write_bytes(save({"w": torch.arange(6.0).reshape(2, 3)}))
    pad_header_to(file, length)
    file.write_bytes(file.read_bytes()[:100])  # the header itself is cut
    data = file.read_bytes()
    assert tensor_format(len(data), lambda at, n: data[at : at + n]) == "safetensors"
    with pytest.raises(GenlabError, match="truncated or corrupt"):
        load_tensors(file)


@pytest.mark.parametrize("length", PICKLE_LIKE[1:])  # a run's weights never have a header as short as 640 bytes
def test_a_run_whose_weights_header_looks_like_a_pickle_loads(fixture_run, tmp_path, capsys, length):
    run = fixture_run("vae")
    pad_header_to(run / "model.safetensors", length)
    outcome = run_cli(["sample", run, "--n", 4, "--out", tmp_path / "grid.png"], capsys)
    assert outcome.code == 0, outcome.stderr
    outcome = run_cli(["report", run], capsys)
    assert outcome.code == 0, outcome.stderr


def pickled(kind: str) -> bytes:
    class Trap:
        def __reduce__(self):  # would run on unpickling
            return (exec, ("raise SystemExit('unpickled!')",))

    buffer = io.BytesIO()
    if kind == "torch.save":
        torch.save({"trap": Trap()}, buffer)
    elif kind == "legacy torch.save":
        torch.save({"trap": Trap()}, buffer, _use_new_zipfile_serialization=False)
    else:
        pickle.dump(Trap(), buffer, protocol=int(kind[-1]))
    return buffer.getvalue()


PICKLES = ["torch.save", "legacy torch.save", "pickle 2", "pickle 3", "pickle 4", "pickle 5"]


@pytest.mark.parametrize("kind", PICKLES)
def test_pickles_and_torch_save_files_are_still_refused(fixture_run, tmp_path, capsys, kind):
    run = fixture_run("vae")
    (run / "model.safetensors").write_bytes(pickled(kind))
    refused(
        ["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "model.safetensors", "pickled", untouched=run
    )
    offered = tmp_path / "model.pt"
    offered.write_bytes(pickled(kind))
    refused(["sample", offered, "--n", 4], capsys, "model.pt", "pickled", untouched=tmp_path)


# ---------------------------------------------------------------- 2. crafted optimizer state: refused before loading


def craft_state(run: Path, change: Callable[[dict[str, torch.Tensor], dict[str, Any]], None]) -> None:
    tensors, metadata = tensors_and_metadata(run / "state.safetensors")
    change(tensors, metadata)
    write_safetensors(run / "state.safetensors", tensors, json.dumps(metadata))


def first_moment(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k in sorted(tensors) if k.startswith("optimizer.") and k.endswith(".exp_avg"))


def first_step(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k in sorted(tensors) if k.startswith("optimizer.") and k.endswith(".step"))


def shrunk_moments(tensors, metadata):  # the fused Adam kernel reads past their end: a segfault before the fix
    name = first_moment(tensors)
    tensors[name], tensors[name.replace("exp_avg", "exp_avg_sq")] = torch.zeros(1), torch.zeros(1)


def shape_change(tensors, metadata):  # a moment of another shape, bigger than its parameter: garbage, silently
    name = first_moment(tensors)
    tensors[name] = torch.zeros(tensors[name].numel() * 4 + 7)


def dtype_change(tensors, metadata):
    name = first_moment(tensors)
    tensors[name] = tensors[name].double()


def step_shape(tensors, metadata):
    tensors[first_step(tensors)] = torch.ones(100000)


def step_negative(tensors, metadata):
    tensors[first_step(tensors)] = torch.tensor(-1.0)


def moment_missing(tensors, metadata):
    del tensors[first_moment(tensors).replace("exp_avg", "exp_avg_sq")]


def every_moment_missing(tensors, metadata):
    for name in [k for k in tensors if k.endswith(".exp_avg_sq")]:
        del tensors[name]


def renamed(name: str, param_id: str) -> str:
    """optimizer.NAME.state.ID.KEY with another ID."""
    parts = name.split(".")
    return ".".join([*parts[:3], param_id, *parts[4:]])


def stray_parameter(tensors, metadata):
    name = first_moment(tensors)
    tensors[renamed(name, "9999")] = tensors[name].clone()


def unnamed_parameter(tensors, metadata):
    name = first_moment(tensors)
    tensors[renamed(name, "abc")] = tensors.pop(name)


def rng_size(tensors, metadata):
    tensors["rng.cpu"] = tensors["rng.cpu"][:100]


def rng_garbage(tensors, metadata):
    tensors["rng.cpu"] = torch.zeros_like(tensors["rng.cpu"])


def weights_dtype(tensors, metadata):
    name = next(k for k in sorted(tensors) if k.startswith("model."))
    tensors[name] = tensors[name].half()


CRAFTED_STATE = [  # the first ones crashed the process, so they run in a subprocess of their own
    (shrunk_moments, "shape"),
    (step_shape, "step"),
    (shape_change, "shape"),
    (dtype_change, "dtype"),
    (step_negative, "step"),
    (moment_missing, "exp_avg_sq"),
    (every_moment_missing, "exp_avg_sq"),
    (stray_parameter, "9999"),
    (unnamed_parameter, "abc"),
    (rng_size, "random-number state"),
    (rng_garbage, "random-number state"),
    (weights_dtype, "dtype"),
]


@pytest.mark.parametrize("change, named", CRAFTED_STATE[:2], ids=lambda c: getattr(c, "__name__", ""))
def test_crafted_optimizer_tensors_cannot_crash_the_process(fixture_run, change, named):
    run = fixture_run("vae")
    craft_state(run, change)
    refused_in_subprocess(
        ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"], "state.safetensors", named, untouched=run
    )


@pytest.mark.parametrize("change, named", CRAFTED_STATE[2:], ids=lambda c: getattr(c, "__name__", ""))
def test_crafted_optimizer_state_is_refused_before_loading(fixture_run, capsys, change, named):
    run = fixture_run("vae")
    craft_state(run, change)
    refused(
        ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"], capsys, "state.safetensors", named, untouched=run
    )


@pytest.mark.parametrize("family", ["dcgan", "ddpm"])  # two optimizers; several parameter groups of another family
def test_crafted_state_of_other_families_is_refused(fixture_run, capsys, family):
    run = fixture_run(family)
    craft_state(run, shape_change)
    refused(
        ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"],
        capsys,
        "state.safetensors",
        "shape",
        untouched=run,
    )


# ---------------------------------------------------------------- 3. --overwrite deletes a run, and nothing else

TRAIN_SMALL = [
    "train",
    "vae",
    "--data",
    "digits",
    "--epochs",
    1,
    "--latent-dim",
    2,
    "--set",
    "hidden_dim=8",
    "--quiet",
    "--overwrite",
    "--out",
]


def not_a_run(folder: Path) -> None:
    (folder / "run.json").write_text(json.dumps({"experiment": "x"}))


def run_and_thesis(folder: Path) -> None:
    (folder / "thesis.tex").write_text("years of work")


def run_and_sample_notes(folder: Path) -> None:
    (folder / "samples" / "notes.txt").write_text("mine")


def run_and_subfolder(folder: Path) -> None:
    (folder / "data").mkdir()
    (folder / "data" / "x.npz").write_bytes(b"mine")


def run_json_version_text(folder: Path) -> None:
    edit_json(folder / "run.json", setting("format_version", "1"))


def run_json_corrupt(folder: Path) -> None:
    (folder / "run.json").write_text("{not json")


def run_and_symlink(folder: Path) -> None:
    (folder / "elsewhere").symlink_to(folder.parent)


NOT_RUNS = [
    (not_a_run, "run.json"),
    (run_and_thesis, "thesis.tex"),
    (run_and_sample_notes, "samples/notes.txt"),
    (run_and_subfolder, "data"),
    (run_json_version_text, "run.json"),
    (run_json_corrupt, "run.json"),
    (run_and_symlink, "elsewhere"),
]


@pytest.mark.parametrize("damage, named", NOT_RUNS, ids=lambda c: getattr(c, "__name__", ""))
def test_overwrite_refuses_a_folder_that_is_not_a_run(fixture_run, capsys, damage, named):
    folder = fixture_run("vae")
    if damage is not_a_run:
        for item in folder.rglob("*"):
            if item.is_file():
                item.unlink()
        run_and_thesis(folder)
    damage(folder)
    message = refused([*TRAIN_SMALL, folder], capsys, str(folder), "not a genlab run", named, untouched=folder)
    assert "--out" in message


def everything_genlab_writes(folder: Path) -> None:
    for name in ("metrics.json", "report.html", "memorization.png", ".lock", ".model.safetensors.0123456789ab.tmp"):
        (folder / name).write_bytes(b"x")
    for name in ("seed_1.png", "seed_7.npz", ".epoch_0001.png.0123456789ab.tmp"):
        (folder / "samples" / name).write_bytes(b"x")


def test_what_genlab_writes_into_a_run_is_a_run(fixture_run):
    for family in ("vae", "gan", "ddpm"):
        folder = fixture_run(family)
        everything_genlab_writes(folder)
        check_replaceable(folder)  # raises if not
    with pytest.raises(GenlabError, match="notes.txt"):
        run_and_sample_notes(folder)
        check_replaceable(folder)


def test_overwrite_replaces_a_run_with_everything_genlab_writes(fixture_run, capsys):
    folder = fixture_run("vae")
    everything_genlab_writes(folder)
    outcome = run_cli([*TRAIN_SMALL, folder], capsys)
    assert outcome.code == 0, outcome.stderr
    assert not (folder / "metrics.json").exists()
    assert json.loads((folder / "run.json").read_text())["train"]["epochs"] == 1


# ---------------------------------------------------------------- 4. resuming without the training state


@pytest.mark.parametrize("family", ["vae", "gan"])  # the gan fixture was shipped without it
def test_resume_without_state_is_refused(fixture_run, capsys, family):
    run = fixture_run(family)
    (run / "state.safetensors").unlink(missing_ok=True)
    refused(
        ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"],
        capsys,
        "state.safetensors",
        "--overwrite",
        untouched=run,
    )


# ---------------------------------------------------------------- 6. tampered run.json, state metadata, history

RUN_JSON = [
    ("format_version", "1"),
    ("format_version", 1.5),
    ("format_version", None),
    ("format_version", DELETE),
    ("model", "vae"),
    ("model.name", 5),
    ("model.name", "nosuch"),
    ("model.config", 5),
    ("model.config", ["x"]),
    ("model.config", None),
    ("model.config.hidden_dim", "abc"),
    ("model.config.hidden_dim", [8]),
    ("model.config.lr", {"a": 1}),
    ("model.config.arch", 5),
    ("data", "digits"),
    ("data.spec", 5),
    ("data.spec", None),
    ("data.size", "x"),
    ("data.size", [8]),
    ("data.fingerprint", 5),
    ("data.shape", "8x8"),
    ("data.shape", None),
    ("data.shape.channels", "1"),
    ("data.shape.height", -1),
    ("data.shape.num_classes", "ten"),
    ("data.shape.class_names", "0123456789"),
    ("data.shape.class_names.0", 0),
    ("train", None),
    ("train.epochs", "2"),
    ("train.batch_size", 0),
    ("train.seed", -1),
    ("train.seed", "x"),
    ("train.precision", 16),
    ("train.processes", "one"),
    ("train.default_steps", 0),
    ("train.default_steps", "many"),
    ("train.validate_every", 0),
    ("train.validate_every", "often"),
    ("train.validate_every", 2.5),
    ("status", 5),
    ("status", "bogus"),
    ("epochs_completed", "2"),
    ("epochs_completed", -1),
    ("epochs_completed", None),
    ("message", 5),
]


@pytest.mark.parametrize("path, value", RUN_JSON, ids=lambda v: v if isinstance(v, str) else repr(v)[:12])
def test_tampered_run_json_is_refused_by_sample(fixture_run, tmp_path, capsys, path, value):
    run = fixture_run("vae")
    edit_json(run / "run.json", setting(path, value))
    named = ["run.json", "model" if path.startswith("model.") else path]
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, *named, untouched=run)


@pytest.mark.parametrize(
    "path, value",
    [("model.config.class_prior", "yes please"), ("model.config.class_prior", 1), ("model.config.temperature", "hot"),
     ("model.config.temperature", True), ("model.config.temperature", -1.0)],
)  # fmt: skip
def test_a_flows_tampered_prior_settings_are_refused(fixture_run, tmp_path, capsys, path, value):
    run = fixture_run("realnvp")
    edit_json(run / "run.json", setting(path, value))
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "run.json", path.rsplit(".", 1)[1],
            untouched=run)  # fmt: skip


@pytest.mark.parametrize(
    "path, value",
    [("model.config.guidance", "strong"), ("model.config.guidance", True), ("model.config.guidance", -1.0),
     ("model.config.guidance", 2.0), ("model.config.label_dropout", 1.5), ("model.config.label_dropout", "some"),
     ("model.config.class_maps", 3), ("model.config.class_maps", 10**9), ("model.config.class_maps", "few")],
)  # fmt: skip
def test_a_pixelcnns_tampered_guidance_settings_are_refused(fixture_run, tmp_path, capsys, path, value):
    run = fixture_run("pixelcnn")  # unconditional: guidance 2 needs a conditional model
    edit_json(run / "run.json", setting(path, value))
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "run.json", path.rsplit(".", 1)[1],
            untouched=run)  # fmt: skip


@pytest.mark.parametrize("value", ["attention", 3, None, ["flattened"]], ids=repr)
def test_a_critics_tampered_classifier_setting_is_refused(fixture_run, tmp_path, capsys, value):
    run = fixture_run("wgan-gp")
    edit_json(run / "run.json", setting("model.config.classifier_features", value))
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "run.json", "classifier_features",
            untouched=run)  # fmt: skip


@pytest.mark.parametrize("field", ["class_loss", "mode_seeking"])
@pytest.mark.parametrize("value", ["lots", -1.0, None, [10.0]], ids=repr)
def test_a_gans_tampered_loss_weight_is_refused(fixture_run, tmp_path, capsys, field, value):
    """The conditional G's loss weights (the auxiliary classifier's, the mode-seeking term's) as run.json holds them."""
    run = fixture_run("gan")
    edit_json(run / "run.json", setting(f"model.config.{field}", value))
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "run.json", field, untouched=run)


def test_run_json_that_is_not_an_object_is_refused(fixture_run, tmp_path, capsys):
    run = fixture_run("vae")
    for document in (
        "[1, 2]",
        "5",
        "null",
        '"genlab-run"',
        '{"format": "genlab-run"}',
        "[" * 100000 + "]" * 100000,
        "1" * 5000,
    ):
        (run / "run.json").write_text(document)
        refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "run.json", untouched=run)
    (run / "run.json").write_bytes(b'{"format": "genlab-run", "x": "\xff\xfe"}')
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "run.json", untouched=run)


COMMANDS = {
    "sample": lambda run, out: ["sample", run, "--n", 4, "--out", out / "g.png"],
    "eval": lambda run, out: ["eval", run, "--n", 50, "--out", out / "eval"],
    "report": lambda run, out: ["report", run],
    "explain": lambda run, out: ["explain", run],
    "resume": lambda run, out: ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"],
    "compare": lambda run, out: ["compare", run, run, "--out", out / "c.html"],
    "likelihood": lambda run, out: ["likelihood", run, "--out", out / "l.json"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "path, value",
    [("data.spec", 5), ("model.config", 5), ("data.shape.width", "8"), ("train.seed", "x"), ("epochs_completed", "2")],
)
def test_every_command_refuses_a_tampered_run_json(fixture_run, tmp_path, capsys, command, path, value):
    run = fixture_run("vae")
    edit_json(run / "run.json", setting(path, value))
    refused(COMMANDS[command](run, tmp_path), capsys, "run.json", path, untouched=run)


STATE_METADATA = [
    ("[1]", "metadata"),
    ("null", "metadata"),
    ("5", "metadata"),
    ("{not json", "metadata"),
]
STATE_FIELDS = [
    ("epoch", DELETE),
    ("epoch", "1"),
    ("epoch", -1),
    ("optimizers", DELETE),
    ("optimizers", []),
    ("optimizers.model", "x"),
    ("optimizers.model.param_groups", {}),
    ("optimizers.model.param_groups.0", 5),
    ("optimizers.model.param_groups.0.params", "all"),
    ("optimizers.model.param_groups.0.params.0", "a"),
    ("optimizers.model.param_groups.0.lr", "fast"),
    ("optimizers.model.param_groups.0.betas", [0.9]),
    ("optimizers.model.param_groups.0.params", [0]),
    ("optimizers.model.param_groups", []),
    ("optimizers.model.plain_state", []),
    ("optimizers.model.plain_state", {"0": {"step": "x"}}),
    ("optimizers.model.plain_state", {"zero": {"step": 1}}),
    ("progress", "x"),
    ("progress", {"step": "a", "images_seen": 0, "seconds": 0, "totals": {}}),
    ("progress", {"step": 1, "images_seen": 64, "seconds": 0.1}),
    ("progress", {"step": 1, "images_seen": 64, "seconds": 0.1, "totals": {"loss": "x"}}),
    ("progress", {"step": 10**9, "images_seen": 64, "seconds": 0.1, "totals": {}}),
    ("progress", {"step": 3, "images_seen": 0, "seconds": 0, "totals": {"loss": 1.0}}),
    ("epoch", 2**62),
    ("optimizers.model.param_groups.0.lr", 10**400),
    ("optimizers.model.param_groups.0.eps", float("nan")),
]


@pytest.mark.parametrize("genlab, named", STATE_METADATA)
def test_state_metadata_that_is_not_an_object_is_refused(fixture_run, capsys, genlab, named):
    run = fixture_run("vae")
    tensors, _ = tensors_and_metadata(run / "state.safetensors")
    write_safetensors(run / "state.safetensors", tensors, genlab)
    refused(
        ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"], capsys, "state.safetensors", named, untouched=run
    )


@pytest.mark.parametrize("path, value", STATE_FIELDS, ids=lambda v: v if isinstance(v, str) else repr(v)[:12])
def test_tampered_state_metadata_is_refused(fixture_run, capsys, path, value):
    run = fixture_run("vae")
    craft_state(run, lambda tensors, metadata: setting(path, value)(metadata))
    named = path.split(".")[-1] if "param_groups.0." in path else path.split(".")[0]
    refused(
        ["train", "--resume", "--out", run, "--epochs", 3, "--quiet"], capsys, "state.safetensors", named, untouched=run
    )


@pytest.mark.parametrize(
    "genlab, named",
    [("[1]", "metadata"), ('{"family": 5}', "family"), ('{"epoch": "x"}', "epoch"), ("nonsense", "metadata")],
)
def test_tampered_model_metadata_is_refused(fixture_run, tmp_path, capsys, genlab, named):
    run = fixture_run("vae")
    tensors, _ = tensors_and_metadata(run / "model.safetensors")
    write_safetensors(run / "model.safetensors", tensors, genlab)
    refused(["sample", run, "--n", 4, "--out", tmp_path / "g.png"], capsys, "model.safetensors", named, untouched=run)


HISTORY_LINES = [
    (b"[1, 2]", "line 1"),
    (b'"epoch 1"', "line 1"),
    (b"5", "line 1"),
    (b"null", "line 1"),
    (b'{"loss": 1.0}', "epoch"),
    (b'{"epoch": "1", "loss": 1.0}', "epoch"),
    (b'{"epoch": 0, "loss": 1.0}', "epoch"),
    (b'{"epoch": 1, "seconds": 1, "images_per_second": 1, "loss": "abc"}', "loss"),
    (b"[" * 100000 + b"]" * 100000, "line 1"),
    (b'{"epoch": 1, "seconds": [1]}', "seconds"),
    (b'{"epoch": 1, "loss": 1.0}', "seconds"),
    (b'{"epoch": 1, "seconds": 1, "images_per_second": -5}', "images_per_second"),
    (b'{"epoch": 1, "seconds": 1, "images_per_second": 1, "loss": 1.0, "note": "\xff\xfe"}', "UTF-8"),
    (b'{"epoch": 1, "loss": ', "line 1"),
]


@pytest.mark.parametrize("command", ["report", "resume", "compare"])
@pytest.mark.parametrize("line, named", HISTORY_LINES, ids=lambda v: str(v)[:24])
def test_tampered_history_is_refused(fixture_run, tmp_path, capsys, command, line, named):
    run = fixture_run("vae")
    rest = (run / "history.jsonl").read_bytes().splitlines(keepends=True)[1:]  # the damage is not the last line
    (run / "history.jsonl").write_bytes(line + b"\n" + b"".join(rest))
    refused(COMMANDS[command](run, tmp_path), capsys, "history.jsonl", named, untouched=run)


def test_a_history_line_cut_by_a_crash_is_still_dropped(fixture_run, capsys):
    run = fixture_run("vae")
    with open(run / "history.jsonl", "ab") as handle:
        handle.write(b'{"epoch": 3, "note": "\xe2\x82')  # cut inside a character and inside the JSON
    outcome = run_cli(["train", "--resume", "--out", run, "--epochs", 3, "--quiet"], capsys)
    assert outcome.code == 0, outcome.stderr
    assert [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()] == [1, 2, 3]


# ---------------------------------------------------------------- a full disk


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_names_the_file_and_leaves_it_whole(tmp_path, monkeypatch, call):
    target = tmp_path / "run.json"
    target.write_text("old")
    monkeypatch.setattr(os, call, full_disk)
    with pytest.raises(GenlabError, match=f"could not write {target}: no space left on device; free space"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_full_disk_while_appending_history_names_it(fixture_run, monkeypatch):
    run = fixture_run("vae")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(GenlabError, match="history.jsonl: no space left on device"):
        append_history(run, {"epoch": 3, "loss": 1.0})


def test_a_full_disk_during_a_command_is_one_line(fixture_run, tmp_path, capsys, monkeypatch):
    run = fixture_run("vae")
    before = snapshot(run)
    monkeypatch.setattr(os, "fsync", full_disk)
    refused(["report", run], capsys, str(run / "report.html"), "no space left on device")
    assert snapshot(run) == before
