"""Is this latency number trustworthy? A stability verdict for a timed window: ``stable``, ``noisy`` or ``contended``.

A :class:`Snapshot` of the machine is taken right before and right after the timed calls; :func:`assess` compares
the two and the timings themselves. Everything is read from the kernel (Linux; elsewhere the figures that cannot be
read are listed in ``unavailable`` and the verdict rests on the spread of the timings alone):

- **run-queue wait of this process** (``/proc/self/task/*/schedstat``, fields 1–2: ns on a CPU, ns waiting on a
  run queue, per thread): the share of the time the measuring process's threads were ready to run but waited for a
  CPU. The most direct evidence of contention: it is the delay the timed calls themselves suffered.
- **CPU steal** (``/proc/stat``, 8th field, the CPUs in this process's affinity mask): time the hypervisor ran
  another guest while these CPUs had work.
- **other processes' CPU use** (``/proc/stat`` busy time of the affinity CPUs minus this process's own CPU time).
- **CPU pressure** (``/proc/pressure/cpu``, ``some total`` in µs; PSI, Linux ≥ 4.20): the share of the window in
  which some runnable task on the machine waited for a CPU. Used for the verdict only when schedstat is unreadable.
- **load average** (``/proc/loadavg``, 1/5/15 min) before and after, per online CPU. A 1-minute exponentially
  damped mean lags a short window, so it is supporting evidence, not the decider.
- **frequency** (``/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq``, kHz) before/after, **thermal
  throttling** (``/sys/devices/system/cpu/cpu*/thermal_throttle/core_throttle_count``, x86) and **temperature**
  (``/sys/class/thermal/thermal_zone*/temp``, m°C) where readable.
- **spread of the timings**: p90/median and the coefficient of variation (std/mean).

Thresholds (module constants; the rationale is the arithmetic of a delayed call, and the conventions of the tools
in ``specs/measurement.md``):

- ``contended`` when any of
    * run-queue wait ≥ :data:`CONTENDED_WAIT_SHARE` (0.25) of the process's runnable time: queueing alone then
      stretches the calls by ≥ 1/(1 − 0.25) = 1.33× on average; the number describes the scheduler, not the model;
    * steal ≥ :data:`CONTENDED_STEAL_SHARE` (0.10) of the affinity CPUs' time: another guest had a tenth of the CPU;
    * (only when schedstat is unreadable) CPU pressure ≥ :data:`CONTENDED_PRESSURE_SHARE` (0.5) of the window, or,
      when neither is readable, a 1-minute load average ≥ :data:`CONTENDED_LOAD_PER_CPU` (2.0) per online CPU both
      before and after (twice as many runnable tasks as CPUs for the whole window).
- else ``noisy`` when any of
    * p90/median > :data:`NOISY_P90_OVER_MEDIAN` (1.2): one call in ten is ≥ 20% slower than the median;
    * coefficient of variation > :data:`NOISY_CV` (0.15). (trtexec warns above 1% for GPU compute time alone; an
      end-to-end CPU call of a few ms, including Python dispatch, sits at 2–10% on a quiet core, so 15% flags real
      disturbance, not the method's own jitter);
    * run-queue wait ≥ :data:`NOISY_WAIT_SHARE` (0.05): ≥ 5% slowdown from queueing;
    * steal ≥ :data:`NOISY_STEAL_SHARE` (0.02);
    * load average ≥ :data:`NOISY_LOAD_PER_CPU` (1.5) per online CPU before and after (the measuring process itself
      accounts for up to 1 per CPU when its runtime uses every core);
    * frequency drift > :data:`NOISY_FREQ_DRIFT` (10%) between before and after, or a thermal-throttle count that rose;
    * ``--until-stable`` ran out of time before the spread settled.
- else ``stable``.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONTENDED_WAIT_SHARE = 0.25
CONTENDED_STEAL_SHARE = 0.10
CONTENDED_PRESSURE_SHARE = 0.5
CONTENDED_LOAD_PER_CPU = 2.0
NOISY_P90_OVER_MEDIAN = 1.2
NOISY_CV = 0.15
NOISY_WAIT_SHARE = 0.05
NOISY_STEAL_SHARE = 0.02
NOISY_LOAD_PER_CPU = 1.5
NOISY_FREQ_DRIFT = 0.10
ACTIVE_THREAD_SHARE = 0.2  # a thread of this process that was runnable ≥ 20% of the window counts as active

THRESHOLDS = {
    "contended": {"run_queue_wait_share": CONTENDED_WAIT_SHARE, "steal_share": CONTENDED_STEAL_SHARE,
                  "cpu_pressure_share (schedstat unreadable)": CONTENDED_PRESSURE_SHARE,
                  "load_per_cpu (neither readable)": CONTENDED_LOAD_PER_CPU},
    "noisy": {"p90_over_median": NOISY_P90_OVER_MEDIAN, "cv": NOISY_CV, "run_queue_wait_share": NOISY_WAIT_SHARE,
              "steal_share": NOISY_STEAL_SHARE, "load_per_cpu": NOISY_LOAD_PER_CPU, "freq_drift": NOISY_FREQ_DRIFT},
}

VERDICTS = ("stable", "noisy", "contended")

PROC = Path("/proc")
CPU_DIR = Path("/sys/devices/system/cpu")
THERMAL_DIR = Path("/sys/class/thermal")


@dataclass
class Snapshot:
    """The machine at one instant. ``None`` (and a line in ``unavailable``) for what could not be read.

    ``cpu_ticks``: per affinity CPU, ``(busy, steal, total)`` in clock ticks (``os.sysconf('SC_CLK_TCK')``) from
    ``/proc/stat`` (guest time is inside user time and not counted twice). ``threads``: per thread id of this
    process, ``(ns on CPU, ns waiting on a run queue)``. ``self_cpu_s``: this process's user + system seconds
    (``getrusage``). ``pressure_some_us``: PSI cpu ``some total``. ``freq_khz``, ``throttle``: per affinity CPU.
    ``temp_c``: per thermal zone type."""

    t: float
    cpus: list[int]
    online_cpus: int
    loadavg: tuple[float, float, float] | None
    procs_running: int | None
    cpu_ticks: dict[int, tuple[int, int, int]] | None
    threads: dict[int, tuple[int, int]] | None
    self_cpu_s: float
    pressure_some_us: int | None
    freq_khz: dict[int, int] = field(default_factory=dict)
    throttle: dict[int, int] = field(default_factory=dict)
    temp_c: dict[str, float] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """``/proc/loadavg`` → (1, 5, 15-minute load averages)."""
    a, b, c = text.split()[:3]
    return float(a), float(b), float(c)


def parse_proc_stat(text: str, cpus: Sequence[int] | None = None) -> tuple[dict[int, tuple[int, int, int]], int | None]:
    """``/proc/stat`` → ({cpu: (busy, steal, total) ticks} for ``cpus`` (all when None), procs_running).

    Fields of a ``cpuN`` line: user nice system idle iowait irq softirq steal guest guest_nice; guest and guest_nice
    are already inside user and nice. busy = user + nice + system + irq + softirq (steal excluded: it is counted
    separately); total = the sum of the first eight."""
    want = None if cpus is None else set(cpus)
    out: dict[int, tuple[int, int, int]] = {}
    running = None
    for line in text.splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            cpu = int(name[3:])
            if want is not None and cpu not in want:
                continue
            v = [int(x) for x in vals[:8]] + [0] * (8 - min(8, len(vals)))
            user, nice, system, _idle, _iowait, irq, softirq, steal = v
            out[cpu] = (user + nice + system + irq + softirq, steal, sum(v))
        elif line.startswith("procs_running"):
            running = int(line.split()[1])
    return out, running


def parse_pressure(text: str) -> int:
    """``/proc/pressure/cpu`` → the ``some`` line's ``total`` (µs some task waited for a CPU since boot)."""
    for line in text.splitlines():
        if line.startswith("some"):
            return int(line.rsplit("total=", 1)[1].split()[0])
    raise ValueError(f"no 'some' line in {text!r}")


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _threads(unavailable: list[str]) -> dict[int, tuple[int, int]] | None:
    out: dict[int, tuple[int, int]] = {}
    try:
        tids = os.listdir(PROC / "self" / "task")
    except OSError as exc:
        unavailable.append(f"run-queue wait: /proc/self/task not readable ({exc.strerror})")
        return None
    for tid in tids:
        text = _read(PROC / "self" / "task" / tid / "schedstat")
        if text is None:  # the thread exited meanwhile, or no schedstat in this kernel
            continue
        f = text.split()
        if len(f) >= 2:
            out[int(tid)] = (int(f[0]), int(f[1]))
    if not out:
        unavailable.append("run-queue wait: no /proc/self/task/*/schedstat (kernel without CONFIG_SCHED_INFO)")
        return None
    return out


