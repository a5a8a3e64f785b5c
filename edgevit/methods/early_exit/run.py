"""The three steps behind ``edgevit early-exit train|calibrate|export`` and the ``early_exit`` stage, on a run folder:

- ``early_exit.safetensors``: backbone + heads (:func:`~edgevit.methods.early_exit.model.save_early_exit`), with the data
  split it was trained on; ``train.json``: the training record;
- ``calibration.json``: thresholds for one runtime (:func:`~edgevit.methods.early_exit.calibrate.calibrate`);
- ``export/manifest.json`` + graphs (:func:`~edgevit.formats.cascade.export.export_cascade`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ...results import ExportResult

log = logging.getLogger(__name__)

CHECKPOINT = "early_exit.safetensors"
IF_FORM = "cascade_if.onnx"
CALIBRATION = "calibration.json"


def train_run(model: Any, out_dir: str | Path, *, data: str, data_dir: str | None = None,
              holdout: int = 5000, limit: int | None = None, config: Any = None) -> dict:
    """Attach heads to ``model`` (a torch module or a model name), train stage 1 + 2 on the train split of ``data``
    (a dataset name or ImageFolder directory, as :func:`edgevit.data.load_dataset` takes it) minus its last
    ``holdout`` images (first ``limit`` of them), save the checkpoint; return the record (also train.json)."""
    from ...artifact import write_json
    from ...models import create
    from .calibrate import heldout_split
    from .config import TrainConfig
    from .model import save_early_exit
    from .train import train_early_exit

    t0 = time.perf_counter()
    config = config or TrainConfig()
    backbone = create(model) if isinstance(model, (str, Path)) else model
    train, _ = heldout_split(data, holdout=holdout, data_dir=data_dir, limit=limit)
    ee, rec = train_early_exit(backbone, train, config=config)
    out = Path(out_dir)
    split = {"data": data, "data_dir": data_dir, "holdout": holdout, "train_samples": len(train), "limit": limit}
    path = save_early_exit(ee, out / CHECKPOINT, extra={"split": split})
    from ...config import to_dict

    record = {"checkpoint": str(path), "backbone": ee.edgevit_name, "split": split, "config": to_dict(config), **rec,
              "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "train.json", record)
    return record


def _load(run_dir: str | Path):
    from .model import load_early_exit

    p = Path(run_dir)
    return load_early_exit(p if p.suffix == ".safetensors" else p / CHECKPOINT)


def calibrate_run(run_dir: str | Path, *, budget: float, runtime: str = "onnxruntime", criterion: str = "confidence",
                  holdout: int | None = None, heldout_limit: int | None = None, threads: int | None = None,
                  warmup_s: float = 0.2, duration_s: float = 1.0, exporter: str = "auto",
                  model: Any = None, data: str | None = None, data_dir: str | None = None) -> dict:
    """Calibrate the run's checkpoint on its held-out split for ``runtime``; writes ``calibration.json``.

    The held-out split is the last ``holdout`` train images of the dataset the checkpoint records it was trained
    on (``data``/``data_dir`` override it); :class:`~edgevit.errors.ConfigError` when neither names one."""
    import numpy as np

    from ...artifact import write_json
    from .calibrate import calibrate, heldout_split

    run = Path(run_dir)
    ee = model if model is not None else _load(run)
    split = dict(getattr(ee, "edgevit_extra", {}).get("split") or {})
    data, data_dir = data or split.get("data"), data_dir or split.get("data_dir")
    if not data:
        from ...errors import ConfigError

        raise ConfigError(f"{run} records no training data split: pass data=<dataset name or ImageFolder directory> "
                          f"(the one the heads were trained on)")
    holdout = holdout or split.get("holdout") or 5000
    _, held = heldout_split(data, holdout=holdout, data_dir=data_dir)
    if heldout_limit is not None:
        held = held.subset(np.arange(min(heldout_limit, len(held))))
    held.name = f"{data} train[-{holdout}:]" + (f"[:{len(held)}]" if heldout_limit else "")
    rec = calibrate(ee, held, budget=budget, runtime=runtime, criterion=criterion, work_dir=run / "calibration_graphs",
                    threads=threads, warmup_s=warmup_s, duration_s=duration_s, exporter=exporter)
    write_json(run / CALIBRATION, rec)
    return rec


def export_run(run_dir: str | Path, out_dir: str | Path, *, format: str = "onnx", thresholds=None,
               criterion: str | None = None, parity_samples: int = 64, parity_images: Any = None,
               exporter: str = "auto", model: Any = None, if_form: bool = False, opset: int = 18) -> ExportResult:
    """Export the run's checkpoint with its calibrated thresholds (or ``thresholds``) to ``out_dir``; with
    ``if_form`` (ONNX only) also ``cascade_if.onnx``, the same cascade as one graph with ``If`` nodes (batch 1).

    ``parity_images``: real images for the parity checks (required). Returns the
    :class:`~edgevit.results.ExportResult` of :func:`~edgevit.formats.cascade.export.export_cascade`; with
    ``if_form`` its ``fields["if_form"]`` holds the If form's record (``build_if_graph(...).to_dict()``)."""
    from ...formats.cascade.export import export_cascade
    from ...formats.onnx.opsets import check_opset

    # up front, before the checkpoint loads: an opset the exporter writes and the format's runtime runs
    check_opset(opset, exporter=exporter, what="cascade opset",
                runtimes=["openvino" if format == "openvino" else "onnxruntime"])
    run = Path(run_dir)
    ee = model if model is not None else _load(run)
    cal = None
    if (run / CALIBRATION).exists():
        cal = json.loads((run / CALIBRATION).read_text())
    crit = criterion or (cal or {}).get("criterion") or "confidence"
    if cal is not None and crit != cal.get("criterion") and thresholds is None:
        from ...errors import ConfigError

        raise ConfigError(f"{run / CALIBRATION} holds thresholds for the '{cal.get('criterion')}' criterion, not "
                          f"'{crit}'; calibrate again with --criterion {crit}, or pass --thresholds")
    if if_form and format != "onnx":
        from ...errors import ConfigError

        raise ConfigError("the If form is one ONNX graph: export with --format onnx (OpenVINO and every ONNX runtime "
                          "load it from there)")
    rec = export_cascade(ee, out_dir, format=format, thresholds=thresholds, criterion=crit, calibration=cal, opset=opset,
                         parity_samples=parity_samples, parity_images=parity_images, exporter=exporter)
    if if_form:
        from ...formats.cascade.if_form import build_if_graph

        rec.fields["if_form"] = build_if_graph(rec.path, Path(out_dir) / IF_FORM, parity_images=parity_images,
                                               parity_samples=parity_samples).to_dict()
    return rec
