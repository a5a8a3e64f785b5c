"""The public Python API (``edgevit.export/quantize/distill/early_exit/profile``): typed results, models and data
positional, options keyword-only, and ``import edgevit`` stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import edgevit
from edgevit.errors import ConfigError, RegistryError


def test_import_is_light_and_api_is_listed():
    code = ("import sys, edgevit; f = edgevit.export; assert callable(f); "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'timm') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert {"export", "quantize", "distill", "early_exit", "profile"} <= set(edgevit.__all__)


@pytest.mark.parametrize("name", ["export", "quantize", "distill", "early_exit", "profile"])
def test_signatures_keyword_only_options(name):
    params = list(inspect.signature(getattr(edgevit, name)).parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == {"export": ["model", "format"], "quantize": ["model", "calib"], "distill": ["student"],
                          "early_exit": ["model", "data"], "profile": ["model"]}[name]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params if p.name not in positional)


def test_export_then_profile_typed(tmp_path, tiny_model, real_batch):
    from edgevit.results import ExportResult, ParityRecord

    res = edgevit.export(tiny_model, "onnx", out=tmp_path / "m.onnx", parity_images=real_batch)
    assert isinstance(res, ExportResult) and isinstance(res.parity, ParityRecord)
    assert res.artifact.kind == "onnx" and res.artifact.path.exists()
    assert res.parity.n == len(real_batch) and res.parity.top1_agreement == 1.0 and res.parity.max_abs_diff < 1e-3
    assert res.to_dict()["max_abs_diff"] == res.parity.max_abs_diff

    prof = edgevit.profile(res.artifact, runtime="onnxruntime",
                           batch_sizes=(1, 4), inputs=real_batch, runs=12, warmup_s=0.05)
    assert [(r.runtime, r.batch) for r in prof.rows] == [("onnxruntime", 1), ("onnxruntime", 4)]
    for r in prof.rows:
        assert r.runs == 12 and 0 < r.min_ms <= r.median_ms <= r.p90_ms <= r.p99_ms
        assert r.throughput == pytest.approx(r.batch * 1000 / r.median_ms, rel=1e-6)
    d = prof.to_dict()["results"][0]
    assert {"median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "runs", "throughput", "batch", "runtime"} <= set(d)
    assert d["input_source"] == "provided"
    for r in prof.rows:  # every measurement carries its stability verdict, in the row and its JSON
        assert r.verdict in ("stable", "noisy", "contended") and r.stability["message"].startswith(r.verdict)
    assert d["stability"]["verdict"] == prof.rows[0].verdict and d["memory"]["peak_rss_mb"] > 0


def test_profile_a_torch_model_by_object(tiny_model, real_batch):
    prof = edgevit.profile(tiny_model, batch_sizes=(2,), inputs=real_batch, runs=10, warmup_s=0.05)
    assert [(r.runtime, r.batch, r.runs) for r in prof.rows] == [("torch", 2, 10)]


def test_unknown_format_and_bad_override(tiny_model, tmp_path):
    with pytest.raises(RegistryError, match="unknown exporter 'onnxx'. Allowed: .*onnx"):
        edgevit.export(tiny_model, "onnxx", out=tmp_path)
    with pytest.raises(ConfigError, match="budgett"):
        edgevit.quantize(tiny_model, None, out_dir=tmp_path, budgett=1.0)


def test_early_exit_and_distill_typed(tmp_path, tiny_model, fmnist_test_small):
    ee = edgevit.early_exit(tiny_model, fmnist_test_small, stage1_steps=2, stage2_steps=2, batch_size=16)
    assert type(ee).__name__ == "EarlyExitResult" and ee.model.num_exits >= 1
    assert {"stage1", "stage2"} <= set(ee.record)

    from edgevit.data import load_dataset

    train = load_dataset("fashion-mnist", "train", limit=64)
    ds = edgevit.distill("fmnist-vit-nano", out_dir=tmp_path / "s", teacher="fmnist-vit", dataset=train,
                         test_dataset=fmnist_test_small, mode="online", epochs=1, batch_size=32)
    assert ds.path.exists() and ds.record["epochs_done"] == 1 and ds.record["teacher_calls"] > 0
    assert ds.top1 is not None and 0.0 <= ds.top1 <= 1.0
    assert np.isfinite(ds.top1)


# small limits for the README's Python example (the README shows realistic sizes)
README_SUBS = [
    ('limit=256', 'limit=48'), ('limit=2000', 'limit=120'), ('limit=512', 'limit=64'),
    ('stage1_steps=20', 'stage1_steps=2'), ('stage2_steps=20', 'stage2_steps=2'),
    ('eval_data=test)', 'eval_data=test, budget=100, calib_samples=32, max_attempts=1, latency_s=0.05)'),
    ('batch_sizes=(1, 8), inputs=images)', 'batch_sizes=(1, 8), inputs=images, runs=10, warmup_s=0.05)'),
]


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The ```python block under "## Python API" in README.md runs as written (with smaller limits). Slow (about
    2 min on 2 cores: fmnist-vit quantised, distilled from, given exits); each function also has a fast test above."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    for old, new in README_SUBS:
        assert old in code, f"README example changed: {old!r} not found; update README_SUBS"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md#python-api", "exec"), ns)  # noqa: S102 - the project's own README example
    assert Path("runs/py/model.onnx").exists() and ns["onnx"].parity.top1_agreement >= 0.95
    assert [r.batch for r in ns["lat"].rows] == [1, 8]
    assert ns["q"].artifact.path.exists() and ns["s"].path.exists() and ns["ee"].model.num_exits >= 1


def test_every_api_result_has_to_dict():
    from edgevit.api import DistillResult, EarlyExitResult, ProfileResult
    from edgevit.methods.quantize.core import QuantizeResult
    from edgevit.results import ExportResult

    for cls in (DistillResult, EarlyExitResult, ProfileResult, QuantizeResult, ExportResult):
        assert callable(getattr(cls, "to_dict", None)), cls
