"""The two ShiftAddViT kernels as torch custom operators, so ``torch.export`` keeps each one as ONE graph node that a
compiler (TVM: :mod:`edgevit.methods.shiftadd.tvm_kernels`) can replace by its own kernel.

- ``edgevit::matshift(x, sign, shift, bias)``: ``x`` (M, K) float32, ``sign``/``shift`` (N, K) int8 (s ∈ {−1,0,1},
  p ∈ [−14, 0]), ``bias`` (N,) float32 → (M, N): ``y = (Σ_k s·(x_int >> −p)) / 2^16 + b`` with
  ``x_int = round(x·2^16)`` saturated to int32 and int32 accumulation (the integer semantics of methods.md §3).
- ``edgevit::matmask(mask, x)``: ``mask`` (B, I, K) float {0, 1}, ``x`` (B, K, J) → (B, I, J):
  ``Σ_k select(mask > 0, x, 0)`` (a product with a binary operand: sums of selected rows).

:func:`edgevit.methods.shiftadd.convert.use_kernels` switches a converted model's :class:`ShiftLinearDeploy` and
:class:`MatAddAttention` modules to
call them (``False`` switches back to the float forms, which ONNX/OpenVINO export as power-of-two MatMuls).
"""

from __future__ import annotations

import torch

FRAC_BITS = 16  # fixed-point activations: 16.16 (methods.md §3)
_INT32_MAX = 2**31 - 1


@torch.library.custom_op("edgevit::matshift", mutates_args=())
def matshift(x: torch.Tensor, sign: torch.Tensor, shift: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    xi = torch.clamp(torch.round(x.double() * 2**FRAC_BITS), -_INT32_MAX - 1, _INT32_MAX).to(torch.int32)
    rshift = (-shift.to(torch.int32)).unsqueeze(0)  # (1, N, K)
    s = sign.to(torch.int32).unsqueeze(0)
    out = torch.empty(x.shape[0], sign.shape[0], dtype=torch.float32)
    for r in range(0, x.shape[0], 16):  # rows in chunks: the (rows, N, K) intermediate stays small
        terms = torch.bitwise_right_shift(xi[r:r + 16].unsqueeze(1), rshift) * s
        out[r:r + 16] = terms.sum(-1, dtype=torch.int32).float() / 2**FRAC_BITS
    return out + bias.float()


@matshift.register_fake
def _(x, sign, shift, bias):
    return x.new_empty(x.shape[0], sign.shape[0])


@torch.library.custom_op("edgevit::matmask", mutates_args=())
def matmask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (mask > 0).to(x.dtype) @ x


@matmask.register_fake
def _(mask, x):
    return x.new_empty(mask.shape[0], mask.shape[1], x.shape[2])
