"""Hostile output paths and faults while writing (issue 18, classes 5 and 10).

Every command that writes a file the user names (report, compare, likelihood, sample, eval) is
pointed at each file of a run, at files of another kind, at folders; none may write, and the
message names the path. Then the messages: a damaged sample grid, a full disk, a second Ctrl-C.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.errors import GenlabError
from tests.hostile.conftest import FIXTURES, Outcome, assert_refused, refused, run_cli, snapshot

# A command that writes a file the user names, as (arguments before --out, arguments after).
WRITERS = {
    "report": (["report", "{R}"], []),
    "compare": (["compare", "{R}", "{S}"], []),
    "likelihood": (["likelihood", "{R}"], []),
    "sample-png": (["sample", "{R}", "--n", "4"], []),
    "sample-npz": (["sample", "{R}", "--n", "4"], ["--format", "npz"]),
}
# Every file of a run, as a path inside it.
RUN_FILES = [
    "run.json",
    "model.safetensors",
    "state.safetensors",
    "history.jsonl",
    ".lock",
    "metrics.json",
    "memorization.png",
    "report.html",
    "samples/epoch_0001.png",
    "samples/seed_0.png",
]
# What a command may write into its own run R (the default places of its outputs).
OWN_OUTPUTS = {("report", "R", "report.html"), ("sample-png", "R", "samples/seed_0.png")}


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    """R (a vae run, the one the command works on) and S (another run), with every optional file present."""
    found = {}
    for name, family in (("R", "vae"), ("S", "gan")):
        folder = tmp_path / name
        shutil.copytree(FIXTURES / family, folder)
        (folder / "report.html").write_text("<!doctype html><title>report</title>")
        shutil.copy(folder / "samples" / "epoch_0001.png", folder / "samples" / "seed_0.png")
        found[name] = folder
    return found


def command(writer: str, runs: dict[str, Path], out: Path | str) -> list[str]:
    before, after = WRITERS[writer]
    places = {key: str(path) for key, path in runs.items()}
    return [arg.format(**places) for arg in before] + ["--out", str(out)] + after


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("owner", ["R", "S"])
@pytest.mark.parametrize("target", RUN_FILES)
def test_no_output_replaces_a_file_of_a_run(writer, owner, target, runs, tmp_path, capsys):
    if (writer, owner, target) in OWN_OUTPUTS:
        pytest.skip("the command's own output in its own run")
    out = runs[owner] / target
    refused(command(writer, runs, out), capsys, str(out), untouched=tmp_path)


def test_no_output_takes_the_name_of_a_run_file_anywhere(runs, tmp_path, capsys):
    out = tmp_path / "new" / "run.json"  # a folder holding it would look like a run
    refused(command("likelihood", runs, out), capsys, str(out), "run's own file", untouched=tmp_path)


def existing(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# (writer, the --out it is given, words the message must hold): files of another kind, folders, odd paths
OTHER_KINDS = [
    ("report", lambda t: existing(t, "thesis.tex", b"\\documentclass{article}"), ".html"),
    ("report", lambda t: t / "new.tex", ".html"),
    ("report", lambda t: existing(t, "notes.html", (FIXTURES / "vae" / "model.safetensors").read_bytes()), "not"),
    (
        "report",
        lambda t: existing(t, "photo.html", (FIXTURES / "vae" / "samples" / "epoch_0001.png").read_bytes()),
        "HTML",
    ),
    ("compare", lambda t: t, "folder"),
    ("compare", lambda t: existing(t, "page.htm", b"<html></html>"), ".html"),
    ("likelihood", lambda t: existing(t, "table.csv", b"a,b\n1,2\n"), ".json"),
    ("likelihood", lambda t: existing(t, "table.json", b"\x00\x01binary"), "JSON"),
    ("sample-png", lambda t: existing(t, "grid.png", b"GIF89a not a png"), "PNG"),
    ("sample-png", lambda t: existing(t, "grid.jpg", b"\xff\xd8\xff"), ".png"),
    ("sample-png", lambda t: existing(t, "afile", b"x") / "grid.png", "not a folder"),
    ("sample-npz", lambda t: t / "arrays.png", ".npz"),
    ("sample-npz", lambda t: existing(t, "arrays.npz", b"<html>a page</html>"), "npz"),
]


@pytest.mark.parametrize("writer, make, words", OTHER_KINDS)
def test_no_output_replaces_a_file_of_another_kind(writer, make, words, runs, tmp_path, capsys):
    out = make(tmp_path)
    refused(command(writer, runs, out), capsys, str(out), words, untouched=tmp_path)


def test_sample_does_not_replace_the_image_it_completes(fixture_run, tmp_path, capsys):
    run = fixture_run("pixelcnn")
    image = tmp_path / "digit.png"
    shutil.copy(run / "samples" / "epoch_0001.png", image)
    refused(["sample", run, "--complete", image, "--out", image], capsys, str(image), "reads", untouched=tmp_path)


def npz_samples(tmp_path: Path) -> Path:
    path = tmp_path / "drawn.npz"
    np.savez(path, images=np.zeros((4, 1, 8, 8), np.float32))
    return path


# genlab eval --out FOLDER: (arguments, the folder, words the message must hold)
EVAL_FOLDERS = [
    (lambda r, t: ["eval", r["R"]], lambda r, t: r["S"], "another run"),
    (lambda r, t: ["eval", "--samples", npz_samples(t), "--data", "digits"], lambda r, t: r["R"], "another run"),
    (lambda r, t: ["eval", r["R"]], lambda r, t: r["R"] / "samples", "samples folder"),
    (lambda r, t: ["eval", r["R"]], lambda r, t: r["S"] / "samples", "samples folder"),
    (lambda r, t: ["eval", r["R"]], lambda r, t: r["R"] / "model.safetensors", "is a file"),
    (lambda r, t: ["eval", r["R"]], lambda r, t: existing(t, "thesis.tex", b"") and t, "thesis.tex"),
    (lambda r, t: ["eval", r["R"]], lambda r, t: existing(t, "afile", b"x") / "eval", "not a folder"),
]


@pytest.mark.parametrize("args, folder, words", EVAL_FOLDERS)
def test_eval_writes_only_into_its_run_or_a_folder_of_its_own(args, folder, words, runs, tmp_path, capsys):
    given, out = args(runs, tmp_path), folder(runs, tmp_path)
    refused([*given, "--out", out], capsys, str(out), words, untouched=tmp_path)


def test_an_output_replaces_a_file_of_its_own_kind(runs, tmp_path, capsys):
    r, s = runs["R"], runs["S"]
    page = existing(tmp_path, "mine.html", b"<html><body>my own page</body></html>")
    table = existing(tmp_path, "c.html", b"<!doctype html><p>an older comparison</p>")
    for args in (
        ["report", r],  # its own report.html, again
        ["report", r, "--out", page],  # an HTML page of the user's: the same kind
        ["compare", r, s, "--out", table],
        ["sample", r, "--n", 4],  # its own samples/seed_0.png, again
        ["sample", r, "--n", 4, "--out", r / "samples" / "extra.png"],
        ["sample", r, "--n", 4, "--out", tmp_path / "deeper" / "grid.npz"],
    ):
        outcome = run_cli(args, capsys)
        assert outcome.code == 0, (args, outcome.stderr)
    assert b"my own page" not in page.read_bytes() and b"an older" not in table.read_bytes()
    assert (r / "samples" / "extra.png").is_file() and (tmp_path / "deeper" / "grid.npz").is_file()


# ------------------------------------------------------------------ damaged sample grids


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of(width: int, height: int) -> bytes:
    rows = b"".join(b"\x00" + bytes(width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


GOOD = (FIXTURES / "vae" / "samples" / "epoch_0002.png").read_bytes()
JPEG = io.BytesIO()
Image.new("L", (8, 8)).save(JPEG, format="JPEG")
DAMAGED_PNGS = {
    "empty": b"",
    "signature only": GOOD[:8],
    "cut in the header": GOOD[:30],
    "cut after the header": GOOD[:100],
    "cut in half": GOOD[: len(GOOD) // 2],
    "last byte missing": GOOD[:-1],
    "garbage": bytes(range(256)) * 4,
    "text": b"not an image at all\n",
    "a JPEG": JPEG.getvalue(),
    "header checksum wrong": flipped(GOOD, 29),
    "pixel data corrupt": flipped(GOOD, len(GOOD) // 2),
    "too many pixels": png_of(4500, 4500),
}


@pytest.mark.parametrize("damage", list(DAMAGED_PNGS))
def test_every_damaged_grid_is_caught_and_named(damage, tmp_path):
    from genlab.explain.run_files import png_file  # what report and compare read a run's PNGs with

    grid = existing(tmp_path, "epoch_0002.png", DAMAGED_PNGS[damage])
    with pytest.raises(GenlabError, match=f"^{re.escape(str(grid))} (is damaged|has too many|is .* too large)"):
        png_file(grid)
    assert png_file(existing(tmp_path, "good.png", GOOD)) == GOOD


@pytest.mark.parametrize("damage", ["cut in the header", "last byte missing", "pixel data corrupt", "too many pixels"])
def test_a_damaged_grid_is_left_out_of_the_report_and_named(damage, fixture_run, tmp_path, capsys):
    run = fixture_run("vae")
    grid = run / "samples" / "epoch_0002.png"
    grid.write_bytes(DAMAGED_PNGS[damage])
    before = snapshot(run)
    out = tmp_path / "page.html"
    outcome = run_cli(["report", run, "--out", out], capsys)
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert f"{grid} " in out.read_text() and snapshot(run) == before


@pytest.mark.parametrize("damage", ["cut in half", "garbage", "pixel data corrupt"])
def test_a_damaged_grid_is_left_out_of_the_comparison_and_named(damage, runs, tmp_path, capsys):
    grid = runs["R"] / "samples" / "epoch_0002.png"  # R's latest: the one compare shows
    grid.write_bytes(DAMAGED_PNGS[damage])
    before = snapshot(runs["R"])
    out = tmp_path / "c.html"
    outcome = run_cli(["compare", runs["R"], runs["S"], "--out", out], capsys)
    assert outcome.code == 0 and outcome.stderr == "", outcome.stderr
    assert f"{grid} " in out.read_text() and snapshot(runs["R"]) == before


# ------------------------------------------------------------------ faults while writing


def test_a_full_disk_names_the_file_being_written(fixture_run, tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write(2) raises it: no file name

    run = fixture_run("vae")
    monkeypatch.setattr("genlab.explain.report.atomic_write_bytes", no_space)
    out = tmp_path / "page.html"
    line = refused(["report", run, "--out", out], capsys, str(out), "No space left on device", untouched=run)
    assert "free some space" in line
    monkeypatch.setattr("genlab.images.atomic_write_bytes", no_space)
    grid = tmp_path / "grid.png"
    refused(["sample", run, "--n", 4, "--out", grid], capsys, str(grid), "No space", untouched=run)


def test_a_file_size_limit_in_a_fresh_process_names_the_file(fixture_run, tmp_path):
    """A real write that the system cuts off (RLIMIT_FSIZE: EFBIG, raised by write(2) as a full disk is,
    without a file name), while `genlab sample` streams an .npz."""
    run = fixture_run("vae")
    out = tmp_path / "drawn.npz"
    before = snapshot(run)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # bytes: less than the file

    done = subprocess.run(
        [sys.executable, "-m", "genlab", "sample", str(run), "--n", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=60, preexec_fn=limit,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert_refused(Outcome(done.returncode, done.stdout, done.stderr), str(out), "File too large")
    assert list(tmp_path.glob("*.npz")) == [] and list(tmp_path.glob(".*.tmp")) == []  # nothing half-written
    assert snapshot(run) == before


def test_a_second_ctrl_c_says_what_was_saved(fixture_run, monkeypatch, capsys):
    """A second Ctrl-C while the first one's checkpoint is saved: run.json still says "running"."""
    run = fixture_run("vae")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("genlab.training.api.train", interrupted)
    outcome = run_cli(["train", "--resume", "--out", run], capsys)
    assert outcome.code == 130
    assert "nothing was saved" not in outcome.stderr
    assert "after epoch 2" in outcome.stderr and f"genlab train --resume --out {run}" in outcome.stderr


def test_ctrl_c_before_anything_was_written_says_so(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("genlab.training.api.train", interrupted)
    outcome = run_cli(["train", "vae", "--data", "digits", "--out", tmp_path / "new"], capsys)
    assert outcome.code == 130 and "nothing was saved" in outcome.stderr
