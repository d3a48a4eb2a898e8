"""The real-vs-real floor's on-disk cache: floor values measured before are read back, not measured again.

A floor depends only on the real side (the data's fingerprint, the reference split, the counts),
the seed, the extractor's weights and the CAS budget; those make its key, under
`cache_dir()/floors`. A read-only cache costs time, never correctness; a damaged one is checked
entry by entry when read (a known metric, its table's keys, finite numbers), and what fails is
measured again and replaced, saying so on stderr.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.eval.reference import cache_dir
from genlab.eval.registry import METRICS
from genlab.io import atomic_write_json

# bump when a floor metric's definition changes (2: label_accuracy on the test split; 3: memorization per class,
# with reference_copy_share, and classes_covered judged against the classifier's confusion)
FLOOR_FORMAT = 3
MAX_FLOOR_BYTES = 1 << 20  # far more than the few numbers of a floor file


def floor_path(key: list[Any]) -> Path:
    """The cache file of the floor measured under `key` (JSON-ready values that fix what the floor depends on)."""
    digest = hashlib.sha256(json.dumps([FLOOR_FORMAT, *key]).encode()).hexdigest()[:24]
    return cache_dir() / "floors" / f"{digest}.json"


def read_floor(key: list[Any]) -> dict[str, dict[str, Any]]:
    """Floor values (metric name -> {key: value}) measured before with the same data, reference, counts, seed
    and extractor; {} when there are none. Entries that fail `check_floor_entry` are left out (to be measured
    again), and one line on stderr names the file and the first fault."""
    path = floor_path(key)
    floor, problem = _load(path)
    if problem:
        print(f"recomputing the cached floor in {path}: {problem}", file=sys.stderr)
    return floor


def write_floor(key: list[Any], floor: dict[str, dict[str, Any]]) -> None:
    """Add `floor`'s metrics to the cached floor of `key` (atomically; a read-only cache is left alone).
    Only entries that pass `check_floor_entry` are kept: a value that is not a finite number is measured anew."""
    path = floor_path(key)
    kept = {name: values for name, values in floor.items() if not check_floor_entry(name, values)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**_load(path)[0], **kept})
    except (OSError, GenlabError):  # read-only, full, or a folder in the way
        pass  # a cache that cannot be written costs time, not correctness


def check_floor_entry(name: str, values: Any) -> str:
    """What is wrong with the cached floor entry `name` -> `values`; "" when nothing is: a metric that has a
    floor, an object of finite numbers holding each of its table's keys."""
    metric = METRICS.get(name)
    if metric is None or not metric.floor:
        return f"{name!r} is not a metric with a floor"
    if not isinstance(values, dict):
        return f"{name!r} is a {type(values).__name__}, not an object"
    for row in metric.rows:
        if row.key not in values:
            return f"{name!r} lacks {row.key!r}"
    for field, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name!r}'s {field!r} is a {type(value).__name__}, not a number"
        if not math.isfinite(value):
            return f"{name!r} holds {'NaN' if math.isnan(value) else 'an infinite value'} in {field!r}"
    return ""


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """(the entries of the floor file `path` that pass `check_floor_entry`, the first fault or "")."""
    try:
        if not path.is_file():
            return {}, ""  # nothing cached (a folder in the way only stops the writing)
        size = path.stat().st_size
        if size > MAX_FLOOR_BYTES:
            return {}, f"it has {size:,} bytes, far more than a floor takes"
        cached = json.loads(path.read_bytes())
    except OSError as error:
        return {}, f"it cannot be read ({error.strerror or error})"
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than the parser goes
        return {}, "it is not valid JSON"
    if not isinstance(cached, dict):
        return {}, f"it holds a {type(cached).__name__}, not an object"
    floor, problems = {}, []
    for name, values in cached.items():
        problem = check_floor_entry(name, values)
        if problem:
            problems.append(problem)
        else:
            floor[name] = values
    if len(problems) > 1:
        return floor, f"{problems[0]} (and {len(problems) - 1} more faults)"
    return floor, problems[0] if problems else ""
