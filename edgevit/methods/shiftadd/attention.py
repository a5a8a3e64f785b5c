"""MatAdd attention (methods.md §3): shared Q/K, KSH binary codes, linear angular attention, depthwise conv on V.

For one head with L2-normalised shared query/key tokens ``x_i`` and their binary KSH codes ``b_i ∈ {0,1}^r``
(:mod:`edgevit.methods.shiftadd.hashing`) the attention matrix is ``M_ij = 0.5 + (1/π)·b_iᵀb_j`` (linear angular
attention) and the output is row-normalised: ``out = M V / (M 1)``. In linear form, with ``B`` the (N, r) code matrix:

    out = (0.5·1(1ᵀV) + (1/π)·B(BᵀV)) / (0.5·N + (1/π)·B(Bᵀ1))

Both ``BᵀV`` and ``B(·)`` have a binary operand, so they are sums of selected rows (the "matmask" kernel), never an
N×N matrix. A per-head 3×3 depthwise convolution over V's patch-token grid is added (prefix tokens get none), then the
output projection. In training the codes use a straight-through estimator (gradient of ``sigmoid``); the hash (``A``,
anchors, σ, μ) is fitted once at conversion and then frozen (buffers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from .hashing import ANCHORS, BITS, TOPK_SIMILAR, binary_codes, fit_ksh
from .kernels import matmask


class MatAddAttention(nn.Module):
    """Drop-in for timm's ``Attention`` (input/output ``(B, N, C)``; accepts and refuses a non-None ``attn_mask``).

    ``grid``: the (H, W) patch-token grid; ``num_prefix_tokens``: class/register tokens before the patches."""

    def __init__(self, dim: int, num_heads: int, *, grid: tuple[int, int], num_prefix_tokens: int = 1,
                 bits: int = BITS, anchors: int = ANCHORS, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.grid, self.num_prefix_tokens, self.bits, self.num_anchors = tuple(grid), num_prefix_tokens, bits, anchors
        self.qk = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        nn.init.zeros_(self.dwconv.weight)
        nn.init.zeros_(self.dwconv.bias)
        h, d = num_heads, self.head_dim
        self.register_buffer("anchors", torch.zeros(h, anchors, d))
        self.register_buffer("sigma", torch.ones(h))
        self.register_buffer("mu", torch.zeros(h, anchors))
        self.register_buffer("hash_a", torch.zeros(h, bits, anchors))

    @classmethod
    def from_timm(cls, attn: nn.Module, *, grid: tuple[int, int], num_prefix_tokens: int, bits: int = BITS,
                  anchors: int = ANCHORS) -> MatAddAttention:
        """Initialise from a trained timm ``Attention``: the shared Q/K projection starts as the mean of the query
        and key projections, V and the output projection are copied."""
        dim = attn.qkv.in_features
        m = cls(dim, attn.num_heads, grid=grid, num_prefix_tokens=num_prefix_tokens, bits=bits, anchors=anchors,
                qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None)
        w = attn.qkv.weight.detach()
        with torch.no_grad():
            m.qk.weight.copy_((w[:dim] + w[dim:2 * dim]) / 2)
            m.v.weight.copy_(w[2 * dim:])
            if attn.qkv.bias is not None:
                b = attn.qkv.bias.detach()
                m.qk.bias.copy_((b[:dim] + b[dim:2 * dim]) / 2)
                m.v.bias.copy_(b[2 * dim:])
            m.proj.load_state_dict(attn.proj.state_dict())
        return m

    # ------------------------------------------------------------------------------------------- pieces
    def shared_qk(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` → per-head L2-normalised shared query/key ``(B, H, N, d)``."""
        b, n, _ = x.shape
        qk = self.qk(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        return F.normalize(qk, dim=-1)

    def hash_logits(self, qk: torch.Tensor) -> torch.Tensor:
        """``(B, H, N, d)`` → ``(B, H, N, bits)``: ``A_h(φ_h(x) − μ_h)`` per head."""
        diff = qk.unsqueeze(-2) - self.anchors[None, :, None]  # (B, H, N, m, d)
        phi = torch.exp(-diff.pow(2).sum(-1) / (2 * self.sigma.pow(2))[None, :, None, None])
        return torch.einsum("bhnm,hrm->bhnr", phi - self.mu[None, :, None], self.hash_a)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Binary codes ``(B, H, N, bits)`` of the tokens of ``x`` ``(B, N, C)`` (values exactly 0 or 1)."""
        return binary_codes(self.hash_logits(self.shared_qk(x)), straight_through=self.training)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return self.v(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def conv_v(self, v: torch.Tensor) -> torch.Tensor:
        """Depthwise 3×3 conv over the patch grid of V ``(B, H, N, d)`` → ``(B, N, C)`` (zeros on prefix tokens)."""
        b, h, _, d = v.shape
        p = self.num_prefix_tokens
        gh, gw = self.grid
        patches = v[:, :, p:].transpose(1, 2).reshape(b, gh, gw, h * d).permute(0, 3, 1, 2)
        out = self.dwconv(patches).flatten(2).transpose(1, 2)  # (B, gh·gw, C)
        return F.pad(out, (0, 0, p, 0))

    @staticmethod
    def angular_linear(codes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Linear form ``(0.5·1(1ᵀV) + (1/π)·B(BᵀV)) / (0.5·N + (1/π)·B(Bᵀ1))``; codes ``(…, N, r)``, v
        ``(…, N, d)`` → ``(…, N, d)``."""
        n = v.shape[-2]
        kv = codes.transpose(-2, -1) @ v  # (…, r, d): sums of the V rows each bit selects
        ksum = codes.sum(-2)  # (…, r)
        num = 0.5 * v.sum(-2, keepdim=True) + (codes @ kv) / math.pi
        den = 0.5 * n + (codes @ ksum.unsqueeze(-1)) / math.pi
        return num / den

    @staticmethod
    def angular_matmul(codes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same attention through the explicit N×N matrix ``M = 0.5 + (1/π)·BBᵀ``: ``M V / (M 1)``."""
        m = 0.5 + (codes @ codes.transpose(-2, -1)) / math.pi
        return (m @ v) / m.sum(-1, keepdim=True)

    use_kernels = False  # True: the products with B through the custom operator edgevit::matmask

    def angular_kernels(self, codes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:meth:`angular_linear` with its three products by the binary codes as ``edgevit::matmask`` calls."""
        b, h, n, r = codes.shape
        c = codes.reshape(b * h, n, r)
        vv = v.reshape(b * h, n, -1)
        kv = matmask(c.transpose(1, 2).contiguous(), vv)  # Bᵀ V: (bh, r, d)
        ksum = c.sum(1).unsqueeze(-1)  # Bᵀ 1: (bh, r, 1)
        num = 0.5 * vv.sum(1, keepdim=True) + matmask(c, kv) / math.pi
        den = 0.5 * n + matmask(c, ksum) / math.pi
        return (num / den).reshape(b, h, n, -1)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if attn_mask is not None:
            raise ValueError("MatAdd attention has no attention mask (linear attention over all tokens)")
        b, n, c = x.shape
        codes = self.codes(x)
        v = self.values(x)
        attend = self.angular_kernels if self.use_kernels else self.angular_linear
        out = attend(codes, v).transpose(1, 2).reshape(b, n, c) + self.conv_v(v)
        return self.proj(out)

    # ------------------------------------------------------------------------------------------- hash fitting
    @torch.no_grad()
    def fit_hash(self, x: torch.Tensor, *, max_tokens: int = 384, seed: int = 0, steps: int = 20) -> None:
        """Learn each head's KSH hash once on the block inputs ``x`` ``(B, N, C)`` (real images), then freeze it
        (the buffers ``anchors``, ``sigma``, ``mu``, ``hash_a``), on at most ``max_tokens`` tokens per head. Raises
        :class:`ConfigError` for more anchors than such a sample can fit, or images giving too few tokens."""
        qk = self.shared_qk(x)  # (B, H, N, d)
        g = torch.Generator().manual_seed(seed)
        most = max_tokens - 2 * TOPK_SIMILAR - 1
        if self.num_anchors > most:
            raise ConfigError(f"--anchors {self.num_anchors}: at most {most} (each head's hash is fitted on a sample "
                              f"of {max_tokens} tokens, and KSH's pairwise fit grows with its square)")
        for h in range(self.num_heads):
            tokens = qk[:, h].reshape(-1, self.head_dim)
            tokens = tokens[torch.randperm(len(tokens), generator=g)[:max_tokens]]
            fit = fit_ksh(tokens, bits=self.bits, anchors=self.num_anchors, seed=seed + h, steps=steps)
            self.anchors[h] = fit["anchors"]
            self.sigma[h] = fit["sigma"]
            self.mu[h] = fit["mu"]
            self.hash_a[h] = fit["A"]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, bits={self.bits}, anchors={self.num_anchors}, grid={self.grid}"
