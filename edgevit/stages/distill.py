"""Stage ``distill``: write (or reuse) the sparse teacher cache, then train the recipe's model from it.

Recipe entry::

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
from dataclasses import dataclass, field

from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class DistillStage(Stage):
    """TinyViT-style distillation of the current torch model from a stored sparse teacher."""

    name = "distill"
    description = "write/reuse a sparse top-K teacher cache, then train the model from it (TinyViT)"
    consumes = ("torch",)
    produces = ("torch",)

    @dataclass
    class Config:
        teacher: str = field(default="fmnist-vit", metadata={"help": "teacher: edgevit/timm name or checkpoint"})
        teacher_checkpoint: str | None = None
        mode: str = field(default="cache", metadata={"help": "cache | online | labels"})
        epochs: int = 10
        topk: int | None = field(default=None, metadata={"help": "K (default 10, at most classes − 1)"})
        seed: int = 0
        cache_dir: str | None = field(default=None, metadata={"help": "cache directory (default "
                                                                       "<run>/distill_cache); reused if it matches"})
        limit: int | None = field(default=None, metadata={"help": "training samples (default data.limit)"})
        split: str = "train"
        batch_size: int = 128
        cache_batch_size: int = 256
        lr: float = 1e-3
        weight_decay: float = 0.05
        warmup_epochs: float = 1.0
        eval_limit: int | None = field(default=None, metadata={"help": "test images evaluated after each epoch"})
        randaug_n: int = 2
        randaug_m: float = 9.0
        erase_prob: float = 0.25
        mixup_alpha: float = 0.0
        cutmix_alpha: float = 0.0

        def validate(self, path: str) -> None:
            from ..errors import ConfigError

            if self.mode not in ("cache", "online", "labels"):
                raise ConfigError(f"{path}.mode: must be cache, online or labels, got {self.mode!r}")
            for key in ("epochs", "topk", "batch_size", "cache_batch_size"):
                if getattr(self, key) is not None and getattr(self, key) < 1:
                    raise ConfigError(f"{path}.{key}: must be ≥ 1, got {getattr(self, key)}")
            if self.limit is not None and self.limit < 1:
                raise ConfigError(f"{path}.limit: must be a positive number of samples, got {self.limit}")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from pathlib import Path

        from ..artifact import Artifact
        from ..methods.distill.augment import AugmentConfig
        from ..methods.distill.cache import TeacherCache, write_cache
        from ..methods.distill.trainer import TrainConfig, train_student
        from ..models import count_params, create

        src = ctx.latest("torch") or ctx.source_artifact()
        student = src.load_model()
        augment = AugmentConfig(randaug_n=config.randaug_n, randaug_m=config.randaug_m, erase_prob=config.erase_prob,
                                mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha)
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
        tcfg = TrainConfig(mode=config.mode, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                           weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs, topk=config.topk,
                           seed=config.seed, eval_limit=config.eval_limit)
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
