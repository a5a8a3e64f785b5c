#!/usr/bin/env python
"""DeiT-Tiny (``deit_tiny_patch16_224``, 224×224, batch 1): edgevit's INT8 OpenVINO artefact vs plain
``nncf.quantize`` defaults on the same IR vs torch eager FP32, in one run; plus the INT8 artefact's achieved ops/s as a
fraction of this machine's INT8 roofline (issue: INT8 post-training quantisation, benchmarks 2 and 3).

    python benchmarks/quantize_deit.py --threads 2 --duration 5      # full
    python benchmarks/quantize_deit.py --quick                       # smoke run (32 calibration images, 0.3 s each)

Weights are timm's random init (no hub here; latency does not depend on the weights), so the accuracy gate is not
meaningful for this model and runs with an open budget on a few images; the speed gate is left off so the INT8 file
is what is timed. Calibration uses real Fashion-MNIST train images preprocessed to DeiT's input spec (resized to
224, grey → 3 channels, ImageNet mean/std) through edgevit.quantize.calibration_data — the same images for edgevit
and for plain NNCF. Targets: edgevit INT8 at least as fast as plain NNCF, and ≥ 2.8× torch eager FP32.
Roofline: 2 × MACs (counted by torch's FlopCounterMode) / median latency, over the INT8 peak of the hardware profile
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
from edgevit.profile.tables import markdown_table

log = logging.getLogger("quantize_deit")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "quantize_deit.json"
PROFILE = "epyc-zen4-2core"
COLS = [("variant", "variant"), ("runtime", "runtime"), ("median_ms", "median ms"), ("p90_ms", "p90 ms"),
        ("runs", "runs"), ("x_torch", "× torch eager"), ("x_plain_nncf", "× plain NNCF"), ("mb", "file MB")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--calib-samples", type=int, default=300)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of timed batch-1 runs per variant")
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
        args.calib_samples, args.duration, args.warmup = 32, 0.3, 0.1

    import nncf
    import openvino as ov
    import torch

    from edgevit.profile import profile_runtime, system_stamp
    from edgevit.profile.hardware import load_profile
    from edgevit.profile.macs import count_macs_torch
    from edgevit.quantize import QuantizeConfig, calibration_data, quantize
    from edgevit.runtimes import load_runtime, open_artifact

    if args.threads:
        torch.set_num_threads(args.threads)
    model, weights = build_model(args.model)
    model.eval()
    spec = model.edgevit_spec
    inputs = real_inputs(spec, 1)
    calib, where = calibration_data(spec, "fashion-mnist", samples=args.calib_samples)

    def timed(rt) -> dict:
        return profile_runtime(rt, batch_sizes=(1,), warmup_s=args.warmup, duration_s=args.duration, inputs=inputs,
                               progress=False)[0]

    rows, extra = [], {}
    with tempfile.TemporaryDirectory(prefix="edgevit-qdeit-") as tmp:
        root = args.out or Path(tmp)
        # 1. edgevit: FP32 IR from torch, NNCF with the ViT guardrails (one calibration set, default settings)
        cfg = QuantizeConfig(backend="openvino", budget=100.0, calib_samples=args.calib_samples, eval_limit=20,
                             batch_size=10, latency_s=args.duration, threads=args.threads, speed_gate=False,
                             float_precisions=["fp32"], runtimes=["openvino"], max_attempts=2)
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
        from edgevit.quantize.backends import Settings, quantize_file

        lean_cfg = QuantizeConfig(backend="openvino", float_patch_embed=False, float_head=False)
        lean_ir = root / "edgevit_lean" / "model.xml"
        quantize_file("openvino", fp32_ir, calib, lean_cfg,
                      Settings(smooth_quant=rec["int8"]["settings"]["smooth_quant"]), lean_ir, spec=spec,
                      source=args.model)
        # 3. time everything in one run, same threads, same real input
        variants = [
            ("torch eager FP32", "torch", Artifact(kind="torch", spec=spec, model=model, source=args.model), {}),
            ("OpenVINO FP32 (f32)", "openvino", open_artifact(fp32_ir), {"precision": "f32"}),
            ("OpenVINO FP32 IR @ bf16", "openvino", open_artifact(fp32_ir), {"precision": "bf16"}),
            ("plain nncf.quantize INT8", "openvino", open_artifact(plain_ir), {"precision": "f32"}),
            ("edgevit INT8 (guardrails)", "openvino", open_artifact(edgevit_ir), {"precision": "f32"}),
            ("edgevit INT8, patch embed + head INT8", "openvino", open_artifact(lean_ir), {"precision": "f32"}),
        ]
        for name, runtime, art, opts in variants:
            rt = load_runtime(runtime, art, threads=args.threads, **opts)
            try:
                row = timed(rt)
            finally:
                rt.close()
            rows.append({"variant": name, "runtime": runtime, "median_ms": row["median_ms"], "p90_ms": row["p90_ms"],
                         "runs": row["runs"], "mb": (art.file_size or 0) / 1e6 or None, "detail": row})
    torch_ms = rows[0]["median_ms"]
    plain_ms = rows[3]["median_ms"]
    for r in rows:
        r["x_torch"] = torch_ms / r["median_ms"]
        r["x_plain_nncf"] = plain_ms / r["median_ms"] if "INT8" in r["variant"] else None
    edge = rows[4]  # the artefact edgevit quantize writes by default
    macs = count_macs_torch(model, spec)
    hw = load_profile(PROFILE)
    achieved = 2 * macs / (edge["median_ms"] / 1e3)
    roof = {}
    for mode in ("nominal", "boost"):
        peak = hw.peak_ops("int8", mode)
        roof[mode] = {"peak_int8_ops_s": peak, "fraction": achieved / peak}
    extra = {"macs": macs, "achieved_int8_ops_s": achieved, "roofline": roof, "hardware_profile": PROFILE}
    print(f"{args.model} at {spec.input_size[1]}×{spec.input_size[2]}, batch 1 ({weights} weights), "
          f"{args.calib_samples} real calibration images; median of {args.duration:g} s per variant")
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
