"""Stage ``export_ort_mobile``: the run's ONNX file → ONNX Runtime ``.ort`` (importable without onnxruntime)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from ...stage import Stage, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOrtMobileStage(Stage):
    """ONNX → ONNX Runtime ``.ort`` format (ORT Mobile) with its required-operators config; parity on real images."""

    name = "export_ort_mobile"
    description = "ONNX → .ort (ONNX Runtime Mobile) + required_operators.config, parity vs ONNX and torch"
    consumes = ("onnx",)
    produces = ("ort",)

    @dataclass
    class Config:
        optimization: Literal["fixed", "runtime"] = field(
            default="fixed", metadata={"help": "fixed: baked-in optimisations (CPU); runtime: replayed at load "
                                               "(NNAPI/CoreML)"})
        target_platform: Literal["arm", "amd64"] | None = field(
            default=None, metadata={"help": "platform of the .ort file (arm allows INT8 QDQ kernels)"})
        enable_type_reduction: bool = False
        parity_samples: int = 64
        tolerance: float | None = field(default=None, metadata={"help": "max abs logit difference allowed"})

        def validate(self, path: str) -> None:
            from ...errors import ConfigError

            if self.parity_samples < 1:
                raise ConfigError(f"{path}.parity_samples: must be ≥ 1, got {self.parity_samples}")

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
