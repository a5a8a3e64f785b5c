"""edgevit's own Fashion-MNIST ViTs: timm ``VisionTransformer`` with a small convolutional stem.

The stem (3×3 convs, strides 1-2-2, as TinyViT's stem) turns a 28×28 grey image into 7×7 = 49 tokens.
Blocks, attention and head are timm's, so every tool that understands timm ViTs understands these.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvStem(nn.Module):
    """28×28 → 7×7 tokens: conv3×3/s1 → conv3×3/s2 → conv3×3/s2, BN + GELU between.

    Signature-compatible with timm's ``PatchEmbed`` so it plugs into ``VisionTransformer(embed_layer=...)``.
    """

    def __init__(self, img_size=28, patch_size=4, in_chans=1, embed_dim=128, bias=True, **_ignored):
        super().__init__()
        img_size = img_size if isinstance(img_size, int) else img_size[0]
        c1, c2 = embed_dim // 4, embed_dim // 2
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad = False
        self.flatten = True
        self.output_fmt = "NHWC"
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.GELU(),
            nn.Conv2d(c2, embed_dim, 3, 2, 1, bias=bias),
        )

    def feat_ratio(self, as_scalar=True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size):
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)  # B, N, C


ARCHS = {
    # name: (embed_dim, depth, heads, mlp_ratio)
    "fmnist-vit": {"embed_dim": 128, "depth": 12, "num_heads": 4, "mlp_ratio": 2.0},
    "fmnist-vit-tiny": {"embed_dim": 96, "depth": 6, "num_heads": 3, "mlp_ratio": 2.0},
    "fmnist-vit-micro": {"embed_dim": 64, "depth": 6, "num_heads": 2, "mlp_ratio": 2.0},
    "fmnist-vit-nano": {"embed_dim": 64, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0},
}


def build(name: str, num_classes: int = 10) -> nn.Module:
    """Build an untrained ``fmnist-vit`` family model."""
    from timm.models.vision_transformer import VisionTransformer

    cfg = ARCHS[name]
    return VisionTransformer(
        img_size=28, patch_size=4, in_chans=1, num_classes=num_classes, embed_layer=ConvStem,
        class_token=True, global_pool="token", **cfg,
    )
