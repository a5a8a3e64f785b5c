"""Arguments and steps shared by the ``edgevit export <format>`` commands (importable without torch)."""

from __future__ import annotations

import argparse


def add_source_args(p: argparse.ArgumentParser, *, onnx_positional: bool = False, required: bool = False) -> None:
    """Where the model comes from: ``--model`` (+ checkpoint/arch/pretrained), optionally an ONNX file instead."""
    from ..cli import _add_model_args

    if onnx_positional:
        p.add_argument("onnx", nargs="?", help="ONNX file (e.g. runs/x/model.onnx); or give --model")
    _add_model_args(p, required=required)


def add_parity_args(p: argparse.ArgumentParser, *, tolerance_help: str = "max abs logit difference vs the source "
                    "(default by precision)") -> None:
    """``--tolerance``, ``--parity-samples``, ``--no-parity`` and the dataset the real parity images come from."""
    from ..cli import _add_data_args, _positive

    p.add_argument("--tolerance", type=float, default=None, help=tolerance_help)
    p.add_argument("--parity-samples", type=_positive, default=64, help="real images for the parity check")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    _add_data_args(p)


def one_source(args: argparse.Namespace, command: str) -> None:
    """Refuse both or neither of the ONNX file and ``--model``."""
    from ..errors import ConfigError

    if bool(args.onnx) == bool(args.model):
        raise ConfigError(f"edgevit export {command} needs either an ONNX file (positional) or --model NAME, not "
                          "both and not neither")


def model_from_args(args: argparse.Namespace):
    """The torch model named by ``--model`` (None when not given)."""
    if not args.model:
        return None
    from ..models import create

    return create(args.model, checkpoint=args.checkpoint, pretrained=getattr(args, "pretrained", False),
                  arch=args.arch)


def parity_images(args: argparse.Namespace):
    """The real images for the parity check, or None with ``--no-parity``."""
    if args.no_parity:
        return None
    from ..data import load_dataset

    return load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.parity_samples)


def parity_summary(rec: dict) -> str:
    """One phrase on an export record's parity figures."""
    if rec.get("max_abs_diff") is None:
        return f"parity skipped ({rec['parity_skipped']})" if rec.get("parity_skipped") else "parity skipped"
    text = f"max |Δ| {rec['max_abs_diff']:.2e}"
    if rec.get("cosine") is not None:
        text += f", cosine {rec['cosine']:.6f}"
    text += f", top-1 agreement {rec['top1_agreement'] * 100:.1f}% on {rec['n']} real images"
    if rec.get("parity_reference"):
        text += f" vs {rec['parity_reference']}"
    return text
