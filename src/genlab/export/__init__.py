"""Exporters: a trained run in a format that runs without genlab.

    onnx_graph          `genlab export RUN --format onnx`: model.onnx + genlab_export.json (docs/export.md)
    transformers_gpt2   `genlab export RUN --format transformers`: a GPT-2 directory for transformers' pipeline
    folder              the checks and the atomic move every export folder goes through

Each exporter imports its optional dependencies (the `export` and `text` extras) only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from genlab.export.folder import EXPORT_FILE
from genlab.export.onnx_graph import EXPORTERS, ONNX_FILE, export_onnx


def export_transformers(run_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """`genlab.export.transformers_gpt2.export_transformers`, imported when called (it loads transformers)."""
    from genlab.export.transformers_gpt2 import export_transformers as export

    return export(run_path, out_dir, overwrite)


# --format NAME -> the function that writes it: (run, folder, overwrite) -> folder
FORMATS: Mapping[str, Callable[..., Path]] = MappingProxyType(
    {"onnx": export_onnx, "transformers": export_transformers}
)

__all__ = ["EXPORTERS", "EXPORT_FILE", "FORMATS", "ONNX_FILE", "export_onnx", "export_transformers"]
