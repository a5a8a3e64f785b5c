"""OpenVINO IR (``.xml`` + ``.bin``); edgevit keeps its metadata in the IR's rt_info."""

from __future__ import annotations

from ...format_registry import FormatSpec

SPEC = FormatSpec(
    name="openvino", kind="openvino", suffixes=(".xml",),
    description="OpenVINO IR fp32/fp16 (and INT8 from edgevit quantize)",
    exporter="edgevit.formats.openvino.export:export_openvino",
    runtimes={"openvino": "edgevit.formats.openvino.runtime:OpenVinoRuntime"},
    metadata_reader="edgevit.formats.openvino.runtime:read_ir_metadata",
    stage="edgevit.formats.openvino.stage",
    cli="edgevit.formats.openvino.cli:COMMAND",
)
