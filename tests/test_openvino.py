"""OpenVINO IR export (edgevit.formats.openvino.export), the openvino runtime, its stage and CLI, on real Fashion-MNIST images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import ConfigError, InputSpecError, ParityError, RuntimeLoadError

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]')")

PARITY_N = 16


@pytest.fixture(scope="module")
def ir_fp32(tmp_path_factory, tiny_model, fmnist_test_small):
    """fmnist-vit-tiny → FP32 IR from torch (dynamic batch), parity on 16 real images: ``(xml path, record)``."""
    from edgevit.formats.openvino.export import export_openvino

    rec = export_openvino(tiny_model, tmp_path_factory.mktemp("ov32"), precision="fp32",
                          parity_images=fmnist_test_small.subset(range(PARITY_N))).to_dict()
    return Path(rec["path"]), rec


@pytest.fixture(scope="module")
def ir_fp16(tmp_path_factory, tiny_model, fmnist_test_small):
    from edgevit.formats.openvino.export import export_openvino

    rec = export_openvino(tiny_model, tmp_path_factory.mktemp("ov16") / "tiny16.xml", precision="fp16",
                          parity_images=fmnist_test_small.subset(range(PARITY_N))).to_dict()
    return Path(rec["path"]), rec


def _ov_runtime(path, **options):
    from edgevit.runtimes import load_runtime

    return load_runtime("openvino", path, **options)


def _torch_logits(model, x):
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------------------------------------- export


def test_fp32_export_from_torch_record(ir_fp32, tiny_model):
    path, rec = ir_fp32
    assert path.name == "fmnist-vit-tiny.xml" and path.with_suffix(".bin").exists()
    for key in ("path", "bin_path", "precision", "converted_from", "dynamic_batch", "file_size", "max_abs_diff",
                "cosine", "top1_agreement", "n", "parity", "parity_runtime", "input_spec", "versions", "time_s"):
        assert key in rec, key
    assert rec["precision"] == "fp32" and rec["converted_from"] == "torch" and rec["dynamic_batch"] is True
    assert rec["file_size"] == path.stat().st_size + path.with_suffix(".bin").stat().st_size
    assert rec["n"] == PARITY_N and "fashion-mnist" in rec["parity_inputs"] and rec["parity_reference"] == "torch"
    assert rec["max_abs_diff"] < 1e-4 and rec["cosine"] > 0.99999 and rec["top1_agreement"] == 1.0
    assert rec["parity"]["passed"]  # the tolerance scales with the real output magnitude (issue 16)
    assert rec["parity"]["tolerance"] == pytest.approx(1e-3 * rec["parity"]["reference_max_abs"])
    assert rec["parity_runtime"]["inference_precision"] == "f32"  # parity measures the export, not bf16 mode
    assert rec["versions"]["openvino"]
    json.dumps(rec)


def test_fp16_export_halves_weights_within_fp16_tolerance(ir_fp32, ir_fp16):
    (_, r32), (p16, r16) = ir_fp32, ir_fp16
    assert p16.name == "tiny16.xml" and r16["precision"] == "fp16"
    assert r16["bin_size"] < 0.6 * r32["bin_size"]
    from edgevit.formats.parity import default_tolerance

    assert r16["parity"]["tolerance"] == pytest.approx(default_tolerance("fp16", np.array([r16["parity"][
        "reference_max_abs"]])))
    assert 0 < r16["max_abs_diff"] < r16["parity"]["tolerance"] and r16["top1_agreement"] == 1.0
    assert r16["max_abs_diff"] > r32["max_abs_diff"]  # fp16 weights really were rounded


def test_ir_carries_input_spec_and_opens_as_artifact(ir_fp32, ir_fp16, tiny_model):
    from edgevit.runtimes import METADATA_READERS, open_artifact
    from edgevit.spec import InputSpec

    path, _ = ir_fp32
    model = ov.Core().read_model(str(path))
    assert InputSpec.from_dict(json.loads(model.get_rt_info(["edgevit", "input_spec"]).astype(str))) == \
        tiny_model.edgevit_spec
    assert model.get_rt_info(["edgevit", "preprocess", "mean"]).astype(str) == "0.286"
    assert model.get_rt_info(["edgevit", "precision"]).astype(str) == "fp32"
    assert [sorted(i.get_names()) for i in model.inputs] == [["input"]]
    assert [sorted(o.get_names()) for o in model.outputs] == [["logits"]]
    assert "openvino" in METADATA_READERS
    for p in (path, ir_fp16[0]):
        art = open_artifact(p)
        assert art.kind == "openvino" and art.spec == tiny_model.edgevit_spec and art.source == "fmnist-vit-tiny"
        assert art.file_size == p.stat().st_size + p.with_suffix(".bin").stat().st_size


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_export_from_onnx(tmp_path, tiny_onnx, tiny_model, precision, fmnist_test_small):
    from edgevit.formats.openvino.export import export_openvino

    onnx_path, _ = tiny_onnx
    rec = export_openvino(tiny_model, tmp_path, precision=precision, from_onnx=onnx_path,
                          parity_images=fmnist_test_small.images[:PARITY_N]).to_dict()
    assert rec["converted_from"] == "onnx" and rec["onnx_path"] == str(onnx_path) and rec["dynamic_batch"] is True
    assert rec["parity_reference"] == "torch" and rec["top1_agreement"] == 1.0
    assert rec["max_abs_diff"] < (1e-4 if precision == "fp32" else rec["parity"]["tolerance"])
    # without a torch model: the spec comes from the ONNX metadata, onnxruntime on the file is the reference
    rec2 = export_openvino(None, tmp_path / "only_onnx.xml", precision=precision, from_onnx=onnx_path,
                           parity_images=fmnist_test_small.images[:4]).to_dict()
    assert rec2["parity_reference"].startswith("onnxruntime") and rec2["source"] == "fmnist-vit-tiny"
    assert rec2["input_spec"] == tiny_model.edgevit_spec.to_dict() and rec2["n"] == 4


def test_static_batch_ir_from_onnx(tmp_path, tiny_onnx, real_batch):
    from edgevit.formats.openvino.export import export_openvino

    rec = export_openvino(None, tmp_path / "static.xml", from_onnx=tiny_onnx[0], dynamic_batch=False,
                          parity_images=real_batch[:3]).to_dict()
    assert rec["dynamic_batch"] is False and rec["static_batch"] == 1 and rec["n"] == 3
    rt = _ov_runtime(tmp_path / "static.xml")
    assert rt.static_batch == 1 and rt.run(real_batch[:1]).shape == (1, 10)
    with pytest.raises(InputSpecError, match="fixed batch size of 1.*dynamic_batch=True"):
        rt.run(real_batch[:3])


def test_parity_failure_keeps_ir_and_record(tmp_path, tiny_onnx, real_batch):
    from edgevit.formats.openvino.export import export_openvino

    out = tmp_path / "strict.xml"
    with pytest.raises(ParityError) as info:
        export_openvino(None, out, from_onnx=tiny_onnx[0], parity_images=real_batch[:4], tolerance=1e-12)
    assert "above the tolerance 1e-12" in str(info.value) and str(out) in str(info.value)
    assert out.exists() and info.value.record["n"] == 4 and info.value.record["parity"]["passed"] is False


def test_bad_export_options(tmp_path, tiny_model):
    from edgevit.formats import get_exporter

    export = get_exporter("openvino")
    with pytest.raises(ConfigError, match="fp32, fp16"):
        export(tiny_model, tmp_path, precision="int8")
    with pytest.raises(ConfigError, match="torch model.*or an ONNX file"):
        export(None, tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        export(None, tmp_path, from_onnx=tmp_path / "nope.onnx")


# ---------------------------------------------------------------------------------------------- runtime


def test_dynamic_batch_1_and_5_match_torch(ir_fp32, tiny_model, fmnist_test_small):
    from edgevit.data import preprocess

    x = preprocess(fmnist_test_small.images[:5], tiny_model.edgevit_spec)
    rt = _ov_runtime(ir_fp32[0])
    assert rt.static_batch is None
    one, five = rt.run(x[:1]), rt.run(x)
    assert one.shape == (1, 10) and five.shape == (5, 10) and five.dtype == np.float32
    ref = _torch_logits(tiny_model, x)
    np.testing.assert_allclose(five, ref, atol=1e-4)
    np.testing.assert_allclose(one, ref[:1], atol=1e-4)
    assert rt.run(x[:2]).shape == (2, 10)  # and back to another batch size


def test_runtime_options_are_applied_and_read_back(ir_fp32, real_batch):
    from edgevit.formats.parity import check_parity, parity_thresholds

    ref = _ov_runtime(ir_fp32[0])
    d = ref.describe()
    assert d["runtime"] == "openvino" and d["ov_device"] == "CPU" and d["inference_precision"] == "f32"
    assert d["compiled"]["PERFORMANCE_HINT"] == "LATENCY" and d["backend_version"]

    rt = _ov_runtime(ir_fp32[0], threads=1, hint="throughput", precision="bf16")
    d = rt.describe()
    assert d["compiled"]["INFERENCE_NUM_THREADS"] == 1 and d["threads"] == 1
    assert d["compiled"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert d["requested"] == {"threads": 1, "hint": "throughput", "precision": "bf16", "config": {},
                              "shapes": "static"}
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert d["inference_precision"] == ("bf16" if has_bf16 else "f32")  # what was used, not what was asked
    a, b = ref.run(real_batch), rt.run(real_batch)
    check_parity(a, b, what="bf16 vs f32", **parity_thresholds("bf16", a))

    f16 = _ov_runtime(ir_fp32[0], precision="f16", config={"NUM_STREAMS": 1})
    assert f16.inference_precision in ("f16", "bf16", "f32") and f16.describe()["compiled"]["NUM_STREAMS"] == 1
    default = _ov_runtime(ir_fp32[0], precision="default", hint=None)
    assert default.describe()["requested"]["precision"] is None and default.inference_precision


def test_ir_recorded_precision_is_the_default_and_an_option_wins(tmp_path, ir_fp32):
    from edgevit.formats.openvino.runtime import record_precision

    xml = tmp_path / "m.xml"
    shutil.copy(ir_fp32[0], xml)
    shutil.copy(ir_fp32[0].with_suffix(".bin"), xml.with_suffix(".bin"))
    plain = _ov_runtime(xml).describe()
    assert plain["file_precision"] is None and plain["precision_source"] == "default"
    record_precision(xml, "bf16")
    assert not list(tmp_path.glob("*.tmp.*"))  # rewritten in place
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    d = _ov_runtime(xml).describe()
    assert d["file_precision"] == "bf16" and d["precision_source"] == "file"
    assert d["requested"]["precision"] == "bf16" and d["inference_precision"] == ("bf16" if has_bf16 else "f32")
    d = _ov_runtime(xml, precision="f32").describe()
    assert d["precision_source"] == "option" and d["inference_precision"] == "f32"
    assert ov.Core().read_model(str(xml)).get_rt_info(["edgevit", "input_spec"])  # the rest of rt_info is kept
    with pytest.raises(ConfigError, match="not one of f32, bf16, f16"):
        record_precision(xml, "int4")


def test_dynamic_ir_is_compiled_per_batch_shape_unless_told_otherwise(ir_fp32, real_batch):
    from edgevit.formats.openvino import runtime as openvino_rt

    rt = _ov_runtime(ir_fp32[0])
    dyn = _ov_runtime(ir_fp32[0], shapes="dynamic")
    k = openvino_rt.STATIC_AFTER
    a3 = [rt.run(real_batch[:3]) for _ in range(k - 1)]
    assert rt.describe()["static_shapes_compiled"] == []  # a shape seen once or twice runs on the dynamic compile
    a3 += [rt.run(real_batch[:3]) for _ in range(2)]
    a1 = [rt.run(real_batch[:1]) for _ in range(k)]
    assert rt.describe()["static_shapes_compiled"] == [[3, 1, 28, 28], [1, 1, 28, 28]]
    for a in a3[1:]:
        np.testing.assert_allclose(a, a3[0], rtol=1e-4, atol=1e-4)  # dynamic and static compiles agree
    np.testing.assert_allclose(a3[0], dyn.run(real_batch[:3]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a1[-1], a3[0][:1], rtol=1e-4, atol=1e-4)
    assert dyn.describe()["static_shapes_compiled"] == [] and dyn.describe()["requested"]["shapes"] == "dynamic"
    for n in range(1, openvino_rt.MAX_STATIC_SHAPES + 3):  # only the most recently used shapes stay compiled
        for _ in range(k):
            rt.run(np.repeat(real_batch[:1], n, axis=0))
    kept = rt.describe()["static_shapes_compiled"]
    assert len(kept) == openvino_rt.MAX_STATIC_SHAPES and kept[-1][0] == openvino_rt.MAX_STATIC_SHAPES + 2
    with pytest.raises(ConfigError, match="shapes 'fixed' is not one of static, dynamic"):
        _ov_runtime(ir_fp32[0], shapes="fixed")


def test_bad_runtime_options(ir_fp32):
    with pytest.raises(ConfigError, match="unknown option.*streams.*allowed: device, threads, hint"):
        _ov_runtime(ir_fp32[0], streams=2)
    with pytest.raises(ConfigError, match="hint 'fast'.*latency, throughput"):
        _ov_runtime(ir_fp32[0], hint="fast")
    with pytest.raises(ConfigError, match="precision 'int4'"):
        _ov_runtime(ir_fp32[0], precision="int4")
    with pytest.raises(ConfigError, match="threads must be ≥ 1"):
        _ov_runtime(ir_fp32[0], threads=0)


def test_missing_bin_says_so_and_to_reexport(tmp_path, ir_fp32):
    from edgevit.artifact import Artifact
    from edgevit.runtimes import open_artifact

    spec = open_artifact(ir_fp32[0]).spec
    lone = tmp_path / "lone.xml"
    shutil.copy(ir_fp32[0], lone)
    for attempt in (lambda: open_artifact(lone), lambda: _ov_runtime(lone),
                    lambda: _ov_runtime(Artifact(kind="openvino", spec=spec, path=lone))):
        with pytest.raises(RuntimeLoadError, match=r"lone\.bin is missing.*re-export"):
            attempt()


def test_unknown_device_lists_available_ones(ir_fp32):
    available = ov.Core().available_devices
    with pytest.raises(RuntimeLoadError) as info:
        _ov_runtime(ir_fp32[0], device="tpu")
    msg = str(info.value)
    assert "'tpu'" in msg and "'TPU'" in msg and all(d in msg for d in available) and "AUTO" in msg
    if "GPU" not in available:  # the wheel ships a GPU plugin, but it needs Intel's OpenCL driver
        with pytest.raises(RuntimeLoadError, match="device 'gpu'.*not available.*CPU"):
            _ov_runtime(ir_fp32[0], device="gpu")


def test_auto_device_passes_through(ir_fp32, real_batch):
    rt = _ov_runtime(ir_fp32[0], device="AUTO")
    assert rt.ov_device == "AUTO" and rt.run(real_batch[:2]).shape == (2, 10)


def test_eval_through_openvino_equals_onnxruntime(ir_fp32, tiny_onnx, fmnist_test_small):
    """Same real images, same preprocessing: the IR and the ONNX file through OpenVINO agree with onnxruntime."""
    from edgevit.evaluate import evaluate
    from edgevit.formats.parity import compare_runtime
    from edgevit.runtimes import load_runtime

    ort = load_runtime("onnxruntime", tiny_onnx[0])
    ir = _ov_runtime(ir_fp32[0])
    ov_onnx = _ov_runtime(tiny_onnx[0])  # the openvino runtime also loads .onnx files
    assert ov_onnx.artifact.kind == "onnx"
    for rt in (ir, ov_onnx):
        res = evaluate(rt, fmnist_test_small, batch_size=32)
        ref = evaluate(ort, fmnist_test_small, batch_size=32)
        assert res["n"] == ref["n"] == 64 and res["correct1"] == ref["correct1"] and res["correct5"] == ref["correct5"]
        rec = compare_runtime(ort, rt, fmnist_test_small.batches(ir.spec, 32)).to_dict()
        assert rec["n"] == 64 and rec["max_abs_diff"] < 1e-4 and rec["top1_agreement"] == 1.0


def test_listed_and_picked_for_ir(ir_fp32):
    from edgevit.cli import default_runtime
    from edgevit.runtimes import list_runtimes, runtimes_for_kind

    row = {r["name"]: r for r in list_runtimes()}["openvino"]
    assert row["available"] and row["kinds"] == ["openvino", "onnx"] and row["version_or_reason"]
    assert runtimes_for_kind("openvino") == ["openvino"] and default_runtime("openvino") == "openvino"
    assert default_runtime("onnx") == "onnxruntime"  # onnxruntime stays the default for .onnx


# ---------------------------------------------------------------------------------------------- stage, CLI


def test_stage_in_recipe(tmp_path, fmnist_test_small):
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {
        "name": "ov", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 32, "batch_size": 16},
        "runtimes": ["onnxruntime", "openvino"],
        "stages": [
            {"stage": "eval"},
            {"stage": "export_onnx", "parity_samples": 8},
            {"stage": "export_openvino", "precision": "fp16", "from_onnx": True, "parity_samples": 8},
            {"stage": "eval"},
        ],
    }
    records = pipeline.run(from_raw(raw), tmp_path / "run")
    assert [r["id"] for r in records] == ["00_load", "01_eval", "02_export_onnx", "03_export_openvino", "04_eval"]
    exp = records[3]
    assert exp["artifact"]["kind"] == "openvino" and (tmp_path / "run" / "03_export_openvino" / "model.bin").exists()
    m = exp["metrics"]
    assert m["converted_from"] == "onnx" and m["precision"] == "fp16" and m["n"] == 8
    assert m["top1_agreement"] == 1.0 and m["max_abs_diff"] < m["parity"]["tolerance"]
    torch_eval, ov_eval = records[1]["metrics"], records[4]["metrics"]
    assert ov_eval["runtime"] == "openvino" and ov_eval["artifact"] == "openvino" and ov_eval["n"] == 32
    assert abs(torch_eval["top1"] - ov_eval["top1"]) <= 1 / 32


def test_stage_config_is_validated():
    from edgevit.recipe import from_raw

    with pytest.raises(ConfigError, match=r"stages\.0\.precision: 'int8' is not allowed; allowed values: 'fp32', 'fp16'"):
        from_raw({"name": "x", "model": {"name": "fmnist-vit-tiny"},
                  "stages": [{"stage": "export_openvino", "precision": "int8"}]})


def test_cli_export_openvino_then_eval(tmp_path, tiny_onnx, fmnist_test_small, capsys):
    from edgevit.cli import main

    out = tmp_path / "ov"
    assert main(["export", "openvino", "--model", "fmnist-vit-tiny", "--precision", "fp16", "--out", str(out) + "/",
                 "--parity-samples", "8", "--json", str(tmp_path / "x.json")]) == 0
    assert "fmnist-vit-tiny.xml (fp16, from torch)" in capsys.readouterr().out
    rec = json.loads((tmp_path / "x.json").read_text())
    assert rec["n"] == 8 and rec["precision"] == "fp16" and rec["top1_agreement"] == 1.0
    xml = out / "fmnist-vit-tiny.xml"
    assert main(["eval", "--artifact", str(xml), "--limit", "16", "--json", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["runtime"] == "openvino" and ev["n"] == 16

    assert main(["export", "openvino", "--from-onnx", str(tiny_onnx[0]), "--out", str(tmp_path / "o.xml"),
                 "--parity-samples", "4"]) == 0
    assert "vs onnxruntime" in capsys.readouterr().out
    assert main(["export", "openvino", "--out", str(tmp_path)]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_modules_import_without_backends():
    code = ("import sys, edgevit.stages, edgevit.formats.openvino.cli, edgevit.formats.openvino.runtime, edgevit.formats; "
            "edgevit.runtimes.get_runtime_class('openvino'); "
            "heavy = [m for m in ('torch', 'openvino', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "assert not heavy, heavy; assert 'export_openvino' in edgevit.stages.STAGES; "
            "assert 'openvino' in edgevit.formats.exporters()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture(scope="module")
def small_head_nano(tmp_path_factory, fmnist_test_small):
    """Issue 16 repro: fmnist-vit-nano with its head scaled by 1e-5 (small but real logits) saved as safetensors,
    the same model with the head negated exported to ONNX, and one whose output is NaN: ``(ckpt, neg, nan)``."""
    import copy

    import torch

    from edgevit.formats.onnx.export import export_onnx
    from edgevit.models import create, save_checkpoint

    d = tmp_path_factory.mktemp("negated")
    torch.manual_seed(0)
    model = create("fmnist-vit-nano").eval()
    with torch.no_grad():
        model.head.weight.mul_(1e-5)
        model.head.bias.mul_(1e-5)
    ckpt = save_checkpoint(model, d / "small_head.safetensors")
    neg, nan = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        neg.head.weight.neg_()
        neg.head.bias.neg_()
        nan.head.bias.fill_(float("nan"))
    neg_path = export_onnx(neg, d / "negated.onnx", parity_images=fmnist_test_small.subset(range(8))).path
    nan_path = export_onnx(nan, d / "nan.onnx", parity=False).path
    return ckpt, Path(neg_path), Path(nan_path)


def test_cli_openvino_from_negated_or_nan_onnx_fails_parity(tmp_path, small_head_nano, capsys):
    """A converted model with negated small logits (cosine −1, top-1 0%) or NaN outputs is no longer a success."""
    from edgevit.cli import main

    ckpt, neg, nan = small_head_nano
    base = ["export", "openvino", "--model", str(ckpt), "--arch", "fmnist-vit-nano", "--parity-samples", "16"]
    assert main([*base, "--from-onnx", str(neg), "--out", str(tmp_path / "neg.xml")]) == 2
    err = capsys.readouterr().err
    assert "vs torch: outputs disagree on 16 real inputs" in err
    assert "cosine similarity is -1.000000" in err and "top-1 agreement is 0.000" in err
    assert main([*base, "--from-onnx", str(nan), "--out", str(tmp_path / "nan.xml")]) == 2
    assert "candidate produced non-finite outputs (inf/NaN) for 16 of 16 samples" in capsys.readouterr().err
    # the NaN file as the reference (no torch model): it cannot vouch for anything
    assert main(["export", "openvino", "--from-onnx", str(nan), "--out", str(tmp_path / "nan2.xml"),
                 "--parity-samples", "4"]) == 2
    assert "reference produced non-finite outputs" in capsys.readouterr().err
    # the healthy checkpoint itself still exports: the scaled tolerance does not reject small logits
    assert main([*base, "--out", str(tmp_path / "ok.xml")]) == 0
