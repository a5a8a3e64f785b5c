"""Evaluate any runtime on a dataset, with the same preprocessing for every runtime, by the artefact's task.

``classification`` artefacts get top-1/top-5 accuracy. ``embedding`` artefacts (a tower of a dual encoder) are
evaluated by retrieval, which needs paired captions: not supported yet, and refused rather than scored as a
classifier.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .progress import progress

log = logging.getLogger(__name__)


def evaluate(runtime, dataset, *, batch_size: int = 100) -> dict:
    """Evaluate ``runtime`` on ``dataset`` (an ArrayDataset) according to its artefact's task.

    Classification: ``{top1, top5, n, correct1, correct5, seconds, runtime, dataset}`` (accuracies as fractions
    in [0, 1], seconds of wall time). Raises :class:`~edgevit.errors.ConfigError` for an ``embedding`` artefact
    (retrieval evaluation is not supported yet) and for an unknown task.
    """
    from .artifact import DEFAULT_TASK
    from .errors import ConfigError

    task = getattr(getattr(runtime, "artifact", None), "task", DEFAULT_TASK)
    if task == "classification":
        return _evaluate_classification(runtime, dataset, batch_size=batch_size)
    if task == "embedding":
        raise ConfigError(f"evaluating an embedding artefact ({runtime.name} runtime on "
                          f"{getattr(runtime, 'path', None) or 'a model'}) is not supported yet: embeddings are scored "
                          f"by image-text retrieval (R@K), which needs a captioned dataset; top-1 accuracy would be "
                          f"meaningless. Evaluate the dual encoder's classifier artefacts, or profile latency only")
    raise ConfigError(f"cannot evaluate an artefact of task '{task}'")


def _evaluate_classification(runtime, dataset, *, batch_size: int) -> dict:
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
