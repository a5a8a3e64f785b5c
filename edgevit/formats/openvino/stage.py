"""Stage ``export_openvino``: the torch artefact (or the latest ONNX one) → OpenVINO IR, parity on real images.

Recipe entry::

    - stage: export_openvino
      precision: fp16        # fp32 | fp16 (FP16-compressed weights)
      from_onnx: true        # convert the latest ONNX artefact of the run when there is one
      parity_samples: 64     # real images of the recipe's evaluation split for the parity check

The next stages see an ``openvino`` artefact (``model.xml`` + ``model.bin`` in the stage folder); ``eval`` and
``profile`` run it through the ``openvino`` runtime when the recipe's ``runtimes`` lists it.

On an early-exit cascade (after ``early_exit``, or its INT8 copy after ``quantize``) every segment and exit head is
converted to IR (``cascade/`` in the stage folder: graphs + ``manifest.json`` with ``backend: openvino``, thresholds
and INT8 record kept), and the new cascade is run against its source on real images (per-sample exits, top-1,
logits; INT8 graphs with the INT8 thresholds, since two runtimes round INT8 arithmetic differently). The next
stages see the cascade; ``eval``/``profile`` run it on ``openvino``.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import Field

from ...config import ConfigModel
from ...stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOpenVinoStage(Stage):
    """Export to OpenVINO IR (FP32 or FP16 weights) and check it against the torch model on real images."""

    name = "export_openvino"
    description = ("torch (or the latest ONNX) → OpenVINO IR fp32/fp16, parity vs torch on real inputs; a cascade: "
                   "every graph → IR, checked against its source")
    consumes = ("torch", "onnx", "cascade")
    produces = ("openvino", "cascade")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets

    cannot_take: ClassVar[dict[str, str]] = {"cascade:ort": "OpenVINO does not read ORT-format graphs; put export_openvino before "
                                  "export_ort_mobile"}

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        """The torch model, or with ``from_onnx`` its ONNX file; a cascade of ONNX or IR graphs either way."""
        return ("torch",) + (("onnx",) if config.from_onnx else ()) + ("cascade:onnx", "cascade:openvino")

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        return ("cascade:openvino",) if kind.startswith("cascade") else ("openvino",)

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

        got = ctx.consumed(self, config)
        images = ctx.dataset(limit=config.parity_samples).images
        if got.kind == "cascade":
            return self._cascade(ctx, config, got, images)
        src = ctx.current("torch")  # the parity reference, when the torch model is still the run's model
        onnx = got if got.kind == "onnx" else None
        if config.from_onnx and onnx is None:
            log.warning("export_openvino: from_onnx is set but the run has no ONNX artefact yet; converting the "
                        "torch model (put export_onnx before this stage to convert its file)")
        result = export_openvino(src, ctx.out_dir / "model.xml", precision=config.precision,
                                 from_onnx=onnx.path if onnx is not None else None,
                                 dynamic_batch=config.dynamic_batch, parity_images=preprocess(images, got.spec),
                                 tolerance=config.tolerance)
        if config.from_onnx and onnx is None:
            result.fields["from_onnx_fallback"] = "no ONNX artefact in the run; converted the torch model"
        return StageOutput.from_export(result)

    def _cascade(self, ctx: StageContext, config: Config, src, images) -> StageOutput:
        from ..cascade.convert import convert_cascade
        from ..cascade.export import graph_to_openvino

        fp16 = config.precision == "fp16"
        result = convert_cascade(src.path, ctx.out_dir / "cascade", to="openvino", parity_images=images,
                                 precision=config.precision,
                                 convert=lambda s, d, spec: graph_to_openvino(s, d, spec, src.source,
                                                                              compress_to_fp16=fp16))
        result.artifact.source = src.source
        rec = result.to_dict()
        metrics = {k: rec[k] for k in ("format", "backend", "path", "max_abs_diff", "cosine", "top1_agreement", "n",
                                       "exit_agreement", "int8")}
        metrics.update({"precision": config.precision, "graphs": rec["graphs"],
                        "file_size": sum(g["file_size"] for g in rec["graphs"].values()),
                        "exits_share": rec["parity_vs_source"]["exits_share"]})
        return StageOutput(result.artifact, metrics, parity=result.parity)
