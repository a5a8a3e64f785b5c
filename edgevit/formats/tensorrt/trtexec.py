"""Reading trtexec's logs: the summary numbers of a run of the device bundle's ``profile.sh``.

The bundle (:mod:`edgevit.formats.tensorrt.export`) measures the engine on the device with ``trtexec``;
:func:`parse_trtexec_log` turns the logs it sends back into throughput and per-metric latency statistics.
"""

from __future__ import annotations

import re
from typing import Any

_NUM = r"([0-9.]+(?:e[-+]?\d+)?)"
_STAT_LINE = re.compile(r"(Latency|GPU Compute Time|Enqueue Time|H2D Latency|D2H Latency|Host Latency): (.*)")
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = " + _NUM + r" ms")
_THROUGHPUT = re.compile(r"Throughput: " + _NUM + r" qps")
_TRT = re.compile(r"\[TensorRT v(\d+)\]")


def parse_trtexec_log(text: str) -> dict:
    """Summary numbers of a trtexec run (``profile.sh``'s logs): throughput and per-metric latency stats in ms.

    Returns ``{"throughput_qps": float | None, "tensorrt": "v100300" | None, "latency": {min, max, mean, median,
    p90, p95, p99}, "gpu_compute": {...}, "enqueue": {...}, "h2d": {...}, "d2h": {...}}`` (metrics that the log
    does not report are absent).
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
