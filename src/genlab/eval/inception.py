"""Inception-v3 features for `genlab eval --inception PATH`: pytorch-fid's network, the user's file.

FID (Heusel et al. 2017) is usually reported with the Inception-v3 graph TensorFlow released as
`inception-2015-12-05`. pytorch-fid ported its weights to one PyTorch file,
`pt_inception-2015-12-05-6726825d.pth`; `InceptionV3` below is the same network, written for genlab,
whose state-dict keys and shapes equal that file's, so the file loads as it is:

    extractor = load_inception("pt_inception-2015-12-05-6726825d.pth")   # or a .safetensors copy
    features = extractor.features(images)          # float32 (N, 2048): pool3, images in [0, 1]
    probs = extractor.probabilities(images)        # float32 (N, 1008): softmax of the logits
    extractor.name, extractor.sha256               # what metrics.json records

genlab never downloads the file (docs/inception.md says where to get it). It differs from
torchvision's Inception-v3 the way pytorch-fid's `FIDInceptionV3` does: 1008 classes, no
auxiliary classifier, the average-pool branches of the A, C and E blocks exclude the zero
padding from their means (as TensorFlow does), and the last block (Mixed_7c) pools its fourth
branch with a max instead of an average. Every convolution is `BasicConv2d`: a convolution
without bias, BatchNorm (eps 0.001), ReLU.

Input, as pytorch-fid: float images in [0, 1] (uint8 0..255 is divided by 255), grayscale
repeated to 3 channels, resized to 299x299 bilinearly (F.interpolate, align_corners=False),
scaled to [-1, 1]. Features are the 2048-d global average pool ("pool3"); logits are the
1008-way linear layer on them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.eval.features import Extractor, FeatureNetwork, as_image_tensor, check_pixel_values
from genlab.io import parse_tensors, save_tensors

NAME = "inception-v3-fid"
RANDOM_INIT = "random-init"  # the sha256 recorded for a network that no file initialised
WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILENAME}"
INPUT_SIZE = 299  # the network's input height and width
FEATURE_DIM = 2048  # pool3
NUM_CLASSES = 1008  # the 2015 graph's classifier: ImageNet's 1000 classes and 8 unused
MIN_SIZE = 16  # the smallest image height/width accepted (every image is resized to 299 anyway)
DEFAULT_BATCH_SIZE = 50  # pytorch-fid's default; ~25 MB of activations per 299x299 image

# First bytes of a torch.save file: a zip archive (torch >= 1.6) or a raw pickle (older torch).
_TORCH_SAVE_MAGICS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


# ---------------------------------------------------------------------------------------------
# The network


class BasicConv2d(nn.Module):
    """Convolution (no bias) -> BatchNorm (eps 0.001) -> ReLU; keys `conv.*` and `bn.*`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], **conv: Any):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean, stride 1, same size; the zero padding is not counted (TensorFlow's average pool)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max, stride 1, same size (Mixed_7c's pool branch in the FID graph)."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d, 35x35: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avgpool -> 1x1.

    (B, C, 35, 35) -> (B, 64 + 64 + 96 + pool_features, 35, 35)
    """

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = self.branch5x5_2(self.branch5x5_1(x))
        deep = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), wide, deep, pooled], dim=1)


class InceptionB(nn.Module):
    """Mixed_6a, 35x35 -> 17x17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | maxpool/2.

    (B, C, 35, 35) -> (B, 384 + 96 + C, 17, 17)
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), deep, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """Mixed_6b..6e, 17x17, factorised 7x7: 1x1 | 1x7 7x1 | 7x1 1x7 7x1 1x7 | avgpool -> 1x1.

    (B, 768, 17, 17) -> (B, 4 * 192, 17, 17); `channels_7x7` is the width inside the 7x7 branches.
    """

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        row = {"kernel_size": (1, 7), "padding": (0, 3)}
        col = {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c, 1)
        self.branch7x7_2 = BasicConv2d(c, c, **row)
        self.branch7x7_3 = BasicConv2d(c, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c, 1)
        self.branch7x7dbl_2 = BasicConv2d(c, c, **col)
        self.branch7x7dbl_3 = BasicConv2d(c, c, **row)
        self.branch7x7dbl_4 = BasicConv2d(c, c, **col)
        self.branch7x7dbl_5 = BasicConv2d(c, 192, **row)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        pooled = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), single, double, pooled], dim=1)


