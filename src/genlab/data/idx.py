"""IDX files (LeCun's MNIST format): the reader, `mnist` and `fashion-mnist`, and the downloader.

An IDX file is two zero bytes, a type code (0x08 = uint8), the number of dimensions,
one big-endian int32 per dimension, then the values in row-major order. Files may be
gzip-compressed; that is detected from the magic bytes 1f 8b, never from the name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes

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
class IdxSource:
    """One IDX dataset: its classes, where it may be installed, and where it is downloaded from."""

    name: str
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]  # tried in order when no mirror is given
    md5: tuple[tuple[str, str], ...]  # (file name, md5 hex) of the published .gz files
    how_to_get: str  # the one command that makes it available

    def checksums(self) -> dict[str, str]:
        return dict(self.md5)


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
            # torchvision.datasets.MNIST.resources
            md5=(
                ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
            ),
            how_to_get=download_command("mnist"),
        ),
        "fashion-mnist": IdxSource(
            name="fashion-mnist",
            class_names=FASHION_CLASSES,
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            # the table in github.com/zalandoresearch/fashion-mnist README (as torchvision.datasets.FashionMNIST)
            md5=(
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
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


def _md5(data: bytes | bytearray) -> str:
    # An integrity check against the published sums, not security (also allowed under FIPS).
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fetch(url: str, expected_md5: str, label: str, progress: bool) -> bytes:
    """The bytes at `url` (a few MB: held in memory), or a GenlabError if unreachable or not `expected_md5`."""
    import http.client
    import urllib.request

    data = bytearray()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = response.headers.get("Content-Length")
            with _progress_bar(progress, int(total) if total else None, label) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    data += chunk
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
        raise GenlabError(f"could not download {url}: {error}; check the network or try --mirror URL") from None
    got = _md5(data)
    if got != expected_md5.lower():
        raise GenlabError(
            f"checksum mismatch for {url}: expected {expected_md5}, got {got}; "
            "the mirror may be corrupt, try --mirror URL"
        )
    return bytes(data)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def _progress_bar(progress: bool, total: int | None, label: str):
    """A tqdm byte counter on stderr when asked for and installed, else a silent stand-in."""
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:
            return _NoBar()
        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)
    return _NoBar()


def download(
    name: str,
    root: str | Path | None = None,
    mirror: str | None = None,
    checksums: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Download the four .gz IDX files of `name` (a key of SOURCES) into `root`/`name`; return that folder.

    `root` is a data root like data_root() (its default): the files land where loading with
    GENLAB_DATA=`root` looks for them. Every file is checked against its published MD5
    (`checksums`, file name -> md5 hex, overrides them); files already there with the right
    MD5 are skipped. `mirror` is a base URL or a local folder; without it, the known mirrors
    are tried in order.
    """
    source = SOURCES[name]
    expected = source.checksums()
    unknown = sorted(set(checksums or {}) - set(expected))
    if unknown:
        raise GenlabError(
            f"checksums given for unknown files {unknown}; {name} has {', '.join(expected)}, use those names"
        )
    expected.update(checksums or {})
    directory = (Path(root).expanduser() if root is not None else data_root()) / name
    if mirror and "://" not in mirror:  # a local folder holding the files
        mirror = Path(mirror).expanduser().resolve().as_uri()
    mirrors = (mirror,) if mirror else source.mirrors
    for file_name, md5 in expected.items():
        target = directory / file_name
        if target.is_file() and _md5(target.read_bytes()) == md5.lower():
            continue  # already downloaded and verified
        errors: list[GenlabError] = []
        for base in mirrors:
            try:
                data = _fetch(base.rstrip("/") + "/" + file_name, md5, file_name, progress)
                break
            except GenlabError as error:
                errors.append(error)
        else:
            if len(errors) == 1:
                raise errors[0]
            raise GenlabError(f"every mirror failed for {file_name}: " + " | ".join(str(e) for e in errors))
        try:  # created only once there is a verified file to put in it
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GenlabError(f"cannot create {directory} ({error}); choose another data root (--root DIR)") from None
        # Only verified bytes reach the disk, in one atomic rename: never a partial file.
        atomic_write_bytes(target, data)
    return directory
