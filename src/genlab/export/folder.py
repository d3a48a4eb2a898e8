"""The folder an export is written to: checked before anything is loaded, filled beside it, moved into place whole.

An export folder holds exactly what its exporter writes (its `entries`) and genlab_export.json naming the
genlab-export format; `--overwrite` replaces such a folder and nothing else (never a run, never the user's
files), and a finished export replaces the previous one in one rename, or leaves it as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Collection
from pathlib import Path

from genlab.errors import GenlabError
from genlab.run import RUN_FILE

EXPORT_FILE = "genlab_export.json"  # what the export is and how to use it, beside the exported files
EXPORT_FORMAT = "genlab-export"
EXPORT_FORMAT_VERSION = 1


def check_export_out(out_dir: str | Path, run_path: str | Path, overwrite: bool, entries: Collection[str]) -> Path:
    """`out_dir` as a Path when an export may be written there, else GenlabError saying why and what to do.

    A new or empty folder is fine; any other only with `overwrite`, and only when it holds a previous
    genlab export and nothing else (never a run, never the user's files). Nothing is written here.
    """
    out = Path(out_dir)
    run = Path(run_path).resolve()
    resolved = out.resolve()
    if resolved == run or run in resolved.parents:
        raise GenlabError(f"--out {out} is inside the run {run_path}; give a folder outside it, e.g. {run.name}-export")
    if out.is_file() or out.is_symlink():
        raise GenlabError(f"--out {out} is a file or a link; give a folder for the export")
    if out.is_dir() and not any(out.iterdir()):
        return out  # an empty folder: nothing to lose
    if out.exists() and not overwrite:
        raise GenlabError(f"--out {out} already exists; pass --overwrite to replace a previous export there")
    if out.exists():
        _check_replaceable_export(out, entries)
    return out


def _check_replaceable_export(path: Path, entries: Collection[str]) -> None:
    """Raise GenlabError unless the folder `path` holds a genlab export and nothing else (as run.check_replaceable)."""
    refusal = f"--out {path} is not a genlab export, so --overwrite will not delete it"
    if (path / RUN_FILE).exists():
        raise GenlabError(f"{refusal}: it holds a run ({RUN_FILE}); choose another --out")
    try:
        info = json.loads((path / EXPORT_FILE).read_bytes())
    except FileNotFoundError:
        raise GenlabError(f"{refusal} (it has no {EXPORT_FILE}); choose another --out") from None
    except (ValueError, RecursionError, OSError):
        info = None
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise GenlabError(
            f"{refusal}: its {EXPORT_FILE} does not name the {EXPORT_FORMAT} format; choose another --out"
        )
    for entry in sorted(path.iterdir()):
        if entry.is_symlink() or not entry.is_file() or entry.name not in entries:
            raise GenlabError(
                f"{refusal}: genlab never writes {entry.name} into an export; choose another --out "
                "(or move that away yourself)"
            )


def fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder `staging` to `out`, replacing a previous export there (checked replaceable)."""
    if not out.exists():
        os.replace(staging, out)
        return
    retired = out.parent / f".{out.name}.{secrets.token_hex(6)}.old"
    os.replace(out, retired)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(retired, out)  # put the previous export back
        raise
    shutil.rmtree(retired, ignore_errors=True)
