"""Top-1/top-5 accuracy of any runtime on a dataset, with the same preprocessing for every runtime."""

from __future__ import annotations

import logging
import time

import numpy as np

from .progress import progress

log = logging.getLogger(__name__)


def evaluate(runtime, dataset, *, batch_size: int = 100) -> dict:
    """``{top1, top5, n, correct1, correct5, seconds}`` of ``runtime`` on ``dataset`` (an ArrayDataset)."""
    spec = runtime.spec
    n = c1 = c5 = 0
    t0 = time.perf_counter()
    total = (len(dataset) + batch_size - 1) // batch_size
    for x, y in progress(dataset.batches(spec, batch_size), total=total, desc=f"eval {runtime.name}", unit="batch"):
        logits = np.asarray(runtime.run(x))
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1)[:, :k]
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(axis=1).sum())
        n += len(y)
    return {"top1": c1 / n if n else float("nan"), "top5": c5 / n if n else float("nan"), "n": n,
            "correct1": c1, "correct5": c5, "seconds": time.perf_counter() - t0, "runtime": runtime.name,
            "dataset": dataset.name}
