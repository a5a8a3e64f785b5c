"""Reading a Jetson's own tools: ``tegrastats``, ``jetson_clocks --show`` and ``nvpmodel -q``, and energy per inference.

Pure text parsers (no device needed); the formats are those of JetPack 4 (L4T R32), 5 (R35) and 6 (R36), recorded
in ``tests/fixtures/jetson/`` with their public sources. Units follow the tools: tegrastats reports rail power in
mW (``VDD_IN 4761mW/4778mW`` = now/average since tegrastats started; JetPack 4 prints the same numbers without
``mW``), temperatures in °C (``-256C`` marks a sensor that is absent or powered down) and clocks in MHz;
``jetson_clocks --show`` reports CPU clocks in kHz and GPU/EMC clocks in Hz.

Energy per inference follows the Jetson practice in the measurement spec: mean input-rail power over the timed
window × the window's length / the number of inferences (calls or images).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .system import parse_nvpmodel

__all__ = [
    "INPUT_RAILS",
    "parse_jetson_clocks",
    "parse_nvpmodel",
    "parse_tegrastats",
    "parse_tegrastats_line",
    "summarise_tegrastats",
]

# the rail that measures the whole module's input, in the order they are looked for: Orin Nano/NX and Xavier NX
# name it VDD_IN; AGX Orin has no VDD_IN rail (its three rails VDD_GPU_SOC, VDD_CPU_CV and VIN_SYS_5V0 are summed,
# as jtop does); TX2/Nano (JetPack 4) use VDD_IN or POM_5V_IN
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")

_STAMP = re.compile(r"^(?P<date>\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB(?: \(lfb (\d+)x(\d+)MB\))?")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_ENGINE = re.compile(r"\b(EMC_FREQ|GR3D_FREQ|GR3D2_FREQ|VIC_FREQ) (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_ABSENT_SENSOR_C = -256.0


def parse_tegrastats_line(line: str) -> dict | None:
    """One tegrastats sample, or None for a line that is not one (no ``RAM`` field).

    Returns ``{"time": "MM-DD-YYYY HH:MM:SS" | None, "ram_mb": {used, total}, "swap_mb": {...} | None,
    "cpu": [{"load_pct", "freq_mhz"} | None (core off)], "gpu": {"load_pct", "freq_mhz"} | None,
    "emc": {...} | None, "temperature_c": {zone: °C}, "rails_mw": {rail: {"now", "avg"}}}``.
    Sensors reading −256 °C (absent/powered down) are left out.
    """
    line = line.strip()
    ram = _RAM.search(line)
    if not ram:
        return None
    stamp = _STAMP.match(line)
    out: dict = {"time": stamp["date"] if stamp else None,
                 "ram_mb": {"used": int(ram[1]), "total": int(ram[2])}, "swap_mb": None, "cpu": [],
                 "gpu": None, "emc": None, "temperature_c": {}, "rails_mw": {}}
    swap = _SWAP.search(line)
    if swap:
        out["swap_mb"] = {"used": int(swap[1]), "total": int(swap[2])}
    cpu = _CPU.search(line)
    if cpu:
        for core in cpu[1].split(","):
            core = core.strip()
            m = re.fullmatch(r"(\d+)%(?:@(\d+))?", core)
            out["cpu"].append(None if not m else {"load_pct": int(m[1]),
                                                  "freq_mhz": int(m[2]) if m[2] else None})
    for m in _ENGINE.finditer(line):
        freqs = [int(f) for f in (m[3] or "").split(",") if f]
        entry = {"load_pct": int(m[2]), "freq_mhz": max(freqs) if freqs else None}
        if m[1] == "GR3D_FREQ":
            out["gpu"] = entry
        elif m[1] == "EMC_FREQ":
            out["emc"] = entry
    for m in _TEMP.finditer(line):
        value = float(m[2])
        if value > _ABSENT_SENSOR_C:
            out["temperature_c"][m[1]] = value
    rest = line[cpu.end():] if cpu else line  # rails come after the CPU list; "RAM 775/7620MB" is not a rail
    for m in _RAIL.finditer(rest):
        if m[1] in ("RAM", "SWAP", "IRAM"):
            continue
        out["rails_mw"][m[1]] = {"now": int(m[2]), "avg": int(m[3])}
    return out


def parse_tegrastats(text: str | Iterable[str]) -> list[dict]:
    """Every sample in a tegrastats log (one line each). A line may start with a Unix time the sampler added
    (``1764412345.123 RAM ...``); it goes into ``"unix_time"``."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    samples = []
    for line in lines:
        unix = None
        m = re.match(r"^(\d{9,}\.\d+)\s+(.*)$", line.strip())
        if m:
            unix, line = float(m[1]), m[2]
        s = parse_tegrastats_line(line)
        if s is not None:
            s["unix_time"] = unix
            samples.append(s)
    return samples


