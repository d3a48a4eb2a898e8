"""IDX files (LeCun's MNIST format): the reader, `mnist` and `fashion-mnist`, and the downloader.

An IDX file is two zero bytes, a type code (0x08 = uint8), the number of dimensions,
one big-endian int32 per dimension, then the values in row-major order. Files may be
gzip-compressed; that is detected from the magic bytes 1f 8b, never from the name.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.io import atomic_writer

from .dataset import ImageDataset
from .splits import DIGIT_CLASSES, SPLITS

GZIP_MAGIC = b"\x1f\x8b"
UINT8_TYPE = 0x08
SYSTEM_ROOT = Path("/usr/share/datasets")  # where Debian's dataset-* packages install
# (images, labels) file stems per split; the same names for MNIST and Fashion-MNIST.
SPLIT_FILES = MappingProxyType(
    {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
)
FILE_STEMS = SPLIT_FILES["train"] + SPLIT_FILES["test"]
CHUNK_BYTES = 1 << 16


def download_command(name: str) -> str:
    """The command that downloads the IDX dataset `name` into the data root."""
    return f"genlab datasets --download {name}"


@dataclass(frozen=True)
class PublishedFile:
    """One .gz file as its publisher serves it: a download is this file only if it has this size and MD5."""

    name: str
    md5: str
    size: int  # bytes


@dataclass(frozen=True)
class IdxSource:
    """One IDX dataset: its classes, where it may be installed, and where it is downloaded from."""

    name: str
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]  # tried in order when no mirror is given
    files: tuple[PublishedFile, ...]  # the published .gz files
    how_to_get: str  # the one command that makes it available

    def checksums(self) -> dict[str, str]:
        """File name -> md5 hex of each published file."""
        return {file.name: file.md5 for file in self.files}

    def sizes(self) -> dict[str, int]:
        """File name -> size in bytes of each published file."""
        return {file.name: file.size for file in self.files}


FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

SOURCES = MappingProxyType(
    {
        "mnist": IdxSource(
            name="mnist",
            class_names=DIGIT_CLASSES,
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            # MD5s: torchvision.datasets.MNIST.resources; sizes: the files the mirrors serve
            files=(
                PublishedFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
                PublishedFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
                PublishedFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
                PublishedFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
            ),
            how_to_get=download_command("mnist"),
        ),
        "fashion-mnist": IdxSource(
            name="fashion-mnist",
            class_names=FASHION_CLASSES,
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            # the table in github.com/zalandoresearch/fashion-mnist README (as torchvision.datasets.FashionMNIST)
            files=(
                PublishedFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
                PublishedFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29_515),
                PublishedFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4_422_102),
                PublishedFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5_148),
            ),
            how_to_get="sudo apt-get install dataset-fashion-mnist",
        ),
    }
)


def data_root() -> Path:
    """Where genlab keeps downloaded data: $GENLAB_DATA, else $XDG_DATA_HOME/genlab, else ~/.local/share/genlab."""
    if os.environ.get("GENLAB_DATA"):
        return Path(os.environ["GENLAB_DATA"]).expanduser()
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]).expanduser() / "genlab"
    return Path.home() / ".local" / "share" / "genlab"


# --------------------------------------------------------------------------- reading


def _invalid(path: Path, what: str) -> GenlabError:
    return GenlabError(f"{path} is not a valid IDX file: {what}; delete it and get it again")


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array stored in an IDX file (gzip or plain), with its header's shape.

    Any deviation from the format (bad magic, other type code, a payload that is not
    exactly prod(dims) bytes, a broken gzip stream) raises a GenlabError naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GenlabError(f"{path} does not exist") from None
    except OSError as error:
        raise GenlabError(f"cannot read {path}: {error}") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:  # truncated or corrupt gzip stream
            raise _invalid(path, f"the gzip stream is broken ({error})") from None

    if len(data) < 4:
        raise _invalid(path, f"it has {len(data)} bytes, fewer than the 4-byte header")
    if data[0] != 0 or data[1] != 0:
        raise _invalid(path, f"it starts with bytes {data[:2].hex(' ')}, expected 00 00")
    if data[2] != UINT8_TYPE:
        raise _invalid(path, f"type code 0x{data[2]:02x} is not 0x08 (uint8), the only type genlab reads")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _invalid(path, f"its header announces {ndim} dimensions but the file has {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(d < 0 for d in dims):
        raise _invalid(path, f"its header has negative dimensions {dims}")
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(data) - header
    if found != expected:
        shape = "x".join(str(d) for d in dims)
        raise _invalid(path, f"expected {expected} bytes of data for {shape}, found {found}")
    # copy(): frombuffer over bytes is read-only, and torch wants writable memory.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_file(directory: Path, stem: str) -> Path | None:
    """`stem.gz` or plain `stem` in `directory` (the .gz first), or None."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def search_dirs(name: str) -> list[Path]:
    """Where the IDX files of `name` are looked for, in order."""
    return [data_root() / name, SYSTEM_ROOT / name]


