"""Data-parallel training over processes that torchrun launched: one rank per process.

Families do their own backward passes and optimizer steps (a GAN steps two optimizers, WGAN-GP
adds a gradient penalty, DDPM clips), so genlab does not wrap a forward in
DistributedDataParallel. It reproduces what DDP does for any family instead: parameters and
buffers start equal on every rank (`broadcast_module`), and `GradientAveraging` averages each
parameter's gradient over the ranks at the end of every backward pass, so whatever runs between
backward and step (clipping, gradient-norm metrics) and the step itself see the gradient of
the global batch on every rank, and the ranks' weights stay equal bit for bit.

Everything here asks torch.distributed (or torchrun's environment) for the rank and world
size; nothing is cached. Without a process group every function is a no-op or says rank 0 of 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from genlab.errors import GenlabError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether torchrun's environment describes more than one process (RANK, WORLD_SIZE, MASTER_ADDR ...)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def is_distributed() -> bool:
    """Whether a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks in the process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that writes the run (True when there is only one process).

    Before its group is up and after it is gone, torchrun's RANK says which rank it is.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return not launched_by_torchrun() or int(os.environ["RANK"]) == 0


def check_batch_size(batch_size: int) -> None:
    """Refuse a global batch size that does not split evenly over the ranks of the process group."""
    ranks = world_size()
    if batch_size % ranks:
        raise GenlabError(
            f"batch size {batch_size} does not split evenly over {ranks} processes; use a multiple of {ranks} "
            "(the batch size counts the images of one step over all processes)"
        )


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA device without an index becomes cuda:LOCAL_RANK (one GPU per rank)."""
    if device.type != "cuda" or device.index is not None or not launched_by_torchrun():
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if local_rank >= torch.cuda.device_count():
        raise GenlabError(
            f"local rank {local_rank} has no GPU of its own: this machine has {torch.cuda.device_count()}; "
            "start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def setup_from_env(device: torch.device) -> bool:
    """Join the process group torchrun's environment describes; True when this call created it.

    The backend is nccl for CUDA and gloo for the CPU. Nothing happens (False) without
    torchrun's environment, with one process, or when the caller already set up a group.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise GenlabError("this torch was built without torch.distributed; it cannot train over several processes")
    if device.type not in ("cuda", "cpu"):
        raise GenlabError(
            f"distributed training runs on CUDA (nccl) or the CPU (gloo), not on {device.type}; "
            "use --device cuda or --device cpu"
        )
    store, this_rank, size = next(dist.rendezvous("env://"))  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    # A script may train several runs, each in a group of its own. torch names every new default
    # group alike, so a second group would meet the first one's keys in torchrun's store and hang
    # or fail; a prefix per group, counted in the store itself, keeps them apart.
    group = (store.add("genlab/groups_joined", 1) - 1) // size
    store = dist.PrefixStore(f"genlab/group{group}", store)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", store=store, rank=this_rank, world_size=size, device_id=device)
    else:
        dist.init_process_group("gloo", store=store, rank=this_rank, world_size=size)
    return True


@contextlib.contextmanager
def process_group_from_env(device: torch.device) -> Iterator[None]:
    """`setup_from_env` for the block, and the group destroyed after it if the block created it."""
    created = setup_from_env(device)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing without a process group)."""
    if is_distributed():
        dist.barrier()


def broadcast_module(module: nn.Module, source: int = 0) -> None:
    """Overwrite every rank's parameters and buffers with those of rank `source`, in place."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, source)


def broadcast_buffers(module: nn.Module, source: int = 0) -> None:
    """Overwrite every rank's buffers (BatchNorm running statistics, counters) with those of rank `source`."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, source)


def _communication_device() -> torch.device:
    """Where small tensors for a collective must live: the rank's GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_weighted(tensors: list[torch.Tensor], weight: float) -> None:
    """tensors <- the sum over ranks of `weight` * tensors, in place, one collective per dtype and device.

    With weight 1 / world_size this is the mean; with weight (this rank's images) / (the
    step's images) it is the mean over images when ranks hold different numbers of them.
    """
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group in groups.values():
        flat = torch.cat([t.reshape(-1) for t in group])  # one bucket: (sum of numels,)
        flat.mul_(weight)
        dist.all_reduce(flat)
        for tensor, part in zip(group, flat.split([t.numel() for t in group])):
            tensor.copy_(part.view_as(tensor))


