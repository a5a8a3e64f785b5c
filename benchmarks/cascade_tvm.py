"""The early-exit cascade on TVM: compile time per graph (FP32 and INT8 QDQ) and the cost of untuned code.

    PYTHONPATH=$PWD python benchmarks/cascade_tvm.py            # table; JSON to benchmarks/results/cascade_tvm.json

The shipped student ``fmnist-vit-micro`` gets LGViT heads after blocks 2..5 (heads untrained: this measures compile
time and speed, not accuracy; thresholds at each head's median confidence on 500 real train images, so test images
leave at every exit). Its ONNX cascade (9 graphs) is compiled with :func:`edgevit.formats.tvm.cascade.
export_tvm_cascade` (symbolic batch, untuned), then the INT8 QDQ copy from ``quantize_cascade`` (onnxruntime
backend). The cascades run image by image over real test images, ONNX Runtime and TVM taking turns chunk by chunk
(``--passes``), and over the same images in batches of 100 (the eval path): mean ms per image, with their real exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "cascade_tvm.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="real test images timed (default 1000)")
    ap.add_argument("--passes", type=int, default=4, help="chunks the runtimes take turns on (default 4)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-cascade-tvm"), help="work folder")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)

    import torch

    from edgevit.artifact import write_json
    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.cascade.thresholds import scores
    from edgevit.formats.tvm.cascade import export_tvm_cascade
    from edgevit.methods.early_exit import attach_exits, export_cascade, quantize_cascade
    from edgevit.methods.quantize import QuantizeConfig
    from edgevit.models import create
    from edgevit.profiling import system_stamp
    from edgevit.runtimes import load_runtime

    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", "train", limit=500)
    test = load_dataset("fashion-mnist", "test", limit=args.images)
    ee = attach_exits(create("fmnist-vit-micro"))
    with torch.inference_mode():
        heads = ee.forward_all(torch.from_numpy(preprocess(train.images, ee.edgevit_spec)))["exits"]
    th = [float(np.median(scores(z.numpy(), "confidence"))) for z in heads]
    out = args.out
    exports = {}
    t = time.perf_counter()
    export_cascade(ee, out / "fp32", format="onnx", thresholds=th, exporter="torchscript", parity_images=test.images[:32])
    exports["onnx_cascade_export_s"] = round(time.perf_counter() - t, 1)
    quantize_cascade(out / "fp32" / "manifest.json", out / "int8", backend="onnxruntime",
                     config=QuantizeConfig(backend="onnxruntime", calib_samples=100), calib=train,
                     parity_images=test.images[:64])
    compiled = {}
    for name in ("fp32", "int8"):
        t = time.perf_counter()
        rec = export_tvm_cascade(out / name / "manifest.json", out / f"{name}_tvm", parity_images=test.images[:64])
        d = rec.to_dict()
        compiled[name] = {"total_s": round(time.perf_counter() - t, 1), "compile_s": d["compile_time_s"],
                          "graphs": {g: v["compile_time_s"] + v["import_time_s"] for g, v in d["graphs"].items()},
                          "exit_agreement": d["exit_agreement"], "top1_agreement": d["top1_agreement"],
                          "max_abs_diff": d["max_abs_diff"]}
    x = preprocess(test.images, ee.edgevit_spec)
    variants = {(p, rt): load_runtime(rt, out / (p if rt == "onnxruntime" else f"{p}_tvm") / "manifest.json")
                for p in ("fp32", "int8") for rt in ("onnxruntime", "tvm")}
    times: dict = {k: {"b1": [], "b100": []} for k in variants}
    chunks = np.array_split(np.arange(len(x)), args.passes)
    for i, idx in enumerate(chunks):
        keys = list(variants)
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            rt = variants[k]
            t = time.perf_counter()
            for j in idx:
                rt.run_with_exits(x[j:j + 1])
            times[k]["b1"].append((time.perf_counter() - t, len(idx)))
            t = time.perf_counter()
            for s in range(0, len(idx), 100):
                rt.run_with_exits(x[idx[s:s + 100]])
            times[k]["b100"].append((time.perf_counter() - t, len(idx)))
    rows = []
    for (p, rt), tt in times.items():
        shares = variants[(p, rt)].exit_counts / variants[(p, rt)].exit_counts.sum()
        rows.append({"cascade": p, "runtime": rt,
                     "b1_mean_ms": 1e3 * sum(s for s, _ in tt["b1"]) / sum(n for _, n in tt["b1"]),
                     "b100_ms_per_image": 1e3 * sum(s for s, _ in tt["b100"]) / sum(n for _, n in tt["b100"]),
                     "exit_shares": [round(float(v), 3) for v in shares]})
    print(f"compile (9 graphs, untuned, symbolic batch): fp32 {compiled['fp32']['compile_s']} s, int8 QDQ "
          f"{compiled['int8']['compile_s']} s (whole export incl. parity: {compiled['fp32']['total_s']} s, "
          f"{compiled['int8']['total_s']} s)")
    print("| cascade | runtime     | batch 1 mean ms | batch 100 ms/image | ÷ onnxruntime (b1) |")
    print("| ------- | ----------- | --------------: | -----------------: | -----------------: |")
    for r in rows:
        base = next(b for b in rows if b["cascade"] == r["cascade"] and b["runtime"] == "onnxruntime")
        print(f"| {r['cascade']:7} | {r['runtime']:11} | {r['b1_mean_ms']:15.3f} | {r['b100_ms_per_image']:18.3f} | "
              f"{r['b1_mean_ms'] / base['b1_mean_ms']:18.1f} |")
    write_json(args.json, {"command": "python benchmarks/cascade_tvm.py " + " ".join(argv or sys.argv[1:]),
                           "images": len(x), "passes": args.passes, "exports": exports, "tvm_compile": compiled,
                           "results": rows, "system": system_stamp(None),
                           "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