def find_dir(name: str) -> Path | None:
    """The first search directory holding all four IDX files of `name`, or None (cheap: existence only)."""
    for directory in search_dirs(name):
        if all(_find_file(directory, stem) for stem in FILE_STEMS):
            return directory
    return None


def _not_found(source: IdxSource) -> GenlabError:
    looked = ", ".join(str(d) for d in search_dirs(source.name))
    files = ", ".join(f"{stem}(.gz)" for stem in FILE_STEMS)
    if source.name == "mnist":
        fix = f"run `{source.how_to_get}` (or place the IDX files in {data_root() / source.name})"
    else:
        fix = (
            f"run `{source.how_to_get}` (or put the IDX files in $GENLAB_DATA/{source.name}, "
            f"or run `{download_command(source.name)}`)"
        )
    partial = [
        f"{directory} lacks {', '.join(stem for stem in FILE_STEMS if not _find_file(directory, stem))}"
        for directory in search_dirs(source.name)
        if any(_find_file(directory, stem) for stem in FILE_STEMS)
    ]
    found = f" ({'; '.join(partial)})" if partial else ""
    return GenlabError(f"{source.name} not found: looked for {files} in {looked}{found}; {fix}")


def load_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, H, W), labels int64 (N,)) from an IDX image file and its label file."""
    images = read_idx(images_path)  # (N, H, W)
    labels = read_idx(labels_path)  # (N,)
    if images.ndim != 3:
        raise _invalid(images_path, f"an image file needs 3 dimensions (N, H, W), found {images.shape}")
    if labels.ndim != 1:
        raise _invalid(labels_path, f"a label file needs 1 dimension (N,), found {labels.shape}")
    if len(images) != len(labels):
        raise GenlabError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
            "the two files do not belong together, get them again"
        )
    if len(labels) and labels.max() >= num_classes:
        raise _invalid(labels_path, f"label {int(labels.max())} is outside 0..{num_classes - 1}")
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64))


def load(name: str, splits: tuple[str, ...] = SPLITS) -> list[ImageDataset]:
    """The official `splits` of the IDX dataset `name` ("mnist" or "fashion-mnist"); only their files are read."""
    source = SOURCES[name]
    directory = find_dir(name)
    if directory is None:
        raise _not_found(source)
    datasets = []
    for split in splits:
        images_path, labels_path = (_find_file(directory, stem) for stem in SPLIT_FILES[split])
        if images_path is None or labels_path is None:  # removed since find_dir saw all four
            raise _not_found(source)
        images, labels = load_pair(images_path, labels_path, len(source.class_names))
        datasets.append(ImageDataset(images, labels, list(source.class_names), name))
    return datasets


# --------------------------------------------------------------------------- downloading

# The limits of one file's download, read when a download starts.
DOWNLOAD_SECONDS = 600.0  # the whole transfer of one file, from connecting to the last byte
READ_SECONDS = 30.0  # the longest wait for the server's next bytes
# The cap for a file whose size is not recorded (checksums given by the caller): well above the
# largest published file, far below what would strain the machine.
MAX_FILE_BYTES = 256 * 2**20
MESSAGE_CHARS = 200  # of a server's own words quoted in an error message


@dataclass(frozen=True)
class DownloadLimits:
    """How long one file's download may take in all, how long one read may wait for the server, and how
    many bytes a file may have when its size is not recorded."""

    seconds: float
    read_seconds: float
    max_bytes: int


def default_limits() -> DownloadLimits:
    """DOWNLOAD_SECONDS, READ_SECONDS and MAX_FILE_BYTES, as they are now."""
    return DownloadLimits(DOWNLOAD_SECONDS, READ_SECONDS, MAX_FILE_BYTES)


def _file_md5(path: Path) -> str:
    # An integrity check against the published sums, not security (also allowed under FIPS).
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_verified(path: Path, md5: str, size: int | None, max_bytes: int) -> bool:
    """Whether `path` is a regular file of `size` bytes (at most `max_bytes` when no size is recorded) with `md5`."""
    try:
        if not path.is_file():
            return False
        length = path.stat().st_size
        if (length != size) if size is not None else (length > max_bytes):
            return False
        return _file_md5(path) == md5.lower()
    except OSError:
        return False


def _one_line(error: object) -> str:
    """`error`'s text as one printable line of at most MESSAGE_CHARS (servers choose some of these words)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(error)).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


