"""Latency of a model measured ON a remote device over SSH, in the same JSON rows as a local profile.

:func:`profile_remote` connects (:class:`~edgevit.profiling.ssh.SSHSession`: host keys checked against
known_hosts), checks the device (the runtime importable by its Python, the power mode asked for), copies the model
file(s), real preprocessed images (``inputs.npy``) and edgevit's self-contained device script
(``device/edgevit_device_profile.py``: Python + numpy + the runtime, no edgevit) to a private temporary directory,
and runs the script there. Around the timed runs it records ``nvpmodel -q``, ``jetson_clocks --show`` and the
thermal zones before and after, and samples ``tegrastats`` (each line stamped with the device's Unix time) so the
samples inside each batch size's timed window give power per rail, energy per inference and temperatures.
The raw per-call times come back and go through :func:`~edgevit.profiling.latency.latency_stats`, like a local
profile; each row adds ``remote`` (target, device host name, tools found) and, on a Jetson, ``jetson`` (power mode,
clocks, temperatures before/after, tegrastats summary).

TensorRT bundles are profiled by :func:`edgevit.formats.tensorrt.remote.profile_bundle_remote` (the bundle's own
``build.sh``/``profile.sh`` with trtexec), which reuses the helpers here.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RemoteError
from .jetson import parse_jetson_clocks, parse_nvpmodel, parse_tegrastats, summarise_tegrastats
from .latency import _check_args, _model_info, latency_stats
from .ssh import RemoteTarget, SSHSession
from .stability import Snapshot, assess, parse_loadavg, parse_pressure, parse_proc_stat

log = logging.getLogger(__name__)

SCRIPT_NAME = "edgevit_device_profile.py"
SCRIPT_RUNTIMES = ("onnxruntime", "openvino", "torch")
METHOD = ("on the device: time.perf_counter_ns around each runtime call (edgevit_device_profile.py, the local "
          "profiler's method: time-based warm-up with a minimum count, timed calls for a duration or a count); "
          "statistics computed on the host from the raw times")
MISSING_RUNTIME_EXIT = 3
_PROBE = r"""
echo "hostname=$(hostname)"
echo "uname=$(uname -srm)"
for t in nvpmodel jetson_clocks tegrastats trtexec benchmark_app; do
  p=$(command -v $t 2>/dev/null); [ -z "$p" ] && [ $t = trtexec ] && [ -x /usr/src/tensorrt/bin/trtexec ] && p=/usr/src/tensorrt/bin/trtexec
  echo "tool_$t=$p"
