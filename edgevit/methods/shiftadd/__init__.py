"""ShiftAddViT (methods.md §3): MatAdd attention, power-of-two shift linears, a [dense, shift] mixture of experts.

Importing this package imports no torch; names load from their module on first use:

- :func:`convert`, :func:`reparameterize`, :func:`to_trainable`, :func:`save_shiftadd`, :func:`is_shiftadd`
  (``convert``), :func:`use_kernels` (``convert``); :class:`ConvertConfig`, :class:`FinetuneConfig` (``config``);
- :class:`MatAddAttention` (``attention``), :func:`fit_ksh` (``hashing``), :class:`ShiftLinear`,
  :class:`ShiftLinearDeploy` (``shift``), :class:`MoEMlp`, :func:`balance_loss` (``moe``);
- :func:`finetune_` (``train``), :func:`measure_expert_alpha` (``latency``), :func:`count_ops`, :func:`energy_pj`,
  :func:`energy_report` (``energy``); :func:`convert_run`, :func:`finetune_run` (``run``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "convert": "convert", "reparameterize": "convert", "to_trainable": "convert", "save_shiftadd": "convert",
    "is_shiftadd": "convert", "use_kernels": "convert", "ConvertConfig": "config", "FinetuneConfig": "config",
    "MatAddAttention": "attention", "fit_ksh": "hashing", "ShiftLinear": "shift", "ShiftLinearDeploy": "shift",
    "MoEMlp": "moe", "balance_loss": "moe", "finetune_": "train", "measure_expert_alpha": "latency",
    "count_ops": "energy", "energy_pj": "energy", "energy_report": "energy", "convert_run": "run",
    "finetune_run": "run",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgevit.methods.shiftadd' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
