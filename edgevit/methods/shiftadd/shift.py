"""Power-of-two ("shift") linear layers (methods.md §3, ShiftAddViT; DeepShift-Q style).

A shift linear's weight is ``W = s·2^p`` with sign ``s ∈ {−1, 0, +1}`` and integer exponent ``p ∈ [P_MIN, P_MAX] =
[−14, 0]``, so ``x·W`` is an arithmetic shift of ``x`` by ``−p`` bits with a sign. Activations are fixed point with
``FRAC_BITS = 16`` fractional bits (16.16), so in integers ``y = Σ_k s_k·(x_int_k >> −p_k)``.

- :class:`ShiftLinear` (training form) keeps a latent float weight initialised from the trained dense weight; the
  forward pass uses ``quantize_weight(W)`` (``p = round(log2|W|)``, ``s = sign W``, ``s = 0`` where ``p < −14``,
  ``p`` clamped to ≤ 0) and fixed-point activations, both with a straight-through estimator (identity gradient).
- :meth:`ShiftLinear.reparameterize` gives :class:`ShiftLinearDeploy`: int8 ``sign`` and int8 ``shift`` (= p) and
  the float bias; its forward is the same numbers as a float ``F.linear`` with power-of-two weights (which is how it
  exports to ONNX / OpenVINO: a MatMul whose weights are powers of two), and :meth:`ShiftLinearDeploy.integer_forward`
  is the integer reference ``Σ s·(x_int >> −p)``.

Loading a deploy-form state dict whose ``shift`` lies outside ``[−14, 0]`` (or whose ``sign`` is not in {−1, 0, 1})
raises :class:`~edgevit.errors.ModelLoadError`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelLoadError
from .kernels import FRAC_BITS, matshift

P_MIN, P_MAX = -14, 0  # exponent range of ShiftAddViT (methods.md §3)
__all__ = ["FRAC_BITS", "P_MAX", "P_MIN", "ShiftLinear", "ShiftLinearDeploy", "fixed_point", "quantize_weight"]
_INT32_MAX = 2**31 - 1


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sign, shift)`` of the power-of-two weight nearest to ``w`` in the log domain, both int8 tensors of
    ``w.shape``: ``shift = clamp(round(log2|w|), −14, 0)``, ``sign = sign(w)`` and 0 where ``round(log2|w|) < −14``
    (the weight is below the smallest representable magnitude) or ``w == 0``."""
    w = w.detach().float()
    p = torch.round(torch.log2(w.abs().clamp_min(torch.finfo(torch.float32).tiny)))
    sign = torch.sign(w)
    sign = torch.where(p < P_MIN, torch.zeros_like(sign), sign)
    shift = p.clamp(P_MIN, P_MAX)
    shift = torch.where(sign == 0, torch.zeros_like(shift), shift)
    return sign.to(torch.int8), shift.to(torch.int8)