def input_power_mw(sample: dict) -> tuple[float, str] | None:
    """The module's input power in mW and how it was obtained (the rail's name, or the sum of rails)."""
    rails = sample.get("rails_mw") or {}
    for name in INPUT_RAILS:
        if name in rails:
            return float(rails[name]["now"]), name
    named = {k: v for k, v in rails.items() if k != "NC"}
    if not named:
        return None
    return float(sum(v["now"] for v in named.values())), "sum of " + "+".join(sorted(named))


def summarise_tegrastats(samples: Sequence[dict], *, window_s: float | None = None,
                         inferences: int | None = None, images: int | None = None) -> dict:
    """Mean power per rail, input power, energy per inference, temperatures and GPU load over ``samples``.

    ``window_s``: length of the timed window the samples cover (s); ``inferences``: timed calls in it; ``images``:
    images in it (calls × batch). Energy = mean input power (mW) × ``window_s`` / count, in mJ (the measurement
    spec's Jetson practice). Returns ``{"samples": 0, ...}`` with a note when there is nothing to summarise.
    """
    out: dict = {"source": "tegrastats", "samples": len(samples), "window_s": window_s}
    if not samples:
        out["note"] = "no tegrastats samples fell in the timed window"
        return out
    rails: dict[str, list[float]] = {}
    for s in samples:
        for name, v in s["rails_mw"].items():
            rails.setdefault(name, []).append(float(v["now"]))
    out["rails_mean_mw"] = {k: sum(v) / len(v) for k, v in rails.items()}
    inputs = [p for p in (input_power_mw(s) for s in samples) if p is not None]
    if inputs:
        mean_mw = sum(p for p, _ in inputs) / len(inputs)
        out["input_power_mean_mw"] = mean_mw
        out["input_rail"] = inputs[0][1]
        if window_s:
            energy_mj = mean_mw * window_s  # mW × s = mJ
            out["energy_mj"] = energy_mj
            if inferences:
                out["energy_mj_per_inference"] = energy_mj / inferences
            if images:
                out["energy_mj_per_image"] = energy_mj / images
            if window_s < 30:
                out["note"] = (f"energy over a {window_s:.1f} s window with {len(samples)} samples; the Jetson "
                               "practice is ≥ 30 s (raise --duration for a steadier figure)")
    else:
        out["note"] = "tegrastats reported no power rails (JetPack without INA3221 readings?)"
    temps: dict[str, list[float]] = {}
    for s in samples:
        for zone, c in s["temperature_c"].items():
            temps.setdefault(zone, []).append(c)
    out["temperature_c"] = {z: {"first": v[0], "last": v[-1], "max": max(v)} for z, v in temps.items()}
    gpu = [s["gpu"] for s in samples if s.get("gpu")]
    if gpu:
        out["gpu_load_mean_pct"] = sum(g["load_pct"] for g in gpu) / len(gpu)
        freqs = [g["freq_mhz"] for g in gpu if g["freq_mhz"] is not None]
        if freqs:
            out["gpu_freq_mhz"] = {"min": min(freqs), "max": max(freqs)}
    cpu_freqs = [c["freq_mhz"] for s in samples for c in s["cpu"] if c and c["freq_mhz"] is not None]
    if cpu_freqs:
        out["cpu_freq_mhz"] = {"min": min(cpu_freqs), "max": max(cpu_freqs)}
    out["ram_used_mb_max"] = max(s["ram_mb"]["used"] for s in samples)
    return out


