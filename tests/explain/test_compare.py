"""`genlab compare`: one table from the runs' own files, the page beside it, and what keeps numbers apart."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import genlab
from genlab.cli import main
from genlab.eval.evaluate import metric_text
from genlab.explain.compare import curve_panels
from genlab.explain.run_files import load_run, trainable_parameters

COLUMNS = ["Run", "Family", "Data", "Parameters", "Epochs", "Training time", "FID", "Precision", "Recall", "Bits/dim",
           "Copies"]


def table_rows(out: str) -> dict[str, dict[str, str]]:
    """The printed table as {run path: {column: cell}}; cells are apart by two spaces or more."""
    header, *lines = [line for line in out.splitlines() if line and not line.startswith(("note:", "wrote"))]
    assert re.split(r"\s{2,}", header) == COLUMNS
    return {cells[0]: dict(zip(COLUMNS, cells)) for cells in (re.split(r"\s{2,}", line) for line in lines)}


def test_the_table_holds_each_runs_own_numbers(tiny_vae, tiny_gan, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(tiny_vae), str(tiny_gan)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    measured = json.loads((tiny_vae / "metrics.json").read_text())["metrics"]
    vae, gan = rows[str(tiny_vae)], rows[str(tiny_gan)]
    assert (vae["Family"], vae["Data"], vae["Epochs"]) == ("vae", "mnist-5k", "3")
    assert vae["Parameters"] == f"{trainable_parameters(genlab.Run.load(tiny_vae).model):,}"
    for column, key in (("FID", "fid"), ("Precision", "precision"), ("Recall", "recall"), ("Bits/dim", "bits_per_dim"),
                        ("Copies", "copy_share")):
        assert vae[column] == metric_text(key, measured)
        assert float(vae[column]) == pytest.approx(measured[key], rel=1e-3, abs=1e-4)
        assert gan[column] == "—"  # never evaluated
    seconds = sum(json.loads(line)["seconds"] for line in (tiny_gan / "history.jsonl").read_text().splitlines())
    assert (gan["Family"], gan["Data"], gan["Epochs"]) == ("gan", "digits", "2")
    assert gan["Training time"] == f"{seconds:.1f} s"
    assert "note: the runs were trained on different data" in out and f"for {tiny_gan}" in out
    assert (tmp_path / "compare.html").is_file() and "wrote compare.html" in out  # the default: here


def test_the_page_has_the_table_the_curves_and_the_latest_grids(tiny_vae, tiny_gan, tmp_path):
    comparison = genlab.compare([tiny_vae, tiny_gan], out=tmp_path / "page" / "compare.html")
    text = comparison.out.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    header, rows = comparison.cells()
    for row in rows:
        assert "".join(f"<td{' class=number' if c >= 3 else ''}>{cell}</td>" for c, cell in enumerate(row)) in text
    sources = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # curves + 2 grids
    assert "vae (vae), epoch 3" in text and "gan (gan), epoch 2" in text
    assert "different data" in text


def test_runs_of_one_monitored_number_share_one_chart(tiny_vae, tiny_gan, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(tiny_vae, twin)
    runs = [load_run(tiny_vae), load_run(twin)]
    comparison = genlab.compare(runs, out=None)
    assert comparison.out is None and not any("different data" in note for note in comparison.notes)
    panels = curve_panels(runs, comparison.rows)
    assert [p.title for p in panels] == ["test_loss", "FID (during training)"]
    assert [name for name, _, _ in panels[0].series] == [str(tiny_vae), str(twin)]
    mixed = [load_run(tiny_vae), load_run(tiny_gan)]
    panels = curve_panels(mixed, genlab.compare(mixed, out=None).rows)
    assert [p.title for p in panels] == [f"{tiny_vae}: Loss", f"{tiny_gan}: Loss", "FID (during training)"]
    assert [name for name, _, _ in panels[2].series] == [str(tiny_vae)]  # the GAN's training recorded none


def test_metrics_measured_differently_are_flagged(tiny_vae, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_vae, other)
    document = json.loads((other / "metrics.json").read_text())
    document["counts"]["samples"] = 1000
    document["source"]["epochs"] = 2
    del document["metrics"]["bits_per_dim"]
    (other / "metrics.json").write_text(json.dumps(document))
    notes = " | ".join(genlab.compare([tiny_vae, other], out=None).notes)
    assert f"different sample counts ({tiny_vae}: 100; {other}: 1000)" in notes
    assert f"{other}'s metrics are from epoch 2 of its 3" in notes
    assert f"{other}: no bits/dim, measure it with `genlab eval {other} --metrics nll`" in notes


def test_bad_input_is_one_line_and_writes_no_page(tiny_vae, tmp_path, capsys):
    out = tmp_path / "compare.html"
    for argv, message in ((["compare", str(tiny_vae)], "give two or more run directories"),
                          (["compare", str(tiny_vae), str(tmp_path)], "is not a genlab run"),
                          (["compare", str(tiny_vae), str(tmp_path / "nowhere")], "does not exist")):
        assert main([*argv, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.err.count("\n") == 1 and captured.out == ""
        assert not out.exists()