done
[ -r /etc/nv_tegra_release ] && echo "l4t=$(head -n 1 /etc/nv_tegra_release | sed 's/^# //')"
echo "loadavg=$(cat /proc/loadavg 2>/dev/null)"
echo "cpus=$(nproc 2>/dev/null)"
"""
_STAMP = r"""
echo "## nvpmodel -q"; nvpmodel -q 2>&1 || true
echo "## jetson_clocks --show"; (jetson_clocks --show || sudo -n jetson_clocks --show) 2>&1 || true
echo "## thermal"
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] && echo "$(cat "$z/type" 2>/dev/null):$(cat "$z/temp" 2>/dev/null)"
done
echo "## loadavg"; cat /proc/loadavg 2>/dev/null
"""


@dataclass
class DeviceInfo:
    """What the probe found on the device: host name, kernel, Jetson tools on its PATH, L4T release."""

    hostname: str | None = None
    uname: str | None = None
    tools: dict[str, str | None] = field(default_factory=dict)
    l4t: str | None = None
    loadavg: str | None = None
    cpus: int | None = None

    @property
    def is_jetson(self) -> bool:
        return bool(self.l4t or self.tools.get("nvpmodel") or self.tools.get("tegrastats"))

    def to_dict(self) -> dict:
        return {"hostname": self.hostname, "uname": self.uname, "l4t_release": self.l4t, "tools": self.tools,
                "loadavg": self.loadavg, "cpus": self.cpus}


def probe_device(ssh: SSHSession) -> DeviceInfo:
    """Host name, kernel, L4T release and which of nvpmodel/jetson_clocks/tegrastats/trtexec/benchmark_app exist."""
    res = ssh.run(_PROBE, timeout=30, check="probing the device (sh)")
    info = DeviceInfo()
    for line in res.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("tool_"):
            info.tools[key[5:]] = value or None
        elif key in ("hostname", "uname", "l4t", "loadavg"):
            setattr(info, key, value or None)
        elif key == "cpus" and value.isdigit():
            info.cpus = int(value)
    return info


def device_stamp(ssh: SSHSession) -> dict:
    """``nvpmodel -q``, ``jetson_clocks --show``, thermal zones (°C) and load average, parsed; raw text kept when a
    tool is missing or needs root (``jetson_clocks --show`` does: the stamp tries ``sudo -n``)."""
    text = ssh.run(_STAMP, timeout=30).stdout
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    out: dict = {}
    nv = "\n".join(sections.get("nvpmodel -q", []))
    out["power_mode"] = parse_nvpmodel(nv) or None
    if not out["power_mode"] and nv.strip():
        out["power_mode_raw"] = nv.strip()[-300:]
    jc = "\n".join(sections.get("jetson_clocks --show", []))
    clocks = parse_jetson_clocks(jc) if "SOC family" in jc or "cpu0" in jc else None
    out["clocks"] = clocks
    if clocks is None and jc.strip():
        out["clocks_raw"] = jc.strip()[-300:]
    temps = {}
    for line in sections.get("thermal", []):
        name, _, value = line.rpartition(":")
        if name and value.strip().lstrip("-").isdigit():
            temps[name] = int(value) / 1000.0
    out["temperature_c"] = temps
    load = " ".join(sections.get("loadavg", [])).split()
    out["loadavg"] = [float(v) for v in load[:3]] if len(load) >= 3 else None
    return out


def check_power_mode(stamp: dict, wanted: str | None, device: DeviceInfo) -> None:
    """Raise :class:`RemoteError` unless the device runs in power mode ``wanted`` (its name or its id), as serious
    Jetson benchmarks do; the message says how to switch."""
    if not wanted:
        return
    if not device.tools.get("nvpmodel"):
        raise RemoteError(f"--power-mode {wanted}: the device has no nvpmodel (not a Jetson, or JetPack's "
                          f"nvidia-l4t-tools is missing); drop --power-mode on this device")
    mode = stamp.get("power_mode") or {}
    name, mid = str(mode.get("name", "")), mode.get("id")
    if wanted.strip().upper() in (name.upper(), str(mid)):
        return
    raise RemoteError(f"the device runs in power mode {name or '?'} (id {mid}), not {wanted}. Switch it on the "
                      f"device with: sudo nvpmodel -m <id> (the ids: nvpmodel -p --verbose; a reboot may be asked "
                      f"for), optionally sudo jetson_clocks to lock the clocks, then run again")


def check_script_runtime(ssh: SSHSession, runtime: str, python: str) -> str:
    """The runtime's version as the device's ``python`` imports it; :class:`RemoteError` naming what to install."""
    if runtime not in SCRIPT_RUNTIMES:
        raise ConfigError(f"remote runtime {runtime!r}: choose one of {', '.join(SCRIPT_RUNTIMES)} (or tensorrt for "
                          f"a TensorRT bundle)")
    py = shlex.quote(python)
    probe = ("import importlib.util as u, importlib.metadata as m; "
             f"missing = [n for n in ('numpy', '{runtime}') if u.find_spec(n) is None]; "
             "print('missing=' + ','.join(missing)); "
             f"print('version=' + ('' if missing else m.version('{runtime}')))")
    res = ssh.run(f"{py} -c {shlex.quote(probe)}", timeout=60)
    found = dict(line.partition("=")[::2] for line in res.stdout.splitlines() if "=" in line)
    if res.rc in (126, 127):
        raise RemoteError(f"the device has no Python at {python!r} ({(res.stderr or res.stdout).strip()[:200]}); "
                          f"install python3 (sudo apt install python3 python3-numpy) or pass --remote-python PATH")
    if res.rc != 0 or "missing" not in found:
        raise RemoteError(f"checking for {runtime} with {python} on the device failed: "
                          f"{(res.stderr or res.stdout).strip()[-300:]}")
    if found["missing"]:
        missing = found["missing"].split(",")[0]
        raise RemoteError(f"the device lacks the runtime '{missing}' for {python}. Install it on the device: "
                          f"{_install_hint(missing)}; or pass --remote-python for a Python that has it")
    return found.get("version", "")


def _install_hint(name: str) -> str:
    hints = {"onnxruntime": "pip3 install onnxruntime (on a Jetson, the onnxruntime-gpu wheel for its JetPack from "
                            "https://pypi.jetson-ai-lab.io or the Jetson Zoo)",
             "openvino": "pip3 install openvino",
             "torch": "NVIDIA's torch wheel for its JetPack on a Jetson (PyTorch for Jetson), else pip3 install torch",
             "numpy": "pip3 install numpy (or sudo apt install python3-numpy)"}
    return hints.get(name, f"pip3 install {name}")


def start_tegrastats(ssh: SSHSession, workdir: str, interval_ms: int) -> str | None:
    """Start tegrastats in the background, each line prefixed with the device's Unix time; returns the log path.
    The sampler runs in its own process group (killed by :func:`stop_tegrastats`)."""
    logf = f"{workdir}/tegrastats.log"
    # the sampler's own shell writes its pid ($$: the leader of the new session and process group), so
    # stop_tegrastats kills the whole pipeline whatever the login shell forked in between
    pidf = shlex.quote(f"{workdir}/tegrastats.pid")
    cmd = (f"cd {shlex.quote(workdir)} && (setsid sh -c 'echo $$ > {pidf}; tegrastats --interval {int(interval_ms)} | "
           f"while IFS= read -r l; do echo \"$(date +%s.%N) $l\"; done' > {shlex.quote(logf)} 2>&1 < /dev/null &) "
           f"&& for i in 1 2 3 4 5 6 7 8 9 10; do [ -s {pidf} ] && break; sleep 0.1; done")
    res = ssh.run(cmd, timeout=30)
    if res.rc != 0:
        log.warning("could not start tegrastats on the device: %s", res.stderr.strip()[:200])
        return None
    return logf


def stop_tegrastats(ssh: SSHSession, workdir: str) -> None:
    pid = f"{shlex.quote(workdir)}/tegrastats.pid"
    ssh.run(f"[ -f {pid} ] && kill -- -$(cat {pid}) 2>/dev/null; true", timeout=30)


def profile_remote(artifact, remote: str | RemoteTarget, *, runtime: str, batch_sizes: Sequence[int] = (1,),
                   inputs: np.ndarray | None = None, warmup_s: float = 0.5, min_warmup: int = 5,
                   duration_s: float = 3.0, runs: int | None = None, min_runs: int = 10, max_runs: int = 10000,
                   threads: int | None = None, device: str = "cpu", power_mode: str | None = None,
                   identity: str | Path | None = None, known_hosts: str | Path | None = None,
                   accept_new_host_key: bool = False, python: str = "python3", tegrastats_interval_ms: int = 100,
                   keep_remote: bool = False, connect_timeout: float = 10.0, tool: str = "script") -> list[dict]:
    """Profile ``artifact`` (an :class:`~edgevit.artifact.Artifact`: ONNX, OpenVINO IR or a torch model) on the
    device ``remote`` (``user@host[:port]``) with ``runtime`` (onnxruntime, openvino or torch); one row per batch
    size, in the schema of :func:`~edgevit.profiling.latency.profile_runtime` plus ``remote`` and ``jetson``.

    ``inputs``: real preprocessed NCHW images (sent as ``inputs.npy``; random inputs when None, recorded as such).
    ``power_mode``: refuse to measure unless the Jetson runs in this nvpmodel mode (name or id). ``python``: the
    device's interpreter that has numpy and the runtime. ``keep_remote``: leave the device's work directory.
    ``tool``: ``script`` (edgevit's device script: raw per-call times, every statistic) or, for openvino,
    ``benchmark_app`` (OpenVINO's own tool, sync API, random inputs; it reports count, median, mean, min, max, so
    ``p90_ms``/``p99_ms``/``std_ms`` are None in its rows).
    Timing settings as in the local profiler. Raises :class:`~edgevit.errors.RemoteError` (unreachable host, login
    refused, device without the runtime, wrong power mode, a failed run), :class:`~edgevit.errors.HostKeyError`,
    :class:`~edgevit.errors.ConfigError` (bad settings, a runtime that cannot load this artefact kind).
    """
    from ..runtimes import runtime_loads

    batch_sizes = _check_args(batch_sizes, warmup_s, min_warmup, runs, duration_s, min_runs, max_runs)
    if runtime not in SCRIPT_RUNTIMES:
        raise ConfigError(f"remote runtime {runtime!r}: choose one of {', '.join(SCRIPT_RUNTIMES)}, or tensorrt "
                          f"with a TensorRT bundle")
    if tool not in ("script", "benchmark_app"):
        raise ConfigError(f"remote tool {tool!r}: choose script or benchmark_app")
    if tool == "benchmark_app" and runtime != "openvino":
        raise ConfigError(f"benchmark_app is OpenVINO's tool; it cannot time {runtime} (use tool='script')")
    if not runtime_loads(runtime, artifact.kind):
        raise ConfigError(f"{runtime} cannot load a {artifact.kind} artefact ({artifact.path or artifact.source}); "
                          f"export it first (edgevit export onnx / openvino)")
    target = RemoteTarget.parse(remote) if isinstance(remote, str) else remote
    model_info = _model_info(artifact)
    with tempfile.TemporaryDirectory(prefix="edgevit-remote-") as tmp:
        files, model_name = _model_files(artifact, Path(tmp))
        if inputs is not None:
            x = artifact.spec.check_batch(np.ascontiguousarray(np.asarray(inputs, dtype=np.float32)),
                                          where="remote profile inputs")
            np.save(Path(tmp) / "inputs.npy", x)
            files.append(Path(tmp) / "inputs.npy")
        script = resources.files("edgevit.profiling").joinpath("device", SCRIPT_NAME)
        with SSHSession(target, identity=identity, known_hosts=known_hosts,
                        accept_new_host_key=accept_new_host_key, timeout=connect_timeout) as ssh:
            dev = probe_device(ssh)
            before = device_stamp(ssh)
            check_power_mode(before, power_mode, dev)
            if tool == "benchmark_app":
                if not dev.tools.get("benchmark_app"):
                    raise RemoteError("the device has no benchmark_app on its PATH: install OpenVINO there (pip3 "
                                      "install openvino ships benchmark_app), or use the device script (the default)")
                version = ""
            else:
                version = check_script_runtime(ssh, runtime, python)
            workdir = ssh.mkdtemp()
            try:
                for f in files:
                    ssh.put(f, f"{workdir}/{f.name}")
                tegra_log = (start_tegrastats(ssh, workdir, tegrastats_interval_ms)
                             if dev.tools.get("tegrastats") else None)
                if tegra_log:
                    time.sleep(max(0.3, 2 * tegrastats_interval_ms / 1000))  # first samples before the timed runs
                if tool == "benchmark_app":
                    result = _run_benchmark_app(ssh, workdir, dev.tools["benchmark_app"], model_name, artifact,
                                                batch_sizes, duration_s=duration_s, runs=runs, threads=threads,
                                                device=device)
                else:
                    result = _run_script(ssh, workdir, script, python, model_name, runtime, artifact, batch_sizes,
                                         inputs=inputs is not None, warmup_s=warmup_s, min_warmup=min_warmup,
                                         duration_s=duration_s, runs=runs, min_runs=min_runs, max_runs=max_runs,
                                         threads=threads, device=device)
                if tegra_log:
                    stop_tegrastats(ssh, workdir)
                samples = parse_tegrastats(ssh.read_text(tegra_log)) if tegra_log else []
                after = device_stamp(ssh)
            finally:
                if keep_remote:
                    log.info("left the device's work directory %s:%s", target, workdir)
                else:
                    ssh.run(f"rm -rf {shlex.quote(workdir)}", timeout=60)
            host_key_added = ssh.host_key_added
    rows = []
    for r in result["results"]:
        b = int(r["batch"])
        stats = latency_stats(np.asarray(r["times_ns"], dtype=np.int64), b) if "times_ns" in r else r["stats"]
        window = r["window"]
        in_window = [s for s in samples if s.get("unix_time") is not None
                     and window["start_unix"] <= s["unix_time"] <= window["end_unix"]]
        row = {
            "model": model_info["model"], "runtime": runtime, "device": result["runtime_info"].get("device", device),
            "batch": b, **stats,
            "input_source": r["input_source"], "input_shape": r["input_shape"], "warmup": r["warmup"],
            "settings": result["settings"], "method": result.get("method", METHOD),
            "stability": _remote_stability(r, stats, before, after, dev),
            "peak_rss_mb": result.get("peak_rss_mb"),
            "memory": {"peak_rss_mb": result.get("peak_rss_mb"), "scope": "lifetime peak of the device process"
                       if result.get("peak_rss_mb") is not None else "not measured by this tool"},
            **{k: v for k, v in model_info.items() if k != "model"},
            "runtime_info": {**result["runtime_info"], "version": version or result["runtime_info"].get("version")},
            "system": {**result["system"], "hostname": result["system"].get("hostname") or dev.hostname,
                       **({"jetson": {"l4t_release": dev.l4t, "power_mode": before.get(
                "power_mode"), "clocks": before.get("clocks"), "temperature_c": before.get("temperature_c")}}
                if dev.is_jetson else {})},
            "remote": {"target": str(target), "device": dev.to_dict(), "python": python,
                       "host_key_added": host_key_added, "timed_window_unix": window,
                       "loadavg_before": before.get("loadavg"), "loadavg_after": after.get("loadavg")},
        }
        if dev.is_jetson:
            row["jetson"] = {
                "power_mode": before.get("power_mode"), "power_mode_after": after.get("power_mode"),
                "clocks_locked": (before.get("clocks") or {}).get("clocks_locked"),
                "clocks_before": before.get("clocks"), "clocks_after": after.get("clocks"),
                "temperature_c_before": before.get("temperature_c"), "temperature_c_after": after.get("temperature_c"),
                "tegrastats": summarise_tegrastats(in_window, window_s=window["end_unix"] - window["start_unix"],
                                                   inferences=stats["runs"], images=stats["runs"] * b)
                if tegra_log else {"note": "tegrastats not found on the device"},
            }
            row["jetson"]["warnings"] = jetson_warnings(row["jetson"])
        row["energy"] = remote_energy((row.get("jetson") or {}).get("tegrastats"),
                                      "no tegrastats on the device (energy is read on Jetsons only)")
        rows.append(row)
    return rows


def _remote_stability(r: dict, stats: dict, before: dict, after: dict, dev: DeviceInfo) -> dict:
    """``stability`` of one batch's timed window on the device: from the device script's snapshots and raw times
    (the local rules); for benchmark_app (no per-call times, no snapshots) from the device's load average and the
    reported spread only."""
    if "snapshots" in r and "times_ns" in r:
        snaps = r["snapshots"]
        return assess(snapshot_from_device(snaps["before"]), snapshot_from_device(snaps["after"]),
                      np.asarray(r["times_ns"], dtype=np.int64))
    return coarse_stability(stats, before.get("loadavg"), after.get("loadavg"), dev.cpus,
                            "this tool reports no per-call times")


def coarse_stability(stats: dict, load_before, load_after, cpus: int | None, why: str) -> dict:
    """A stability record from what a device tool reports (median/p90 or min/max, load averages), by the rules of
    :mod:`edgevit.profiling.stability` that need no per-call times: the load per CPU before and after, and p90/median
    where known. Marked ``coarse``."""
    from .stability import CONTENDED_LOAD_PER_CPU, NOISY_LOAD_PER_CPU, NOISY_P90_OVER_MEDIAN

    reasons_c, reasons_n = [], []
    lpc = (min(load_before[0], load_after[0]) / cpus if load_before and load_after and cpus else None)
    if lpc is not None and lpc >= CONTENDED_LOAD_PER_CPU:
        reasons_c.append(f"load average {load_after[0]:.1f} on {cpus} cores before and after")
    elif lpc is not None and lpc >= NOISY_LOAD_PER_CPU:
        reasons_n.append(f"load average {load_after[0]:.1f} on {cpus} cores before and after")
    p90, med = stats.get("p90_ms"), stats.get("median_ms")
    ratio = p90 / med if p90 and med else None
    if ratio is not None and ratio > NOISY_P90_OVER_MEDIAN:
        reasons_n.append(f"p90 is {ratio:.2f}× the median")
    verdict = "contended" if reasons_c else "noisy" if reasons_n else "stable"
    reasons = reasons_c or reasons_n
    msg = (f"{verdict}: " + "; ".join(reasons)) if reasons else (
        "stable as far as the device's load average and the reported spread show")
    return {"verdict": verdict, "message": msg, "reasons": reasons, "coarse": True, "load_per_cpu": lpc,
            "load_avg": {"before": load_before, "after": load_after}, "p90_over_median": ratio,
            "unavailable": [f"run-queue wait, CPU steal, per-call spread: {why}"]}


def jetson_warnings(j: dict) -> list[str]:
    """Plain-words warnings about a Jetson measurement: clocks not locked, power mode changed during the run."""
    out = []
    if j.get("clocks_locked") is False:
        out.append("clocks were not locked (MinFreq < MaxFreq): DVFS may have changed them during the run; run "
                   "`sudo jetson_clocks` on the device for steady numbers")
    before, after = (j.get("power_mode") or {}).get("name"), (j.get("power_mode_after") or {}).get("name")
    if before and after and before != after:
        out.append(f"the power mode changed during the run ({before} → {after})")
    return out


def snapshot_from_device(raw: dict) -> Snapshot:
    """A :class:`~edgevit.profiling.stability.Snapshot` from the device script's raw readings (the same files that
    :func:`~edgevit.profiling.stability.take_snapshot` reads locally), so the device's timed window is judged by the
    same rules. What the device could not read is listed in ``unavailable``."""
    unavailable: list[str] = []
    cpus = [int(c) for c in raw.get("cpus") or []]
    loadavg = parse_loadavg(raw["loadavg"]) if raw.get("loadavg") else None
    if loadavg is None:
        unavailable.append("load average: /proc/loadavg not readable on the device")
    ticks, running = parse_proc_stat(raw["stat"], cpus) if raw.get("stat") else (None, None)
    if not ticks:
        ticks = None
        unavailable.append("CPU steal and other processes' CPU use: /proc/stat not readable on the device")
    try:
        pressure = parse_pressure(raw["pressure"]) if raw.get("pressure") else None
    except ValueError:
        pressure = None
    if pressure is None:
        unavailable.append("CPU pressure: /proc/pressure/cpu not readable on the device")
    threads = {int(k): (int(v[0]), int(v[1])) for k, v in (raw.get("threads") or {}).items()} or None
    if threads is None:
        unavailable.append("run-queue wait: no /proc/self/task/*/schedstat on the device")
    freq = {int(c): int(v) for c, v in (raw.get("freq_khz") or {}).items() if v and v.strip().isdigit()}
    throttle = {int(c): int(v) for c, v in (raw.get("throttle") or {}).items() if v and v.strip().isdigit()}
    if not freq:
        unavailable.append("frequency: no readable cpufreq on the device")
    temps = {str(k): float(v) for k, v in (raw.get("temp_c") or {}).items()}
    return Snapshot(t=float(raw["t"]), cpus=cpus, online_cpus=int(raw.get("online_cpus") or len(cpus) or 1),
                    loadavg=loadavg, procs_running=running, cpu_ticks=ticks, threads=threads,
                    self_cpu_s=float(raw.get("self_cpu_s") or 0.0), pressure_some_us=pressure, freq_khz=freq,
                    throttle=throttle, temp_c=temps, unavailable=unavailable)


def remote_energy(tegra: dict | None, reason: str) -> dict:
    """The row's ``energy`` record (the local profiler's keys) from a tegrastats summary, or why there is none."""
    if tegra and tegra.get("energy_mj") is not None and tegra.get("energy_mj_per_image") is not None:
        return {"available": True, "source": "tegrastats", "scope": f"module input ({tegra['input_rail']})",
                "joules": tegra["energy_mj"] / 1e3,
                "joules_per_call": (tegra.get("energy_mj_per_inference") or 0) / 1e3,
                "millijoules_per_image": tegra["energy_mj_per_image"],
                "mean_power_w": tegra["input_power_mean_mw"] / 1e3, "window_s": tegra.get("window_s"),
                "samples": tegra.get("samples"), "note": tegra.get("note")}
    return {"available": False, "source": "tegrastats", "reason": (tegra or {}).get("note") or reason}


def _run_script(ssh: SSHSession, workdir: str, script, python: str, model_name: str, runtime: str, artifact,
                batch_sizes: Sequence[int], *, inputs: bool, warmup_s: float, min_warmup: int, duration_s: float,
                runs: int | None, min_runs: int, max_runs: int, threads: int | None, device: str) -> dict:
    """Copy and run edgevit's device script; its JSON result (raw times per batch, runtime info, device stamp)."""
    with resources.as_file(script) as script_path:
        ssh.put(script_path, f"{workdir}/{SCRIPT_NAME}")
    cmd = [python, SCRIPT_NAME, "--model", model_name, "--runtime", runtime, "--out", "result.json",
           "--batch", ",".join(map(str, batch_sizes)), "--warmup", str(warmup_s), "--min-warmup", str(min_warmup),
           "--duration", str(duration_s), "--min-runs", str(min_runs), "--max-runs", str(max_runs),
           "--device", device]
    cmd += ["--inputs", "inputs.npy"] if inputs else ["--shape", ",".join(map(str, artifact.spec.input_size))]
    cmd += ["--runs", str(runs)] if runs else []
    cmd += ["--threads", str(threads)] if threads else []
    budget = 120 + len(batch_sizes) * (warmup_s + (duration_s if not runs else 60) + 60)
    res = ssh.run(f"cd {shlex.quote(workdir)} && " + " ".join(shlex.quote(c) for c in cmd), timeout=budget)
    if res.rc == MISSING_RUNTIME_EXIT:
        raise RemoteError(f"the device lacks a runtime: {res.stderr.strip()[-500:]}")
    res.check(f"the device profiler ({runtime} on {model_name})")
    return json.loads(ssh.read_text(f"{workdir}/result.json"))


