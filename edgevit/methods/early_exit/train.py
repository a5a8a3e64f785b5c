"""LGViT two-stage training (methods.md §2).

- Stage 1 (:func:`train_stage1_`), end-to-end from a backbone already trained on the task. Steps alternate:
  even steps minimise CE of the final head; odd steps minimise
  ``(Σ_k ℓ_k·CE_k + L·CE_final) / (Σ_k ℓ_k + L)`` with ℓ_k the exit's block number and L the depth.
  The backbone (lr ``lr_backbone``) and the heads (``lr_heads``) are trained.
- Stage 2 (:func:`train_stage2_`), self-distillation: backbone AND final head frozen (``requires_grad=False``,
  eval mode so not even BatchNorm statistics move — they are bit-identical afterwards), heads trained on
  ``(1-α)·Σ_k CE(z_k, y) + α·Σ_k T²·KL(final ‖ z_k) + β_hete·L_hete + β_homo·L_homo`` with α=0.3, T=2, β=0.01:

  - ``L_hete``: for every exit, KL between channel-wise softmaxes (softmax over the tokens of each channel) of the
    last layer's patch tokens (after the final norm; subsampled with the GAH's stride for attention exits) and the
    exit's features, averaged over channels and exits;
  - ``L_homo``: MSE between each conv (LPH) exit's features and the last conv exit's (detached); MSE between the
    channel Gram matrices (FᵀF / tokens) of each attention (GAH) exit and the last attention exit's (detached).

Both stages train in place (trailing ``_``) and return a history record; :func:`train_early_exit` runs both on a new
model and returns it.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..schedule import warmup_cosine
from .config import TrainConfig
from .heads import GlobalAggregationHead, LocalPerceptionHead
from .model import EarlyExitViT, attach_exits

log = logging.getLogger(__name__)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x) - batch_size + 1 if len(x) >= batch_size else 1, batch_size):
        idx = perm[i:i + batch_size]
        yield x[idx], y[idx]


def _steps_for(n: int, batch_size: int, epochs: float, cap: int | None) -> int:
    per_epoch = max(1, n // batch_size)
    steps = math.ceil(epochs * per_epoch)
    return min(steps, cap) if cap is not None else steps


def _loop(model: EarlyExitViT, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, seed: int,
          step_fn, log_every: int, name: str) -> list[dict]:
    from ...progress import progress

    gen = torch.Generator().manual_seed(seed)
    hist, step, t0 = [], 0, time.perf_counter()
    bar = progress(total=steps, desc=name, unit="step")
    while step < steps:
        for xb, yb in _batches(x, y, batch_size, gen):
            if step >= steps:
                break
            losses = step_fn(step, xb, yb)
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == steps:
                rec = {"step": step, **{k: round(float(v), 5) for k, v in losses.items()},
                       "seconds": round(time.perf_counter() - t0, 1)}
                hist.append(rec)
                log.info("%s step %d/%d %s", name, step, steps, rec)
    bar.close()
    return hist


def _as_tensors(data, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 NCHW, labels int64) from an ArrayDataset or a (preprocessed images, labels) pair."""
    from ...data import ArrayDataset, preprocess

    if isinstance(data, ArrayDataset):
        chunks = [preprocess(data.images[i:i + 4096], spec) for i in range(0, len(data), 4096)]
        return torch.from_numpy(np.concatenate(chunks)), torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    x, y = data
    return torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y, dtype=np.int64))


