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
# image–caption datasets (dual encoders, retrieval): edgevit.data.captions.load_caption_dataset
CAPTION_DATASETS = ("fashion-mnist-captions", "fashion-mnist-pairs", "coco:FILE.json", "karpathy:FILE.json")


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
    if name_or_path in ("fashion-mnist-pairs", "fashion-mnist-captions") or name_or_path.endswith(".json"):
        raise DataError(f"'{name_or_path}' is an image–caption dataset, not a classification one: use it with "
                        f"--task retrieval (edgevit eval --task retrieval --data {name_or_path}) or the vlm commands")
    path = Path(name_or_path)
    if path.is_dir():
        root = path / split if (path / split).is_dir() else path
        return load_image_folder(root, limit=limit)
    raise DataError(
        f"unknown dataset '{name_or_path}': use 'fashion-mnist' or a directory of images in ImageFolder layout "
        f"(root/<class>/<image>)"
    )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def load_image_folder(root: str | os.PathLike, *, limit: int | None = None) -> ArrayDataset:
    """Read ``root/<class>/<image>`` as RGB uint8 images at their own sizes.

    When every image has the same size, ``images`` is one ``[N, H, W, 3]`` array; otherwise it is a 1-D object
    array of ``[H, W, 3]`` arrays (slicing and indexing work the same). Nothing is resized here: every image goes
    through the model's own transform in :func:`preprocess`, so results do not depend on file order.
    Raises :class:`DataError` when the folder holds no images.
    """
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
        with Image.open(f) as img:
            images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return ArrayDataset(stack_images(images), np.array([c for _, c in files], dtype=np.int64), tuple(classes),
                        f"imagefolder:{root}")


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """One ``[N, H, W(, C)]`` array when every image has the same shape, else a 1-D object array of the images
    (slicing and indexing work the same; :func:`preprocess` takes both)."""
    if images and len({a.shape for a in images}) == 1:
        return np.stack(images)
    stacked = np.empty(len(images), dtype=object)
    stacked[:] = images
    return stacked


IMAGE_FILE_SUFFIXES = (".pgm", ".ppm", ".pnm", ".png", ".bmp", ".tif", ".tiff")


def write_sample(dataset: ArrayDataset, index: int, out: str | os.PathLike) -> Path:
    """Write image ``index`` of ``dataset`` unchanged (its own size, uint8) to the image file ``out`` and return its
    path: a real test image for programs that read files, such as the C++ example (``examples/cpp``), which reads
    binary PGM (grey) and PPM (RGB). The format follows the suffix (.pgm, .ppm, .pnm, .png, .bmp, .tif); a grey image
    may be written as .ppm (PIL writes it as PGM), an RGB one not as .pgm. Raises :class:`DataError` for an index
    outside the dataset, an unknown suffix or an RGB image given a .pgm name.
    """
    from PIL import Image

    out = Path(out)
    if not -len(dataset) <= index < len(dataset):
        raise DataError(f"index {index} is outside {dataset.name}, which has {len(dataset)} images "
                        f"(0 to {len(dataset) - 1})")
    if out.suffix.lower() not in IMAGE_FILE_SUFFIXES:
        raise DataError(f"cannot tell the image format of {out}: use one of {', '.join(IMAGE_FILE_SUFFIXES)} "
                        f"(.pgm/.ppm for the C++ example)")
    image = np.asarray(dataset.images[index], dtype=np.uint8)
    image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if image.ndim == 3 and out.suffix.lower() == ".pgm":
        raise DataError(f"image {index} of {dataset.name} is RGB: write it as .ppm, not {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out)
    return out


_PIL_FILTERS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST", "lanczos": "LANCZOS",
                "box": "BOX", "hamming": "HAMMING"}


def resize_geometry(height: int, width: int, spec: InputSpec) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((resized_h, resized_w), (crop_top, crop_left))`` of timm's evaluation transform for an image of
    ``height`` × ``width`` pixels, or None when the image already has the model's size.

    As ``timm.data.create_transform(input_size, crop_pct=..., is_training=False)`` (crop_mode 'center'): the
    scale size is ``floor(size / crop_pct)`` per side; the image is resized keeping its aspect ratio so that it
    just covers the scale size — for a square input its SHORT side becomes the scale size (torchvision
    ``Resize(int)``: long side ``int(scale * long / short)``), for a non-square input timm's ``ResizeKeepRatio``
    (ratio ``min(H / scale_h, W / scale_w)``, sides ``round(side / ratio)``); then a centre crop (torchvision
    ``CenterCrop``: offsets ``round((H - h) / 2)``).
    """
    import math

    h, w = spec.hw
    if (height, width) == (h, w):
        return None
    sh, sw = math.floor(h / spec.crop_pct), math.floor(w / spec.crop_pct)
    if sh == sw:
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = sh, int(sh * long / short)
        rh, rw = (new_short, new_long) if height <= width else (new_long, new_short)
    else:
        ratio = min(height / sh, width / sw)
        rh, rw = round(height / ratio), round(width / ratio)
    if rh < h or rw < w:
        raise DataError(f"crop_pct {spec.crop_pct} resizes a {height}x{width} image to {rh}x{rw}, smaller than the "
                        f"model's {h}x{w} input")
    return (rh, rw), (round((rh - h) / 2.0), round((rw - w) / 2.0))


def _resize_uint8(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One uint8 ``[H, W, C]`` image (C 1 or 3) through timm's resize + centre crop, with PIL as timm does."""
    geom = resize_geometry(img.shape[0], img.shape[1], spec)
    if geom is None:
        return img
    from PIL import Image

    (rh, rw), (top, left) = geom
    h, w = spec.hw
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    resample = getattr(Image.Resampling, _PIL_FILTERS.get(spec.interpolation, "BILINEAR"))
    out = np.asarray(pil.resize((rw, rh), resample), dtype=np.uint8)[top : top + h, left : left + w]
    return out[..., None] if out.ndim == 2 else out


