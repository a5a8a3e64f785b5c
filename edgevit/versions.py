"""edgevit's own version and the library versions for stamping records (read from package metadata; nothing heavy is
imported). Library modules take ``__version__`` from here, not from the ``edgevit`` package (the public API's facade).
"""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

__version__ = "0.1.0"  # edgevit's version; pyproject.toml's [project] version is the same

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