BENCHMARK_APP_METHOD = ("on the device: OpenVINO benchmark_app, sync API, one infer request, random inputs, a "
                        "time- or count-bounded run per batch size; its own median/mean/min/max (no per-iteration "
                        "times, so no p90/p99/std)")


def _run_benchmark_app(ssh: SSHSession, workdir: str, exe: str, model_name: str, artifact,
                       batch_sizes: Sequence[int], *, duration_s: float, runs: int | None, threads: int | None,
                       device: str) -> dict:
    """benchmark_app once per batch size; a result in the device script's layout with ``stats`` instead of times."""
    from .benchmark_app import parse_benchmark_app

    results = []
    text = ""
    for b in batch_sizes:
        shape = "[" + ",".join(map(str, (b, *artifact.spec.input_size))) + "]"
        cmd = [exe, "-m", model_name, "-d", "GPU" if device == "gpu" else "CPU", "-api", "sync", "-shape", shape,
               "-latency_percentile", "50"]
        cmd += ["-niter", str(runs)] if runs else ["-t", f"{max(1, round(duration_s))}"]
        cmd += ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads)] if threads else ["-hint", "latency"]
        res = ssh.run(f"cd {shlex.quote(workdir)} && " + " ".join(shlex.quote(c) for c in cmd)
                      + " 2>&1; echo \"end_unix=$(date +%s.%N)\"", timeout=300 + 2 * duration_s)
        text = res.stdout
        try:
            rep = parse_benchmark_app(text)
        except ValueError as exc:
            raise RemoteError(f"benchmark_app failed on the device ({exc}): {text.strip()[-1500:]}") from exc
        end = float(re.search(r"end_unix=([\d.]+)", text)[1])
        lat = rep["latency_ms"]
        median = lat.get("median")
        stats = {"median_ms": median, "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"), "mean_ms": lat.get("mean"),
                 "min_ms": lat.get("min"), "max_ms": lat.get("max"), "std_ms": None, "runs": rep["count"],
                 "throughput": b / (median / 1e3) if median else None}
        results.append({"batch": b, "stats": stats, "input_shape": [b, *artifact.spec.input_size],
                        "input_source": "random (benchmark_app)", "warmup": {"first_inference": "benchmark_app"},
                        "window": {"start_unix": end - (rep["duration_ms"] or 0) / 1000, "end_unix": end},
                        "benchmark_app": rep})
    m = re.search(r"Build \.+ (\S+)", text) or re.search(r"OpenVINO Runtime version \.+ (\S+)", text)
    return {"results": results, "method": BENCHMARK_APP_METHOD, "peak_rss_mb": None,
            "settings": {"runs": runs, "duration_s": None if runs else duration_s, "tool": "benchmark_app"},
            "runtime_info": {"runtime": "openvino", "version": m[1] if m else None, "tool": "benchmark_app",
                             "device": "GPU" if device == "gpu" else "CPU", "threads": threads},
            "system": {"hostname": None, "versions": {"openvino": m[1] if m else None}}}


