"""Latency profiler: one method for every runtime (specs/measurement.md).

Per batch size: warm up by time (and at least ``min_warmup`` calls), then time each ``runtime.run(batch)`` call
with ``time.perf_counter_ns`` — either a fixed number of ``runs`` or for ``duration_s`` (at least ``min_runs``,
at most ``max_runs``). A runtime's ``run`` returns host arrays, so on a GPU it has synchronised before it returns:
the times are end-to-end (input check, host→device copy, compute, device→host copy).

Reported: median (the headline number), p90, p99, mean, min, max, std, the count of runs, throughput
(batch / median), which inputs were used, a stability verdict of the timed window (:mod:`.stability`: is this
number the model's, or the machine's?), peak RSS during the window and energy per inference where RAPL is readable
(:mod:`.resources`), artefact size, parameter count and MACs where known, and the system stamp (versions, threads,
CPU, Jetson power mode). Per-layer profiles belong in a separate run.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputSpecError
from .resources import PeakRss, RaplReading, energy_record, lifetime_peak_rss_mb, read_rapl
from .stability import Snapshot, assess, take_snapshot
from .system import system_stamp

log = logging.getLogger(__name__)

METHOD = ("time.perf_counter_ns around each runtime.run(batch) call (includes the input check, any host/device "
          "copies and device synchronisation); time-based warm-up with a minimum count; median is the headline")


def profile_runtime(runtime, *, batch_sizes: Sequence[int] = (1,), warmup_s: float = 0.5, min_warmup: int = 5,
                    runs: int | None = None, duration_s: float = 3.0, min_runs: int = 10, max_runs: int = 10000,
                    inputs: np.ndarray | None = None, progress: bool | None = None, until_stable: bool = False,
                    max_duration_s: float = 60.0, warn: bool = True) -> list[dict]:
    """Time ``runtime.run`` at each batch size; one result dict per batch size.

    ``inputs`` — a real, preprocessed NCHW batch (preferred; rows are repeated to fill larger batches). An
    early-exit runtime (the segment cascade, the single-graph If form; :func:`is_early_exit`) takes the next batch
    of ``inputs`` on every call, so give it a sample (a few hundred images): its row also holds ``exit_mix``
    (``shares`` per exit over the timed calls, ``samples``, ``labels``).
    Every batch size must lie in the runtime's ``batch_limits`` (:func:`check_batch_size` raises
    :class:`ConfigError` otherwise: the If form runs batch 1 only, a TVM library its own batch). Without
    it, ``runtime.spec.example(batch)`` (random) is used; ``input_source`` records which. ``runs`` fixes the
    number of timed calls; otherwise calls repeat for ``duration_s`` (at least ``min_runs``, at most
    ``max_runs``). ``progress`` shows a tqdm bar over the timed runs (default: on a terminal unless
    ``EDGEVIT_PROGRESS=0``, see :mod:`edgevit.progress`).

    Every row carries ``stability`` (:func:`edgevit.profiling.stability.assess`: ``verdict`` ``stable`` / ``noisy`` /
    ``contended``, a plain-words ``message``, load average, steal, run-queue wait, spread, frequency and temperature
    of the timed window), ``memory`` (peak RSS of this process during the batch's warm-up and timed calls, MiB;
    :class:`~edgevit.profiling.resources.PeakRss`; ``peak_rss_mb`` repeats its peak) and ``energy`` (RAPL energy per
    inference where the host exposes it, else the reason; :func:`~edgevit.profiling.resources.energy_record`).

    ``warn``: log a contended row as a warning (default); a caller that summarises many rows passes False and
    the row is logged at INFO.

    ``until_stable``: time in windows of ``duration_s`` (or ``runs`` calls) until the medians of the last
    :data:`SETTLE_WINDOWS` windows agree within :data:`SETTLE_TOLERANCE` and none of them was contended, or until
    ``max_duration_s`` of timing has passed; the row's statistics, stability and energy are those of the last
    :data:`SETTLE_WINDOWS` windows, and ``stability["windows"]`` records ``count``, ``settled`` and every window's
    median. Raises :class:`ConfigError` when ``max_duration_s`` cannot hold :data:`SETTLE_WINDOWS` windows.
    """
    batch_sizes = _check_args(batch_sizes, warmup_s, min_warmup, runs, duration_s, min_runs, max_runs)
    if until_stable and (max_duration_s <= 0 or (runs is None and max_duration_s < SETTLE_WINDOWS * duration_s)):
        raise ConfigError(f"until_stable needs max_duration_s ≥ {SETTLE_WINDOWS} windows of duration_s "
                          f"({SETTLE_WINDOWS} × {duration_s} s), got max_duration_s={max_duration_s}: raise it or "
                          f"shorten duration_s")
    spec = runtime.spec
    if inputs is not None:
        inputs = _check_inputs(inputs, spec)
    info = runtime.describe()
    artifact = runtime.artifact
    model_info = _model_info(artifact)
    stamp = system_stamp(threads=info.get("threads"))
    for batch in batch_sizes:
        check_batch_size(runtime, batch)
    early_exit = is_early_exit(runtime)
    if early_exit and inputs is None:
        log.warning("%s exits early depending on the input: random inputs give a meaningless exit mix and latency; "
                    "pass real images (inputs=...)", info.get("runtime"))
    results = []
    for batch in batch_sizes:
        x, source = _batch(inputs, spec, batch)
        run = runtime.run
        if early_exit and inputs is not None:
            # the latency depends on where each image exits: every call takes the next batch of the real sample
            run, source = _cycling(runtime, inputs, batch), f"{source}, cycling through all {len(inputs)} images"
        log.info("profiling %s (%s) batch %d: warm-up %.2fs/≥%d, %s", info.get("runtime"), model_info["model"],
                 batch, warmup_s, min_warmup, f"{runs} runs" if runs else f"{duration_s}s/≥{min_runs} runs")
        peak = PeakRss()
        peak.start()
        warm_n, warm_s = _warmup(run, x, warmup_s, min_warmup)
        gc.collect()
        counts0 = _exit_counts(runtime)
        times_ns, stability, energy = _timed_windows(
            run, x, batch, runs=runs, duration_s=duration_s, min_runs=min_runs, max_runs=max_runs,
            progress=progress, label=f"{info.get('runtime')} b{batch}", until_stable=until_stable,
            max_duration_s=max_duration_s)
        counts1 = _exit_counts(runtime)
        memory = peak.stop()
        row = {
            "model": model_info["model"],
            "runtime": info.get("runtime"),
            "device": info.get("device"),
            "batch": batch,
            **latency_stats(times_ns, batch),
            "input_source": source,
            "input_shape": list(x.shape),
            **({"exit_mix": _exit_mix(counts0, counts1)} if early_exit else {}),
            "warmup": {"runs": warm_n, "seconds": round(warm_s, 4), "warmup_s": warmup_s, "min_warmup": min_warmup},
            "settings": {"runs": runs, "duration_s": None if runs else duration_s, "min_runs": min_runs,
                         "max_runs": max_runs, "until_stable": until_stable,
                         "max_duration_s": max_duration_s if until_stable else None},
            "method": METHOD,
            "stability": stability,
            "peak_rss_mb": memory["peak_rss_mb"],
            "memory": memory,
            "energy": energy,
            **{k: v for k, v in model_info.items() if k != "model"},
            "runtime_info": info,
            "system": stamp,
        }
        log.log(logging.WARNING if warn and stability["verdict"] == "contended" else logging.INFO,
                "%s batch %d: median %.3f ms, p90 %.3f ms over %d runs; %s", row["runtime"], batch, row["median_ms"],
                row["p90_ms"], row["runs"], stability["message"])
        results.append(row)
    return results


def check_batch_size(runtime, batch: int) -> None:
    """Raise :class:`ConfigError` when ``runtime`` cannot run batches of ``batch`` (its :attr:`batch_limits`): a
    fixed-batch library or graph is timed at its own batch only, the single-graph early-exit form (If nodes) at
    batch 1 only, a TensorRT engine within its profile. Timing a padded batch would report a made-up throughput."""
    lo, hi = getattr(runtime, "batch_limits", (1, None))
    if lo <= batch and (hi is None or batch <= hi):
        return
    name = getattr(runtime, "name", "runtime")
    where = getattr(runtime, "path", None) or "the artefact"
    if getattr(runtime, "early_exit_if", False):
        raise ConfigError(f"cannot profile {where} at batch {batch}: it is the single-graph early-exit form, which runs "
                          f"one image at a time (an If takes one branch for the whole batch, so a batch would exit "
                          f"together). Profile it with --batch 1, or profile the segment cascade (manifest.json) for "
                          f"batches")
    if lo == hi:
        raise ConfigError(f"cannot profile {where} on {name} at batch {batch}: it runs batches of exactly {lo} (a "
                          f"static shape). Profile it with --batch {lo}, or re-export it for batch {batch}")
    raise ConfigError(f"cannot profile {where} on {name} at batch {batch}: it runs batches of {lo} to "
                      f"{hi if hi is not None else 'any size'}. Choose a batch in that range, or rebuild it")


def is_early_exit(runtime) -> bool:
    """Whether ``runtime`` exits early per input (the segment cascade, the single-graph If form)."""
    return getattr(runtime, "exit_counts", None) is not None or bool(getattr(runtime, "early_exit_if", False))


def _cycling(runtime, inputs: np.ndarray, batch: int) -> Callable[[np.ndarray], Any]:
    """A ``run(_)`` that ignores its argument and feeds ``runtime`` the next ``batch`` images of ``inputs`` (wrapping
    round), so a timed loop covers the whole sample and every exit path in its real proportion."""
    n = len(inputs)
    batches = [np.ascontiguousarray(np.take(inputs, np.arange(a, a + batch) % n, axis=0))
               for a in range(0, max(n, batch), batch)]
    state = {"i": 0}

    def run(_x):
        i = state["i"]
        state["i"] = (i + 1) % len(batches)
        return runtime.run(batches[i])

    return run


def _exit_counts(runtime) -> np.ndarray | None:
    c = getattr(runtime, "exit_counts", None)
    return None if c is None else np.array(c, dtype=np.int64, copy=True)


def _exit_mix(before: np.ndarray | None, after: np.ndarray | None) -> dict | None:
    """Share of the timed samples per exit (``shares[k]``: exit k+1, the last = the final head), or None when the
    runtime does not report its exits (an If graph written before it had an exit output: rebuild it)."""
    if before is None or after is None:
        return None
    d = after - before
    total = int(d.sum())
    return {"shares": [float(v) / total if total else 0.0 for v in d], "samples": total,
            "labels": [f"exit {k + 1}" for k in range(len(d) - 1)] + ["final"]}


def time_call(run: Callable[[np.ndarray], Any], x: np.ndarray, *, warmup_s: float = 0.2, min_warmup: int = 3,
              runs: int | None = None, duration_s: float = 1.0, min_runs: int = 10, max_runs: int = 100000,
              label: str = "call") -> dict:
    """:func:`latency_stats` of ``run(x)`` timed with the profiler's method (time-based warm-up, then timed calls for
    ``duration_s`` or a fixed number of ``runs``), with the ``stability`` record of the timed window
    (:func:`~edgevit.profiling.stability.assess`). For what is not a whole runtime: one graph of a cascade, a
    compiled function, a C-extension call."""
    _check_args((1,), warmup_s, min_warmup, runs, duration_s, min_runs, max_runs)
    _warmup(run, x, warmup_s, min_warmup)
    before = take_snapshot()
    t = _measure(run, x, runs=runs, duration_s=duration_s, min_runs=min_runs, max_runs=max_runs, progress=False,
                 label=label)
    return {**latency_stats(t), "stability": assess(before, take_snapshot(), t)}


def time_interleaved(calls: Mapping[str, Callable[[np.ndarray], Any]], x: np.ndarray | Mapping[str, np.ndarray], *,
                     passes: int = 5, duration_s: float = 1.0, warmup_s: float = 0.2, min_runs: int = 10,
                     max_runs: int = 100000) -> dict[str, dict]:
    """Time several calls against each other on a shared, noisy machine: ``passes`` rounds, and in each round every
    call is warmed up and timed for ``duration_s`` in turn (the order rotates every round, so no call always runs
    first or after the same neighbour). Per call: ``median_ms`` = the median of the per-pass medians (the headline;
    robust to a slow pass caused by another tenant), ``pass_medians_ms``, ``spread_pct`` ((max − min) / median of
    the pass medians, how much the machine drifted), the pooled :func:`latency_stats` of every timed call, and the
    ``stability`` record (:func:`~edgevit.profiling.stability.assess`) of the whole interleaved run for that call's
    pooled timings (a ``contended`` machine makes the comparison worthless, whatever the rotation).

    ``x``: one input for all calls, or ``{name: input}``.
    """
    if passes < 1:
        raise ConfigError(f"passes must be ≥ 1, got {passes}")
    _check_args((1,), warmup_s, 1, None, duration_s, min_runs, max_runs)
    names = list(calls)
    if not names:
        raise ConfigError("time_interleaved: no calls to time")
    inputs = {n: (x[n] if isinstance(x, Mapping) else x) for n in names}
    pooled: dict[str, list[np.ndarray]] = {n: [] for n in names}
    medians: dict[str, list[float]] = {n: [] for n in names}
    before = take_snapshot()
    for p in range(passes):
        order = names[p % len(names):] + names[:p % len(names)]
        for n in order:
            _warmup(calls[n], inputs[n], warmup_s, 1)
            t = _measure(calls[n], inputs[n], runs=None, duration_s=duration_s, min_runs=min_runs, max_runs=max_runs,
                         progress=False, label=n)
            pooled[n].append(t)
            medians[n].append(float(np.median(t)) / 1e6)
    after = take_snapshot()
    out = {}
    for n in names:
        m = float(np.median(medians[n]))
        t = np.concatenate(pooled[n])
        out[n] = {"median_ms": m, "pass_medians_ms": medians[n], "passes": passes,
                  "spread_pct": (max(medians[n]) - min(medians[n])) / m * 100 if m > 0 else None,
                  "pooled": latency_stats(t), "stability": assess(before, after, t)}
    return out


def latency_stats(times_ns: Sequence[int] | np.ndarray, batch: int = 1) -> dict:
    """Median/p90/p99/mean/min/max/std in ms, the count, and throughput (images/s = batch / median)."""
    t = np.asarray(times_ns, dtype=np.float64) / 1e6
    if t.size == 0:
        raise ConfigError("no timings to summarise (0 runs)")
    median = float(np.median(t))
    return {
        "median_ms": median,
        "p90_ms": float(np.percentile(t, 90)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0,
        "runs": int(t.size),
        "throughput": batch / (median / 1e3) if median > 0 else None,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it started, in MiB (includes everything loaded before profiling;
    a profile row's ``memory`` holds the peak during its own window)."""
    return lifetime_peak_rss_mb()


