"""INT8 early-exit cascades: every graph of an exported cascade quantised with edgevit's INT8 backends.

:func:`quantize_cascade` reads a cascade's ``manifest.json`` (written by :func:`edgevit.methods.early_exit.export_cascade`)
and writes a new folder with the same layout whose segments and exit heads are INT8:

- calibration data is real: the calibration images (``calib``, or the config's ``calib`` dataset: 300
  class-balanced train images by default, through :func:`edgevit.methods.quantize.calibration_data`) are run through the FP32 cascade, so each graph is calibrated on the
  tokens it will actually see (segment k on the output of segment k−1, each head on the output of its segment);
- each graph goes through :func:`edgevit.methods.quantize.backends.quantize_file` with the INT8 guardrails of
  :class:`~edgevit.methods.quantize.QuantizeConfig` — LayerNorm, Softmax, GELU and residual Adds float; the classifier
  (the last MatMul of a graph that outputs logits: the exit heads and the last segment) float unless
  ``float_head=False``; the patch embedding (segment 0's stem) float unless ``float_patch_embed=False``; a
  token-to-token segment has neither, and a head's local-perception convolution is quantised;
- ``openvino`` quantises an OpenVINO-IR cascade with NNCF; ``onnxruntime`` and ``nncf-onnx`` an ONNX cascade (QDQ);
- the INT8 cascade is then compared with the FP32 cascade on real images (per-sample exits and top-1 agreement at
  the manifest's thresholds, logits difference) and the record is stored in the new manifest (``"int8"`` entry).

The thresholds stay those of the source manifest; INT8 changes the exit scores slightly, so sweep or re-calibrate
on the INT8 cascade when the budget is tight (``benchmarks/early_exit_fmnist.py --int8`` does the sweep).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError

log = logging.getLogger(__name__)

BACKEND_FORMAT = {"openvino": "openvino", "onnxruntime": "onnx", "nncf-onnx": "onnx"}


def quantize_cascade(manifest: str | Path, out_dir: str | Path, *, backend: str = "openvino", calib: Any = None,
                     config: Any = None, parity_images: Any = None, parity_samples: int = 500,
                     threads: int | None = None) -> dict:
    """Quantise every graph of the cascade at ``manifest`` into ``out_dir``; returns a JSON-able record.

    ``calib``: calibration data as :func:`edgevit.methods.quantize.calibration_data` takes it (default the config's
    ``calib``/``calib_split``/``calib_samples``); ``config``: a :class:`~edgevit.methods.quantize.QuantizeConfig` for the guardrails and backend
    knobs (its accuracy/speed-gate fields are not used here: the cascade is judged by the threshold sweep);
    ``parity_images``: real images for the INT8-vs-FP32 comparison (required: raw uint8, preprocessed float32 or an
    ArrayDataset; :class:`~edgevit.errors.ExportError` without them, before any work); ``parity_samples`` is unused
    and kept for callers.
    """
    from ...artifact import Artifact, write_json
    from ...formats.cascade.runtime import CascadeRuntime, graph_inputs, read_manifest
    from ..quantize import QuantizeConfig, calibration_data
    from ..quantize.backends import Settings, quantize_file, require_backend

    t0 = time.perf_counter()
    if backend not in BACKEND_FORMAT:
        raise ConfigError(f"cascade quantisation backend must be one of {', '.join(BACKEND_FORMAT)}, got {backend!r}")
    cfg = (config or QuantizeConfig()).replace(backend=backend)
    cfg.validate("quantize")
    require_backend(backend)
    m = read_manifest(manifest)
    src_dir = Path(m["_dir"])
    if m.get("backend") != BACKEND_FORMAT[backend]:
        raise ConfigError(f"the {backend} backend quantises an {BACKEND_FORMAT[backend]} cascade, but {src_dir} holds "
                          f"an {m.get('backend')} one; export it with `edgevit early-exit export --format "
                          f"{BACKEND_FORMAT[backend]}`")
    if m.get("int8"):
        raise ConfigError(f"{src_dir} is already an INT8 cascade (quantised from {m['int8'].get('source_dir')})")
    out = Path(out_dir)
    if out.resolve() == src_dir.resolve():
        raise ConfigError("write the INT8 cascade to another folder than its FP32 source")
    if parity_images is None:
        from ...errors import ExportError

        raise ExportError("the INT8 cascade is compared with its FP32 source on real images: pass parity_images=<images> "
                          "(raw uint8, preprocessed NCHW float32 or an ArrayDataset, e.g. load_dataset('fashion-mnist', "
                          "'test', limit=500))")
    out.mkdir(parents=True, exist_ok=True)
    from ...spec import InputSpec

    spec = InputSpec.from_dict(m["input_spec"])
    calib_x, calib_where = calibration_data(spec, cfg.calib if calib is None else calib, split=cfg.calib_split,
                                            samples=cfg.calib_samples, seed=cfg.calib_seed)
    run_backend = "openvino" if m["backend"] == "openvino" else "onnxruntime"
    fp_path = src_dir / "manifest.json"
    fp = CascadeRuntime(Artifact(kind="cascade", spec=spec, path=fp_path), backend=run_backend, threads=threads)
    try:
        seg_in, _, _ = graph_inputs(fp, calib_x)
    finally:
        fp.close()

    n_seg = len(m["segments"])
    # (entry, calibration input, reads the image, outputs logits)
    jobs = [(e, seg_in[k], k == 0, k == n_seg - 1) for k, e in enumerate(m["segments"])]
    jobs += [(e, seg_in[e["after_segment"] + 1], False, True) for e in m["exits"]]
    graphs = {}
    for entry, x, has_stem, has_classifier in jobs:
        # only segment 0 has the stem: an exit head's local-perception conv (the first conv on its input, in a graph
        # without attention) must not be taken for it by the patch-embedding guardrail (graph.stem_convs)
        gcfg = cfg.replace(float_head=cfg.float_head and has_classifier,
                           float_patch_embed=cfg.float_patch_embed and has_stem)
        gspec = dataclasses.replace(spec, input_name=entry["input"], output_name=entry["output"])
        info = quantize_file(backend, src_dir / entry["file"], np.ascontiguousarray(x), gcfg,
                             Settings(smooth_quant=cfg.smooth_quant != "off"), out / entry["file"], spec=gspec,
                             source=m.get("source"))
        graphs[entry["name"]] = {"quantized_layers": len(info.pop("quantized_layers", []) or []),
                                 "float_classifier": bool(gcfg.float_head), "float_stem": bool(gcfg.float_patch_embed),
                                 "calibration_inputs": list(x.shape),
                                 **{k: v for k, v in info.items() if k in ("seconds", "smooth_quant", "ignored")}}
        log.info("quantised %s (%s): %d layers", entry["name"], backend, graphs[entry["name"]]["quantized_layers"])

    new = {k: v for k, v in m.items() if not k.startswith("_")}
    new["parity"] = None
    new["int8"] = {"backend": backend, "source_dir": str(src_dir), "calibration": {**calib_where, "n": len(calib_x)},
                   "guardrails": cfg.guardrails(), "graphs": graphs}
    write_json(out / "manifest.json", new)

    parity = compare_cascades(fp_path, out / "manifest.json", parity_images, samples=parity_samples, threads=threads)
    new["int8"]["parity_vs_fp32"] = parity
    write_json(out / "manifest.json", new)
    rec = {"path": str(out / "manifest.json"), "backend": backend, "graphs": graphs, "parity_vs_fp32": parity,
           "calibration": new["int8"]["calibration"], "seconds": round(time.perf_counter() - t0, 2)}
    log.info("INT8 cascade %s: exit agreement %.3f, top-1 agreement %.3f vs FP32 on %d images (%.0f s)", out,
             parity["exit_agreement"], parity["top1_agreement"], parity["n"], rec["seconds"])
    return rec


def compare_cascades(a: str | Path, b: str | Path, images: Any, *, samples: int = 500,
                     threads: int | None = None) -> dict:
    """Per-sample exits, top-1 and logits of cascade ``b`` against cascade ``a`` on the same real ``images`` (raw
    uint8, preprocessed float32 or an ArrayDataset; all are used, ``samples`` is unused and kept for callers), both
    at ``a``'s thresholds. Raises :class:`~edgevit.errors.ExportError` when ``images`` is None or empty.

    Returns ``{n, inputs, thresholds, exit_agreement, top1_agreement (fractions in [0, 1]), max_abs_diff (logit
    units), mean_exit: [a's, b's]}``."""
    from ...artifact import Artifact
    from ...formats.cascade.runtime import CascadeRuntime, read_manifest
    from ...formats.parity import parity_inputs
    from ...spec import InputSpec

    ma, mb = read_manifest(a), read_manifest(b)
    spec = InputSpec.from_dict(ma["input_spec"])
    x, described = parity_inputs(images, spec, what="cascade comparison")
    outs = []
    for path, m in ((a, ma), (b, mb)):
        rt = CascadeRuntime(Artifact(kind="cascade", spec=spec, path=Path(m["_dir"]) / "manifest.json"),
                            backend="openvino" if m["backend"] == "openvino" else "onnxruntime", threads=threads,
                            thresholds=ma["thresholds"])
        try:
            outs.append(rt.run_with_exits(x))
        finally:
            rt.close()
    (la, ea), (lb, eb) = outs
    return {"n": len(x), "inputs": described, "thresholds": [float(v) for v in ma["thresholds"]],
            "exit_agreement": float((ea == eb).mean()), "top1_agreement": float((la.argmax(1) == lb.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(la - lb).max()), "mean_exit": [float(ea.mean()), float(eb.mean())]}
