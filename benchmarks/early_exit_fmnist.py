#!/usr/bin/env python
"""LGViT early exits on fmnist-vit: threshold sweep with MEASURED cascade latency (heads included).

For a trained early-exit checkpoint (``edgevit early-exit train --model fmnist-vit --out runs/ee/``):

- top-1 on the Fashion-MNIST test set (all 10,000 images by default), mean exit depth (block number) and the share of
  samples per exit, for a sweep of shared confidence thresholds (plus the calibrated thresholds of
  ``calibration.json`` when given);
- the measured latency of the exported cascade, run through edgevit's cascade runtime (``CascadeRuntime``: per-sample
  exit, every head a sample passes is paid for) at batch 1, mean over the test images fed (``--latency-images``),
  on OpenVINO and onnxruntime, against the same backbone without exits exported as one graph and timed the same way
  on the same runtime and images;
- the operating point: the fastest sweep point within 1 pt top-1 of the backbone (target: >= 1.8x speed-up).

    python benchmarks/early_exit_fmnist.py --checkpoint runs/ee/early_exit.safetensors \\
        --calibration runs/ee/calibration.json --threads 2
    python benchmarks/early_exit_fmnist.py --quick          # smoke run: 300 images, untrained heads if no checkpoint

Run it on an otherwise idle machine. The JSON (benchmarks/results/early_exit_fmnist.json) holds everything printed
plus the system stamp and the runtimes' settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("early_exit_fmnist")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "early_exit_fmnist.json"
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
RUNTIMES = ("openvino", "onnxruntime")


def time_per_image(run, x: np.ndarray, warmup: int) -> dict:
    """Batch-1 wall time of ``run`` per image (perf_counter_ns around each call), after ``warmup`` calls."""
    for i in range(min(warmup, len(x))):
        run(x[i:i + 1])
    t = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        t0 = time.perf_counter_ns()
        run(x[i:i + 1])
        t[i] = time.perf_counter_ns() - t0
    ms = t / 1e6
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "n": len(ms)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="early_exit.safetensors from `edgevit early-exit train` (or its run folder)")
    p.add_argument("--calibration", help="calibration.json from `edgevit early-exit calibrate` (adds that point)")
    p.add_argument("--limit", type=int, default=None, help="test images for accuracy (default: all 10,000)")
    p.add_argument("--latency-images", type=int, default=2000, help="test images timed per configuration")
    p.add_argument("--warmup", type=int, default=50, help="untimed images before each timed configuration")
    p.add_argument("--thresholds", default=",".join(map(str, SWEEP)), help="shared confidence thresholds to sweep")
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    p.add_argument("--max-loss-pt", type=float, default=1.0, help="top-1 loss allowed at the operating point")
    p.add_argument("--work-dir", default=None, help="where the exported graphs go (default: a temp folder)")
    p.add_argument("--json", default=str(DEFAULT_JSON))
    p.add_argument("--quick", action="store_true", help="smoke run: 300 test images, 100 timed, 4 thresholds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.quick:
        args.limit, args.latency_images, args.warmup = args.limit or 300, min(args.latency_images, 100), 10
        args.thresholds = "0.8,0.95,0.99,1.0"
        args.exporter = "torchscript" if args.exporter == "auto" else args.exporter

    import torch

    from edgevit.artifact import Artifact
    from edgevit.data import load_dataset, preprocess
    from edgevit.early_exit import attach_exits, collect_logits, export_cascade, load_early_exit
    from edgevit.early_exit.runtime import CascadeRuntime
    from edgevit.early_exit.thresholds import assign_exits, scores
    from edgevit.export.onnx import export_onnx
    from edgevit.export.openvino import export_openvino
    from edgevit.models import create
    from edgevit.profile import system_stamp
    from edgevit.runtimes import load_runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        ee, heads_note = load_early_exit(args.checkpoint), f"trained ({args.checkpoint})"
    elif args.quick:
        log.warning("no --checkpoint: attaching UNTRAINED heads to fmnist-vit (smoke run only; accuracy and exits "
                    "are meaningless)")
        torch.manual_seed(0)
        ee, heads_note = attach_exits(create("fmnist-vit")), "untrained (smoke run)"
    else:
        p.error("--checkpoint is required (train one with `edgevit early-exit train --model fmnist-vit --out runs/ee/`)")
    spec, k_exits = ee.edgevit_spec, ee.num_exits
    blocks = np.array([*ee.exit_blocks, ee.depth])

    test = load_dataset("fashion-mnist", "test", limit=args.limit)
    logits = collect_logits(ee, test)
    labels = logits["labels"]
    sc = scores(logits["exits"], "confidence")
    exit_correct = logits["exits"].argmax(-1) == labels[:, None]
    final_correct = logits["final"].argmax(-1) == labels
    backbone_top1 = float(final_correct.mean())
    correct = np.concatenate([exit_correct, final_correct[:, None]], axis=1)

    points = [(f"shared {t}", [float(t)] * k_exits) for t in args.thresholds.split(",")]
    calibration = None
    if args.calibration:
        calibration = json.loads(Path(args.calibration).read_text())
        points.append((f"calibrated ({calibration.get('runtime')}, budget {calibration.get('budget_pt')} pt)",
                       calibration["thresholds"]))
    sweep = []
    for name, th in points:
        ex = assign_exits(sc, np.array(th), "confidence")
        sweep.append({"point": name, "thresholds": th, "top1": float(correct[np.arange(len(ex)), ex].mean()),
                      "mean_exit_block": float(blocks[ex].mean()),
                      "share": (np.bincount(ex, minlength=k_exits + 1) / len(ex)).tolist(), "latency": {}})

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="edgevit-ee-bench-"))
    x_lat = preprocess(test.images[: args.latency_images], spec)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    baselines, exports = {}, {}
    fmt_of = {"openvino": "openvino", "onnxruntime": "onnx"}
    for rt_name in runtimes:
        fmt = fmt_of[rt_name]
        if fmt not in exports:
            exports[fmt] = export_cascade(ee, work / f"cascade_{fmt}", format=fmt, thresholds=1.0,
                                          calib_images=test.images[:32], exporter=args.exporter)
        if fmt == "onnx":
            base = export_onnx(ee.backbone, work / "backbone.onnx", calib_images=test.images[:32])["path"]
        else:
            base = export_openvino(ee.backbone, work / "backbone_ov", calib_images=test.images[:32])["path"]
        brt = load_runtime(rt_name, base, threads=args.threads)
        first = time_per_image(brt.run, x_lat, args.warmup)
        brt.close()
        manifest = Path(exports[fmt]["path"])
        cascade_rows = {}
        for row in sweep:
            rt = CascadeRuntime(Artifact(kind="cascade", spec=spec, path=manifest), backend=rt_name,
                                threads=args.threads, thresholds=row["thresholds"])
            lat = time_per_image(rt.run, x_lat, args.warmup)
            rt.exit_counts[:] = 0
            m = min(200, len(x_lat))
            _, ex_rt = rt.run_with_exits(x_lat[:m])
            ex_torch = assign_exits(sc[:m], np.array(row["thresholds"]), "confidence")
            lat["exit_agreement_vs_torch"] = float((ex_rt == ex_torch).mean())
            cascade_rows[row["point"]] = lat
            row["latency"][rt_name] = lat
            rt.close()
        # the reference is timed before AND after the sweep; the faster of the two is kept (conservative speed-ups)
        brt = load_runtime(rt_name, base, threads=args.threads)
        again = time_per_image(brt.run, x_lat, args.warmup)
        baselines[rt_name] = {**min(first, again, key=lambda r: r["mean_ms"]), "timings": [first, again],
                              "artifact": str(base), "runtime_info": brt.describe()}
        brt.close()
        for lat in cascade_rows.values():
            lat["speedup"] = baselines[rt_name]["mean_ms"] / lat["mean_ms"]

    op = {}
    for rt_name in runtimes:
        ok = [r for r in sweep if r["top1"] >= backbone_top1 - args.max_loss_pt / 100 - 1e-12]
        best = max(ok, key=lambda r: r["latency"][rt_name]["speedup"]) if ok else None
        op[rt_name] = None if best is None else {
            "point": best["point"], "thresholds": best["thresholds"], "top1": best["top1"],
            "loss_pt": (backbone_top1 - best["top1"]) * 100, "speedup": best["latency"][rt_name]["speedup"],
            "mean_ms": best["latency"][rt_name]["mean_ms"], "baseline_mean_ms": baselines[rt_name]["mean_ms"],
            "meets_target_1.8x_at_1pt": best["latency"][rt_name]["speedup"] >= 1.8}

    # ---------------------------------------------------------------------------------------------- print
    print(f"fmnist-vit early exits ({heads_note}); exits after blocks {ee.exit_blocks}; test images: {len(test)}; "
          f"latency: batch 1, mean over {len(x_lat)} images, heads included")
    print(f"backbone without exits: top-1 {backbone_top1 * 100:.2f}%; " + ", ".join(
        f"{r} {baselines[r]['mean_ms']:.3f} ms" for r in runtimes))
    head = "| point | top-1 % | mean exit block | " + " | ".join(f"{r} ms | {r} speed-up" for r in runtimes) + \
           " | share per exit (…, final) |"
    print(head)
    print("| " + " | ".join(["---"] * (head.count("|") - 1)) + " |")
    for r in sweep:
        lat = " | ".join(f"{r['latency'][n]['mean_ms']:.3f} | {r['latency'][n]['speedup']:.2f}x" for n in runtimes)
        share = " ".join(f"{s * 100:.0f}" for s in r["share"])
        print(f"| {r['point']} | {r['top1'] * 100:.2f} | {r['mean_exit_block']:.2f} | {lat} | {share} |")
    for n in runtimes:
        o = op[n]
        print(f"operating point on {n}: " + ("none within the budget" if o is None else
              f"{o['point']}: top-1 {o['top1'] * 100:.2f}% ({o['loss_pt']:+.2f} pt loss), {o['speedup']:.2f}x "
              f"measured speed-up ({o['mean_ms']:.3f} vs {o['baseline_mean_ms']:.3f} ms); target >= 1.8x at <= "
              f"{args.max_loss_pt} pt: {'met' if o['meets_target_1.8x_at_1pt'] else 'NOT met'}"))

    from edgevit.artifact import write_json

    write_json(Path(args.json), {
        "benchmark": "early_exit_fmnist", "quick": args.quick, "heads": heads_note, "exit_blocks": ee.exit_blocks,
        "test_images": len(test), "latency_images": len(x_lat), "warmup_images": args.warmup,
        "threads": args.threads, "exporter": args.exporter, "backbone_top1": backbone_top1,
        "exit_top1": exit_correct.mean(0).tolist(), "baselines": baselines, "sweep": sweep, "operating_point": op,
        "calibration": calibration, "method": "time.perf_counter_ns around CascadeRuntime.run(one image) / the "
        "backbone runtime's run(one image); mean over the images fed, after warm-up images",
        "system": system_stamp(threads=args.threads)})
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
