"""An early-exit cascade through export_tvm (one library per graph, symbolic batch) and export_tensorrt (the device
bundle: one trtexec build per graph), on real Fashion-MNIST images.

Tiny cascade: fmnist-vit-tiny (fixed random init) with exits after blocks 2 and 4 (3 segments + 2 heads), thresholds
at the median confidence of each head on real train images, so test images leave at every exit. The stages run
through :class:`~edgevit.stage.StageContext` as the pipeline calls them. TensorRT cannot run here: the bundle's
content is checked (files, manifest, commands, shapes, calibration caches) and build.sh runs against a stand-in
trtexec that logs its arguments and writes the engine files.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess

import numpy as np
import pytest

from edgevit.errors import ConfigError, InputSpecError, MissingBackendError, RuntimeLoadError


@pytest.fixture(scope="module")
def small_cascade(tmp_path_factory, tiny_model):
    """``(manifest path, artefact)``: the ONNX cascade of fmnist-vit-tiny with exits after blocks 2 and 4."""
    import torch

    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.cascade.thresholds import scores
    from edgevit.methods.early_exit import attach_exits, export_cascade

    try:
        train = load_dataset("fashion-mnist", "train", limit=200)
        test = load_dataset("fashion-mnist", "test", limit=32)
    except Exception as exc:  # noqa: BLE001 - DataError when the Debian package is missing
        pytest.skip(f"Fashion-MNIST not installed: {exc}")
    torch.manual_seed(0)
    ee = attach_exits(tiny_model, blocks=[2, 4])
    with torch.inference_mode():
        out = ee.forward_all(torch.from_numpy(preprocess(train.images, ee.edgevit_spec)))
    th = [float(np.median(scores(z.numpy(), "confidence"))) for z in out["exits"]]
    res = export_cascade(ee, tmp_path_factory.mktemp("cascade"), format="onnx", thresholds=th,
                         exporter="torchscript", parity_images=test.images)
    return res.artifact.path, res.artifact


def _context(tmp_path, cascade_art, stages):
    from edgevit.artifact import Artifact
    from edgevit.recipe import from_raw
    from edgevit.stage import StageContext

    recipe = from_raw({"name": "t", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 64},
                       "stages": stages})
    torch_art = Artifact(kind="torch", spec=cascade_art.spec, path=tmp_path / "model.safetensors")
    arts = {"00_load": torch_art, "01_early_exit": cascade_art}
    out = tmp_path / "stage"
    out.mkdir()
    return StageContext(recipe=recipe, artifact=cascade_art, out_dir=out, run_dir=tmp_path,
                        records=[{"id": "00_load", "stage": "load"}, {"id": "01_early_exit", "stage": "early_exit"}],
                        artifacts=arts)


# ------------------------------------------------------------------------------------------------ TVM


@pytest.fixture(scope="module")
def tvm_stage(small_cascade, tmp_path_factory):
    """The export_tvm stage run on the cascade (trials 256 requested: ignored with a warning)."""
    pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'edgevit[tvm]')")
    from edgevit.stages import STAGES

    _, art = small_cascade
    tmp = tmp_path_factory.mktemp("tvm-stage")
    ctx = _context(tmp, art, [{"stage": "early_exit"}, {"stage": "export_tvm"}])
    stage = STAGES.get("export_tvm")
    out = stage().run(ctx, stage.Config(trials=256, parity_samples=64))
    return out, ctx


def test_tvm_stage_compiles_every_graph_with_a_symbolic_batch(tvm_stage, small_cascade):
    from edgevit.formats.tvm.runtime import read_tvm_metadata

    out, _ctx = tvm_stage
    m = out.metrics
    assert out.artifact.kind == "cascade" and out.artifact.meta["graphs"] == "tvm"
    manifest = json.loads(out.artifact.path.read_text())
    src = json.loads(small_cascade[0].read_text())
    assert manifest["backend"] == "tvm" and manifest["thresholds"] == src["thresholds"]
    assert [e["file"] for e in manifest["segments"]] == ["segment_0.so", "segment_1.so", "segment_2.so"]
    for e in manifest["segments"] + manifest["exits"]:
        meta = read_tvm_metadata(out.artifact.path.parent / e["file"])
        assert meta["batch"] is None and meta["cascade_graph"] is True and meta["input_shape"][0] is None
    # the shapes each graph really receives: images for the first segment, tokens after it
    assert m["graphs"]["segment_0"]["input_shape"] == [None, 1, 28, 28]
    assert m["graphs"]["segment_1"]["input_shape"] == m["graphs"]["exit_1"]["input_shape"] == [None, 50, 96]
    assert m["compile_time_s"] > 0 and "symbolic batch" in m["warning"] and m["tuning"].startswith("untuned")
    # parity vs the ONNX cascade on 64 real images: same exits and predictions everywhere, logits within fp32
    assert m["n"] == 64 and m["exit_agreement"] == 1.0 and m["top1_agreement"] == 1.0 and m["max_abs_diff"] < 1e-4
    assert sum(s > 0 for s in m["exits_share"]) >= 2  # images really leave early: the batch shrinks in the run


def test_tvm_cascade_runs_any_batch_through_the_tvm_backend(tvm_stage, small_cascade, fmnist_test_small):
    from edgevit.data import preprocess
    from edgevit.runtimes import load_runtime

    out, _ = tvm_stage
    x = preprocess(fmnist_test_small.images[:13], out.artifact.spec)
    with load_runtime("tvm", out.artifact.path) as tvm_rt, load_runtime("cascade", small_cascade[0]) as ref:
        assert tvm_rt.name == "cascade[tvm]"  # tvm is one of the cascade format's declared backends
        la, ea = tvm_rt.run_with_exits(x)
        lb, eb = ref.run_with_exits(x)
        one = np.concatenate([tvm_rt.run_with_exits(x[i:i + 1])[0] for i in range(3)])
        assert (ea == eb).all() and np.abs(la - lb).max() < 1e-4 and np.abs(one - la[:3]).max() < 1e-4
        lib = tvm_rt.segments[1]
        assert lib.fixed_batch is None
        with pytest.raises(InputSpecError, match=r"compiled for inputs \[n, 50, 96\]"):
            lib._run(np.zeros((2, 49, 96), np.float32))


def test_cli_eval_and_profile_on_the_tvm_cascade(tvm_stage, tmp_path, capsys):
    from edgevit.cli import main

    manifest = str(tvm_stage[0].artifact.path)
    assert main(["eval", "--artifact", manifest, "--limit", "48", "--json", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["n"] == 48 and ev["runtime"] == "cascade[tvm]" and 0 <= ev["top1"] <= 1
    assert sum(ev["exit_rates"]["shares"]) == pytest.approx(1) and ev["exit_rates"]["samples"] == 48
    assert main(["profile", manifest, "--runtime", "tvm", "--runs", "5", "--warmup", "0",
                 "--json", str(tmp_path / "p.json")]) == 0
    row = json.loads((tmp_path / "p.json").read_text())["results"][0]
    assert row["runtime"] == "cascade[tvm]" and row["runs"] == 5 and row["exit_mix"]["samples"] == 5
    assert "cascade[tvm]" in capsys.readouterr().out


def test_tvm_cascade_refuses_graphs_that_are_not_onnx(small_cascade, tmp_path):
    pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'edgevit[tvm]')")
    from edgevit.formats.cascade.convert import copy_cascade
    from edgevit.formats.tvm.cascade import export_tvm_cascade

    path = copy_cascade(small_cascade[0], tmp_path / "c")
    m = json.loads(path.read_text())
    m["backend"] = "ort"
    path.write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="reads ONNX graphs.*holds ort graphs"):
        export_tvm_cascade(path, tmp_path / "out", parity_images=np.zeros((2, 28, 28), np.uint8))


@pytest.mark.slow
def test_tvm_compiles_the_int8_qdq_cascade(small_cascade, tmp_path, fmnist_test_small):
    """The INT8 QDQ cascade of quantize (onnxruntime): TVM computes the Q/DQ rounding in float (no INT8 kernels); it
    is checked against onnxruntime's INT8 kernels with the INT8 parity bounds."""
    pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'edgevit[tvm]')")
    from edgevit.formats.tvm.cascade import export_tvm_cascade
    from edgevit.methods.early_exit import quantize_cascade
    from edgevit.methods.quantize import QuantizeConfig

    quantize_cascade(small_cascade[0], tmp_path / "int8", backend="onnxruntime",
                     config=QuantizeConfig(backend="onnxruntime", calib_samples=32), calib=fmnist_test_small,
                     parity_images=fmnist_test_small.images[:32])
    res = export_tvm_cascade(tmp_path / "int8" / "manifest.json", tmp_path / "tvm",
                             parity_images=fmnist_test_small.images)
    rec = res.to_dict()
    assert rec["int8"] is True and "no INT8 kernels" in rec["int8_execution"]
    assert all(g["qdq_nodes"] > 0 for g in rec["graphs"].values())
    assert rec["exit_agreement"] >= 0.95 and rec["top1_agreement"] >= 0.95


