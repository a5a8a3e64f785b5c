"""ONNX → ONNX Runtime's ``.ort`` format (ONNX Runtime Mobile), with the operator config for reduced builds.

The conversion is onnxruntime's own tool, ``onnxruntime.tools.convert_onnx_models_to_ort`` (the module behind
``python -m onnxruntime.tools.convert_onnx_models_to_ort``), called through its Python API. It writes

- ``<name>.ort`` (``optimization="fixed"``: graph optimisations applied and baked in, the default for CPU) or
  ``<name>.with_runtime_opt.ort`` (``"runtime"``: basic optimisations baked in, the others saved and replayed at
  load time when the session sets ``session.enable_saved_runtime_optimizations=1`` — for NNAPI/CoreML builds);
- ``<name>.required_operators[...].config``: the operator kernels the model needs, the input of a minimal
  onnxruntime build (``build.sh --minimal_build --include_ops_by_config <config>``).

The ONNX file's metadata (edgevit's input spec under ``edgevit.input_spec``) is carried into the ``.ort`` file and
read back by :func:`edgevit.runtimes.open_artifact`; the spec is also written to ``<name>.ort.spec.json`` so a
mobile app can read it without onnxruntime's metadata API. The ``.ort`` file runs in the ``onnxruntime`` runtime,
so ``edgevit eval --artifact X.ort`` and ``edgevit profile X.ort`` work on it.

Parity: the ``.ort`` file is run on real images and compared with the source ONNX file (onnxruntime, CPU) and,
when the torch model is given, with torch (fp32 thresholds of :mod:`edgevit.formats.parity`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult

log = logging.getLogger(__name__)

OPTIMIZATIONS = ("fixed", "runtime")
TARGET_PLATFORMS = (None, "arm", "amd64")
_STATS = ("max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement", "n")


def _convert(onnx_path: Path, out_dir: Path, *, optimization: str, target_platform: str | None,
             enable_type_reduction: bool) -> tuple[Path, Path | None, str]:
    """Run onnxruntime's converter; returns (.ort path, operator config path, converter output)."""
    from onnxruntime.tools import convert_onnx_models_to_ort as conv

    style = conv.OptimizationStyle.Fixed if optimization == "fixed" else conv.OptimizationStyle.Runtime
    buf = io.StringIO()
    tool_log = logging.getLogger("ort_format_model.utils")  # the tool logs "Created config in ..." at INFO
    level = tool_log.level
    tool_log.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(buf):
            conv.convert_onnx_models_to_ort(onnx_path, output_dir=out_dir, optimization_styles=[style],
                                            target_platform=target_platform,
                                            enable_type_reduction=enable_type_reduction)
    except Exception as exc:  # onnxruntime raises pybind errors; the tool raises ValueError/FileNotFoundError
        raise ExportError(
            f"onnxruntime's ORT-format converter failed on {onnx_path} ({type(exc).__name__}: {str(exc)[:300]}). "
            f"Converter output:\n{buf.getvalue()[-1500:]}\nCheck that the ONNX file loads in onnxruntime "
            f"(edgevit eval --artifact {onnx_path}); re-export with another opset if an operator is unsupported."
        ) from exc
    finally:
        tool_log.setLevel(level)
    output = buf.getvalue()
    log.debug("convert_onnx_models_to_ort output:\n%s", output)
    suffix = ".with_runtime_opt.ort" if optimization == "runtime" else ".ort"
    ort_path = out_dir / (onnx_path.stem + suffix)
    if not ort_path.exists():
        raise ExportError(f"onnxruntime's converter reported no error but {ort_path} was not written. Converter "
                          f"output:\n{output[-1500:]}")
    # the tool's naming (convert_onnx_models_to_ort._create_config_file_path, optimization level "all")
    config = out_dir / (f"{onnx_path.stem}.required_operators{'_and_types' if enable_type_reduction else ''}"
                        f"{'.with_runtime_opt' if optimization == 'runtime' else ''}.config")
    return ort_path, (config if config.exists() else None), output


def read_operator_config(path: str | Path) -> dict[str, list[str]]:
    """``{"ai.onnx;17": ["LayerNormalization", ...], ...}`` from a ``required_operators.config`` file."""
    ops: dict[str, list[str]] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(";")
        if len(parts) >= 3:
            ops[f"{parts[0]};{parts[1]}"] = [o.split("{")[0] for o in parts[2].split(",") if o]
    return ops


