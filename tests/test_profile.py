"""edgevit.profile: latency statistics on real tiny runtimes, stamps, MAC counts, hardware profiles, roofline, tables."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import ConfigError, InputSpecError

STAT_KEYS = ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms", "runs", "throughput")
EXPECTED_PROFILES = {
    "jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-xavier-nx", "t4",
    "a100-sxm4-80gb", "h100-sxm5", "rtx-4090", "raspberry-pi-5", "xeon-8380", "epyc-zen4-2core",
}
FAST = {"warmup_s": 0.05, "min_warmup": 2, "duration_s": 0.2, "min_runs": 5}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory):
    """fmnist-vit-tiny exported with edgevit's exporter (dynamic batch), parity skipped for speed."""
    from edgevit.formats.onnx.export import export_onnx

    path = tmp_path_factory.mktemp("profile") / "tiny.onnx"
    rec = export_onnx(tiny_model, path, parity=False).to_dict()
    return Path(rec["path"])


@pytest.fixture
def torch_runtime(tiny_model):
    from edgevit.artifact import Artifact
    from edgevit.runtimes import load_runtime

    art = Artifact(kind="torch", spec=tiny_model.edgevit_spec, model=tiny_model, source="fmnist-vit-tiny")
    rt = load_runtime("torch", art)  # threads=None: leave torch's process-wide setting alone
    yield rt
    rt.close()


# ------------------------------------------------------------------------------------------------ import


def test_importing_profile_does_not_import_torch():
    code = ("import sys, edgevit.profiling as p\n"
            "from edgevit.profiling import hardware, roofline, tables, system, latency\n"
            "p.load_profile('t4'); p.markdown_table([{'a': 1}], ['a']); p.system_stamp()\n"
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'timm') if m in sys.modules]\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------------------------- latency


