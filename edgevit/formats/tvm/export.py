"""Export a torch model to a TVM library (Relax, apache-tvm ≥ 0.27), tuned with MetaSchedule, checked on real images.

Pipeline (one static batch size per library; TVM compiles per shape)::

    torch.export.export(model, (example[batch],))
      → tvm.relax.frontend.torch.from_exported_program(...)      weights bound as constants
      → extra_passes (hook: your passes on the Relax IRModule)  e.g. custom shift/add TIR kernels
      → DecomposeOpsForInference, CanonicalizeBindings, LegalizeOps + FuseOps + FuseTIR ("zero" pipeline),
        AttachAttrLayoutFreeBuffers (CPU: let tuned kernels pre-pack the weights)
      → MetaSchedule: tune the fused TIR functions (tasks) into a JSON database, or reuse a cached one
      → MetaScheduleApplyDatabase, SplitLayoutRewritePreproc + LiftTransformParams + FoldConstant (CPU: weights
        are re-laid-out once, at compile time)
      → tvm.compile → export_library("model.so")

These are the steps of ``relax.get_pipeline("static_shape_tuning", cpu_weight_prepack=True)``, written out so the
export can hash the tuning tasks, skip tuning when a database exists, and count which tasks got a schedule.
With the weights bound as constants the library's ``main`` takes only the image batch.

Tuning (``trials``). Untuned CPU code is slow: TVM has no default CPU schedules for matmuls (DeiT-Tiny ~1.5 s per
image here). Measured on 2 busy cores: 64 trials ≈ 1.1 s, 1200 trials (24 min) ≈ 42 ms per DeiT-Tiny image —
still 2× torch eager (21 ms) and 2.9× OpenVINO FP32 (14.5 ms). For standard ViT ops on a CPU, OpenVINO or
onnxruntime are faster; TVM is here for targets and kernels they do not cover. ``trials=0`` skips tuning (the
record carries a loud warning unless a cached database is applied). Each tuning round (one task, ``trials // tasks``
candidates, at most 64) costs an evolutionary search of 5–50 s on 2 busy cores whatever its size, so budgets below
~8 trials per task (fmnist-vit-tiny: 25 tasks, DeiT-Tiny: 23) mostly pay overhead: 16 trials on fmnist-vit-tiny take
~4 min here.

The tuning database is cached in ``work_dir`` (default ``$EDGEVIT_TVM_CACHE``, else
``$XDG_CACHE_HOME/edgevit/tvm`` or ``~/.cache/edgevit/tvm``) under a key that hashes the tuning tasks (the fused
TIR functions: operators and shapes, not weight values), the target and the TVM version. So the same architecture,
batch and target reuse it — also with other weights. A cached database with at least ``trials`` trials is applied
without tuning (the record says ``"status": "reused"``); with fewer, tuning continues from it (``"extended"``);
``retune=True`` starts over. A copy of the database is written next to the library (``<stem>_tuning/``); passing
that folder as ``work_dir`` (on another machine with the same target, say) applies it when its key matches.

Files: ``model.so`` (the library), ``model.so.tvm.json`` (target, the CPU features the code needs, build host,
batch, TVM version, tuning summary — :class:`~edgevit.formats.tvm.runtime.TvmRuntime` checks it before loading) and
``model.so.spec.json`` (the input spec, so :func:`edgevit.runtimes.open_artifact` works).

Two facts about the TVM install (found the hard way): MetaSchedule tuning segfaults with apache-tvm-ffi 0.1.15.x
(in ``tvm::ffi::ToJSONGraph``) — 0.1.14.post1 works, so the ``tvm`` extra pins ``apache-tvm-ffi<0.1.15`` and the
export refuses to tune with a newer one; the tuner's cost model needs ``xgboost``. MetaSchedule's stock builder
imports every tensor intrinsic (CUDA, ROCm, Hexagon) in each build worker — 20–40 s on a small busy CPU, beyond its
30 s build timeout — so the export uses its own builder (in :mod:`edgevit.formats.tvm.tuning`) and loads only the
CPU intrinsics.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import DEFAULT_TASK, Artifact
from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult, ParityRecord
from ...spec import InputSpec
from ...versions import library_versions
from ..common import first_lines, quiet
from ..parity import parity_inputs
from .spec import FORMAT, metadata_path
from .tuning import copy_database, default_cache_dir, lower_and_tune

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 256
FORMAT_VERSION = 1

IRPass = Callable[[Any], Any]


def export_tvm(source: Any, out_dir: str | Path, *, target: Any = "llvm", trials: int = DEFAULT_TRIALS,
               batch: int = 1, work_dir: str | Path | None = None, retune: bool = False,
               max_trials_per_task: int | None = None, tuning_timeout_s: float = 60.0, seed: int = 0,
               mcpu: str | None = None, num_cores: int | None = None, extra_passes: Sequence[IRPass] = (),
               convert_map: dict | None = None, parity: bool = True, parity_images: Any = None,
               tolerance: float | None = None, parity_samples: int = 32, cc: str | None = None,
               example_inputs: Sequence[np.ndarray] | None = None,
               tolerance_precision: str = "fp32") -> ExportResult:
    """Compile ``source`` with TVM for ``target`` into ``out_dir/model.so`` (or the ``.so`` path given).

    ``source`` is a torch module (with ``edgevit_spec``, as :func:`edgevit.models.create` attaches), a torch
    :class:`~edgevit.artifact.Artifact`, or a model name / checkpoint path.

    - ``target``: ``"llvm"`` (this CPU: see :mod:`edgevit.formats.tvm.target`), ``"cuda"``, a target dict such
      as ``{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 4}``, its JSON string, or a TVM tag; ``mcpu`` /
      ``num_cores`` override those fields of an llvm target;
    - ``trials``: MetaSchedule trials (0 = no tuning; see the module docstring for budgets and the cache);
      ``work_dir``: the tuning cache root; ``retune``: ignore a cached database; ``max_trials_per_task``,
      ``tuning_timeout_s`` (per build / run of one candidate), ``seed``: tuner settings;
    - ``batch``: the static batch size the library is compiled for;
    - ``extra_passes``: ``tvm.transform.Pass`` objects or functions ``IRModule -> IRModule`` applied to the
      imported Relax module before lowering and tuning (the door for custom TIR kernels: a pass that replaces
      ops by ``call_tir`` to hand-written PrimFuncs; mark them ``tirx.is_scheduled`` to keep the tuner off);
      ``convert_map``: extra torch-op converters for ``from_exported_program(custom_convert_map=...)``;
    - ``parity``: run the library on real images (``parity_images``: preprocessed NCHW float32, raw uint8 images
      or an ArrayDataset; required unless ``parity=False``, :class:`ExportError` otherwise) and compare with torch.
      Skipped, with the reason recorded, when the library cannot run on this machine (another CPU or a GPU);
      ``tolerance`` (max |Δ output|; default: the ``tolerance_precision`` row of
      :data:`edgevit.formats.parity.DEFAULT_THRESHOLDS` scaled by the output magnitude);
    - ``cc``: a cross compiler (e.g. ``aarch64-linux-gnu-g++``) for libraries built for another architecture;
    - ``example_inputs``: for a module that does not take one image batch (a dual encoder's text tower:
      ``input_ids`` and ``attention_mask``, int64 ``[batch, tokens]``): the arrays it is traced with; their shapes
      are the library's static input shapes (``batch`` must be their first dimension) and are recorded as
      ``inputs`` in the metadata. Such a module needs no input spec; no spec side file is written and ``parity``
      must be False (the caller checks the outputs: :func:`edgevit.methods.vlm.deploy.export_towers` does, by
      cosine similarity). Run the library with :meth:`~edgevit.formats.tvm.runtime.TvmRuntime.run_inputs`.

    Returns an :class:`~edgevit.results.ExportResult` (the ``tvm`` artefact with ``meta`` ``batch``, ``target``
    and ``tuning_status``; parity None when skipped) whose ``to_dict()`` is the JSON record (paths, target, build host, required CPU features, tuning summary, parity,
    versions, timings). Raises :class:`ExportError` (capture/import/compile failures name the operator),
    :class:`ParityError` (library kept; record as ``exc.record``), :class:`MissingBackendError` (tvm, xgboost).
    """
    t0 = time.perf_counter()
    if not isinstance(trials, int) or trials < 0:
        raise ConfigError(f"trials must be an integer ≥ 0 (0 = untuned), got {trials!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be an integer ≥ 1, got {batch!r}")
    if parity_samples < 1:
        raise ConfigError(f"parity_samples must be ≥ 1, got {parity_samples}")
    if max_trials_per_task is not None and max_trials_per_task < 1:
        raise ConfigError(f"max_trials_per_task must be ≥ 1 or None, got {max_trials_per_task}")
    from ..._optional import require

    tvm = require("tvm", extra="tvm", feature="TVM export")
    from .target import describe_target, host_info, incompatibility, llvm_part, resolve_target, target_isa_features

    if example_inputs is not None:
        if parity:
            raise ConfigError("export_tvm: with example_inputs the caller checks parity; pass parity=False")
        example_inputs = [np.ascontiguousarray(a) for a in example_inputs]
        if not example_inputs or any(a.ndim < 1 or a.shape[0] != batch for a in example_inputs):
            raise ConfigError(f"export_tvm: every example input needs batch {batch} as its first dimension, got "
                              f"shapes {[tuple(a.shape) for a in example_inputs]}")
        module, spec = source, None
        name = str(getattr(source, "edgevit_name", type(source).__name__))
    else:
        module, spec, name = _resolve_model(source)
    path = _resolve_out_path(out_dir)
    tgt, tdict, target_notes = resolve_target(target, mcpu=mcpu, num_cores=num_cores)
    images, described = parity_inputs(parity_images, spec, what="TVM") if parity else (None, None)

    mod, t_import = _import(module, spec, batch, convert_map, name, example_inputs=example_inputs)
    mod, pass_names = _apply_extra_passes(mod, extra_passes)
    mod, tuning = lower_and_tune(mod, tgt, tdict, trials=trials, cache_root=Path(work_dir or default_cache_dir()),
                                  retune=retune, max_trials_per_task=max_trials_per_task,
                                  timeout_s=tuning_timeout_s, seed=seed, name=name)
    t = time.perf_counter()
    try:
        with quiet(native=True):  # TVM's C++ warnings go to the log, not the terminal
            executable = tvm.compile(mod, target=tgt)
            fcompile = None
            if cc:
                from tvm.support.cc import cross_compiler

                fcompile = cross_compiler(cc)
            executable.export_library(str(path), fcompile=fcompile)
    except Exception as exc:  # TVM raises TVMError / ValueError / InternalError from C++
        raise ExportError(f"TVM could not compile {name} for {describe_target(tdict)} "
                          f"({type(exc).__name__}: {first_lines(exc)}). If an extra pass produced the failing "
                          f"function, check it; otherwise try trials=0 or report the model.") from exc
    t_compile = time.perf_counter() - t
    db_copy = copy_database(tuning, path)

    cpu = llvm_part(tdict)
    required = sorted(target_isa_features(tvm.target.Target(cpu))) if cpu and cpu.get("mcpu") else []
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library": path.name, "source": name, "batch": batch,
        "input_shape": [batch, *spec.input_size] if spec is not None else None,
        "input_dtype": spec.dtype if spec is not None else None,
        "inputs": [{"shape": list(a.shape), "dtype": str(a.dtype)} for a in example_inputs] if example_inputs else None,
        "task": getattr(module, "edgevit_task", DEFAULT_TASK), "target": tdict,
        "target_description": describe_target(tdict), "target_notes": target_notes, "required_isa_features": required,
        "build_host": host_info(), "tvm_version": tvm.__version__,
        "versions": library_versions() | {"llvm": _llvm_version()},
        "tuning": {k: v for k, v in tuning.items() if k != "_db_dir"} | {"database_copy": db_copy},
        "extra_passes": pass_names, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from ...artifact import write_json
    from ...runtimes import spec_sidecar_path, write_spec_sidecar

    write_json(metadata_path(path), meta)
    if spec is not None:
        write_spec_sidecar(path, spec, name, task=meta["task"])

    record: dict[str, Any] = {
        "format": "tvm", "path": str(path), "metadata_path": str(metadata_path(path)),
        "spec_path": str(spec_sidecar_path(path)) if spec is not None else None, **{k: meta[k] for k in (
            "source", "batch", "input_shape", "inputs", "task", "target", "target_description", "target_notes",
            "required_isa_features", "build_host", "tuning", "extra_passes", "versions")},
        "file_size": path.stat().st_size, "input_spec": spec.to_dict() if spec is not None else None, "import_time_s": round(t_import, 3),
        "compile_time_s": round(t_compile, 3), "max_abs_diff": None, "mean_abs_diff": None, "cosine": None,
        "top1_agreement": None, "n": None, "parity": None, "parity_inputs": None, "parity_skipped": None,
    }
    if tuning.get("warning"):
        record["warning"] = tuning["warning"]
    why_not = incompatibility(meta)
    checked = None
    if not parity:
        record["parity_skipped"] = "parity=False"
    elif why_not:
        record["parity_skipped"] = f"the library cannot run on this machine: {why_not}"
        log.warning("%s: parity check skipped: %s. Run `edgevit eval --artifact %s` on the target machine.",
                    path, why_not, path)
    else:
        record["parity_inputs"] = described
        what = f"TVM export of {name} ({path.name}, {describe_target(tdict)}, {tuning['status']}) vs torch"
        try:
            result = _parity(module, path, spec, images, batch, tolerance=tolerance, what=what,
                             precision=tolerance_precision)
        except ParityError as exc:
            failed = getattr(exc, "record", None) or {}
            record["parity"] = failed
            record.update({k: failed.get(k) for k in ("max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement",
                                                      "n")})
            record["time_s"] = round(time.perf_counter() - t0, 3)
            err = ParityError(f"{exc} The library is kept at {path}.")
            err.record = record
            raise err from exc
        checked = result
    art = Artifact(kind="tvm", spec=spec, path=path, source=name, task=meta["task"],
                   meta={"batch": batch, "target": tdict, "tuning_status": tuning["status"]})
    out = ExportResult(artifact=art, parity=checked, seconds=time.perf_counter() - t0, versions=record["versions"],
                       fields=record)
    log.info("exported %s to %s (%s, batch %d, tuning %s, %.1f MB, max |diff| %s) in %.1f s", name, path,
             describe_target(tdict), batch, tuning["status"], record["file_size"] / 1e6,
             checked and checked.max_abs_diff, out.seconds)
    return out


# ------------------------------------------------------------------------------------------------ inputs


def _resolve_model(source: Any):
    from ..common import resolve_torch_source

    return resolve_torch_source(source, what="TVM")


def _resolve_out_path(out: str | Path) -> Path:
    p = Path(out)
    if p.suffix == ".so":
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
    if p.suffix and not p.is_dir():
        raise ConfigError(f"TVM output must be a directory (model.so is written there) or a path ending in .so, "
                          f"got {out}")
    p.mkdir(parents=True, exist_ok=True)
    return p / "model.so"



def _import(module, spec: InputSpec | None, batch: int, convert_map: dict | None, name: str, *,
            example_inputs: Sequence[np.ndarray] | None = None):
    """(Relax IRModule with the weights as constants, seconds) via torch.export → from_exported_program. Traced with
    a random batch of ``spec``, or with ``example_inputs`` when given. torch's fused fast path of
    ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` (one op TVM's importer does not know) is switched
    off while tracing."""
    import copy

    import torch


    t = time.perf_counter()
    params = list(module.parameters())
    if params and params[0].device.type != "cpu":
        module = copy.deepcopy(module).cpu()
    was_training = module.training
    module.eval()
    if example_inputs is not None:
        examples = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example_inputs)
    else:
        example = torch.from_numpy(spec.example(batch))
        if params and params[0].is_floating_point():
            example = example.to(params[0].dtype)
        examples = (example,)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        with quiet(), torch.no_grad():
            try:
                ep = torch.export.export(module, examples, strict=False)
            except Exception as exc:  # torch.export raises many error types
                raise ExportError(f"torch.export could not capture {name} at batch {batch} for TVM "
                                  f"({type(exc).__name__}: {first_lines(exc)}). The model must be traceable by "
                                  f"torch.export (no data-dependent Python control flow).") from exc
            from tvm.relax.frontend.torch import from_exported_program

            try:
                mod = from_exported_program(ep, keep_params_as_input=False, unwrap_unit_return_tuple=True,
                                            custom_convert_map=convert_map)
            except Exception as exc:  # the importer raises AssertionError/ValueError/KeyError on unknown ops
                ops = re.findall(r"[\w.]+\.(?:default|Tensor|Scalar|int)\b", str(exc))
                hint = f" Unsupported operator(s): {', '.join(dict.fromkeys(ops))}." if ops else ""
                raise ExportError(f"TVM's torch importer (from_exported_program) failed on {name} "
                                  f"({type(exc).__name__}: {first_lines(exc)}).{hint} Add a converter with "
                                  f"convert_map={{'op.default': fn}}, or replace the op in the model.") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        module.train(was_training)
    return mod, time.perf_counter() - t


def _apply_extra_passes(mod, extra_passes: Sequence[IRPass]):
    """Apply the caller's passes (``tvm.transform.Pass`` or ``fn(IRModule) -> IRModule``); returns their names."""
    import tvm

    names = []
    for i, p in enumerate(extra_passes or ()):
        label = getattr(getattr(p, "info", None), "name", None) or getattr(p, "__qualname__", None) or repr(p)
        names.append(str(label))
        try:
            out = p(mod)
        except Exception as exc:  # the caller's code
            raise ExportError(f"extra_passes[{i}] ({label}) failed on the imported Relax module "
                              f"({type(exc).__name__}: {first_lines(exc)})") from exc
        if not isinstance(out, tvm.IRModule):
            raise ExportError(f"extra_passes[{i}] ({label}) returned {type(out).__name__}, not a tvm.IRModule")
        mod = out
    return mod, names


# ------------------------------------------------------------------------------------------------ parity


def _parity(module, path: Path, spec: InputSpec, images: np.ndarray, batch: int, *, tolerance: float | None,
            what: str, precision: str = "fp32") -> ParityRecord:
    from ...runtimes.base import run_batched
    from ..parity import check_parity, default_tolerance, is_classifier
    from ..reference import torch_logits
    from .runtime import TvmRuntime

    reference = torch_logits(module, images, what="TVM parity check")
    with TvmRuntime(Artifact(kind="tvm", spec=spec, path=path)) as rt:
        try:
            cand = run_batched(rt, images, batch)  # the library's batch is fixed: the last chunk padded
        except Exception as exc:  # the library compiled but does not run
            raise ExportError(f"the TVM library {path} does not run on real inputs: {exc}") from exc
    tol = tolerance if tolerance is not None else default_tolerance(precision, reference)
    return check_parity(reference, cand, tolerance=tol, what=what, classifier=is_classifier(spec))


def _llvm_version() -> str | None:
    """The major version of the LLVM that TVM was built with (None when unknown)."""
    try:
        from tvm.target import codegen

        return str(codegen.llvm_version_major())
    except Exception:  # noqa: BLE001 - informational only
        return None
