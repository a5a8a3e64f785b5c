"""Export an early-exit model as a cascade of static graphs plus ``manifest.json`` (methods.md §2, "Export").

A traced export would freeze one branch of the exit decision, so every piece is its own static graph (dynamic batch
axis, no control flow) and a small runtime decides (:mod:`edgevit.formats.cascade.runtime`, ``examples/cpp``):

- ``segment_0``: image → tokens after the first exit's block (patch embedding, special tokens, blocks 1..e1);
- ``segment_i``: tokens → tokens after exit i+1's block (the blocks between two exits);
- ``segment_K``: tokens → logits (blocks after the last exit, final norm and the backbone's head);
- ``exit_k``: tokens → logits (head k, reading segment k-1's output).

``format="onnx"`` writes ``.onnx`` files through :mod:`edgevit.formats.onnx.export`'s exporter, onnxslim and metadata
helpers; ``format="openvino"`` converts each of those with ``openvino.convert_model`` and writes ``.xml``/``.bin``
(fp32) as :mod:`edgevit.formats.openvino.export` does. Every graph is checked against the torch model on inputs computed
from real images (fp32 tolerances of :mod:`edgevit.formats.parity`), then the whole cascade, run by the cascade
runtime, is compared with the torch model's per-sample early exit on the same real images (exits, predictions,
logits).

manifest.json (``"format": "edgevit-early-exit-cascade"``, version 1)::

    {"format", "version", "backend": "onnx" | "openvino", "source", "input_spec": {InputSpec},
     "num_classes", "depth", "criterion": "confidence" | "entropy", "thresholds": [K floats],
     "segments": [{"name", "file", "blocks": [first, last], "input", "output", "output_shape"}],   # K + 1, in order
     "exits": [{"name", "file", "after_segment", "block", "type", "stride", "num_heads", "threshold",
                "input", "output"}],                                                               # K, in order
     "calibration": {...} | null, "parity": {...}, "edgevit_version"}

Files are relative to the manifest's folder. Sample i runs segment 0, exit 1, segment 1, exit 2, ... and leaves at
the first exit whose criterion fires (a threshold that never fires — 1.0 for confidence, 0.0 for entropy — skips
that head); otherwise it runs the last segment.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, ExportError
from ...results import ExportResult
from .spec import MANIFEST, MANIFEST_FORMAT
from .thresholds import CRITERIA, check_thresholds, never_fires

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")



def _export_graph(module, example, spec, path: Path, *, opset: int, source: str, exporter: str = "auto") -> dict:
    """One module → one ONNX file with edgevit's exporter (dynamic batch, onnxslim, metadata)."""
    from ..onnx.export import export_graph

    return export_graph(module, example, spec, path, opset=opset, source=source, exporter=exporter)


def graph_to_openvino(onnx_path: Path, xml_path: Path, spec, source: str | None, *,
                      compress_to_fp16: bool = False) -> dict:
    """One cascade graph (ONNX, float or INT8 QDQ; or an IR, re-saved) → OpenVINO IR ``xml_path`` (+ ``.bin``) with
    ``openvino.convert_model``, its input/output named by ``spec`` and edgevit's rt_info (input spec, source);
    ``compress_to_fp16`` stores the weights as float16. Returns ``{"converted_from": "onnx" | "openvino",
    "compress_to_fp16"}``. Raises :class:`~edgevit.errors.ExportError` when OpenVINO cannot convert it."""
    import json

    from ..._optional import require
    from ..common import quiet

    ov = require("openvino", extra="openvino", feature="OpenVINO cascade export")
    with quiet():
        try:
            model = ov.Core().read_model(str(onnx_path)) if str(onnx_path).endswith(".xml") else \
                ov.convert_model(str(onnx_path))
        except Exception as exc:  # OpenVINO raises RuntimeError / OpConversionFailure
            raise ExportError(f"OpenVINO could not convert the cascade graph {onnx_path.name} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}); export with format='onnx' and run it with "
                              f"onnxruntime, or try a newer openvino") from exc
    model.inputs[0].get_tensor().set_names({spec.input_name})
    model.outputs[0].get_tensor().set_names({spec.output_name})
    model.set_rt_info(json.dumps(spec.to_dict()), ["edgevit", "input_spec"])
    model.set_rt_info(source or "", ["edgevit", "source"])
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    return {"converted_from": "openvino" if str(onnx_path).endswith(".xml") else "onnx",
            "compress_to_fp16": compress_to_fp16}


def _graph_spec(spec, inp: str, out: str):
    return dataclasses.replace(spec, input_name=inp, output_name=out)