_CPU_LINE = re.compile(r"^(cpu\d+):\s+(.*)$")
_KV = re.compile(r"(\w+)=(\S+)")


def parse_jetson_clocks(text: str) -> dict:
    """``jetson_clocks --show``: SoC, CPUs (kHz), GPU and EMC (Hz), DLA/PVA engines, fan and power mode.

    Adds ``clocks_locked``: True when every online CPU and the GPU run with MinFreq == MaxFreq (what
    ``sudo jetson_clocks`` does), False when any does not, None when the output has no clocks.
    """
    out: dict = {"soc_family": None, "machine": None, "online_cpus": None, "cpus": {}, "gpu": None, "emc": None,
                 "engines": {}, "power_mode": None, "active_gpu_tpcs": None, "fan": None}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"SOC family:(\S+)\s+Machine:(.*)$", line)
        if m:
            out["soc_family"], out["machine"] = m[1], m[2].strip()
            continue
        m = re.match(r"Online CPUs:\s*([^,]*)", line)
        if m:
            out["online_cpus"] = m[1].strip()
            continue
        m = _CPU_LINE.match(line)
        if m:
            kv = dict(_KV.findall(m[2].split("IdleStates:")[0]))
            out["cpus"][m[1]] = {"online": kv.get("Online", "1") == "1", "governor": kv.get("Governor"),
                                 "min_khz": _int(kv.get("MinFreq")), "max_khz": _int(kv.get("MaxFreq")),
                                 "cur_khz": _int(kv.get("CurrentFreq"))}
            continue
        m = re.match(r"(GPU|EMC)\s+(MinFreq=.*)$", line)
        if m:
            kv = dict(_KV.findall(m[2]))
            entry = {"min_hz": _int(kv.get("MinFreq")), "max_hz": _int(kv.get("MaxFreq")),
                     "cur_hz": _int(kv.get("CurrentFreq"))}
            if "FreqOverride" in kv:
                entry["freq_override"] = kv["FreqOverride"] == "1"
            out[m[1].lower()] = entry
            continue
        m = re.match(r"((?:DLA|PVA)\w*):\s+(.*)$", line)
        if m:
            kv = dict(_KV.findall(m[2]))
            out["engines"][m[1]] = {"online": kv.get("Online") == "1", "max_hz": _int(kv.get("MaxFreq")),
                                    "cur_hz": _int(kv.get("CurrentFreq"))}
            continue
        m = re.match(r"Active GPU TPCs:\s*(\d+)", line)
        if m:
            out["active_gpu_tpcs"] = int(m[1])
            continue
        m = re.match(r"NV Power Mode:\s*(.+)$", line)
        if m:
            out["power_mode"] = m[1].strip()
            continue
        if line.upper().startswith("FAN"):
            out["fan"] = line
    online = [c for c in out["cpus"].values() if c["online"]]
    checks = [c["min_khz"] == c["max_khz"] for c in online if c["min_khz"] is not None]
    if out["gpu"] and out["gpu"]["min_hz"] is not None:
        checks.append(out["gpu"]["min_hz"] == out["gpu"]["max_hz"])
    out["clocks_locked"] = all(checks) if checks else None
    return out


def _int(v: str | None) -> int | None:
    return int(v) if v is not None and v.lstrip("-").isdigit() else None
