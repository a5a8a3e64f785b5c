"""Per-layer time of the shipped fmnist-vit, block by block, on every runtime here (issue 15, part 3).

Variants: torch (eager), ONNX Runtime FP32, OpenVINO FP32, OpenVINO bf16 (when the CPU computes bf16) and the INT8 IR
that `edgevit quantize --backend openvino` makes (its float leftovers in FP32). Each variant is timed end to end
(edgevit.profiling.profile_runtime, without a profiler) and then profiled per node
(edgevit.profiling.layers.profile_layers), in `--passes` rounds whose variant order rotates; per variant the pass with
the median node sum is reported, with the spread of the sums over the passes.

    python benchmarks/per_layer_fmnist.py [--batch 1,8] [--passes 3] [--runs 30] [--out runs/bench_per_layer]

Prints one table per batch size and writes benchmarks/results/per_layer_fmnist.json and .png.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30, help="profiled runs per variant × batch × pass")
    ap.add_argument("--duration", type=float, default=1.0, help="seconds of end-to-end timing per variant × batch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_per_layer", help="where the exports and the INT8 IR are kept")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batches = [int(b) for b in args.batch.split(",")]

    from edgevit.artifact import Artifact
    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.methods.quantize import QuantizeConfig, quantize
    from edgevit.models import create
    from edgevit.profiling.latency import profile_runtime
    from edgevit.profiling.layers import host_bf16, per_layer_png, per_layer_record, per_layer_table, profile_layers
    from edgevit.profiling.system import system_stamp
    from edgevit.runtimes import load_runtime, open_artifact

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "fmnist-vit.onnx"
    if not onnx_path.exists():
        export_onnx("fmnist-vit", onnx_path, parity=False)
    int8_path = out / "q" / "model_int8.xml"
    if not int8_path.exists():
        quantize("fmnist-vit", None, out_dir=out / "q", config=QuantizeConfig(backend="openvino", speed_gate=False))
    model = create("fmnist-vit")
    torch_art = Artifact(kind="torch", spec=model.edgevit_spec, model=model, source="fmnist-vit")
    onnx_art, int8_art = open_artifact(onnx_path), open_artifact(int8_path)
    variants = [("torch", torch_art, "torch", {}), ("onnxruntime", onnx_art, "onnxruntime", {}),
                ("openvino fp32", onnx_art, "openvino", {"precision": "f32"})]
    bf16, why = host_bf16()
    if bf16:
        variants.append(("openvino bf16", onnx_art, "openvino", {"precision": "bf16"}))
    else:
        print(f"no bf16 column: {why}")
    variants.append(("openvino int8", int8_art, "openvino", {"precision": "f32"}))
    images = preprocess(load_dataset("fashion-mnist", "test", limit=max(batches)).images, onnx_art.spec)

    runtimes = {name: load_runtime(rt, art, threads=args.threads, **opts) for name, art, rt, opts in variants}
    per_pass: dict[tuple[str, int], list[dict]] = {}
    t0 = time.time()
    for p in range(args.passes):
        order = variants[p % len(variants):] + variants[:p % len(variants)]
        for name, _, _, _ in order:
            rt = runtimes[name]
            for row in profile_runtime(rt, batch_sizes=batches, duration_s=args.duration, warmup_s=0.3,
                                       inputs=images, progress=False):
                rec = profile_layers(rt, images[:row["batch"]], runs=args.runs, latency_ms=row["median_ms"],
                                     latency_min_ms=row["min_ms"],
                                     latency_stability=row["stability"]["verdict"])
                per_pass.setdefault((name, row["batch"]), []).append(rec)
    chosen = []
    for recs in per_pass.values():
        sums = [r["sum_ms"] for r in recs]
        rec = recs[int(np.argsort(sums)[len(sums) // 2])]
        rec["passes_sum_ms"] = sums
        rec["passes_spread_pct"] = (max(sums) - min(sums)) / float(np.median(sums)) * 100
        rec["nodes"] = sorted(rec["nodes"], key=lambda n: -n["ms"])[:25]  # the 25 slowest nodes per record
        chosen.append(rec)
    for b in batches:
        print(per_layer_table(chosen, batch=b))
        print()
    for r in chosen:
        print(f"{r['variant']:>22s} b{r['batch']}: sum {r['sum_ms']:.3f} ms over {len(r['passes_sum_ms'])} "
              f"passes (spread {r['passes_spread_pct']:.0f}%), unmapped {r['unmapped_share'] * 100:.2f}%, "
              f"mapping {r['mapping']}")
    RESULTS.mkdir(exist_ok=True)
    doc = {"command": "python benchmarks/per_layer_fmnist.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if v is not None), "seconds": round(time.time() - t0, 1),
        "system": system_stamp(threads=args.threads), **per_layer_record(chosen)}
    (RESULTS / "per_layer_fmnist.json").write_text(json.dumps(doc, indent=1, default=str))
    (RESULTS / "per_layer_fmnist.png").write_bytes(per_layer_png(chosen, title="fmnist-vit: time per block"))
    print(f"wrote {RESULTS / 'per_layer_fmnist.json'} and .png")


if __name__ == "__main__":
    main()
