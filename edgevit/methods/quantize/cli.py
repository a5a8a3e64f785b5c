"""``edgevit quantize``: INT8 post-training quantisation gated on measured accuracy and latency.

Importable without torch or any backend (they are imported when the command runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import QuantizeConfig

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``quantize`` to the top-level ``edgevit`` commands."""
    from ...cli.common import positive
    from .config import BACKENDS, GUARDRAILS, QuantizeConfig

    d = QuantizeConfig()
    p = subparsers.add_parser(
        "quantize", help="INT8 post-training quantisation (NNCF / ONNX Runtime) with ViT guardrails, gated on "
                         "measured top-1 and latency",
        description="Quantise a model to INT8 on real calibration images, evaluate the result through its runtime, "
                    "try safer configurations until the top-1 drop is within --budget, compare its latency with "
                    "FP32 (and bf16/fp16 where the runtime offers them) and write quantize.json plus the INT8 file "
                    "(model_int8.xml or model_int8.onnx) into --out.")
    p.add_argument("--model", help="edgevit model, timm name, or checkpoint path")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or .pt/.pth) for --model")
    p.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    p.add_argument("--artifact", default=None, help="quantise this FP32 .onnx (or .xml for openvino) file instead")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend)
    p.add_argument("--budget", type=float, default=d.budget, help="max top-1 drop vs FP32 in points (default 1.0)")
    p.add_argument("--calib", default=d.calib, help="calibration data: fashion-mnist or an ImageFolder directory")
    p.add_argument("--calib-split", default=d.calib_split)
    p.add_argument("--calib-samples", type=positive, default=d.calib_samples, help="calibration images (default 300)")
    p.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], default=None,
                   help="activation ranges (default: the backend's; entropy only with onnxruntime)")
    p.add_argument("--data", default=d.eval_data, help="evaluation data for the accuracy gate")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--split", default=d.eval_split, help="evaluation split (default test)")
    p.add_argument("--limit", type=positive, default=None, help="evaluate on the first N images only")
    p.add_argument("--preset", choices=["performance", "mixed"], default=d.preset)
    p.add_argument("--model-type", choices=["transformer", "none"], default=d.model_type, help="NNCF model_type")
    p.add_argument("--smooth-quant", choices=["auto", "on", "off"], default=d.smooth_quant)
    p.add_argument("--sq-alpha", type=float, default=None, help="SmoothQuant alpha")
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor weight scales")
    p.add_argument("--allow-int8", action="append", default=[], choices=GUARDRAILS, metavar="GUARDRAIL",
                   help=f"switch a guardrail off (repeatable): {', '.join(GUARDRAILS)}")
    p.add_argument("--ignore-types", nargs="+", default=[], help="op types kept in float")
    p.add_argument("--ignore-names", nargs="+", default=[], help="node names kept in float")
    p.add_argument("--ignore-patterns", nargs="+", default=[], help="regexes of node names kept in float")
    p.add_argument("--max-attempts", type=positive, default=d.max_attempts)
    p.add_argument("--no-speed-gate", action="store_true", help="keep INT8 even when a float variant is faster")
    p.add_argument("--runtimes", default=None, help="runtimes to time, comma-separated (default: all installed)")
    p.add_argument("--latency-s", type=float, default=d.latency_s, help="seconds of timed runs per measurement")
    p.add_argument("--threads", type=positive, default=None)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--json", help="also write the record (quantize.json) here")
    p.set_defaults(func=cmd_quantize)
    return p


def config_from_args(args) -> QuantizeConfig:
    """The validated :class:`QuantizeConfig` of the command's arguments."""
    from .config import QuantizeConfig

    off = set(args.allow_int8)
    cfg = QuantizeConfig(
        backend=args.backend, budget=args.budget, calib=args.calib, calib_split=args.calib_split,
        calib_samples=args.calib_samples, calibration_method=args.calib_method, eval_data=args.data,
        eval_split=args.split, eval_limit=args.limit, preset=args.preset, model_type=args.model_type,
        per_channel=not args.no_per_channel, smooth_quant=args.smooth_quant, smooth_quant_alpha=args.sq_alpha,
        guard_layernorm="layernorm" not in off, guard_softmax="softmax" not in off, guard_gelu="gelu" not in off,
        guard_residual_add="residual_add" not in off, float_patch_embed="patch_embed" not in off,
        float_head="head" not in off, ignored_types=list(args.ignore_types), ignored_names=list(args.ignore_names),
        ignored_patterns=list(args.ignore_patterns), max_attempts=args.max_attempts, speed_gate=not args.no_speed_gate,
        runtimes=[r.strip() for r in args.runtimes.split(",") if r.strip()] if args.runtimes else None,
        latency_s=args.latency_s, threads=args.threads)
    cfg.validate("edgevit quantize")
    return cfg


def cmd_quantize(args) -> int:
    from ...cli.common import write_json_out
    from ...errors import ConfigError

    if bool(args.model) == bool(args.artifact):
        raise ConfigError("edgevit quantize needs either --model NAME (or checkpoint) or --artifact FILE")
    cfg = config_from_args(args)
    from .core import quantize

    if args.model:
        from ...models import create

        source = create(args.model, checkpoint=args.checkpoint, arch=args.arch)
    else:
        source = Path(args.artifact)
    res = quantize(source, out_dir=Path(args.out), config=cfg, data_dir=args.data_dir)
    r = res.record
    lat = r["latency_ms"].get(r["primary_runtime"], {})
    print(f"wrote {r['int8']['path']} ({cfg.backend}): top-1 FP32 {r['fp32']['top1'] * 100:.2f}% → INT8 "
          f"{r['int8']['top1'] * 100:.2f}% (drop {r['int8']['drop_pt']:.2f} pt, budget {cfg.budget:g}) on "
          f"{r['int8']['n']} images after {len(r['attempts'])} attempt(s); batch-1 {r['primary_runtime']} "
          f"FP32 {lat.get('fp32', float('nan')):.3f} ms, INT8 {lat.get('int8', float('nan')):.3f} ms; kept "
          f"{r['speed_gate']['selected']} ({Path(args.out) / 'quantize.json'})")
    write_json_out(args.json, r)
    return 0
