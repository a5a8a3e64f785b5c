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
- the operating point: the fastest sweep point within 1 pt top-1 of the backbone (target: >= 1.8x speed-up);
- the reference for the speed-ups is, per pass, the faster of the exported backbone and the If form with no exit
  active (the same network composed from the segments, which onnxruntime optimises differently);
- the same cascade composed into ONE ONNX graph with nested ``If`` nodes (``edgevit.methods.early_exit.build_if_graph``,
  batch 1; its per-sample decisions equal the segment cascade's, checked on 64 real images per point; its top-1 on
  the whole test set is measured at its operating point), run by onnxruntime and by OpenVINO;
- with ``--int8``, the same for INT8 cascades (every segment and head quantised by
  ``edgevit.methods.early_exit.quantize_cascade`` on 300 real calibration images) against the INT8 backbone (same
  guardrails), with top-1 measured through the INT8 graphs themselves. On OpenVINO the INT8 If form is composed
  from the ONNX cascade quantised by NNCF (``nncf-onnx``, QDQ), since an IR cascade cannot be composed into ONNX.

Timing: the backbone and every sweep point are timed in ``--passes`` interleaved rounds (rotating order, one loaded
cascade whose thresholds change between points); a pass yields the mean ms per image over the timed images; the
headline is the median of the pass means, and the speed-up the median over passes of the per-pass ratio
backbone / point (with its min–max), so a slow phase of a shared machine hits both sides of a ratio.

    python benchmarks/early_exit_fmnist.py --checkpoint runs/ee/early_exit.safetensors \\
        --calibration runs/ee/calibration.json --threads 2 --int8
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


def time_per_image(run, x: np.ndarray, warmup: int) -> np.ndarray:
    """Batch-1 wall time (ms) of ``run`` on each image of ``x`` (perf_counter_ns around each call), after ``warmup``
    untimed calls on the first images."""
    for i in range(min(warmup, len(x))):
        run(x[i:i + 1])
    t = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        t0 = time.perf_counter_ns()
        run(x[i:i + 1])
        t[i] = time.perf_counter_ns() - t0
    return t / 1e6


def interleaved_means(configs: dict, x: np.ndarray, *, passes: int, warmup: int) -> dict:
    """``configs``: ``{name: (prepare, run)}``. In each of ``passes`` rounds every configuration (in an order that
    rotates every round) is prepared, warmed up and run on every image of ``x``; its pass result is the mean ms per
    image. Returns per configuration the pass means, their median and the pooled per-image stats."""
    names = list(configs)
    per: dict[str, list] = {n: [] for n in names}
    pooled: dict[str, list] = {n: [] for n in names}
    for p in range(passes):
        for n in names[p % len(names):] + names[:p % len(names)]:
            prepare, run = configs[n]
            if prepare is not None:
                prepare()
            ms = time_per_image(run, x, warmup)
            per[n].append(float(ms.mean()))
            pooled[n].append(ms)
    out = {}
    for n in names:
        allms = np.concatenate(pooled[n])
        med = float(np.median(per[n]))
        out[n] = {"mean_ms": med, "pass_means_ms": per[n], "spread_pct": (max(per[n]) - min(per[n])) / med * 100,
                  "median_ms": float(np.median(allms)), "p90_ms": float(np.percentile(allms, 90)),
                  "n": int(allms.size), "passes": passes}
    return out


