"""Stamp a measurement with the machine it ran on: CPU, cores, memory, versions, threads, and Jetson power state.

Nothing here imports a heavy package: versions come from ``importlib.metadata`` and thread counts of torch are
read only when torch is already imported. Every probe fails soft: what could not be read goes into ``notes``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from ..versions import library_versions

log = logging.getLogger(__name__)

# distribution names whose versions matter for a latency number (first installed name of each group wins)

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
    "TORCH_NUM_THREADS", "ORT_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY", "GOMP_CPU_AFFINITY",
    "CUDA_VISIBLE_DEVICES",
)

JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")
THERMAL_DIR = Path("/sys/devices/virtual/thermal")
DEVFREQ_DIR = Path("/sys/class/devfreq")
CPU_DIR = Path("/sys/devices/system/cpu")
EMC_RATE_FILES = (Path("/sys/kernel/debug/bpmp/debug/clk/emc/rate"), Path("/sys/kernel/debug/clk/emc/clk_rate"))


def system_stamp(threads: int | None = None) -> dict:
    """A JSON-able description of this machine and its software, for stamping every measurement.

    ``threads`` is the thread count the measured runtime was asked to use (recorded as given).
    """
    notes: list[str] = []
    stamp: dict = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    stamp["cpu"] = _cpu_info(notes)
    stamp["memory_total_bytes"] = _mem_total(notes)
    stamp["versions"] = library_versions()
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "__version__", None):  # includes the CUDA tag (2.x.y+cu128)
        stamp["versions"]["torch"] = str(torch.__version__)
    stamp["threads"] = _thread_settings(threads)
    gpu = _nvidia_smi(notes)
    if gpu:
        stamp["gpu"] = gpu
    if JETSON_RELEASE_FILE.exists():
        stamp["jetson"] = jetson_state(notes)
    stamp["notes"] = notes
    return stamp


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _cpu_info(notes: list[str]) -> dict:
    info: dict = {"model": None, "logical_cores": os.cpu_count(), "physical_cores": None, "affinity_cores": None}
    text = _read(Path("/proc/cpuinfo"))
    if text is None:
        notes.append("/proc/cpuinfo not readable: CPU model unknown")
        info["model"] = platform.processor() or None
    else:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        # x86: "model name"; arm64: no model name, but "CPU part" / device-tree model
        info["model"] = fields.get("model name") or fields.get("Hardware") or fields.get("Model")
        if info["model"] is None and "CPU part" in fields:
            info["model"] = f"ARM implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
        flags = (fields.get("flags") or fields.get("Features") or "").split()
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16", "fma",
                  "asimddp", "i8mm", "bf16", "sve", "fphp", "asimdhp")
        info["isa"] = [f for f in wanted if f in flags]
    board = _read(Path("/proc/device-tree/model"))
    if board:
        info["board"] = board.rstrip("\x00")
    info["physical_cores"] = _physical_cores()
    if hasattr(os, "sched_getaffinity"):
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    freqs = [_read(p) for p in sorted(CPU_DIR.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))]
    freqs_khz = [int(f) for f in freqs if f and f.isdigit()]
    if freqs_khz:
        info["cur_freq_mhz"] = {"min": min(freqs_khz) // 1000, "max": max(freqs_khz) // 1000}
    governor = _read(CPU_DIR / "cpu0/cpufreq/scaling_governor")
    if governor:
        info["governor"] = governor
    return info


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs from sysfs topology; None when sysfs has no topology."""
    cores = set()
    for topo in CPU_DIR.glob("cpu[0-9]*/topology"):
        core, pkg = _read(topo / "core_id"), _read(topo / "physical_package_id")
        if core is not None:
            cores.add((pkg, core))
    return len(cores) or None


def _mem_total(notes: list[str]) -> int | None:
    text = _read(Path("/proc/meminfo"))
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text or "", re.MULTILINE)
    if m:
        return int(m.group(1)) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        notes.append("total memory unknown (no /proc/meminfo, no sysconf)")
        return None


