"""A TensorRT device bundle built and measured ON the device over SSH, parsed into local-profile rows.

:func:`profile_bundle_remote` copies the bundle (:func:`edgevit.formats.tensorrt.export.export_tensorrt` with
``bundle=True``) to a private directory on the device, checks that the device's TensorRT is the one the bundle was
made for (same major version: the calibration-cache header and the supported-operator table are per version;
``build.sh`` re-tags the cache across minor versions), builds the engine with the bundle's ``build.sh`` and
measures it with its ``profile.sh`` (trtexec: end-to-end and GPU-compute runs with ``--exportTimes``, a separate
per-layer run, a tegrastats energy run), then reads the logs back. Rows follow
:func:`edgevit.profiling.latency.profile_runtime`'s schema: the latency statistics come from trtexec's per-inference
end-to-end times (``latencyMs``: H2D + compute + D2H) through the same :func:`latency_stats`; ``gpu_compute``
holds the compute-only run's statistics; ``trtexec`` trtexec's own summaries; ``jetson`` the power mode, clocks,
temperatures and energy per inference.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import ConfigError, RemoteError
from ...profiling.jetson import parse_jetson_clocks, parse_nvpmodel, parse_tegrastats, summarise_tegrastats
from ...profiling.latency import latency_stats
from ...profiling.remote import (
    check_power_mode,
    coarse_stability,
    device_stamp,
    jetson_warnings,
    probe_device,
    remote_energy,
)
from ...profiling.ssh import RemoteTarget, SSHSession
from .spec import BUNDLE_FORMAT
from .trtexec import engine_version_mismatch, parse_trtexec_log, parse_trtexec_times, trtexec_version

log = logging.getLogger(__name__)

METHOD = ("on the device: the bundle's profile.sh (trtexec --useSpinWait, --warmUp/--duration/--iterations, "
          "percentiles 90/95/99); latency = trtexec's per-inference host latency from --exportTimes (H2D + GPU "
          "compute + D2H), GPU compute from a separate --noDataTransfers run; statistics computed on the host")
INSTALL_TENSORRT = ("install TensorRT on the device: on a Jetson `sudo apt install nvidia-jetpack` (or the "
                    "tensorrt/libnvinfer-bin packages of its JetPack), which puts trtexec at "
                    "/usr/src/tensorrt/bin/trtexec; elsewhere NVIDIA's TensorRT packages")


def read_bundle(bundle: str | Path) -> tuple[Path, dict]:
    """(bundle directory, manifest) of a TensorRT device bundle; :class:`ConfigError` when it is not one."""
    p = Path(bundle)
    d = p.parent if p.name == "manifest.json" else p
    manifest_path = d / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{d} is not a TensorRT device bundle (no readable manifest.json: {exc}); make one with "
                          f"edgevit export tensorrt MODEL.onnx --bundle --out DIR") from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ConfigError(f"{manifest_path} is not a TensorRT device bundle's manifest (format "
                          f"{manifest.get('format')!r}, expected {BUNDLE_FORMAT!r})")
    return d, manifest


def bundle_tensorrt_version(manifest: dict) -> str | None:
    """The TensorRT version a bundle was made for (its calibration cache's target, else its operator table's)."""
    calib = manifest.get("calibration") or {}
    return calib.get("target_tensorrt_version") or ((manifest.get("preflight") or {}).get("table") or {}).get(
        "tensorrt_version")


def check_tensorrt_version(bundle_version: str | None, device_version: str | None) -> str | None:
    """Raise :class:`RemoteError` when the device's TensorRT has another major version than the bundle's; returns
    a note for a minor-version difference (``build.sh`` re-tags the calibration cache), else None."""
    if not bundle_version or not device_version:
        return None if bundle_version == device_version else (
            f"TensorRT version unknown ({'bundle' if not bundle_version else 'device'}): not checked")
    if bundle_version.split(".")[0] != device_version.split(".")[0]:
        raise RemoteError(
            f"the bundle was made for TensorRT {bundle_version} (calibration-cache header, supported-operator "
            f"table), but the device has TensorRT {device_version}. Re-export the bundle for this device: edgevit "
            f"export tensorrt MODEL.onnx --bundle --trt-version {device_version} --out DIR (or install the JetPack "
            f"that ships TensorRT {bundle_version.split('.')[0]}.x on the device)")
    if bundle_version.split(".")[:2] != device_version.split(".")[:2]:
        return (f"bundle made for TensorRT {bundle_version}, device has {device_version}: build.sh re-tags the "
                f"calibration cache")
    return None


def profile_bundle_remote(bundle: str | Path, remote: str | RemoteTarget, *, batch_sizes: Sequence[int] = (1,),
                          precision: str | None = None, duration_s: float = 3.0, warmup_ms: int = 500,
                          iterations: int = 100, energy_s: float = 30.0, power_mode: str | None = None,
                          identity: str | Path | None = None, known_hosts: str | Path | None = None,
                          accept_new_host_key: bool = False, keep_remote: bool = False,
                          build_timeout_s: float = 3600.0, connect_timeout: float = 10.0) -> list[dict]:
    """Build and profile a TensorRT bundle on ``remote``; one row per batch size (see the module docstring).

    ``precision``: fp32 | fp16 | int8 (default: the bundle's); ``duration_s`` (≥ 3, trtexec's minimum here),
    ``warmup_ms``, ``iterations`` (minimum timed inferences): the timed runs; ``energy_s``: the tegrastats energy
    run (0 skips it; ≥ 30 s is the Jetson practice). Raises :class:`RemoteError` (no trtexec on the device, another
    TensorRT major version, an engine from another TensorRT version, a failed build or run, wrong power mode),
    :class:`ConfigError` (not a bundle, a batch outside the bundle's shape range, bad settings).
    """
    d, manifest = read_bundle(bundle)
    precision = precision or manifest.get("precision", "fp16")
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"TensorRT precision must be fp32, fp16 or int8, got {precision!r}")
    lo, hi = manifest["input"]["min_shape"][0], manifest["input"]["max_shape"][0]
    for b in batch_sizes:
        if not lo <= int(b) <= hi:
            raise ConfigError(f"batch {b} is outside the bundle's shape range {lo}-{hi}; re-export it with "
                              f"--max-batch {b}")
    if duration_s < 3 or energy_s < 0 or iterations < 1:
        raise ConfigError(f"need duration_s ≥ 3 (got {duration_s}), energy_s ≥ 0, iterations ≥ 1")
    target = RemoteTarget.parse(remote) if isinstance(remote, str) else remote
    files = [d / "manifest.json", d / "build.sh", d / "profile.sh"] + [d / f for f in manifest.get("files", {})]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise ConfigError(f"the bundle {d} is incomplete: {', '.join(missing)} missing; export it again")
    with SSHSession(target, identity=identity, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                    timeout=connect_timeout) as ssh:
        dev = probe_device(ssh)
        before = device_stamp(ssh)
        check_power_mode(before, power_mode, dev)
        trtexec = dev.tools.get("trtexec")
        if not trtexec:
            raise RemoteError(f"the device has no trtexec (TensorRT), which the bundle needs: {INSTALL_TENSORRT}")
        banner = ssh.run(f"{shlex.quote(trtexec)} --help 2>&1 | head -n 5", timeout=120).stdout
        device_trt = trtexec_version(banner)
        version_note = check_tensorrt_version(bundle_tensorrt_version(manifest), device_trt)
        workdir = ssh.mkdtemp("edgevit-trt-")
        rows: list[dict] = []
        try:
            for f in dict.fromkeys(files):
                ssh.put(f, f"{workdir}/{f.name}")
            env = f"cd {shlex.quote(workdir)} && chmod +x build.sh profile.sh && TRTEXEC={shlex.quote(trtexec)} " \
                  f"PRECISION={precision}"
            build = ssh.run(f"{env} ./build.sh", timeout=build_timeout_s)
            if build.rc != 0:
                raise RemoteError(f"building the {precision} engine on the device failed (build.sh exit "
                                  f"{build.rc}): {(build.stderr or build.stdout).strip()[-1500:]}")
            for b in batch_sizes:
                out = f"results/b{int(b)}"
                run = ssh.run(f"{env} BATCH={int(b)} DURATION_S={duration_s:g} WARMUP_MS={int(warmup_ms)} "
                              f"ITERATIONS={int(iterations)} ENERGY_S={energy_s:g} OUT={out} ./profile.sh",
                              timeout=300 + 4 * duration_s + energy_s)
                logs = {name: _read_or_empty(ssh, f"{workdir}/{out}/{name}") for name in (
                    "end_to_end.log", "compute_only.log", "times_end_to_end.json", "times_compute.json",
                    "system.txt", "tegrastats.log", "times_energy.json")}
                mismatch = engine_version_mismatch(logs["end_to_end.log"] + run.stdout + run.stderr)
                if mismatch:
                    raise RemoteError(
                        f"trtexec refused the engine: it was built by another TensorRT version ({mismatch['message']}"
                        f"). Engines are specific to the TensorRT version and the GPU: delete the .engine file and "
                        f"let build.sh build it on this device (copy the bundle, not an engine)")
                if run.rc != 0 or not logs["times_end_to_end.json"]:
                    raise RemoteError(f"profile.sh failed on the device (exit {run.rc}): "
                                      f"{(logs['end_to_end.log'] or run.stderr or run.stdout).strip()[-1500:]}")
                rows.append(_row(manifest, int(b), precision, logs, dev, before, target, device_trt, version_note,
                                 energy_s))
            after = device_stamp(ssh)
            for r in rows:
                r["stability"] = coarse_stability(r, before.get("loadavg"), after.get("loadavg"), dev.cpus,
                                                  "trtexec's trace has per-inference times but no machine snapshots")
                r["energy"] = remote_energy((r.get("jetson") or {}).get("tegrastats"),
                                            "no tegrastats energy run (not a Jetson, or --energy-s 0)")
                if "jetson" in r:
                    r["jetson"]["temperature_c_after"] = after.get("temperature_c")
                    r["jetson"]["power_mode_after"] = after.get("power_mode")
                    r["jetson"]["warnings"] = jetson_warnings(r["jetson"])
        finally:
            if keep_remote:
                log.info("left the device's work directory %s:%s", target, workdir)
            else:
                ssh.run(f"rm -rf {shlex.quote(workdir)}", timeout=120)
    return rows


def _read_or_empty(ssh: SSHSession, path: str) -> str:
    res = ssh.run(f"cat {shlex.quote(path)} 2>/dev/null", timeout=120)
    return res.stdout if res.rc == 0 else ""


def _row(manifest: dict, batch: int, precision: str, logs: dict, dev, before: dict, target, device_trt,
         version_note, energy_s: float) -> dict:
    e2e = parse_trtexec_times(logs["times_end_to_end.json"])
    times_ms = e2e.get("latency") or e2e["gpu_compute"]
    stats = latency_stats(np.round(np.asarray(times_ms) * 1e6).astype(np.int64), batch)
    compute = parse_trtexec_times(logs["times_compute.json"]) if logs["times_compute.json"] else {}
    system = _system_sections(logs["system.txt"])
    model = manifest.get("model", {})
    row: dict = {
        "model": model.get("source") or model.get("onnx"), "runtime": "tensorrt", "device": "cuda", "batch": batch,
        **stats,
        "gpu_compute": latency_stats(np.round(np.asarray(compute["gpu_compute"]) * 1e6).astype(np.int64), batch)
        if compute.get("gpu_compute") else None,
        "input_source": "trtexec (random inputs)", "input_shape": [batch, *manifest["input"]["opt_shape"][1:]],
        "warmup": {"warmup_ms": None}, "settings": {"precision": precision}, "method": METHOD, "peak_rss_mb": None,
        "memory": {"peak_rss_mb": None, "scope": "not measured by trtexec"},
        "artifact_kind": "tensorrt-bundle", "task": "classification", "artifact_path": model.get("onnx"),
        "file_size": model.get("file_size"), "params": None, "macs": None,
        "runtime_info": {"runtime": "tensorrt", "version": device_trt, "precision": precision,
                         "bundle_tensorrt_version": bundle_tensorrt_version(manifest), "version_note": version_note},
        "trtexec": {"end_to_end": parse_trtexec_log(logs["end_to_end.log"]),
                    "compute_only": parse_trtexec_log(logs["compute_only.log"])},
        "system": {"hostname": dev.hostname, "platform": dev.uname, "versions": {"tensorrt": device_trt},
                   "stamp": system},
        "remote": {"target": str(target), "device": dev.to_dict(), "loadavg_before": before.get("loadavg")},
    }
    if dev.is_jetson:
        energy = parse_trtexec_times(logs["times_energy.json"]) if logs["times_energy.json"] else {}
        samples = parse_tegrastats(logs["tegrastats.log"])
        n = len(energy.get("latency") or energy.get("gpu_compute") or [])
        starts = energy.get("start_ms") or []
        window = ((starts[-1] - starts[0]) / 1000.0 + (energy.get("latency") or [0])[-1] / 1000.0
                  if len(starts) > 1 else energy_s or None)
        clocks = system.get("clocks") or before.get("clocks")
        row["jetson"] = {
            "power_mode": system.get("power_mode") or before.get("power_mode"), "clocks_before": clocks,
            "clocks_locked": (clocks or {}).get("clocks_locked"),
            "temperature_c_before": system.get("temperature_c") or before.get("temperature_c"),
            "tegrastats": summarise_tegrastats(samples, window_s=window, inferences=n or None,
                                               images=n * batch or None) if energy_s else
            {"note": "energy run skipped (energy_s=0)"},
        }
    return row


def _system_sections(text: str) -> dict:
    """profile.sh's system.txt: power mode, clocks and temperatures parsed from its ``## ...`` sections."""
    sections: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("## "):
            cur = line[3:].strip()
            sections[cur] = []
        elif cur is not None:
            sections[cur].append(line)
    out: dict = {}
    nv = parse_nvpmodel("\n".join(sections.get("nvpmodel -q", [])))
    if nv:
        out["power_mode"] = nv
    jc = "\n".join(sections.get("jetson_clocks --show", []))
    if "SOC family" in jc:
        out["clocks"] = parse_jetson_clocks(jc)
    temps = {}
    for line in sections.get("thermal zones (C)", []):
        name, _, v = line.rpartition(":")
        if name and v.strip().lstrip("-").isdigit():
            temps[name.strip()] = float(v)
    if temps:
        out["temperature_c"] = temps
    return out
