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

    Batches hold ``batch_size`` images, or the runtime's fixed batch when it has one (a TVM library, a static-batch
    ONNX/OpenVINO graph, the early-exit If form: 1; see :func:`edgevit.runtimes.batch_size_for`); the last batch is
    padded and trimmed, so every image is scored once.

    Classification: ``{top1, top5, n, correct1, correct5, seconds, runtime, dataset, batch_size}`` (accuracies as fractions
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
    from .runtimes.base import batch_size_for, run_padded

    spec = runtime.spec
    n = c1 = c5 = 0
    t0 = time.perf_counter()
    # a runtime with a fixed batch (TVM, static ONNX/OpenVINO, the early-exit If form: 1) gets exactly that, the last
    # batch padded and trimmed; a TensorRT engine at most its profile's maximum
    batch_size = batch_size_for(runtime, batch_size, what="evaluation batch")
    total = (len(dataset) + batch_size - 1) // batch_size
    for x, y in progress(dataset.batches(spec, batch_size), total=total, desc=f"eval {runtime.name}", unit="batch"):
        logits = run_padded(runtime, x)
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1)[:, :k]
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(axis=1).sum())
        n += len(y)
    return {"top1": c1 / n if n else float("nan"), "top5": c5 / n if n else float("nan"), "n": n,
            "correct1": c1, "correct5": c5, "seconds": time.perf_counter() - t0, "runtime": runtime.name, "batch_size": batch_size,
            "dataset": dataset.name}
