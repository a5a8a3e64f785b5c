"""``edgevit export ort-mobile``: ONNX file (or a model, exported to ONNX first) → ONNX Runtime ``.ort`` format.

Importable without torch or onnxruntime (both are imported when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(export_subparsers) -> argparse.ArgumentParser:
    """Add ``ort-mobile`` to the ``edgevit export`` sub-commands."""
    from ..cli import _add_data_args, _positive

    p = export_subparsers.add_parser(
        "ort-mobile", help="ONNX → ONNX Runtime .ort format (ORT Mobile) + required-operators config, parity on "
                           "real images",
        description="Convert an ONNX file to ONNX Runtime's .ort format with onnxruntime's own converter "
                    "(onnxruntime.tools.convert_onnx_models_to_ort). Writes <name>.ort, <name>.ort.spec.json and "
                    "<name>.required_operators.config (for a minimal onnxruntime build), and checks the .ort file "
                    "against the ONNX file (and the torch model, with --model) on real images. "
                    "`edgevit eval --artifact X.ort` and `edgevit profile X.ort` work on the result.")
    p.add_argument("onnx", nargs="?", help="ONNX file to convert (e.g. runs/x/model.onnx); or give --model")
    p.add_argument("--model", help="edgevit model, timm name or checkpoint: exported to ONNX in --out first")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or .pt/.pth) for --model")
    p.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    p.add_argument("--pretrained", action="store_true", help="download timm pretrained weights (needs a hub)")
    p.add_argument("--out", required=True, help="output directory (e.g. runs/x/mobile/)")
    p.add_argument("--optimization", choices=["fixed", "runtime"], default="fixed",
                   help="fixed: optimisations baked in (CPU; default); runtime: saved and replayed at load time "
                        "(for NNAPI/CoreML builds)")
    p.add_argument("--target-platform", choices=["arm", "amd64"], default=None,
                   help="platform the .ort file is for (arm allows INT8 QDQ kernels)")
    p.add_argument("--type-reduction", action="store_true",
                   help="also record the types each operator needs in the config (smaller minimal builds)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset when exporting --model (default 18)")
    p.add_argument("--tolerance", type=float, default=None, help="max abs logit difference (default: fp32 rule)")
    p.add_argument("--parity-samples", type=_positive, default=64, help="real images for the parity check")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    _add_data_args(p)
    p.add_argument("--json", help="write the conversion record (max_abs_diff, top1_agreement, ...) here")
    p.set_defaults(func=cmd_export_ort_mobile)
    return p


def cmd_export_ort_mobile(args) -> int:
    from ..cli import _write_json
    from ..errors import ConfigError

    if bool(args.onnx) == bool(args.model):
        raise ConfigError("edgevit export ort-mobile needs either an ONNX file (positional) or --model NAME, not "
                          "both and not neither")
    from ..data import load_dataset
    from .ort_mobile import export_model_ort_mobile, export_ort_mobile

    images = None
    if not args.no_parity:
        images = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.parity_samples)
    options = {"optimization": args.optimization, "target_platform": args.target_platform,
               "enable_type_reduction": args.type_reduction, "parity": not args.no_parity,
               "tolerance": args.tolerance}
    if args.model:
        from ..models import create

        model = create(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained, arch=args.arch)
        rec = export_model_ort_mobile(model, Path(args.out), opset=args.opset, calib_images=images,
                                      parity_samples=args.parity_samples, **options)
    else:
        rec = export_ort_mobile(Path(args.onnx), Path(args.out), calib_images=images,
                                parity_samples=args.parity_samples, **options)
    if rec["max_abs_diff"] is None:
        print(f"wrote {rec['path']} ({rec['optimization']}); operator config {rec['config_path']}; parity skipped")
    else:
        print(f"wrote {rec['path']} ({rec['optimization']}, {rec['file_size'] / 1e6:.2f} MB): max |Δ| "
              f"{rec['max_abs_diff']:.2e}, top-1 agreement {rec['top1_agreement'] * 100:.1f}% on {rec['n']} real "
              f"images vs {rec['parity_reference']}; operator config {rec['config_path']}")
    _write_json(args.json, rec)
    return 0
