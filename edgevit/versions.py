"""edgevit's own version and the library versions for stamping records (read from package metadata; nothing heavy is
imported). Library modules take ``__version__`` from here, not from the ``edgevit`` package (the public API's facade).

The one version stamp of the package: export records, quantisation records, stage records and benchmark files
all carry :func:`library_versions`.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

__version__ = "0.1.0"  # edgevit's version; pyproject.toml's [project] version is the same

# record key → the distributions that provide it (the first installed one counts; a variant is noted after the
# version, e.g. "1.22.0 (onnxruntime-gpu)")
PACKAGES: dict[str, tuple[str, ...]] = {
    "edgevit": ("edgevit",), "numpy": ("numpy",), "torch": ("torch",),
    "torchvision": ("torchvision",), "timm": ("timm",), "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "onnxslim": ("onnxslim",), "onnxscript": ("onnxscript",), "openvino": ("openvino",), "nncf": ("nncf",),
    "apache-tvm": ("apache-tvm", "tvm"), "apache-tvm-ffi": ("apache-tvm-ffi",), "xgboost": ("xgboost",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "pydantic": ("pydantic",),
}


def library_versions() -> dict[str, str]:
    """``{"python": "3.x.y", <distribution>: <version>, ...}`` for edgevit and the libraries it drives; a
    distribution that is not installed is left out. Computed once per process (a copy is returned)."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for key, dists in PACKAGES.items():
        for dist in dists:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            out[key] = version if dist == key else f"{version} ({dist})"
            break
    return out