def test_latency_stats_known_values():
    from edgevit.profiling import latency_stats

    s = latency_stats(np.arange(1, 101) * 1_000_000, batch=4)  # 1..100 ms
    assert s["runs"] == 100 and s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert s["p99_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert s["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s["throughput"] == pytest.approx(4 / 0.0505)
    with pytest.raises(ConfigError):
        latency_stats([])


def _check_row(row, batch):
    for k in STAT_KEYS:
        assert row[k] is not None, k
    assert row["batch"] == batch
    assert row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["throughput"] == pytest.approx(batch / row["median_ms"] * 1e3)
    assert row["input_shape"][0] == batch
    assert row["peak_rss_mb"] > 0
    assert row["warmup"]["runs"] >= 2
    for k in ("versions", "cpu", "threads", "timestamp_utc", "hostname"):
        assert k in row["system"], k
    assert row["runtime_info"]["runtime"] == row["runtime"]


def test_profile_torch_runtime_with_real_inputs(torch_runtime, real_batch, tiny_model):
    from edgevit.profiling import profile_runtime

    rows = profile_runtime(torch_runtime, batch_sizes=(1, 3), inputs=real_batch[:2], **FAST)
    assert [r["batch"] for r in rows] == [1, 3]
    for r in rows:
        _check_row(r, r["batch"])
        assert r["runs"] >= 5
        assert r["input_source"].startswith("provided")
        assert r["runtime"] == "torch" and r["model"] == "fmnist-vit-tiny"
        assert r["params"] == sum(p.numel() for p in tiny_model.parameters())
        assert r["macs"] == 29_232_960  # batch-1 MACs of fmnist-vit-tiny, computed by hand in test_macs.py
    assert "repeated" in rows[1]["input_source"]  # 2 real images tiled to a batch of 3


def test_profile_fixed_runs_and_random_inputs(torch_runtime):
    from edgevit.profiling import profile_runtime

    (row,) = profile_runtime(torch_runtime, runs=7, warmup_s=0.0, min_warmup=1, progress=False)
    assert row["runs"] == 7 and row["settings"]["runs"] == 7
    assert row["input_source"].startswith("random")


def test_profile_max_runs_caps_duration(torch_runtime):
    from edgevit.profiling import profile_runtime

    (row,) = profile_runtime(torch_runtime, warmup_s=0.0, min_warmup=1, duration_s=60.0, min_runs=3, max_runs=4)
    assert row["runs"] == 4


def test_profile_rejects_bad_arguments(torch_runtime):
    from edgevit.profiling import profile_runtime

    with pytest.raises(ConfigError, match="batch_sizes"):
        profile_runtime(torch_runtime, batch_sizes=(0,))
    with pytest.raises(ConfigError, match="runs"):
        profile_runtime(torch_runtime, runs=0)
    with pytest.raises(ConfigError, match="min_runs"):
        profile_runtime(torch_runtime, min_runs=10, max_runs=5)
    with pytest.raises(InputSpecError, match=r"\(N, 1, 28, 28\)"):
        profile_runtime(torch_runtime, inputs=np.zeros((2, 3, 28, 28), np.float32), **FAST)


def test_profile_onnxruntime_reports_file_size_and_macs(tiny_onnx):
    from edgevit.profiling import count_macs_onnx, profile_runtime
    from edgevit.runtimes import load_runtime

    rt = load_runtime("onnxruntime", tiny_onnx, threads=1)
    (row,) = profile_runtime(rt, batch_sizes=(2,), **FAST)
    _check_row(row, 2)
    assert row["runtime"] == "onnxruntime"
    assert row["file_size"] == tiny_onnx.stat().st_size
    assert row["macs"] == count_macs_onnx(tiny_onnx)
    assert row["artifact_kind"] == "onnx"


# -------------------------------------------------------------------------------------------------- system


def test_system_stamp_keys(monkeypatch):
    """Every stamp value equals what the machine itself says: /proc/cpuinfo, os, platform, importlib.metadata."""
    import platform
    import socket
    from importlib import metadata

    from edgevit.profiling import system_stamp

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    s = system_stamp(threads=3)
    assert s["python"] == platform.python_version() and s["hostname"] == socket.gethostname()
    assert s["platform"] == platform.platform() and s["machine"] == platform.machine()
    assert s["threads"]["requested"] == 3 and s["threads"]["env"]["OMP_NUM_THREADS"] == "3"
    assert "MKL_NUM_THREADS" not in s["threads"]["env"]
    if "torch" in sys.modules:
        import torch

        assert s["threads"]["torch_intra_op"] == torch.get_num_threads()
    assert s["cpu"]["logical_cores"] == os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert s["cpu"]["affinity_cores"] == len(os.sched_getaffinity(0))
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            assert s["cpu"]["model"] == names[0]
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), None)
        if flags is not None:
            assert set(s["cpu"]["isa"]) <= set(flags) and ("avx2" in s["cpu"]["isa"]) == ("avx2" in flags)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(next(line.split()[1] for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:")))
        assert s["memory_total_bytes"] == kb * 1024
    versions = s["versions"]
    for dist in ("numpy", "onnx", "onnxruntime", "timm", "edgevit"):
        assert versions[dist] == metadata.version(dist), dist
    if "torch" in sys.modules:
        assert versions["torch"] == sys.modules["torch"].__version__
    else:
        assert versions["torch"] == metadata.version("torch")
    try:
        assert versions["openvino"] == metadata.version("openvino")
    except metadata.PackageNotFoundError:
        assert "openvino" not in versions
    dt = datetime.datetime.fromisoformat(s["timestamp_utc"])
    assert dt.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - dt).total_seconds()) < 60
    assert isinstance(s["notes"], list)


def test_parse_nvpmodel():
    from edgevit.profiling.system import parse_nvpmodel

    assert parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN_SUPER\n2\n") == {
        "fan": "quiet", "name": "MAXN_SUPER", "id": 2}
    assert parse_nvpmodel("garbage") == {}


