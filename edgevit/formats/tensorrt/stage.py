"""Stage ``export_tensorrt``: the run's ONNX file → TensorRT device bundle and, where TensorRT is installed, an engine.

Importable without TensorRT (imported inside ``run``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from ...stage import Stage, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportTensorRTStage(Stage):
    """ONNX → TensorRT: the Jetson device bundle (always possible) and an engine where TensorRT is installed."""

    name = "export_tensorrt"
    description = ("ONNX → TensorRT device bundle (ONNX, INT8 calibration cache from real data, trtexec build/"
                   "profile scripts, preflight) and an engine where TensorRT exists")
    consumes = ("onnx",)
    produces = ("tensorrt",)

    @dataclass
    class Config:
        precision: Literal["fp32", "fp16", "int8"] = "fp16"
        bundle: bool = field(default=True, metadata={"help": "write the device bundle (needs no TensorRT)"})
        engine: bool | None = field(default=None, metadata={"help": "build an engine here: null = when TensorRT "
                                                                    "is installed"})
        calib_samples: int = field(default=300, metadata={"help": "calibration images (class-balanced subset of "
                                                                  "the recipe's calibration split)"})
        calib_method: Literal["entropy", "max", "percentile"] = "entropy"
        calib_split: str | None = field(default=None, metadata={"help": "default: the recipe's data.calib_split"})
        min_batch: int = 1
        opt_batch: int = 1
        max_batch: int = 8
        trt_version: str = field(default="10.3.0", metadata={"help": "device TensorRT version for the cache header"})
        workspace_mib: int = 1024
        parity_samples: int = 64

        def validate(self, path: str) -> None:
            from ...errors import ConfigError

            for key in ("calib_samples", "min_batch", "opt_batch", "max_batch", "workspace_mib", "parity_samples"):
                if getattr(self, key) < 1:
                    raise ConfigError(f"{path}.{key}: must be ≥ 1, got {getattr(self, key)}")
            if not self.min_batch <= self.opt_batch <= self.max_batch:
                raise ConfigError(f"{path}: need min_batch ≤ opt_batch ≤ max_batch, got {self.min_batch}, "
                                  f"{self.opt_batch}, {self.max_batch}")
            if not self.bundle and self.engine is False:
                raise ConfigError(f"{path}: bundle: false and engine: false leaves nothing to do")

    def run(self, ctx, config) -> StageOutput:
        from ...data import calibration_subset, preprocess
        from .export import export_tensorrt

        onnx_art = ctx.consumed(self)
        d = ctx.recipe.data
        split = config.calib_split or d.calib_split
        calib_ds = ctx.dataset(split)
        sub = calibration_subset(calib_ds, config.calib_samples)
        where = {"dataset": calib_ds.name, "split": split, "samples": len(sub), "seed": 0,
                 "selection": "edgevit.data.calibration_subset (class-balanced, deterministic)"
                              + (f" of the first {d.limit} samples (recipe data.limit)" if d.limit else "")}
        src = ctx.latest("torch") or ctx.source_artifact()
        parity = preprocess(ctx.dataset(limit=config.parity_samples).images, onnx_art.spec)
        result = export_tensorrt(onnx_art, ctx.out_dir, precision=config.precision, bundle=config.bundle,
                                 engine=config.engine, calib_images=sub, calib_description=where,
                                 min_batch=config.min_batch, opt_batch=config.opt_batch, max_batch=config.max_batch,
                                 trt_version=config.trt_version, workspace_mib=config.workspace_mib,
                                 torch_model=src.load_model() if src.kind == "torch" else None,
                                 parity_images=parity, parity_samples=config.parity_samples,
                                 calib_method=config.calib_method)
        # a bundle alone is not an artefact a runtime here can load: the run then continues as it was
        art = result.artifact if result.fields["engine"] else ctx.artifact
        return StageOutput(art, result.to_dict(), parity=result.parity)
