"""Configs of ShiftAddViT conversion and fine-tuning (torch-free: the recipe stage and the CLI build them without
importing torch). Each is declared once: library keyword arguments, recipe keys, CLI flags and JSON schema."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ...config import ConfigModel


class ConvertConfig(ConfigModel):
    """What :func:`~edgevit.methods.shiftadd.convert` replaces in a timm ViT.

    Bad values raise :class:`~edgevit.errors.ConfigError` naming the key (``shiftadd.bits: must be ≥ 1, got 0``)."""

    config_path: ClassVar[str] = "shiftadd"

    attention: Literal["matadd", "softmax"] = Field(
        "matadd", description="matadd: MatAdd attention (shared Q/K, KSH binary codes, linear angular attention); "
                              "softmax: keep every block's attention")
    mlp: Literal["shift", "moe", "dense"] = Field(
        "shift", description="shift: MLP linears as power-of-two shift linears; moe: mixture of [dense, shift] MLP "
                             "experts with a trained noisy top-1 gate; dense: keep")
    softmax_blocks: list[int] = Field(
        default_factory=list, description="block indices that keep softmax attention (negative counts from the end, "
                                          "-1 = last block)")
    bits: int = Field(16, ge=1, le=64, description="KSH hash length r")
    anchors: int = Field(25, ge=2, description="KSH RBF anchor tokens m")
    calib_samples: int = Field(64, ge=1, description="real training images used to fit the KSH hash")
    alpha: list[float] | None = Field(
        None, description="MoE latency weights [dense, shift]; null: measure both experts' latency on this machine "
                          "(torch, the model's shapes) and use their ratio")
    seed: int = Field(0, description="seed of the hash fitting (anchor choice, token sample)")


class FinetuneConfig(ConfigModel):
    """ShiftAddViT fine-tuning: stage ``attention`` (after MatAdd conversion) or ``moe`` (mixture of experts, lower
    lr). Loss ``(1 − kd_weight)·CE + kd_weight·T²·KL(teacher_T ‖ student_T)`` (+ ``balance_weight``·L_bal with MoE)
    with AdamW and a warm-up + cosine schedule; the teacher is the dense model the run was converted from."""

    config_path: ClassVar[str] = "finetune"

    stage: Literal["attention", "moe"] = Field("attention", description="recipe step: attention (lr) or moe (lr×0.2)")
    epochs: float = Field(1.0, ge=0, description="epochs over the training images (fractional allowed)")
    steps: int | None = Field(None, ge=0, description="cap on optimiser steps (quick runs)")
    batch_size: int = Field(128, ge=1, description="training batch size")
    lr: float | None = Field(
        None, ge=0, description="AdamW learning rate (the moe stage uses 0.2× this); null: 2e-4 for a model with "
                                "MatAdd attention (the attention operator is relearnt), 2e-5 when only the linears "
                                "are shifts (they start at the teacher's accuracy; large steps flip exponents)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    balance_weight: float = Field(0.01, ge=0, description="weight of the MoE latency-aware balance loss")
    kd_weight: float = Field(0.5, ge=0, le=1, description="weight of the distillation term (KL to the dense "
                                                          "teacher's soft targets); 0: cross-entropy only")
    kd_temperature: float = Field(2.0, gt=0, description="softmax temperature T of the distillation term")
    teacher: str | None = Field(None, description="model to distil from (name or checkpoint); null: the dense model "
                                                  "the run was converted from (convert.json 'source')")
    checkpoint_every: int | None = Field(None, ge=1, description="save the training state (model, optimiser, "
                                                                 "schedule, position) every N steps; null: each epoch")
    resume: bool = Field(False, description="continue an interrupted finetune from its saved training state")
    limit: int | None = Field(None, ge=1, description="train on the first N training images")
    seed: int = Field(0, description="seed of the sampler")
    log_every: int = Field(50, ge=1, description="log every N optimiser steps")