def test_jetson_branch_on_fake_sysfs(tmp_path, monkeypatch):
    """The Jetson probes read the real file layout; here it is faked under tmp_path."""
    from edgevit.profiling import system

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64\n")
    gpu = tmp_path / "devfreq" / "17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("1020000000\n")
    (gpu / "governor").write_text("nvhost_podgov\n")
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("gpu-thermal\n")
    (zone / "temp").write_text("41500\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    nvp = bindir / "nvpmodel"
    nvp.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN_SUPER'\necho 2\n")
    nvp.chmod(0o755)
    monkeypatch.setattr(system, "JETSON_RELEASE_FILE", release)
    monkeypatch.setattr(system, "DEVFREQ_DIR", tmp_path / "devfreq")
    monkeypatch.setattr(system, "THERMAL_DIR", tmp_path / "thermal")
    monkeypatch.setattr(system, "EMC_RATE_FILES", (tmp_path / "missing",))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    j = system.system_stamp()["jetson"]
    assert j["l4t_release"].startswith("R36")
    assert j["power_mode"] == {"name": "MAXN_SUPER", "id": 2}
    assert j["clocks"]["gpu_cur_freq_mhz"] == 1020.0
    assert j["temperature_c"] == {"gpu-thermal": 41.5}

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no nvpmodel: fail soft with a note
    notes: list[str] = []
    assert system.jetson_state(notes)["power_mode"] is None
    assert any("nvpmodel" in n for n in notes)


# ---------------------------------------------------------------------------------------------------- MACs


def test_macs_torch_and_onnx_agree(tiny_model, tiny_onnx):
    from edgevit.profiling import count_macs_onnx, count_macs_torch, onnx_cost

    t = count_macs_torch(tiny_model, tiny_model.edgevit_spec)
    o = count_macs_onnx(tiny_onnx)
    assert t == o == 29_232_960, (t, o)  # attention included on both sides, on every torch (see test_macs.py)
    cost = onnx_cost(tiny_onnx)
    assert cost["skipped"] == []
    assert set(cost["macs_by_op"]) >= {"MatMul", "Conv"}
    assert cost["weight_elements"] == pytest.approx(sum(p.numel() for p in tiny_model.parameters()), rel=0.05)


def test_count_macs_onnx_hand_built_graph(tmp_path):
    """MatMul [1,49,96]x[96,192] + Conv 3x3 (1→8 ch, 28x28 out) + Gemm [1,8]x[8,10], batch dynamic."""
    from onnx import TensorProto, helper, numpy_helper, save

    from edgevit.profiling import count_macs_onnx

    w_mm = numpy_helper.from_array(np.zeros((96, 192), np.float32), "w_mm")
    w_conv = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "w_conv")
    w_gemm = numpy_helper.from_array(np.zeros((8, 10), np.float32), "w_gemm")
    nodes = [
        helper.make_node("MatMul", ["tokens", "w_mm"], ["mm_out"]),
        helper.make_node("Conv", ["img", "w_conv"], ["conv_out"], pads=[1, 1, 1, 1]),
        helper.make_node("Gemm", ["vec", "w_gemm"], ["gemm_out"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", 49, 96]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 1, 28, 28]),
         helper.make_tensor_value_info("vec", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mm_out", "conv_out", "gemm_out")],
        [w_mm, w_conv, w_gemm],
    )
    path = tmp_path / "hand.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert count_macs_onnx(path) == 49 * 96 * 192 + 8 * 28 * 28 * 9 + 8 * 10


# ------------------------------------------------------------------------------------------------ hardware


def test_all_hardware_profiles_load_with_sources_and_tags():
    from edgevit.profiling import HARDWARE, list_profiles, load_profile

    assert EXPECTED_PROFILES <= set(HARDWARE.names())
    assert [p.name for p in list_profiles()] == HARDWARE.names()
    for name in HARDWARE.names():
        p = load_profile(name)
        assert p.name == name and p.title and p.description
        numbers = list(p.numbers())
        assert numbers, name
        for key, q in numbers:
            assert q.tag in ("S", "D", "R", "M"), f"{name}: {key}"
            assert q.source.strip(), f"{name}: {key}"
        for mode in p.modes.values():
            for dtype in ("fp32", "fp16", "int8"):
                assert dtype in mode.peak, f"{name} mode {mode.name} lacks {dtype}"
            assert mode.peak["fp32"].value and mode.peak["int8"].value, name
            assert mode.memory_bandwidth is not None
            if p.processor == "gpu":  # every GPU has FP16 and a known bandwidth
                assert mode.peak["fp16"].value and mode.memory_bandwidth.value, name
        assert p.peak_ops("int8") > p.peak_ops("fp32")


def test_orin_nano_has_original_and_super_modes():
    from edgevit.profiling import load_profile

    p = load_profile("jetson-orin-nano-8gb")
    assert {"original", "super"} <= set(p.modes)
    for dtype in ("fp32", "fp16", "int8"):
        assert p.peak_ops(dtype, "super") > p.peak_ops(dtype, "original")
    assert p.bandwidth("super") > p.bandwidth("original")
    assert p.mode_for_nvpmodel("MAXN_SUPER").name == "super"
    with pytest.raises(ConfigError, match="no mode 'turbo'"):
        p.mode("turbo")


def test_profiles_ship_inside_the_package():
    """edgevit/hardware_profiles (a symlink in the repo, a real folder in the wheel) must hold the YAML files."""
    import edgevit

    pkg_dir = Path(edgevit.__file__).resolve().parent / "hardware_profiles"
    assert pkg_dir.is_dir()
    assert {f.stem for f in pkg_dir.glob("*.yaml")} >= EXPECTED_PROFILES


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["peak"].update(fp32=1.5), "peak.fp32' is a bare number"),
    (lambda d: d["peak"]["fp32"].pop("source"), "missing source"),
    (lambda d: d["peak"]["fp32"].update(tag="X"), "peak.fp32.tag"),
    (lambda d: d["peak"]["fp32"].update(unit="GB/s"), "peak.fp32.unit"),
    (lambda d: d.update(name="other"), "key 'name'"),
    (lambda d: d.update(bogus=1), "bogus"),
    (lambda d: d.pop("memory_bandwidth"), "memory_bandwidth"),
    (lambda d: d.pop("title"), "key 'title': required key is missing"),
    (lambda d: d["peak"]["fp32"].update(value="8"), "key 'peak.fp32.value': expected a number, got str '8'"),
    (lambda d: d["peak"]["fp32"].update(value=-1), "key 'peak.fp32.value' must be ≥ 0, got -1"),
    (lambda d: d["peak"]["fp32"].update(source=" "), "key 'peak.fp32.source' must say where the number comes from"),
    (lambda d: d["peak"]["fp32"].update(unit="GB/s"), "allowed values: 'TFLOPS', 'GFLOPS', 'TOPS', 'GOPS'"),
    (lambda d: d["peak"].update(fp64=d["peak"]["fp32"]),
     "key 'peak.fp64': 'fp64' is not allowed; allowed values: 'fp32', 'fp16', 'bf16', 'int8', 'int4', 'fp8'"),
    (lambda d: d.update(processor="fpga"), "key 'processor': 'fpga' is not allowed; allowed values: 'gpu', 'cpu'"),
    (lambda d: d.update(modes={"max": {"peak": {"int8": 130}}}), "key 'modes.max.peak.int8' is a bare number (130)"),
    (lambda d: d.update(modes={"max": {"peak": {"int8": {"value": 1, "unit": "TOPS", "tag": "S", "src": "x"}}}}),
     "key 'modes.max.peak.int8' must have exactly value, unit, tag, source; missing source; unknown src"),
    (lambda d: d.update(default_mode="turbo"), "key 'default_mode': 'turbo' is not one of the modes (default)"),
])
def test_profile_validation_names_file_and_key(tmp_path, edit, message):
    import yaml

    from edgevit.profiling.hardware import PROFILES_DIR, load_profile

    doc = yaml.safe_load((PROFILES_DIR / "t4.yaml").read_text())
    edit(doc)
    path = tmp_path / "t4.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path))
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_profile_schema_is_the_validation():
    """The JSON schema of a profile file comes from the same models that validate it."""
    from edgevit.profiling.hardware import profile_schema

    schema = profile_schema()
    assert {"name", "title", "processor"} <= set(schema["required"]) and schema["additionalProperties"] is False
    number = schema["$defs"]["ComputeDoc"]
    assert set(number["required"]) == {"value", "unit", "tag", "source"}
    assert number["properties"]["unit"]["enum"] == ["TFLOPS", "GFLOPS", "TOPS", "GOPS"]