def _thread_settings(threads: int | None) -> dict:
    out: dict = {"requested": threads, "env": {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ}}
    torch = sys.modules.get("torch")  # only when already imported: never import torch to stamp
    if torch is not None:
        try:
            out["torch_intra_op"] = torch.get_num_threads()
            out["torch_inter_op"] = torch.get_num_interop_threads()
        except Exception as exc:  # noqa: BLE001 - a stamp must never fail
            out["torch_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _run(cmd: list[str], notes: list[str], timeout: float = 5.0) -> str | None:
    exe = shutil.which(cmd[0])
    if exe is None:
        notes.append(f"'{cmd[0]}' not found on PATH")
        return None
    try:
        res = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"'{' '.join(cmd)}' failed: {type(exc).__name__}: {exc}")
        return None
    if res.returncode != 0:
        notes.append(f"'{' '.join(cmd)}' exited {res.returncode}: {res.stderr.strip()[:200]}")
        return None
    return res.stdout


def _nvidia_smi(notes: list[str]) -> list[dict] | None:
    """Discrete NVIDIA GPUs (name, driver, clocks, temperature, power limit) when nvidia-smi is present."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.mem", "temperature.gpu", "power.limit",
              "pstate")
    out = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"], notes)
    if not out:
        return None
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.strip().splitlines()]


def parse_nvpmodel(text: str) -> dict:
    """``nvpmodel -q`` prints 'NV Power Mode: MAXN_SUPER' then the mode id on the next line."""
    out: dict = {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        m = re.match(r"NV Power Mode:\s*(.+)", line)
        if m:
            out["name"] = m.group(1).strip()
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                out["id"] = int(lines[i + 1])
        m = re.match(r"NV Fan Mode:\s*(.+)", line)
        if m:
            out["fan"] = m.group(1).strip()
    return out


def jetson_state(notes: list[str] | None = None) -> dict:
    """L4T release, power mode (``nvpmodel -q``), GPU/CPU/EMC clocks and thermal-zone temperatures of a Jetson."""
    notes = [] if notes is None else notes
    release = (_read(JETSON_RELEASE_FILE) or "").splitlines()
    state: dict = {"l4t_release": release[0].lstrip("# ") if release else None}
    out = _run(["nvpmodel", "-q"], notes)
    state["power_mode"] = parse_nvpmodel(out) if out else None
    if out and not state["power_mode"]:
        notes.append(f"could not parse 'nvpmodel -q' output: {out.strip()[:200]!r}")
    clocks: dict = {}
    # the integrated GPU is a devfreq device: 17000000.ga10b (Orin), 17000000.gv11b (Xavier), 57000000.gpu (Nano)
    for dev in sorted(DEVFREQ_DIR.glob("*")):
        if re.search(r"gpu|ga10b|gv11b|gp10b", dev.name):
            for key in ("cur_freq", "min_freq", "max_freq"):
                v = _read(dev / key)
                if v and v.isdigit():
                    clocks[f"gpu_{key}_mhz"] = int(v) / 1e6
            gov = _read(dev / "governor")
            if gov:
                clocks["gpu_governor"] = gov
            break
    else:
        notes.append(f"no GPU devfreq device under {DEVFREQ_DIR}")
    cpu = [_read(p) for p in sorted(CPU_DIR.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))]
    cpu_khz = [int(v) for v in cpu if v and v.isdigit()]
    if cpu_khz:
        clocks["cpu_cur_freq_mhz"] = [k / 1000 for k in cpu_khz]
    for f in EMC_RATE_FILES:  # debugfs: usually root only
        v = _read(f)
        if v and v.isdigit():
            clocks["emc_rate_mhz"] = int(v) / 1e6
            break
    else:
        notes.append("EMC (memory) clock unreadable (debugfs needs root)")
    state["clocks"] = clocks
    temps: dict = {}
    for zone in sorted(THERMAL_DIR.glob("thermal_zone*")):
        name, temp = _read(zone / "type"), _read(zone / "temp")
        if name and temp and temp.lstrip("-").isdigit():
            temps[name] = int(temp) / 1000.0  # millidegrees C
    if not temps:
        notes.append(f"no readable thermal zones under {THERMAL_DIR}")
    state["temperature_c"] = temps
    return state
