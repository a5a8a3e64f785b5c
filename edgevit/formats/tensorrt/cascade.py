"""An early-exit cascade for TensorRT: a device bundle with one trtexec build per graph, and engines where TensorRT is.

:func:`export_tensorrt_cascade` takes an ONNX cascade (``manifest.json`` of :mod:`edgevit.formats.cascade.export`,
float or the INT8 QDQ copy from ``quantize``) and writes::

    bundle/
      manifest.json           the bundle manifest (format edgevit-tensorrt-bundle, "kind": "cascade"): per graph its
                              ONNX file, input name, min/opt/max shapes, precision mode, trtexec command, preflight
      build.sh                trtexec, one build per graph (generated from templates/build_cascade.sh)
      README.md
      onnx/                   the ONNX cascade as exported (manifest.json: thresholds, criterion, exits) — runs on
                              onnxruntime anywhere, the reference for the engines
      engines/manifest.json   the same cascade with ``backend: tensorrt`` and ``<graph>.engine`` files, which
                              build.sh writes on the device; edgevit's cascade runtime runs it there
      calibration/<graph>.cache (+ .json)   float graphs built INT8 only: each graph's ranges from its real inputs

Shapes. Graph ``segment_0`` reads images ``[n, C, H, W]``, every other graph the tokens ``[n, T, D]`` of the segment
before it. Exited samples leave the batch, so every graph's optimisation profile covers batch ``1 .. max_batch``
(``--minShapes`` at batch 1, ``--optShapes`` at ``opt_batch``, ``--maxShapes`` at ``max_batch``).

Precision, per graph:

- a QDQ graph (INT8 cascade from ``quantize``) uses TensorRT's **explicit quantization**: the scales are the
  graph's Q/DQ nodes, so no calibration cache; ``--int8`` enables INT8 kernels (required for Q/DQ networks in
  TensorRT 8.x weakly-typed builds, harmless in 10.x) and ``--fp16`` lets the float leftovers run in FP16
  (``precision: fp32`` drops it). TensorRT takes symmetric signed INT8 Q/DQ only (zero point 0, int8); a graph with
  other Q/DQ (onnxruntime's default QUInt8 activations have zero points ≠ 0) is refused with
  :class:`~edgevit.errors.ConfigError` before anything is written: TensorRT's ONNX parser rejects it;
- a float graph is built at ``precision``: ``fp32`` (no flag), ``fp16`` (``--fp16``) or ``int8``
  (``--int8 --fp16 --calib=calibration/<graph>.cache``: implicit quantization with ranges computed by edgevit's
  calibrator, :mod:`.calib`, on the graph's real inputs — the tokens the cascade computes from real images).

Engines here (``engine=True``, or ``None`` where ``import tensorrt`` works): every graph through
:func:`edgevit.formats.tensorrt.export.build_engine` into ``engines/``, then the engine cascade against the ONNX
cascade on real images (:func:`edgevit.formats.cascade.convert.compare_cascades`). Without TensorRT an engine build
raises :class:`~edgevit.errors.MissingBackendError` naming the bundle route. Not exercised in this project's CI,
where no TensorRT exists; the bundle is.
"""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, ParityError
from ...results import ExportResult
from .calib import CALIB_METHODS, DEFAULT_TRT_VERSION
from .spec import BUNDLE_FORMAT, plan_build

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
EXPLICIT_NOTE = ("explicit quantization: the INT8 scales are the graph's Q/DQ nodes (no calibration cache); --int8 "
                 "enables the INT8 kernels")


def qdq_problems(model) -> list[str]:
    """Why TensorRT's explicit quantization would reject the Q/DQ nodes of ``model`` (an ``onnx.ModelProto``): one
    line per node whose zero point is not 0 or whose quantised type is not signed int8 (TensorRT's ONNX parser:
    "y_zero_point must be 0"). Empty when every Q/DQ node is symmetric INT8 (or there is none)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    out = []
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if zp_name is None:  # no zero point: uint8 by the ONNX default
            out.append(f"{n.op_type} {n.name or n.output[0]}: no zero point (the ONNX default is uint8)")
            continue
        t = inits.get(zp_name)
        if t is None and zp_name in consts:
            t = next((a.t for a in consts[zp_name].attribute if a.name == "value"), None)
        if t is None:
            out.append(f"{n.op_type} {n.name or n.output[0]}: zero point {zp_name} is computed, not a constant")
            continue
        zp = numpy_helper.to_array(t)
        if t.data_type != TensorProto.INT8 or np.any(zp != 0):
            out.append(f"{n.op_type} {n.name or n.output[0]}: {TensorProto.DataType.Name(t.data_type).lower()} zero "
                       f"point {np.unique(zp)[:3].tolist()}")
    return out


def _graph_inputs_for_calibration(manifest: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Graph name → the real inputs it receives in the cascade (no exit: every graph sees every image), computed by
    running the ONNX cascade on onnxruntime."""
    from ...artifact import Artifact
    from ...spec import InputSpec
    from ..cascade.runtime import CascadeRuntime, graph_inputs, read_manifest

    m = read_manifest(manifest)
    spec = InputSpec.from_dict(m["input_spec"])
    with CascadeRuntime(Artifact(kind="cascade", spec=spec, path=Path(m["_dir"]) / "manifest.json"),
                        backend="onnxruntime") as casc:
        seg_in, _heads, _final = graph_inputs(casc, images)
    out = {s["name"]: seg_in[k] for k, s in enumerate(m["segments"])}
    out.update({e["name"]: seg_in[k + 1] for k, e in enumerate(m["exits"])})  # head k reads segment k's output
    return out


