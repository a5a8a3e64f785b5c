"""Evaluate any runtime on a dataset, with the same preprocessing for every runtime, by the artefact's task.

``classification`` artefacts get top-1/top-5 accuracy. ``embedding`` artefacts (a tower of a dual encoder) are
evaluated by retrieval, which needs paired captions: not supported yet, and refused rather than scored as a
classifier.

Before any accuracy is computed, :func:`dataset_for_model` checks that the dataset's labels can be read off the
model's outputs (the shared dataset–model compatibility check of ``edgevit eval``, the eval stage, quantize's
accuracy gate and early-exit calibration): a model without a head (``num_classes == 0``, a feature extractor)
or with fewer outputs than the dataset has classes is refused, and an ImageFolder whose folder names are not the
model's class names is refused too unless every folder names one of them (then labels are mapped by name).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .progress import progress

log = logging.getLogger(__name__)


def model_class_names(spec: Any = None, source: str | None = None) -> tuple[str, ...] | None:
    """The model's class names in logit order, where known: the spec's (``InputSpec.class_names``, which exports
    carry), else those of the registered edgevit model named ``source`` (an export keeps its source's name); None
    when unknown."""
    names = getattr(spec, "class_names", None)
    if names:
        return tuple(names)
    if source:
        from .models import MODELS

        entry = MODELS.get(str(source)) if str(source) in MODELS else None
        if entry is not None and entry.spec.class_names:
            return tuple(entry.spec.class_names)
    return None


def _loose(name: str) -> str:
    """A class name without case or punctuation ('T-shirt/top' and 't_shirt_top' → 'tshirttop')."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def dataset_for_model(dataset, spec: Any, *, source: str | None = None, task: str | None = None,
                      what: str = "evaluation"):
    """``dataset`` (an ArrayDataset) with labels that index the model's outputs, or a :class:`DataError` saying why
    they cannot.

    ``spec`` is the model's :class:`~edgevit.spec.InputSpec` (``num_classes`` = number of outputs), ``source`` the
    model's name (to look up its class names, :func:`model_class_names`), ``task`` the artefact's task; ``what``
    names the caller in messages. Refused: an ``embedding`` artefact or a model with ``num_classes == 0`` (its
    outputs are features, not class logits: top-1 would read 0% and an INT8 gate would pass 0% → 0%); a dataset
    with more classes (or a larger label) than the model has outputs; an ImageFolder whose folder names differ from
    the model's known class names. When every folder names one of the model's classes, labels are mapped to
    those classes' indices (a new ArrayDataset is returned). Same names in the same order: returned unchanged.
    """
    from .data import ArrayDataset
    from .errors import DataError

    n_out = getattr(spec, "num_classes", None)
    if task not in (None, "classification") or n_out == 0:
        raise DataError(
            f"{what}: the model{f' {source}' if source else ''} has no classification head (num_classes 0"
            f"{'' if task in (None, 'classification') else f', task {task}'}): its outputs are features, not class "
            f"logits, so top-1 accuracy on {dataset.name} would be meaningless (0%) and an INT8 accuracy gate would "
            f"pass 0% → 0%. Build it with a head for the dataset's {len(dataset.classes)} classes (recipe "
            f"model.num_classes: {len(dataset.classes)}, then train or fine-tune it), or compare it with its FP32 "
            f"reference by cosine similarity (edgevit.formats.parity.compare_runtime)")
    names = model_class_names(spec, source)
    classes = tuple(str(c) for c in dataset.classes)
    if names is not None and classes != tuple(names[:len(classes)]):
        index = {c: i for i, c in enumerate(names)}
        # a folder name cannot hold '/' ("T-shirt/top"): names also match ignoring case and punctuation
        loose = {_loose(c): i for i, c in enumerate(names)}
        index.update({c: loose[_loose(c)] for c in classes if c not in index and _loose(c) in loose})
        unknown = [c for c in classes if c not in index]
        if unknown:
            shown = ", ".join(repr(c) for c in names)
            raise DataError(
                f"{what}: the classes of {dataset.name} ({', '.join(repr(c) for c in classes)}) do not map to the "
                f"model's {len(names)} classes ({shown}); {', '.join(repr(c) for c in unknown)} "
                f"{'is' if len(unknown) == 1 else 'are'} not among them, so its labels would be compared with the "
                f"wrong outputs. Name each folder of the ImageFolder after the model's class it holds (labels then "
                f"follow the names; case and punctuation do not matter, e.g. folder "
                f"{names[0].replace('/', '_')!r} for output {names[0]!r}), or evaluate a model trained on these "
                f"classes")
        labels = np.asarray([index[c] for c in classes], dtype=np.int64)[np.asarray(dataset.labels)]
        log.info("%s: %s's folders mapped to the model's classes by name (%s)", what, dataset.name,
                 ", ".join(f"{c} → {index[c]} ({names[index[c]]})" for c in classes))
        return ArrayDataset(dataset.images, labels, tuple(names), dataset.name)
    if names is None and n_out is not None and n_out > len(classes):
        log.warning("%s: the model%s has %d outputs and does not name its classes; %s has %d classes, so its labels "
                    "0..%d are compared with outputs 0..%d. If the model was trained on other classes (e.g. ImageNet), "
                    "the accuracy is meaningless: give it a head for these classes (model.num_classes: %d) and train it",
                    what, f" {source}" if source else "", n_out, dataset.name, len(classes), len(classes) - 1,
                    len(classes) - 1, len(classes))
    if n_out is not None:
        top = int(np.max(dataset.labels)) if len(dataset) else -1
        if len(classes) > n_out or top >= n_out:
            raise DataError(
                f"{what}: {dataset.name} has {len(classes)} classes (labels up to {top}) but the model"
                f"{f' {source}' if source else ''} has {n_out} outputs, so some labels can never be predicted: use a "
                f"model with a head for these {len(classes)} classes (recipe model.num_classes: {len(classes)}), or a "
                f"dataset whose classes are the model's")
    return dataset


def evaluate(runtime, dataset, *, batch_size: int = 100) -> dict:
    """Evaluate ``runtime`` on ``dataset`` (an ArrayDataset) according to its artefact's task.

    Classification: ``{top1, top5, n, correct1, correct5, seconds, runtime, dataset, batch_size}`` (accuracies as fractions
    in [0, 1], seconds of wall time; batches hold ``batch_size`` images, or the runtime's fixed batch when it has one, see
    :func:`edgevit.runtimes.batch_size_for`, the last batch padded and trimmed); the dataset first passes :func:`dataset_for_model` (labels mapped to the
    model's classes by folder name, where they can be). Raises :class:`~edgevit.errors.ConfigError` for an
    ``embedding`` artefact (retrieval evaluation is not supported yet) and for an unknown task, and
    :class:`~edgevit.errors.DataError` when the dataset's classes cannot be read off the model's outputs (no head,
    fewer outputs than classes, folder names that are not the model's classes).
    """
    from .artifact import DEFAULT_TASK
    from .errors import ConfigError

    artifact = getattr(runtime, "artifact", None)
    task = getattr(artifact, "task", DEFAULT_TASK)
    if task == "classification":
        dataset = dataset_for_model(dataset, getattr(runtime, "spec", None) or getattr(artifact, "spec", None),
                                    source=getattr(artifact, "source", None), task=task,
                                    what=f"evaluating {getattr(runtime, 'name', 'a runtime')}")
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