SETTLE_WINDOWS = 3  # --until-stable: the last this many windows must agree ...
SETTLE_TOLERANCE = 0.05  # ... their medians within 5% ((max − min) / median of the window medians), none contended


def _timed_windows(run, x: np.ndarray, batch: int, *, runs: int | None, duration_s: float, min_runs: int,
                   max_runs: int, progress: bool | None, label: str, until_stable: bool,
                   max_duration_s: float) -> tuple[np.ndarray, dict, dict]:
    """The timed calls of one batch size with the machine's state around them: (times in ns, stability, energy).
    One window, or with ``until_stable`` windows until the spread settles (see :func:`profile_runtime`)."""
    windows: list[tuple[Snapshot, RaplReading, np.ndarray, Snapshot, RaplReading]] = []
    medians: list[float] = []
    verdicts: list[str] = []
    start = time.monotonic()
    settled = False
    while True:
        s0, e0 = take_snapshot(), read_rapl()
        t = _measure(run, x, runs=runs, duration_s=duration_s, min_runs=min_runs, max_runs=max_runs,
                     progress=progress, label=label if not until_stable else f"{label} window {len(windows) + 1}")
        e1, s1 = read_rapl(), take_snapshot()
        windows.append((s0, e0, t, s1, e1))
        if not until_stable:
            break
        medians.append(float(np.median(t)) / 1e6)
        verdicts.append(assess(s0, s1, t)["verdict"])
        last = medians[-SETTLE_WINDOWS:]
        if len(last) == SETTLE_WINDOWS:
            settled = ((max(last) - min(last)) / float(np.median(last)) <= SETTLE_TOLERANCE
                       and "contended" not in verdicts[-SETTLE_WINDOWS:])
        elapsed = time.monotonic() - start
        if settled or elapsed + (s1.t - s0.t) > max_duration_s:
            break
        log.info("%s: window %d median %.3f ms (%s); not settled yet, measuring again", label, len(windows),
                 medians[-1], verdicts[-1])
    used = windows[-SETTLE_WINDOWS:] if until_stable else windows
    times = np.concatenate([w[2] for w in used])
    info = None
    if until_stable:
        info = {"count": len(windows), "settled": settled, "used": len(used), "medians_ms": medians,
                "verdicts": verdicts, "tolerance": SETTLE_TOLERANCE, "max_duration_s": max_duration_s,
                "seconds": time.monotonic() - start}
    stability = assess(used[0][0], used[-1][3], times, windows=info)
    energy = energy_record(used[0][1], used[-1][4], len(times), batch)
    return times, stability, energy


