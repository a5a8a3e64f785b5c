"""Deployment formats, one folder each: ``onnx/``, ``ort_mobile/``, ``openvino/``, ``tvm/``, ``tensorrt/``,
``cascade/``, plus what their exporters share (``parity.py``, ``reference.py``).

The registry of formats (:data:`~edgevit.format_registry.FORMATS`, :class:`~edgevit.format_registry.FormatSpec`)
lives on the core floor in :mod:`edgevit.format_registry`, so that runtimes, stages and the CLI can list formats
without importing any of them; its public names are re-exported here.
"""

from __future__ import annotations

from ..format_registry import (
    FORMATS,
    TORCH_SUFFIXES,
    FormatSpec,
    cli_providers,
    exporters,
    format_specs,
    get_exporter,
    get_format,
    kind_of_path,
    kinds,
    lazy_ref,
    metadata_readers,
    resolve,
    runtime_refs,
    stage_modules,
)

__all__ = ["FORMATS", "TORCH_SUFFIXES", "FormatSpec", "cli_providers", "exporters", "format_specs", "get_exporter",
           "get_format", "kind_of_path", "kinds", "lazy_ref", "metadata_readers", "resolve", "runtime_refs",
           "stage_modules"]
