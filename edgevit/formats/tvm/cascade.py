"""An early-exit cascade compiled graph by graph with TVM: one library per segment and exit head, symbolic batch.

:func:`export_tvm_cascade` reads an ONNX cascade (``manifest.json`` of :mod:`edgevit.formats.cascade.export`, float
or the INT8 QDQ copy from ``quantize``) and compiles every graph::

    onnx.load(segment_k.onnx)
      → tvm.relax.frontend.onnx.from_onnx(..., keep_params_in_input=False)   the batch axis stays a symbolic var
      → DecomposeOpsForInference, CanonicalizeBindings, the "zero" pipeline (LegalizeOps, FuseOps, FuseTIR)
      → tvm.compile(target) → export_library("segment_k.so")

Each graph is compiled for the inputs it really receives (``segment_0``: images ``[n, C, H, W]``; every other
segment and head: the tokens ``[n, T, D]`` of the segment before it) with the batch ``n`` a symbolic dimension
(Relax ``R.Tensor(("batch", T, D))``): the ONNX graphs' dynamic batch axis is imported as a ``tir.SizeVar`` and the
library runs any batch, which the cascade needs since exited samples leave the batch (measured here on
fmnist-vit-tiny graphs: batches 1, 3 and 8 through one library match onnxruntime within 3e-7).

No MetaSchedule tuning: it tunes static shapes, and these graphs have a symbolic batch, so a tuning database would
not apply (``trials`` > 0 is recorded as a warning and ignored). Untuned CPU code is slower than onnxruntime /
OpenVINO (measured: 4× per image at batch 1, 10× in batches of 100; BENCHMARKS.md); the cascade on TVM is there for
targets those runtimes do not cover. Compiling the nine graphs of a four-exit cascade on 2 busy cores took 23 s
(FP32) and 46 s (INT8 QDQ) for fmnist-vit-tiny, 52 s and 78 s for fmnist-vit-micro (load average 10).

INT8 QDQ graphs: TVM's ONNX importer maps ``QuantizeLinear``/``DequantizeLinear`` to ``relax.quantize`` /
``relax.dequantize``, which legalize to float arithmetic with the same rounding and saturation: the library
computes what the QDQ graph specifies (checked below against onnxruntime's INT8 kernels with the INT8 parity
bounds), but in float32, with no INT8 kernels, so it is not faster than the float cascade. The record says so
(``int8_execution``).

Files, next to ``manifest.json`` (``backend: tvm``, thresholds, criterion, calibration and ``int8`` record kept):
``<graph>.so`` and ``<graph>.so.tvm.json`` (target, CPU features, ``batch: null`` = symbolic, ``input_shape`` with
``null`` for the batch, ``cascade_graph: true``) per graph. The cascade runtime runs it on the ``tvm`` runtime
(``edgevit eval --artifact DIR/manifest.json``; ``tvm`` is one of the cascade format's backends). The new cascade
is run against its source on real images (:func:`edgevit.formats.cascade.convert.convert_cascade`): a float cascade
must give the same exit decisions and predictions on every image and logits within the fp32 tolerance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult
from ..common import first_lines

log = logging.getLogger(__name__)

INT8_EXECUTION = ("float32 arithmetic with the QDQ rounding and saturation (relax.quantize/dequantize legalised to "
                  "float TIR): numerically the QDQ graph, but no INT8 kernels, so no INT8 speed-up on TVM")


def compile_onnx_graph(onnx_path: str | Path, library: str | Path, spec, *, tgt, tdict: dict,
                       source: str | None = None) -> dict:
    """Compile one ONNX graph (dynamic batch axis) into ``library`` (``.so``) with a symbolic batch dimension, and
    write its metadata ``<library>.tvm.json`` and input-spec side file. ``spec``: the graph's
    :class:`~edgevit.spec.InputSpec` (input/output names of the graph); ``tgt``/``tdict``: the resolved target
    (:func:`edgevit.formats.tvm.target.resolve_target`). Returns ``{"input_shape", "import_time_s",
    "compile_time_s", "qdq_nodes"}``. Raises :class:`ExportError` naming the graph when TVM cannot import or compile
    it."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax import transform as T
    from tvm.relax.frontend.onnx import from_onnx

    from ...artifact import write_json
    from ...runtimes import write_spec_sidecar
    from ...versions import library_versions
    from ..common import quiet
    from .export import FORMAT_VERSION
    from .spec import FORMAT, metadata_path
    from .target import describe_target, host_info, llvm_part, target_isa_features

    onnx_path, library = Path(onnx_path), Path(library)
    t = time.perf_counter()
    model = onnx.load(str(onnx_path))
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ExportError(f"{onnx_path.name}: a cascade graph has one input, this one has "
                          f"{[i.name for i in inputs]}; re-export the cascade")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if not dims or dims[0] is not None or any(d is None for d in dims[1:]):
        raise ExportError(f"{onnx_path.name}: input {inputs[0].name} has shape {dims}; the TVM cascade needs a "
                          f"dynamic batch axis and static other axes (re-export the cascade with edgevit)")
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    try:
        with quiet(native=True):
            mod = from_onnx(model, keep_params_in_input=False)
    except Exception as exc:  # the importer raises many types on unknown ops
        raise ExportError(f"TVM's ONNX importer (relax.frontend.onnx.from_onnx) failed on the cascade graph "
                          f"{onnx_path.name} ({type(exc).__name__}: {first_lines(exc)}); export the cascade to "
                          f"onnxruntime or OpenVINO instead, or report the operator") from exc
    t_import = time.perf_counter() - t
    t = time.perf_counter()
    try:
        with quiet(native=True), tgt:  # legalisation prints topi's C++ warnings ("fast mode" gathers)
            mod = tvm.transform.Sequential([T.DecomposeOpsForInference(), T.CanonicalizeBindings(),
                                            relax.get_pipeline("zero")])(mod)
        with quiet(native=True):  # TVM's C++ warnings (topi "fast mode" gathers) go to the log, not the terminal
            executable = tvm.compile(mod, target=tgt)
            executable.export_library(str(library))
    except Exception as exc:  # TVM raises TVMError / InternalError from C++
        raise ExportError(f"TVM could not compile the cascade graph {onnx_path.name} for {describe_target(tdict)} "
                          f"({type(exc).__name__}: {first_lines(exc)})") from exc
    t_compile = time.perf_counter() - t
    cpu = llvm_part(tdict)
    required = sorted(target_isa_features(tvm.target.Target(cpu))) if cpu and cpu.get("mcpu") else []
    shape = [None, *dims[1:]]
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library": library.name, "source": source,
        "batch": None, "input_shape": shape, "input_name": inputs[0].name, "input_dtype": "float32",
        "cascade_graph": True, "onnx": onnx_path.name, "target": tdict, "target_description": describe_target(tdict),
        "required_isa_features": required, "build_host": host_info(), "tvm_version": tvm.__version__,
        "versions": library_versions(),
        "tuning": {"status": "untuned", "why": "symbolic batch: MetaSchedule tunes static shapes"},
        "qdq_nodes": qdq, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(metadata_path(library), meta)
    write_spec_sidecar(library, spec, source)
    return {"input_shape": shape, "import_time_s": round(t_import, 3), "compile_time_s": round(t_compile, 3),
            "qdq_nodes": qdq}


