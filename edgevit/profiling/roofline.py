"""Roofline latency prediction for devices we cannot measure on (see specs/measurement.md).

time = max(ops / (peak[dtype] × e_compute), bytes / (bandwidth × e_memory)) + kernels × launch overhead.

Every result says it is a prediction, which efficiency it assumed, and the sources of the hardware numbers.
With the default efficiency of 1.0 the result is a floor (best case): real runtimes reach a fraction of peak.
When a measurement is passed in, the result states the prediction's error against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from .hardware import HardwareProfile, Quantity, load_profile

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
# ops that move no data in any runtime we target (views and shape arithmetic): no time, no kernel launch
FREE_OPS = frozenset({"Shape", "Constant", "ConstantOfShape", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
                      "Identity", "Size"})


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
        "bound": "compute" if memory_s is None or compute_s >= memory_s else "memory",
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
                         measured_ms: float | None = None) -> dict:
    """Per-node roofline of an ONNX model at batch 1 (one kernel per node that does work, no fusion).

    Node traffic is its inputs + outputs; when ``dtype`` is narrower or wider than the file's weights the bytes
    are scaled by the ratio of element sizes (a note says so). Summing per node (rather than a whole-model
    roofline) charges memory-bound ops like LayerNorm and Softmax their own time, as runtimes without fusion do.
    """
    from .macs import onnx_cost

    prof = _resolve(profile)
    pmode = prof.mode(mode)
    ec, em = _efficiency(efficiency)
    peak = prof.peak_ops(dtype, pmode.name) * ec
    bw = prof.bandwidth(pmode.name)
    overhead = prof.launch_overhead_s(pmode.name) or 0.0
    cost = onnx_cost(path)
    notes = []
    scale = 1.0
    if dtype in DTYPE_BYTES and cost.get("weight_itemsize"):
        scale = DTYPE_BYTES[dtype] / cost["weight_itemsize"]
        if scale != 1.0:
            notes.append(f"bytes scaled by {scale:g}: {dtype} elements vs the file's {cost['weight_itemsize']}-byte "
                         f"weights")
    if bw is None:
        notes.append(f"memory term left out: the profile has no memory bandwidth ({pmode.memory_bandwidth.source})")
    compute_s = memory_s = body_s = 0.0
    kernels = 0
    bytes_total = 0.0
    by_op: dict[str, float] = {}
    for node in cost["nodes"]:
        if node["op"] in FREE_OPS:
            continue
        kernels += 1
        b = node["bytes"] * scale
        bytes_total += b
        c = 2.0 * node["macs"] / peak
        m = b / (bw * em) if bw else 0.0
        compute_s += c
        memory_s += m
        t = max(c, m)
        body_s += t
        by_op[node["op"]] = by_op.get(node["op"], 0.0) + t * 1e3
    launch_s = kernels * overhead
    if not overhead:
        notes.append("no launch overhead in the profile: kernel launches not charged")
    if ec == em == 1.0:
        notes.append("efficiency 1.0 assumed: this is a floor (best case), real runtimes are slower")
    out = {
        "prediction": True,
        "method": "roofline per ONNX node (no fusion)",
        "profile": prof.name,
        "mode": pmode.name,
        "dtype": dtype,
        "efficiency": {"compute": ec, "memory": em},
        "model": str(path),
        "macs": cost["macs"],
        "bytes_moved": bytes_total,
        "kernels": kernels,
        "compute_ms": compute_s * 1e3,
        "memory_ms": memory_s * 1e3 if bw else None,
        "bound": "compute" if not bw or compute_s >= memory_s else "memory",  # the larger summed share
        "launch_ms": launch_s * 1e3,
        "latency_ms": (body_s + launch_s) * 1e3,
        "ms_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "sources": {"peak": _src(prof.peak(dtype, pmode.name)), "memory_bandwidth": _src(pmode.memory_bandwidth),
                    "launch_overhead": _src(pmode.launch_overhead)},
        "notes": notes,
    }
    _add_error(out, measured_ms)
    return out


def _add_error(out: dict, measured_ms: float | None) -> None:
    if measured_ms is None:
        return
    if measured_ms <= 0:
        raise ConfigError(f"measured_ms must be positive, got {measured_ms}")
    out["measured_ms"] = float(measured_ms)
    out["error_pct"] = (out["latency_ms"] - measured_ms) / measured_ms * 100.0