def export_tensorrt_cascade(manifest: str | Path, out_dir: str | Path, *, precision: str = "fp16",
                            bundle: bool = True, engine: bool | None = None, calib_images: Any = None,
                            calib_description: dict | None = None, calibration_method: str = "entropy",
                            opt_batch: int = 1, max_batch: int = 8, trt_version: str = DEFAULT_TRT_VERSION,
                            workspace_mib: int = 1024, parity_images: Any = None) -> ExportResult:
    """The TensorRT bundle (and engines where TensorRT is installed) of the ONNX cascade at ``manifest``; see the
    module docstring.

    ``precision``: ``fp32`` | ``fp16`` | ``int8`` for float graphs (QDQ graphs are INT8 by their Q/DQ nodes);
    ``calib_images``: real calibration images (raw uint8, preprocessed float32 or an ArrayDataset), required for
    float graphs at ``int8`` (:class:`ConfigError` otherwise); ``opt_batch``/``max_batch``: the optimisation
    profile (min is always 1: exits shrink the batch); ``trt_version``: the device's TensorRT, tagged in the
    calibration caches' header (build.sh re-tags); ``engine``/``bundle`` as
    :func:`edgevit.formats.tensorrt.export.export_tensorrt`; ``parity_images``: real images for the engine
    cascade's parity (engines only).

    Returns an :class:`~edgevit.results.ExportResult`: the engine cascade (``engines/manifest.json``) when engines
    were built, else the bundle's ONNX cascade (``onnx/manifest.json``), whose parity is None (it is a copy).
    ``to_dict()`` holds ``bundle`` (dir, files, per-graph ``graphs`` with commands and shapes), ``int8``,
    ``tensorrt`` availability and ``engine`` (None without TensorRT). Raises :class:`ConfigError` (a non-ONNX
    cascade, Q/DQ nodes TensorRT rejects, bad batches), :class:`MissingBackendError` (engine build without TensorRT).
    """
    from ...artifact import Artifact, write_json
    from ...spec import InputSpec
    from ...versions import library_versions
    from ..cascade.convert import copy_cascade, graph_files
    from ..cascade.runtime import read_manifest
    from ..cascade.spec import MANIFEST

    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if calibration_method not in CALIB_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {calibration_method!r}")
    if not (isinstance(opt_batch, int) and isinstance(max_batch, int) and 1 <= opt_batch <= max_batch):
        raise ConfigError(f"a cascade's optimisation profile needs 1 ≤ opt_batch ≤ max_batch, got {opt_batch}, "
                          f"{max_batch}")
    have_trt, trt_info, build_here = plan_build(bundle=bundle, engine=engine,
                                                what="the TensorRT engines of an early-exit cascade")

    m = read_manifest(manifest)
    if m.get("backend") != "onnx":
        raise ConfigError(f"TensorRT builds engines from ONNX graphs, but the cascade at {manifest} holds "
                          f"{m.get('backend')} graphs; export the cascade as ONNX (early_exit format: onnx) and put "
                          f"export_tensorrt before stages that convert it")
    import onnx

    src_dir = Path(m["_dir"])
    spec = InputSpec.from_dict(m["input_spec"])
    graphs: list[dict] = []
    refused: list[str] = []
    for entry in graph_files(m):
        model = onnx.load(str(src_dir / entry["file"]), load_external_data=False)
        qdq = sum(n.op_type in QDQ_OPS for n in model.graph.node)
        problems = qdq_problems(model) if qdq else []
        if problems:
            refused.append(f"{entry['name']}: {len(problems)} of {qdq} Q/DQ nodes, e.g. {problems[0]}")
        graphs.append({"entry": entry, "qdq_nodes": qdq})
    if refused:
        raise ConfigError(
            "TensorRT's explicit quantization takes symmetric signed INT8 Q/DQ only (zero point 0, int8), and this "
            f"INT8 cascade's graphs have others ({'; '.join(refused[:3])}{' …' if len(refused) > 3 else ''}): "
            "onnxruntime's QUInt8 activations are asymmetric, and TensorRT's ONNX parser rejects them. Bundle the "
            "float cascade instead (put export_tensorrt before quantize; precision: int8 then calibrates every graph "
            "on its real inputs), or quantise with symmetric INT8 activations")
    int8_cascade = any(g["qdq_nodes"] for g in graphs)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_manifest = copy_cascade(src_dir / MANIFEST, out / "onnx")

    calib_info: dict[str, Any] | None = None
    float_int8 = [g for g in graphs if not g["qdq_nodes"]] if precision == "int8" else []
    if float_int8:
        from ..parity import parity_inputs
        from .calib import compute_calibration_cache

        if calib_images is None:
            raise ConfigError("a float cascade built INT8 needs real calibration images (calib_images) for every "
                              "graph's ranges; or use precision fp16")
        x, where = parity_inputs(calib_images, spec, what="TensorRT cascade calibration")
        per_graph = _graph_inputs_for_calibration(onnx_manifest, x)
        (out / "calibration").mkdir(exist_ok=True)
        calib_info = {"data": calib_description or where, "method": calibration_method, "n": len(x), "graphs": {}}
        for g in float_int8:
            name = g["entry"]["name"]
            cal = compute_calibration_cache(out / "onnx" / g["entry"]["file"], per_graph[name],
                                            out / "calibration" / f"{name}.cache", method=calibration_method,
                                            trt_version=trt_version)
            g["calibration"] = f"calibration/{name}.cache"
            calib_info["graphs"][name] = {"file": g["calibration"], "detail_file": f"calibration/{name}.json",
                                          "inputs": list(per_graph[name].shape), "tensors": cal["tensors"],
                                          "input_amax": cal["input_amax"], "header": cal["header"]}

    from .export import _input_info, _shape_arg
    from .preflight import tensorrt_preflight

    commands = []
    for g in graphs:
        e = g["entry"]
        onnx_file = f"onnx/{e['file']}"
        input_name, dims, dynamic = _input_info(out / onnx_file)
        if not dynamic or any(d is None for d in dims[1:]):
            raise ConfigError(f"cascade graph {e['file']} has input shape {dims}; a TensorRT cascade needs a dynamic "
                              f"batch axis and static other axes (re-export the cascade with edgevit)")
        shapes = {"min": [1, *dims[1:]], "opt": [opt_batch, *dims[1:]], "max": [max_batch, *dims[1:]]}
        if g["qdq_nodes"]:
            mode, flags = "int8-explicit", ["--int8"] + ([] if precision == "fp32" else ["--fp16"])
        elif precision == "int8":
            mode, flags = "int8-calibrated", ["--int8", "--fp16", f"--calib={g['calibration']}"]
        else:
            mode, flags = precision, {"fp32": [], "fp16": ["--fp16"]}[precision]
        engine_file = f"engines/{Path(e['file']).stem}.engine"
        args = [f"--onnx={onnx_file}", f"--saveEngine={engine_file}", *flags,
                f"--minShapes={_shape_arg(input_name, shapes['min'])}",
                f"--optShapes={_shape_arg(input_name, shapes['opt'])}",
                f"--maxShapes={_shape_arg(input_name, shapes['max'])}"]
        pre = tensorrt_preflight(out / onnx_file)
        g.update({"name": e["name"], "role": "segment" if e["name"].startswith("segment_") else "exit",
                  "onnx": onnx_file, "engine": engine_file, "input": {"name": input_name, **shapes}, "mode": mode,
                  "trtexec_args": args, "command": "trtexec " + " ".join(args),
                  "preflight": {"ok": pre["ok"], "unsupported": pre["unsupported"],
                                "int8_fallback": pre["int8_fallback"]}})
        commands.append(f"build_graph {shlex.quote(e['name'])} {shlex.quote(engine_file)} "
                        + " ".join(shlex.quote(a) for a in args))
        if not pre["ok"]:
            log.warning("TensorRT preflight: %s will not parse: %s", onnx_file,
                        ", ".join(f"{u['domain']}.{u['op']}" for u in pre["unsupported"]))

    # the engine cascade: the same manifest, graphs → <graph>.engine, built by build.sh (or here)
    (out / "engines").mkdir(exist_ok=True)
    eng = {k: v for k, v in m.items() if not k.startswith("_")}
    eng["segments"] = [dict(s) for s in m["segments"]]
    eng["exits"] = [dict(x) for x in m["exits"]]
    for e in graph_files(eng):
        e["file"] = Path(e["file"]).stem + ".engine"
    eng.update({"backend": "tensorrt", "parity": None,
                "converted_from": {"backend": "onnx", "dir": "../onnx", "precision": precision,
                                   "built_by": "build.sh (trtexec, on the device)"}})
    write_json(out / "engines" / MANIFEST, eng)

    record: dict[str, Any] = {
        "format": "tensorrt", "kind": "cascade", "source": m.get("source"), "source_manifest": str(src_dir / MANIFEST),
        "precision": precision, "int8": int8_cascade, "calibration": calib_info,
        "tensorrt": {"available": have_trt, "version_or_reason": trt_info, "target_version": trt_version},
        "bundle": None, "engine": None, "versions": library_versions(),
    }
    if bundle:
        record["bundle"] = _write_bundle(out, m, graphs, commands, precision=precision, int8=int8_cascade,
                                         calibration=calib_info, opt_batch=opt_batch, max_batch=max_batch,
                                         trt_version=trt_version, workspace_mib=workspace_mib)
    parity = None
    if build_here:
        record["engine"] = _build_engines(out, graphs, precision=precision, workspace_mib=workspace_mib,
                                          parity_images=parity_images)
        parity = record["engine"].pop("_parity")
        art = Artifact(kind="cascade", spec=spec, path=out / "engines" / MANIFEST, source=m.get("source"),
                       meta={"graphs": "tensorrt", "backend": "tensorrt", "exits": len(m["exits"])})
    else:
        art = Artifact(kind="cascade", spec=spec, path=onnx_manifest, source=m.get("source"),
                       meta={"graphs": "onnx", "backend": "onnx", "exits": len(m["exits"])})
    record["path"] = str(art.path)
    seconds = time.perf_counter() - t0
    log.info("TensorRT cascade bundle of %s: %d graphs (%s), engines %s, %.1f s", m.get("source"), len(graphs),
             precision if not int8_cascade else "int8 explicit", "built" if build_here else "to build on the device",
             seconds)
    return ExportResult(artifact=art, parity=parity, seconds=seconds, versions=record["versions"], fields=record)