# ------------------------------------------------------------------------------------------------ TensorRT


def _stand_in_trtexec(tmp_path):
    """A trtexec that prints TensorRT 10.9's banner, logs its arguments and writes the engine file."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "trtexec"
    fake.write_text(f"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100900] [b34] # trtexec $*"
if [ "$1" = "--help" ]; then echo "  --skipInference   Exit after the engine has been built"; exit 0; fi
echo "$*" >> {calls}
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${{a#--saveEngine=}}" ;; esac; done
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake, calls


def _args(command: str) -> dict:
    words = shlex.split(command)
    assert words[0] == "trtexec"
    return {w.split("=", 1)[0]: (w.split("=", 1)[1] if "=" in w else True) for w in words[1:]}


@pytest.fixture(scope="module")
def trt_stage(small_cascade, tmp_path_factory):
    """export_tensorrt (precision int8, bundle) on the float cascade, as the pipeline runs it."""
    from edgevit.stages import STAGES

    _, art = small_cascade
    tmp = tmp_path_factory.mktemp("trt-stage")
    ctx = _context(tmp, art, [{"stage": "early_exit"}, {"stage": "export_tensorrt"}])
    stage = STAGES.get("export_tensorrt")
    return stage().run(ctx, stage.Config(precision="int8", calib_samples=48, max_batch=16, opt_batch=4)), ctx


def test_tensorrt_cascade_bundle_content(trt_stage, small_cascade):
    from edgevit.formats.cascade.runtime import read_manifest
    from edgevit.formats.tensorrt.calib import read_calibration_cache

    out, ctx = trt_stage
    assert out.artifact is ctx.artifact  # no TensorRT here: the bundle alone, the run's cascade handed on
    b = ctx.out_dir
    bundle = json.loads((b / "manifest.json").read_text())
    src = read_manifest(small_cascade[0])
    assert bundle["format"] == "edgevit-tensorrt-bundle" and bundle["kind"] == "cascade"
    assert bundle["cascade"]["thresholds"] == src["thresholds"] and bundle["batch"] == {**bundle["batch"], "min": 1,
                                                                                         "opt": 4, "max": 16}
    assert [g["name"] for g in bundle["graphs"]] == ["segment_0", "segment_1", "segment_2", "exit_1", "exit_2"]
    for g in bundle["graphs"]:
        a = _args(g["command"])
        assert (b / a["--onnx"]).exists() and a["--saveEngine"] == g["engine"] == f"engines/{g['name']}.engine"
        dims = "1x28x28" if g["name"] == "segment_0" else "50x96"
        name = "input" if g["name"] == "segment_0" else "tokens"
        assert (a["--minShapes"], a["--optShapes"], a["--maxShapes"]) == (
            f"{name}:1x{dims}", f"{name}:4x{dims}", f"{name}:16x{dims}")
        # a float graph built INT8: its own calibration cache from its real inputs (tokens after the first segment)
        assert g["mode"] == "int8-calibrated" and a["--int8"] and a["--fp16"] and g["preflight"]["ok"]
        header, amax = read_calibration_cache(b / a["--calib"])
        assert header.startswith("TRT-100300-") and len(amax) > 10
        cal = out.metrics["calibration"]["graphs"][g["name"]]
        assert cal["inputs"] == ([48, 1, 28, 28] if g["name"] == "segment_0" else [48, 50, 96])
    for f, info in bundle["files"].items():
        assert (b / f).stat().st_size == info["size"], f
    # the engine cascade is the same cascade over engines build.sh writes: not loadable before the build
    eng = json.loads((b / "engines" / "manifest.json").read_text())
    assert eng["backend"] == "tensorrt" and eng["thresholds"] == src["thresholds"]
    assert [e["file"] for e in eng["exits"]] == ["exit_1.engine", "exit_2.engine"]
    with pytest.raises(RuntimeLoadError, match="not built yet.*build.sh"):
        read_manifest(b / "engines" / "manifest.json")
    subprocess.run(["bash", "-n", str(b / "build.sh")], check=True)


def test_the_run_display_says_what_the_bundle_holds(trt_stage):
    from edgevit.cli.display import stage_brief

    out, _ = trt_stage
    line = stage_brief({"stage": "export_tensorrt", "metrics": out.metrics})
    assert line.startswith("device bundle: 5 graph(s), int8, TensorRT ") and line.endswith("build.sh on the device")


def test_tensorrt_cascade_build_script_runs_every_graph(trt_stage, tmp_path):
    from edgevit.formats.cascade.runtime import read_manifest
    from edgevit.runtimes import _check_path

    _out, ctx = trt_stage
    work = tmp_path / "device"
    shutil.copytree(ctx.out_dir, work)
    fake, calls = _stand_in_trtexec(tmp_path)
    subprocess.run(["bash", str(work / "build.sh")], check=True, capture_output=True, timeout=60,
                   env={**os.environ, "TRTEXEC": str(fake)})
    lines = calls.read_text().splitlines()
    assert len(lines) == 5 and all("--skipInference" in c and "--timingCacheFile=timing.cache" in c for c in lines)
    # the caches were re-tagged for the device's TensorRT (10.9) and the copies used
    assert "--calib=calibration/segment_1.device.cache" in lines[1]
    assert (work / "calibration" / "segment_1.device.cache").read_text().startswith("TRT-100900-EntropyCalibration2")
    m = read_manifest(work / "engines" / "manifest.json")  # every engine now exists
    assert len(m["segments"]) == 3
    assert _check_path(work) == (work / "engines" / "manifest.json", "cascade")  # the bundle folder names it


def test_a_cascade_bundle_folder_says_where_its_cascades_are(trt_stage):
    from edgevit.runtimes import open_artifact

    _, ctx = trt_stage
    with pytest.raises(RuntimeLoadError, match=r"bundle of an early-exit cascade.*run build.sh.*onnx/manifest.json "
                                               r"runs on onnxruntime"):
        open_artifact(ctx.out_dir)


def test_tensorrt_explicit_quantization_for_symmetric_qdq_graphs(small_cascade, tmp_path, fmnist_test_small):
    """Q/DQ graphs with symmetric INT8 activations: --int8 with the graph's scales, no calibration cache."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgevit.data import preprocess
    from edgevit.formats.cascade.convert import copy_cascade
    from edgevit.formats.tensorrt.cascade import export_tensorrt_cascade, qdq_problems
    from edgevit.runtimes import load_runtime

    src = copy_cascade(small_cascade[0], tmp_path / "sym")
    with load_runtime("cascade", small_cascade[0]) as casc:
        from edgevit.formats.cascade.runtime import graph_inputs

        seg_in, _, _ = graph_inputs(casc, preprocess(fmnist_test_small.images[:32], casc.spec))
    m = json.loads(src.read_text())
    feeds = {s["name"]: (s["input"], seg_in[k]) for k, s in enumerate(m["segments"])}
    feeds.update({e["name"]: (e["input"], seg_in[k + 1]) for k, e in enumerate(m["exits"])})

    class Reader(CalibrationDataReader):
        def __init__(self, name, x):
            self.it = iter([{name: x[i:i + 8]} for i in range(0, len(x), 8)])

        def get_next(self):
            return next(self.it, None)

    import onnx

    for e in m["segments"] + m["exits"]:
        f = src.parent / e["file"]
        quantize_static(str(f), str(f), Reader(*feeds[e["name"]]), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False})
        assert qdq_problems(onnx.load(str(f))) == []
    res = export_tensorrt_cascade(src, tmp_path / "bundle", precision="fp16")
    rec = res.to_dict()
    assert rec["int8"] is True and rec["calibration"] is None and not (tmp_path / "bundle" / "calibration").exists()
    for g in rec["bundle"]["graphs"]:
        a = _args(g["command"])
        assert g["mode"] == "int8-explicit" and g["qdq_nodes"] > 0
        assert a["--int8"] and a["--fp16"] and "--calib" not in a
    bundle = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert "explicit quantization" in bundle["build"]["explicit_quantization"]


