"""Built-in stages: load, eval, profile, report (export stages live in their format folders)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..config import ConfigModel
from ..stage import Stage, StageContext, StageOutput, artifact_file_key, register_stage

log = logging.getLogger(__name__)


def _runs(name: str, artifact) -> bool:
    """Whether runtime ``name`` runs ``artifact``: it loads its kind and, for an artefact made of graphs (a cascade,
    ``meta["graphs"]``), also the graphs' kind (onnxruntime runs ONNX and ORT graphs, openvino IR and ONNX)."""
    from ..runtimes import get_runtime_class, runtime_loads

    if not runtime_loads(name, artifact.kind):
        return False
    graphs = (artifact.meta or {}).get("graphs")
    return graphs is None or graphs in get_runtime_class(name).kinds or artifact.kind in get_runtime_class(name).kinds


def _pick_runtime(ctx: StageContext, artifact, requested: str | None) -> str:
    """The runtime for ``artifact``: the requested one, else the first recipe runtime that runs it (:func:`_runs`)."""
    from ..errors import ConfigError

    if requested:
        return requested
    if artifact.kind == "torch":
        return "torch"
    for name in ctx.recipe.runtimes:
        if _runs(name, artifact):
            return name
    graphs = (artifact.meta or {}).get("graphs")
    what = f"'{artifact.kind}' artefact" + (f" of {graphs} graphs" if graphs else "")
    raise ConfigError(f"no runtime in the recipe's runtimes {ctx.recipe.runtimes} runs a {what}; add one to "
                      f"'runtimes' (e.g. {'openvino' if graphs == 'openvino' else 'onnxruntime'}) or set the stage's "
                      f"'runtime'")


def exit_rates(runtime) -> dict | None:
    """The exit mix a runtime that exits early counted (the cascade, the If form): ``{"shares": [per exit, the last
    the final head], "samples", "labels", "mean_exit"}``; None for other runtimes."""
    counts = getattr(runtime, "exit_counts", None)
    if counts is None:
        return None
    total = int(sum(int(c) for c in counts))
    k = len(counts)
    return {"shares": [int(c) / total if total else 0.0 for c in counts], "samples": total,
            "labels": [f"exit {i + 1}" for i in range(k - 1)] + ["final"],
            "mean_exit": sum(i * int(c) for i, c in enumerate(counts)) / total if total else None}


def run_artifacts(ctx: StageContext, which: str, runtimes: list[str] | None) -> list[tuple[str, object, str]]:
    """``(stage id, artefact, runtime)`` pairs a measuring stage covers.

    ``which="current"``: the current artefact on the given runtimes (default: torch for a torch model, else every
    recipe runtime that loads it). ``which="all"``: every distinct artefact of the run so far (the source model, each
    distilled/converted model, cascade and export, in run order, each once) on every runtime of ``runtimes`` (default:
    the recipe's ``runtimes`` plus torch) that loads its kind — the grid of the report's accuracy × latency plot.
    """
    if which == "current":
        art = ctx.artifact
        names = runtimes or ([_pick_runtime(ctx, art, None)] if art.kind == "torch" else
                             [r for r in ctx.recipe.runtimes if _runs(r, art)])
        sid = next((k for k, a in ctx.artifacts.items() if a is art), "current")  # the stage that made it
        return [(sid, art, r) for r in names]
    names = runtimes or list(dict.fromkeys(["torch", *ctx.recipe.runtimes]))
    seen: set[str] = set()
    out = []
    for sid, art in ctx.artifacts.items():
        key = artifact_file_key(art) or f"{sid}:{id(art)}"  # one file reached by two paths is measured once
        if key in seen:
            continue
        seen.add(key)
        out += [(sid, art, r) for r in names if _runs(r, art)]
    return out


