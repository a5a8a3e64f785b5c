"""``edgevit export tensorrt``: ONNX → TensorRT engine (where TensorRT exists) and/or a Jetson device bundle.

Importable without torch, onnx or TensorRT (they are imported when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARITY_DATA = "fashion-mnist"  # the dataset of the parity images this command loads


def add_parser(export_subparsers) -> argparse.ArgumentParser:
    """Add ``tensorrt`` to the ``edgevit export`` sub-commands."""
    from ...cli.common import add_source_args, positive

    p = export_subparsers.add_parser(
        "tensorrt", help="ONNX → TensorRT engine (needs TensorRT) or --bundle: ONNX + INT8 calibration cache + "
                         "trtexec build/profile scripts for a Jetson (needs no TensorRT)",
        description="Without TensorRT here, --bundle writes everything a Jetson needs to build and measure the "
                    "engine itself (TensorRT engines must be built on the device): the ONNX file, an INT8 "
                    "calibration cache computed by edgevit from real images, build.sh and profile.sh (trtexec), "
                    "README.md and manifest.json with the TensorRT preflight. Where `import tensorrt` works, an "
                    "engine is also built here and checked against the ONNX file on real images.")
    add_source_args(p, onnx_positional=True)
    p.add_argument("--out", help="output directory (e.g. runs/x/trt/); required unless --preflight")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                   help="engine precision and the bundle's default (int8 = INT8 with FP16 fallback)")
    p.add_argument("--bundle", action="store_true",
                   help="write the device bundle (works without TensorRT)")
    p.add_argument("--no-engine", action="store_true", help="do not build an engine here even if TensorRT exists")
    p.add_argument("--calib", default="fashion-mnist",
                   help="calibration data: 'fashion-mnist' or an ImageFolder directory (default fashion-mnist)")
    p.add_argument("--calib-split", default="train", help="split of --calib used for calibration (default train)")
    p.add_argument("--calib-samples", type=positive, default=300, help="calibration images (default 300)")
    p.add_argument("--calib-method", choices=["entropy", "max", "percentile"], default="entropy",
                   help="how activation ranges are chosen (default entropy, like IInt8EntropyCalibrator2)")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--min-batch", type=positive, default=1, help="optimisation profile: smallest batch")
    p.add_argument("--opt-batch", type=positive, default=1, help="optimisation profile: batch to tune for")
    p.add_argument("--max-batch", type=positive, default=8, help="optimisation profile: largest batch")
    p.add_argument("--trt-version", default="10.3.0",
                   help="the device's TensorRT version, for the calibration cache header (10.3.0 = JetPack 6; "
                        "build.sh re-tags it on the device anyway)")
    p.add_argument("--workspace-mib", type=positive, default=1024, help="builder workspace (MiB)")
    p.add_argument("--parity-samples", type=positive, default=64, help="real test images for parity checks")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset when exporting --model (default 18)")
    p.add_argument("--preflight", action="store_true",
                   help="only check the ONNX operators against TensorRT's supported list (and INT8 fallbacks)")
    p.add_argument("--json", help="write the record (bundle, calibration, preflight, parity) here")
    p.set_defaults(func=cmd_export_tensorrt)
    return p


def cmd_export_tensorrt(args) -> int:
    from ...cli.common import model_from_args, one_source, write_json_out
    from ...errors import ConfigError

    one_source(args, "tensorrt")
    if args.preflight:
        if not args.onnx:
            raise ConfigError("--preflight checks an ONNX file: pass its path (edgevit export tensorrt X.onnx "
                              "--preflight)")
        from .preflight import format_preflight, tensorrt_preflight

        res = tensorrt_preflight(Path(args.onnx))
        print(format_preflight(res))
        write_json_out(args.json, res)
        return 0 if res["ok"] else 1
    if not args.out:
        raise ConfigError("edgevit export tensorrt needs --out DIR (where the bundle / engine go)")
    from .spec import require_tensorrt, tensorrt_available

    have, why = tensorrt_available()
    if not args.bundle and (args.no_engine or not have):
        if args.no_engine:
            raise ConfigError("--no-engine without --bundle leaves nothing to do; add --bundle")
        require_tensorrt("edgevit export tensorrt without --bundle (building an engine here)")

    from ...data import load_dataset
    from .export import export_tensorrt

    # the CLI chooses the parity data (the library takes it as an argument): Fashion-MNIST test images
    parity = load_dataset(PARITY_DATA, "test", limit=args.parity_samples)
    torch_model, onnx_path, onnx_parity = None, args.onnx, None
    out = Path(args.out)
    if args.model:
        from ..onnx.export import export_onnx

        torch_model = model_from_args(args)
        res_onnx = export_onnx(torch_model, out, opset=args.opset, parity_images=parity,
                               parity_samples=args.parity_samples)
        onnx_path, onnx_parity = res_onnx.path, res_onnx.parity.to_dict()
    rec = export_tensorrt(Path(onnx_path), out, precision=args.precision, bundle=args.bundle,
                          engine=False if args.no_engine else None, calib=args.calib, calib_split=args.calib_split,
                          calib_samples=args.calib_samples, calibration_method=args.calib_method, data_dir=args.data_dir,
                          min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                          trt_version=args.trt_version, workspace_mib=args.workspace_mib, onnx_parity=onnx_parity,
                          parity_images=parity, parity_samples=args.parity_samples).to_dict()
    parts = []
    if rec["bundle"]:
        cal = rec["calibration"]
        parts.append(f"wrote TensorRT device bundle {rec['bundle']['dir']} ({rec['precision']}; calibration cache "
                     f"{cal['tensors']} tensors, {cal['method']}, {cal['n']} real images)")
    pre = rec["preflight"]
    parts.append("preflight ok" if pre["ok"] else
                 "preflight: UNSUPPORTED " + ", ".join(u["op"] for u in pre["unsupported"]))
    if rec["engine"]:
        e = rec["engine"]
        parts.append(f"engine {e['path']} (TensorRT {e['tensorrt_version']}): max |Δ| vs ONNX "
                     f"{e['parity']['max_abs_diff']:.2e}, top-1 agreement {e['parity']['top1_agreement'] * 100:.1f}%")
    else:
        reason = "--no-engine" if args.no_engine else f"TensorRT not installed here ({why[:80]})"
        parts.append(f"no engine built here ({reason}); on the device run build.sh then profile.sh")
    print("; ".join(parts))
    write_json_out(args.json, rec)
    return 0
