"""Dual image–text encoders in recipes: the run's model as a ``dual`` artefact, contrastive training and DCD /
affinity distillation of a dual-encoder student (the ``distill`` stage with ``method``), retrieval and zero-shot
evaluation (``eval`` with ``task``), the towers exported (stage ``export_towers``) and timed (``profile``).

A ``dual`` artefact is a dual-encoder folder (``dual_encoder.json`` + one safetensors per tower,
:func:`edgevit.methods.vlm.towers.save_dual_encoder`); its ``spec`` is the image tower's input spec, its task
``embedding``. ``export_towers`` hands it on unchanged; ``profile`` times its torch towers and every tower the
``export_towers`` stages since the model was made wrote (found from their records). Recipe (examples/recipes/vlm.yaml)::

    model: {name: clip-fmnist-teacher}            # a registered dual encoder or a dual-encoder folder → `dual`
    stages:
      - stage: distill                            # no student, method contrastive: train the run's model (LiT)
        method: contrastive
      - stage: distill                            # DCD: a dual-encoder student from the run's model as teacher
        method: dcd
        student: clip-fmnist-tiny
      - stage: eval
        task: retrieval
      - stage: export_towers
        format: onnx
      - stage: profile
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import ConfigModel
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)

KIND = "dual"
VLM_METHODS = ("contrastive", "dcd", "affinity")


def is_dual_ref(name: str | None) -> bool:
    """Whether a recipe's ``model.name`` is a dual encoder: a folder with ``dual_encoder.json`` or a registered
    dual encoder (:data:`edgevit.methods.vlm.towers.DUAL_ENCODERS`)."""
    if not name:
        return False
    from ..methods.vlm.towers import DUAL_ENCODERS, is_dual_encoder_dir

    return is_dual_encoder_dir(name) or (name in DUAL_ENCODERS and not Path(name).exists())


def dual_model(artifact):
    """The live :class:`~edgevit.methods.vlm.towers.DualEncoder` of a ``dual`` artefact (loaded from its folder
    after a resume)."""
    if artifact.model is None:
        from ..methods.vlm.towers import load_dual_encoder

        artifact.model = load_dual_encoder(artifact.path)
    return artifact.model


def dual_artifact(model, folder: Path, *, meta: dict | None = None):
    """Save ``model`` to ``folder`` and return its ``dual`` artefact."""
    from ..artifact import Artifact
    from ..methods.vlm.towers import save_dual_encoder

    save_dual_encoder(model, folder)
    return Artifact(kind=KIND, spec=model.spec, path=folder, model=model.eval(), task="embedding",
                    source=getattr(model, "edgevit_name", str(folder)), meta=dict(meta or {}))


def load_dual(ctx: StageContext, name: str) -> StageOutput:
    """The load step for a dual encoder: build/load it, save a copy in the stage folder."""
    from ..methods.vlm.towers import load_dual_encoder

    model = load_dual_encoder(name)
    art = dual_artifact(model, ctx.out_dir / "dual")
    per_tower = {"image": sum(p.numel() for p in model.image.parameters()),
                 "text": sum(p.numel() for p in model.text.parameters())}
    return StageOutput(art, {"arch": getattr(model, "edgevit_name", name), "task": "embedding",
                             "params": sum(per_tower.values()), "params_by_tower": per_tower,
                             "input_size": list(model.spec.input_size), "embed_dim": model.image.embed_dim})


def captions(ctx: StageContext, name: str, split: str, limit: int | None):
    from ..data.captions import load_caption_dataset

    return load_caption_dataset(name, split, data_dir=ctx.recipe.data.data_dir, limit=limit)


def distill_dual(ctx: StageContext, config, src) -> StageOutput:
    """``distill`` with ``method: contrastive|dcd|affinity`` on a ``dual`` artefact (see the module docstring).

    - ``student`` unset, ``method: contrastive``: the run's model itself is trained with the CLIP loss (a LiT
      teacher: a frozen MiniLM text backbone stays frozen);
    - ``student`` set: a registered dual encoder (e.g. ``clip-fmnist-tiny``) or a dual-encoder folder, trained from
      the teacher — ``teacher`` (a folder / registered name), else the run's model; ``mode: cache`` writes (or
      reuses) the dense teacher-embedding cache in ``cache_dir`` (default ``<run>/distill_cache``) and trains with
      zero teacher calls, ``mode: online`` runs the teacher each step.
    Metrics: the training record (loss history, steps, teacher calls) and R@1/5/10 on ``captions`` test."""
    from ..errors import ConfigError
    from ..methods.vlm.evaluate import evaluate_retrieval
    from ..methods.vlm.towers import DUAL_ENCODERS, build_dual_encoder, load_dual_encoder
    from ..methods.vlm.train import VlmTrainConfig, train_dual

    method = config.method
    if config.student is None and method != "contrastive":
        raise ConfigError(f"stage 'distill' method {method}: set `student:` (a dual encoder such as "
                          f"{', '.join(DUAL_ENCODERS)}); the run's model is the teacher")
    if config.mode == "labels":
        raise ConfigError("stage 'distill': mode 'labels' is for classifiers; a dual encoder trains on captions "
                          "(mode cache or online)")
    limit = config.limit if config.limit is not None else ctx.recipe.data.limit
    train = captions(ctx, config.captions, config.split, limit)
    test = captions(ctx, config.captions, ctx.recipe.data.eval_split,  # a training `limit` is not the test's
                    config.eval_limit or ctx.recipe.data.limit or 1000)
    teacher = None
    if config.student is None:
        student, teacher_name = dual_model(src), None
    else:
        teacher = load_dual_encoder(config.teacher) if config.teacher else dual_model(src)
        teacher_name = config.teacher or src.source
        is_registered = config.student in DUAL_ENCODERS and not Path(config.student).exists()
        student = build_dual_encoder(config.student, image_hw=train.image_hw, packaged=config.student_pretrained) \
            if is_registered else load_dual_encoder(config.student)
    cfg = VlmTrainConfig(method=method, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                         weight_decay=config.weight_decay, max_steps=config.max_steps_per_epoch,
                         max_seconds=config.max_seconds, seed=config.seed)
    cache = None
    metrics: dict = {"method": method, "student": getattr(student, "edgevit_name", config.student),
                     "teacher": teacher_name, "mode": config.mode if teacher is not None else None}
    if teacher is not None and config.mode == "cache":
        from ..methods.vlm.cache import EmbeddingCache, write_embedding_cache

        cache_dir = Path(config.cache_dir) if config.cache_dir else ctx.run_dir / "distill_cache"
        crec = write_embedding_cache(teacher, train, cache_dir, epochs=config.cache_epochs or config.epochs,
                                     seed=config.seed, batch_size=config.cache_batch_size, overwrite=True)
        metrics["cache"] = {k: crec.get(k) for k in ("path", "epochs", "num_samples", "record_bytes", "texts",
                                                      "seconds")}
        cache = EmbeddingCache(cache_dir)
        cache.check(data=train, seed=config.seed)
        teacher = None  # never run during training
    rec = train_dual(student, train, config=cfg, teacher=teacher, cache=cache)
    rec["test"] = evaluate_retrieval(student, test)
    art = dual_artifact(student, ctx.out_dir / "dual", meta={"distilled_from": teacher_name} if teacher_name else {})
    metrics.update({"teacher_calls_during_training": rec["teacher_calls"], "steps": rec["steps"],
                    "train_seconds": round(rec["seconds"], 3), "history": rec["history"],
                    **{k: v for k, v in rec["test"].items()
                       if k.startswith(("i2t", "t2i", "rsum", "n_", "by_content", "hard_negatives"))}})
    return StageOutput(art, metrics)


def eval_dual(ctx: StageContext, config, art) -> dict:
    """``eval`` with ``task: retrieval|zero-shot`` on a dual encoder: the stage's ``dual_encoder`` key, else the
    run's current ``dual`` artefact."""
    from ..errors import ConfigError
    from ..methods.vlm.evaluate import evaluate_retrieval, evaluate_zero_shot
    from ..methods.vlm.towers import load_dual_encoder

    if config.dual_encoder:
        model, name = load_dual_encoder(config.dual_encoder), str(config.dual_encoder)
    elif art.kind == KIND:
        model, name = dual_model(art), str(art.source or art.path)
    else:
        raise ConfigError(f"eval task '{config.task}' needs a dual encoder: the run's model is a classifier; set "
                          f"`dual_encoder: DIR` (a folder written by `edgevit vlm train-teacher` or "
                          f"`edgevit distill train --method dcd`), or make the recipe's model one")
    if config.task == "zero-shot":
        metrics = evaluate_zero_shot(model, ctx.dataset(config.split, limit=config.limit))
    else:
        metrics = evaluate_retrieval(model, captions(ctx, config.captions, config.split or ctx.recipe.data.eval_split,
                                                     config.limit or ctx.recipe.data.limit))
    metrics["dual_encoder"] = name
    return metrics


