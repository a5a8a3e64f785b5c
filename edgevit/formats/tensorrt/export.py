"""ONNX → TensorRT: an engine where TensorRT is installed, and always a device bundle for a Jetson.

Two routes, one function (:func:`export_tensorrt`):

1. **Device bundle** (``bundle=True``, needs no TensorRT): everything a Jetson needs to build and measure the
   engine itself — engines are specific to the GPU and the TensorRT version, so they must be built ON the device:

   - the ONNX file and ``<name>.spec.json`` (edgevit's input spec, copied next to the engine by ``build.sh``);
   - ``calibration.cache``: INT8 ranges computed by edgevit from real calibration images, in TensorRT's
     calibration-cache format (see :mod:`edgevit.formats.tensorrt.calib`), and ``calibration.json`` (per tensor);
   - ``build.sh``: ``trtexec --onnx … --saveEngine … --fp16 | --int8 --fp16 --calib=calibration.cache
     --minShapes/--optShapes/--maxShapes … --timingCacheFile …`` (``PRECISION=int8 ./build.sh`` switches);
   - ``profile.sh``: trtexec timing by the measurement conventions (warm-up, ≥ 3 s, percentiles 90/95/99,
     ``--useSpinWait``, end-to-end and ``--noDataTransfers`` GPU-compute runs, a separate per-layer run, a
     tegrastats energy run) with ``nvpmodel -q``, ``jetson_clocks --show``, temperatures and versions recorded;
   - ``README.md`` and ``manifest.json`` (input, precision, calibration, preflight, ONNX-vs-torch parity, files).

   The device needs only TensorRT (``trtexec`` ships with JetPack) — no Python, no torch.

2. **Engine** (where ``import tensorrt`` works): built with the TensorRT Python API — ONNX parser, builder config
   with FP16/INT8 flags, an ``IInt8EntropyCalibrator2`` that hands TensorRT edgevit's calibration cache (or real
   batches when there is none), an optimisation profile for the dynamic batch, a timing cache file — then loaded
   with :class:`edgevit.formats.tensorrt.runtime.TensorRTRuntime` and checked against the ONNX file on real images.

The preflight (:func:`edgevit.formats.tensorrt.preflight.tensorrt_preflight`) runs in both routes. The calibration
cache is TensorRT's native format, which is also what onnxruntime-gpu's TensorRT execution provider reads with
``trt_int8_use_native_calibration_table`` (edgevit's onnxruntime runtime, ``device="tensorrt"``, passes such
``provider_options`` through; not exercised here, where no GPU build of onnxruntime exists).
Logs that ``profile.sh`` writes on the device can be read back with
:func:`edgevit.formats.tensorrt.trtexec.parse_trtexec_log`. The bundle's scripts and README are templates in
``templates/`` (package data).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import file_sha256
from ...errors import ConfigError, ExportError, ParityError
from ...results import ExportResult, ParityRecord
from .calib import CALIB_METHODS, DEFAULT_TRT_VERSION
from .spec import BUNDLE_FORMAT, plan_build, require_tensorrt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
BUNDLE_VERSION = 1



# ------------------------------------------------------------------------------------------------ shapes


def _input_info(onnx_path: Path) -> tuple[str, list, bool]:
    """(input name, dims with None for symbolic ones, dynamic batch?) of the ONNX graph's first real input."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    inp = next((i for i in model.graph.input if i.name not in inits), None)
    if inp is None:
        raise ExportError(f"{onnx_path} has no graph input; re-export it with edgevit export onnx")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims, bool(dims) and dims[0] is None


