"""edgevit.report on a real run: `edgevit compress` of the shipped quickstart recipe on the tiny model with small
limits, then report.md is read back as a user reads it and every number is checked against the stage records
(`<run>/<id>/record.json`, documented in the README) and report.json."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 40
OVERRIDES = [f"data.limit={LIMIT}", "model.name=fmnist-vit-tiny", "stages.1.parity_samples=16",
             "stages.3.batch=[1,2]", "stages.3.duration_s=0.1", "stages.3.warmup_s=0.05", "stages.3.min_runs=3",
             "targets=[epyc-zen4-2core]", "stages.4.title=tiny report"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fmnist_test_small):
    out = tmp_path_factory.mktemp("report") / "run"
    cmd = [sys.executable, "-m", "edgevit", "-q", "compress", str(ROOT / "examples/recipes/quickstart.yaml"),
           "--out", str(out)]
    for o in OVERRIDES:
        cmd += ["--set", o]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                       env=dict(os.environ, EDGEVIT_PROGRESS="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _tables(md: str) -> dict[str, list[dict[str, str]]]:
    """report.md's tables by section heading: one {column header: cell text} per row."""
    out = {}
    for block in md.split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if ln.startswith("|")]
        if len(lines) < 2:
            continue
        cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]] for ln in lines]
        assert len({len(row) for row in cells}) == 1, f"table under '{heading}' has rows of different widths: {lines}"
        out[heading.strip()] = [dict(zip(cells[0], row)) for row in cells[2:]]
    return out


def _num(cell: str) -> float | None:
    return None if cell in ("—", "", "None") else float(cell.replace(",", ""))


def _same(cell: str, value, rel: float = 6e-3) -> bool:
    """A table cell (3–4 significant digits, thousands separators) shows ``value``."""
    shown = _num(cell)
    if value is None or shown is None:
        return shown is None and value is None
    return math.isclose(shown, float(value), rel_tol=rel, abs_tol=1e-12)


def _records(run_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("[0-9][0-9]_*/record.json"))}


def test_report_files_and_every_stage_listed(run_dir):
    records = _records(run_dir)
    assert list(records) == ["00_load", "01_eval", "02_export_onnx", "03_eval", "04_profile", "05_report"]
    for name in ("report.md", "report.json", "report.html"):
        assert (run_dir / name).stat().st_size > 0
        assert (run_dir / "05_report" / name).read_text() == (run_dir / name).read_text()  # the stage's copy
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# tiny report\n")  # the report stage's title from the recipe
    assert f"Model `fmnist-vit-tiny`, data `fashion-mnist` (first {LIMIT} samples)" in md
    stages = _tables(md)["Stages"]
    # every stage that ran before the report, in order, with its kind of artefact and its time
    assert [row["step"] for row in stages] == ["00_load", "01_eval", "02_export_onnx", "03_eval", "04_profile"]
    for row in stages:
        rec = records[row["step"]]
        assert row["stage"] == rec["stage"] and row["artefact"] == rec["artifact"]["kind"]
        assert _same(row["seconds"], rec["seconds"])
    doc = json.loads((run_dir / "report.json").read_text())
    assert [s["id"] for s in doc["stages"]] == list(records)[:-1]
    assert doc["title"] == "tiny report" and doc["recipe"]["data"]["limit"] == LIMIT
    html = (run_dir / "report.html").read_text()
    for heading in ("Stages", "Accuracy", "Exports", "Latency (measured)", "Predicted latency"):
        assert f"<h2>{heading}" in html, heading


def test_accuracy_table_equals_the_eval_records(run_dir):
    records = _records(run_dir)
    rows = _tables((run_dir / "report.md").read_text())["Accuracy"]
    assert [(r["stage"], r["runtime"]) for r in rows] == [("01_eval", "torch"), ("03_eval", "onnxruntime")]
    for row in rows:
        m = records[row["stage"]]["metrics"]
        assert int(row["n"]) == m["n"] == LIMIT
        assert _same(row["top-1"], m["top1"]) and _same(row["top-5"], m["top5"])
        assert row["artefact"] == records[row["stage"]]["artifact"]["kind"]


