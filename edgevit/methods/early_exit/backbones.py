"""How each supported backbone family runs its token sequence, so exits and export segments reproduce it exactly.

An early-exit model cuts the backbone's ``forward_features`` into pieces (embedding, runs of blocks, final norm and
head). Families differ in what travels next to the tokens: EVA/EVA-02 blocks take the rotary position embedding
(``rope=``), BEiT blocks a shared relative-position bias, ``vit_relpos`` blocks a shared relative-position table,
CaiT adds its class token only in the class-attention stage after the blocks. Each :class:`Family` knows its
embedding, the per-block *context* (recomputed from the backbone's own parameters and buffers wherever a run of
blocks starts, so every export segment keeps a plain ``tokens -> tokens`` interface), its blocks and its final stage.

:func:`family_of` picks the family or raises :class:`~edgevit.errors.ConfigError` naming the timm family that is not
supported and why. :data:`SUPPORTED` lists the supported ones (README "Early exits" names the same).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import ConfigError

# what a non-timm backbone needs to be run like a timm VisionTransformer
REQUIRED_ATTRS = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head", "num_prefix_tokens")


def _call(module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, or ``x`` when the backbone has no such module (``None``)."""
    return x if module is None else module(x)


class Family:
    """The timm VisionTransformer protocol (vit_*, deit_*, deit3_*, flexivit_*, fmnist-vit, ...).

    ``embed``: ``patch_embed`` → ``_pos_embed`` (class, distillation, register tokens, positions) → ``patch_drop`` →
    ``norm_pre``; blocks take the tokens only; ``head``: ``forward_head(norm(tokens))``.
    """

    name = "vit"
    models = "vit_*, deit_*, deit3_*, flexivit_*, edgevit's fmnist-vit* (timm VisionTransformer, distilled too)"

    def prefix_tokens(self, b: nn.Module) -> int:
        """Tokens before the patch tokens while the blocks run (class, distillation, register)."""
        return int(b.num_prefix_tokens)

    def cls_index(self, b: nn.Module) -> int | None:
        return 0 if getattr(b, "cls_token", None) is not None else None

    def dist_index(self, b: nn.Module) -> int | None:
        return 1 if getattr(b, "dist_token", None) is not None else None

    def embed(self, b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = b._pos_embed(b.patch_embed(x))
        x = _call(getattr(b, "patch_drop", None), x)
        return _call(getattr(b, "norm_pre", None), x)

    def context(self, b: nn.Module) -> Any:
        """What every block needs besides the tokens (``None``: nothing)."""
        return None

    def block(self, b: nn.Module, i: int, blk: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return blk(x)

    def last_tokens(self, b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens after the final norm (the distillation target of the heads)."""
        return b.norm(x)[:, self.prefix_tokens(b):]

    def head(self, b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block → the backbone's logits."""
        return b.forward_head(b.norm(x))

    def check(self, b: nn.Module, name: str) -> None:
        """Raise :class:`ConfigError` for a configuration this family's exits cannot reproduce."""
        drop = getattr(b, "patch_drop", None)
        if drop is not None and not isinstance(drop, nn.Identity):
            raise ConfigError(f"cannot attach early exits to {name}: patch dropout (patch_drop_rate > 0) changes the "
                              f"token grid the exit heads reshape to; create the model with patch_drop_rate=0")


class EvaFamily(Family):
    """timm ``Eva``: eva_*, eva02_*, vit_*_rope_* / PE models. Blocks take the rotary embedding (``rope=``; per block
    when ``rope_mixed``); the embedding has no patch dropout step of its own (``_pos_embed`` applies it)."""

    name = "eva"
    models = "eva_*, eva02_* (rotary position embeddings), vit_*_rope_*, vit_pe_* (timm Eva)"

    def embed(self, b, x):
        x, _ = b._pos_embed(b.patch_embed(x))
        return b.norm_pre(x)

    def context(self, b):
        # the non-dynamic branch of Eva._pos_embed (dynamic_img_size is rejected up front)
        if b.rope is None:
            return None
        if hasattr(b.rope, "feat_shape"):
            return b.rope.get_embed()
        return b.rope.get_embed(shape=b.patch_embed.grid_size)

    def block(self, b, i, blk, x, ctx):
        rope = ctx[i] if ctx is not None and getattr(b, "rope_mixed", False) else ctx
        return blk(x, rope=rope)

    def check(self, b, name):
        if b.patch_drop is not None:
            raise ConfigError(f"cannot attach early exits to {name}: patch dropout (patch_drop_rate > 0) changes the "
                              f"token grid the exit heads reshape to; create the model with patch_drop_rate=0")


class BeitFamily(Family):
    """timm ``Beit``: beit_*, beitv2_*. Blocks take the shared relative-position bias (when the model has one)."""

    name = "beit"
    models = "beit_*, beitv2_* (timm Beit)"

    def embed(self, b, x):
        x = b.patch_embed(x)
        x = torch.cat((b.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if b.pos_embed is not None:
            x = x + b.pos_embed
        return b.pos_drop(x)

    def context(self, b):
        return b.rel_pos_bias() if b.rel_pos_bias is not None else None

    def block(self, b, i, blk, x, ctx):
        return blk(x, shared_rel_pos_bias=ctx)

    def check(self, b, name):
        pass


class RelPosFamily(Family):
    """timm ``VisionTransformerRelPos``: vit_relpos_*, vit_srelpos_*. Blocks take the shared relative-position table."""

    name = "vit_relpos"
    models = "vit_relpos_*, vit_srelpos_* (timm VisionTransformerRelPos)"

    def embed(self, b, x):
        x = b.patch_embed(x)
        if b.cls_token is not None:
            x = torch.cat((b.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x

    def context(self, b):
        return b.shared_rel_pos.get_bias() if b.shared_rel_pos is not None else None

    def block(self, b, i, blk, x, ctx):
        return blk(x, shared_rel_pos=ctx)

    def check(self, b, name):
        pass


class CaitFamily(Family):
    """timm ``Cait``: cait_*. The blocks see patch tokens only; the class token joins in the class-attention stage
    after the last block, so exits pool patch tokens and the final stage runs ``forward_cls`` before the norm."""

    name = "cait"
    models = "cait_* (timm Cait; exits see patch tokens only)"

    def prefix_tokens(self, b):
        return 0

    def cls_index(self, b):
        return None

    def dist_index(self, b):
        return None

    def embed(self, b, x):
        return b.pos_drop(b.patch_embed(x) + b.pos_embed)

    def last_tokens(self, b, x):
        return b.norm(x)

    def head(self, b, x):
        if b.blocks_token_only is not None:
            x = b.forward_cls(x)
        return b.forward_head(b.norm(x))

    def check(self, b, name):
        pass


def _known() -> list[tuple[type, Family]]:
    out: list[tuple[type, Family]] = []
    try:
        from timm.models.beit import Beit
        from timm.models.cait import Cait
        from timm.models.eva import Eva
        from timm.models.vision_transformer import VisionTransformer
        from timm.models.vision_transformer_relpos import VisionTransformerRelPos
    except ImportError:  # pragma: no cover - timm is a core dependency
        return out
    return [(VisionTransformer, Family()), (Eva, EvaFamily()), (Beit, BeitFamily()),
            (VisionTransformerRelPos, RelPosFamily()), (Cait, CaitFamily())]


# why the timm families with ``.blocks`` that exits cannot follow are refused (module name → reason)
UNSUPPORTED = {
    "convit": "its class token joins the sequence in the middle of the blocks (at local_up_to_layer)",
    "crossvit": "it runs two token streams of different patch sizes through multi-scale blocks",
    "xcit": "its blocks take the patch grid as arguments and the class token joins after them",
    "tnt": "its blocks carry a second (pixel) token stream",
    "vision_transformer_sam": "its blocks work on an NHWC grid with windowed attention and end in a conv neck",
    "hiera": "its blocks pool the token grid between stages (multi-scale)",
    "hieradet_sam2": "its blocks pool the token grid between stages (multi-scale)",
    "naflexvit": "it takes variable-resolution patch sequences with coordinates and masks",
    "mlp_mixer": "it has no class token or position embedding and mixes tokens with MLPs (not a ViT block stack)",
    "deepseek_vit": "its blocks work on an NHWC grid and its output keeps the 2-D layout",
    "qwen3_vit": "it takes packed variable-resolution patch sequences",
    "gemma4_vit": "it takes packed variable-resolution patch sequences",
}

SUPPORTED = ("vit", "eva", "beit", "vit_relpos", "cait")


def _family_label(b: nn.Module) -> str:
    mod = type(b).__module__
    return mod.rsplit(".", 1)[-1] if mod.startswith("timm.") else mod


def supported_text() -> str:
    return "; ".join(f"{f.name}: {f.models}" for _, f in _known())


def family_of(backbone: nn.Module, name: str) -> Family:
    """The :class:`Family` that runs ``backbone`` exactly as its own ``forward`` does.

    timm classes are matched by class, and only when ``forward`` and ``forward_features`` are the family's own (a
    subclass that overrides them is a different network). Other timm models are refused with
    :class:`ConfigError` naming their family (timm module) and the reason; non-timm modules are run by the
    VisionTransformer protocol when they have :data:`REQUIRED_ATTRS` (else the missing attribute is named).
    """
    cls = type(backbone)
    for known, fam in _known():
        if (isinstance(backbone, known) and cls.forward is known.forward
                and getattr(cls, "forward_features", None) is known.forward_features):
            fam.check(backbone, name)
            return fam
    if cls.__module__.startswith("timm."):
        family = _family_label(backbone)
        why = UNSUPPORTED.get(family, "its forward does not run one token sequence (prefix tokens + patch-token "
                                      "grid) through a stack of blocks the way the supported families do")
        raise ConfigError(f"cannot attach early exits to {name}: timm family '{family}' ({cls.__name__}) is not "
                          f"supported — {why}. Supported families: {supported_text()}")
    for attr in REQUIRED_ATTRS:
        if not hasattr(backbone, attr):
            raise ConfigError(
                f"cannot attach early exits to {name} ({cls.__name__}): it has no attribute '{attr}'. "
                f"edgevit attaches LGViT exits to timm VisionTransformer-style models (attributes "
                f"{', '.join(REQUIRED_ATTRS)}), e.g. fmnist-vit, vit_*, deit_* (distilled ones too); "
                f"supported timm families: {supported_text()}")
    fam = Family()
    fam.check(backbone, name)
    return fam
