"""The real-vs-real floor's on-disk cache: floor values measured before are read back, not measured again.

A floor depends only on the real side (the data's fingerprint, the reference split, the counts),
the seed, the extractor's weights and the CAS budget; those make its key, under
`cache_dir()/floors`. A read-only or damaged cache costs time, never correctness.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from genlab.eval.reference import cache_dir
from genlab.io import atomic_write_json

FLOOR_FORMAT = 2  # bump when a floor metric's definition changes (2: label_accuracy on the test split)


def floor_path(key: list[Any]) -> Path:
    """The cache file of the floor measured under `key` (JSON-ready values that fix what the floor depends on)."""
    digest = hashlib.sha256(json.dumps([FLOOR_FORMAT, *key]).encode()).hexdigest()[:24]
    return cache_dir() / "floors" / f"{digest}.json"


def read_floor(key: list[Any]) -> dict[str, dict[str, Any]]:
    """Floor values (metric name -> {key: value}) measured before with the same data, reference, counts, seed
    and extractor; {} when there are none or the file is damaged."""
    try:
        cached = json.loads(floor_path(key).read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def write_floor(key: list[Any], floor: dict[str, dict[str, Any]]) -> None:
    """Add `floor`'s metrics to the cached floor of `key` (atomically; a read-only cache is left alone)."""
    try:
        floor_path(key).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(floor_path(key), {**read_floor(key), **floor})
    except OSError:
        pass  # a read-only cache costs time, not correctness