def shift_weight(sign: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float weight ``sign·2^shift`` (exact in float32 for shift ∈ [−14, 0])."""
    return sign.to(dtype) * torch.pow(2.0, shift.to(dtype))  # pow, not exp2: OpenVINO's torch frontend lacks exp2


def fixed_point(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the 16.16 fixed-point grid (multiples of 2^-16, saturated to the int32 range); exact in
    float32 for |x| < 2^7, float64 beyond."""
    scale = float(2**FRAC_BITS)
    return torch.clamp(torch.round(x * scale), -_INT32_MAX - 1, _INT32_MAX) / scale


def to_fixed_int(x: torch.Tensor) -> torch.Tensor:
    """``x`` as int64 fixed-point integers (``round(x·2^16)``, saturated to int32)."""
    return torch.clamp(torch.round(x.double() * 2**FRAC_BITS), -_INT32_MAX - 1, _INT32_MAX).to(torch.int64)


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through: the value of ``q``, the gradient of ``x``."""
    return x + (q - x).detach()


def check_shift_state(sign: torch.Tensor, shift: torch.Tensor, where: str) -> None:
    """Raise :class:`ModelLoadError` unless ``shift`` ∈ [−14, 0] and ``sign`` ∈ {−1, 0, 1} everywhere."""
    if shift.numel() and (int(shift.min()) < P_MIN or int(shift.max()) > P_MAX):
        raise ModelLoadError(f"{where}: shift exponents must lie in [{P_MIN}, {P_MAX}] (W = s·2^p), found "
                             f"[{int(shift.min())}, {int(shift.max())}]; the checkpoint is corrupt or was not "
                             f"written by edgevit's shiftadd convert (re-run `edgevit shiftadd convert`)")
    if sign.numel() and not bool(((sign == -1) | (sign == 0) | (sign == 1)).all()):
        raise ModelLoadError(f"{where}: signs must be −1, 0 or +1; the checkpoint is corrupt (re-run `edgevit "
                             f"shiftadd convert`)")


class ShiftLinear(nn.Module):
    """Training form: ``y = fixed_point(x) @ (s·2^p)ᵀ + b`` with straight-through gradients to the latent ``weight``.

    Input ``(..., in_features)``, output ``(..., out_features)``. Built from a trained :class:`torch.nn.Linear`
    with :meth:`from_linear` (the latent weight starts as the dense weight)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> ShiftLinear:
        m = cls(lin.in_features, lin.out_features, bias=lin.bias is not None)
        with torch.no_grad():
            m.weight.copy_(lin.weight)
            if lin.bias is not None:
                m.bias.copy_(lin.bias)
        return m

    def quantized_weight(self) -> torch.Tensor:
        sign, shift = quantize_weight(self.weight)
        return shift_weight(sign, shift, self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _ste(self.weight, self.quantized_weight())
        return F.linear(_ste(x, fixed_point(x)), w, self.bias)

    def reparameterize(self) -> ShiftLinearDeploy:
        """The deploy form (int8 sign and shift, float bias) computing the same outputs."""
        sign, shift = quantize_weight(self.weight)
        return ShiftLinearDeploy(sign, shift, None if self.bias is None else self.bias.detach().clone())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ShiftLinearDeploy(nn.Module):
    """Deploy form: buffers ``sign`` (int8, −1/0/+1) and ``shift`` (int8, p ∈ [−14, 0]) of shape (out, in), and a
    float ``bias``. :meth:`forward` is ``F.linear(fixed_point(x), s·2^p, b)`` (what ONNX/OpenVINO export as a MatMul
    with power-of-two weights); :meth:`integer_forward` is the integer reference."""

    def __init__(self, sign: torch.Tensor, shift: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        check_shift_state(sign, shift, "ShiftLinearDeploy")
        self.out_features, self.in_features = (int(v) for v in sign.shape)
        self.register_buffer("sign", sign.to(torch.int8).contiguous())
        self.register_buffer("shift", shift.to(torch.int8).contiguous())
        if bias is not None:
            self.bias = nn.Parameter(bias.float().clone(), requires_grad=False)
        else:
            self.bias = None

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool = True) -> ShiftLinearDeploy:
        """A zero-weight module of the given shape, to load a state dict into."""
        z = torch.zeros(out_features, in_features, dtype=torch.int8)
        return cls(z, z.clone(), torch.zeros(out_features) if bias else None)

    def weight(self) -> torch.Tensor:
        """The float weight ``s·2^p`` (out, in)."""
        return shift_weight(self.sign, self.shift)

    use_kernels = False  # True: the custom operator edgevit::matshift (see kernels.use_kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernels:
            bias = self.bias if self.bias is not None else x.new_zeros(self.out_features)
            y = matshift(x.reshape(-1, self.in_features), self.sign, self.shift, bias)
            return y.reshape(*x.shape[:-1], self.out_features)
        return F.linear(fixed_point(x), self.weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Integer reference: ``y = (Σ_k s_k·(x_int_k >> −p_k)) / 2^16 + b`` with ``x_int = round(x·2^16)`` and an
        arithmetic (flooring) right shift. Differs from :meth:`forward` by at most ``in_features·2^-16`` per output
        (each shift truncates by < 1 LSB). Memory ``O(rows·out·in)``: a reference, not a kernel."""
        xi = to_fixed_int(x).reshape(-1, 1, self.in_features)  # (R, 1, in)
        shifted = torch.bitwise_right_shift(xi, (-self.shift.to(torch.int64)).unsqueeze(0))  # (R, out, in)
        acc = (shifted * self.sign.to(torch.int64).unsqueeze(0)).sum(-1)
        y = acc.double() / 2**FRAC_BITS
        if self.bias is not None:
            y = y + self.bias.double()
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def to_trainable(self) -> ShiftLinear:
        """A :class:`ShiftLinear` whose latent weight is ``s·2^p`` (quantises back to exactly this layer)."""
        m = ShiftLinear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            m.weight.copy_(self.weight())
            if self.bias is not None:
                m.bias.copy_(self.bias)
        return m

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        sign, shift = state_dict.get(prefix + "sign"), state_dict.get(prefix + "shift")
        if sign is not None and shift is not None:
            check_shift_state(sign, shift, f"{prefix.rstrip('.') or 'ShiftLinearDeploy'}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
