"""One quantisation pass per backend: FP32 file + real calibration images + settings → INT8 file.

- ``openvino``: ``nncf.quantize`` on the OpenVINO IR (FakeQuantize ops; weights stored as int8);
- ``onnxruntime``: ``onnxruntime.quantization.quantize_static`` in QDQ format, per-channel weights, uint8
  activations and int8 weights (the U8S8 pair ONNX Runtime recommends for x86 with VNNI), minmax / entropy /
  percentile calibration; SmoothQuant is edgevit's own (:func:`smooth_quant_onnx`), because ONNX Runtime's needs
  Intel Neural Compressor;
- ``nncf-onnx``: ``nncf.quantize`` on the ONNX graph (QDQ).

Guardrails become an NNCF ``IgnoredScope`` (op types and node names) or ONNX Runtime's ``op_types_to_quantize`` /
``nodes_to_exclude``; on ONNX outputs the QDQ pairs that still feed a guarded node (ONNX Runtime quantises
MatMul/Conv outputs too) are removed afterwards with :func:`edgevit.methods.quantize.graph.strip_qdq_before`.
Every file written carries the model's input spec, so :func:`edgevit.runtimes.open_artifact` opens it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._optional import require
from ...errors import ConfigError, QuantizationError
from . import graph
from .config import BACKEND_INFO, QuantizeConfig

log = logging.getLogger(__name__)

NNCF_SQ_ALPHA = 0.95  # NNCF's default for MatMuls in transformer mode
ONNX_SQ_ALPHA = 0.5  # the SmoothQuant paper's default
ORT_BASE_OPS = ["MatMul", "Gemm", "Conv", "ConvTranspose"]


@dataclass
class Settings:
    """What changes between the attempts of the ladder."""

    smooth_quant: bool = True
    exclude_attention: bool = False
    float_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def backend_available(backend: str) -> tuple[bool, str]:
    """``(True, version)`` or ``(False, why and how to install)`` for a quantisation backend."""
    import importlib

    if backend not in BACKEND_INFO:
        raise ConfigError(f"unknown quantisation backend {backend!r}; allowed: {', '.join(BACKEND_INFO)}")
    module, extra, _ = BACKEND_INFO[backend]
    needed = [module] + (["openvino"] if backend == "openvino" else []) + (["onnx"] if backend != "openvino" else [])
    for mod in needed:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure means unavailable
            return False, (f"the {backend} backend needs the Python package '{mod.split('.')[0]}', which does not "
                           f"import here ({type(exc).__name__}: {exc}). Install it with: pip install "
                           f"'edgevit[{extra}]'")
        if mod == module:
            version = str(getattr(importlib.import_module(mod.split(".")[0]), "__version__", ""))
    return True, version


def require_backend(backend: str) -> str:
    """The backend's version, or :class:`MissingBackendError` naming the package and the pip extra."""
    from ...errors import MissingBackendError

    ok, why = backend_available(backend)
    if not ok:
        raise MissingBackendError(f"quantisation backend '{backend}' is not installed: {why}")
    return why


def quantize_file(backend: str, fp_path: Path, calib: np.ndarray, config: QuantizeConfig, settings: Settings,
                  out_path: Path, *, spec, source: str | None) -> dict:
    """Quantise ``fp_path`` into ``out_path``; returns ``{path, ignored, smooth_quant, quantized_layers, ...}``."""
    t0 = time.perf_counter()
    fn = {"openvino": _openvino, "onnxruntime": _onnxruntime, "nncf-onnx": _nncf_onnx}[backend]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        info = fn(Path(fp_path), calib, config, settings, Path(out_path), spec=spec, source=source)
    except (ConfigError, QuantizationError):
        raise
    except Exception as exc:  # backends raise their own error types
        raise QuantizationError(f"{backend} quantisation of {fp_path} failed ({type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}) with settings "
                                f"{settings.to_dict()}; try other settings (e.g. smooth_quant: off, or keep the named "
                                f"layer float with ignored_names)") from exc
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return info


# --------------------------------------------------------------------------------------------- OpenVINO


def _nncf_common(nncf, config: QuantizeConfig, settings: Settings, types: list[str], names: list[str]) -> dict:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    alpha = config.smooth_quant_alpha if config.smooth_quant_alpha is not None else NNCF_SQ_ALPHA
    adv: dict[str, Any] = {"smooth_quant_alphas": AdvancedSmoothQuantParameters(
        matmul=alpha if settings.smooth_quant else -1, convolution=-1)}
    if config.calibration_method == "minmax":
        adv["activations_range_estimator_params"] = RangeEstimatorParametersSet.MINMAX
    elif config.calibration_method == "percentile":
        adv["activations_range_estimator_params"] = RangeEstimatorParametersSet.MEAN_QUANTILE
    kwargs = {
        "preset": nncf.QuantizationPreset(config.preset),
        "model_type": nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
        "ignored_scope": nncf.IgnoredScope(types=sorted(set(types)), names=sorted(set(names)),
                                           patterns=list(config.ignored_patterns), validate=False),
        "advanced_parameters": AdvancedQuantizationParameters(**adv),
    }
    return kwargs


