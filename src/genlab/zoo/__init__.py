"""The model zoo: trained run directories shipped inside genlab, usable wherever a run path is, as `zoo:NAME`.

    genlab zoo                                  # the table: family, data, size, training time, FID, recall ...
    genlab sample zoo:ddpm-mnist5k --n 16       # any command that reads a run reads a zoo model
    run = genlab.Run.load("zoo:vae-mnist5k")    # the same in Python (genlab.load is the short name)

Each entry is an ordinary run directory under `genlab/zoo/models/NAME/` (run.json, model.safetensors,
history.jsonl, metrics.json, samples/, card.md; no optimizer state), made by `scripts/train_zoo.py NAME`.
`catalog.json` beside this file lists the entries and the sha256 of every file of each; every file is
checked against it before a zoo model is used, as the feature extractors are (genlab.eval.features).
Zoo models are read-only: no command writes into them (genlab.outputs refuses any path inside the zoo),
and what a command would write into a run (metrics.json, report.html, sample grids) goes to the
current folder instead, named after the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab import schema
from genlab.errors import GenlabError
from genlab.io import read_json

PREFIX = "zoo:"
ZOO_DIR = Path(__file__).parent / "models"  # one run directory per entry
CATALOG_FILE = Path(__file__).parent / "catalog.json"
CARD_FILE = "card.md"  # the model card: data, recipe, time, numbers, known weaknesses
REINSTALL = "genlab's installed files are damaged: reinstall genlab (pip install --force-reinstall genlab)"

CATALOG = (
    schema.Field("", "object"),
    schema.Field("format", "string", choices=("genlab-zoo",)),
    schema.Field("format_version", "integer", minimum=1, maximum=1),
    schema.Field("models", "object"),
    schema.Field("models.*", "object"),
    schema.Field("models.*.summary", "string"),
    schema.Field("models.*.recipe", "string"),  # the scripts/train_zoo.py command that made it
    schema.Field("models.*.train_seconds", "number", minimum=0),
    schema.Field("models.*.parameters", "integer", minimum=1),
    schema.Field("models.*.files", "object"),
    schema.Field("models.*.files.*", "string"),
)


@dataclass(frozen=True)
class ZooEntry:
    """One shipped model: its name, what it is, how it was made, and the sha256 of each of its files."""

    name: str
    summary: str
    recipe: str
    train_seconds: float
    parameters: int
    files: dict[str, str]  # path inside the run directory -> sha256 of its bytes

    @property
    def path(self) -> Path:
        """The installed run directory."""
        return ZOO_DIR / self.name

    @property
    def spec(self) -> str:
        """How a command names it: zoo:NAME."""
        return PREFIX + self.name


def catalog() -> dict[str, ZooEntry]:
    """The shipped models by name, from catalog.json (checked against its schema); {} when none ship."""
    if not CATALOG_FILE.is_file():
        return {}
    values = read_json(CATALOG_FILE, "the zoo's catalog")
    schema.validate(values, CATALOG, str(CATALOG_FILE), REINSTALL)
    return {
        name: ZooEntry(
            name, item["summary"], item["recipe"], float(item["train_seconds"]), item["parameters"], dict(item["files"])
        )
        for name, item in sorted(values["models"].items())
    }


def is_zoo_spec(spec: Any) -> bool:
    """Whether `spec` names a zoo model ("zoo:NAME") rather than a run directory."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def entry(spec: str) -> ZooEntry:
    """The catalog entry `spec` ("zoo:NAME" or NAME) names; an unknown name lists the known ones."""
    name = spec[len(PREFIX) :] if is_zoo_spec(spec) else spec
    entries = catalog()
    if name not in entries:
        known = ", ".join(entries) or "none (this installation ships no zoo models)"
        raise GenlabError(f"there is no zoo model {name!r}; the zoo has: {known} (list them with `genlab zoo`)")
    return entries[name]


def resolve(spec: str | ZooEntry) -> Path:
    """The checked run directory of zoo model `spec` (a name or its entry): every file present, each with its
    recorded sha256."""
    model = spec if isinstance(spec, ZooEntry) else entry(spec)
    for relative, expected in model.files.items():
        path = model.path / relative
        if not path.is_file():
            raise GenlabError(f"{model.spec}: {path} is missing: {REINSTALL}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise GenlabError(
                f"{model.spec}: {path} has sha256 {digest[:16]}..., not the shipped {expected[:16]}...: {REINSTALL}"
            )
    return model.path


def run_path(spec: str | Path) -> Path:
    """A run directory from a run path or a zoo name (checked, see `resolve`)."""
    return resolve(str(spec)) if is_zoo_spec(spec) else Path(spec)


def inside_zoo(path: str | Path) -> bool:
    """Whether `path` lies inside the installed zoo (where nothing may be written)."""
    try:
        Path(path).resolve().relative_to(ZOO_DIR.resolve())
    except ValueError:
        return False
    return True


def local_output(spec: str, suffix: str) -> Path:
    """Where a command writes, for zoo model `spec`, what it would write into a run: NAME{suffix} in the
    current folder, never inside the package."""
    return Path(entry(spec).name + suffix)


def zoo_rows() -> list[dict[str, Any]]:
    """One row per shipped model for `genlab zoo`: name, family, data, parameters, training time, FID beside its
    floor, recall, label accuracy (conditional models), size on disk; the numbers from its metrics.json."""
    from genlab.run import METRICS_FILE, read_run_info

    rows = []
    for model in catalog().values():
        path = resolve(model.spec)
        info = read_run_info(path)
        metrics = read_json(path / METRICS_FILE, f"{model.spec}'s metrics") if (path / METRICS_FILE).is_file() else {}
        measured, floor = metrics.get("metrics", {}), metrics.get("floor", {})
        rows.append(
            {
                "name": model.name,
                "family": info["model"]["name"],
                "data": info["data"]["spec"],
                "conditional": bool(info["model"]["config"].get("conditional")),
                "parameters": model.parameters,
                "train_seconds": model.train_seconds,
                "samples": metrics.get("counts", {}).get("samples"),
                "fid": measured.get("fid"),
                "fid_floor": floor.get("fid"),
                "recall": measured.get("recall"),
                "label_accuracy": measured.get("label_accuracy"),
                "megabytes": sum((path / relative).stat().st_size for relative in model.files) / 1e6,
                "summary": model.summary,
            }
        )
    return rows


def zoo_table(rows: list[dict[str, Any]]) -> str:
    """`genlab zoo`'s aligned table of `zoo_rows()`."""
    from genlab.explain.pipeline import aligned

    def number(value: Any, text: str) -> str:
        return "-" if value is None else text.format(value)

    header = ["Name", "Family", "Data", "Params", "Steps' time", "Samples", "FID (floor)", "Recall", "Label acc", "MB"]
    cells = [
        [
            row["name"],
            row["family"] + (" (cond.)" if row["conditional"] else ""),
            row["data"],
            f"{row['parameters'] / 1e6:.2f}M",
            f"{row['train_seconds'] / 60:.0f} min",
            number(row["samples"], "{:,}"),
            number(row["fid"], "{:.1f}") + number(row["fid_floor"], " ({:.2f})"),
            number(row["recall"], "{:.3f}"),
            number(row["label_accuracy"], "{:.1%}"),
            f"{row['megabytes']:.1f}",
        ]
        for row in rows
    ]
    return "\n".join(aligned(header, cells, right=range(3, len(header))))