def take_snapshot() -> Snapshot:
    """Read the machine's state now (a few small /proc and /sys files: well under a millisecond)."""
    unavailable: list[str] = []
    cpus = _affinity()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    text = _read(PROC / "loadavg")
    loadavg = parse_loadavg(text) if text else None
    if loadavg is None:
        unavailable.append("load average: /proc/loadavg not readable")
    text = _read(PROC / "stat")
    ticks, running = parse_proc_stat(text, cpus) if text else (None, None)
    if not ticks:
        ticks = None
        unavailable.append("CPU steal and other processes' CPU use: /proc/stat not readable")
    text = _read(PROC / "pressure" / "cpu")
    try:
        pressure = parse_pressure(text) if text else None
    except ValueError:
        pressure = None
    if pressure is None:
        unavailable.append("CPU pressure: /proc/pressure/cpu not readable (kernel < 4.20 or PSI disabled)")
    freq: dict[int, int] = {}
    throttle: dict[int, int] = {}
    for c in cpus:
        f = _read(CPU_DIR / f"cpu{c}" / "cpufreq" / "scaling_cur_freq")
        if f and f.strip().isdigit():
            freq[c] = int(f)
        t = _read(CPU_DIR / f"cpu{c}" / "thermal_throttle" / "core_throttle_count")
        if t and t.strip().isdigit():
            throttle[c] = int(t)
    if not freq:
        unavailable.append(f"frequency: no readable {CPU_DIR}/cpu*/cpufreq/scaling_cur_freq (VM or no cpufreq driver)")
    if not throttle:
        unavailable.append(f"thermal throttling: no {CPU_DIR}/cpu*/thermal_throttle/core_throttle_count")
    temps: dict[str, float] = {}
    for zone in sorted(THERMAL_DIR.glob("thermal_zone*")):
        name, temp = _read(zone / "type"), _read(zone / "temp")
        if name and temp and temp.strip().lstrip("-").isdigit():
            temps[f"{name.strip()} ({zone.name})"] = int(temp) / 1000.0
    if not temps:
        unavailable.append(f"temperature: no readable {THERMAL_DIR}/thermal_zone*/temp")
    return Snapshot(t=time.monotonic(), cpus=cpus, online_cpus=os.cpu_count() or len(cpus), loadavg=loadavg,
                    procs_running=running, cpu_ticks=ticks, threads=_threads(unavailable),
                    self_cpu_s=ru.ru_utime + ru.ru_stime, pressure_some_us=pressure, freq_khz=freq,
                    throttle=throttle, temp_c=temps, unavailable=unavailable)


