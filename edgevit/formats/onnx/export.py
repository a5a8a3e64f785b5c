"""Export a torch model to ONNX, simplify it, stamp its input spec, and check it against the source on real images.

Exporter choice (tested on torch 2.15, timm 1.0.31): both torch exporters handle timm ViTs
(``deit_tiny_patch16_224``, ``vit_tiny_patch16_224``) and edgevit's ``fmnist-vit*`` with a dynamic batch axis,
and both match the source to ~1e-6. ``exporter="auto"`` (the default) uses the ``torch.export``-based exporter
(``dynamo``): it is torch's default and maintained path (the TorchScript exporter is deprecated since torch 2.9),
it gives about half the nodes (BatchNorm folded, constants inlined, no Identity/Cast chains), and a failure
names the FX node that could not be translated. When it fails, ``auto`` falls back to the TorchScript
exporter (``torchscript``) and records why. Opsets below 18 are produced by down-converting the opset-18
graph, which torch does itself.

After export the graph is simplified with onnxslim; every node keeps the torch module it came from in its
``metadata_props["edgevit.module"]`` (``blocks.3.attn.qkv``; :mod:`edgevit.formats.onnx.scopes`), which per-layer
profiles map runtime nodes onto. The :class:`~edgevit.spec.InputSpec` is written to
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

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import DEFAULT_TASK, TASK_KEY, Artifact
from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult, ParityRecord
from ...spec import SOURCE_KEY, SPEC_KEY, InputSpec
from ...versions import library_versions
from ..common import example_input, quiet, resolve_torch_source
from ..parity import parity_inputs
from .diagnose import BATCH_FIXED, failure_message
from .opsets import MIN_OPSET, check_opset, opset_range
from .scopes import collect_scopes, stamp_scopes

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
# weights above this go to an external data file (protobuf cannot serialise messages of 2 GiB or more)
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
# while the graph is exported, simplified and written, tensors of this many bytes or more stay in a scratch file
LARGE_TENSOR = 1024**2
_WORK_MODEL, _WORK_DATA, _WORK_CHECK = "model.onnx", "weights.data", "check.onnx"
_ALIGN = 4096
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
    task = getattr(module, "edgevit_task", DEFAULT_TASK)  # an image tower of a dual encoder: "embedding"
    path = _resolve_out_path(out_path, source)
    images, described = parity_inputs(parity_images, spec, what="ONNX") if parity else (None, None)
    example = example_input(module, spec, batch=2 if dynamic_batch else 1)

    was_training = module.training
    module.eval()
    try:
        with _workdir(path) as work:
            used, proto, fallback_reason, t_export = _export(module, example, spec, opset, dynamic_batch, exporter,
                                                             work)
            simplify_error, t_slim = None, 0.0
            scopes = collect_scopes(proto)  # onnxslim drops node metadata: the module of every node, kept below
            if simplify:
                proto, simplify_error, t_slim = _simplify(proto, work)
            stamp_scopes(proto, scopes)
            _check_io_names(proto, spec, path)
            _stamp_metadata(proto, spec, source, used, task=task)
            external = _save(proto, path, work)
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
    result = ExportResult(artifact=Artifact(kind="onnx", spec=spec, path=path, source=source, task=task), parity=checked,
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


def _export(module, example, spec: InputSpec, opset: int, dynamic_batch: bool, exporter: str, work: Path):
    """(exporter used, ModelProto, reason for falling back or None, seconds). The proto's tensors of
    :data:`LARGE_TENSOR` bytes or more stay in files under ``work`` (see :func:`_externalize`)."""
    import gc

    t = time.perf_counter()
    try:
        if exporter in ("auto", "dynamo"):
            try:
                return ("dynamo", _export_dynamo(module, example, spec, opset, dynamic_batch, work), None,
                        time.perf_counter() - t)
            except ExportError as exc:
                if exporter == "dynamo" or getattr(exc, "batch_specialized", False):
                    raise  # the TorchScript exporter would bake the fixed batch in silently
                first = exc
                log.warning("torch.export-based ONNX export failed (%s); trying the TorchScript exporter",
                            " ".join(str(exc).splitlines()[:2]))
            _clear_dir(work)
            try:
                proto = _export_torchscript(module, example, spec, opset, dynamic_batch, work)
            except ExportError as exc:
                raise ExportError(f"both torch ONNX exporters failed.\n[dynamo] {first}\n[torchscript] {exc}") from exc
            return "torchscript", proto, str(first), time.perf_counter() - t
        return ("torchscript", _export_torchscript(module, example, spec, opset, dynamic_batch, work), None,
                time.perf_counter() - t)
    finally:
        gc.collect()  # the ExportedProgram / ONNXProgram / TorchScript graph, before simplification


def _export_dynamo(module, example, spec: InputSpec, opset: int, dynamic_batch: bool, work: Path):
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
            del ep
            # the weights go from the torch tensors straight to a data file, one at a time (model_proto would
            # serialise them all into one in-memory proto)
            program.save(str(work / _WORK_MODEL), external_data=True)
        except Exception as exc:  # ConversionError and friends
            raise ExportError(failure_message("translating the graph to ONNX", exc, module, example,
                                               exporter="dynamo", opset=opset, dynamic_batch=dynamic_batch)) from exc
        del program
    proto = _load_graph(work)
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


def _export_torchscript(module, example, spec: InputSpec, opset: int, dynamic_batch: bool, work: Path):
    import torch

    axes = {spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}} if dynamic_batch else None
    with quiet():
        try:
            torch.onnx.export(module, (example,), str(work / _WORK_MODEL), dynamo=False, opset_version=opset,
                              input_names=[spec.input_name], output_names=[spec.output_name], dynamic_axes=axes,
                              do_constant_folding=True)
        except Exception as exc:  # UnsupportedOperatorError, tracing errors, …
            raise ExportError(failure_message("tracing and converting with the TorchScript exporter", exc, module,
                                               example, exporter="torchscript", opset=opset,
                                               dynamic_batch=dynamic_batch)) from exc
    return _load_graph(work)


# ------------------------------------------------------------------------------------- weights kept on disk
#
# Between the exporter and the final file the graph is held as a ModelProto whose large tensors (LARGE_TENSOR
# bytes or more) live in files of a scratch folder next to the output (external data, locations relative to that
# folder); small tensors stay inline, so shape inference and onnxslim see the same graph as before. onnxslim reads
# a large tensor's values from the folder only when a rewrite needs them (_slim_reads_from), and _save streams the
# bytes into the final file. The process never holds more than one large tensor at a time on top of the model
# (issue 16: a 2.1 GB model used to peak at 8× its weights).


@contextlib.contextmanager
def _workdir(path: Path) -> Iterator[Path]:
    """A scratch folder beside ``path`` (same disk as the output, never a RAM-backed /tmp), removed afterwards."""
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.stem}.export-", dir=path.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _clear_dir(work: Path) -> None:
    for f in work.iterdir():
        if f.is_file():
            f.unlink()


def _load_graph(work: Path):
    """The exporter's file in ``work`` as a ModelProto whose large tensors stay on disk (see :func:`_externalize`)."""
    import onnx

    proto = onnx.load(str(work / _WORK_MODEL), load_external_data=False)
    _externalize(proto, work)
    return proto