# ------------------------------------------------------------------------------------------------ internals


def _check_args(batch_sizes, warmup_s, min_warmup, runs, duration_s, min_runs, max_runs) -> list[int]:
    if isinstance(batch_sizes, int):
        batch_sizes = (batch_sizes,)
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b <= 0 for b in sizes):
        raise ConfigError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    if warmup_s < 0 or min_warmup < 0:
        raise ConfigError(f"warmup_s and min_warmup must be >= 0, got {warmup_s} and {min_warmup}")
    if runs is not None and runs <= 0:
        raise ConfigError(f"runs must be a positive number of timed calls (or None to run for duration_s), got {runs}")
    if runs is None and duration_s <= 0:
        raise ConfigError(f"duration_s must be positive when runs is not given, got {duration_s}")
    if min_runs <= 0 or max_runs < min_runs:
        raise ConfigError(f"need 0 < min_runs <= max_runs, got min_runs={min_runs}, max_runs={max_runs}")
    return sizes


def _check_inputs(inputs, spec) -> np.ndarray:
    x = np.asarray(inputs)
    if x.ndim == len(spec.input_size):  # one image (or one input of another spec)
        x = x[None]
    if x.shape[0] == 0:
        raise InputSpecError("profile inputs: the batch is empty; pass at least one preprocessed image")
    return spec.check_batch(np.ascontiguousarray(x), where="profile inputs")


