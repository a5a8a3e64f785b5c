"""Threshold calibration for early exits: thresholds that minimise expected latency within an accuracy budget.

:func:`search_thresholds`: given per-sample exit logits on a held-out split and the measured latency of every
segment and head on the target runtime, choose thresholds that minimise the expected latency subject to
``top-1 >= final-head top-1 - budget`` (percentage points). The expected latency of a sample that leaves at exit k
is the sum of segments 0..k and heads 1..k+1 (every head it passed, its own included); one that reaches the final
head pays all segments and all heads. A head whose threshold never fires is skipped by the runtimes and costs 0.
Search: a shared threshold over a grid, then coordinate descent per exit (a few passes over a grid of candidate
values), always keeping the budget. The criteria themselves (:func:`~edgevit.formats.cascade.thresholds.scores`,
:func:`~edgevit.formats.cascade.thresholds.exit_mask`) live with the cascade format, which the runtimes share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ConfigError
from ...formats.cascade.thresholds import active_heads, check_criterion, fires, never_fires, scores


def assign_exits(score: np.ndarray, thresholds: np.ndarray, criterion: str) -> np.ndarray:
    """Exit index per sample from ``[N, K]`` exit scores (K = the final head when no exit fires)."""
    k = score.shape[1]
    f = fires(score, np.asarray(thresholds)[None, :], criterion)
    first = np.where(f.any(axis=1), f.argmax(axis=1), k)
    return first.astype(np.int64)


def path_costs(segment_ms: Sequence[float], head_ms: Sequence[float], active=None) -> np.ndarray:
    """Cost (ms) of leaving at exit k = 0..K-1, and of the final head (index K).

    ``active`` (bool per exit) marks the heads that run; a head whose threshold never fires is skipped by every
    cascade runtime, so it costs nothing."""
    seg, head = np.asarray(segment_ms, dtype=np.float64), np.asarray(head_ms, dtype=np.float64)
    if len(seg) != len(head) + 1:
        raise ConfigError(f"need one latency per segment ({len(head) + 1}) and per head ({len(head)}), got "
                          f"{len(seg)} and {len(head)}")
    if active is not None:
        head = head * np.asarray(active, dtype=np.float64)
    return np.concatenate([np.cumsum(seg[:-1]) + np.cumsum(head), [seg.sum() + head.sum()]])


def evaluate_thresholds(thresholds, exit_scores: np.ndarray, exit_correct: np.ndarray, final_correct: np.ndarray,
                        segment_ms: Sequence[float], head_ms: Sequence[float], criterion: str) -> dict:
    """Accuracy, expected latency, mean exit index and share per exit of one threshold vector."""
    costs = path_costs(segment_ms, head_ms, active_heads(thresholds, criterion))
    ex = assign_exits(exit_scores, np.asarray(thresholds), criterion)
    k = exit_scores.shape[1]
    correct = np.concatenate([exit_correct, final_correct[:, None]], axis=1)
    acc = float(correct[np.arange(len(ex)), ex].mean())
    share = np.bincount(ex, minlength=k + 1) / len(ex)
    return {"top1": acc, "expected_ms": float(costs[ex].mean()), "mean_exit": float(ex.mean()),
            "share": share.tolist()}


def search_thresholds(exit_logits: np.ndarray, final_logits: np.ndarray, labels: np.ndarray, *, budget: float,
                      segment_ms: Sequence[float], head_ms: Sequence[float], criterion: str = "confidence",
                      grid: int = 101, passes: int = 3) -> dict:
    """Thresholds minimising expected latency with ``top-1 >= final top-1 - budget/100`` on these held-out samples.

    ``exit_logits``: ``[N, K, classes]``; ``final_logits``: ``[N, classes]``; ``labels``: ``[N]``; ``budget``:
    allowed top-1 loss in percentage points relative to the final head (may be negative: then the cascade must beat
    the final head). Raises :class:`ConfigError` when no thresholds reach the budget.
    """
    check_criterion(criterion)
    if not np.isfinite(budget):
        raise ConfigError(f"the accuracy budget must be a finite number of percentage points, got {budget}")
    exit_logits, final_logits = np.asarray(exit_logits), np.asarray(final_logits)
    labels = np.asarray(labels)
    n, k, _ = exit_logits.shape
    if n == 0:
        raise ConfigError("no held-out samples to calibrate on")
    sc = scores(exit_logits, criterion)
    exit_correct = exit_logits.argmax(-1) == labels[:, None]
    final_correct = final_logits.argmax(-1) == labels
    path_costs(segment_ms, head_ms)  # validates the lengths
    final_top1 = float(final_correct.mean())
    target = final_top1 - budget / 100.0

    def ev(th):
        return evaluate_thresholds(th, sc, exit_correct, final_correct, segment_ms, head_ms, criterion)

    # candidate values: quantiles of the observed scores plus the never-firing value
    qs = np.unique(np.quantile(sc, np.linspace(0, 1, grid)))
    cand = np.unique(np.clip(np.concatenate([qs, [never_fires(criterion)]]), 0.0, 1.0))
    best_th = np.full(k, never_fires(criterion))
    best = ev(best_th)
    for v in cand:  # one shared threshold
        r = ev(np.full(k, v))
        if r["top1"] >= target - 1e-12 and r["expected_ms"] < best["expected_ms"]:
            best, best_th = r, np.full(k, v)
    for _ in range(passes):  # coordinate descent per exit
        improved = False
        for i in range(k):
            for v in cand:
                th = best_th.copy()
                th[i] = v
                r = ev(th)
                if r["top1"] >= target - 1e-12 and r["expected_ms"] < best["expected_ms"] - 1e-12:
                    best, best_th, improved = r, th, True
        if not improved:
            break
    if best["top1"] < target - 1e-12:
        # the never-firing configuration has exactly the final head's accuracy; only budget < 0 can fail
        oracle = float((exit_correct.any(axis=1) | final_correct).mean())
        raise ConfigError(
            f"accuracy budget {budget} pt is unreachable: it asks for top-1 >= {target * 100:.2f}% on the "
            f"{n} held-out samples, but the final head reaches {final_top1 * 100:.2f}% and no thresholds did better "
            f"than {best['top1'] * 100:.2f}% (even an oracle choosing the best exit per sample reaches "
            f"{oracle * 100:.2f}%). Use a budget >= 0 (0 = no loss relative to the final head)."
        )
    full = float(np.sum(segment_ms))  # the backbone alone, as segments, no heads
    return {"thresholds": [float(v) for v in best_th], "criterion": criterion, "budget_pt": float(budget),
            "final_top1": final_top1, "target_top1": target, "top1": best["top1"],
            "expected_ms": best["expected_ms"], "segments_only_ms": full,
            "expected_speedup_vs_segments": float(full / best["expected_ms"]) if best["expected_ms"] else None,
            "mean_exit": best["mean_exit"], "share": best["share"], "n": int(n),
            "segment_ms": [float(v) for v in segment_ms], "head_ms": [float(v) for v in head_ms]}
