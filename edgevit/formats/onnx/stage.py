"""Stage ``export_onnx``: the run's torch artefact → ONNX, parity against it on real images.

On an early-exit cascade whose graphs are ONNX (early_exit ``format: onnx``, and its INT8 copy from ``quantize``)
the stage copies the cascade into its folder and, with ``if_form: true``, composes it into one ONNX graph with
``If`` nodes (``cascade_if.onnx``, batch 1, :func:`edgevit.formats.cascade.if_form.build_if_graph`) checked image
by image against the segment cascade; the next stages see the cascade.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ...config import ConfigModel
from ...stage import Stage, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOnnxStage(Stage):
    """Export the torch artefact to ONNX and check parity against it on real images."""

    name = "export_onnx"
    description = ("torch → ONNX (dynamic batch, onnxslim), parity vs torch on real inputs; an ONNX cascade: "
                   "copied, and with if_form one graph with If nodes")
    consumes = ("torch", "cascade")
    produces = ("onnx", "cascade")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    libraries = ("torch", "timm", "numpy", "onnx", "onnxscript", "onnxslim", "onnxruntime")
    cannot_take: ClassVar[dict[str, str]] = {
        "cascade:openvino": "OpenVINO IR graphs cannot be turned back into ONNX; export the cascade as ONNX "
                            "(early_exit format: onnx; quantize with an ONNX backend) and put export_onnx before "
                            "export_openvino",
        "cascade:ort": "ORT-format graphs cannot be turned back into ONNX; put export_onnx before export_ort_mobile",
    }

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        return ("torch", "cascade:onnx")

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        return ("cascade:onnx",) if kind.startswith("cascade") else ("onnx",)

    class Config(ConfigModel):
        opset: int = Field(18, description="ONNX opset (the exporter's range: edgevit.formats.onnx.opsets)")
        dynamic_batch: bool = Field(True, description="dynamic batch axis (else batch 1)")
        simplify: bool = Field(True, description="simplify the graph with onnxslim")
        tolerance: float | None = Field(None, ge=0, description="max abs logit difference allowed")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")
        exporter: Literal["auto", "dynamo", "torchscript"] = Field(
            "auto", description="torch ONNX exporter (auto: torch.export-based, falling back to TorchScript)")
        if_form: bool = Field(False, description="on an ONNX early-exit cascade: also write cascade_if.onnx, the "
                                                 "cascade as one ONNX graph with If nodes (batch 1)")

        @field_validator("opset")
        @classmethod
        def _exporter_can_write(cls, v: int) -> int:  # the exporter's range, checked at --dry-run
            from .opsets import check_opset

            return check_opset(v, what="opset")

    def run(self, ctx, config) -> StageOutput:
        from ...data import preprocess
        from .export import export_onnx

        src = ctx.consumed(self, config)
        images = ctx.dataset(limit=config.parity_samples).images
        if src.kind == "cascade":
            return self._cascade(ctx, config, src, images)
        if config.if_form:
            log.warning("export_onnx: if_form applies to an early-exit cascade; the run's model is a %s artefact, "
                        "so no If form is written", src.kind)
        result = export_onnx(src, ctx.out_dir / "model.onnx", opset=config.opset,
                             dynamic_batch=config.dynamic_batch, simplify=config.simplify,
                             parity_images=preprocess(images, src.spec), tolerance=config.tolerance,
                             exporter=config.exporter)
        return StageOutput.from_export(result)

    def _cascade(self, ctx, config, src, images) -> StageOutput:
        from ...errors import ConfigError
        from ..cascade.convert import copy_cascade
        from ..cascade.runtime import read_manifest

        m = read_manifest(src.path)
        if m.get("backend") != "onnx":
            raise ConfigError(f"export_onnx: the run's cascade ({src.path}) holds {m.get('backend')} graphs, which "
                              f"cannot be turned back into ONNX; export the cascade as ONNX (early_exit format: onnx) "
                              f"and put export_onnx before the stage that converts it")
        path = copy_cascade(src.path, ctx.out_dir / "cascade")
        art = dataclasses.replace(src, path=path, meta=dict(src.meta))
        metrics: dict = {"format": "cascade", "backend": "onnx", "path": str(path), "graphs": len(m["segments"]) +
                         len(m["exits"]), "int8": bool(m.get("int8")), "copied_from": str(src.path)}
        parity = None
        if config.if_form:
            from ..cascade.if_form import build_if_graph

            res = build_if_graph(path, ctx.out_dir / "cascade_if.onnx", parity_images=images,
                                 parity_samples=config.parity_samples)
            rec = res.to_dict()
            metrics.update({"if_form": rec["path"], "if_form_active_exits": rec.get("active_exits"),
                            **{k: rec.get(k) for k in ("max_abs_diff", "cosine", "top1_agreement", "n")},
                            "file_size": rec.get("file_size")})
            parity = res.parity
        return StageOutput(art, metrics, parity=parity)