def _write_bundle(out: Path, m: dict, graphs: list[dict], commands: list[str], *, precision: str, int8: bool,
                  calibration: dict | None, opt_batch: int, max_batch: int, trt_version: str,
                  workspace_mib: int) -> dict:
    from ...artifact import file_sha256, write_json
    from ...versions import __version__
    from .export import BUNDLE_VERSION, _render, _template, _write_script

    values = {"MODEL": m.get("source") or "model", "EDGEVIT": __version__, "WORKSPACE": workspace_mib,
              "MIN_BATCH": 1, "MAX_BATCH": max_batch, "GRAPHS": len(graphs), "COMMANDS": "\n".join(commands)}
    build_sh = _write_script(out / "build.sh", _render(_template("build_cascade.sh"), values))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    modes = sorted({g["mode"] for g in graphs})
    rows = "\n".join(f"| {g['name']} | `{g['onnx']}` | {g['input']['name']} "
                     f"{'×'.join(map(str, g['input']['min'][1:]))} | {g['mode']} |" for g in graphs)
    (out / "README.md").write_text(
        f"# TensorRT bundle: early-exit cascade of {m.get('source')}\n\n"
        f"Generated by edgevit {__version__} on {created}. {len(m['segments'])} segments and {len(m['exits'])} exit "
        f"heads, criterion `{m['criterion']}`, thresholds {[round(t, 4) for t in m['thresholds']]}.\n\n"
        f"On the device (TensorRT ≥ 8.6; JetPack ships trtexec):\n\n```bash\n./build.sh        # one engine per "
        f"graph into engines/ (batch 1..{max_batch}, optimised for {opt_batch})\n"
        f"edgevit eval --artifact engines/manifest.json --runtime tensorrt --data fashion-mnist   # where edgevit "
        f"and TensorRT's Python package are installed\n```\n\n"
        f"| graph | ONNX | input (per sample) | precision |\n|---|---|---|---|\n{rows}\n\n"
        + ("INT8 graphs use TensorRT's explicit quantization: the scales are the graphs' Q/DQ nodes, so no "
           "calibration cache is needed.\n" if int8 else "")
        + (f"Float graphs are built INT8 from `calibration/<graph>.cache`, ranges computed by edgevit on each "
           f"graph's real inputs ({calibration['n']} images), tagged for TensorRT {trt_version}; build.sh re-tags "
           f"them for the device's TensorRT.\n" if calibration else "")
        + "\n`onnx/` is the ONNX cascade (runs on onnxruntime: the reference for the engines); `engines/manifest.json`"
          " is the same cascade over the engines build.sh writes.\n")
    files = [build_sh, out / "README.md", out / "engines" / "manifest.json",
             *sorted((out / "onnx").iterdir()),
             *(sorted((out / "calibration").iterdir()) if calibration else [])]
    manifest = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "kind": "cascade", "created_utc": created,
        "edgevit_version": __version__, "model": {"source": m.get("source")}, "precision": precision,
        "precision_modes": modes, "int8": int8,
        "cascade": {"onnx_manifest": "onnx/manifest.json", "engine_manifest": "engines/manifest.json",
                    "criterion": m["criterion"], "thresholds": m["thresholds"],
                    "exits": [{k: e.get(k) for k in ("name", "after_segment", "block", "threshold")} for e in m["exits"]],
                    "order": "segment_0, exit_1, segment_1, exit_2, …, segment_K: a sample leaves at the first exit "
                             "whose criterion fires"},
        "batch": {"min": 1, "opt": opt_batch, "max": max_batch,
                  "why": "exited samples leave the batch: every graph after the first sees any batch from 1 up"},
        "graphs": [{k: g[k] for k in ("name", "role", "onnx", "engine", "input", "mode", "qdq_nodes", "command",
                                      "preflight")} | {"calibration": g.get("calibration")} for g in graphs],
        "build": {"script": "build.sh", "must_build_on_device": True, "timing_cache": "timing.cache",
                  "workspace_mib": workspace_mib, "common_flags": "--timingCacheFile=timing.cache "
                  f"--memPoolSize=workspace:{workspace_mib} --skipInference (--buildOnly before TensorRT 10)",
                  "explicit_quantization": EXPLICIT_NOTE if int8 else None,
                  "device_needs": "TensorRT (trtexec) to build; edgevit + TensorRT's Python package to run the "
                                  "cascade (engines/manifest.json)"},
        "calibration": calibration, "target_tensorrt_version": trt_version,
        "files": {str(f.relative_to(out)): {"sha256": file_sha256(f), "size": f.stat().st_size} for f in files},
    }
    write_json(out / "manifest.json", manifest)
    return {"dir": str(out), "manifest": str(out / "manifest.json"), "files": sorted(manifest["files"]) +
            ["manifest.json"], "graphs": manifest["graphs"], "build_commands": [g["command"] for g in graphs]}


