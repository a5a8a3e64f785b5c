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
from .common import add_data_args, add_model_args, model_from_args, write_json_out
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
    p.add_argument("--json", help=command.json_help)
    p.set_defaults(func=run_export_command, **{_COMMAND_KEY: command})
    return p


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

