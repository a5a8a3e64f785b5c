"""Per-node times of an ONNX model on ONNX Runtime's CPU provider, from its built-in profiler.

``SessionOptions.enable_profiling`` makes onnxruntime write a Chrome-trace JSON: one ``Session`` event
``model_run`` per run and, inside it, one ``Node`` event ``<node name>_kernel_time`` per executed kernel with
``args.op_name`` (the kernel's op type after onnxruntime's graph optimisations: ``FusedMatMul``, ``FusedConv``,
``SkipLayerNormalization``, ``ReorderInput`` ...) and ``args.input_type_shape``. :func:`parse_ort_profile` reads
that format; :func:`measure_interleaved` times several models against each other on a noisy machine: wall time
of plain runs and per-node times of profiled runs, in rotating passes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RuntimeLoadError
from .roofline import op_class

log = logging.getLogger(__name__)

KERNEL_SUFFIX = "_kernel_time"


def _shapes(type_shapes: Sequence[Mapping[str, Sequence[int]]] | None) -> list[tuple[int, ...] | None]:
    """``[{"float": [1, 3, 224, 224]}, ...]`` → ``[(1, 3, 224, 224), ...]``."""
    out: list[tuple[int, ...] | None] = []
    for entry in type_shapes or []:
        dims = next(iter(entry.values()), None) if isinstance(entry, Mapping) else None
        out.append(tuple(int(d) for d in dims) if dims is not None else None)
    return out


def kernels_by_run(events: Sequence[Mapping], *, skip_runs: int = 0) -> tuple[list[tuple[float, float]], list[list]]:
    """The one reading of onnxruntime's profiler JSON (chrome-trace events) that the per-node tools share:
    ``(runs, kernels)`` with ``runs`` the ``(start, end)`` µs of each ``model_run`` (Session category) in time
    order after the first ``skip_runs``, and ``kernels[r]`` the ``<node>_kernel_time`` events (Node category) that
    fall inside run ``r``, in the events' order. Kernels outside every kept run (warm-up) are left out."""
    runs = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    starts = np.array([r[0] for r in runs], dtype=np.float64)
    kernels: list[list] = [[] for _ in runs]
    for e in events:
        if not runs or e.get("cat") != "Node" or not str(e.get("name", "")).endswith(KERNEL_SUFFIX):
            continue
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i >= 0 and e["ts"] <= runs[i][1]:
            kernels[i].append(e)
    return runs, kernels


def parse_ort_profile(events: Sequence[Mapping]) -> list[list[dict]]:
    """onnxruntime profiler events → one list per ``model_run`` of its kernels, in execution order:
    ``{"name", "op", "class", "input_shapes", "us"}`` (``class``: :func:`~edgevit.profiling.roofline.op_class`).

    Raises :class:`ConfigError` when the events hold no ``model_run`` (not an onnxruntime profile, or a session
    that never ran)."""
    runs, kernels = kernels_by_run(events)
    if not runs:
        raise ConfigError("no 'model_run' events in the profile: not an onnxruntime profile, or no run was profiled")
    out: list[list[dict]] = []
    for run in kernels:
        rows = []
        for e in sorted(run, key=lambda e: e["ts"]):
            args = e.get("args") or {}
            op = str(args.get("op_name", ""))
            shapes = _shapes(args.get("input_type_shape"))
            rows.append({"name": e["name"][:-len(KERNEL_SUFFIX)], "op": op, "class": op_class(op, shapes),
                         "input_shapes": shapes, "us": float(e["dur"])})
        out.append(rows)
    return out


def kernel_medians(runs: Sequence[Sequence[dict]]) -> list[dict]:
    """One entry per kernel name (in execution order) with ``us`` = its median time over ``runs``; a kernel that
    did not run every time counts as 0 in the others."""
    order: dict[str, dict] = {}
    times: dict[str, list[float]] = {}
    for r in runs:
        seen: dict[str, float] = {}
        for k in r:
            order.setdefault(k["name"], k)
            seen[k["name"]] = seen.get(k["name"], 0.0) + k["us"]
        for name in order:
            times.setdefault(name, []).append(seen.get(name, 0.0))
    n = len(runs)
    return [{**{key: v for key, v in k.items() if key != "us"},
             "us": float(np.median(times[name] + [0.0] * (n - len(times[name]))))} for name, k in order.items()]


def class_times_ms(kernels: Sequence[dict], classes_by_name: Mapping[str, str] | None = None) -> dict[str, float]:
    """Summed kernel time per op class in ms, plus ``"_kernels"`` (all of them). A kernel named like a node of the
    ONNX file takes that node's class from ``classes_by_name`` (e.g. :func:`~edgevit.profiling.roofline.
    classify_nodes`, so that an unfused activation counts as ``epilogue`` on both sides); the others (fused or
    inserted by onnxruntime) keep the class of their op type and shapes."""
    out: dict[str, float] = {}
    for k in kernels:
        cls = (classes_by_name or {}).get(k["name"], k["class"])
        out[cls] = out.get(cls, 0.0) + k["us"] / 1e3
    out["_kernels"] = sum(out.values())
    return out


