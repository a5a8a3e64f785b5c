"""Exporters: torch model → deployable file. ``EXPORTERS`` maps a format name to a lazy loader of its function.

Importing this package imports neither torch nor onnx; ``get_exporter("onnx")`` (or ``export_onnx`` from here)
loads the exporter module on first use. A new format is one line::

    EXPORTERS.register("openvino", lazy("edgevit.export.openvino", "export_openvino"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry, lazy

EXPORTERS: Registry[Callable[[], Callable[..., dict]]] = Registry("exporter")
EXPORTERS.register("onnx", lazy("edgevit.export.onnx", "export_onnx"))
EXPORTERS.register("ort_mobile", lazy("edgevit.export.ort_mobile", "export_ort_mobile"))
EXPORTERS.register("tensorrt", lazy("edgevit.export.tensorrt", "export_tensorrt"))
EXPORTERS.register("openvino", lazy("edgevit.export.openvino", "export_openvino"))
EXPORTERS.register("tvm", lazy("edgevit.export.tvm", "export_tvm"))

# public names served lazily from submodules
_LAZY = {
    "export_onnx": ("edgevit.export.onnx", "export_onnx"),
    "check_parity": ("edgevit.export.parity", "check_parity"),
    "compare_runtime": ("edgevit.export.parity", "compare_runtime"),
    "default_tolerance": ("edgevit.export.parity", "default_tolerance"),
    "parity_thresholds": ("edgevit.export.parity", "parity_thresholds"),
}

__all__ = ["EXPORTERS", "check_parity", "compare_runtime", "default_tolerance", "export_onnx", "get_exporter",
           "list_exporters", "parity_thresholds"]


def get_exporter(name: str) -> Callable[..., dict]:
    """The export function registered as ``name`` (``fn(model, out_path, **options) -> record``)."""
    return EXPORTERS.get(name)()


def list_exporters() -> list[str]:
    return EXPORTERS.names()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return lazy(*_LAZY[name])()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
