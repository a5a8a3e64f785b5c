"""Config of early-exit training (torch-free: the recipe stage and the CLI build it without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError


@dataclass
class TrainConfig:
    """LGViT two-stage training. Epochs may be fractional; ``steps*`` cap a stage at that many optimiser steps."""

    stage1_epochs: float = field(default=2.0, metadata={"help": "stage 1 (end-to-end, alternating) epochs"})
    stage2_epochs: float = field(default=5.0, metadata={"help": "stage 2 (self-distillation, frozen backbone) epochs"})
    stage1_steps: int | None = field(default=None, metadata={"help": "cap on stage-1 optimiser steps"})
    stage2_steps: int | None = field(default=None, metadata={"help": "cap on stage-2 optimiser steps"})
    batch_size: int = 256
    lr_backbone: float = field(default=5e-5, metadata={"help": "stage-1 learning rate of the backbone"})
    lr_heads: float = field(default=1e-3, metadata={"help": "learning rate of the exit heads (both stages)"})
    weight_decay: float = 0.05
    alpha: float = field(default=0.3, metadata={"help": "stage-2 weight of the KD term"})
    temperature: float = field(default=2.0, metadata={"help": "stage-2 KD temperature T"})
    beta_hete: float = field(default=0.01, metadata={"help": "stage-2 weight of the heterogeneous feature loss"})
    beta_homo: float = field(default=0.01, metadata={"help": "stage-2 weight of the homogeneous feature loss"})
    seed: int = 0
    log_every: int = 50

    def validate(self, path: str = "train") -> None:
        for key in ("stage1_epochs", "stage2_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{path}.{key}: must be >= 0, got {getattr(self, key)}")
        for key in ("stage1_steps", "stage2_steps"):
            v = getattr(self, key)
            if v is not None and v < 0:
                raise ConfigError(f"{path}.{key}: must be >= 0 (or null for no cap), got {v}")
        if self.batch_size <= 0:
            raise ConfigError(f"{path}.batch_size: must be positive, got {self.batch_size}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{path}.alpha: must lie in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"{path}.temperature: must be positive, got {self.temperature}")
        for key in ("lr_backbone", "lr_heads", "weight_decay", "beta_hete", "beta_homo"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{path}.{key}: must be >= 0, got {getattr(self, key)}")
