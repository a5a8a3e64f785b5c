"""Datasets and preprocessing. Every runtime gets batches from the same :func:`preprocess`.

A :class:`ArrayDataset` holds uint8 images ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB) and int64 labels.
:func:`preprocess` resizes, expands or merges channels and normalises to the model's :class:`InputSpec`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..spec import InputSpec

log = logging.getLogger(__name__)

DATASETS = ("fashion-mnist", "imagefolder")


@dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 [N,H,W] or [N,H,W,3]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> ArrayDataset:
        idx = np.asarray(indices)
        return ArrayDataset(self.images[idx], self.labels[idx], self.classes, self.name)

    def batches(self, spec: InputSpec, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(preprocessed float32 NCHW batch, labels)``."""
        for i in range(0, len(self), batch_size):
            yield preprocess(self.images[i : i + batch_size], spec), self.labels[i : i + batch_size]


def load_dataset(name_or_path: str = "fashion-mnist", split: str = "test", *, data_dir: str | os.PathLike | None = None,
                 limit: int | None = None) -> ArrayDataset:
    """'fashion-mnist' (IDX files) or a directory in ImageFolder layout (``root/<class>/<image>``)."""
    if limit is not None and limit <= 0:
        raise DataError(f"--limit must be a positive number of samples, got {limit}")
    if name_or_path in ("fashion-mnist", "fashion_mnist", "fmnist"):
        from . import fashion_mnist

        images, labels = fashion_mnist.load(split, path=data_dir, limit=limit)
        return ArrayDataset(images, labels, fashion_mnist.CLASSES, "fashion-mnist")
    path = Path(name_or_path)
    if path.is_dir():
        root = path / split if (path / split).is_dir() else path
        return load_image_folder(root, limit=limit)
    raise DataError(
        f"unknown dataset '{name_or_path}': use 'fashion-mnist' or a directory of images in ImageFolder layout "
        f"(root/<class>/<image>)"
    )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def load_image_folder(root: str | os.PathLike, *, limit: int | None = None, size: tuple[int, int] | None = None
                      ) -> ArrayDataset:
    """Read ``root/<class>/<image>`` into RGB uint8 arrays (resized to ``size`` or the first image's size)."""
    from PIL import Image

    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    files = [(f, ci) for ci, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images found under {root} (expected root/<class>/<image> with {', '.join(IMAGE_SUFFIXES)})")
    files = files[:limit] if limit else files
    images = []
    for f, _ in files:
        img = Image.open(f).convert("RGB")
        size = size or img.size[::-1]
        if img.size[::-1] != tuple(size):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        images.append(np.asarray(img, dtype=np.uint8))
    return ArrayDataset(np.stack(images), np.array([c for _, c in files], dtype=np.int64), tuple(classes),
                        f"imagefolder:{root}")


def preprocess(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 images ``[N,H,W]`` / ``[N,H,W,C]`` (or one image) → normalised float32 NCHW matching ``spec``.

    Resizing uses the spec's interpolation (with timm's crop_pct: resize the short side to size/crop_pct,
    then centre-crop); grey images are repeated to 3 channels and RGB images averaged to 1 when needed.
    """
    import torch
    import torch.nn.functional as F

    arr = np.asarray(images)
    if arr.ndim == 2:  # one grey image
        arr = arr[None]
    if arr.ndim == 3:  # N,H,W grey
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise DataError(f"images must be [N,H,W] (grey) or [N,H,W,C] with C in 1,3,4; got shape {arr.shape}")
    x = torch.from_numpy(np.array(arr[..., :3])).permute(0, 3, 1, 2).float()
    if arr.dtype == np.uint8:
        x = x / 255.0
    c = spec.channels
    if x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and c == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] != c:
        raise DataError(f"cannot map {x.shape[1]}-channel images to the model's {c} channels")
    h, w = spec.hw
    if tuple(x.shape[-2:]) != (h, w):
        mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(spec.interpolation, "bilinear")
        scale_h, scale_w = round(h / spec.crop_pct), round(w / spec.crop_pct)
        kw = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        x = F.interpolate(x, size=(scale_h, scale_w), mode=mode, **kw)
        top, left = (scale_h - h) // 2, (scale_w - w) // 2
        x = x[..., top : top + h, left : left + w].clamp_(0, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous().numpy().astype(np.float32, copy=False)


def check_images(images: np.ndarray, spec: InputSpec, *, where: str = "images") -> None:
    """Raise a :class:`DataError` when raw images cannot be fed to a model of ``spec`` (e.g. 2-channel, 5-D)."""
    arr = np.asarray(images)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3)):
        raise DataError(
            f"{where}: shape {arr.shape} is not [N,H,W] (grey) or [N,H,W,3] (RGB); "
            f"the model expects {spec.channels}×{spec.hw[0]}×{spec.hw[1]} inputs"
        )


def calibration_subset(dataset: ArrayDataset, n: int = 300, *, seed: int = 0) -> ArrayDataset:
    """A deterministic random subset of ``n`` samples (class-balanced where possible) for calibration."""
    if n <= 0:
        raise DataError(f"calibration subset size must be positive, got {n}")
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name} is empty: nothing to calibrate on")
    rng = np.random.default_rng(seed)
    n = min(n, len(dataset))
    classes = np.unique(dataset.labels)
    per = [rng.permutation(np.flatnonzero(dataset.labels == c)) for c in classes]
    picked = []
    i = 0
    while len(picked) < n:
        for p in per:
            if i < len(p) and len(picked) < n:
                picked.append(p[i])
        i += 1
    return dataset.subset(np.sort(np.array(picked)))