def batch_shapes(spec, dims: list, dynamic: bool, min_batch: int, opt_batch: int, max_batch: int) -> dict:
    """``{"min": [...], "opt": [...], "max": [...]}`` NCHW shapes of the optimisation profile."""
    for name, v in (("min_batch", min_batch), ("opt_batch", opt_batch), ("max_batch", max_batch)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if not min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"batch sizes must satisfy min_batch ≤ opt_batch ≤ max_batch, got {min_batch}, "
                          f"{opt_batch}, {max_batch}")
    chw = list(spec.input_size)
    if not dynamic:
        b = dims[0] if dims and dims[0] else 1
        return {"min": [b, *chw], "opt": [b, *chw], "max": [b, *chw]}
    return {"min": [min_batch, *chw], "opt": [opt_batch, *chw], "max": [max_batch, *chw]}


def _shape_key(name: str, *, in_double_quotes: bool = False) -> str:
    """An input name as trtexec's shape specs take it: plain, or single-quoted when it has other characters."""
    if re.fullmatch(r"[A-Za-z0-9_.]+", name):
        return name
    return f"'{name}'" if in_double_quotes else f"\\'{name}\\'"


def _shape_arg(name: str, shape: list) -> str:
    return f"{_shape_key(name)}:{'x'.join(str(int(d)) for d in shape)}"


# ------------------------------------------------------------------------------------------------ scripts


def _template(name: str) -> str:
    """A bundle template (``build.sh``, ``profile.sh``, ``README.md``) from the package data in ``templates/``."""
    return resources.files(__package__).joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def _write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _render(template: str, values: dict[str, Any]) -> str:
    out = template
    for k, v in values.items():
        out = out.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", out)
    if left:
        raise ExportError(f"internal error: unfilled script placeholders {left}")
    return out


# ------------------------------------------------------------------------------------------------ parity


def _onnx_vs_torch(onnx_path: Path, spec, torch_model, images: np.ndarray) -> ParityRecord:
    from ...artifact import Artifact
    from ..onnx.runtime import OnnxRuntime
    from ..parity import check_parity, default_tolerance, is_classifier
    from ..reference import runtime_logits, torch_logits

    with OnnxRuntime(Artifact(kind="onnx", spec=spec, path=onnx_path), device="cpu") as rt:
        cand = runtime_logits(rt, images)
    ref = torch_logits(torch_model, images, what="ONNX-vs-torch parity check")
    return check_parity(ref, cand, tolerance=default_tolerance("fp32", ref), classifier=is_classifier(spec),
                        what=f"ONNX ({onnx_path.name}) vs torch, as shipped in the TensorRT bundle")


def _calibration_inputs(spec, calib: str | None, calib_split: str, calib_samples: int, calib_images: Any, data_dir,
                        seed: int) -> tuple[np.ndarray, dict]:
    from ...data import ArrayDataset
    from ...data.calibration import calibration_data

    if calib_images is None:
        return calibration_data(spec, calib, split=calib_split, samples=calib_samples, data_dir=data_dir, seed=seed,
                                what="TensorRT INT8 calibration")
    n = len(calib_images) if isinstance(calib_images, ArrayDataset) else max(1, calib_samples)
    return calibration_data(spec, calib_images, samples=max(n, 1), seed=seed, what="TensorRT INT8 calibration")


# ------------------------------------------------------------------------------------------------ export