class _TracksSocket:
    """Adds a connection's socket to `sockets` once connected, for the deadline to shut down (mixed into
    an HTTP(S)Connection; an HTTPS socket is tracked once the TLS handshake is done, and until then the
    per-read timeout bounds each step)."""

    sock: socket.socket

    def __init__(self, *args: Any, sockets: list[socket.socket], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sockets = sockets

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]  # the connection class this is mixed into has it
        self.sockets.append(self.sock)


class _TrackedHTTPConnection(_TracksSocket, http.client.HTTPConnection):
    """An HTTPConnection whose socket the deadline can shut down."""


class _TrackedHTTPSConnection(_TracksSocket, http.client.HTTPSConnection):
    """An HTTPSConnection whose socket the deadline can shut down."""


class _TrackedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self.sockets = sockets

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TrackedHTTPConnection, sockets=self.sockets), req)


class _TrackedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self.sockets = sockets

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TrackedHTTPSConnection, sockets=self.sockets), req)


def _shut_down(sockets: list[socket.socket]) -> None:
    """End every read waiting on `sockets` (the deadline passed)."""
    for sock in list(sockets):
        try:  # socket.socket's shutdown, not SSLSocket's, which also drops its TLS state under the reader
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed already: the transfer ended


def _content_length(response: Any) -> int | None:
    """The body size the server announces, or None when it announces none (or nonsense)."""
    try:
        length = int(response.headers.get("Content-Length", "").strip())
    except ValueError:
        return None
    return length if length >= 0 else None


def _too_large(url: str, file_name: str, cap: int, published: bool, announced: int | None) -> GenlabError:
    sends = f"announces {announced:,} bytes" if announced is not None else f"sends more than {cap:,} bytes"
    if published:
        return GenlabError(
            f"{url} {sends}, but {file_name} has {cap:,} (its published size): "
            "the mirror serves another file, try another --mirror URL"
        )
    return GenlabError(
        f"{url} {sends}, more than the {cap:,} genlab downloads for one file whose size is not recorded; "
        "check the --mirror URL"
    )


def _too_slow(url: str, limits: DownloadLimits, received: int) -> GenlabError:
    return GenlabError(
        f"gave up on {url} after {limits.seconds:g} s (the time allowed for one file), {received:,} bytes received; "
        "the mirror is too slow: try again later or another --mirror URL"
    )


def _http_refusal(url: str, file_name: str, error: urllib.error.HTTPError) -> GenlabError:
    error.close()
    if 300 <= error.code < 400:  # what urllib leaves unfollowed: a loop, too many hops, or no Location
        limit = urllib.request.HTTPRedirectHandler.max_redirections
        return GenlabError(
            f"could not download {url}: it redirects (HTTP {error.code}) in a loop, more than {limit} times "
            "or to nowhere; check the --mirror URL"
        )
    fix = (
        f"the mirror has no {file_name}, check the --mirror URL"
        if error.code in (404, 410)
        else "the server failed, try again later or another --mirror URL"
        if error.code >= 500
        else "check the --mirror URL"
    )
    return GenlabError(f"could not download {url}: HTTP Error {error.code}: {_one_line(error.reason)}; {fix}")


