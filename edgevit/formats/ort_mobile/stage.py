"""Stage ``export_ort_mobile``: the run's ONNX file → ONNX Runtime ``.ort`` (importable without onnxruntime)."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from ...config import ConfigModel
from ...stage import Stage, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOrtMobileStage(Stage):
    """ONNX → ONNX Runtime ``.ort`` format (ORT Mobile) with its required-operators config; parity on real images."""

    name = "export_ort_mobile"
    description = "ONNX → .ort (ONNX Runtime Mobile) + required_operators.config, parity vs ONNX and torch"
    consumes = ("onnx",)
    produces = ("ort",)

    class Config(ConfigModel):
        optimization: Literal["fixed", "runtime"] = Field(
            "fixed", description="fixed: baked-in optimisations (CPU); runtime: replayed at load (NNAPI/CoreML)")
        target_platform: Literal["arm", "amd64"] | None = Field(
            None, description="platform of the .ort file (arm allows INT8 QDQ kernels)")
        enable_type_reduction: bool = Field(False, description="keep only the kernels' types the model uses")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")
        tolerance: float | None = Field(None, ge=0, description="max abs logit difference allowed")

    def run(self, ctx, config) -> StageOutput:
        from ...data import preprocess
        from .export import export_ort_mobile

        onnx_art = ctx.consumed(self)
        src = ctx.latest("torch") or ctx.source_artifact()
        images = preprocess(ctx.dataset(limit=config.parity_samples).images, onnx_art.spec)
        result = export_ort_mobile(onnx_art, ctx.out_dir, optimization=config.optimization,
                                   target_platform=config.target_platform,
                                   enable_type_reduction=config.enable_type_reduction, parity_images=images,
                                   torch_model=src.load_model() if src.kind == "torch" else None,
                                   tolerance=config.tolerance)
        return StageOutput.from_export(result)