def export_ort_mobile(onnx_path: Any, out_dir: str | Path, *, optimization: str = "fixed",
                      target_platform: str | None = None, enable_type_reduction: bool = False, parity: bool = True,
                      torch_model: Any = None, parity_images: Any = None, parity_samples: int = 32,
                      tolerance: float | None = None, spec=None) -> ExportResult:
    """Convert an ONNX file (path or ``onnx`` Artifact) to the ``.ort`` format in ``out_dir``; see the module docs.

    - ``optimization``: ``fixed`` (default) or ``runtime`` (saved runtime optimisations, for NNAPI/CoreML);
    - ``target_platform``: ``arm`` / ``amd64`` / None, passed to the converter (``arm`` allows INT8 QDQ kernels);
    - ``enable_type_reduction``: the operator config also lists the types each kernel needs (smaller builds);
    - parity on real images (``parity_images`` — preprocessed NCHW float32, raw uint8 images or an
      ``ArrayDataset``; required unless ``parity=False``, :class:`ExportError` otherwise) against the ONNX file and,
      with ``torch_model`` (module or torch Artifact), against torch. ``tolerance`` bounds max |logit diff|
      (default: the fp32 threshold, scaled to the logits).

    Returns an :class:`~edgevit.results.ExportResult` (the ``ort`` artefact; its parity is vs torch when given,
    else vs the ONNX file) whose ``to_dict()`` is the JSON record with ``path``, ``config_path``, ``required_operators``, ``file_size``,
    ``max_abs_diff``/``cosine``/``top1_agreement``/``n`` (vs torch when given, else vs the ONNX file;
    ``parity_reference`` says which), ``parity_vs_onnx``, ``parity_vs_torch``, ``input_spec`` and ``versions``.
    Raises :class:`ParityError` (the files are kept; ``exc.record`` holds the record) on disagreement.
    """
    from ...artifact import Artifact
    from ...runtimes import METADATA_READERS, open_artifact, write_spec_sidecar
    from ...spec import SPEC_KEY
    from ...versions import library_versions
    from ..onnx.runtime import OnnxRuntime
    from ..parity import check_parity, default_tolerance, is_classifier, parity_inputs
    from ..reference import resolve_onnx, runtime_logits, torch_logits, unwrap_torch

    t0 = time.perf_counter()
    if optimization not in OPTIMIZATIONS:
        raise ConfigError(f"ORT-format optimization must be one of {', '.join(OPTIMIZATIONS)}, got {optimization!r}")
    if target_platform not in TARGET_PLATFORMS:
        raise ConfigError(f"target_platform must be 'arm', 'amd64' or None, got {target_platform!r}")
    if parity_samples < 1:
        raise ConfigError(f"parity_samples must be ≥ 1, got {parity_samples}")
    src, spec, source = resolve_onnx(onnx_path, spec)
    if src.with_name(src.name + ".data").exists():
        log.info("%s has external data; the .ort file will hold the weights inline", src)
    out = Path(out_dir)
    if out.suffix == ".ort":
        raise ConfigError(f"out_dir must be a directory (the converter names the file), got {out}")
    out.mkdir(parents=True, exist_ok=True)

    t_conv = time.perf_counter()
    ort_path, config_path, _ = _convert(src.resolve(), out.resolve(), optimization=optimization,
                                        target_platform=target_platform, enable_type_reduction=enable_type_reduction)
    t_conv = time.perf_counter() - t_conv
    meta = METADATA_READERS.get("ort")(ort_path)
    spec_in_file = SPEC_KEY in meta
    sidecar = write_spec_sidecar(ort_path, spec, source)
    reopened = open_artifact(ort_path)  # proves the artefact opens with its spec (metadata, else side file)
    if reopened.spec != spec:
        log.warning("%s: the stored input spec differs from the requested one; the side file %s holds the requested",
                    ort_path, sidecar.name)

    record: dict[str, Any] = {
        "format": "ort", "path": str(ort_path), "source_onnx": str(src), "source": source,
        "optimization": optimization, "target_platform": target_platform,
        "enable_type_reduction": enable_type_reduction,
        "config_path": str(config_path) if config_path else None,
        "required_operators": read_operator_config(config_path) if config_path else None,
        "spec_in_metadata": spec_in_file, "spec_sidecar": str(sidecar), "file_size": ort_path.stat().st_size,
        "onnx_file_size": src.stat().st_size, "convert_time_s": round(t_conv, 3), "input_spec": spec.to_dict(),
        "max_abs_diff": None, "mean_abs_diff": None, "cosine": None, "top1_agreement": None, "n": None,
        "parity_reference": None, "parity_vs_onnx": None, "parity_vs_torch": None, "parity_inputs": None,
        "versions": library_versions(),
    }
    best = None
    if optimization == "runtime":
        record["note"] = ("saved runtime optimisations are replayed only with the session option "
                          "session.enable_saved_runtime_optimizations=1 (trusted models only)")
    if parity:
        images, described = parity_inputs(parity_images, spec, what="ORT format")
        record["parity_inputs"] = described
        with OnnxRuntime(Artifact(kind="ort", spec=spec, path=ort_path), device="cpu") as rt, \
                OnnxRuntime(Artifact(kind="onnx", spec=spec, path=src), device="cpu") as ref_rt:
            cand = runtime_logits(rt, images)
            ref_onnx = runtime_logits(ref_rt, images)
        model = unwrap_torch(torch_model)
        vs_torch = None
        try:
            vs_onnx = check_parity(
                ref_onnx, cand, tolerance=tolerance if tolerance is not None else default_tolerance("fp32", ref_onnx),
                what=f"ORT format ({ort_path.name}, {optimization}) vs source ONNX ({src.name})",
                classifier=is_classifier(spec))
            record["parity_vs_onnx"] = vs_onnx.to_dict()
            if model is not None:
                ref_torch = torch_logits(model, images, what="ORT-format parity check")
                vs_torch = check_parity(
                    ref_torch, cand,
                    tolerance=tolerance if tolerance is not None else default_tolerance("fp32", ref_torch),
                    what=f"ORT format ({ort_path.name}, {optimization}) vs torch ({source})",
                    classifier=is_classifier(spec))
                record["parity_vs_torch"] = vs_torch.to_dict()
        except ParityError as exc:
            failed = getattr(exc, "record", None) or {}
            record.update({k: failed.get(k) for k in _STATS})
            record["time_s"] = round(time.perf_counter() - t0, 3)
            err = ParityError(f"{exc} The converted file is kept at {ort_path}.")
            err.record = record
            raise err from exc
        best = vs_torch or vs_onnx
        record["parity_reference"] = "torch" if vs_torch is not None else "onnx"
    result = ExportResult(artifact=Artifact(kind="ort", spec=spec, path=ort_path, source=source), parity=best,
                          seconds=time.perf_counter() - t0, versions=record["versions"], fields=record)
    log.info("converted %s to %s (%s, %.1f MB, max |diff| %s vs %s) in %.1f s", src, ort_path, optimization,
             record["file_size"] / 1e6, best and best.max_abs_diff, record["parity_reference"], result.seconds)
    return result


