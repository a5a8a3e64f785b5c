"""Training dual encoders: the LiT-style teacher (frozen pretrained text tower, contrastive) and students distilled
from it with DCD, the contrastive-only baseline or TinyCLIP affinity mimicking.

Each step takes B images and their captions, plus (fashion-mnist-pairs) their hard negative captions as extra
columns, so the batch score matrix is ``[B, B·(1 + negatives)]``. Teacher scores come from the teacher run online
or from a stored-embedding cache (:mod:`.cache`); with a cache the teacher is never called.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ...config import ConfigModel
from ...errors import ConfigError
from .losses import affinity_loss, clip_loss, dcd_loss

log = logging.getLogger(__name__)

METHODS = ("contrastive", "dcd", "affinity")
# light, replayable augmentation: no flips (a flip swaps left and right of a pair caption) and no erasing
AUGMENT = {"crop_padding": 2, "hflip_prob": 0.0, "randaug_n": 0, "erase_prob": 0.0}


class VlmTrainConfig(ConfigModel):
    """Training options of :func:`train_dual` (both the teacher and students)."""

    config_path = "vlm.train"
    method: Literal["contrastive", "dcd", "affinity"] = "contrastive"
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    max_steps: int | None = Field(None, ge=1, description="cap on the steps per epoch (short runs)")
    max_seconds: float | None = Field(None, gt=0, description="stop after this much training time")
    negatives: bool = Field(True, description="add the dataset's hard negative captions as extra batch columns")
    contrastive_weight: float = Field(0.5, ge=0, description="affinity: weight of the CLIP loss mixed in")
    seed: int = 0


def _texts_of(data, idx: np.ndarray, first: np.ndarray, negatives: bool) -> list[str]:
    texts = [data.captions[first[i]] for i in idx]
    if negatives and data.hard_negatives:
        k = len(data.hard_negatives[0])
        texts += [data.hard_negatives[i][j] for j in range(k) for i in idx]
    return texts


def _augment(images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    from ..distill.augment import AugmentConfig, augment_batch

    x01, _ = augment_batch(images, seeds, AugmentConfig(**AUGMENT))
    return x01


def batch_input(images, seeds: np.ndarray, spec) -> torch.Tensor:
    """The model input of a batch: grey uint8 ``[B, H, W]`` images augmented with their seeds (replayable:
    :mod:`edgevit.methods.distill.augment`); other images (RGB, mixed sizes: COCO, Flickr30k) through the evaluation
    preprocessing only (no augmentation)."""
    from ...data import preprocess

    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 3:
        return torch.from_numpy(preprocess(_augment(images, seeds)[:, 0], spec))
    return torch.from_numpy(preprocess(images, spec))


def train_dual(model, data, *, config: VlmTrainConfig | None = None, teacher=None, cache=None,
               eval_data=None, on_epoch=None) -> dict:
    """Train ``model`` (a :class:`~.towers.DualEncoder`) on a :class:`~edgevit.data.captions.CaptionDataset`.

    ``config.method`` 'contrastive': CLIP loss only (the teacher itself, or the baseline student); 'dcd' and
    'affinity' need teacher scores: from ``cache`` (a :class:`~.cache.EmbeddingCache` for this data; the teacher
    is never run) or ``teacher`` (run online in eval mode). Images are augmented with per-sample seeds
    (:func:`~.cache.epoch_seeds`), identical to those the cache stored. Frozen parameters (a LiT text backbone)
    are skipped; a frozen MiniLM's caption features are computed once. Returns the training record (loss
    history, steps, seconds, teacher calls, retrieval of ``eval_data`` after each epoch).
    """
    from ..distill.augment import epoch_seeds
    from .evaluate import evaluate_retrieval
    from .towers import MiniLMTower

    cfg = config or VlmTrainConfig()
    if cfg.method != "contrastive" and teacher is None and cache is None:
        raise ConfigError(f"method '{cfg.method}' distils from a teacher: pass --teacher DIR or --cache DIR")
    if cache is not None and int(cache.fingerprint["seed"]) != cfg.seed:
        raise ConfigError(f"the cache {cache.path} stores augmentations of seed {cache.fingerprint['seed']}, training "
                          f"uses seed {cfg.seed}: pass --seed {cache.fingerprint['seed']} (or rewrite the cache)")
    if data.images.ndim != 3:
        log.info("%s: RGB or mixed-size images are trained without augmentation", data.name)
    torch.manual_seed(cfg.seed)
    first = data.first_caption()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(data)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{n} samples are fewer than one batch of {cfg.batch_size}; lower --batch-size")
    steps_per_epoch = min(steps_per_epoch, cfg.max_steps or steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    frozen_text = isinstance(model.text, MiniLMTower) and not model.text.train_backbone
    feat_memo: dict[str, torch.Tensor] = {}

    def text_emb(texts: list[str]) -> torch.Tensor:
        if not frozen_text:
            return model.text(*model.text.tokenize(texts))
        todo = sorted({t for t in texts if t not in feat_memo})
        if todo:
            with torch.no_grad():
                f = model.text.features(*model.text.tokenize(todo))
            feat_memo.update(zip(todo, f, strict=True))
        return torch.nn.functional.normalize(model.text.proj(torch.stack([feat_memo[t] for t in texts])), dim=-1)

    record: dict = {"method": cfg.method, "config": cfg.model_dump(), "history": [], "teacher_calls": 0,
                    "steps": 0, "samples": n, "data": data.name}
    t_start = time.perf_counter()
    stop = False
    for epoch in range(cfg.epochs):
        model.train()
        if frozen_text:
            model.text.backbone.eval()
        seeds = epoch_seeds(cfg.seed, epoch, n)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        if cache is not None:
            cache.check_epochs(epoch + 1)
        losses = []
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            texts = _texts_of(data, idx, first, cfg.negatives)
            x = batch_input(data.images[idx], seeds[idx], model.spec)
            logits = model.logits(model.image(x), text_emb(texts))
            if cfg.method == "contrastive":
                loss, parts = clip_loss(logits), {}
            else:
                if cache is not None:
                    ti, tt = cache.image_embeddings(epoch, idx), cache.text_embeddings(texts)
                    t_logits = cache.logit_scale * ti @ tt.t()
                else:
                    with torch.no_grad():
                        teacher.eval()
                        t_logits = teacher.logits(teacher.image(x), teacher.text.encode(texts))
                    record["teacher_calls"] += 1
                if cfg.method == "dcd":
                    loss, parts = dcd_loss(logits, t_logits)
                else:
                    aff = affinity_loss(logits, t_logits)
                    loss = aff + cfg.contrastive_weight * clip_loss(logits)
                    parts = {"affinity": float(aff.detach())}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            record["steps"] += 1
            if cfg.max_seconds and time.perf_counter() - t_start > cfg.max_seconds:
                stop = True
                break
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "steps": len(losses),
                 "seconds": round(time.perf_counter() - t_start, 1), **{k: float(v) for k, v in parts.items()}}
        if eval_data is not None:
            entry["eval"] = evaluate_retrieval(model, eval_data)
        record["history"].append(entry)
        log.info("epoch %d: loss %.4f (%d steps)%s", epoch, entry["loss"], len(losses),
                 f", i2t R@1 {entry['eval']['i2t_r1']:.3f} t2i R@1 {entry['eval']['t2i_r1']:.3f}"
                 if "eval" in entry else "")
        if on_epoch is not None:
            on_epoch(entry)
        if stop:
            record["stopped"] = f"max_seconds {cfg.max_seconds} reached"
            break
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    model.eval()
    return record
