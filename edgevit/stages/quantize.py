"""Stage ``quantize``: INT8 post-training quantisation with ViT guardrails, an accuracy gate and a speed gate.

Recipe entry (every key of :class:`edgevit.methods.quantize.QuantizeConfig`; the calibration and evaluation data default to
the recipe's ``data`` section: its ``name``, ``calib_split`` and ``eval_split``, and ``limit`` for evaluation)::

    - stage: quantize
      backend: openvino        # openvino | onnxruntime | nncf-onnx
      budget: 1.0              # max top-1 drop in points
      calib_samples: 300
      smooth_quant: auto       # auto (try on and off) | on | off
      guard_softmax: true      # ... guard_layernorm, guard_gelu, guard_residual_add, float_patch_embed, float_head

The stage quantises the latest ONNX artefact (onnxruntime, nncf-onnx) or OpenVINO IR (openvino) of the run when
there is one, else exports the torch model itself. The next stages see the selected artefact (the INT8 file,
unless the speed gate kept a faster float variant); ``quantize.json`` is in the stage folder.
"""

from __future__ import annotations

import logging

from pydantic import Field

from ..methods.quantize.config import QuantizeConfig
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class QuantizeStage(Stage):
    """INT8 post-training quantisation gated on top-1 (through the runtime) and measured latency."""

    name = "quantize"
    description = "INT8 PTQ (NNCF / ONNX Runtime) with ViT guardrails, accuracy-gated attempt ladder, speed gate"
    # int8 onnx or openvino, or the float model the speed gate kept; from the torch model or its float export
    consumes = ("torch", "onnx", "openvino")
    produces = ("onnx", "openvino")

    class Config(QuantizeConfig):
        """:class:`QuantizeConfig` whose data keys default to the recipe's ``data`` section."""

        calib: str | None = Field(None, description="calibration data (default: the recipe's data.name)")
        calib_split: str | None = Field(None, description="default: the recipe's data.calib_split")
        eval_data: str | None = Field(None, description="default: the recipe's data.name")
        eval_split: str | None = Field(None, description="default: the recipe's data.eval_split")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ..methods.quantize.config import BACKEND_INFO
        from ..methods.quantize.core import quantize

        d = ctx.recipe.data
        values = {name: getattr(config, name) for name in QuantizeConfig.model_fields}
        values["calib"] = config.calib or d.name
        values["calib_split"] = config.calib_split or d.calib_split
        values["eval_data"] = config.eval_data or d.name
        values["eval_split"] = config.eval_split or d.eval_split
        if values["eval_limit"] is None:
            values["eval_limit"] = d.limit
        qc = QuantizeConfig(**values)
        want = BACKEND_INFO[qc.backend][2]
        src = ctx.latest(want)
        if src is None:
            src = ctx.latest("torch") or ctx.source_artifact()
        res = quantize(src, out_dir=ctx.out_dir, config=qc, data_dir=d.data_dir)
        r = res.record
        metrics = {
            "backend": qc.backend, "budget": qc.budget, "top1_fp32": r["fp32"]["top1"], "top1_int8": r["int8"]["top1"],
            "drop_pt": r["int8"]["drop_pt"], "n_eval": r["int8"]["n"], "n": r["parity"]["n"], "attempts": len(r["attempts"]),
            "selected": r["speed_gate"]["selected"], "speed_gate": r["speed_gate"]["why"],
            "file_size_fp32": r["fp32"]["file_size"], "file_size": r["int8"]["file_size"],
            "latency_ms": r["latency_ms"], "latency": r["latency"], "accuracy": r["accuracy"],
            "max_abs_diff": r["parity"]["max_abs_diff"], "cosine": r["parity"]["cosine"],
            "top1_agreement": r["parity"]["top1_agreement"], "record": str(ctx.out_dir / "quantize.json"),
        }
        from ..results import ParityRecord

        return StageOutput(res.artifact, metrics, parity=ParityRecord.from_dict(r["parity"]))