def export_cascade(model: Any, out_dir: str | Path, *, format: str = "onnx", thresholds=None,
                   criterion: str = "confidence", calibration: dict | None = None, opset: int = 18,
                   parity: bool = True, parity_images: Any = None, parity_samples: int = 32,
                   tolerance: float | None = None, exporter: str = "auto") -> ExportResult:
    """Write the cascade of ``model`` (an :class:`~edgevit.methods.early_exit.model.EarlyExitViT`) and its manifest.

    ``thresholds``: one per exit in [0, 1] (default: ``calibration["thresholds"]`` when given, else never firing);
    ``criterion``: ``confidence`` or ``entropy``; ``calibration``: the record of
    :func:`edgevit.methods.early_exit.calibrate.calibrate`, stored in the manifest; ``parity_images``: real images for the
    parity checks (raw uint8, preprocessed float32 or an ArrayDataset; required: :class:`ExportError` without them;
    ``parity_samples`` is kept for callers and unused here); ``exporter``: torch's ONNX exporter as in
    :func:`edgevit.formats.onnx.export.export_onnx` (``auto``: torch.export-based, ~2-4 s per graph; ``torchscript``
    is ~10× faster on these small graphs).

    Returns an :class:`~edgevit.results.ExportResult`: its artefact is the ``cascade`` artefact (``manifest.json``),
    its parity the whole cascade (run by the cascade runtime, per-sample exits) vs the torch model's early exit
    (``extra``: ``exit_agreement``, ``exits_share``), None with ``parity=False``. ``to_dict()`` is the JSON record
    (``manifest``, ``files``, per-graph parity ``graphs``, ``cascade_parity`` and at the top
    ``exit_agreement``/``top1_agreement``/``max_abs_diff``/``cosine``/``n``). Raises :class:`ParityError` when a
    graph differs from torch beyond tolerance, :class:`ConfigError` for bad options.
    """
    import torch

    from ...versions import __version__
    from ..parity import check_parity, default_tolerance, parity_inputs

    t0 = time.perf_counter()
    from ..onnx.export import EXPORTERS

    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter '{exporter}'. Allowed: {', '.join(EXPORTERS)}")
    if format not in FORMATS:
        raise ConfigError(f"cascade export format must be one of {', '.join(FORMATS)}, got {format!r}")
    from ..onnx.opsets import check_opset

    # every graph is written by the exporter and run (parity) on the format's runtime
    check_opset(opset, exporter=exporter, what="cascade opset",
                runtimes=["openvino" if format == "openvino" else "onnxruntime"])
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown exit criterion '{criterion}'; allowed: {', '.join(CRITERIA)}")
    if thresholds is None:
        thresholds = (calibration or {}).get("thresholds")
    if thresholds is None:
        log.warning("no thresholds given and no calibration: exporting with never-firing thresholds (every sample "
                    "runs to the final head); run `edgevit early-exit calibrate` first")
        thresholds = never_fires(criterion)
    th = check_thresholds(thresholds, model.num_exits)
    spec = model.edgevit_spec
    source = model.edgevit_name
    out = Path(out_dir)
    if out.name == MANIFEST:
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    images, described = parity_inputs(parity_images, spec, what="early-exit cascade")
    x = torch.from_numpy(images[: max(2, min(len(images), 64))])

    model.eval()
    segs = model.segments()
    onnx_dir = out if format == "onnx" else Path(tempfile.mkdtemp(prefix="edgevit-ee-onnx-"))
    suffix = ".onnx" if format == "onnx" else ".xml"
    seg_entries, exit_entries, graph_parity = [], [], []
    try:
        with torch.inference_mode():
            inputs = [x]
            for seg in segs[:-1]:
                inputs.append(seg(inputs[-1]))
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            inp, outn = ("input" if i == 0 else "tokens"), ("logits" if last else "tokens_out")
            gspec = _graph_spec(spec, inp, outn)
            name = f"segment_{i}"
            rec = _export_graph(seg, inputs[i][:2].clone(), gspec, onnx_dir / f"{name}.onnx", opset=opset,
                                source=source, exporter=exporter)
            with torch.inference_mode():
                ref = seg(inputs[i]).numpy()
            seg_entries.append({"name": name, "file": name + suffix, "blocks": [seg.start + 1, seg.stop],
                                "input": inp, "output": outn, "output_shape": [-1, *ref.shape[1:]], **rec})
            graph_parity.append((name, inputs[i].numpy(), ref, gspec))
        for k, (hs, head) in enumerate(zip(model.plan, model.heads)):
            name = f"exit_{k + 1}"
            gspec = _graph_spec(spec, "tokens", "logits")
            rec = _export_graph(head, inputs[k + 1][:2].clone(), gspec, onnx_dir / f"{name}.onnx", opset=opset,
                                source=source, exporter=exporter)
            with torch.inference_mode():
                ref = head(inputs[k + 1]).numpy()
            exit_entries.append({"name": name, "file": name + suffix, "after_segment": k, "block": hs.block,
                                 "type": hs.type, "stride": hs.stride, "num_heads": hs.num_heads,
                                 "threshold": float(th[k]), "input": "tokens", "output": "logits", **rec})
            graph_parity.append((name, inputs[k + 1].numpy(), ref, gspec))
        if format == "openvino":
            for name, *_rest, gspec in graph_parity:
                graph_to_openvino(onnx_dir / f"{name}.onnx", out / f"{name}.xml", gspec, source)
    finally:
        if format != "onnx":
            shutil.rmtree(onnx_dir, ignore_errors=True)

    manifest = {
        "format": MANIFEST_FORMAT, "version": 1, "backend": format, "source": source,
        "input_spec": spec.to_dict(), "num_classes": model.num_classes, "depth": model.depth,
        "criterion": criterion, "thresholds": [float(v) for v in th],
        "segments": [{k: v for k, v in e.items() if k in ("name", "file", "blocks", "input", "output", "output_shape")}
                     for e in seg_entries],
        "exits": [{k: v for k, v in e.items() if k in ("name", "file", "after_segment", "block", "type", "stride",
                                                       "num_heads", "threshold", "input", "output")}
                  for e in exit_entries],
        "model": model.describe(), "calibration": calibration, "parity": None, "edgevit_version": __version__,
    }
    from ...artifact import write_json

    path = out / MANIFEST
    write_json(path, manifest)

    from ...versions import library_versions

    record: dict[str, Any] = {"format": "cascade", "backend": format, "path": str(path), "source": source,
                              "files": [e["file"] for e in seg_entries + exit_entries], "graphs": {},
                              "parity_inputs": described, "max_abs_diff": None, "top1_agreement": None,
                              "exit_agreement": None, "cosine": None, "n": None}
    checked = None
    if parity:
        from .runtime import CascadeRuntime

        backend = "openvino" if format == "openvino" else "onnxruntime"
        casc = CascadeRuntime(_artifact(path, spec, source), backend=backend)
        try:
            graphs = {f"segment_{i}": g for i, g in enumerate(casc.segments)}
            graphs.update({f"exit_{k + 1}": g for k, g in enumerate(casc.heads)})
            for name, inp, ref, _gspec in graph_parity:  # each graph alone, on its torch input
                cand = graphs[name]._run(np.ascontiguousarray(inp))
                tol = tolerance if tolerance is not None else default_tolerance("fp32", ref)
                record["graphs"][name] = check_parity(  # segments output features, exits logits
                    ref, cand, tolerance=tol, classifier=name.startswith("exit_"),
                    what=f"cascade graph {name} ({name}{suffix}) vs torch").to_dict()
            logits, exits = casc.run_with_exits(images)  # the whole cascade, per-sample exit
        finally:
            casc.close()
        with torch.inference_mode():
            ref_logits, ref_exits = model.predict(torch.from_numpy(images), th, criterion)
        ref_logits = ref_logits.numpy()
        checked = check_parity(ref_logits, logits, tolerance=tolerance if tolerance is not None else
                               default_tolerance("fp32", ref_logits), what=f"early-exit cascade ({backend}) vs torch")
        checked.extra["exit_agreement"] = float((exits == ref_exits).mean())
        checked.extra["exits_share"] = (np.bincount(exits, minlength=model.num_exits + 1) / len(exits)).tolist()
        res = checked.to_dict()
        record["cascade_parity"] = res
        record.update({k: res[k] for k in ("max_abs_diff", "top1_agreement", "exit_agreement", "cosine", "n")})
        manifest["parity"] = {"runtime": backend, "inputs": described,
                              **{k: res[k] for k in ("max_abs_diff", "top1_agreement", "exit_agreement", "n")},
                              "graphs_max_abs_diff": {n: r["max_abs_diff"] for n, r in record["graphs"].items()}}
        write_json(path, manifest)
    record["manifest"] = manifest
    seconds = time.perf_counter() - t0
    record["time_s"] = round(seconds, 2)
    log.info("exported the early-exit cascade of %s (%d segments, %d exits, %s) to %s in %.1f s", source,
             len(seg_entries), len(exit_entries), format, out, seconds)
    art = _artifact(path, spec, source)
    art.meta.update({"backend": format, "graphs": format, "exits": len(exit_entries)})
    return ExportResult(artifact=art, parity=checked, seconds=seconds, versions=library_versions(), fields=record)


def _artifact(path: Path, spec, source: str):
    from ...artifact import Artifact

    return Artifact(kind="cascade", spec=spec, path=path, source=source)
