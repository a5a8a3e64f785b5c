"""Stage ``early_exit``: LGViT heads on the run's torch model — train (stage 1 + 2), calibrate, export a cascade.

Recipe entry (every key optional; every key of :class:`~edgevit.methods.early_exit.config.TrainConfig` too:
``alpha``, ``temperature``, ``beta_hete``, ``beta_homo``, ``weight_decay``, ``stage1_steps``, ...)::

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

import copy
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..artifact import file_sha256, write_json
from ..methods.early_exit.config import TrainConfig
from ..stage import Stage, StageContext, StageOutput, register_stage

log = logging.getLogger(__name__)


@register_stage
class EarlyExitStage(Stage):
    """Attach LGViT exits, train them, calibrate thresholds for a runtime and export the cascade."""

    name = "early_exit"
    description = "LGViT early exits: train heads (2 stages), calibrate thresholds on held-out data, export a cascade"
    consumes = ("torch",)
    produces = ("cascade",)
    reads_context = ("data",)  # its images (parity, calibration, training), not the recipe runtimes/targets
    libraries = ("torch", "timm", "numpy", "onnx", "onnxscript", "onnxslim", "onnxruntime", "openvino")
    resumable = True  # a killed run keeps its trained heads and calibrated thresholds (the stage folder's files)
    new_model = True

    @classmethod
    def hands_on(cls, config, kind: str) -> tuple[str, ...]:
        return (f"cascade:{config.format}",)

    class Config(TrainConfig):
        """Every :class:`~edgevit.methods.early_exit.config.TrainConfig` key plus calibration and export keys."""

        steps: int | None = Field(None, ge=0, description="cap both training stages at N steps (stage1_steps / "
                                                          "stage2_steps override it per stage)")
        train_limit: int | None = Field(None, ge=1, description="train on the first N images of train[:-holdout]")
        holdout: int = Field(5000, ge=1, description="last N train images: the calibration split (never trained on)")
        budget: float = Field(1.0, allow_inf_nan=False, description="top-1 loss (pt) allowed vs the final head")
        criterion: Literal["confidence", "entropy"] = Field("confidence", description="exit criterion")
        runtime: str = Field("onnxruntime", description="runtime whose measured graph latencies drive calibration")
        format: Literal["onnx", "openvino"] = Field("onnx", description="format of the exported graphs")
        heldout_limit: int | None = Field(None, ge=1, description="calibrate on the first N held-out images")
        latency_duration_s: float = Field(1.0, gt=0, description="timed seconds per graph during calibration")
        parity_samples: int = Field(64, ge=1, description="real images for the parity checks")
        exporter: Literal["auto", "dynamo", "torchscript"] = Field("auto", description="torch ONNX exporter")
        if_form: bool = Field(False, description="also write export/cascade_if.onnx: the cascade as one ONNX graph "
                                                 "with If nodes (batch 1; format onnx)")

        @model_validator(mode="after")
        def _check_if_form(self):
            if self.if_form and self.format != "onnx":
                raise ValueError("if_form: the If form is one ONNX graph; set format: onnx")
            return self

        def train_config(self) -> TrainConfig:
            """The training part, with ``steps`` as the cap of a stage whose own ``stageN_steps`` is unset."""
            values = {name: getattr(self, name) for name in TrainConfig.model_fields}
            for key in ("stage1_steps", "stage2_steps"):
                if values[key] is None:
                    values[key] = self.steps
            return TrainConfig(**values)

    def run(self, ctx: StageContext, config: Config) -> StageOutput:
        from ..methods.early_exit.run import CALIBRATION, CHECKPOINT, calibrate_run, export_run, train_run

        src = ctx.consumed(self, config)
        d = ctx.recipe.data
        tc = config.train_config()
        # the pipeline keeps this folder from a killed run only when the resume key matches: each finished phase
        # (train.json is written after the checkpoint, calibration.json after the timing) is reused, so a resumed
        # run keeps the thresholds the interrupted one measured instead of timing again
        out = ctx.out_dir
        fingerprint = _train_fingerprint(src, d, config, tc)
        if (out / "train.json").is_file() and (out / CHECKPOINT).is_file():
            tr = json.loads((out / "train.json").read_text())
            log.info("early exits: heads trained before the interruption (%s), not training again", out / CHECKPOINT)
        elif (tr := _reuse_training(out, fingerprint)) is not None:
            pass
        else:
            tr = train_run(copy.deepcopy(src.load_model()), out, data=d.name, data_dir=d.data_dir,
                           holdout=config.holdout, limit=config.train_limit, config=tc)
            tr["train_fingerprint"] = fingerprint
            write_json(out / "train.json", tr)
        if (out / CALIBRATION).is_file():
            cal = json.loads((out / CALIBRATION).read_text())
            log.info("early exits: thresholds calibrated before the interruption (%s), not timing again",
                     out / CALIBRATION)
        else:
            shutil.rmtree(out / "calibration_graphs", ignore_errors=True)
            cal = calibrate_run(out, budget=config.budget, runtime=config.runtime, criterion=config.criterion,
                                heldout_limit=config.heldout_limit, duration_s=config.latency_duration_s,
                                exporter=config.exporter)
        shutil.rmtree(out / "export", ignore_errors=True)  # a killed export starts over
        images = ctx.dataset(limit=config.parity_samples).images
        exp = export_run(ctx.out_dir, ctx.out_dir / "export", format=config.format, criterion=config.criterion,
                         parity_samples=config.parity_samples, parity_images=images, exporter=config.exporter,
                         if_form=config.if_form)
        # the exporter's cascade artefact (manifest.json), named after the run's source model
        art = dataclasses.replace(exp.artifact, source=src.source)
        par = exp.parity
        metrics = {"exits": [e["block"] for e in tr["model"]["exits"]], "thresholds": cal["thresholds"],
                   "heldout_top1": cal["top1"], "heldout_final_top1": cal["final_top1"],
                   "expected_ms": cal["expected_ms"], "segments_only_ms": cal["segments_only_ms"],
                   "share": cal["share"], "max_abs_diff": par.max_abs_diff, "top1_agreement": par.top1_agreement,
                   "exit_agreement": par.extra["exit_agreement"], "n": par.n,
                   "train_steps": [tr["stage1"]["steps"], tr["stage2"]["steps"]]}
        if_form = exp.fields.get("if_form")
        if if_form:
            metrics["if_form"] = if_form["path"]
            metrics["if_form_max_abs_diff"] = if_form["parity_vs_cascade"]["max_abs_diff"]
        return StageOutput(art, metrics, parity=par)


def _train_fingerprint(src, data, config, train_config: TrainConfig) -> str | None:
    """What the trained heads depend on: the input model's file, the data and split, every training key and the
    versions of the libraries that train. None (never reused) for an input without a file."""
    import hashlib

    from ..config import to_dict
    from ..versions import library_versions

    if src.path is None or not Path(src.path).is_file():
        return None
    versions = library_versions()
    parts = {"model": file_sha256(src.path), "data": [data.name, data.data_dir], "holdout": config.holdout,
             "train_limit": config.train_limit, "train": to_dict(train_config),
             "libraries": {k: versions.get(k) for k in ("torch", "timm", "numpy")}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _reuse_training(out: Path, fingerprint: str | None) -> dict | None:
    """The heads of this stage's previous finished folder (``<id>`` beside ``<id>.tmp``), copied into ``out``, when
    they were trained from the same fingerprint: a recipe change to calibration or export keys only (``budget``,
    ``criterion``, ``runtime``, ``if_form``, ...) recalibrates without training again. None otherwise."""
    from ..methods.early_exit.run import CHECKPOINT

    prev = out.with_name(out.name.removesuffix(".tmp"))
    if fingerprint is None or prev == out:
        return None
    try:
        tr = json.loads((prev / "train.json").read_text())
    except (OSError, ValueError):
        return None
    if tr.get("train_fingerprint") != fingerprint or not (prev / CHECKPOINT).is_file():
        return None
    shutil.copy2(prev / CHECKPOINT, out / CHECKPOINT)
    tr["checkpoint"] = str(out / CHECKPOINT)
    tr["reused_from"] = prev.name
    write_json(out / "train.json", tr)
    log.info("early exits: the heads in %s were trained from the same model, data and training keys; reusing them "
             "(only calibration or export keys changed)", prev)
    return tr
