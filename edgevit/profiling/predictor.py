"""Latency predictor with a stated error (issue 15, part 5).

The per-node roofline of :func:`~edgevit.profiling.roofline.predict_onnx_latency`, with an efficiency factor per
op class (compute and memory, :data:`~edgevit.profiling.roofline.CLASSES`) and a fixed overhead per node,
FITTED from measurements on this machine (onnxruntime CPU, per-node times from its profiler) on some models and
TESTED on others. The fitted factors live in a :class:`Calibration` file (``hardware_profiles/fitted/*.json``)
with their provenance (models, date, host, runtime version) and the held-out error; they are used for the
``host`` target when the file's CPU and core count are this machine's. Every other target keeps the datasheet
roofline (efficiency 1.0: a floor) and says its error is unknown.

Every predicted row carries ``expected_error_pct`` (the held-out median |error|, or None when untested) and
``expected_error`` (the same in words, with its basis); ``error_pct`` when a measurement is given.

    >>> rows = predict("m.onnx", ["host", "jetson-orin-nano-8gb"], ["fp32", "fp16"])

Fitting (:func:`fit_calibration`): for every fitting model and op class, the predicted class time
Σ max(C/e_c, M/e_m) + n·o (C, M: the node's compute and memory terms at peak) is matched to the measured kernel
time of that class plus its share (by node count) of the rest of the wall time (framework overhead between
kernels, views); the sum over classes is also matched to the wall time. Least squares on those errors relative to
the model's wall time: non-negative least squares in the inverse efficiencies with each node's roofline side fixed,
alternating with re-assigning the sides (numpy only).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..config import ConfigModel
from ..errors import ConfigError
from .hardware import HOST_NAME, PROFILES_DIR, HardwareProfile, load_profile
from .roofline import CLASSES, classify_nodes, predict_onnx_latency

log = logging.getLogger(__name__)

CALIBRATION_DIR = PROFILES_DIR / "fitted"
LATENCY_KEYS = {"wall_ms": "median latency", "quiet_ms": "quiet-machine latency: median of per-pass minima",
                "cpu_ms": "single-thread latency from CPU time: the time waiting for a core left out"}
FORMAT_VERSION = 1


class ClassFactor(ConfigModel):
    """Efficiency of one op class: achieved fraction of the peak compute and of the memory bandwidth."""

    compute: float = Field(..., gt=0, description="fraction of the profile's peak ops/s reached by this class")
    memory: float = Field(..., gt=0, description="fraction of the profile's memory bandwidth (can exceed 1: "
                                                 "activations that stay in cache)")


class ModelError(ConfigModel):
    """One model's prediction against its measurement."""

    model: str
    predicted_ms: float
    measured_ms: float
    error_pct: float = Field(..., description="(predicted − measured) / measured × 100")


class Evaluation(ConfigModel):
    """The error on models NOT used in fitting."""

    models: list[ModelError]
    median_abs_error_pct: float
    p90_abs_error_pct: float
    max_abs_error_pct: float


class Provenance(ConfigModel):
    """Where the factors come from."""

    date: str = Field(..., description="UTC date and time of the measurement")
    host: dict = Field(..., description="the machine: label, cpu_model, cores, isa (edgevit.profiling.host)")
    runtime: str = Field("onnxruntime", description="the runtime measured")
    runtime_version: str
    latency: Literal["wall_ms", "quiet_ms", "cpu_ms"] = Field(
        "wall_ms", description="the measured figure fitted: wall_ms (median of pass medians), quiet_ms (median of "
                               "per-pass minima) or cpu_ms (CPU time of the one thread running every kernel)")
    threads: int = Field(..., ge=1, description="intra-op threads of the measured sessions")
    fit_models: list[str] = Field(..., min_length=1)
    versions: dict = Field(default_factory=dict, description="library versions (edgevit.versions)")
    method: str = Field("", description="how the measurements were taken")
    load_average: list[float] = Field(default_factory=list, description="1-minute load average before and after "
                                                                        "the measurement: how busy the machine was")
    command: str = Field("", description="the command that produced the file")


