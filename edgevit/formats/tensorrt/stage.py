"""Stage ``export_tensorrt``: the run's ONNX file → TensorRT device bundle and, where TensorRT is installed, an engine;
an early-exit cascade of ONNX graphs → a cascade bundle (one trtexec build per graph, batch 1..max_batch) and, where
TensorRT is installed, the engine cascade (:mod:`edgevit.formats.tensorrt.cascade`).

Importable without TensorRT (imported inside ``run``)."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ...config import ConfigModel
from ...stage import Stage, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportTensorRTStage(Stage):
    """ONNX → TensorRT: the Jetson device bundle (always possible) and an engine where TensorRT is installed."""

    name = "export_tensorrt"
    description = ("ONNX → TensorRT device bundle (ONNX, INT8 calibration cache from real data, trtexec build/"
                   "profile scripts, preflight) and an engine where TensorRT exists; an ONNX cascade: one build per "
                   "graph (batch 1..max_batch, Q/DQ graphs explicitly quantised) + the cascade manifest")
    consumes = ("onnx", "cascade")
    produces = ("tensorrt", "cascade")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    cannot_take: ClassVar[dict[str, str]] = {
        "cascade:openvino": "TensorRT builds engines from ONNX graphs, and OpenVINO IR cannot be turned back into "
                            "ONNX; keep an ONNX cascade in the run (early_exit format: onnx; quantize with backend "
                            "onnxruntime)",
        "cascade:ort": "TensorRT builds engines from ONNX graphs, not ORT-format ones; put export_tensorrt before "
                       "export_ort_mobile",
        "cascade:tvm": "TensorRT builds engines from ONNX graphs, not TVM libraries; put export_tensorrt before "
                       "export_tvm",
    }

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        return ("onnx", "cascade:onnx")

    @classmethod
    def chain_refusal(cls, config, *, made_by: str, made_config, kinds) -> str | None:
        """An early-exit cascade quantised by onnxruntime has asymmetric uint8 Q/DQ activations, which TensorRT's
        explicit quantization refuses (:func:`~edgevit.formats.tensorrt.cascade.export_tensorrt_cascade`): say so
        before the run spends its time on the stages before, whatever the speed gate then keeps."""
        if made_by == "quantize" and getattr(made_config, "backend", None) == "onnxruntime" \
                and any(k.startswith("cascade") for k in kinds):
            return ("'export_tensorrt' after 'quantize' (backend onnxruntime) on an early-exit cascade: its INT8 "
                    "graphs have asymmetric uint8 Q/DQ, which TensorRT's explicit quantization does not take; put "
                    "export_tensorrt before quantize (it calibrates each graph INT8 itself with precision: int8)")
        return None

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str | None, ...]:
        """The engine (an engine cascade) where one is built; without one (bundle only) the run's artefact is
        handed on unchanged."""
        built = "cascade:tensorrt" if kind.startswith("cascade") else "tensorrt"
        return {True: (built,), False: (None,)}.get(config.engine, (built, None))

    class Config(ConfigModel):
        precision: Literal["fp32", "fp16", "int8"] = Field("fp16", description="engine precision")
        bundle: bool = Field(True, description="write the device bundle (needs no TensorRT)")
        engine: bool | None = Field(None, description="build an engine here: null = when TensorRT is installed")
        calib_samples: int = Field(300, ge=1, description="calibration images (class-balanced subset of the "
                                                          "recipe's calibration split)")
        calib_method: Literal["entropy", "max", "percentile"] = Field("entropy", description="INT8 calibrator")
        calib_split: str | None = Field(None, description="default: the recipe's data.calib_split")
        min_batch: int = Field(1, ge=1, description="smallest batch of the optimisation profile")
        opt_batch: int = Field(1, ge=1, description="batch the engine is tuned for")
        max_batch: int = Field(8, ge=1, description="largest batch of the optimisation profile")
        trt_version: str = Field("10.3.0", description="device TensorRT version for the cache header")
        workspace_mib: int = Field(1024, ge=1, description="builder workspace, MiB")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")

        @model_validator(mode="after")
        def _check(self):
            if not self.min_batch <= self.opt_batch <= self.max_batch:
                raise ValueError(f"need min_batch ≤ opt_batch ≤ max_batch, got {self.min_batch}, {self.opt_batch}, "
                                 f"{self.max_batch}")
            if not self.bundle and self.engine is False:
                raise ValueError("nothing to do: bundle: false and engine: false")
            return self

    def _calibration(self, ctx, config):
        from ...data import calibration_subset

        d = ctx.recipe.data
        split = config.calib_split or d.calib_split
        calib_ds = ctx.dataset(split)
        sub = calibration_subset(calib_ds, config.calib_samples)
        where = {"dataset": calib_ds.name, "split": split, "samples": len(sub), "seed": 0,
                 "selection": "edgevit.data.calibration_subset (class-balanced, deterministic)"
                              + (f" of the first {d.limit} samples (recipe data.limit)" if d.limit else "")}
        return sub, where

    def _cascade(self, ctx, config, src) -> StageOutput:
        from .cascade import export_tensorrt_cascade

        sub, where = self._calibration(ctx, config) if config.precision == "int8" else (None, None)
        if config.min_batch != 1:
            log.warning("export_tensorrt: min_batch %d ignored for a cascade: exits shrink the batch, so every graph's "
                        "profile starts at batch 1", config.min_batch)
        result = export_tensorrt_cascade(src.path, ctx.out_dir, precision=config.precision, bundle=config.bundle,
                                         engine=config.engine, calib_images=sub, calib_description=where,
                                         calibration_method=config.calib_method, opt_batch=config.opt_batch,
                                         max_batch=config.max_batch, trt_version=config.trt_version,
                                         workspace_mib=config.workspace_mib,
                                         parity_images=ctx.dataset(limit=config.parity_samples).images)
        art = result.artifact if result.fields["engine"] else ctx.artifact
        return StageOutput(art, result.to_dict(), parity=result.parity)

    def run(self, ctx, config) -> StageOutput:
        from ...data import preprocess
        from .export import export_tensorrt

        onnx_art = ctx.consumed(self, config)
        if onnx_art.kind == "cascade":
            return self._cascade(ctx, config, onnx_art)
        sub, where = self._calibration(ctx, config)
        src = ctx.current("torch")
        parity = preprocess(ctx.dataset(limit=config.parity_samples).images, onnx_art.spec)
        result = export_tensorrt(onnx_art, ctx.out_dir, precision=config.precision, bundle=config.bundle,
                                 engine=config.engine, calib_images=sub, calib_description=where,
                                 min_batch=config.min_batch, opt_batch=config.opt_batch, max_batch=config.max_batch,
                                 trt_version=config.trt_version, workspace_mib=config.workspace_mib,
                                 torch_model=src.load_model() if src is not None else None,
                                 parity_images=parity, parity_samples=config.parity_samples,
                                 calibration_method=config.calib_method)
        # a bundle alone is not an artefact a runtime here can load: the run then continues as it was
        art = result.artifact if result.fields["engine"] else ctx.artifact
        return StageOutput(art, result.to_dict(), parity=result.parity)
