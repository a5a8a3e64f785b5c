"""Stage ``export_onnx``: the run's torch artefact → ONNX, parity against it on real images."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...config import ConfigModel
from ...stage import Stage, StageOutput, register_stage


@register_stage
class ExportOnnxStage(Stage):
    """Export the torch artefact to ONNX and check parity against it on real images."""

    name = "export_onnx"
    description = "torch → ONNX (dynamic batch, onnxslim), parity vs torch on real inputs"
    consumes = ("torch",)
    produces = ("onnx",)
    libraries = ("torch", "timm", "numpy", "onnx", "onnxscript", "onnxslim", "onnxruntime")

    class Config(ConfigModel):
        opset: int = Field(18, description="ONNX opset (the exporter's range: edgevit.formats.onnx.opsets)")
        dynamic_batch: bool = Field(True, description="dynamic batch axis (else batch 1)")
        simplify: bool = Field(True, description="simplify the graph with onnxslim")
        tolerance: float | None = Field(None, ge=0, description="max abs logit difference allowed")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")
        exporter: Literal["auto", "dynamo", "torchscript"] = Field(
            "auto", description="torch ONNX exporter (auto: torch.export-based, falling back to TorchScript)")

        @field_validator("opset")
        @classmethod
        def _exporter_can_write(cls, v: int) -> int:  # the exporter's range, checked at --dry-run
            from .opsets import check_opset

            return check_opset(v, what="opset")

    def run(self, ctx, config) -> StageOutput:
        from ...data import preprocess
        from .export import export_onnx

        src = ctx.latest("torch") or ctx.source_artifact()
        images = ctx.dataset(limit=config.parity_samples).images
        result = export_onnx(src, ctx.out_dir / "model.onnx", opset=config.opset,
                             dynamic_batch=config.dynamic_batch, simplify=config.simplify,
                             parity_images=preprocess(images, src.spec), tolerance=config.tolerance,
                             exporter=config.exporter)
        return StageOutput.from_export(result)