class Reference(ConfigModel):
    """The profile numbers the efficiencies are fractions of (the host's bandwidth is measured anew in every
    process, and varies with load: predictions rescale the factors so that the achieved rates stay the fitted ones)."""

    peak_ops_s: float = Field(..., gt=0, description="peak ops/s of the fitted dtype when fitted")
    bandwidth_bytes_s: float = Field(..., gt=0, description="memory bandwidth in bytes/s when fitted")
    peak_source: str = ""
    bandwidth_source: str = ""


class Calibration(ConfigModel):
    """Fitted factors for one machine, runtime and dtype (a ``hardware_profiles/fitted/*.json`` file)."""

    format_version: Literal[1] = 1
    target: Literal["host"] = "host"
    dtype: str = "fp32"
    efficiency: dict[str, ClassFactor] = Field(..., description="per op class (edgevit.profiling.roofline.CLASSES)")
    node_overhead_us: float = Field(..., ge=0, description="fixed time per node that does work")
    reference: Reference
    provenance: Provenance
    fit_error: Evaluation | None = Field(None, description="in-sample error on the fitting models")
    evaluation: Evaluation | None = Field(None, description="error on held-out models")

    def class_efficiency(self, profile: HardwareProfile) -> dict[str, dict[str, float]]:
        """The factors as fractions of ``profile``'s peak and bandwidth: rescaled from :attr:`reference` so that
        every class keeps the achieved ops/s and bytes/s that were fitted."""
        sc = self.reference.peak_ops_s / profile.peak_ops(self.dtype)
        bw = profile.bandwidth()
        sm = self.reference.bandwidth_bytes_s / bw if bw else 1.0
        return {k: {"compute": v.compute * sc, "memory": v.memory * sm} for k, v in self.efficiency.items()}

    def matches(self, host: HardwareProfile) -> tuple[bool, str]:
        """Whether these factors were measured on ``host`` (same CPU model and core count), and why not."""
        cpu = getattr(host, "cpu_model", None)
        cores = host.facts.get("cores").value if "cores" in host.facts else None
        want_cpu, want_cores = self.provenance.host.get("cpu_model"), self.provenance.host.get("cores")
        if cpu != want_cpu or (cores is not None and want_cores is not None and int(cores) != int(want_cores)):
            return False, (f"fitted on {want_cpu} with {want_cores} cores, this machine is {cpu} with "
                           f"{int(cores) if cores else '?'} cores")
        return True, ""

    def expected_error(self) -> tuple[float | None, str]:
        ev, p = self.evaluation, self.provenance
        if ev is None:
            return None, (f"unknown: factors fitted on {', '.join(p.fit_models)} ({p.date[:10]}) but not tested "
                          "on other models")
        return ev.median_abs_error_pct, (
            f"median |error| {ev.median_abs_error_pct:.0f}% (p90 {ev.p90_abs_error_pct:.0f}%, max "
            f"{ev.max_abs_error_pct:.0f}%) over {len(ev.models)} models not used in fitting, {p.runtime} "
            f"{p.runtime_version} CPU, {p.threads} thread{'s' if p.threads != 1 else ''}, measured {p.date[:10]} "
            f"({LATENCY_KEYS[p.latency]})")

    def save(self, path: str | Path) -> Path:
        from ..artifact import write_json

        path = Path(path)
        write_json(path, self.model_dump())
        return path


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; :class:`ConfigError` names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration file {path} does not exist (write one with benchmarks/predictor_fit.py)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        cal = Calibration(**doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(cal.efficiency) - set(CLASSES)
    if unknown:
        raise ConfigError(f"{path}: unknown op class(es) {', '.join(sorted(unknown))}; allowed: {', '.join(CLASSES)}")
    return cal


def find_calibration(host: HardwareProfile, directory: Path = CALIBRATION_DIR,
                     dtype: str = "fp32") -> tuple[Calibration | None, str]:
    """The calibration file in ``directory`` fitted on this host (CPU model and cores) for ``dtype``, newest first;
    ``(None, reason)`` when there is none."""
    seen = []
    for f in sorted(Path(directory).glob("*.json")) if Path(directory).is_dir() else []:
        try:
            cal = load_calibration(f)
        except ConfigError as exc:
            log.warning("skipping calibration file: %s", exc)
            continue
        ok, why = cal.matches(host)
        if ok and cal.dtype == dtype:
            seen.append((cal.provenance.date, cal, f))
        elif not ok:
            log.debug("calibration %s not for this host: %s", f.name, why)
    if not seen:
        return None, (f"no fitted factors for this CPU ({getattr(host, 'cpu_model', None)}) and {dtype} in "
                      f"{directory}: run benchmarks/predictor_fit.py to fit them")
    _, cal, f = max(seen, key=lambda t: t[0])
    return cal, str(f)


# ----------------------------------------------------------------------------------------------------- predict


def predict(path: str | Path, targets: Sequence[str] = (HOST_NAME,), dtypes: Sequence[str] = ("fp32",), *,
            calibration: Calibration | str | Path | None = None, mode: str | None = None,
            measured_ms: float | None = None) -> list[dict]:
    """One predicted row per target × dtype for the ONNX model at ``path`` (batch 1).

    ``host`` uses the fitted factors (``calibration``: a :class:`Calibration`, a file, or None to look for this
    machine's in :data:`CALIBRATION_DIR`) for the dtype they were fitted on; every other row is the datasheet
    roofline (efficiency 1.0). Rows hold the :func:`~edgevit.profiling.roofline.predict_onnx_latency` fields plus
    ``target``, ``calibrated``, ``expected_error_pct`` (None = untested) and ``expected_error`` (host rows also
    ``target_label``, the detected CPU); a target × dtype the device cannot run (no peak for the dtype) gives a row
    with ``latency_ms`` None and ``error`` saying why. ``measured_ms`` (this machine's measured median of the file)
    adds ``measured_ms`` and ``error_pct`` to the host fp32 row. Raises :class:`ConfigError` for an unknown target
    or mode, or a missing file.
    """
    from .macs import onnx_cost

    if not targets or not dtypes:
        raise ConfigError("predict needs at least one target and one dtype")
    cost = onnx_cost(path)
    cal_file = None
    if isinstance(calibration, (str, Path)):
        cal_file, calibration = str(calibration), load_calibration(calibration)
    rows = []
    for target in dict.fromkeys(targets):
        prof = load_profile(target)
        is_host = target == HOST_NAME
        cal, why = (calibration if is_host else None), ""
        if is_host and cal is None:
            cal, found = find_calibration(prof)
            cal_file, why = (found, "") if cal is not None else (None, found)
        elif is_host:
            ok, reason = cal.matches(prof)
            if not ok:
                log.warning("calibration %s is for another machine (%s); using it anyway as asked",
                            cal_file or "given", reason)
                why = f"factors from another machine ({reason}): error on this one untested"
        for dtype in dict.fromkeys(dtypes):
            rows.append(_row(path, prof, target, dtype, cost, cal, cal_file, why, mode, measured_ms))
    return rows


def _row(path, prof: HardwareProfile, target: str, dtype: str, cost: dict, cal: Calibration | None,
         cal_file: str | None, why: str, mode: str | None, measured_ms: float | None) -> dict:
    is_host = target == HOST_NAME
    use = cal is not None and cal.dtype == dtype
    measured = measured_ms if is_host and dtype == "fp32" else None
    fitted = ({"class_efficiency": cal.class_efficiency(prof), "node_overhead_s": cal.node_overhead_us * 1e-6}
              if use else {})
    try:
        r = predict_onnx_latency(path, prof, dtype, mode=mode, cost=cost, measured_ms=measured, **fitted)
    except ConfigError as exc:
        if f"for dtype '{dtype}'" not in str(exc) and f"no {dtype} compute" not in str(exc):
            raise
        r = {"prediction": True, "profile": prof.name, "dtype": dtype, "latency_ms": None, "bound": None,
             "time_by_bound_ms": None, "ms_by_class": None, "error": str(exc)}
    r["target"], r["calibrated"] = target, use
    if is_host:
        r["target_label"], r["cpu_model"] = getattr(prof, "label", prof.title), getattr(prof, "cpu_model", None)
    r["expected_error_pct"] = None
    if r["latency_ms"] is None:
        r["expected_error"] = "no prediction"
    elif use and why:
        r["expected_error"] = why
    elif use:
        r["expected_error_pct"], r["expected_error"] = cal.expected_error()
    elif is_host:
        r["expected_error"] = (f"unknown: factors fitted for {cal.dtype} only; datasheet roofline for {dtype} "
                               "(a floor)" if cal is not None else
                               f"unknown: {why or 'no fitted factors'}; datasheet roofline (a floor)")
    else:
        r["expected_error"] = ("unknown: untested on this target (no measurements there); datasheet roofline at "
                               "efficiency 1.0, a floor: real runtimes are slower")
    if use and measured is not None and r["latency_ms"] is not None:
        p = cal.provenance
        r["notes"].append(f"error_pct compares with factors fitted for {p.runtime} with {p.threads} thread"
                          f"{'s' if p.threads != 1 else ''} ({LATENCY_KEYS[p.latency]}): a measurement with another "
                          "thread count, or on a loaded machine, differs by more than the stated error")
    if use:
        r["calibration"] = {"file": cal_file, "date": cal.provenance.date, "fit_models": cal.provenance.fit_models,
                            "runtime": f"{cal.provenance.runtime} {cal.provenance.runtime_version}",
                            "threads": cal.provenance.threads}
    return r


# --------------------------------------------------------------------------------------------------------- fit


def node_terms(path: str | Path, profile: HardwareProfile | str, dtype: str = "fp32") -> dict:
    """Per node that does work: name, op class (:func:`~edgevit.profiling.roofline.classify_nodes`), compute and
    memory terms at peak (seconds, efficiency 1). Returns ``{"names", "classes", "compute_s", "memory_s",
    "classes_by_name"}`` (the last for every node, views included)."""
    from .macs import onnx_cost

    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    peak, bw = prof.peak_ops(dtype), prof.bandwidth()
    if bw is None:
        raise ConfigError(f"profile {prof.name} has no memory bandwidth: cannot fit memory efficiencies")
    nodes = onnx_cost(path)["nodes"]
    classes = classify_nodes(nodes)
    keep = [(n, c) for n, c in zip(nodes, classes) if c != "view"]
    return {"names": [n["name"] for n, _ in keep], "classes": [c for _, c in keep],
            "compute_s": np.array([2.0 * n["macs"] / peak for n, _ in keep]),
            "memory_s": np.array([n["bytes"] / bw for n, _ in keep]),
            "classes_by_name": {n["name"]: c for n, c in zip(nodes, classes)}}


def measured_class_ms(measurement: Mapping, terms: Mapping) -> dict[str, float]:
    """A measurement's kernel time per op class, with kernels named like a node of the file in that node's class
    (:func:`~edgevit.profiling.ort_nodes.class_times_ms`); ``class_ms`` as stored when it has no ``kernels``."""
    from .ort_nodes import class_times_ms

    if measurement.get("kernels"):
        return class_times_ms(measurement["kernels"], terms["classes_by_name"])
    return dict(measurement["class_ms"])


def _nnls(a: np.ndarray, b: np.ndarray, iterations: int = 500) -> np.ndarray:
    """min ‖a·x − b‖ subject to x ≥ 0 (Lawson and Hanson's active-set method, "Solving Least Squares Problems",
    1974, ch. 23), on unit-norm columns."""
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    a = a / norms
    n = a.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    tol = 1e-10 * max(1.0, float(np.abs(b).max(initial=0.0)))
    for _ in range(iterations):
        w = a.T @ (b - a @ x)
        if passive.all() or w[~passive].max(initial=-np.inf) <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                break
            neg = passive & (z <= 0)
            alpha = float(np.min(x[neg] / (x[neg] - z[neg])))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
        x = z
    return x / norms


def _fit(data: list, k: int, weight_total: float, rounds: int = 30) -> tuple[np.ndarray, np.ndarray, float]:
    """Inverse efficiencies (1/e_c, 1/e_m per class) and the per-node overhead by least squares.

    With each node's side of the roofline fixed, the predicted class time Σ C·(1/e_c) + Σ M·(1/e_m) + n·o is
    linear in the unknowns: non-negative least squares (inverse efficiencies ≥ 0.01, i.e. e ≤ 100) over every
    (model, class) row and every model total, then each node takes the side that is larger with the new factors;
    repeated until no node changes side. Returns the efficiencies of the best round by the true (max) model."""
    lower = np.r_[np.full(2 * k, 0.01), 0.0]

    def rows(side_c):
        mat, rhs = [], []
        for (idx, c, m, counts, target, wall), on_c in zip(data, side_c):
            block = np.zeros((k, 2 * k + 1))
            np.add.at(block, (idx, idx), np.where(on_c, c, 0.0))
            np.add.at(block, (idx, k + idx), np.where(on_c, 0.0, m))
            block[:, -1] = counts
            mat += [block / wall, math.sqrt(weight_total) * block.sum(axis=0, keepdims=True) / wall]
            rhs += [target / wall, [math.sqrt(weight_total)]]
        return np.vstack(mat), np.concatenate(rhs)

    def loss(x):
        total = 0.0
        for idx, c, m, counts, target, wall in data:
            pred = np.bincount(idx, weights=np.maximum(c * x[idx], m * x[k + idx]), minlength=k) + counts * x[-1]
            total += float(np.sum(((pred - target) / wall) ** 2)) + weight_total * ((pred.sum() - wall) / wall) ** 2
        return total

    side = [c >= m for _, c, m, *_ in data]  # the datasheet roofline's sides to start
    best, best_x = math.inf, np.r_[np.ones(2 * k), 0.0]
    for _ in range(rounds):
        mat, rhs = rows(side)
        x = lower + _nnls(mat, rhs - mat @ lower)
        unused = ~mat[:, :-1].any(axis=0)  # a side no node is on: efficiency 1
        x[:-1][unused] = 1.0
        val = loss(x)
        if val < best:
            best, best_x = val, x
        new = [c * x[idx] >= m * x[k + idx] for idx, c, m, *_ in data]
        if all(np.array_equal(a, b) for a, b in zip(new, side)):
            break
        side = new
    return 1.0 / best_x[:k], 1.0 / best_x[k:2 * k], float(best_x[-1])


def fit_calibration(measurements: Mapping[str, dict], paths: Mapping[str, str | Path],
                    profile: HardwareProfile | str = HOST_NAME, *, dtype: str = "fp32", threads: int,
                    weight_total: float = 4.0, command: str = "",
                    method: str = "", latency_key: str = "wall_ms") -> Calibration:
    """Fit per-class efficiencies and the per-node overhead to ``measurements`` (``{model: {"wall_ms",
    "kernels"}}`` as :func:`~edgevit.profiling.ort_nodes.measure_interleaved` returns) of the ONNX files
    ``paths`` (same keys), on ``profile``'s peaks and bandwidth. Classes absent from the fitting models are left
    out of the file (their nodes use efficiency 1.0, with a note). ``latency_key``: the measured latency fitted
    (:data:`LATENCY_KEYS`: ``wall_ms``, the median; ``quiet_ms``, the median of per-pass minima; ``cpu_ms``, CPU
    time with one thread); ``weight_total``: the weight of
    each model's total against its per-class rows. A class side that no node exercises (no compute-bound
    normalisation node, say) keeps efficiency 1.0. Returns a :class:`Calibration` with its in-sample ``fit_error``;
    ``evaluation`` (held-out) is for :func:`evaluate` to fill in."""
    import onnxruntime

    from ..versions import library_versions

    names = [n for n in measurements if n in paths]
    if not names:
        raise ConfigError("fit_calibration: no model has both a measurement and an ONNX file")
    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    terms = {n: node_terms(paths[n], prof, dtype) for n in names}
    present = [c for c in CLASSES if any(c in terms[n]["classes"] for n in names)]
    k_of = {c: i for i, c in enumerate(present)}
    data = []
    for n in names:
        t = terms[n]
        idx = np.array([k_of[c] for c in t["classes"]], dtype=np.int64)
        counts = np.bincount(idx, minlength=len(present)).astype(np.float64)
        wall = measurements[n][latency_key] * 1e-3
        cls_ms = measured_class_ms(measurements[n], t)
        measured = np.array([cls_ms.get(c, 0.0) * 1e-3 for c in present])
        # the profiled runs give the split over classes, the plain runs the level: kernel times above the wall
        # time (the profiler's cost, a busier moment) are scaled down; the time between kernels (framework
        # overhead, views) is shared out by node count, as the per-node overhead would be
        measured *= min(1.0, wall / measured.sum()) if measured.sum() > 0 else 1.0
        gap = wall - measured.sum()
        target = measured + gap * counts / max(1.0, counts.sum())
        data.append((idx, t["compute_s"], t["memory_s"], counts, target, wall))

    ec, em, overhead = _fit(data, len(present), weight_total)
    from .host import HostProfile

    host = ({"label": prof.label, "cpu_model": prof.cpu_model, "cores": prof.facts["cores"].value, "isa": prof.isa}
            if isinstance(prof, HostProfile) else {"label": prof.title, "cpu_model": prof.title, "cores": None,
                                                    "isa": []})
    cal = Calibration(
        dtype=dtype,
        efficiency={c: ClassFactor(compute=round(float(ec[i]), 5), memory=round(float(em[i]), 5))
                    for i, c in enumerate(present)},
        node_overhead_us=round(overhead * 1e6, 4),
        reference=Reference(peak_ops_s=prof.peak_ops(dtype), bandwidth_bytes_s=prof.bandwidth(),
                            peak_source=prof.peak(dtype).source, bandwidth_source=prof.mode().memory_bandwidth.source),
        provenance=Provenance(date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), host=host,
                              runtime="onnxruntime", runtime_version=onnxruntime.__version__, threads=threads,
                              fit_models=names, versions=library_versions(), method=method, command=command,
                              latency=latency_key,
                              load_average=sorted({v for n in names for v in measurements[n].get("load_avg") or []
                                                   if v is not None})),
    )
    cal.fit_error = evaluate(cal, {n: measurements[n][latency_key] for n in names}, paths, prof)
    return cal


