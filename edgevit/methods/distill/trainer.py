"""Student training: from the sparse teacher cache (TinyViT), with online KD, or from labels — single process or
data-parallel under torchrun (DDP, DistributedSampler, rank-0 checkpoints every epoch, ``resume``).

The three modes see exactly the same augmented images (the per-sample seeds of :func:`epoch_seeds`, which are
also the seeds the cache stores) and differ only in the target:

- ``cache``:  the stored top-K of the teacher, rebuilt densely; the teacher is never run (counted);
- ``online``: the same top-K-smoothed target, computed by running the teacher on the batch (the baseline the
  cache is meant to beat on wall time);
- ``labels``: one-hot labels with label smoothing (mixed with the partner's label when mixup/cutmix is on).

Labels are never in the loss of the distillation modes; they are only used to log training accuracy.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...progress import progress
from .augment import AugmentConfig, augment_batch, epoch_seeds
from .config import MODES, TrainConfig

log = logging.getLogger(__name__)

__all__ = ["MODES", "TrainConfig", "evaluate_model", "load_cache_dataset", "train_student"]


def evaluate_model(model, dataset, *, batch_size: int = 500, limit: int | None = None) -> dict:
    """Top-1 of a torch classifier on a dataset (preprocessed with the model's input spec, as ``edgevit eval``)."""
    import torch

    from ...data import preprocess

    spec = model.edgevit_spec
    n = min(len(dataset), limit) if limit else len(dataset)
    correct = 0
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            x = torch.from_numpy(preprocess(dataset.images[i:j], spec)).to(next(model.parameters()).device)
            correct += int((model(x).argmax(-1).cpu().numpy() == dataset.labels[i:j]).sum())
    model.train(was_training)
    return {"top1": correct / n if n else float("nan"), "n": n, "seconds": round(time.perf_counter() - t0, 3)}


def load_cache_dataset(cache, *, data_dir: str | None = None):
    """The dataset split a cache was written for (its first ``num_samples`` samples), verified by content hash."""
    from ...data import load_dataset

    fp = cache.fingerprint
    ds = load_dataset(fp["dataset"] if fp["dataset"] == "fashion-mnist" else fp["dataset"].split(":", 1)[-1],
                      fp["split"], data_dir=data_dir, limit=fp["num_samples"])
    cache.check(dataset=ds, split=fp["split"])
    return ds


def _param_sha(model) -> str:
    """sha256 of the parameters (not buffers) — equal on every rank after a correct data-parallel run."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _sync_buffers(net, info) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as DDP does before each forward."""
    if info.distributed:
        import torch.distributed as dist

        for b in net.buffers():
            dist.broadcast(b.data, 0)


def train_student(student, *, out_dir: str | Path, config: TrainConfig | None = None, cache=None, teacher=None,
                  dataset=None, test_dataset=None, augment: AugmentConfig | None = None, resume: bool = False,
                  dist_info=None) -> dict:
    """Train ``student`` and save ``student.safetensors`` (with arch metadata) and ``checkpoint.pt`` in ``out_dir``.

    ``cache`` (a :class:`~edgevit.methods.distill.cache.TeacherCache`) is required for mode ``cache``; ``teacher`` for mode
    ``online`` (in mode ``cache`` a teacher is only used to check the cache's fingerprint — it is never run).
    ``dataset`` defaults to the cache's. Returns a JSON-able record (history, final top-1, teacher calls, per-rank
    parameter hashes, timings).
    """
    import torch
    import torch.distributed as dist

    from ...faults import kill_point
    from ...fileio import atomic_output
    from ...models import save_checkpoint
    from . import distributed
    from .cache import model_input
    from .targets import (
        check_topk,
        default_topk,
        dense_targets,
        label_targets,
        soft_target_cross_entropy,
        teacher_calls,
        teacher_topk,
    )

    cfg = config or TrainConfig()
    cfg.validate()
    info = dist_info or distributed.DistInfo()
    out = Path(out_dir)
    torch.set_flush_denormal(True)

    # ------------------------------------------------------------------ what we train on
    if cfg.mode == "cache":
        if cache is None:
            raise ConfigError("mode 'cache' needs a cache: pass --cache DIR (written by `edgevit distill cache`)")
        if not cfg.replay_cache:
            cache.check_epochs(cfg.epochs)
        if teacher is not None:
            cache.check(teacher=teacher)
    if cfg.mode == "online" and teacher is None:
        raise ConfigError("mode 'online' runs the teacher on every batch: pass --teacher NAME")
    if cache is not None:
        if dataset is None:
            dataset = load_cache_dataset(cache)
        else:
            cache.check(dataset=dataset)
        if augment is not None and augment != cache.augment:
            raise ConfigError("the augmentation config differs from the cache's; the student must replay the "
                              "cache's transforms (leave the augmentation options unset with --cache)")
        augment = cache.augment
        seed = cache.seed
        num_classes = cache.num_classes
        topk = cache.topk
    else:
        if dataset is None:
            raise ConfigError("no training data: pass a dataset (or a cache, which names its dataset)")
        augment = augment or AugmentConfig()
        seed = cfg.seed
        tnc = teacher.edgevit_spec.num_classes if hasattr(teacher, "edgevit_spec") else None
        num_classes = int(tnc or len(dataset.classes))
        topk = cfg.topk if cfg.topk is not None else default_topk(num_classes)
    if cfg.mode == "online":
        check_topk(topk, num_classes)
    if dataset.images.ndim != 3:
        raise ConfigError(f"distillation trains on grey images [N,H,W]; {dataset.name} has {dataset.images.shape}")

    net = student.to(info.device)
    spec = net.edgevit_spec
    tspec = teacher.edgevit_spec if teacher is not None and hasattr(teacher, "edgevit_spec") else None
    if cfg.mode == "online":
        teacher = teacher.to(info.device).eval()
    with torch.inference_mode():
        probe = net.eval()(model_input(augment_batch(dataset.images[:1], np.zeros(1, np.int64), augment,
                                                     dataset_images=dataset.images)[0], spec).to(info.device))
    if probe.shape[-1] != num_classes:
        raise ConfigError(f"the student {getattr(net, 'edgevit_name', type(net).__name__)} has {probe.shape[-1]} "
                          f"outputs but the targets have {num_classes} classes; create it with num_classes="
                          f"{num_classes}")
    net.train()

    # ------------------------------------------------------------------ optimiser, schedule, DDP, sampler
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    from torch.utils.data.distributed import DistributedSampler

    n = len(dataset)
    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                 drop_last=False)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    ckpt_path = out / "checkpoint.pt"
    history: list[dict] = []
    start_epoch = 0
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=info.device, weights_only=True)
        saved = json.loads(ck["config"])
        for key in ("mode", "epochs", "batch_size", "lr", "seed"):
            if saved.get(key) != cfg.model_dump().get(key):
                raise ConfigError(f"--resume: {ckpt_path} was trained with {key}={saved.get(key)!r}, now "
                                  f"{key}={cfg.model_dump().get(key)!r}; use the same settings or a new --out")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if "rng" in ck:  # dropout / stochastic depth continue the uninterrupted run's random stream
            torch.set_rng_state(ck["rng"])
        start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
        log.info("resumed %s after epoch %d", ckpt_path, start_epoch)
    elif resume:
        log.warning("--resume: no checkpoint at %s, starting from epoch 1", ckpt_path)

    model = net
    if info.distributed:
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        # a 1-input-channel conv's weight grad has equivalent but different strides; harmless for DDP
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

        model = DDP(net, device_ids=[info.local_rank] if info.device.startswith("cuda") else None)

    # ------------------------------------------------------------------ batches (prepared one step ahead)
    labels_all = dataset.labels

    def prepare(seeds_epoch: np.ndarray, ind: np.ndarray, records) -> dict:
        t0 = time.perf_counter()
        b: dict[str, Any] = {"labels": labels_all[ind]}
        if records is not None:
            seeds, idx, val = records.get(ind)
            b["targets"] = dense_targets(idx, val, num_classes)
            b["teacher_top1"] = idx[:, 0].astype(np.int64)
        else:
            seeds = seeds_epoch[ind]
        x01, mixes = augment_batch(dataset.images[ind], seeds, augment, dataset_images=dataset.images)
        b["x"] = model_input(x01, spec)
        if cfg.mode == "online":
            b["x_teacher"] = b["x"] if tspec == spec else model_input(x01, tspec or spec)
        if cfg.mode == "labels":
            partners = [labels_all[m[1]] if m is not None else 0 for m in mixes]
            b["targets"] = label_targets(b["labels"], num_classes, smoothing=cfg.label_smoothing, mixes=mixes,
                                         partner_labels=partners)
        b["prep_s"] = time.perf_counter() - t0
        return b

    calls0 = teacher_calls()
    pool = ThreadPoolExecutor(max_workers=1)
    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
    try:
        for epoch in range(start_epoch, last_epoch):
            sampler.set_epoch(epoch)
            order = np.fromiter(iter(sampler), dtype=np.int64)
            cache_e = epoch % cache.epochs if cache is not None and cfg.replay_cache else epoch
            records = cache.epoch(cache_e) if cfg.mode == "cache" else None
            seeds_epoch = epoch_seeds(seed, epoch, n)
            batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(steps_per_epoch)]
            model.train()
            t_epoch = time.perf_counter()
            wait_s = teacher_s = step_s = 0.0
            loss_sum = correct = agree = seen = 0.0
            fut = pool.submit(prepare, seeds_epoch, batches[0], records)
            bar = progress(total=steps_per_epoch, desc=f"distill epoch {epoch + 1}/{cfg.epochs}", unit="step")
            for i in range(steps_per_epoch):
                tw = time.perf_counter()
                b = fut.result()
                wait_s += time.perf_counter() - tw
                if i + 1 < steps_per_epoch:
                    fut = pool.submit(prepare, seeds_epoch, batches[i + 1], records)
                if cfg.mode == "online":
                    tt = time.perf_counter()
                    idx, val = teacher_topk(teacher, b["x_teacher"].to(info.device), topk)
                    b["targets"] = dense_targets(idx, val, num_classes)
                    b["teacher_top1"] = idx[:, 0].astype(np.int64)
                    teacher_s += time.perf_counter() - tt
                ts = time.perf_counter()
                for g in opt.param_groups:
                    g["lr"] = lr_at(epoch * steps_per_epoch + i)
                logits = model(b["x"].to(info.device))
                loss = soft_target_cross_entropy(logits, b["targets"].to(info.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
                opt.step()
                step_s += time.perf_counter() - ts
                pred = logits.detach().argmax(-1).cpu().numpy()
                k = len(pred)
                seen += k
                loss_sum += float(loss.detach()) * k
                correct += float((pred == b["labels"]).sum())
                if "teacher_top1" in b:
                    agree += float((pred == b["teacher_top1"]).sum())
                bar.update(1)
            bar.close()
            epoch_s = time.perf_counter() - t_epoch
            _sync_buffers(net, info)
            rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_label_acc": correct / seen,
                   "train_teacher_agreement": agree / seen if cfg.mode != "labels" else None,
                   "steps": steps_per_epoch, "samples_per_rank": int(seen), "epoch_s": round(epoch_s, 3),
                   "data_wait_s": round(wait_s, 3), "teacher_s": round(teacher_s, 3), "step_s": round(step_s, 3),
                   "lr_end": lr_at((epoch + 1) * steps_per_epoch - 1),
                   "cache_epoch": cache_e if records is not None else None}
            if info.is_main and test_dataset is not None:
                rec["test"] = evaluate_model(net, test_dataset, batch_size=cfg.eval_batch_size, limit=cfg.eval_limit)
            history.append(rec)
            if info.is_main:  # one epoch line per run, not one per rank
                log.info("epoch %d/%d: loss %.4f, train acc %.4f, %s%.1f s", epoch + 1, cfg.epochs,
                         rec["train_loss"], rec["train_label_acc"],
                         f"test top-1 {rec['test']['top1']:.4f}, " if "test" in rec else "", epoch_s)
                out.mkdir(parents=True, exist_ok=True)
                # the weights first, then the checkpoint that says which epoch they belong to: each write is
                # all-or-nothing, and a kill between the two is repaired below (the final weights are rewritten)
                save_checkpoint(net, out / "student.safetensors")
                with atomic_output(ckpt_path) as tmp:
                    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                                "history": json.dumps(history), "config": json.dumps(cfg.model_dump()),
                                "rng": torch.get_rng_state()}, tmp)
                kill_point(f"distill:epoch:{epoch + 1}")
            distributed.barrier(info)
    finally:
        pool.shutdown(wait=True)
    if info.is_main and start_epoch >= last_epoch and ckpt_path.exists():
        save_checkpoint(net, out / "student.safetensors")  # resumed after the last epoch: the file matches the weights

    from .cache import weights_sha256

    ranks = [{"rank": info.rank, "param_sha256": _param_sha(net), "state_sha256": weights_sha256(net),
              "teacher_calls": teacher_calls() - calls0}]
    if info.distributed:
        gathered: list = [None] * info.world_size
        dist.all_gather_object(gathered, ranks[0])
        ranks = gathered
    record = {
        "mode": cfg.mode, "student": getattr(net, "edgevit_name", type(net).__name__),
        "params": sum(p.numel() for p in net.parameters()), "config": cfg.model_dump(), "augment": augment.to_dict(),
        "num_samples": n, "num_classes": num_classes, "topk": topk if cfg.mode != "labels" else None,
        "cache": str(cache.path) if cache is not None else None,
        # every epoch trained from cache records, those before a resume too (as an uninterrupted run records them)
        "cache_epochs_used": [h["cache_epoch"] for h in history if h.get("cache_epoch") is not None],
        "start_epoch": start_epoch, "epochs_done": len(history), "history": history,
        "test_top1": next((h["test"]["top1"] for h in reversed(history) if "test" in h), None),
        "teacher_calls": int(sum(r["teacher_calls"] for r in ranks)), "ranks": ranks,
        "world_size": info.world_size, "backend": info.backend, "device": info.device,
        "torch_threads": torch.get_num_threads(),
        "checkpoint": str(ckpt_path), "student_path": str(out / "student.safetensors"),
        "finished": len(history) >= cfg.epochs,
    }
    if info.is_main:
        from ...artifact import write_json

        write_json(out / "train_record.json", record)
    return record
