"""The run directory: safe loading of checkpoints, and refusal of anything else."""

import io
import json
import pickle

import pytest
import torch

import genlab
from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes, load_tensors, save_tensors
from genlab.run import FORMAT_VERSION, Run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    genlab.train("vae", "digits", out, epochs=1, progress=False, model_config={"hidden_dim": 32, "latent_dim": 4})
    return out


def copy_run(source, target):
    target.mkdir()
    for item in source.iterdir():
        if item.is_file():
            (target / item.name).write_bytes(item.read_bytes())
    return target


def test_truncated_checkpoint_is_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GenlabError, match="not a valid safetensors model checkpoint"):
        Run.load(run)


def test_foreign_safetensors_is_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    save_tensors(run / "model.safetensors", {"conv1.weight": torch.zeros(3, 3)}, {})
    with pytest.raises(GenlabError, match="does not hold the weights of the vae model"):
        Run.load(run)


def test_weights_of_another_shape_are_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    tensors, metadata = load_tensors(run / "model.safetensors")
    tensors["coder.to_mean.weight"] = torch.zeros(5, 32)
    save_tensors(run / "model.safetensors", tensors, metadata)
    with pytest.raises(GenlabError, match="wrong shape"):
        Run.load(run)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_checkpoints_are_never_unpickled(trained, tmp_path, writer):
    class Trap:
        def __reduce__(self):  # would run on unpickling
            return (exec, ("raise SystemExit('unpickled!')",))

    buffer = io.BytesIO()
    torch.save({"trap": Trap()}, buffer) if writer == "torch.save" else pickle.dump(Trap(), buffer, protocol=4)
    offered = tmp_path / "model.pt"
    offered.write_bytes(buffer.getvalue())
    with pytest.raises(GenlabError, match="pickled PyTorch file; genlab never unpickles"):
        Run.load(offered)
    run = copy_run(trained, tmp_path / "run")
    (run / "model.safetensors").write_bytes(buffer.getvalue())  # a pickle renamed to .safetensors
    with pytest.raises(GenlabError, match="pickled"):
        Run.load(run)


def test_run_without_weights_newer_format_and_missing_files(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    (run / "model.safetensors").unlink()
    with pytest.raises(GenlabError, match="has no model.safetensors"):
        Run.load(run)
    info = json.loads((trained / "run.json").read_text())
    newer = copy_run(trained, tmp_path / "newer")
    (newer / "run.json").write_text(json.dumps({**info, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(GenlabError, match="newer genlab"):
        Run.load(newer)
    (newer / "run.json").write_text("{not json")
    with pytest.raises(GenlabError, match="not valid JSON"):
        Run.load(newer)
    with pytest.raises(GenlabError, match="does not exist"):
        Run.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenlabError, match="run.json does not exist"):
        Run.load(empty)


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_run_repr_and_history(trained):
    run = Run.load(trained)
    assert run.family == "vae" and len(run.history) == 1
    assert "epochs=1" in repr(run)
