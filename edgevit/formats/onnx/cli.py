"""``edgevit export onnx``: torch → ONNX with a parity check on real images — the command's declaration.

:mod:`edgevit.cli.export` builds the parser from :data:`COMMAND`; importable without torch or onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ...config import ConfigModel
from ...format_registry import ExportCommand


class OnnxExportOptions(ConfigModel):
    """The flags of ``edgevit export onnx`` beyond the model, ``--out``, the dataset and ``--json``."""

    opset: int = 18
    static_batch: bool = Field(False, description="fix the batch axis instead of a dynamic one")
    no_simplify: bool = Field(False, description="skip onnxslim")
    tolerance: float | None = Field(None, description="max abs logit difference vs torch")
    parity_samples: int = Field(64, ge=1, description="real images for the parity check")


def run(model: Any, out: Path, options: OnnxExportOptions, parity_images: Any) -> dict:
    """Export ``model`` (a torch classifier) to the ONNX file ``out``, checked on ``parity_images`` (a dataset of
    real images); returns the export record (path, max_abs_diff, top1_agreement, n, ...). Raises ExportError when
    parity fails."""
    from ...data import preprocess
    from .export import export_onnx
    from .opsets import check_opset

    # the command checks parity on onnxruntime: the opset must be one it runs (and one the exporter writes)
    check_opset(options.opset, what="--opset", runtimes=["onnxruntime"])

    return export_onnx(model, out, opset=options.opset, dynamic_batch=not options.static_batch,
                       simplify=not options.no_simplify,
                       parity_images=preprocess(parity_images.images, model.edgevit_spec),
                       tolerance=options.tolerance)


def summary(rec: dict, options: OnnxExportOptions) -> str:
    from ..parity import parity_summary

    return f"wrote {rec['path']}: {parity_summary(rec)}"


COMMAND = ExportCommand(
    name="onnx", help="torch → ONNX with a parity check on real images", source="model",
    options=OnnxExportOptions, run=run, summary=summary,
    out_help="output file (e.g. runs/x/model.onnx)",
    json_help="write the export record (max_abs_diff, top1_agreement, ...) here",
    towers=True,
)
