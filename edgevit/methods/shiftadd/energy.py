"""Operation counts by kind (multiplies, additions, shifts) and the energy estimate per inference (methods.md §3).

:func:`count_ops` runs the model on real images with forward hooks and counts, per image:

- ``nn.Linear``: rows·in·out multiplies and as many additions (multiply-accumulate);
- shift linears: rows·nnz shifts and rows·nnz additions (zero weights cost nothing);
- ``nn.Conv2d`` (stem, depthwise conv on V): output elements × in/groups × k² multiplies and additions;
- softmax attention: QKᵀ and AV, 2·H·N²·d multiplies and additions;
- MatAdd attention: RBF features (H·N·m·d multiplies, 2·H·N·m·d additions), the hash projection (H·N·r·m MACs),
  ``BᵀV`` and ``B(BᵀV)`` (additions only: one d-vector per set bit), the 0.5·ΣV sums and the normalisation
  (2·H·N·d multiplies);
- MoE: the gate (a Linear, counted as one) and each token's ROUTED expert only (the count the routing gives on
  these images).

LayerNorm, GELU, softmax's exponentials and residual additions are not counted (the same in both models).
:func:`energy_pj` prices the counts with the 45 nm, 32-bit figures in ``energy_45nm.yaml`` (multiply 3.7 pJ, add
0.9 pJ, shift 0.13 pJ; ShiftAddViT paper / Horowitz ISSCC 2014).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .attention import MatAddAttention
from .moe import DENSE, SHIFT, MoEMlp
from .shift import ShiftLinear, ShiftLinearDeploy

ENERGY_FILE = Path(__file__).with_name("energy_45nm.yaml")
KINDS = ("multiply", "add", "shift")


@lru_cache(maxsize=1)
def energy_table() -> dict[str, dict]:
    """``{kind: {value, unit, source}}`` from ``energy_45nm.yaml`` (pJ per 32-bit operation)."""
    import yaml

    doc = yaml.safe_load(ENERGY_FILE.read_text())
    for k in KINDS:
        if set(doc.get(k, {})) != {"value", "unit", "source"} or doc[k]["unit"] != "pJ":
            raise ValueError(f"{ENERGY_FILE}: '{k}' must be {{value, unit: pJ, source}}")
    return doc


def energy_pj(ops: dict) -> float:
    """Energy in pJ of op counts ``{multiply, add, shift}`` at the 45 nm figures."""
    t = energy_table()
    return sum(float(ops.get(k, 0)) * float(t[k]["value"]) for k in KINDS)


def _linear_cost(m: nn.Module, rows: int) -> Counter:
    if isinstance(m, (ShiftLinear, ShiftLinearDeploy)):
        nnz = int((m.sign != 0).sum()) if isinstance(m, ShiftLinearDeploy) else int(
            (m.reparameterize().sign != 0).sum())
        return Counter(shift=rows * nnz, add=rows * nnz, linear_shift=rows * nnz)
    macs = rows * m.in_features * m.out_features
    return Counter(multiply=macs, add=macs, linear_multiply=macs)


def _mlp_cost(mlp: nn.Module, rows: int) -> Counter:
    return _linear_cost(mlp.fc1, rows) + _linear_cost(mlp.fc2, rows)


@torch.no_grad()
def count_ops(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> dict:
    """Mean op counts per image on ``images`` ``(n, C, H, W)``: ``{multiply, add, shift, linear_multiply,
    linear_shift, dense_linear_multiply}``; ``dense_linear_multiply`` is what every linear layer would cost dense
    (the base of "share of linear multiplications removed")."""
    total: Counter = Counter()
    skip: set[int] = set()  # modules counted by their parent (MoE experts)
    for m in model.modules():
        if isinstance(m, MoEMlp):
            skip.update(id(x) for x in m.experts.modules())

    def hook(m, args, out):
        if id(m) in skip:
            return
        x = args[0]
        if isinstance(m, (nn.Linear, ShiftLinear, ShiftLinearDeploy)):
            rows = x.numel() // x.shape[-1]
            total.update(_linear_cost(m, rows))
            total["dense_linear_multiply"] += rows * m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            macs = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            total.update(multiply=macs, add=macs)
        elif isinstance(m, MatAddAttention):
            b, n, _ = x.shape
            h, d, r, a = m.num_heads, m.head_dim, m.bits, m.num_anchors
            skip.add(id(m.qk))  # recomputing the codes must not count the projection twice
            ones = int(m.codes(x).sum())  # set bits over batch, heads and tokens
            skip.discard(id(m.qk))
            total.update(multiply=b * h * n * (a * d + r * a + 2 * d),
                         add=b * h * n * (2 * a * d + r * a + d) + 2 * ones * d)
        elif isinstance(m, MoEMlp):
            rows = x.numel() // x.shape[-1]
            counts = m.last_counts.tolist()
            total.update(_mlp_cost(m.experts[DENSE], counts[DENSE]) + _mlp_cost(m.experts[SHIFT], counts[SHIFT]))
            fc1, fc2 = m.experts[DENSE].fc1, m.experts[DENSE].fc2
            total["dense_linear_multiply"] += rows * (fc1.in_features * fc1.out_features
                                                      + fc2.in_features * fc2.out_features)
        elif hasattr(m, "qkv") and hasattr(m, "num_heads") and not isinstance(m, MatAddAttention):
            b, n, _ = x.shape
            macs = 2 * b * m.num_heads * n * n * m.head_dim
            total.update(multiply=macs, add=macs)

    kinds = (nn.Linear, nn.Conv2d, ShiftLinear, ShiftLinearDeploy, MatAddAttention, MoEMlp)
    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, kinds) or (hasattr(m, "qkv") and hasattr(m, "num_heads"))]
    was = model.training
    model.eval()
    try:
        for s in range(0, len(images), batch_size):
            model(images[s:s + batch_size])
    finally:
        model.train(was)
        for hk in hooks:
            hk.remove()
    n = len(images)
    keys = (*KINDS, "linear_multiply", "linear_shift", "dense_linear_multiply")
    return {k: total[k] / n for k in keys}


def energy_report(dense: nn.Module, converted: nn.Module, images: torch.Tensor) -> dict:
    """Op counts and energy per inference of ``dense`` and ``converted`` on the same real images, the share of
    linear-layer multiplications removed and the energy saving, with the energy figures' source."""
    d, c = count_ops(dense, images), count_ops(converted, images)
    ed, ec = energy_pj(d), energy_pj(c)
    base = d["linear_multiply"]
    return {"dense": {**d, "energy_uj": ed / 1e6}, "shiftadd": {**c, "energy_uj": ec / 1e6},
            "linear_mult_removed_share": (base - c["linear_multiply"]) / base if base else None,
            "energy_saving_share": (ed - ec) / ed if ed else None, "n_images": len(images),
            "energy_per_op_pj": {k: v["value"] for k, v in energy_table().items()},
            "source": energy_table()["multiply"]["source"]}
