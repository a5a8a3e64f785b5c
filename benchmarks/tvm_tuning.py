#!/usr/bin/env python
"""TVM tuning benchmark: DeiT-Tiny 224, batch 1 — tuning time, and the tuned library's median latency against the
untuned library and torch eager, all measured with edgevit's profiler (specs/measurement.md).

    python benchmarks/tvm_tuning.py --trials 1200                 # the real run (~25 min of tuning on 2 cores)
    python benchmarks/tvm_tuning.py --trials 8 --duration 0.5     # smoke test of the script
    python benchmarks/tvm_tuning.py --trials 2000 --threads 2 --json /tmp/tvm.json

The tuned export uses the tuning cache (``--work-dir``, default ``$EDGEVIT_TVM_CACHE`` or ``~/.cache/edgevit/tvm``):
a second run with the same or a smaller budget reuses the database and reports ``"status": "reused"`` with the
original tuning time; a larger budget continues tuning from it; ``--retune`` starts over. The untuned library is
built with an empty, temporary cache so it is always really untuned (``--skip-untuned`` leaves it out: it takes
~1.5 s per image here, so its warm-up and runs take ~30 s). DeiT-Tiny has random weights (no hub): latency does
not depend on them. Inputs are real Fashion-MNIST test images preprocessed to 3×224×224. Run it on an otherwise
idle machine; MetaSchedule measures candidates on this CPU, so a busy CPU also makes worse schedules.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from edgevit.artifact import Artifact, write_json
from edgevit.profiling import profile_runtime, profile_table, system_stamp

log = logging.getLogger("tvm_tuning")

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "tvm_tuning.json"
MODEL = "deit_tiny_patch16_224"
TUNING_KEYS = ("status", "trials_requested", "trials_run", "trials_total", "tasks", "tasks_tuned", "records",
               "tuning_time_s", "tuning_time_s_total", "database", "key")


def real_inputs(spec, n: int):
    from edgevit.data import load_dataset, preprocess

    return preprocess(load_dataset("fashion-mnist", "test", limit=n).images, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=MODEL, help=f"edgevit or timm model (default {MODEL}, random weights)")
    ap.add_argument("--trials", type=int, default=1200, help="MetaSchedule trials for the tuned library (default 1200)")
    ap.add_argument("--target", default="llvm", help="TVM target (default llvm = this CPU)")
    ap.add_argument("--work-dir", type=Path, default=None, help="tuning cache root (default: edgevit's cache)")
    ap.add_argument("--retune", action="store_true", help="ignore a cached database")
    ap.add_argument("--tuning-timeout", type=float, default=60.0, help="seconds per candidate build/run")
    ap.add_argument("--skip-untuned", action="store_true", help="do not build or time the untuned library")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of timed runs per measurement (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up (at least 5 runs; default 1)")
    ap.add_argument("--min-runs", type=int, default=10, help="at least this many timed runs (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and the TVM runtime")
    ap.add_argument("--parity-samples", type=int, default=4, help="real images for each export's parity check")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the libraries here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from edgevit.formats.tvm.export import export_tvm
    from edgevit.models import create
    from edgevit.runtimes import load_runtime

    model = create(args.model, pretrained=False).eval()
    spec = model.edgevit_spec
    inputs = real_inputs(spec, max(8, args.parity_samples))
    exports: dict[str, dict] = {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgevit-tvm-bench-") as tmp:
        out = args.out_dir or Path(tmp)
        builds = [("tvm-tuned", args.trials, args.work_dir)]
        if not args.skip_untuned:
            builds.insert(0, ("tvm-untuned", 0, Path(tmp) / "empty-cache"))
        for label, trials, work in builds:
            print(f"[{label}] exporting {args.model} (trials={trials}) ...", flush=True)
            t0 = time.perf_counter()
            rec = export_tvm(model, out / label, target=args.target, trials=trials, work_dir=work,
                             retune=args.retune and trials > 0, tuning_timeout_s=args.tuning_timeout,
                             parity_images=inputs[:args.parity_samples]).to_dict()
            exports[label] = {"export_s": round(time.perf_counter() - t0, 1), "path": rec["path"],
                              "kept": args.out_dir is not None, "target": rec["target_description"],
                              "max_abs_diff": rec["max_abs_diff"], "top1_agreement": rec["top1_agreement"],
                              "n": rec["n"], "tuning": {k: rec["tuning"].get(k) for k in TUNING_KEYS}}
            t = exports[label]["tuning"]
            print(f"[{label}] {t['status']}: {t.get('trials_run') or 0} trials run in {t.get('tuning_time_s') or 0} s "
                  f"(database total {t.get('trials_total') or 0} trials, {t.get('tuning_time_s_total') or 0} s; "
                  f"{t.get('tasks_tuned') or 0}/{t['tasks']} tasks scheduled); max |Δ| vs torch "
                  f"{rec['max_abs_diff']:.2e}", flush=True)

        candidates = [("torch", Artifact(kind="torch", spec=spec, model=model, source=args.model,
                                         meta={"model": args.model}))]
        candidates += [(label, Artifact(kind="tvm", spec=spec, path=Path(e["path"]), source=args.model,
                                        meta={"model": args.model})) for label, e in exports.items()]
        for label, art in candidates:
            rt = load_runtime("torch" if label == "torch" else "tvm", art, threads=args.threads)
            slow = label == "tvm-untuned"
            res = profile_runtime(rt, batch_sizes=(1,), warmup_s=0.0 if slow else args.warmup,
                                  min_warmup=2 if slow else 5, runs=5 if slow else None, duration_s=args.duration,
                                  min_runs=args.min_runs, inputs=inputs)
            for r in res:
                r["runtime"] = label
                r["input_source"] = f"Fashion-MNIST test images preprocessed to {tuple(spec.input_size)}"
            rows.extend(res)
            rt.close()

    med = {r["runtime"]: r["median_ms"] for r in rows}
    stamp = rows[0]["system"] if rows else system_stamp(args.threads)
    for r in rows:
        r.pop("system", None)
        r["vs_torch"] = r["median_ms"] / med["torch"]
    print(profile_table(rows, extra_columns=[("vs_torch", "÷ torch")]))
    tuned = exports["tvm-tuned"]["tuning"]
    summary = {
        "tuning_status": tuned["status"], "trials_total": tuned.get("trials_total"),
        "tuning_time_s": tuned.get("tuning_time_s"), "tuning_time_s_total": tuned.get("tuning_time_s_total"),
        "tuned_median_ms": med.get("tvm-tuned"), "untuned_median_ms": med.get("tvm-untuned"),
        "torch_median_ms": med["torch"], "tuned_vs_torch": med["tvm-tuned"] / med["torch"],
        "tuned_vs_untuned": (med["tvm-tuned"] / med["tvm-untuned"]) if "tvm-untuned" in med else None,
    }
    print(f"tuning: {tuned['status']}, {summary['trials_total']} trials, {summary['tuning_time_s_total']} s in total "
          f"({summary['tuning_time_s']} s this run); median batch-1 latency: tuned {med['tvm-tuned']:.1f} ms, "
          + (f"untuned {med['tvm-untuned']:.1f} ms, " if "tvm-untuned" in med else "")
          + f"torch eager {med['torch']:.1f} ms (tuned/torch = {summary['tuned_vs_torch']:.2f})")
    result = {"benchmark": "tvm_tuning", "model": args.model,
              "settings": {"trials": args.trials, "target": args.target, "threads": args.threads, "batch": 1,
                           "duration_s": args.duration, "warmup_s": args.warmup, "min_runs": args.min_runs,
                           "work_dir": str(args.work_dir) if args.work_dir else None},
              "summary": summary, "system": stamp, "exports": exports, "results": rows}
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