def export_tensorrt(onnx_path: Any, out_dir: str | Path, *, precision: str = "fp16", bundle: bool = True,
                    engine: bool | None = None, calib: str | None = None, calib_split: str = "train",
                    calib_samples: int = 300, calibration_method: str = "entropy", calib_percentile: float = 99.99,
                    calib_images: Any = None, data_dir: str | None = None, min_batch: int = 1, opt_batch: int = 1,
                    max_batch: int = 8, trt_version: str = DEFAULT_TRT_VERSION, workspace_mib: int = 1024,
                    torch_model: Any = None, onnx_parity: dict | None = None, parity_samples: int = 64,
                    parity_images: Any = None, tolerance: float | None = None, seed: int = 0,
                    calib_description: dict | None = None) -> ExportResult:
    """Export an ONNX file (path or ``onnx`` Artifact) for TensorRT into ``out_dir``; see the module docstring.

    - ``precision``: ``fp32`` | ``fp16`` | ``int8`` (INT8 with FP16 fallback) — the bundle's default and the engine's;
    - ``bundle``: write the device bundle (needs no TensorRT); ``engine``: build an engine here — ``None`` (default)
      builds one when TensorRT imports, ``True`` requires it, ``False`` never. Without TensorRT and without
      ``bundle`` this raises :class:`MissingBackendError` naming the bundle route;
    - calibration (for a bundle, or an INT8 engine): ``calib_samples`` class-balanced images of ``calib`` (a dataset
      name such as ``fashion-mnist`` or an ImageFolder directory), split ``calib_split``, or ``calib_images`` (raw
      uint8, preprocessed float32 or an ``ArrayDataset``); one of the two is required then (:class:`DataError`);
      ``calibration_method`` ``entropy`` | ``max`` | ``percentile``; the cache header is tagged for TensorRT ``trt_version`` (the device's; 10.3.0 = JetPack 6);
    - ``min_batch``/``opt_batch``/``max_batch``: the optimisation profile of a dynamic-batch ONNX file;
    - ``torch_model`` (module or torch Artifact) or ``onnx_parity`` (a parity record) give the ONNX-vs-torch
      parity written to the manifest; ``parity_images`` (preprocessed, raw uint8 or an ``ArrayDataset``) are used
      for it and for the engine's parity, and are required when either is computed (:class:`ExportError`);
    - ``calib_description`` replaces the recorded description of where ``calib_images`` came from.

    Returns an :class:`~edgevit.results.ExportResult`: its artefact is the engine when one was built, else the
    bundle's ONNX file; its parity is the engine vs ONNX, else the ONNX file vs torch when known (None otherwise).
    ``to_dict()`` is the JSON record: ``bundle`` (directory, files, manifest), ``calibration``, ``preflight``,
    ``engine`` (path, parity vs the ONNX file, build time) or None, ``tensorrt`` availability and, at the top,
    ``max_abs_diff``/``cosine``/``top1_agreement``/``n`` of the engine vs ONNX when an engine was built, else of
    the ONNX file vs torch when known.
    """
    from ...artifact import Artifact
    from ...runtimes import write_spec_sidecar
    from ...versions import library_versions
    from ..parity import parity_inputs
    from ..reference import resolve_onnx, unwrap_torch
    from .calib import compute_calibration_cache
    from .preflight import tensorrt_preflight

    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if calibration_method not in CALIB_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {calibration_method!r}")
    if calib_samples < 1 or parity_samples < 1:
        raise ConfigError(f"calib_samples and parity_samples must be ≥ 1, got {calib_samples}, {parity_samples}")
    if workspace_mib < 1:
        raise ConfigError(f"workspace_mib must be ≥ 1, got {workspace_mib}")
    have_trt, trt_info, build_here = plan_build(bundle=bundle, engine=engine, what="a TensorRT engine")

    src, spec, source = resolve_onnx(onnx_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    input_name, dims, dynamic = _input_info(src)
    shapes = batch_shapes(spec, dims, dynamic, min_batch, opt_batch, max_batch)
    preflight = tensorrt_preflight(src)
    if preflight["unsupported"]:
        log.warning("TensorRT preflight: %s will not parse on TensorRT %s: %s", src.name,
                    preflight["table"]["tensorrt_version"],
                    ", ".join(f"{u['domain']}.{u['op']}" for u in preflight["unsupported"]))

    # calibration (always for a bundle, so the device can build INT8 later; for an engine only when INT8)
    calibration = None
    cache_path = out / "calibration.cache"
    if bundle or precision == "int8":
        images, where = _calibration_inputs(spec, calib, calib_split, calib_samples, calib_images, data_dir, seed)
        where = calib_description or where
        calibration = compute_calibration_cache(src, images, cache_path, method=calibration_method,
                                                percentile=calib_percentile, trt_version=trt_version)
        calibration.update({"data": where, "file": cache_path.name,
                            "detail_file": Path(calibration["detail_file"]).name})

    # ONNX-vs-torch parity for the manifest
    model = unwrap_torch(torch_model)
    described = None
    if model is not None or build_here:
        parity_images, described = parity_inputs(parity_images, spec, what="TensorRT")
    onnx_vs_torch = onnx_parity
    if onnx_vs_torch is None and model is not None:
        onnx_vs_torch = _onnx_vs_torch(src, spec, model, parity_images).to_dict()

    record: dict[str, Any] = {
        "format": "tensorrt", "source_onnx": str(src), "source": source, "precision": precision,
        "input": {"name": input_name, "dynamic_batch": dynamic, "shapes": shapes, "spec": spec.to_dict()},
        "preflight": preflight, "calibration": calibration, "onnx_vs_torch": onnx_vs_torch,
        "tensorrt": {"available": have_trt, "version_or_reason": trt_info, "target_version": trt_version},
        "bundle": None, "engine": None, "max_abs_diff": None, "mean_abs_diff": None, "cosine": None,
        "top1_agreement": None, "n": None, "parity_reference": None, "parity_inputs": described,
        "versions": library_versions(),
    }

    if bundle:
        record["bundle"] = write_bundle(src, out, spec=spec, source=source, precision=precision, shapes=shapes,
                                        input_name=input_name, dynamic=dynamic, calibration=calibration,
                                        preflight=preflight, onnx_vs_torch=onnx_vs_torch,
                                        trt_version=trt_version, workspace_mib=workspace_mib)
    if build_here:
        engine_path = out / f"{src.stem}.{precision}.engine"
        built = build_engine(src, engine_path, precision=precision, shapes=shapes, input_name=input_name,
                             calib_cache=cache_path if precision == "int8" else None,
                             timing_cache=out / "timing.cache", workspace_mib=workspace_mib)
        write_spec_sidecar(engine_path, spec, source)
        engine_parity = _engine_parity(engine_path, src, spec, precision, parity_images, tolerance, record)
        built["parity"] = engine_parity.to_dict()
        record["engine"] = built
        record["path"] = str(engine_path)
        art = Artifact(kind="tensorrt", spec=spec, path=engine_path, source=source)
        parity = engine_parity
        record["parity_reference"] = "onnx (engine vs ONNX file)"
    else:
        art = Artifact(kind="onnx", spec=spec, path=src, source=source)  # the model the bundle ships
        parity = ParityRecord.from_dict(onnx_vs_torch) if onnx_vs_torch else None
        if parity is not None:
            record["parity_reference"] = "torch (ONNX vs torch)"
    result = ExportResult(artifact=art, parity=parity, seconds=time.perf_counter() - t0,
                          versions=record["versions"], fields=record)
    log.info("TensorRT export of %s: bundle %s, engine %s, %.1f s", src.name, bool(bundle),
             record["engine"]["path"] if record["engine"] else "not built", result.seconds)
    return result


def write_bundle(src: Path, out: Path, *, spec, source: str | None, precision: str, shapes: dict, input_name: str,
                 dynamic: bool, calibration: dict | None, preflight: dict, onnx_vs_torch: dict | None,
                 trt_version: str, workspace_mib: int) -> dict:
    """Write the device bundle's files into ``out`` (see the module docstring); returns its description."""
    from ...artifact import write_json
    from ...versions import __version__

    onnx_dst = out / src.name
    if onnx_dst.resolve() != src.resolve():
        shutil.copy2(src, onnx_dst)
        data = src.with_name(src.name + ".data")
        if data.exists():
            shutil.copy2(data, out / data.name)
    stem = src.stem
    spec_file = out / f"{stem}.spec.json"
    write_json(spec_file, {"edgevit.input_spec": spec.to_dict(), "edgevit.source": source})

    shape_flags = "" if not dynamic else (
        f"--minShapes={_shape_arg(input_name, shapes['min'])} --optShapes={_shape_arg(input_name, shapes['opt'])} "
        f"--maxShapes={_shape_arg(input_name, shapes['max'])} \\\n  ")
    chw = "x".join(str(d) for d in shapes["opt"][1:])
    shapes_line = (f'SHAPES=("--shapes={_shape_key(input_name, in_double_quotes=True)}:${{BATCH}}x{chw}")'
                   if dynamic else "SHAPES=()  # static-shape engine: the shape comes from the model")
    values = {"MODEL": source or stem, "EDGEVIT": __version__, "PRECISION": precision, "ONNX": src.name, "STEM": stem,
              "WORKSPACE": workspace_mib, "SHAPE_FLAGS": shape_flags, "OPT_BATCH": shapes["opt"][0],
              "SHAPES_LINE": shapes_line}
    build_sh = _write_script(out / "build.sh", _render(_template("build.sh"), values))
    profile_sh = _write_script(out / "profile.sh", _render(_template("profile.sh"), values))

    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    import onnx

    opset = next((o.version for o in onnx.load(str(src), load_external_data=False).opset_import
                  if o.domain in ("", "ai.onnx")), None)
    int8_summary = ", ".join(f"{p['pattern']} ×{p['count']}" for p in preflight["int8_fallback"]) or "none"
    pre_summary = ("all operators are in TensorRT's supported-operator table (TensorRT "
                   f"{preflight['table']['tensorrt_version']})" if preflight["ok"] else
                   "UNSUPPORTED: " + ", ".join(f"{u['domain']}.{u['op']}" for u in preflight["unsupported"])
                   + ("" if preflight["opset_supported"] else f"; {preflight.get('opset_note', '')}"))
    shape_text = (f"(dynamic batch {shapes['min'][0]}–{shapes['max'][0]}, optimised for {shapes['opt'][0]}; "
                  f"{'×'.join(map(str, shapes['opt'][1:]))})" if dynamic else
                  f"(static shape {'×'.join(map(str, shapes['opt']))})")
    readme = _template("README.md").format(
        model=source or stem, edgevit=__version__, created=created, onnx=src.name, opset=opset, input=input_name,
        shape_text=shape_text, stem=stem, precision=precision, opt_batch=shapes["opt"][0],
        calib_method=calibration["method"] if calibration else "n/a", calib_n=calibration["n"] if calibration else 0,
        calib_data=(calibration or {}).get("data", {}).get("dataset", "n/a"), int8_summary=int8_summary,
        preflight_summary=pre_summary)
    (out / "README.md").write_text(readme)

    files = [onnx_dst, spec_file, build_sh, profile_sh, out / "README.md"]
    if (out / (src.name + ".data")).exists():
        files.append(out / (src.name + ".data"))
    if calibration:
        files += [out / calibration["file"], out / calibration["detail_file"]]
    trtexec_cmd = (f"trtexec --onnx={src.name} --saveEngine={stem}.{precision}.engine "
                   + {"fp32": "", "fp16": "--fp16 ", "int8": "--int8 --fp16 --calib=calibration.cache "}[precision]
                   + shape_flags.replace("\\\n  ", "")
                   + f"--timingCacheFile=timing.cache --memPoolSize=workspace:{workspace_mib} --skipInference")
    manifest = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "created_utc": created, "edgevit_version": __version__,
        "model": {"source": source, "onnx": src.name, "opset": opset, "sha256": file_sha256(onnx_dst),
                  "file_size": onnx_dst.stat().st_size},
        "input": {"name": input_name, "dynamic_batch": dynamic, "min_shape": shapes["min"],
                  "opt_shape": shapes["opt"], "max_shape": shapes["max"], "spec": spec.to_dict(),
                  "spec_file": spec_file.name},
        "precision": precision,
        "build": {"script": "build.sh", "command": trtexec_cmd.strip(), "engine": f"{stem}.{precision}.engine",
                  "int8_flags": "--int8 --fp16 (FP16 fallback for layers without an INT8 kernel)",
                  "timing_cache": "timing.cache", "workspace_mib": workspace_mib,
                  "must_build_on_device": True, "device_needs": "TensorRT (trtexec) only — no Python, no torch"},
        "profile": {"script": "profile.sh", "percentiles": [90, 95, 99], "warmup_ms": 500, "duration_s": 10,
                    "runs": ["end_to_end", "compute_only (--noDataTransfers)", "per_layer (separate run)",
                             "energy (tegrastats, 30 s)"],
                    "stamps": ["nvpmodel -q", "jetson_clocks --show", "thermal zones", "TensorRT/JetPack versions"]},
        "calibration": None if calibration is None else {
            **{k: calibration[k] for k in ("file", "detail_file", "header", "method", "percentile", "n", "tensors",
                                           "activations", "constants", "input", "input_amax", "input_max_abs",
                                           "zero_tensors")},
            "data": calibration.get("data"), "scale": "amax / 127, float32 big-endian hex",
            "target_tensorrt_version": trt_version,
            "header_note": "EntropyCalibration2 is the calibrator trtexec --calib uses; build.sh re-tags the "
                           "header for the device's TensorRT version"},
        "preflight": preflight,
        "parity": {"onnx_vs_torch": onnx_vs_torch,
                   "note": None if onnx_vs_torch else "no torch model was given, so ONNX-vs-torch parity is not "
                                                      "recorded here (see the ONNX export record)"},
        "files": {f.name: {"sha256": file_sha256(f), "size": f.stat().st_size} for f in files if f.exists()},
    }
    write_json(out / "manifest.json", manifest)
    return {"dir": str(out), "manifest": str(out / "manifest.json"), "files": sorted(manifest["files"]) +
            ["manifest.json"], "build_command": manifest["build"]["command"]}


