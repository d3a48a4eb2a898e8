"""Atomic file writes and safe tensor files: nothing is half-written, nothing is unpickled."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from genlab.errors import GenlabError

# safetensors refuses headers longer than this; a longer "header length" is another format's first bytes.
MAX_HEADER_BYTES = 100_000_000
ZIP_LOCAL_HEADER = b"PK\x03\x04"  # a zip archive's first bytes: torch.save's format since torch 1.6
ZIP_END_OF_DIRECTORY = b"PK\x05\x06"  # the record that closes a zip's central directory, near its end
ZIP_TAIL_BYTES = 22 + 65535  # that record's size plus the longest archive comment it may carry
PICKLE_PROTOCOL_OPCODE = 0x80  # a pickle of protocol 2 or later starts with this opcode and the protocol number
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full disk (or quota) while writing `path` into one message that names it."""
    try:
        yield
    except OSError as error:
        if error.errno not in OUT_OF_SPACE:
            raise
        raise GenlabError(f"could not write {path}: no space left on device; free space and retry") from None


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A file to stream `path`'s new bytes into, so that readers see the old file or the new one, never a mix.

    The bytes go to a temporary file in the same folder, are fsynced, and replace `path` with
    one rename when the block ends; the folder is fsynced so the rename survives a power cut.
    A failure (a full disk: GenlabError naming `path`) removes the temporary file and leaves
    `path` as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise GenlabError(f"{path} is a folder; give a file name to write")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    with writing(path):
        # O_EXCL: never reuse a name; mode 0o666 lets the kernel apply the user's umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (`atomic_writer`)."""
    with atomic_writer(path) as handle:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(handle.fileno(), view) :]


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


def tensor_format(size: int, read: Callable[[int, int], bytes]) -> str:
    """ "safetensors", "zip", "pickle" or "unknown": the format of a file of `size` bytes, by its structure.

    `read(offset, length)` gives bytes of the file. Only the structure counts, never a guess from the
    first bytes alone: a safetensors file starts with its header's length, and lengths such as 640
    (bytes 80 02) look like a pickle's first opcode.
    """
    head = read(0, 8)
    if len(head) == 8:
        length = int.from_bytes(head, "little")
        if length <= min(MAX_HEADER_BYTES, size - 8) and _is_safetensors_header(read(8, length)):
            return "safetensors"
        if length <= MAX_HEADER_BYTES and read(8, 1) == b"{":  # a header cut short: "{" is no pickle opcode
            return "safetensors"
    if head.startswith(ZIP_LOCAL_HEADER):
        tail = read(max(0, size - ZIP_TAIL_BYTES), ZIP_TAIL_BYTES)
        if ZIP_END_OF_DIRECTORY in tail:
            return "zip"
    if len(head) >= 2 and head[0] == PICKLE_PROTOCOL_OPCODE and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def _is_safetensors_header(header: bytes) -> bool:
    """Whether `header` is a safetensors header: a JSON object of tensor entries and optional __metadata__."""
    try:
        entries = json.loads(header)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False
    if not isinstance(entries, dict):
        return False
    for name, entry in entries.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                return False
        elif not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and _int_list(entry.get("shape"))
            and _int_list(entry.get("data_offsets"))
            and len(entry["data_offsets"]) == 2
        ):
            return False
    return True


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def refuse_pickle(path: Path, data: bytes | None = None) -> None:
    """Raise a clear GenlabError if `path` (whose bytes are `data`, when read already) is a pickle or a
    torch.save file. Reads no more of the file than its structure needs."""
    if data is not None:
        kind = tensor_format(len(data), lambda offset, length: data[offset : offset + length])
    else:
        with open(path, "rb") as handle:

            def read(offset: int, length: int) -> bytes:
                handle.seek(offset)
                return handle.read(length)

            kind = tensor_format(os.fstat(handle.fileno()).st_size, read)
    if kind in ("zip", "pickle"):
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
    refuse_pickle(path, data)
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
        stored = json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise GenlabError(f"{source} is not a valid safetensors {what} (truncated or corrupt: {error})") from None
    try:
        metadata = json.loads(stored.get("genlab", "{}"))
    except (ValueError, RecursionError):
        metadata = None
    if not isinstance(metadata, dict):
        raise GenlabError(
            f"{source} field __metadata__.genlab must be a JSON object: the {what} is damaged; "
            "restore it from a copy or write it again"
        )
    return tensors, metadata


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, with one clear error for a missing or corrupt file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GenlabError(f"{path} does not exist: {what} is missing") from None
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, a number too long, nested without end
        detail = error if isinstance(error, ValueError) else "nested too deeply"
        raise GenlabError(f"{path} is not valid JSON ({detail}): {what} is corrupt") from None
