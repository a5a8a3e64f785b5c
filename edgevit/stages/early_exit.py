"""Stage ``early_exit``: LGViT heads on the run's torch model — train (stage 1 + 2), calibrate, export a cascade.

Recipe entry (every key optional)::

    - stage: early_exit
      stage1_epochs: 2          # end-to-end alternating epochs (fractional allowed)
      stage2_epochs: 5          # self-distillation epochs (backbone + final head frozen)
      steps: null               # cap both stages at N optimiser steps (quick runs)
      train_limit: null         # train on the first N images of train[:-holdout]
      holdout: 5000             # last N train images: the calibration split (never trained on, never the test set)
      budget: 1.0               # allowed top-1 loss (pt) vs the final head on the held-out split
      criterion: confidence     # confidence | entropy
      runtime: onnxruntime      # runtime whose measured graph latencies drive calibration
      format: onnx              # onnx | openvino: the exported graphs
      heldout_limit: null       # calibrate on the first N held-out images
      latency_duration_s: 1.0   # timed seconds per graph during calibration

The stage folder holds ``early_exit.safetensors``, ``train.json``, ``calibration.json`` and ``export/`` with
``manifest.json``; the next stages see a ``cascade`` artefact. ``eval``/``profile`` run it on the first of the
recipe's ``runtimes`` that runs its graphs (onnxruntime, openvino), or on the runtime set on those stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class EarlyExitStage(Stage):
    """Attach LGViT exits, train them, calibrate thresholds for a runtime and export the cascade."""

    name = "early_exit"
    description = "LGViT early exits: train heads (2 stages), calibrate thresholds on held-out data, export a cascade"
    consumes = ("torch",)
    produces = ("cascade",)

    @dataclass
    class Config:
        stage1_epochs: float = 2.0
        stage2_epochs: float = 5.0
        steps: int | None = field(default=None, metadata={"help": "cap both training stages at N steps"})
        batch_size: int = 256
        lr_backbone: float = 5e-5
        lr_heads: float = 1e-3
        train_limit: int | None = None
        holdout: int = 5000
        budget: float = field(default=1.0, metadata={"help": "top-1 loss (pt) allowed vs the final head"})
        criterion: str = "confidence"
        runtime: str = "onnxruntime"
        format: str = "onnx"
        heldout_limit: int | None = None
        latency_duration_s: float = 1.0
        parity_samples: int = 64
        exporter: str = "auto"
        if_form: bool = field(default=False, metadata={"help": "also write export/cascade_if.onnx: the cascade as one "
                                                               "ONNX graph with If nodes (batch 1; format onnx)"})
        seed: int = 0

        def validate(self, path: str) -> None:
            from ..errors import ConfigError

            if self.criterion not in ("confidence", "entropy"):
                raise ConfigError(f"{path}.criterion: must be confidence or entropy, got {self.criterion!r}")
            if self.format not in ("onnx", "openvino"):
                raise ConfigError(f"{path}.format: must be onnx or openvino, got {self.format!r}")
            if self.if_form and self.format != "onnx":
                raise ConfigError(f"{path}.if_form: the If form is one ONNX graph; set format: onnx")
            if self.holdout <= 0:
                raise ConfigError(f"{path}.holdout: must be a positive number of images, got {self.holdout}")
            if self.latency_duration_s <= 0:
                raise ConfigError(f"{path}.latency_duration_s: must be positive, got {self.latency_duration_s}")

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ..artifact import Artifact
        from ..methods.early_exit.config import TrainConfig
        from ..methods.early_exit.run import calibrate_run, export_run, train_run

        src = ctx.latest("torch") or ctx.source_artifact()
        d = ctx.recipe.data
        tc = TrainConfig(stage1_epochs=config.stage1_epochs, stage2_epochs=config.stage2_epochs,
                         stage1_steps=config.steps, stage2_steps=config.steps, batch_size=config.batch_size,
                         lr_backbone=config.lr_backbone, lr_heads=config.lr_heads, seed=config.seed)
        tr = train_run(src.load_model(), ctx.out_dir, data=d.name, data_dir=d.data_dir, holdout=config.holdout,
                       limit=config.train_limit, config=tc)
        cal = calibrate_run(ctx.out_dir, budget=config.budget, runtime=config.runtime, criterion=config.criterion,
                            heldout_limit=config.heldout_limit, duration_s=config.latency_duration_s,
                            exporter=config.exporter)
        images = ctx.dataset(limit=config.parity_samples).images
        exp = export_run(ctx.out_dir, ctx.out_dir / "export", format=config.format, criterion=config.criterion,
                         parity_samples=config.parity_samples, parity_images=images, exporter=config.exporter,
                         if_form=config.if_form)
        art = Artifact(kind="cascade", spec=src.spec, path=ctx.out_dir / "export" / "manifest.json",
                       source=src.source, meta={"backend": config.format, "exits": len(cal["thresholds"])})
        metrics = {"exits": [e["block"] for e in tr["model"]["exits"]], "thresholds": cal["thresholds"],
                   "heldout_top1": cal["top1"], "heldout_final_top1": cal["final_top1"],
                   "expected_ms": cal["expected_ms"], "segments_only_ms": cal["segments_only_ms"],
                   "share": cal["share"], "max_abs_diff": exp["max_abs_diff"], "top1_agreement": exp["top1_agreement"],
                   "exit_agreement": exp["exit_agreement"], "n": exp["n"],
                   "train_steps": [tr["stage1"]["steps"], tr["stage2"]["steps"]]}
        if exp.get("if_form"):
            metrics["if_form"] = exp["if_form"]["path"]
            metrics["if_form_max_abs_diff"] = exp["if_form"]["parity_vs_cascade"]["max_abs_diff"]
        from ..results import ParityRecord

        return StageOutput(art, metrics, parity=ParityRecord.from_dict(exp["cascade_parity"]))
