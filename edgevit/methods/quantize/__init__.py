"""INT8 post-training quantisation with ViT guardrails, gated on measured accuracy and latency.

``edgevit.methods.quantize.quantize(model, calib, *, out_dir, config=QuantizeConfig(...))`` — see :mod:`.core`.
Backends: ``openvino`` (NNCF on the OpenVINO IR), ``onnxruntime`` (``quantize_static``, QDQ) and ``nncf-onnx``
(NNCF on ONNX, QDQ). The command is ``edgevit quantize`` and the recipe stage ``quantize``.

Importing this package imports neither torch nor any backend.
"""

from __future__ import annotations

from typing import Any

from ...data.calibration import DEFAULT_SAMPLES, calibration_data
from .config import BACKENDS, GUARDRAILS, QuantizeConfig

__all__ = ["BACKENDS", "DEFAULT_SAMPLES", "GUARDRAILS", "QuantizeConfig", "QuantizeResult", "backend_available",
           "calibration_data", "quantize"]


def quantize(source: Any, calib: Any = None, **kwargs):
    """See :func:`edgevit.methods.quantize.core.quantize` (imported lazily so this package stays light)."""
    from .core import quantize as _quantize

    return _quantize(source, calib, **kwargs)


def backend_available(backend: str) -> tuple[bool, str]:
    """``(True, version)`` or ``(False, why and how to install)``."""
    from .backends import backend_available as _available

    return _available(backend)


def __getattr__(name: str):
    if name == "QuantizeResult":
        from .core import QuantizeResult

        return QuantizeResult
    raise AttributeError(name)
