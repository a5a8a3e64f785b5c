"""edgevit.report on a real run: `edgevit compress` of a small recipe on the tiny model (eval → ONNX export → eval →
early exits → INT8 cascade → eval and profile of every artefact × runtime → report), then report.md, report.json
and report.html are read back as a user reads them and every number is checked against the stage records
(`<run>/<id>/record.json`, documented in the README) and the stages' side records (quantize.json,
calibration.json). report.html is rendered in headless Chromium (Debian package `chromium`): a screenshot shows the
figures drawn with real content, and the headline numbers in the rendered page equal those in report.json."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 40
FAST_PROFILE = {"duration_s": 0.1, "warmup_s": 0.05, "min_runs": 3}
RECIPE = {
    "version": 1, "name": "report-test", "model": {"name": "fmnist-vit-tiny"},
    "data": {"name": "fashion-mnist", "limit": LIMIT, "batch_size": LIMIT},
    "runtimes": ["onnxruntime"], "targets": ["epyc-zen4-2core"],
    "stages": [
        {"stage": "eval"},
        {"stage": "export_onnx", "parity_samples": 16},
        {"stage": "eval", "runtime": "onnxruntime"},
        {"stage": "early_exit", "steps": 1, "batch_size": 32, "train_limit": 64, "heldout_limit": 60,
         "latency_duration_s": 0.02, "exporter": "torchscript", "parity_samples": 16, "budget": 2.0},
        {"stage": "quantize", "backend": "onnxruntime", "calib_samples": 16, "max_attempts": 2, "smooth_quant": "off",
         "latency_s": 0.1, "runtimes": ["onnxruntime"], "sensitivity_samples": 8},  # every graph of the cascade
        {"stage": "eval", "artifacts": "all"},  # every artefact × every runtime that loads it
        {"stage": "profile", "artifacts": "all", "batch": [1, 2], **FAST_PROFILE},
        {"stage": "report", "title": "tiny report"},
    ]}
IDS = ["00_load", "01_eval", "02_export_onnx", "03_eval", "04_early_exit", "05_quantize", "06_eval", "07_profile",
       "08_report"]
PRODUCERS = {"00_load": ("torch", "torch"), "02_export_onnx": ("onnx", "onnxruntime"),
             "04_early_exit": ("cascade", "cascade[onnxruntime]"), "05_quantize": ("cascade", "cascade[onnxruntime]")}
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package "
                                    "`chromium`; scripts/bootstrap.sh installs it for `make test`)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fmnist_test_small):
    base = tmp_path_factory.mktemp("report")
    (base / "recipe.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    out = base / "run"
    cmd = [sys.executable, "-m", "edgevit", "-q", "compress", str(base / "recipe.yaml"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                       env=dict(os.environ, EDGEVIT_PROGRESS="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def doc(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def _tables(md: str) -> dict[str, list[dict[str, str]]]:
    """report.md's tables by section heading (## or ###): one {column header: cell text} per row."""
    out = {}
    for block in re.split(r"\n#{2,3} ", md)[1:]:
        heading, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if ln.startswith("|")]
        if len(lines) < 2:
            continue
        cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]] for ln in lines]
        assert len({len(row) for row in cells}) == 1, f"table under '{heading}' has rows of different widths: {lines}"
        out[heading.strip()] = [dict(zip(cells[0], row)) for row in cells[2:]]
    return out


def _num(cell: str) -> float | None:
    cell = re.sub(r"( ms|×|%| MiB| KiB| M)$", "", cell.strip())
    return None if cell in ("—", "", "None") else float(cell.replace(",", ""))


def _same(cell: str, value, rel: float = 6e-3) -> bool:
    """A table cell (3–4 significant digits, thousands separators, a unit) shows ``value``."""
    shown = _num(cell)
    if value is None or shown is None:
        return shown is None and value is None
    return math.isclose(shown, float(value), rel_tol=rel, abs_tol=1e-12)


def _records(run_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("[0-9][0-9]_*/record.json"))}


