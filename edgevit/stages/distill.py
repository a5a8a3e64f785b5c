"""Stage ``distill``: write (or reuse) the sparse teacher cache, then train the recipe's model from it.

Recipe entry (every key optional; every key of :class:`~edgevit.methods.distill.config.TrainConfig` —
``min_lr``, ``clip_grad``, ``label_smoothing``, ``max_steps_per_epoch``, ... — and of
:class:`~edgevit.methods.distill.config.AugmentConfig` — ``randaug_ops``, ``erase_area``, ``mix_prob``, ... — too)::

    model: {name: fmnist-vit-tiny}       # the student (any edgevit or timm model; timm needs num_classes)
    stages:
      - stage: distill
        teacher: fmnist-vit
        epochs: 10
        topk: 10
        cache_dir: null                  # default <run dir>/distill_cache; a shared path reuses caches across runs
        limit: null                      # training samples (default: the recipe's data.limit)

The cache is reused only when its fingerprint (teacher weights sha256, dataset content, transforms, K, seed)
matches and it stores enough epochs; otherwise it is (re)written. The next stages get the trained student as a
torch artefact (``student.safetensors`` with its architecture name and input spec).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from ..methods.distill.config import AugmentKeys, TrainConfig
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class DistillStage(Stage):
    """TinyViT-style distillation of the current torch model from a stored sparse teacher."""

    name = "distill"
    description = "write/reuse a sparse top-K teacher cache, then train the model from it (TinyViT)"
    consumes = ("torch",)
    produces = ("torch",)
    new_model = True

    class Config(AugmentKeys, TrainConfig):
        """Every key of :class:`~edgevit.methods.distill.config.TrainConfig` and of
        :class:`~edgevit.methods.distill.config.AugmentConfig`, plus the teacher, the cache and the training data."""

        config_path: ClassVar[str] = "distill"

        teacher: str = Field("fmnist-vit", description="teacher: edgevit/timm name or checkpoint")
        teacher_checkpoint: str | None = Field(None, description="weights for the teacher")
        cache_dir: str | None = Field(None, description="cache directory (default <run>/distill_cache); reused if it "
                                                        "matches")
        limit: int | None = Field(None, ge=1, description="training samples (default data.limit)")
        split: str = Field("train", description="training split")
        cache_batch_size: int = Field(256, ge=1, description="teacher batch size while writing the cache")

        def train_config(self) -> TrainConfig:
            """The training keys as the trainer's :class:`~edgevit.methods.distill.config.TrainConfig`."""
            return TrainConfig(**{name: getattr(self, name) for name in TrainConfig.model_fields})

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from pathlib import Path

        from ..artifact import Artifact
        from ..methods.distill.cache import TeacherCache, write_cache
        from ..methods.distill.trainer import train_student
        from ..models import count_params, create

        src = ctx.consumed(self, config)
        student = src.load_model()
        augment = config.augment_config()
        limit = config.limit if config.limit is not None else ctx.recipe.data.limit
        train = ctx.dataset(config.split, limit=limit)
        test = ctx.dataset()
        teacher = create(config.teacher, checkpoint=config.teacher_checkpoint)
        metrics: dict = {"teacher": config.teacher, "mode": config.mode}
        cache = None
        if config.mode == "cache":
            cache_dir = Path(config.cache_dir) if config.cache_dir else ctx.run_dir / "distill_cache"
            crec = write_cache(teacher, train, cache_dir, epochs=config.epochs, topk=config.topk, seed=config.seed,
                               augment=augment, split=config.split, batch_size=config.cache_batch_size,
                               overwrite=True, teacher_name=config.teacher)
            metrics["cache"] = {k: crec[k] for k in ("path", "reused", "epochs_written", "epochs_reused",
                                                     "record_bytes", "values_bytes", "seconds", "teacher_calls")}
            metrics["cache"]["fingerprint_sha256"] = TeacherCache(cache_dir).header["fingerprint_sha256"]
            cache = TeacherCache(cache_dir)
        tcfg = config.train_config()
        rec = train_student(student, out_dir=ctx.out_dir, config=tcfg, cache=cache,
                            teacher=teacher if config.mode == "online" else None, dataset=train, test_dataset=test,
                            augment=None if cache is not None else augment)
        (ctx.out_dir / "checkpoint.pt").unlink(missing_ok=True)  # the artefact is student.safetensors
        path = ctx.out_dir / "student.safetensors"
        art = Artifact(kind="torch", spec=student.edgevit_spec, path=path, model=student,
                       source=student.edgevit_name, meta={"distilled_from": config.teacher})
        metrics.update({"top1": rec["test_top1"], "n": rec["history"][-1]["test"]["n"] if rec["history"] else 0,
                        "teacher_calls_during_training": rec["teacher_calls"], "epochs": config.epochs,
                        "train_seconds": round(sum(h["epoch_s"] for h in rec["history"]), 3),
                        "params": count_params(student), "history": rec["history"]})
        return StageOutput(art, metrics)
