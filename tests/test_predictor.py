"""The latency predictor with stated error (edgevit.profiling.predictor): op classes, the launch-bound label, the
onnxruntime profile parser on a real profile, fit → evaluate → save → predict on small real ONNX models measured
here, and ``edgevit predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgevit.errors import ConfigError

# ------------------------------------------------------------------------------------ small real ONNX models


def _save(path, nodes, inits, x_shape, y_name="y"):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array((rng.standard_normal(s) * 0.05).astype(np.float32), n) for n, s in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def mlp(path, tokens: int, dim: int, depth: int):
    """``depth`` blocks of LayerNorm → MatMul(dim, 4·dim) → Gelu-free Relu → MatMul(4·dim, dim) → Add, plus a
    token-mixing Softmax(x·xᵀ)·x: matmul, batched matmul, normalisation, softmax and element-wise nodes."""
    from onnx import helper

    nodes, inits, x = [], {}, "x"
    for i in range(depth):
        inits.update({f"g{i}": (dim,), f"b{i}": (dim,), f"w1_{i}": (dim, 4 * dim), f"w2_{i}": (4 * dim, dim)})
        nodes += [helper.make_node("LayerNormalization", [x, f"g{i}", f"b{i}"], [f"n{i}"], axis=-1),
                  helper.make_node("MatMul", [f"n{i}", f"w1_{i}"], [f"h{i}"]),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"]),
                  helper.make_node("MatMul", [f"r{i}", f"w2_{i}"], [f"o{i}"]),
                  helper.make_node("Add", [x, f"o{i}"], [f"a{i}"]),
                  helper.make_node("Transpose", [f"a{i}"], [f"t{i}"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", [f"a{i}", f"t{i}"], [f"s{i}"]),
                  helper.make_node("Softmax", [f"s{i}"], [f"p{i}"], axis=-1),
                  helper.make_node("MatMul", [f"p{i}", f"a{i}"], [f"z{i}"])]
        x = f"z{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    return _save(path, nodes, inits, (1, tokens, dim))


def convnet(path, size: int, channels: int, depth: int, depthwise: bool):
    """A stem Conv then ``depth`` blocks of (depthwise 3×3 →) pointwise Conv → BatchNorm-free Relu, global pool."""
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "ws"], ["c"], pads=[1, 1, 1, 1])]
    inits, x = {"ws": (channels, 3, 3, 3)}, "c"
    for i in range(depth):
        if depthwise:
            inits[f"dw{i}"] = (channels, 1, 3, 3)
            nodes.append(helper.make_node("Conv", [x, f"dw{i}"], [f"d{i}"], group=channels, pads=[1, 1, 1, 1]))
            x = f"d{i}"
        inits[f"pw{i}"] = (channels, channels, 1, 1)
        nodes += [helper.make_node("Conv", [x, f"pw{i}"], [f"p{i}"]), helper.make_node("Relu", [f"p{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    return _save(path, nodes, inits, (1, 3, size, size))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("predictor")
    return {"mlp_a": mlp(d / "mlp_a.onnx", 64, 128, 4), "conv_a": convnet(d / "conv_a.onnx", 56, 64, 4, False),
            "dw_a": convnet(d / "dw_a.onnx", 56, 96, 4, True), "mlp_b": mlp(d / "mlp_b.onnx", 96, 96, 3),
            "dw_b": convnet(d / "dw_b.onnx", 40, 64, 3, True)}


@pytest.fixture(scope="module")
def measured(models):
    from edgevit.profiling.ort_nodes import measure_interleaved

    return measure_interleaved(models, threads=1, passes=2, runs=4, warmup=1)


@pytest.fixture(scope="module")
def calibration(measured, models):
    from edgevit.profiling.predictor import evaluate, fit_calibration

    fit = ["mlp_a", "conv_a", "dw_a"]
    cal = fit_calibration({n: measured[n] for n in fit}, models, "host", threads=1, command="pytest")
    cal.evaluation = evaluate(cal, {n: measured[n]["wall_ms"] for n in ("mlp_b", "dw_b")}, models, "host")
    return cal


# ------------------------------------------------------------------------------------------------- op classes


def test_op_class_splits_matmuls_and_convolutions():
    from edgevit.profiling.roofline import op_class

    assert op_class("MatMul", [(1, 197, 192), (192, 576)], [False, True]) == "matmul"
    assert op_class("MatMul", [(1, 3, 197, 64), (1, 3, 64, 197)], [False, False]) == "batched_matmul"
    # a runtime profile lists no constness: a rank ≥ 3 second operand is an activation
    assert op_class("FusedMatMul", [(1, 3, 197, 64), (1, 3, 197, 64)]) == "batched_matmul"
    assert op_class("Gemm", [(1, 192)]) == "matmul"
    assert op_class("Conv", [(1, 576, 7, 7), (576, 1, 5, 5)]) == "depthwise_conv"
    assert op_class("Conv", [(1, 3, 224, 224), (192, 3, 16, 16)]) == "conv"
    assert op_class("Conv", [(1, 1, 28, 28), (8, 1, 3, 3)]) == "conv"  # one input channel is not depthwise
    assert op_class("SkipLayerNormalization") == "normalization"
    assert op_class("ReorderInput") == "data_movement"
    assert op_class("Reshape") == "view" and op_class("Erf") == "elementwise"


def test_elementwise_after_a_product_is_an_epilogue(models):
    from edgevit.profiling.macs import onnx_cost
    from edgevit.profiling.roofline import classify_nodes

    nodes = onnx_cost(models["mlp_a"])["nodes"]
    classes = dict(zip([n["op"] + str(i) for i, n in enumerate(nodes)], classify_nodes(nodes)))
    # block 0: LayerNorm, MatMul, Relu (fed by the MatMul: epilogue), MatMul, Add (residual onto it: epilogue),
    # Transpose, MatMul of two activations, Softmax, MatMul
    assert list(classes.values())[:9] == ["normalization", "matmul", "epilogue", "matmul", "epilogue",
                                          "data_movement", "batched_matmul", "softmax", "batched_matmul"]
    conv = classify_nodes(onnx_cost(models["conv_a"])["nodes"])
    assert conv == ["conv"] + ["conv", "epilogue"] * 4 + ["pool_reduce"]


# ------------------------------------------------------------------------------------------------ bound label


def test_small_model_on_jetson_is_launch_bound(models):
    """The known fault: a prediction dominated by per-kernel launches was labelled 'memory'."""
    from edgevit.profiling import load_profile, predict_latency
    from edgevit.profiling.roofline import predict_onnx_latency

    r = predict_onnx_latency(models["dw_b"], "jetson-orin-nano-8gb", "fp16")
    by = r["time_by_bound_ms"]
    assert r["bound"] == "launch" and by["launch"] > max(by["compute"], by["memory"])
    assert r["memory_ms"] > r["compute_ms"]  # what the old label looked at
    assert sum(by.values()) == pytest.approx(r["latency_ms"])
    overhead_ms = load_profile("jetson-orin-nano-8gb").launch_overhead_s() * 1e3
    assert r["launch_ms"] == pytest.approx(r["kernels"] * overhead_ms)
    # the whole-model roofline too: 500 launches of 10 us outweigh 1 MB of traffic
    assert predict_latency(1e6, 1e6, "jetson-orin-nano-8gb", "fp16", kernels=500)["bound"] == "launch"
    assert predict_latency(1e6, 1e9, "jetson-orin-nano-8gb", "fp16", kernels=5)["bound"] == "memory"
    # the same graph without launch overhead (a CPU profile gives none): no launch time, a compute/memory bound
    pi = predict_onnx_latency(models["conv_a"], "raspberry-pi-5", "fp32")
    assert pi["launch_ms"] == 0 and pi["bound"] in ("compute", "memory")


def test_class_efficiency_scales_each_class(models):
    from edgevit.profiling.roofline import predict_onnx_latency

    base = predict_onnx_latency(models["mlp_a"], "raspberry-pi-5", "fp32")
    slow = predict_onnx_latency(models["mlp_a"], "raspberry-pi-5", "fp32",
                                class_efficiency={"matmul": {"compute": 0.5, "memory": 0.5}})
    assert slow["ms_by_class"]["matmul"] == pytest.approx(2 * base["ms_by_class"]["matmul"])
    assert slow["ms_by_class"]["softmax"] == pytest.approx(base["ms_by_class"]["softmax"])
    with pytest.raises(ConfigError, match="unknown op class 'gemm'"):
        predict_onnx_latency(models["mlp_a"], "raspberry-pi-5", class_efficiency={"gemm": {"compute": 0.5}})


# ------------------------------------------------------------------------------------- onnxruntime profiler


def test_ort_profile_parsed_from_a_real_run(models, measured):
    from edgevit.profiling.ort_nodes import class_times_ms, kernel_medians, parse_ort_profile
    from edgevit.profiling.predictor import measured_class_ms, node_terms

    m = measured["dw_a"]
    assert m["profiled_runs"] == 2 * 4 and m["wall_ms"] > 0 and len(m["pass_medians_ms"]) == 2
    assert 0 < m["quiet_ms"] <= m["wall_ms"] and len(m["pass_minima_ms"]) == 2
    assert {"conv", "depthwise_conv"} <= set(m["class_ms"])
    assert m["class_ms"]["_kernels"] >= m["class_ms"]["conv"] > 0
    assert len(m["load_avg"]) == 2 and all(k["us"] >= 0 for k in m["kernels"])
    # onnxruntime fuses each Relu into its Conv: nothing is left to run as an epilogue, and the node names map back
    terms = node_terms(models["dw_a"], "host")
    assert terms["classes"].count("epilogue") == 4
    by_class = measured_class_ms(m, terms)
    assert by_class.get("epilogue", 0.0) < 0.5 * by_class["conv"]
    assert {"matmul", "batched_matmul", "softmax", "normalization"} <= set(measured["mlp_a"]["class_ms"])
    with pytest.raises(ConfigError, match="model_run"):
        parse_ort_profile([{"cat": "Node", "name": "a_kernel_time", "ts": 0, "dur": 1}])
    runs = parse_ort_profile([
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        {"cat": "Node", "name": "mm_kernel_time", "ts": 5, "dur": 40,
         "args": {"op_name": "MatMul", "input_type_shape": [{"float": [1, 8, 16]}, {"float": [16, 32]}]}},
        {"cat": "Node", "name": "mm_fence_before", "ts": 4, "dur": 0, "args": {"op_name": "MatMul"}},
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        {"cat": "Node", "name": "sm_kernel_time", "ts": 210, "dur": 7, "args": {"op_name": "Softmax"}}])
    assert [[k["name"] for k in r] for r in runs] == [["mm"], ["sm"]]
    assert runs[0][0]["class"] == "matmul" and runs[0][0]["input_shapes"] == [(1, 8, 16), (16, 32)]
    kernels = kernel_medians(runs)  # a kernel missing from a run counts 0 there: medians of [40, 0] and [0, 7]
    assert [(k["name"], k["us"]) for k in kernels] == [("mm", 20.0), ("sm", 3.5)]
    assert class_times_ms(kernels) == pytest.approx({"matmul": 0.020, "softmax": 0.0035, "_kernels": 0.0235})
    assert class_times_ms(kernels, {"sm": "epilogue"})["epilogue"] == pytest.approx(0.0035)


# --------------------------------------------------------------------------------------------- fit and predict


def test_fit_beats_the_datasheet_roofline_and_states_its_error(calibration, measured, models):
    from edgevit.profiling.roofline import predict_onnx_latency

    cal = calibration
    assert set(cal.provenance.fit_models) == {"mlp_a", "conv_a", "dw_a"}
    assert {"matmul", "batched_matmul", "conv", "depthwise_conv", "softmax"} <= set(cal.efficiency)
    assert cal.node_overhead_us >= 0 and cal.provenance.threads == 1 and cal.provenance.runtime_version
    assert [m.model for m in cal.evaluation.models] == ["mlp_b", "dw_b"]
    # the fitted factors describe the fitting models far better than peak numbers do
    fit_err = np.median([abs(m.error_pct) for m in cal.fit_error.models])
    floor_err = np.median([abs(predict_onnx_latency(models[n], "host")["latency_ms"] - measured[n]["wall_ms"])
                           / measured[n]["wall_ms"] * 100 for n in cal.provenance.fit_models])
    assert fit_err < floor_err
    for m in cal.evaluation.models:
        assert m.error_pct == pytest.approx((m.predicted_ms - m.measured_ms) / m.measured_ms * 100, abs=0.01)
    assert cal.evaluation.median_abs_error_pct == pytest.approx(np.median([abs(m.error_pct)
                                                                           for m in cal.evaluation.models]), abs=0.01)


def test_calibration_file_roundtrip_and_predicted_rows(calibration, models, tmp_path):
    from edgevit.profiling.predictor import find_calibration, load_calibration, predict

    path = calibration.save(tmp_path / "fitted" / "here.json")
    cal = load_calibration(path)
    assert cal == calibration
    found, where = find_calibration(__import__("edgevit.profiling", fromlist=["x"]).load_profile("host"),
                                    path.parent)
    assert found == calibration and where == str(path)
    rows = predict(models["mlp_b"], ["host", "jetson-orin-nano-8gb"], ["fp32", "fp16"], calibration=path,
                   measured_ms=2.0)
    by = {(r["target"], r["dtype"]): r for r in rows}
    assert len(rows) == 4
    host = by[("host", "fp32")]
    assert host["calibrated"] and host["expected_error_pct"] == calibration.evaluation.median_abs_error_pct
    assert "not used in fitting" in host["expected_error"] and host["calibration"]["file"] == str(path)
    assert host["error_pct"] == pytest.approx((host["latency_ms"] - 2.0) / 2.0 * 100)
    assert host["latency_ms"] == pytest.approx(
        next(m.predicted_ms for m in calibration.evaluation.models if m.model == "mlp_b"), rel=1e-3)
    for key in (("jetson-orin-nano-8gb", "fp32"), ("jetson-orin-nano-8gb", "fp16")):
        r = by[key]
        assert not r["calibrated"] and r["expected_error_pct"] is None and "untested" in r["expected_error"]
        assert "target_label" not in r and "error_pct" not in r
    assert by[("host", "fp16")]["expected_error_pct"] is None  # fitted on fp32 only (or no fp16 arithmetic here)


def test_bad_calibration_files(tmp_path, calibration):
    from edgevit.profiling.predictor import load_calibration

    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration(tmp_path / "none.json")
    doc = calibration.model_dump()
    doc["efficiency"]["gemm"] = {"compute": 0.5, "memory": 0.5}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="unknown op class"):
        load_calibration(tmp_path / "a.json")
    doc = calibration.model_dump()
    del doc["node_overhead_us"]
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="node_overhead_us"):
        load_calibration(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_calibration(tmp_path / "c.json")


# -------------------------------------------------------------------------------------------------------- CLI


def test_cli_predict_table_and_json(models, calibration, tmp_path, capsys):
    from edgevit.cli import main

    cal = calibration.save(tmp_path / "cal.json")
    out = tmp_path / "p.json"
    rc = main(["predict", str(models["dw_b"]), "--target", "jetson-orin-nano-8gb,raspberry-pi-5,host",
               "--dtype", "fp32,int8", "--calibration", str(cal), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    header = text.splitlines()[0]
    for col in ("target", "dtype", "bound", "predicted ms", "expected error"):
        assert col in header
    rows = json.loads(out.read_text())["predictions"]
    assert [(r["target"], r["dtype"]) for r in rows] == [(t, d) for t in ("jetson-orin-nano-8gb", "raspberry-pi-5",
                                                                          "host") for d in ("fp32", "int8")]
    jetson = rows[0]
    assert jetson["bound"] == "launch" and "| launch" in text.splitlines()[2]
    assert all("expected_error" in r for r in rows)
    host = rows[4]
    assert host["calibrated"] and f"±{host['expected_error_pct']:.0f}%" in text
    assert "unknown (untested)" in text and "host = host (" in text


def test_cli_predict_refuses_bad_input(tmp_path, models, capsys):
    from edgevit.cli import main

    assert main(["predict", str(tmp_path / "m.xml")]) == 2
    assert "reads an ONNX file" in capsys.readouterr().err
    assert main(["predict", str(models["dw_b"]), "--target", "jetson-orin-nano"]) == 2
    assert "jetson-orin-nano-8gb" in capsys.readouterr().err
    assert main(["predict", str(models["dw_b"]), "--target", "host,"]) == 2
    assert "no empty items" in capsys.readouterr().err
