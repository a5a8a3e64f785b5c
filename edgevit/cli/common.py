"""Arguments and steps shared by every ``edgevit`` command (importable without torch).

Used only inside the CLI package: the method sub-commands (``edgevit/cli/<method>.py``) and the generic
``edgevit export <format>`` builder (:mod:`edgevit.cli.export`) take their parsers from the same pieces."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("edgevit")


def int_list(text: str) -> list[int]:
    items = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in items):  # '1,,8', '1,', ',8': a missing value is a typo, not a skip
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8 (no empty items); got {text!r}")
    try:
        vals = [int(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8; got {text!r}") from None
    if any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8; got {text!r}")
    return vals


def positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text}")
    return v


def check_json_out(path: str | None, flag: str = "--json") -> None:
    """Refuse an output file path that cannot be written — a directory, a path under a file, a folder without write
    permission — with :class:`~edgevit.errors.ConfigError`, before a command does any work.
    :func:`edgevit.cli.main` calls it for every command's ``--json``."""
    if not path:
        return
    import os

    from ..errors import ConfigError

    p = Path(path)
    if str(path).endswith(("/", os.sep)) or p.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; give a file path such as {p / 'result.json'}")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {path}: the file exists and is not writable")
    parent = p.absolute().parent
    while not parent.exists():  # write_json creates missing folders: the nearest existing one must take them
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write into {parent} (no write permission); choose another path")


def write_json_out(path: str | None, obj) -> None:
    if path:
        check_json_out(path)
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


def model_from_args(args: argparse.Namespace):
    """The torch model named by ``--model`` (None when not given)."""
    if not args.model:
        return None
    from ..models import create

    return create(args.model, checkpoint=args.checkpoint, pretrained=getattr(args, "pretrained", False),
                  arch=args.arch)


def check_runtime_names(runtime: str | None) -> None:
    """Raise :class:`~edgevit.errors.RegistryError` (allowed names, close matches) for an unknown name in a
    comma-separated ``--runtime`` value — before any file is opened, so the error names the real mistake."""
    if not runtime:
        return
    from ..runtimes import RUNTIMES

    for name in runtime.split(","):
        RUNTIMES.get(name.strip())


def runtime_options(args) -> dict:
    """Runtime options from the command line (``--precision`` for OpenVINO)."""
    precision = getattr(args, "precision", None)
    if precision is None:
        return {}
    names = [r.strip() for r in (args.runtime or "").split(",") if r.strip()]
    if names and any(n not in ("openvino", "cascade") for n in names):
        from ..errors import ConfigError

        raise ConfigError(f"--precision sets OpenVINO's inference precision; runtime(s) {', '.join(names)} do not "
                          f"take it (use --runtime openvino)")
    return {"precision": precision}


def dual_data_name(name: str) -> str:
    """The caption dataset a dual-encoder command's ``--data`` names: ``fashion-mnist`` means its pairs split (the
    one with hard negatives); any other name is the caption dataset itself."""
    return "fashion-mnist-pairs" if name == "fashion-mnist" else name
