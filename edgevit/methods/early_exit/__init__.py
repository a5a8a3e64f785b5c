"""LGViT early exits (methods.md §2): heads, two-stage training, calibrated thresholds, cascade export and runtime.

Importing this package imports no torch; names load from their module on first use:

- :func:`attach_exits`, :class:`EarlyExitViT`, :func:`save_early_exit`, :func:`load_early_exit` (``model``);
- :func:`train_early_exit`, :func:`train_stage1_`, :func:`train_stage2_` (``train``), :class:`TrainConfig`;
- :func:`calibrate` (``calibrate``), :func:`search_thresholds` (``thresholds``), :func:`exit_mask` (the cascade's
  criteria, :mod:`edgevit.formats.cascade.thresholds`);
- :func:`export_cascade`, :class:`CascadeRuntime`, :func:`read_manifest`, :func:`build_if_graph`: the cascade
  format (:mod:`edgevit.formats.cascade`), re-exported here;
- :func:`quantize_cascade`, :func:`quantize_cascade_gated` (``quantize``): INT8 segments and heads (the latter
  accuracy- and speed-gated, the ``quantize`` stage on a cascade); :func:`compare_cascades` (the cascade format);
- :func:`train_run`, :func:`calibrate_run`, :func:`export_run` (``run``: the CLI's steps on a run folder).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "attach_exits": "model", "EarlyExitViT": "model", "save_early_exit": "model", "load_early_exit": "model",
    "train_early_exit": "train", "train_stage1_": "train", "train_stage2_": "train", "collect_logits": "train",
    "TrainConfig": "config", "calibrate": "calibrate", "heldout_split": "calibrate",
    "search_thresholds": "thresholds", "exit_mask": "edgevit.formats.cascade.thresholds",
    "check_thresholds": "edgevit.formats.cascade.thresholds", "export_cascade": "edgevit.formats.cascade.export",
    "CascadeRuntime": "edgevit.formats.cascade.runtime", "read_manifest": "edgevit.formats.cascade.runtime",
    "exit_blocks": "heads", "head_plan": "heads",
    "train_run": "run", "calibrate_run": "run", "export_run": "run",
    "quantize_cascade": "quantize", "quantize_cascade_gated": "quantize",
    "compare_cascades": "edgevit.formats.cascade.convert", "build_if_graph": "edgevit.formats.cascade.if_form",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgevit.methods.early_exit' has no attribute '{name}'")
    value = getattr(importlib.import_module(module if "." in module else f".{module}", __name__), name)
    globals()[name] = value
    return value
