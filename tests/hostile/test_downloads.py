"""Downloads from a hostile mirror (issue 18): a server on 127.0.0.1 that misbehaves in every way a mirror can.

`genlab datasets --download mnist --mirror URL` against each behaviour must refuse in one line naming
the URL and what to do, within its deadline and its byte cap, and leave the data root as it was.
The deadline and the cap are shortened through genlab.data.idx's module constants so that each case
takes a fraction of a second.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from genlab.data import download_dataset, idx
from genlab.data.idx import FILE_STEMS
from genlab.errors import GenlabError
from tests.hostile.conftest import refused, refused_in_subprocess

FIRST = "train-images-idx3-ubyte.gz"  # the first file a download asks for
FIRST_SIZE = 9_912_422  # its published size
DEADLINE = 0.5  # seconds: the patched time allowed for one file
READ_WAIT = 0.3  # seconds: the patched per-read timeout
SERVER_PATIENCE = 5.0  # seconds a misbehaving handler keeps going at most, so no bug can hang the suite

Behaviour = Callable[["Handler", threading.Event], None]


class Handler(BaseHTTPRequestHandler):
    """Answers every GET with the server's `behaviour`, written byte for byte onto the socket."""

    behaviour: Behaviour
    stop: threading.Event

    def do_GET(self) -> None:
        try:
            self.behaviour(self, self.stop)
        except OSError:  # the client gave up, as it should
            pass

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a handler whose client left (or that reset its own connection) is expected here


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], str]]:
    """serve(behaviour) -> the base URL of a mirror on 127.0.0.1 that answers every request with it."""
    servers: list[QuietServer] = []
    stop = threading.Event()

    def start(behaviour: Behaviour) -> str:
        handler = type("Bound", (Handler,), {"behaviour": staticmethod(behaviour), "stop": stop})
        server = QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "DOWNLOAD_SECONDS", DEADLINE)
    monkeypatch.setattr(idx, "READ_SECONDS", READ_WAIT)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root holding a file of the user's: it must be byte-identical after any refused download."""
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    (root / "mnist" / "notes.txt").write_text("mine\n")
    return root


# ---------------------------------------------------------------- behaviours of a hostile mirror


def send(handler: Handler, data: bytes) -> None:
    handler.wfile.write(data)
    handler.wfile.flush()


def head(status: str = "200 OK", *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers, "Connection: close"]) + "\r\n\r\n").encode()


def endless(*headers: str, chunked: bool = False) -> Behaviour:
    """A body that never ends (until the client leaves, or the test does)."""

    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, head("200 OK", *headers, *(["Transfer-Encoding: chunked"] if chunked else [])))
        block = bytes(1 << 16)
        frame = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
        while not stop.is_set():
            send(handler, frame)

    return behave


def drip(prefix: bytes, *, every: float = 0.05) -> Behaviour:
    """`prefix` at once, then one byte every `every` seconds: each read gets something before it times out."""

    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, prefix)
        ends = time.monotonic() + SERVER_PATIENCE
        while not stop.wait(every) and time.monotonic() < ends:
            send(handler, b"x")

    return behave


def stall(prefix: bytes) -> Behaviour:
    """`prefix`, then silence."""

    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, prefix)
        stop.wait(SERVER_PATIENCE)

    return behave


def body(data: bytes, *headers: str, status: str = "200 OK") -> Behaviour:
    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, head(status, *headers) + data)

    return behave


def cut_short(sent: int, *, reset: bool) -> Behaviour:
    """Announce the whole file, send `sent` bytes, then close (with a TCP reset when `reset`)."""

    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, head("200 OK", f"Content-Length: {FIRST_SIZE}") + bytes(sent))
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.rfile.close()
            handler.wfile.close()
            handler.connection.close()

    return behave


def redirect(to: Callable[[str], str]) -> Behaviour:
    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, head("302 Found", f"Location: {to(handler.path)}", "Content-Length: 0"))

    return behave


def raw(data: bytes) -> Behaviour:
    def behave(handler: Handler, stop: threading.Event) -> None:
        send(handler, data)

    return behave


def silent(handler: Handler, stop: threading.Event) -> None:
    """Close without a word."""


def hop(path: str) -> str:
    """The next of an endless chain of redirects: /a/b/FILE -> /a/b/x/FILE."""
    folder, _, name = path.rpartition("/")
    return f"{folder}/x/{name}"


