"""Sub-commands contributed by the method and format packages (quantize, distill, early-exit, export formats).

Each entry is ``(module, function)``; the function takes an argparse sub-parsers object and adds its parsers.
Modules listed here must be importable without torch or any backend (import those inside the command).
"""

from __future__ import annotations

import importlib

# top-level commands: fn(subparsers) adds e.g. `edgevit quantize`
COMMAND_PROVIDERS: list[tuple[str, str]] = [
    ("edgevit.distill.cli", "add_parser"),
    ("edgevit.early_exit.cli", "add_parser"),
    ("edgevit.quantize.cli", "add_parser"),
]

# export formats: fn(export_subparsers) adds e.g. `edgevit export openvino`
EXPORT_PROVIDERS: list[tuple[str, str]] = [
    ("edgevit.export.ort_mobile_cli", "add_parser"),
    ("edgevit.export.tensorrt_cli", "add_parser"),
    ("edgevit.export.openvino_cli", "add_parser"),
    ("edgevit.export.tvm_cli", "add_parser"),
]


def add_commands(subparsers) -> None:
    for module, fn in COMMAND_PROVIDERS:
        getattr(importlib.import_module(module), fn)(subparsers)


def add_export_commands(export_subparsers) -> None:
    for module, fn in EXPORT_PROVIDERS:
        getattr(importlib.import_module(module), fn)(export_subparsers)
