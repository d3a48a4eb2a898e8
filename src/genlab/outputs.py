"""Where genlab may write a file the user names (--out): one check for every command, made before any work.

The rule: an output replaces an existing file of its own kind (a page over a page, a grid over
a grid, by name and by the file's first bytes), never a file of another kind, and never a run's
own file: its run.json, weights, training state, history and lock, the grids it drew in training,
and what another command wrote into it (its report.html, its metrics.json and memorization.png,
what `genlab sample` drew into samples/). A command may replace only what it writes into its
own run: `genlab report RUN` its report.html, `genlab eval RUN` its metrics, `genlab sample RUN`
the files it draws into samples/.

    out = check_output(args.out, COMPARE_PAGE)  # the path, or GenlabError naming it and what to do
    with naming(out):  # an OSError without a file name (a full disk) gets this one
        atomic_write_bytes(out, page)
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import GenlabError
from genlab.run import (
    HISTORY_FILE,
    LOCK_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PAIRS_FILE,
    REPORT_FILE,
    RUN_FILE,
    SAMPLES_DIR,
    STATE_FILE,
    TOKENIZER_FILE,
    is_run_dir,
)

TRAINING_GRIDS = f"{SAMPLES_DIR}/epoch_*.png"  # drawn by training: they cannot be drawn again
HEAD_BYTES = 64  # first bytes of an existing file read to tell its kind

# Every file of a run (besides samples/): what it is, for messages, and the one command that
# writes it into the run (None: training, and nothing can write it again).
RUN_FILES: dict[str, tuple[str, str | None]] = {
    RUN_FILE: ("its description", None),
    MODEL_FILE: ("its weights", None),
    STATE_FILE: ("its training state", None),
    HISTORY_FILE: ("its history", None),
    LOCK_FILE: ("its lock", None),
    METRICS_FILE: ("its metrics", "genlab eval"),
    PAIRS_FILE: ("its memorization pairs", "genlab eval"),
    REPORT_FILE: ("its report", "genlab report"),
    TOKENIZER_FILE: ("its tokenizer", None),
}
# Names no output takes anywhere: a folder holding one would look like a run (or a damaged one).
RESERVED = (RUN_FILE, MODEL_FILE, STATE_FILE, HISTORY_FILE, LOCK_FILE, TOKENIZER_FILE)


def _text_head(head: bytes) -> bytes:
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()


@dataclass(frozen=True)
class OutputKind:
    """What a command writes at a path the user names, and which existing files it may replace."""

    writer: str  # the command that writes it, for messages: "genlab report"
    what: str  # what it writes, for messages: "an HTML page"
    suffix: str  # the name's ending, lower case; "" for a folder
    example: str  # a name to suggest
    starts_like: Callable[[bytes], bool] = lambda head: False  # whether a file's first bytes are of this kind
    in_own_run: tuple[str, ...] = ()  # patterns (relative to the command's own run) it may replace
    contents: tuple[tuple[str, OutputKind], ...] = ()  # a folder: the files written into it

    @property
    def is_folder(self) -> bool:
        return not self.suffix


def _html(head: bytes) -> bool:
    return _text_head(head).startswith(b"<")


def _json(head: bytes) -> bool:
    return _text_head(head)[:1] in (b"{", b"[")


def _png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _npz(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))  # a zip archive (an empty one ends at once)


REPORT_PAGE = OutputKind("genlab report", "an HTML page", ".html", REPORT_FILE, _html, in_own_run=(REPORT_FILE,))
COMPARE_PAGE = OutputKind("genlab compare", "an HTML page", ".html", "compare.html", _html)
LIKELIHOOD_TABLE = OutputKind("genlab likelihood", "a JSON table", ".json", "likelihood.json", _json)
PNG_GRID = OutputKind("genlab sample", "a PNG grid", ".png", "grid.png", _png, in_own_run=(f"{SAMPLES_DIR}/*.png",))
NPZ_ARRAYS = OutputKind(
    "genlab sample", "an .npz of images", ".npz", "samples.npz", _npz, in_own_run=(f"{SAMPLES_DIR}/*.npz",)
)
TEXT_PAGE = OutputKind(
    "genlab sample", "text", ".txt", "texts.txt", lambda head: _text_head(head).startswith(b"--- "),
    in_own_run=(f"{SAMPLES_DIR}/*.txt",),
)  # fmt: skip
TEXT_LINES = OutputKind(
    "genlab sample", "JSON lines of text", ".jsonl", "texts.jsonl", lambda head: head.startswith(b'{"prompt"')
)


def text_kind(path: str | Path) -> OutputKind:
    """What `genlab sample` writes for a text run at `path`: JSON lines (.jsonl), else text (.txt)."""
    return TEXT_LINES if Path(path).suffix.lower() == ".jsonl" else TEXT_PAGE


METRICS_JSON = OutputKind("genlab eval", "a metrics file", ".json", METRICS_FILE, _json, in_own_run=(METRICS_FILE,))
PAIRS_PNG = OutputKind("genlab eval", "a PNG grid", ".png", PAIRS_FILE, _png, in_own_run=(PAIRS_FILE,))
EVAL_FOLDER = OutputKind(
    "genlab eval",
    "metrics.json and memorization.png",
    "",
    "eval",
    contents=((METRICS_FILE, METRICS_JSON), (PAIRS_FILE, PAIRS_PNG)),
)


def check_output(
    path: str | Path,
    kind: OutputKind,
    run: str | Path | None = None,
    inputs: Iterable[str | Path] = (),
    flag: str = "--out",
) -> Path:
    """`path` as a Path when `kind` may be written there, else GenlabError naming it and what to do.

    `run`: the run the command works on, whose own outputs of this kind (`kind.in_own_run`) may
    be replaced. `inputs`: files the command reads, which its output must not replace. Nothing
    is created or written here.
    """
    from genlab.zoo import inside_zoo

    path = Path(path)
    if inside_zoo(path):
        raise GenlabError(f"{flag} {path} is inside genlab's model zoo, which is read-only; write somewhere else")
    if kind.is_folder:
        return _check_folder(path, kind, run, flag)
    if path.is_dir():
        raise GenlabError(
            f"{flag} {path} is a folder; give a file name ending in {kind.suffix}, e.g. {path / kind.example}"
        )
    _check_folder_above(path, flag)
    own_output = _check_not_of_a_run(path, kind, run, flag)
    if path.suffix.lower() != kind.suffix:
        raise GenlabError(
            f"{flag} {path} must end in {kind.suffix} ({kind.writer} writes {kind.what} there), "
            f"e.g. {path.with_suffix(kind.suffix) if path.name else kind.example}"
        )
    for given in inputs:
        if path.exists() and Path(given).exists() and os.path.samefile(path, given):
            raise GenlabError(f"{flag} {path} is the file this command reads ({given}); give another name")
    if path.exists():
        _check_replaceable(path, kind, flag, own_output)
    return path


def _check_folder(path: Path, kind: OutputKind, run: str | Path | None, flag: str) -> Path:
    """A folder output: the command's own run, or a new folder, or one holding only what `kind` writes."""
    if path.exists() and not path.is_dir():
        raise GenlabError(f"{flag} {path} is a file; give a folder for {kind.what}")
    _check_folder_above(path, flag)
    own = run is not None and path.is_dir() and _same(path, Path(run))
    if path.name == SAMPLES_DIR and _looks_like_run(path.parent):
        raise GenlabError(f"{flag} {path} is the samples folder of the run {path.parent}; give a new folder")
    if not own and _looks_like_run(path):
        raise GenlabError(
            f"{flag} {path} is another run; {kind.writer} writes into a run only when it works on that run: "
            "give a new folder"
        )
    if path.is_dir() and not own:
        written = {name for name, _ in kind.contents}
        foreign = sorted(p.name for p in path.iterdir() if p.name not in written and not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise GenlabError(
                f"{flag} {path} holds files {kind.writer} does not write ({shown}); give a new or empty folder"
            )
    for name, content in kind.contents:
        check_output(path / name, content, run=run, flag=flag)
    return path


def _check_folder_above(path: Path, flag: str) -> None:
    """The nearest existing folder above `path` must be a folder (it is created up to there)."""
    for above in path.parents:
        if above.exists():
            if not above.is_dir():
                raise GenlabError(f"{flag} {path}: {above} is a file, not a folder; give a path in a folder")
            return


def _check_not_of_a_run(path: Path, kind: OutputKind, run: str | Path | None, flag: str) -> bool:
    """Refuse a file of a run, unless it is what this command writes into its own run (then True)."""
    instead = f"give another path ending in {kind.suffix}"
    owner = _run_holding(path)
    if owner is not None:
        folder, relative = owner
        role: tuple[str, str | None] | None = None  # None: a new name beside the run's files
        if fnmatch.fnmatch(relative, TRAINING_GRIDS):
            role = ("a sample grid it drew in training", None)
        elif relative.startswith(f"{SAMPLES_DIR}/"):
            role = ("one of its samples", "genlab sample")
        elif relative in RUN_FILES:
            role = RUN_FILES[relative]
        own = run is not None and _same(folder, Path(run))
        if role is not None and (role[1] is None or not own or not _matches(relative, kind.in_own_run)):
            what, writer = role
            if writer is None:  # training's own files: no output replaces them
                raise GenlabError(
                    f"{flag} {path} is a file of the run {folder} ({what}) that only training writes; {instead}"
                )
            raise GenlabError(
                f"{flag} {path} is a file of the run {folder} ({what}) that only `{writer} {folder}` writes; {instead}"
            )
        if role is not None:
            return True
    if path.name.lower() in RESERVED:
        raise GenlabError(f"{flag} {path}: {path.name} is the name of a run's own file; {instead}")
    return False


def _matches(relative: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def _run_holding(path: Path) -> tuple[Path, str] | None:
    """(run folder, path inside it in lower case) when `path` is a file of a run, directly or in its samples/.
    Lower case: on a case-insensitive file system RUN.JSON is run.json."""
    parent = path.parent
    if _looks_like_run(parent):
        return parent, path.name.lower()
    if parent.name.lower() == SAMPLES_DIR and _looks_like_run(parent.parent):
        return parent.parent, f"{SAMPLES_DIR}/{path.name.lower()}"
    return None


def _looks_like_run(folder: Path) -> bool:
    """A run, or what is left of one: refusing to write into a damaged run is the safe side."""
    return is_run_dir(folder) or any((folder / name).is_file() for name in (RUN_FILE, MODEL_FILE, STATE_FILE))


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _check_replaceable(path: Path, kind: OutputKind, flag: str, own_output: bool) -> None:
    """An existing file is replaced only when it is a regular file of `kind` (or empty), or when it is
    what this command writes into its own run (whatever became of it since)."""
    if not path.is_file():
        raise GenlabError(f"{flag} {path} exists and is not a regular file; give another name")
    if own_output:
        return
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    if head and not kind.starts_like(head):
        raise GenlabError(
            f"{flag} {path} exists and is not {kind.what}; {kind.writer} replaces only a file of the kind it writes: "
            "give a new name, or move that file away first"
        )


# ---------------------------------------------------------------- errors while writing

HINTS = {
    errno.ENOSPC: "free some space there, or write elsewhere",
    errno.EDQUOT: "free some space there, or write elsewhere",
    errno.EFBIG: "a limit on file sizes (ulimit -f) stops it; raise the limit, or write elsewhere",
    errno.EACCES: "check the folder's permissions, or write elsewhere",
    errno.EPERM: "check the folder's permissions, or write elsewhere",
    errno.EROFS: "that file system is read-only; write elsewhere",
}


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give an OSError raised inside without a file name (a write to a full disk) `path` as its file."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


def describe_os_error(error: OSError) -> str:
    """One line for an OSError: the file(s) it names, what went wrong, and what to do."""
    reason = error.strerror or str(error) or type(error).__name__
    files = [str(name) for name in (error.filename, error.filename2) if name is not None]
    text = f"{' -> '.join(files)}: {reason}" if files else reason
    hint = HINTS.get(error.errno or 0)
    return f"{text}; {hint}" if hint else text