# behaviour, then fragments the one error line must hold (besides the URL)
CASES: dict[str, tuple[Behaviour, tuple[str, ...]]] = {
    "endless body": (endless(), (f"sends more than {FIRST_SIZE:,} bytes", "published size", "--mirror")),
    "endless chunked body": (endless(chunked=True), (f"sends more than {FIRST_SIZE:,} bytes", "--mirror")),
    "content-length beyond the file": (
        endless("Content-Length: 1000000000000000"),
        ("announces 1,000,000,000,000,000 bytes", "--mirror"),
    ),
    "one byte at a time": (
        drip(head("200 OK", f"Content-Length: {FIRST_SIZE}")),
        (f"gave up on {{url}} after {DEADLINE:g} s", "too slow"),
    ),
    "one header byte at a time": (drip(b"HTTP/1.1 200 OK\r\nX-Slow: "), (f"after {DEADLINE:g} s", "too slow")),
    "silence after the headers": (stall(head("200 OK")), (f"no data for {READ_WAIT:g} s", "--mirror")),
    "silence before the headers": (stall(b""), (f"no data for {READ_WAIT:g} s", "--mirror")),
    "connection reset mid-body": (cut_short(1000, reset=True), ("could not download", "--mirror")),
    "connection closed mid-body": (
        cut_short(1000, reset=False),
        (f"closed after 1,000 of the {FIRST_SIZE:,} bytes", "try again"),
    ),
    "redirect to itself": (redirect(lambda path: path), ("redirects (HTTP 302)", "--mirror")),
    "endless chain of redirects": (redirect(hop), ("redirects (HTTP 302)", "--mirror")),
    "redirect to nowhere": (body(b"", "Content-Length: 0", status="302 Found"), ("redirects (HTTP 302)",)),
    "404": (body(b"gone", "Content-Length: 4", status="404 Not Found"), ("HTTP Error 404", f"has no {FIRST}")),
    "500": (body(b"", "Content-Length: 0", status="500 Oops"), ("HTTP Error 500", "try again later")),
    "403": (body(b"", "Content-Length: 0", status="403 Forbidden"), ("HTTP Error 403", "--mirror")),
    "escape codes in the reason": (
        body(b"", "Content-Length: 0", status="500 \x1b[2J\x1b[31mcleared"),
        ("HTTP Error 500", "cleared"),
    ),
    "another file": (
        body(bytes(100), "Content-Length: 100"),
        ("checksum mismatch", f"(100 bytes; the published file has {FIRST_SIZE:,})", "--mirror"),
    ),
    "nonsense content-length": (body(bytes(10), "Content-Length: banana"), ("checksum mismatch",)),
    "negative content-length": (body(bytes(10), "Content-Length: -5"), ("checksum mismatch",)),
    "not http": (raw(b"SSH-2.0-OpenSSH_9.6\r\n"), ("not valid HTTP", "--mirror")),
    "closed at once": (silent, ("could not download", "--mirror")),
    "a header line without end": (
        raw(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"),
        ("not valid HTTP",),
    ),
    "a thousand headers": (raw(head("200 OK", *(f"X-{i}: {i}" for i in range(1000)))), ("not valid HTTP",)),
    "broken chunk size": (raw(head("200 OK", "Transfer-Encoding: chunked") + b"zz\r\n"), ("not valid HTTP",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_mirror_is_refused(case, serve, short_limits, data_root, capsys):
    behaviour, fragments = CASES[case]
    base = serve(behaviour)
    url = base + FIRST
    started = time.monotonic()
    line = refused(
        ["datasets", "--download", "mnist", "--mirror", base, "--root", data_root],
        capsys,
        url,
        *(fragment.format(url=url) for fragment in fragments),
        untouched=data_root,
    )
    assert time.monotonic() - started < DEADLINE + 2, "the deadline was not kept"
    assert line.isprintable(), repr(line)  # nothing the server chose reaches the terminal as a control code
    assert sorted(p.name for p in (data_root / "mnist").iterdir()) == ["notes.txt"]


def test_an_endless_body_is_capped_in_a_memory_limited_process(serve, tmp_path):
    """The endless body again, in a fresh process that may take 3 GB: capped at the published size, not buffered."""
    base = serve(endless())
    root = tmp_path / "data"
    root.mkdir()
    refused_in_subprocess(
        ["datasets", "--download", "mnist", "--mirror", base, "--root", root],
        base + FIRST,
        f"sends more than {FIRST_SIZE:,} bytes",
        untouched=root,
    )
    assert list(root.iterdir()) == []


@pytest.fixture
def small_mirror(tmp_path) -> tuple[Path, dict[str, str]]:
    """(folder, {file: md5}) of four small gzipped IDX files: a mirror whose checksums the caller gives."""
    folder = tmp_path / "small"
    folder.mkdir()
    for stem in FILE_STEMS:
        shape = (10, 4, 5) if "images" in stem else (10,)
        values = bytes(i % 10 for i in range(int(np.prod(shape))))
        header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}i", *shape)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(header + values))
    return folder, {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_a_file_without_a_recorded_size_is_capped_at_the_stated_maximum(serve, small_mirror, monkeypatch, tmp_path):
    """Checksums given by the caller are another file than the published one: the cap is MAX_FILE_BYTES."""
    _, md5 = small_mirror
    monkeypatch.setattr(idx, "MAX_FILE_BYTES", 100_000)
    base = serve(endless())
    with pytest.raises(GenlabError, match=r"sends more than 100,000 bytes, more than the 100,000 genlab downloads"):
        download_dataset("mnist", root=tmp_path / "data", mirror=base, checksums=md5, progress=False)
    with pytest.raises(GenlabError, match=r"announces 200,000 bytes"):
        download_dataset(
            "mnist", root=tmp_path / "data", mirror=serve(body(b"", "Content-Length: 200000")), checksums=md5
        )
    assert not (tmp_path / "data").exists()


def test_the_limits_can_be_given_as_an_argument(serve, small_mirror, tmp_path):
    _, md5 = small_mirror
    limits = idx.DownloadLimits(seconds=0.3, read_seconds=5, max_bytes=10**9)
    started = time.monotonic()
    with pytest.raises(GenlabError, match=r"after 0\.3 s"):
        idx.download("mnist", tmp_path / "data", serve(drip(head())), md5, progress=False, limits=limits)
    assert time.monotonic() - started < 2.5
    assert not (tmp_path / "data").exists()


def slow_but_steady(folder: Path) -> Behaviour:
    """The real files, in four pieces with pauses between them (well within the deadline)."""

    def behave(handler: Handler, stop: threading.Event) -> None:
        data = (folder / handler.path.rpartition("/")[2]).read_bytes()
        send(handler, head("200 OK", f"Content-Length: {len(data)}"))
        for start in range(0, len(data), max(1, len(data) // 4)):
            time.sleep(0.02)
            send(handler, data[start : start + max(1, len(data) // 4)])

    return behave


def test_a_slow_mirror_within_the_deadline_and_a_redirect_are_fine(serve, small_mirror, short_limits, tmp_path):
    folder, md5 = small_mirror
    base = serve(slow_but_steady(folder))
    moved = serve(redirect(lambda path: base.rstrip("/") + path))
    got = download_dataset("mnist", root=tmp_path / "data", mirror=moved, checksums=md5, progress=False)
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in got.iterdir()} == md5


def test_a_verified_file_already_there_is_kept_and_a_wrong_one_replaced(serve, small_mirror, short_limits, tmp_path):
    folder, md5 = small_mirror
    target = tmp_path / "data" / "mnist"
    target.mkdir(parents=True)
    (target / FIRST).write_bytes((folder / FIRST).read_bytes())
    (target / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not it"))
    requested: list[str] = []

    def serve_files(handler: Handler, stop: threading.Event) -> None:
        requested.append(handler.path)
        slow_but_steady(folder)(handler, stop)

    download_dataset("mnist", root=tmp_path / "data", mirror=serve(serve_files), checksums=md5, progress=False)
    assert sorted(requested) == sorted(f"/{name}" for name in md5 if name != FIRST)
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in target.iterdir()} == md5


def test_a_fifo_in_a_local_mirror_is_refused_not_waited_on(tmp_path, data_root, capsys):
    local = tmp_path / "local"
    local.mkdir()
    os.mkfifo(local / FIRST)
    refused(
        ["datasets", "--download", "mnist", "--mirror", local, "--root", data_root],
        capsys,
        str(local / FIRST),
        "not a regular file",
        untouched=data_root,
    )


@pytest.mark.parametrize(
    "mirror, named",
    [("ftp://127.0.0.1/mnist/", "not an http(s) URL"), ("http://127.0.0.1:9/\x1b[2J", "control characters")],
)
def test_a_mirror_that_is_no_url_is_refused(mirror, named, data_root, capsys):
    refused(["datasets", "--download", "mnist", "--mirror", mirror, "--root", data_root], capsys, "--mirror", named,
            untouched=data_root)  # fmt: skip


@pytest.fixture(autouse=True)
def no_stray_tempfiles(tmp_path, monkeypatch):
    """Downloads stream to anonymous temporary files under TMPDIR: none may be left behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)
    yield
    assert list(temp.iterdir()) == []
