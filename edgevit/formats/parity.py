"""Parity checks: does an exported / converted artefact give the same logits as its parent on real inputs?

Every export and every runtime result is compared with its parent (style pattern 7). The comparison reports

- ``max_abs_diff`` and ``mean_abs_diff`` of the logits,
- ``cosine``: the mean over samples of the cosine similarity of the two logit vectors,
- ``top1_agreement``: the fraction of samples whose arg-max class is the same,

and fails (:class:`~edgevit.errors.ParityError`) when ``max_abs_diff`` exceeds ``tolerance`` or, where a
minimum is set, when ``top1_agreement`` falls below ``min_top1``. Non-finite candidate logits always fail
(the FP16 LayerNorm overflow that users of other toolkits meet shows up as inf/NaN).

Default thresholds by precision (:func:`parity_thresholds`):

======== ============================================ ===========================
precision max_abs_diff tolerance                        top-1 agreement
======== ============================================ ===========================
fp32     1e-3 × max(1, max abs reference logit)          not checked
fp16     5e-2 × max(1, max abs reference logit)          not checked
bf16     1e-1 × max(1, max abs reference logit)          not checked
int8     not checked                                     ≥ 0.9
======== ============================================ ===========================

Why scale by the logit magnitude: float rounding error grows with the size of the values being summed, so a
fixed absolute bound is either too loose for models with small logits or raises false alarms for models with
large ones. A float32 export differs from its source by ~1e-6 relative (reordered sums, fused kernels); a
wrong operator translation shows up as ≥ 1e-2 relative. 1e-3 sits between with two orders of margin on
either side. fp16 has a 10-bit mantissa (~5e-4 relative per op); accumulated over a ViT's dozen blocks
~5e-2 is what healthy fp16 engines reach. INT8 changes logits by design, so only the decision (top-1) is
compared there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError, ParityError
from ..results import ParityRecord

log = logging.getLogger(__name__)

# precision → (max_abs_diff tolerance relative to max(1, max |reference logit|) or None, minimum top-1 agreement)
DEFAULT_THRESHOLDS: dict[str, tuple[float | None, float | None]] = {
    "fp32": (1e-3, None),
    "fp16": (5e-2, None),
    "bf16": (1e-1, None),
    "int8": (None, 0.9),
}
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "qint8": "int8", "uint8": "int8"}


def _precision(precision: str) -> str:
    p = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if p not in DEFAULT_THRESHOLDS:
        raise ConfigError(f"unknown precision '{precision}' for parity thresholds. Allowed: "
                          f"{', '.join(DEFAULT_THRESHOLDS)} (or pass tolerance= / min_top1= explicitly)")
    return p


def default_tolerance(precision: str = "fp32", reference_logits: np.ndarray | None = None) -> float | None:
    """The default ``max_abs_diff`` tolerance for ``precision``; None when it is not checked (int8).

    With ``reference_logits`` the value is scaled by ``max(1, max |reference logit|)`` (see the module docstring);
    without, it is the bound for logits of magnitude ≤ 1.
    """
    rel = DEFAULT_THRESHOLDS[_precision(precision)][0]
    if rel is None:
        return None
    scale = 1.0
    if reference_logits is not None and np.size(reference_logits):
        finite = np.abs(np.asarray(reference_logits, dtype=np.float64))
        finite = finite[np.isfinite(finite)]
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return rel * scale


def default_min_top1(precision: str = "fp32") -> float | None:
    """The default minimum top-1 agreement for ``precision`` (0.9 for int8); None when it is not checked."""
    return DEFAULT_THRESHOLDS[_precision(precision)][1]


def parity_thresholds(precision: str = "fp32", reference_logits: np.ndarray | None = None) -> dict[str, float | None]:
    """``{"tolerance": ..., "min_top1": ...}`` for ``precision``, ready for ``check_parity(..., **thresholds)``."""
    return {"tolerance": default_tolerance(precision, reference_logits), "min_top1": default_min_top1(precision)}


def _as_2d(x: Any, name: str, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ParityError(f"{what}: {name} logits are not a numeric array (got {type(x).__name__})")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        arr = arr.reshape(arr.shape[0], -1)
    return arr


def check_parity(reference_logits: np.ndarray, candidate_logits: np.ndarray, *, tolerance: float | None, what: str,
                 min_top1: float | None = None, extra: dict | None = None) -> ParityRecord:
    """Compare two ``[N, C]`` logit arrays; raise :class:`ParityError` when they disagree beyond the thresholds.

    ``tolerance`` bounds ``max_abs_diff`` (None: not checked, as for int8); ``min_top1`` bounds
    ``top1_agreement`` from below (None: not checked). ``what`` names the comparison in records and messages,
    e.g. ``"onnx export of fmnist-vit-tiny vs torch"``; ``extra`` (e.g. ``{"precision": "fp16"}``) is carried in
    the record. This is the one function that makes a :class:`~edgevit.results.ParityRecord` (``max_abs_diff``,
    ``mean_abs_diff``, ``cosine`` = mean per-sample cosine similarity, ``top1_agreement``, ``n``, ``tolerance``,
    ``min_top1``, ``passed``). On disagreement the :class:`ParityError` carries the failed record as
    ``exc.parity`` and its JSON form as ``exc.record``.
    """
    if tolerance is not None and (not np.isfinite(tolerance) or tolerance < 0):
        raise ConfigError(f"{what}: parity tolerance must be a finite number ≥ 0, got {tolerance}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise ConfigError(f"{what}: min_top1 must lie in [0, 1], got {min_top1}")
    ref = _as_2d(reference_logits, "reference", what)
    cand = _as_2d(candidate_logits, "candidate", what)
    if ref.shape != cand.shape:
        raise ParityError(
            f"{what}: reference logits have shape {ref.shape} but candidate logits have shape {cand.shape}; "
            f"the two models do not produce the same outputs (wrong num_classes, output or batch handling?)"
        )
    n = int(ref.shape[0])
    if n == 0:
        raise ParityError(f"{what}: no samples to compare; pass at least one real input batch")

    finite = np.isfinite(cand)
    if not finite.all():
        bad = int((~finite.all(axis=1)).sum())
        raise ParityError(
            f"{what}: candidate produced non-finite logits (inf/NaN) for {bad} of {n} samples — typically an "
            f"overflow in reduced precision (e.g. fp16 LayerNorm/softmax). Keep those layers in fp32 or use fp32."
        )

    diff = np.abs(ref - cand)
    max_abs = float(diff.max())
    mean_abs = float(diff.mean())
    norm_r, norm_c = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
    cos = (ref * cand).sum(axis=1) / np.maximum(norm_r * norm_c, 1e-300)
    cos = np.where((norm_r == 0) & (norm_c == 0), 1.0, cos)  # two all-zero outputs agree
    top1 = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean())
    record = ParityRecord(max_abs_diff=max_abs, mean_abs_diff=mean_abs, cosine=float(cos.mean()),
                          top1_agreement=top1, n=n, tolerance=tolerance, min_top1=min_top1, what=what,
                          reference_max_abs=float(np.abs(ref).max()), passed=True, extra=dict(extra or {}))
    problems = []
    if tolerance is not None and max_abs > tolerance:
        problems.append(f"max |logit difference| is {max_abs:.3g}, above the tolerance {tolerance:.3g}")
    if min_top1 is not None and top1 < min_top1:
        problems.append(f"top-1 agreement is {top1:.3f}, below the required {min_top1:.3f}")
    if problems:
        record.passed = False
        err = ParityError(
            f"{what}: outputs disagree on {n} real inputs: {'; '.join(problems)} (mean |diff| {mean_abs:.3g}, "
            f"cosine {record.cosine:.6f}, top-1 agreement {top1:.3f}). If this difference is acceptable, raise "
            f"the threshold (tolerance=... / min_top1=..., or --tolerance on the CLI); otherwise try another opset, "
            f"keep the sensitive layers in higher precision, or report the model."
        )
        err.parity, err.record = record, record.to_dict()
        raise err
    log.debug("%s: parity ok (max_abs_diff %.3g, top1 %.3f, n %d)", what, max_abs, top1, n)
    return record


def _run_fn(runtime_or_fn: Any) -> Callable[[np.ndarray], np.ndarray]:
    if hasattr(runtime_or_fn, "run") and callable(runtime_or_fn.run):
        return runtime_or_fn.run
    if callable(runtime_or_fn):
        return runtime_or_fn
    raise ConfigError(f"expected a Runtime or a function batch → logits, got {type(runtime_or_fn).__name__}")


def _label(runtime_or_fn: Any) -> str:
    name = getattr(runtime_or_fn, "name", None)
    if isinstance(name, str):
        return name
    return getattr(runtime_or_fn, "__name__", type(runtime_or_fn).__name__)


def compare_runtime(reference_runtime_or_fn: Any, candidate_runtime: Any, batches: Iterable, *,
                    tolerance: float | None = None, precision: str = "fp32", min_top1: float | None = None,
                    what: str | None = None) -> ParityRecord:
    """Run the same real batches through a reference (a Runtime or ``fn(batch) -> logits``) and a candidate.

    ``batches`` yields NCHW float32 arrays or ``(batch, labels)`` pairs (as :meth:`ArrayDataset.batches` does).
    Thresholds default to :func:`parity_thresholds` for ``precision``, scaled on the reference logits. With
    labels, the record also holds both accuracies. Raises :class:`ParityError` on disagreement.
    """
    ref_fn, cand_fn = _run_fn(reference_runtime_or_fn), _run_fn(candidate_runtime)
    refs, cands, labels = [], [], []
    for item in batches:
        x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        refs.append(np.asarray(ref_fn(x)))
        cands.append(np.asarray(cand_fn(x)))
        if y is not None:
            labels.append(np.asarray(y))
    if not refs:
        raise ParityError("compare_runtime: no batches given; pass real preprocessed inputs (e.g. dataset.batches(spec))")
    ref, cand = np.concatenate(refs), np.concatenate(cands)
    what = what or f"{_label(candidate_runtime)} vs {_label(reference_runtime_or_fn)}"
    defaults = parity_thresholds(precision, ref)
    tol = tolerance if tolerance is not None else defaults["tolerance"]
    top = min_top1 if min_top1 is not None else defaults["min_top1"]
    extra = {"precision": precision}
    if labels and sum(len(v) for v in labels) == len(ref):
        y = np.concatenate(labels)
        extra["reference_accuracy"] = float((ref.argmax(1) == y).mean())
        extra["candidate_accuracy"] = float((cand.argmax(1) == y).mean())
    return check_parity(ref, cand, tolerance=tol, what=what, min_top1=top, extra=extra)


def parity_inputs(images: Any, spec, *, what: str) -> tuple[np.ndarray, str]:
    """Preprocessed float32 NCHW parity inputs ``[N, C, H, W]`` and a phrase saying where they came from.

    ``images``: the caller's real images — raw uint8 (``[N, H, W]`` or ``[N, H, W, C]``, preprocessed to ``spec``
    with :func:`edgevit.data.preprocess`), already preprocessed float32 NCHW, or an ``ArrayDataset``. Library
    functions never pick a dataset themselves (the CLI and the recipe choose it): with no images this raises
    :class:`~edgevit.errors.ExportError` naming the two ways out (pass ``parity_images=...`` or ``parity=False``),
    and so does an empty array.
    """
    from ..data import ArrayDataset, preprocess
    from ..errors import ExportError

    if images is None:
        raise ExportError(f"the {what} parity check needs real images: pass parity_images=<images> (raw uint8, "
                          f"preprocessed NCHW float32 or an ArrayDataset, e.g. load_dataset('fashion-mnist', 'test', "
                          f"limit=32)), or parity=False to skip the check")
    if isinstance(images, ArrayDataset):
        return preprocess(images.images, spec), f"{images.name} ({len(images)} images) preprocessed"
    arr = np.asarray(images)
    if len(arr) == 0:
        raise ExportError(f"parity_images is empty: pass at least one real image for the {what} parity check, or "
                          f"parity=False")
    if arr.dtype == np.uint8:
        return preprocess(arr, spec), f"caller's {len(arr)} raw images, preprocessed to the model's spec"
    return spec.check_batch(arr, where=f"{what} parity_images"), f"caller's {len(arr)} preprocessed images"


def parity_summary(rec: dict) -> str:
    """One phrase on an export record's parity figures (``max |Δ| 1.2e-06, cosine ..., top-1 agreement 100.0% on 64 real
    images``), or why parity was skipped; for the one-line summaries of ``edgevit export <format>``."""
    if rec.get("max_abs_diff") is None:
        return f"parity skipped ({rec['parity_skipped']})" if rec.get("parity_skipped") else "parity skipped"
    text = f"max |Δ| {rec['max_abs_diff']:.2e}"
    if rec.get("cosine") is not None:
        text += f", cosine {rec['cosine']:.6f}"
    text += f", top-1 agreement {rec['top1_agreement'] * 100:.1f}% on {rec['n']} real images"
    if rec.get("parity_reference"):
        text += f" vs {rec['parity_reference']}"
    return text