def _openvino(fp_path: Path, calib: np.ndarray, config: QuantizeConfig, settings: Settings, out_path: Path, *,
              spec, source) -> dict:
    ov = require("openvino", extra="openvino", feature="OpenVINO INT8 quantisation")
    nncf = require("nncf", extra="openvino", feature="NNCF quantisation")
    from ...formats.openvino.runtime import read_model

    if fp_path.suffix != ".xml":
        raise ConfigError(f"the openvino backend quantises an OpenVINO IR (.xml), got {fp_path}")
    model = read_model(ov.Core(), fp_path)
    guards = graph.ov_guarded_nodes(model, config.guardrails())
    types = [t for k, ts in graph.OV_GUARD_TYPES.items() if config.guardrails()[k] for t in ts]
    types += list(config.ignored_types)
    names = [n for v in guards.values() for n in v] + list(config.ignored_names) + list(settings.float_layers)
    if settings.exclude_attention:
        names += graph.ov_attention_ops(model)
    kwargs = _nncf_common(nncf, config, settings, types, names)
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    with _quiet_nncf(nncf):
        q = nncf.quantize(model, dataset, subset_size=len(calib), **kwargs)
    layers = graph.ov_quantized_layers(q)
    require_quantized(layers, weighted=[o.get_friendly_name() for o in model.get_ordered_ops()
                                        if o.get_type_name() in graph.OV_WEIGHTED],
                      excluded=names, backend="openvino", path=fp_path)
    _stamp_ov(q, spec, source, settings)
    ov.save_model(q, str(out_path), compress_to_fp16=False)
    return {"path": str(out_path), "ignored": {"types": sorted(set(types)), "names": sorted(set(names)),
                                               "patterns": list(config.ignored_patterns)},
            "guarded": {k: len(v) for k, v in guards.items()}, "smooth_quant": settings.smooth_quant and
            config.model_type == "transformer", "quantized_layers": layers, "engine": f"nncf {nncf.__version__}"}


def _stamp_ov(model, spec, source, settings: Settings) -> None:
    from ...formats.openvino.export import RT_ROOT, preprocess_info
    from ...versions import __version__

    model.set_rt_info(json.dumps(spec.to_dict()), [RT_ROOT, "input_spec"])
    model.set_rt_info(str(source or ""), [RT_ROOT, "source"])
    model.set_rt_info("int8", [RT_ROOT, "precision"])
    model.set_rt_info(json.dumps(settings.to_dict()), [RT_ROOT, "quantize"])
    model.set_rt_info(str(__version__), [RT_ROOT, "version"])
    for key, value in preprocess_info(spec).items():
        model.set_rt_info(value, [RT_ROOT, "preprocess", key])


@contextlib.contextmanager
def _quiet_nncf(nncf):
    try:
        from nncf.common.logging.logger import nncf_logger
    except ImportError:  # pragma: no cover - older nncf
        nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nncf_logger.setLevel(level)


# ------------------------------------------------------------------------------------------- ONNX helpers


def _load_onnx(path: Path):
    import onnx

    if path.suffix != ".onnx":
        raise ConfigError(f"the ONNX backends quantise an ONNX file (.onnx), got {path}; export the model to ONNX "
                          f"first (edgevit export onnx) or use --backend openvino for an IR")
    return onnx.load(str(path), load_external_data=True)


def _onnx_ignored(model, config: QuantizeConfig, settings: Settings) -> tuple[dict, list[str]]:
    guards = graph.onnx_guarded_nodes(model, config.guardrails())
    exclude = graph.onnx_nodes_matching(model, types=config.ignored_types, names=config.ignored_names,
                                        patterns=config.ignored_patterns)
    exclude += guards.get("patch_embed", []) + guards.get("head", []) + list(settings.float_layers)
    if settings.exclude_attention:
        exclude += graph.onnx_attention_matmuls(model)
    return guards, sorted(set(exclude))