def test_unknown_profile_name_suggests():
    from edgevit.errors import RegistryError
    from edgevit.profiling import load_profile

    with pytest.raises(RegistryError, match="jetson-orin-nano-8gb"):
        load_profile("jetson-orin-nano")


# ------------------------------------------------------------------------------------------------ roofline


def test_roofline_compute_bound_scales_with_efficiency():
    from edgevit.profiling import load_profile, predict_latency

    p = load_profile("t4")
    macs = 1.26e9
    r = predict_latency(macs, 1e6, "t4", "fp32")
    assert r["prediction"] is True and r["method"] == "roofline"
    assert r["bound"] == "compute"
    assert r["latency_ms"] == pytest.approx(2 * macs / p.peak_ops("fp32") * 1e3)
    assert r["efficiency"] == {"compute": 1.0, "memory": 1.0}
    assert any("floor" in n for n in r["notes"])
    half = predict_latency(macs, 1e6, p, "fp32", efficiency=0.5)
    assert half["latency_ms"] == pytest.approx(2 * r["latency_ms"])
    assert predict_latency(macs, 1e6, p, "int8")["latency_ms"] < r["latency_ms"]
    assert r["sources"]["peak"] and "[S]" in r["sources"]["peak"]


def test_roofline_memory_bound_launch_overhead_and_error():
    from edgevit.profiling import load_profile, predict_latency

    p = load_profile("jetson-orin-nano-8gb")
    r = predict_latency(1e6, 1e9, p, "fp16", kernels=100, efficiency={"compute": 0.5, "memory": 0.8},
                        mode="original", measured_ms=30.0)
    assert r["bound"] == "memory" and r["mode"] == "original"
    assert r["memory_ms"] == pytest.approx(1e9 / (p.bandwidth("original") * 0.8) * 1e3)
    assert r["launch_ms"] == pytest.approx(100 * p.launch_overhead_s("original") * 1e3)
    assert r["latency_ms"] == pytest.approx(r["memory_ms"] + r["launch_ms"])
    assert r["error_pct"] == pytest.approx((r["latency_ms"] - 30.0) / 30.0 * 100)


