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

:func:`quantize_cascade_gated` is the ``quantize`` stage on a cascade: the same accuracy gate (top-1 of the whole
INT8 cascade vs the FP32 cascade on the evaluation set, through the graphs' runtime, with per-sample exits), a
short attempt ladder (default guardrails, SmoothQuant both ways under ``smooth_quant: auto``, then attention float)
and a speed gate on the cascade's expected batch-1 latency: every graph timed FP32 vs INT8 in interleaved passes on
its real input, weighted by the exit rates each cascade shows on the evaluation set
(:data:`THRESHOLD_POLICY` says why the thresholds are kept).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, QuantizationError
from ...formats.cascade.convert import compare_cascades

__all__ = ["THRESHOLD_POLICY", "CascadeQuantizeResult", "compare_cascades", "quantize_cascade",
           "quantize_cascade_gated"]

log = logging.getLogger(__name__)

BACKEND_FORMAT = {"openvino": "openvino", "onnxruntime": "onnx", "nncf-onnx": "onnx"}


def quantize_cascade(manifest: str | Path, out_dir: str | Path, *, backend: str = "openvino", calib: Any = None,
                     config: Any = None, parity_images: Any = None, parity_samples: int = 500,
                     threads: int | None = None, settings: Any = None, data_dir: str | None = None) -> dict:
    """Quantise every graph of the cascade at ``manifest`` into ``out_dir``; returns a JSON-able record.

    ``calib``: calibration data as :func:`edgevit.methods.quantize.calibration_data` takes it (default the config's
    ``calib``/``calib_split``/``calib_samples``); ``config``: a :class:`~edgevit.methods.quantize.QuantizeConfig` for the guardrails and backend
    knobs (its accuracy/speed-gate fields are not used here: the cascade is judged by the threshold sweep);
    ``parity_images``: real images for the INT8-vs-FP32 comparison (required: raw uint8, preprocessed float32 or an
    ArrayDataset; :class:`~edgevit.errors.ExportError` without them, before any work); ``parity_samples`` is unused
    and kept for callers; ``settings``: the :class:`~edgevit.methods.quantize.backends.Settings` of one rung of the
    attempt ladder (default: SmoothQuant as the config says, attention quantised); ``data_dir``: where the
    calibration dataset lives (default: its standard place).
    """
    from ...artifact import Artifact, write_json
    from ...formats.cascade.convert import graph_backend
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
                                            samples=cfg.calib_samples, seed=cfg.calib_seed, data_dir=data_dir)
    run_backend = graph_backend(m)
    settings = settings or Settings(smooth_quant=cfg.smooth_quant != "off")
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
                             settings, out / entry["file"], spec=gspec,
                             source=m.get("source"))
        graphs[entry["name"]] = {"quantized_layers": len(info.pop("quantized_layers", []) or []),
                                 "float_classifier": bool(gcfg.float_head), "float_stem": bool(gcfg.float_patch_embed),
                                 "calibration_inputs": list(x.shape),
                                 **{k: v for k, v in info.items() if k in ("seconds", "smooth_quant", "ignored")}}
        log.info("quantised %s (%s): %d layers", entry["name"], backend, graphs[entry["name"]]["quantized_layers"])

    new = {k: v for k, v in m.items() if not k.startswith("_")}
    new["parity"] = None
    new["int8"] = {"backend": backend, "source_dir": str(src_dir), "calibration": {**calib_where, "n": len(calib_x)},
                   "guardrails": cfg.guardrails(), "settings": settings.to_dict(), "graphs": graphs}
    write_json(out / "manifest.json", new)

    parity = compare_cascades(fp_path, out / "manifest.json", parity_images, samples=parity_samples, threads=threads)
    new["int8"]["parity_vs_fp32"] = parity
    write_json(out / "manifest.json", new)
    rec = {"path": str(out / "manifest.json"), "backend": backend, "graphs": graphs, "parity_vs_fp32": parity,
           "settings": settings.to_dict(),
           "calibration": new["int8"]["calibration"], "seconds": round(time.perf_counter() - t0, 2)}
    log.info("INT8 cascade %s: exit agreement %.3f, top-1 agreement %.3f vs FP32 on %d images (%.0f s)", out,
             parity["exit_agreement"], parity["top1_agreement"], parity["n"], rec["seconds"])
    return rec


