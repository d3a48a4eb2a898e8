"""Exporters: a trained run's generation network in a format that runs without genlab.

    onnx_graph   `genlab export RUN --format onnx`: model.onnx + genlab_export.json (docs/export.md)

Each exporter imports its optional dependencies (the `export` extra) only when it runs.
"""

from __future__ import annotations

from genlab.export.onnx_graph import EXPORT_FILE, EXPORTERS, ONNX_FILE, export_onnx

__all__ = ["EXPORTERS", "EXPORT_FILE", "ONNX_FILE", "export_onnx"]
