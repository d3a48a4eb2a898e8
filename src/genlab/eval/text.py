"""Text measures of the text family: bits per byte beside what general-purpose compressors reach on the same
text (the outside reference the issue names), for the Quality section of `genlab train`.

A model that predicts each next byte with probability p spends -log2 p bits on it, so its test loss in bits
per byte is the size a compressor driven by it would reach (arithmetic coding, to within a few bytes): it
can stand beside `xz -9e` (LZMA) measured on the very same bytes.
"""

from __future__ import annotations

import lzma
from typing import Any

from genlab.data.text import load_text_splits


def compressor_bits_per_byte(data: bytes) -> dict[str, float]:
    """Bits per byte of `data` under the compressors this Python has: xz -9e (stdlib lzma), and zstd -19 where
    the zstandard package is installed."""
    sizes = {"xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    try:
        import zstandard
    except ImportError:
        pass
    else:
        sizes["zstd -19"] = len(zstandard.ZstdCompressor(level=19).compress(data))
    return {name: 8 * size / max(1, len(data)) for name, size in sizes.items()}


def text_quality(info: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The Quality section of a text run: its last test bits per byte beside the compressors' on the test text."""
    spec = info["data"]["spec"]
    record = history[-1] if history else {}
    if "test_bits_per_byte" not in record:
        return "Quality: not measured: the run has no test loss yet"
    _, test = load_text_splits(spec)
    data = test.text.encode("utf-8")
    references = compressor_bits_per_byte(data)
    model = record["test_bits_per_byte"]
    lines = [
        "Quality",
        f"{spec} test split: {len(test):,} documents, {len(data):,} bytes; bits per byte (lower is better)",
        "",
        f"{'this model (epoch ' + str(record['epoch']) + ')':<26} {model:.3f}",
    ]
    for name, value in references.items():
        side = "below" if model < value else "above"
        lines.append(f"{name:<26} {value:.3f}  (the model: {abs(1 - model / value):.0%} {side} it)")
    return "\n".join(lines)