def _b1_mean(records: dict, aid: str) -> float:
    (row,) = [x for x in records["07_profile"]["metrics"]["latency"] if x["artifact_id"] == aid and x["batch"] == 1]
    return row["mean_ms"]


# ------------------------------------------------------------------------------------------------ files and tables


def test_report_files_and_every_stage_listed(run_dir, doc):
    records = _records(run_dir)
    assert list(records) == IDS
    for name in ("report.md", "report.json", "report.html"):
        assert (run_dir / name).stat().st_size > 0
        assert (run_dir / "08_report" / name).read_text() == (run_dir / name).read_text()  # the stage's copy
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# tiny report\n")  # the report stage's title from the recipe
    assert f"Model `fmnist-vit-tiny`, data `fashion-mnist` (first {LIMIT} samples)" in md
    stages = _tables(md)["Stages"]
    assert [row["step"] for row in stages] == IDS[:-1]  # every stage that ran before the report, in order
    for row in stages:
        rec = records[row["step"]]
        assert row["stage"] == rec["stage"] and row["artefact"] == rec["artifact"]["kind"]
        assert _same(row["seconds"], rec["seconds"])
    assert [s["id"] for s in doc["stages"]] == IDS[:-1]
    assert doc["title"] == "tiny report" and doc["recipe"]["data"]["limit"] == LIMIT
    # the figures of report.md are files next to it
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (run_dir / link).stat().st_size > 5000, link


def test_accuracy_table_equals_the_eval_records(run_dir):
    records = _records(run_dir)
    want = [("01_eval", records["01_eval"]["metrics"]), ("03_eval", records["03_eval"]["metrics"])]
    want += [("06_eval", row) for row in records["06_eval"]["metrics"]["rows"]]
    rows = [r for r in _tables((run_dir / "report.md").read_text())["Accuracy"] if r["stage"].endswith("_eval")]
    assert [(r["stage"], r["runtime"]) for r in rows] == [(s, m["runtime"]) for s, m in want]
    # the eval over every artefact covers each artefact the run made, on the runtime that loads it
    assert [(m["artifact_id"], m["runtime"]) for _, m in want[2:]] == [(k, rt) for k, (_, rt) in PRODUCERS.items()]
    for row, (_, m) in zip(rows, want):
        assert int(row["n"]) == m["n"] == LIMIT
        assert _same(row["top-1"], m["top1"]) and _same(row["top-5"], m["top5"])
        assert row["artefact"].endswith(f"({m['artifact_id']})") if "artifact_id" in m else True


def test_export_table_equals_the_export_records(run_dir):
    records = _records(run_dir)
    rows = {r["stage"]: r for r in _tables((run_dir / "report.md").read_text())[
        "Exports (parity vs the torch source on real inputs)"]}
    rec = records["02_export_onnx"]
    m, row = rec["metrics"], rows["02_export_onnx"]
    assert row["file"] == "model.onnx" == Path(rec["artifact"]["path"]).name
    assert int(row["n"]) == m["n"] == 16 and row["parity"] == "passed"
    assert int(row["bytes"].replace(",", "")) == m["file_size"] == (run_dir / "02_export_onnx/model.onnx").stat().st_size
    assert _same(row["max |Δ|"], m["max_abs_diff"]) and m["max_abs_diff"] < 1e-3
    assert _same(row["cosine"], m["cosine"]) and _same(row["top-1 agreement"], m["top1_agreement"])
    assert set(rows) == {"02_export_onnx", "04_early_exit", "05_quantize"}  # every stage with a parity record


