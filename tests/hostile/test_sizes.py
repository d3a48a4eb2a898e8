"""Issue 18, class 7: sizes are checked before anything is allocated.

Data that declares huge images (an .npz header, an image file's header), a huge --size, a model
setting that asks for billions of parameters, and `genlab sample --n` beyond memory are each refused
with one line that gives the estimate. The issue's own cases run in a fresh interpreter under a
memory limit (the code before the fix allocated gigabytes there); the generated variants declare
sizes no machine has, so even a regression fails at once, without touching memory.
"""

from __future__ import annotations

import resource
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.models import DataSpec, build_model, make_config, model_class
from tests.hostile.conftest import refused, refused_in_subprocess

ZEROS = 1 << 24  # bytes of zeros written (and compressed) at a time
IN_PROCESS_MEMORY = 2 * 1024**3  # address space a case run in this process may add before it fails


@pytest.fixture(autouse=True)
def limited_memory():
    """Every case here runs under an address-space limit: in this process (the generated variants) at most
    IN_PROCESS_MEMORY more than it holds now, so that a regression which allocates what an input declares
    fails with a MemoryError instead of taking the machine down (subprocess cases set their own limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()  # Linux: the suite's memory cases are Linux-only
    held = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    cap = held + IN_PROCESS_MEMORY if hard == resource.RLIM_INFINITY else min(held + IN_PROCESS_MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ---------------------------------------------------------------- files that declare their sizes


def npz_declaring(path: Path, arrays: dict[str, tuple[tuple[int, ...], str]], data: bool = False) -> Path:
    """An .npz whose members' .npy headers declare `arrays` (key -> (shape, dtype)); with `data`, each member
    holds that many zero bytes (compressed: a 800 MB array takes under a megabyte), else a few bytes only."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, (shape, dtype) in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": shape,
                }
                np.lib.format.write_array_header_1_0(member, header)
                left = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize if data else 64
                while left > 0:
                    member.write(bytes(min(left, ZEROS)))
                    left -= ZEROS
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_of_zeros(path: Path, width: int, height: int, rgba: bool = False) -> Path:
    """A valid black PNG of width x height (8-bit L, or RGBA), compressed a row at a time: a few hundred KB."""
    channels, color_type = (4, 6) if rgba else (1, 0)
    compressor = zlib.compressobj(1)
    row = bytes(1 + width * channels)  # filter byte 0, then the pixels
    rows_at_once = max(1, ZEROS // len(row))
    idat = bytearray()
    for start in range(0, height, rows_at_once):
        idat += compressor.compress(row * min(rows_at_once, height - start))
    idat += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", bytes(idat)) + png_chunk(b"IEND", b"")
    )
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height (8-bit L) but holds a few rows of data: a header to read, never decoded."""
    data = zlib.compress(bytes(1 + width) * 2)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )
    return path


def small_npz(folder: Path, n: int = 200) -> str:
    """An .npz of `n` random 8x8 images (a dataset that loads without importing scikit-learn, as digits does)."""
    folder.mkdir(exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8)
    np.savez(folder / "small.npz", images=images)
    return f"npz:{folder / 'small.npz'}"


def train_args(data: str, out: Path, *extra: str) -> list[str]:
    return ["train", "vae", "--data", data, "--epochs", "1", "--quiet", "--out", str(out), *extra]


# ---------------------------------------------------------------- the cases, under a memory limit


def test_npz_declaring_huge_images(tmp_path):
    # 778 KB on disk, 2 x 20000 x 20000 uint8 once read: refused from the header, before any data.
    folder = tmp_path / "data"
    folder.mkdir()
    file = npz_declaring(folder / "huge.npz", {"images": ((2, 20000, 20000), "u1")}, data=True)
    line = refused_in_subprocess(train_args(f"npz:{file}", tmp_path / "run"), str(file), "4096", untouched=folder)
    assert "20000x20000" in line and not (tmp_path / "run").exists()


def test_folder_of_huge_pngs(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    first = png_of_zeros(folder / "0.png", 10000, 10000)
    for k in range(1, 6):
        shutil.copy(first, folder / f"{k}.png")
    line = refused_in_subprocess(
        train_args(f"folder:{folder}", tmp_path / "run"), str(first), "--size", untouched=folder
    )
    assert "10000x10000" in line and not (tmp_path / "run").exists()


def test_folder_image_too_large_to_decode(tmp_path):
    # With --size every image is resized as it is read, but each must still be decoded whole first.
    folder = tmp_path / "pngs"
    folder.mkdir()
    big = png_of_zeros(folder / "big.png", 8000, 8000, rgba=True)
    png_of_zeros(folder / "small.png", 8, 8)
    args = train_args(f"folder:{folder}", tmp_path / "run", "--size", "8")
    line = refused_in_subprocess(args, str(big), "would take", untouched=folder)
    assert "GB" in line and not (tmp_path / "run").exists()


def test_size_beyond_memory(tmp_path):
    data = small_npz(tmp_path / "data")  # 200 images of 4096x4096 are 3.4 GB
    line = refused_in_subprocess(train_args(data, tmp_path / "run", "--size", "4096"), "--size", "would take")
    assert data in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "model, setting",
    [("vae", "hidden_dim=100000000"), ("dcgan", "channels=100000000")],
)
def test_model_beyond_memory(tmp_path, model, setting):
    args = ["train", model, "--data", small_npz(tmp_path / "data"), "--epochs", "1", "--quiet", "--set", setting]
    line = refused_in_subprocess([*args, "--out", str(tmp_path / "run")], setting, "parameters", "would take")
    assert not (tmp_path / "run").exists() and "GB" in line


def test_sample_beyond_memory(tmp_path, fixture_run):
    # Within the old guard (one float32 copy under 4 GB), far beyond what the grid of them takes.
    run = fixture_run("vae")
    out = tmp_path / "grid.png"
    refused_in_subprocess(["sample", run, "--n", "10000000", "--out", out], "--n", "would take", untouched=run)
    assert not out.exists()


# ---------------------------------------------------------------- generated variants: sizes no machine has

NPZ_CASES = {
    "side (N, H, W)": ({"images": ((1, 4097, 8), "u1")}, "4097x8"),
    "side (N, C, H, W)": ({"images": ((1, 3, 8, 40000), "f4")}, "8x40000"),
    "side (N, H, W, C)": ({"images": ((1, 5000, 5000, 1), "f8")}, "5000x5000"),
    "count uint8": ({"images": ((10**9, 1, 4096, 4096), "u1")}, "would take"),
    "count float32": ({"images": ((10**7, 3, 1024, 1024), "f4")}, "would take"),
    "count float16": ({"images": ((2**62, 1, 1), "f2")}, "would take"),
    "labels longer than images": ({"images": ((10, 4, 4), "u1"), "labels": ((10**13,), "i8")}, "(10000000000000,)"),
    "labels of many dimensions": ({"images": ((10, 4, 4), "u1"), "labels": ((10, 10**12), "i8")}, "expected 10"),
    "too many class names": (
        {"images": ((10, 4, 4), "u1"), "labels": ((10,), "i8"), "class_names": ((10**12,), "U4")},
        "at most 10,000",
    ),
    "class names of huge strings": (
        {"images": ((10, 4, 4), "u1"), "labels": ((10,), "i8"), "class_names": ((10_000,), "U500000000")},
        "would take",
    ),
}


@pytest.mark.parametrize("case", NPZ_CASES)
def test_npz_header_declares_too_much(case, tmp_path, capsys):
    arrays, named = NPZ_CASES[case]
    folder = tmp_path / "data"
    folder.mkdir()
    file = npz_declaring(folder / "declared.npz", arrays)
    refused(train_args(f"npz:{file}", tmp_path / "run"), capsys, str(file), named, untouched=folder)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "side, named",
    [
        ((4097, 10), ("4097x10", "--size")),
        ((10, 4097), ("10x4097", "--size")),
        ((9000, 9000), ("9000x9000", "--size")),  # beyond PIL's warning limit: no warning printed
        ((30000, 30000), ("900000000 pixels",)),  # beyond PIL's own limit: refused on opening
    ],
)
def test_folder_image_header_beyond_max_side(side, named, tmp_path, capsys):
    folder = tmp_path / "pngs" / "cat"
    folder.mkdir(parents=True)
    png_of_zeros(folder / "a.png", 4, 4)
    big = png_header_only(folder / "b.png", *side)
    args = train_args(f"folder:{folder.parent}", tmp_path / "run")
    refused(args, capsys, str(big), *named, untouched=folder)
    assert not (tmp_path / "run").exists()


MODEL_SETTINGS = [  # each asks for petabytes: no allocation of it could succeed, even in a regression
    ("vae", "hidden_dim=1000000000000"),
    ("vae", "latent_dim=100000000"),  # its mixture prior holds latent_dim^2 per component: 10^12 is beyond any tensor
    ("gan", "latent_dim=1000000000000"),
    ("dcgan", "channels=100000000"),
    ("wgan-gp", "channels=100000000"),
    ("ddpm", "channels=80000000"),
    ("pixelcnn", "channels=100000000"),
    ("realnvp", "hidden_channels=100000000"),
]


@pytest.mark.parametrize("model, setting", MODEL_SETTINGS)
def test_model_settings_beyond_memory(model, setting, tmp_path, capsys):
    args = ["train", model, "--data", "digits", "--epochs", "1", "--quiet", "--set", setting]
    refused([*args, "--out", str(tmp_path / "run")], capsys, setting, "parameters", "would take")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting", ["hidden_dim=" + "9" * 30, "latent_dim=" + "9" * 25])
def test_model_settings_beyond_any_tensor(setting, tmp_path, capsys):
    args = ["train", "vae", "--data", "digits", "--epochs", "1", "--quiet", "--set", setting]
    refused([*args, "--out", str(tmp_path / "run")], capsys, setting, "too large")


def test_sample_n_no_machine_holds(fixture_run, tmp_path, capsys):
    run = fixture_run("gan")
    out = tmp_path / "samples.npz"
    refused(["sample", run, "--n", str(10**15), "--format", "npz", "--out", out], capsys, "--n", "TB", untouched=run)
    assert not out.exists()


# ---------------------------------------------------------------- the pieces


def test_model_is_measured_without_drawing_random_numbers():
    # The meta build leaves torch's RNG alone: a seeded build_model gives the weights a direct build gives.
    spec = DataSpec(1, 8, 8, 10, tuple(map(str, range(10))))
    for name in ("vae", "dcgan", "ddpm"):
        config = make_config(name)
        torch.manual_seed(5)
        direct, after_direct = model_class(name)(config, spec).state_dict(), torch.get_rng_state()
        torch.manual_seed(5)
        built, after_built = build_model(name, spec, config).state_dict(), torch.get_rng_state()
        assert direct.keys() == built.keys() and all(torch.equal(direct[k], built[k]) for k in direct)
        assert torch.equal(after_direct, after_built)  # the next draws are the same too


def test_check_fits_message():
    from genlab.memory import check_fits, format_bytes

    with pytest.raises(Exception, match=r"^loading x would take 5,000.0 TB; .*: use less$"):
        check_fits(5 * 10**15, "loading x", "use less")
    check_fits(1, "one byte", "never refused")
    assert [format_bytes(b) for b in (8.5e8, 1.29e10, 1.2544e15)] == ["850 MB", "12.9 GB", "1,254.4 TB"]


@pytest.mark.parametrize("n, channels, nrow", [(1, 1, 8), (13, 3, 4), (64, 1, 8), (10, 3, 10)])
def test_grid_built_as_uint8_is_the_same_png(n, channels, nrow, tmp_path):
    from genlab.images import make_grid, png_bytes, save_grid

    images = torch.rand(n, channels, 5, 7, generator=torch.Generator().manual_seed(n)) * 1.2 - 0.1
    save_grid(images, tmp_path / "grid.png", nrow=nrow)
    assert (tmp_path / "grid.png").read_bytes() == png_bytes(make_grid(images, nrow=nrow))


def test_streamed_npz_loads_back(tmp_path):
    from genlab.data import read_npz
    from genlab.data.transforms import to_uint8
    from genlab.images import save_npz

    images = torch.rand(50, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    save_npz(images, tmp_path / "s.npz", torch.arange(50) % 4, ["a", "b", "c", "d"])
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary file left
    back = read_npz(tmp_path / "s.npz")
    assert torch.equal(back.images, to_uint8(images)) and back.class_names == ["a", "b", "c", "d"]
