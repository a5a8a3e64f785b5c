"""Exit criteria (numpy only: shared by the torch model, the exported cascade and its runtimes).

Criteria (``criterion``):

- ``confidence``: exit when the largest softmax probability is **greater than** τ; τ = 1 never fires;
- ``entropy``: exit when the softmax entropy divided by ``log(num_classes)`` (so it lies in [0, 1]) is **less than**
  τ; τ = 0 never fires.

Both are computed in float64 from the head's logits, by the same function everywhere, so the torch model, the Python
cascade runtime and the C++ cascade (same formula) take the same decisions. A head whose threshold never fires is
skipped by the runtimes (:func:`active_heads`). The threshold search (calibration) is part of the early-exit method:
:mod:`edgevit.methods.early_exit.thresholds`.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError

CRITERIA = ("confidence", "entropy")


def never_fires(criterion: str) -> float:
    """The threshold at which ``criterion`` never exits (1.0 for confidence, 0.0 for entropy)."""
    check_criterion(criterion)
    return 1.0 if criterion == "confidence" else 0.0


def check_criterion(criterion: str) -> None:
    """Raise :class:`ConfigError` naming the allowed criteria unless ``criterion`` is one of :data:`CRITERIA`."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown exit criterion '{criterion}'; allowed: {', '.join(CRITERIA)}")


def check_thresholds(thresholds, num_exits: int) -> np.ndarray:
    """``thresholds`` as a float64 array of ``num_exits`` values in [0, 1] (a single number is repeated)."""
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = [float(thresholds)] * num_exits
    try:
        th = np.asarray(list(thresholds), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"thresholds must be numbers in [0, 1], got {thresholds!r}") from exc
    if th.ndim != 1 or len(th) != num_exits:
        raise ConfigError(f"expected {num_exits} thresholds (one per exit), got {len(th) if th.ndim == 1 else th.shape}: "
                          f"{th.tolist()}")
    bad = [(i + 1, float(v)) for i, v in enumerate(th) if not (0.0 <= v <= 1.0)]  # also catches NaN
    if bad:
        raise ConfigError(f"thresholds must lie in [0, 1] (confidence: max softmax probability; entropy: entropy / "
                          f"log(num_classes)); exit(s) {', '.join(f'{i} has {v}' for i, v in bad)}")
    return th


def scores(logits: np.ndarray, criterion: str) -> np.ndarray:
    """Per-sample score of ``criterion`` (max probability, or normalised entropy) from ``[..., classes]`` logits."""
    check_criterion(criterion)
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=-1, keepdims=True)
    if criterion == "confidence":
        return p.max(axis=-1)
    c = z.shape[-1]
    ent = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)
    return ent / math.log(c) if c > 1 else np.zeros_like(ent)


def fires(score: np.ndarray, threshold, criterion: str) -> np.ndarray:
    """Where a score makes a sample exit: ``score > τ`` (confidence) or ``score < τ`` (entropy)."""
    return score > threshold if criterion == "confidence" else score < threshold


def exit_mask(logits: np.ndarray, threshold: float, criterion: str) -> np.ndarray:
    """Boolean ``[N]``: which samples leave at a head with these ``[N, classes]`` logits."""
    return fires(scores(logits, criterion), threshold, criterion)


def active_heads(thresholds, criterion: str) -> np.ndarray:
    """Which heads run: those whose threshold can fire."""
    return np.asarray(thresholds, dtype=np.float64) != never_fires(criterion)