def train_stage1_(model: EarlyExitViT, data, *, config: TrainConfig | None = None) -> dict:
    """Stage 1 in place: alternating final-head CE / block-weighted CE of all exits. Returns the history record."""
    config = config or TrainConfig()
    config.validate()
    x, y = _as_tensors(data, model.edgevit_spec)
    steps = _steps_for(len(x), config.batch_size, config.stage1_epochs, config.stage1_steps)
    if steps == 0:
        return {"steps": 0, "history": []}
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": model.backbone.parameters(), "lr": config.lr_backbone},
                             {"params": model.heads.parameters(), "lr": config.lr_heads}],
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    weights = [float(b) for b in model.exit_blocks]
    depth = float(model.depth)
    model.train()

    def step_fn(step, xb, yb):
        opt.zero_grad(set_to_none=True)
        if step % 2 == 0:
            loss = F.cross_entropy(model(xb), yb)
            parts = {"loss": loss.item(), "ce_final": loss.item()}
        else:
            out = model.forward_all(xb)
            ce = [F.cross_entropy(z, yb) for z in out["exits"]]
            ce_final = F.cross_entropy(out["final"], yb)
            loss = (sum(w * c for w, c in zip(weights, ce)) + depth * ce_final) / (sum(weights) + depth)
            parts = {"loss": loss.item(), "ce_exits_mean": float(sum(c.item() for c in ce) / len(ce))}
        loss.backward()
        opt.step()
        sched.step()
        return parts

    t0 = time.perf_counter()
    hist = _loop(model, x, y, steps, config.batch_size, config.seed, step_fn, config.log_every, "stage 1")
    model.eval()
    return {"steps": steps, "samples": len(x), "seconds": round(time.perf_counter() - t0, 1), "history": hist}


