"""Stage ``distill``: write (or reuse) the sparse teacher cache, then train the recipe's model from it.

Recipe entry (every key optional; every key of :class:`~edgevit.methods.distill.config.TrainConfig` —
``min_lr``, ``clip_grad``, ``label_smoothing``, ``max_steps_per_epoch``, ... — and of
:class:`~edgevit.methods.distill.config.AugmentConfig` — ``randaug_ops``, ``erase_area``, ``mix_prob``, ... — too)::

    model: {name: fmnist-vit}            # the run's model: the teacher when `student` is set
    stages:
      - stage: distill
        student: fmnist-vit-micro        # the student (any edgevit or timm model; packaged weights are its start)
        student_pretrained: true         # start from the student's packaged weights when it has any
        teacher: null                    # default: the run's current torch model (or set a name/checkpoint)
        epochs: 10
        topk: 10
        cache_dir: null                  # default <run dir>/distill_cache; a shared path reuses caches across runs
        limit: null                      # training samples (default: the recipe's data.limit)

A dual image–text encoder (the run's model a ``dual`` artefact: :mod:`edgevit.stages.vlm`) trains with ``method``
``contrastive`` (CLIP loss; without ``student`` the run's model itself, LiT-style), ``dcd`` or ``affinity`` (a
dual-encoder ``student`` such as ``clip-fmnist-tiny`` from the run's model as teacher, through the dense
teacher-embedding cache with ``mode: cache``) on the caption dataset ``captions``::

      - stage: distill
        method: dcd
        student: clip-fmnist-tiny
        captions: fashion-mnist-pairs
        epochs: 1

Without ``student`` the run's current torch model is the student and ``teacher`` must be given (the older form:
``model: {name: fmnist-vit-tiny}`` with ``teacher: fmnist-vit``). The cache is reused only when its fingerprint (teacher weights sha256, dataset content, transforms, K, seed)
matches and it stores enough epochs; otherwise it is (re)written. The next stages get the trained student as a
torch artefact (``student.safetensors`` with its architecture name and input spec). A run killed mid-training
continues with ``edgevit compress --resume`` from the last finished epoch (``checkpoint.pt`` in the stage folder),
with the same final weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
from typing import ClassVar, Literal

from pydantic import Field

from ..methods.distill.config import AugmentKeys, TrainConfig
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class DistillStage(Stage):
    """TinyViT-style distillation of the current torch model from a stored sparse teacher."""

    name = "distill"
    description = "write/reuse a sparse top-K teacher cache, then train the model from it (TinyViT)"
    consumes = ("torch", "dual")
    produces = ("torch", "dual")
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    libraries = ("torch", "timm", "numpy")
    resumable = True  # a killed run continues from the last epoch's checkpoint.pt in the stage folder
    new_model = True
    cannot_take: ClassVar[dict[str, str]] = {
        "onnx": "distillation trains a torch model; an exported file is not trainable",
        "openvino": "distillation trains a torch model; an exported file is not trainable",
    }

    @classmethod
    def reads(cls, config) -> tuple[str, ...]:
        return ("dual",) if config.method != "tinyvit" else ("torch",)

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        return ("dual",) if config.method != "tinyvit" else ("torch",)

    class Config(AugmentKeys, TrainConfig):
        """Every key of :class:`~edgevit.methods.distill.config.TrainConfig` and of
        :class:`~edgevit.methods.distill.config.AugmentConfig`, plus the teacher, the cache and the training data."""

        config_path: ClassVar[str] = "distill"

        method: Literal["tinyvit", "contrastive", "dcd", "affinity"] = Field(
            "tinyvit", description="tinyvit: a classifier from the sparse top-K teacher cache; contrastive / dcd / "
                                   "affinity: a dual image–text encoder (the run's model a dual encoder) with the "
                                   "CLIP loss, DCD, or TinyCLIP affinity mimicking")
        captions: str = Field("fashion-mnist-pairs", description="dual encoders: the caption dataset "
                                                                 "(fashion-mnist-pairs, fashion-mnist-captions, "
                                                                 "coco:FILE, karpathy:FILE)")
        max_seconds: float | None = Field(None, gt=0, description="dual encoders: stop training after this long")
        student: str | None = Field(None, description="student architecture: edgevit/timm name or checkpoint, or a "
                                                      "dual encoder (default: the run's current model is the "
                                                      "student)")
        student_pretrained: bool = Field(True, description="start the student from its packaged weights when it "
                                                           "has any (false: random init, a from-scratch distillation)")
        student_checkpoint: str | None = Field(None, description="start the student from these weights")
        teacher: str | None = Field(None, description="teacher: edgevit/timm name or checkpoint (default with "
                                                      "`student`: the run's current torch model)")
        teacher_checkpoint: str | None = Field(None, description="weights for the teacher")
        cache_dir: str | None = Field(None, description="cache directory (default <run>/distill_cache); reused if it "
                                                        "matches")
        limit: int | None = Field(None, ge=1, description="training samples (default data.limit)")
        split: str = Field("train", description="training split")
        train_dir: str | None = Field(None, description="train in this folder (per-epoch checkpoint.pt) and continue "
                                                        "from its checkpoint when it holds one with the same settings "
                                                        "(a long distillation started elsewhere, e.g. "
                                                        "benchmarks/train_student.sh); default: the stage folder")
        cache_epochs: int | None = Field(None, ge=1, description="augmented epochs the cache stores (default: "
                                                                 "epochs; fewer needs replay_cache)")
        cache_batch_size: int = Field(256, ge=1, description="teacher batch size while writing the cache")

        def train_config(self) -> TrainConfig:
            """The training keys as the trainer's :class:`~edgevit.methods.distill.config.TrainConfig`."""
            return TrainConfig(**{name: getattr(self, name) for name in TrainConfig.model_fields})

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from pathlib import Path

        from ..artifact import Artifact
        from ..errors import ConfigError
        from ..methods.distill.cache import TeacherCache, write_cache
        from ..methods.distill.trainer import train_student
        from ..models import count_params, create

        src = ctx.consumed(self, config)
        if config.method != "tinyvit":
            from .vlm import distill_dual

            return distill_dual(ctx, config, src)
        if config.student is None and config.teacher is None:
            raise ConfigError("stage 'distill': set `student:` (the run's model is then the teacher) or `teacher:` "
                              "(the run's model is then the student)")
        if config.student is not None:
            student = create(config.student, checkpoint=config.student_checkpoint,
                             packaged=config.student_pretrained)
        else:  # train a copy: the earlier artefact stays what its files hold
            student = copy.deepcopy(src.load_model())
        augment = config.augment_config()
        limit = config.limit if config.limit is not None else ctx.recipe.data.limit
        train = ctx.dataset(config.split, limit=limit)
        test = ctx.dataset()
        if config.teacher is not None:
            teacher = create(config.teacher, checkpoint=config.teacher_checkpoint)
            teacher_name = config.teacher
        else:
            teacher, teacher_name = src.load_model(), src.source or "run model"
        metrics: dict = {"teacher": teacher_name, "student": student.edgevit_name, "mode": config.mode}
        cache = None
        if config.mode == "cache":
            cache_dir = Path(config.cache_dir) if config.cache_dir else ctx.run_dir / "distill_cache"
            crec = write_cache(teacher, train, cache_dir, epochs=config.cache_epochs or config.epochs, topk=config.topk, seed=config.seed,
                               augment=augment, split=config.split, batch_size=config.cache_batch_size,
                               overwrite=True, teacher_name=teacher_name)
            metrics["cache"] = {k: crec[k] for k in ("path", "reused", "epochs_written", "epochs_reused",
                                                     "record_bytes", "values_bytes", "seconds", "teacher_calls")}
            metrics["cache"]["fingerprint_sha256"] = TeacherCache(cache_dir).header["fingerprint_sha256"]
            cache = TeacherCache(cache_dir)
        tcfg = config.train_config()
        train_dir = Path(config.train_dir) if config.train_dir else ctx.out_dir
        # the pipeline keeps the stage folder from a killed run only when the resume key matches: continue its epochs
        rec = train_student(student, out_dir=train_dir, config=tcfg, cache=cache,
                            teacher=teacher if config.mode == "online" else None, dataset=train, test_dataset=test,
                            augment=None if cache is not None else augment,
                            resume=config.train_dir is not None or (train_dir / "checkpoint.pt").exists())
        path = ctx.out_dir / "student.safetensors"
        if config.train_dir:  # the shared folder keeps its checkpoint; the stage folder gets the student
            import shutil

            shutil.copyfile(train_dir / "student.safetensors", path)
            metrics["train_dir"] = str(train_dir)
            metrics["resumed_from_epoch"] = rec["start_epoch"]
        else:
            (ctx.out_dir / "checkpoint.pt").unlink(missing_ok=True)  # the artefact is student.safetensors
        student.eval()  # trained in train mode; the artefact is for inference
        art = Artifact(kind="torch", spec=student.edgevit_spec, path=path, model=student,
                       source=student.edgevit_name, meta={"distilled_from": teacher_name})
        metrics.update({"top1": rec["test_top1"], "n": rec["history"][-1]["test"]["n"] if rec["history"] else 0,
                        "teacher_calls_during_training": rec["teacher_calls"], "epochs": config.epochs,
                        "train_seconds": round(sum(h["epoch_s"] for h in rec["history"]), 3),
                        "params": count_params(student), "history": rec["history"]})
        return StageOutput(art, metrics)
