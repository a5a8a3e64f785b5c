"""Stage ``export_openvino``: the torch artefact (or the latest ONNX one) → OpenVINO IR, parity on real images.

Recipe entry::

    - stage: export_openvino
      precision: fp16        # fp32 | fp16 (FP16-compressed weights)
      from_onnx: true        # convert the latest ONNX artefact of the run when there is one
      parity_samples: 64     # real images of the recipe's evaluation split for the parity check

The next stages see an ``openvino`` artefact (``model.xml`` + ``model.bin`` in the stage folder); ``eval`` and
``profile`` run it through the ``openvino`` runtime when the recipe's ``runtimes`` lists it.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from ...config import ConfigModel
from ...stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOpenVinoStage(Stage):
    """Export to OpenVINO IR (FP32 or FP16 weights) and check it against the torch model on real images."""

    name = "export_openvino"
    description = "torch (or the latest ONNX) → OpenVINO IR fp32/fp16, parity vs torch on real inputs"
    consumes = ("torch",)
    produces = ("openvino",)

    class Config(ConfigModel):
        precision: Literal["fp32", "fp16"] = Field("fp32", description="fp32 or fp16 (FP16-compressed weights)")
        from_onnx: bool = Field(False, description="convert the latest ONNX artefact of the run if there is one "
                                                   "(else the torch model)")
        dynamic_batch: bool = Field(True, description="dynamic batch axis (else batch 1)")
        tolerance: float | None = Field(None, ge=0, description="max abs logit difference allowed (default by "
                                                                "precision)")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ...data import preprocess
        from .export import export_openvino

        src = ctx.latest("torch") or ctx.source_artifact()
        onnx = ctx.latest("onnx") if config.from_onnx else None
        if config.from_onnx and onnx is None:
            log.warning("export_openvino: from_onnx is set but the run has no ONNX artefact yet; converting the "
                        "torch model (put export_onnx before this stage to convert its file)")
        images = ctx.dataset(limit=config.parity_samples).images
        result = export_openvino(src, ctx.out_dir / "model.xml", precision=config.precision,
                                 from_onnx=onnx.path if onnx is not None else None,
                                 dynamic_batch=config.dynamic_batch, parity_images=preprocess(images, src.spec),
                                 tolerance=config.tolerance)
        if config.from_onnx and onnx is None:
            result.fields["from_onnx_fallback"] = "no ONNX artefact in the run; converted the torch model"
        return StageOutput.from_export(result)
