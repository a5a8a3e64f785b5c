"""MAC counts against numbers computed by hand: the torch counter (every SDPA kernel, every torch) and ONNX."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgevit.profiling.macs import count_macs_onnx, count_macs_torch, torch_macs_by_op
from edgevit.spec import InputSpec

# fmnist-vit-tiny at 28×28: a conv stem (1→24 3×3 s1, 24→48 3×3 s2, 48→96 3×3 s2: 7×7 patches), 49 patches + the
# class token = 50 tokens of width 96, 6 blocks (qkv 96→288, proj 96→96, fc1 96→192, fc2 192→96, 2 heads) and a
# head 96→10 on the class token.
FMNIST_VIT_TINY_MACS = (
    28 * 28 * 24 * 1 * 9 + 14 * 14 * 48 * 24 * 9 + 7 * 7 * 96 * 48 * 9  # stem: out pixels × Cout × Cin × 3×3
    + 6 * 50 * (96 * 288 + 96 * 96 + 96 * 192 + 192 * 96)  # the blocks' linear layers
    + 6 * 50 * 50 * 96 * 2  # attention: QK^T and AV over all heads (2 × 48 = 96)
    + 96 * 10  # head
)


def _attention_macs(b, h, sq, sk, d, dv):
    return b * h * sq * sk * (d + dv)  # QK^T: Sq·Sk·D, AV: Sq·Sk·Dv, per head


class LinearThenSDPA(nn.Module):
    """x [1, 1, 16, 32] → Linear 32→16 → q [1, 2, 16, 8]; fixed k [1, 2, 24, 8], v [1, 2, 24, 12]; SDPA."""

    def __init__(self, **sdpa_kwargs):
        super().__init__()
        self.lin = nn.Linear(32, 16)
        self.register_buffer("k", torch.randn(1, 2, 24, 8))
        self.register_buffer("v", torch.randn(1, 2, 24, 12))
        self.sdpa_kwargs = sdpa_kwargs

    def forward(self, x):
        q = self.lin(x).view(1, 16, 2, 8).transpose(1, 2)
        return F.scaled_dot_product_attention(q, self.k, self.v, **self.sdpa_kwargs)


LINEAR_THEN_SDPA = 16 * 32 * 16 + _attention_macs(1, 2, 16, 24, 8, 12)  # 8,192 + 15,360


def _split(by_op: dict) -> tuple[int, int]:
    """(attention MACs, the rest): fused SDPA kernels, or the math path's bmm, vs. the linear layers' mm."""
    attn = sum(v for k, v in by_op.items() if "attention" in k or k.endswith("bmm"))
    return attn, sum(by_op.values()) - attn


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.5}], ids=["plain", "causal", "scale"])
def test_linear_plus_sdpa_exact(kwargs):
    torch.manual_seed(0)
    model = LinearThenSDPA(**kwargs)
    spec = InputSpec(input_size=(1, 16, 32), mean=(0.0,), std=(1.0,))
    assert count_macs_torch(model, spec) == LINEAR_THEN_SDPA
    by_op = torch_macs_by_op(model, spec)
    assert _split(by_op) == (15_360, 8_192), by_op  # a causal mask is counted in full, as in ONNX


@pytest.mark.parametrize("backend", ["MATH", "FLASH_ATTENTION"])
def test_sdpa_backends_count_the_same(backend):
    """The math backend decomposes SDPA into bmm; the fused CPU kernel (which FlopCounterMode's table lacked on some
    torch releases) is one aten op: both give the same MACs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    class SDPA(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 24, 8), torch.randn(1, 2, 24, 8)
    with sdpa_kernel(getattr(SDPBackend, backend)):
        by_op = torch_macs_by_op(SDPA(), example=(q, k, v))
    assert sum(by_op.values()) == _attention_macs(1, 2, 16, 24, 8, 8)
    if backend == "FLASH_ATTENTION":
        assert list(by_op) == ["aten::_scaled_dot_product_flash_attention_for_cpu"], by_op
    else:
        assert set(by_op) == {"aten::bmm"}, by_op


def test_sdpa_grouped_query_and_mask():
    class GQA(nn.Module):
        def forward(self, q, k, v, mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 16)
    mask = torch.zeros(10, 6)
    assert sum(torch_macs_by_op(GQA(), example=(q, k, v, mask)).values()) == _attention_macs(2, 4, 10, 6, 8, 16)


class TinyViTBlock(nn.Module):
    """16×16 image → 4×4 patch conv (1→16 ch: 16 tokens) → pre-norm block (2 heads of 8) → mean pool → 10 logits."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 16, kernel_size=4, stride=4)
        self.norm1, self.norm2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # [1, 16, 16]
        q, k, v = self.qkv(self.norm1(t)).reshape(1, 16, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 16, 16)
        t = t + self.proj(a)
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return self.head(t.mean(1))


TINY_BLOCK_SPEC = InputSpec(input_size=(1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
TINY_BLOCK_MACS = (
    16 * 16 * (1 * 4 * 4)  # patch conv: 16 output pixels × 16 channels × (1 × 4×4)
    + 16 * 16 * 48  # qkv
    + _attention_macs(1, 2, 16, 16, 8, 8)  # QK^T + AV
    + 16 * 16 * 16  # proj
    + 16 * 16 * 32 + 16 * 32 * 16  # fc1, fc2
    + 16 * 10  # head
)


def test_tiny_attention_block_torch_and_onnx_exact(tmp_path):
    torch.manual_seed(0)
    model = TinyViTBlock().eval()
    assert TINY_BLOCK_MACS == 45_216
    assert count_macs_torch(model, TINY_BLOCK_SPEC) == TINY_BLOCK_MACS
    path = tmp_path / "block.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 1, 16, 16),), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=True)  # the exporter edgevit uses
    assert count_macs_onnx(path, strict=True) == TINY_BLOCK_MACS


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_fast_path_is_counted(need_weights):
    """nn.MultiheadAttention's eval fast path is one fused op: the counter turns it off and restores it."""

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=need_weights)[0]

    before = torch.backends.mha.get_fastpath_enabled()
    macs = sum(torch_macs_by_op(SelfAttention(), example=torch.randn(1, 10, 16)).values())
    assert macs == 10 * 16 * 48 + _attention_macs(1, 4, 10, 10, 4, 4) + 10 * 16 * 16
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_fmnist_vit_tiny_exact(tiny_model):
    assert FMNIST_VIT_TINY_MACS == 29_232_960
    by_op = torch_macs_by_op(tiny_model)
    assert sum(by_op.values()) == FMNIST_VIT_TINY_MACS
    assert _split(by_op)[0] == 6 * 50 * 50 * 96 * 2, by_op


@torch.library.custom_op("edgevit_test::fused_linear", mutates_args=())
def fused_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """An op the counter has no formula for, whose name says it is a matrix product."""
    return x @ w.t()


def test_restores_training_mode_and_warns_about_unknown_matmul_ops(caplog):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 4))

        def forward(self, x):
            return fused_linear(x, self.w)

    model = Custom().train()
    with caplog.at_level(logging.WARNING, logger="edgevit.profiling.macs"):
        by_op = torch_macs_by_op(model, example=torch.randn(3, 4))
    assert model.training
    assert by_op == {}
    assert "edgevit_test::fused_linear" in caplog.text