def evaluate(cal: Calibration, measured_ms: Mapping[str, float], paths: Mapping[str, str | Path],
             profile: HardwareProfile | str = HOST_NAME) -> Evaluation:
    """Predicted (with ``cal``) vs measured batch-1 latency per model: signed errors and the median / p90 / max
    absolute error in %."""
    if not measured_ms:
        raise ConfigError("evaluate: no measured models")
    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    rows = []
    for n, meas in measured_ms.items():
        r = predict_onnx_latency(paths[n], prof, cal.dtype, class_efficiency=cal.class_efficiency(prof),
                                 node_overhead_s=cal.node_overhead_us * 1e-6, measured_ms=meas)
        rows.append(ModelError(model=n, predicted_ms=round(r["latency_ms"], 6), measured_ms=round(meas, 6),
                               error_pct=round(r["error_pct"], 2)))
    abs_err = np.abs([r.error_pct for r in rows])
    return Evaluation(models=rows, median_abs_error_pct=round(float(np.median(abs_err)), 2),
                      p90_abs_error_pct=round(float(np.percentile(abs_err, 90)), 2),
                      max_abs_error_pct=round(float(abs_err.max()), 2))


__all__ = ["CALIBRATION_DIR", "Calibration", "ClassFactor", "Evaluation", "evaluate",
           "find_calibration", "fit_calibration", "load_calibration", "node_terms", "predict"]
