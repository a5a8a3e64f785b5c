"""Mixture of experts [dense MLP, shift MLP] with a trained noisy top-1 gate and ShiftAddViT's latency-aware balance
loss (methods.md §3; noisy gating after Shazeer et al., ICLR 2017).

Per token ``x``: clean logits ``x·W_g``, noise scale ``softplus(x·W_n)``; in training the logits get Gaussian noise
of that scale. The token goes to ``e = argmax`` of the (noisy) logits, with gate ``g = softmax(logits)_e``.

Balance loss: ``L_bal = CV²(α ⊙ importance) + CV²(α ⊙ load)``, ``CV² = var / mean²``, where importance is the sum of
each expert's gate probabilities over the batch's tokens, load is Shazeer's smooth estimate of the number of tokens
each expert receives (the probability, under the noise, that its logit beats the other's), and ``α`` are the
experts' latency weights (the paper: 6 for the multiply expert, 4 for the shift expert; edgevit measures them, see
:func:`edgevit.methods.shiftadd.latency.measure_expert_alpha`). Minimising it equalises ``α_e·load_e``, so the
cheaper expert (smaller ``α``) receives more tokens. Total loss = CE + 0.01·L_bal (``balance_weight``).

Output value: ``expert_e(x)`` scaled by ``g / stopgrad(g)`` (value 1, gradient of ``g``). The paper writes
``g·expert_e(x)``; both give the gate the same gradient ``∂L/∂g = ⟨∂L/∂y, expert_e(x)⟩``, but this form keeps the
converted model's function unchanged at initialisation (``g ≈ 0.5`` would halve every MLP output of a trained model).
Both experts run on every token and the routed one is selected (``torch.where``), so the module exports as one static
graph (ONNX/OpenVINO: both experts + Where).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .shift import ShiftLinear

DENSE, SHIFT = 0, 1
EXPERTS = ("dense", "shift")


def _exporting() -> bool:
    """Whether the module is being traced or exported (torch.jit, torch.export/dynamo, ONNX)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return bool(torch.jit.is_tracing() or compiling() or torch.onnx.is_in_onnx_export())


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var/mean²`` of a 1-D tensor (0 for a single element)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.float().var(unbiased=False) / (x.float().mean() ** 2 + 1e-10)


def balance_loss(importance: torch.Tensor, load: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``CV²(α⊙importance) + CV²(α⊙load)`` (all ``(experts,)``)."""
    return cv_squared(alpha * importance) + cv_squared(alpha * load)


def shift_mlp(mlp: nn.Module) -> nn.Module:
    """A copy of a timm ``Mlp`` whose ``fc1``/``fc2`` are :class:`ShiftLinear` initialised from the trained ones."""
    out = copy.deepcopy(mlp)
    out.fc1 = ShiftLinear.from_linear(mlp.fc1)
    out.fc2 = ShiftLinear.from_linear(mlp.fc2)
    return out


class MoEMlp(nn.Module):
    """Top-1 mixture of ``[dense MLP, shift MLP]``; input/output ``(B, N, C)``.

    After each forward pass ``last_aux`` holds the balance loss (training) and ``last_counts`` the number of tokens
    routed to each expert. ``alpha`` (buffer, ``(2,)``) are the latency weights [dense, shift]."""

    def __init__(self, dense: nn.Module, shift: nn.Module, dim: int, alpha: tuple[float, float] = (6.0, 4.0),
                 noise_eps: float = 1e-2):
        super().__init__()
        self.experts = nn.ModuleList([dense, shift])
        self.w_gate = nn.Linear(dim, len(EXPERTS), bias=False)
        self.w_noise = nn.Linear(dim, len(EXPERTS), bias=False)
        nn.init.zeros_(self.w_gate.weight)
        nn.init.zeros_(self.w_noise.weight)
        self.noise_eps = noise_eps
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32))
        self.last_aux: torch.Tensor | None = None
        self.last_counts: torch.Tensor | None = None

    def reset_stats(self) -> None:
        """Drop the last pass's loss and counts (the loss holds an autograd graph, which ``copy.deepcopy`` refuses)."""
        self.last_aux, self.last_counts = None, None

    @classmethod
    def from_mlp(cls, mlp: nn.Module, *, alpha: tuple[float, float] = (6.0, 4.0)) -> MoEMlp:
        return cls(copy.deepcopy(mlp), shift_mlp(mlp), mlp.fc1.in_features, alpha=alpha)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(probs (T, 2), expert index (T,), balance loss ())`` for tokens ``x`` ``(T, C)``."""
        clean = self.w_gate(x)
        if self.training:
            std = F.softplus(self.w_noise(x)) + self.noise_eps
            noisy = clean + torch.randn_like(clean) * std
            # Shazeer's smooth load for top-1 of 2: P(clean_e + noise_e > noisy_other)
            other = noisy.flip(-1)
            load = torch.distributions.Normal(0.0, 1.0).cdf((clean - other) / std).sum(0)
        else:
            noisy = clean
            load = F.one_hot(clean.argmax(-1), len(EXPERTS)).float().sum(0)
        probs = noisy.softmax(-1)
        idx = noisy.argmax(-1)
        aux = balance_loss(probs.sum(0), load, self.alpha)
        return probs, idx, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        t = x.reshape(-1, shape[-1])
        if not self.training and _exporting():  # a static graph: route, run both experts, select (no statistics)
            idx = self.w_gate(t).argmax(-1)
            return torch.where((idx == DENSE).unsqueeze(-1), self.experts[DENSE](t),
                               self.experts[SHIFT](t)).reshape(*shape[:-1], -1)
        probs, idx, aux = self.route(t)
        gate = probs.gather(-1, idx.unsqueeze(-1))
        y = torch.where((idx == DENSE).unsqueeze(-1), self.experts[DENSE](t), self.experts[SHIFT](t))
        y = y * (1 + gate - gate.detach())
        self.last_aux = aux
        self.last_counts = F.one_hot(idx, len(EXPERTS)).sum(0).detach()
        return y.reshape(*shape[:-1], y.shape[-1])