def profile_dual(ctx: StageContext, config, art) -> dict:
    """``profile`` on a ``dual`` artefact: the torch image and text towers, and every tower an ``export_towers``
    stage wrote since the model was made (:func:`tower_exports`) on its runtime (or on the stage's ``runtimes``
    that run it); one row per tower × runtime × batch, on real caption test images and captions."""
    from ..methods.vlm.deploy import profile_towers, tower_targets

    targets = tower_targets(art.path, runtimes=["torch"])
    for folder in tower_exports(ctx):
        found = tower_targets(folder, runtimes=config.runtimes)
        targets += found
        log.info("profile: towers in %s: %s", folder, ", ".join(t.label for t in found))
    data = captions(ctx, "fashion-mnist-pairs" if ctx.recipe.data.name == "fashion-mnist" else ctx.recipe.data.name,
                    ctx.recipe.data.eval_split, max(max(config.batch), 8))
    rows = profile_towers(targets, images=data.images, texts=list(data.captions), threads=config.threads,
                          batch_sizes=tuple(config.batch), warmup_s=config.warmup_s, duration_s=config.duration_s,
                          min_runs=config.min_runs, until_stable=config.until_stable,
                          max_duration_s=config.max_duration_s)
    for r in rows:  # the report's latency tables name the artefact column: say which tower
        r["artifact"] = f"{r.get('artifact_kind')} {r['tower']} tower"
    from ..profiling.stability import worst

    return {"latency": rows, "predictions": [], "stability": worst([r["stability"]["verdict"] for r in rows])}


