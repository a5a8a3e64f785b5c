"""Arguments and steps shared by every ``edgevit`` command (importable without torch).

Public so that the CLI sub-commands of formats (``edgevit/formats/<name>/cli.py``) and methods
(``edgevit/methods/<name>/cli.py``) build their parsers from the same pieces."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("edgevit")


def int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8; got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8; got {text!r}")
    return vals


def positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def write_json_out(path: str | None, obj) -> None:
    if path:
        from ..artifact import write_json

        write_json(Path(path), obj)
        log.info("wrote %s", path)


def add_data_args(p: argparse.ArgumentParser, *, split: str = "test") -> None:
    p.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an ImageFolder directory")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files "
                                                    "(default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--split", default=split, help=f"dataset split (default {split})")
    p.add_argument("--limit", type=positive, default=None, help="use only the first N samples")


def add_model_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--model", required=required, help="edgevit model, timm name, or checkpoint path")
    p.add_argument("--checkpoint", default=None, help="weights (.safetensors, or .pt/.pth) for --model")
    p.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    p.add_argument("--pretrained", action="store_true", help="download timm pretrained weights (needs a hub)")


def model_artifact(args):
    from ..artifact import Artifact
    from ..models import create

    model = create(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained, arch=args.arch)
    return Artifact(kind="torch", spec=model.edgevit_spec, model=model, source=model.edgevit_name)


def artifact_from_args(args):
    """--artifact PATH (any exported file) or --model NAME: the artefact to evaluate or profile."""
    from ..errors import ConfigError
    from ..runtimes import open_artifact

    path = getattr(args, "artifact", None) or getattr(args, "target", None)
    if path and args.model:
        raise ConfigError("give either --artifact/PATH or --model, not both")
    if path:
        return open_artifact(path)
    if args.model:
        return model_artifact(args)
    raise ConfigError("nothing to run: pass --model NAME or --artifact PATH")


def default_runtime(kind: str) -> str:
    """The runtime used for an artefact kind when --runtime is not given."""
    from ..errors import ConfigError
    from ..runtimes import runtimes_for_kind

    preferred = {"torch": "torch", "onnx": "onnxruntime", "ort": "onnxruntime"}
    if kind in preferred:
        return preferred[kind]
    names = runtimes_for_kind(kind)
    if not names:
        raise ConfigError(f"no registered runtime loads '{kind}' artefacts; see `edgevit list runtimes`")
    return names[0]


def add_source_args(p: argparse.ArgumentParser, *, onnx_positional: bool = False, required: bool = False) -> None:
    """Where the model comes from: ``--model`` (+ checkpoint/arch/pretrained), optionally an ONNX file instead."""
    if onnx_positional:
        p.add_argument("onnx", nargs="?", help="ONNX file (e.g. runs/x/model.onnx); or give --model")
    add_model_args(p, required=required)


def add_parity_args(p: argparse.ArgumentParser, *, tolerance_help: str = "max abs logit difference vs the source "
                    "(default by precision)") -> None:
    """``--tolerance``, ``--parity-samples``, ``--no-parity`` and the dataset the real parity images come from."""
    p.add_argument("--tolerance", type=float, default=None, help=tolerance_help)
    p.add_argument("--parity-samples", type=positive, default=64, help="real images for the parity check")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    add_data_args(p)


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
