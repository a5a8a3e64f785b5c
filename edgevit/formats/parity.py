"""Parity checks: does an exported / converted artefact give the same outputs as its parent on real inputs?

Every export and every runtime result is compared with its parent (style pattern 7); :func:`check_parity` is the
one function that decides, for every exporter, runtime and both cascade forms. The comparison reports

- ``max_abs_diff`` and ``mean_abs_diff`` of the outputs,
- ``cosine``: the mean over samples of the cosine similarity of the two output vectors,
- ``top1_agreement``: the fraction of samples whose arg-max class is the same (classifiers only; None for
  feature/embedding outputs, where an arg-max is not a class),

and fails (:class:`~edgevit.errors.ParityError`) when

- either side holds a non-finite value (inf/NaN) — a NaN reference is a broken parent, not a pass;
- ``max_abs_diff`` exceeds ``tolerance``;
- ``cosine`` falls below ``min_cosine`` (a negated, permuted or otherwise broken graph: its logits may be small
  enough to pass an absolute bound, never its direction);
- for classifiers, ``top1_agreement`` falls below ``min_top1``.

Default thresholds by precision (:func:`parity_thresholds`); ``scale`` is the largest |reference output|:

========= ================================= ======================== ==========================
precision max_abs_diff tolerance            min cosine               min top-1 agreement
========= ================================= ======================== ==========================
fp32      1e-3 × scale                      0.999                    0.99 (classifiers)
fp16      5e-2 × scale                      0.99                     0.9 (classifiers)
bf16      1e-1 × scale                      0.98                     0.9 (classifiers)
int8      not checked                       0.5 (a broken graph)     0.9 (classifiers)
========= ================================= ======================== ==========================

Why scale by the output magnitude (and not by ``max(1, scale)``): float rounding error is relative to the size of
the values being summed, so a bound with a floor of 1 lets a model whose logits are ~1e-5 pass any error of that
size, a sign flip included. A float32 export differs from its source by ~1e-6 relative (reordered sums, fused
kernels); a wrong operator translation shows up as ≥ 1e-2 relative. 1e-3 sits between with two orders of margin on
either side. fp16 has a 10-bit mantissa (~5e-4 relative per op); accumulated over a ViT's dozen blocks ~5e-2 is
what healthy fp16 engines reach. INT8 changes logits by design, so only the decision (top-1) is compared there,
plus a cosine floor that no working quantised graph falls under (−1 is a negation, ~0 unrelated outputs).
A float export that flips more than 1% of top-1 decisions, or whose outputs point elsewhere (cosine < 0.999, i.e.
a relative error of ~4%), is broken whatever its absolute difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError, ParityError
from ..results import ParityRecord

log = logging.getLogger(__name__)


class _Default:
    """Marker for "the precision's default threshold" (``None`` means "not checked")."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()

# precision → (max_abs_diff tolerance relative to max |reference output| or None, minimum top-1 agreement,
#              minimum mean cosine)
DEFAULT_THRESHOLDS: dict[str, tuple[float | None, float | None, float | None]] = {
    "fp32": (1e-3, 0.99, 0.999),
    "fp16": (5e-2, 0.9, 0.99),
    "bf16": (1e-1, 0.9, 0.98),
    "int8": (None, 0.9, 0.5),
}
_ALIASES = {"float32": "fp32", "f32": "fp32", "float16": "fp16", "f16": "fp16", "half": "fp16", "bfloat16": "bf16",
            "qint8": "int8", "uint8": "int8"}


def _precision(precision: str) -> str:
    p = _ALIASES.get(str(precision).lower(), str(precision).lower())
    if p not in DEFAULT_THRESHOLDS:
        raise ConfigError(f"unknown precision '{precision}' for parity thresholds. Allowed: "
                          f"{', '.join(DEFAULT_THRESHOLDS)} (or pass tolerance= / min_top1= explicitly)")
    return p


