"""Stability verdict, peak RSS and RAPL energy of a timed window (edgevit.profiling.stability / .resources).

The contention test creates its own contention (busy-loop processes, more than the usable cores, on the same CPUs)
and asserts the verdict says so. The machine these tests run on is shared, so the no-extra-load case is checked
against the figures it measured, not against an assumed quiet machine; the threshold logic itself is checked on
constructed snapshots, and the /proc parsers on files recorded from a real Linux 6.18 machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import ConfigError
from edgevit.profiling import stability as st
from edgevit.profiling.resources import PeakRss, RaplReading, energy_record, rapl_delta_uj, read_rapl

FIXTURES = Path(__file__).parent / "fixtures" / "proc"
FAST = {"warmup_s": 0.05, "min_warmup": 2, "duration_s": 0.4, "min_runs": 5, "progress": False}
STEADY_NS = np.full(50, 5_000_000) + np.arange(50) * 1_000  # 5.000–5.049 ms: p90/median ≈ 1.004, CV ≈ 0.3%


def snap(t: float, *, load: float = 0.2, busy: int = 0, steal: int = 0, total: int = 0, run_ns: int = 0,
         wait_ns: int = 0, self_cpu: float = 0.0, pressure: int | None = 0, threads: bool = True, freq=None,
         throttle=None, cpus=(0, 1), online: int = 2) -> st.Snapshot:
    """A snapshot with the given cumulative counters (ticks split evenly over ``cpus``)."""
    n = len(cpus)
    return st.Snapshot(t=t, cpus=list(cpus), online_cpus=online, loadavg=(load, load, load), procs_running=1,
                       cpu_ticks={c: (busy // n, steal // n, total // n) for c in cpus},
                       threads={1: (run_ns, wait_ns)} if threads else None, self_cpu_s=self_cpu,
                       pressure_some_us=pressure, freq_khz=dict(freq or {}), throttle=dict(throttle or {}))


TCK = os.sysconf("SC_CLK_TCK")
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and /sys of a Linux kernel")


# ------------------------------------------------------------------------------------------ /proc parsers
def test_parsers_read_recorded_proc_files():
    load = st.parse_loadavg((FIXTURES / "loadavg").read_text())
    assert load == (5.44, 3.84, 2.51)
    ticks, running = st.parse_proc_stat((FIXTURES / "stat").read_text())
    assert set(ticks) == {0, 1} and running is not None and running >= 1
    # cpu0  719874 11379 108058 203011 1699 0 305 2117 0 0  → busy = user+nice+system+irq+softirq, steal, total
    assert ticks[0] == (719874 + 11379 + 108058 + 0 + 305, 2117, 719874 + 11379 + 108058 + 203011 + 1699 + 305 + 2117)
    only1, _ = st.parse_proc_stat((FIXTURES / "stat").read_text(), cpus=[1])
    assert set(only1) == {1}
    assert st.parse_pressure((FIXTURES / "pressure_cpu").read_text()) == 5702325551
    with pytest.raises(ValueError):
        st.parse_pressure("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")


@linux_only
def test_snapshot_reads_this_machine():
    s = st.take_snapshot()
    assert s.cpus == sorted(os.sched_getaffinity(0)) and s.online_cpus >= len(s.cpus)
    assert s.loadavg is not None and all(v >= 0 for v in s.loadavg)
    assert s.cpu_ticks is not None and set(s.cpu_ticks) == set(s.cpus)
    assert s.threads and os.getpid() in s.threads  # the main thread's tid is the pid
    assert s.self_cpu_s > 0
    assert all(isinstance(u, str) and u for u in s.unavailable)


# ------------------------------------------------------------------------------------------ verdict logic
def test_window_figures_arithmetic():
    a = snap(0.0, busy=0, steal=0, total=0, run_ns=0, wait_ns=0, self_cpu=0.0, pressure=0)
    # 2 s window on 2 CPUs = 4 CPU-seconds; busy 3 s of which this process 1 s, steal 0.4 s; wait 1 s per 3 s run
    b = snap(2.0, busy=3 * TCK, steal=int(0.4 * TCK), total=4 * TCK, run_ns=3 * 10**9, wait_ns=10**9,
             self_cpu=1.0, pressure=500_000)
    f = st.window_figures(a, b)
    assert f["window_s"] == pytest.approx(2.0) and f["cores"] == 2
    assert f["run_queue_wait_share"] == pytest.approx(0.25)
    assert f["other_cpu_share"] == pytest.approx(0.5, abs=0.01)
    assert f["steal_share"] == pytest.approx(0.1, abs=0.01)
    assert f["self_cpu_share"] == pytest.approx(0.25)
    assert f["cpu_pressure_share"] == pytest.approx(0.25)
    assert f["freq_mhz"] is None and f["temperature_c"] is None


def test_stable_when_quiet_and_tight():
    rec = st.assess(snap(0.0), snap(1.0, busy=TCK // 10, total=2 * TCK, run_ns=10**9, wait_ns=10**7,
                                     self_cpu=0.05), STEADY_NS)
    assert rec["verdict"] == "stable" and rec["reasons"] == []
    assert rec["message"].startswith("stable: p90 1.00× the median, CV 0%") and "run-queue wait 1%" in rec["message"]
    json.dumps(rec)  # the record goes into JSON as is


@pytest.mark.parametrize(("kw", "phrase"), [
    ({"run_ns": 10**9, "wait_ns": 10**9}, "waited for a CPU 50% of the time it was ready to run"),
    ({"steal": int(0.3 * TCK), "run_ns": 10**9}, "the hypervisor stole 15% of the CPU time"),
    ({"threads": False, "pressure": 800_000}, "tasks waited for a CPU during 80% of the window"),
    ({"threads": False, "pressure": None, "load": 7.9}, "load average 7.9 on 2 cores before and after"),
])
def test_contended_says_why_in_plain_words(kw, phrase):
    load = kw.pop("load", 0.2)
    threads, pressure = kw.pop("threads", True), kw.pop("pressure", 0)
    a = snap(0.0, load=load, threads=threads, pressure=0 if pressure is not None else None)
    b = snap(1.0, load=load, total=2 * TCK, threads=threads, pressure=pressure, **kw)
    rec = st.assess(a, b, STEADY_NS)
    assert rec["verdict"] == "contended", rec
    assert rec["message"].startswith("contended: ") and phrase in rec["message"]
    assert "these numbers are not this model's latency" in rec["message"]


def test_contention_from_the_process_own_threads_is_named():
    a = snap(0.0, threads=False)
    b = snap(1.0, total=2 * TCK, threads=False)
    a.threads = {1: (0, 0), 2: (0, 0), 3: (0, 0), 4: (0, 0), 5: (0, 0)}
    b.threads = {1: (6 * 10**8, 4 * 10**8), 2: (4 * 10**8, 6 * 10**8), 3: (3 * 10**8, 5 * 10**8),
                 4: (10**7, 0), 5: (0, 0)}  # three busy threads on two cores; two nearly idle ones
    f = st.window_figures(a, b)
    assert f["active_threads"] == 3 and f["run_queue_wait_share"] == pytest.approx(15 / 28.1, rel=1e-3)
    rec = st.assess(a, b, STEADY_NS)
    assert rec["verdict"] == "contended"
    assert "it ran 3 busy threads on 2 usable cores: part of the wait is its own oversubscription" in rec["message"]


def test_pressure_and_load_are_only_fallbacks_when_the_process_wait_is_known():
    """Machine-wide figures do not override the process's own run-queue wait: a busy machine whose other tasks did
    not delay this process is not 'contended' (tasks pinned elsewhere), only flagged by the load."""
    a = snap(0.0, load=7.9, pressure=0)
    b = snap(1.0, load=7.9, total=2 * TCK, run_ns=10**9, wait_ns=10**7, pressure=900_000)
    rec = st.assess(a, b, STEADY_NS)
    assert rec["verdict"] == "noisy" and "load average 7.9 on 2 cores" in rec["message"]


@pytest.mark.parametrize(("times", "kw", "phrase"), [
    (np.r_[np.full(80, 5_000_000), np.full(20, 9_000_000)], {}, "p90 is 1.80× the median"),
    (STEADY_NS, {"run_ns": 10**9, "wait_ns": 10**8}, "waited for a CPU 9%"),
    (STEADY_NS, {"freq": {0: 2_000_000, 1: 2_000_000}}, "CPU frequency changed by up to 20%"),
    (STEADY_NS, {"throttle": {0: 5, 1: 0}}, "3 thermal throttling event(s)"),
])
def test_noisy_reasons(times, kw, phrase):
    before_freq = {0: 2_500_000, 1: 2_500_000} if "freq" in kw else None
    before_thr = {0: 2, 1: 0} if "throttle" in kw else None
    rec = st.assess(snap(0.0, freq=before_freq, throttle=before_thr), snap(1.0, total=2 * TCK, **kw), times)
    assert rec["verdict"] == "noisy", rec
    assert rec["message"].startswith("noisy: ") and phrase in rec["message"]


def test_unsettled_windows_are_at_least_noisy():
    rec = st.assess(snap(0.0), snap(1.0, total=2 * TCK, run_ns=10**9), STEADY_NS,
                    windows={"settled": False, "count": 7, "max_duration_s": 5.0})
    assert rec["verdict"] == "noisy" and "did not settle within 5.0 s (7 windows)" in rec["message"]
    assert rec["windows"]["count"] == 7
    assert st.worst(["stable", "contended", "noisy"]) == "contended" and st.worst([]) == "stable"


# ------------------------------------------------------------------------------------------ real contention
@pytest.fixture(scope="module")
def tiny_onnx_path(tiny_onnx) -> Path:
    """The session's fmnist-vit-tiny ONNX export (conftest), shared with the other test files."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgevit[onnx]')")
    return Path(tiny_onnx[0])


