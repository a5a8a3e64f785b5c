"""Configs of TinyViT-style distillation, declared once (importable without torch or numpy).

- :class:`TrainConfig` — student training (the library argument of
  :func:`~edgevit.methods.distill.trainer.train_student` and :func:`edgevit.distill`);
- :class:`AugmentConfig` — the replayable training transforms (part of a cache's fingerprint);
- :class:`AugmentKeys` — the augmentation keys themselves (fields, bounds, cross-checks), shared by
  :class:`AugmentConfig` and the ``distill`` recipe stage, whose config is built from both (every key of
  :class:`TrainConfig` and :class:`AugmentConfig` is a key of the stage).

Bad values raise :class:`~edgevit.errors.ConfigError` naming the key path and the bound or the allowed values
(``train.label_smoothing: must be < 1, got 1.0``; ``augment.randaug_ops.0: 'color' is not allowed; allowed
values: ...``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ...config import ConfigModel, from_dict

__all__ = ["AUGMENT_VERSION", "MODES", "RANDAUG_OPS", "AugmentConfig", "AugmentKeys", "TrainConfig"]

MODES = ("cache", "online", "labels")

AUGMENT_VERSION = 1  # bump when any op's arithmetic changes: it is part of the cache fingerprint

RANDAUG_OPS = ("auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add", "contrast",
               "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")

RandAugOp = Literal["auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add",
                    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y"]


class TrainConfig(ConfigModel):
    """Hyper-parameters of student training (AdamW, linear warm-up then cosine, grad clipping)."""

    config_path: ClassVar[str] = "train"

    mode: Literal["cache", "online", "labels"] = Field(
        "cache", description="cache: train from the stored sparse teacher; online: run the teacher each step; "
                             "labels: plain labels (no teacher)")
    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(128, ge=1, description="training batch size (per process)")
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    min_lr: float = Field(1e-5, ge=0, description="learning rate at the end of the cosine schedule")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up epochs")
    clip_grad: float = Field(5.0, ge=0, description="gradient-norm clipping (0 = off)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing (labels mode only)")
    topk: int | None = Field(None, ge=1, description="K of the teacher's top-K (default 10, at most classes − 1); "
                                                     "a cache's K wins in cache mode")
    seed: int = Field(0, description="sampler order and (without a cache) augmentation seeds")
    eval_limit: int | None = Field(None, ge=1, description="test images evaluated after each epoch")
    eval_batch_size: int = Field(500, ge=1, description="batch size of the per-epoch evaluation")
    stop_after: int | None = Field(None, ge=1, description="stop after this many epochs (resume later)")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap steps per epoch (smoke runs)")
    replay_cache: bool = Field(False, description="train for more epochs than the cache stores by replaying its "
                                                  "epochs in order (epoch e reads stored epoch e mod E); TinyViT "
                                                  "stores every epoch, replay trades augmentation variety for "
                                                  "teacher time")


class AugmentKeys(ConfigModel):
    """The keys of the distillation transforms (defaults: timm rand-m9-mstd0.5-inc1 + random erasing 0.25).

    :class:`AugmentConfig` is the frozen value the trainer and the cache use; the ``distill`` recipe stage
    inherits these keys.
    """

    config_path: ClassVar[str] = "augment"

    crop_padding: int = Field(2, ge=0, description="random crop after zero padding by this many pixels")
    hflip_prob: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    randaug_n: int = Field(2, ge=0, description="RandAugment ops per image (0 = off)")
    randaug_m: float = Field(9.0, ge=0, le=10, description="RandAugment magnitude, 0..10")
    randaug_mstd: float = Field(0.5, ge=0, description="std of the per-op magnitude noise")
    randaug_prob: float = Field(0.5, ge=0, le=1, description="probability that each chosen op is applied")
    randaug_ops: tuple[RandAugOp, ...] = Field(RANDAUG_OPS, description="RandAugment op set")
    erase_prob: float = Field(0.25, ge=0, le=1, description="random erasing probability")
    erase_area: tuple[float, float] = Field((0.02, 1 / 3), description="random erasing area fraction [min, max]")
    erase_aspect: tuple[float, float] = Field((0.3, 3.3), description="random erasing aspect ratio [min, max]")
    mixup_alpha: float = Field(0.0, ge=0, description="mixup beta parameter (0 = off)")
    cutmix_alpha: float = Field(0.0, ge=0, description="cutmix beta parameter (0 = off)")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability of mixing a sample (with mixup or cutmix on)")
    switch_prob: float = Field(0.5, ge=0, le=1, description="with both on: probability of cutmix")

    @field_validator("randaug_ops", "erase_area", "erase_aspect", mode="before")
    @classmethod
    def _list_to_tuple(cls, v: Any) -> Any:
        # YAML/JSON give lists (the base class turns tuples into lists too); the values stay tuples
        return tuple(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _check_augment(self):
        if self.randaug_n > 0 and not self.randaug_ops:
            raise ValueError("randaug_ops: empty list with randaug_n > 0; allowed: " + ", ".join(RANDAUG_OPS))
        lo, hi = self.erase_area
        if not 0 < lo <= hi < 1:
            raise ValueError(f"erase_area: expected 0 < min ≤ max < 1, got {list(self.erase_area)}")
        lo, hi = self.erase_aspect
        if not 0 < lo <= hi:
            raise ValueError(f"erase_aspect: expected 0 < min ≤ max, got {list(self.erase_aspect)}")
        return self

    def augment_config(self) -> AugmentConfig:
        """The frozen :class:`AugmentConfig` of these keys."""
        return AugmentConfig(**{name: getattr(self, name) for name in AugmentKeys.model_fields})


class AugmentConfig(AugmentKeys):
    """Training transforms of distillation: frozen (hashable), compared with a cache's to replay its images.

    :meth:`to_dict` is the fingerprint form (lists, plus ``version`` = :data:`AUGMENT_VERSION`);
    :meth:`from_dict` reads it back.
    """

    model_config = ConfigDict(frozen=True)

    @property
    def mixing(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["version"] = AUGMENT_VERSION
        return d

    def validate(self, path: str | None = None) -> None:  # type: ignore[override]
        d = self.to_dict()
        d.pop("version")
        from_dict(type(self), d, path if path is not None else type(self).config_path)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """Inverse of :meth:`to_dict` (``version`` is ignored: the fingerprint comparison checks it)."""
        d = {k: v for k, v in dict(d).items() if k != "version"}
        return from_dict(cls, d, cls.config_path)