def test_latency_table_equals_the_profile_records(run_dir):
    records = _records(run_dir)
    lat = [("07_profile", x) for x in records["07_profile"]["metrics"]["latency"]]
    assert [(x["artifact_id"], x["runtime"], x["batch"]) for _, x in lat] == \
        [(k, rt, b) for k, (_, rt) in PRODUCERS.items() for b in (1, 2)]
    md = (run_dir / "report.md").read_text()
    rows = [r for r in _tables(md)["Latency (measured)"] if r["stage"].endswith("_profile")]
    assert [(r["stage"], r["runtime"], int(r["batch"])) for r in rows] == [(s, x["runtime"], x["batch"]) for s, x in lat]
    cols = {"median ms": "median_ms", "p90 ms": "p90_ms", "p99 ms": "p99_ms", "mean ms": "mean_ms", "img/s": "throughput"}
    for row, (_, x) in zip(rows, lat):
        assert int(row["runs"]) == x["runs"] >= 3
        for header, key in cols.items():
            assert _same(row[header], x[key]), (header, row[header], x[key])
    stamp = lat[0][1]["system"]
    line = next(ln for ln in md.splitlines() if ln.startswith("Measured on "))
    assert line.startswith(f"Measured on {stamp['cpu']['model']} ({stamp['cpu']['affinity_cores']} usable cores)")
    assert f"onnxruntime {stamp['versions']['onnxruntime']}" in line


def test_prediction_table_equals_the_profile_record(run_dir):
    metrics = _records(run_dir)["07_profile"]["metrics"]
    preds = metrics["predictions"]
    md = (run_dir / "report.md").read_text()
    heading = next(h for h in _tables(md) if h.startswith("Predicted latency"))
    rows = _tables(md)[heading]
    host_labels = {p["target_label"] for p in preds if p["target"] == "host"}
    assert len(host_labels) == 1
    assert len(rows) == len(preds) > 0 and {r["target"] for r in rows} == {"epyc-zen4-2core", *host_labels}
    for row, p in zip(rows, preds):
        assert (row["mode"], row["dtype"], row["bound"]) == (p["mode"], p["dtype"], p["bound"])
        assert _same(row["predicted ms"], p["latency_ms"])
        assert _same(row["measured ms"], p.get("measured_ms")) and _same(row["error %"], p.get("error_pct"))
    onnx_b1 = next(x for x in metrics["latency"] if x["runtime"] == "onnxruntime" and x["batch"] == 1)
    for p in metrics["predictions"]:
        if p.get("measured_ms") is not None:
            assert p["measured_ms"] == pytest.approx(onnx_b1["median_ms"])
    assert re.search(r"predictions are floors", md)


# ------------------------------------------------------------------------------------------------ what each step bought


def test_lineage_and_deltas_equal_the_records(run_dir, doc):
    records = _records(run_dir)
    nodes = {n["id"]: n for n in doc["artifacts"]}
    # one artefact per producing stage; each stage's parent is what it consumed
    assert {k: n["parent"] for k, n in nodes.items()} == {"00_load": None, "02_export_onnx": "00_load",
                                                         "04_early_exit": "00_load", "05_quantize": "04_early_exit"}
    assert {k: n["kind"] for k, n in nodes.items()} == {k: kind for k, (kind, _) in PRODUCERS.items()}
    # each artefact's top-1 and latency on its runtime: the rows of the eval and profile over every artefact
    top1 = {r["artifact_id"]: r["top1"] for r in records["06_eval"]["metrics"]["rows"]}
    best = {k: _b1_mean(records, k) for k in PRODUCERS}
    size = {"00_load": (run_dir / "00_load/model.safetensors").stat().st_size,
            "02_export_onnx": (run_dir / "02_export_onnx/model.onnx").stat().st_size}
    # a cascade's size is its manifest and every graph it lists
    for k in ("04_early_exit", "05_quantize"):
        mpath = run_dir / k / records[k]["artifact"]["path"]
        manifest = json.loads(mpath.read_text())
        files = ["manifest.json"] + [e["file"] for e in manifest["segments"] + manifest["exits"]]
        size[k] = sum((mpath.parent / f).stat().st_size for f in files)
    for k, n in nodes.items():
        assert n["best_runtime"] == PRODUCERS[k][1]
        assert analysis_top1(n) == top1[k]
        assert n["latency"][n["best_runtime"]]["mean_ms"] == best[k]
        if k in size:
            assert n["bytes"] == size[k]
        if n["parent"]:
            p = n["parent"]
            assert n["vs_parent"]["top1_pt"] == pytest.approx((top1[k] - top1[p]) * 100)
            assert n["vs_parent"]["best"]["speedup"] == pytest.approx(best[p] / best[k])
            assert n["vs_source"]["best"]["speedup"] == pytest.approx(best["00_load"] / best[k])
    # the INT8 cascade vs its float parent cascade on the same runtime
    rt = "cascade[onnxruntime]"
    assert nodes["05_quantize"]["vs_parent"]["latency"][rt]["speedup"] == pytest.approx(
        best["04_early_exit"] / best["05_quantize"])
    assert nodes["05_quantize"]["vs_parent"]["bytes_ratio"] == pytest.approx(size["05_quantize"] / size["04_early_exit"])
    # the table shows the same numbers
    rows = {r["step"]: r for r in _tables((run_dir / "report.md").read_text())["What each step bought"]}
    assert set(rows) == set(nodes)
    for k, n in nodes.items():
        assert rows[k]["parent"] == (n["parent"] or "—")
        assert _same(rows[k]["top-1 %"], 100 * top1[k])
        assert rows[k]["best runtime: latency"].startswith(n["best_runtime"] + ": ")
        assert _same(rows[k]["best runtime: latency"].split(": ")[1], best[k])
        if n["parent"]:
            assert _same(rows[k]["Δ top-1 vs parent (pt)"], n["vs_parent"]["top1_pt"], rel=1e-2)
            assert _same(rows[k]["speed-up vs parent"], n["vs_parent"]["best"]["speedup"])


