"""TinyViT-style distillation from a stored sparse teacher (specs/methods.md §1).

- :mod:`.config` — :class:`TrainConfig` and :class:`AugmentConfig`, declared once (library, recipe stage, schema);
- :mod:`.augment` — replayable augmentation (one numpy PCG64 generator per sample and epoch);
- :mod:`.cache` — the cache writer/reader (records of 4K+4 bytes: int32 seed | int16[K] | float16[K]);
- :mod:`.targets` — top-K of the teacher, dense targets with the leftover mass spread, soft-target CE;
- :mod:`.trainer` — student training from the cache, online KD or labels; DDP under torchrun;
- its command line, ``edgevit distill cache|train``, is :mod:`edgevit.cli.distill`.

Importing this package imports neither torch nor timm.
"""

from __future__ import annotations

__all__ = ["AugmentConfig", "TeacherCache", "TrainConfig", "train_student", "write_cache"]


def __getattr__(name: str):
    if name == "AugmentConfig":
        from .augment import AugmentConfig

        return AugmentConfig
    if name in ("TeacherCache", "write_cache"):
        from . import cache

        return getattr(cache, name)
    if name in ("TrainConfig", "train_student"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