def _unreachable(url: str, error: BaseException, limits: DownloadLimits) -> GenlabError:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return GenlabError(
            f"could not download {url}: no data for {limits.read_seconds:g} s; the mirror is not responding, "
            "try again later or another --mirror URL"
        )
    if isinstance(reason, http.client.HTTPException) and not isinstance(reason, ConnectionError):
        return GenlabError(
            f"could not download {url}: its answer is not valid HTTP ({_one_line(reason)}); check the --mirror URL"
        )
    return GenlabError(f"could not download {url}: {_one_line(reason)}; check the network or try --mirror URL")


def _store(sink: IO[bytes], chunk: bytes, url: str) -> None:
    try:
        sink.write(chunk)
    except OSError as error:
        raise GenlabError(
            f"cannot hold the download of {url} in {tempfile.gettempdir()} ({error}); "
            "free space there or set TMPDIR to another folder"
        ) from None


def _transfer(
    url: str, sink: IO[bytes], cap: int, published: bool, limits: DownloadLimits, label: str, progress: bool
) -> tuple[int, str]:
    """Stream the body at `url` into `sink`, at most `cap` bytes within `limits`: (bytes received, their md5)."""
    sockets: list[socket.socket] = []
    opener = urllib.request.build_opener(_TrackedHTTPHandler(sockets), _TrackedHTTPSHandler(sockets))
    # The per-read timeout cannot bound a server that sends a byte just before each read would time out
    # (within a header line too): at the deadline the connection is shut down, which ends a waiting read.
    watchdog = threading.Timer(limits.seconds, _shut_down, (sockets,))
    watchdog.daemon = True
    digest = hashlib.md5(usedforsecurity=False)  # integrity against the published sums, not security
    received = 0
    started = time.monotonic()
    watchdog.start()
    try:
        with opener.open(url, timeout=limits.read_seconds) as response:
            announced = _content_length(response)
            if announced is not None and announced > cap:
                raise _too_large(url, label, cap, published, announced)
            with _progress_bar(progress, announced, label) as bar:
                # read1: what has arrived, at most CHUNK_BYTES, so that the deadline is checked between reads
                while chunk := response.read1(CHUNK_BYTES):
                    received += len(chunk)
                    if received > cap:
                        raise _too_large(url, label, cap, published, None)
                    if time.monotonic() - started > limits.seconds:
                        raise _too_slow(url, limits, received)
                    _store(sink, chunk, url)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if time.monotonic() - started >= limits.seconds:  # the watchdog ended the body
            raise _too_slow(url, limits, received)
        if announced is not None and received < announced:
            raise GenlabError(
                f"could not download {url}: the connection closed after {received:,} of the {announced:,} bytes "
                "announced; try again or another --mirror URL"
            )
    except GenlabError:
        raise
    except urllib.error.HTTPError as error:
        raise _http_refusal(url, label, error) from None
    except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
        if time.monotonic() - started >= limits.seconds:  # the watchdog ended the headers
            raise _too_slow(url, limits, received) from None
        raise _unreachable(url, error, limits) from None
    finally:
        watchdog.cancel()
    return received, digest.hexdigest()


def _fetch(
    url: str, expected_md5: str, size: int | None, limits: DownloadLimits, label: str, progress: bool
) -> IO[bytes]:
    """A temporary file holding the bytes at `url`, verified against `expected_md5`, rewound.

    At most `size` bytes are read (the published size; limits.max_bytes when None), the whole
    transfer ends within limits.seconds and each read within limits.read_seconds. Anything else
    is a GenlabError naming `url`, and the temporary file (deleted on close) goes with it.
    """
    try:
        sink = tempfile.TemporaryFile()
    except OSError as error:
        raise GenlabError(
            f"cannot create a temporary file in {tempfile.gettempdir()} to download {url} ({error}); "
            "set TMPDIR to a writable folder"
        ) from None
    try:
        cap = size if size is not None else limits.max_bytes
        received, got = _transfer(url, sink, cap, size is not None, limits, label, progress)
        if got != expected_md5.lower():
            sizes = f" ({received:,} bytes; the published file has {size:,})" if size not in (None, received) else ""
            raise GenlabError(
                f"checksum mismatch for {url}: expected {expected_md5}, got {got}{sizes}; "
                "the mirror may be corrupt, try --mirror URL"
            )
        sink.seek(0)
    except BaseException:
        sink.close()
        raise
    return sink


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def _progress_bar(progress: bool, total: int | None, label: str) -> Any:
    """A tqdm byte counter on stderr when asked for, installed and stderr is a terminal, else a silent stand-in
    (a bar redrawn into a log or a pipe is noise around the one line an error prints)."""
    if progress and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            return _NoBar()
        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)
    return _NoBar()