def test_headline_and_pareto_equal_the_records(doc):
    nodes = {n["id"]: n for n in doc["artifacts"]}
    h = doc["headline"]
    # the source model is the load step and its export; the final one the cascade
    src = min((("00_load", "torch"), ("02_export_onnx", "onnxruntime")),
              key=lambda t: nodes[t[0]]["latency"][t[1]]["mean_ms"])
    assert (h["source"]["node"], h["source"]["runtime"]) == src
    assert (h["final"]["node"], h["final"]["runtime"]) == ("05_quantize", "cascade[onnxruntime]")
    s_ms, f_ms = nodes[src[0]]["latency"][src[1]]["mean_ms"], nodes["05_quantize"]["latency"][h["final"]["runtime"]][
        "mean_ms"]
    assert h["source"]["latency_ms"] == s_ms and h["final"]["latency_ms"] == f_ms
    assert h["speedup"] == pytest.approx(s_ms / f_ms)
    assert h["top1_delta_pt"] == pytest.approx((h["final"]["top1"] - h["source"]["top1"]) * 100)
    pts = doc["points"]
    assert {(p["node"], p["runtime"]) for p in pts} == {(k, rt) for k, n in nodes.items() for rt in n["latency"]}
    for p in pts:  # on the front exactly when no other point is as fast and as accurate, and better in one
        dominated = any(q["latency_ms"] <= p["latency_ms"] and q["top1"] >= p["top1"] and
                        (q["latency_ms"] < p["latency_ms"] or q["top1"] > p["top1"]) for q in pts if q is not p)
        assert p["pareto"] is (not dominated)
    assert any(p["pareto"] for p in pts)