def _build_engines(out: Path, graphs: list[dict], *, precision: str, workspace_mib: int, parity_images: Any) -> dict:
    """Every graph's engine here with the TensorRT Python API (needs TensorRT and a GPU), then the engine cascade
    against the ONNX cascade on real images."""
    from ..cascade.convert import compare_cascades
    from ..parity import check_parity
    from .export import build_engine

    built = {}
    for g in graphs:
        mode = g["mode"]
        prec = "int8" if mode.startswith("int8") else mode
        built[g["name"]] = build_engine(out / g["onnx"], out / g["engine"], precision=prec,
                                        shapes={k: g["input"][k] for k in ("min", "opt", "max")},
                                        input_name=g["input"]["name"],
                                        calib_cache=out / g["calibration"] if g.get("calibration") else None,
                                        explicit_quantization=mode == "int8-explicit", fp16=precision != "fp32",
                                        timing_cache=out / "timing.cache", workspace_mib=workspace_mib)
    if parity_images is None:
        raise ConfigError("the engine cascade is checked against the ONNX cascade on real images: pass parity_images")
    cmp = compare_cascades(out / "onnx" / "manifest.json", out / "engines" / "manifest.json", parity_images,
                           with_logits=True)
    try:
        parity = check_parity(cmp.pop("reference_logits"), cmp.pop("candidate_logits"),
                              precision="int8" if any(g["mode"].startswith("int8") for g in graphs) else precision,
                              what=f"TensorRT engine cascade vs ONNX cascade ({cmp['n']} real images)",
                              extra={"exit_agreement": cmp["exit_agreement"], "exits_share": cmp["exits_share"]})
    except ParityError as exc:
        exc.args = (f"{exc} The engines are kept in {out / 'engines'}.",)
        raise
    return {"graphs": built, "parity_vs_onnx": cmp, "_parity": parity}