def _batch(inputs: np.ndarray | None, spec, batch: int) -> tuple[np.ndarray, str]:
    if inputs is None:
        return spec.example(batch), "random (spec.example)"
    n = inputs.shape[0]
    x = inputs[:batch] if n >= batch else np.take(inputs, np.arange(batch) % n, axis=0)
    note = "" if n >= batch else f", {n} image(s) repeated to {batch}"
    return np.ascontiguousarray(x), f"provided{note}"


def _warmup(run, x: np.ndarray, warmup_s: float, min_warmup: int) -> tuple[int, float]:
    n = 0
    start = time.perf_counter()
    while n < min_warmup or time.perf_counter() - start < warmup_s:
        run(x)
        n += 1
    return n, time.perf_counter() - start


def _measure(run, x: np.ndarray, *, runs: int | None, duration_s: float, min_runs: int, max_runs: int,
             progress: bool | None, label: str) -> np.ndarray:
    if progress is None:
        from ..progress import enabled

        progress = enabled()
    bar = None
    if progress:
        from ..progress import progress as progress_bar

        bar = progress_bar(total=runs, desc=label, unit="run")
    cap = runs if runs is not None else max_runs
    times = np.empty(cap, dtype=np.int64)
    clock = time.perf_counter_ns
    deadline = clock() + int(duration_s * 1e9)
    n = 0
    try:
        while n < cap:
            t0 = clock()
            run(x)
            t1 = clock()
            times[n] = t1 - t0
            n += 1
            if bar is not None:
                bar.update(1)
            if runs is None and n >= min_runs and t1 >= deadline:
                break
    finally:
        if bar is not None:
            bar.close()
    if runs is None and n >= max_runs and clock() < deadline:
        log.info("%s: stopped at max_runs=%d before duration_s=%.2fs ran out", label, max_runs, duration_s)
    return times[:n]


