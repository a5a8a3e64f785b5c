"""``edgevit quantize``: INT8 post-training quantisation gated on measured accuracy and latency.

Importable without torch or any backend (they are imported when the command runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..methods.quantize.config import QuantizeConfig

log = logging.getLogger(__name__)


# CLI spellings that differ from ``--field-name`` (the fields, types, defaults and help live in QuantizeConfig)
FLAGS = {"calibration_method": "--calib-method", "eval_data": "--data", "eval_split": "--split",
         "eval_limit": "--limit", "smooth_quant_alpha": "--sq-alpha", "ignored_types": "--ignore-types",
         "ignored_names": "--ignore-names", "ignored_patterns": "--ignore-patterns"}
# the six guardrail switches are one repeatable flag, --allow-int8 GUARDRAIL
GUARD_FIELDS = {"layernorm": "guard_layernorm", "softmax": "guard_softmax", "gelu": "guard_gelu",
                "residual_add": "guard_residual_add", "patch_embed": "float_patch_embed", "head": "float_head"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``quantize`` to the top-level ``edgevit`` commands (its config flags are generated from QuantizeConfig)."""
    from ..methods.quantize.config import GUARDRAILS, QuantizeConfig
    from .flags import add_config_flags

    p = subparsers.add_parser(
        "quantize", help="INT8 post-training quantisation (NNCF / ONNX Runtime) with ViT guardrails, gated on "
                         "measured top-1 and latency",
        description="Quantise a model to INT8 on real calibration images, evaluate the result through its runtime, "
                    "try safer configurations until the top-1 drop is within --budget, compare its latency with "
                    "FP32 (and bf16/fp16 where the runtime offers them) and write quantize.json plus the INT8 file "
                    "(model_int8.xml or model_int8.onnx) into --out, and the variant the speed gate kept as "
                    "model_selected.xml/.onnx, whose metadata says the precision it runs in.")
    p.add_argument("--model", help="edgevit model, timm name, or checkpoint path")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or .pt/.pth) for --model")
    p.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    p.add_argument("--artifact", default=None, help="quantise this FP32 .onnx (or .xml for openvino) file instead")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    add_config_flags(p, QuantizeConfig, exclude={"version", *GUARD_FIELDS.values()}, flags=FLAGS,
                     comma={"runtimes", "mixed_precision_layers", "float_precisions"})
    p.add_argument("--allow-int8", action="append", default=[], choices=GUARDRAILS, metavar="GUARDRAIL",
                   help=f"switch a guardrail off (repeatable): {', '.join(GUARDRAILS)}")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--json", help="also write the record (quantize.json) here")
    p.set_defaults(func=cmd_quantize)
    return p


def config_from_args(args) -> QuantizeConfig:
    """The validated :class:`QuantizeConfig` of the command's arguments (ConfigError names the bad flag)."""
    from ..methods.quantize.config import QuantizeConfig
    from .flags import config_from_args as build

    off = set(args.allow_int8)
    return build(QuantizeConfig, args, command="edgevit quantize",
                 extra={field: guard not in off for guard, field in GUARD_FIELDS.items()})


def cmd_quantize(args) -> int:
    from ..errors import ConfigError
    from .common import write_json_out

    if bool(args.model) == bool(args.artifact):
        raise ConfigError("edgevit quantize needs either --model NAME (or checkpoint) or --artifact FILE")
    cfg = config_from_args(args)
    from ..methods.quantize.core import quantize

    if args.model:
        from ..models import create

        source = create(args.model, checkpoint=args.checkpoint, arch=args.arch)
    else:
        source = Path(args.artifact)
    res = quantize(source, out_dir=Path(args.out), config=cfg, data_dir=args.data_dir)
    r = res.record
    print(f"wrote {r['int8']['path']} ({cfg.backend}): {r['summary']} ({Path(args.out) / 'quantize.json'})")
    write_json_out(args.json, r)
    return 0