def test_export_table_equals_the_export_record(run_dir):
    rec = _records(run_dir)["02_export_onnx"]
    m = rec["metrics"]
    (row,) = _tables((run_dir / "report.md").read_text())["Exports (parity vs the torch source on real inputs)"]
    assert row["stage"] == "02_export_onnx" and row["file"] == "model.onnx" == Path(rec["artifact"]["path"]).name
    assert int(row["n"]) == m["n"] == 16
    assert int(row["bytes"].replace(",", "")) == m["file_size"] == (run_dir / "02_export_onnx/model.onnx").stat().st_size
    assert _same(row["max |Δ|"], m["max_abs_diff"]) and m["max_abs_diff"] < 1e-3
    assert _same(row["cosine"], m["cosine"]) and _same(row["top-1 agreement"], m["top1_agreement"])


def test_latency_table_equals_the_profile_record(run_dir):
    lat = _records(run_dir)["04_profile"]["metrics"]["latency"]
    md = (run_dir / "report.md").read_text()
    rows = _tables(md)["Latency (measured)"]
    assert [(r["runtime"], int(r["batch"])) for r in rows] == [(x["runtime"], x["batch"]) for x in lat]
    assert {(r["runtime"], int(r["batch"])) for r in rows} == {("torch", 1), ("torch", 2), ("onnxruntime", 1),
                                                               ("onnxruntime", 2)}
    cols = {"median ms": "median_ms", "p90 ms": "p90_ms", "p99 ms": "p99_ms", "mean ms": "mean_ms",
            "img/s": "throughput"}
    for row, x in zip(rows, lat):
        assert row["stage"] == "04_profile" and int(row["runs"]) == x["runs"] >= 3
        for header, key in cols.items():
            assert _same(row[header], x[key]), (header, row[header], x[key])
        assert x["median_ms"] <= x["p90_ms"] <= x["p99_ms"]
    # the machine line under the table: CPU model and usable cores from the same record's stamp
    stamp = lat[0]["system"]
    line = next(ln for ln in md.splitlines() if ln.startswith("Measured on "))
    assert line.startswith(f"Measured on {stamp['cpu']['model']} ({stamp['cpu']['affinity_cores']} usable cores)")
    assert f"onnxruntime {stamp['versions']['onnxruntime']}" in line


def test_prediction_table_equals_the_profile_record(run_dir):
    metrics = _records(run_dir)["04_profile"]["metrics"]
    preds = metrics["predictions"]
    md = (run_dir / "report.md").read_text()
    heading = next(h for h in _tables(md) if h.startswith("Predicted latency"))
    rows = _tables(md)[heading]
    # the recipe's target is a prediction for another machine; the detected host is named by its CPU
    host_labels = {p["target_label"] for p in preds if p["target"] == "host"}
    assert len(host_labels) == 1
    assert len(rows) == len(preds) > 0 and {r["target"] for r in rows} == {"epyc-zen4-2core", *host_labels}
    assert all(p["target"] == "host" for p in preds if p.get("measured_ms") is not None)
    for row, p in zip(rows, preds):
        assert (row["mode"], row["dtype"], row["bound"]) == (p["mode"], p["dtype"], p["bound"])
        assert _same(row["predicted ms"], p["latency_ms"])
        assert _same(row["measured ms"], p.get("measured_ms")) and _same(row["error %"], p.get("error_pct"))
    # this machine's profile is compared with the measured batch-1 onnxruntime median where both exist
    measured = [p for p in preds if p.get("measured_ms") is not None]
    onnx_b1 = next(x for x in metrics["latency"] if x["runtime"] == "onnxruntime" and x["batch"] == 1)
    for p in measured:
        assert p["measured_ms"] == pytest.approx(onnx_b1["median_ms"])
        assert p["error_pct"] == pytest.approx(100 * (p["latency_ms"] - p["measured_ms"]) / p["measured_ms"], abs=0.01)
    assert re.search(r"predictions are floors", md)
