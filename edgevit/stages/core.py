"""Built-in stages: load, eval, profile, report (export stages live in their format folders)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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


@register_stage
class LoadStage(Stage):
    """Build the model of the recipe's ``model`` section and save its weights (always the first step)."""

    name = "load"
    description = "build the recipe's model (edgevit/timm name or checkpoint) and save it as safetensors"
    produces = ("torch",)

    @dataclass
    class Config:
        pass

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

    @dataclass
    class Config:
        runtime: str | None = field(default=None, metadata={"help": "runtime (default: torch, or the first "
                                                                    "recipe runtime that loads the artefact)"})
        split: str | None = None
        limit: int | None = None
        batch_size: int | None = None
        threads: int | None = None

    def run(self, ctx, config):
        from ..evaluate import evaluate
        from ..runtimes import load_runtime

        art = ctx.artifact
        rt_name = _pick_runtime(ctx, art, config.runtime)
        runtime = load_runtime(rt_name, art, threads=config.threads)
        data = ctx.dataset(config.split, limit=config.limit)
        metrics = evaluate(runtime, data, batch_size=config.batch_size or ctx.recipe.data.batch_size)
        metrics["artifact"] = art.kind
        log.info("eval %s via %s: top-1 %.4f top-5 %.4f (n=%d)", art.kind, rt_name, metrics["top1"],
                 metrics["top5"], metrics["n"])
        return StageOutput(art, metrics)


@register_stage
class ProfileStage(Stage):
    """Latency of the current artefact (and optionally the source torch model) per runtime and batch size."""

    name = "profile"
    description = "latency per runtime × batch (median/p90/p99/mean), plus roofline predictions for targets"

    @dataclass
    class Config:
        runtimes: list[str] | None = None
        batch: list[int] = field(default_factory=lambda: [1, 8])
        duration_s: float = 3.0
        warmup_s: float = 0.5
        min_runs: int = 10
        threads: int | None = None
        include_source: bool = True

    def run(self, ctx, config):
        from ..data import preprocess
        from ..profile.latency import profile_runtime
        from ..runtimes import load_runtime, runtime_loads

        art = ctx.artifact
        pairs = []
        names = config.runtimes or ([_pick_runtime(ctx, art, None)] if art.kind == "torch" else
                                    [r for r in ctx.recipe.runtimes if runtime_loads(r, art.kind)])
        pairs += [(art, r) for r in names]
        src = ctx.source_artifact()
        if config.include_source and src is not art:
            pairs.insert(0, (src, "torch"))
        real = preprocess(ctx.dataset(limit=max(config.batch)).images, art.spec)
        results = []
        for a, r in pairs:
            runtime = load_runtime(r, a, threads=config.threads)
            for row in profile_runtime(runtime, batch_sizes=tuple(config.batch), warmup_s=config.warmup_s,
                                       duration_s=config.duration_s, min_runs=config.min_runs, inputs=real):
                row["artifact"] = a.kind
                results.append(row)
        predictions = _predictions(ctx, results) if ctx.recipe.targets else []
        return StageOutput(art, {"latency": results, "predictions": predictions})


LOCAL_PROFILE = "epyc-zen4-2core"  # the build machine's profile: its prediction is checked against measurement


def _predictions(ctx: StageContext, results: list[dict]) -> list[dict]:
    """Roofline predictions (per ONNX node, batch 1) for the recipe's targets and for this machine's profile,
    the latter with its error against the measured batch-1 median of the ONNX artefact."""
    from ..errors import EdgevitError
    from ..profile.roofline import predict_onnx_latency

    onnx = ctx.latest("onnx")
    if onnx is None:
        log.warning("roofline predictions need an ONNX artefact: add an export_onnx stage before profile")
        return []
    measured = next((r["median_ms"] for r in results if r.get("artifact") == "onnx" and r["batch"] == 1), None)
    out = []
    for target in [*ctx.recipe.targets, LOCAL_PROFILE]:
        for dtype in ("fp32", "fp16", "int8"):
            try:
                p = predict_onnx_latency(onnx.path, target, dtype,
                                         measured_ms=measured if target == LOCAL_PROFILE and dtype == "fp32" else None)
            except (EdgevitError, KeyError, ValueError) as exc:
                log.info("no %s prediction for %s: %s", dtype, target, exc)
                continue
            p["target"] = target
            if target == LOCAL_PROFILE and dtype == "fp32":
                p["measured_ms"] = measured
            out.append(p)
    return out


@register_stage
class ReportStage(Stage):
    """Write report.json and report.md at the top of the run directory from every stage's record."""

    name = "report"
    description = "report.json + report.md + report.html (with a latency plot) of the whole run"

    @dataclass
    class Config:
        title: str | None = None

    def run(self, ctx, config):
        from ..report import write_report

        paths = write_report(ctx.run_dir, ctx.recipe, ctx.records, title=config.title, stage_dir=ctx.out_dir)
        return StageOutput(ctx.artifact, {"files": {k: str(v) for k, v in paths.items()}})
