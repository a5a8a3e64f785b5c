"""The public Python API: one function per job, in the style of ``nncf.quantize(model, dataset, *, ...)`` and
``timm.create_model``. Models and data are positional; everything else is keyword-only. Each returns a typed
result; none prints. ``import edgevit`` stays light: every function imports what it needs when called.

Example (Fashion-MNIST is the Debian package ``dataset-fashion-mnist``)::

    import edgevit
    from edgevit.data import load_dataset, preprocess

    model = edgevit.create_model("fmnist-vit")
    test = load_dataset("fashion-mnist", "test", limit=256)
    onnx = edgevit.export(model, "onnx", out="runs/x/model.onnx", parity_images=preprocess(test.images, model.edgevit_spec))
    print(onnx.artifact.path, onnx.parity.max_abs_diff)
    lat = edgevit.profile(onnx.artifact, runtime="onnxruntime", batch_sizes=(1, 8), inputs=preprocess(test.images,
                          model.edgevit_spec))
    print(lat.rows[0].median_ms)
    q = edgevit.quantize(model, load_dataset("fashion-mnist", "train", limit=2000), out_dir="runs/q",
                         backend="onnxruntime", eval_data=test)
    print(q.artifact.path, q.record["decision"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .artifact import Artifact

__all__ = ["DistillResult", "EarlyExitResult", "LatencyRow", "ProfileResult", "distill", "early_exit", "export",
           "profile", "quantize"]


# ------------------------------------------------------------------------------------------------------ export
def export(model: Any, format: str, *, out: str | Path, **options: Any):
    """Export ``model`` to ``format`` and check it against the source on real images.

    ``model``: a torch module built by :func:`edgevit.create_model`, a model name or checkpoint path — or, for the
    formats that convert an ONNX file (``ort_mobile``, ``tensorrt``), an ONNX path or :class:`~edgevit.artifact.Artifact`.
    ``format``: a name from ``edgevit.formats.exporters()`` (onnx, ort_mobile, openvino, tvm, tensorrt). ``out``: a
    file or directory, as the format's exporter documents. ``options`` go to the exporter
    (e.g. ``opset=18``, ``precision="fp16"``, ``parity_images=<NCHW float32 array>``).

    Returns the exporter's result (its artefact, the parity figures, seconds, library versions).
    Raises :class:`~edgevit.errors.RegistryError` for an unknown format, :class:`~edgevit.errors.ConfigError` for
    bad options, :class:`~edgevit.errors.ExportError` / :class:`~edgevit.errors.ParityError` when the export fails
    or does not match its source, :class:`~edgevit.errors.MissingBackendError` when the format's backend is not
    installed (naming the pip extra).
    """
    from .format_registry import get_exporter

    return get_exporter(format)(model, out, **options)


# ---------------------------------------------------------------------------------------------------- quantize
def quantize(model: Any, calib: Any = None, *, out_dir: str | Path, config: Any = None, eval_data: Any = None,
             **overrides: Any):
    """INT8 post-training quantisation with ViT guardrails, gated on measured top-1 and latency.

    ``model``: a torch module, model name, or an exported ONNX / OpenVINO IR file. ``calib``: real calibration data
    (an :class:`~edgevit.data.ArrayDataset`, uint8 images, or a preprocessed NCHW batch; None: the config's
    ``calib`` dataset). ``config``: a :class:`~edgevit.methods.quantize.QuantizeConfig`; ``overrides`` replace its
    fields (``backend="onnxruntime"``, ``budget=1.0``, ...). ``eval_data``: the accuracy-gate data.

    Returns :class:`~edgevit.methods.quantize.core.QuantizeResult` (``artifact`` handed on, ``int8``, ``record``).
    Raises :class:`~edgevit.errors.QuantizationError` when no INT8 attempt meets the accuracy budget,
    :class:`~edgevit.errors.ConfigError` for bad options, :class:`~edgevit.errors.MissingBackendError`.
    """
    from .methods.quantize import QuantizeConfig
    from .methods.quantize.core import quantize as _quantize

    cfg = config or QuantizeConfig()
    if overrides:
        cfg = _replace(cfg, overrides)
    return _quantize(model, calib, out_dir=out_dir, config=cfg, eval_data=eval_data)


# ----------------------------------------------------------------------------------------------------- distill
@dataclass
class DistillResult:
    """A distilled student: ``model`` (the trained torch module), ``path`` (``student.safetensors``), ``top1`` on the
    evaluation split after the last epoch (fraction 0–1; None when not evaluated), ``record`` (history, teacher
    calls, timings — what ``edgevit distill train --json`` writes)."""

    model: Any
    path: Path
    top1: float | None
    record: dict = field(repr=False)

    def to_dict(self) -> dict:
        """The training record, as ``edgevit distill train --json`` writes it."""
        return dict(self.record)


def distill(student: Any, *, out_dir: str | Path, cache: Any = None, teacher: Any = None, dataset: Any = None,
            test_dataset: Any = None, config: Any = None, **overrides: Any) -> DistillResult:
    """TinyViT-style distillation of ``student`` (a torch module or model name).

    ``cache``: a :class:`~edgevit.methods.distill.cache.TeacherCache` (or its directory) of sparse teacher top-K
    targets — the student then trains without running the teacher; ``teacher``: for ``mode="online"`` (and to
    check the cache's fingerprint). ``config``: a :class:`~edgevit.methods.distill.trainer.TrainConfig`;
    ``overrides`` replace its fields (``epochs=10``, ``mode="cache"``, ...).

    Raises :class:`~edgevit.errors.ConfigError` (a cache made by another teacher or dataset, bad options).
    """
    from .methods.distill.cache import TeacherCache
    from .methods.distill.trainer import TrainConfig, train_student
    from .models import create

    model = create(student) if isinstance(student, (str, Path)) else student
    teacher_model = create(teacher) if isinstance(teacher, (str, Path)) else teacher
    if isinstance(cache, (str, Path)):
        cache = TeacherCache(cache)
    cfg = config or TrainConfig()
    if overrides:
        cfg = _replace(cfg, overrides)
    record = train_student(model, out_dir=out_dir, config=cfg, cache=cache, teacher=teacher_model, dataset=dataset,
                           test_dataset=test_dataset)
    return DistillResult(model=model, path=Path(record["student_path"]), top1=record["test_top1"], record=record)


# -------------------------------------------------------------------------------------------------- early exit
@dataclass
class EarlyExitResult:
    """A backbone with trained LGViT exits: ``model`` (:class:`~edgevit.methods.early_exit.model.EarlyExitViT`) and
    ``record`` (stage-1 and stage-2 losses, the exit plan)."""

    model: Any
    record: dict = field(repr=False)

    def to_dict(self) -> dict:
        """The training record (per-stage losses and steps, the exit plan)."""
        return dict(self.record)


def early_exit(model: Any, data: Any, *, config: Any = None, blocks: list[int] | None = None,
               **overrides: Any) -> EarlyExitResult:
    """Attach LGViT local-perception / global-aggregation exits to ``model`` and train them (stage 1, then stage 2).

    ``data``: real training data (an :class:`~edgevit.data.ArrayDataset` or ``(images, labels)``). ``blocks``: the
    blocks after which exits sit (default: the method's plan). ``config``: a
    :class:`~edgevit.methods.early_exit.config.TrainConfig`; ``overrides`` replace its fields. Calibrating
    thresholds and exporting the cascade: :func:`edgevit.methods.early_exit.calibrate`,
    :func:`edgevit.formats.cascade.export.export_cascade`.

    Raises :class:`~edgevit.errors.ConfigError` for a backbone without ViT blocks or bad options.
    """
    from .methods.early_exit.config import TrainConfig
    from .methods.early_exit.train import train_early_exit
    from .models import create

    backbone = create(model) if isinstance(model, (str, Path)) else model
    cfg = config or TrainConfig()
    if overrides:
        cfg = _replace(cfg, overrides)
    ee, record = train_early_exit(backbone, data, config=cfg, blocks=blocks)
    return EarlyExitResult(model=ee, record=record)


# ----------------------------------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class LatencyRow:
    """One runtime × batch measurement. Times in milliseconds per call (one batch); ``throughput`` in images/s;
    ``runs``: timed calls. ``details``: everything else measured or stamped (system, versions, input source,
    ``stability``, ``memory`` (peak RSS MiB), ``energy`` (RAPL, or why not))."""

    runtime: str
    batch: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    throughput: float
    details: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyRow:
        keys = ("runtime", "batch", "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "runs", "throughput")
        return cls(**{k: d[k] for k in keys}, details={k: v for k, v in d.items() if k not in keys})

    @property
    def stability(self) -> dict:
        """The stability record of the timed window: ``verdict`` (``stable`` / ``noisy`` / ``contended``), ``message``
        and the figures behind them (:func:`edgevit.profiling.stability.assess`)."""
        return self.details.get("stability") or {}

    @property
    def verdict(self) -> str | None:
        """``stable``, ``noisy`` or ``contended`` (None for a row read from an older file without one)."""
        return self.stability.get("verdict")

    def to_dict(self) -> dict:
        """The row as ``edgevit profile --json`` writes it."""
        out = {k: getattr(self, k) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "runs",
                                             "throughput", "batch", "runtime")}
        return {**self.details, **out}


@dataclass(frozen=True)
class ProfileResult:
    """Latency rows, one per runtime × batch size, in measuring order."""

    rows: list[LatencyRow]

    def to_dict(self) -> dict:
        """``{"results": [...]}`` as ``edgevit profile --json`` writes it."""
        return {"results": [r.to_dict() for r in self.rows]}


def profile(model: Any, *, runtime: str | Sequence[str] | None = None, batch_sizes: Sequence[int] = (1,),
            inputs: np.ndarray | None = None, duration_s: float = 3.0, warmup_s: float = 0.5, runs: int | None = None,
            threads: int | None = None, device: str = "cpu", until_stable: bool = False,
            max_duration_s: float = 60.0) -> ProfileResult:
    """Latency of ``model`` per runtime and batch size: time-based warm-up, then ``duration_s`` of timed calls (or
    ``runs`` calls) per batch size.

    ``model``: a torch module, a model name, an exported file path or an :class:`~edgevit.artifact.Artifact`.
    ``runtime``: one name or several (default: the artefact kind's usual runtime: torch, onnxruntime, openvino...).
    ``inputs``: a real preprocessed NCHW float32 batch (rows are repeated for larger batches; random inputs are used
    and recorded as such when None). ``until_stable``: time in windows until the spread settles, at most
    ``max_duration_s`` per runtime × batch. Every row has a stability verdict (:attr:`LatencyRow.stability`).

    Raises :class:`~edgevit.errors.RegistryError` for an unknown runtime, :class:`~edgevit.errors.RuntimeLoadError`
    when a runtime cannot load the artefact, :class:`~edgevit.errors.MissingBackendError`.
    """
    from .artifact import Artifact
    from .profiling.latency import profile_runtime
    from .runtimes import load_runtime, open_artifact, runtimes_for_kind

    art = _as_artifact(model, Artifact, open_artifact)
    names = [runtime] if isinstance(runtime, str) else list(runtime or [])
    if not names:
        names = ["torch"] if art.kind == "torch" else runtimes_for_kind(art.kind)[:1]
    rows: list[LatencyRow] = []
    for name in names:
        rt = load_runtime(name, art, threads=threads, device=device)
        for d in profile_runtime(rt, batch_sizes=tuple(batch_sizes), warmup_s=warmup_s, duration_s=duration_s,
                                 runs=runs, inputs=inputs, until_stable=until_stable, max_duration_s=max_duration_s):
            rows.append(LatencyRow.from_dict(d))
    return ProfileResult(rows)


# ----------------------------------------------------------------------------------------------------- helpers
def _replace(config: Any, overrides: dict) -> Any:
    """A copy of a config model with ``overrides`` applied; unknown keys raise :class:`ConfigError`."""
    from .errors import ConfigError

    unknown = [k for k in overrides if k not in type(config).model_fields]
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                          f"{', '.join(type(config).model_fields)}")
    return type(config).model_validate({**config.model_dump(), **overrides})


def _as_artifact(model: Any, artifact_cls: type, open_artifact) -> Artifact:
    if isinstance(model, artifact_cls):
        return model
    if isinstance(model, (str, Path)) and Path(model).exists():
        return open_artifact(model)
    from .models import create

    m = create(model) if isinstance(model, (str, Path)) else model
    if not hasattr(m, "edgevit_spec"):
        from .errors import ConfigError

        raise ConfigError("profile needs a model built by edgevit.create_model (it carries its input spec), a model "
                          "name, an exported file or an Artifact")
    return artifact_cls(kind="torch", spec=m.edgevit_spec, model=m, source=getattr(m, "edgevit_name", None))
