import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import load_dataset
from genlab.errors import GenlabError


def save(path, value, size=(6, 4), mode="L"):
    """A solid image of `value` (int for L, RGB tuple for RGB), `size` = (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def make_classes(root, counts=None, mode="L", ext="png"):
    """One subfolder per class; image i of class k has value 10 * k + i (gray) so labels can be checked."""
    counts = counts or {"cat": 10, "dog": 5}
    for k, (name, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            value = 10 * k + i if mode == "L" else (10 * k + i, 0, 200)
            save(root / name / f"{i:03d}.{ext}", value, mode=mode)
    return root


def test_grayscale_classes(tmp_path):
    root = make_classes(tmp_path / "pets")
    train = load_dataset(f"folder:{root}", "train")
    test = load_dataset(f"folder:{root}", "test")
    assert (len(train), len(test)) == (12, 3)  # stratified 80/20: cat 8/2, dog 4/1
    assert torch.bincount(test.labels).tolist() == [2, 1]
    assert train.class_names == ["cat", "dog"] and train.name == f"folder:{root}"
    assert train.image_shape == (1, 4, 6) and train.images.dtype == torch.uint8
    # The pixel value encodes the class: 0..9 are cats (label 0), 10..14 dogs (label 1).
    values = torch.cat([train.images, test.images])[:, 0, 0, 0] // 10
    assert torch.equal(values, torch.cat([train.labels, test.labels]))
    assert set(torch.cat([train.images, test.images])[:, 0, 0, 0].tolist()) == set(range(10)) | set(range(10, 15))


def test_one_colour_image_makes_all_rgb(tmp_path):
    root = make_classes(tmp_path / "pets")
    save(root / "dog" / "colour.PNG", (255, 0, 0), mode="RGB")  # upper-case extension counts too
    train = load_dataset(f"folder:{root}", "train")
    test = load_dataset(f"folder:{root}", "test")
    assert len(train) + len(test) == 16
    assert train.image_shape == (3, 4, 6)
    everything = torch.cat([train.images, test.images])
    red = everything[(everything[:, 1] == 0).all(dim=(1, 2)) & (everything[:, 0] == 255).all(dim=(1, 2))]
    assert len(red) == 1
    gray = everything[:, 0, 0, 0] != 255
    assert torch.equal(everything[gray, 0], everything[gray, 1])  # gray images have R = G = B


def test_rgb_jpeg_and_bmp(tmp_path):
    root = tmp_path / "colours"
    for i in range(5):
        save(root / "a" / f"{i}.JPG", (200, 100, 50), mode="RGB")
        save(root / "b" / f"{i}.bmp", (10, 20, 30), mode="RGB")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    save(root / ".hidden" / "x.png", 3)
    dataset = load_dataset(f"folder:{root}", "train")
    assert dataset.image_shape == (3, 4, 6) and dataset.class_names == ["a", "b"] and len(dataset) == 8
    b = dataset.images[dataset.labels == 1][:, :, 0, 0]
    assert (b == torch.tensor([10, 20, 30], dtype=torch.uint8)).all()  # BMP is lossless


def test_palette_gray_stays_gray(tmp_path):
    root = tmp_path / "pal"
    for i in range(5):
        save(root / "x" / f"{i}.png", 100, mode="L")
    Image.new("L", (6, 4), 50).convert("P").save(root / "x" / "pal.png")
    assert load_dataset(f"folder:{root}", "train").image_shape == (1, 4, 6)


def test_unlabelled(tmp_path):
    for i in range(10):
        save(tmp_path / f"{i}.png", i)
    train = load_dataset(f"folder:{tmp_path}", "train")
    assert train.labels is None and train.class_names == [] and len(train) == 8
    assert len(load_dataset(f"folder:{tmp_path}", "test")) == 2


def test_mixed_sizes_need_size(tmp_path):
    root = make_classes(tmp_path / "pets")
    odd = save(root / "dog" / "big.png", 255, size=(20, 10))
    with pytest.raises(GenlabError) as error:
        load_dataset(f"folder:{root}")
    message = str(error.value)
    assert "--size" in message and str(odd) in message and str(root / "cat" / "000.png") in message
    resized = load_dataset(f"folder:{root}", size=8)
    assert resized.image_shape == (1, 8, 8)
    tall = load_dataset(f"folder:{root}", "test", size=(12, 5))
    assert tall.image_shape == (1, 12, 5)
    # A solid image stays solid after resizing.
    big = load_dataset(f"folder:{root}", "train", size=8).images
    assert set(big.amax(dim=(1, 2, 3)).tolist()) == set(big.amin(dim=(1, 2, 3)).tolist())


def test_resize_matches_tensor_resize(tmp_path):
    # folder: resizes each file with PIL; npz: and builtins resize the stacked tensor with torch.
    # Both are antialiased bilinear and must agree to within rounding.
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 24, 18), dtype=np.uint8)
    for i, image in enumerate(images):
        (tmp_path / "png").mkdir(exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / "png" / f"{i:02d}.png")
    np.savez(tmp_path / "same.npz", images=images)
    for size in [(10, 7), (48, 30)]:
        from_files = load_dataset(f"folder:{tmp_path / 'png'}", size=size).images.int()
        from_tensor = load_dataset(f"npz:{tmp_path / 'same.npz'}", size=size).images.int()
        assert from_files.shape == from_tensor.shape == (8, 3, *size)
        assert (from_files - from_tensor).abs().max() <= 2


def test_train_test_folders(tmp_path):
    make_classes(tmp_path / "train", {"a": 4, "b": 3})
    make_classes(tmp_path / "test", {"b": 2})
    train = load_dataset(f"folder:{tmp_path}", "train")
    test = load_dataset(f"folder:{tmp_path}", "test")
    assert (len(train), len(test)) == (7, 2)
    assert test.class_names == ["a", "b"] and test.labels.tolist() == [1, 1]  # train's numbering


def test_train_test_share_channels(tmp_path):
    make_classes(tmp_path / "train", {"a": 3})
    make_classes(tmp_path / "test", {"a": 2}, mode="RGB")
    assert load_dataset(f"folder:{tmp_path}", "train").image_shape == (3, 4, 6)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(GenlabError, match="has no PNG/JPEG images; expected one subfolder per class"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_corrupt_image(tmp_path):
    root = make_classes(tmp_path / "pets")
    bad = root / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"nonsense" * 10)
    with pytest.raises(GenlabError, match="broken.png is not a readable image"):
        load_dataset(f"folder:{root}")


def test_truncated_image(tmp_path):
    root = make_classes(tmp_path / "pets")
    path = root / "cat" / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4, 6), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])  # a valid header, then half the pixel data
    with pytest.raises(GenlabError, match="cut.png is not a readable image"):
        load_dataset(f"folder:{root}")


def test_missing_path_and_file(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(GenlabError, match="is a file, not a folder"):
        load_dataset(f"folder:{tmp_path / 'file.png'}")


def test_loose_images_beside_classes(tmp_path):
    root = make_classes(tmp_path / "pets")
    save(root / "stray.png", 7)
    with pytest.raises(GenlabError, match="stray.png"):
        load_dataset(f"folder:{root}")


# --------------------------------------------------------------------------- bit depth and transparency


def load_all(root):
    """Every image of a folder (train then test), as uint8 (N, C, H, W)."""
    return torch.cat([load_dataset(f"folder:{root}", split).images for split in ("train", "test")])


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    for i, value in enumerate([0, 257 * 100, 65535, 257 * 7, 30000]):
        Image.fromarray(np.full((4, 6), value, np.uint16)).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "1.png").mode == "I;16"
    images = load_all(tmp_path)
    assert images.shape == (5, 1, 4, 6)
    assert sorted(images[:, 0, 0, 0].tolist()) == [0, 7, 100, round(30000 * 255 / 65535), 255]


@pytest.mark.parametrize(
    "mode, values, expected",
    [
        ("I;16B", np.array([[0, 257 * 100], [65535, 514]]), [[0, 100], [255, 2]]),
        ("I", np.array([[0, 1000], [2000, -5]]), [[0, 128], [255, 0]]),  # max 2000 -> 255
        ("I", np.array([[0, 10], [200, 255]]), [[0, 10], [200, 255]]),  # within 0..255: as is
        ("F", np.array([[0.0, 0.5], [300.0, 150.0]]), [[0, 0], [255, 128]]),  # max 300 -> 255
        ("F", np.array([[0.0, 12.4], [254.6, 100.0]]), [[0, 12], [255, 100]]),
    ],
)
def test_high_bit_modes(mode, values, expected):
    from genlab.data.folder import _pixels

    if mode == "I;16B":
        image = Image.frombytes(mode, (2, 2), values.astype(">u2").tobytes())
    else:
        image = Image.fromarray(values.astype(np.int32 if mode == "I" else np.float32))
    assert image.mode == mode
    assert _pixels(image, gray=True).tolist() == expected
    assert _pixels(image, gray=False).tolist() == [[[v] * 3 for v in row] for row in expected]


def test_rgba_composited_onto_black(tmp_path):
    pixels = np.zeros((4, 6, 4), np.uint8)
    pixels[..., :3] = (200, 100, 50)
    pixels[..., 3] = 255
    pixels[0, 0, 3] = 0  # fully transparent: black, whatever its colour
    pixels[0, 1, 3] = 128  # half transparent: half the colour
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    save(tmp_path / "b.png", (200, 100, 50), mode="RGB")
    images = load_all(tmp_path)
    assert images.shape == (2, 3, 4, 6)
    rgba = images[(images[:, 0, 0, 0] == 0)][0]  # (3, H, W)
    assert rgba[:, 0, 0].tolist() == [0, 0, 0]
    assert rgba[:, 0, 1].tolist() == [round(200 * 128 / 255), round(100 * 128 / 255), round(50 * 128 / 255)]
    assert rgba[:, 3, 5].tolist() == [200, 100, 50]


def test_la_composited_onto_black_stays_gray(tmp_path):
    values = np.stack([np.full((4, 6), 200, np.uint8), np.full((4, 6), 255, np.uint8)], axis=-1)
    values[0, 0, 1] = 0
    Image.fromarray(values, "LA").save(tmp_path / "a.png")
    save(tmp_path / "b.png", 90)
    images = load_all(tmp_path)
    assert images.shape == (2, 1, 4, 6)  # LA is gray, so nothing turns RGB
    la = images[images[:, 0, 3, 5] == 200][0, 0]
    assert la[0, 0] == 0 and la[1, 1] == 200  # the transparent pixel became black, not 200


def test_palette_transparency_composited_onto_black(tmp_path):
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, 255, 255, 255, 120, 120, 120] + [0] * (3 * 253))  # a gray palette
    image.putpixel((0, 0), 2)
    image.save(tmp_path / "p.png", transparency=1)  # index 1 (white) is transparent
    images = load_all(tmp_path)
    assert images.shape == (1, 1, 4, 6)  # gray palette: one channel
    assert images[0, 0, 0, 0] == 120 and images[0, 0, 3, 5] == 0  # white-but-transparent -> black


# --------------------------------------------------------------------------- both splits at once, bad paths


def test_load_splits_decodes_each_file_once(tmp_path, monkeypatch):
    from genlab.data import folder, load_splits

    root = make_classes(tmp_path / "pets")
    expected = [load_dataset(f"folder:{root}", split, size=5) for split in ("train", "test")]
    decoded = []
    real = folder._pixels
    monkeypatch.setattr(folder, "_pixels", lambda image, gray: decoded.append(image.filename) or real(image, gray))
    train, test = load_splits(f"folder:{root}", size=5)
    assert sorted(decoded) == sorted(str(p) for p in root.rglob("*.png"))  # 15 files, once each
    for got, want in zip((train, test), expected):
        assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
        assert got.class_names == want.class_names and got.name == want.name
    decoded.clear()
    load_dataset(f"folder:{root}", "test")
    assert len(decoded) == 3  # the test split decodes only its own files


def test_load_splits_official_layout(tmp_path):
    from genlab.data import load_splits

    make_classes(tmp_path / "train", {"a": 4, "b": 3})
    make_classes(tmp_path / "test", {"b": 2})
    train, test = load_splits(f"folder:{tmp_path}")
    assert torch.equal(train.images, load_dataset(f"folder:{tmp_path}", "train").images)
    assert test.labels.tolist() == load_dataset(f"folder:{tmp_path}", "test").labels.tolist() == [1, 1]


def test_single_image_has_an_empty_test_split(tmp_path):
    save(tmp_path / "only.png", 9)
    test = load_dataset(f"folder:{tmp_path}", "test")
    assert test.images.shape == (0, 1, 4, 6) and test.labels is None
    assert len(load_dataset(f"folder:{tmp_path}", "train")) == 1