# ------------------------------------------------------------------------------------------------ engine


def _make_calibrator(trt, cache: bytes | None, images: np.ndarray | None, cache_out: Path | None):
    """An ``IInt8EntropyCalibrator2`` that hands TensorRT edgevit's cache, or real batches when there is none."""

    class EdgevitCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._cache, self._images, self._pos, self._buf = cache, images, 0, None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch comes from the calibration profile's shapes

        def get_batch(self, names):
            if self._images is None or self._pos >= len(self._images):
                return None
            import torch

            x = self._images[self._pos : self._pos + 1]
            self._pos += 1
            self._buf = torch.from_numpy(np.ascontiguousarray(x)).cuda()
            return [int(self._buf.data_ptr())]

        def read_calibration_cache(self):
            return self._cache

        def write_calibration_cache(self, data) -> None:
            if cache_out is not None:
                cache_out.write_bytes(bytes(data))

    return EdgevitCalibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str = "fp16", shapes: dict,
                 input_name: str, calib_cache: str | Path | None = None, calib_images: np.ndarray | None = None,
                 timing_cache: str | Path | None = None, workspace_mib: int = 1024,
                 explicit_quantization: bool = False, fp16: bool = True) -> dict:
    """Build and serialise a TensorRT engine with the TensorRT Python API (TensorRT 10; 8.6 works too).

    ``shapes`` holds the optimisation profile (``min``/``opt``/``max`` NCHW lists). For INT8, ``calib_cache``
    (edgevit's cache, re-tagged for the installed TensorRT) is handed to an ``IInt8EntropyCalibrator2``; without
    it the calibrator feeds ``calib_images`` one at a time. ``explicit_quantization``: the ONNX graph carries Q/DQ
    nodes (symmetric INT8), whose scales TensorRT uses; INT8 is enabled without a calibrator (``precision`` must be
    ``int8``); ``fp16=False`` keeps an INT8 build's float leftovers in FP32. The timing cache is read from and written back to
    ``timing_cache``. Raises :class:`MissingBackendError` without TensorRT and :class:`ExportError` naming the
    parser's errors when the ONNX file does not parse.
    """
    trt = require_tensorrt()
    from .calib import cache_header, read_calibration_cache

    t0 = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implied (deprecated) in 10
    if explicit is not None and int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT {trt.__version__}'s ONNX parser rejected {onnx_path}: " + "; ".join(errors[:5])
                          + ". Run the preflight (edgevit export tensorrt --preflight) to see unsupported operators.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if explicit_quantization and precision != "int8":
        raise ConfigError(f"explicit quantization (Q/DQ graph) builds INT8 engines; got precision {precision!r}")
    if precision == "fp16" or (precision == "int8" and fp16):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(profile)
    cache_used = None
    if explicit_quantization:  # Q/DQ scales from the graph: INT8 kernels on, no calibrator
        config.set_flag(trt.BuilderFlag.INT8)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        blob = None
        if calib_cache is not None and Path(calib_cache).exists():
            read_calibration_cache(calib_cache)  # validates the file
            lines = Path(calib_cache).read_text().splitlines()
            lines[0] = cache_header(trt.__version__)
            blob = ("\n".join(lines) + "\n").encode()
            cache_used = str(calib_cache)
        elif calib_images is None:
            raise ExportError("INT8 engine build needs a calibration cache or calibration images")
        config.int8_calibrator = _make_calibrator(trt, blob, calib_images, None)
        config.set_calibration_profile(profile)
    tc_path = Path(timing_cache) if timing_cache else None
    tc = config.create_timing_cache(tc_path.read_bytes() if tc_path and tc_path.exists() else b"")
    config.set_timing_cache(tc, False)  # ignore_mismatch=False: a cache from another device is rejected
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} ({precision}); "
                          f"see the TensorRT log above; try precision='fp16' or a larger workspace_mib")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if tc_path is not None:
        tc_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"path": str(engine_path), "precision": precision, "tensorrt_version": trt.__version__,
            "file_size": engine_path.stat().st_size, "build_time_s": round(time.perf_counter() - t0, 3),
            "calibration_cache": cache_used, "timing_cache": str(tc_path) if tc_path else None, "shapes": shapes,
            "note": "built for this machine's GPU and TensorRT version; not portable"}


