"""``edgevit export ort-mobile``: ONNX file (or a model, exported to ONNX first) → ONNX Runtime ``.ort`` format —
the command's declaration.

:mod:`edgevit.cli.export` builds the parser from :data:`COMMAND`; importable without torch or onnxruntime (both are
imported when the command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...config import ConfigModel
from ...format_registry import ExportCommand


class OrtMobileExportOptions(ConfigModel):
    """The flags of ``edgevit export ort-mobile`` beyond the source, ``--out``, the dataset and ``--json``."""

    optimization: Literal["fixed", "runtime"] = Field(
        "fixed", description="fixed: optimisations baked in (CPU; default); runtime: saved and replayed at load time "
                             "(for NNAPI/CoreML builds)")
    target_platform: Literal["arm", "amd64"] | None = Field(
        None, description="platform the .ort file is for (arm allows INT8 QDQ kernels)")
    type_reduction: bool = Field(False, description="also record the types each operator needs in the config "
                                                    "(smaller minimal builds)")
    opset: int = Field(18, description="ONNX opset when exporting --model (default 18)")
    tolerance: float | None = Field(None, description="max abs logit difference (default: fp32 rule)")
    parity_samples: int = Field(64, ge=1, description="real images for the parity check")
    no_parity: bool = Field(False, description="skip the parity check (not recommended)")


def run(source: Any, out: Path, options: OrtMobileExportOptions, parity_images: Any) -> dict:
    """Convert ``source`` (an ONNX file's Path, or a torch classifier exported to ONNX first with ``options.opset``)
    to ``<out>/<name>.ort`` + its required-operators config, checked on ``parity_images`` (a dataset; None skips
    parity); returns the conversion record (path, optimization, file_size in bytes, config_path, max_abs_diff, ...).
    Raises ExportError when parity fails."""
    from .export import export_model_ort_mobile, export_ort_mobile

    common = {"optimization": options.optimization, "target_platform": options.target_platform,
              "enable_type_reduction": options.type_reduction, "parity": not options.no_parity,
              "tolerance": options.tolerance}
    if not isinstance(source, Path):  # exported from the model first: an opset the exporter and onnxruntime handle
        from ..onnx.opsets import check_opset

        check_opset(options.opset, what="--opset", runtimes=["onnxruntime"])
    if isinstance(source, Path):
        return export_ort_mobile(source, out, parity_images=parity_images, parity_samples=options.parity_samples,
                                 **common)
    return export_model_ort_mobile(source, out, opset=options.opset, parity_images=parity_images,
                                   parity_samples=options.parity_samples, **common)


def summary(rec: dict, options: OrtMobileExportOptions) -> str:
    from ..parity import parity_summary

    return (f"wrote {rec['path']} ({rec['optimization']}, {rec['file_size'] / 1e6:.2f} MB): {parity_summary(rec)}; "
            f"operator config {rec['config_path']}")


COMMAND = ExportCommand(
    name="ort-mobile", source="either", options=OrtMobileExportOptions, run=run, summary=summary,
    help="ONNX → ONNX Runtime .ort format (ORT Mobile) + required-operators config, parity on real images",
    description="Convert an ONNX file to ONNX Runtime's .ort format with onnxruntime's own converter "
                "(onnxruntime.tools.convert_onnx_models_to_ort). Writes <name>.ort, <name>.ort.spec.json and "
                "<name>.required_operators.config (for a minimal onnxruntime build), and checks the .ort file "
                "against the ONNX file (and the torch model, with --model) on real images. "
                "`edgevit eval --artifact X.ort` and `edgevit profile X.ort` work on the result.",
    out_help="output directory (e.g. runs/x/mobile/)",
    json_help="write the conversion record (max_abs_diff, top1_agreement, ...) here",
)
