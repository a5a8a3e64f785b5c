"""Export to OpenVINO IR (``model.xml`` graph + ``model.bin`` weights), FP32 or FP16-compressed weights.

Two paths, both through ``openvino.convert_model``:

- from the torch model (the default): traced with a random example input of the model's spec and converted with
  the batch axis left dynamic (``[?, C, H, W]``) unless ``dynamic_batch=False``;
- from an ONNX file (``from_onnx=PATH``, e.g. what :func:`edgevit.formats.onnx.export.export_onnx` wrote): the ONNX
  graph's own batch axis is kept (a fixed-batch ONNX file gives a fixed-batch IR).

``precision="fp16"`` stores the weights as float16 (``save_model(..., compress_to_fp16=True)``): half the file,
and the devices decompress them (the CPU computes in f32 or bf16; GPU/NPU in f16). Activations are not
quantised; INT8 is NNCF's job.

What the IR carries, in its ``rt_info`` (``ov.Model.get_rt_info``):

- ``edgevit/input_spec``: the :class:`~edgevit.spec.InputSpec` as JSON (read back by
  :func:`edgevit.runtimes.open_artifact`, so ``edgevit eval --artifact model.xml`` works);
- ``edgevit/source``, ``edgevit/precision``, ``edgevit/converted_from``, ``edgevit/version``;
- ``edgevit/preprocess/{channels,height,width,mean,std,interpolation,crop_pct,num_classes}`` as plain strings
  (numbers space-separated) for consumers without a JSON parser, such as the C++ example in ``examples/cpp``,
  and ``edgevit/preprocess/class_names`` (one class name a line) when the spec names the classes
  (``spec.extra["class_names"]``; the built-in Fashion-MNIST models do).

Parity: the IR is compiled on CPU with ``INFERENCE_PRECISION_HINT=f32`` (so the check measures the export, not
the CPU's bf16 mode) and compared with the torch model on real images (first batch 1, then batches of 16 for a
dynamic-batch IR); with no torch model (``source=None``), with the ONNX file through onnxruntime. Tolerances
come from :func:`edgevit.formats.parity.parity_thresholds` for the precision (fp32: 1e-3, fp16: 5e-2, relative
to the largest reference logit).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import Artifact
from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult, ParityRecord
from ...spec import InputSpec
from ...versions import library_versions
from ..parity import parity_inputs

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
PARITY_CHUNK = 16
RT_ROOT = "edgevit"  # rt_info section of the IR that edgevit writes


def export_openvino(source: Any, out_dir: str | Path, *, precision: str = "fp32", from_onnx: str | Path | None = None,
                    dynamic_batch: bool = True, parity: bool = True, parity_images: Any = None,
                    tolerance: float | None = None, parity_samples: int = 32, name: str | None = None) -> ExportResult:
    """Write an OpenVINO IR of ``source`` into ``out_dir`` and check it against the torch model on real images.

    ``source``: a torch module (with ``edgevit_spec``, as :func:`edgevit.models.create` returns), a torch
    :class:`~edgevit.artifact.Artifact`, a model name / checkpoint path, or None together with ``from_onnx``.
    ``out_dir``: a directory (the IR is ``<name>.xml``/``.bin`` in it; ``name`` defaults to the model name) or a
    path ending in ``.xml``.

    - ``precision``: ``fp32`` or ``fp16`` (FP16-compressed weights);
    - ``from_onnx``: convert this ONNX file instead of the torch model (its stored input spec is used when
      ``source`` is None); the torch model, when given, is still the parity reference;
    - ``dynamic_batch``: leave the batch axis dynamic (torch path; an ONNX file keeps its own batch axis);
    - ``parity``, ``parity_images``, ``parity_samples``, ``tolerance``: as in
      :func:`edgevit.formats.onnx.export.export_onnx` (real images; default tolerance by precision).

    Returns an :class:`~edgevit.results.ExportResult` (the ``openvino`` artefact with ``meta`` ``precision`` and
    ``converted_from``, its :class:`~edgevit.results.ParityRecord`, seconds, versions) whose ``to_dict()`` is the
    JSON record: ``path``, ``bin_path``, ``precision``, ``converted_from``, ``dynamic_batch``,
    ``file_size``, ``max_abs_diff``, ``cosine``, ``top1_agreement``, ``n``, ``parity`` (full record),
    ``parity_reference``, ``parity_runtime`` (what the compiled IR used), ``input_spec``, ``versions``, times.
    Raises :class:`ConfigError` for bad options, :class:`ExportError` when conversion fails and
    :class:`ParityError` (file kept, record attached as ``exc.record``) when the IR disagrees with its source.
    """
    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise ConfigError(f"OpenVINO export precision must be one of {', '.join(PRECISIONS)}, got {precision!r} "
                          f"(INT8 comes from the NNCF quantisation stage)")
    if parity_samples < 1:
        raise ConfigError(f"parity_samples must be ≥ 1, got {parity_samples}")
    if source is None and from_onnx is None:
        raise ConfigError("export_openvino needs a torch model (source=...) or an ONNX file (from_onnx=...)")
    from ..._optional import require

    ov = require("openvino", extra="openvino", feature="OpenVINO export")

    module, spec, source_name = _resolve_source(source, from_onnx)
    path = _resolve_out_path(out_dir, name or source_name)
    images, described = parity_inputs(parity_images, spec, what="OpenVINO") if parity else (None, None)

    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        t = time.perf_counter()
        if from_onnx is not None:
            ov_model = _convert_onnx(ov, Path(from_onnx), dynamic_batch)
            converted_from = "onnx"
        else:
            ov_model = _convert_torch(ov, module, spec, dynamic_batch, source_name)
            converted_from = "torch"
        t_convert = time.perf_counter() - t
        _name_io(ov_model, spec, path)
        dim0 = ov_model.inputs[0].get_partial_shape()[0]
        is_dynamic = dim0.is_dynamic
        if dynamic_batch and not is_dynamic:
            log.warning("%s has a fixed batch size of %s (the ONNX file fixes it); re-export the ONNX file with "
                        "dynamic_batch=True for a dynamic-batch IR", from_onnx, dim0.get_length())
        _stamp(ov_model, spec, source_name, precision, converted_from)
        t = time.perf_counter()
        _save(ov, ov_model, path, precision)
        t_save = time.perf_counter() - t
        del ov_model

        record: dict[str, Any] = {
            "format": "openvino", "path": str(path), "bin_path": str(path.with_suffix(".bin")),
            "source": source_name, "precision": precision, "converted_from": converted_from,
            "onnx_path": str(from_onnx) if from_onnx is not None else None, "dynamic_batch": is_dynamic,
            "static_batch": None if is_dynamic else dim0.get_length(),
            "file_size": path.stat().st_size + path.with_suffix(".bin").stat().st_size,
            "bin_size": path.with_suffix(".bin").stat().st_size, "input_spec": spec.to_dict(),
            "convert_time_s": round(t_convert, 3), "save_time_s": round(t_save, 3),
            "max_abs_diff": None, "mean_abs_diff": None, "cosine": None, "top1_agreement": None, "n": None,
            "parity": None, "parity_inputs": None, "parity_reference": None, "parity_runtime": None,
            "versions": library_versions(),
        }
        checked = None
        if parity:
            record["parity_inputs"] = described
            record["parity_reference"] = "torch" if module is not None else f"onnxruntime on {from_onnx}"
            try:
                result, runtime_info = _parity(module, from_onnx, path, spec, images, precision=precision,
                                               tolerance=tolerance, static_batch=record["static_batch"],
                                               what=f"OpenVINO {precision} IR of {source_name} ({path.name}, from "
                                                    f"{converted_from}) vs {record['parity_reference']}")
            except ParityError as exc:
                record["parity"] = failed = getattr(exc, "record", None) or {}
                record.update({k: failed.get(k) for k in ("max_abs_diff", "mean_abs_diff", "cosine",
                                                          "top1_agreement", "n")})
                record["time_s"] = round(time.perf_counter() - t0, 3)
                err = ParityError(f"{exc} The IR is kept at {path}.")
                err.record = record
                raise err from exc
            checked = result
            record["parity_runtime"] = runtime_info
    finally:
        if module is not None:
            module.train(was_training)
    art = Artifact(kind="openvino", spec=spec, path=path, source=source_name,
                   meta={"precision": precision, "converted_from": converted_from})
    out = ExportResult(artifact=art, parity=checked, seconds=time.perf_counter() - t0, versions=record["versions"],
                       fields=record)
    log.info("exported %s to %s (OpenVINO %s, from %s, %.1f MB, max |diff| %s) in %.1f s", source_name, path,
             precision, converted_from, record["file_size"] / 1e6, checked and checked.max_abs_diff, out.seconds)
    return out


# ------------------------------------------------------------------------------------------------ inputs


def _resolve_source(source: Any, from_onnx: str | Path | None):
    """(torch module or None, input spec, source name)."""
    onnx_spec = onnx_source = None
    if from_onnx is not None:
        p = Path(from_onnx)
        if not p.exists():
            raise ConfigError(f"ONNX file {p} does not exist; export it first (edgevit export onnx) or fix the path")
        if p.suffix != ".onnx":
            raise ConfigError(f"from_onnx must be an .onnx file, got {p}")
        from ...errors import RuntimeLoadError
        from ...runtimes import open_artifact

        try:
            art = open_artifact(p)
            onnx_spec, onnx_source = art.spec, art.source
        except RuntimeLoadError as exc:
            if source is None:
                raise ExportError(f"{p} carries no edgevit input spec ({exc}); pass the torch model as source too, "
                                  f"or re-export the ONNX file with edgevit") from exc
    if source is None:
        return None, onnx_spec, str(onnx_source or Path(from_onnx).stem)

    from ...artifact import Artifact
    from ...models import create, input_spec_of

    if isinstance(source, (str, Path)):
        module = create(str(source))
        spec, name = input_spec_of(module), str(getattr(module, "edgevit_name", source))
    elif isinstance(source, Artifact):
        if source.kind != "torch":
            raise ExportError(f"OpenVINO export needs a torch model as source, got an artefact of kind "
                              f"'{source.kind}' ({source.path}); pass its ONNX file as from_onnx= instead")
        module = source.load_model()
        spec = source.spec
        name = str(source.source or getattr(module, "edgevit_name", type(module).__name__))
    else:
        import torch

        if not isinstance(source, torch.nn.Module):
            raise ExportError(f"OpenVINO export needs a torch.nn.Module, a torch Artifact or a model name, "
                              f"got {type(source).__name__}")
        module, spec = source, input_spec_of(source)
        name = str(getattr(source, "edgevit_name", type(source).__name__))
    if onnx_spec is not None and onnx_spec != spec:
        log.warning("the input spec stored in %s (%s) differs from the torch model's (%s); using the torch model's",
                    from_onnx, onnx_spec, spec)
    return module, spec, name


def _resolve_out_path(out: str | Path, name: str) -> Path:
    p = Path(out)
    if p.suffix == ".xml":
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
    if p.suffix and p.exists() and not p.is_dir():
        raise ConfigError(f"OpenVINO output must be a directory or a path ending in .xml, got {out}")
    p.mkdir(parents=True, exist_ok=True)
    return p / f"{Path(name).name.removesuffix('.safetensors').removesuffix('.onnx')}.xml"



def _convert_torch(ov: Any, module: Any, spec: InputSpec, dynamic_batch: bool, name: str) -> Any:
    from ..common import example_input, quiet

    example = example_input(module, spec, batch=2 if dynamic_batch else 1)
    shape = ov.PartialShape([-1 if dynamic_batch else 1, *spec.input_size])
    with quiet():
        try:
            return ov.convert_model(module, example_input=example, input=[shape])
        except Exception as exc:  # OpenVINO's PyTorch frontend raises OpConversionFailure, RuntimeError, …
            raise ExportError(_failure_message(exc, name, "the torch model (traced with torch.jit)", dynamic_batch)
                              ) from exc


def _convert_onnx(ov: Any, path: Path, dynamic_batch: bool) -> Any:
    from ..common import quiet

    with quiet():
        try:
            model = ov.convert_model(str(path))
        except Exception as exc:  # OpenVINO's ONNX frontend raises RuntimeError / OpConversionFailure
            raise ExportError(_failure_message(exc, str(path), f"the ONNX file {path}", dynamic_batch)) from exc
    if not dynamic_batch:
        pshape = model.inputs[0].get_partial_shape()
        if pshape.rank.is_static and pshape[0].is_dynamic:
            dims = [1] + [d.get_length() if d.is_static else -1 for d in list(pshape)[1:]]
            model.reshape({model.inputs[0]: ov.PartialShape(dims)})
    return model


def _failure_message(exc: BaseException, name: str, what: str, dynamic_batch: bool) -> str:
    import re

    text = str(exc)
    ops = list(dict.fromkeys(re.findall(r"(aten::[A-Za-z0-9_.]+|prim::[A-Za-z0-9_]+|[A-Z][A-Za-z]+-\d+)", text)))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((ln for ln in lines if "No conversion rule" in ln or "not supported" in ln or "failed" in ln.lower()),
                  lines[0] if lines else type(exc).__name__)
    msg = [f"OpenVINO could not convert {what} ({name}): {type(exc).__name__}: {detail[:400]}"]
    if ops:
        msg.append(f"Operators named in the error: {', '.join(ops[:5])}.")
    tries = ["export to ONNX first and convert that (from_onnx=..., or --from-onnx)"]
    if dynamic_batch:
        tries.append("dynamic_batch=False")
    tries.append("a newer openvino (pip install -U openvino)")
    msg.append("Try: " + "; ".join(tries) + ".")
    return "\n".join(msg)


def _name_io(model: Any, spec: InputSpec, path: Path) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"the converted model for {path} has {len(model.inputs)} inputs and {len(model.outputs)} "
                          f"outputs; edgevit exports single-input, single-output classifiers (return only the logits)")
    model.inputs[0].get_tensor().set_names({spec.input_name})
    model.outputs[0].get_tensor().set_names({spec.output_name})


def _fmt(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def preprocess_info(spec: InputSpec) -> dict[str, str]:
    """The flat ``edgevit/preprocess/*`` strings stored in the IR (what the C++ example reads); ``class_names``
    (one name a line) only when the spec has them."""
    c, h, w = spec.input_size
    info = {"channels": str(c), "height": str(h), "width": str(w), "mean": _fmt(spec.mean), "std": _fmt(spec.std),
            "interpolation": spec.interpolation, "crop_pct": repr(float(spec.crop_pct)),
            "num_classes": str(spec.num_classes if spec.num_classes is not None else -1),
            "input_name": spec.input_name, "output_name": spec.output_name}
    if spec.class_names:
        info["class_names"] = "\n".join(" ".join(name.split()) for name in spec.class_names)
    return info


def _stamp(model: Any, spec: InputSpec, source: str, precision: str, converted_from: str) -> None:
    from ...versions import __version__

    model.set_rt_info(json.dumps(spec.to_dict()), [RT_ROOT, "input_spec"])
    model.set_rt_info(source, [RT_ROOT, "source"])
    model.set_rt_info(precision, [RT_ROOT, "precision"])
    model.set_rt_info(converted_from, [RT_ROOT, "converted_from"])
    model.set_rt_info(str(__version__), [RT_ROOT, "version"])
    for key, value in preprocess_info(spec).items():
        model.set_rt_info(value, [RT_ROOT, "preprocess", key])


def _save(ov: Any, model: Any, path: Path, precision: str) -> None:
    try:
        ov.save_model(model, str(path), compress_to_fp16=precision == "fp16")
    except Exception as exc:  # RuntimeError / OSError
        raise ExportError(f"could not write the OpenVINO IR to {path} ({type(exc).__name__}: {str(exc)[:300]}); "
                          f"check the directory is writable and has free space") from exc


# ------------------------------------------------------------------------------------------------ parity


def _chunks(images: np.ndarray, static_batch: int | None) -> list[np.ndarray]:
    if static_batch is None:  # batch 1 first, then batches of PARITY_CHUNK: two batch sizes are exercised
        bounds = [0, 1] + list(range(1 + PARITY_CHUNK, len(images), PARITY_CHUNK)) + [len(images)]
        return [images[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    from ...runtimes.base import iter_chunks, pad_batch

    # a fixed batch: chunks of exactly that size, the last padded (the caller trims both sides to len(images))
    return [pad_batch(images[a:b], static_batch) for a, b in iter_chunks(len(images), static_batch)]


def _parity(module: Any, onnx_path: str | Path | None, path: Path, spec: InputSpec, images: np.ndarray, *,
            precision: str, tolerance: float | None, static_batch: int | None, what: str) -> tuple[ParityRecord, dict]:
    from ..parity import check_parity, is_classifier, parity_thresholds
    from .runtime import OpenVinoRuntime

    chunks = _chunks(images, static_batch)
    n = len(images)
    reference = np.concatenate(_reference_logits(module, onnx_path, spec, chunks))[:n]
    with OpenVinoRuntime(Artifact(kind="openvino", spec=spec, path=path), device="cpu", precision="f32") as rt:
        try:
            cand = np.concatenate([rt.run(x) for x in chunks])[:n]
            info = {k: rt.describe()[k] for k in ("ov_device", "compiled", "inference_precision", "backend_version")}
        except Exception as exc:  # the IR was written but does not run
            if isinstance(exc, ParityError):
                raise
            raise ExportError(f"the exported IR {path} does not run in OpenVINO on real inputs: {exc}. Try "
                              f"from_onnx=... or dynamic_batch=False.") from exc
    classifier = is_classifier(spec)
    thresholds = parity_thresholds(precision, reference, classifier=classifier)
    if tolerance is not None:
        thresholds["tolerance"] = tolerance
    record = check_parity(reference, cand, what=what, precision=precision, classifier=classifier, **thresholds)
    return record, info


def _reference_logits(module: Any, onnx_path: str | Path | None, spec: InputSpec,
                      chunks: list[np.ndarray]) -> list[np.ndarray]:
    if module is None:
        from ..onnx.runtime import OnnxRuntime

        with OnnxRuntime(Artifact(kind="onnx", spec=spec, path=Path(onnx_path)), device="cpu") as ort:
            return [ort.run(x) for x in chunks]
    from ..reference import torch_logits

    return [torch_logits(module, np.concatenate(chunks), what="OpenVINO parity check")]