def export_model_ort_mobile(model: Any, out_dir: str | Path, *, opset: int = 18, dynamic_batch: bool = True,
                            parity_images: Any = None, parity_samples: int = 32, **options) -> ExportResult:
    """Torch model (module, torch Artifact or model name) → ONNX (``out_dir/<name>.onnx``) → ``.ort``.

    The ONNX export has its own parity check; the ``.ort`` file is then compared with both the ONNX file and the
    same torch model. Returns the ``.ort`` :class:`~edgevit.results.ExportResult` with the ONNX export record
    under ``fields["onnx_export"]`` (``to_dict()["onnx_export"]``).
    """
    from ..common import resolve_torch_source
    from ..onnx.export import export_onnx

    module, _, _ = resolve_torch_source(model)  # build once: a second create() of a random-init model would differ
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parity = options.get("parity", True)
    res_onnx = export_onnx(module, out, opset=opset, dynamic_batch=dynamic_batch, parity=parity,
                           parity_images=parity_images, parity_samples=parity_samples)
    res = export_ort_mobile(res_onnx.artifact, out, parity_images=parity_images, parity_samples=parity_samples,
                            torch_model=module, **options)
    res.fields["onnx_export"] = res_onnx.to_dict()
    return res


__all__ = ["OPTIMIZATIONS", "export_model_ort_mobile", "export_ort_mobile", "read_operator_config"]
