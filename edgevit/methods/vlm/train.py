"""Training dual encoders: the LiT-style teacher (frozen pretrained text tower, contrastive) and students distilled
from it with DCD, the contrastive-only baseline or TinyCLIP affinity mimicking.

Each step takes B images and their captions, plus (fashion-mnist-pairs) their hard negative captions as extra
columns, so the batch score matrix is ``[B, B·(1 + negatives)]``. Teacher scores come from the teacher run online
or from a stored-embedding cache (:mod:`.cache`); with a cache the teacher is never called.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ...config import ConfigModel
from ...data.captions import all_texts
from ...errors import ConfigError
from .losses import DCD_POOL, affinity_loss, clip_loss, dcd_loss, false_negatives

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
    stop_after: int | None = Field(None, ge=1, description="stop after this many epochs of the schedule (the learning "
                                   "rate stays where the full schedule has it); continue with --resume")
    negatives: bool = Field(True, description="add the dataset's hard negative captions as extra batch columns")
    mask_false_negatives: bool = Field(True, description="leave a column out of row i's negatives (CLIP loss, DCD "
                                       "candidates) when its text says the same as row i's caption: the same string, "
                                       "or the same content where the dataset knows it (fashion-mnist-pairs: the same "
                                       "two items in the same order in another template)")
    contrastive_weight: float = Field(0.5, ge=0, description="affinity: weight of the CLIP loss mixed in")
    dcd_pool: int | None = Field(DCD_POOL, ge=1, description="dcd: F, the random in-batch negatives per row that the "
                                 "teacher picks its 7 hardest from (null: the whole row, i.e. the batch's very hardest "
                                 "negatives only)")
    dcd_center: bool = Field(True, description="dcd: match the student's candidate scores to the teacher's relative "
                             "to each row's mean (a dual encoder's similarity level is arbitrary: CLIP's softmax "
                             "ignores it); false: the literal MSE of the cross-encoder DCD, which pulls a student from "
                             "scratch to the teacher's high hard-negative scores, i.e. to one embedding for all")
    dcd_ce: Literal["bce", "infonce"] = Field("infonce", description="dcd: the entropy-weighted hard-label term per "
                                              "row: infonce (the dual encoder's own task loss, softmax over the whole "
                                              "in-batch row; default) or bce (the cross-encoder DCD's BCE over the 8 "
                                              "candidates: from scratch it collapses, see BENCHMARKS.md)")
    dcd_clip_weight: float = Field(0.5, ge=0, description="dcd: weight of the student's own in-batch CLIP loss added "
                                   "to the DCD loss (as affinity mimicking mixes it in, contrastive_weight); 0: the DCD "
                                   "loss alone. Measured (BENCHMARKS.md): with 0.5 the DCD student beats the "
                                   "contrastive-only one both ways; alone it ties it")
    replay_epochs: int | None = Field(None, ge=1, description="epoch e uses the augmentation seeds (and teacher-cache "
                                      "epoch) of epoch e mod N: a cache of N epochs serves longer training, and "
                                      "every method sees the same augmented images")
    seed: int = 0


def batch_texts(data, idx: np.ndarray, first: np.ndarray, negatives: bool) -> list[str]:
    """The texts (score-matrix columns) of a batch of images ``idx``: their first captions in order, then (with
    ``negatives``) each hard negative column: ``B·(1 + k)`` strings."""
    texts = [data.captions[first[i]] for i in idx]
    if negatives and data.hard_negatives:
        k = len(data.hard_negatives[0])
        texts += [data.hard_negatives[i][j] for j in range(k) for i in idx]
    return texts


class FrozenTextTable:
    """What a FROZEN MiniLM backbone gives for each UNIQUE caption of a dataset, computed once in eval mode without
    gradients, in batches of ``batch_size``: the pooled features ``float32 [U, 384]`` for a mean-pooling tower, the
    token states ``[U, 32, 384]`` and their mask for an attention-pooling one (its pooling trains, so it runs per
    step on the stored states). ``embed(texts)`` then gives what running the tower on ``texts`` gives (to float
    rounding of another padding length), so LiT training never runs the text backbone per step: the captions of
    template datasets are a few hundred strings. Raises :class:`ConfigError` when the token states would need more
    than ``max_bytes`` (default 4 GiB: ~80k captions)."""

    def __init__(self, tower, texts: list[str], *, batch_size: int = 256, max_bytes: int = 4 << 30):
        from .towers import MAX_TOKENS

        uniq = list(dict.fromkeys(texts))
        self.row = {t: i for i, t in enumerate(uniq)}
        self.tower = tower
        self.pooled = tower.pool_kind == "mean"
        width = int(tower.proj.in_features)
        need = len(uniq) * MAX_TOKENS * width * 4
        if not self.pooled and need > max_bytes:
            raise ConfigError(f"the token states of {len(uniq)} distinct captions need {need / 2**30:.1f} GiB; train "
                              f"the attention-pooling text tower on fewer captions, or use --text-pool mean")
        was = tower.backbone.training
        tower.backbone.eval()
        feats, states, masks = [], [], []
        with torch.no_grad():
            for i in range(0, len(uniq), batch_size):
                ids, mask = tower.tokenize(uniq[i : i + batch_size])
                h = tower.states(ids, mask)
                if self.pooled:
                    feats.append(tower.pool(h, mask))
                else:
                    pad = MAX_TOKENS - h.shape[1]
                    states.append(F.pad(h, (0, 0, 0, pad)))
                    masks.append(F.pad(mask, (0, pad)))
        tower.backbone.train(was)
        self.batches = -(-len(uniq) // batch_size)
        if self.pooled:
            self.table = torch.cat(feats) if feats else torch.zeros(0, width)
        else:
            self.table = torch.cat(states) if states else torch.zeros(0, MAX_TOKENS, width)
            self.mask = torch.cat(masks) if masks else torch.zeros(0, MAX_TOKENS, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.row)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised ``[len(texts), E]`` through the tower's (trainable) pooling and projection."""
        rows = torch.tensor([self.row[t] for t in texts], dtype=torch.long)
        f = self.table[rows] if self.pooled else self.tower.pool(self.table[rows], self.mask[rows])
        return F.normalize(self.tower.proj(f), dim=-1)


