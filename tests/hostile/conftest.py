"""The standing suite of hostile inputs and faults (issue 18): shared tools.

Every case asserts the bad-input promise: exit code 2, one line on stderr that names the file
(or flag) at fault, no traceback, and every file of the run byte-identical afterwards.
`refused` runs the command in this process (fast); `refused_in_subprocess` runs it in a fresh
interpreter under a memory limit and a deadline, for faults that could crash or hang a process.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from genlab.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
SUBPROCESS_MEMORY = 3 * 1024**3  # bytes of address space a subprocess case may take before it fails
SUBPROCESS_SECONDS = 60


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256), to prove nothing was changed."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    """`genlab ARGS` in this process."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def run_subprocess(args: list[str], cwd: Path | None = None, memory: int = SUBPROCESS_MEMORY) -> Outcome:
    """`genlab ARGS` in a fresh interpreter with at most `memory` bytes of address space."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "genlab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_SECONDS,
        preexec_fn=limit,
        cwd=cwd,
        env=env,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_refused(outcome: Outcome, *named: str) -> None:
    """Exit 2, one line on stderr naming each of `named`, no traceback."""
    lines = outcome.stderr.strip().splitlines()
    assert outcome.code == 2, f"exit {outcome.code}: {outcome.stderr[-2000:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert len(lines) == 1, outcome.stderr
    for name in named:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"


def refused(args: list[str], capsys: pytest.CaptureFixture[str], *named: str, untouched: Path | None = None) -> str:
    """Run `genlab ARGS` here and assert the promise; `untouched` (a folder) must be byte-identical after.
    Returns the error line."""
    before = snapshot(untouched) if untouched is not None else None
    outcome = run_cli(args, capsys)
    assert_refused(outcome, *named)
    if untouched is not None:
        assert snapshot(untouched) == before, f"{untouched} changed"
    return outcome.stderr.strip()


def refused_in_subprocess(args: list[str], *named: str, untouched: Path | None = None, **kwargs) -> str:
    """As `refused`, in a fresh interpreter under a memory limit and a deadline (crashes, hangs, huge sizes)."""
    before = snapshot(untouched) if untouched is not None else None
    outcome = run_subprocess(args, **kwargs)
    assert_refused(outcome, *named)
    if untouched is not None:
        assert snapshot(untouched) == before, f"{untouched} changed"
    return outcome.stderr.strip()


@pytest.fixture
def fixture_run(tmp_path: Path):
    """A factory: a fresh copy of one of the fixture runs (tests/fixtures/runs/NAME) under tmp_path."""

    def copy(name: str = "vae") -> Path:
        target = tmp_path / f"run-{name}"
        shutil.copytree(FIXTURES / name, target)
        return target

    return copy
