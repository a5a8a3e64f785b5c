"""``edgevit export openvino``: torch model (or ONNX file) → OpenVINO IR with a parity check on real images — the
command's declaration.

:mod:`edgevit.cli.export` builds the parser from :data:`COMMAND`; importable without torch or openvino (both are
imported when the command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...config import ConfigModel
from ...errors import ConfigError
from ...format_registry import ExportCommand


class OpenVinoExportOptions(ConfigModel):
    """The flags of ``edgevit export openvino`` beyond the model, ``--out``, the dataset and ``--json``."""

    precision: Literal["fp32", "fp16"] = Field("fp32", description="fp32, or fp16-compressed weights (default fp32)")
    from_onnx: str | None = Field(None, json_schema_extra={"metavar": "FILE"},
                                  description="convert this ONNX file instead of the torch model (the torch model, if "
                                              "given, stays the parity reference; otherwise onnxruntime on the file "
                                              "is)")
    static_batch: bool = Field(False, description="fix the batch axis to 1 instead of a dynamic one")
    tolerance: float | None = Field(None, description="max abs logit difference vs the source (default by precision: "
                                                      "1e-3 / 5e-2 relative)")
    parity_samples: int = Field(64, ge=1, description="real images for the parity check")
    no_parity: bool = Field(False, description="skip the parity check (not recommended)")


def check(model_given: bool, out: Path | None, options: OpenVinoExportOptions) -> None:
    """Raise ConfigError unless a torch model or ``--from-onnx`` names what to convert."""
    if not model_given and not options.from_onnx:
        raise ConfigError("edgevit export openvino needs --model NAME (or checkpoint) or --from-onnx FILE")


def run(model: Any, out: Path, options: OpenVinoExportOptions, parity_images: Any) -> dict:
    """Convert ``model`` (a torch classifier, or None with ``options.from_onnx``) to OpenVINO IR at ``out`` (a
    directory or a path ending in .xml), checked on ``parity_images`` (a dataset; None skips parity); returns the
    export record (path, precision, converted_from, max_abs_diff, ...). Raises ExportError when parity fails."""
    from .export import export_openvino

    return export_openvino(model, out, precision=options.precision, from_onnx=options.from_onnx,
                           dynamic_batch=not options.static_batch, parity=not options.no_parity,
                           parity_images=parity_images, tolerance=options.tolerance,
                           parity_samples=options.parity_samples)


def summary(rec: dict, options: OpenVinoExportOptions) -> str:
    from ..parity import parity_summary

    return f"wrote {rec['path']} ({rec['precision']}, from {rec['converted_from']}): {parity_summary(rec)}"


COMMAND = ExportCommand(
    name="openvino", source="optional-model", options=OpenVinoExportOptions, check=check, run=run, summary=summary,
    help="torch (or ONNX) → OpenVINO IR (.xml + .bin), fp32 or fp16 weights, parity on real images",
    description="Convert a model to OpenVINO IR with openvino.convert_model and check it against the torch model "
                "on real images. The IR stores the model's input spec, so `edgevit eval --artifact X.xml` and "
                "`edgevit profile X.xml` work on it.",
    out_help="output directory (writes <model>.xml/.bin) or a path ending in .xml",
    json_help="write the export record (max_abs_diff, top1_agreement, ...) here",
    towers=True,
)
