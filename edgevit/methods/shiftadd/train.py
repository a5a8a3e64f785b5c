"""ShiftAddViT fine-tuning (methods.md §3 recipe): (1) after swapping attention to MatAdd, finetune; (2) with the
mixture of experts, finetune at a lower learning rate with ``CE + balance_weight·Σ_blocks L_bal``.

:func:`finetune_` trains the TRAINING form in place (:class:`ShiftLinear` latent weights with straight-through
power-of-two quantisation and fixed-point activations, straight-through hash codes, the MoE gate); the KSH hash
stays frozen (buffers). AdamW, linear warm-up over the first 5% of steps, cosine decay; knowledge distillation from
the dense teacher (soft targets at temperature T, the teacher's logits computed per batch under ``no_grad``);
the training state is checkpointed every epoch (or N steps) and an interrupted run resumes from it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..schedule import warmup_cosine
from .attention import MatAddAttention
from .config import FinetuneConfig
from .moe import MoEMlp

log = logging.getLogger(__name__)

MOE_LR_FACTOR = 0.2  # stage 2 of the recipe finetunes "at a lower lr" (methods.md §3)
LR_MATADD = 2e-4  # default lr when the model has MatAdd attention (relearns the attention operator)
LR_SHIFT_ONLY = 2e-5  # default lr when only linears are shifts: 5e-4 lowered the top-1 in 30 steps (BENCHMARKS.md)
STATE_VERSION = 1


def default_lr(model: nn.Module) -> float:
    """The stage-1 learning rate for ``model`` when the config leaves ``lr`` null: :data:`LR_MATADD` when any block
    has MatAdd attention, else :data:`LR_SHIFT_ONLY`."""
    return LR_MATADD if any(isinstance(m, MatAddAttention) for m in model.modules()) else LR_SHIFT_ONLY


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation term ``T²·KL(softmax(teacher/T) ‖ softmax(student/T))``, mean over the batch; logits
    ``(n, classes)``. The T² keeps its gradient scale independent of T (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher.float() / t, -1),
                    reduction="batchmean", log_target=True) * t * t


def _state_key(config: FinetuneConfig, steps: int, n: int, lr: float) -> dict:
    return {"version": STATE_VERSION, "stage": config.stage, "steps": steps, "samples": n, "lr": lr,
            "batch_size": config.batch_size, "seed": config.seed, "kd_weight": config.kd_weight,
            "kd_temperature": config.kd_temperature}


def finetune_(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
              config: FinetuneConfig | None = None, teacher: nn.Module | None = None,
              state_path: str | Path | None = None) -> dict:
    """Finetune ``model`` (training form) in place on preprocessed ``images`` ``(n, C, H, W)`` and ``labels``
    ``(n,)``; returns ``{"steps", "samples", "lr", "seconds", "resumed_from", "history": [{step, loss, ce, kd,
    balance, seconds, routed_shift_share}]}``.

    ``teacher``: the dense model whose logits (computed per batch under ``no_grad``) are the soft targets of the
    ``kd_weight`` term; without one the loss is cross-entropy only. ``state_path``: where the training state is
    saved every ``config.checkpoint_every`` steps (default: each epoch) and deleted when the run completes; with
    ``config.resume`` an existing state is loaded and the run continues from its step with the same batches and
    schedule. Raises :class:`ConfigError` when a state exists without ``resume`` or was saved by a different
    configuration."""
    config = config or FinetuneConfig()
    n = len(images)
    per_epoch = max(1, n // config.batch_size)
    steps = math.ceil(config.epochs * per_epoch)
    if config.steps is not None:
        steps = min(steps, config.steps)
    if steps == 0:
        return {"steps": 0, "samples": n, "seconds": 0.0, "history": [], "resumed_from": None}
    moes = [m for m in model.modules() if isinstance(m, MoEMlp)]
    lr = (config.lr if config.lr is not None else default_lr(model)) * (MOE_LR_FACTOR if config.stage == "moe" else 1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    kd_w = config.kd_weight if teacher is not None else 0.0
    if teacher is not None:
        teacher.eval()
    every = config.checkpoint_every or per_epoch
    key = _state_key(config, steps, n, lr)
    state_path = Path(state_path) if state_path is not None else None
    hist: list[dict] = []
    step, resumed, elapsed0 = 0, None, 0.0
    if state_path is not None and state_path.exists():
        if not config.resume:
            raise ConfigError(f"{state_path} holds the state of an interrupted finetune; continue it with --resume "
                              f"(finetune.resume: true) or delete the file to start over")
        state = torch.load(state_path, map_location="cpu", weights_only=True)  # tensors and plain values only
        if state.get("key") != key:
            raise ConfigError(f"{state_path} was saved by a different finetune ({state.get('key')}); this one is "
                              f"{key}. Resume with the same options or delete the file to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, hist, resumed = int(state["step"]), list(state["history"]), int(state["step"])
        elapsed0 = float(state["seconds"])
        log.info("finetune (%s): resumed from step %d/%d (%s)", config.stage, step, steps, state_path)
    t0 = time.perf_counter()
    model.train()
    while step < steps:
        epoch, pos = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
        idx = perm[pos * config.batch_size:(pos + 1) * config.batch_size]
        xb, yb = images[idx], labels[idx]
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        ce = F.cross_entropy(logits, yb)
        if kd_w > 0:
            with torch.no_grad():
                t_logits = teacher(xb)
            kd = kd_loss(logits, t_logits, config.kd_temperature)
            task = (1 - kd_w) * ce + kd_w * kd
        else:
            kd, task = torch.zeros(()), ce
        bal = sum((m.last_aux for m in moes), torch.zeros(()))
        loss = task + config.balance_weight * bal
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % config.log_every == 0 or step == steps:
            rec = {"step": step, "loss": round(loss.item(), 5), "ce": round(ce.item(), 5),
                   "kd": round(float(kd.detach()), 5), "balance": round(float(bal.detach()), 5),
                   "seconds": round(elapsed0 + time.perf_counter() - t0, 1)}
            if moes:
                counts = torch.stack([m.last_counts for m in moes]).sum(0).float()
                rec["routed_shift_share"] = round(float(counts[1] / counts.sum()), 4)
            hist.append(rec)
            log.info("finetune (%s) step %d/%d %s", config.stage, step, steps, rec)
        if state_path is not None and step % every == 0 and step < steps:
            for m in moes:
                m.reset_stats()
            tmp = state_path.with_suffix(".tmp")
            torch.save({"key": key, "step": step, "history": hist,
                        "seconds": round(elapsed0 + time.perf_counter() - t0, 1), "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)
            tmp.replace(state_path)
            log.info("finetune (%s): saved the training state at step %d to %s", config.stage, step, state_path)
    model.eval()
    for m in moes:
        m.reset_stats()
    if state_path is not None:
        state_path.unlink(missing_ok=True)
    return {"steps": steps, "samples": n, "lr": lr, "kd_weight": kd_w, "resumed_from": resumed,
            "seconds": round(elapsed0 + time.perf_counter() - t0, 1), "history": hist}


def dataset_tensors(data, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 NCHW, labels int64) of an :class:`~edgevit.data.ArrayDataset`, preprocessed for ``spec``."""
    from ...data import preprocess

    chunks = [preprocess(data.images[i:i + 4096], spec) for i in range(0, len(data), 4096)]
    return torch.from_numpy(np.concatenate(chunks)), torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
