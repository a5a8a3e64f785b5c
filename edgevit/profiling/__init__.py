"""Profiling: latency measurement, system stamps, MAC counts, hardware profiles and roofline prediction.

Importing this package imports nothing heavy (no torch, no onnx): names load from their module on first use.

- :func:`profile_runtime` (``latency``): time a loaded runtime per batch size, median/p90/p99 and stamps.
- :func:`time_call`, :func:`time_interleaved` (``latency``): time one callable; time several against each other in
  rotating interleaved passes (median of pass medians) on a noisy machine.
- :func:`take_snapshot`, :func:`assess` (``stability``): the machine before/after a timed window and the verdict
  (``stable`` / ``noisy`` / ``contended``) with its reasons in plain words.
- :class:`PeakRss`, :func:`read_rapl`, :func:`energy_record` (``resources``): peak RSS during a window; RAPL energy
  per inference where readable.
- :func:`system_stamp` (``system``): CPU, cores, memory, versions, threads, Jetson power mode/clocks/temps.
- :func:`count_macs_torch`, :func:`count_macs_onnx` (``macs``): batch-1 MACs.
- :func:`load_profile`, :func:`list_profiles`, :data:`HARDWARE` (``hardware``): device numbers from YAML.
- :func:`predict_latency`, :func:`predict_onnx_latency` (``roofline``): roofline predictions.
- :func:`predict`, :func:`fit_calibration`, :func:`load_calibration` (``predictor``): predictions with a stated error,
  per-op-class efficiencies fitted on this machine.
- :func:`measure_interleaved`, :func:`parse_ort_profile` (``ort_nodes``): onnxruntime per-node times.
- :func:`markdown_table`, :func:`profile_table` (``tables``).
- :func:`profile_remote` (``remote``): the same measurement on a device over SSH (:class:`SSHSession`, ``ssh``);
  :func:`parse_tegrastats`, :func:`parse_jetson_clocks`, :func:`summarise_tegrastats` (``jetson``);
  :func:`parse_benchmark_app` (``benchmark_app``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "profile_runtime": "latency", "latency_stats": "latency", "peak_rss_mb": "latency", "time_call": "latency",
    "time_interleaved": "latency",
    "system_stamp": "system",
    "take_snapshot": "stability", "assess": "stability",
    "PeakRss": "resources", "read_rapl": "resources", "energy_record": "resources",
    "count_macs_torch": "macs", "count_macs_onnx": "macs", "onnx_cost": "macs",
    "HARDWARE": "hardware", "HardwareProfile": "hardware", "PowerMode": "hardware", "Quantity": "hardware",
    "load_profile": "hardware", "list_profiles": "hardware", "register_profile": "hardware",
    "predict_latency": "roofline", "predict_onnx_latency": "roofline",
    "predict": "predictor", "fit_calibration": "predictor", "load_calibration": "predictor",
    "measure_interleaved": "ort_nodes", "parse_ort_profile": "ort_nodes",
    "markdown_table": "tables", "profile_table": "tables",
    "profile_remote": "remote", "SSHSession": "ssh", "RemoteTarget": "ssh",
    "parse_tegrastats": "jetson", "parse_jetson_clocks": "jetson", "summarise_tegrastats": "jetson",
    "parse_benchmark_app": "benchmark_app",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgevit.profiling' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