def export_tvm_cascade(manifest: str | Path, out_dir: str | Path, *, target: Any = "llvm", mcpu: str | None = None,
                       num_cores: int | None = None, trials: int = 0, parity_images: Any = None,
                       threads: int | None = None) -> ExportResult:
    """Compile every graph of the ONNX cascade at ``manifest`` with TVM into ``out_dir`` (see the module docstring).

    ``target``/``mcpu``/``num_cores``: as :func:`edgevit.formats.tvm.export.export_tvm` (``"llvm"`` = this CPU);
    ``trials``: accepted for the stage's config; > 0 is ignored with a recorded warning (no tuning of symbolic
    shapes); ``parity_images``: real images (raw uint8, preprocessed float32 or an ArrayDataset; required) on which
    the TVM cascade is run against the source cascade (on onnxruntime) at the source's thresholds.

    Returns an :class:`~edgevit.results.ExportResult`: the ``cascade`` artefact (``out_dir/manifest.json``,
    ``meta["graphs"] == "tvm"``), its parity the TVM cascade vs the source (``extra``: ``exit_agreement``,
    ``exits_share``). ``to_dict()`` adds per graph the compile record and ``compile_time_s`` (all graphs, seconds),
    ``target``, ``int8_execution`` (INT8 cascades). Raises :class:`ConfigError` for a cascade whose graphs are not
    ONNX, :class:`ExportError` when a graph does not import or compile, :class:`ParityError` when the float cascade's
    exit decisions or predictions differ on any image (or its logits beyond the fp32 tolerance; an INT8 cascade:
    beyond the INT8 bounds), :class:`MissingBackendError` without TVM.
    """
    from ..._optional import require
    from ..cascade.convert import convert_cascade
    from ..cascade.runtime import read_manifest
    from .target import describe_target, resolve_target

    t0 = time.perf_counter()
    if not isinstance(trials, int) or trials < 0:
        raise ConfigError(f"trials must be an integer ≥ 0, got {trials!r}")
    require("tvm", extra="tvm", feature="TVM cascade export")
    m = read_manifest(manifest)
    if m.get("backend") != "onnx":
        raise ConfigError(f"the TVM cascade export reads ONNX graphs, but the cascade at {manifest} holds "
                          f"{m.get('backend')} graphs; export the cascade as ONNX (early_exit format: onnx, quantize "
                          f"with backend onnxruntime) and put export_tvm before stages that convert it")
    tgt, tdict, notes = resolve_target(target, mcpu=mcpu, num_cores=num_cores)
    warning = None
    if trials:
        warning = (f"trials={trials} ignored: the cascade's graphs have a symbolic batch (exited samples leave the "
                   f"batch) and MetaSchedule tunes static shapes; the libraries are untuned")
        log.warning("TVM cascade export: %s", warning)
    int8 = bool(m.get("int8"))
    compiled: dict[str, dict] = {}

    def convert(src: Path, dst: Path, spec) -> dict:
        rec = compile_onnx_graph(src, dst, spec, tgt=tgt, tdict=tdict, source=m.get("source"))
        compiled[src.stem] = rec
        log.info("TVM: compiled %s in %.1f s", src.name, rec["compile_time_s"])
        return rec

    result = convert_cascade(manifest, out_dir, to="tvm", convert=convert, parity_images=parity_images,
                             threads=threads, what=f"cascade onnx → tvm ({describe_target(tdict)})")
    cmp = result.fields["parity_vs_source"]
    if not int8 and (cmp["exit_agreement"] < 1.0 or cmp["top1_agreement"] < 1.0):
        err = ParityError(
            f"the TVM cascade takes other exits or predicts other classes than its float source on real images "
            f"(exit agreement {cmp['exit_agreement']:.4f}, top-1 agreement {cmp['top1_agreement']:.4f} on "
            f"{cmp['n']} images); both must be 1. The libraries are kept in {Path(result.fields['path']).parent}.")
        err.record = result.to_dict()
        raise err
    seconds = time.perf_counter() - t0
    result.fields.update({
        "target": tdict, "target_description": describe_target(tdict), "target_notes": notes,
        "symbolic_batch": True, "tuning": "untuned (symbolic batch)",
        "compile_time_s": round(sum(r["compile_time_s"] + r["import_time_s"] for r in compiled.values()), 2),
        "time_s": round(seconds, 2), "int8_execution": INT8_EXECUTION if int8 else None,
        **({"warning": warning} if warning else {}),
    })
    result.seconds = seconds
    result.artifact.meta.update({"target": tdict, "tuning_status": "untuned"})
    return result
