"""Stage ``export_onnx``: the run's torch artefact → ONNX, parity against it on real images."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...stage import Stage, StageOutput, register_stage


@register_stage
class ExportOnnxStage(Stage):
    """Export the torch artefact to ONNX and check parity against it on real images."""

    name = "export_onnx"
    description = "torch → ONNX (dynamic batch, onnxslim), parity vs torch on real inputs"
    consumes = ("torch",)
    produces = ("onnx",)

    @dataclass
    class Config:
        opset: int = 18
        dynamic_batch: bool = True
        simplify: bool = True
        tolerance: float | None = field(default=None, metadata={"help": "max abs logit difference allowed"})
        parity_samples: int = 64

    def run(self, ctx, config) -> StageOutput:
        from ...data import preprocess
        from .export import export_onnx

        src = ctx.latest("torch") or ctx.source_artifact()
        images = ctx.dataset(limit=config.parity_samples).images
        result = export_onnx(src, ctx.out_dir / "model.onnx", opset=config.opset,
                             dynamic_batch=config.dynamic_batch, simplify=config.simplify,
                             parity_images=preprocess(images, src.spec), tolerance=config.tolerance)
        return StageOutput.from_export(result)
