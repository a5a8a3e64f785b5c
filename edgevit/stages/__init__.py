"""Recipe stages. The contract (``Stage``, ``StageContext``, ``STAGES``) is :mod:`edgevit.stage`; this package
holds the built-in and method stages and imports every stage module once, the formats' ones from
:data:`edgevit.formats.FORMATS`.

Stages must be importable without torch or any backend: heavy imports go inside ``run``.
"""

from __future__ import annotations

import importlib

from ..stage import STAGES, Stage, StageContext, StageOutput, register_stage

__all__ = ["STAGES", "STAGE_MODULES", "Stage", "StageContext", "StageOutput", "register_stage"]

# built-in and method stages (each importable without torch or any backend)
STAGE_MODULES = [
    "edgevit.stages.core",
    "edgevit.stages.distill",
    "edgevit.stages.early_exit",
    "edgevit.stages.shiftadd",
    "edgevit.stages.quantize",
    "edgevit.stages.vlm",
]


def _import_stage_modules() -> None:
    from ..format_registry import stage_modules

    for m in [*STAGE_MODULES[:1], *stage_modules(), *STAGE_MODULES[1:]]:
        importlib.import_module(m)


_import_stage_modules()