def ort_session(path: str | Path, *, threads: int, spinning: bool = True, profile_dir: Path | None = None,
                prefix: str = ""):
    """An onnxruntime CPU session with ``threads`` intra-op threads (one inter-op thread, all graph
    optimisations; ``spinning`` False stops idle worker threads from spinning), profiling into ``profile_dir``
    (an existing folder; file names start with ``prefix``, default the model's file stem) when given."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / (prefix or Path(path).stem))
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises pybind errors
        raise RuntimeLoadError(f"onnxruntime {ort.__version__} could not load {path}: {exc}") from exc


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _feed(session) -> dict[str, np.ndarray]:
    """Random batch-1 inputs for every graph input (dynamic dims set to 1)."""
    rng = np.random.default_rng(0)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                 "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}.get(i.type)
        if dtype is None:
            raise ConfigError(f"input '{i.name}' has type {i.type}: only float/int inputs are generated")
        feed[i.name] = (rng.standard_normal(shape) if np.issubdtype(dtype, np.floating)
                        else rng.integers(0, 2, shape)).astype(dtype)
    return feed


def measure_interleaved(paths: Mapping[str, str | Path], *, threads: int = 2, passes: int = 5, runs: int = 10,
                        warmup: int = 2, spinning: bool = False, progress=None) -> dict[str, dict]:
    """Batch-1 latency and per-class kernel times of several ONNX models, measured against each other.

    Every model gets two onnxruntime CPU sessions (``threads`` intra-op threads): a plain one for the wall time and
    a profiled one for per-node times (the profiler's own cost stays out of the wall time). In each of ``passes``
    rounds every model (in an order that rotates every round) runs ``warmup`` + ``runs`` plain calls, then
    ``warmup`` + ``runs`` profiled calls. Per model: ``wall_ms`` = the median of the per-pass medians (robust to
    a pass slowed by another tenant), ``pass_medians_ms``, ``spread_pct``, ``quiet_ms`` = the median of the
    per-pass minima (what the model takes when the machine is quiet for one run: on a contended machine the
    medians measure the contention), ``pass_minima_ms``, ``cpu_ms`` = the median of the per-pass median CPU time
    per run (with one thread: the calling thread's, which runs every kernel, so the latency without the time spent
    waiting for a core; with more: the whole process's, the work rather than a latency) and ``cpu_clock``, ``kernels`` (:func:`kernel_medians`
    over every profiled run after warm-up), ``class_ms`` (:func:`class_times_ms` of those, by op type and shape)
    and ``load_avg`` (the 1-minute load average before and after). ``progress(i, n)`` is
    called after each model × pass. ``spinning`` is off by default: on a shared machine, worker threads that spin
    between kernels compete with the other tenants and the timings of 2-thread sessions scatter by 10× (a check
    on a loaded 2-core machine: ViT-Tiny median 370 ms spinning, 32 ms not); on a quiet machine spinning is a few
    percent faster.
    """
    if passes < 1 or runs < 1 or warmup < 0:
        raise ConfigError(f"passes and runs must be ≥ 1 and warmup ≥ 0 (got {passes}, {runs}, {warmup})")
    names = list(paths)
    if not names:
        raise ConfigError("measure_interleaved: no models given")
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="edgevit-ortprof-") as tmp:
        plain = {n: ort_session(paths[n], threads=threads, spinning=spinning) for n in names}
        prof = {n: ort_session(paths[n], threads=threads, spinning=spinning, profile_dir=Path(tmp), prefix=f"{i:03d}")
                for i, n in enumerate(names)}
        feeds = {n: _feed(plain[n]) for n in names}
        medians: dict[str, list[float]] = {n: [] for n in names}
        minima: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        # one thread runs every kernel in the calling thread: its CPU time is the run's latency minus the time the
        # thread waited for a core; with a pool, the process's CPU time (all threads) is the work, not a latency
        cpu_clock = time.thread_time_ns if threads == 1 else time.process_time_ns
        done = 0
        for p in range(passes):
            for n in names[p % len(names):] + names[:p % len(names)]:
                s, x = plain[n], feeds[n]
                for _ in range(warmup):
                    s.run(None, x)
                t, c = [], []
                for _ in range(runs):
                    c0, t0 = cpu_clock(), time.perf_counter_ns()
                    s.run(None, x)
                    t.append(time.perf_counter_ns() - t0)
                    c.append(cpu_clock() - c0)
                medians[n].append(float(np.median(t)) / 1e6)
                cpu[n].append(float(np.median(c)) / 1e6)
                minima[n].append(float(np.min(t)) / 1e6)
                for _ in range(warmup + runs):
                    prof[n].run(None, feeds[n])
                done += 1
                if progress is not None:
                    progress(done, passes * len(names))
        out = {}
        load_after = _load_average()
        for n in names:
            events = json.loads(Path(prof[n].end_profiling()).read_text())
            kernel_runs = parse_ort_profile(events)
            # drop each pass's warm-up runs: the profiled calls come in blocks of warmup + runs
            timed = [r for i, r in enumerate(kernel_runs) if i % (warmup + runs) >= warmup]
            wall = float(np.median(medians[n]))
            kernels = kernel_medians(timed)
            out[n] = {"path": str(paths[n]), "wall_ms": wall, "pass_medians_ms": medians[n],
                      "quiet_ms": float(np.median(minima[n])), "pass_minima_ms": minima[n],
                      "cpu_ms": float(np.median(cpu[n])), "cpu_clock": "thread" if threads == 1 else "process",
                      "spread_pct": (max(medians[n]) - min(medians[n])) / wall * 100 if wall > 0 else None,
                      "class_ms": class_times_ms(kernels), "kernels": kernels, "profiled_runs": len(timed),
                      "threads": threads, "spinning": spinning, "load_avg": [load_before, load_after]}
    return out
