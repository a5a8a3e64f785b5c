"""Reading trtexec's output: the summary of a run of the device bundle's ``profile.sh``, its ``--exportTimes`` JSON,
the TensorRT version it reports, and the error it prints for an engine built by another TensorRT version.

The bundle (:mod:`edgevit.formats.tensorrt.export`) measures the engine on the device with ``trtexec``;
:func:`parse_trtexec_log` turns the logs it sends back into throughput and per-metric latency statistics,
:func:`parse_trtexec_times` the per-iteration times (the layout of ``exportJSONTrace`` in TensorRT's
``samples/common/sampleReporting.cpp``). Recorded outputs: ``tests/fixtures/jetson/``.
"""

from __future__ import annotations

import json
import re
from typing import Any

_NUM = r"([0-9.]+(?:e[-+]?\d+)?)"
_STAT_LINE = re.compile(r"(Latency|GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency|Host Latency): (.*)")
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = " + _NUM + r" ms")
_THROUGHPUT = re.compile(r"Throughput: " + _NUM + r" qps")
_TRT = re.compile(r"\[TensorRT v(\d+)\]")
_TRT_DOTTED = re.compile(r"TensorRT version: (\d+\.\d+\.\d+)")
_CV = re.compile(r"coefficient of variance = " + _NUM + r"%")
_WALL = re.compile(r"Total Host Walltime: " + _NUM + r" s")
_GPU_TOTAL = re.compile(r"Total GPU Compute Time: " + _NUM + r" s")
_ENGINE_MISMATCH = re.compile(r"engine plan file is not compatible with this version of TensorRT[^\n]*|"
                              r"Version tag does not match[^\n]*|Serialized Engine Version[^\n]*", re.IGNORECASE)
_EXPECTING = re.compile(r"expecting (?:library|format) version ([\d.]+) got ([\d.]+)")
# per-iteration fields of --exportTimes, in ms (TensorRT 8 adds endToEndMs; older builds name h2d/d2h in/out)
TIMES_FIELDS = {"latencyMs": "latency", "computeMs": "gpu_compute", "h2dMs": "h2d", "d2hMs": "d2h",
                "inMs": "h2d", "outMs": "d2h", "endToEndMs": "end_to_end"}


def parse_trtexec_log(text: str) -> dict:
    """Summary numbers of a trtexec run (``profile.sh``'s logs): throughput and per-metric latency stats in ms.

    Returns ``{"throughput_qps": float | None, "tensorrt": "v100300" | None, "tensorrt_version": "10.3.0" | None,
    "latency": {min, max, mean, median, p90, p95, p99}, "gpu_compute": {...}, "enqueue": {...}, "h2d": {...},
    "d2h": {...}, "cv_percent" (trtexec's stability warning), "host_walltime_s", "gpu_compute_total_s",
    "warnings": [...]}`` (metrics that the log does not report are absent; TensorRT 8 prints only p99 by default).
    """
    keys = {"Latency": "latency", "Host Latency": "latency", "GPU Compute Time": "gpu_compute",
            "Enqueue Time": "enqueue", "H2D Latency": "h2d", "D2H Latency": "d2h"}
    out: dict[str, Any] = {"throughput_qps": None, "tensorrt": None}
    m = _THROUGHPUT.search(text)
    if m:
        out["throughput_qps"] = float(m[1])
    m = _TRT.search(text)
    if m:
        out["tensorrt"] = f"v{m[1]}"
    out["tensorrt_version"] = trtexec_version(text)
    for key, rx in (("cv_percent", _CV), ("host_walltime_s", _WALL), ("gpu_compute_total_s", _GPU_TOTAL)):
        m = rx.search(text)
        if m:
            out[key] = float(m[1])
    out["warnings"] = [ln.split("[W]", 1)[1].strip() for ln in text.splitlines() if "[W]" in ln]
    for line in text.splitlines():
        lm = _STAT_LINE.search(line)
        if not lm:
            continue
        stats = {}
        for sm in _STAT.finditer(lm[2]):
            key = f"p{sm[2].rstrip('0').rstrip('.') if '.' in sm[2] else sm[2]}" if sm[2] else sm[1]
            stats[key] = float(sm[3])
        if stats:
            out[keys[lm[1]]] = stats
    return out


def parse_trtexec_times(text: str) -> dict[str, list[float]]:
    """Per-iteration times in ms from a ``trtexec --exportTimes`` file: ``{"latency": [...], "gpu_compute": [...],
    "h2d": [...], "d2h": [...], "start_ms": [...]}`` (keys the file does not hold are absent).

    ``latency`` is trtexec's host latency per inference (H2D + compute + D2H); ``start_ms`` the enqueue start of
    each iteration (for the timed window). Raises ValueError for a file that is not trtexec's trace.
    """
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a trtexec --exportTimes file (invalid JSON: {exc})") from exc
    if not isinstance(rows, list):
        raise ValueError("not a trtexec --exportTimes file (expected a JSON list of iterations)")  # noqa: TRY004
    out: dict[str, list[float]] = {}
    for row in rows:
        if not isinstance(row, dict) or "count" in row and len(row) == 1:  # old builds open with {"count": N}
            continue
        for key, name in TIMES_FIELDS.items():
            if key in row:
                out.setdefault(name, []).append(float(row[key]))
        start = row.get("startEnqMs", row.get("startInMs"))
        if start is not None:
            out.setdefault("start_ms", []).append(float(start))
    if "latency" not in out and "gpu_compute" not in out:
        raise ValueError("not a trtexec --exportTimes file (no latencyMs/computeMs per iteration)")
    return out


def tensorrt_version_from_tag(tag: str | int) -> str:
    """trtexec's packed banner tag as a dotted version: ``v100300`` → ``10.3.0`` (TensorRT ≥ 10: major·10⁴ +
    minor·10² + patch), ``v8602`` → ``8.6.2`` (TensorRT 8: major·10³ + minor·10² + patch)."""
    n = int(str(tag).lstrip("v"))
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def trtexec_version(text: str) -> str | None:
    """The TensorRT version trtexec reports (``TensorRT version: 10.3.0``, else its ``[TensorRT v100300]`` tag)."""
    m = _TRT_DOTTED.search(text)
    if m:
        return m[1]
    m = _TRT.search(text)
    return tensorrt_version_from_tag(m[1]) if m else None


def engine_version_mismatch(text: str) -> dict | None:
    """``{"message", "expected", "got"}`` when trtexec refused an engine serialized by another TensorRT version
    (engines are specific to the TensorRT version and GPU), else None. ``expected``/``got`` as TensorRT words them
    (the engine's version and the library's, when the message names them)."""
    m = _ENGINE_MISMATCH.search(text)
    if not m:
        return None
    v = _EXPECTING.search(text)
    return {"message": m[0].strip(), "expected": v[1] if v else None, "got": v[2] if v else None}
