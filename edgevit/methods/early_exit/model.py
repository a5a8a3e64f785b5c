"""An LGViT early-exit model around a timm ViT/DeiT-style backbone, its export segments, and its checkpoint file.

::

    ee = attach_exits(edgevit.models.create("fmnist-vit"))      # new model; the backbone is copied
    out = ee.forward_all(x)                                     # every exit's logits + the final head's
    logits, exits = ee.predict(x, thresholds=[0.9] * ee.num_exits, criterion="confidence")  # per-sample exit
    save_early_exit(ee, "runs/ee/early_exit.safetensors"); ee = load_early_exit("runs/ee/early_exit.safetensors")

``predict`` decides per sample: at each exit the samples whose criterion fires leave the batch and the rest go on
(:func:`edgevit.formats.cascade.thresholds.exit_mask`, shared with the exported cascade runtime).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError, ModelLoadError
from ...formats.cascade.thresholds import active_heads, check_thresholds, exit_mask
from .backbones import REQUIRED_ATTRS, Family, family_of  # noqa: F401  (REQUIRED_ATTRS: re-exported)
from .heads import HeadSpec, build_head, head_plan

log = logging.getLogger(__name__)

FORMAT = "edgevit-early-exit"


def check_backbone(backbone: nn.Module) -> Family:
    """The backbone's :class:`~.backbones.Family`; :class:`ConfigError` naming the unsupported family, the attribute a
    non-ViT backbone lacks, or the setting (dynamic image size, patch dropout) exits cannot follow."""
    name = getattr(backbone, "edgevit_name", type(backbone).__name__)
    fam = family_of(backbone, name)
    if getattr(backbone, "dynamic_img_size", False):
        raise ConfigError(f"{name}: dynamic_img_size=True models are not supported (the heads need a fixed token "
                          f"grid); create the model with dynamic_img_size=False")
    if int(getattr(backbone, "num_classes", 0) or 0) < 1:
        raise ConfigError(f"cannot attach early exits to {name}: it has no classification head (num_classes="
                          f"{getattr(backbone, 'num_classes', None)!r}; timm builds some models, e.g. "
                          f"eva02_*_patch14_224, as feature extractors) and exits are classifiers. Build it with a "
                          f"head: edgevit.models.create({name!r}, num_classes=N), or start from a checkpoint with one")
    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    if grid is None:
        raise ConfigError(f"cannot attach early exits to {name}: its patch_embed has no attribute 'grid_size' (the "
                          f"patch-token grid the heads reshape to)")
    return fam


class EarlyExitViT(nn.Module):
    """Backbone + LGViT exit heads. ``forward(x)`` is the backbone's own output (final head)."""

    def __init__(self, backbone: nn.Module, plan: list[HeadSpec] | None = None):
        super().__init__()
        self.family = check_backbone(backbone)  # how its tokens run (rope, relative-position bias, ...)
        self.backbone = backbone
        self.depth = len(backbone.blocks)
        self.dim = int(getattr(backbone, "embed_dim", None) or backbone.num_features)
        self.num_classes = int(backbone.num_classes)
        self.grid = tuple(int(g) for g in backbone.patch_embed.grid_size)
        self.num_prefix_tokens = self.family.prefix_tokens(backbone)  # while the blocks run
        self.cls_index = self.family.cls_index(backbone)
        self.dist_index = self.family.dist_index(backbone)
        self.plan = list(plan) if plan is not None else head_plan(self.depth, self.dim)
        self.heads = nn.ModuleList(
            build_head(s, dim=self.dim, num_classes=self.num_classes, grid=self.grid,
                       num_prefix_tokens=self.num_prefix_tokens, cls_index=self.cls_index,
                       dist_index=self.dist_index) for s in self.plan)
        spec = getattr(backbone, "edgevit_spec", None)
        if spec is not None:
            self.edgevit_spec = spec
        self.edgevit_name = str(getattr(backbone, "edgevit_name", type(backbone).__name__))

    # ------------------------------------------------------------------------------------------- pieces
    @property
    def num_exits(self) -> int:
        return len(self.plan)

    @property
    def exit_blocks(self) -> list[int]:
        return [s.block for s in self.plan]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image → token sequence before the first block (patch embedding, special tokens, positions), exactly as the
        backbone's own ``forward_features`` builds it."""
        return self.family.embed(self.backbone, x)

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks ``start+1 .. stop`` (1-based numbers; python range ``[start, stop)``), each with the family's block
        context (rotary embedding, relative-position bias), recomputed from the backbone's weights for this run."""
        if start >= stop:
            return x
        b = self.backbone
        ctx = self.family.context(b)
        for i in range(start, stop):
            x = self.family.block(b, i, b.blocks[i], x, ctx)
        return x

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block → the backbone's logits (its final stage, norm and head)."""
        return self.family.head(self.backbone, x)

    def last_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block → patch tokens after the final norm ``[N, H*W, dim]``."""
        return self.family.last_tokens(self.backbone, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.run_blocks(self.embed(x), 0, self.depth))

    def forward_all(self, x: torch.Tensor, *, features: bool = False) -> dict:
        """``{"exits": [logits per exit], "final": logits}``; with ``features`` also ``"exit_features"`` (each head's
        tokens before pooling) and ``"last_tokens"`` (patch tokens after the final norm)."""
        t, start = self.embed(x), 0
        exits, feats = [], []
        for spec, head in zip(self.plan, self.heads):
            t = self.run_blocks(t, start, spec.block)
            start = spec.block
            z, f = head.forward_with_features(t)
            exits.append(z)
            feats.append(f)
        t = self.run_blocks(t, start, self.depth)
        out = {"exits": exits, "final": self.final(t)}
        if features:
            out["exit_features"] = feats
            out["last_tokens"] = self.last_tokens(t)
        return out

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, thresholds, criterion: str = "confidence") -> tuple[torch.Tensor, np.ndarray]:
        """Per-sample early exit: ``(logits [N, classes], exit index [N])``; index ``num_exits`` = final head.

        At exit k the samples whose criterion fires (:func:`~edgevit.formats.cascade.thresholds.exit_mask`) leave the
        batch; only the others run the next blocks.
        """
        th = check_thresholds(thresholds, self.num_exits)
        active = active_heads(th, criterion)
        n = x.shape[0]
        out = torch.empty(n, self.num_classes, dtype=torch.float32)
        exits = np.full(n, self.num_exits, dtype=np.int64)
        idx = np.arange(n)
        t, start = self.embed(x), 0
        for k, (spec, head) in enumerate(zip(self.plan, self.heads)):
            t = self.run_blocks(t, start, spec.block)
            start = spec.block
            if not active[k]:  # a threshold that never fires: the head is skipped, as the runtimes do
                continue
            z = head(t)
            mask = exit_mask(z.float().cpu().numpy(), th[k], criterion)
            if mask.any():
                out[torch.from_numpy(idx[mask])] = z[torch.from_numpy(mask)].float().cpu()
                exits[idx[mask]] = k
                keep = ~mask
                idx = idx[keep]
                if len(idx) == 0:
                    return out, exits
                t = t[torch.from_numpy(keep)]
        out[torch.from_numpy(idx)] = self.final(self.run_blocks(t, start, self.depth)).float().cpu()
        return out, exits

    # ------------------------------------------------------------------------------------------- export pieces
    def segments(self) -> list[nn.Module]:
        """The static graphs of the cascade, in order: embedding + blocks up to the first exit, the blocks between
        exits, and the blocks after the last exit + the final head (K + 1 modules sharing this model's weights)."""
        bounds = [0, *self.exit_blocks, self.depth]
        segs: list[nn.Module] = []
        for i in range(len(bounds) - 1):
            segs.append(_Segment(self, bounds[i], bounds[i + 1], first=i == 0, last=i == len(bounds) - 2))
        return segs

    def describe(self) -> dict:
        return {"backbone": self.edgevit_name, "family": self.family.name, "depth": self.depth, "dim": self.dim, "num_classes": self.num_classes,
                "grid": list(self.grid), "num_prefix_tokens": self.num_prefix_tokens, "cls_index": self.cls_index,
                "dist_index": self.dist_index, "exits": [s.to_dict() for s in self.plan]}


class _Segment(nn.Module):
    def __init__(self, ee: EarlyExitViT, start: int, stop: int, *, first: bool, last: bool):
        super().__init__()
        object.__setattr__(self, "_ee", ee)  # not a registered child: export sees only what forward uses
        self.start, self.stop, self.first, self.last = start, stop, first, last
        self.bb = ee.backbone  # registered so the exporters see its parameters (unused ones are dropped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self._ee.embed(x)
        x = self._ee.run_blocks(x, self.start, self.stop)
        return self._ee.final(x) if self.last else x


def attach_exits(backbone: nn.Module, *, blocks: list[int] | None = None, inplace: bool = False) -> EarlyExitViT:
    """A new :class:`EarlyExitViT` with freshly initialised LGViT heads (the backbone is copied unless ``inplace``)."""
    check_backbone(backbone)
    bb = backbone if inplace else copy.deepcopy(backbone)
    dim = int(getattr(bb, "embed_dim", None) or bb.num_features)
    model = EarlyExitViT(bb, head_plan(len(bb.blocks), dim, blocks))
    log.info("attached %d exits after blocks %s of %s (%s)", model.num_exits, model.exit_blocks, model.edgevit_name,
             ", ".join(s.type + (f"/r{s.stride}" if s.stride else "") for s in model.plan))
    return model.eval()


# ----------------------------------------------------------------------------------------------- checkpoints


def save_early_exit(model: EarlyExitViT, path: str | Path, *, extra: dict | None = None) -> Path:
    """Write backbone + heads as safetensors with the backbone name, the exit plan and the input spec."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = getattr(model, "edgevit_spec", None)
    meta = {"format": FORMAT, "arch": model.edgevit_name, "plan": json.dumps([s.to_dict() for s in model.plan]),
            "num_classes": str(model.num_classes), "extra": json.dumps(extra or {})}
    if spec is not None:
        meta["input_spec"] = json.dumps(spec.to_dict())
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    from ...fileio import atomic_output
    from ...models import canonical_safetensors_header

    with atomic_output(path) as tmp:  # all-or-nothing, and the same bytes for the same weights
        save_file(state, str(tmp), metadata=meta)
        canonical_safetensors_header(tmp)
    return path


def load_early_exit(path: str | Path) -> EarlyExitViT:
    """An :class:`EarlyExitViT` from :func:`save_early_exit`'s file (in eval mode)."""
    from ...models import create, load_state_dict_strict, read_state_dict
    from ...spec import InputSpec

    path = Path(path)
    if path.is_dir():
        path = path / "early_exit.safetensors"
    if not path.exists():
        raise ModelLoadError(f"early-exit checkpoint {path} does not exist; train one first "
                             f"(edgevit early-exit train --model NAME --out DIR)")
    state, meta = read_state_dict(path)
    if meta.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not an edgevit early-exit checkpoint (metadata format is "
                             f"{meta.get('format')!r}, expected {FORMAT!r}); write it with save_early_exit")
    num_classes = int(meta.get("num_classes", 0)) or None
    backbone = create(meta["arch"], num_classes=num_classes) if not _is_edgevit(meta["arch"]) else create(meta["arch"])
    plan = [HeadSpec(**d) for d in json.loads(meta["plan"])]
    model = EarlyExitViT(backbone, plan)
    load_state_dict_strict(model, state, source=str(path))
    if "input_spec" in meta:
        model.edgevit_spec = InputSpec.from_dict(json.loads(meta["input_spec"]))
    model.edgevit_extra = json.loads(meta.get("extra") or "{}")
    return model.eval()


def _is_edgevit(name: str) -> bool:
    from ...models import MODELS

    return name in MODELS
