"""LGViT exit heads (methods.md §2): where the exits go and the two head types.

- :func:`exit_blocks`: after blocks 4..11 of a 12-block backbone (8 exits, final head at block 12); for other depths
  the same rule scaled: the first exit at ``round(depth / 3)``, then one after every block up to ``depth - 1``.
- :func:`head_plan`: exits are split into four equal quarters (8 exits: two each) — local perception heads with the
  depthwise conv, local perception heads without it, global aggregation heads with stride 2, with stride 3.
- :class:`LocalPerceptionHead` (LPH): 1×1 conv → GELU → BN → depthwise 3×3 → GELU → BN → 1×1 conv → BN, residual, on
  the patch tokens reshaped to C×H×W (``depthwise=False``: without the depthwise conv and its GELU/BN).
- :class:`GlobalAggregationHead` (GAH): the patch-token grid subsampled with stride ``r`` (every r-th row and column,
  a strided slice), multi-head self-attention without qkv bias (8 heads; fewer only when the dim is not divisible by
  8 — the largest divisor of the dim below 8, logged and recorded in the plan), and its output projection.
- Both then mean-pool their tokens, add the class-token embedding of the same block and apply a Linear classifier;
  with a distillation token (DeiT) a second classifier on pooled + distillation token is averaged with the first.
  A backbone without a class token (``class_token=False``) gets pooled features only.

Heads take the whole token sequence and split off the special tokens themselves with the backbone's
``num_prefix_tokens`` (class, distillation and register tokens), never a hard-coded count.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...errors import ConfigError

log = logging.getLogger(__name__)

HEAD_TYPES = ("lph_dw", "lph", "gah")
GAH_HEADS = 8


def exit_blocks(depth: int) -> list[int]:
    """1-based block numbers after which an exit sits: ``[4..11]`` for 12 blocks, ``[round(d/3)..d-1]`` otherwise."""
    if not isinstance(depth, int) or depth < 3:
        raise ConfigError(f"early exits need a backbone of at least 3 blocks (an exit and a final head after it); "
                          f"got depth {depth!r}")
    first = max(1, round(depth / 3))
    return list(range(first, depth))


@dataclass(frozen=True)
class HeadSpec:
    """One exit: after which block, which head type, GAH stride and attention heads (None for LPH)."""

    block: int
    type: str
    stride: int | None = None
    num_heads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def attention_heads(dim: int, wanted: int = GAH_HEADS) -> int:
    """``wanted`` when it divides ``dim``, else the largest divisor of ``dim`` below it (logged)."""
    if dim % wanted == 0:
        return wanted
    n = max(h for h in range(1, wanted) if dim % h == 0)
    log.warning("global aggregation heads: embedding dim %d is not divisible by %d; using %d attention heads",
                dim, wanted, n)
    return n


def head_plan(depth: int, dim: int, blocks: list[int] | None = None) -> list[HeadSpec]:
    """The exits of a ``depth``-block backbone of width ``dim`` (``blocks`` overrides :func:`exit_blocks`)."""
    blocks = exit_blocks(depth) if blocks is None else [int(b) for b in blocks]
    if not blocks or sorted(set(blocks)) != blocks or blocks[0] < 1 or blocks[-1] >= depth:
        raise ConfigError(f"exit blocks must be increasing block numbers in 1..{depth - 1}, got {blocks}")
    k = len(blocks)
    plan = []
    for i, b in enumerate(blocks):
        quarter = (4 * i) // k
        if quarter == 0:
            plan.append(HeadSpec(b, "lph_dw"))
        elif quarter == 1:
            plan.append(HeadSpec(b, "lph"))
        else:
            plan.append(HeadSpec(b, "gah", stride=2 if quarter == 2 else 3, num_heads=attention_heads(dim)))
    return plan


class _ExitHead(nn.Module):
    """Shared part: split tokens, features (subclass), mean-pool + class-token embedding, Linear classifier(s)."""

    def __init__(self, dim: int, num_classes: int, grid: tuple[int, int], num_prefix_tokens: int,
                 cls_index: int | None, dist_index: int | None):
        super().__init__()
        self.dim, self.grid = dim, tuple(grid)
        self.num_prefix_tokens = num_prefix_tokens
        self.cls_index, self.dist_index = cls_index, dist_index
        self.classifier = nn.Linear(dim, num_classes)
        self.classifier_dist = nn.Linear(dim, num_classes) if dist_index is not None else None

    def to_grid(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, N, C] patch tokens → [B, C, H, W]."""
        h, w = self.grid
        return patches.transpose(1, 2).reshape(patches.shape[0], self.dim, h, w)

    def features(self, patches: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_with_features(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, classes], head features [B, N', C])`` from the full token sequence of one block."""
        feats = self.features(tokens[:, self.num_prefix_tokens:])
        pooled = feats.mean(dim=1)
        if self.cls_index is None:
            return self.classifier(pooled), feats
        logits = self.classifier(pooled + tokens[:, self.cls_index])
        if self.classifier_dist is not None:
            logits = (logits + self.classifier_dist(pooled + tokens[:, self.dist_index])) / 2
        return logits, feats

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(tokens)[0]


class LocalPerceptionHead(_ExitHead):
    """LPH: 1×1 conv → GELU → BN → [depthwise 3×3 → GELU → BN] → 1×1 conv → BN, plus the input (residual)."""

    def __init__(self, dim: int, num_classes: int, grid: tuple[int, int], num_prefix_tokens: int,
                 cls_index: int | None, dist_index: int | None, *, depthwise: bool = True):
        super().__init__(dim, num_classes, grid, num_prefix_tokens, cls_index, dist_index)
        layers: list[nn.Module] = [nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim)]
        if depthwise:
            layers += [nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.GELU(), nn.BatchNorm2d(dim)]
        layers += [nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim)]
        self.depthwise = depthwise
        self.body = nn.Sequential(*layers)

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.to_grid(patches)
        return (x + self.body(x)).flatten(2).transpose(1, 2)


