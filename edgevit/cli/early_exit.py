"""``edgevit early-exit train|calibrate|export|quantize`` (importable without torch; heavy imports run inside commands)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _thresholds(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1] like 0.9,0.9; got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``early-exit`` with its three sub-commands to the top-level ``edgevit`` commands."""
    from ..methods.early_exit.config import TrainConfig
    from .common import positive
    from .flags import add_config_flags

    p = subparsers.add_parser("early-exit", help="LGViT early exits: train heads, calibrate thresholds, export a cascade",
                              description="LGViT early exits (local-perception and global-aggregation heads, two-stage training, calibrated thresholds) on timm ViT/DeiT/EVA/BEiT-style models; see README.md, \"early exits\".")
    sub = p.add_subparsers(dest="ee_command", metavar="STEP", required=True)

    t = sub.add_parser("train", help="attach exit heads and train stage 1 (end-to-end) + stage 2 (self-distillation)")
    t.add_argument("--model", required=True, help="edgevit model, timm name or checkpoint path (the trained backbone)")
    t.add_argument("--checkpoint", default=None, help="weights for --model")
    t.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    t.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an ImageFolder directory")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--out", required=True, help="run folder (writes early_exit.safetensors, train.json)")
    t.add_argument("--holdout", type=positive, default=5000,
                   help="last N train images held out for calibration, never trained on (default 5000)")
    t.add_argument("--limit", type=positive, default=None, help="train on the first N of the remaining images")
    add_config_flags(t, TrainConfig)  # --stage1-epochs ... --alpha --temperature --beta-hete --beta-homo ...
    t.add_argument("--steps", type=int, default=None, help="cap both stages at N steps (quick runs; --stage1-steps / "
                                                           "--stage2-steps override it per stage)")
    t.add_argument("--threads", type=positive, default=None, help="torch threads")
    t.add_argument("--json", help="write the training record here too")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("calibrate", help="thresholds minimising measured latency within an accuracy budget")
    c.add_argument("run", help="run folder of `early-exit train` (or its early_exit.safetensors)")
    c.add_argument("--budget", type=float, required=True,
                   help="allowed top-1 loss in percentage points relative to the final head, on the held-out split")
    c.add_argument("--runtime", default="onnxruntime", help="runtime whose measured latencies are used "
                                                             "(onnxruntime | openvino)")
    c.add_argument("--criterion", choices=["confidence", "entropy"], default="confidence")
    c.add_argument("--holdout", type=positive, default=None, help="held-out size (default: the one used in training)")
    c.add_argument("--heldout-limit", type=positive, default=None, help="use only the first N held-out images")
    c.add_argument("--threads", type=positive, default=None, help="runtime threads for the latency measurement")
    c.add_argument("--duration", type=float, default=1.0, help="seconds of timed runs per graph")
    c.add_argument("--warmup", type=float, default=0.2, help="seconds of warm-up per graph")
    c.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto")
    c.add_argument("--json", help="write the calibration record here too")
    c.set_defaults(func=cmd_calibrate)

    e = sub.add_parser("export", help="segments + heads as static graphs and manifest.json, parity on real images")
    e.add_argument("run", help="run folder of `early-exit train` (calibration.json is used when present)")
    e.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    e.add_argument("--out", required=True, help="output folder (manifest.json and the graphs)")
    e.add_argument("--thresholds", type=_thresholds, default=None,
                   help="comma-separated thresholds, one per exit (default: calibration.json)")
    e.add_argument("--criterion", choices=["confidence", "entropy"], default=None)
    e.add_argument("--parity-samples", type=positive, default=64, help="real test images for the parity checks")
    e.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto")
    e.add_argument("--if-form", action="store_true",
                   help="also write cascade_if.onnx: the cascade as ONE graph with nested If nodes (batch 1; one "
                        "session instead of one per segment and head)")
    e.add_argument("--json", help="write the export record here")
    e.set_defaults(func=cmd_export)

    q = sub.add_parser("quantize", help="INT8 copy of an exported cascade (every segment and head, real calibration)")
    q.add_argument("cascade", help="folder (or manifest.json) written by `early-exit export`")
    q.add_argument("--out", required=True, help="output folder for the INT8 cascade")
    q.add_argument("--backend", choices=["openvino", "onnxruntime", "nncf-onnx"], default=None,
                   help="default: openvino for an OpenVINO cascade, onnxruntime for an ONNX one")
    q.add_argument("--calib", default="fashion-mnist", help="calibration images: 'fashion-mnist' or an ImageFolder")
    q.add_argument("--calib-samples", type=positive, default=300)
    q.add_argument("--smooth-quant", choices=["auto", "on", "off"], default="auto")
    q.add_argument("--int8-classifiers", action="store_true", help="quantise the exit/final classifiers too")
    q.add_argument("--parity-samples", type=positive, default=500, help="real test images for INT8 vs FP32")
    q.add_argument("--threads", type=positive, default=None)
    q.add_argument("--json", help="write the record here too")
    q.set_defaults(func=cmd_quantize)
    return p