def _external_info(t) -> tuple[str, int, int | None] | None:
    """(location, offset, length or None) of a tensor stored as external data, else None."""
    import onnx

    if not (t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL):
        return None
    info = {e.key: e.value for e in t.external_data}
    if "location" not in info:  # onnxslim re-creates rewritten constants inline but keeps the EXTERNAL flag
        return None
    length = info.get("length")
    return info["location"], int(info.get("offset") or 0), int(length) if length is not None else None


def _externalize(proto, work: Path) -> None:
    """Move the graph's inline initializers of :data:`LARGE_TENSOR` bytes or more into ``work/weights.data`` and
    bring external ones smaller than that inline, so only large tensors stay on disk."""
    from onnx.external_data_helper import load_external_data_for_tensor

    data = work / _WORK_DATA
    with open(data, "ab") as f:
        for t in proto.graph.initializer:
            ext = _external_info(t)
            if ext is not None:
                if _tensor_nbytes(t) < LARGE_TENSOR:
                    load_external_data_for_tensor(t, str(work))
                continue
            if t.HasField("raw_data") and len(t.raw_data) >= LARGE_TENSOR:
                offset = _pad_to(f, _ALIGN)
                f.write(t.raw_data)
                _set_external(t, _WORK_DATA, offset, len(t.raw_data))


def _set_external(t, location: str, offset: int, length: int) -> None:
    """Point tensor ``t`` at ``length`` bytes at ``offset`` of ``location`` (its inline data dropped)."""
    import onnx

    t.ClearField("raw_data")
    del t.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    t.data_location = onnx.TensorProto.EXTERNAL


def _pad_to(f, align: int) -> int:
    pos = f.seek(0, 2)
    pad = (-pos) % align
    if pad:
        f.write(b"\0" * pad)
    return pos + pad