def test_roofline_errors_and_missing_numbers():
    from edgevit.profiling import predict_latency

    with pytest.raises(ConfigError, match="no fp16 compute"):
        predict_latency(1e9, 1e6, "xeon-8380", "fp16")
    with pytest.raises(ConfigError, match="no peak for dtype 'fp8'"):
        predict_latency(1e9, 1e6, "t4", "fp8")
    with pytest.raises(ConfigError, match="efficiency"):
        predict_latency(1e9, 1e6, "t4", "fp32", efficiency=1.5)
    r = predict_latency(1e9, 1e12, "epyc-zen4-2core", "fp32")  # bandwidth unknown: compute only, said so
    assert r["memory_ms"] is None and any("memory term left out" in n for n in r["notes"])


def test_roofline_per_onnx_node(tiny_onnx):
    from edgevit.profiling import count_macs_onnx
    from edgevit.profiling.roofline import predict_onnx_latency

    r = predict_onnx_latency(tiny_onnx, "jetson-orin-nano-8gb", "fp16")
    assert r["prediction"] is True and r["macs"] == count_macs_onnx(tiny_onnx)
    assert r["kernels"] > 10 and r["latency_ms"] > r["launch_ms"] > 0
    assert any("scaled by 0.5" in n for n in r["notes"])  # fp16 vs the file's fp32 weights
    assert "MatMul" in r["ms_by_op"]


# -------------------------------------------------------------------------------------------------- tables