def cmd_train(args) -> int:
    from ..methods.early_exit.config import TrainConfig
    from ..methods.early_exit.run import train_run
    from .common import write_json_out
    from .flags import config_from_args

    cfg = config_from_args(TrainConfig, args, command="edgevit early-exit train",
                           extra={key: args.steps for key in ("stage1_steps", "stage2_steps")
                                  if getattr(args, key) is None and args.steps is not None})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..models import create

    model = create(args.model, checkpoint=args.checkpoint, arch=args.arch)
    rec = train_run(model, args.out, data=args.data, data_dir=args.data_dir, holdout=args.holdout, limit=args.limit,
                    config=cfg)
    print(f"wrote {rec['checkpoint']}: {len(rec['model']['exits'])} exits after blocks "
          f"{[e['block'] for e in rec['model']['exits']]}; stage 1 {rec['stage1']['steps']} steps, stage 2 "
          f"{rec['stage2']['steps']} steps on {rec['split']['train_samples']} images ({rec['seconds']:.0f} s)")
    write_json_out(args.json, rec)
    return 0


def cmd_calibrate(args) -> int:
    from ..methods.early_exit.run import calibrate_run
    from .common import write_json_out

    rec = calibrate_run(args.run, budget=args.budget, runtime=args.runtime, criterion=args.criterion,
                        holdout=args.holdout, heldout_limit=args.heldout_limit, threads=args.threads,
                        warmup_s=args.warmup, duration_s=args.duration, exporter=args.exporter)
    print(f"thresholds {', '.join(f'{v:.4f}' for v in rec['thresholds'])} ({rec['criterion']}, {rec['runtime']}): "
          f"held-out top-1 {rec['top1'] * 100:.2f}% vs final head {rec['final_top1'] * 100:.2f}% (budget "
          f"{rec['budget_pt']} pt), expected {rec['expected_ms']:.3f} ms vs {rec['segments_only_ms']:.3f} ms without "
          f"exits, mean exit {rec['mean_exit']:.2f}, n={rec['n']}")
    write_json_out(args.json, rec)
    return 0


def cmd_export(args) -> int:
    from ..data import load_dataset
    from ..methods.early_exit.run import export_run
    from .common import write_json_out

    # the CLI chooses the parity data (library functions take it as an argument): Fashion-MNIST test images
    parity = load_dataset("fashion-mnist", "test", limit=args.parity_samples)
    rec = export_run(args.run, args.out, format=args.format, thresholds=args.thresholds, criterion=args.criterion,
                     parity_samples=args.parity_samples, parity_images=parity, exporter=args.exporter,
                     if_form=args.if_form).to_dict()
    print(f"wrote {rec['path']} ({rec['backend']}, {len(rec['files'])} graphs): max |Δ| {rec['max_abs_diff']:.2e}, "
          f"exit agreement {rec['exit_agreement'] * 100:.1f}%, top-1 agreement {rec['top1_agreement'] * 100:.1f}% "
          f"on {rec['n']} real images vs torch")
    if rec.get("if_form"):
        f = rec["if_form"]
        print(f"wrote {f['path']} (If form, exits {f['active_exits']} active): max |Δ| "
              f"{f['parity_vs_cascade']['max_abs_diff']:.2e} vs the segment cascade on "
              f"{f['parity_vs_cascade']['n']} real images, one at a time")
    write_json_out(args.json, rec)
    return 0


def cmd_quantize(args) -> int:
    from ..data import load_dataset
    from ..formats.cascade.runtime import read_manifest
    from ..methods.early_exit.quantize import quantize_cascade
    from ..methods.quantize import QuantizeConfig
    from .common import write_json_out

    backend = args.backend or ("openvino" if read_manifest(args.cascade).get("backend") == "openvino" else
                               "onnxruntime")
    cfg = QuantizeConfig(backend=backend, calib=args.calib, calib_samples=args.calib_samples,
                         smooth_quant=args.smooth_quant, float_head=not args.int8_classifiers)
    # the CLI chooses the INT8-vs-FP32 comparison data (library functions take it as an argument)
    parity = load_dataset("fashion-mnist", "test", limit=args.parity_samples)
    rec = quantize_cascade(args.cascade, args.out, backend=backend, config=cfg, parity_images=parity,
                           parity_samples=args.parity_samples, threads=args.threads)
    p = rec["parity_vs_fp32"]
    print(f"wrote {rec['path']} ({backend}, {len(rec['graphs'])} INT8 graphs, {rec['calibration']['n']} calibration "
          f"images): vs FP32 on {p['n']} real images, exit agreement {p['exit_agreement'] * 100:.1f}%, top-1 "
          f"agreement {p['top1_agreement'] * 100:.1f}%, max |Δ logits| {p['max_abs_diff']:.3f}")
    write_json_out(args.json, rec)
    return 0
