"""Roofline latency prediction for devices we cannot measure on (see specs/measurement.md).

time = max(ops / (peak[dtype] × e_compute), bytes / (bandwidth × e_memory)) + kernels × launch overhead.

Every result says it is a prediction, which efficiency it assumed, and the sources of the hardware numbers.
With the default efficiency of 1.0 the result is a floor (best case): real runtimes reach a fraction of peak.
When a measurement is passed in, the result states the prediction's error against it.

``bound`` names where the predicted time goes: ``compute`` (the nodes whose compute term is the larger),
``memory`` (the nodes whose memory term is the larger) or ``launch`` (the fixed per-kernel overhead), whichever
sums to the most. A small model on a GPU spends most of its time launching kernels; calling it memory-bound
because its (tiny) memory terms exceed its (tinier) compute terms would point the user at the wrong fix.

Per-op-class efficiencies (:data:`CLASSES`: :func:`op_class` by op type and shapes, :func:`classify_nodes` adding
the element-wise ``epilogue`` of a product or convolution, which runtimes fuse) and a per-node overhead can replace
the single efficiency: :mod:`edgevit.profiling.predictor` fits them from measurements on this machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError
from .hardware import HardwareProfile, Quantity, load_profile

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
# ops that move no data in any runtime we target (views and shape arithmetic): no time, no kernel launch
FREE_OPS = frozenset({"Shape", "Constant", "ConstantOfShape", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
                      "Identity", "Size"})
BOUNDS = ("compute", "memory", "launch")

# op class → ONNX / onnxruntime op types (onnxruntime's fused CPU kernels included, so that the nodes of a
# runtime's profile fall in the same classes as the nodes of the file). Ops in no class are "elementwise".
# "matmul" / "conv" are split by their weights in op_class(): a product of two activations is "batched_matmul"
# (attention's QK^T and AV), a convolution with one input channel per group is "depthwise_conv".
OP_CLASSES: dict[str, frozenset[str]] = {
    "matmul": frozenset({"MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul",
                         "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits", "Einsum"}),
    "batched_matmul": frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"}),
    "conv": frozenset({"Conv", "FusedConv", "NhwcConv", "NhwcFusedConv", "QLinearConv", "ConvInteger",
                       "ConvTranspose"}),
    "normalization": frozenset({"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                                "SkipSimplifiedLayerNormalization", "BatchNormalization", "InstanceNormalization",
                                "GroupNormalization", "GroupNorm", "RMSNormalization", "LpNormalization",
                                "MeanVarianceNormalization"}),
    "softmax": frozenset({"Softmax", "LogSoftmax", "BiasSoftmax"}),
    "pool_reduce": frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                              "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "GlobalAveragePool",
                              "GlobalMaxPool", "AveragePool", "MaxPool", "LpPool", "ArgMax", "ArgMin", "TopK",
                              "CumSum", "QLinearGlobalAveragePool", "QLinearAveragePool"}),
    "data_movement": frozenset({"Transpose", "Concat", "Slice", "Split", "Gather", "GatherElements", "GatherND",
                                "Expand", "Tile", "Pad", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth",
                                "Cast", "ScatterND", "ScatterElements", "ReorderInput", "ReorderOutput", "Col2Im",
                                "NonZero", "Range", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                                "QLinearConcat"}),
}
CLASSES = ("matmul", "batched_matmul", "conv", "depthwise_conv", "epilogue", "normalization", "softmax",
           "pool_reduce", "data_movement", "elementwise")
# classes whose output an element-wise op can be fused into (bias, activation, residual add: an "epilogue")
_FUSES_EPILOGUE = frozenset({"matmul", "batched_matmul", "conv", "depthwise_conv", "epilogue"})
_CLASS_OF = {op: cls for cls, ops in OP_CLASSES.items() for op in ops}
_MATMUL_LIKE = OP_CLASSES["matmul"] - {"Einsum"}


def op_class(op: str, input_shapes: Sequence[Sequence[int] | None] = (),
             const_inputs: Sequence[bool] | None = None) -> str:
    """The op class of a node (one of :data:`CLASSES`; ``"view"`` for :data:`FREE_OPS`).

    ``input_shapes``: the node's input shapes (None where unknown); ``const_inputs``: whether each input is a
    weight. A matrix product is ``batched_matmul`` when neither operand is a weight (an ONNX file) or, without
    that knowledge (a runtime profile, which lists pre-packed weights only sometimes), when its second operand has
    rank ≥ 3; a convolution is ``depthwise_conv`` when its weight ``[C_out, C_in/group, k, k]`` has one input
    channel per group and the input more than one channel.
    """
    if op in FREE_OPS:
        return "view"
    cls = _CLASS_OF.get(op, "elementwise")
    shapes = list(input_shapes)
    if op in _MATMUL_LIKE:
        ia, ib = (0, 3) if op == "QLinearMatMul" else (0, 1)
        if const_inputs is not None and len(const_inputs) > ib:
            if not const_inputs[ia] and not const_inputs[ib]:
                return "batched_matmul"
        elif len(shapes) > ib and shapes[ib] is not None and len(shapes[ib]) >= 3:
            return "batched_matmul"
    elif cls == "conv" and op != "ConvTranspose":
        iw = 3 if op == "QLinearConv" else 1
        x = shapes[0] if shapes else None
        w = shapes[iw] if len(shapes) > iw else None
        if x is not None and w is not None and len(w) >= 3 and len(x) >= 2 and w[1] == 1 and x[1] > 1:
            return "depthwise_conv"
    return cls


def classify_nodes(nodes: Sequence[Mapping]) -> list[str]:
    """The op class of every node of :func:`~edgevit.profiling.macs.onnx_cost` (in graph order): :func:`op_class`,
    except that an element-wise node fed by a matrix product, a convolution or another such node is ``epilogue``
    (bias, activation, scale, residual add: what runtimes fuse into the producing kernel, e.g. onnxruntime's
    ``FusedConv`` and ``FusedMatMul``, TensorRT's fused layers), and views pass that property on."""
    producer: dict[str, str] = {}
    out = []
    for node in nodes:
        cls = op_class(node["op"], node.get("input_shapes", ()), node.get("const_inputs"))
        fed = [producer.get(i) for i in node.get("inputs", ()) if i]
        if cls == "elementwise" and any(f in _FUSES_EPILOGUE for f in fed):
            cls = "epilogue"
        out.append(cls)
        # a view keeps what it looks at: reshape(conv(x)) still ends a convolution
        passed = next((f for f in fed if f in _FUSES_EPILOGUE), cls) if cls == "view" else cls
        for o in node.get("outputs", ()):
            producer[o] = passed
    return out


def _efficiency(efficiency: float | Mapping[str, float]) -> tuple[float, float]:
    if isinstance(efficiency, Mapping):
        unknown = set(efficiency) - {"compute", "memory"}
        if unknown:
            raise ConfigError(f"efficiency keys must be 'compute' and/or 'memory', got {sorted(unknown)}")
        ec, em = float(efficiency.get("compute", 1.0)), float(efficiency.get("memory", 1.0))
    else:
        ec = em = float(efficiency)
    for name, e in (("compute", ec), ("memory", em)):
        if not 0.0 < e <= 1.0:
            raise ConfigError(f"{name} efficiency must be in (0, 1] (a fraction of peak), got {e}")
    return ec, em


def _src(q: Quantity | None) -> str | None:
    return None if q is None else f"{q.value} {q.unit} [{q.tag}] {q.source}"


def _resolve(profile: HardwareProfile | str) -> HardwareProfile:
    return profile if isinstance(profile, HardwareProfile) else load_profile(profile)


def predict_latency(macs: float, bytes_moved: float, profile: HardwareProfile | str, dtype: str = "fp32", *,
                    efficiency: float | Mapping[str, float] = 1.0, kernels: int = 0, mode: str | None = None,
                    measured_ms: float | None = None) -> dict:
    """Whole-model roofline: ``macs`` multiply-accumulates and ``bytes_moved`` bytes of memory traffic.

    ``efficiency`` is the fraction of peak compute and bandwidth assumed reachable (one number for both, or
    ``{"compute": .., "memory": ..}``); ``kernels`` adds that many launch overheads where the profile gives one.
    When the profile does not know its memory bandwidth, the memory term is left out and a note says so.
    """
    if macs < 0 or bytes_moved < 0 or kernels < 0:
        raise ConfigError(f"macs, bytes_moved and kernels must be non-negative (got {macs}, {bytes_moved}, {kernels})")
    prof = _resolve(profile)
    pmode = prof.mode(mode)
    ec, em = _efficiency(efficiency)
    peak_q = prof.peak(dtype, pmode.name)
    peak = peak_q.si * ec
    ops = 2.0 * macs
    notes: list[str] = []
    compute_s = ops / peak
    bw = prof.bandwidth(pmode.name)
    if bw is None:
        memory_s = None
        notes.append(f"memory term left out: the profile has no memory bandwidth ({pmode.memory_bandwidth.source})")
    else:
        memory_s = bytes_moved / (bw * em)
    overhead = prof.launch_overhead_s(pmode.name)
    launch_s = kernels * overhead if overhead is not None else 0.0
    if kernels and overhead is None:
        notes.append("launch overhead left out: the profile gives none")
    body = max(compute_s, memory_s or 0.0)
    total = body + launch_s
    if ec == em == 1.0:
        notes.append("efficiency 1.0 assumed: this is a floor (best case), real runtimes are slower")
    out = {
        "prediction": True,
        "method": "roofline",
        "profile": prof.name,
        "mode": pmode.name,
        "dtype": dtype,
        "efficiency": {"compute": ec, "memory": em},
        "macs": int(macs),
        "ops": ops,
        "bytes_moved": float(bytes_moved),
        "arithmetic_intensity": ops / bytes_moved if bytes_moved else None,
        "ridge_point": (peak_q.si / bw) if bw else None,
        "bound": _bound({"compute": compute_s, "memory": memory_s or 0.0, "launch": launch_s}),
        "compute_ms": compute_s * 1e3,
        "memory_ms": memory_s * 1e3 if memory_s is not None else None,
        "kernels": int(kernels),
        "launch_ms": launch_s * 1e3,
        "latency_ms": total * 1e3,
        "sources": {"peak": _src(peak_q), "memory_bandwidth": _src(pmode.memory_bandwidth),
                    "launch_overhead": _src(pmode.launch_overhead)},
        "notes": notes,
    }
    _add_error(out, measured_ms)
    return out


def predict_onnx_latency(path: str | Path, profile: HardwareProfile | str, dtype: str = "fp32", *,
                         efficiency: float | Mapping[str, float] = 1.0, mode: str | None = None,
                         measured_ms: float | None = None,
                         class_efficiency: Mapping[str, Mapping[str, float]] | None = None,
                         node_overhead_s: float | None = None, cost: dict | None = None) -> dict:
    """Per-node roofline of an ONNX model at batch 1 (one kernel per node that does work, no fusion).

    Node traffic is its inputs + outputs; when ``dtype`` is narrower or wider than the file's weights the bytes
    are scaled by the ratio of element sizes (a note says so). Summing per node (rather than a whole-model
    roofline) charges memory-bound ops like LayerNorm and Softmax their own time, as runtimes without fusion do.

    ``class_efficiency`` (``{op class: {"compute": e, "memory": e}}``, classes of :func:`op_class`) overrides
    ``efficiency`` for the classes it names (fitted factors may exceed 1 for memory: activations that stay in
    cache move faster than the profile's DRAM bandwidth); ``node_overhead_s`` replaces the profile's launch overhead
    per node. ``cost``: :func:`~edgevit.profiling.macs.onnx_cost` of ``path`` when the caller has it already.

    Returns a dict with ``latency_ms``, ``compute_ms`` / ``memory_ms`` (the summed terms), ``launch_ms``,
    ``time_by_bound_ms`` (``{compute, memory, launch}``: each node's time counted under its larger term, the
    overheads under launch), ``bound`` (the largest of those), ``ms_by_op``, ``ms_by_class``, sources and notes.
    """
    from .macs import onnx_cost

    prof = _resolve(profile)
    pmode = prof.mode(mode)
    ec, em = _efficiency(efficiency)
    per_class = _class_efficiency(class_efficiency)
    peak = prof.peak_ops(dtype, pmode.name)
    bw = prof.bandwidth(pmode.name)
    if node_overhead_s is not None and node_overhead_s < 0:
        raise ConfigError(f"node_overhead_s must be ≥ 0 seconds, got {node_overhead_s}")
    overhead = node_overhead_s if node_overhead_s is not None else (prof.launch_overhead_s(pmode.name) or 0.0)
    cost = cost if cost is not None else onnx_cost(path)
    notes = []
    scale = 1.0
    if dtype in DTYPE_BYTES and cost.get("weight_itemsize"):
        scale = DTYPE_BYTES[dtype] / cost["weight_itemsize"]
        if scale != 1.0:
            notes.append(f"bytes scaled by {scale:g}: {dtype} elements vs the file's {cost['weight_itemsize']}-byte "
                         f"weights")
    if bw is None:
        notes.append(f"memory term left out: the profile has no memory bandwidth ({pmode.memory_bandwidth.source})")
    compute_s = memory_s = 0.0
    by_bound = dict.fromkeys(BOUNDS, 0.0)
    kernels = 0
    bytes_total = 0.0
    by_op: dict[str, float] = {}
    by_class: dict[str, float] = {}
    for node, cls in zip(cost["nodes"], classify_nodes(cost["nodes"])):
        if cls == "view":
            continue
        kernels += 1
        e_c, e_m = per_class.get(cls, (ec, em))
        b = node["bytes"] * scale
        bytes_total += b
        c = 2.0 * node["macs"] / (peak * e_c)
        m = b / (bw * e_m) if bw else 0.0
        compute_s += c
        memory_s += m
        by_bound["compute" if c >= m else "memory"] += max(c, m)
        t = max(c, m) + overhead
        by_op[node["op"]] = by_op.get(node["op"], 0.0) + t * 1e3
        by_class[cls] = by_class.get(cls, 0.0) + t * 1e3
    by_bound["launch"] = kernels * overhead
    if not overhead:
        notes.append("no launch overhead in the profile: kernel launches not charged")
    if per_class:
        used = sorted(set(by_class) - set(per_class))
        if used:
            notes.append(f"op classes without a fitted factor use efficiency {ec:g}/{em:g}: {', '.join(used)}")
    elif ec == em == 1.0:
        notes.append("efficiency 1.0 assumed: this is a floor (best case), real runtimes are slower")
    out = {
        "prediction": True,
        "method": "roofline per ONNX node (no fusion)" + (", fitted per-class efficiency" if per_class else ""),
        "profile": prof.name,
        "mode": pmode.name,
        "dtype": dtype,
        "efficiency": ({k: {"compute": v[0], "memory": v[1]} for k, v in per_class.items()} if per_class
                       else {"compute": ec, "memory": em}),
        "model": str(path),
        "macs": cost["macs"],
        "bytes_moved": bytes_total,
        "kernels": kernels,
        "node_overhead_us": overhead * 1e6,
        "compute_ms": compute_s * 1e3,
        "memory_ms": memory_s * 1e3 if bw else None,
        "launch_ms": by_bound["launch"] * 1e3,
        "time_by_bound_ms": {k: v * 1e3 for k, v in by_bound.items()},
        "bound": _bound(by_bound),
        "latency_ms": sum(by_bound.values()) * 1e3,
        "ms_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "ms_by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1])),
        "sources": {"peak": _src(prof.peak(dtype, pmode.name)), "memory_bandwidth": _src(pmode.memory_bandwidth),
                    "launch_overhead": (f"{overhead * 1e6:.3g} us per node, fitted" if node_overhead_s is not None
                                        else _src(pmode.launch_overhead))},
        "notes": notes,
    }
    _add_error(out, measured_ms)
    return out


