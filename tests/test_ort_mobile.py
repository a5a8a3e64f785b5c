"""ONNX → ONNX Runtime .ort format (edgevit.formats.ort_mobile.export): conversion, reopening, parity, CLI, recipe stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgevit.errors import ConfigError


@pytest.fixture(scope="module")
def ort_fixed(tiny_onnx, tiny_model, tmp_path_factory, fmnist_test_small):
    from edgevit.formats.ort_mobile.export import export_ort_mobile

    onnx_path, _ = tiny_onnx
    out = tmp_path_factory.mktemp("ort")
    return export_ort_mobile(onnx_path, out, torch_model=tiny_model,
                             parity_images=fmnist_test_small.subset(range(32))).to_dict(), out


def test_conversion_writes_ort_config_and_spec(ort_fixed, tiny_onnx, tiny_model):
    from edgevit.runtimes import open_artifact

    rec, out = ort_fixed
    onnx_path, _ = tiny_onnx
    ort_path = out / f"{onnx_path.stem}.ort"
    assert rec["path"] == str(ort_path.resolve()) and ort_path.exists() and rec["file_size"] == ort_path.stat().st_size
    assert ort_path.read_bytes()[4:8] == b"ORTM"  # the flatbuffer file identifier of the ORT format
    config = out / f"{onnx_path.stem}.required_operators.config"
    assert rec["config_path"] == str(config.resolve()) and config.exists()
    ops = rec["required_operators"]
    assert "LayerNormalization" in ops["ai.onnx;17"] and "Softmax" in ops["ai.onnx;13"]
    # the spec travels in the .ort metadata and in the side file; open_artifact finds it
    assert rec["spec_in_metadata"] is True and (out / f"{onnx_path.stem}.ort.spec.json").exists()
    art = open_artifact(ort_path)
    assert art.kind == "ort" and art.spec == tiny_model.edgevit_spec and art.source == "fmnist-vit-tiny"
    json.dumps(rec)


def test_parity_recorded_against_onnx_and_torch(ort_fixed):
    rec, _ = ort_fixed
    assert rec["parity_reference"] == "torch" and rec["n"] == 32 and "fashion-mnist" in rec["parity_inputs"]
    for key in ("parity_vs_onnx", "parity_vs_torch"):
        p = rec[key]
        assert p["passed"] and p["n"] == 32 and p["max_abs_diff"] < 1e-4 and p["top1_agreement"] == 1.0
    assert rec["max_abs_diff"] == rec["parity_vs_torch"]["max_abs_diff"]


def test_ort_evaluates_like_onnx_on_real_images(ort_fixed, tiny_onnx, fmnist_test_small):
    """`edgevit eval --artifact X.ort` path: the .ort file through the onnxruntime runtime equals the ONNX file."""
    from edgevit.cli import default_runtime
    from edgevit.evaluate import evaluate
    from edgevit.runtimes import load_runtime, open_artifact

    rec, _ = ort_fixed
    ort_art = open_artifact(rec["path"])
    assert default_runtime(ort_art.kind) == "onnxruntime"
    rt_ort = load_runtime("onnxruntime", ort_art)
    rt_onnx = load_runtime("onnxruntime", tiny_onnx[0])
    from edgevit.data import preprocess

    x = preprocess(fmnist_test_small.images, ort_art.spec)
    np.testing.assert_allclose(rt_ort.run(x), rt_onnx.run(x), atol=1e-5)
    np.testing.assert_allclose(rt_ort.run(x[:1]), rt_onnx.run(x[:1]), atol=1e-5)  # dynamic batch kept
    a, b = evaluate(rt_ort, fmnist_test_small, batch_size=32), evaluate(rt_onnx, fmnist_test_small, batch_size=32)
    assert a["n"] == b["n"] == 64 and a["top1"] == b["top1"] and a["top5"] == b["top5"]


def test_runtime_optimization_style_and_type_reduction(tiny_onnx, tmp_path, real_batch):
    from edgevit.formats.ort_mobile.export import export_ort_mobile, read_operator_config

    onnx_path, _ = tiny_onnx
    rec = export_ort_mobile(onnx_path, tmp_path, optimization="runtime", enable_type_reduction=True,
                            target_platform="arm", parity_images=real_batch).to_dict()
    assert rec["path"].endswith(".with_runtime_opt.ort") and "enable_saved_runtime_optimizations" in rec["note"]
    assert rec["config_path"].endswith(".required_operators_and_types.with_runtime_opt.config")
    assert rec["parity_reference"] == "onnx" and rec["n"] == len(real_batch) and rec["max_abs_diff"] < 1e-4
    assert "MatMul" in read_operator_config(rec["config_path"])["ai.onnx;13"]


def test_bad_options_and_inputs(tiny_onnx, tmp_path):
    from edgevit.errors import ExportError
    from edgevit.formats.ort_mobile.export import export_ort_mobile

    onnx_path, _ = tiny_onnx
    with pytest.raises(ConfigError, match="fixed, runtime"):
        export_ort_mobile(onnx_path, tmp_path, optimization="extreme")
    with pytest.raises(ConfigError, match="'arm', 'amd64' or None"):
        export_ort_mobile(onnx_path, tmp_path, target_platform="riscv")
    with pytest.raises(ConfigError, match="must be a directory"):
        export_ort_mobile(onnx_path, tmp_path / "x.ort")
    with pytest.raises(ExportError, match="expected an .onnx file"):
        export_ort_mobile(tmp_path / "model.xml", tmp_path)


def test_cli_from_onnx_file_and_from_model(tiny_onnx, tmp_path, capsys):
    from edgevit.cli import main

    onnx_path, _ = tiny_onnx
    rc = main(["-q", "export", "ort-mobile", str(onnx_path), "--out", str(tmp_path / "a"), "--parity-samples", "8",
               "--json", str(tmp_path / "a.json")])
    assert rc == 0 and "top-1 agreement 100.0% on 8 real images vs onnx" in capsys.readouterr().out
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["n"] == 8 and rec["path"].endswith("fmnist-vit-tiny.ort")

    rc = main(["-q", "export", "ort-mobile", "--model", "fmnist-vit-tiny", "--out", str(tmp_path / "b"),
               "--parity-samples", "4", "--json", str(tmp_path / "b.json")])
    rec = json.loads((tmp_path / "b.json").read_text())
    assert rc == 0 and rec["parity_reference"] == "torch" and rec["onnx_export"]["n"] == 4
    assert (tmp_path / "b" / "fmnist-vit-tiny.onnx").exists() and (tmp_path / "b" / "fmnist-vit-tiny.ort").exists()

    rc = main(["export", "ort-mobile", "--out", str(tmp_path / "c")])
    assert rc == 2 and "either an ONNX file (positional) or --model" in capsys.readouterr().err


def test_stage_in_a_tiny_recipe(tmp_path, fmnist_test_small):
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {"name": "ort", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 32, "batch_size": 16},
           "stages": [{"stage": "export_onnx", "parity_samples": 8},
                      {"stage": "export_ort_mobile", "parity_samples": 8},
                      {"stage": "eval"}]}
    records = pipeline.run(from_raw(raw), tmp_path)
    assert [r["id"] for r in records] == ["00_load", "01_export_onnx", "02_export_ort_mobile", "03_eval"]
    ort_rec = records[2]
    assert ort_rec["artifact"]["kind"] == "ort" and ort_rec["artifact"]["path"] == "model.ort"
    assert (tmp_path / "02_export_ort_mobile" / "model.ort").exists()
    m = ort_rec["metrics"]
    assert m["path"] == "model.ort" and m["config_path"] == "model.required_operators.config"  # paths made relative
    assert m["parity_reference"] == "torch" and m["n"] == 8 and m["max_abs_diff"] < 1e-4
    assert records[3]["metrics"]["artifact"] == "ort" and records[3]["metrics"]["n"] == 32


def test_stage_without_onnx_says_add_export_onnx(tmp_path):
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {"name": "bad", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 8},
           "stages": [{"stage": "export_ort_mobile"}]}
    with pytest.raises(ConfigError, match="add `- stage: export_onnx` before `- stage: export_ort_mobile`"):
        pipeline.run(from_raw(raw), tmp_path)
    with pytest.raises(ConfigError, match="optimization"):
        from_raw({**raw, "stages": [{"stage": "export_ort_mobile", "optimization": "max"}]})
