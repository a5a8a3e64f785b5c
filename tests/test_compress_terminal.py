"""The terminal of `edgevit compress`: one display, one line per finished stage, a summary table, quiet third-party
loggers (their output goes to the run's compress.log), `--json` for machines, and library bars routed into the
display (issue: compress end to end, part 3)."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

RECIPE = """version: 1
name: terminal
model: {name: fmnist-vit}
data: {name: fashion-mnist, limit: 40, batch_size: 20}
stages:
  - stage: eval
  - stage: report
"""


def test_compress_prints_one_line_per_stage_a_summary_and_json(tmp_path, teacher_available, fmnist_test_small):
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "edgevit", "compress", str(recipe), "--out", str(out), "--json",
                        str(tmp_path / "new" / "s.json")], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("[1/3] done 00_load") and "1.69 M parameters" in lines[0]
    assert lines[1].startswith("[2/3] done 01_eval") and "top-1" in lines[1] and "(n=40)" in lines[1]
    assert lines[2].startswith("[3/3] done 02_report")
    assert any("edgevit compress terminal" in ln for ln in lines)  # the summary table's title
    assert lines[-1].startswith("run finished:")
    # no log lines, warnings or third-party chatter on the terminal without -v
    assert "INFO" not in r.stderr and "onnx_ir" not in r.stderr and "Warning" not in r.stderr, r.stderr
    log_text = (out / "compress.log").read_text()
    assert "01_eval: running" in log_text  # edgevit's INFO lines are in the run's log
    summary = json.loads((tmp_path / "new" / "s.json").read_text())  # its folder is created
    assert [s["id"] for s in summary["stages"]] == ["00_load", "01_eval", "02_report"]
    ev = json.loads((out / "01_eval" / "record.json").read_text())
    assert summary["stages"][1]["metrics"]["top1"] == ev["metrics"]["top1"]

    # --json - : stdout is the JSON alone; resumed stages are listed as skipped
    r = subprocess.run([sys.executable, "-m", "edgevit", "compress", str(recipe), "--out", str(out), "--resume",
                        "--json", "-"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    stages = json.loads(r.stdout)["stages"]
    assert stages[1]["id"] == "01_eval" and stages[1]["status"] == "skipped"
    assert "skip 01_eval" in r.stderr


def test_quiet_filter_keeps_edgevit_and_third_party_errors_only():
    from edgevit.cli import _QuietThirdParty

    f = _QuietThirdParty()

    def rec(name, level):
        return logging.LogRecord(name, level, __file__, 1, "m", None, None)

    assert f.filter(rec("edgevit.pipeline", logging.INFO))
    assert f.filter(rec("edgevit", logging.WARNING))
    assert not f.filter(rec("onnx_ir.passes.common", logging.INFO))
    assert not f.filter(rec("py.warnings", logging.WARNING))
    assert not f.filter(rec("nncf", logging.WARNING))
    assert f.filter(rec("nncf", logging.ERROR))


class _Recorder:
    """A display that records the bars the library opens (the interface `edgevit compress` implements)."""

    def __init__(self):
        self.bars = []

    def bar(self, *, total, desc, unit="it"):
        rec = {"total": total, "desc": desc, "unit": unit, "done": 0, "closed": False}
        self.bars.append(rec)

        class Handle:
            def update(self, n=1):
                rec["done"] += n

            def set_postfix_str(self, s="", refresh=True):
                rec["postfix"] = s

            def close(self):
                rec["closed"] = True

        return Handle()


def test_library_bars_go_to_the_installed_display(fmnist_test_small, tiny_model):
    """evaluate() and the latency loop draw their bars in the run display, with their totals, and close them."""
    from edgevit.artifact import Artifact
    from edgevit.evaluate import evaluate
    from edgevit.profiling.latency import profile_runtime
    from edgevit.progress import use_display
    from edgevit.runtimes import load_runtime

    art = Artifact(kind="torch", spec=tiny_model.edgevit_spec, model=tiny_model, source="tiny")
    rec = _Recorder()
    with use_display(rec), load_runtime("torch", art) as rt:
        evaluate(rt, fmnist_test_small, batch_size=16)
        profile_runtime(rt, batch_sizes=(1,), warmup_s=0.0, duration_s=0.05, min_runs=3, progress=True,
                        inputs=np.zeros((1, *tiny_model.edgevit_spec.input_size), np.float32))
    ev = next(b for b in rec.bars if b["desc"].startswith("eval"))
    assert ev["total"] == 4 and ev["done"] == 4 and ev["closed"]
    lat = next(b for b in rec.bars if b["unit"] == "run")
    assert lat["done"] >= 3 and lat["closed"]


def test_summary_table_keeps_bracketed_runtime_names():
    """'cascade[openvino]' in a stage result is data: rich must not read '[openvino]' as a markup tag."""
    from rich.console import Console

    from edgevit.cli.display import RunDisplay

    d = RunDisplay(live=False, console=Console(width=200, record=True))
    d.rows.append({"id": "12_eval", "status": "done", "seconds": 1.0,
                   "result": "05_early_exit/cascade[onnxruntime] 90.94%; 11_export_tvm/cascade[tvm] 90.94%"})
    d.console.print(d.summary("run"))
    text = d.console.export_text()
    assert "cascade[onnxruntime] 90.94%" in text and "cascade[tvm] 90.94%" in text
