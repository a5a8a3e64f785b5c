"""Memory and energy of a timed window: peak RSS of the measuring process, and energy per inference from RAPL.

**Peak RSS** (:class:`PeakRss`): the kernel's high-water mark of this process's resident set (``VmHWM`` in
``/proc/self/status``) is reset to the current RSS by writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0,
``Documentation/admin-guide/mm/soft-dirty.rst``) before the window and read after it, so the figure is the peak
*during* the window (weights already loaded count; the allocations of the calls are what is added). Where the reset
is not possible (another OS, an older kernel) the process-lifetime peak (``getrusage().ru_maxrss``) is recorded with
that reason. The reset also lowers ``ru_maxrss``; :func:`lifetime_peak_rss_mb` keeps the true lifetime peak.

**Energy** (:func:`read_rapl`, :func:`energy_record`): Intel and AMD (Zen, Linux ≥ 5.8) CPUs expose RAPL energy
counters in the powercap sysfs: ``/sys/class/powercap/intel-rapl:N/energy_uj`` (µJ, one top-level zone per package;
``name`` says ``package-N``, ``dram`` or ``psys``), which wrap at ``max_energy_range_uj``. A wrap between two reads
is undone by adding the range once (more than one wrap — ~260 kJ at typical ranges, tens of minutes at full power —
cannot be seen; windows here are seconds). Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694,
"Platypus"); then the record says so. The counters measure the whole package (every process and the idle cores), so
energy per inference is only this model's on an otherwise quiet machine: read it with the stability verdict.
Jetson boards have no RAPL: their rails come from tegrastats (remote profiling).
"""

from __future__ import annotations

import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

POWERCAP_DIR = Path("/sys/class/powercap")
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")

_lifetime_peak_kb = 0  # the largest ru_maxrss seen before any VmHWM reset (the reset lowers ru_maxrss)


# ------------------------------------------------------------------------------------------------------ memory
def _status_kb(key: str) -> int | None:
    try:
        text = STATUS.read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _ru_maxrss_kb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform == "darwin" else float(rss)  # bytes on macOS, KiB on Linux


def lifetime_peak_rss_mb() -> float:
    """Peak resident set size of this process since it started, in MiB (survives VmHWM resets)."""
    return max(_ru_maxrss_kb(), _lifetime_peak_kb) / 1024


class PeakRss:
    """Peak RSS over a window: ``start()`` resets the high-water mark, ``stop()`` returns the record (MiB):
    ``peak_rss_mb`` (the peak during the window), ``rss_before_mb`` (RSS at start), ``added_mb`` (peak − before),
    ``method`` and, when the reset was impossible, ``note`` (then ``peak_rss_mb`` is the process-lifetime peak)."""

    def __init__(self) -> None:
        self._before_kb: int | None = None
        self._note: str | None = None

    def start(self) -> None:
        global _lifetime_peak_kb
        _lifetime_peak_kb = max(_lifetime_peak_kb, int(_ru_maxrss_kb()))
        self._before_kb = _status_kb("VmRSS")
        self._note = None
        try:
            CLEAR_REFS.write_text("5")
        except OSError as exc:
            self._note = (f"VmHWM reset not possible ({CLEAR_REFS}: {exc.strerror or exc}): peak_rss_mb is the "
                          f"process-lifetime peak (getrusage ru_maxrss), including everything before profiling")
        if self._before_kb is None and self._note is None:
            self._note = f"{STATUS} has no VmRSS: peak_rss_mb is the process-lifetime peak (getrusage ru_maxrss)"

    def stop(self) -> dict:
        hwm = _status_kb("VmHWM") if self._note is None else None
        if hwm is not None and self._before_kb is not None:
            return {"peak_rss_mb": hwm / 1024, "rss_before_mb": self._before_kb / 1024,
                    "added_mb": max(hwm - self._before_kb, 0) / 1024,
                    "method": "VmHWM of /proc/self/status, reset by writing 5 to /proc/self/clear_refs before the "
                              "window (warm-up and timed calls)"}
        return {"peak_rss_mb": lifetime_peak_rss_mb(), "rss_before_mb": None if self._before_kb is None
                else self._before_kb / 1024, "added_mb": None, "method": "getrusage(RUSAGE_SELF).ru_maxrss",
                "note": self._note or "VmHWM unreadable after the window"}