# ------------------------------------------------------------------------------------------------ the gated stage

THRESHOLD_POLICY = (
    "kept: the INT8 cascade exits with the FP32 cascade's thresholds (calibrated by the early_exit stage on its "
    "held-out split, under its own accuracy budget vs the final head). So the accuracy gate measures what INT8 "
    "costs at the same exit rule, and the two budgets stay separate (early exit: cascade vs final head; quantize: "
    "INT8 vs FP32). INT8 shifts the exit scores slightly; that shows in the measured exit rates and is paid for in "
    "the gated top-1 and the expected latency, both measured on the INT8 cascade itself")
GATE_PASSES = 3  # interleaved FP32/INT8 timing rounds per graph in the cascade speed gate


@dataclasses.dataclass
class CascadeQuantizeResult:
    """``artifact``: the cascade the speed gate kept (``out_dir/int8/manifest.json``, or the FP32 cascade in
    ``out_dir/fp32/`` when it was faster); ``int8``: the INT8 cascade that passed the accuracy gate; ``record``: what
    ``quantize.json`` holds."""

    artifact: Any
    int8: Any
    record: dict

    def to_dict(self) -> dict:
        return dict(self.record)


def _cascade_size(manifest: Path) -> int:
    from ...formats.cascade.convert import graph_files
    from ...formats.cascade.runtime import read_manifest

    m = read_manifest(manifest)
    total = 0
    for e in graph_files(m):
        f = Path(m["_dir"]) / e["file"]
        total += f.stat().st_size + (f.with_suffix(".bin").stat().st_size if f.suffix == ".xml" else 0)
    return total


def _open(manifest: Path, backend: str, threads: int | None):
    from ...formats.cascade.runtime import CascadeRuntime
    from ...runtimes import open_artifact

    return CascadeRuntime(open_artifact(manifest), backend=backend, threads=threads)


def _evaluate(manifest: Path, backend: str, eval_ds, *, batch_size: int, threads: int | None) -> dict:
    """Top-1/top-5 of a cascade on the evaluation set with its exit rates (``exit_shares``: one per exit, the last
    the final head) — the rates the expected latency is weighted with."""
    from ...evaluate import evaluate

    rt = _open(manifest, backend, threads)
    try:
        ev = evaluate(rt, eval_ds, batch_size=batch_size)
        counts = rt.exit_counts.copy()
    finally:
        rt.close()
    return {"top1": ev["top1"], "top5": ev["top5"], "n": ev["n"], "runtime": ev["runtime"],
            "exit_shares": (counts / max(1, counts.sum())).tolist()}


def _graph_report(fp, q, x: np.ndarray, cfg) -> dict[str, dict]:
    """Per graph, on its real input (what the FP32 cascade feeds it from the images ``x``): INT8 vs FP32 output
    (max |Δ|, cosine, top-1 agreement for the logit graphs) and batch-1 latency of both, timed in
    :data:`GATE_PASSES` interleaved passes (:func:`edgevit.profiling.latency.time_interleaved`). ``fp``/``q``: the
    two loaded cascade runtimes."""
    from ...formats.cascade.runtime import graph_inputs
    from ...formats.parity import check_parity
    from ...profiling.latency import time_interleaved

    seg_in, _, _ = graph_inputs(fp, x)
    m = fp.manifest
    jobs = [(e["name"], fp.segments[k], q.segments[k], seg_in[k], k == len(fp.segments) - 1)
            for k, e in enumerate(m["segments"])]
    jobs += [(e["name"], fp.heads[k], q.heads[k], seg_in[k + 1], True) for k, e in enumerate(m["exits"])]
    per_call = max(cfg.latency_s / (GATE_PASSES * len(jobs)), 0.01)
    out = {}
    for name, g_fp, g_q, inp, logits in jobs:
        inp = np.ascontiguousarray(inp)
        par = check_parity(g_fp._run(inp), g_q._run(inp), tolerance=None, min_top1=None, min_cosine=None,
                           precision="int8", classifier=logits, what=f"INT8 {name} vs FP32 {name}")
        one = np.ascontiguousarray(inp[:1])
        t = time_interleaved({"fp32": g_fp._run, "int8": g_q._run}, one, passes=GATE_PASSES, duration_s=per_call,
                             warmup_s=min(0.1, per_call), min_runs=5)
        out[name] = {"max_abs_diff": par.max_abs_diff, "cosine": par.cosine, "top1_agreement": par.top1_agreement,
                     "n": par.n, "fp32_ms": t["fp32"]["median_ms"], "int8_ms": t["int8"]["median_ms"],
                     "speedup": t["fp32"]["median_ms"] / t["int8"]["median_ms"] if t["int8"]["median_ms"] else None,
                     "spread_pct": {"fp32": t["fp32"]["spread_pct"], "int8": t["int8"]["spread_pct"]}}
    return out