def _class_efficiency(factors: Mapping[str, Mapping[str, float]] | None) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for cls, f in (factors or {}).items():
        if cls not in CLASSES:
            raise ConfigError(f"unknown op class '{cls}' in class_efficiency; allowed: {', '.join(CLASSES)}")
        unknown = set(f) - {"compute", "memory"}
        if unknown:
            raise ConfigError(f"class_efficiency['{cls}'] keys must be 'compute' and 'memory', got {sorted(unknown)}")
        pair = (float(f.get("compute", 1.0)), float(f.get("memory", 1.0)))
        if min(pair) <= 0:
            raise ConfigError(f"class_efficiency['{cls}'] must be positive fractions of peak, got {dict(f)}")
        out[cls] = pair
    return out


def _bound(times: Mapping[str, float]) -> str:
    """The bound with the largest share of the time (ties go to the first of compute, memory, launch)."""
    return max(BOUNDS, key=lambda k: (times.get(k, 0.0), -BOUNDS.index(k)))


def _add_error(out: dict, measured_ms: float | None) -> None:
    if measured_ms is None:
        return
    if measured_ms <= 0:
        raise ConfigError(f"measured_ms must be positive, got {measured_ms}")
    out["measured_ms"] = float(measured_ms)
    out["error_pct"] = (out["latency_ms"] - measured_ms) / measured_ms * 100.0
