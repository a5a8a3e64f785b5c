"""Export a torch model to ONNX, simplify it, stamp its input spec, and check it against the source on real images.

Exporter choice (tested on torch 2.15, timm 1.0.31): both torch exporters handle timm ViTs
(``deit_tiny_patch16_224``, ``vit_tiny_patch16_224``) and edgevit's ``fmnist-vit*`` with a dynamic batch axis,
and both match the source to ~1e-6. ``exporter="auto"`` (the default) uses the ``torch.export``-based exporter
(``dynamo``): it is torch's default and maintained path (the TorchScript exporter is deprecated since torch 2.9),
it gives about half the nodes (BatchNorm folded, constants inlined, no Identity/Cast chains), and a failure
names the FX node that could not be translated. When it fails, ``auto`` falls back to the TorchScript
exporter (``torchscript``) and records why. Opsets below 18 are produced by down-converting the opset-18
graph, which torch does itself.

After export the graph is simplified with onnxslim, the :class:`~edgevit.spec.InputSpec` is written to
``metadata_props["edgevit.input_spec"]`` (JSON) and the source model name to ``metadata_props["edgevit.source"]``
so :func:`edgevit.runtimes.open_artifact` can reopen the file with its spec. Models whose weights exceed
protobuf's 2 GB limit are saved with external data (``<name>.onnx.data`` next to the file).

Parity: the exported file is run with onnxruntime (CPU) on real images and compared with the torch model (see
:mod:`edgevit.formats.parity`). Callers pass ``parity_images`` (preprocessed NCHW float32, raw uint8 images or an
``ArrayDataset``; all of them are used; raw images are preprocessed to the model's spec with
:func:`edgevit.data.preprocess`). The library never picks a dataset itself: without images the export raises
:class:`~edgevit.errors.ExportError` unless ``parity=False`` (the CLI and the recipe choose the data), so the check
always runs on real images, never on random tensors.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import DEFAULT_TASK, TASK_KEY, Artifact
from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult, ParityRecord
from ...spec import SOURCE_KEY, SPEC_KEY, InputSpec
from ...versions import library_versions
from ..common import example_input as _example_input
from ..common import quiet, resolve_torch_source
from ..parity import parity_inputs
from .diagnose import BATCH_FIXED, failure_message
from .opsets import MIN_OPSET, check_opset, opset_range

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
# weights above this go to an external data file (protobuf cannot serialise messages of 2 GiB or more)
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
PARITY_CHUNK = 16


def export_onnx(model: Any, out_path: str | Path, *, opset: int = 18, dynamic_batch: bool = True,
                simplify: bool = True, parity: bool = True, parity_images: Any = None,
                tolerance: float | None = None, exporter: str = "auto", parity_samples: int = 32) -> ExportResult:
    """Export ``model`` to ``out_path`` (a ``.onnx`` file, or a directory to hold ``<model name>.onnx``).

    ``model`` is a torch module (with ``edgevit_spec`` attached, as :func:`edgevit.models.create` does), a torch
    :class:`~edgevit.artifact.Artifact`, or a model name / checkpoint path for :func:`edgevit.models.create`.

    - ``opset``: ONNX opset (≥ 17); ``dynamic_batch``: batch axis named ``batch`` instead of a fixed 1;
    - ``simplify``: run onnxslim (a failure there is logged and the unsimplified graph kept);
    - ``parity``: run the file with onnxruntime on real images and compare with the torch model.
      ``parity_images`` (preprocessed float32 NCHW ``[N, C, H, W]``, raw uint8 images or an ``ArrayDataset``)
      are all used and required when ``parity`` is on (:class:`ExportError` otherwise); ``parity_samples`` (≥ 1)
      is validated for the callers that load that many. ``tolerance`` bounds the max |logit difference|
      (default: :func:`~edgevit.formats.parity.default_tolerance` for fp32, scaled to the logits);
    - ``exporter``: ``auto`` (torch.export-based, falling back to TorchScript), ``dynamo`` or ``torchscript``.

    Returns an :class:`~edgevit.results.ExportResult`: the ``onnx`` artefact, its
    :class:`~edgevit.results.ParityRecord` (None when skipped), seconds and versions; ``to_dict()`` is the JSON
    record (``path``, ``opset``, ``exporter``, ``file_size`` in bytes, ``external_data``, ``time_s``,
    ``max_abs_diff``, ``cosine``, ``top1_agreement``, ``n`` (None when skipped), the full ``parity`` record,
    ``input_spec``, ``source``, ``versions``). Raises :class:`ExportError` naming the failing
    operator and module, and :class:`ParityError` (the file is kept for inspection; the record is attached as
    ``exc.record``) when the outputs disagree.
    """
    t0 = time.perf_counter()
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter '{exporter}'. Allowed: {', '.join(EXPORTERS)}")
    check_opset(opset, exporter=exporter)
    if parity_samples < 1:
        raise ConfigError(f"parity_samples must be ≥ 1, got {parity_samples}")

    module, spec, source = _resolve_model(model)
    path = _resolve_out_path(out_path, source)
    images, described = parity_inputs(parity_images, spec, what="ONNX") if parity else (None, None)
    example = _example_input(module, spec, batch=2 if dynamic_batch else 1)

    was_training = module.training
    module.eval()
    try:
        used, proto, fallback_reason, t_export = _export(module, example, spec, opset, dynamic_batch, exporter)
        simplify_error, t_slim = None, 0.0
        if simplify:
            proto, simplify_error, t_slim = _simplify(proto)
        _check_io_names(proto, spec, path)
        _stamp_metadata(proto, spec, source, used)
        external = _save(proto, path)
        actual_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if actual_opset != opset:
            log.warning("%s: asked for opset %s, the exporter produced opset %s", path, opset, actual_opset)
        del proto

        record: dict[str, Any] = {
            "format": "onnx", "path": str(path), "source": source, "opset": actual_opset, "opset_requested": opset,
            "exporter": used, "fallback_reason": fallback_reason, "dynamic_batch": dynamic_batch,
            "simplified": simplify and simplify_error is None, "simplify_error": simplify_error,
            "external_data": external, "file_size": _file_size(path), "input_spec": spec.to_dict(),
            "export_time_s": round(t_export, 3), "simplify_time_s": round(t_slim, 3),
            "max_abs_diff": None, "mean_abs_diff": None, "cosine": None, "top1_agreement": None, "n": None,
            "parity": None, "parity_inputs": None, "versions": library_versions(),
        }
        checked = None
        if parity:
            record["parity_inputs"] = described
            try:
                result = _parity(module, path, spec, images, tolerance=tolerance, dynamic=dynamic_batch,
                                 what=f"ONNX export of {source} ({path.name}, {used} exporter) vs torch")
            except ParityError as exc:
                record["parity"] = failed = getattr(exc, "record", None) or {}
                record.update({k: failed.get(k) for k in ("max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement",
                                                          "n")})
                record["time_s"] = round(time.perf_counter() - t0, 3)
                err = ParityError(f"{exc} The exported file is kept at {path}.")
                err.record = record
                raise err from exc
            checked = result
    finally:
        module.train(was_training)
    result = ExportResult(artifact=Artifact(kind="onnx", spec=spec, path=path, source=source), parity=checked,
                          seconds=time.perf_counter() - t0, versions=record["versions"], fields=record)
    log.info("exported %s to %s (%s exporter, opset %s, %.1f MB, max |diff| %s) in %.1f s", source, path, used,
             record["opset"], record["file_size"] / 1e6, checked and checked.max_abs_diff, result.seconds)
    return result


# ------------------------------------------------------------------------------------------------ inputs


_resolve_model = resolve_torch_source


def _resolve_out_path(out_path: str | Path, source: str) -> Path:
    p = Path(out_path)
    if p.is_dir():
        p = p / f"{Path(source).name.removesuffix('.safetensors')}.onnx"
    if p.suffix != ".onnx":
        raise ConfigError(f"ONNX output path must end in .onnx (or be an existing directory), got {out_path}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


# ------------------------------------------------------------------------------------------------ export


def _export(module, example, spec: InputSpec, opset: int, dynamic_batch: bool, exporter: str):
    """(exporter used, ModelProto, reason for falling back or None, seconds)."""
    t = time.perf_counter()
    if exporter in ("auto", "dynamo"):
        try:
            return "dynamo", _export_dynamo(module, example, spec, opset, dynamic_batch), None, time.perf_counter() - t
        except ExportError as exc:
            if exporter == "dynamo" or getattr(exc, "batch_specialized", False):
                raise  # the TorchScript exporter would bake the fixed batch in silently
            first = exc
            log.warning("torch.export-based ONNX export failed (%s); trying the TorchScript exporter",
                        " ".join(str(exc).splitlines()[:2]))
        try:
            proto = _export_torchscript(module, example, spec, opset, dynamic_batch)
        except ExportError as exc:
            raise ExportError(f"both torch ONNX exporters failed.\n[dynamo] {first}\n[torchscript] {exc}") from exc
        return "torchscript", proto, str(first), time.perf_counter() - t
    return "torchscript", _export_torchscript(module, example, spec, opset, dynamic_batch), None, time.perf_counter() - t


def _export_dynamo(module, example, spec: InputSpec, opset: int, dynamic_batch: bool):
    import torch

    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with quiet():
        try:
            ep = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as exc:  # torch.export raises many error types
            err = ExportError(failure_message("capturing the graph with torch.export", exc, module, example,
                                               exporter="dynamo", opset=opset, dynamic_batch=dynamic_batch))
            err.batch_specialized = dynamic_batch and BATCH_FIXED.search(str(exc)) is not None
            raise err from exc
        try:
            program = torch.onnx.export(ep, (example,), input_names=[spec.input_name],
                                        output_names=[spec.output_name], opset_version=opset, dynamo=True,
                                        external_data=True, optimize=True, verbose=False)
            proto = program.model_proto
        except Exception as exc:  # ConversionError and friends
            raise ExportError(failure_message("translating the graph to ONNX", exc, module, example,
                                               exporter="dynamo", opset=opset, dynamic_batch=dynamic_batch)) from exc
    if dynamic_batch:
        _name_batch_dim(proto)
    return proto


def _name_batch_dim(proto) -> None:
    """torch.export calls the batch symbol e.g. 's77'; name it 'batch' everywhere, as the TorchScript exporter does."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim
    old = dim[0].dim_param if len(dim) else ""
    if not old or old == "batch":
        return
    for vi in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param == old:
                d.dim_param = "batch"