def test_markdown_table_formats_and_aligns():
    from edgevit.profiling import markdown_table

    rows = [{"name": "a|b", "ms": 1.23456, "n": 10, "x": None}, {"name": "c", "ms": 1234.5, "n": 7, "x": None}]
    text = markdown_table(rows, ["name", ("ms", "median ms"), "n", "x"])
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| name") and "median ms" in lines[0]
    assert lines[1].replace(" ", "").startswith("|---")
    assert "-:" in lines[1]  # numeric columns right-aligned
    assert "a\\|b" in lines[2] and "1.23" in lines[2]
    assert "1,23" in lines[3]  # thousands separator, no decimals
    assert "—" in lines[2]
    assert len({len(line) for line in lines}) == 1
    with pytest.raises(ValueError):
        markdown_table(rows, [])


def test_profile_table_rows():
    from edgevit.profiling import profile_table

    rows = [{"model": "m", "runtime": rt, "device": "cpu", "batch": b, "median_ms": 2.0 * b, "p90_ms": 2.5 * b,
             "p99_ms": 3.0 * b, "mean_ms": 2.2 * b, "runs": 100, "throughput": 500.0}
            for rt in ("torch", "onnxruntime") for b in (1, 8)]
    text = profile_table(rows)
    head = text.splitlines()[0]
    for col in ("runtime", "batch", "median ms", "p90 ms", "p99 ms", "mean ms", "runs", "img/s"):
        assert col in head
    assert len(text.splitlines()) == 2 + 4


def test_time_call_and_interleaved_passes():
    from edgevit.profiling import time_call, time_interleaved

    seen = []
    x = np.zeros((1, 3), np.float32)
    row = time_call(lambda a: seen.append(a.shape), x, warmup_s=0.0, min_warmup=2, runs=4)
    assert row["runs"] == 4 and len(seen) == 6 and row["median_ms"] >= 0  # 2 warm-up calls + 4 timed
    order = []
    res = time_interleaved({"a": lambda a: order.append("a"), "b": lambda a: order.append("b"),
                            "c": lambda a: order.append("c")}, x, passes=3, duration_s=0.001, warmup_s=0.0,
                           min_runs=2, max_runs=2)
    firsts = [order[i] for i in (0, 9, 18)]  # each pass: 3 calls × (1 warm-up + 2 timed)
    assert firsts == ["a", "b", "c"]  # the order rotates every pass
    for name in "abc":
        r = res[name]
        assert r["passes"] == 3 and len(r["pass_medians_ms"]) == 3 and r["pooled"]["runs"] == 6
        assert r["median_ms"] == float(np.median(r["pass_medians_ms"]))
    res = time_interleaved({"x": lambda a: None}, {"x": x}, passes=1, duration_s=0.001, warmup_s=0.0)
    assert res["x"]["pooled"]["runs"] >= 10
    with pytest.raises(ConfigError, match="passes must be ≥ 1"):
        time_interleaved({"x": lambda a: None}, x, passes=0)
    with pytest.raises(ConfigError, match="no calls"):
        time_interleaved({}, x)


# ------------------------------------------------------------------------------------------------ host (issue 15)
HOST_FIXTURES = Path(__file__).parent / "fixtures" / "host"


def _proc_cpuinfo_first(key: str) -> str | None:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() == key:
            return v.strip()
    return None


