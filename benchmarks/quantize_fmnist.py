#!/usr/bin/env python
"""INT8 vs FP32 on the shipped teacher ``fmnist-vit``: top-1 on the full Fashion-MNIST test set and batch-1 latency
per runtime, for each quantisation backend (issue: INT8 post-training quantisation, benchmark 1; target ≤ 0.5 pt).

    python benchmarks/quantize_fmnist.py --threads 2                # full: 10k test images, 300 calibration images
    python benchmarks/quantize_fmnist.py --quick                    # smoke run: 500 test images, 64 calibration images

Each backend runs edgevit.methods.quantize.quantize with the budget given (default 0.5 pt): the default guardrails, the
attempt ladder when the first attempt misses the budget, and the speed gate. Accuracy is measured through the
quantised artefact's own runtime; latency with edgevit.profile (batch 1, real images). JSON:
benchmarks/results/quantize_fmnist.json (every attempt, the sensitivity pass, the full latency rows).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from edgevit.artifact import write_json
from edgevit.profiling.tables import markdown_table

log = logging.getLogger("quantize_fmnist")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "quantize_fmnist.json"
COLS = [("backend", "backend"), ("runtime", "runtime"), ("top1_fp32", "FP32 top-1 %"), ("top1_int8", "INT8 top-1 %"),
        ("drop_pt", "drop pt"), ("fp32_ms", "FP32 ms"), ("int8_ms", "INT8 ms"), ("speedup", "speed-up"),
        ("fp32_mb", "FP32 MB"), ("int8_mb", "INT8 MB"), ("attempts", "attempts"), ("kept", "kept")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fmnist-vit")
    ap.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime", "nncf-onnx"])
    ap.add_argument("--budget", type=float, default=0.5, help="top-1 drop allowed, points (default 0.5)")
    ap.add_argument("--calib-samples", type=int, default=300)
    ap.add_argument("--eval-limit", type=int, default=None, help="default: the full 10k test set")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of timed batch-1 runs per measurement")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 500 test images, 64 calibration images, 0.3 s")
    ap.add_argument("--out", type=Path, default=None, help="keep the artefacts here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.eval_limit, args.calib_samples, args.duration = args.eval_limit or 500, 64, 0.3

    from edgevit.errors import QuantizationError
    from edgevit.methods.quantize import QuantizeConfig, backend_available, quantize
    from edgevit.models import create
    from edgevit.profiling import system_stamp

    rows, records = [], {}
    with tempfile.TemporaryDirectory(prefix="edgevit-qbench-") as tmp:
        root = args.out or Path(tmp)
        for backend in args.backends:
            ok, why = backend_available(backend)
            if not ok:
                log.warning("skipping %s: %s", backend, why)
                records[backend] = {"skipped": why}
                continue
            cfg = QuantizeConfig(backend=backend, budget=args.budget, calib_samples=args.calib_samples,
                                 eval_limit=args.eval_limit, latency_s=args.duration, threads=args.threads)
            try:
                rec = quantize(create(args.model), out_dir=root / backend, config=cfg).record
            except QuantizationError as exc:
                print(f"{backend}: {exc}", file=sys.stderr)
                records[backend] = exc.record
                continue
            records[backend] = rec
            for runtime, lat in rec["latency_ms"].items():
                rows.append({"backend": backend, "runtime": runtime,
                             "top1_fp32": rec["fp32"]["top1"] * 100 if runtime == rec["primary_runtime"] else None,
                             "top1_int8": rec["int8"]["top1"] * 100 if runtime == rec["primary_runtime"] else None,
                             "drop_pt": rec["int8"]["drop_pt"] if runtime == rec["primary_runtime"] else None,
                             "fp32_ms": lat.get("fp32"), "int8_ms": lat.get("int8"), "speedup": lat.get("speedup"),
                             "fp32_mb": rec["fp32"]["file_size"] / 1e6, "int8_mb": rec["int8"]["file_size"] / 1e6,
                             "attempts": len(rec["attempts"]), "kept": rec["speed_gate"]["selected"]})
    n = next((r["int8"]["n"] for r in records.values() if "int8" in r), None)
    print(f"{args.model}: FP32 vs INT8, top-1 on {n} Fashion-MNIST test images (through the quantised artefact's "
          f"runtime), batch-1 median latency; budget {args.budget} pt")
    print(markdown_table(rows, COLS))
    gate_rows = []
    for backend, rec in records.items():
        for c in (rec.get("speed_gate") or {}).get("candidates", []):
            gate_rows.append({"backend": backend, "runtime": rec["speed_gate"]["runtime"], "variant": c["precision"],
                              "top1": c["top1"] * 100 if c.get("top1") is not None else None,
                              "drop_pt": c.get("drop_pt"), "ms": c.get("latency_ms"),
                              "kept": "yes" if c["precision"] == rec["speed_gate"]["selected"] else "",
                              "note": c.get("why_not", "")})
    if gate_rows:
        print("speed gate: every variant it compared (top-1 on the same test images, batch-1 median ms)")
        print(markdown_table(gate_rows, [("backend", "backend"), ("runtime", "runtime"), ("variant", "variant"),
                                         ("top1", "top-1 %"), ("drop_pt", "drop pt"), ("ms", "ms"),
                                         ("kept", "kept"), ("note", "not offered because")]))
    write_json(args.json, {"benchmark": "quantize_fmnist", "model": args.model, "quick": args.quick,
                           "budget": args.budget, "rows": rows, "records": records,
                           "system": system_stamp(threads=args.threads)})
    print(f"JSON: {args.json}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
