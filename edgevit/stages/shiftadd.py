"""Stage ``shiftadd``: ShiftAddViT on the run's torch model — convert, finetune (attention, then MoE), save.

Recipe entry (every key optional; every key of :class:`~edgevit.methods.shiftadd.config.ConvertConfig` too:
``attention``, ``mlp``, ``softmax_blocks``, ``bits``, ``anchors``, ``calib_samples``, ``alpha``, ``seed``)::

    - stage: shiftadd
      attention: matadd          # matadd | softmax
      mlp: shift                 # shift | moe | dense
      attention_epochs: 1.0      # recipe step 1: finetune after the attention swap
      moe_epochs: 1.0            # recipe step 2 (mlp: moe): finetune with the balance loss at 0.2× lr
      steps: null                # cap each finetune at N optimiser steps
      lr: null                   # null: 2e-4 with MatAdd attention, 2e-5 for shift linears only
      kd_weight: 0.5             # distillation from the stage's input model (soft targets, T = kd_temperature)
      train_limit: null          # finetune on the first N training images

It consumes a torch model and produces one (``model.safetensors``, deploy form), so it slots after ``distill`` /
before ``export_*`` and ``quantize``; the artefact loads back through :func:`edgevit.models.create`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..methods.shiftadd.config import ConvertConfig
from ..stage import Stage, StageContext, StageOutput, register_stage


@register_stage
class ShiftAddStage(Stage):
    """Convert the current torch model to ShiftAddViT form and finetune it."""

    name = "shiftadd"
    description = "ShiftAddViT: MatAdd attention + power-of-two shift MLPs (or a [dense, shift] MoE); convert, finetune"
    consumes = ("torch",)
    produces = ("torch",)
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    new_model = True  # a converted model: files exported from the model before it are never handed on

    class Config(ConvertConfig):
        """Every :class:`~edgevit.methods.shiftadd.config.ConvertConfig` key plus the finetuning keys."""

        config_path: ClassVar[str] = "shiftadd"

        attention_epochs: float = Field(1.0, ge=0, description="finetune epochs after the attention swap (0: skip)")
        moe_epochs: float = Field(1.0, ge=0, description="finetune epochs of the MoE step (mlp: moe; 0: skip)")
        steps: int | None = Field(None, ge=0, description="cap each finetune at N optimiser steps")
        batch_size: int = Field(128, ge=1, description="finetune batch size")
        lr: float | None = Field(None, ge=0, description="AdamW learning rate (the MoE step uses 0.2× this); null: "
                                                         "2e-4 with MatAdd attention, 2e-5 for shift linears only")
        kd_weight: float = Field(0.5, ge=0, le=1, description="weight of distillation from the stage's input model "
                                                              "(soft targets); 0: cross-entropy only")
        kd_temperature: float = Field(2.0, gt=0, description="distillation softmax temperature")
        balance_weight: float = Field(0.01, ge=0, description="weight of the MoE latency-aware balance loss")
        train_limit: int | None = Field(None, ge=1, description="finetune on the first N training images")
        eval_limit: int | None = Field(1000, ge=1, description="test images for the before/after top-1")
        gate_duration_s: float = Field(0.5, gt=0, description="timed seconds per model and pass of the speed gate")

        def convert_config(self) -> ConvertConfig:
            return ConvertConfig(**{n: getattr(self, n) for n in ConvertConfig.model_fields})

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ..artifact import Artifact
        from ..methods.shiftadd.config import FinetuneConfig
        from ..methods.shiftadd.run import CHECKPOINT, convert_run, finetune_run
        from ..models import create

        src = ctx.latest("torch") or ctx.source_artifact()
        dense = src.load_model()
        d = ctx.recipe.data
        conv = convert_run(dense, ctx.out_dir, config=config.convert_config(), data=d.name, data_dir=d.data_dir,
                           eval_limit=config.eval_limit)
        metrics: dict = {"top1_dense": conv["top1_dense"], "top1_converted": conv["top1_converted"],
                         "linear_mult_removed_share": conv["energy"]["linear_mult_removed_share"],
                         "energy_uj": conv["energy"]["shiftadd"]["energy_uj"],
                         "dense_energy_uj": conv["energy"]["dense"]["energy_uj"], "finetune": []}
        steps = [("attention", config.attention_epochs)] + ([("moe", config.moe_epochs)] if config.mlp == "moe" else [])
        for stage, epochs in steps:
            if epochs <= 0 or config.steps == 0:
                continue
            ft = FinetuneConfig(stage=stage, epochs=epochs, steps=config.steps, batch_size=config.batch_size,
                                lr=config.lr, balance_weight=config.balance_weight, limit=config.train_limit,
                                seed=config.seed, kd_weight=config.kd_weight, kd_temperature=config.kd_temperature)
            rec = finetune_run(ctx.out_dir, config=ft, data=d.name, data_dir=d.data_dir, eval_limit=config.eval_limit,
                               teacher=dense)
            metrics["finetune"].append({k: rec[k] for k in ("top1_before", "top1_after", "steps", "seconds")})
        path = ctx.out_dir / CHECKPOINT
        model = create(str(path))
        metrics["top1"] = metrics["finetune"][-1]["top1_after"] if metrics["finetune"] else conv["top1_converted"]
        metrics["speed_gate"] = _speed_gate(dense, model, config.gate_duration_s)
        art = Artifact(kind="torch", spec=model.edgevit_spec, path=path, model=model, source=model.edgevit_name,
                       meta={"shiftadd": model.edgevit_shiftadd})
        return StageOutput(art, metrics)


def _speed_gate(dense, converted, duration_s: float) -> dict:
    """Batch-1 latency of the dense and the converted torch model, interleaved (3 passes). The converted model is
    kept for deployment only when it is faster; otherwise it is an accuracy/energy artefact (on CPU runtimes its
    shift layers run as float GEMMs with power-of-two weights; the integer kernels need `edgevit export tvm
    --kernels shiftadd`, and x86 INT8 GEMM is expected to be faster still: benchmarks/shiftadd_fmnist.py)."""
    import torch

    from ..profiling.latency import time_interleaved

    x = dense.edgevit_spec.example(1)

    def call(m):
        def run(a):
            with torch.inference_mode():
                return m(torch.from_numpy(a))
        return run

    t = time_interleaved({"dense": call(dense), "shiftadd": call(converted)}, x, passes=3, duration_s=duration_s,
                         warmup_s=0.1)
    d, s = t["dense"]["median_ms"], t["shiftadd"]["median_ms"]
    kept = s < d
    return {"runtime": "torch fp32, batch 1", "dense_ms": d, "shiftadd_ms": s, "kept_for_deployment": kept,
            "verdict": "faster than the dense model: kept for deployment" if kept else
                       "not faster than the dense model here: kept as an accuracy/energy artefact only"}

