"""INT8 quantisation (edgevit.methods.quantize): calibration data, config, guardrails per backend (inspecting the produced
graphs), SmoothQuant on/off, a missing backend, and the speed gate's decision rule. Tiny model, 32 real images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import ConfigError, DataError, MissingBackendError

CALIB_N = 32
ONNX_GUARDED = {"softmax": {"Softmax"}, "layernorm": {"LayerNormalization"}}


@pytest.fixture(scope="module")
def calib(tiny_model, fmnist_test_small):
    from edgevit.methods.quantize import calibration_data

    x, _where = calibration_data(tiny_model.edgevit_spec, "fashion-mnist", samples=CALIB_N)
    return x


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory, tiny_model, fmnist_test_small):
    pytest.importorskip("openvino")
    from edgevit.formats.openvino.export import export_openvino

    out = tmp_path_factory.mktemp("ir") / "tiny.xml"
    export_openvino(tiny_model, out, parity_images=fmnist_test_small.subset(range(8)))
    return out


def _qfile(backend, src, calib, tmp_path, name="q", smooth_quant=True, **cfg):
    from edgevit.methods.quantize.backends import Settings, quantize_file
    from edgevit.methods.quantize.config import QuantizeConfig
    from edgevit.runtimes import open_artifact

    art = open_artifact(src)
    suffix = ".xml" if backend == "openvino" else ".onnx"
    conf = QuantizeConfig(backend=backend, **cfg)
    conf.validate()
    info = quantize_file(backend, Path(src), calib, conf, Settings(smooth_quant=smooth_quant),
                         tmp_path / f"{name}{suffix}", spec=art.spec, source=art.source)
    return tmp_path / f"{name}{suffix}", info


# ------------------------------------------------------------------------------------------ inspection helpers


def _onnx_graph(path):
    import onnx

    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    inits = {t.name for t in m.graph.initializer}
    return m, producer, inits


def _onnx_q_inputs(path) -> dict[str, str]:
    """{node name: op type} of nodes with an input fed by DequantizeLinear(QuantizeLinear(activation))."""
    m, producer, _inits = _onnx_graph(path)
    out = {}
    for n in m.graph.node:
        for i in n.input:
            dq = producer.get(i)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    out[n.name] = n.op_type
    return out


def _onnx_weight_q(path) -> dict[str, str]:
    """{node name: op type} of nodes with a DequantizeLinear of a constant (quantised weight) input."""
    m, producer, inits = _onnx_graph(path)
    return {n.name: n.op_type for n in m.graph.node for i in n.input
            if producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" and producer[i].input[0] in inits}


def _residual_adds(path) -> set[str]:
    m, producer, inits = _onnx_graph(path)
    consts = inits | {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}

    def const(name):
        p = producer.get(name)
        return name in consts or (p is not None and p.op_type == "DequantizeLinear" and p.input[0] in consts)

    gelu_adds = {c.name for e in m.graph.node if e.op_type == "Erf" for c in m.graph.node if e.output[0] in c.input}
    return {n.name for n in m.graph.node if n.op_type == "Add" and not any(const(i) for i in n.input)} - gelu_adds


def _ov_q_inputs(path) -> dict[str, str]:
    """{friendly name: op type} of OpenVINO ops with an input fed by a FakeQuantize of an activation."""
    import openvino as ov

    m = ov.Core().read_model(str(path))
    out = {}
    for op in m.get_ordered_ops():
        for i in range(op.get_input_size()):
            src = op.input_value(i).get_node()
            if src.get_type_name() == "FakeQuantize" and src.input_value(0).get_node().get_type_name() != "Constant":
                out[op.get_friendly_name()] = op.get_type_name()
    return out


# --------------------------------------------------------------------------------------------- calibration data


def test_calibration_default_is_300_class_balanced_real_train_images(tiny_model, fmnist_test_small):
    from edgevit.formats.tensorrt.calib import calibration_images
    from edgevit.methods.quantize import DEFAULT_SAMPLES, calibration_data

    x, where = calibration_data(tiny_model.edgevit_spec, "fashion-mnist")  # the CLI's and the recipe's dataset
    assert DEFAULT_SAMPLES == 300 and x.shape == (300, 1, 28, 28) and x.dtype == np.float32
    assert where["dataset"] == "fashion-mnist" and where["split"] == "train" and where["samples"] == 300
    assert set(where["classes"].values()) == {30}
    # the TensorRT bundle's calibration cache takes its images from the same helper
    y, where_trt = calibration_images(tiny_model.edgevit_spec, dataset="fashion-mnist", samples=300)
    np.testing.assert_array_equal(x, y)
    assert where_trt["selection"] == where["selection"]


def test_calibration_accepts_raw_and_preprocessed_images(tiny_model, fmnist_test_small, real_batch):
    from edgevit.methods.quantize import calibration_data

    spec = tiny_model.edgevit_spec
    raw, where = calibration_data(spec, fmnist_test_small.images[:8])
    np.testing.assert_allclose(raw, real_batch, atol=1e-6)
    same, _ = calibration_data(spec, real_batch)
    np.testing.assert_array_equal(same, real_batch)
    sub, where = calibration_data(spec, fmnist_test_small, samples=20)
    assert len(sub) == 20 and where["dataset"] == "fashion-mnist"


@pytest.mark.parametrize("empty", [np.zeros((0, 28, 28), np.uint8), np.zeros((0, 1, 28, 28), np.float32), []])
def test_empty_calibration_set_is_an_error(tiny_model, empty):
    from edgevit.methods.quantize import calibration_data

    with pytest.raises(DataError, match="calibration set is empty"):
        calibration_data(tiny_model.edgevit_spec, empty)


def test_empty_calibration_dataset_is_an_error(tiny_model, fmnist_test_small):
    from edgevit.methods.quantize import calibration_data

    with pytest.raises(DataError, match="is empty"):
        calibration_data(tiny_model.edgevit_spec, fmnist_test_small.subset(np.array([], dtype=np.int64)))


@pytest.mark.parametrize("shape,dtype,match", [
    ((4, 3, 32, 32), np.float32, r"must have shape \(N, 1, 28, 28\).*got \(4, 3, 32, 32\)"),
    ((4, 28, 28), np.float32, r"must have shape \(N, 1, 28, 28\)"),
    ((4, 28, 28, 2), np.uint8, r"\[N,H,W\] \(grey\) or \[N,H,W,C\] with C in 1, 3; got shape \(4, 28, 28, 2\)"),
    ((4, 1, 1, 28, 28), np.uint8, r"got shape \(4, 1, 1, 28, 28\)"),
])
def test_wrong_shaped_calibration_images_are_an_error(tiny_model, shape, dtype, match):
    from edgevit.methods.quantize import calibration_data

    with pytest.raises(DataError, match=match):
        calibration_data(tiny_model.edgevit_spec, np.zeros(shape, dtype))


def test_wrong_shaped_calibration_images_fail_quantize_and_tensorrt(tiny_model, tiny_onnx, tmp_path):
    from edgevit.formats.tensorrt.export import _calibration_inputs
    from edgevit.methods.quantize import QuantizeConfig, quantize

    bad = np.zeros((8, 3, 28, 28), np.float32)
    with pytest.raises(DataError, match="preprocessed calibration images must have shape"):
        quantize(tiny_onnx[0], bad, out_dir=tmp_path, config=QuantizeConfig(backend="onnxruntime"))
    with pytest.raises(DataError, match="TensorRT INT8 calibration: preprocessed calibration images"):
        _calibration_inputs(tiny_model.edgevit_spec, "fashion-mnist", "train", 300, bad, None, 0)
    with pytest.raises(DataError, match="calibration set is empty"):
        quantize(tiny_onnx[0], np.zeros((0, 1, 28, 28), np.float32), out_dir=tmp_path,
                 config=QuantizeConfig(backend="onnxruntime"))


# ----------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw,match", [
    ({"backend": "tflite"}, "backend"), ({"budget": float("nan")}, "budget"),
    ({"calib_samples": 0}, "calib_samples"), ({"backend": "openvino", "calibration_method": "entropy"}, "entropy"),
    ({"float_precisions": ["bf16"]}, "float_precisions"), ({"ignored_patterns": ["("]}, "regular expression"),
    ({"smooth_quant_alpha": 1.5}, "smooth_quant_alpha"),
])
def test_config_validation(kw, match):
    from edgevit.methods.quantize import QuantizeConfig

    with pytest.raises(ConfigError, match=match):
        QuantizeConfig(**kw).validate()


def test_stage_config_from_recipe_dict():
    from edgevit.config import from_dict
    from edgevit.stages import STAGES

    cls = STAGES.get("quantize").Config
    c = from_dict(cls, {"backend": "onnxruntime", "budget": 0.5, "guard_softmax": False}, "stages.1")
    assert c.backend == "onnxruntime" and c.guard_softmax is False and c.calib is None
    with pytest.raises(ConfigError, match="stages.1: unknown key 'guard_softmaxx'"):
        from_dict(cls, {"guard_softmaxx": False}, "stages.1")


def test_package_import_is_light():
    import subprocess

    code = ("import sys, edgevit.methods.quantize, edgevit.cli.quantize, edgevit.stages.quantize; "
            "print(','.join(m for m in ('torch', 'nncf', 'openvino', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


# -------------------------------------------------------------------------------------------- missing backend


@pytest.mark.parametrize("backend,module", [("openvino", "nncf"), ("onnxruntime", "onnxruntime.quantization"),
                                            ("nncf-onnx", "nncf")])
def test_backend_not_installed_names_package_and_extra(monkeypatch, tiny_onnx, tmp_path, backend, module):
    """A backend whose package cannot be imported (blocked in sys.modules, as when it is not installed)."""
    from edgevit.methods.quantize import QuantizeConfig, backend_available, quantize

    monkeypatch.setitem(sys.modules, module, None)
    ok, why = backend_available(backend)
    assert not ok and module.split(".")[0] in why and "pip install 'edgevit[" in why
    with pytest.raises(MissingBackendError, match=rf"quantisation backend '{backend}' is not installed.*pip install"):
        quantize(tiny_onnx[0], out_dir=tmp_path, config=QuantizeConfig(backend=backend))


# ------------------------------------------------------------------------------- guardrails: onnxruntime (QDQ)


@pytest.fixture(scope="module")
def ort_default(tmp_path_factory, tiny_onnx, calib):
    pytest.importorskip("onnxruntime.quantization")
    return _qfile("onnxruntime", tiny_onnx[0], calib, tmp_path_factory.mktemp("ortq"))


def test_ort_default_guardrails_keep_vit_ops_float(ort_default, tiny_onnx):
    from edgevit.methods.quantize import graph

    path, info = ort_default
    q = _onnx_q_inputs(path)
    assert sum(op == "MatMul" for op in q.values()) >= 24, "the linear layers are quantised"
    for op in ("Softmax", "LayerNormalization", "Erf"):
        assert op not in q.values(), f"a QuantizeLinear/DequantizeLinear pair feeds a {op}"
    import onnx

    model = onnx.load(str(path))
    gelu = graph.onnx_guarded_nodes(model, {"gelu": True})["gelu"]
    assert gelu and not set(gelu) & set(q), "QDQ feeds the GELU's ops"
    assert not _residual_adds(path) & set(q), "QDQ feeds a residual Add"
    fp = onnx.load(str(tiny_onnx[0]))
    stem, head = graph.onnx_patch_embed(fp), graph.onnx_head(fp)
    assert len(stem) == 3 and len(head) == 1
    assert not (set(stem) | set(head)) & (set(q) | set(_onnx_weight_q(path))), "patch embed / head quantised"
    assert info["qdq_pairs_removed_before_guarded_ops"] > 0  # ORT quantises MatMul outputs; edgevit strips those
    assert info["guarded"]["residual_add"] == 12 and info["smooth_quant"]["smoothed"]


@pytest.mark.parametrize("switch,check", [
    ("guard_softmax", lambda q, w, p: "Softmax" in q.values()),
    ("guard_layernorm", lambda q, w, p: "LayerNormalization" in q.values()),
    ("guard_gelu", lambda q, w, p: any(op in ("Div", "Mul") for op in q.values())),
    ("guard_residual_add", lambda q, w, p: bool(_residual_adds(p) & set(q))),
    ("float_patch_embed", lambda q, w, p: "Conv" in q.values() and "Conv" in w.values()),
    ("float_head", lambda q, w, p: "Gemm" in q.values() and "Gemm" in w.values()),
])
def test_ort_each_guardrail_can_be_switched_off(tiny_onnx, calib, tmp_path, ort_default, switch, check):
    path, _ = _qfile("onnxruntime", tiny_onnx[0], calib, tmp_path, smooth_quant=False, **{switch: False})
    assert check(_onnx_q_inputs(path), _onnx_weight_q(path), path), f"{switch}=False had no effect on the graph"
    dpath = ort_default[0]
    assert not check(_onnx_q_inputs(dpath), _onnx_weight_q(dpath), dpath), f"{switch} is not on by default"


def test_ort_smoothquant_keeps_the_float_function_and_changes_the_int8_model(tiny_onnx, calib, tmp_path, ort_default):
    import onnx
    import onnxruntime as ort

    from edgevit.methods.quantize.backends import smooth_quant_onnx

    model = onnx.load(str(tiny_onnx[0]))
    info = smooth_quant_onnx(model, calib, alpha=0.5)
    assert len(info["smoothed"]) == 12  # norm1 → qkv and norm2 → fc1 in 6 blocks
    ref = ort.InferenceSession(str(tiny_onnx[0])).run(None, {"input": calib})[0]
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"input": calib})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1, np.abs(ref).max()))
    off, info_off = _qfile("onnxruntime", tiny_onnx[0], calib, tmp_path, name="off", smooth_quant=False)
    assert info_off["smooth_quant"] is None
    assert off.read_bytes() != ort_default[0].read_bytes()


def test_ort_calibration_methods_and_open_artifact(tiny_onnx, calib, tmp_path, tiny_model):
    from edgevit.runtimes import load_runtime, open_artifact

    for method in ("entropy", "percentile"):
        path, info = _qfile("onnxruntime", tiny_onnx[0], calib[:16], tmp_path, name=method, smooth_quant=False,
                            calibration_method=method, per_channel=False)
        assert info["calibration_method"].lower() == method
    art = open_artifact(path)
    assert art.kind == "onnx" and art.spec == tiny_model.edgevit_spec and art.source == "fmnist-vit-tiny"
    assert load_runtime("onnxruntime", art).run(calib[:2]).shape == (2, 10)


# --------------------------------------------------------------------------------- guardrails: nncf-onnx (QDQ)


def test_nncf_onnx_backend_guardrails(tiny_onnx, calib, tmp_path):
    pytest.importorskip("nncf")
    path, _info = _qfile("nncf-onnx", tiny_onnx[0], calib, tmp_path, model_type="none")
    q = _onnx_q_inputs(path)
    assert "MatMul" in q.values()
    for op in ("Softmax", "LayerNormalization", "Erf", "Conv", "Gemm"):
        assert op not in q.values(), op
    assert not _residual_adds(path) & set(q)
    off, _ = _qfile("nncf-onnx", tiny_onnx[0], calib, tmp_path, name="off", model_type="none",
                    guard_residual_add=False, float_patch_embed=False)
    q_off = _onnx_q_inputs(off)
    assert _residual_adds(off) & set(q_off) and "Conv" in q_off.values()


# ----------------------------------------------------------------------------------- guardrails: OpenVINO (NNCF)


@pytest.fixture(scope="module")
def ov_default(tmp_path_factory, tiny_ir, calib):
    pytest.importorskip("nncf")
    return _qfile("openvino", tiny_ir, calib, tmp_path_factory.mktemp("ovq"))


def test_ov_default_guardrails_keep_vit_ops_float(ov_default, tiny_ir, tiny_model):
    import openvino as ov

    from edgevit.methods.quantize import graph
    from edgevit.runtimes import open_artifact

    path, info = ov_default
    q = _ov_q_inputs(path)
    assert sum(op == "MatMul" for op in q.values()) >= 20
    for op in ("MVN", "Gelu", "Softmax", "Convolution"):
        assert op not in q.values(), f"a FakeQuantize feeds a {op}"
    fp = ov.Core().read_model(str(tiny_ir))
    residual = graph.ov_guarded_nodes(fp, {"residual_add": True})["residual_add"]
    assert len(residual) == 12 and not set(residual) & set(q)
    assert graph.ov_head(fp)[0] not in q
    assert {"MVN", "Gelu", "Softmax"} <= set(info["ignored"]["types"]) and info["smooth_quant"] is True
    art = open_artifact(path)  # edgevit eval/profile open it
    assert art.kind == "openvino" and art.spec == tiny_model.edgevit_spec


def test_ov_guardrails_switch_where_nncf_would_quantise(tiny_ir, calib, tmp_path, ov_default):
    """With model_type none NNCF quantises LayerNorm (MVN), residual Adds and the stem; the guardrails stop it."""
    import openvino as ov

    from edgevit.methods.quantize import graph

    fp = ov.Core().read_model(str(tiny_ir))
    residual = set(graph.ov_guarded_nodes(fp, {"residual_add": True})["residual_add"])
    on, _ = _qfile("openvino", tiny_ir, calib, tmp_path, name="on", model_type="none", smooth_quant=False)
    off, _ = _qfile("openvino", tiny_ir, calib, tmp_path, name="off", model_type="none", smooth_quant=False,
                    guard_layernorm=False, guard_residual_add=False, float_patch_embed=False)
    q_on, q_off = _ov_q_inputs(on), _ov_q_inputs(off)
    assert "MVN" not in q_on.values() and "MVN" in q_off.values()
    assert not residual & set(q_on) and residual & set(q_off)
    assert "Convolution" not in q_on.values() and "Convolution" in q_off.values()
    # the head: NNCF leaves this classifier's MatMul float by itself; the guardrail puts it in the ignored scope
    head = graph.ov_head(fp)[0]
    _, info_off = _qfile("openvino", tiny_ir, calib, tmp_path, name="head", smooth_quant=False, float_head=False)
    assert head in ov_default[1]["ignored"]["names"] and head not in info_off["ignored"]["names"]
    assert head not in _ov_q_inputs(ov_default[0])


def test_ov_smoothquant_on_and_off(tiny_ir, calib, tmp_path, ov_default):
    import openvino as ov

    def sq_ops(p):
        return [o for o in ov.Core().read_model(str(p)).get_ordered_ops() if "smooth_quant" in o.get_friendly_name()]

    off, info = _qfile("openvino", tiny_ir, calib, tmp_path, name="off", smooth_quant=False)
    assert sq_ops(ov_default[0]) and not sq_ops(off) and info["smooth_quant"] is False


def test_ov_bypass_restores_one_layer(ov_default):
    import openvino as ov

    from edgevit.methods.quantize import graph

    model = ov.Core().read_model(str(ov_default[0]))
    layers = graph.ov_quantized_layers(model)
    bypassed = graph.ov_bypass(model, layers[0])
    assert layers[0] not in graph.ov_quantized_inputs(bypassed)
    assert len(graph.ov_quantized_layers(bypassed)) == len(layers) - 1


# ----------------------------------------------------------------------------------------- speed gate rule


def _cand(p, top1, drop, ms, offered=True):
    return {"precision": p, "top1": top1, "drop_pt": drop, "latency_ms": ms, "offered": offered}


def test_speed_gate_keeps_the_faster_variant_at_equal_accuracy():
    from edgevit.methods.quantize.gate import choose_variant

    int8 = _cand("int8", 0.90, 0.4, 3.0)
    sel, why = choose_variant([int8, _cand("fp32", 0.904, 0, 4.0), _cand("bf16", 0.903, 0.1, 2.0)], budget=1.0)
    assert sel == "bf16" and "faster than INT8" in why and "2.000 ms" in why
    sel, why = choose_variant([int8, _cand("fp32", 0.904, 0, 4.0), _cand("bf16", 0.85, 5.4, 1.0)], budget=1.0)
    assert sel == "int8" and "fastest" in why  # bf16 is faster but outside the budget
    sel, _ = choose_variant([int8, _cand("fp32", 0.904, 0, 4.0), _cand("fp16", None, None, None, offered=False)],
                            budget=1.0)
    assert sel == "int8"
    sel, why = choose_variant([int8, _cand("int8+bf16", 0.899, 0.5, 2.5), _cand("fp32", 0.904, 0, 4.0)], budget=1.0)
    assert sel == "int8+bf16" and "records bf16" in why
    sel, why = choose_variant([int8, _cand("int8+bf16", 0.80, 10.4, 2.5), _cand("fp32", 0.904, 0, 4.0)], budget=1.0)
    assert sel == "int8"  # faster, but its bf16 arithmetic costs accuracy beyond the budget
    sel, why = choose_variant([int8, _cand("fp32", 0.904, 0, 1.0)], budget=1.0, speed_gate=False)
    assert sel == "int8" and "speed gate off" in why


# ------------------------------------------------------ a CNN: every convolution but the stem is quantised (issue 16)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, fmnist_test_small):
    """timm ``mobilenetv3_small_050`` (random init, 1×32×32 input, 10 classes) exported to ONNX and OpenVINO IR, with
    calibration images: ``(onnx path, xml path, calib)``. Depthwise convs, squeeze-excitation and residual Adds."""
    pytest.importorskip("timm")
    pytest.importorskip("openvino")
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.formats.openvino.export import export_openvino
    from edgevit.methods.quantize import calibration_data
    from edgevit.models import attach_spec, create
    from edgevit.spec import InputSpec

    m = create("mobilenetv3_small_050", num_classes=10, model_kwargs={"in_chans": 1})
    attach_spec(m, InputSpec(input_size=(1, 32, 32), mean=(0.286,), std=(0.353,), num_classes=10))
    d = tmp_path_factory.mktemp("cnn")
    images = fmnist_test_small.subset(range(16))
    export_onnx(m, d / "cnn.onnx", parity_images=images)
    export_openvino(m, d / "cnn.xml", parity_images=images)
    x, _ = calibration_data(m.edgevit_spec, "fashion-mnist", samples=16)
    return d / "cnn.onnx", d / "cnn.xml", x


def _unused_initializers(path) -> list[str]:
    import onnx

    m = onnx.load(str(path))
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    return [t.name for t in m.graph.initializer if t.name not in used]


@pytest.mark.parametrize("backend", ["onnxruntime", "nncf-onnx"])
def test_cnn_int8_onnx_quantises_every_conv_but_the_stem(cnn, tmp_path, backend):
    """Every Conv before the first Gemm used to count as the patch embedding: a CNN was written as 'INT8' with 0 Q/DQ."""
    import onnx

    from edgevit.methods.quantize import graph

    if backend == "nncf-onnx":
        pytest.importorskip("nncf")
    fp = onnx.load(str(cnn[0]))
    convs = [n.name for n in fp.graph.node if n.op_type == "Conv"]
    stem = graph.onnx_patch_embed(fp)
    assert stem == convs[:1], "a CNN's stem is the first conv on the input"
    path, info = _qfile(backend, cnn[0], cnn[2], tmp_path, model_type="none")
    q = _onnx_q_inputs(path)
    quantised = [n for n, op in q.items() if op == "Conv"]
    assert len(quantised) >= len(convs) // 2 and stem[0] not in q and stem[0] not in _onnx_weight_q(path)
    assert len(info["quantized_layers"]) == len(quantised) + sum(op == "Gemm" for op in q.values())
    assert not _unused_initializers(path)


def test_cnn_int8_openvino_quantises_convolutions_and_depthwise(cnn, tmp_path):
    import openvino as ov

    from edgevit.methods.quantize import graph

    pytest.importorskip("nncf")
    fp = ov.Core().read_model(str(cnn[1]))
    stem = graph.ov_patch_embed(fp)
    assert len(stem) == 1
    path, info = _qfile("openvino", cnn[1], cnn[2], tmp_path, model_type="none")
    q = _ov_q_inputs(path)
    ops = list(q.values())
    assert ops.count("Convolution") >= 20 and ops.count("GroupConvolution") >= 5 and stem[0] not in q
    # the sensitivity pass ranks every weighted op type, depthwise (GroupConvolution) included
    layers = graph.ov_quantized_layers(ov.Core().read_model(str(path)))
    assert sorted(layers) == sorted(info["quantized_layers"]) and set(layers) <= set(q)
    assert {"Convolution", "GroupConvolution"} <= {q[name] for name in layers}


@pytest.mark.parametrize("backend,ignored", [("onnxruntime", ["Conv", "Gemm"]),
                                             ("openvino", ["Convolution", "GroupConvolution", "MatMul"])])
def test_int8_that_quantises_nothing_is_refused(cnn, tmp_path, backend, ignored):
    from edgevit.errors import QuantizationError

    if backend == "openvino":
        pytest.importorskip("nncf")
    src = cnn[1] if backend == "openvino" else cnn[0]
    with pytest.raises(QuantizationError, match="quantised no layer"):
        _qfile(backend, src, cnn[2], tmp_path, model_type="none", ignored_types=ignored)
    assert not list(tmp_path.glob("q.*")), "a file stamped INT8 was written for a float model"


def test_vit_int8_onnx_has_no_dangling_initializers(ort_default):
    assert not _unused_initializers(ort_default[0])


def test_selected_ir_records_the_precision_it_runs_in(tiny_ir, tmp_path):
    """A kept bf16 variant of the FP32 IR is written as model_selected.xml whose rt_info says bf16, the key the
    OpenVINO runtime (and the C++ example's --precision file) compiles with."""
    import openvino as ov

    from edgevit.methods.quantize.core import _publish_selected
    from edgevit.runtimes import load_runtime, open_artifact

    rec = _publish_selected("bf16", Path(tiny_ir), tmp_path, "openvino", why="bf16 was faster")
    assert rec["path"] == str(tmp_path / "model_selected.xml") and rec["inference_precision"] == "bf16"
    m = ov.Core().read_model(rec["path"])
    assert m.get_rt_info(["edgevit", "inference_precision"]).astype(str) == "bf16"
    assert m.get_rt_info(["edgevit", "precision"]).astype(str) == "bf16"
    rt = load_runtime("openvino", open_artifact(rec["path"]), threads=1)
    try:
        d = rt.describe()
    finally:
        rt.close()
    assert d["file_precision"] == "bf16" and d["precision_source"] == "file"
