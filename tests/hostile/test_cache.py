"""A damaged cache (issue 18): the reference-feature cache and the floor cache are checked when read.

Every damaged entry (a generator of mutations per file kind) must be recomputed with one line on
stderr naming the file and the fault, give the same numbers as a fresh cache, and be replaced by a
good entry (read back in silence next time). The cache is pointed at tmp_path through $GENLAB_CACHE.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from genlab.data import ImageDataset, load_dataset
from genlab.eval.features import load_extractor
from genlab.eval.floors import floor_path, read_floor, write_floor
from genlab.eval.reference import cache_path, real_features
from tests.hostile.conftest import run_cli

IMAGES = 64  # real images in the cached entries of these tests (a slice of mnist-5k's test split)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GENLAB_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def extractor():
    return load_extractor("digits")


@pytest.fixture(scope="module")
def dataset() -> ImageDataset:
    test = load_dataset("mnist-5k", split="test")
    return ImageDataset(test.images[:IMAGES], test.labels[:IMAGES], list(test.class_names), test.name)


@pytest.fixture(scope="module")
def fresh(dataset, extractor):
    """The features computed without a cache: what every damaged entry must give back."""
    return real_features(dataset, "test", extractor, use_cache=False)


# ---------------------------------------------------------------- damaged feature entries

Entry = tuple[dict[str, torch.Tensor], Any]  # (tensors, genlab's metadata)


def tensors_set(name: str, change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Entry], Entry]:
    return lambda entry: ({**entry[0], name: change(entry[0][name])}, entry[1])


def tensor_dropped(name: str) -> Callable[[Entry], Entry]:
    return lambda entry: ({k: v for k, v in entry[0].items() if k != name}, entry[1])


def metadata_set(key: str, value: Any) -> Callable[[Entry], Entry]:
    return lambda entry: (entry[0], {**entry[1], key: value})


def metadata_dropped(key: str) -> Callable[[Entry], Entry]:
    return lambda entry: (entry[0], {k: v for k, v in entry[1].items() if k != key})


def metadata_is(value: Any) -> Callable[[Entry], Entry]:
    return lambda entry: (entry[0], value)


def poked(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t[3, 1] = value
    return t


ENTRY_CASES: dict[str, tuple[Callable[[Entry], Entry], str]] = {
    "features all NaN": (tensors_set("features", lambda t: torch.full_like(t, math.nan)), "they hold NaN"),
    "one NaN feature": (tensors_set("features", lambda t: poked(t, math.nan)), "they hold NaN"),
    "an infinite feature": (tensors_set("features", lambda t: poked(t, -math.inf)), "they hold infinite values"),
    "NaN probabilities": (
        tensors_set("probabilities", lambda t: torch.full_like(t, math.nan)),
        "their class probabilities hold NaN",
    ),
    "a negative probability": (tensors_set("probabilities", lambda t: poked(t, -0.5)), "not distributions"),
    "probabilities above 1": (tensors_set("probabilities", lambda t: t * 3), "not distributions"),
    "rows not summing to 1": (tensors_set("probabilities", lambda t: t * 0.5), "not distributions"),
    "float64 features": (tensors_set("features", lambda t: t.double()), "they are float64, not float32"),
    "float16 features": (tensors_set("features", lambda t: t.half()), "they are float16, not float32"),
    "integer probabilities": (
        tensors_set("probabilities", lambda t: t.round().int()),
        "their class probabilities are int32",
    ),
    "a row short": (
        tensors_set("features", lambda t: t[:-1].clone()),
        f"shape ({IMAGES - 1}, 256), not ({IMAGES}, 256)",
    ),
    "a column more": (tensors_set("features", lambda t: torch.cat([t, t[:, :1]], 1)), "not (64, 256)"),
    "flattened": (tensors_set("features", lambda t: t.flatten().clone()), f"shape ({IMAGES * 256},)"),
    "empty": (tensors_set("features", lambda t: t[:0].clone()), "shape (0, 256)"),
    "no probabilities": (tensor_dropped("probabilities"), "lacks the probabilities tensor"),
    "no features": (tensor_dropped("features"), "lacks the features tensor"),
    "metadata without images": (metadata_dropped("images"), "lacks 'images'"),
    "metadata without sha256": (metadata_dropped("extractor_sha256"), "lacks 'extractor_sha256'"),
    "images as a string": (metadata_set("images", str(IMAGES)), "'images' is a str, not a int"),
    "images as a float": (metadata_set("images", float(IMAGES)), "'images' is a float"),
    "images as a bool": (metadata_set("images", True), "'images' is a bool"),
    "images as null": (metadata_set("images", None), "'images' is a NoneType"),
    "images as a list": (metadata_set("images", [IMAGES]), "'images' is a list"),
    "another image count": (metadata_set("images", IMAGES + 1), f"'images' is {IMAGES + 1}, not {IMAGES}"),
    "format as a string": (metadata_set("format", "1"), "'format' is a str"),
    "a future format": (metadata_set("format", 99), "'format' is 99, not 1"),
    "sha256 as a number": (metadata_set("extractor_sha256", 123), "'extractor_sha256' is a int"),
    "other extractor weights": (metadata_set("extractor_sha256", "f" * 64), "made by extractor weights ffffffffffff"),
    "another split": (metadata_set("split", "train"), "'split' is 'train', not 'test'"),
    "another fingerprint": (metadata_set("fingerprint", "0" * 16), "'fingerprint' is '0000000000000000'"),
    "fingerprint as an object": (metadata_set("fingerprint", {"a": 1}), "'fingerprint' is a dict"),
    "another dataset": (metadata_set("dataset", "fashion-mnist"), "'dataset' is 'fashion-mnist'"),
    "metadata is a list": (metadata_is([1, 2]), ""),
    "metadata is a string": (metadata_is("x"), ""),
    "metadata is null": (metadata_is(None), ""),
}


def write_entry(path: Path, tensors: dict[str, torch.Tensor], metadata: Any) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"genlab": json.dumps(metadata)})


def read_entry(path: Path) -> Entry:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = json.loads(handle.metadata()["genlab"])
    return load_file(str(path)), metadata


def assert_recomputed(path: Path, why: str, dataset, extractor, fresh, capsys) -> None:
    """real_features recomputes the damaged `path`, says so in one line, gives the fresh numbers, replaces it."""
    capsys.readouterr()
    got = real_features(dataset, "test", extractor)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"recomputing the cached reference features in {path}: "), lines[0]
    assert why in lines[0], lines[0]
    assert torch.equal(got.features, fresh.features) and torch.equal(got.probabilities, fresh.probabilities)
    again = real_features(dataset, "test", extractor)  # the entry was replaced by a good one
    assert capsys.readouterr().err == ""
    assert torch.equal(again.features, fresh.features) and torch.equal(again.probabilities, fresh.probabilities)


@pytest.mark.parametrize("case", list(ENTRY_CASES))
def test_a_damaged_feature_entry_is_recomputed(case, dataset, extractor, fresh, capsys):
    damage, why = ENTRY_CASES[case]
    real_features(dataset, "test", extractor)  # a good entry
    path = cache_path(dataset, "test", extractor)
    write_entry(path, *damage(read_entry(path)))
    assert_recomputed(path, why, dataset, extractor, fresh, capsys)


BYTE_CASES: dict[str, Callable[[bytes], bytes]] = {
    "empty file": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "header only": lambda data: data[: 8 + int.from_bytes(data[:8], "little")],
    "garbage": lambda data: bytes(range(256)) * 8,
    "huge header length": lambda data: (2**63).to_bytes(8, "little") + data[8:],
    "a pickle": lambda data: pickle.dumps({"features": [1.0, 2.0]}, protocol=4),
    "a JSON file": lambda data: b'{"features": [1, 2, 3]}',
    "far too large": lambda data: data + bytes(2 << 20),
}


@pytest.mark.parametrize("case", list(BYTE_CASES))
def test_a_corrupt_feature_file_is_recomputed(case, dataset, extractor, fresh, capsys):
    real_features(dataset, "test", extractor)
    path = cache_path(dataset, "test", extractor)
    path.write_bytes(BYTE_CASES[case](path.read_bytes()))
    assert_recomputed(path, "", dataset, extractor, fresh, capsys)


def test_a_folder_in_the_way_of_the_cache_costs_time_only(cache, dataset, extractor, fresh, capsys):
    path = cache_path(dataset, "test", extractor)
    path.mkdir(parents=True)  # the entry cannot be written (nor read)
    got = real_features(dataset, "test", extractor)
    assert torch.equal(got.features, fresh.features) and path.is_dir()
    assert capsys.readouterr().err == ""


def test_a_cache_root_that_is_a_file_costs_time_only(cache, dataset, extractor, fresh):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("not a folder")
    assert torch.equal(real_features(dataset, "test", extractor).features, fresh.features)


# ---------------------------------------------------------------- damaged floor entries

KEY = ["fingerprint", "test", 100, 100, 0, "sha", 300]  # any key: the file name is its digest
GOOD = {"fid": {"fid": 5.25}, "mode_coverage": {"classes_covered": 10, "num_classes": 10, "class_kl": 0.003}}

FLOOR_CASES: dict[str, tuple[Any, str]] = {
    "NaN value": ({"kid": {"kid": math.nan, "kid_std": 0.01}}, "'kid' holds NaN in 'kid'"),
    "infinite value": ({"kid": {"kid": 0.1, "kid_std": math.inf}}, "'kid' holds an infinite value in 'kid_std'"),
    "string value": ({"precision": {"precision": "0.8"}}, "'precision''s 'precision' is a str, not a number"),
    "bool value": ({"recall": {"recall": True}}, "'recall''s 'recall' is a bool"),
    "null value": ({"recall": {"recall": None}}, "is a NoneType"),
    "list value": ({"density": {"density": [0.9]}}, "is a list"),
    "nested object": ({"coverage": {"coverage": {"x": 1}}}, "is a dict"),
    "entry is a list": ({"fid": [5.0]}, "'fid' is a list, not an object"),
    "entry is a number": ({"cas": 0.9}, "'cas' is a float, not an object"),
    "entry lacks its key": ({"label_accuracy": {"accuracy": 0.98}}, "'label_accuracy' lacks 'label_accuracy'"),
    "unknown metric": ({"ssim": {"ssim": 0.5}}, "'ssim' is not a metric with a floor"),
    "a metric without a floor": ({"nll": {"nll_nats": 80.0, "bits_per_dim": 1.5}}, "'nll' is not a metric"),
}
FILE_CASES: dict[str, tuple[bytes, str]] = {
    "top level list": (b"[1, 2]", "it holds a list, not an object"),
    "top level string": (b'"floor"', "it holds a str"),
    "null": (b"null", "it holds a NoneType"),
    "not JSON": (b"{fid: 5}", "not valid JSON"),
    "truncated": (b'{"fid": {"fid": 5.2', "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "invalid UTF-8": (b'{"fid": {"fid": 5}, "\xff": 1}', "not valid JSON"),
    "nested beyond the parser": (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),
    "a huge number": (b'{"fid": {"fid": 1e999}}', "'fid' holds an infinite value"),
    "a huge integer": (b'{"fid": {"fid": ' + b"9" * 5000 + b"}}", "not valid JSON"),
    "far too large": (b'{"fid": {"fid": 5.0}, "pad": "' + b"x" * (2 << 20) + b'"}', "bytes, far more than"),
}


def written_floor(floor: dict[str, Any]) -> Path:
    path = floor_path(KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(floor))
    return path


def assert_floor_read(path: Path, why: str, capsys, expected: dict[str, Any]) -> None:
    capsys.readouterr()
    assert read_floor(KEY) == expected
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"recomputing the cached floor in {path}: ") and why in lines[0], lines[0]
    write_floor(KEY, {"kid": {"kid": 0.1, "kid_std": 0.01}})  # what `genlab eval` does next: rewrite the file
    assert read_floor(KEY) == {**expected, "kid": {"kid": 0.1, "kid_std": 0.01}}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("case", list(FLOOR_CASES))
def test_a_damaged_floor_entry_is_measured_again(case, capsys):
    damaged, why = FLOOR_CASES[case]
    kept = {name: values for name, values in GOOD.items() if name not in damaged}  # the good entries stay
    assert_floor_read(written_floor({**GOOD, **damaged}), why, capsys, kept)


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_damaged_floor_file_is_measured_again(case, capsys):
    data, why = FILE_CASES[case]
    path = floor_path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert_floor_read(path, why, capsys, {})


def test_a_non_finite_floor_is_never_cached(capsys):
    write_floor(KEY, {**GOOD, "kid": {"kid": math.nan, "kid_std": 0.0}})
    assert read_floor(KEY) == GOOD
    assert capsys.readouterr().err == ""


def test_a_folder_in_the_way_of_the_floor_costs_time_only(capsys):
    floor_path(KEY).mkdir(parents=True)
    assert read_floor(KEY) == {}
    write_floor(KEY, GOOD)
    assert read_floor(KEY) == {} and capsys.readouterr().err == ""


# ---------------------------------------------------------------- `genlab eval` end to end

EVAL = ["eval", "--real-vs-real", "--data", "mnist-5k", "--metrics", "fid,kid"]


def eval_table(capsys) -> tuple[str, str]:
    """(the table `genlab eval` prints, its stderr), asserting it succeeded."""
    outcome = run_cli(EVAL, capsys)
    assert outcome.code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    return outcome.stdout.split("\n", 1)[1], outcome.stderr  # the header line holds the seconds taken


def test_eval_recomputes_a_poisoned_cache_with_the_numbers_of_a_fresh_one(cache, capsys):
    table, err = eval_table(capsys)  # a fresh cache
    assert err == ""
    features = sorted((cache / "features").glob("mnist-5k-test-*.safetensors"))
    floors = sorted((cache / "floors").glob("*.json"))
    assert len(features) == 1 and len(floors) == 1

    tensors, metadata = read_entry(features[0])
    write_entry(features[0], {**tensors, "features": torch.full_like(tensors["features"], math.nan)}, metadata)
    floors[0].unlink()  # so that the floor is measured on the features read back
    poisoned, err = eval_table(capsys)
    assert err.strip() == f"recomputing the cached reference features in {features[0]}: they hold NaN"
    assert poisoned == table

    document = json.loads(floors[0].read_text())
    floors[0].write_text(json.dumps({**document, "fid": {"fid": "5"}, "kid": {"kid": math.nan, "kid_std": 0.1}}))
    poisoned, err = eval_table(capsys)
    assert err.strip().startswith(f"recomputing the cached floor in {floors[0]}: 'fid''s 'fid' is a str")
    assert poisoned == table
    assert eval_table(capsys) == (table, "")  # both caches are whole again
