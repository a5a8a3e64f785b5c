"""Stage ``quantize``: INT8 post-training quantisation with ViT guardrails, an accuracy gate and a speed gate.

Recipe entry (every key of :class:`edgevit.methods.quantize.QuantizeConfig`; the calibration and evaluation data default to
the recipe's ``data`` section: its ``name``, ``calib_split`` and ``eval_split``, and ``limit`` for evaluation)::

    - stage: quantize
      backend: openvino        # openvino | onnxruntime | nncf-onnx
      budget: 1.0              # max top-1 drop in points
      calib_samples: 300
      smooth_quant: auto       # auto (try on and off) | on | off
      guard_softmax: true      # ... guard_layernorm, guard_gelu, guard_residual_add, float_patch_embed, float_head

The stage quantises the run's current model: the newest of its artefacts the backend reads — its ONNX file
(onnxruntime, nncf-onnx) or OpenVINO IR (openvino), else the torch model (exported here) — or, after an
``early_exit`` stage, the cascade: every segment and exit head INT8, calibrated on the tokens the FP32 cascade feeds
it from real images, gated on the whole cascade's top-1 and on its expected latency with measured exit rates
(:func:`edgevit.methods.early_exit.quantize.quantize_cascade_gated`; its thresholds are kept, and
``quantize.json`` says why). The next stages see the selected artefact (the INT8 file or cascade, unless the speed
gate kept a faster float variant); ``quantize.json`` is in the stage folder.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from ..methods.quantize.config import QuantizeConfig
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class QuantizeStage(Stage):
    """INT8 post-training quantisation gated on top-1 (through the runtime) and measured latency."""

    name = "quantize"
    description = ("INT8 PTQ (NNCF / ONNX Runtime) with ViT guardrails, accuracy-gated attempt ladder, speed gate; "
                   "on a cascade every segment and head INT8")
    # int8 onnx or openvino, or the float model the speed gate kept; from the torch model or its float export; a
    # cascade stays a cascade (every graph INT8)
    consumes = ("torch", "onnx", "openvino", "cascade")
    produces = ("onnx", "openvino", "cascade")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    new_model = True

    cannot_take: ClassVar[dict[str, str]] = {"cascade:ort": "an ORT-format cascade is a frozen runtime format; put quantize before "
                                  "export_ort_mobile"}

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        """The backend's own kind (ONNX for onnxruntime/nncf-onnx, IR for openvino), the torch model (exported
        here), or a cascade whose graphs the backend reads (openvino: ONNX graphs are converted to IR first); an IR
        is no input for the ONNX backends."""
        from ..methods.quantize.config import BACKEND_INFO

        own = BACKEND_INFO[config.backend][2]
        return ("torch", own, "cascade:onnx") + (("cascade:openvino",) if own == "openvino" else ())

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        from ..methods.quantize.config import BACKEND_INFO

        own = BACKEND_INFO[config.backend][2]
        return (f"cascade:{own}",) if kind.startswith("cascade") else (own,)

    class Config(QuantizeConfig):
        """:class:`QuantizeConfig` whose data keys default to the recipe's ``data`` section."""

        calib: str | None = Field(None, description="calibration data (default: the recipe's data.name)")
        calib_split: str | None = Field(None, description="default: the recipe's data.calib_split")
        eval_data: str | None = Field(None, description="default: the recipe's data.name")
        eval_split: str | None = Field(None, description="default: the recipe's data.eval_split")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
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
        src = ctx.consumed(self, config)
        if src.kind == "cascade":
            return self._cascade(ctx, src, qc)
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

    def _cascade(self, ctx: StageContext, src, qc: QuantizeConfig) -> StageOutput:
        from ..data import load_dataset
        from ..methods.early_exit.quantize import quantize_cascade_gated
        from ..results import ParityRecord

        d = ctx.recipe.data
        eval_ds = load_dataset(qc.eval_data, qc.eval_split, data_dir=d.data_dir, limit=qc.eval_limit)
        res = quantize_cascade_gated(src.path, ctx.out_dir, config=qc, eval_data=eval_ds, data_dir=d.data_dir,
                                     threads=qc.threads)
        r = res.record
        res.artifact.source = src.source
        metrics = {
            "backend": qc.backend, "budget": qc.budget, "top1_fp32": r["fp32"]["top1"], "top1_int8": r["int8"]["top1"],
            "drop_pt": r["int8"]["drop_pt"], "n_eval": r["int8"]["n"], "n": r["parity"]["n"],
            "attempts": len(r["attempts"]), "selected": r["speed_gate"]["selected"], "speed_gate": r["speed_gate"]["why"],
            "file_size_fp32": r["fp32"]["file_size"], "file_size": r["int8"]["file_size"],
            "latency_ms": r["latency_ms"], "latency": r["latency"], "accuracy": r["accuracy"],
            "exit_shares_fp32": r["fp32"]["exit_shares"], "exit_shares_int8": r["int8"]["exit_shares"],
            "expected_ms_fp32": r["fp32"]["expected_ms"], "expected_ms_int8": r["int8"]["expected_ms"],
            "thresholds": r["thresholds"]["policy"], "graphs": len(r["graphs"]),
            "max_abs_diff": r["parity"]["max_abs_diff"], "cosine": r["parity"]["cosine"],
            "top1_agreement": r["parity"]["top1_agreement"], "exit_agreement": r["parity_vs_fp32"]["exit_agreement"],
            "record": str(ctx.out_dir / "quantize.json"),
        }
        return StageOutput(res.artifact, metrics, parity=ParityRecord.from_dict(r["parity"]))