def require_quantized(layers: list[str], *, weighted: list[str], excluded: list[str], backend: str,
                      path: Path) -> None:
    """Raise :class:`QuantizationError` when a quantised graph has no layer with a quantised activation input
    (``layers`` empty), so that no file stamped INT8 is written for a model that still computes everything in
    float. ``weighted``: the weighted ops (MatMul/Gemm/(Group)Conv) of the float graph; ``excluded``: node names
    kept float by the guardrails and ignored scopes."""
    if layers:
        return
    kept = sorted(set(weighted) & set(excluded))
    raise QuantizationError(
        f"{backend} quantisation of {path} quantised no layer: none of its {len(weighted)} weighted ops "
        f"(MatMul/Gemm/Conv) has a quantised input ({len(kept)} of them kept float by the guardrails and ignored "
        f"scopes{': ' + ', '.join(kept[:5]) + (', ...' if len(kept) > 5 else '') if kept else ''}). An INT8 file "
        f"would be the float model under another name, so none is written; switch guardrails off "
        f"(--allow-int8 patch_embed / head) or remove ignored_types/ignored_names/ignored_patterns that cover "
        f"the model's convolutions and linear layers")


def _finish_onnx(q, guards: dict, path: Path, spec, source, settings: Settings, *, fp_model, excluded: list[str],
                 backend: str, fp_path: Path) -> int:
    import onnx

    from ...spec import SOURCE_KEY, SPEC_KEY

    float_ops = [n for k in ("layernorm", "softmax", "gelu", "residual_add") for n in guards.get(k, [])]
    stripped = graph.strip_qdq_before(q, float_ops)
    require_quantized(graph.onnx_quantized_layers(q), weighted=[n.name for n in fp_model.graph.node
                                                                if n.op_type in graph.ONNX_WEIGHTED],
                      excluded=excluded, backend=backend, path=fp_path)
    props = {p.key: p.value for p in q.metadata_props}
    props.update({SPEC_KEY: json.dumps(spec.to_dict()), SOURCE_KEY: str(source or ""), "edgevit.precision": "int8",
                  "edgevit.quantize": json.dumps(settings.to_dict())})
    del q.metadata_props[:]
    for k, v in props.items():
        entry = q.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(q, str(path))
    return stripped


