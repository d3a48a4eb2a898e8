"""A dataset spec, parsed once: which source reads it, from which path, which splits, at what size.

    parse_spec("npz:~/a.npz", ("test",), 28)
    # ParsedSpec(text="npz:~/a.npz", source="npz", path=Path("/home/me/a.npz"), splits=("test",), size=(28, 28))

Every check of the caller's arguments (split names, size, the spec's form, a ~user in its
path) happens here, before any file is opened; the source then reads what the ParsedSpec
names, and nothing downstream derives the path or the spec's text again.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import GenlabError

from .splits import SPLITS, check_split

DATASET_NAMES = ("mnist-5k", "mnist", "fashion-mnist", "digits")
PATH_SOURCES = ("folder", "npz")  # the sources written SOURCE:PATH
MAX_SIDE = 4096  # pixels per side: beyond it one image alone is tens of MB, a dataset many GB


@dataclass(frozen=True)
class ParsedSpec:
    """What one load asks for: the source that reads it, its path, the splits and the size."""

    text: str  # the spec as written: each dataset's name, and the first words of every error about it
    source: str  # "folder", "npz", or a builtin name (DATASET_NAMES)
    path: Path | None  # PATH of SOURCE:PATH with ~ expanded; None for a builtin
    splits: tuple[str, ...] = SPLITS  # valid split names, in the order the datasets are returned
    size: tuple[int, int] | None = None  # (H, W) every image is resized to; None keeps each source's size

    @property
    def location(self) -> Path:
        """`path`, which parse_spec and path_spec always set for a SOURCE:PATH; a ValueError for a builtin."""
        if self.path is None:
            raise ValueError(f"{self.text!r} names a builtin dataset, not a file or folder")
        return self.path


def parse_spec(spec: str, splits: tuple[str, ...] = SPLITS, size: int | tuple[int, int] | None = None) -> ParsedSpec:
    """`spec` (a builtin name, `folder:PATH` or `npz:PATH`) with `splits` and `size`, or a GenlabError.

    The checks run in load_dataset's order: the splits, the size, the spec's type, its form,
    then the ~user of its path.
    """
    for split in splits:
        check_split(split)
    hw = _as_hw(size)
    if not isinstance(spec, str):
        raise GenlabError(
            f"a dataset spec is a string such as 'mnist-5k' or 'folder:PATH', got {type(spec).__name__} {spec!r}; "
            "pass it as a string"
        )
    source, _, path = spec.partition(":")
    if source in PATH_SOURCES and path:
        return path_spec(source, path, splits, hw)  # f"{source}:{path}" == spec: partition splits at the first ":"
    if spec in DATASET_NAMES:
        return ParsedSpec(spec, spec, None, splits, hw)
    raise _unknown_spec(spec)


def path_spec(
    source: str, path: str | Path, splits: tuple[str, ...] = SPLITS, size: tuple[int, int] | None = None
) -> ParsedSpec:
    """The ParsedSpec of `source`:`path` (e.g. read_npz's file), its ~ expanded, or a GenlabError."""
    text = f"{source}:{path}"
    return ParsedSpec(text, source, user_path(path, text), splits, size)


def user_path(path: str | Path, spec: str) -> Path:
    """`path` with a leading ~ or ~user expanded, or a GenlabError when that user has no home."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~nosuchuser
        raise GenlabError(
            f"{spec}: cannot expand {path}, that user has no home folder here; give the full path"
        ) from None


def _as_hw(size: object) -> tuple[int, int] | None:
    """`size` as (H, W): S -> (S, S); None stays None."""

    def positive(s: object) -> bool:
        return isinstance(s, numbers.Integral) and not isinstance(s, bool) and 0 < int(s) <= MAX_SIDE

    if size is None:
        return None
    if isinstance(size, numbers.Integral) and positive(size):
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(positive(s) for s in size):
        return int(size[0]), int(size[1])
    raise GenlabError(
        f"size must be a positive int S (for SxS) or a pair (H, W), each at most {MAX_SIDE}, got {size!r}; "
        "pass e.g. size=28 or size=(28, 28)"
    )


def _unknown_spec(spec: str) -> GenlabError:
    hint = ""
    close = difflib.get_close_matches(spec, DATASET_NAMES, n=1)
    try:
        path = Path(spec).expanduser()
    except RuntimeError:  # ~nosuchuser
        path = Path(spec)
    if close:
        hint = f" (did you mean {close[0]}?)"
    elif spec and path.is_dir():
        hint = f" (for that folder use folder:{spec})"
    elif path.suffix == ".npz":
        hint = f" (for that file use npz:{spec})"
    return GenlabError(
        f"unknown dataset {spec!r}{hint}; valid: {', '.join(DATASET_NAMES)}, "
        "folder:PATH (one subfolder of images per class) or npz:PATH (an .npz with `images`)"
    )
