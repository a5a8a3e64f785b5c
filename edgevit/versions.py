"""Library versions for stamping records (read from package metadata; nothing heavy is imported)."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

PACKAGES = ("edgevit", "torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf",
            "apache-tvm", "tensorrt", "numpy")


@lru_cache(maxsize=1)
def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out