class _RootFilter(logging.Filter):
    """ONNX Runtime's quantiser logs advice through the root logger; keep it out of edgevit's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("pre-processing" in msg or "out-of-range for weight" in msg)


@contextlib.contextmanager
def _quiet_root():
    root = logging.getLogger()
    f = _RootFilter()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


# ------------------------------------------------------------------------------------------- onnxruntime


def _onnxruntime(fp_path: Path, calib: np.ndarray, config: QuantizeConfig, settings: Settings, out_path: Path, *,
                 spec, source) -> dict:
    require("onnxruntime", extra="onnx", feature="ONNX Runtime INT8 quantisation")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = _load_onnx(fp_path)
    sq = None
    if settings.smooth_quant:
        alpha = config.smooth_quant_alpha if config.smooth_quant_alpha is not None else ONNX_SQ_ALPHA
        sq = smooth_quant_onnx(model, calib, alpha=alpha)
    guards, exclude = _onnx_ignored(model, config, settings)
    g = config.guardrails()
    op_types = list(ORT_BASE_OPS)
    op_types += [] if g["layernorm"] else ["LayerNormalization"]
    op_types += [] if g["softmax"] else ["Softmax"]
    op_types += [] if g["residual_add"] else ["Add"]
    op_types += [] if g["gelu"] else ["Gelu", "Mul", "Div"]
    input_name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self._it, None)

    method = {None: CalibrationMethod.MinMax, "minmax": CalibrationMethod.MinMax,
              "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[
        config.calibration_method]
    tmp = out_path.with_name(out_path.stem + ".tmp.onnx")
    with _quiet_root():
        quantize_static(model, str(tmp), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types,
                        per_channel=config.per_channel, reduce_range=config.reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=method)
    q = _load_onnx(tmp)
    tmp.unlink()
    stripped = _finish_onnx(q, guards, out_path, spec, source, settings, fp_model=model, excluded=exclude,
                            backend="onnxruntime", fp_path=fp_path)
    import onnxruntime

    return {"path": str(out_path), "ignored": {"op_types_to_quantize": op_types, "nodes_to_exclude": exclude},
            "guarded": {k: len(v) for k, v in guards.items()}, "qdq_pairs_removed_before_guarded_ops": stripped,
            "smooth_quant": sq, "quantized_layers": graph.onnx_quantized_layers(q),
            "calibration_method": method.name, "engine": f"onnxruntime {onnxruntime.__version__}"}


# --------------------------------------------------------------------------------------------- nncf-onnx


def _nncf_onnx(fp_path: Path, calib: np.ndarray, config: QuantizeConfig, settings: Settings, out_path: Path, *,
               spec, source) -> dict:
    nncf = require("nncf", extra="openvino", feature="NNCF quantisation of ONNX models")
    model = _load_onnx(fp_path)
    guards, exclude = _onnx_ignored(model, config, settings)
    names = exclude + [n for k in ("layernorm", "softmax", "gelu", "residual_add") for n in guards.get(k, [])]
    kwargs = _nncf_common(nncf, config, settings, [], names)
    input_name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    dataset = nncf.Dataset([{input_name: calib[i:i + 1]} for i in range(len(calib))])
    with _quiet_nncf(nncf):
        q = nncf.quantize(model, dataset, subset_size=len(calib), **kwargs)
    stripped = _finish_onnx(q, guards, out_path, spec, source, settings, fp_model=model, excluded=names,
                            backend="nncf-onnx", fp_path=fp_path)
    return {"path": str(out_path), "ignored": {"names": sorted(set(names))},
            "guarded": {k: len(v) for k, v in guards.items()}, "qdq_pairs_removed_before_guarded_ops": stripped,
            "smooth_quant": settings.smooth_quant and config.model_type == "transformer",
            "quantized_layers": graph.onnx_quantized_layers(q), "engine": f"nncf {nncf.__version__}"}


# ------------------------------------------------------------------------------------------- SmoothQuant


def smooth_quant_onnx(model, calib: np.ndarray, *, alpha: float = ONNX_SQ_ALPHA) -> dict:
    """SmoothQuant (Xiao et al. 2023) folded into LayerNorm → MatMul pairs of an ONNX graph, in place.

    For each LayerNormalization whose output feeds only MatMuls with constant weights ``W [C_in, C_out]``, per input
    channel ``j``: ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` from the LayerNorm outputs ``X`` on the real
    calibration images; the LayerNorm's scale and bias are divided by ``s`` and the weight rows multiplied by it,
    so the float function is unchanged and activation outlier channels move into the (per-channel quantised)
    weights. Returns ``{"alpha", "smoothed": [LayerNorm names], "skipped": n}``.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    _, consumers, _ = graph._onnx_index(model)
    inits = {t.name: t for t in model.graph.initializer}
    use_count: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            use_count[i] = use_count.get(i, 0) + 1
    pairs = []
    skipped = 0
    for ln in (n for n in model.graph.node if n.op_type == "LayerNormalization"):
        cons = consumers.get(ln.output[0], [])
        ok = (len(ln.input) >= 3 and ln.input[1] in inits and ln.input[2] in inits and cons
              and all(c.op_type == "MatMul" and c.input[0] == ln.output[0] and c.input[1] in inits
                      and use_count.get(c.input[1]) == 1 for c in cons))
        if ok:
            for k in (1, 2):  # exporters deduplicate equal initializers (e.g. untrained LayerNorms): un-share them
                if use_count.get(ln.input[k], 0) > 1:
                    copy = numpy_helper.from_array(numpy_helper.to_array(inits[ln.input[k]]),
                                                   f"{ln.name or ln.output[0]}.smooth_quant.{k}")
                    model.graph.initializer.append(copy)
                    inits[copy.name] = model.graph.initializer[-1]
                    use_count[ln.input[k]] -= 1
                    ln.input[k] = copy.name
            pairs.append((ln, cons))
        else:
            skipped += 1
    if not pairs:
        return {"alpha": alpha, "smoothed": [], "skipped": skipped}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for ln, _ in pairs:
        exposed.graph.output.append(onnx.ValueInfoProto(name=ln.output[0]))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(exposed.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    names = [ln.output[0] for ln, _ in pairs]
    amax: dict[str, np.ndarray] = {}
    for i in range(0, len(calib), 32):
        outs = sess.run(names, {input_name: calib[i:i + 32]})
        for name, arr in zip(names, outs):
            m = np.abs(arr.reshape(-1, arr.shape[-1])).max(axis=0)
            amax[name] = np.maximum(amax[name], m) if name in amax else m
    del sess
    for ln, cons in pairs:
        weights = [numpy_helper.to_array(inits[c.input[1]]) for c in cons]
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        a = amax[ln.output[0]]
        s = np.power(np.maximum(a, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        s = np.clip(s, 1e-5, None).astype(np.float32)
        for k in (1, 2):
            t = inits[ln.input[k]]
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) / s).astype(np.float32), t.name))
        for c, w in zip(cons, weights):
            t = inits[c.input[1]]
            t.CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), t.name))
    return {"alpha": alpha, "smoothed": [ln.name for ln, _ in pairs], "skipped": skipped}
