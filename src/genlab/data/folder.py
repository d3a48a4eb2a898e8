"""`folder:PATH`: the user's images, one subfolder per class (or none, for unlabelled data).

Layouts, in the order they are recognised:
  PATH/train/<class>/*.png and PATH/test/<class>/*.png   -> those two splits
  PATH/<class>/*.png                                      -> labelled, stratified 80/20 split
  PATH/*.png                                              -> unlabelled, seeded 80/20 split
(PNG, JPEG or BMP, any letter case; hidden files and folders are ignored.)

Every image becomes 8-bit L (when all of them are grayscale) or RGB:
- 16-bit and 32-bit modes are scaled, not clipped: I;16* by their full range (65535 -> 255);
  I and F by the image's own maximum when it exceeds 255, else taken as they are.
- Transparency (RGBA, LA, PA, and P/L/RGB with a transparent colour) is composited onto a
  BLACK background, i.e. each channel is multiplied by alpha: a transparent pixel becomes 0,
  the background value of MNIST-like data. Grayscale-ness is decided on the composited
  image: LA and gray-palette P/PA stay gray, RGBA counts as colour (as RGB does).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.memory import check_fits

from .dataset import ImageDataset
from .spec import MAX_SIDE, ParsedSpec
from .splits import SPLITS, split_indices

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
GRAY_MODES = ("1", "L", "LA", "La", "I", "F")  # and every "I;16..." mode
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
I16_FULL_SCALE = 65535.0


def _entries(directory: Path) -> list[Path]:
    """What is in `directory`, sorted by name, or a GenlabError when it cannot be listed."""
    try:
        return sorted(directory.iterdir())
    except OSError as error:
        raise GenlabError(f"cannot list {directory} ({error.strerror or error}); make it a readable folder") from None


def _images_in(directory: Path) -> list[Path]:
    """The image files directly in `directory`, sorted by name."""
    return [
        p for p in _entries(directory)
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]  # fmt: skip


def _scan(root: Path) -> tuple[list[Path], list[str], list[int]]:
    """(files, class names, label per file; empty when unlabelled) of one class-folder tree."""
    classes = [
        d for d in _entries(root)
        if d.is_dir() and not d.name.startswith(".") and _images_in(d)
    ]  # fmt: skip
    loose = _images_in(root)
    if classes and loose:
        raise GenlabError(
            f"{root} has images both at its top level ({loose[0].name}) and in class subfolders "
            f"({classes[0].name}/); move the loose images into a class folder or remove them"
        )
    if not classes:
        return loose, [], []
    files, labels = [], []
    for label, directory in enumerate(classes):
        members = _images_in(directory)
        files += members
        labels += [label] * len(members)
    return files, [d.name for d in classes], labels


def _is_gray(image: PILImage) -> bool:
    """True for grayscale modes, and for palette images whose palette has no colour (header only)."""
    if image.mode in GRAY_MODES or image.mode.startswith("I;16"):
        return True
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], dtype=np.uint8)
        rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)  # (colours, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def _pixels(image: PILImage, gray: bool) -> np.ndarray:
    """`image` as uint8 (H, W) when `gray`, else (H, W, 3): scaled to 8 bits, transparency over black."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # (H, W)
        full = I16_FULL_SCALE if mode.startswith("I;16") else max(float(values.max(initial=0.0)), 255.0)
        pixels = np.round(np.clip(values, 0.0, full) * (255.0 / full)).astype(np.uint8)
    elif mode in ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)  # (H, W, 4); applies a transparent colour
        pixels = np.round(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)  # over black: c * alpha
        if gray:
            pixels = pixels[..., 0]  # a gray source composites to R = G = B
    else:
        pixels = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
    if not gray and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return pixels