def window_figures(before: Snapshot, after: Snapshot) -> dict:
    """What happened between two snapshots: shares of the window (0–1), load averages, frequency and temperature.

    Keys: ``window_s``; ``cores`` (affinity CPUs); ``online_cpus``; ``load_avg`` ({before, after}: 1/5/15 min);
    ``load_per_cpu`` (min of the 1-minute load before and after ÷ online CPUs: the demand that lasted the window);
    ``procs_running`` ({before, after}, including this process); ``run_queue_wait_share`` (wait ÷ (wait + on-CPU) of
    this process's threads); ``active_threads`` (threads of this process runnable ≥ :data:`ACTIVE_THREAD_SHARE` of
    the window: more than the cores means the process oversubscribed them itself); ``steal_share`` and ``other_cpu_share`` (÷ the affinity CPUs' time); ``self_cpu_share``;
    ``cpu_pressure_share``; ``freq_mhz`` ({before, after}: min/max over the affinity CPUs) and ``freq_drift``
    (largest relative change of any CPU's frequency); ``throttle_events``; ``temperature_c`` ({before, after}: max)."""
    wall = max(after.t - before.t, 1e-9)
    n = len(after.cpus)
    out: dict = {"window_s": wall, "cores": n, "online_cpus": after.online_cpus,
                 "load_avg": {"before": before.loadavg, "after": after.loadavg},
                 "procs_running": {"before": before.procs_running, "after": after.procs_running}}
    out["load_per_cpu"] = (min(before.loadavg[0], after.loadavg[0]) / after.online_cpus
                           if before.loadavg and after.loadavg else None)
    wait_share = active = None
    if before.threads is not None and after.threads is not None:
        run = wait = 0
        active = 0
        for tid, (r1, w1) in after.threads.items():
            r0, w0 = before.threads.get(tid, (0, 0))
            run, wait = run + max(r1 - r0, 0), wait + max(w1 - w0, 0)
            active += (r1 - r0) + (w1 - w0) >= ACTIVE_THREAD_SHARE * wall * 1e9
        wait_share = wait / (run + wait) if run + wait > 0 else 0.0
    out["run_queue_wait_share"] = wait_share
    out["active_threads"] = active
    self_cpu = max(after.self_cpu_s - before.self_cpu_s, 0.0)
    out["self_cpu_share"] = self_cpu / (wall * n)
    steal = other = None
    if before.cpu_ticks and after.cpu_ticks:
        tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        common = [c for c in after.cpu_ticks if c in before.cpu_ticks]
        busy = sum(after.cpu_ticks[c][0] - before.cpu_ticks[c][0] for c in common) / tck
        stolen = sum(after.cpu_ticks[c][1] - before.cpu_ticks[c][1] for c in common) / tck
        total = sum(after.cpu_ticks[c][2] - before.cpu_ticks[c][2] for c in common) / tck
        if total > 0 and common:
            steal = min(stolen / total, 1.0)
            other = min(max(busy - self_cpu, 0.0) / total, 1.0)
    out["steal_share"], out["other_cpu_share"] = steal, other
    out["cpu_pressure_share"] = (min(max(after.pressure_some_us - before.pressure_some_us, 0) / 1e6 / wall, 1.0)
                                 if before.pressure_some_us is not None and after.pressure_some_us is not None
                                 else None)
    if before.freq_khz and after.freq_khz:
        out["freq_mhz"] = {k: {"min": min(s.freq_khz.values()) / 1e3, "max": max(s.freq_khz.values()) / 1e3}
                           for k, s in (("before", before), ("after", after))}
        out["freq_drift"] = max((abs(after.freq_khz[c] - f) / f for c, f in before.freq_khz.items()
                                 if c in after.freq_khz and f > 0), default=0.0)
    else:
        out["freq_mhz"] = out["freq_drift"] = None
    out["throttle_events"] = (sum(after.throttle.get(c, v) - v for c, v in before.throttle.items())
                              if before.throttle and after.throttle else None)
    out["temperature_c"] = ({"before": max(before.temp_c.values()), "after": max(after.temp_c.values())}
                            if before.temp_c and after.temp_c else None)
    return out