# ------------------------------------------------------------------------------------------------------ energy
@dataclass
class RaplReading:
    """Energy counters at one instant: ``zones`` maps a top-level powercap zone directory name (``intel-rapl:0``)
    to ``(domain name, energy µJ, wrap range µJ)``; ``reason`` says why there is none."""

    t: float
    zones: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    reason: str | None = None


_TOP_ZONE = re.compile(r"^intel-rapl:\d+$")  # top level only: sub-zones (core, uncore) are inside the package


def read_rapl(root: Path | None = None) -> RaplReading:
    """Read every top-level RAPL zone under ``root`` (default ``/sys/class/powercap``)."""
    root = POWERCAP_DIR if root is None else Path(root)
    now = time.monotonic()
    zones = sorted(p for p in root.glob("intel-rapl:*") if _TOP_ZONE.match(p.name)) if root.is_dir() else []
    if not zones:
        return RaplReading(now, reason=f"no RAPL energy counters ({root}/intel-rapl:N): not an Intel/AMD x86 host, "
                                       f"or a VM/container that does not expose powercap")
    out: dict[str, tuple[str, int, int]] = {}
    for z in zones:
        try:
            name = (z / "name").read_text().strip()
            energy = int((z / "energy_uj").read_text())
            try:
                rng = int((z / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                rng = 0
        except PermissionError as exc:
            return RaplReading(now, reason=f"{exc.filename or z / 'energy_uj'} is readable by root only (Linux ≥ 5.10, "
                                           f"CVE-2020-8694): run as root, or grant read access "
                                           f"(sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj)")
        except (OSError, ValueError) as exc:
            return RaplReading(now, reason=f"{z} unreadable: {type(exc).__name__}: {exc}")
        out[z.name] = (name, energy, rng)
    return RaplReading(now, zones=out)


def rapl_delta_uj(before: int, after: int, max_range: int) -> int:
    """µJ between two reads of one counter, undoing one wrap at ``max_range`` (0: range unknown → no undo)."""
    d = after - before
    if d < 0 and max_range > 0:
        d += max_range
    return d


def energy_record(before: RaplReading, after: RaplReading, calls: int, batch: int) -> dict:
    """The ``energy`` record of a window of ``calls`` timed calls of ``batch`` images.

    Available: ``available`` True, ``source`` ``"rapl"``, ``domains`` (J per domain name over the window),
    ``joules`` (the package domains, plus DRAM where it is a separate zone; ``psys`` is the whole platform and is
    reported alone), ``joules_per_call``, ``millijoules_per_image``, ``mean_power_w``, ``window_s`` and ``scope``.
    Otherwise ``available`` False and ``reason``."""
    if before.reason or after.reason or not before.zones:
        return {"available": False, "source": "rapl", "reason": before.reason or after.reason}
    if set(before.zones) != set(after.zones):
        return {"available": False, "source": "rapl", "reason": "RAPL zones changed during the window"}
    window = max(after.t - before.t, 1e-9)
    domains: dict[str, float] = {}
    counted = 0.0
    for z, (name, e0, rng) in before.zones.items():
        j = rapl_delta_uj(e0, after.zones[z][1], rng) / 1e6
        key = name if name not in domains else f"{name} ({z})"
        domains[key] = j
        if name.startswith("package") or name == "dram":
            counted += j
    if counted == 0.0 and any(n == "psys" for n, _, _ in before.zones.values()):
        counted = sum(j for k, j in domains.items() if k.startswith("psys"))
    calls = max(calls, 1)
    return {"available": True, "source": "rapl", "domains": domains, "joules": counted,
            "joules_per_call": counted / calls, "millijoules_per_image": counted / (calls * batch) * 1e3,
            "mean_power_w": counted / window, "window_s": window,
            "scope": "whole CPU package(s) (+ DRAM where exposed) over the timed calls: every process and idle core "
                     "counts, so it is this model's energy only when the stability verdict is stable"}
