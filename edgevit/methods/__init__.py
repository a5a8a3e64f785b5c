"""Methods: torch or graph transforms that make a model smaller or faster — ``distill/`` (TinyViT-style sparse
teacher distillation), ``early_exit/`` (LGViT exits), ``quantize/`` (INT8 PTQ).

A method is one folder here, its recipe stage in :mod:`edgevit.stages`, and one entry in :data:`METHODS` (its
CLI sub-command, ``"module:add_parser"``, added to ``edgevit`` by :mod:`edgevit.cli`). Importing this package
imports no method.
"""

from __future__ import annotations

# the registration: method name → reference of ``add_parser(subparsers)`` for its top-level CLI command
METHODS: dict[str, str] = {
    "distill": "edgevit.methods.distill.cli:add_parser",
    "early_exit": "edgevit.methods.early_exit.cli:add_parser",
    "quantize": "edgevit.methods.quantize.cli:add_parser",
}


def cli_providers() -> list[str]:
    """References of the methods' ``add_parser(subparsers)`` functions, in registration order."""
    return list(METHODS.values())