class GradientAveraging:
    """Averages the gradients of the optimizers' parameters over all ranks after every backward pass.

    Each parameter gets a post-accumulate-grad hook that marks it; the first mark of a backward
    pass queues a callback that autograd runs when the pass ends, which all-reduces the marked
    gradients as one flattened bucket (as DDP's reducer does). Every rank must run the same
    backward passes over the same parameters (true when they run the same family code on
    batches of the same shape). `share` is this rank's weight in the average; the trainer sets
    it to (its images) / (the step's images), so an uneven last batch still averages per image.
    `remove()` (or leaving the `with` block) takes the hooks off.
    """

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer]):
        unique = {id(p): p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]}
        self.parameters = [p for p in unique.values() if p.requires_grad]
        self.share = 1.0 / world_size()
        self.marked: list[int] = []
        self.handles = [
            parameter.register_post_accumulate_grad_hook(lambda _, index=index: self._mark(index))
            for index, parameter in enumerate(self.parameters)
        ]

    def _mark(self, index: int) -> None:
        if not self.marked:
            torch.autograd.Variable._execution_engine.queue_callback(self._average)  # runs when the pass ends
        self.marked.append(index)

    def _average(self) -> None:
        marked, self.marked = sorted(self.marked), []  # the same order on every rank
        all_reduce_weighted([self.parameters[i].grad for i in marked], self.share)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> GradientAveraging:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def average_metrics(metrics: dict[str, float], count: int, stop: bool = False) -> tuple[dict[str, float], int, bool]:
    """One step's numbers over all ranks: per-image means, the number of images, and whether any rank asked to stop.

    Each rank gives its own per-image means over its `count` images and its stop request; one
    collective (float64) carries them all, so ranks agree on when to stop at no extra cost.
    Every rank must pass the same keys in the same order. A NaN on any rank makes that number
    NaN on every rank, so all ranks see a divergence together.
    """
    if not is_distributed():
        return metrics, count, stop
    keys = list(metrics)  # the family's order (history.jsonl keeps it); the same on every rank
    sums = torch.tensor(
        [metrics[k] * count for k in keys] + [count, float(stop)], dtype=torch.float64, device=_communication_device()
    )
    dist.all_reduce(sums)
    *totals, images, stops = sums.tolist()
    return {key: total / images for key, total in zip(keys, totals)}, int(images), stops > 0


def shard_slice(n: int) -> slice:
    """This rank's contiguous piece of n items: rank k of N takes [n k // N, n (k + 1) // N); one process all."""
    k, parts = rank(), world_size()
    return slice(n * k // parts, n * (k + 1) // parts)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The ranks' pieces (along dim 0, of any sizes) joined in rank order on every rank; without a group, `tensor`.

    Each piece is padded to the longest for all_gather (which wants equal shapes), then cut back.
    """
    if not is_distributed():
        return tensor
    device = _communication_device()
    local = tensor.to(device)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(local)], device=device))
    padded = local.new_zeros((int(max(sizes)), *local.shape[1:]))
    padded[: len(local)] = local
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[: int(size)] for piece, size in zip(pieces, sizes)]).to(tensor.device)


def rank_seed(seed: int) -> int:
    """`seed` on rank 0 (so one process draws as it always did), a seed of its own on every other rank."""
    return seed if rank() == 0 else step_seed(seed, -1, -1, rank())


def step_seed(seed: int, epoch: int, step: int, for_rank: int) -> int:
    """A seed for the noise of rank `for_rank` at step `step` of epoch `epoch` of a run seeded `seed`.

    Seeding each step from these four numbers alone gives the ranks independent noise and
    makes a resumed run draw what the uninterrupted one drew, wherever it stopped.
    """
    digest = hashlib.blake2b(f"genlab-step/{seed}/{epoch}/{step}/{for_rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: a valid seed for every generator
