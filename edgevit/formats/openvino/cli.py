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
    from ...cli.common import add_parity_args, add_source_args

    p = export_subparsers.add_parser(
        "openvino", help="torch (or ONNX) → OpenVINO IR (.xml + .bin), fp32 or fp16 weights, parity on real images",
        description="Convert a model to OpenVINO IR with openvino.convert_model and check it against the torch model "
                    "on real images. The IR stores the model's input spec, so `edgevit eval --artifact X.xml` and "
                    "`edgevit profile X.xml` work on it.")
    add_source_args(p)
    p.add_argument("--out", required=True, help="output directory (writes <model>.xml/.bin) or a path ending in .xml")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp32, or fp16-compressed weights (default fp32)")
    p.add_argument("--from-onnx", metavar="FILE", default=None,
                   help="convert this ONNX file instead of the torch model (the torch model, if given, stays the "
                        "parity reference; otherwise onnxruntime on the file is)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1 instead of a dynamic one")
    add_parity_args(p, tolerance_help="max abs logit difference vs the source (default by precision: 1e-3 / 5e-2 "
                                      "relative)")
    p.add_argument("--json", help="write the export record (max_abs_diff, top1_agreement, ...) here")
    p.set_defaults(func=cmd_export_openvino)
    return p


def cmd_export_openvino(args) -> int:
    from ...cli.common import write_json_out
    from ...errors import ConfigError

    if not args.model and not args.from_onnx:
        raise ConfigError("edgevit export openvino needs --model NAME (or checkpoint) or --from-onnx FILE")
    from ...cli.common import model_from_args, parity_images, parity_summary
    from .export import export_openvino

    model, calib = model_from_args(args), parity_images(args)
    rec = export_openvino(model, Path(args.out), precision=args.precision, from_onnx=args.from_onnx,
                          dynamic_batch=not args.static_batch, parity=not args.no_parity, parity_images=calib,
                          tolerance=args.tolerance, parity_samples=args.parity_samples).to_dict()
    print(f"wrote {rec['path']} ({rec['precision']}, from {rec['converted_from']}): {parity_summary(rec)}")
    write_json_out(args.json, rec)
    return 0
