"""Fashion-MNIST from the standard IDX files (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "EDGEVIT_FASHION_MNIST_DIR"
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# mean / std of the training images scaled to [0, 1]
MEAN = (0.2860,)
STD = (0.3530,)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The directory holding the IDX files: ``path``, else ``$EDGEVIT_FASHION_MNIST_DIR``, else the Debian path."""
    return Path(path or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _open(base: Path, stem: str):
    for name in (stem + ".gz", stem):
        p = base / name
        if p.exists():
            return (gzip.open if name.endswith(".gz") else open)(p, "rb"), p
    raise DataError(
        f"Fashion-MNIST file '{stem}[.gz]' not found in {base}. Install the dataset with "
        f"'apt-get install -y dataset-fashion-mnist', or point to a directory holding the IDX files with "
        f"--data-dir DIR (or ${ENV_VAR})."
    )


def read_idx(base: Path, stem: str) -> np.ndarray:
    """Read one IDX file (magic 0x0801 labels or 0x0803 images) into a uint8 array."""
    f, path = _open(base, stem)
    with f:
        raw = f.read()
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path} is not an unsigned-byte IDX file (header {raw[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(f"{path} holds {len(raw) - offset} bytes of data; its header promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load(split: str = "test", *, path: str | os.PathLike | None = None, limit: int | None = None):
    """Return ``(images uint8 [N,28,28], labels int64 [N])`` of a split ('train' or 'test')."""
    if split not in _FILES:
        raise DataError(f"unknown Fashion-MNIST split '{split}'; use one of {sorted(_FILES)}")
    base = data_dir(path)
    if not base.is_dir():
        raise DataError(
            f"Fashion-MNIST directory {base} does not exist. Install the dataset with "
            f"'apt-get install -y dataset-fashion-mnist', or pass --data-dir DIR (or set ${ENV_VAR})."
        )
    images = read_idx(base, _FILES[split][0])
    labels = read_idx(base, _FILES[split][1]).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{base}: {len(images)} images but {len(labels)} labels in split '{split}'")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