def _channel_softmax_kl(target: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(softmax_tokens(target) ‖ softmax_tokens(student)) per channel, averaged over batch and channels."""
    t = F.softmax(target.transpose(1, 2), dim=-1)  # [B, C, N]
    s = F.log_softmax(student.transpose(1, 2), dim=-1)
    return (t * (torch.log(t.clamp_min(1e-12)) - s)).sum(-1).mean()


def _gram(f: torch.Tensor) -> torch.Tensor:
    return f.transpose(1, 2) @ f / f.shape[1]  # [B, C, C]


def stage2_loss(model: EarlyExitViT, out: dict, y: torch.Tensor, config: TrainConfig) -> tuple[torch.Tensor, dict]:
    """The stage-2 objective from ``forward_all(x, features=True)`` (final logits and last tokens detached)."""
    final = out["final"].detach()
    last = out["last_tokens"].detach()
    t = config.temperature
    ce = sum(F.cross_entropy(z, y) for z in out["exits"])
    kd = sum(t * t * F.kl_div(F.log_softmax(z / t, -1), F.softmax(final / t, -1), reduction="batchmean")
             for z in out["exits"])
    hete = []
    conv_idx = [i for i, h in enumerate(model.heads) if isinstance(h, LocalPerceptionHead)]
    attn_idx = [i for i, h in enumerate(model.heads) if isinstance(h, GlobalAggregationHead)]
    for head, feat in zip(model.heads, out["exit_features"]):
        target = head.subsample(last) if isinstance(head, GlobalAggregationHead) else last
        hete.append(_channel_softmax_kl(target, feat))
    l_hete = sum(hete) / len(hete)
    homo = []
    if len(conv_idx) > 1:
        ref = out["exit_features"][conv_idx[-1]].detach()
        homo += [F.mse_loss(out["exit_features"][i], ref) for i in conv_idx[:-1]]
    if len(attn_idx) > 1:
        ref = _gram(out["exit_features"][attn_idx[-1]].detach())
        homo += [F.mse_loss(_gram(out["exit_features"][i]), ref) for i in attn_idx[:-1]]
    l_homo = sum(homo) / len(homo) if homo else torch.zeros((), device=y.device)
    loss = (1 - config.alpha) * ce + config.alpha * kd + config.beta_hete * l_hete + config.beta_homo * l_homo
    return loss, {"loss": loss.item(), "ce": float(ce.item()), "kd": float(kd.item()), "hete": float(l_hete.item()),
                  "homo": float(l_homo.item())}


def train_stage2_(model: EarlyExitViT, data, *, config: TrainConfig | None = None) -> dict:
    """Stage 2 in place: heads only, backbone and final head frozen (bit-identical). Returns the history record."""
    config = config or TrainConfig()
    config.validate()
    x, y = _as_tensors(data, model.edgevit_spec)
    steps = _steps_for(len(x), config.batch_size, config.stage2_epochs, config.stage2_steps)
    if steps == 0:
        return {"steps": 0, "history": []}
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    for p in model.heads.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.heads.parameters(), lr=config.lr_heads, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    model.backbone.eval()  # frozen: no BatchNorm statistics updates, no dropout
    model.heads.train()

    def step_fn(step, xb, yb):
        opt.zero_grad(set_to_none=True)
        out = _forward_frozen(model, xb)
        loss, parts = stage2_loss(model, out, yb, config)
        loss.backward()
        opt.step()
        sched.step()
        return parts

    t0 = time.perf_counter()
    try:
        hist = _loop(model, x, y, steps, config.batch_size, config.seed + 1, step_fn, config.log_every, "stage 2")
    finally:
        for p in model.backbone.parameters():
            p.requires_grad_(True)
        model.eval()
    return {"steps": steps, "samples": len(x), "seconds": round(time.perf_counter() - t0, 1), "history": hist}


def _forward_frozen(model: EarlyExitViT, x: torch.Tensor) -> dict:
    """``forward_all(x, features=True)`` with the backbone under no_grad and the heads with grad."""
    with torch.no_grad():
        t = model.embed(x)
    start = 0
    exits, feats = [], []
    for spec, head in zip(model.plan, model.heads):
        with torch.no_grad():
            t = model.run_blocks(t, start, spec.block)
        start = spec.block
        z, f = head.forward_with_features(t)
        exits.append(z)
        feats.append(f)
    with torch.no_grad():
        t = model.run_blocks(t, start, model.depth)
        final = model.final(t)
        last = model.last_tokens(t)
    return {"exits": exits, "final": final, "exit_features": feats, "last_tokens": last}


def train_early_exit(backbone: nn.Module, data, *, config: TrainConfig | None = None,
                     blocks: list[int] | None = None) -> tuple[EarlyExitViT, dict]:
    """Attach LGViT heads to a copy of ``backbone`` and run stage 1 then stage 2: ``(model, record)``."""
    config = config or TrainConfig()
    config.validate()
    if not hasattr(backbone, "edgevit_spec"):
        raise ConfigError("the backbone has no input spec (edgevit_spec); build it with edgevit.models.create")
    torch.manual_seed(config.seed)
    model = attach_exits(backbone, blocks=blocks)
    x, y = _as_tensors(data, model.edgevit_spec)
    if len(y) and int(y.max()) >= model.num_classes:
        raise ConfigError(f"the data has labels up to {int(y.max())} but {model.edgevit_name} has "
                          f"{model.num_classes} classes; build the backbone with num_classes={int(y.max()) + 1} "
                          f"(edgevit.models.create(name, num_classes=...))")
    r1 = train_stage1_(model, (x, y), config=config)
    r2 = train_stage2_(model, (x, y), config=config)
    return model, {"stage1": r1, "stage2": r2, "model": model.describe()}


@torch.inference_mode()
def collect_logits(model: EarlyExitViT, data, *, batch_size: int = 500) -> dict:
    """Every exit's and the final head's logits on ``data``: ``{"exits": [N, K, C], "final": [N, C], "labels"}``."""
    model.eval()
    x, y = _as_tensors(data, model.edgevit_spec)
    ex, fin = [], []
    for i in range(0, len(x), batch_size):
        out = model.forward_all(x[i:i + batch_size])
        ex.append(torch.stack(out["exits"], dim=1).float().numpy())
        fin.append(out["final"].float().numpy())
    return {"exits": np.concatenate(ex), "final": np.concatenate(fin), "labels": y.numpy()}
