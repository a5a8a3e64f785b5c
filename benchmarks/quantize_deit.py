#!/usr/bin/env python
"""DeiT-Tiny (``deit_tiny_patch16_224``, 224×224, batch 1): edgevit's INT8 OpenVINO artefact vs plain
``nncf.quantize`` defaults on the same IR vs torch eager FP32, in one run; plus the INT8 artefact's achieved ops/s as a
fraction of this machine's INT8 roofline (issue: INT8 post-training quantisation, benchmarks 2 and 3).

    python benchmarks/quantize_deit.py --threads 2 --duration 1 --passes 15  # full
    python benchmarks/quantize_deit.py --quick                               # smoke run (32 calibration images)

Weights are timm's random init (no hub here; latency does not depend on the weights), so the accuracy gate is not
meaningful for this model and runs with an open budget on a few images. The speed gate runs as in `edgevit quantize`
with FP32 and bf16 candidates: it decides whether the INT8 IR's leftover float ops (LayerNorm, Softmax, GELU) run in
f32 or bf16 and records that in the IR; the row "edgevit INT8 (as written)" loads the IR with no precision option,
so it runs the way a user's `edgevit profile model_int8.xml` would (the accuracy of bf16 leftovers is measured on
fmnist-vit in benchmarks/quantize_fmnist.py). Plain NNCF is timed both with f32 leftovers and with OpenVINO's own
default precision (bf16 on this CPU), and the faster of the two is the reference.

Timing: all variants are loaded, then timed in ``--passes`` interleaved rounds of ``--duration`` seconds each
(edgevit.profiling.time_interleaved, rotating order); the headline is the median of the per-pass medians, and the
spread column says how much the passes disagreed. Calibration uses real Fashion-MNIST train images preprocessed to DeiT's input spec (resized to
224, grey → 3 channels, ImageNet mean/std) through edgevit.methods.quantize.calibration_data — the same images for edgevit
and for plain NNCF. Targets: edgevit INT8 at least as fast as plain NNCF, and ≥ 2.8× torch eager FP32.
Roofline: 2 × MACs (counted by edgevit.profiling.macs, SDPA included) / median latency, over the INT8 peak of the hardware profile
``epyc-zen4-2core`` (edgevit/hardware_profiles/epyc-zen4-2core.yaml), for its nominal and boost modes.
JSON: benchmarks/results/quantize_deit.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_anchors import build_model, real_inputs

from edgevit.artifact import Artifact, write_json
from edgevit.profiling.tables import markdown_table

log = logging.getLogger("quantize_deit")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "quantize_deit.json"
PROFILE = "epyc-zen4-2core"
COLS = [("variant", "variant"), ("runtime", "runtime"), ("precision", "computes in"), ("median_ms", "median ms"),
        ("spread_pct", "pass spread %"), ("p90_ms", "p90 ms"), ("runs", "runs"), ("x_torch", "× torch eager"),
        ("x_plain_nncf", "× plain NNCF"), ("mb", "file MB")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--calib-samples", type=int, default=300)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of timed batch-1 runs per variant and pass")
    ap.add_argument("--passes", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32 calibration images, 0.3 s per variant")
    ap.add_argument("--out", type=Path, default=None, help="keep the IRs here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.calib_samples, args.duration, args.warmup, args.passes = 32, 0.2, 0.1, 2

    import nncf
    import openvino as ov
    import torch

    from edgevit.methods.quantize import QuantizeConfig, calibration_data, quantize
    from edgevit.profiling import system_stamp, time_interleaved
    from edgevit.profiling.hardware import load_profile
    from edgevit.profiling.macs import count_macs_torch
    from edgevit.runtimes import load_runtime, open_artifact

    if args.threads:
        torch.set_num_threads(args.threads)
    model, weights = build_model(args.model)
    model.eval()
    spec = model.edgevit_spec
    inputs = real_inputs(spec, 1)
    calib, where = calibration_data(spec, "fashion-mnist", samples=args.calib_samples)

    rows, extra = [], {}
    with tempfile.TemporaryDirectory(prefix="edgevit-qdeit-") as tmp:
        root = args.out or Path(tmp)
        # 1. edgevit: FP32 IR from torch, NNCF with the ViT guardrails (one calibration set, default settings)
        cfg = QuantizeConfig(backend="openvino", budget=100.0, calib_samples=args.calib_samples, eval_limit=20,
                             batch_size=10, latency_s=args.duration, threads=args.threads,
                             float_precisions=["fp32", "bf16"], runtimes=["openvino"], max_attempts=2)
        rec = quantize(model, calib, out_dir=root / "edgevit", config=cfg).record
        fp32_ir = Path(rec["fp32"]["path"])
        edgevit_ir = Path(rec["int8"]["path"])
        # 2. plain nncf.quantize with its defaults on the same FP32 IR and the same calibration images
        core = ov.Core()
        plain = nncf.quantize(core.read_model(str(fp32_ir)), nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
                              subset_size=len(calib))
        plain_ir = root / "plain_nncf" / "model.xml"
        plain_ir.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(plain, str(plain_ir), compress_to_fp16=False)
        # 2b. edgevit's guardrails but with the patch embedding and the head in INT8 too (what those two cost)
        from edgevit.methods.quantize.backends import Settings, quantize_file

        lean_cfg = QuantizeConfig(backend="openvino", float_patch_embed=False, float_head=False)
        lean_ir = root / "edgevit_lean" / "model.xml"
        quantize_file("openvino", fp32_ir, calib, lean_cfg,
                      Settings(smooth_quant=rec["int8"]["settings"]["smooth_quant"]), lean_ir, spec=spec,
                      source=args.model)
        # 3. time everything in one run, same threads, same real input, interleaved passes
        variants = [
            ("torch eager FP32", "torch", Artifact(kind="torch", spec=spec, model=model, source=args.model), {}),
            ("OpenVINO FP32 (f32)", "openvino", open_artifact(fp32_ir), {"precision": "f32"}),
            ("OpenVINO FP32 IR @ bf16", "openvino", open_artifact(fp32_ir), {"precision": "bf16"}),
            ("plain nncf.quantize INT8, f32 leftovers", "openvino", open_artifact(plain_ir), {"precision": "f32"}),
            ("plain nncf.quantize INT8, OpenVINO default precision", "openvino", open_artifact(plain_ir),
             {"precision": "default"}),
            ("edgevit INT8, f32 leftovers", "openvino", open_artifact(edgevit_ir), {"precision": "f32"}),
            (f"edgevit INT8 (as written: {rec['speed_gate']['selected']})", "openvino", open_artifact(edgevit_ir), {}),
            ("edgevit INT8, patch embed + head INT8, bf16 leftovers", "openvino", open_artifact(lean_ir),
             {"precision": "bf16"}),
        ]
        rts = {}
        try:
            for name, runtime, art, opts in variants:
                rts[name] = load_runtime(runtime, art, threads=args.threads, **opts)
            timing = time_interleaved({n: rt.run for n, rt in rts.items()}, inputs, passes=args.passes,
                                      duration_s=args.duration, warmup_s=args.warmup)
            described = {n: rt.describe() for n, rt in rts.items()}
        finally:
            for rt in rts.values():
                rt.close()
        for name, runtime, art, _ in variants:
            t = timing[name]
            rows.append({"variant": name, "runtime": runtime, "median_ms": t["median_ms"],
                         "p90_ms": t["pooled"]["p90_ms"], "runs": t["pooled"]["runs"], "spread_pct": t["spread_pct"],
                         "precision": described[name].get("inference_precision"),
                         "mb": (art.file_size or 0) / 1e6 or None, "detail": t})
    torch_ms = rows[0]["median_ms"]
    plain_ms = min(rows[3]["median_ms"], rows[4]["median_ms"])  # plain NNCF at its faster precision
    for r in rows:
        r["x_torch"] = torch_ms / r["median_ms"]
        r["x_plain_nncf"] = plain_ms / r["median_ms"] if "INT8" in r["variant"] else None
    edge = rows[6]  # the artefact edgevit quantize writes by default, loaded the default way
    macs = count_macs_torch(model, spec)
    hw = load_profile(PROFILE)
    achieved = 2 * macs / (edge["median_ms"] / 1e3)
    roof = {}
    for mode in ("nominal", "boost"):
        peak = hw.peak_ops("int8", mode)
        roof[mode] = {"peak_int8_ops_s": peak, "fraction": achieved / peak}
    extra = {"macs": macs, "achieved_int8_ops_s": achieved, "roofline": roof, "hardware_profile": PROFILE}
    print(f"{args.model} at {spec.input_size[1]}×{spec.input_size[2]}, batch 1 ({weights} weights), "
          f"{args.calib_samples} real calibration images; median of {args.passes} interleaved passes of "
          f"{args.duration:g} s per variant")
    print(f"speed gate: {rec['speed_gate']['why']}")
    print(markdown_table([{k: v for k, v in r.items() if k != "detail"} for r in rows], COLS))
    print(f"targets: edgevit INT8 vs plain NNCF ×{edge['x_plain_nncf']:.2f} (target ≥ 1.0), vs torch eager "
          f"×{edge['x_torch']:.2f} (target ≥ 2.8)")
    print(f"INT8 roofline ({PROFILE}): {macs / 1e9:.3f} GMAC → {achieved / 1e9:.1f} GOPS achieved = "
          + ", ".join(f"{v['fraction'] * 100:.1f}% of the {m} peak ({v['peak_int8_ops_s'] / 1e12:.3f} TOPS)"
                      for m, v in roof.items()))
    write_json(args.json, {"benchmark": "quantize_deit", "model": args.model, "weights": weights, "quick": args.quick,
                           "calibration": where, "rows": rows, **extra, "edgevit_record": rec,
                           "targets": {"x_plain_nncf_min": 1.0, "x_torch_min": 2.8},
                           "system": system_stamp(threads=args.threads)})
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