def output_scale(reference_logits: np.ndarray | None) -> float:
    """The magnitude float error is measured against: max |finite reference output| (1.0 without a reference).

    An all-zero reference gives 0.0 (then any difference fails, which is right: a nonzero output is not zero).
    """
    if reference_logits is None or not np.size(reference_logits):
        return 1.0
    finite = np.abs(np.asarray(reference_logits, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size else 1.0


def default_tolerance(precision: str = "fp32", reference_logits: np.ndarray | None = None) -> float | None:
    """The default ``max_abs_diff`` tolerance for ``precision``; None when it is not checked (int8).

    With ``reference_logits`` the relative bound is scaled by :func:`output_scale` (max |reference output|, see the
    module docstring); without, it is the bound for outputs of magnitude 1.
    """
    rel = DEFAULT_THRESHOLDS[_precision(precision)][0]
    if rel is None:
        return None
    return rel * output_scale(reference_logits)


def default_min_top1(precision: str = "fp32", classifier: bool = True) -> float | None:
    """The default minimum top-1 agreement for ``precision`` (see the module table); None for non-classifiers."""
    return DEFAULT_THRESHOLDS[_precision(precision)][1] if classifier else None


def default_min_cosine(precision: str = "fp32") -> float | None:
    """The default minimum mean cosine similarity for ``precision`` (fp32 0.999 … int8 0.5)."""
    return DEFAULT_THRESHOLDS[_precision(precision)][2]


def parity_thresholds(precision: str = "fp32", reference_logits: np.ndarray | None = None, *,
                      classifier: bool = True) -> dict[str, float | None]:
    """``{"tolerance", "min_top1", "min_cosine"}`` for ``precision``, ready for ``check_parity(..., **thresholds)``."""
    return {"tolerance": default_tolerance(precision, reference_logits),
            "min_top1": default_min_top1(precision, classifier), "min_cosine": default_min_cosine(precision)}


def is_classifier(spec: Any = None, task: str | None = None) -> bool:
    """Whether outputs are class logits (top-1 agreement means something): False for ``embedding`` artefacts and
    for models whose spec says ``num_classes == 0`` (a timm backbone built without a head); True otherwise."""
    if task is not None and task != "classification":
        return False
    return getattr(spec, "num_classes", None) != 0


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


def check_parity(reference_logits: np.ndarray, candidate_logits: np.ndarray, *, what: str,
                 tolerance: float | None = DEFAULT, min_top1: float | None = DEFAULT,
                 min_cosine: float | None = DEFAULT, precision: str = "fp32", classifier: bool = True,
                 extra: dict | None = None) -> ParityRecord:
    """Compare two ``[N, C]`` output arrays (logits, or features when ``classifier`` is False); raise
    :class:`ParityError` when they disagree beyond the thresholds.

    Thresholds left at ``DEFAULT`` come from :func:`parity_thresholds` for ``precision`` (``"fp32"``, ``"fp16"``,
    ``"bf16"``, ``"int8"``), the tolerance scaled by max |reference output|; ``None`` leaves one unchecked.
    ``tolerance`` bounds ``max_abs_diff`` (output units); ``min_cosine`` bounds the mean per-sample cosine from
    below; ``min_top1`` bounds ``top1_agreement`` (a fraction in [0, 1]) from below and applies to classifiers only —
    with ``classifier=False`` (feature/embedding outputs, see :func:`is_classifier`) the record's
    ``top1_agreement`` is None. Non-finite values (inf/NaN) in either array always fail. ``what`` names the
    comparison in records and messages, e.g. ``"onnx export of fmnist-vit-tiny vs torch"``; ``extra`` (e.g.
    ``{"precision": "fp16"}``) is carried in the record. This is the one function that makes a
    :class:`~edgevit.results.ParityRecord`. On disagreement the :class:`ParityError` carries the failed record as
    ``exc.parity`` and its JSON form as ``exc.record``. Raises :class:`~edgevit.errors.ConfigError` for an invalid
    threshold or precision.
    """
    prec = _precision(precision)
    if min_cosine is DEFAULT:
        min_cosine = default_min_cosine(prec)
    if min_top1 is DEFAULT:
        min_top1 = default_min_top1(prec, classifier)
    if not classifier:
        min_top1 = None
    if tolerance is not None and tolerance is not DEFAULT and (not np.isfinite(tolerance) or tolerance < 0):
        raise ConfigError(f"{what}: parity tolerance must be a finite number ≥ 0, got {tolerance}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise ConfigError(f"{what}: min_top1 must lie in [0, 1], got {min_top1}")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise ConfigError(f"{what}: min_cosine must lie in [-1, 1], got {min_cosine}")
    ref = _as_2d(reference_logits, "reference", what)
    cand = _as_2d(candidate_logits, "candidate", what)
    if ref.shape != cand.shape:
        raise ParityError(
            f"{what}: reference outputs have shape {ref.shape} but candidate outputs have shape {cand.shape}; "
            f"the two models do not produce the same outputs (wrong num_classes, output or batch handling?)"
        )
    n = int(ref.shape[0])
    if n == 0:
        raise ParityError(f"{what}: no samples to compare; pass at least one real input batch")
    if tolerance is DEFAULT:
        tolerance = default_tolerance(prec, ref)

    for side, arr, why in (
            ("reference", ref, ("the model compared against is itself broken (NaN/inf weights or an overflow); a "
                                "NaN compares as 'not above the tolerance', so nothing can be checked against it. "
                                "Fix or re-export the reference model")),
            ("candidate", cand, ("typically an overflow in reduced precision (e.g. fp16 LayerNorm/softmax) or a "
                                 "broken conversion. Keep those layers in fp32 or use fp32"))):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int((~finite.all(axis=1)).sum())
            err = ParityError(f"{what}: {side} produced non-finite outputs (inf/NaN) for {bad} of {n} samples — {why}.")
            err.parity, err.record = None, {"what": what, "n": n, "passed": False, "non_finite": side,
                                            "max_abs_diff": None, "mean_abs_diff": None, "cosine": None,
                                            "top1_agreement": None}
            raise err

    diff = np.abs(ref - cand)
    max_abs = float(diff.max())
    mean_abs = float(diff.mean())
    norm_r, norm_c = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
    cos = (ref * cand).sum(axis=1) / np.maximum(norm_r * norm_c, 1e-300)
    cos = np.where((norm_r == 0) & (norm_c == 0), 1.0, cos)  # two all-zero outputs agree
    cosine = float(cos.mean())
    top1 = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()) if classifier else None
    record = ParityRecord(max_abs_diff=max_abs, mean_abs_diff=mean_abs, cosine=cosine,
                          top1_agreement=top1, n=n, tolerance=tolerance, min_top1=min_top1, what=what,
                          reference_max_abs=float(np.abs(ref).max()), passed=True,
                          extra={"precision": prec, "min_cosine": min_cosine, **dict(extra or {})})
    problems = []
    if tolerance is not None and max_abs > tolerance:
        problems.append(f"max |output difference| is {max_abs:.3g}, above the tolerance {tolerance:.3g} "
                        f"(max |reference| {record.reference_max_abs:.3g})")
    if min_cosine is not None and cosine < min_cosine:
        problems.append(f"cosine similarity is {cosine:.6f}, below the required {min_cosine:g}"
                        + (" (the outputs are negated)" if cosine < -0.9 else ""))
    if min_top1 is not None and top1 < min_top1:
        problems.append(f"top-1 agreement is {top1:.3f}, below the required {min_top1:.3f}")
    if problems:
        record.passed = False
        top_text = f", top-1 agreement {top1:.3f}" if top1 is not None else ""
        err = ParityError(
            f"{what}: outputs disagree on {n} real inputs: {'; '.join(problems)} (mean |diff| {mean_abs:.3g}, "
            f"cosine {cosine:.6f}{top_text}). If this difference is acceptable, raise "
            f"the threshold (tolerance=... / min_top1=... / min_cosine=..., or --tolerance on the CLI); otherwise try "
            f"another opset, keep the sensitive layers in higher precision, or report the model."
        )
        err.parity, err.record = record, record.to_dict()
        raise err
    log.debug("%s: parity ok (max_abs_diff %.3g, cosine %.6f, top1 %s, n %d)", what, max_abs, cosine, top1, n)
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
                    min_cosine: float | None = None, what: str | None = None,
                    classifier: bool | None = None) -> ParityRecord:
    """Run the same real batches through a reference (a Runtime or ``fn(batch) -> logits``) and a candidate.

    ``batches`` yields NCHW float32 arrays or ``(batch, labels)`` pairs (as :meth:`ArrayDataset.batches` does).
    Thresholds left at None default to :func:`parity_thresholds` for ``precision``, scaled on the reference outputs.
    ``classifier`` defaults to :func:`is_classifier` of the candidate runtime's artefact (spec and task). With labels
    (and a classifier), the record also holds both accuracies. Raises :class:`ParityError` on disagreement.
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
    if classifier is None:
        art = getattr(candidate_runtime, "artifact", None)
        classifier = is_classifier(getattr(art, "spec", None), getattr(art, "task", None))
    extra = {}
    if classifier and labels and sum(len(v) for v in labels) == len(ref):
        y = np.concatenate(labels)
        extra["reference_accuracy"] = float((ref.argmax(1) == y).mean())
        extra["candidate_accuracy"] = float((cand.argmax(1) == y).mean())
    return check_parity(ref, cand, what=what, precision=precision, classifier=classifier, extra=extra,
                        tolerance=DEFAULT if tolerance is None else tolerance,
                        min_top1=DEFAULT if min_top1 is None else min_top1,
                        min_cosine=DEFAULT if min_cosine is None else min_cosine)


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
    if rec.get("top1_agreement") is not None:
        text += f", top-1 agreement {rec['top1_agreement'] * 100:.1f}%"
    text += f" on {rec['n']} real images"
    if rec.get("parity_reference"):
        text += f" vs {rec['parity_reference']}"
    return text