def test_rejections_come_from_the_quantize_and_early_exit_records(run_dir, doc):
    q = json.loads((run_dir / "05_quantize/quantize.json").read_text())
    gate = q["speed_gate"]
    rej = [r for r in doc["rejections"] if r["stage"] == "05_quantize"]
    not_kept = [c for c in gate["candidates"] if c["precision"] != gate["selected"]]
    assert len(not_kept) >= 1
    for c in not_kept:
        (r,) = [r for r in rej if r["candidate"] == f"{c['precision']} on {gate['runtime']}"]
        assert r["gate"] == ("speed" if c.get("offered") else "runtime")
        assert r.get("latency_ms") == c.get("latency_ms")
    failed = [a for a in q["attempts"] if not a["passed"]]
    assert len([r for r in rej if r["candidate"].startswith("INT8 attempt")]) == len(failed)
    ee = _records(run_dir)["04_early_exit"]["metrics"]
    off = [k for k, t in enumerate(ee["thresholds"]) if t == 1.0]  # confidence: 1.0 never fires
    assert [r["candidate"].split(" (")[0] for r in doc["rejections"] if r["stage"] == "04_early_exit"] == \
        [f"exit {k + 1}" for k in off]
    rows = _tables((run_dir / "report.md").read_text()).get("Rejected candidates", [])
    assert [(r["stage"], r["candidate"], r["rejected by"]) for r in rows] == \
        [(r["stage"], r["candidate"], r["gate"]) for r in doc["rejections"]]


def test_cascade_exits_equal_the_calibration(run_dir, doc):
    cal = json.loads((run_dir / "04_early_exit/calibration.json").read_text())
    # the early-exit cascade and the quantize stage's cascade (same thresholds, found through its parent): one
    # section when the speed gate kept the FP32 cascade (a copy), two when it kept INT8
    sel = _records(run_dir)["05_quantize"]["metrics"]["selected"]
    assert [c["nodes"] for c in doc["cascades"]] == ([["04_early_exit", "05_quantize"]] if sel == "fp32" else
                                                      [["04_early_exit"], ["05_quantize"]])
    c = doc["cascades"][0]
    assert len(c["exits"]) == len(cal["thresholds"]) + 1
    assert [e["share_calibration"] for e in c["exits"]] == cal["share"]
    # leaving at exit k costs the segments up to k and every head that runs up to k (a never-firing head is skipped)
    active = [t != 1.0 for t in cal["thresholds"]]
    want = [sum(cal["segment_ms"][:k + 1]) + sum(h for h, a in zip(cal["head_ms"][:k + 1], active) if a)
            for k in range(len(active))] + [sum(cal["segment_ms"]) + sum(h for h, a in zip(cal["head_ms"], active) if a)]
    assert [e["latency_ms"] for e in c["exits"]] == pytest.approx(want)
    mix = next(x["exit_mix"] for x in _records(run_dir)["07_profile"]["metrics"]["latency"] if x.get("exit_mix")
               and x["batch"] == 1)
    src = "04_early_exit cascade[onnxruntime] (profile 07_profile)"
    assert src in c["measured_sources"]
    assert [e["share_measured"][src] for e in c["exits"]] == mix["shares"]
    heading = "Early exits of 04_early_exit" + (" and its copies (05_quantize)" if sel == "fp32" else "")
    rows = _tables((run_dir / "report.md").read_text())[heading]
    assert [r["exit"] for r in rows] == [e["label"] for e in c["exits"]]
    for r, e in zip(rows, c["exits"]):
        assert _same(r["latency to leave (ms)"], e["latency_ms"])
        assert _same(r["share (calibration)"], 100 * e["share_calibration"], rel=2e-2) or e["share_calibration"] == 0


def test_environment_stamp(run_dir, doc):
    from edgevit.profiling.host import detect_cpu

    env = doc["environment"]
    assert env["host"]["label"] == detect_cpu().label
    records = _records(run_dir)
    assert env["versions"] == records["00_load"]["versions"] and env["versions_changed"] == {}
    rows = {r["what"]: r["value"] for r in _tables((run_dir / "report.md").read_text())["Environment"]}
    assert rows["host (detected when the report was written)"] == env["host"]["label"]
    assert f"torch {env['versions']['torch']}" in rows["libraries"]


# ------------------------------------------------------------------------------------------------ the page in a browser


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    r = subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


