"""``edgevit export openvino``: torch model (or ONNX file) → OpenVINO IR with a parity check on real images.

Importable without torch or openvino (both are imported when the command runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(export_subparsers) -> argparse.ArgumentParser:
    """Add ``openvino`` to the ``edgevit export`` sub-commands."""
    from ..cli import _add_data_args, _positive

    p = export_subparsers.add_parser(
        "openvino", help="torch (or ONNX) → OpenVINO IR (.xml + .bin), fp32 or fp16 weights, parity on real images",
        description="Convert a model to OpenVINO IR with openvino.convert_model and check it against the torch model "
                    "on real images. The IR stores the model's input spec, so `edgevit eval --artifact X.xml` and "
                    "`edgevit profile X.xml` work on it.")
    p.add_argument("--model", help="edgevit model, timm name, or checkpoint path (optional with --from-onnx)")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or .pt/.pth) for --model")
    p.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    p.add_argument("--pretrained", action="store_true", help="download timm pretrained weights (needs a hub)")
    p.add_argument("--out", required=True, help="output directory (writes <model>.xml/.bin) or a path ending in .xml")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp32, or fp16-compressed weights (default fp32)")
    p.add_argument("--from-onnx", metavar="FILE", default=None,
                   help="convert this ONNX file instead of the torch model (the torch model, if given, stays the "
                        "parity reference; otherwise onnxruntime on the file is)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1 instead of a dynamic one")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs logit difference vs the source (default by precision: 1e-3 / 5e-2 relative)")
    p.add_argument("--parity-samples", type=_positive, default=64, help="real images for the parity check")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    _add_data_args(p)
    p.add_argument("--json", help="write the export record (max_abs_diff, top1_agreement, ...) here")
    p.set_defaults(func=cmd_export_openvino)
    return p


def cmd_export_openvino(args) -> int:
    from ..cli import _write_json
    from ..errors import ConfigError

    if not args.model and not args.from_onnx:
        raise ConfigError("edgevit export openvino needs --model NAME (or checkpoint) or --from-onnx FILE")
    from ..data import load_dataset
    from .openvino import export_openvino

    model = None
    if args.model:
        from ..models import create

        model = create(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained, arch=args.arch)
    calib = None
    if not args.no_parity:
        calib = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.parity_samples)
    rec = export_openvino(model, Path(args.out), precision=args.precision, from_onnx=args.from_onnx,
                          dynamic_batch=not args.static_batch, parity=not args.no_parity, calib_images=calib,
                          tolerance=args.tolerance, parity_samples=args.parity_samples)
    if rec["max_abs_diff"] is None:
        print(f"wrote {rec['path']} ({rec['precision']}, from {rec['converted_from']}); parity check skipped")
    else:
        print(f"wrote {rec['path']} ({rec['precision']}, from {rec['converted_from']}): max |Δ| "
              f"{rec['max_abs_diff']:.2e}, cosine {rec['cosine']:.6f}, top-1 agreement "
              f"{rec['top1_agreement'] * 100:.1f}% on {rec['n']} real images vs {rec['parity_reference']}")
    _write_json(args.json, rec)
    return 0
