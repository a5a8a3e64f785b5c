"""ONNX: ``.onnx`` files written by edgevit carry their input spec in ``metadata_props``."""

from __future__ import annotations

from ...format_registry import FormatSpec

SPEC = FormatSpec(
    name="onnx", kind="onnx", suffixes=(".onnx",),
    description="ONNX (dynamic batch, onnxslim), run by ONNX Runtime",
    exporter="edgevit.formats.onnx.export:export_onnx",
    runtimes={"onnxruntime": "edgevit.formats.onnx.runtime:OnnxRuntime"},
    metadata_reader="edgevit.formats.onnx.runtime:read_onnx_metadata",
    stage="edgevit.formats.onnx.stage",
    cli="edgevit.formats.onnx.cli:COMMAND",
)
