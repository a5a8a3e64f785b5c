"""ONNX Runtime mobile format (``.ort``), run by the ``onnxruntime`` runtime of the onnx format."""

from __future__ import annotations

from ...format_registry import FormatSpec

SPEC = FormatSpec(
    name="ort_mobile", kind="ort", suffixes=(".ort",),
    description="ONNX Runtime mobile format (.ort) + required-operators config",
    exporter="edgevit.formats.ort_mobile.export:export_ort_mobile",
    metadata_reader="edgevit.formats.onnx.runtime:read_ort_metadata",
    stage="edgevit.formats.ort_mobile.stage",
    cli="edgevit.formats.ort_mobile.cli:COMMAND",
)