def test_host_profile_describes_this_machine():
    """Against this machine's real /proc/cpuinfo, /sys and affinity mask (no mocks)."""
    from edgevit.profiling import HARDWARE, load_profile

    assert "host" in HARDWARE
    p = load_profile("host")
    assert p.name == "host" and p.processor == "cpu"
    model = _proc_cpuinfo_first("model name")
    if model:  # x86: the brand string from /proc/cpuinfo is the model (a microarchitecture may be appended)
        assert p.cpu_model.startswith(model) and model in p.label
    cpus = sorted(os.sched_getaffinity(0))
    assert p.facts["logical_cpus"].value == len(cpus)
    cores = {(Path(f"/sys/devices/system/cpu/cpu{c}/topology/physical_package_id").read_text().strip(),
              Path(f"/sys/devices/system/cpu/cpu{c}/topology/core_id").read_text().strip()) for c in cpus}
    assert p.facts["cores"].value == len(cores) and f"{len(cores)} core" in p.label
    flags = set((_proc_cpuinfo_first("flags") or _proc_cpuinfo_first("Features") or "").split())
    for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512F"), ("avx512_vnni", "AVX512_VNNI"),
                       ("avx512_bf16", "AVX512_BF16"), ("avx512_fp16", "AVX512_FP16"), ("amx_int8", "AMX-INT8")):
        assert (name in p.isa) == (flag in flags), name
    l3 = Path(f"/sys/devices/system/cpu/cpu{cpus[0]}/cache/index3/size")
    if l3.exists():
        kb = int(l3.read_text().strip().rstrip("K"))
        q = p.facts["l3_cache"]
        assert q.value * (1024 if q.unit == "MB" else 1) == kb and q.tag == "M"
    # every number has a tag and a source; peaks say their formula; bandwidth is measured
    for key, q in p.numbers():
        assert q.tag in ("S", "D", "R", "M") and q.source.strip(), key
    fp32 = p.peak("fp32")
    clock = next(p.facts[k] for k in ("clock_max", "clock_base", "clock_current") if k in p.facts)
    per_cycle = fp32.value / (len(cores) * clock.value)
    assert f"{len(cores)} cores × {clock.value:g} GHz × {per_cycle:.0f} FLOP/cycle" in fp32.source
    assert p.peak_ops("int8") > p.peak_ops("fp32")
    fp16 = p.mode().peak["fp16"]
    assert (fp16.value is None) == (not flags & {"avx512_fp16", "amx_fp16", "asimdhp"})
    if fp16.value is None:
        assert "no FP16 arithmetic" in fp16.source
    bw = p.mode().memory_bandwidth
    assert bw.value > 0 and bw.tag == "M" and bw.source.startswith("measured: numpy.copyto")


def _describe(name: str):
    from edgevit.profiling.host import describe_cpu, parse_cpuinfo, parse_lscpu

    ci = HOST_FIXTURES / f"{name}.cpuinfo"
    ls = HOST_FIXTURES / f"{name}.lscpu"
    return describe_cpu(parse_cpuinfo(ci.read_text() if ci.exists() else ""),
                        parse_lscpu(ls.read_text()) if ls.exists() else None,
                        source=f"{name}.cpuinfo")


def test_host_parses_recorded_intel_xeon_with_amx():
    from edgevit.profiling.host import derive_peaks

    d = _describe("xeon-8573c-amx-2vcpu")  # lscpu only: 2 vCPUs = 1 core × 2 threads, CPU max MHz 2300
    assert d.model == "INTEL(R) XEON(R) PLATINUM 8573C" and d.vendor == "GenuineIntel" and d.arch == "x86"
    assert {"AVX-512F", "AVX512_VNNI", "AVX_VNNI", "AVX512_BF16", "AVX512_FP16", "AMX-INT8", "AMX-BF16"} <= set(
        d.features) and "AMX-FP16" not in d.features
    assert d.logical_cpus.value == 2 and d.cores.value == 1 and d.clock.value == 2.3
    assert d.clock.source == "lscpu 'CPU max MHz'"
    assert d.label == "host (INTEL(R) XEON(R) PLATINUM 8573C, 1 core, AVX-512/VNNI/BF16/FP16/AMX)"
    assert d.caches["l2_cache"].value == 2 and d.caches["l3_cache"].value == 260
    pk = derive_peaks(d)
    assert pk["fp32"].value == pytest.approx(1 * 2.3 * 64) and "2 FMA units" in pk["fp32"].source
    assert pk["int8"].value == pytest.approx(1 * 2.3 * 2048) and "AMX-INT8" in pk["int8"].source
    assert pk["bf16"].value == pytest.approx(1 * 2.3 * 1024) and "AMX-BF16" in pk["bf16"].source
    assert pk["fp16"].value == pytest.approx(1 * 2.3 * 128) and "AVX512_FP16" in pk["fp16"].source


