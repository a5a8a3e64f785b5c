"""Reading OpenVINO's ``benchmark_app`` report (its last lines on stdout), as run on a device by a remote profile.

``benchmark_app`` prints, after ``[Step 11/11]``: ``Count: N iterations``, ``Duration: T ms``, a ``Latency:`` block
with ``Median`` (or ``<P> percentile`` when ``-latency_percentile P`` ≠ 50), ``Average``, ``Min``, ``Max`` in ms,
and ``Throughput: F FPS``. It reports ONE percentile per run and no per-iteration times, so a row built from it
has ``p90_ms``/``p99_ms`` only when the run was asked for that percentile. Recorded output:
``tests/fixtures/jetson/benchmark_app_openvino_2026_4.log``.
"""

from __future__ import annotations

import re

_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse_benchmark_app(text: str) -> dict:
    """``{"count", "duration_ms", "latency_ms": {"median" | "p<P>", "mean", "min", "max"}, "throughput_fps",
    "devices"}`` from benchmark_app's output; raises ValueError when the report lines are missing (a failed run)."""
    out: dict = {"latency_ms": {}}
    m = re.search(r"Count:\s+(\d+) iterations", text)
    if not m:
        raise ValueError("no 'Count: N iterations' line: benchmark_app did not finish its measurement")
    out["count"] = int(m[1])
    m = re.search(r"Duration:\s+" + _NUM + " ms", text)
    out["duration_ms"] = float(m[1]) if m else None
    block = text[text.find("Latency:"):] if "Latency:" in text else ""
    for key, rx in (("median", r"Median:\s+" + _NUM + " ms"), ("mean", r"Average:\s+" + _NUM + " ms"),
                    ("min", r"Min:\s+" + _NUM + " ms"), ("max", r"Max:\s+" + _NUM + " ms")):
        m = re.search(rx, block)
        if m:
            out["latency_ms"][key] = float(m[1])
    m = re.search(r"(\d+(?:\.\d+)?) percentile:\s+" + _NUM + " ms", block)
    if m:
        out["latency_ms"][f"p{m[1].rstrip('0').rstrip('.') if '.' in m[1] else m[1]}"] = float(m[2])
    m = re.search(r"Throughput:\s+" + _NUM + " FPS", text)
    out["throughput_fps"] = float(m[1]) if m else None
    m = re.search(r"Execution Devices:\s*\[([^\]]*)\]", text)
    out["devices"] = [d.strip(" '\"") for d in m[1].split(",")] if m else None
    return out
