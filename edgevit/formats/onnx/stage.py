"""Stage ``export_onnx``: the run's torch artefact → ONNX, parity against it on real images."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...stage import Stage, StageResult, register_stage


@register_stage
class ExportOnnxStage(Stage):
    """Export the torch artefact to ONNX and check parity against it on real images."""

    name = "export_onnx"
    description = "torch → ONNX (dynamic batch, onnxslim), parity vs torch on real inputs"
    produces = "onnx"

    @dataclass
    class Config:
        opset: int = 18
        dynamic_batch: bool = True
        simplify: bool = True
        tolerance: float | None = field(default=None, metadata={"help": "max abs logit difference allowed"})
        parity_samples: int = 64

    def run(self, ctx, config):
        from ...artifact import Artifact
        from ...data import preprocess
        from .export import export_onnx

        src = ctx.latest("torch") or ctx.source_artifact()
        model = src.load_model()
        images = ctx.dataset(limit=config.parity_samples).images
        record = export_onnx(model, ctx.out_dir / "model.onnx", opset=config.opset,
                             dynamic_batch=config.dynamic_batch, simplify=config.simplify,
                             calib_images=preprocess(images, src.spec), tolerance=config.tolerance)
        art = Artifact(kind="onnx", spec=src.spec, path=ctx.out_dir / "model.onnx", source=src.source)
        return StageResult(art, record)
