"""Config of early-exit training (torch-free: the recipe stage and the CLI build it without importing torch).

:class:`TrainConfig` is declared once: the library argument of :func:`~edgevit.methods.early_exit.train_run`, the
training keys of the ``early_exit`` recipe stage, the ``edgevit early-exit train`` flags and the JSON schema.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ...config import ConfigModel


class TrainConfig(ConfigModel):
    """LGViT two-stage training. Epochs may be fractional; ``steps*`` cap a stage at that many optimiser steps.

    Bad values raise :class:`~edgevit.errors.ConfigError` naming the key (``train.alpha: must be ≤ 1, got 1.5``).
    """

    config_path: ClassVar[str] = "train"

    stage1_epochs: float = Field(2.0, ge=0, description="stage 1 (end-to-end, alternating) epochs")
    stage2_epochs: float = Field(5.0, ge=0, description="stage 2 (self-distillation, frozen backbone) epochs")
    stage1_steps: int | None = Field(None, ge=0, description="cap on stage-1 optimiser steps")
    stage2_steps: int | None = Field(None, ge=0, description="cap on stage-2 optimiser steps")
    batch_size: int = Field(256, ge=1, description="training batch size")
    lr_backbone: float = Field(5e-5, ge=0, description="stage-1 learning rate of the backbone")
    lr_heads: float = Field(1e-3, ge=0, description="learning rate of the exit heads (both stages)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    alpha: float = Field(0.3, ge=0, le=1, description="stage-2 weight of the KD term")
    temperature: float = Field(2.0, gt=0, description="stage-2 KD temperature T")
    beta_hete: float = Field(0.01, ge=0, description="stage-2 weight of the heterogeneous feature loss")
    beta_homo: float = Field(0.01, ge=0, description="stage-2 weight of the homogeneous feature loss")
    seed: int = Field(0, description="seed of the head initialisation and the sampler")
    log_every: int = Field(50, ge=1, description="log every N optimiser steps")