def test_tensorrt_refuses_asymmetric_qdq_and_builds_no_engine_without_tensorrt(small_cascade, tmp_path,
                                                                             fmnist_test_small):
    pytest.importorskip("onnxruntime.quantization")
    from edgevit.formats.tensorrt.cascade import export_tensorrt_cascade
    from edgevit.methods.early_exit import quantize_cascade
    from edgevit.methods.quantize import QuantizeConfig

    quantize_cascade(small_cascade[0], tmp_path / "int8", backend="onnxruntime",
                     config=QuantizeConfig(backend="onnxruntime", calib_samples=16), calib=fmnist_test_small,
                     parity_images=fmnist_test_small.images[:16])
    with pytest.raises(ConfigError, match=r"symmetric signed INT8 Q/DQ only.*uint8 zero point.*put export_tensorrt "
                                          r"before quantize"):
        export_tensorrt_cascade(tmp_path / "int8" / "manifest.json", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before writing anything
    with pytest.raises(MissingBackendError, match="engines of an early-exit cascade.*bundle route"):
        export_tensorrt_cascade(small_cascade[0], tmp_path / "x", bundle=False)
    with pytest.raises(ConfigError, match="needs real calibration images"):
        export_tensorrt_cascade(small_cascade[0], tmp_path / "y", precision="int8")


def test_cli_export_tensorrt_takes_a_cascade_manifest(small_cascade, tmp_path, capsys):
    from edgevit.cli import main

    manifest = str(small_cascade[0])
    assert main(["export", "tensorrt", manifest, "--precision", "fp16", "--out", str(tmp_path / "x")]) == 2
    assert "--bundle" in capsys.readouterr().err  # no TensorRT here: an engine build is refused before any work
    assert main(["export", "tensorrt", manifest, "--bundle", "--precision", "fp16", "--max-batch", "4",
                 "--out", str(tmp_path / "b"), "--json", str(tmp_path / "r.json")]) == 0
    assert "bundle of the early-exit cascade" in capsys.readouterr().out
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["kind"] == "cascade" and {g["mode"] for g in rec["bundle"]["graphs"]} == {"fp16"}
    assert all("--fp16" in g["command"] and "tokens:4x50x96" in g["command"] or g["name"] == "segment_0"
               for g in rec["bundle"]["graphs"])


def test_cli_export_tvm_needs_one_source(small_cascade, tmp_path, capsys):
    from edgevit.cli import main

    manifest = str(small_cascade[0])
    assert main(["export", "tvm", "--out", str(tmp_path / "x")]) == 2
    assert "either --model NAME" in capsys.readouterr().err
    assert main(["export", "tvm", "--model", "fmnist-vit-tiny", "--cascade", manifest, "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["export", "tvm", "--cascade", manifest, "--no-parity", "--out", str(tmp_path / "x")]) == 2
    assert "always checked" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_export_tvm_cascade(small_cascade, tmp_path, capsys):
    """The whole CLI route (the compile itself is the export_tvm stage's, tested by default above)."""
    pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'edgevit[tvm]')")
    from edgevit.cli import main

    manifest = str(small_cascade[0])
    assert main(["export", "tvm", "--cascade", manifest, "--parity-samples", "16", "--out", str(tmp_path / "t"),
                 "--json", str(tmp_path / "r.json")]) == 0
    assert "wrote the TVM cascade" in capsys.readouterr().out
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["backend"] == "tvm" and rec["n"] == 16 and rec["exit_agreement"] == 1.0
    assert (tmp_path / "t" / "segment_0.so").exists() and (tmp_path / "t" / "segment_0.so.tvm.json").exists()