@contextmanager
def _open_image(path: Path) -> Iterator[PILImage]:
    """PIL's lazy `Image.open`, with any decoding failure turned into a GenlabError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns about images beyond its pixel limit; _check_headers checks their memory instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            yield image
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise GenlabError(f"{path} is not a readable image ({error}); fix or remove it") from None


def _decode_bytes(image: PILImage) -> int:
    """The most memory `_pixels` holds while decoding `image`: PIL's buffer and its working copies (per pixel,
    float64 copies for 16-bit and float modes, an RGBA float64 composite for transparency)."""
    width, height = image.size
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        per_pixel = 4 + 6 * 8  # PIL's 32-bit buffer, then the float64 values, nan_to_num, clip, scale, round
    elif image.mode in ALPHA_MODES or "transparency" in image.info:
        per_pixel = 4 + 4 + 4 * 8 + 3 * 8 * 3 + 4  # RGBA twice, as float64, the composite, its rounding, a resize
    else:
        per_pixel = 4 + 4 + 3 + 4 + 3  # PIL's buffer, its converted copy, the array, a resize, an RGB repeat
    return width * height * per_pixel


@dataclass(frozen=True)
class Headers:
    """What the headers of a folder's images say: one channel mode, one size, the costliest file to decode."""

    gray: bool
    size: tuple[int, int]  # (H, W) every image will have
    largest: Path  # the file whose decoding holds the most memory
    largest_bytes: int


def _check_headers(files: list[Path], size: tuple[int, int] | None, spec: str) -> Headers:
    """Whether every image is grayscale, the (H, W) they will have, and the costliest decode, from the headers
    alone (PIL opens lazily).

    Raises a GenlabError for an unreadable file, and (without `size`) for two files of
    different sizes, since they cannot be stacked into one tensor, and for a side beyond MAX_SIDE.
    """
    gray = True
    first: tuple[Path, tuple[int, int]] | None = None  # (the first file, its (W, H))
    largest: tuple[int, Path] | None = None  # (bytes to decode, the file)
    for path in files:
        with _open_image(path) as image:
            gray = gray and _is_gray(image)
            current = image.size  # (W, H)
            cost = _decode_bytes(image)
        first = first or (path, current)
        largest = max(largest or (cost, path), (cost, path), key=lambda pair: pair[0])
        if size is None and max(current) > MAX_SIDE:
            raise GenlabError(
                f"{spec}: {path} is {current[0]}x{current[1]} pixels, but genlab takes at most {MAX_SIDE} per side; "
                "pass --size to resize every image as it is read (size=S or size=(H, W) in Python)"
            )
        if size is None and current != first[1]:
            (w0, h0), (w1, h1) = first[1], current
            raise GenlabError(
                f"{spec}: images differ in size ({first[0]} is {w0}x{h0}, {path} is {w1}x{h1}); "
                "pass --size to resize them all (size=S or size=(H, W) in Python)"
            )
    if first is None or largest is None:  # callers refuse a tree without images before reading headers
        raise ValueError("no image files to read headers from")
    hw = size if size is not None else (first[1][1], first[1][0])
    return Headers(gray, hw, largest[1], largest[0])


def _check_fits(headers: Headers, count: int, spec: str, resized: bool) -> None:
    """Refuse when decoding the costliest file, or `count` images as one uint8 tensor, would not fit in memory.

    The images are held as decoded arrays, then stacked, then (RGB) made channel-first: three copies at most.
    """
    path, cost = headers.largest, headers.largest_bytes
    check_fits(cost, f"{spec}: decoding {path}", "shrink the image or remove it")
    channels = 1 if headers.gray else 3
    h, w = headers.size
    flag = " (--size)" if resized else ""
    check_fits(
        cost + 3 * count * channels * h * w,
        f"{spec}: reading {count:,} images of {channels}x{h}x{w}{flag}",
        "use fewer images or a smaller --size",
    )


