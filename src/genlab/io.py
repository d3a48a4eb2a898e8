"""Atomic file writes and safe tensor files: nothing is half-written, nothing is unpickled."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch

from genlab.errors import GenlabError

# First bytes of the files torch.save writes: a zip archive (torch >= 1.6) or a raw pickle.
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix.

    The bytes go to a temporary file in the same folder, are fsynced, and replace `path`
    with one rename; the folder is fsynced so the rename survives a power cut.
    """
    path = Path(path)
    if path.is_dir():
        raise GenlabError(f"{path} is a folder; give a file name to write")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # O_EXCL: never reuse a name; mode 0o666 lets the kernel apply the user's umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, value: Any) -> None:
    """Write `value` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write a safetensors file atomically (tensors are copied to contiguous CPU memory).

    `metadata` is stored as one sorted JSON string under the key "genlab": safetensors
    orders several metadata keys at random, and one key keeps the file's bytes reproducible.
    """
    from safetensors.torch import save

    cpu = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata={"genlab": json.dumps(metadata, sort_keys=True)}))


def refuse_pickle(path: Path, head: bytes | None = None) -> None:
    """Raise a clear GenlabError if `path` (or its first bytes `head`) is a pickle or torch.save file."""
    if head is None:
        with open(path, "rb") as handle:
            head = handle.read(8)
    if head.startswith(_PICKLE_MAGICS):
        raise GenlabError(
            f"{path} is a pickled PyTorch file; genlab never unpickles checkpoints (it can run code): "
            "give a genlab run directory or a .safetensors file"
        )


def load_tensors(path: str | Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file: (tensors on CPU, genlab's metadata or {}). Never unpickles.

    A missing, pickled, truncated or otherwise invalid file raises GenlabError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"{path} does not exist: no {what} there")
    data = path.read_bytes()
    refuse_pickle(path, data[:8])
    return parse_tensors(data, path, what)


def parse_tensors(
    data: bytes, source: Path, what: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, genlab's metadata or {}) from the bytes of a safetensors file read from `source`."""
    from safetensors.torch import load

    try:
        tensors = load(data)
        # The format: an 8-byte little-endian header length, then a JSON header.
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}
        metadata = json.loads(metadata.get("genlab", "{}"))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise GenlabError(f"{source} is not a valid safetensors {what} (truncated or corrupt: {error})") from None
    return tensors, metadata


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, with one clear error for a missing or corrupt file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GenlabError(f"{path} does not exist: {what} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GenlabError(f"{path} is not valid JSON ({error}): {what} is corrupt") from None
