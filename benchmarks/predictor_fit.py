#!/usr/bin/env python
"""Fit the latency predictor's per-op-class efficiencies and per-node overhead on a few timm architectures, and test
it on ten others that were not used in fitting (issue 15, part 5): predicted vs measured batch-1 latency on this
machine (onnxruntime CPU, 2 threads, 224×224, random weights: latency does not depend on them).

    python benchmarks/predictor_fit.py                      # export (once) → measure → fit → test → write
    python benchmarks/predictor_fit.py --passes 3 --runs 5  # quicker, noisier
    python benchmarks/predictor_fit.py --no-save            # do not write the calibration file
    python benchmarks/predictor_fit.py --from-json benchmarks/results/predictor_fit.json --estimator quiet --no-save
                                                            # refit the stored measurements, another estimator

ONNX files are exported once into runs/predictor/ (git-ignored) and reused. All models are measured against each
other in rotating passes (the machine is shared): wall time = median of the per-pass medians of plain runs;
per-node times from onnxruntime's profiler in separate, profiled runs. Writes the table to stdout, the JSON to
benchmarks/results/predictor_fit.json and the fitted factors, with their provenance and held-out error, to
hardware_profiles/fitted/<cpu>-<cores>c-onnxruntime-<threads>t-fp32.json (the file `edgevit predict --target host`
loads; with several for this CPU, the newest).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIT = ("vit_tiny_patch16_224", "resnet18", "mobilenetv3_large_100", "convnext_atto", "levit_128s")
TEST = ("deit_small_patch16_224", "efficientvit_b0", "mobilevit_xs", "tiny_vit_5m_224", "regnety_004",
        "edgenext_xx_small", "fastvit_t8", "efficientformer_l1", "efficientnet_b0", "pvt_v2_b0")
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "predictor_fit.json"

log = logging.getLogger("predictor_fit")


def export(names, onnx_dir: Path) -> dict[str, Path]:
    """Each timm model (random weights, 224×224) exported once to ``onnx_dir/<name>.onnx`` (static batch 1)."""
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.models import create

    onnx_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in names:
        path = onnx_dir / f"{n}.onnx"
        if not path.exists():
            t0 = time.perf_counter()
            export_onnx(create(n, pretrained=False), path, parity=False, dynamic_batch=False)
            log.info("exported %s in %.1f s", n, time.perf_counter() - t0)
        out[n] = path
    return out


def _relative(path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def calibration_name(host, threads: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (host.cpu_model or "unknown-cpu").lower()).strip("-")
    return f"{slug}-{int(host.facts['cores'].value or 0)}c-onnxruntime-{threads}t-fp32.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", nargs="+", default=list(FIT), help="timm models to fit on")
    ap.add_argument("--test", nargs="+", default=list(TEST), help="timm models to test on (not in --fit)")
    ap.add_argument("--onnx-dir", type=Path, default=ROOT / "runs" / "predictor")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=8, help="interleaved passes over all models (default 8)")
    ap.add_argument("--runs", type=int, default=6, help="timed runs per model per pass (default 6)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--estimator", choices=["median", "quiet", "cpu"], default="median",
                    help="the measured latency to fit and test against: median = median of pass medians (default; "
                         "what the machine does under the load of the moment), quiet = median over passes of each "
                         "pass's fastest run (closer to what it does when no other tenant interferes), cpu = CPU "
                         "time of the single thread that runs every kernel (--threads 1 only: the latency without "
                         "the time spent waiting for a core, so robust to other tenants)")
    ap.add_argument("--no-save", action="store_true", help="do not write hardware_profiles/fitted/*.json")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="refit from the measurements stored in this results JSON (same ONNX files), no measuring")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overlap = set(args.fit) & set(args.test)
    if overlap:
        ap.error(f"models both fitted and tested: {', '.join(sorted(overlap))}")
    if args.estimator == "cpu" and args.threads != 1:
        ap.error("--estimator cpu needs --threads 1 (with a thread pool, CPU time is the work, not a latency)")

    from edgevit.artifact import write_json
    from edgevit.profiling.hardware import load_profile
    from edgevit.profiling.macs import onnx_cost
    from edgevit.profiling.ort_nodes import measure_interleaved
    from edgevit.profiling.predictor import CALIBRATION_DIR, evaluate, fit_calibration
    from edgevit.profiling.roofline import predict_onnx_latency
    from edgevit.profiling.system import system_stamp
    from edgevit.profiling.tables import markdown_table

    t0 = time.perf_counter()
    paths = export([*args.fit, *args.test], args.onnx_dir)
    t_export = time.perf_counter() - t0
    host = load_profile("host")
    if args.from_json:
        import json

        stored = json.loads(args.from_json.read_text())
        meas, method = stored["measurements"], stored["method"]
        missing = [n for n in paths if n not in meas]
        if missing:
            ap.error(f"{args.from_json} has no measurements of {', '.join(missing)}")
        log.info("refitting from the measurements in %s (%s)", args.from_json, method)
    else:
        log.info("measuring %d models on %s: %d passes × %d runs, %d threads", len(paths), host.label, args.passes,
                 args.runs, args.threads)
        meas = measure_interleaved(paths, threads=args.threads, passes=args.passes, runs=args.runs,
                                   progress=lambda i, n: log.info("measured %d/%d", i, n) if i % len(paths) == 0
                                   else None)
        method = (f"onnxruntime CPU, {args.threads} intra-op threads (worker spinning off), batch 1, 224×224 random "
                  f"weights and inputs; {args.passes} interleaved passes × {args.runs} runs; wall = median of pass "
                  "medians; class split = per-node kernel times of onnxruntime's profiler (separate, profiled runs), "
                  "median over runs")
    t_measure = time.perf_counter() - t0 - t_export
    command = "python benchmarks/predictor_fit.py " + " ".join(argv if argv is not None else sys.argv[1:])
    key = {"quiet": "quiet_ms", "median": "wall_ms", "cpu": "cpu_ms"}[args.estimator]
    cal = fit_calibration({n: meas[n] for n in args.fit}, paths, host, threads=args.threads,
                          command=command.strip(), method=method, latency_key=key)
    cal.evaluation = evaluate(cal, {n: meas[n][key] for n in args.test}, paths, host)

    rows = []
    for role, ev in (("fit", cal.fit_error), ("test", cal.evaluation)):
        for e in ev.models:
            floor = predict_onnx_latency(paths[e.model], host, "fp32")["latency_ms"]
            rows.append({"model": e.model, "role": role, "gmacs": onnx_cost(paths[e.model])["macs"] / 1e9,
                         "median_ms": meas[e.model]["wall_ms"], "spread_pct": meas[e.model]["spread_pct"],
                         "quiet_ms": meas[e.model]["quiet_ms"], "cpu_ms": meas[e.model].get("cpu_ms"),
                         "measured_ms": e.measured_ms,
                         "predicted_ms": e.predicted_ms, "error_pct": e.error_pct,
                         "datasheet_ms": floor, "datasheet_error_pct": (floor - e.measured_ms) / e.measured_ms * 100})
    cols = [("model", "model"), ("role", "role"), ("gmacs", "GMACs"), ("median_ms", "median ms"),
            ("spread_pct", "pass spread %"), ("quiet_ms", "quiet ms"), ("cpu_ms", "CPU ms"),
            ("predicted_ms", "predicted ms"),
            ("error_pct", f"error % vs {args.estimator}"),
            ("datasheet_ms", "roofline e=1 ms"), ("datasheet_error_pct", f"roofline e=1 error % vs {args.estimator}")]
    print(markdown_table(rows, cols))
    ev = cal.evaluation
    print(f"\nestimator {args.estimator}; held-out ({len(ev.models)} models): median |error| {ev.median_abs_error_pct:.1f}%, p90 "
          f"{ev.p90_abs_error_pct:.1f}%, max {ev.max_abs_error_pct:.1f}%; in-sample ({len(cal.fit_error.models)} "
          f"models): median |error| {cal.fit_error.median_abs_error_pct:.1f}%")
    print(markdown_table([{"class": k, "compute": v.compute, "memory": v.memory} for k, v in cal.efficiency.items()],
                         ["class", ("compute", "compute efficiency"), ("memory", "memory efficiency")]))
    print(f"per-node overhead {cal.node_overhead_us:.2f} us; host {host.label}; export {t_export:.0f} s, "
          f"measurement {t_measure:.0f} s")
    saved = None
    if not args.no_save:
        saved = cal.save(CALIBRATION_DIR / calibration_name(host, args.threads))
        print(f"wrote {saved}")
    for m in meas.values():  # paths relative to the repository: no machine paths in the results
        m["path"] = _relative(m["path"])
    write_json(args.json, {"method": method, "estimator": args.estimator, "rows": rows, "calibration": cal.model_dump(),
                           "calibration_file": _relative(saved) if saved else None,
                           "measurements": meas, "host": host.to_dict(), "system": system_stamp(threads=args.threads),
                           "seconds": {"export": t_export, "measure": t_measure}})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