def _model_files(artifact, tmp: Path) -> tuple[list[Path], str]:
    """The local files that make up the model on the device, and the name the device script loads."""
    path = Path(artifact.path) if artifact.path else None
    if artifact.kind == "onnx" and path is not None:
        files = [path] + [p for p in (path.with_name(path.name + ".data"),) if p.exists()]
        return files, path.name
    if artifact.kind == "openvino" and path is not None:
        bin_file = path.with_suffix(".bin")
        if not bin_file.exists():
            raise ConfigError(f"{path}: its weights {bin_file.name} are missing next to it")
        return [path, bin_file], path.name
    if artifact.kind == "torch" and artifact.model is not None:
        import torch

        model = artifact.model.eval()
        example = torch.from_numpy(artifact.spec.example(2))  # batch 2: a batch of 1 would be specialised
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        except Exception as exc:
            raise ConfigError(f"torch.export could not capture {artifact.source or 'the model'} for the device "
                              f"({type(exc).__name__}: {str(exc)[:300]}); profile its ONNX export with onnxruntime "
                              f"instead") from exc
        out = tmp / "model.pt2"
        torch.export.save(program, out)
        return [out], out.name
    raise ConfigError(f"a remote profile needs a model file (ONNX, OpenVINO IR) or a torch model; got a "
                      f"{artifact.kind} artefact ({artifact.path or artifact.source})")
