"""Calibrate exit thresholds for a target runtime on a held-out split (never the test set).

1. Every exit's and the final head's logits on the held-out images (torch, one pass).
2. The cascade's graphs exported to ONNX in a work folder and loaded in the target runtime (``onnxruntime``, or
   ``openvino``, which compiles the same ONNX files as it would the IR); the batch-1 latency of every segment and
   head measured with :mod:`edgevit.profiling.latency`'s method on inputs computed from a real held-out image.
3. :func:`edgevit.methods.early_exit.thresholds.search_thresholds`: the thresholds minimising expected latency with
   top-1 at most ``budget`` percentage points below the final head's on the held-out split.

The held-out split is the last ``holdout`` (5000 by default) images of the training dataset's train split — the
part that ``edgevit early-exit train`` leaves out of training.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def heldout_split(name: str, *, holdout: int = 5000, data_dir: str | None = None,
                  limit: int | None = None):
    """``(train part, held-out part)`` of the train split of ``name`` (a dataset name or ImageFolder directory, as
    :func:`edgevit.data.load_dataset` takes it): the last ``holdout`` images are held out."""
    from ...data import load_dataset
    from ...errors import DataError

    full = load_dataset(name, "train", data_dir=data_dir)
    if holdout <= 0 or holdout >= len(full):
        raise DataError(f"holdout must be between 1 and {len(full) - 1} images of the train split, got {holdout}")
    train = full.subset(np.arange(len(full) - holdout))
    held = full.subset(np.arange(len(full) - holdout, len(full)))
    if limit is not None:
        train = train.subset(np.arange(min(limit, len(train))))
    return train, held


def calibrate(model: Any, heldout: Any, *, budget: float, runtime: str = "onnxruntime", criterion: str = "confidence",
              work_dir: str | Path, threads: int | None = None, warmup_s: float = 0.2, duration_s: float = 1.0,
              runtime_options: dict | None = None, exporter: str = "auto") -> dict:
    """Thresholds for ``model`` (an EarlyExitViT) on ``heldout`` (an ArrayDataset) for ``runtime``; a JSON-able
    record with ``thresholds``, ``criterion``, held-out top-1 of the cascade and of the final head, expected latency,
    the measured per-graph latencies and the share of samples per exit. Raises :class:`ConfigError` when the budget
    is unreachable or the criterion unknown, :class:`DataError` when the held-out labels cannot be read off the
    model's outputs (:func:`edgevit.evaluate.dataset_for_model`)."""
    from ...evaluate import dataset_for_model
    from ...formats.cascade.export import export_cascade
    from ...formats.cascade.runtime import CascadeRuntime, measure_graph_latencies
    from ...formats.cascade.thresholds import never_fires
    from .thresholds import search_thresholds
    from .train import collect_logits

    heldout = dataset_for_model(heldout, model.edgevit_spec, source=getattr(model, "edgevit_name", None),
                                what="early-exit calibration")
    t0 = time.perf_counter()
    logits = collect_logits(model, heldout)
    work = Path(work_dir)
    exp = export_cascade(model, work, format="onnx", criterion=criterion, thresholds=never_fires(criterion),
                         parity_images=heldout.images[:16],
                         parity=True, exporter=exporter)
    casc = CascadeRuntime(exp.artifact, backend=runtime, threads=threads, **(runtime_options or {}))
    try:
        from ...data import preprocess

        lat = measure_graph_latencies(casc, preprocess(heldout.images[:1], model.edgevit_spec), warmup_s=warmup_s,
                                      duration_s=duration_s)
    finally:
        casc.close()
    res = search_thresholds(logits["exits"], logits["final"], logits["labels"], budget=budget,
                            segment_ms=lat["segment_ms"], head_ms=lat["head_ms"], criterion=criterion)
    res.update({"runtime": runtime, "runtime_info": lat["runtime"], "heldout": f"{heldout.name} ({len(heldout)} "
                f"images)", "latency": {"segments": lat["segments"], "heads": lat["heads"], "warmup_s": warmup_s,
                                        "duration_s": duration_s, "batch": 1},
                "exit_blocks": model.exit_blocks, "exit_top1": (logits["exits"].argmax(-1) ==
                                                                logits["labels"][:, None]).mean(0).tolist(),
                "seconds": round(time.perf_counter() - t0, 1)})
    log.info("calibrated %d thresholds for %s: held-out top-1 %.4f (final %.4f), expected %.3f ms vs %.3f ms "
             "for the segments alone", model.num_exits, runtime, res["top1"], res["final_top1"], res["expected_ms"],
             res["segments_only_ms"])
    return res