@pytest.fixture(scope="module")
def ort_one_thread(tiny_onnx_path):
    """fmnist-vit-tiny on onnxruntime with one intra-op thread (the timed calls run on the calling thread)."""
    from edgevit.runtimes import load_runtime, open_artifact

    rt = load_runtime("onnxruntime", open_artifact(tiny_onnx_path), threads=1)
    yield rt
    rt.close()


def _busy_loops(n: int) -> list[subprocess.Popen]:
    """``n`` pure-Python busy loops; they inherit this process's CPU affinity, so they compete for its cores."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.3)  # interpreter start-up: let them all reach the loop
    return procs


@linux_only
def test_busy_loops_on_every_core_make_the_verdict_contended(ort_one_thread, caplog):
    from edgevit.profiling import profile_runtime

    cores = len(os.sched_getaffinity(0))
    n = 2 * cores + 2
    procs = _busy_loops(n)
    try:
        with caplog.at_level("INFO", logger="edgevit.profiling.latency"):
            (row,) = profile_runtime(ort_one_thread, **FAST, warn=False)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    s = row["stability"]
    # n busy loops and one timed thread on `cores` CPUs: the timed thread gets at most cores/(n+1) of a CPU, so it
    # waits ≥ 1 − cores/(n+1) (> 0.6 here) of its runnable time, whatever else runs on the machine
    assert s["run_queue_wait_share"] >= 1 - cores / (n + 1) - 0.15, s
    assert s["verdict"] == "contended", s["message"]
    assert s["message"].startswith("contended: this process waited for a CPU")
    assert "these numbers are not this model's latency" in s["message"]
    assert s["procs_running"]["after"] >= n  # the loops were runnable during the window
    assert f"on {os.cpu_count()} core" in s["message"]  # the load average, named with the CPU count
    # warn=False (the profile stage, which sums up its rows in one warning): the row's message is logged at INFO
    (rec,) = [r for r in caplog.records if "contended" in r.getMessage()]
    assert rec.levelname == "INFO"


def test_profile_stage_sums_up_contended_rows_in_one_warning(caplog):
    from edgevit.stages.core import _warn_contended

    msg = ("contended: this process waited for a CPU 87% of the time it was ready to run (load average 9.9 on 2 "
           "cores) during the timed window; these numbers are not this model's latency. Measure again")
    rows = [{"artifact_id": "00_load", "runtime": "torch", "batch": b, "stability": {"verdict": v, "message": msg}}
            for b, v in ((1, "contended"), (8, "stable"), (16, "contended"))]
    with caplog.at_level("WARNING", logger="edgevit.stages.core"):
        _warn_contended(rows)
        _warn_contended(rows[1:2])  # nothing contended: nothing said
    (rec,) = caplog.records
    text = rec.getMessage()
    assert text.startswith("profile: 2 of 3 latency rows were timed on a contended machine (00_load/torch b1, "
                           "00_load/torch b16)"), text
    assert "waited for a CPU 87%" in text and "--only profile" in text and "these numbers" not in text


@linux_only
def test_verdict_without_extra_load_follows_the_measured_figures(ort_one_thread):
    """No load of our own: the machine is shared, so 'quiet' cannot be assumed. The verdict must follow what was
    measured: not contended unless the measured run-queue wait or steal crossed the stated thresholds."""
    from edgevit.profiling import profile_runtime

    (row,) = profile_runtime(ort_one_thread, **FAST)
    s = row["stability"]
    crossed = (s["run_queue_wait_share"] >= st.CONTENDED_WAIT_SHARE
               or (s["steal_share"] or 0) >= st.CONTENDED_STEAL_SHARE)
    assert (s["verdict"] == "contended") == crossed, s
    if not crossed:
        assert s["message"].split(":")[0] in ("stable", "noisy")
        assert "not this model's latency" not in s["message"]
    expect_noisy = (s["p90_over_median"] > st.NOISY_P90_OVER_MEDIAN or s["cv"] > st.NOISY_CV
                    or s["run_queue_wait_share"] >= st.NOISY_WAIT_SHARE
                    or (s["steal_share"] or 0) >= st.NOISY_STEAL_SHARE
                    or (s["load_per_cpu"] or 0) >= st.NOISY_LOAD_PER_CPU
                    or (s["freq_drift"] or 0) > st.NOISY_FREQ_DRIFT or bool(s["throttle_events"]))
    assert (s["verdict"] == "stable") == (not crossed and not expect_noisy), s
    assert row["stability"]["window_s"] >= FAST["duration_s"]
    # peak RSS of the window: the model is loaded, so the peak is at least the RSS before the window
    mem = row["memory"]
    assert mem["peak_rss_mb"] >= mem["rss_before_mb"] > 0 and mem["added_mb"] >= 0
    assert row["peak_rss_mb"] == mem["peak_rss_mb"] and "clear_refs" in mem["method"]
    assert row["energy"]["available"] or row["energy"]["reason"]


def test_until_stable_records_windows_and_is_bounded(ort_one_thread):
    from edgevit.profiling import profile_runtime

    t0 = time.monotonic()
    (row,) = profile_runtime(ort_one_thread, until_stable=True, max_duration_s=1.2,
                             **{**FAST, "duration_s": 0.2})
    took = time.monotonic() - t0
    w = row["stability"]["windows"]
    assert 3 <= w["count"] == len(w["medians_ms"]) == len(w["verdicts"]) and w["used"] == 3
    assert took < 1.2 + 0.2 + 1.5  # the bound, one window, warm-up and slack for a loaded machine
    if w["settled"]:
        last = w["medians_ms"][-3:]
        assert (max(last) - min(last)) / np.median(last) <= w["tolerance"]
        assert "contended" not in w["verdicts"][-3:]
    else:
        assert row["stability"]["verdict"] in ("noisy", "contended")
        if row["stability"]["verdict"] == "contended":
            assert f"--until-stable found no quiet, settled stretch in {w['count']} windows" in row["stability"]["message"]
    assert row["settings"]["until_stable"] is True
    # the row's statistics are the last three windows' calls
    assert row["median_ms"] == pytest.approx(np.median(w["medians_ms"][-3:]), rel=0.5)
    with pytest.raises(ConfigError, match="until_stable needs max_duration_s"):
        profile_runtime(ort_one_thread, until_stable=True, max_duration_s=0.5, **{**FAST, "duration_s": 0.2})


def test_time_call_and_interleaved_carry_a_verdict():
    from edgevit.profiling import time_call, time_interleaved

    x = np.zeros(4)
    r = time_call(lambda a: a.sum(), x, warmup_s=0.0, min_warmup=1, runs=20)
    assert r["stability"]["verdict"] in st.VERDICTS and r["stability"]["message"]
    res = time_interleaved({"a": lambda a: a.sum(), "b": lambda a: a.max()}, x, passes=2, duration_s=0.02,
                           warmup_s=0.0, min_runs=3)
    assert all(v["stability"]["verdict"] in st.VERDICTS for v in res.values())


def test_cli_profile_table_and_json_show_the_verdict(tmp_path, capsys, tiny_onnx_path):
    from edgevit.cli import main

    out_json = tmp_path / "p.json"
    assert main(["profile", str(tiny_onnx_path), "--runtime", "onnxruntime", "--threads", "1", "--random-inputs",
                 "--runs", "5", "--warmup", "0.05", "--until-stable", "--max-duration", "0.8",
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out_json.read_text())["results"]
    s = row["stability"]
    # windows of 5 calls until settled or 0.8 s passed (a window is never cut short: on a very slow machine, one)
    assert s["verdict"] in st.VERDICTS and s["windows"]["count"] >= 1 and row["runs"] == 5 * s["windows"]["used"]
    assert s["windows"]["settled"] is False or s["windows"]["count"] >= 3
    header = next(line for line in out.splitlines() if "median ms" in line)
    assert "stability" in header and "peak RSS MiB" in header
    assert f"{s['verdict']} ({'settled' if s['windows']['settled'] else 'not settled'}" in out
    if s["verdict"] != "stable":  # the reason in plain words under the table
        assert f"onnxruntime batch 1: {s['message']}" in out
    assert main(["profile", str(tiny_onnx_path), "--max-duration", "5"]) == 2  # a bound without --until-stable
    assert "--max-duration bounds --until-stable" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ peak RSS
@linux_only
def test_peak_rss_window_sees_an_allocation():
    p = PeakRss()
    p.start()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del block
    mem = p.stop()
    assert mem["added_mb"] >= 60, mem  # the freed block still counts: it is the window's peak
    p.start()
    mem2 = p.stop()
    assert mem2["added_mb"] < 30 and mem2["peak_rss_mb"] < mem["peak_rss_mb"]  # reset: the old peak is gone
    from edgevit.profiling import peak_rss_mb

    assert peak_rss_mb() >= mem["peak_rss_mb"]  # the lifetime peak survives the resets


# ------------------------------------------------------------------------------------------ RAPL energy
def _rapl_tree(root: Path, zones: dict[str, tuple[str, int, int]]) -> Path:
    """A powercap sysfs tree in the kernel's format: one directory per zone holding name, energy_uj and
    max_energy_range_uj (decimal text with a newline), plus a sub-zone that must not be double counted."""
    for zone, (name, energy, rng) in zones.items():
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(f"{name}\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{rng}\n")
        sub = root / f"{zone}:0"
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("123\n")
    return root


def test_rapl_energy_per_inference_with_wraparound(tmp_path):
    rng = 262143328850  # max_energy_range_uj of a Xeon package (the usual 2^32 × 61 µJ units)
    root = _rapl_tree(tmp_path / "powercap", {"intel-rapl:0": ("package-0", rng - 1_000_000, rng),
                                              "intel-rapl:1": ("dram", 5_000_000, rng)})
    before = read_rapl(root)
    assert before.reason is None and set(before.zones) == {"intel-rapl:0", "intel-rapl:1"}
    (root / "intel-rapl:0" / "energy_uj").write_text("2000000\n")  # wrapped: 1 J to the range, then 2 J
    (root / "intel-rapl:1" / "energy_uj").write_text("5500000\n")
    after = read_rapl(root)
    after.t = before.t + 2.0
    rec = energy_record(before, after, calls=100, batch=8)
    assert rec["available"] and rec["domains"] == {"package-0": pytest.approx(3.0), "dram": pytest.approx(0.5)}
    assert rec["joules"] == pytest.approx(3.5) and rec["joules_per_call"] == pytest.approx(0.035)
    assert rec["millijoules_per_image"] == pytest.approx(3.5 / 800 * 1e3)
    assert rec["mean_power_w"] == pytest.approx(1.75) and "whole CPU package" in rec["scope"]
    assert rapl_delta_uj(10, 5, 0) == -5  # range unknown: no undo (the caller sees a negative delta)


def test_rapl_missing_says_why(tmp_path):
    r = read_rapl(tmp_path / "none")
    assert r.zones == {} and "no RAPL energy counters" in r.reason
    rec = energy_record(r, r, calls=10, batch=1)
    assert rec == {"available": False, "source": "rapl", "reason": r.reason}
    assert energy_record(RaplReading(0.0, {"intel-rapl:0": ("package-0", 1, 9)}),
                         RaplReading(1.0, {"intel-rapl:1": ("package-1", 1, 9)}), 1, 1)["available"] is False


def test_rapl_unreadable_counter_names_the_permission():
    """energy_uj is root-only since Linux 5.10: the reason says so. Root reads any file, so as root the read runs in a
    forked child that switched to the 'nobody' user (uid/gid 65534) first."""
    root = Path(tempfile.mkdtemp(prefix="edgevit-rapl-"))
    try:
        root.chmod(0o755)
        _rapl_tree(root / "powercap", {"intel-rapl:0": ("package-0", 42, 100)})
        for p in (root / "powercap").rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o444)
        (root / "powercap" / "intel-rapl:0" / "energy_uj").chmod(0o400)
        if os.geteuid() == 0:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: no pytest machinery from here on, only the read and os._exit
                code = 1
                try:
                    os.close(r)
                    os.setgid(65534)
                    os.setuid(65534)
                    os.write(w, (read_rapl(root / "powercap").reason or "").encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                reason = f.read().decode()
            assert os.waitpid(pid, 0)[1] == 0
        else:
            reason = read_rapl(root / "powercap").reason
        assert "energy_uj is readable by root only" in reason and "CVE-2020-8694" in reason
    finally:
        shutil.rmtree(root)


def test_profile_stage_until_stable_and_verdict_in_the_record(tmp_path, fmnist_test_small):
    from edgevit import pipeline
    from edgevit.errors import ConfigError as CfgError
    from edgevit.recipe import from_raw

    stage = {"stage": "profile", "batch": [1], "duration_s": 0.05, "warmup_s": 0.02, "min_runs": 3,
             "until_stable": True, "max_duration_s": 0.5, "include_source": False}
    raw = {"name": "stab", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 4}, "runtimes": ["torch"],
           "stages": [stage]}
    pipeline.run(from_raw(raw), tmp_path)
    rec = json.loads(next(tmp_path.glob("*_profile/record.json")).read_text())
    (row,) = rec["metrics"]["latency"]
    assert row["settings"]["until_stable"] is True and row["stability"]["windows"]["count"] >= 1
    assert rec["metrics"]["stability"] == row["stability"]["verdict"]
    with pytest.raises(CfgError, match="max_duration_s"):
        from_raw({**raw, "stages": [{**stage, "max_duration_s": 0}]})
    with pytest.raises(CfgError, match="must hold 3 windows of duration_s"):  # caught when the recipe loads
        from_raw({**raw, "stages": [{**stage, "max_duration_s": 0.1}]})
