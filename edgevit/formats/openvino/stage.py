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
from dataclasses import dataclass, field

from ...stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOpenVinoStage(Stage):
    """Export to OpenVINO IR (FP32 or FP16 weights) and check it against the torch model on real images."""

    name = "export_openvino"
    description = "torch (or the latest ONNX) → OpenVINO IR fp32/fp16, parity vs torch on real inputs"
    consumes = ("torch",)
    produces = ("openvino",)

    @dataclass
    class Config:
        precision: str = field(default="fp32", metadata={"help": "fp32 or fp16 (FP16-compressed weights)"})
        from_onnx: bool = field(default=False, metadata={"help": "convert the latest ONNX artefact of the run "
                                                                  "if there is one (else the torch model)"})
        dynamic_batch: bool = True
        tolerance: float | None = field(default=None, metadata={"help": "max abs logit difference allowed "
                                                                        "(default by precision)"})
        parity_samples: int = 64

        def validate(self, path: str) -> None:
            from ...errors import ConfigError

            if self.precision not in ("fp32", "fp16"):
                raise ConfigError(f"{path}.precision: must be fp32 or fp16, got {self.precision!r}")
            if self.parity_samples < 1:
                raise ConfigError(f"{path}.parity_samples: must be ≥ 1, got {self.parity_samples}")

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
