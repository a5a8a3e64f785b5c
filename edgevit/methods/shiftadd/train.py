"""ShiftAddViT fine-tuning (methods.md §3 recipe): (1) after swapping attention to MatAdd, finetune; (2) with the
mixture of experts, finetune at a lower learning rate with ``CE + balance_weight·Σ_blocks L_bal``.

:func:`finetune_` trains the TRAINING form in place (:class:`ShiftLinear` latent weights with straight-through
power-of-two quantisation and fixed-point activations, straight-through hash codes, the MoE gate); the KSH hash
stays frozen (buffers). AdamW, linear warm-up over the first 5% of steps, cosine decay.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..schedule import warmup_cosine
from .config import FinetuneConfig
from .moe import MoEMlp

log = logging.getLogger(__name__)

MOE_LR_FACTOR = 0.2  # stage 2 of the recipe finetunes "at a lower lr" (methods.md §3)


def finetune_(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
              config: FinetuneConfig | None = None) -> dict:
    """Finetune ``model`` in place on preprocessed ``images`` ``(n, C, H, W)`` and ``labels`` ``(n,)``; returns
    ``{"steps", "samples", "seconds", "history": [{step, loss, ce, balance, routed_shift_share}]}``."""
    config = config or FinetuneConfig()
    n = len(images)
    per_epoch = max(1, n // config.batch_size)
    steps = math.ceil(config.epochs * per_epoch)
    if config.steps is not None:
        steps = min(steps, config.steps)
    if steps == 0:
        return {"steps": 0, "samples": n, "seconds": 0.0, "history": []}
    moes = [m for m in model.modules() if isinstance(m, MoEMlp)]
    lr = config.lr * (MOE_LR_FACTOR if config.stage == "moe" else 1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    gen = torch.Generator().manual_seed(config.seed)
    hist: list[dict] = []
    t0 = time.perf_counter()
    model.train()
    step = 0
    while step < steps:
        perm = torch.randperm(n, generator=gen)
        for s in range(0, max(1, n - config.batch_size + 1), config.batch_size):
            if step >= steps:
                break
            idx = perm[s:s + config.batch_size]
            opt.zero_grad(set_to_none=True)
            ce = F.cross_entropy(model(images[idx]), labels[idx])
            bal = sum((m.last_aux for m in moes), torch.zeros(()))
            loss = ce + config.balance_weight * bal
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % config.log_every == 0 or step == steps:
                rec = {"step": step, "loss": round(loss.item(), 5), "ce": round(ce.item(), 5),
                       "balance": round(float(bal.detach()), 5), "seconds": round(time.perf_counter() - t0, 1)}
                if moes:
                    counts = torch.stack([m.last_counts for m in moes]).sum(0).float()
                    rec["routed_shift_share"] = round(float(counts[1] / counts.sum()), 4)
                hist.append(rec)
                log.info("finetune (%s) step %d/%d %s", config.stage, step, steps, rec)
    model.eval()
    for m in moes:
        m.reset_stats()
    return {"steps": steps, "samples": n, "lr": lr, "seconds": round(time.perf_counter() - t0, 1), "history": hist}


def dataset_tensors(data, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 NCHW, labels int64) of an :class:`~edgevit.data.ArrayDataset`, preprocessed for ``spec``."""
    from ...data import preprocess

    chunks = [preprocess(data.images[i:i + 4096], spec) for i in range(0, len(data), 4096)]
    return torch.from_numpy(np.concatenate(chunks)), torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