@register_stage
class LoadStage(Stage):
    """Build the model of the recipe's ``model`` section and save its weights (always the first step)."""

    name = "load"
    description = "build the recipe's model (edgevit/timm name or checkpoint) and save it as safetensors"
    produces = ("torch",)
    libraries = ("torch", "timm", "numpy")
    reads_context = ()  # the recipe's model section only (in the key of the first step)
    new_model = True

    class Config(ConfigModel):
        """No keys: the model comes from the recipe's ``model`` section."""

    @classmethod
    def start_kinds(cls, model) -> tuple[str, ...]:
        """The kind the load step hands on for the recipe's ``model`` section: ``dual`` for a dual image–text
        encoder (:func:`edgevit.stages.vlm.is_dual_ref`), else ``torch``."""
        from .vlm import is_dual_ref

        return ("dual",) if is_dual_ref(model.name) else ("torch",)

    def run(self, ctx, config):
        from ..artifact import Artifact
        from ..models import count_params, create, save_checkpoint

        m = ctx.recipe.model
        if "dual" in self.start_kinds(m):
            from .vlm import load_dual

            return load_dual(ctx, m.name)
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
    reads_context = ("data", "runtimes")  # not the targets (predictions are the profile stage's)

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
                                          "image→text and text→image of the dual encoder (the run's model, or "
                                          "`dual_encoder`) on the caption dataset `captions`; zero-shot: its top-1 "
                                          "on the recipe's data from class prompts")
        dual_encoder: str | None = Field(None, description="retrieval / zero-shot: a dual-encoder folder "
                                                           "(dual_encoder.json) or a registered dual encoder "
                                                           "(default: the run's model when it is one)")
        captions: str = Field("fashion-mnist-pairs", description="retrieval: the caption dataset (fashion-mnist-pairs,"
                                                                 " fashion-mnist-captions, coco:FILE, karpathy:FILE)")

    def run(self, ctx, config):
        from ..errors import ConfigError
        from ..evaluate import evaluate
        from ..runtimes import load_runtime

        if config.task != "classification":
            return self._run_dual(ctx, config)
        if ctx.artifact.kind == "dual":
            raise ConfigError("eval of a dual encoder: set `task: retrieval` (R@1/5/10 on captions) or "
                              "`task: zero-shot` (top-1 from class prompts)")

        data = ctx.dataset(config.split, limit=config.limit)
        batch = config.batch_size or ctx.recipe.data.batch_size
        if config.artifacts == "all":
            rows = []
            for sid, a, r in run_artifacts(ctx, "all", [config.runtime] if config.runtime else None):
                with load_runtime(r, a, threads=config.threads) as runtime:
                    m = evaluate(runtime, data, batch_size=batch)
                    rates = exit_rates(runtime)
                if rates is not None:
                    m.update({"exit_rates": rates, "precision": (a.meta or {}).get("precision", "fp32")})
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
        rates = exit_rates(runtime)
        if rates is not None:  # measured on the evaluation images: where they left the cascade
            metrics["exit_rates"] = rates
            metrics["precision"] = (art.meta or {}).get("precision", "fp32")
        log.info("eval %s via %s: top-1 %.4f top-5 %.4f (n=%d)", art.kind, rt_name, metrics["top1"],
                 metrics["top5"], metrics["n"])
        return StageOutput(art, metrics)


    def _run_dual(self, ctx, config):
        from .vlm import eval_dual

        return StageOutput(ctx.artifact, eval_dual(ctx, config, ctx.artifact))


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
        per_layer: bool = Field(False, description="also profile every node per runtime × batch (ONNX Runtime "
                                                   "profiler, OpenVINO counters, torch.profiler), mapped to the "
                                                   "model's blocks; OpenVINO also in bf16 where the CPU has it; "
                                                   "metrics get `per_layer`, the stage folder per_layer.png")
        per_layer_runs: int = Field(30, ge=1, description="profiled runs per runtime × batch for per_layer")
        artifacts: Literal["current", "all"] = Field(
            "current", description="current: the current artefact (and the source); all: every artefact of the run "
                                   "so far on every runtime of `runtimes` (default: recipe runtimes + torch) that "
                                   "loads it")
        until_stable: bool = Field(False, description="time in windows of duration_s until the last 3 window "
                                                      "medians agree within 5% and none was contended (each row's "
                                                      "stability.windows records how many and whether it settled)")
        max_duration_s: float = Field(60.0, gt=0, description="with until_stable: seconds of timing per runtime × "
                                                              "batch at most")

        @model_validator(mode="after")
        def _check_windows(self):
            from ..profiling.latency import SETTLE_WINDOWS

            if self.until_stable and self.max_duration_s < SETTLE_WINDOWS * self.duration_s:
                raise ValueError(f"max_duration_s: with until_stable it must hold {SETTLE_WINDOWS} windows of "
                                 f"duration_s ({SETTLE_WINDOWS} × {self.duration_s} s), got {self.max_duration_s}")
            return self

    def run(self, ctx, config):
        from ..data import preprocess
        from ..profiling.latency import profile_runtime
        from ..profiling.stability import worst
        from ..runtimes import load_runtime

        art = ctx.artifact
        if art.kind == "dual":  # a dual encoder: each tower (torch and every export of it) on its runtime
            from .vlm import profile_dual

            return StageOutput(art, profile_dual(ctx, config, art))
        pairs = run_artifacts(ctx, config.artifacts, config.runtimes)
        src = ctx.source_artifact()
        if config.include_source and config.artifacts == "current" and src is not art:
            pairs.insert(0, (next(iter(ctx.artifacts)), src, "torch"))
        n = max(config.batch)
        if any(a.kind == "cascade" for _, a, _ in pairs):  # timed calls cycle through the images: a real exit mix
            n = max(n, EXIT_MIX_IMAGES)
            if ctx.recipe.data.limit:
                n = min(n, max(ctx.recipe.data.limit, max(config.batch)))
        real = preprocess(ctx.dataset(limit=n).images, art.spec)
        variants = [(sid, a, r, {}) for sid, a, r in pairs]
        if config.per_layer:
            from ..profiling.layers import host_bf16

            bf16, why = host_bf16()
            if not bf16:
                log.info("per-layer: no OpenVINO bf16 column (%s)", why)
            variants = [v for sid, a, r in pairs
                        for v in [(sid, a, r, {}),
                                  *([(sid, a, r, {"precision": "bf16"})] if bf16 and r == "openvino" else [])]]
        results, layers = [], []
        for sid, a, r, opts in variants:
            runtime = load_runtime(r, a, threads=config.threads, **opts)
            for row in profile_runtime(runtime, batch_sizes=tuple(config.batch), warmup_s=config.warmup_s,
                                       duration_s=config.duration_s, min_runs=config.min_runs, inputs=real,
                                       until_stable=config.until_stable, max_duration_s=config.max_duration_s,
                                       warn=False):  # one summary warning below, not one per row
                row["artifact"] = a.kind
                row["artifact_id"] = sid
                if a.kind == "cascade":
                    row["precision"] = (a.meta or {}).get("precision", "fp32")
                    row["graphs"] = (a.meta or {}).get("graphs")
                results.append(row)
                if config.per_layer:
                    from ..profiling.layers import profile_layers

                    p = profile_layers(runtime, real[:row["batch"]] if len(real) >= row["batch"] else
                                       a.spec.example(row["batch"]), runs=config.per_layer_runs,
                                       latency_ms=row["median_ms"], latency_min_ms=row["min_ms"],
                                       latency_stability=(row.get("stability") or {}).get("verdict"))
                    p["artifact"] = a.kind
                    row["variant"] = p["variant"]
                    layers.append(p)
            runtime.close()
        _warn_contended(results)
        predictions = _predictions(ctx, results) if ctx.recipe.targets else []
        metrics = {"latency": results, "predictions": predictions,
                   "stability": worst([r["stability"]["verdict"] for r in results])}
        if config.per_layer:
            from ..profiling.layers import per_layer_png, per_layer_record

            metrics["per_layer"] = per_layer_record(layers)
            try:
                (ctx.out_dir / "per_layer.png").write_bytes(per_layer_png(layers))
            except ImportError as exc:
                log.warning("no per-layer plot: %s", exc)
        return StageOutput(art, metrics)