class InceptionD(nn.Module):
    """Mixed_7a, 17x17 -> 8x8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | maxpool/2.

    (B, 768, 17, 17) -> (B, 320 + 192 + 768, 8, 8)
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.branch3x3_2(self.branch3x3_1(x))
        long = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            long = layer(long)
        return torch.cat([short, long, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """Mixed_7b/7c, 8x8, split 3x3s: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | pool -> 1x1.

    (B, C, 8, 8) -> (B, 320 + 768 + 768 + 192, 8, 8) = (B, 2048, 8, 8). `pool` is "avg" for
    Mixed_7b and "max" for Mixed_7c, as in the FID graph.
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        row = {"kernel_size": (1, 3), "padding": (0, 1)}
        col = {"kernel_size": (3, 1), "padding": (1, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(a),
                self.branch3x3_2b(a),
                self.branch3x3dbl_3a(b),
                self.branch3x3dbl_3b(b),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


class InceptionV3(FeatureNetwork):
    """pytorch-fid's FID Inception-v3; its state dict has the keys of pt_inception-2015-12-05-6726825d.pth.

    (B, 3, 299, 299) in [-1, 1]
    Conv2d_1a_3x3 (stride 2) .. Conv2d_2b_3x3, maxpool   (B, 64, 73, 73)
    Conv2d_3b_1x1, Conv2d_4a_3x3, maxpool                (B, 192, 35, 35)
    Mixed_5b..5d (A)                                     (B, 288, 35, 35)
    Mixed_6a (B), Mixed_6b..6e (C)                       (B, 768, 17, 17)
    Mixed_7a (D), Mixed_7b, Mixed_7c (E)                 (B, 2048, 8, 8)
    global average pool                                  (B, 2048)        = pool3, the features
    fc                                                   (B, 1008)        = the logits

    A new network is randomly initialised from torch's global RNG (convolutions He-normal, so
    activations keep their scale through BatchNorm's identity statistics); load a state dict for
    the real weights. `features` and `forward` take images in [0, 1] of any size; `pool3` takes
    the already preprocessed (B, 3, 299, 299) input.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """float (B, 1 or 3, H, W) in [0, 1] -> (B, 3, 299, 299) in [-1, 1], as pytorch-fid does."""
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale: the same plane in R, G and B
        return 2 * x - 1

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, 3, 299, 299) in [-1, 1] -> (B, 2048): the global average pool."""
        for stem in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3):
            x = stem(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,  # (B, 288, 35, 35)
            self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,  # (B, 768, 17, 17)
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,  # (B, 2048, 8, 8)
        ):  # fmt: skip
            x = block(x)
        return x.mean(dim=(2, 3))  # (B, 2048)

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 1 or 3, H, W) in [0, 1] -> (B, 2048): pool3."""
        return self.pool3(self.preprocess(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 1 or 3, H, W) in [0, 1] -> logits (B, 1008)."""
        return self.fc(self.features(images))


# ---------------------------------------------------------------------------------------------
# The extractor


class InceptionExtractor(Extractor):
    """Inception-v3 as a genlab extractor: `Extractor`'s batching and checks, its own shapes.

    Images are float (N, C, H, W) in [0, 1], C 1 or 3, H and W at least 16 (uint8 0..255 is
    accepted too); results are float32 on the CPU. ImageNet's classes are not the data's
    classes, so `class_names` is empty.
    """

    default_batch_size = network_batch = DEFAULT_BATCH_SIZE  # 50 images at 299x299 (pytorch-fid's default)
    memory_format = torch.contiguous_format

    def __init__(self, model: InceptionV3, sha256: str = RANDOM_INIT, info: dict[str, Any] | None = None):
        # sha256: of the weight file; "random-init" when no file initialised the network
        super().__init__(NAME, sha256, model, info)

    @property
    def class_names(self) -> list[str]:
        return []

    def check(self, images: Any) -> torch.Tensor:
        return check_inception_images(images)


