"""TensorRT: calibration cache (edgevit.formats.tensorrt.calib), preflight, device bundle and its scripts, the missing-
TensorRT messages, the export_tensorrt stage, the onnxruntime GPU-provider error path, and (where TensorRT is
installed) engine build + run."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import ConfigError, ExportError, MissingBackendError, RuntimeLoadError

CALIB_N = 64


def _trt_installed() -> bool:
    from edgevit.formats.tensorrt.spec import tensorrt_available

    return tensorrt_available()[0]


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


needs_trt = pytest.mark.skipif(not (_trt_installed() and _cuda()),
                               reason="TensorRT not installed (or no CUDA GPU): engine build/run needs both")
without_trt = pytest.mark.skipif(_trt_installed(), reason="TensorRT is installed here; this tests its absence")


# ------------------------------------------------------------------------------------------- cache format


def test_cache_format_helpers(tmp_path):
    from edgevit.formats.tensorrt.calib import (
        cache_header,
        hex_to_scale,
        read_calibration_cache,
        scale_to_hex,
        trt_version_tag,
        write_calibration_cache,
    )

    assert trt_version_tag("10.3.0") == "100300" and trt_version_tag("8.6.1") == "8601"
    assert trt_version_tag("10.15.1.29") == "101501" and trt_version_tag(8502) == "8502"
    assert cache_header("8.5.2") == "TRT-8502-EntropyCalibration2"
    with pytest.raises(ConfigError, match="10.3.0"):
        trt_version_tag("ten")
    # big-endian float32 bits, as TensorRT writes them (1.0 is 0x3f800000)
    assert scale_to_hex(1.0) == "3f800000" and scale_to_hex(0.0078125) == struct.pack(">f", 2**-7).hex()
    assert hex_to_scale("3f800000") == 1.0 and hex_to_scale("0") == 0.0  # TensorRT omits leading zeros
    path = write_calibration_cache(tmp_path / "c.cache", {"input": 2.54, "blocks.0/add": 12.7}, trt_version="10.3")
    header, scales = read_calibration_cache(path)
    assert header == "TRT-100300-EntropyCalibration2"
    assert scales == pytest.approx({"input": 0.02, "blocks.0/add": 0.1}, rel=1e-6)
    with pytest.raises(ExportError, match="must be finite and > 0"):
        write_calibration_cache(tmp_path / "bad.cache", {"x": 0.0})
    (tmp_path / "junk.cache").write_text("hello\nx: 1\n")
    with pytest.raises(ExportError, match="TRT-<version>-<algorithm>"):
        read_calibration_cache(tmp_path / "junk.cache")
    (tmp_path / "junk2.cache").write_text("TRT-8601-EntropyCalibration2\nx 3f800000\n")
    with pytest.raises(ExportError, match=":2: expected"):
        read_calibration_cache(tmp_path / "junk2.cache")


def _naive_kl_threshold(hist, width, nq=128):
    """The published loop (reference P with the tail folded into the last bin, Q merged into nq levels)."""
    hist = np.asarray(hist, dtype=np.float64)
    best, best_i = np.inf, len(hist)
    for i in range(nq, len(hist) + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        m = i // nq
        q = np.zeros(i)
        for j in range(nq):
            a, b = j * m, (j + 1) * m if j < nq - 1 else i
            nz = hist[a:b] > 0
            if nz.any():
                q[a:b][nz] = hist[a:b].sum() / nz.sum()
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        if np.any(q[mask] == 0):
            continue
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best:
            best, best_i = kl, i
    return best_i * width


@pytest.mark.parametrize("seed", [0, 1])
def test_entropy_threshold_matches_the_published_loop(seed):
    from edgevit.formats.tensorrt.calib import entropy_threshold

    rng = np.random.default_rng(seed)
    x = np.abs(np.concatenate([rng.normal(0, 1, 20000), rng.normal(0, 8, 30)]))  # a bulk and a few outliers
    hist, edges = np.histogram(x, bins=512, range=(0, x.max()))
    width = edges[1] - edges[0]
    fast = entropy_threshold(hist, width)
    assert fast == pytest.approx(_naive_kl_threshold(hist, width), rel=1e-9)
    assert 0.1 * x.max() < fast < x.max()  # clips the outliers, keeps the bulk
    flat = np.ones(512)
    assert entropy_threshold(flat, 1.0) == pytest.approx(512.0)  # nothing to clip in a uniform distribution


# ------------------------------------------------------------------------------------------- bundle


@pytest.fixture(scope="module")
def bundle(tiny_onnx, tiny_model, tmp_path_factory, fmnist_test_small):
    from edgevit.formats.tensorrt.export import export_tensorrt

    onnx_path, _ = tiny_onnx
    out = tmp_path_factory.mktemp("trt")
    rec = export_tensorrt(onnx_path, out, precision="int8", bundle=True, engine=False, calib="fashion-mnist",
                          calib_samples=CALIB_N, torch_model=tiny_model,
                          parity_images=fmnist_test_small.images[:16], parity_samples=16).to_dict()
    return rec, out


def _calib_data(spec):
    from edgevit.data import calibration_subset, load_dataset, preprocess

    return preprocess(calibration_subset(load_dataset("fashion-mnist", "train"), CALIB_N).images, spec)


def test_bundle_has_every_file_and_a_manifest(bundle, tiny_onnx):
    rec, out = bundle
    onnx_name = tiny_onnx[0].name
    stem = tiny_onnx[0].stem
    for name in (onnx_name, f"{stem}.spec.json", "calibration.cache", "calibration.json", "build.sh", "profile.sh",
                 "README.md", "manifest.json"):
        assert (out / name).exists(), name
    assert os.access(out / "build.sh", os.X_OK) and os.access(out / "profile.sh", os.X_OK)
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "edgevit-tensorrt-bundle" and m["precision"] == "int8" and m["edgevit_version"]
    assert m["input"]["name"] == "input" and m["input"]["dynamic_batch"] is True
    assert m["input"]["min_shape"] == [1, 1, 28, 28] and m["input"]["max_shape"] == [8, 1, 28, 28]
    assert m["input"]["spec"]["mean"] == [0.286] and m["model"]["opset"] == 18
    assert m["calibration"]["n"] == CALIB_N and m["calibration"]["method"] == "entropy"
    assert m["calibration"]["data"]["dataset"] == "fashion-mnist" and m["calibration"]["data"]["split"] == "train"
    assert m["preflight"]["ok"] is True and m["build"]["must_build_on_device"] is True
    par = m["parity"]["onnx_vs_torch"]
    assert par["passed"] and par["n"] == 16 and par["max_abs_diff"] < 1e-4
    assert set(m["files"]) >= {onnx_name, "calibration.cache", "build.sh", "profile.sh", "README.md"}
    import hashlib

    assert m["files"][onnx_name]["sha256"] == hashlib.sha256((out / onnx_name).read_bytes()).hexdigest()
    readme = (out / "README.md").read_text()
    assert "./build.sh" in readme and "./profile.sh" in readme and "on the" in readme and "no torch" in readme
    assert rec["engine"] is None and rec["tensorrt"]["available"] is _trt_installed()
    assert rec["max_abs_diff"] == par["max_abs_diff"] and rec["parity_reference"].startswith("torch")
    json.dumps(rec)


def test_build_and_profile_scripts_carry_the_flags(bundle, tiny_onnx):
    _, out = bundle
    build = (out / "build.sh").read_text()
    for flag in (f'ONNX="{tiny_onnx[0].name}"', '--onnx="$ONNX"', '--saveEngine="$ENGINE"', "--fp16", "--int8",
                 '"--calib=$CALIB"', "--minShapes=input:1x1x28x28", "--optShapes=input:1x1x28x28",
                 "--maxShapes=input:8x1x28x28", '--timingCacheFile="$TIMING_CACHE"', "EntropyCalibration2"):
        assert flag in build, flag
    prof = (out / "profile.sh").read_text()
    for flag in ("--loadEngine=", "--shapes=input:${BATCH}x1x28x28", "--warmUp=", "--duration=",
                 "--percentile=90,95,99", "--useSpinWait", "--noDataTransfers", "--separateProfileRun",
                 "--dumpProfile", "nvpmodel -q", "jetson_clocks --show", "tegrastats", "/etc/nv_tegra_release"):
        assert flag in prof, flag
    assert 'WARMUP_MS="${WARMUP_MS:-500}"' in prof and 'DURATION_S="${DURATION_S:-10}"' in prof
    for script in ("build.sh", "profile.sh"):
        subprocess.run(["bash", "-n", str(out / script)], check=True)


def test_calibration_cache_parses_and_covers_the_graph(bundle, tiny_onnx):
    import onnx

    from edgevit.formats.tensorrt.calib import read_calibration_cache

    rec, out = bundle
    header, scales = read_calibration_cache(out / "calibration.cache")
    assert header == "TRT-100300-EntropyCalibration2"
    lines = (out / "calibration.cache").read_text().splitlines()
    assert len(lines) == 1 + len(scales) == 1 + rec["calibration"]["tensors"]  # one line per tensor, no duplicates
    for line in lines[1:]:
        _, hexval = line.rsplit(": ", 1)
        assert len(hexval) == 8 and int(hexval, 16) >= 0
    values = np.array(list(scales.values()))
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    model = onnx.load(str(tiny_onnx[0]))
    assert "input" in scales and "logits" in scales
    float_outputs = {vi.name for vi in onnx.shape_inference.infer_shapes(model).graph.value_info
                     if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    produced = {o for n in model.graph.node for o in n.output if n.op_type != "Constant"}
    assert (float_outputs & produced) <= set(scales)  # every float activation has a range
    detail = json.loads((out / "calibration.json").read_text())
    assert detail["tensors"]["input"]["kind"] == "input" and detail["n"] == CALIB_N


def test_calibration_comes_from_the_real_data(bundle, tiny_onnx, tmp_path, fmnist_test_small):
    """max method: input amax = max |x| of the preprocessed calibration images; logits amax = max |logit|."""
    import onnxruntime as ort

    from edgevit.data import preprocess
    from edgevit.formats.tensorrt.calib import compute_calibration_cache, read_calibration_cache
    from edgevit.runtimes import open_artifact

    rec, out = bundle
    spec = open_artifact(tiny_onnx[0]).spec
    x = _calib_data(spec)
    data_max = float(np.abs(x).max())
    # the bundle (entropy): the JSON records the data's max and the chosen amax never exceeds it
    detail = json.loads((out / "calibration.json").read_text())["tensors"]
    assert detail["input"]["max_abs"] == pytest.approx(data_max, rel=1e-6)
    assert 0 < detail["input"]["amax"] <= data_max * (1 + 1e-6)
    assert rec["calibration"]["input_max_abs"] == pytest.approx(data_max, rel=1e-6)
    # the max method reproduces plain statistics of the data exactly (up to float32 rounding of the scale)
    res = compute_calibration_cache(tiny_onnx[0], x, tmp_path / "max.cache", method="max")
    _, scales = read_calibration_cache(tmp_path / "max.cache")
    assert scales["input"] * 127 == pytest.approx(data_max, rel=1e-6) and res["input_amax"] == data_max
    sess = ort.InferenceSession(str(tiny_onnx[0]), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    assert scales["logits"] * 127 == pytest.approx(float(np.abs(logits).max()), rel=1e-5)
    # other images give other activation ranges: the values come from the data, not from the graph
    other = compute_calibration_cache(tiny_onnx[0], preprocess(fmnist_test_small.images, spec),
                                      tmp_path / "test.cache", method="max")
    _, other_scales = read_calibration_cache(other["file"])
    assert other_scales["logits"] != scales["logits"]


def test_scripts_run_against_a_stand_in_trtexec(bundle, tmp_path):
    """trtexec cannot run here, so a stand-in script prints its banner, logs its arguments and writes the engine:
    this runs build.sh/profile.sh end to end (re-tagging the cache for the device's TensorRT version)."""
    from edgevit.formats.tensorrt.trtexec import parse_trtexec_log

    _, out = bundle
    work = tmp_path / "device"
    import shutil

    shutil.copytree(out, work)
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "trtexec"
    fake.write_text(f"""#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100900] [b34] # trtexec $*"
if [ "$1" = "--help" ]; then echo "  --skipInference   Exit after the engine has been built"; exit 0; fi
echo "$*" >> {calls}
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${{a#--saveEngine=}}" ;;
  --exportTimes=*) echo "[]" > "${{a#--exportTimes=}}" ;; esac; done
echo "[11/24/2026-08:00:00] [I] Throughput: 2345.67 qps"
echo "[11/24/2026-08:00:00] [I] Latency: min = 0.41 ms, max = 0.9 ms, mean = 0.45 ms, median = 0.44 ms, \
percentile(90%) = 0.5 ms, percentile(95%) = 0.55 ms, percentile(99%) = 0.7 ms"
echo "[11/24/2026-08:00:00] [I] GPU Compute Time: min = 0.31 ms, max = 0.6 ms, mean = 0.33 ms, median = 0.32 ms, \
percentile(90%) = 0.35 ms, percentile(95%) = 0.36 ms, percentile(99%) = 0.4 ms"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "TRTEXEC": str(fake), "ENERGY_S": "0", "OUT": str(work / "results" / "run1")}
    subprocess.run(["bash", str(work / "build.sh")], check=True, env=env, capture_output=True, timeout=60)
    build_call = calls.read_text().splitlines()[0]
    assert "--int8 --fp16 --calib=calibration.device.cache" in build_call and "--skipInference" in build_call
    assert "--minShapes=input:1x1x28x28" in build_call and "--timingCacheFile=timing.cache" in build_call
    assert (work / "calibration.device.cache").read_text().splitlines()[0] == "TRT-100900-EntropyCalibration2"
    assert (work / "calibration.device.cache").read_text().splitlines()[1:] == \
        (work / "calibration.cache").read_text().splitlines()[1:]
    engine = work / "fmnist-vit-tiny.int8.engine"
    assert engine.exists() and (work / "fmnist-vit-tiny.int8.engine.spec.json").exists()

    subprocess.run(["bash", str(work / "profile.sh")], check=True, env=env, capture_output=True, timeout=60)
    runs = calls.read_text().splitlines()[1:]
    assert len(runs) == 3  # end-to-end, compute-only, per-layer (energy skipped)
    assert all("--loadEngine=fmnist-vit-tiny.int8.engine" in r and "--useSpinWait" in r for r in runs)
    assert "--noDataTransfers" in runs[1] and "--noDataTransfers" not in runs[0] and "--dumpProfile" in runs[2]
    res = work / "results" / "run1"
    system = (res / "system.txt").read_text()
    assert "## nvpmodel -q" in system and "## jetson_clocks --show" in system and "tensorrt: v100900" in system
    e2e = parse_trtexec_log((res / "end_to_end.log").read_text())
    assert e2e["throughput_qps"] == 2345.67 and e2e["tensorrt"] == "v100900"
    assert e2e["latency"] == {"min": 0.41, "max": 0.9, "mean": 0.45, "median": 0.44, "p90": 0.5, "p95": 0.55,
                              "p99": 0.7}
    assert e2e["gpu_compute"]["median"] == 0.32 and "Throughput" in (res / "summary.txt").read_text()


def test_fp16_static_batch_bundle_with_max_calibration(tmp_path, tiny_model, real_batch):
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.formats.tensorrt.export import export_tensorrt

    export_onnx(tiny_model, tmp_path / "static.onnx", dynamic_batch=False, parity_images=real_batch[:2])
    rec = export_tensorrt(tmp_path / "static.onnx", tmp_path / "b", precision="fp16", engine=False,
                          calib_images=real_batch, calibration_method="max").to_dict()
    build = (tmp_path / "b" / "build.sh").read_text()
    assert "--minShapes" not in build and 'PRECISION="${PRECISION:-fp16}"' in build
    assert rec["input"]["dynamic_batch"] is False and rec["input"]["shapes"]["opt"] == [1, 1, 28, 28]
    assert rec["calibration"]["method"] == "max" and rec["calibration"]["n"] == len(real_batch)
    assert rec["onnx_vs_torch"] is None and rec["max_abs_diff"] is None  # no torch model given: nothing claimed
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "no torch model" in m["parity"]["note"]
    with pytest.raises(ConfigError, match="min_batch ≤ opt_batch ≤ max_batch"):
        export_tensorrt(tmp_path / "static.onnx", tmp_path / "c", engine=False, min_batch=4, opt_batch=2)
    with pytest.raises(ConfigError, match="fp32, fp16, int8"):
        export_tensorrt(tmp_path / "static.onnx", tmp_path / "c", precision="int4")


# ------------------------------------------------------------------------------------------- preflight


def test_preflight_finds_nothing_unsupported_in_the_tiny_vit(tiny_onnx):
    from edgevit.formats.tensorrt.preflight import load_op_table, tensorrt_preflight

    res = tensorrt_preflight(tiny_onnx[0])
    assert res["ok"] and res["unsupported"] == [] and res["opset"] == 18 and res["opset_supported"]
    table = load_op_table()
    assert res["table"]["source_url"].startswith("https://github.com/onnx/onnx-tensorrt")
    assert res["table"]["tensorrt_version"] == table["tensorrt_version"]
    assert res["ops"]["LayerNormalization"] == 13 and res["ops"]["Softmax"] == 6
    patterns = {p["pattern"]: p for p in res["int8_fallback"]}
    assert set(patterns) >= {"LayerNormalization", "Softmax", "Erf", "residual_add"}
    assert patterns["residual_add"]["count"] == 12  # two residual adds per block, 6 blocks
    assert all(p["reason"] and p["nodes"] for p in patterns.values())
    assert any(v["op"] == "LayerNormalization" for v in res["version_dependent"])


def _synthetic(tmp_path, opset=18):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Unique", ["x"], ["y"], name="dedup"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("FusedGelu", ["r"], ["z"], name="msgelu", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "synthetic", [x], [y, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / f"synthetic{opset}.onnx"
    onnx.save(model, str(path))
    return path


def test_preflight_flags_unsupported_and_foreign_operators(tmp_path, capsys):
    from edgevit.cli import main
    from edgevit.formats.tensorrt.preflight import tensorrt_preflight

    res = tensorrt_preflight(_synthetic(tmp_path))
    bad = {u["op"]: u for u in res["unsupported"]}
    assert not res["ok"] and set(bad) == {"Unique", "FusedGelu"}
    assert "listed as unsupported" in bad["Unique"]["reason"] and bad["Unique"]["nodes"] == ["dedup"]
    assert "plugin" in bad["FusedGelu"]["reason"] and bad["FusedGelu"]["domain"] == "com.microsoft"
    assert not tensorrt_preflight(_synthetic(tmp_path, opset=8))["opset_supported"]

    rc = main(["-q", "export", "tensorrt", str(_synthetic(tmp_path)), "--preflight", "--json",
               str(tmp_path / "pre.json")])
    assert rc == 1 and "UNSUPPORTED ai.onnx.Unique" in capsys.readouterr().out
    assert json.loads((tmp_path / "pre.json").read_text())["ok"] is False


# ------------------------------------------------------------------------------------------- no TensorRT


@without_trt
def test_missing_tensorrt_points_to_the_bundle(tiny_onnx, tmp_path, capsys):
    from edgevit.cli import main
    from edgevit.formats.tensorrt.export import export_tensorrt
    from edgevit.runtimes import list_runtimes, load_runtime

    with pytest.raises(MissingBackendError, match="--bundle") as info:
        export_tensorrt(tiny_onnx[0], tmp_path, bundle=False)
    assert "tensorrt" in str(info.value) and "build.sh" in str(info.value)
    with pytest.raises(MissingBackendError, match="engine=True"):
        export_tensorrt(tiny_onnx[0], tmp_path, engine=True)
    rc = main(["export", "tensorrt", str(tiny_onnx[0]), "--precision", "fp16", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "TensorRT" in err and "--bundle" in err and "everything the device needs" in err
    assert not (tmp_path / "x").exists()  # failed before doing any work

    row = next(r for r in list_runtimes() if r["name"] == "tensorrt")
    assert row["available"] is False and row["kinds"] == ["tensorrt"] and "--bundle" in row["version_or_reason"]
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(MissingBackendError, match="--bundle"):
        load_runtime("tensorrt", engine)


def test_cli_bundle_route(tiny_onnx, tmp_path, capsys):
    from edgevit.cli import main

    rc = main(["-q", "export", "tensorrt", str(tiny_onnx[0]), "--precision", "int8", "--bundle", "--no-engine",
               "--calib-samples", "32", "--calib-method", "percentile", "--parity-samples", "8",
               "--out", str(tmp_path / "trt"), "--json", str(tmp_path / "trt.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "wrote TensorRT device bundle" in out and "32 real images" in out and "preflight ok" in out
    rec = json.loads((tmp_path / "trt.json").read_text())
    assert rec["calibration"]["method"] == "percentile" and rec["bundle"]["build_command"].startswith("trtexec")
    assert (tmp_path / "trt" / "calibration.cache").exists()


def test_onnxruntime_gpu_providers_error_path(tiny_onnx):
    """device='cuda'/'tensorrt' select onnxruntime's CUDA / TensorRT providers; a CPU build says so clearly."""
    import onnxruntime as ort

    from edgevit.formats.onnx.runtime import providers_for
    from edgevit.runtimes import load_runtime

    assert providers_for("cuda:1")[0] == "CUDAExecutionProvider"
    assert providers_for("tensorrt") == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    available = ort.get_available_providers()
    for device, provider in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        if provider in available:
            continue  # a GPU build: selection works, nothing to assert about the error
        with pytest.raises(RuntimeLoadError, match=provider) as info:
            load_runtime("onnxruntime", tiny_onnx[0], device=device)
        assert "Providers here" in str(info.value) and "device='cpu'" in str(info.value)
    with pytest.raises(RuntimeLoadError, match="unknown device 'npu'"):
        load_runtime("onnxruntime", tiny_onnx[0], device="npu")


# ------------------------------------------------------------------------------------------- recipe stage


def test_stage_in_a_tiny_recipe(tmp_path, fmnist_test_small):
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {"name": "trt", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 32, "batch_size": 16},
           "stages": [{"stage": "export_onnx", "parity_samples": 8},
                      {"stage": "export_tensorrt", "precision": "int8", "engine": None if _trt_installed() else False,
                       "parity_samples": 8, "max_batch": 4}]}
    records = pipeline.run(from_raw(raw), tmp_path)
    assert [r["id"] for r in records] == ["00_load", "01_export_onnx", "02_export_tensorrt"]
    stage_dir = tmp_path / "02_export_tensorrt"
    for name in ("model.onnx", "calibration.cache", "build.sh", "profile.sh", "README.md", "manifest.json"):
        assert (stage_dir / name).exists(), name
    m = records[2]["metrics"]
    assert m["bundle"]["dir"] == "." and m["calibration"]["file"] == "calibration.cache"  # paths relative
    assert m["calibration"]["n"] == 32 and "data.limit" in m["calibration"]["data"]["selection"]
    assert m["calibration"]["data"]["split"] == "train"
    assert m["preflight"]["ok"] and m["onnx_vs_torch"]["passed"] and m["onnx_vs_torch"]["n"] == 8
    assert "--maxShapes=input:4x1x28x28" in (stage_dir / "build.sh").read_text()
    if not _trt_installed():
        assert records[2]["artifact"]["kind"] == "onnx"  # no engine here: the run continues with the ONNX file

    with pytest.raises(ConfigError, match="add `- stage: export_onnx` before `- stage: export_tensorrt`"):
        pipeline.run(from_raw({**raw, "stages": [{"stage": "export_tensorrt"}]}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="min_batch ≤ opt_batch ≤ max_batch"):
        from_raw({**raw, "stages": [{"stage": "export_tensorrt", "opt_batch": 16}]})
    with pytest.raises(ConfigError, match="nothing to do"):
        from_raw({**raw, "stages": [{"stage": "export_tensorrt", "bundle": False, "engine": False}]})


# ------------------------------------------------------------------------------------------- engine (GPU)


@needs_trt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_build_and_run(tiny_onnx, tiny_model, tmp_path, precision, fmnist_test_small):
    from edgevit.formats.tensorrt.export import export_tensorrt
    from edgevit.runtimes import load_runtime, open_artifact

    rec = export_tensorrt(tiny_onnx[0], tmp_path, precision=precision, engine=True, calib="fashion-mnist",
                          calib_samples=CALIB_N, torch_model=tiny_model, parity_images=fmnist_test_small.images[:32],
                          parity_samples=32).to_dict()
    e = rec["engine"]
    assert Path(e["path"]).exists() and e["parity"]["passed"] and e["parity"]["n"] == 32
    assert (tmp_path / "timing.cache").exists()
    art = open_artifact(e["path"])
    assert art.kind == "tensorrt" and art.spec == tiny_model.edgevit_spec
    rt = load_runtime("tensorrt", art)
    from edgevit.data import preprocess

    x = preprocess(fmnist_test_small.images[:8], art.spec)
    assert rt.run(x).shape == (8, 10) and rt.run(x[:1]).shape == (1, 10)
    from edgevit.errors import InputSpecError

    with pytest.raises(InputSpecError, match="batches 1–8"):
        rt.run(preprocess(fmnist_test_small.images[:9], art.spec))