class GlobalAggregationHead(_ExitHead):
    """GAH: tokens subsampled with stride r on the grid, MHSA (no qkv bias) and its output projection."""

    def __init__(self, dim: int, num_classes: int, grid: tuple[int, int], num_prefix_tokens: int,
                 cls_index: int | None, dist_index: int | None, *, stride: int = 2, num_heads: int = GAH_HEADS):
        super().__init__(dim, num_classes, grid, num_prefix_tokens, cls_index, dist_index)
        if dim % num_heads:
            raise ConfigError(f"global aggregation head: dim {dim} is not divisible by {num_heads} attention heads")
        self.stride, self.num_heads = int(stride), int(num_heads)
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def subsample(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, N, C] → [B, N', C]: every ``stride``-th row and column of the token grid."""
        r = self.stride
        return self.to_grid(patches)[:, :, ::r, ::r].flatten(2).transpose(1, 2)

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.subsample(patches)
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def build_head(spec: HeadSpec, *, dim: int, num_classes: int, grid: tuple[int, int], num_prefix_tokens: int,
               cls_index: int | None, dist_index: int | None) -> _ExitHead:
    """The head module for one :class:`HeadSpec`."""
    common = {"dim": dim, "num_classes": num_classes, "grid": grid, "num_prefix_tokens": num_prefix_tokens,
              "cls_index": cls_index, "dist_index": dist_index}
    if spec.type in ("lph_dw", "lph"):
        return LocalPerceptionHead(**common, depthwise=spec.type == "lph_dw")
    if spec.type == "gah":
        return GlobalAggregationHead(**common, stride=spec.stride or 2, num_heads=spec.num_heads or GAH_HEADS)
    raise ConfigError(f"unknown exit head type '{spec.type}'; allowed: {', '.join(HEAD_TYPES)}")