class _Page(HTMLParser):
    """The rendered DOM: headline cells (data-key → (data-value, text)), images, scripts and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, tuple[str, str]] = {}
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.external.append("<script>")
        for name in ("src", "href"):
            if a.get(name) and not a[name].startswith("data:"):
                self.external.append(a[name])
        if tag == "img":
            self.images.append(a)
        if a.get("data-key"):
            self._key = a["data-key"]
            self.cells[self._key] = (a["data-value"], "")

    def handle_data(self, data):
        if self._key:
            v, t = self.cells[self._key]
            self.cells[self._key] = (v, t + data)

    def handle_endtag(self, tag):
        self._key = None


def analysis_top1(node: dict) -> float:
    from edgevit.report.analysis import top1_on

    return top1_on(node, node["best_runtime"])["top1"]


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def _lookup(doc: dict, key: str):
    for part in key.split("."):
        doc = doc[part]
    return doc


@needs_chromium
def test_headline_in_the_rendered_page_equals_report_json(run_dir, doc, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", (run_dir / "report.html").as_uri()).stdout.decode()
    page = _Page()
    page.feed(dom)
    assert page.external == []  # self-contained: no script, no file or network reference
    keys = ["headline.source.top1", "headline.final.top1", "headline.top1_delta_pt", "headline.source.latency_ms",
            "headline.final.latency_ms", "headline.speedup"]
    assert sorted(page.cells) == sorted(keys)
    for key in keys:
        value, text = page.cells[key]
        want = _lookup(doc, key)
        assert json.loads(value) == want, key
        shown = float(re.sub(r"[^0-9.+-]", "", text))
        scale = 100 if key.endswith("top1") else 1  # top-1 shown in percent
        assert shown == pytest.approx(scale * want, rel=5e-3, abs=5e-3), (key, text, want)


@needs_chromium
def test_plots_render_with_real_content(run_dir, tmp_path):
    """Every figure is an inline PNG with real content, and the browser draws it: a screenshot of the page against
    one of the same page with each figure swapped for a blank image of the same size differs where the figures are,
    and that region of the screenshot is a varied picture, not a blank or a broken-image icon."""
    from PIL import Image

    html = (run_dir / "report.html").read_text()
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # accuracy × latency, latency, and the exits of each distinct cascade (the early exit; its INT8 copy unless the
    # speed gate kept the FP32 cascade, whose copy shares the early exit's section)
    assert len(srcs) == 2 + len(json.loads((run_dir / "report.json").read_text())["cascades"])
    for s in srcs:
        img = _decode(base64.b64decode(s))
        assert img.shape[0] >= 300 and img.shape[1] >= 500
        assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 100  # lines, text, markers
    blank = html
    for s in srcs:
        w, h = Image.open(io.BytesIO(base64.b64decode(s))).size
        buf = io.BytesIO()
        Image.new("RGB", (w, h), "white").save(buf, format="PNG")
        blank = blank.replace(s, base64.b64encode(buf.getvalue()).decode())
    (tmp_path / "blank.html").write_text(blank)
    size = "--window-size=1280,9000"  # the page is about 6,000 px tall: the whole of it is in the screenshot
    _chromium(tmp_path, f"--screenshot={tmp_path / 'page.png'}", size, (run_dir / "report.html").as_uri())
    _chromium(tmp_path, f"--screenshot={tmp_path / 'blank.png'}", size, (tmp_path / "blank.html").as_uri())
    page, ref = _decode((tmp_path / "page.png").read_bytes()), _decode((tmp_path / "blank.png").read_bytes())
    assert page.shape == ref.shape
    assert np.flatnonzero((page < 245).any(axis=(1, 2))).max() < page.shape[0] - 100, "page taller than the window"
    diff = np.abs(page - ref).sum(axis=2) > 30
    rows = np.flatnonzero(diff.any(axis=1))
    assert diff.sum() > 50_000, "the figures were not drawn"  # four plots of ~700×400 px of lines and text
    # the region that changed is the figures: a varied picture in the real screenshot, white in the blank one
    region = page[rows.min():rows.max() + 1]
    assert region.std() > 20 and len(np.unique(region.reshape(-1, 3), axis=0)) > 200
    assert ref[diff].mean() > 250  # where they differ, the blank page is white: the layout did not move