def _read_external(t, work: Path, chunk: int = 16 * 1024**2) -> Iterator[bytes]:
    """The bytes of an external tensor under ``work``, in chunks."""
    location, offset, length = _external_info(t)
    src = (work / location).resolve()
    if src.parent != work.resolve():
        raise ExportError(f"tensor {t.name} points outside the export's scratch folder ({location})")
    with open(src, "rb") as f:
        f.seek(offset)
        left = length if length is not None else _tensor_nbytes(t)
        while left > 0:
            block = f.read(min(chunk, left))
            if not block:
                raise ExportError(f"the scratch data file {src} ends before tensor {t.name}'s data")
            left -= len(block)
            yield block


@contextlib.contextmanager
def _slim_reads_from(work: Path) -> Iterator[bool]:
    """While onnxslim runs, let its lazily loaded constants read external data from ``work`` (onnx resolves
    locations against the current directory otherwise). Yields False when onnxslim's internals are not as expected;
    the caller then loads the weights into the proto, as before."""
    try:
        from onnxslim.third_party.onnx_graphsurgeon.ir.tensor import LazyValues
    except ImportError:
        yield False
        return
    original = getattr(LazyValues, "load", None)
    if original is None:
        yield False
        return

    def load(self):
        import onnx
        from onnx import numpy_helper

        t = getattr(self, "tensor", None)
        if not isinstance(t, onnx.TensorProto) or t.data_location != onnx.TensorProto.EXTERNAL:
            return original(self)
        inline = onnx.TensorProto()
        inline.CopyFrom(t)
        inline.ClearField("external_data")
        inline.ClearField("data_location")
        if _external_info(t) is not None:  # else: a constant onnxslim rewrote, inline but still flagged EXTERNAL
            inline.raw_data = b"".join(_read_external(t, work))
        return np.array(numpy_helper.to_array(inline))

    LazyValues.load = load
    try:
        yield True
    finally:
        LazyValues.load = original


def _internalize(proto, work: Path) -> None:
    """Load every external tensor under ``work`` into the proto (the fallback when onnxslim cannot read them)."""
    import onnx

    for t in proto.graph.initializer:
        if _external_info(t) is not None:
            raw = b"".join(_read_external(t, work))
            t.ClearField("external_data")
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = raw


# ------------------------------------------------------------------------------------- simplify, stamp, save


def _simplify(proto, work: Path | None = None):
    """(model, error or None, seconds) — onnxslim's result, or the input model when onnxslim fails. Large tensors
    stored externally under ``work`` stay there; onnxslim reads one only when a rewrite needs its values."""
    import onnxslim

    t = time.perf_counter()
    try:
        with quiet(), _slim_reads_from(work) as reads:
            if work is not None and not reads:
                _internalize(proto, work)
            slim = onnxslim.slim(proto)
        if slim is None:
            raise RuntimeError("onnxslim returned no model")
        _fix_data_location(slim)
        return slim, None, time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - keep the unsimplified model rather than fail the export
        log.warning("onnxslim could not simplify the graph (%s: %s); keeping the unsimplified model",
                    type(exc).__name__, str(exc)[:200])
        return proto, f"{type(exc).__name__}: {str(exc)[:300]}", time.perf_counter() - t


def _fix_data_location(proto) -> None:
    """Tensors flagged EXTERNAL without a location hold their data inline (onnxslim copies the flag onto the
    constants it rewrites); flag them DEFAULT so they are saved inline."""
    import onnx

    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL and _external_info(t) is None:
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT


def _check_io_names(proto, spec: InputSpec, path: Path) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if not inputs or inputs[0] != spec.input_name or not outputs or outputs[0] != spec.output_name:
        raise ExportError(f"exported graph for {path} has inputs {inputs} and outputs {outputs}, expected "
                          f"'{spec.input_name}' → '{spec.output_name}'; this is an exporter bug — try the other "
                          f"exporter (exporter='dynamo' or 'torchscript')")


def _stamp_metadata(proto, spec: InputSpec, source: str, exporter: str, *, task: str = DEFAULT_TASK) -> None:
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({SPEC_KEY: json.dumps(spec.to_dict()), SOURCE_KEY: source, "edgevit.exporter": exporter,
                  TASK_KEY: task})
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _tensor_nbytes(t) -> int:
    import onnx

    ext = _external_info(t)
    if ext is not None and ext[2] is not None:
        return ext[2]
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
    with _workdir(path) as work:
        used, proto, fallback, t = _export(module, example, spec, opset, dynamic_batch, exporter, work)
        scopes = collect_scopes(proto)
        proto, slim_err, _ = _simplify(proto, work)
        stamp_scopes(proto, scopes)
        _check_io_names(proto, spec, path)
        _stamp_metadata(proto, spec, source, used)
        _save(proto, path, work)
    return {"exporter": used, "fallback_reason": fallback, "simplify_error": slim_err, "export_time_s": round(t, 3)}