def tower_exports(ctx: StageContext) -> list[Path]:
    """The folders the ``export_towers`` stages wrote since the run's current model was made (newest model only),
    in run order, from the finished stages' records."""
    from ..stage import STAGES

    folders: list[Path] = []
    for rec in reversed(ctx.records):
        name = rec.get("stage")
        if name == ExportTowersStage.name and rec.get("status") == "done":
            folders.insert(0, ctx.run_dir / rec["id"] / (rec.get("metrics") or {}).get("folder", "towers"))
        elif name in STAGES and STAGES.get(name).new_model:
            break
    return folders


@register_stage
class ExportTowersStage(Stage):
    """Export the towers of the run's dual encoder (``edgevit export FORMAT --tower T``), each with cosine parity."""

    name = "export_towers"
    description = "a dual encoder's image and/or text tower → ONNX / OpenVINO IR / TVM, each alone, parity by cosine"
    consumes = (KIND,)
    produces = (KIND,)
    reads_context = ("data",)  # its parity images and captions, not the recipe runtimes/targets
    libraries = ("torch", "timm", "numpy", "onnx", "onnxruntime", "transformers")

    class Config(ConfigModel):
        format: Literal["onnx", "openvino", "tvm"] = Field("onnx", description="export format")
        tower: Literal["image", "text", "both"] = Field("both", description="which tower(s)")
        classes: list[str] | None = Field(None, description="class names whose text embeddings are stored with the "
                                                            "image tower (default: the recipe data's classes)")
        captions: str = Field("fashion-mnist-pairs", description="caption dataset whose test images / captions are "
                                                                 "the parity inputs")
        parity_samples: int = Field(32, ge=1, description="real images and captions for the parity check")
        opset: int = Field(18, description="onnx: opset")
        precision: Literal["fp32", "fp16"] = Field("fp32", description="openvino: weight precision")
        target: str = Field("llvm", description="tvm: target (llvm = this CPU)")
        trials: int = Field(256, ge=0, description="tvm: MetaSchedule trials per tower (0 = untuned: slow)")
        batch: int = Field(1, ge=1, description="tvm: static batch size of both libraries")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ..methods.vlm.deploy import export_towers

        src = ctx.consumed(self, config)
        model = dual_model(src)
        data = captions(ctx, config.captions, ctx.recipe.data.eval_split, config.parity_samples)
        classes = config.classes or list(ctx.dataset(limit=1).classes)
        options = {"onnx": {"opset": config.opset}, "openvino": {"precision": config.precision},
                   "tvm": {"target": config.target, "trials": config.trials, "batch": config.batch}}[config.format]
        out = ctx.out_dir / "towers"
        rec = export_towers(model, config.format, out, tower=config.tower, images=data.images,
                            texts=list(data.captions)[: config.parity_samples], classes=classes, options=options)
        return StageOutput(src, {"format": config.format, "towers": rec["towers"], "folder": str(out),
                                 "text_embeddings": rec["text_embeddings"], "tokens": rec["tokens"],
                                 "min_cosine": min(r["min_cosine"] for r in rec["towers"])})
