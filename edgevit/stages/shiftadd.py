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
        gate = metrics["speed_gate"] = speed_gate(dense, model, config.gate_duration_s, ctx.out_dir)
        if not gate["kept_for_deployment"]:  # in the report's "measured and not kept" table, with the energy
            saved = 1 - metrics["energy_uj"] / metrics["dense_energy_uj"]
            metrics["rejected"] = [{"candidate": "shift/add model for deployment", "gate": "speed",
                                    "why": f"{gate['verdict']}; it removes {metrics['linear_mult_removed_share']:.1%} "
                                           f"of the linear-layer multiplications and an estimated {saved:.1%} of "
                                           f"the energy per image ({metrics['energy_uj']:.1f} vs "
                                           f"{metrics['dense_energy_uj']:.1f} µJ, 45 nm op counts)"}]
        art = Artifact(kind="torch", spec=model.edgevit_spec, path=path, model=model, source=model.edgevit_name,
                       meta={"shiftadd": model.edgevit_shiftadd})
        return StageOutput(art, metrics)


def speed_gate(dense, converted, duration_s: float = 0.5, work_dir=None) -> dict:
    """The speed gate (batch 1, one interleaved run of 3 passes): the converted model's forms — torch FP32 and ONNX
    Runtime FP32 (power-of-two weights as MatMul) — against the same dense model's FP32 (torch, ONNX Runtime), bf16
    (torch autocast, where this CPU computes bf16 natively) and INT8 (ONNX Runtime dynamic quantization: int8
    weights, VNNI/AMX MatMulInteger). Shift/add is kept for deployment only when its best form beats the dense
    model's best; otherwise it is an accuracy/energy artefact (x86 INT8 GEMM is expected to win: specs/methods.md
    §5; the integer kernels themselves run through `edgevit export tvm --kernels shiftadd`). ONNX forms need
    onnxruntime; without it (or when an export fails) the gate says which forms it could not time. Returns
    ``{rows: {form: median_ms}, best_dense, best_shiftadd, dense_ms, shiftadd_ms, kept_for_deployment, verdict,
    not_timed}``."""
    import tempfile
    from pathlib import Path

    import torch

    from ..profiling.latency import time_interleaved
    from ..profiling.layers import host_bf16

    x = dense.edgevit_spec.example(1)

    def call(m, bf16: bool = False):
        def run(a):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return m(torch.from_numpy(a))
        return run

    calls = {"dense torch fp32": call(dense), "shiftadd torch fp32": call(converted)}
    not_timed: dict[str, str] = {}
    bf16_ok, why = host_bf16()
    if bf16_ok:
        calls["dense torch bf16"] = call(dense, bf16=True)
    else:
        not_timed["dense torch bf16"] = why
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        try:
            import onnxruntime as ort
            from onnxruntime.quantization import QuantType, quantize_dynamic

            from ..formats.onnx.export import export_onnx

            paths = {"dense": export_onnx(dense, Path(tmp) / "dense.onnx", parity=False).artifact.path,
                     "shiftadd": export_onnx(converted, Path(tmp) / "shiftadd.onnx", parity=False).artifact.path}
            quantize_dynamic(str(paths["dense"]), str(Path(tmp) / "dense_int8.onnx"), weight_type=QuantType.QInt8)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            for key, path in (("dense onnxruntime fp32", paths["dense"]),
                              ("dense onnxruntime int8 (dynamic)", Path(tmp) / "dense_int8.onnx"),
                              ("shiftadd onnxruntime fp32", paths["shiftadd"])):
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                name = sess.get_inputs()[0].name
                calls[key] = lambda a, s=sess, n=name: s.run(None, {n: a})
        except Exception as exc:  # noqa: BLE001 - the gate still decides on what it could time, and says so
            for key in ("dense onnxruntime fp32", "dense onnxruntime int8 (dynamic)", "shiftadd onnxruntime fp32"):
                not_timed[key] = f"{type(exc).__name__}: {exc}"[:300]
        t = time_interleaved(calls, x, passes=3, duration_s=duration_s, warmup_s=0.1)
    rows = {k: round(v["median_ms"], 4) for k, v in t.items()}
    best_dense = min((k for k in rows if k.startswith("dense")), key=rows.get)
    best_sa = min((k for k in rows if k.startswith("shiftadd")), key=rows.get)
    kept = rows[best_sa] < rows[best_dense]
    return {"batch": 1, "rows": rows, "best_dense": best_dense, "best_shiftadd": best_sa,
            "dense_ms": rows[best_dense], "shiftadd_ms": rows[best_sa], "kept_for_deployment": kept,
            "not_timed": not_timed,
            "verdict": (f"{best_sa} ({rows[best_sa]:.3f} ms) beats the best dense form, {best_dense} "
                        f"({rows[best_dense]:.3f} ms): kept for deployment") if kept else
                       (f"not faster: {best_sa} {rows[best_sa]:.3f} ms vs {best_dense} {rows[best_dense]:.3f} ms "
                        f"(the best dense form); kept as an accuracy/energy artefact only")}