def _save(proto, path: Path, work: Path | None = None) -> bool:
    """Write ``proto`` to ``path`` (external data when large); returns whether external data was used. Tensors
    stored externally under ``work`` are streamed into the file (inline when the model is small enough for one
    file, else into ``<name>.onnx.data``); the file is checked from disk (``onnx.checker`` on the path)."""
    import onnx

    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    weights = sum(_tensor_nbytes(t) for t in proto.graph.initializer)
    external = weights > EXTERNAL_DATA_THRESHOLD
    on_disk = work is not None and any(_external_info(t) is not None for t in proto.graph.initializer)
    checked = path
    try:
        if external:
            _write_external(proto, path, data, work)
        elif on_disk:
            # check the graph as it stands in the scratch folder (its large tensors are the scratch files there):
            # checking the single file would parse all the weights into memory twice
            checked = work / _WORK_CHECK
            onnx.save(proto, str(checked))
            _write_single_file(proto, path, work)
        else:
            onnx.save(proto, str(path))
    except OSError as exc:  # only an I/O failure is a disk problem
        raise ExportError(f"could not write the ONNX file {path} ({type(exc).__name__}: {str(exc)[:300]}); check "
                          f"that the folder is writable and has free disk space") from exc
    try:
        onnx.checker.check_model(str(checked))
    except OSError as exc:
        raise ExportError(f"could not read back the ONNX file {path} for checking ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); check that the folder is readable and has free disk space") from exc
    except Exception as exc:  # checker.ValidationError, ValueError: the graph itself is invalid
        raise ExportError(f"the exported graph written to {path} is not valid ONNX ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); the exporter produced an invalid model: try another opset "
                          f"(supported {MIN_OPSET}..{opset_range()[1]}), exporter='torchscript', or "
                          f"simplify=False") from exc
    return external


def _write_external(proto, path: Path, data: Path, work: Path | None) -> None:
    """Every initializer of 1 KiB or more into ``data`` (one file, as ``onnx.save(..., size_threshold=1024)`` did),
    streamed from ``work`` or from the proto; then the (now small) proto to ``path``."""
    with open(data, "wb") as f:
        for t in proto.graph.initializer:
            if _external_info(t) is not None:
                offset = _pad_to(f, _ALIGN)
                length = 0
                for block in _read_external(t, work):
                    f.write(block)
                    length += len(block)
            elif t.HasField("raw_data") and len(t.raw_data) >= 1024:
                offset = _pad_to(f, _ALIGN)
                f.write(t.raw_data)
                length = len(t.raw_data)
                t.ClearField("raw_data")
            else:
                continue
            _set_external(t, data.name, offset, length)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _write_single_file(proto, path: Path, work: Path) -> None:
    """One self-contained ``.onnx`` file, written without building it in memory: the model without initializers,
    then each initializer as a ``ModelProto{graph{initializer}}`` fragment. Protobuf parsers merge concatenated
    messages (repeated fields append, in order), so the file reads back as the whole model with its initializers in
    their original order; a large tensor's bytes are copied from ``work`` in chunks."""
    import onnx

    graph_field = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
    init_field = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
    raw_field = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number

    def tag(field: int) -> bytes:  # wire type 2: length-delimited
        return _varint(field << 3 | 2)

    head = onnx.ModelProto()
    head.CopyFrom(proto)  # small: the large tensors are external
    del head.graph.initializer[:]
    with open(path, "wb") as f:
        f.write(head.SerializeToString())
        del head
        for t in proto.graph.initializer:
            if _external_info(t) is None:
                tensor_head, length, blocks = t.SerializeToString(), 0, ()
                raw = b""
            else:
                bare = onnx.TensorProto()
                bare.CopyFrom(t)
                bare.ClearField("external_data")
                bare.ClearField("data_location")
                bare.ClearField("raw_data")
                length = _tensor_nbytes(t)
                raw = tag(raw_field) + _varint(length)
                tensor_head, blocks = bare.SerializeToString(), _read_external(t, work)
            tensor_len = len(tensor_head) + len(raw) + (length if raw else 0)
            graph_len = len(tag(init_field)) + len(_varint(tensor_len)) + tensor_len
            f.write(tag(graph_field) + _varint(graph_len) + tag(init_field) + _varint(tensor_len) + tensor_head + raw)
            written = 0
            for block in blocks:
                f.write(block)
                written += len(block)
            if raw and written != length:
                raise ExportError(f"tensor {t.name}: expected {length} bytes of data, found {written}")


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
