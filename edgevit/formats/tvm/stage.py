"""Stage ``export_tvm``: the torch artefact → a TVM library (``model.so``) tuned with MetaSchedule, parity checked;
an early-exit cascade → one TVM library per segment and exit head.

Recipe entry::

    - stage: export_tvm
      target: llvm            # this CPU (LLVM host detection); or a dict {kind: llvm, mcpu: x86-64-v3}, or cuda
      trials: 1000            # MetaSchedule trials; 0 = untuned (slow, warned); the database is cached and reused
      batch: 1                # static batch size the library is compiled for
      parity_samples: 64      # real images of the recipe's evaluation split for the parity check

The next stages see a ``tvm`` artefact; ``eval`` and ``profile`` run it through the ``tvm`` runtime when the
recipe's ``runtimes`` lists it — with their batch sizes set to the compiled one (``eval: batch_size: 1``,
``profile: batch: [1]``).

On an early-exit cascade of ONNX graphs (after ``early_exit``, or its INT8 QDQ copy after ``quantize`` with the
onnxruntime backend) every graph is compiled with a symbolic batch (:mod:`edgevit.formats.tvm.cascade`: exited
samples leave the batch, so one library runs every batch size; untuned, since MetaSchedule tunes static shapes —
``trials`` and ``batch`` do not apply and ``trials`` > 0 is recorded as a warning). The result is a cascade in
``cascade/`` (``manifest.json`` with ``backend: tvm``), checked against its source on real images (float: the same
exits and predictions on every image); the next stages see it and ``eval``/``profile`` run it on ``tvm`` at any
batch size.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ...config import ConfigModel
from ...stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class ExportTvmStage(Stage):
    """Compile the torch model with TVM (Relax) for a target, tune it, check it against torch on real images."""

    name = "export_tvm"
    description = ("torch → TVM library (.so) for a CPU/GPU target, MetaSchedule-tuned (cached), parity vs torch; an "
                   "ONNX cascade: every graph → a library with a symbolic batch, parity vs the source cascade")
    consumes = ("torch", "cascade")
    produces = ("tvm", "cascade")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    cannot_take: ClassVar[dict[str, str]] = {
        "cascade:openvino": "TVM compiles a cascade from its ONNX graphs, and OpenVINO IR cannot be turned back into "
                            "ONNX; keep an ONNX cascade in the run (early_exit format: onnx; quantize with backend "
                            "onnxruntime)",
        "cascade:ort": "TVM compiles a cascade from its ONNX graphs, not ORT-format ones; put export_tvm before "
                       "export_ort_mobile",
        "onnx": "the TVM exporter compiles the torch model; an ONNX file (an INT8 one from quantize) is not its input",
        "openvino": "the TVM exporter compiles the torch model, not an OpenVINO IR",
    }

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        return ("torch", "cascade:onnx")

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        return ("cascade:tvm",) if kind.startswith("cascade") else ("tvm",)

    class Config(ConfigModel):
        target: str | dict[str, Any] = Field("llvm", description="llvm (this CPU), cuda, or a TVM target dict such "
                                                                 "as {kind: llvm, mcpu: x86-64-v3}")
        mcpu: str | None = Field(None, description="override the llvm target's CPU (e.g. x86-64-v3)")
        trials: int = Field(256, ge=0, description="MetaSchedule trials (0 = untuned: slow)")
        batch: int = Field(1, ge=1, description="static batch size of the library")
        work_dir: str | None = Field(None, description="tuning cache root (default $EDGEVIT_TVM_CACHE or "
                                                       "~/.cache/edgevit/tvm)")
        retune: bool = Field(False, description="ignore a cached tuning database")
        tuning_timeout_s: float = Field(60.0, gt=0, description="seconds to build or run one tuning candidate")
        tolerance: float | None = Field(None, ge=0, description="max abs logit difference allowed")
        parity_samples: int = Field(64, ge=1, description="real images for the parity check")

        @model_validator(mode="after")
        def _check(self):
            if isinstance(self.target, dict) and "kind" not in self.target:
                raise ValueError("target: a target dict needs 'kind' (e.g. {kind: llvm, mcpu: x86-64-v3})")
            return self

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ...data import preprocess
        from .export import export_tvm

        src = ctx.consumed(self, config)
        images = ctx.dataset(limit=config.parity_samples).images
        if src.kind == "cascade":
            return self._cascade(ctx, config, src, images)
        result = export_tvm(src, ctx.out_dir, target=config.target, mcpu=config.mcpu,
                            trials=config.trials, batch=config.batch, work_dir=config.work_dir, retune=config.retune,
                            tuning_timeout_s=config.tuning_timeout_s, parity_images=preprocess(images, src.spec),
                            tolerance=config.tolerance)
        return StageOutput.from_export(result)

    def _cascade(self, ctx: StageContext, config: Config, src, images) -> StageOutput:
        from .cascade import export_tvm_cascade

        if config.batch != 1:
            log.warning("export_tvm: batch %d does not apply to a cascade: its libraries take any batch (symbolic)",
                        config.batch)
        result = export_tvm_cascade(src.path, ctx.out_dir / "cascade", target=config.target, mcpu=config.mcpu,
                                    trials=config.trials, parity_images=images)
        result.artifact.source = src.source
        rec = result.to_dict()
        metrics = {k: rec[k] for k in ("format", "backend", "path", "max_abs_diff", "cosine", "top1_agreement", "n",
                                       "exit_agreement", "int8", "int8_execution", "target_description",
                                       "compile_time_s", "tuning")}
        metrics.update({"graphs": rec["graphs"], "file_size": sum(g["file_size"] for g in rec["graphs"].values()),
                        "exits_share": rec["parity_vs_source"]["exits_share"],
                        **({"warning": rec["warning"]} if rec.get("warning") else {})})
        return StageOutput(result.artifact, metrics, parity=result.parity)
