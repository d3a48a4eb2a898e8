"""Data-parallel training: two CPU processes (gloo) launched by torchrun, against one process.

Starting two ranks costs about ten seconds on two cores, so the tests share two launches
(module fixtures): the CLI (`torchrun ... -m genlab train vae`), and tests/training/two_rank_script.py,
which calls `genlab.train` for pixelcnn, dcgan and wgan-gp, and for a VAE run that rank 1
alone stops inside epoch 2, then resumes it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import genlab
from genlab.data import ImageDataset
from genlab.errors import GenlabError
from genlab.io import load_tensors
from genlab.models import build_model
from genlab.run import read_history
from genlab.training import TrainConfig, Trainer, distributed

SCRIPT = Path(__file__).with_name("two_rank_script.py")
SAMPLES, EVAL_N = "samples.npz", 63  # as in two_rank_script.py
TINY_VAE = {"hidden_dim": 32, "latent_dim": 4}  # as in two_rank_script.py
TINY_PIXELCNN = {"channels": 8, "layers": 2, "head_channels": 16}
COMMON = dict(batch_size=64, seed=1, progress=False)  # 1,437 digits: 22 batches of 64, then 29 split 14 + 15
TIMING = ("seconds", "images_per_second")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str, cwd: Path, succeed: bool = True) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run` with two ranks on 127.0.0.1 and a free port."""
    port = free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port), *args]
    result = subprocess.run(command, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == succeed, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The reference runs in this one process: the VAE of the CLI launch and the PixelCNN of the script."""
    folder = tmp_path_factory.mktemp("single")
    genlab.train("vae", "digits", folder / "vae", epochs=3, model_config=TINY_VAE, **COMMON)
    genlab.train("pixelcnn", "digits", folder / "pixelcnn", epochs=2, model_config=TINY_PIXELCNN, **COMMON)
    return folder


@pytest.fixture(scope="module")
def cli_launch(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`torchrun --nproc_per_node 2 -m genlab train vae ...` in a folder of its own: (folder, result)."""
    folder = tmp_path_factory.mktemp("cli")
    result = torchrun("-m", "genlab", "train", "vae", "--data", "digits", "--epochs", "3", "--batch-size", "64",
                      "--seed", "1", "--set", "hidden_dim=32", "--set", "latent_dim=4", "--out", "two", cwd=folder)
    return folder, result


@pytest.fixture(scope="module")
def script_launch(tmp_path_factory) -> Path:
    """The folder two_rank_script.py trained its runs into, with each rank's final state."""
    folder = tmp_path_factory.mktemp("script")
    np.savez(folder / SAMPLES, images=sample_file_images().numpy())
    torchrun(str(SCRIPT), str(folder), cwd=folder)
    return folder


def sample_file_images() -> torch.Tensor:
    """The images of the .npz the ranks evaluate: mnist-5k test images, flipped left-right (not the reference)."""
    return genlab.load_dataset("mnist-5k", split="test").images[:100].flip(-1)


def numbers(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING}


@pytest.mark.parametrize("family", ["pixelcnn", "dcgan", "wgan-gp", "vae", "gpt"])
def test_both_ranks_end_with_identical_parameters_and_buffers(script_launch, family):
    # dcgan: BatchNorm (buffers from rank 0 each epoch), EMA and two optimizers; wgan-gp: the
    # gradient penalty and critic-only steps; vae: after a stop inside an epoch and a resume; gpt: token windows
    # split between the ranks.
    rank0, _ = load_tensors(script_launch / f"{family}.rank0.safetensors")
    rank1, _ = load_tensors(script_launch / f"{family}.rank1.safetensors")
    saved, _ = load_tensors(script_launch / family / "model.safetensors")
    assert rank0.keys() == rank1.keys() == saved.keys()
    assert all(torch.equal(rank0[k], rank1[k]) and torch.equal(rank0[k], saved[k]) for k in rank0)


def test_two_ranks_follow_one_process_given_the_same_global_batch(single, cli_launch, script_launch):
    # PixelCNN (no BatchNorm, no noise in training) sees the same images per step either way, so
    # only float rounding differs: the gradient of the mean over 64 images is summed in another
    # order. Measured: 2e-8 relative over 46 steps.
    one, two = read_history(single / "pixelcnn"), read_history(script_launch / "pixelcnn")
    assert [r["epoch"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        assert all(b[k] == pytest.approx(a[k], rel=1e-5) for k in ("loss", "test_loss"))
    # The VAE draws its reparameterisation noise per rank (independent streams), not the one
    # process's draws, so its trajectory agrees only statistically. Measured: 0.22% at most.
    # BatchNorm families differ more (each rank normalises its 32 images by their own batch
    # statistics, where one process uses all 64), so they are checked for identical ranks only.
    one, two = read_history(single / "vae"), read_history(cli_launch[0] / "two")
    assert [list(numbers(r)) for r in two] == [list(numbers(r)) for r in one]  # same keys, same order
    for a, b in zip(one, two):
        assert all(b[k] == pytest.approx(a[k], rel=0.01) for k in ("loss", "test_loss"))


def test_only_rank_zero_writes(single, cli_launch):
    folder, result = cli_launch
    assert sorted(p.name for p in folder.iterdir()) == ["two"]  # rank 1 wrote nothing elsewhere either
    files = lambda run: sorted(str(p.relative_to(run)) for p in run.rglob("*"))  # noqa: E731
    assert files(folder / "two") == files(single / "vae")
    two, one = (json.loads((run / "run.json").read_text()) for run in (folder / "two", single / "vae"))
    assert (two["train"].pop("processes"), one["train"].pop("processes")) == (2, 1)
    assert two == one  # otherwise the same run.json
    assert len(read_history(folder / "two")) == 3
    # one progress line per epoch and one trace, from rank 0 alone
    assert [line.split("  ")[0] for line in result.stdout.splitlines() if line.startswith("epoch ")] == \
        ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert result.stdout.count("Training trace") == 1


def test_two_nodes_train_the_run_one_node_with_two_processes_trains(cli_launch, tmp_path):
    # Two torchrun agents, one process each, meeting through torchrun's c10d rendezvous as two
    # machines would (each node its own folder: no shared filesystem). Global ranks, shards and
    # noise seeds are those of one node with two processes, so the run is the same bit for bit,
    # and only the node that holds global rank 0 writes it (both have LOCAL_RANK 0).
    port = free_port()
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    agents = []
    for node in nodes:
        node.mkdir()
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "genlab-test",
                   "-m", "genlab", "train", "vae", "--data", "digits", "--epochs", "3", "--batch-size", "64",
                   "--seed", "1", "--set", "hidden_dim=32", "--set", "latent_dim=4", "--out", "two"]
        agents.append(subprocess.Popen(command, cwd=node, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [agent.communicate(timeout=300) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], "".join(out[-3000:] for pair in outputs for out in pair)
    written = [node for node in nodes if any(node.iterdir())]
    assert len(written) == 1 and sorted(p.name for p in written[0].iterdir()) == ["two"]
    one_node, two_nodes = cli_launch[0] / "two", written[0] / "two"
    assert [numbers(r) for r in read_history(two_nodes)] == [numbers(r) for r in read_history(one_node)]
    a, _ = load_tensors(one_node / "model.safetensors")
    b, _ = load_tensors(two_nodes / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((two_nodes / "run.json").read_text())["train"]["processes"] == 2


def test_a_batch_size_that_does_not_split_is_refused_before_anything_is_written(tmp_path):
    result = torchrun("-m", "genlab", "train", "vae", "--data", "digits", "--epochs", "1", "--batch-size", "63",
                      "--out", "run", cwd=tmp_path, succeed=False)
    assert "batch size 63 does not split evenly over 2 processes; use a multiple of 2" in result.stderr
    assert not (tmp_path / "run").exists()


def test_resume_under_two_ranks_continues_the_uninterrupted_run(cli_launch, script_launch):
    # Rank 1 alone asked to stop after step 5; the request travels with step 6's numbers, so both stopped there.
    interrupted = json.loads((script_launch / "vae.interrupted.json").read_text())
    assert interrupted["status"] == "interrupted"
    assert interrupted["message"] == "interrupted in epoch 2, step 6; saved there"
    straight, resumed = cli_launch[0] / "two", script_launch / "vae"
    assert [numbers(r) for r in read_history(resumed)] == [numbers(r) for r in read_history(straight)]
    a, _ = load_tensors(straight / "model.safetensors")
    b, _ = load_tensors(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the pieces, in this process


def test_batch_shards_split_each_batch_into_disjoint_pieces():
    data = ImageDataset(torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1), None)
    whole = [images.flatten().tolist() for images, _ in data.batches(6, torch.Generator().manual_seed(3))]
    pieces = [[images.flatten().tolist() for images, _ in data.batches(6, torch.Generator().manual_seed(3),
                                                                         shard=(k, 3))] for k in range(3)]
    # batches of 6, 6, 6, then 2: fewer than 3 ranks, so left out
    assert [len(batch) for batch in whole] == [6, 6, 6, 2]
    assert all(len(rank) == 3 for rank in pieces)
    for step in range(3):
        assert pieces[0][step] + pieces[1][step] + pieces[2][step] == whole[step]
    # a short last batch splits into nearly equal pieces: 7 -> 2, 2, 3
    seven = ImageDataset(torch.zeros(7, 1, 1, 1, dtype=torch.uint8), None)
    assert [len(next(seven.batches(8, shuffle=False, shard=(k, 3)))[0]) for k in range(3)] == [2, 2, 3]


def test_a_batch_size_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    data = genlab.load_dataset("digits").subset(range(100))
    model = build_model("vae", data, **TINY_VAE)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(GenlabError, match="batch size 63 does not split evenly over 2 processes; use a multiple of 2"):
        Trainer(model, data, config=TrainConfig(epochs=1, batch_size=63, device="cpu"))


def test_without_torchrun_nothing_changes(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.setup_from_env(torch.device("cpu")) is False and not dist.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_distributed()) == (0, 1, False)
    assert distributed.average_metrics({"loss": 2.0}, 5, True) == ({"loss": 2.0}, 5, True)
    assert distributed.rank_device(torch.device("cuda")) == torch.device("cuda")


def test_gradients_are_averaged_when_backward_ends(tmp_path):
    # A group of one rank, so the average is `share` times the gradient: it must be in place
    # when backward returns (DDPM and RealNVP clip between backward and step), once per pass.
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        x = torch.randn(4, 3)
        layer(x).square().sum().backward()
        expected = [p.grad.clone() for p in layer.parameters()]
        optimizer.zero_grad()
        with distributed.GradientAveraging([optimizer]) as averaging:
            averaging.share = 0.5
            layer(x).square().sum().backward()
            assert all(torch.allclose(p.grad, 0.5 * g) for p, g in zip(layer.parameters(), expected))
            layer(x).square().sum().backward()  # accumulates: 0.5 * (0.5 g + g)
            assert all(torch.allclose(p.grad, 0.75 * g) for p, g in zip(layer.parameters(), expected))
        optimizer.zero_grad()
        layer(x).square().sum().backward()  # hooks removed: the plain gradient
        assert all(torch.equal(p.grad, g) for p, g in zip(layer.parameters(), expected))
    finally:
        dist.destroy_process_group()


def test_eval_under_two_ranks_gathers_every_samples_features(script_launch):
    """A fixed file scores exactly as in one process; a run's pieces add up to n; both ranks agree."""
    ranks = {name: [json.loads((script_launch / f"eval_{name}.rank{r}.json").read_text()) for r in (0, 1)]
             for name in ("run", "npz")}
    for name, (rank0, rank1) in ranks.items():
        assert rank0 == rank1, name
        assert rank0["counts"]["samples"] == EVAL_N
    alone = genlab.evaluate(str(script_launch / SAMPLES), "mnist-5k", n=EVAL_N, seed=2, metrics="fid,precision,recall")
    assert ranks["npz"][0]["metrics"] == pytest.approx(alone.metrics, rel=1e-6)
    assert 0 < ranks["run"][0]["metrics"]["fid"] < 1e4


def test_shard_slices_cover_n_once_and_gather_is_the_identity_alone(monkeypatch):
    assert distributed.shard_slice(63) == slice(0, 63)
    x = torch.arange(6)
    assert distributed.gather_rows(x) is x and distributed.rank_seed(5) == 5
    pieces = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        pieces.append(distributed.shard_slice(63))
    assert pieces == [slice(0, 31), slice(31, 63)]