class TokenTable:
    """Every caption of a dataset tokenised once: ``batch(texts)`` gives the ``(input_ids, attention_mask)`` the
    tokenizer gives for ``texts`` (padded to the longest of them), by gathering rows and trimming the padding."""

    def __init__(self, tower, texts: list[str]):
        self.row = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        self.ids, self.mask = tower.tokenize(list(self.row)) if self.row else (torch.zeros(0, 0), torch.zeros(0, 0))
        self.tower = tower

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if any(t not in self.row for t in texts):  # a text outside the dataset: tokenise it directly
            return self.tower.tokenize(texts)
        sel = torch.tensor([self.row[t] for t in texts], dtype=torch.long)
        mask = self.mask[sel]
        width = int(mask.sum(1).max())
        return self.ids[sel, :width], mask[:, :width]


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


CHECKPOINT = "checkpoint.pt"
PROGRESS_EVERY = 25  # steps between progress lines in the log


def _trainable_state(model, frozen_text: bool) -> dict:
    """The model's state without a frozen MiniLM backbone (it comes from its package, 90 MB)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not (frozen_text and k.startswith("text.backbone."))}


def _save_checkpoint(path: Path, model, opt, sched, epoch: int, record: dict, cfg, frozen_text: bool) -> None:
    from ...fileio import atomic_output

    with atomic_output(path) as tmp:  # all-or-nothing: a kill mid-write keeps the previous epoch's checkpoint
        torch.save({"model": _trainable_state(model, frozen_text), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": epoch, "record": json.dumps(record),
                    "config": json.dumps(cfg.model_dump()), "rng": torch.get_rng_state()}, tmp)


_BEFORE_OPTION = {"mask_false_negatives": False, "dcd_pool": None, "dcd_center": False, "dcd_ce": "bce",
                  "dcd_clip_weight": 0.0}  # training options added later: what runs did before them


def _load_checkpoint(path: Path, model, opt, sched, cfg, frozen_text: bool) -> tuple[int, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    saved = json.loads(ck["config"])
    saved = {**_BEFORE_OPTION, **saved}  # a checkpoint older than an option ran as the option's old behaviour
    diff = [f"{k}: {saved.get(k)} → {v}" for k, v in cfg.model_dump().items()
            if k not in ("max_seconds", "stop_after") and saved.get(k) != v]  # only where a run stops may change
    if diff:
        raise ConfigError(f"{path} was written with other training options ({'; '.join(diff)}); resume with the same "
                          f"options, or train into another --out")
    state = ck["model"]
    if frozen_text:
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("text.backbone.")})
    model.load_state_dict(state, strict=True)
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"])
    return int(ck["epoch"]), json.loads(ck["record"])


def train_dual(model, data, *, config: VlmTrainConfig | None = None, teacher=None, cache=None,
               eval_data=None, on_epoch=None, checkpoint_dir: str | Path | None = None, resume: bool = False) -> dict:
    """Train ``model`` (a :class:`~.towers.DualEncoder`) on a :class:`~edgevit.data.captions.CaptionDataset`.

    ``config.method`` 'contrastive': CLIP loss only (the teacher itself, or the baseline student); 'dcd' and
    'affinity' need teacher scores: from ``cache`` (a :class:`~.cache.EmbeddingCache` for this data; the teacher
    is never run) or ``teacher`` (run online in eval mode). Images are augmented with per-sample seeds
    (:func:`~.cache.epoch_seeds`), identical to those the cache stored. Frozen parameters (a LiT text backbone)
    are skipped; a frozen MiniLM's features of every unique caption are computed once before the first step
    (:class:`FrozenTextTable`) and looked up. ``config.replay_epochs`` N: epoch e replays the augmentation seeds
    and cache epoch e mod N. ``checkpoint_dir``: ``checkpoint.pt`` (trainable weights, optimiser, schedule, record)
    is written there after every epoch; ``resume`` continues from it (same options, else :class:`ConfigError`).
    Returns the training record (loss history, steps, seconds, teacher calls, text-backbone calls, retrieval of
    ``eval_data`` after each epoch).
    """
    from ..distill.augment import epoch_seeds
    from .evaluate import evaluate_retrieval
    from .towers import MiniLMTower

    cfg = config or VlmTrainConfig()
    if cfg.method != "contrastive" and teacher is None and cache is None:
        raise ConfigError(f"method '{cfg.method}' distils from a teacher: pass --teacher DIR or --cache DIR")
    if cache is not None and cfg.replay_epochs and cfg.replay_epochs > cache.epochs:
        raise ConfigError(f"--replay-epochs {cfg.replay_epochs} needs a cache of that many epochs; {cache.path} stores "
                          f"{cache.epochs}")
    if cache is not None and cfg.epochs > cache.epochs and not cfg.replay_epochs:
        raise ConfigError(f"the cache {cache.path} stores {cache.epochs} epoch(s) of teacher embeddings; train for "
                          f"≤ {cache.epochs} epochs, pass --replay-epochs {cache.epochs} (--replay-cache), or rewrite "
                          f"it with --epochs {cfg.epochs}")
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
    record: dict = {"method": cfg.method, "config": cfg.model_dump(), "history": [], "teacher_calls": 0,
                    "text_backbone_calls": 0, "steps": 0, "samples": n, "data": data.name}
    table = None
    if frozen_text:
        t0 = time.perf_counter()
        table = FrozenTextTable(model.text, all_texts(data))
        record["text_backbone_calls"] += table.batches
        record["text_table"] = {"captions": len(table), "seconds": round(time.perf_counter() - t0, 2),
                                "stores": "pooled features" if table.pooled else "token states"}
        log.info("frozen text tower: %d unique captions embedded once in %.1f s", len(table),
                 record["text_table"]["seconds"])

    token_table = None if frozen_text else TokenTable(model.text, all_texts(data))

    def text_emb(texts: list[str]) -> torch.Tensor:
        if not frozen_text:  # a trained tower runs once per DISTINCT text of the batch (gradients flow through
            uniq = list(dict.fromkeys(texts))  # the gather): template captions and their negatives repeat a lot
            rows = {t: i for i, t in enumerate(uniq)}
            emb = model.text(*token_table.batch(uniq))
            return emb if len(uniq) == len(texts) else emb[torch.tensor([rows[t] for t in texts], dtype=torch.long)]
        return table.embed(texts)

    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    start_epoch, prior_s = 0, 0.0  # training seconds of the runs before a resume
    if ckpt is not None and ckpt.is_file():
        if not resume:
            raise ConfigError(f"{ckpt} exists (an earlier run); pass --resume to continue it or choose another --out")
        start_epoch, saved = _load_checkpoint(ckpt, model, opt, sched, cfg, frozen_text)
        record.update({k: saved[k] for k in ("history", "teacher_calls", "steps") if k in saved})
        record["resumed_from_epoch"] = start_epoch
        prior_s = float(saved.get("seconds") or (saved["history"][-1]["seconds"] if saved.get("history") else 0.0))
        log.info("resumed %s after epoch %d", ckpt, start_epoch)
    t_start = time.perf_counter()
    stop = False
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if frozen_text:
            model.text.backbone.eval()
        aug_epoch = epoch % cfg.replay_epochs if cfg.replay_epochs else epoch
        seeds = epoch_seeds(cfg.seed, aug_epoch, n)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        draw = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # DCD's random negatives: per epoch, so
        # that a resume (at an epoch boundary) draws what the uninterrupted run draws

        losses = []
        t_epoch = time.perf_counter()
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            texts = batch_texts(data, idx, first, cfg.negatives)
            x = batch_input(data.images[idx], seeds[idx], model.spec)
            logits = model.logits(model.image(x), text_emb(texts))
            fneg = None
            if cfg.mask_false_negatives:
                keys = [data.content_key(t) for t in texts]
                fneg = false_negatives(keys[: len(idx)], keys)
                record["false_negatives"] = record.get("false_negatives", 0) + int(fneg.sum())
            if cfg.method == "contrastive":
                loss, parts = clip_loss(logits, fneg), {}
            else:
                if cache is not None:
                    ti, tt = cache.image_embeddings(aug_epoch, idx), cache.text_embeddings(texts)
                    t_logits = cache.logit_scale * ti @ tt.t()
                else:
                    with torch.no_grad():
                        teacher.eval()
                        t_logits = teacher.logits(teacher.image(x), teacher.text.encode(texts))
                    record["teacher_calls"] += 1
                if cfg.method == "dcd":
                    loss, parts = dcd_loss(logits, t_logits, fneg, pool=cfg.dcd_pool, generator=draw,
                                           center=cfg.dcd_center, ce=cfg.dcd_ce)
                    if cfg.dcd_clip_weight:
                        loss = loss + cfg.dcd_clip_weight * clip_loss(logits, fneg)
                else:
                    aff = affinity_loss(logits, t_logits)
                    loss = aff + cfg.contrastive_weight * clip_loss(logits, fneg)
                    parts = {"affinity": float(aff.detach())}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            record["steps"] += 1
            if (s + 1) % PROGRESS_EVERY == 0:
                log.info("epoch %d step %d/%d: loss %.4f (mean of the last %d), %.2f s/step", epoch, s + 1,
                         steps_per_epoch, float(np.mean(losses[-PROGRESS_EVERY:])), PROGRESS_EVERY,
                         (time.perf_counter() - t_epoch) / (s + 1))
            if cfg.max_seconds and time.perf_counter() - t_start > cfg.max_seconds:
                stop = True
                break
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "steps": len(losses),
                 "seconds": round(prior_s + time.perf_counter() - t_start, 1),
                 **{k: float(v) for k, v in parts.items()}}
        if eval_data is not None:
            entry["eval"] = evaluate_retrieval(model, eval_data)
        record["history"].append(entry)
        log.info("epoch %d: loss %.4f (%d steps)%s", epoch, entry["loss"], len(losses),
                 f", i2t R@1 {entry['eval']['i2t_r1']:.3f} t2i R@1 {entry['eval']['t2i_r1']:.3f}"
                 if "eval" in entry else "")
        record["seconds"] = entry["seconds"]
        if ckpt is not None:
            _save_checkpoint(ckpt, model, opt, sched, epoch + 1, record, cfg, frozen_text)
        if on_epoch is not None:
            on_epoch(entry)
        if stop:
            record["stopped"] = f"max_seconds {cfg.max_seconds} reached"
            break
        if cfg.stop_after and epoch + 1 >= cfg.stop_after and epoch + 1 < cfg.epochs:
            record["stopped"] = f"stop_after {cfg.stop_after} epochs of {cfg.epochs}"
            break
    record["seconds"] = round(prior_s + time.perf_counter() - t_start, 1)
    model.eval()
    return record
