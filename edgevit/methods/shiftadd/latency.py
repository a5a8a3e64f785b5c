"""Latency weights α of the MoE experts, MEASURED on the runtime the model runs on (methods.md §3 uses the paper's
constants α = [6, 4]; edgevit measures instead).

:func:`measure_expert_alpha` times the two experts of one MLP — the dense one (two ``nn.Linear``) and the shift one
(two :class:`~edgevit.methods.shiftadd.shift.ShiftLinearDeploy`, i.e. fixed-point activations and power-of-two
weights executed as a float GEMM by torch) — at the model's shapes (tokens × dim), interleaved
(:func:`edgevit.profiling.latency.time_interleaved`), and returns ``α_e ∝ median latency_e`` scaled to sum to 10 (the
paper's 6 + 4; CV² is scale-free). On a CPU running torch the shift expert is no faster than the dense one (same
GEMM plus rounding), so the measured α does not favour it: that is the honest outcome on this runtime.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .moe import shift_mlp
from .shift import ShiftLinear


def _linears_only(mlp: nn.Module) -> nn.Module:
    return nn.Sequential(mlp.fc1, mlp.fc2 if mlp.fc2.in_features == mlp.fc1.out_features else nn.Identity())


def measure_expert_alpha(mlp: nn.Module, *, tokens: int, batch: int = 1, duration_s: float = 0.2,
                         passes: int = 3) -> dict:
    """``{"alpha": (α_dense, α_shift), "latency_ms": {"dense": ms, "shift": ms}, "shape": [rows, dim], "runtime":
    "torch"}`` for the MLP ``mlp`` (a timm ``Mlp`` with dense ``fc1``/``fc2``, or a MoE's dense expert), timing each
    expert's linears on ``batch × tokens`` rows of real-valued inputs (one thread count: torch's current)."""
    dense = copy.deepcopy(mlp)
    if isinstance(dense.fc1, ShiftLinear) or not isinstance(dense.fc1, nn.Linear):
        raise TypeError(f"measure_expert_alpha needs the dense MLP (nn.Linear fc1/fc2), got {type(dense.fc1).__name__}")
    shift = shift_mlp(dense)
    shift.fc1, shift.fc2 = shift.fc1.reparameterize(), shift.fc2.reparameterize()
    experts = {"dense": _linears_only(dense).eval(), "shift": _linears_only(shift).eval()}
    rows, dim = batch * tokens, dense.fc1.in_features
    x = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)

    def call(m):
        def run(a):
            with torch.inference_mode():
                return m(torch.from_numpy(a))
        return run

    from ...profiling.latency import time_interleaved

    t = time_interleaved({k: call(m) for k, m in experts.items()}, x, passes=passes, duration_s=duration_s,
                         warmup_s=0.05)
    lat = np.array([t["dense"]["median_ms"], t["shift"]["median_ms"]])
    alpha = tuple(float(v) for v in 10 * lat / lat.sum())
    return {"alpha": alpha, "latency_ms": {"dense": float(lat[0]), "shift": float(lat[1])}, "shape": [rows, dim],
            "runtime": "torch", "threads": torch.get_num_threads()}
