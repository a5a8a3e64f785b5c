"""Built-in stages: load, eval, profile, report (export stages live in their format folders)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import Field

from ..config import ConfigModel
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


def _pick_runtime(ctx: StageContext, artifact, requested: str | None) -> str:
    """The runtime for ``artifact``: the requested one, else the first recipe runtime that loads its kind."""
    from ..errors import ConfigError
    from ..runtimes import runtime_loads

    if requested:
        return requested
    if artifact.kind == "torch":
        return "torch"
    for name in ctx.recipe.runtimes:
        if runtime_loads(name, artifact.kind):
            return name
    raise ConfigError(f"no runtime in the recipe's runtimes {ctx.recipe.runtimes} loads a '{artifact.kind}' artefact; "
                      f"add one to 'runtimes' or set the stage's 'runtime'")


def run_artifacts(ctx: StageContext, which: str, runtimes: list[str] | None) -> list[tuple[str, object, str]]:
    """``(stage id, artefact, runtime)`` pairs a measuring stage covers.

    ``which="current"``: the current artefact on the given runtimes (default: torch for a torch model, else every
    recipe runtime that loads it). ``which="all"``: every distinct artefact of the run so far (the source model, each
    distilled/converted model, cascade and export, in run order, each once) on every runtime of ``runtimes`` (default:
    the recipe's ``runtimes`` plus torch) that loads its kind — the grid of the report's accuracy × latency plot.
    """
    from ..runtimes import runtime_loads

    if which == "current":
        art = ctx.artifact
        names = runtimes or ([_pick_runtime(ctx, art, None)] if art.kind == "torch" else
                             [r for r in ctx.recipe.runtimes if runtime_loads(r, art.kind)])
        sid = next((k for k, a in reversed(list(ctx.artifacts.items())) if a is art), "current")
        return [(sid, art, r) for r in names]
    names = runtimes or list(dict.fromkeys(["torch", *ctx.recipe.runtimes]))
    seen: set[str] = set()
    out = []
    for sid, art in ctx.artifacts.items():
        key = str(art.path) if art.path is not None else f"{sid}:{id(art)}"
        if key in seen:
            continue
        seen.add(key)
        out += [(sid, art, r) for r in names if runtime_loads(r, art.kind)]
    return out


@register_stage
class LoadStage(Stage):
    """Build the model of the recipe's ``model`` section and save its weights (always the first step)."""

    name = "load"
    description = "build the recipe's model (edgevit/timm name or checkpoint) and save it as safetensors"
    produces = ("torch",)

    class Config(ConfigModel):
        """No keys: the model comes from the recipe's ``model`` section."""

    def run(self, ctx, config):
        from ..artifact import Artifact
        from ..models import count_params, create, save_checkpoint

        m = ctx.recipe.model
        model = create(m.name, checkpoint=m.checkpoint, pretrained=m.pretrained, num_classes=m.num_classes,
                       arch=m.arch)
        path = save_checkpoint(model, ctx.out_dir / "model.safetensors")
        spec = model.edgevit_spec
        art = Artifact(kind="torch", spec=spec, path=path, model=model, source=model.edgevit_name)
        return StageOutput(art, {"params": count_params(model), "arch": model.edgevit_name,
                                 "input_size": list(spec.input_size)})


@register_stage
class EvalStage(Stage):
    """Top-1/top-5 of the current artefact through a runtime on the recipe's evaluation split."""

    name = "eval"
    description = "top-1/top-5 of the current artefact through a runtime"

    class Config(ConfigModel):
        runtime: str | None = Field(None, description="runtime (default: torch, or the first recipe runtime that "
                                                      "loads the artefact)")
        split: str | None = Field(None, description="dataset split (default: the recipe's data.eval_split)")
        limit: int | None = Field(None, ge=1, description="evaluate the first N images (default: data.limit)")
        batch_size: int | None = Field(None, ge=1, description="images per batch (default: data.batch_size)")
        threads: int | None = Field(None, ge=1, description="runtime threads (default: the runtime's)")
        artifacts: Literal["current", "all"] = Field(
            "current", description="current: the current artefact on `runtime`; all: every artefact of the run so "
                                   "far on every recipe runtime (and torch) that loads it, one row each in `rows`")
        task: Literal["classification", "retrieval", "zero-shot"] = Field(
            "classification", description="classification: top-1/top-5 of the artefact; retrieval: R@1/5/10 "
                                          "image→text and text→image of the dual encoder `dual_encoder` on the "
                                          "caption dataset `captions`; zero-shot: its top-1 on the recipe's data "
                                          "from class prompts")
        dual_encoder: str | None = Field(None, description="retrieval / zero-shot: a dual-encoder folder "
                                                           "(dual_encoder.json) or a registered dual encoder")
        captions: str = Field("fashion-mnist-pairs", description="retrieval: the caption dataset (fashion-mnist-pairs,"
                                                                 " fashion-mnist-captions, coco:FILE, karpathy:FILE)")

    def run(self, ctx, config):
        from ..evaluate import evaluate
        from ..runtimes import load_runtime

        if config.task != "classification":
            return self._run_dual(ctx, config)

        data = ctx.dataset(config.split, limit=config.limit)
        batch = config.batch_size or ctx.recipe.data.batch_size
        if config.artifacts == "all":
            rows = []
            for sid, a, r in run_artifacts(ctx, "all", [config.runtime] if config.runtime else None):
                with load_runtime(r, a, threads=config.threads) as runtime:
                    m = evaluate(runtime, data, batch_size=batch)
                rows.append({"artifact_id": sid, "artifact": a.kind, **m})
                log.info("eval %s (%s) via %s: top-1 %.4f (n=%d)", sid, a.kind, r, m["top1"], m["n"])
            last = rows[-1] if rows else {}
            return StageOutput(ctx.artifact, {"rows": rows, **{k: last[k] for k in ("top1", "top5", "n")
                                                                 if k in last}})
        art = ctx.artifact
        rt_name = _pick_runtime(ctx, art, config.runtime)
        runtime = load_runtime(rt_name, art, threads=config.threads)
        metrics = evaluate(runtime, data, batch_size=batch)
        metrics["artifact"] = art.kind
        log.info("eval %s via %s: top-1 %.4f top-5 %.4f (n=%d)", art.kind, rt_name, metrics["top1"],
                 metrics["top5"], metrics["n"])
        return StageOutput(art, metrics)


    def _run_dual(self, ctx, config):
        from ..errors import ConfigError
        from ..methods.vlm.evaluate import evaluate_retrieval, evaluate_zero_shot
        from ..methods.vlm.towers import load_dual_encoder

        if not config.dual_encoder:
            raise ConfigError(f"eval task '{config.task}' needs a dual encoder: the run's model is a classifier; set "
                              f"`dual_encoder: DIR` (a folder written by `edgevit vlm train-teacher` or "
                              f"`edgevit distill train --method dcd`)")
        model = load_dual_encoder(config.dual_encoder)
        if config.task == "zero-shot":
            metrics = evaluate_zero_shot(model, ctx.dataset(config.split, limit=config.limit))
        else:
            from ..data.captions import load_caption_dataset

            data = load_caption_dataset(config.captions, config.split or ctx.recipe.data.eval_split,
                                        data_dir=ctx.recipe.data.data_dir, limit=config.limit or ctx.recipe.data.limit)
            metrics = evaluate_retrieval(model, data)
        metrics["dual_encoder"] = str(config.dual_encoder)
        return StageOutput(ctx.artifact, metrics)


@register_stage
class ProfileStage(Stage):
    """Latency of the current artefact (and optionally the source torch model) per runtime and batch size."""

    name = "profile"
    description = "latency per runtime × batch (median/p90/p99/mean), plus roofline predictions for targets"

    class Config(ConfigModel):
        runtimes: list[str] | None = Field(None, description="runtimes to time (default: every recipe runtime "
                                                             "that loads the artefact; torch for a torch model)")
        batch: list[Annotated[int, Field(ge=1)]] = Field([1, 8], min_length=1, description="batch sizes")
        duration_s: float = Field(3.0, gt=0, description="seconds of timed runs per runtime × batch")
        warmup_s: float = Field(0.5, ge=0, description="seconds of warm-up (at least 5 runs)")
        min_runs: int = Field(10, ge=1, description="timed runs at least, however long they take")
        threads: int | None = Field(None, ge=1, description="runtime threads (default: the runtime's)")
        include_source: bool = Field(True, description="also time the source torch model")
        artifacts: Literal["current", "all"] = Field(
            "current", description="current: the current artefact (and the source); all: every artefact of the run "
                                   "so far on every runtime of `runtimes` (default: recipe runtimes + torch) that "
                                   "loads it")

    def run(self, ctx, config):
        from ..data import preprocess
        from ..profiling.latency import profile_runtime
        from ..runtimes import load_runtime

        art = ctx.artifact
        pairs = run_artifacts(ctx, config.artifacts, config.runtimes)
        src = ctx.source_artifact()
        if config.include_source and config.artifacts == "current" and src is not art:
            pairs.insert(0, (next(iter(ctx.artifacts)), src, "torch"))
        real = preprocess(ctx.dataset(limit=max(config.batch)).images, art.spec)
        results = []
        for sid, a, r in pairs:
            runtime = load_runtime(r, a, threads=config.threads)
            for row in profile_runtime(runtime, batch_sizes=tuple(config.batch), warmup_s=config.warmup_s,
                                       duration_s=config.duration_s, min_runs=config.min_runs, inputs=real):
                row["artifact"] = a.kind
                row["artifact_id"] = sid
                results.append(row)
        predictions = _predictions(ctx, results) if ctx.recipe.targets else []
        return StageOutput(art, {"latency": results, "predictions": predictions})


LOCAL_PROFILE = "host"  # THIS machine, detected at run time: the only profile checked against measurement


def _predictions(ctx: StageContext, results: list[dict]) -> list[dict]:
    """Roofline predictions (per ONNX node, batch 1) for the recipe's targets (other machines: predictions only)
    and for the detected host (``host``), the latter with its error against the measured batch-1 median of the
    ONNX artefact and labelled with the detected CPU (``host (AMD EPYC (Zen 4), 2 cores, AVX-512/VNNI/BF16)``)."""
    from ..errors import EdgevitError
    from ..profiling.hardware import load_profile
    from ..profiling.roofline import predict_onnx_latency

    onnx = ctx.latest("onnx")
    if onnx is None:
        log.warning("roofline predictions need an ONNX artefact: add an export_onnx stage before profile")
        return []
    measured = next((r["median_ms"] for r in results if r.get("artifact") == "onnx" and r["batch"] == 1), None)
    host = load_profile(LOCAL_PROFILE)
    out = []
    for target in dict.fromkeys([*ctx.recipe.targets, LOCAL_PROFILE]):
        is_host = target == LOCAL_PROFILE
        for dtype in ("fp32", "fp16", "int8"):
            try:
                p = predict_onnx_latency(onnx.path, host if is_host else target, dtype,
                                         measured_ms=measured if is_host and dtype == "fp32" else None)
            except (EdgevitError, KeyError, ValueError) as exc:
                log.info("no %s prediction for %s: %s", dtype, target, exc)
                continue
            p["target"] = target
            if is_host:
                p["target_label"] = host.label
                p["cpu_model"] = host.cpu_model
                if dtype == "fp32":
                    p["measured_ms"] = measured
            out.append(p)
    return out


@register_stage
class ReportStage(Stage):
    """Write report.json and report.md at the top of the run directory from every stage's record."""

    name = "report"
    description = "report.json + report.md + report.html (with a latency plot) of the whole run"

    class Config(ConfigModel):
        title: str | None = Field(None, description="report title (default: the recipe's name)")

    def run(self, ctx, config):
        from ..report import write_report

        paths = write_report(ctx.run_dir, ctx.recipe, ctx.records, title=config.title, stage_dir=ctx.out_dir)
        return StageOutput(ctx.artifact, {"files": {k: str(v) for k, v in paths.items()}})
