"""``edgevit export <format>``: one sub-command per registered format, built from the format's declaration.

Each format folder declares its command as an :class:`~edgevit.format_registry.ExportCommand`
(``edgevit/formats/<name>/cli.py``, named by ``FormatSpec.cli``); this module owns everything the terminal sees:
the shared flags (source, ``--out``, dataset, ``--json``), the flags generated from the command's options model
(:mod:`edgevit.cli.flags`), the source rule, the one-line summary and the JSON file. Importable without torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..format_registry import ExportCommand, cli_providers, resolve
from .common import add_data_args, add_model_args, dual_data_name, model_from_args, write_json_out
from .flags import add_config_flags, config_from_args

_COMMAND_KEY = "_edgevit_export_command"


def export_commands() -> list[ExportCommand]:
    """The :class:`~edgevit.format_registry.ExportCommand` of every registered format that declares one, in
    registry order (their modules import no backend, so this is cheap)."""
    return [resolve(ref) for ref in cli_providers()]


def add_export_commands(export_subparsers, commands: list[ExportCommand] | None = None) -> None:
    """Add ``edgevit export <name>`` for every registered format that declares a command, in registry order."""
    for command in export_commands() if commands is None else commands:
        add_export_command(export_subparsers, command)


def add_export_command(export_subparsers, command: ExportCommand) -> argparse.ArgumentParser:
    """Add one format's sub-command to ``export_subparsers``; returns its parser (flags in the order documented on
    :class:`~edgevit.format_registry.ExportCommand`)."""
    kw = {"help": command.help}
    if command.description is not None:
        kw["description"] = command.description
    p = export_subparsers.add_parser(command.name, **kw)
    if command.source == "either":
        p.add_argument("onnx", nargs="?", help="ONNX file (e.g. runs/x/model.onnx); or give --model")
    add_model_args(p, required=command.source == "model")
    p.add_argument("--out", required=command.out_required, help=command.out_help)
    add_config_flags(p, command.options, show_defaults=False)
    if command.action is not None:
        p.add_argument(command.action.flag, action="store_true", dest=_action_dest(command), help=command.action.help)
    if command.parity_data:
        add_data_args(p)
    if command.towers:
        g = p.add_argument_group("dual encoder", "when --model DIR is a dual image–text encoder (dual_encoder.json): "
                                                 "export its towers, each alone, into the folder --out")
        g.add_argument("--tower", choices=("image", "text", "both"), default=None,
                       help="which tower(s) to export; parity by cosine similarity on real test images / captions "
                            "(--data fashion-mnist means its pairs split); text towers take 32 tokens")
        g.add_argument("--classes", default="fashion-mnist",
                       help="class names whose text embeddings are stored with the image tower (fashion-mnist, or "
                            "names separated by commas), for zero-shot without the text tower")
        g.add_argument("--gallery", default=None, metavar="FILE",
                       help="a text file of captions (one per line) whose embeddings are stored with the image "
                            "tower too (a retrieval gallery)")
    p.add_argument("--json", help=command.json_help)
    p.set_defaults(func=run_export_command, **{_COMMAND_KEY: command})
    return p


def run_export_argv(argv: list[str]) -> int:
    """Parse ``argv`` as ``edgevit export FORMAT ...`` (every registered format's flags) and run it: the one
    implementation behind aliases such as ``edgevit vlm export``."""
    parser = argparse.ArgumentParser(prog="edgevit export")
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    add_export_commands(sub)
    return run_export_command(parser.parse_args(argv))


def _action_dest(command: ExportCommand) -> str:
    return command.action.flag.lstrip("-").replace("-", "_")


def run_export_command(args: argparse.Namespace) -> int:
    """Run the :class:`~edgevit.format_registry.ExportCommand` behind the parsed ``args``; returns the exit code.

    Raises :class:`~edgevit.errors.ConfigError` (exit code 2 in :func:`edgevit.cli.main`) for a bad option value
    (naming the flag), a missing or doubled source, and whatever the command's ``check`` refuses.
    """
    from ..errors import ConfigError

    command: ExportCommand = getattr(args, _COMMAND_KEY)
    what = f"edgevit export {command.name}"
    options = config_from_args(command.options, args, command=what)
    onnx = getattr(args, "onnx", None)
    if command.source == "either" and bool(onnx) == bool(args.model):
        raise ConfigError(f"{what} needs either an ONNX file (positional) or --model NAME, not both and not neither")
    if command.action is not None and getattr(args, _action_dest(command)):
        record, text, code = command.action.run(Path(onnx) if onnx else None, options)
        print(text)
        write_json_out(args.json, record)
        return code
    out = Path(args.out) if args.out else None
    if command.towers:
        tower_record = _maybe_towers(command, args, options, out, what)
        if tower_record is not None:
            write_json_out(args.json, tower_record)
            return 0
    if command.check is not None:
        command.check(bool(args.model), out, options)
    source = model_from_args(args) if args.model else (Path(onnx) if onnx else None)
    images = None
    if command.parity_data and not getattr(options, "no_parity", False):
        from ..data import load_dataset

        images = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=options.parity_samples)
    result = command.run(source, out, options, images)
    record = result.to_dict() if hasattr(result, "to_dict") else result  # an ExportResult, or a plain record
    print(command.summary(record, options))
    write_json_out(args.json, record)
    return 0



# ------------------------------------------------------------------------------------------- dual encoders
def _is_dual(model: str | None) -> bool:
    if not model:
        return False
    from ..methods.vlm.towers import DUAL_ENCODERS, is_dual_encoder_dir

    return is_dual_encoder_dir(model) or (model in DUAL_ENCODERS and not Path(model).exists())


def _maybe_towers(command: ExportCommand, args: argparse.Namespace, options, out: Path | None, what: str):
    """Export a dual encoder's towers when ``--model`` is one (returns the record), None for any other model.
    Raises :class:`~edgevit.errors.ConfigError` for a dual encoder without ``--tower`` and ``--tower`` on a
    classifier."""
    from ..errors import ConfigError

    dual = _is_dual(args.model)
    if not dual:
        if args.tower:
            raise ConfigError(f"--tower exports a dual encoder's towers, and {args.model or 'the source'} is not one "
                              f"(no dual_encoder.json); drop --tower, or pass --model DIR of a dual encoder")
        return None
    if not args.tower:
        raise ConfigError(f"{args.model} is a dual image–text encoder (two towers): pass --tower image, --tower text "
                          f"or --tower both (each tower is exported alone into the folder --out)")
    return export_towers_command(command.name, args.model, out, tower=args.tower, options=options,
                                 data=args.data, data_dir=args.data_dir, classes=args.classes, gallery=args.gallery)


TOWER_OPTION_KEYS = {"onnx": {"opset": "opset"}, "openvino": {"precision": "precision"},
                     "tvm": {"target": "target", "mcpu": "mcpu", "num_cores": "num_cores", "trials": "trials",
                             "batch": "batch", "work_dir": "work_dir", "retune": "retune",
                             "tuning_timeout": "tuning_timeout_s", "cc": "cc"}}


def export_towers_command(fmt: str, model_dir: str, out: Path | None, *, tower: str, options=None,
                          data: str = "fashion-mnist", data_dir: str | None = None, classes: str = "fashion-mnist",
                          gallery: str | None = None) -> dict:
    """``edgevit export <fmt> --model DUAL --tower T`` (and its alias ``edgevit vlm export``): load the dual
    encoder, take ``options.parity_samples`` real test images and captions of ``data`` (``fashion-mnist`` → its
    pairs split), export, print one line per tower; returns the record."""
    from ..data import fashion_mnist
    from ..data.captions import load_caption_dataset
    from ..errors import ConfigError
    from ..methods.vlm.deploy import export_towers
    from ..methods.vlm.towers import load_dual_encoder

    if out is None:
        raise ConfigError("--out DIR is needed: the folder the towers are written to")
    model = load_dual_encoder(model_dir)
    n = int(getattr(options, "parity_samples", 32) or 32)
    caps = load_caption_dataset(dual_data_name(data), "test", data_dir=data_dir, limit=n)
    names = fashion_mnist.CLASSES if classes == "fashion-mnist" else \
        tuple(c.strip() for c in classes.split(",") if c.strip())
    texts = None
    if gallery:
        p = Path(gallery)
        if not p.is_file():
            raise ConfigError(f"--gallery {gallery}: no such file (a text file of captions, one per line)")
        texts = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    opts = {dst: getattr(options, src) for src, dst in TOWER_OPTION_KEYS[fmt].items()
            if options is not None and getattr(options, src, None) is not None}
    rec = export_towers(model, fmt, out, tower=tower, images=caps.images, texts=list(caps.captions)[:n],
                        classes=names, gallery=texts, options=opts)
    for r in rec["towers"]:
        extra = f"; {len(names)} class embeddings stored in {Path(r['text_embeddings']).name}" \
            if r.get("text_embeddings") else ""
        tokens = f", {r['tokens']} tokens" if r.get("tokens") else ""
        print(f"{r['tower']} tower → {r['path']}: cosine to torch ≥ {r['min_cosine']:.6f} (mean "
              f"{r['mean_cosine']:.6f}) on {r['n']} real {'images' if r['tower'] == 'image' else 'captions'}"
              f"{tokens}{extra}")
    return rec
