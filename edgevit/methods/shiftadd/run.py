"""The steps behind ``edgevit shiftadd convert|finetune`` and the ``shiftadd`` stage, on a run folder holding
``model.safetensors`` (deploy form, loadable by :func:`edgevit.models.create`), ``convert.json`` and
``finetune.json`` (one record per finetune call)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT = "model.safetensors"


def top1(model: Any, images, labels, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of a torch classifier on preprocessed ``images`` / ``labels`` tensors."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            correct += int((model(images[s:s + batch_size]).argmax(-1) == labels[s:s + batch_size]).sum())
    return correct / max(1, len(images))


def _split(data: str, split: str, data_dir: str | None, limit: int | None, spec):
    from ...data import load_dataset
    from .train import dataset_tensors

    return dataset_tensors(load_dataset(data, split, data_dir=data_dir, limit=limit), spec)


def convert_run(model: Any, out_dir: str | Path, *, config: Any = None, data: str = "fashion-mnist",
                data_dir: str | None = None, eval_limit: int | None = 1000) -> dict:
    """Convert ``model`` (a torch module or a model name), fitting the KSH hash on the first ``calib_samples``
    training images; save ``model.safetensors`` and ``convert.json`` (config, measured MoE α, top-1 before and
    after on the first ``eval_limit`` test images, op counts and energy); return the record. A model converted with
    ``mlp="dense"`` converts again (recipe step 2): top-1 and energy are then compared with its dense source model
    (``top1_source`` is the input's)."""
    from ...artifact import write_json
    from ...models import create, input_spec_of
    from .config import ConvertConfig
    from .convert import convert, is_shiftadd, save_shiftadd
    from .energy import energy_report

    t0 = time.perf_counter()
    config = config or ConvertConfig()
    source = create(model) if isinstance(model, (str, Path)) else model
    name = getattr(source, "edgevit_name", None)
    # recipe step 2 (MLPs of a converted MatAdd model): the dense baseline is the model it was converted from
    dense = create(name) if is_shiftadd(source) and name else source
    spec = input_spec_of(source)
    calib, _ = _split(data, "train", data_dir, config.calib_samples, spec)
    sa = convert(source, calib, config=config)
    path = save_shiftadd(sa, Path(out_dir) / CHECKPOINT)
    x, y = _split(data, "test", data_dir, eval_limit, spec)
    converted = create(str(path))
    rec = {"checkpoint": str(path), "source": name, "config": sa.edgevit_shiftadd, "data": data, "eval_n": len(x),
           "top1_dense": top1(dense, x, y), "top1_converted": top1(converted, x, y),
           "energy": energy_report(dense, converted, x[:64]), "seconds": round(time.perf_counter() - t0, 1)}
    if source is not dense:
        rec["top1_source"] = top1(source, x, y)  # the converted model this step started from
    write_json(Path(out_dir) / "convert.json", rec)
    return rec


STATE = "finetune_{stage}.state.pt"  # training state of an unfinished finetune (deleted when it completes)


def _teacher(run: Path, config: Any, teacher: Any):
    """The distillation teacher: ``teacher`` (a module), ``config.teacher`` (a name/path), or the ``source`` that
    ``convert.json`` records; None when ``kd_weight`` is 0. Raises ConfigError when none can be found."""
    from ...errors import ConfigError
    from ...models import create

    if config.kd_weight == 0:
        return None
    if teacher is not None:
        return create(teacher) if isinstance(teacher, (str, Path)) else teacher
    if config.teacher:
        return create(config.teacher)
    conv = run / "convert.json"
    source = json.loads(conv.read_text()).get("source") if conv.exists() else None
    if not source:
        raise ConfigError(f"no distillation teacher for {run}: {conv} does not name the dense source model; pass "
                          f"--teacher NAME (the model the run was converted from) or --kd-weight 0")
    return create(source)


def finetune_run(run_dir: str | Path, *, config: Any = None, data: str = "fashion-mnist", data_dir: str | None = None,
                 eval_limit: int | None = 1000, model: Any = None, teacher: Any = None) -> dict:
    """Finetune the run folder's ``model.safetensors`` (or ``model``, a converted module) on ``data``'s training
    split, distilling from ``teacher`` (a module or name; default ``config.teacher`` or the dense model named in
    ``convert.json``), save it back (deploy form) and append the record to ``finetune.json``; return the record
    (top-1 before and after on the first ``eval_limit`` test images). The training state is saved in the run folder
    (``finetune_<stage>.state.pt``) every epoch; ``config.resume`` continues an interrupted run from it."""
    from ...artifact import write_json
    from ...errors import ConfigError
    from ...models import create, input_spec_of
    from .config import FinetuneConfig
    from .convert import is_shiftadd, save_shiftadd, to_trainable
    from .train import finetune_

    t0 = time.perf_counter()
    config = config or FinetuneConfig()
    run = Path(run_dir)
    ckpt = run if run.suffix == ".safetensors" else run / CHECKPOINT
    run = ckpt.parent
    if model is None:
        if not ckpt.exists():
            raise ConfigError(f"{ckpt} does not exist; convert a model first (edgevit shiftadd convert --model NAME "
                              f"--out {run})")
        model = create(str(ckpt))
    if not is_shiftadd(model):
        raise ConfigError(f"{ckpt} is not a ShiftAddViT model; convert it first (edgevit shiftadd convert)")
    if config.stage == "moe" and model.edgevit_shiftadd.get("mlp") != "moe":
        raise ConfigError("finetune stage 'moe' needs a model converted with --mlp moe (this one has mlp="
                          f"{model.edgevit_shiftadd.get('mlp')!r}); use --stage attention")
    state_path = run / STATE.format(stage=config.stage)
    if state_path.exists() and not config.resume:
        raise ConfigError(f"{state_path} holds the state of an interrupted finetune; continue it with --resume or "
                          f"delete the file to start over")
    spec = input_spec_of(model)
    tmodel = _teacher(run, config, teacher)
    x, y = _split(data, "train", data_dir, config.limit, spec)
    xt, yt = _split(data, "test", data_dir, eval_limit, spec)
    before = top1(model, xt, yt)
    trainable = to_trainable(model)
    hist = finetune_(trainable, x, y, config=config, teacher=tmodel, state_path=state_path)
    path = save_shiftadd(trainable, ckpt)
    rec = {"checkpoint": str(path), "config": config.to_dict(), "data": data, "eval_n": len(xt),
           "teacher": getattr(tmodel, "edgevit_name", None) if tmodel is not None else None,
           "top1_before": before, "top1_after": top1(create(str(path)), xt, yt), **hist,
           "seconds_total": round(time.perf_counter() - t0, 1)}
    log_path = run / "finetune.json"
    records = json.loads(log_path.read_text()) if log_path.exists() else []
    write_json(log_path, [*records, rec])
    return rec
