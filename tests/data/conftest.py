"""Shared fixtures for the data tests: small IDX files written on the fly, an isolated data root."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 00 00 08 ndim, big-endian int32 dims, then the values."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


@pytest.fixture
def write_idx():
    """write_idx(path, array, gz=True) -> path: the array as an IDX file (gzip-compressed when gz)."""

    def write(path: Path, array: np.ndarray, gz: bool = True) -> Path:
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


@pytest.fixture
def make_idx_dataset(write_idx):
    """make_idx_dataset(directory, n_train, n_test, shape=(4, 5), gz=True) -> (arrays by file stem).

    Writes the four MNIST-named IDX files with seeded random pixels and labels 0..9.
    """

    def make(directory: Path, n_train: int = 30, n_test: int = 10, shape=(4, 5), gz: bool = True) -> dict:
        rng = np.random.default_rng(0)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
        }
        for stem, array in arrays.items():
            write_idx(directory / (f"{stem}.gz" if gz else stem), array, gz=gz)
        return arrays

    return make


@pytest.fixture
def genlab_data(tmp_path, monkeypatch) -> Path:
    """An empty $GENLAB_DATA for the test, so nothing on the machine's data root leaks in."""
    root = tmp_path / "genlab-data"
    root.mkdir()
    monkeypatch.setenv("GENLAB_DATA", str(root))
    return root