def _as_nhwc(images) -> np.ndarray | list[np.ndarray]:
    """A 4-D NHWC array, or a list of HWC arrays when the images differ in size (object arrays, lists)."""
    if isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.dtype == object):
        items = [np.asarray(a) for a in images]
        items = [a[..., None] if a.ndim == 2 else a for a in items]
        if any(a.ndim != 3 or a.shape[-1] not in (1, 3, 4) for a in items):
            raise DataError("each image must be [H,W] (grey) or [H,W,C] with C in 1,3,4; got shapes "
                            f"{sorted({a.shape for a in items})[:4]}")
        return items
    arr = np.asarray(images)
    if arr.ndim == 2:  # one grey image
        arr = arr[None]
    if arr.ndim == 3:  # N,H,W grey
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise DataError(f"images must be [N,H,W] (grey) or [N,H,W,C] with C in 1,3,4; got shape {arr.shape}")
    return arr


def preprocess(images, spec: InputSpec) -> np.ndarray:
    """Images → normalised float32 NCHW ``[N, C, H, W]`` matching ``spec``.

    ``images``: uint8 ``[N,H,W]`` / ``[N,H,W,C]`` (or one image), a list or object array of images of different
    sizes, or float images in [0, 1]. Each image goes through timm's evaluation transform for the spec: resize
    (uint8 images with PIL and the spec's interpolation, as timm does; see :func:`resize_geometry`), centre crop,
    then grey images are repeated to 3 channels and RGB images averaged to 1 when the model needs it, and
    ``(x - mean) / std``. A spec whose ``extra["tile"]`` is ``[th, tw]`` (a classifier folded from a tower trained on
    tiled images) gets each image repeated th × tw first. Raises :class:`DataError` for shapes that are not images
    or channel counts that cannot be mapped.
    """
    import torch
    import torch.nn.functional as F

    arr = _as_nhwc(images)
    h, w = spec.hw
    tile = (spec.extra or {}).get("tile")
    if tile and not isinstance(arr, list) and arr.dtype != object:  # the model sees the image repeated th × tw
        arr = np.tile(arr, (1, int(tile[0]), int(tile[1]), 1))  # (a zero-shot classifier folded from a pair tower)
    if isinstance(arr, list) or arr.dtype == np.uint8:
        items = [a[..., :3] for a in arr]
        if any(a.dtype != np.uint8 for a in items):
            raise DataError("images of different sizes must be uint8")
        if len({a.shape[-1] for a in items}) > 1:
            items = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in items]
        stacked = np.stack([_resize_uint8(a, spec) for a in items]) if items else np.zeros((0, h, w, 1), np.uint8)
        x = torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255.0
    else:
        x = torch.from_numpy(np.array(arr[..., :3], dtype=np.float32)).permute(0, 3, 1, 2)
        geom = resize_geometry(x.shape[2], x.shape[3], spec)
        if geom is not None:  # float images: the same geometry, resized by torch (antialiased)
            (rh, rw), (top, left) = geom
            mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(spec.interpolation,
                                                                                          "bilinear")
            kw = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            x = F.interpolate(x, size=(rh, rw), mode=mode, **kw)[..., top : top + h, left : left + w].clamp_(0, 1)
    c = spec.channels
    if x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and c == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] != c:
        raise DataError(f"cannot map {x.shape[1]}-channel images to the model's {c} channels")
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous().numpy().astype(np.float32, copy=False)


def check_images(images: np.ndarray, spec: InputSpec, *, where: str = "images") -> None:
    """Raise a :class:`DataError` when raw images cannot be fed to a model of ``spec`` (e.g. 2-channel, 5-D)."""
    if isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.dtype == object):
        bad = [np.shape(a) for a in images if np.ndim(a) not in (2, 3) or (np.ndim(a) == 3 and np.shape(a)[-1] not in (1, 3))]
        if bad:
            raise DataError(f"{where}: image shapes {bad[:3]} are not [H,W] (grey) or [H,W,3] (RGB); the model expects "
                            f"{spec.channels}×{spec.hw[0]}×{spec.hw[1]} inputs")
        return
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