def spread(times_ns: Sequence[int] | np.ndarray) -> dict:
    """``p90_over_median`` and ``cv`` (std/mean, ddof=1) of the timings; 1.0 and 0.0 for a single run."""
    t = np.asarray(times_ns, dtype=np.float64)
    med = float(np.median(t))
    cv = float(t.std(ddof=1) / t.mean()) if t.size > 1 and t.mean() > 0 else 0.0
    return {"p90_over_median": float(np.percentile(t, 90)) / med if med > 0 else 1.0, "cv": cv}


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def assess(before: Snapshot, after: Snapshot, times_ns: Sequence[int] | np.ndarray, *,
           windows: dict | None = None) -> dict:
    """The ``stability`` record of one timed window: ``verdict`` (``stable`` / ``noisy`` / ``contended``), a
    plain-words ``message``, the ``reasons`` behind it, the figures of :func:`window_figures` and :func:`spread`,
    the ``thresholds`` applied and what was ``unavailable``. ``windows`` (from ``--until-stable``: ``settled``,
    ``count``...) is kept in the record; an unsettled run is at least ``noisy``. Thresholds: the module docstring."""
    fig = window_figures(before, after)
    sp = spread(times_ns)
    cores, online = fig["cores"], fig["online_cpus"]
    la = after.loadavg[0] if after.loadavg else None
    load_txt = f"load average {la:.1f} on {online} core{'s' if online != 1 else ''}" if la is not None else None
    wait, steal, other = fig["run_queue_wait_share"], fig["steal_share"], fig["other_cpu_share"]
    pressure, lpc = fig["cpu_pressure_share"], fig["load_per_cpu"]

    contended: list[str] = []
    own = fig["active_threads"] or 0
    oversubscribed = (f" (it ran {own} busy threads on {cores} usable core{'s' if cores != 1 else ''}: part of the "
                      f"wait is its own oversubscription; lower the runtime's threads)" if own > cores else "")
    if wait is not None and wait >= CONTENDED_WAIT_SHARE:
        contended.append(f"this process waited for a CPU {_pct(wait)} of the time it was ready to run{oversubscribed}")
    if steal is not None and steal >= CONTENDED_STEAL_SHARE:
        contended.append(f"the hypervisor stole {_pct(steal)} of the CPU time")
    if wait is None and pressure is not None and pressure >= CONTENDED_PRESSURE_SHARE:
        contended.append(f"tasks waited for a CPU during {_pct(pressure)} of the window (CPU pressure)")
    load_contended = wait is None and pressure is None and lpc is not None and lpc >= CONTENDED_LOAD_PER_CPU
    if load_contended:
        contended.append(f"{load_txt} before and after")
    noisy: list[str] = []
    if sp["p90_over_median"] > NOISY_P90_OVER_MEDIAN:
        noisy.append(f"p90 is {sp['p90_over_median']:.2f}× the median")
    if sp["cv"] > NOISY_CV:
        noisy.append(f"coefficient of variation {_pct(sp['cv'])}")
    if wait is not None and NOISY_WAIT_SHARE <= wait < CONTENDED_WAIT_SHARE:
        noisy.append(f"this process waited for a CPU {_pct(wait)} of the time it was ready to run")
    if steal is not None and NOISY_STEAL_SHARE <= steal < CONTENDED_STEAL_SHARE:
        noisy.append(f"the hypervisor stole {_pct(steal)} of the CPU time")
    if lpc is not None and lpc >= NOISY_LOAD_PER_CPU and not load_contended:
        noisy.append(f"{load_txt} before and after")
    if fig["freq_drift"] is not None and fig["freq_drift"] > NOISY_FREQ_DRIFT:
        noisy.append(f"CPU frequency changed by up to {_pct(fig['freq_drift'])} during the window")
    if fig["throttle_events"]:
        noisy.append(f"{fig['throttle_events']} thermal throttling event(s) during the window")
    if windows is not None and not windows.get("settled", True):
        noisy.append(f"the spread did not settle within {windows.get('max_duration_s')} s "
                     f"({windows.get('count')} windows)")

    context = [t for t in (load_txt, f"other processes used {_pct(other)} of the {cores} usable core"
                           f"{'s' if cores != 1 else ''}" if other is not None else None) if t]
    if contended:
        verdict = "contended"
        advice = ("Measure again on a quiet machine (or with --until-stable)" if windows is None
                  or windows.get("settled") else
                  f"--until-stable found no quiet, settled stretch in {windows.get('count')} windows "
                  f"({windows.get('max_duration_s')} s at most)")
        message = (f"contended: {'; '.join(contended)}" + (f" ({', '.join(context)})" if context else "")
                   + f" during the timed window; these numbers are not this model's latency. {advice}")
    elif noisy:
        verdict = "noisy"
        message = (f"noisy: {'; '.join(noisy)}; the median is usable with care, the tail percentiles are not "
                   "this model's")
    else:
        verdict = "stable"
        parts = [f"p90 {sp['p90_over_median']:.2f}× the median", f"CV {_pct(sp['cv'])}"]
        if wait is not None:
            parts.append(f"run-queue wait {_pct(wait)}")
        if load_txt:
            parts.append(load_txt)
        message = f"stable: {', '.join(parts)}"
    rec = {"verdict": verdict, "message": message, "reasons": contended + noisy, **sp, **fig,
           "thresholds": THRESHOLDS, "unavailable": sorted(set(before.unavailable) | set(after.unavailable))}
    if windows is not None:
        rec["windows"] = windows
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def worst(verdicts: Sequence[str]) -> str:
    """The worst of several verdicts (``contended`` > ``noisy`` > ``stable``)."""
    return max(verdicts, key=VERDICTS.index) if verdicts else "stable"