def _warn_contended(rows: list[dict]) -> None:
    """One warning for every contended latency row of a profile stage (each row's own message is in the log)."""
    bad = [r for r in rows if (r.get("stability") or {}).get("verdict") == "contended"]
    if not bad:
        return
    names = ", ".join(f"{r.get('artifact_id', '?')}/{r['runtime']} b{r['batch']}" for r in bad[:4])
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    log.warning("profile: %d of %d latency rows were timed on a contended machine (%s%s): %s Re-run the stage on a "
                "quiet machine (`edgevit compress RECIPE --out RUN --only profile`) or set until_stable: true",
                len(bad), len(rows), names, more, bad[0]["stability"]["message"].split("; these numbers")[0] + ".")


EXIT_MIX_IMAGES = 256  # real images a cascade is timed on (cycled), so the exit mix is the data's, not 8 images'
LOCAL_PROFILE = "host"  # THIS machine, detected at run time: the only profile checked against measurement


def _predictions(ctx: StageContext, results: list[dict]) -> list[dict]:
    """Predictions (per ONNX node, batch 1; :func:`edgevit.profiling.predictor.predict`) for the recipe's targets
    (other machines: predictions only, error unknown) and for the detected host (``host``), the latter with fitted
    factors and their held-out error where this CPU has them, its error against the measured batch-1 median of the
    ONNX artefact, and labelled with the detected CPU (``host (AMD EPYC (Zen 4), 2 cores, AVX-512/VNNI/BF16)``)."""
    from ..profiling.predictor import predict

    # the ONNX file the profile measured (the newest, over every artefact), else that of the run's current model;
    # never one of a model a later method replaced (its prediction would be compared with nothing measured)
    timed = [r.get("artifact_id") for r in results if r.get("artifact") == "onnx"]
    onnx_id = next((k for k in reversed(list(ctx.artifacts)) if k in timed), None)
    onnx = ctx.artifacts[onnx_id] if onnx_id is not None else ctx.current("onnx")
    if onnx is None:
        log.warning("roofline predictions need an ONNX file of the run's current model: add an export_onnx stage "
                    "before profile (a cascade has none: its graphs are predicted only through profile's "
                    "measurements)")
        return []
    measured = next((r["median_ms"] for r in results if r.get("artifact") == "onnx" and r["batch"] == 1
                     and r.get("artifact_id", onnx_id) == onnx_id), None)
    out = []
    for p in predict(onnx.path, [*ctx.recipe.targets, LOCAL_PROFILE], ("fp32", "fp16", "int8"), measured_ms=measured):
        if p.get("error"):
            log.info("no %s prediction for %s: %s", p["dtype"], p["target"], p["error"])
            continue
        out.append(p)
    return out


@register_stage
class ReportStage(Stage):
    """Write report.json and report.md at the top of the run directory from every stage's record."""

    name = "report"
    description = "report.json + report.md + report.html (with a latency plot) of the whole run"
    libraries = ()  # edgevit's own rendering of the records
    reads_records = True

    class Config(ConfigModel):
        title: str | None = Field(None, description="report title (default: the recipe's name)")

    def run(self, ctx, config):
        from ..report import write_report

        paths = write_report(ctx.run_dir, ctx.recipe, ctx.records, title=config.title, stage_dir=ctx.out_dir)
        return StageOutput(ctx.artifact, {"files": {k: str(v) for k, v in paths.items()}})