def _expected_ms(manifest: Path, graph_ms: dict[str, float], shares: list[float]) -> float:
    """Expected batch-1 latency (ms) of a cascade: the cost of each exit path (segments and heads up to it, heads
    whose threshold never fires skipped) weighted by the measured share of images leaving there."""
    from ...formats.cascade.runtime import read_manifest
    from ...formats.cascade.thresholds import active_heads
    from .thresholds import path_costs

    m = read_manifest(manifest)
    costs = path_costs([graph_ms[e["name"]] for e in m["segments"]], [graph_ms[e["name"]] for e in m["exits"]],
                       active_heads(m["thresholds"], m["criterion"]))
    return float(np.dot(costs, np.asarray(shares, dtype=np.float64)))


def quantize_cascade_gated(manifest: str | Path, out_dir: str | Path, *, config: Any, eval_data: Any,
                           calib: Any = None, data_dir: str | None = None, parity_samples: int = 64,
                           threads: int | None = None) -> CascadeQuantizeResult:
    """INT8 cascade under the accuracy and speed gates (the ``quantize`` stage on a ``cascade`` artefact).

    ``manifest``: the FP32 cascade; ``config``: a :class:`~edgevit.methods.quantize.QuantizeConfig` (``backend``,
    ``budget`` in top-1 points, guardrails, ``smooth_quant``, ``max_attempts``, ``speed_gate``, ``latency_s``,
    ``batch_size``); ``eval_data``: the labelled ArrayDataset of the accuracy gate; ``calib``: calibration data as
    :func:`edgevit.methods.quantize.calibration_data` takes it (default the config's); ``parity_samples``: the first
    N evaluation images for the per-graph and whole-cascade INT8-vs-FP32 comparisons and the end-to-end timing.

    The ``openvino`` backend quantises OpenVINO IR graphs: an ONNX cascade is converted graph by graph first
    (``out_dir/fp32``, parity-checked). ``onnxruntime``/``nncf-onnx`` quantise ONNX graphs and refuse an IR cascade
    (:class:`ConfigError`). Each attempt quantises every segment and head (:func:`quantize_cascade`: calibrated on
    the tokens the FP32 cascade feeds it from real images) into ``out_dir/attempts/NN_name`` and evaluates the whole
    INT8 cascade; the first within ``budget`` passes. The speed gate keeps INT8 unless the FP32 cascade's expected
    latency is lower (:func:`edgevit.methods.quantize.gate.choose_variant`). Writes ``out_dir/int8`` (the INT8
    cascade), ``out_dir/fp32`` when FP32 is kept or was converted, and ``out_dir/quantize.json``.

    Raises :class:`~edgevit.errors.QuantizationError` (record written, ``exc.record``) when no attempt is within the
    budget, :class:`ConfigError` for an INT8 input or a backend that cannot read the cascade's graphs,
    :class:`~edgevit.errors.MissingBackendError` when the backend is not installed.
    """
    import shutil

    from ...artifact import write_json
    from ...data import preprocess
    from ...evaluate import dataset_for_model
    from ...formats.cascade.convert import compare_runtimes, convert_cascade, copy_cascade, graph_backend
    from ...formats.cascade.runtime import read_manifest
    from ...formats.cascade.spec import MANIFEST
    from ...formats.parity import check_parity
    from ...profiling.latency import profile_runtime
    from ...runtimes import open_artifact
    from ...spec import InputSpec
    from ...versions import library_versions
    from ..quantize import calibration_data
    from ..quantize.backends import Settings, require_backend
    from ..quantize.gate import choose_variant

    t0 = time.perf_counter()
    cfg = config
    cfg.validate("quantize")
    backend_version = require_backend(cfg.backend)
    m = read_manifest(manifest)
    src_manifest = Path(m["_dir"]) / MANIFEST
    if m.get("int8"):
        raise ConfigError(f"{m['_dir']} is already an INT8 cascade (quantised from {m['int8'].get('source_dir')}); "
                          f"quantize the FP32 cascade, or drop the second quantize stage")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = InputSpec.from_dict(m["input_spec"])
    eval_ds = dataset_for_model(eval_data, spec, source=m.get("source"), what="INT8 cascade accuracy gate")
    x = preprocess(eval_ds.images[:parity_samples], spec)
    want = BACKEND_FORMAT[cfg.backend]
    fp_manifest, conversion = src_manifest, None
    if m.get("backend") != want:
        if want == "openvino" and m.get("backend") == "onnx":
            from ...formats.cascade.export import graph_to_openvino

            res = convert_cascade(src_manifest, out / "fp32", to="openvino", parity_images=x,
                                  convert=lambda s, d, sp: graph_to_openvino(s, d, sp, m.get("source")),
                                  what="FP32 cascade ONNX → OpenVINO IR (for NNCF)", threads=threads)
            conversion = res.to_dict()
            fp_manifest = out / "fp32" / MANIFEST
        else:
            raise ConfigError(
                f"the {cfg.backend} quantisation backend quantises ONNX graphs, but the cascade in {m['_dir']} holds "
                f"{m.get('backend')} graphs, which cannot be turned back into ONNX. Use backend: openvino (NNCF on the "
                f"IR), or export the cascade as ONNX (early_exit format: onnx)")
    backend = graph_backend(read_manifest(fp_manifest))
    calib_x, calib_where = calibration_data(spec, cfg.calib if calib is None else calib, split=cfg.calib_split,
                                            samples=cfg.calib_samples, seed=cfg.calib_seed, data_dir=data_dir)
    record: dict[str, Any] = {
        "status": "running", "kind": "cascade", "backend": cfg.backend, "backend_version": backend_version,
        "config": cfg.to_dict(), "source": m.get("source"), "source_manifest": str(src_manifest),
        "fp32_manifest": str(fp_manifest), "fp32_conversion": conversion, "input_spec": spec.to_dict(),
        "calibration": {**calib_where, "n": len(calib_x)},
        "eval": {"dataset": eval_ds.name, "split": cfg.eval_split, "n": len(eval_ds)}, "primary_runtime": backend,
        "thresholds": {"policy": "keep", "values": [float(v) for v in m["thresholds"]], "criterion": m["criterion"],
                       "why": THRESHOLD_POLICY},
    }
    ev_kw = {"batch_size": cfg.batch_size, "threads": threads}
    fp = _evaluate(fp_manifest, backend, eval_ds, **ev_kw)
    fp["file_size"] = _cascade_size(fp_manifest)
    record["fp32"] = fp
    log.info("FP32 cascade via %s: top-1 %.4f on %d images, exit shares %s", backend, fp["top1"], fp["n"],
             [round(v, 3) for v in fp["exit_shares"]])

    sq0 = cfg.smooth_quant != "off"
    rungs = [(f"default (smooth_quant {'on' if sq0 else 'off'})", Settings(smooth_quant=sq0))]
    if cfg.smooth_quant == "auto":
        rungs.append(("default (smooth_quant off)", Settings(smooth_quant=False)))
    rungs.append((f"attention float (smooth_quant {'on' if sq0 else 'off'})",
                  Settings(smooth_quant=sq0, exclude_attention=True)))
    attempts: list[dict] = []
    for name, settings in rungs[:cfg.max_attempts]:
        i = len(attempts)
        adir = out / "attempts" / f"{i:02d}_{'_'.join(name.replace('(', '').replace(')', '').split())}"
        rec: dict[str, Any] = {"index": i, "name": name, "settings": settings.to_dict(), "path": str(adir / MANIFEST),
                               "runtime": backend, "top1": None, "drop_pt": None, "passed": False, "error": None}
        ta = time.perf_counter()
        try:
            q = quantize_cascade(fp_manifest, adir, backend=cfg.backend, calib=calib_x, config=cfg, parity_images=x,
                                 threads=threads, settings=settings)
            ev = _evaluate(adir / MANIFEST, backend, eval_ds, **ev_kw)
            rec.update({"top1": ev["top1"], "top5": ev["top5"], "n": ev["n"], "exit_shares": ev["exit_shares"],
                        "drop_pt": (fp["top1"] - ev["top1"]) * 100, "parity_vs_fp32": q["parity_vs_fp32"],
                        "graphs": q["graphs"],
                        "quantized_layers": sum(g["quantized_layers"] for g in q["graphs"].values())})
            rec["passed"] = rec["drop_pt"] <= cfg.budget + 1e-9
        except QuantizationError as exc:
            rec["error"] = str(exc)
            log.warning("INT8 cascade attempt %d (%s) failed: %s", i, name, exc)
        rec["seconds"] = round(time.perf_counter() - ta, 3)
        attempts.append(rec)
        if rec["top1"] is not None:
            log.info("INT8 cascade attempt %d %-36s top-1 %.4f (drop %+.2f pt, budget %.2f) %s", i, name, rec["top1"],
                     rec["drop_pt"], cfg.budget, "PASS" if rec["passed"] else "")
        if rec["passed"]:
            break
    record["attempts"] = attempts
    passed = [a for a in attempts if a["passed"]]
    if not passed:
        record["status"] = "failed"
        record["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(out / "quantize.json", record)
        tried = [a for a in attempts if a["top1"] is not None]
        best = max(tried, key=lambda a: a["top1"]) if tried else None
        detail = (f"best: attempt {best['index']} '{best['name']}' with top-1 {best['top1'] * 100:.2f}% vs FP32 "
                  f"{fp['top1'] * 100:.2f}% (drop {best['drop_pt']:.2f} pt)" if best else
                  "every attempt failed: " + "; ".join(f"{a['name']}: {a['error']}" for a in attempts))
        err = QuantizationError(
            f"no INT8 cascade met the top-1 budget of {cfg.budget:g} pt after {len(attempts)} attempt(s) "
            f"({cfg.backend} backend, {fp['n']} evaluation images, every segment and head INT8); {detail}. Every "
            f"attempt is recorded in {out / 'quantize.json'}. To get within budget: raise the budget, calibrate on "
            f"more images (calib_samples), keep the classifiers float (float_head: true), or deploy the FP32 cascade")
        err.record = record
        raise err
    chosen = passed[0]
    int8_dir = out / "int8"
    if int8_dir.exists():
        shutil.rmtree(int8_dir)
    shutil.copytree(Path(chosen["path"]).parent, int8_dir)
    int8_manifest = int8_dir / MANIFEST

    fp_rt, q_rt = _open(fp_manifest, backend, threads), _open(int8_manifest, backend, threads)
    try:  # each cascade loaded once for the per-graph report, the end-to-end timing and the comparison
        graphs = _graph_report(fp_rt, q_rt, x, cfg)
        rows = []
        for label, rt in (("fp32 cascade", fp_rt), ("int8 cascade", q_rt)):
            # end to end, cycling through the real images so every exit path is taken in its real share
            row = profile_runtime(rt, batch_sizes=(1,), warmup_s=min(0.5, cfg.latency_s / 4),
                                  duration_s=cfg.latency_s, min_runs=5, inputs=x, progress=False)[0]
            row["artifact"] = label
            rows.append(row)
        cmp = compare_runtimes(fp_rt, q_rt, x, inputs=f"the first {len(x)} evaluation images", with_logits=True)
    finally:
        fp_rt.close()
        q_rt.close()
    for name, g in chosen["graphs"].items():
        graphs[name] = {**g, **graphs[name]}
    fp_ms = {n: g["fp32_ms"] for n, g in graphs.items()}
    q_ms = {n: g["int8_ms"] for n, g in graphs.items()}
    fp["expected_ms"] = _expected_ms(fp_manifest, fp_ms, fp["exit_shares"])
    q_expected = _expected_ms(int8_manifest, q_ms, chosen["exit_shares"])
    cands = [{"precision": "int8", "top1": chosen["top1"], "drop_pt": chosen["drop_pt"], "latency_ms": q_expected,
              "offered": True},
             {"precision": "fp32", "top1": fp["top1"], "drop_pt": 0.0, "latency_ms": fp["expected_ms"],
              "offered": True}]
    selected, why = choose_variant(cands, budget=cfg.budget, speed_gate=cfg.speed_gate,
                                   runtime=f"cascade[{backend}]")
    if selected == "fp32":
        why = why.replace("the float model is kept", "the FP32 cascade is kept")
    gate = {"runtime": f"cascade[{backend}]", "candidates": cands, "selected": selected, "why": why,
            "method": f"expected batch-1 latency = sum over exit paths of (measured share of evaluation images leaving "
                      f"there) × (segments and heads on that path), each graph timed FP32 vs INT8 on its real input in "
                      f"{GATE_PASSES} interleaved passes (median of the pass medians)"}
    parity = check_parity(cmp.pop("reference_logits"), cmp.pop("candidate_logits"), tolerance=None, min_top1=None,
                          min_cosine=None, precision="int8",
                          what=f"INT8 cascade vs FP32 cascade ({backend}, {cmp['n']} evaluation images)",
                          extra={"exit_agreement": cmp["exit_agreement"], "exits_share": cmp["exits_share"]})
    if selected == "fp32":
        sel_manifest = fp_manifest if fp_manifest.parent == out / "fp32" else copy_cascade(fp_manifest, out / "fp32")
    else:
        sel_manifest = int8_manifest
    q_size = _cascade_size(int8_manifest)
    record.update({
        "int8": {"path": str(int8_manifest), "file_size": q_size, "top1": chosen["top1"], "top5": chosen["top5"],
                 "n": chosen["n"], "drop_pt": chosen["drop_pt"], "runtime": backend, "attempt": chosen["index"],
                 "attempt_name": chosen["name"], "quantized_layers": chosen["quantized_layers"],
                 "settings": chosen["settings"], "exit_shares": chosen["exit_shares"], "expected_ms": q_expected},
        "graphs": graphs, "latency": rows,
        "latency_ms": {backend: {"fp32": rows[0]["median_ms"], "int8": rows[1]["median_ms"],
                                 "speedup": rows[0]["median_ms"] / rows[1]["median_ms"],
                                 "fp32_expected": fp["expected_ms"], "int8_expected": q_expected}},
        "speed_gate": gate,
        "accuracy": [{"artifact": "fp32 cascade", "runtime": f"cascade[{backend}]", "top1": fp["top1"],
                      "top5": fp["top5"], "n": fp["n"]},
                     {"artifact": "int8 cascade", "runtime": f"cascade[{backend}]", "top1": chosen["top1"],
                      "top5": chosen["top5"], "n": chosen["n"]}],
        "parity": parity.to_dict(), "parity_vs_fp32": cmp,
        "file_size_ratio": q_size / fp["file_size"] if fp["file_size"] else None,
        "selected": {"precision": selected, "path": str(sel_manifest), "runtime": backend, "why": why},
        "status": "passed", "versions": library_versions(), "seconds": round(time.perf_counter() - t0, 3),
    })
    record["summary"] = (
        f"top-1 FP32 cascade {fp['top1'] * 100:.2f}% → INT8 cascade {chosen['top1'] * 100:.2f}% (drop "
        f"{chosen['drop_pt']:.2f} pt, budget {cfg.budget:g}) on {chosen['n']} images after {len(attempts)} attempt(s), "
        f"{len(graphs)} graphs INT8; exit shares FP32 {[round(v, 3) for v in fp['exit_shares']]} → INT8 "
        f"{[round(v, 3) for v in chosen['exit_shares']]}; expected batch-1 latency on {backend} FP32 "
        f"{fp['expected_ms']:.3f} ms vs INT8 {q_expected:.3f} ms; kept {selected}: {why}")
    write_json(out / "quantize.json", record)
    log.info("quantize cascade %s: %s", cfg.backend, record["summary"])
    int8_art = open_artifact(int8_manifest)
    graphs_fmt = read_manifest(fp_manifest)["backend"]
    int8_art.meta = {"precision": "int8", "backend": cfg.backend, "graphs": graphs_fmt, "attempt": chosen["index"]}
    art = int8_art if selected == "int8" else open_artifact(sel_manifest)
    if selected != "int8":
        art.meta = {"precision": "fp32", "backend": cfg.backend, "graphs": graphs_fmt}
    return CascadeQuantizeResult(artifact=art, int8=int8_art, record=record)
