"""The training loop's speed settings: bf16 autocast, torch.compile, channels_last and TF32.

On a CUDA GPU, by default, fp32 matmuls and cuDNN convolutions run in TF32 while training,
convolutional models keep weights and activations channels_last (NHWC, the layout tensor
cores read), and `precision="auto"` trains under bf16 autocast where the GPU supports it.
On the CPU nothing changes unless asked for: fp32, contiguous tensors, as the reference
loops. Weights and optimizer state stay fp32 under autocast (only the forward computation
is in bf16), so checkpoints, resume and the metrics are unchanged in kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from genlab.errors import GenlabError

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    """Raise GenlabError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise GenlabError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "fp32" or "bf16" for `precision` on `device` ("auto": bf16 on a CUDA GPU that has it, else fp32)."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise GenlabError(f"bf16 autocast runs on cuda and cpu, not on {device.type}; use --precision fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `precision` is "bf16", else a context that changes nothing."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def uses_convolutions(model: nn.Module) -> bool:
    """Whether any layer of `model` is a 2-d (transposed) convolution: channels_last pays off only there."""
    return any(isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) for module in model.modules())


def batch_channels_last(images: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) batch stored NHWC (same shape and values); other tensors unchanged."""
    return images.contiguous(memory_format=torch.channels_last) if images.dim() == 4 else images


def to_channels_last(model: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Store `model`'s 4-d weights NHWC in place, and the optimizers' state of each such weight with it.

    The parameters stay the same objects, so the optimizers keep them; their state (Adam's moments,
    e.g. restored from a checkpoint) is given the parameter's layout, because fused and foreach
    kernels walk a parameter and its state in memory order.
    """
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # a real overload torch's stubs lack
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                state = optimizer.state.get(parameter, {})
                for key, value in state.items():
                    if (
                        torch.is_tensor(value)
                        and value.shape == parameter.shape
                        and value.stride() != parameter.stride()
                    ):
                        state[key] = torch.empty_like(parameter).copy_(value)  # empty_like keeps the strides


@contextlib.contextmanager
def tf32_on_cuda(device: torch.device) -> Iterator[None]:
    """On CUDA: TF32 for fp32 matmuls and cuDNN convolutions inside the block; the caller's flags after."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def compile_networks(networks: list[nn.Module]) -> None:
    """torch.compile each module's forward in place: calls, hooks and state_dict keys stay as they are.

    (`Module.compile()` left the modules untraced under torch 2.13, and `torch.compile(module)`
    wraps it, renaming its weights.) A network compiled already (a second Trainer with
    compile=True on the same model) is left as it is. Compile after any deepcopy of a network:
    a copy would keep calling the original's compiled forward.
    """
    for network in networks:
        if "forward" in vars(network):  # an instance attribute: compiled here before (classes define forward)
            continue
        network.forward = torch.compile(network.forward)
