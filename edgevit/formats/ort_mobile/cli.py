"""``edgevit export ort-mobile``: ONNX file (or a model, exported to ONNX first) → ONNX Runtime ``.ort`` format.

Importable without torch or onnxruntime (both are imported when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(export_subparsers) -> argparse.ArgumentParser:
    """Add ``ort-mobile`` to the ``edgevit export`` sub-commands."""
    from ...cli.common import add_parity_args, add_source_args

    p = export_subparsers.add_parser(
        "ort-mobile", help="ONNX → ONNX Runtime .ort format (ORT Mobile) + required-operators config, parity on "
                           "real images",
        description="Convert an ONNX file to ONNX Runtime's .ort format with onnxruntime's own converter "
                    "(onnxruntime.tools.convert_onnx_models_to_ort). Writes <name>.ort, <name>.ort.spec.json and "
                    "<name>.required_operators.config (for a minimal onnxruntime build), and checks the .ort file "
                    "against the ONNX file (and the torch model, with --model) on real images. "
                    "`edgevit eval --artifact X.ort` and `edgevit profile X.ort` work on the result.")
    add_source_args(p, onnx_positional=True)
    p.add_argument("--out", required=True, help="output directory (e.g. runs/x/mobile/)")
    p.add_argument("--optimization", choices=["fixed", "runtime"], default="fixed",
                   help="fixed: optimisations baked in (CPU; default); runtime: saved and replayed at load time "
                        "(for NNAPI/CoreML builds)")
    p.add_argument("--target-platform", choices=["arm", "amd64"], default=None,
                   help="platform the .ort file is for (arm allows INT8 QDQ kernels)")
    p.add_argument("--type-reduction", action="store_true",
                   help="also record the types each operator needs in the config (smaller minimal builds)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset when exporting --model (default 18)")
    add_parity_args(p, tolerance_help="max abs logit difference (default: fp32 rule)")
    p.add_argument("--json", help="write the conversion record (max_abs_diff, top1_agreement, ...) here")
    p.set_defaults(func=cmd_export_ort_mobile)
    return p


def cmd_export_ort_mobile(args) -> int:
    from ...cli.common import model_from_args, one_source, parity_images, parity_summary, write_json_out

    one_source(args, "ort-mobile")
    from .export import export_model_ort_mobile, export_ort_mobile

    images = parity_images(args)
    options = {"optimization": args.optimization, "target_platform": args.target_platform,
               "enable_type_reduction": args.type_reduction, "parity": not args.no_parity,
               "tolerance": args.tolerance}
    if args.model:
        rec = export_model_ort_mobile(model_from_args(args), Path(args.out), opset=args.opset, parity_images=images,
                                      parity_samples=args.parity_samples, **options).to_dict()
    else:
        rec = export_ort_mobile(Path(args.onnx), Path(args.out), parity_images=images,
                                parity_samples=args.parity_samples, **options).to_dict()
    print(f"wrote {rec['path']} ({rec['optimization']}, {rec['file_size'] / 1e6:.2f} MB): {parity_summary(rec)}; "
          f"operator config {rec['config_path']}")
    write_json_out(args.json, rec)
    return 0
