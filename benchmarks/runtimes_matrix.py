#!/usr/bin/env python
"""Every runtime installable here, one run: ``fmnist-vit`` and ``deit_tiny_patch16_224`` (224×224) at batch 1 and 8.

Runtimes: torch eager, ONNX Runtime, OpenVINO f32 and bf16, ONNX Runtime on the mobile ``.ort`` format, TVM untuned
(and tuned with ``--tvm-trials N``). Median and p90 per runtime × batch with the ratio to torch eager.

    python benchmarks/runtimes_matrix.py                          # JSON to benchmarks/results/runtimes_matrix.json
    python benchmarks/runtimes_matrix.py --tvm-trials 2000        # adds tuned TVM (tuning takes tens of minutes)
    python benchmarks/runtimes_matrix.py --models fmnist-vit --duration 0.3   # smoke run

Weights do not change latency (DeiT-Tiny is randomly initialised); inputs are real Fashion-MNIST test images
preprocessed to each model's spec. Slow runtimes (untuned TVM) get fewer runs: the JSON records each count.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_anchors import build_model, real_inputs

from edgevit.artifact import Artifact, write_json
from edgevit.profiling import profile_runtime, system_stamp

log = logging.getLogger("runtimes_matrix")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "runtimes_matrix.json"
VARIANTS = ("torch", "onnxruntime", "openvino-f32", "openvino-bf16", "ort-mobile", "tvm-untuned", "tvm-tuned")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["fmnist-vit", "deit_tiny_patch16_224"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "tvm-tuned"], choices=VARIANTS)
    ap.add_argument("--tvm-trials", type=int, default=0, help="MetaSchedule trials for tvm-tuned (0: leave it out)")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    variants = list(args.variants) + (["tvm-tuned"] if args.tvm_trials and "tvm-tuned" not in args.variants else [])

    from edgevit.formats.onnx.export import export_onnx
    from edgevit.formats.openvino.export import export_openvino
    from edgevit.formats.ort_mobile.export import export_ort_mobile
    from edgevit.formats.tvm.export import export_tvm
    from edgevit.runtimes import load_runtime, open_artifact

    rows, exports, prepared = [], [], {}
    with tempfile.TemporaryDirectory(prefix="edgevit-matrix-") as tmp:
        tmp = Path(tmp)
        for name in args.models:
            model, weights = build_model(name)
            spec = model.edgevit_spec
            inputs = real_inputs(spec, max(args.batch))
            d = tmp / name
            onnx_rec = export_onnx(model, d / "model.onnx", parity_images=inputs).to_dict()
            exports.append({"model": name, "format": "onnx", **{k: onnx_rec.get(k) for k in ("max_abs_diff", "top1_agreement")}})
            arts = {"torch": Artifact(kind="torch", spec=spec, model=model, source=name),
                    "onnx": open_artifact(onnx_rec["path"])}
            if any(v.startswith("openvino") for v in variants):
                ov = export_openvino(model, d / "ov", precision="fp32", parity_images=inputs).to_dict()
                exports.append({"model": name, "format": "openvino", "max_abs_diff": ov.get("max_abs_diff"),
                                "top1_agreement": ov.get("top1_agreement")})
                arts["openvino"] = open_artifact(ov["path"])
            if "ort-mobile" in variants:
                ort = export_ort_mobile(onnx_rec["path"], d / "mobile", torch_model=model, parity_images=inputs).to_dict()
                exports.append({"model": name, "format": "ort", "max_abs_diff": ort.get("max_abs_diff"),
                                "top1_agreement": ort.get("top1_agreement")})
                arts["ort"] = open_artifact(ort["path"])

            def measure(variant, art, runtime_name, batches, slow=False, name=name, weights=weights, inputs=inputs,
                        **opts):
                rt = load_runtime(runtime_name, art, threads=args.threads, **opts)
                res = profile_runtime(rt, batch_sizes=tuple(batches), warmup_s=args.warmup, duration_s=args.duration,
                                      min_runs=3 if slow else 10, min_warmup=1 if slow else 5, inputs=inputs)
                for r in res:
                    r.update(model=name, variant=variant, weights=weights)
                    r.pop("system", None)
                rows.extend(res)
                rt.close()

            prepared[name] = (model, weights, inputs, arts, d, measure)

        # variant-major, TVM last: TVM's thread pool stays alive (spinning) in this process once created and would
        # slow down every runtime measured after it
        for v in sorted(variants, key=lambda v: v.startswith("tvm")):
            for name in args.models:
                model, weights, inputs, arts, d, measure = prepared[name]
                t0 = time.perf_counter()
                if v == "torch":
                    measure(v, arts["torch"], "torch", args.batch)
                elif v == "onnxruntime":
                    measure(v, arts["onnx"], "onnxruntime", args.batch)
                elif v == "openvino-f32":
                    measure(v, arts["openvino"], "openvino", args.batch, precision="f32")
                elif v == "openvino-bf16":
                    measure(v, arts["openvino"], "openvino", args.batch, precision="bf16")
                elif v == "ort-mobile":
                    measure(v, arts["ort"], "onnxruntime", args.batch)
                elif v.startswith("tvm"):
                    trials = args.tvm_trials if v == "tvm-tuned" else 0
                    for b in args.batch:  # TVM compiles one static batch per library
                        rec = export_tvm(model, d / f"{v}-b{b}", target="llvm", trials=trials, batch=b,
                                         parity_images=inputs).to_dict()
                        exports.append({"model": name, "format": f"{v}-b{b}", "max_abs_diff": rec.get("max_abs_diff"),
                                        "top1_agreement": rec.get("top1_agreement"), "seconds": rec.get("time_s"),
                                        "tuning": rec.get("tuning")})
                        measure(v, open_artifact(rec["path"]), "tvm", [b], slow=(trials == 0))
                log.warning("%s %s done in %.0f s", name, v, time.perf_counter() - t0)

    base = {(r["model"], r["batch"]): r["median_ms"] for r in rows if r["variant"] == "torch"}
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        r["vs_torch"] = r["median_ms"] / b if b else None
    cols = [("model", "model"), ("variant", "runtime"), ("batch", "batch"), ("median_ms", "median ms"),
            ("p90_ms", "p90 ms"), ("runs", "runs"), ("throughput", "img/s"), ("vs_torch", "÷ torch eager")]
    from edgevit.profiling.tables import markdown_table

    print(markdown_table(rows, cols))
    print()
    print(markdown_table(exports, [("model", "model"), ("format", "export"), ("max_abs_diff", "max |Δ| vs torch"),
                                   ("top1_agreement", "top-1 agreement")]))
    write_json(args.json, {"benchmark": "runtimes_matrix", "system": system_stamp(args.threads),
                           "settings": vars(args) | {"json": str(args.json)}, "results": rows, "exports": exports})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