def check_inception_images(images: Any) -> torch.Tensor:
    """`images` as a tensor, after checking it is (N, 1 or 3, H >= 16, W >= 16), uint8 or float in [0, 1]."""
    images = as_image_tensor(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or min(images.shape[2:]) < MIN_SIZE:
        raise GenlabError(
            f"the Inception extractor takes images of shape (N, C, H, W) with C 1 or 3 and H, W >= {MIN_SIZE}, "
            f"got {tuple(images.shape)}"
        )
    return check_pixel_values(images)


def inception_from_module(network: InceptionV3, sha256: str = RANDOM_INIT) -> InceptionExtractor:
    """Wrap an `InceptionV3` the caller built (random init, or weights they loaded themselves).

    `sha256` is what metrics.json will record: "random-init" unless the caller names their file's.
    """
    if not isinstance(network, InceptionV3):
        raise GenlabError(f"expected a genlab.eval.inception.InceptionV3, got {type(network).__name__}")
    return InceptionExtractor(network, sha256, {"source": "module"})


def load_inception(path: str | Path) -> InceptionExtractor:
    """pytorch-fid's Inception weights from `path`: its .pth file, or a .safetensors copy of it.

    The .pth file is read with torch.load(weights_only=True), which never runs code from the
    file. The keys and shapes must equal InceptionV3's (BatchNorm's `num_batches_tracked`
    counters may be absent); anything else raises GenlabError. The file's sha256 is recorded.
    """
    path = Path(path)
    if not path.is_file():
        raise GenlabError(
            f"{path} does not exist: give the path of pytorch-fid's {WEIGHTS_FILENAME} (from {WEIGHTS_URL})"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    state = _read_state_dict(data, path)
    model = InceptionV3()
    _check_state_dict(state, model, path)
    model.load_state_dict(state, strict=True)
    return InceptionExtractor(model.eval(), digest, {"source": str(path)})


def convert_inception(source: str | Path, out: str | Path) -> Path:
    """Write pytorch-fid's Inception weights from `source` (its .pth) to `out` as safetensors, once.

    The .pth is read as `load_inception` reads it (torch.load with weights_only=True, a restricted
    unpickler that builds only tensors, dicts and numbers) and checked against InceptionV3; the
    safetensors copy is then read with no unpickler at all. Refuses to replace an existing file.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise GenlabError(f"--out {out} must end in .safetensors")
    if out.exists():
        raise GenlabError(f"{out} exists; give a new path for the converted weights")
    source = Path(source)
    if not source.is_file():
        raise GenlabError(f"{source} does not exist: give the path of pytorch-fid's {WEIGHTS_FILENAME}")
    state = _read_state_dict(source.read_bytes(), source)
    _check_state_dict(state, InceptionV3(), source)
    save_tensors(out, {key: value.contiguous() for key, value in state.items()}, {"source": source.name})
    return out


def _not_inception(path: Path, why: str) -> GenlabError:
    return GenlabError(
        f"{path} is not an Inception weight file ({why}): it must be pytorch-fid's {WEIGHTS_FILENAME} "
        f"(from {WEIGHTS_URL}) or a safetensors copy of it"
    )


def _read_state_dict(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors in `data` (the bytes of `path`): a torch.save file or a safetensors file."""
    if _looks_like_safetensors(data):
        try:
            state, _ = parse_tensors(data, path, "Inception weights file")
        except GenlabError:
            raise _not_inception(path, "not a valid safetensors file") from None
    elif data.startswith(_TORCH_SAVE_MAGICS):
        try:
            # weights_only: tensors, dicts and numbers only; a pickle that would run code is refused.
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 -- UnpicklingError, RuntimeError, EOFError ... for corrupt or foreign pickles
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise _not_inception(path, f"torch.load refused it: {first}") from None
    else:
        raise _not_inception(path, "neither a torch.save file nor a safetensors file")
    if not isinstance(state, Mapping):
        raise _not_inception(path, f"it holds a {type(state).__name__}, not a state dict")
    bad = [str(key) for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise _not_inception(path, f"entries that are not named tensors: {_some(bad)}")
    return dict(state)


def _looks_like_safetensors(data: bytes) -> bool:
    """True if `data` starts as safetensors does: an 8-byte little-endian length, then that much JSON.

    Checked before the torch.save magics, since a header length can begin with the same bytes.
    """
    header_length = int.from_bytes(data[:8], "little")
    return len(data) >= 10 and 8 + header_length <= len(data) and data[8:9] == b"{"


def _check_state_dict(state: dict[str, torch.Tensor], model: InceptionV3, path: Path) -> None:
    """Raise unless `state` has `model`'s keys and shapes; fill absent BatchNorm batch counters."""
    expected = model.state_dict()
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)  # not used in eval mode; older files lack it
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} instead of {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_some(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_some(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes: {_some(wrong)}")
    if problems:
        raise _not_inception(path, "; ".join(problems))


def _some(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f", ... ({len(items) - shown} more)" if len(items) > shown else "")
