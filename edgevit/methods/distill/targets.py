"""Sparse teacher targets: top-K of the teacher's softmax, the dense target rebuilt from them, and the loss.

- :func:`teacher_topk` runs the teacher (``torch.inference_mode``, eval mode) and keeps ``topk(softmax, K)``:
  indices int16, probabilities float16. Every teacher forward in edgevit.methods.distill goes through it and is counted
  (:func:`teacher_calls`), so a trainer can prove it never ran the teacher.
- :func:`dense_targets`: every class gets ``(1 − Σ v) / (C − K)``, then the K stored values are scattered in.
- :func:`soft_target_cross_entropy`: mean over the batch of ``Σ_c −t_c · log softmax(z)_c``.
"""

from __future__ import annotations

import threading

import numpy as np

from ...errors import ConfigError

MAX_CLASSES = 32767  # int16 indices

_lock = threading.Lock()
_teacher_calls = 0


def teacher_calls() -> int:
    """How many teacher forward passes :func:`teacher_topk` has made in this process."""
    return _teacher_calls


def check_topk(topk: int, num_classes: int) -> None:
    """Raise :class:`ConfigError` unless ``1 ≤ K < C ≤ 32767``."""
    if num_classes > MAX_CLASSES:
        raise ConfigError(
            f"the teacher has {num_classes} classes, more than the {MAX_CLASSES} that the cache's int16 class "
            f"indices can hold; a sparse cache cannot store this teacher (use a teacher with ≤ {MAX_CLASSES} classes)"
        )
    if num_classes < 2:
        raise ConfigError(f"the teacher has {num_classes} class(es); distillation needs at least 2")
    if not 1 <= topk < num_classes:
        raise ConfigError(
            f"topk K={topk} must be at least 1 and smaller than the number of classes C={num_classes} "
            f"(the leftover mass is spread over the C − K other classes); use e.g. --topk {min(10, num_classes - 1)}"
        )


def default_topk(num_classes: int) -> int:
    """K when none is given: 10 (the paper's default for ~1k classes), but at most C − 1."""
    return max(1, min(10, num_classes - 1))


def teacher_topk(teacher, x, topk: int):
    """``(indices int16 [B,K], probabilities float16 [B,K])`` (numpy) of the teacher on the model-ready batch ``x``."""
    import torch

    global _teacher_calls
    with _lock:
        _teacher_calls += 1
    if teacher.training:
        teacher.eval()
    with torch.inference_mode():
        logits = teacher(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        num_classes = int(logits.shape[-1])
        check_topk(topk, num_classes)
        probs = torch.softmax(logits.float(), dim=-1)
        val, idx = torch.topk(probs, topk, dim=-1, largest=True, sorted=True)
    return idx.to(torch.int16).cpu().numpy(), val.to(torch.float16).cpu().numpy()


def dense_targets(indices, values, num_classes: int):
    """Dense float32 targets ``[B,C]`` from top-K ``indices`` ``[B,K]`` and probabilities ``values`` ``[B,K]``.

    Every class gets ``(1 − Σ v) / (C − K)`` (clamped at 0, for the rare fp16 rounding that makes Σ v exceed 1),
    the K stored values are scattered in, and the row is renormalised so it sums to 1.
    """
    import torch

    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64) if not torch.is_tensor(indices) else indices).long()
    val = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values).float()
    if idx.shape != val.shape or idx.ndim != 2:
        raise ConfigError(f"dense_targets: indices {tuple(idx.shape)} and values {tuple(val.shape)} must both be [B,K]")
    k = idx.shape[1]
    check_topk(k, num_classes)
    leftover = ((1.0 - val.sum(1, keepdim=True)) / (num_classes - k)).clamp_min(0.0)
    t = leftover.expand(-1, num_classes).clone()
    t.scatter_(1, idx, val)
    return t / t.sum(1, keepdim=True)


def label_targets(labels, num_classes: int, *, smoothing: float = 0.0, mixes=None, partner_labels=None):
    """One-hot (optionally label-smoothed, optionally mixed with a partner's label by ``lam``) float32 ``[B,C]``."""
    import torch

    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    t = torch.full((len(y), num_classes), smoothing / num_classes)
    t[torch.arange(len(y)), y] += 1.0 - smoothing
    if mixes is not None and any(m is not None for m in mixes):
        for i, m in enumerate(mixes):
            if m is not None:
                lam = float(m[2])
                other = torch.full((num_classes,), smoothing / num_classes)
                other[int(partner_labels[i])] += 1.0 - smoothing
                t[i] = lam * t[i] + (1.0 - lam) * other
    return t


def soft_target_cross_entropy(logits, targets):
    """Mean over the batch of ``Σ_c −t_c log softmax(z)_c``."""
    import torch

    return torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