def _export_torchscript(module, example, spec: InputSpec, opset: int, dynamic_batch: bool):
    import tempfile

    import onnx
    import torch

    axes = {spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}} if dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="edgevit-onnx-") as tmp, quiet():
        f = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(module, (example,), str(f), dynamo=False, opset_version=opset,
                              input_names=[spec.input_name], output_names=[spec.output_name], dynamic_axes=axes,
                              do_constant_folding=True)
        except Exception as exc:  # UnsupportedOperatorError, tracing errors, …
            raise ExportError(failure_message("tracing and converting with the TorchScript exporter", exc, module,
                                               example, exporter="torchscript", opset=opset,
                                               dynamic_batch=dynamic_batch)) from exc
        return onnx.load(str(f), load_external_data=True)


# ------------------------------------------------------------------------------------- simplify, stamp, save


def _simplify(proto):
    """(model, error or None, seconds) — onnxslim's result, or the input model when onnxslim fails."""
    import onnxslim

    t = time.perf_counter()
    try:
        with quiet():
            slim = onnxslim.slim(proto)
        if slim is None:
            raise RuntimeError("onnxslim returned no model")
        return slim, None, time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - keep the unsimplified model rather than fail the export
        log.warning("onnxslim could not simplify the graph (%s: %s); keeping the unsimplified model",
                    type(exc).__name__, str(exc)[:200])
        return proto, f"{type(exc).__name__}: {str(exc)[:300]}", time.perf_counter() - t


