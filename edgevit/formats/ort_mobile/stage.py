"""Stage ``export_ort_mobile``: the run's ONNX file → ONNX Runtime ``.ort`` (importable without onnxruntime).

On an early-exit cascade with ONNX graphs every segment and exit head becomes an ``.ort`` file (``cascade/`` in the
stage folder, ``manifest.json`` with ``backend: ort``, which the cascade runtime runs on onnxruntime), with one
``required_operators.config`` for the whole cascade (the union of the graphs' operators: the input of a minimal
onnxruntime build that runs every graph); the new cascade is checked against its source on real images.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import Field

from ...config import ConfigModel
from ...stage import Stage, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportOrtMobileStage(Stage):
    """ONNX → ONNX Runtime ``.ort`` format (ORT Mobile) with its required-operators config; parity on real images."""

    name = "export_ort_mobile"
    description = ("ONNX → .ort (ONNX Runtime Mobile) + required_operators.config, parity vs ONNX and torch; an "
                   "ONNX cascade: every graph → .ort")
    consumes = ("onnx", "cascade")
    produces = ("ort", "cascade")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    cannot_take: ClassVar[dict[str, str]] = {"cascade:openvino": "the ORT converter reads ONNX graphs, and OpenVINO IR cannot be turned back "
                                       "into ONNX; put export_ort_mobile before export_openvino (or quantize with an "
                                       "ONNX backend)"}

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        return ("onnx", "cascade:onnx")

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        return ("cascade:ort",) if kind.startswith("cascade") else ("ort",)

    class Config(ConfigModel):
        optimization: Literal["fixed", "runtime"] = Field(
            "fixed", description="fixed: baked-in optimisations (CPU); runtime: replayed at load (NNAPI/CoreML)")
        target_platform: Literal["arm", "amd64"] | None = Field(
            None, description="platform of the .ort file (arm allows INT8 QDQ kernels)")
        enable_type_reduction: bool = Field(False, description="keep only the kernels' types the model uses")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")
        tolerance: float | None = Field(None, ge=0, description="max abs logit difference allowed")

    def run(self, ctx, config) -> StageOutput:
        from ...data import preprocess
        from .export import export_ort_mobile

        onnx_art = ctx.consumed(self, config)
        if onnx_art.kind == "cascade":
            return self._cascade(ctx, config, onnx_art)
        src = ctx.current("torch")
        images = preprocess(ctx.dataset(limit=config.parity_samples).images, onnx_art.spec)
        result = export_ort_mobile(onnx_art, ctx.out_dir, optimization=config.optimization,
                                   target_platform=config.target_platform,
                                   enable_type_reduction=config.enable_type_reduction, parity_images=images,
                                   torch_model=src.load_model() if src is not None else None,
                                   tolerance=config.tolerance)
        return StageOutput.from_export(result)

    def _cascade(self, ctx, config, src) -> StageOutput:
        from ...errors import ConfigError
        from ..cascade.convert import convert_cascade
        from ..cascade.runtime import read_manifest
        from .export import _convert, read_operator_config

        m = read_manifest(src.path)
        if m.get("backend") != "onnx":
            raise ConfigError(f"export_ort_mobile converts ONNX graphs, but the run's cascade ({src.path}) holds "
                              f"{m.get('backend')} graphs; export the cascade as ONNX (early_exit format: onnx) and "
                              f"put export_ort_mobile before any stage that converts it to another format")
        ops: dict[str, set[str]] = {}

        def convert(s, d, spec) -> dict:
            ort_path, cfg_path, _ = _convert(s.resolve(), d.parent.resolve(), optimization=config.optimization,
                                             target_platform=config.target_platform,
                                             enable_type_reduction=config.enable_type_reduction)
            if ort_path.resolve() != d.resolve():
                ort_path.replace(d)
            graph_ops = read_operator_config(cfg_path) if cfg_path else {}
            for domain, names in graph_ops.items():
                ops.setdefault(domain, set()).update(names)
            if cfg_path:
                cfg_path.unlink()
            return {"required_operators": graph_ops}

        images = ctx.dataset(limit=config.parity_samples).images
        result = convert_cascade(src.path, ctx.out_dir / "cascade", to="ort", convert=convert, parity_images=images,
                                 what="cascade ONNX → ORT format")
        result.artifact.source = src.source
        config_path = ctx.out_dir / "cascade" / "required_operators.config"
        config_path.write_text("# operators of every graph of the cascade (union), for a minimal onnxruntime build\n"
                               + "".join(f"{d};{','.join(sorted(v))}\n" for d, v in sorted(ops.items())))
        rec = result.to_dict()
        metrics = {k: rec[k] for k in ("format", "backend", "path", "max_abs_diff", "cosine", "top1_agreement", "n",
                                       "exit_agreement", "int8")}
        metrics.update({"graphs": rec["graphs"], "config_path": str(config_path),
                        "required_operators": {d: sorted(v) for d, v in sorted(ops.items())},
                        "file_size": sum(g["file_size"] for g in rec["graphs"].values()),
                        "optimization": config.optimization})
        return StageOutput(result.artifact, metrics, parity=result.parity)
