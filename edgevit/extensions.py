"""Sub-commands contributed by the method packages (quantize, distill, early-exit, ...).

Each entry is ``(module, function)``; the function takes the argparse sub-parsers object and adds its commands.
Modules listed here must be importable without torch or any backend.
"""

from __future__ import annotations

import importlib

COMMAND_PROVIDERS: list[tuple[str, str]] = []


def add_commands(subparsers) -> None:
    for module, fn in COMMAND_PROVIDERS:
        getattr(importlib.import_module(module, __package__), fn)(subparsers)