def _mirror_url(mirror: str) -> str:
    """The base URL of `mirror` (an http(s) URL, or a local folder as a file: URL); a GenlabError otherwise."""
    if not mirror.isprintable():
        raise GenlabError(f"--mirror {mirror!r} holds control characters; give an http(s) URL or a local folder")
    if "://" not in mirror:  # a local folder holding the files
        return Path(mirror).expanduser().resolve().as_uri()
    if urllib.parse.urlsplit(mirror).scheme.lower() not in ("http", "https", "file"):
        raise GenlabError(f"--mirror {mirror} is not an http(s) URL or a local folder; give one of those")
    return mirror


def download(
    name: str,
    root: str | Path | None = None,
    mirror: str | None = None,
    checksums: dict[str, str] | None = None,
    progress: bool = True,
    limits: DownloadLimits | None = None,
) -> Path:
    """Download the four .gz IDX files of `name` (a key of SOURCES) into `root`/`name`; return that folder.

    `root` is a data root like data_root() (its default): the files land where loading with
    GENLAB_DATA=`root` looks for them. Every file is checked against its published MD5
    (`checksums`, file name -> md5 hex, overrides them); files already there with the right
    MD5 are skipped. `mirror` is a base URL or a local folder; without it, the known mirrors
    are tried in order. `limits` (default: default_limits()) bound each file's transfer: no more
    bytes than the published size (or limits.max_bytes for a file whose checksum is overridden),
    no longer than limits.seconds in all. Bytes stream to an anonymous temporary file; only a
    verified file reaches the data root, in one atomic rename.
    """
    source = SOURCES[name]
    limits = limits if limits is not None else default_limits()
    published, sizes = source.checksums(), source.sizes()
    unknown = sorted(set(checksums or {}) - set(published))
    if unknown:
        raise GenlabError(
            f"checksums given for unknown files {unknown}; {name} has {', '.join(published)}, use those names"
        )
    expected = {**published, **(checksums or {})}
    directory = (Path(root).expanduser() if root is not None else data_root()) / name
    mirrors = (_mirror_url(mirror),) if mirror else source.mirrors
    for file_name, md5 in expected.items():
        # The published size holds for the published file only: an overridden checksum is another file.
        size = sizes[file_name] if md5.lower() == published[file_name] else None
        target = directory / file_name
        if mirror and "://" not in mirror:
            local = Path(mirror).expanduser() / file_name
            if local.exists() and not local.is_file():  # a FIFO or a device would block or never end
                raise GenlabError(f"{local} is not a regular file; put the downloaded {file_name} there")
        if _is_verified(target, md5, size, limits.max_bytes):
            continue  # already downloaded and verified
        errors: list[GenlabError] = []
        for base in mirrors:
            try:
                fetched = _fetch(base.rstrip("/") + "/" + file_name, md5, size, limits, file_name, progress)
                break
            except GenlabError as error:
                errors.append(error)
        else:
            if len(errors) == 1:
                raise errors[0]
            raise GenlabError(f"every mirror failed for {file_name}: " + " | ".join(str(e) for e in errors))
        with fetched:
            try:  # created only once there is a verified file to put in it
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise GenlabError(
                    f"cannot create {directory} ({error}); choose another data root (--root DIR)"
                ) from None
            try:  # only verified bytes reach the disk, in one atomic rename: never a partial file
                with atomic_writer(target) as handle:
                    shutil.copyfileobj(fetched, handle)  # streamed: the file is never held in memory
            except OSError as error:
                raise GenlabError(
                    f"cannot write {target} ({error}); free space there or choose another data root (--root DIR)"
                ) from None
    return directory