def _check_io_names(proto, spec: InputSpec, path: Path) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if not inputs or inputs[0] != spec.input_name or not outputs or outputs[0] != spec.output_name:
        raise ExportError(f"exported graph for {path} has inputs {inputs} and outputs {outputs}, expected "
                          f"'{spec.input_name}' → '{spec.output_name}'; this is an exporter bug — try the other "
                          f"exporter (exporter='dynamo' or 'torchscript')")


def _stamp_metadata(proto, spec: InputSpec, source: str, exporter: str) -> None:
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({SPEC_KEY: json.dumps(spec.to_dict()), SOURCE_KEY: source, "edgevit.exporter": exporter,
                  TASK_KEY: DEFAULT_TASK})
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _tensor_nbytes(t) -> int:
    import onnx

    if t.HasField("raw_data"):
        return len(t.raw_data)
    n = int(np.prod(t.dims)) if len(t.dims) else 1
    try:
        return n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return n * 4


def stamp_metadata(proto, spec: InputSpec, source: str, exporter: str) -> None:
    """Write edgevit's metadata (input spec, source, exporter) into an ONNX ``ModelProto``'s metadata_props, so
    :func:`edgevit.runtimes.open_artifact` knows how to feed the file; other entries are kept."""
    _stamp_metadata(proto, spec, source, exporter)


