"""Deployment-format stages that start from the run's ONNX file: ``export_ort_mobile`` and ``export_tensorrt``.

Importable without torch, onnxruntime or TensorRT (they are imported inside ``run``). Both need an ONNX artefact
from an earlier ``export_onnx`` stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from . import Stage, StageResult, register_stage

log = logging.getLogger(__name__)


def _relative(obj, out_dir):
    """The record with paths inside the stage's (temporary, renamed afterwards) folder made relative to it."""
    roots = sorted({str(out_dir.resolve()), str(out_dir)}, key=len, reverse=True)

    def fix(o):
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        if isinstance(o, str):
            for root in roots:
                if o == root or o.startswith(root + "/"):
                    return o[len(root):].lstrip("/") or "."
        return o

    return fix(obj)


def _latest_onnx(ctx, stage: str):
    from ..errors import ConfigError

    art = ctx.latest("onnx")
    if art is None:
        raise ConfigError(f"stage '{stage}' converts the run's ONNX file, but no earlier stage produced one: add "
                          f"`- stage: export_onnx` before `- stage: {stage}` in the recipe's stages")
    return art


@register_stage
class ExportOrtMobileStage(Stage):
    """ONNX → ONNX Runtime ``.ort`` format (ORT Mobile) with its required-operators config; parity on real images."""

    name = "export_ort_mobile"
    description = "ONNX → .ort (ONNX Runtime Mobile) + required_operators.config, parity vs ONNX and torch"
    produces = "ort"

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
            from ..errors import ConfigError

            if self.parity_samples < 1:
                raise ConfigError(f"{path}.parity_samples: must be ≥ 1, got {self.parity_samples}")

    def run(self, ctx, config):
        from ..artifact import Artifact
        from ..data import preprocess
        from ..export.ort_mobile import export_ort_mobile

        onnx_art = _latest_onnx(ctx, self.name)
        src = ctx.latest("torch") or ctx.source_artifact()
        images = preprocess(ctx.dataset(limit=config.parity_samples).images, onnx_art.spec)
        record = export_ort_mobile(onnx_art, ctx.out_dir, optimization=config.optimization,
                                   target_platform=config.target_platform,
                                   enable_type_reduction=config.enable_type_reduction, calib_images=images,
                                   torch_model=src.load_model() if src.kind == "torch" else None,
                                   tolerance=config.tolerance)
        from pathlib import Path

        art = Artifact(kind="ort", spec=onnx_art.spec, path=Path(record["path"]), source=onnx_art.source)
        return StageResult(art, _relative(record, ctx.out_dir))


@register_stage
class ExportTensorRTStage(Stage):
    """ONNX → TensorRT: the Jetson device bundle (always possible) and an engine where TensorRT is installed."""

    name = "export_tensorrt"
    description = ("ONNX → TensorRT device bundle (ONNX, INT8 calibration cache from real data, trtexec build/"
                   "profile scripts, preflight) and an engine where TensorRT exists")
    produces = "tensorrt"

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
            from ..errors import ConfigError

            for key in ("calib_samples", "min_batch", "opt_batch", "max_batch", "workspace_mib", "parity_samples"):
                if getattr(self, key) < 1:
                    raise ConfigError(f"{path}.{key}: must be ≥ 1, got {getattr(self, key)}")
            if not self.min_batch <= self.opt_batch <= self.max_batch:
                raise ConfigError(f"{path}: need min_batch ≤ opt_batch ≤ max_batch, got {self.min_batch}, "
                                  f"{self.opt_batch}, {self.max_batch}")
            if not self.bundle and self.engine is False:
                raise ConfigError(f"{path}: bundle: false and engine: false leaves nothing to do")

    def run(self, ctx, config):
        from ..artifact import Artifact
        from ..data import calibration_subset, preprocess
        from ..export.tensorrt import export_tensorrt

        onnx_art = _latest_onnx(ctx, self.name)
        d = ctx.recipe.data
        split = config.calib_split or d.calib_split
        calib_ds = ctx.dataset(split)
        sub = calibration_subset(calib_ds, config.calib_samples)
        where = {"dataset": calib_ds.name, "split": split, "samples": len(sub), "seed": 0,
                 "selection": "edgevit.data.calibration_subset (class-balanced, deterministic)"
                              + (f" of the first {d.limit} samples (recipe data.limit)" if d.limit else "")}
        src = ctx.latest("torch") or ctx.source_artifact()
        parity = preprocess(ctx.dataset(limit=config.parity_samples).images, onnx_art.spec)
        record = export_tensorrt(onnx_art, ctx.out_dir, precision=config.precision, bundle=config.bundle,
                                 engine=config.engine, calib_images=sub, calib_description=where,
                                 min_batch=config.min_batch, opt_batch=config.opt_batch, max_batch=config.max_batch,
                                 trt_version=config.trt_version, workspace_mib=config.workspace_mib,
                                 torch_model=src.load_model() if src.kind == "torch" else None,
                                 parity_images=parity, parity_samples=config.parity_samples,
                                 calib_method=config.calib_method)
        if record["engine"]:
            from pathlib import Path

            art = Artifact(kind="tensorrt", spec=onnx_art.spec, path=Path(record["engine"]["path"]),
                           source=onnx_art.source)
        else:
            art = ctx.artifact  # a bundle is not an artefact a runtime here can load; the run continues as it was
        return StageResult(art, _relative(record, ctx.out_dir))