def _decode(files: list[Path], gray: bool, size: tuple[int, int]) -> torch.Tensor:
    """`files` as one uint8 tensor (N, C, *size), C = 1 when `gray` else 3."""
    from PIL import Image

    pixels = []
    for path in files:
        with _open_image(path) as image:
            array = _pixels(image, gray)  # decodes the whole file: truncated data fails here
        if array.shape[:2] != size:
            # PIL takes (W, H); its bilinear filter widens when shrinking, i.e. antialiases.
            array = np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        pixels.append(array)  # (H, W) or (H, W, 3)
    if not pixels:  # an empty split (a folder of one image has no test image)
        return torch.zeros((0, 1 if gray else 3, *size), dtype=torch.uint8)
    stacked = np.stack(pixels)
    stacked = stacked[:, None] if gray else stacked.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def read_image(path: str | Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image file as uint8 (C, H, W): grey when `channels` is 1, else RGB, resized to `size` (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"{path} does not exist; give an image file (PNG, JPEG ...)")
    with _open_image(path) as image:
        cost = _decode_bytes(image)
    check_fits(cost, f"decoding {path}", "shrink the image or give another")
    return _decode([path], channels == 1, size)[0]


Parts = dict[str, tuple[list[Path], list[int]]]  # split -> (files, their labels; empty when unlabelled)


def _official_splits(root: Path, spec: str) -> tuple[Parts, list[str], list[Path]]:
    """(files and labels per split, class names, every file) of a PATH/train + PATH/test layout."""
    trees = {split: _scan(root / split) for split in SPLITS}
    for split, (files, _, _) in trees.items():
        if not files:
            raise GenlabError(f"{spec} has no PNG/JPEG images in {root / split}; expected one subfolder per class")
    (train_files, train_names, train_labels), (test_files, test_names, test_labels) = trees["train"], trees["test"]
    if bool(train_names) != bool(test_names):
        raise GenlabError(f"{spec}: train/ and test/ must both have class subfolders, or neither")
    extra = sorted(set(test_names) - set(train_names))
    if extra:
        raise GenlabError(
            f"{spec}: test/ has classes {extra} that train/ does not have; add them to train/ or remove them"
        )
    # The test split uses train's label numbers, so a class is the same label in both.
    test_labels = [train_names.index(test_names[label]) for label in test_labels]
    parts = {"train": (train_files, train_labels), "test": (test_files, test_labels)}
    return parts, train_names, train_files + test_files


def _derived_splits(root: Path, spec: str) -> tuple[Parts, list[str], list[Path]]:
    """(files and labels per split, class names, every file) of the seeded 80/20 split of one tree."""
    files, names, labels = _scan(root)
    if not files:
        raise GenlabError(f"{spec} has no PNG/JPEG images; expected one subfolder per class")
    indices = split_indices(len(files), np.asarray(labels, dtype=np.int64) if names else None)
    parts = {
        split: ([files[i] for i in index], [labels[i] for i in index] if names else [])
        for split, index in zip(SPLITS, indices)
    }
    return parts, names, files


def load(parsed: ParsedSpec) -> list[ImageDataset]:
    """The `parsed.splits` of the images under `parsed.path`, resized to (H, W) = `parsed.size` when given.

    With PATH/train and PATH/test those are the splits (label numbers from train's classes);
    otherwise the shared seeded 80/20 split, stratified when there are class folders. Every
    header is read (one channel count and size for both splits), but only the files of the
    requested splits are decoded, each once.
    """
    root, spec = parsed.location, parsed.text
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise GenlabError(f"{spec}: {root} {what}; expected a folder with one subfolder per class")
    official = (root / "train").is_dir() and (root / "test").is_dir()
    parts, names, every = (_official_splits if official else _derived_splits)(root, spec)
    headers = _check_headers(every, parsed.size, spec)
    _check_fits(headers, sum(len(parts[split][0]) for split in parsed.splits), spec, parsed.size is not None)
    datasets = []
    for split in parsed.splits:
        files, labels = parts[split]
        labels_tensor = torch.tensor(labels, dtype=torch.int64) if names else None
        datasets.append(ImageDataset(_decode(files, headers.gray, headers.size), labels_tensor, list(names), spec))
    return datasets