def _model_info(artifact) -> dict:
    """Model name, artefact kind/path/size, parameter count and batch-1 MACs where they can be known."""
    meta = dict(getattr(artifact, "meta", None) or {})
    path = getattr(artifact, "path", None)
    kind = getattr(artifact, "kind", None)
    name = meta.get("model") or getattr(artifact, "source", None) or (Path(path).stem if path else None)
    if name is None and getattr(artifact, "model", None) is not None:
        name = getattr(artifact.model, "edgevit_name", type(artifact.model).__name__)
    info = {"model": name, "artifact_kind": kind, "task": getattr(artifact, "task", "classification"),
            "artifact_path": str(path) if path else None,
            "file_size": getattr(artifact, "file_size", None), "params": meta.get("params"), "macs": meta.get("macs")}
    try:
        if kind == "torch" and artifact.model is not None:
            from .macs import count_macs_torch

            if info["params"] is None:
                info["params"] = int(sum(p.numel() for p in artifact.model.parameters()))
            if info["macs"] is None and hasattr(artifact.spec, "hw"):  # an image model (not a text tower)
                info["macs"] = count_macs_torch(artifact.model, artifact.spec)
        elif kind == "onnx" and path is not None and (info["params"] is None or info["macs"] is None):
            from .macs import onnx_cost

            cost = onnx_cost(path)
            info["macs"] = info["macs"] if info["macs"] is not None else cost["macs"]
            if info["params"] is None:  # initializer elements (folded BatchNorm and buffers included)
                info["params"] = cost["weight_elements"]
    except Exception as exc:  # noqa: BLE001 - counting is optional; the latency is what matters
        log.warning("could not count parameters/MACs of %s (%s: %s)", name, type(exc).__name__, exc)
    return info

