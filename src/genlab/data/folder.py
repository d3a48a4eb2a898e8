"""`folder:PATH`: the user's images, one subfolder per class (or none, for unlabelled data).

Layouts, in the order they are recognised:
  PATH/train/<class>/*.png and PATH/test/<class>/*.png   -> those two splits
  PATH/<class>/*.png                                      -> labelled, stratified 80/20 split
  PATH/*.png                                              -> unlabelled, seeded 80/20 split
(PNG, JPEG or BMP, any letter case; hidden files and folders are ignored.)
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from genlab.errors import GenlabError

from .dataset import ImageDataset
from .splits import check_split, select_split

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _images_in(directory: Path) -> list[Path]:
    """The image files directly in `directory`, sorted by name."""
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )  # fmt: skip


def _scan(root: Path) -> tuple[list[Path], list[str], list[int]]:
    """(files, class names, label per file; empty when unlabelled) of one class-folder tree."""
    classes = [
        d for d in sorted(root.iterdir())
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
    """True for grayscale modes, and for palette images whose palette has no colour."""
    if image.mode in GRAY_MODES:
        return True
    if image.mode == "P":
        palette = np.asarray(image.getpalette() or [], dtype=np.uint8)
        rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)  # (colours, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


@contextmanager
def _open_image(path: Path) -> Iterator[PILImage]:
    """PIL's lazy `Image.open`, with any decoding failure turned into a GenlabError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            yield image
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise GenlabError(f"{path} is not a readable image ({error}); fix or remove it") from None


def _check_headers(files: list[Path], size: tuple[int, int] | None, spec: str) -> bool:
    """Whether every image is grayscale, from the headers alone (PIL opens lazily).

    Raises a GenlabError for an unreadable file, and (without `size`) for two files of
    different sizes, since they cannot be stacked into one tensor.
    """
    gray, first = True, None
    for path in files:
        with _open_image(path) as image:
            gray = gray and _is_gray(image)
            current = image.size  # (W, H)
        if size is None:
            first = first or (path, current)
            if current != first[1]:
                (w0, h0), (w1, h1) = first[1], current
                raise GenlabError(
                    f"{spec}: images differ in size ({first[0]} is {w0}x{h0}, {path} is {w1}x{h1}); "
                    "pass --size to resize them all (size=S or size=(H, W) in Python)"
                )
    return gray


def _decode(files: list[Path], gray: bool, size: tuple[int, int] | None) -> torch.Tensor:
    """`files` as one uint8 tensor (N, C, H, W), C = 1 when `gray` else 3, resized to (H, W) = `size`."""
    from PIL import Image

    mode = "L" if gray else "RGB"
    pixels = []
    for path in files:
        with _open_image(path) as image:
            image = image.convert(mode)  # decodes the whole file: truncated data fails here
        if size is not None and image.size != (size[1], size[0]):
            # PIL takes (W, H); its bilinear filter widens when shrinking, i.e. antialiases.
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pixels.append(np.asarray(image, dtype=np.uint8))  # (H, W) or (H, W, 3)
    stacked = np.stack(pixels)
    stacked = stacked[:, None] if gray else stacked.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def load(path: str | Path, split: str, size: tuple[int, int] | None = None, spec: str | None = None) -> ImageDataset:
    """The `split` of the images under `path`, resized to (H, W) = `size` when given.

    With PATH/train and PATH/test those are the splits (label numbers from train's classes);
    otherwise the shared seeded 80/20 split, stratified when there are class folders.
    """
    check_split(split)
    root = Path(path).expanduser()
    spec = spec or f"folder:{path}"
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise GenlabError(f"{spec}: {root} {what}; expected a folder with one subfolder per class")
    official = (root / "train").is_dir() and (root / "test").is_dir()
    directories = {"train": root / "train", "test": root / "test"} if official else {split: root}
    trees = {name: _scan(directory) for name, directory in directories.items()}
    for name, (files, _, _) in trees.items():
        if not files:
            where = "" if directories[name] == root else f" in {directories[name]}"
            raise GenlabError(f"{spec} has no PNG/JPEG images{where}; expected one subfolder per class")

    files, names, labels = trees[split]
    if official:
        train_names, test_names = trees["train"][1], trees["test"][1]
        if bool(train_names) != bool(test_names):
            raise GenlabError(f"{spec}: train/ and test/ must both have class subfolders, or neither")
        if set(test_names) - set(train_names):
            extra = sorted(set(test_names) - set(train_names))
            raise GenlabError(f"{spec}: test/ has classes {extra} that train/ does not have")
        # The test split uses train's label numbers, so a class is the same label in both.
        labels = [train_names.index(names[label]) for label in labels]
        names = train_names

    # Both splits share one channel count and one size, so the mode is decided over all files.
    gray = _check_headers([f for tree in trees.values() for f in tree[0]], size, spec)
    images = _decode(files, gray, size)
    dataset = ImageDataset(images, torch.tensor(labels, dtype=torch.int64) if names else None, names, spec)
    return dataset if official else select_split(dataset, split)