def export_graph(module, example, spec: InputSpec, path: str | Path, *, opset: int = 18,
                 source: str = "", exporter: str = "auto", dynamic_batch: bool = True) -> dict:
    """One module → one ONNX file, the way :func:`export_onnx` writes a model (torch exporter with fallback,
    onnxslim, input/output names from ``spec``, edgevit metadata, external data when large), without the parity
    check or the record: for the pieces of a larger artefact (an early-exit cascade's segments and heads), whose
    inputs need not be images. Returns ``{exporter, fallback_reason, simplify_error, export_time_s}``."""
    check_opset(opset, exporter=exporter)
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter '{exporter}'. Allowed: {', '.join(EXPORTERS)}")
    path = Path(path)
    module.eval()
    used, proto, fallback, t = _export(module, example, spec, opset, dynamic_batch, exporter)
    proto, slim_err, _ = _simplify(proto)
    _check_io_names(proto, spec, path)
    _stamp_metadata(proto, spec, source, used)
    _save(proto, path)
    return {"exporter": used, "fallback_reason": fallback, "simplify_error": slim_err, "export_time_s": round(t, 3)}


def _save(proto, path: Path) -> bool:
    """Write ``proto`` to ``path`` (external data when large); returns whether external data was used."""
    import onnx

    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    weights = sum(_tensor_nbytes(t) for t in proto.graph.initializer)
    external = weights > EXTERNAL_DATA_THRESHOLD
    try:
        if external:
            onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=data.name, size_threshold=1024)
        else:
            onnx.save(proto, str(path))
    except OSError as exc:  # only an I/O failure is a disk problem
        raise ExportError(f"could not write the ONNX file {path} ({type(exc).__name__}: {str(exc)[:300]}); check "
                          f"that the folder is writable and has free disk space") from exc
    try:
        onnx.checker.check_model(str(path))
    except OSError as exc:
        raise ExportError(f"could not read back the ONNX file {path} for checking ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); check that the folder is readable and has free disk space") from exc
    except Exception as exc:  # checker.ValidationError, ValueError: the graph itself is invalid
        raise ExportError(f"the exported graph written to {path} is not valid ONNX ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); the exporter produced an invalid model: try another opset "
                          f"(supported {MIN_OPSET}..{opset_range()[1]}), exporter='torchscript', or "
                          f"simplify=False") from exc
    return external


def _file_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


# ------------------------------------------------------------------------------------------------ parity


def _parity(module, path: Path, spec: InputSpec, images: np.ndarray, *, tolerance: float | None, dynamic: bool,
            what: str) -> ParityRecord:
    from ..parity import check_parity, default_tolerance, is_classifier
    from ..reference import torch_logits
    from .runtime import OnnxRuntime

    # a dynamic-batch file runs at two batch sizes (one sample alone, then chunks); a fixed-batch one sample-wise
    bounds = [0, 1] + list(range(1 + PARITY_CHUNK, len(images), PARITY_CHUNK)) + [len(images)] if dynamic \
        else list(range(len(images) + 1))
    chunks = [images[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    reference = torch_logits(module, images, what="ONNX parity check")
    with OnnxRuntime(Artifact(kind="onnx", spec=spec, path=path), device="cpu") as rt:
        try:
            cand = [rt.run(x) for x in chunks]
        except Exception as exc:  # the file exported but does not run
            raise ExportError(f"the exported file {path} does not run in onnxruntime on real inputs: {exc}. Try "
                              f"another opset or exporter, or dynamic_batch=False.") from exc
    tol = tolerance if tolerance is not None else default_tolerance("fp32", reference)
    return check_parity(reference, np.concatenate(cand), tolerance=tol, what=what, classifier=is_classifier(spec))