def _engine_parity(engine_path: Path, onnx_path: Path, spec, precision: str, images: np.ndarray,
                   tolerance: float | None, record: dict) -> ParityRecord:
    from ...artifact import Artifact
    from ...runtimes.base import run_batched
    from ..onnx.runtime import OnnxRuntime
    from ..parity import check_parity, is_classifier, parity_thresholds
    from ..reference import runtime_logits
    from .runtime import TensorRTRuntime

    with OnnxRuntime(Artifact(kind="onnx", spec=spec, path=onnx_path), device="cpu") as ref_rt, \
            TensorRTRuntime(Artifact(kind="tensorrt", spec=spec, path=engine_path), device="cuda") as rt:
        ref = runtime_logits(ref_rt, images)
        cand = run_batched(rt, images, rt.max_batch)  # within the profile's range, the last batch padded
    classifier = is_classifier(spec)
    th = parity_thresholds(precision, ref, classifier=classifier)
    if tolerance is not None:
        th["tolerance"] = tolerance
    try:
        return check_parity(ref, cand, what=f"TensorRT {precision} engine ({engine_path.name}) vs ONNX",
                            precision=precision, classifier=classifier, **th)
    except ParityError as exc:
        record["engine_parity_failed"] = getattr(exc, "record", None)
        raise ParityError(f"{exc} The engine is kept at {engine_path}.") from exc
