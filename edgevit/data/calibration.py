"""Calibration data for every INT8 path (NNCF, ONNX Runtime, the TensorRT cache): real images, never random.

One helper, :func:`calibration_data`, turns whatever the caller has — a dataset name (``fashion-mnist``), an
ImageFolder directory, an :class:`~edgevit.data.ArrayDataset`, raw uint8 images or already preprocessed float32
batches — into float32 NCHW images preprocessed to the model's :class:`~edgevit.spec.InputSpec`, plus a record of
where they came from. Datasets are reduced with :func:`edgevit.data.calibration_subset` (class-balanced,
deterministic; 300 images by default).

Errors (:class:`~edgevit.errors.DataError`) say what is wrong and how to fix it: an empty set, raw images that are
not ``[N,H,W]`` / ``[N,H,W,C]``, preprocessed batches whose shape is not the model's, non-finite values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 300


def calibration_data(spec, source: Any, *, split: str = "train", samples: int = DEFAULT_SAMPLES,
                     data_dir: str | None = None, seed: int = 0, what: str = "INT8 calibration"
                     ) -> tuple[np.ndarray, dict]:
    """``(images, where)``: real calibration images preprocessed to ``spec`` and a JSON-able description.

    ``source`` is a dataset name or ImageFolder directory (``samples`` class-balanced images of ``split`` are
    taken), an ``ArrayDataset`` (subset to ``samples`` the same way), or an array of images: raw uint8
    ``[N,H,W]``/``[N,H,W,C]`` (preprocessed here, all used) or float32 NCHW already preprocessed to ``spec`` (all
    used). Raises :class:`DataError` for an empty set or images of the wrong shape.
    """
    from ..data import ArrayDataset, calibration_subset, check_images, load_dataset, preprocess

    if samples is None or int(samples) < 1:
        raise DataError(f"{what}: the number of calibration samples must be ≥ 1, got {samples}")
    shape = "×".join(map(str, spec.input_size))
    if isinstance(source, (str, Path)):
        try:
            ds = load_dataset(str(source), split, data_dir=data_dir)
        except DataError as exc:
            raise DataError(f"{what} needs real images: {exc}. Install Fashion-MNIST (apt-get install "
                            f"dataset-fashion-mnist) or pass an ImageFolder directory of representative images.") \
                from exc
        source = ds
        split_used: str | None = split
    else:
        split_used = None
    if isinstance(source, ArrayDataset):
        if len(source) == 0:
            raise DataError(f"{what}: the calibration set {source.name} is empty; give at least one real image "
                            f"(typically 300) representative of the deployment data")
        sub = calibration_subset(source, int(samples), seed=seed)
        where = {"dataset": source.name, "split": split_used, "samples": len(sub), "seed": seed,
                 "selection": "edgevit.data.calibration_subset (class-balanced, deterministic)",
                 "classes": {str(c): int((sub.labels == c).sum()) for c in np.unique(sub.labels)}}
        check_images(sub.images, spec, where=f"{what} images from {source.name}")
        return _finite(preprocess(sub.images, spec), what), where
    if source is None:
        raise DataError(f"{what}: no calibration data given; pass a dataset name ('fashion-mnist'), an ImageFolder "
                        f"directory, an ArrayDataset or an array of real images")
    arr = np.asarray(source)
    if arr.size == 0 or (arr.ndim >= 1 and len(arr) == 0):
        raise DataError(f"{what}: the calibration set is empty (array of shape {arr.shape}); give at least one real "
                        f"image (typically 300) representative of the deployment data")
    if arr.dtype == np.uint8:
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3)):
            raise DataError(f"{what}: raw calibration images must be uint8 [N,H,W] (grey) or [N,H,W,C] with C in 1, 3; "
                            f"got shape {arr.shape}. The model expects {shape} (C×H×W) inputs.")
        return _finite(preprocess(arr, spec), what), {"dataset": "caller's images", "split": None,
                                                      "samples": len(arr), "selection": "all (raw, preprocessed)"}
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{what}: calibration images must be raw uint8 images or float NCHW batches preprocessed with "
                        f"edgevit.data.preprocess, got dtype {arr.dtype}")
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(spec.input_size):
        raise DataError(f"{what}: preprocessed calibration images must have shape (N, {', '.join(map(str, spec.input_size))}) "
                        f"(NCHW, the model's input spec), got {arr.shape}. Pass raw uint8 images (they are resized and "
                        f"normalised for you) or preprocess them with edgevit.data.preprocess(images, spec).")
    return _finite(np.ascontiguousarray(arr, dtype=np.float32), what), {
        "dataset": "caller's images", "split": None, "samples": len(arr), "selection": "all (preprocessed)"}


def _finite(x: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise DataError(f"{what}: the calibration images hold inf/NaN values after preprocessing; check the data")
    return x