def speedups(timing: dict, refs: list[str]) -> dict:
    """Per configuration: the median over passes of (reference pass mean / configuration pass mean), and the range.
    With several references the faster of them in each pass is the reference (the conservative choice)."""
    base = np.min([np.array(timing[r]["pass_means_ms"]) for r in refs], axis=0)
    out = {}
    for n, t in timing.items():
        r = base / np.array(t["pass_means_ms"])
        out[n] = {"speedup": float(np.median(r)), "speedup_min": float(r.min()), "speedup_max": float(r.max())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="early_exit.safetensors from `edgevit early-exit train` (or its run folder)")
    p.add_argument("--calibration", help="calibration.json from `edgevit early-exit calibrate` (adds that point)")
    p.add_argument("--limit", type=int, default=None, help="test images for accuracy (default: all 10,000)")
    p.add_argument("--latency-images", type=int, default=500, help="test images timed per configuration and pass")
    p.add_argument("--warmup", type=int, default=50, help="untimed images before each timed configuration")
    p.add_argument("--passes", type=int, default=5, help="interleaved timing rounds (median of the pass means)")
    p.add_argument("--int8", action="store_true", help="also INT8 cascades (every segment and head quantised) "
                                                      "against the INT8 backbone")
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
        args.passes = min(args.passes, 2)
        args.thresholds = "0.8,0.95,0.99,1.0"
        args.exporter = "torchscript" if args.exporter == "auto" else args.exporter

    import torch

    from edgevit.artifact import Artifact
    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.cascade.if_form import build_if_graph
    from edgevit.formats.cascade.runtime import CascadeRuntime, graph_inputs
    from edgevit.formats.cascade.thresholds import active_heads, scores
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.formats.openvino.export import export_openvino
    from edgevit.methods.early_exit import attach_exits, collect_logits, export_cascade, load_early_exit
    from edgevit.methods.early_exit.quantize import quantize_cascade
    from edgevit.methods.early_exit.thresholds import assign_exits
    from edgevit.methods.quantize import QuantizeConfig, calibration_data
    from edgevit.methods.quantize.backends import Settings, quantize_file
    from edgevit.models import create
    from edgevit.profiling import system_stamp
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
                      "share": (np.bincount(ex, minlength=k_exits + 1) / len(ex)).tolist(), "variants": {}})

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="edgevit-ee-bench-"))
    x_lat = preprocess(test.images[: args.latency_images], spec)
    x_all = preprocess(test.images, spec)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    fmt_of = {"openvino": "openvino", "onnxruntime": "onnx"}
    variants = [(r, False) for r in runtimes] + ([(r, True) for r in runtimes] if args.int8 else [])
    baselines, exports, int8_records, results = {}, {}, {}, {}
    for rt_name, int8 in variants:
        vname = f"{rt_name} int8" if int8 else rt_name
        fmt = fmt_of[rt_name]
        for f in dict.fromkeys(["onnx", fmt]):  # the If form is always composed from the ONNX cascade
            if f in exports:
                continue
            exports[f] = export_cascade(ee, work / f"cascade_{f}", format=f, thresholds=1.0,
                                        parity_images=test.images[:32], exporter=args.exporter).to_dict()
            if f == "onnx":
                exports[f]["backbone"] = str(export_onnx(ee.backbone, work / "backbone.onnx",
                                                         parity_images=test.images[:32]).path)
            else:
                exports[f]["backbone"] = str(export_openvino(ee.backbone, work / "backbone_ov",
                                                             parity_images=test.images[:32]).path)
        manifest, base = Path(exports[fmt]["path"]), Path(exports[fmt]["backbone"])
        if_manifest = Path(exports["onnx"]["path"])
        if int8:  # every segment and head INT8, and the backbone reference INT8 with the same guardrails
            qbackend = "openvino" if fmt == "openvino" else "onnxruntime"
            q = quantize_cascade(manifest, work / f"cascade_{fmt}_int8", backend=qbackend, threads=args.threads,
                                 parity_images=test.images[:500])
            manifest = Path(q["path"])
            if_manifest = manifest
            if fmt == "openvino":  # an IR cascade cannot be composed into ONNX: compose the ONNX cascade quantised
                # by NNCF (QDQ, the form OpenVINO's ONNX reader runs in INT8)
                if_manifest = Path(quantize_cascade(exports["onnx"]["path"], work / "cascade_onnx_int8_nncf",
                                                    backend="nncf-onnx", threads=args.threads,
                                                    parity_images=test.images[:500])["path"])
            qbase = work / f"backbone_{fmt}_int8" / f"model{base.suffix}"
            calib_x, _ = calibration_data(spec, "fashion-mnist", samples=300)
            quantize_file(qbackend, base, calib_x, QuantizeConfig(backend=qbackend), Settings(smooth_quant=True),
                          qbase, spec=spec, source="fmnist-vit")
            base = qbase
            int8_records[vname] = q
        brt = load_runtime(rt_name, base, threads=args.threads)
        casc = CascadeRuntime(Artifact(kind="cascade", spec=spec, path=manifest), backend=rt_name,
                              threads=args.threads)
        # accuracy through this variant's own graphs (FP32: the torch logits, which the export parity matches)
        if int8:
            _, ex_logits, fin_logits = graph_inputs(casc, x_all)
            v_exit_correct = np.stack([h.argmax(-1) == labels for h in ex_logits], axis=1)
            v_correct = np.concatenate([v_exit_correct, (fin_logits.argmax(-1) == labels)[:, None]], axis=1)
            v_sc = scores(np.stack(ex_logits, axis=1), "confidence")
            v_base_top1 = float((brt.run(x_all).argmax(-1) == labels).mean())  # the INT8 backbone's own top-1
        else:
            v_correct, v_sc, v_base_top1 = correct, sc, backbone_top1
        configs = {"backbone": (None, brt.run)}
        for row in sweep:
            configs[row["point"]] = ((lambda th=row["thresholds"], c=casc: c.set_thresholds(th)), casc.run)
        if_rts, if_recs = {}, {}
        for i, row in enumerate(sweep if if_manifest is not None else []):
            f = work / f"if_{vname.replace(' ', '_')}_{i:02d}.onnx"
            if_recs[row["point"]] = build_if_graph(if_manifest, f, thresholds=row["thresholds"],
                                                   parity_images=test.images[:64]).to_dict()
            if_rts[row["point"]] = load_runtime(rt_name, f, threads=args.threads)
            configs["If: " + row["point"]] = (None, if_rts[row["point"]].run)
        timing = interleaved_means(configs, x_lat, passes=args.passes, warmup=args.warmup)
        # the reference: the exported backbone, or the If form with no exit active (the same network composed from
        # the segments, which onnxruntime can optimise differently) when that is faster in a pass
        no_exit = [r["point"] for r in sweep if not any(active_heads(r["thresholds"], "confidence"))]
        refs = ["backbone"] + [f"If: {no_exit[0]}"] if no_exit and f"If: {no_exit[0]}" in timing else ["backbone"]
        ups = speedups(timing, refs)
        ref_ms = float(np.median(np.min([timing[r]["pass_means_ms"] for r in refs], axis=0)))
        baselines[vname] = {**timing["backbone"], "reference_mean_ms": ref_ms, "reference": refs,
                            "artifact": str(base), "top1": v_base_top1,
                            "runtime_info": brt.describe()}
        for row in sweep:
            ex = assign_exits(v_sc, np.array(row["thresholds"]), "confidence")
            m = min(200, len(x_lat))
            casc.set_thresholds(row["thresholds"])
            _, ex_rt = casc.run_with_exits(x_lat[:m])
            row["variants"][vname] = {
                **timing[row["point"]], **ups[row["point"]],
                "top1": float(v_correct[np.arange(len(ex)), ex].mean()),
                "loss_pt": (v_base_top1 - float(v_correct[np.arange(len(ex)), ex].mean())) * 100,
                "mean_exit_block": float(blocks[ex].mean()),
                "share": (np.bincount(ex, minlength=k_exits + 1) / len(ex)).tolist(),
                "exit_agreement_vs_offline": float((ex_rt == ex[:m]).mean())}
            if row["point"] in if_rts:
                row["variants"][vname]["if_form"] = {**timing["If: " + row["point"]], **ups["If: " + row["point"]],
                                                     "parity_vs_cascade": if_recs[row["point"]]["parity_vs_cascade"]}
        # the If form's own top-1 on the whole test set, at its fastest point within the budget
        ok = [r for r in sweep if r["point"] in if_rts and r["variants"][vname]["loss_pt"] <= args.max_loss_pt + 1e-9]
        if ok:
            best = max(ok, key=lambda r: r["variants"][vname]["if_form"]["speedup"])
            rt_if = if_rts[best["point"]]
            pred = np.concatenate([rt_if.run(x_all[i:i + 1]) for i in range(len(x_all))]).argmax(-1)
            best["variants"][vname]["if_form"]["top1_measured"] = float((pred == labels).mean())
        for rt_if in if_rts.values():
            rt_if.close()
        casc.close()
        brt.close()
        results[vname] = {"int8": int8, "runtime": rt_name, "backbone_top1": v_base_top1}

    op = {}
    for vname in list(results):
        ok = [r for r in sweep if r["variants"][vname]["loss_pt"] <= args.max_loss_pt + 1e-9]
        best = max(ok, key=lambda r: r["variants"][vname]["speedup"]) if ok else None
        v = best["variants"][vname] if best else None
        op[vname] = None if best is None else {
            "point": best["point"], "thresholds": best["thresholds"], "top1": v["top1"], "loss_pt": v["loss_pt"],
            "speedup": v["speedup"], "speedup_range": [v["speedup_min"], v["speedup_max"]], "mean_ms": v["mean_ms"],
            "baseline_mean_ms": baselines[vname]["reference_mean_ms"], "meets_target_1.8x_at_1pt": v["speedup"] >= 1.8}
        ok_if = [r for r in ok if "if_form" in r["variants"][vname]]
        if ok_if:
            b = max(ok_if, key=lambda r: r["variants"][vname]["if_form"]["speedup"])
            f = b["variants"][vname]["if_form"]
            top1 = f.get("top1_measured", b["variants"][vname]["top1"])
            op[vname + " If form"] = {
                "point": b["point"], "thresholds": b["thresholds"], "top1": top1,
                "loss_pt": (results[vname]["backbone_top1"] - top1) * 100, "speedup": f["speedup"],
                "speedup_range": [f["speedup_min"], f["speedup_max"]], "mean_ms": f["mean_ms"],
                "baseline_mean_ms": baselines[vname]["reference_mean_ms"],
                "meets_target_1.8x_at_1pt": f["speedup"] >= 1.8}

    # ---------------------------------------------------------------------------------------------- print
    print(f"fmnist-vit early exits ({heads_note}); exits after blocks {ee.exit_blocks}; test images: {len(test)}; "
          f"latency: batch 1, mean ms per image over {len(x_lat)} images, median of {args.passes} interleaved passes, "
          f"heads included; speed-up = median over passes of (backbone / cascade)")
    for vname in results:
        b = baselines[vname]
        print(f"\n### {vname}: backbone without exits top-1 {b['top1'] * 100:.2f}%, {b['mean_ms']:.3f} ms "
              f"(pass spread {b['spread_pct']:.0f}%); reference for the speed-ups: the faster per pass of "
              f"{' and '.join(b['reference'])}, {b['reference_mean_ms']:.3f} ms")
        print("| point | top-1 % | loss pt | mean exit block | segment cascade ms | speed-up (min–max over passes) | "
              "If form ms | If-form speed-up (min–max) | share per exit % (…, final) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in sweep:
            v = r["variants"][vname]
            share = " ".join(f"{x * 100:.0f}" for x in v["share"])
            f = v.get("if_form")
            iff = (f"{f['mean_ms']:.3f} | {f['speedup']:.2f}x ({f['speedup_min']:.2f}–{f['speedup_max']:.2f})"
                   if f else "— | —")
            print(f"| {r['point']} | {v['top1'] * 100:.2f} | {v['loss_pt']:+.2f} | {v['mean_exit_block']:.2f} | "
                  f"{v['mean_ms']:.3f} | {v['speedup']:.2f}x ({v['speedup_min']:.2f}–{v['speedup_max']:.2f}) | "
                  f"{iff} | {share} |")
        for key in (vname, vname + " If form"):
            if key not in op:
                continue
            o = op[key]
            print(f"operating point on {key}: " + ("none within the budget" if o is None else
                  f"{o['point']}: top-1 {o['top1'] * 100:.2f}% ({o['loss_pt']:+.2f} pt loss), {o['speedup']:.2f}x "
                  f"measured speed-up ({o['mean_ms']:.3f} vs {o['baseline_mean_ms']:.3f} ms); target >= 1.8x at <= "
                  f"{args.max_loss_pt} pt: {'met' if o['meets_target_1.8x_at_1pt'] else 'NOT met'}"))

    from edgevit.artifact import write_json

    write_json(Path(args.json), {
        "benchmark": "early_exit_fmnist", "quick": args.quick, "heads": heads_note, "exit_blocks": ee.exit_blocks,
        "test_images": len(test), "latency_images": len(x_lat), "warmup_images": args.warmup,
        "passes": args.passes, "threads": args.threads, "exporter": args.exporter, "backbone_top1": backbone_top1,
        "exit_top1": exit_correct.mean(0).tolist(), "baselines": baselines, "sweep": sweep, "operating_point": op,
        "variants": results, "int8": int8_records,
        "calibration": calibration, "method": "time.perf_counter_ns around CascadeRuntime.run(one image) / the "
        "backbone runtime's run(one image); mean per image over the images fed, after warm-up images; every "
        "configuration timed once per pass in a rotating order, headline = median of the pass means, speed-up = "
        "median over passes of the per-pass ratio to the backbone",
        "system": system_stamp(threads=args.threads)})
    log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