def test_host_parses_recorded_amd_epyc_zen4():
    from edgevit.profiling.host import derive_peaks

    d = _describe("epyc-zen4-2vcpu")  # this build machine, recorded: no cpufreq, no lscpu max MHz
    assert d.model == "AMD EPYC (Zen 4)" and d.vendor == "AuthenticAMD"
    assert d.clock is d.clocks["current"] and "'cpu MHz'" in d.clock.source and 2 < d.clock.value < 4
    assert "AVX512_FP16" not in d.features and d.isa_short == "AVX-512/VNNI/BF16"
    pk = derive_peaks(d)
    assert pk["fp32"].value == pytest.approx(2 * d.clock.value * 32, abs=0.1)
    assert "double-pumped" in pk["fp32"].source
    assert pk["int8"].value == pytest.approx(4 * pk["fp32"].value, abs=0.5)
    assert pk["fp16"].value is None and "no AVX512_FP16, no AMX-FP16" in pk["fp16"].source
    assert pk["bf16"].value == pytest.approx(2 * pk["fp32"].value, abs=0.5)


def test_host_parses_recorded_raspberry_pi5_cortex_a76():
    from edgevit.profiling import load_profile
    from edgevit.profiling.host import derive_peaks

    d = _describe("rpi5-cortex-a76")
    assert d.arch == "arm" and d.model == "Cortex-A76" and d.vendor == "ARM"
    assert {"NEON", "dotprod", "FP16 (asimdhp)"} <= set(d.features) and "i8mm" not in d.features
    assert d.cores.value == 4 and d.clock.value == 2.4
    pk = derive_peaks(d)
    # the same numbers as the hand-written raspberry-pi-5 profile (0.154 TFLOPS FP32, ~0.61 TOPS SDOT)
    rpi = load_profile("raspberry-pi-5")
    assert pk["fp32"].value / 1e3 == pytest.approx(rpi.peak("fp32").value, rel=0.01)
    assert pk["int8"].value == pytest.approx(4 * 153.6) and "dotprod" in pk["int8"].source
    assert pk["fp16"].value == pytest.approx(2 * 153.6) and pk["bf16"].value is None


def test_list_targets_shows_host_first_and_recipes_accept_host(capsys):
    from edgevit.cli import main
    from edgevit.profiling import load_profile
    from edgevit.recipe import from_raw

    assert main(["list", "targets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    host = load_profile("host")
    assert lines[0].startswith("host ") and host.cpu_model in lines[0] and "ISA " in lines[0]
    assert not any(ln.startswith("host ") for ln in lines[1:])
    r = from_raw({"model": "fmnist-vit-tiny", "stages": ["eval"], "targets": ["host", "raspberry-pi-5"]})
    assert r.targets == ["host", "raspberry-pi-5"]


def test_profile_stage_compares_measurement_with_the_detected_host_only(tmp_path, fmnist_test_small):
    import json

    from edgevit import pipeline
    from edgevit.profiling import load_profile
    from edgevit.recipe import from_raw

    raw = {"name": "host", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 8, "batch_size": 8},
           "runtimes": ["onnxruntime"], "targets": ["raspberry-pi-5"],
           "stages": [{"stage": "export_onnx", "parity_samples": 4},
                      {"stage": "profile", "batch": [1], "duration_s": 0.05, "warmup_s": 0.02, "min_runs": 3,
                       "include_source": False},
                      {"stage": "report"}]}
    pipeline.run(from_raw(raw), tmp_path)
    rec = json.loads(next(tmp_path.glob("*_profile/record.json")).read_text())
    preds = rec["metrics"]["predictions"]
    host = load_profile("host")
    model = _proc_cpuinfo_first("model name") or host.cpu_model
    host_rows = [p for p in preds if p["target"] == "host"]
    assert host_rows and all(model in p["target_label"] and p["cpu_model"] == host.cpu_model for p in host_rows)
    measured = [p for p in preds if p.get("measured_ms") is not None]
    assert measured and all(p["target"] == "host" for p in measured)  # other targets: predictions only
    assert {p["target"] for p in preds} == {"host", "raspberry-pi-5"}
    if "epyc-zen4-2core" not in host.label:
        assert "epyc-zen4-2core" not in json.dumps(rec)
    md = (tmp_path / "report.md").read_text()
    assert host.label in md and "epyc-zen4-2core" not in md
