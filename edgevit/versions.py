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

PACKAGES = ("edgevit", "torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxslim", "onnxscript", "openvino",
            "nncf", "apache-tvm", "apache-tvm-ffi", "xgboost", "tensorrt", "numpy")


def library_versions() -> dict[str, str]:
    """``{"python": "3.x.y", <distribution>: <version>, ...}`` for edgevit and the libraries it drives; a
    distribution that is not installed is left out. Computed once per process (a copy is returned)."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out
