"""INT8 post-training quantisation with ViT guardrails, an accuracy gate and a speed gate.

:func:`quantize` (``edgevit.methods.quantize.quantize(model, calib, *, out_dir, config)``):

1. the FP32 artefact the backend needs (ONNX for ``onnxruntime``/``nncf-onnx``, OpenVINO IR for ``openvino``)
   is exported from the torch model (with the exporters' parity checks on real images), or taken as given;
2. calibration images come from :func:`edgevit.data.calibration.calibration_data` (real data only);
3. the FP32 artefact is evaluated through its runtime on the evaluation set and timed (batch 1);
4. the attempt ladder runs until one attempt's top-1 drop is within ``budget`` points:
   ``default`` (guardrails as configured; with ``smooth_quant: auto`` both SmoothQuant on and off are tried and the
   better kept) → ``attention float`` (the activation×activation MatMuls / fused attention also kept float) →
   the same with SmoothQuant toggled → ``mixed k`` (the ``k`` most sensitive layers kept float, from a per-layer
   sensitivity pass: each quantised layer's activation quantisers are bypassed in turn and the drop of the
   logit error against FP32 on calibration images ranks the layers). Every attempt is evaluated through its
   runtime and timed; each is recorded;
5. nothing within budget: :class:`~edgevit.errors.QuantizationError` quoting the best attempt (record written);
6. speed gate: the passing INT8 artefact is timed against FP32 (and bf16/fp16 where the runtime computes in them)
   on the same runtime, and on OpenVINO also as ``int8+bf16`` (the same INT8 IR with the ops left in float —
   LayerNorm, Softmax, GELU, residual Adds — computed in bf16, evaluated and timed like every other variant); the
   fastest variant within the budget is kept and the reason recorded. When ``int8+bf16`` wins, the INT8 IR records
   it in its rt_info (``edgevit/inference_precision``), so the OpenVINO runtime loads it that way by default;
7. ``quantize.json`` in ``out_dir``: accuracy FP vs INT8, latency FP vs INT8 per runtime, file sizes, attempts.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import Artifact, write_json
from ...data.calibration import calibration_data
from ...errors import ConfigError, QuantizationError
from ...versions import library_versions
from .backends import Settings, quantize_file, require_backend
from .config import BACKEND_INFO, QuantizeConfig

FLOAT_PARITY_SAMPLES = 32  # evaluation images the FP32 export is checked on

log = logging.getLogger(__name__)

LATENCY_RUNTIMES = ("openvino", "onnxruntime")  # CPU runtimes the speed comparison considers
GATE_PASSES = 5  # interleaved timing rounds of the speed gate


@dataclass
class QuantizeResult:
    """``artifact``: what the stage hands on (INT8 unless the speed gate kept a float variant); ``int8``: the
    quantised artefact that passed the accuracy gate; ``record``: what ``quantize.json`` holds."""

    artifact: Artifact
    int8: Artifact
    record: dict


def quantize(source: Any, calib: Any = None, *, out_dir: str | Path, config: QuantizeConfig | None = None,
             eval_data: Any = None, data_dir: str | None = None) -> QuantizeResult:
    """Quantise ``source`` to INT8 under the accuracy and speed gates; see the module docstring.

    ``source``: a torch module (from :func:`edgevit.models.create`), a model name or checkpoint, an ``.onnx`` or
    ``.xml`` file, or an :class:`Artifact`. ``calib``: calibration data for
    :func:`~edgevit.data.calibration.calibration_data` (default ``config.calib``). ``eval_data``: an
    ``ArrayDataset`` for the accuracy gate (default ``config.eval_data``/``eval_split``/``eval_limit``).
    Raises :class:`ConfigError`, :class:`~edgevit.errors.DataError` (empty or wrong-shaped calibration images),
    :class:`~edgevit.errors.MissingBackendError` (backend not installed) and :class:`QuantizationError` (nothing
    met the budget; ``exc.record`` holds every attempt).
    """
    t0 = time.perf_counter()
    config = config or QuantizeConfig()
    config.validate("quantize")
    backend_version = require_backend(config.backend)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eval_ds = eval_data if eval_data is not None else _load_eval(config, data_dir)
    # the float export's parity check runs on the first evaluation images (real data the caller chose)
    fp_art, export_record = _prepare_float(source, config.backend, out / "fp32",
                                           parity_images=eval_ds.images[:FLOAT_PARITY_SAMPLES])
    spec = fp_art.spec
    calib_x, calib_where = calibration_data(spec, config.calib if calib is None else calib, split=config.calib_split,
                                            samples=config.calib_samples, data_dir=data_dir, seed=config.calib_seed)
    job = _Job(config, fp_art, calib_x, eval_ds, out)
    record: dict[str, Any] = {
        "status": "running", "backend": config.backend, "backend_version": backend_version,
        "config": config.to_dict(), "source": fp_art.source, "input_spec": spec.to_dict(),
        "calibration": {**calib_where, "n": len(calib_x)},
        "eval": {"dataset": getattr(eval_ds, "name", None), "split": config.eval_split, "n": len(eval_ds)},
        "fp32_export": export_record, "primary_runtime": job.primary, "runtimes": job.runtimes,
    }
    fp = job.baseline()
    record["fp32"] = fp
    attempts = job.ladder()
    record["attempts"] = attempts
    record["sensitivity"] = job.sensitivity
    passed = [a for a in attempts if a.get("passed")]
    if not passed:
        best = _best(attempts)
        record["status"] = "failed"
        record["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(out / "quantize.json", record)
        raise _budget_error(config, fp, best, attempts, out / "quantize.json", record)
    chosen = passed[0]
    int8_path = _publish(Path(chosen["path"]), out)
    from ...runtimes import open_artifact

    int8_art = open_artifact(int8_path)
    int8_art.meta = {"precision": "int8", "backend": config.backend, "attempt": chosen["index"]}
    record["int8"] = job.describe_int8(chosen, int8_art)
    record["latency"], record["latency_ms"] = job.latency_table(chosen, int8_art)
    record["speed_gate"] = gate = job.speed_gate(chosen, int8_art)
    record["accuracy"] = job.accuracy_rows(chosen, gate)
    record["parity"] = job.parity(int8_art)
    record["file_size_ratio"] = (int8_art.file_size / fp_art.file_size) if fp_art.file_size else None
    if gate["selected"] in ("int8", "int8+bf16"):
        opts = {}
        if gate["selected"] == "int8+bf16":  # the IR records it, so every later load computes what was measured
            from ...formats.openvino.runtime import record_precision

            record_precision(int8_path, "bf16")
            opts = {"precision": "bf16"}
            int8_art.meta["inference_precision"] = "bf16"
        selected = int8_art
        record["selected"] = {"precision": gate["selected"], "path": str(int8_path), "runtime": job.primary,
                              "runtime_options": opts}
    else:
        opts = {"precision": {"bf16": "bf16", "fp16": "f16"}.get(gate["selected"], "f32")} \
            if job.primary == "openvino" else {}
        selected = Artifact(kind=fp_art.kind, spec=spec, path=fp_art.path, source=fp_art.source,
                            meta={"precision": gate["selected"], "runtime_options": opts})
        record["selected"] = {"precision": gate["selected"], "path": str(fp_art.path), "runtime": job.primary,
                              "runtime_options": opts}
    record["status"] = "passed"
    record["versions"] = library_versions()
    record["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(out / "quantize.json", record)
    log.info("quantize %s: FP32 top-1 %.4f → INT8 %.4f (drop %.2f pt, budget %.2f) after %d attempt(s); kept %s",
             config.backend, fp["top1"], chosen["top1"], chosen["drop_pt"], config.budget, len(attempts),
             gate["selected"])
    return QuantizeResult(artifact=selected, int8=int8_art, record=record)


# ------------------------------------------------------------------------------------------------ inputs


def _load_eval(config: QuantizeConfig, data_dir: str | None):
    from ...data import load_dataset

    return load_dataset(config.eval_data, config.eval_split, data_dir=data_dir, limit=config.eval_limit)


def _prepare_float(source: Any, backend: str, fp_dir: Path, *, parity_images: Any) -> tuple[Artifact, dict | None]:
    """The FP32 artefact the backend quantises (exported when needed, its parity checked on ``parity_images``) and
    the export record (:meth:`~edgevit.results.ExportResult.to_dict`; None when no export was needed)."""
    from ...runtimes import open_artifact

    want = BACKEND_INFO[backend][2]  # 'openvino' or 'onnx'
    module = None
    if isinstance(source, Artifact):
        if source.kind == "torch":
            module = source.load_model()
        elif source.path is not None:
            source = source.path
        else:
            raise ConfigError(f"cannot quantise an artefact of kind '{source.kind}' without a file")
    if module is None and isinstance(source, (str, Path)):
        p = Path(source)
        if p.suffix in (".onnx", ".xml") and p.exists():
            art = open_artifact(p)
            if art.kind == want:
                return art, None
            if art.kind == "onnx" and want == "openvino":
                from ...formats.openvino.export import export_openvino

                res = export_openvino(None, fp_dir / "model.xml", from_onnx=p, parity_images=parity_images)
                return open_artifact(fp_dir / "model.xml"), res.to_dict()
            raise ConfigError(f"the {backend} backend quantises ONNX files; {p} is an OpenVINO IR. Pass the torch "
                              f"model or its ONNX file, or use --backend openvino")
        if p.suffix in (".onnx", ".xml"):
            raise ConfigError(f"{p} does not exist; export the model first or pass its name")
        from ...models import create

        module = create(str(source))
    if module is None:
        import torch

        if not isinstance(source, torch.nn.Module):
            raise ConfigError(f"quantize needs a torch model, a model name, an .onnx/.xml file or an Artifact; got "
                              f"{type(source).__name__}")
        module = source
    module.eval()
    if want == "onnx":
        from ...formats.onnx.export import export_onnx

        res = export_onnx(module, fp_dir / "model.onnx", parity_images=parity_images)
        return open_artifact(fp_dir / "model.onnx"), res.to_dict()
    from ...formats.openvino.export import export_openvino

    res = export_openvino(module, fp_dir / "model.xml", parity_images=parity_images)
    return open_artifact(fp_dir / "model.xml"), res.to_dict()


def _publish(path: Path, out: Path) -> Path:
    """Copy the chosen attempt's file (and its .bin) to ``out/model_int8.<suffix>``."""
    dst = out / f"model_int8{path.suffix}"
    shutil.copyfile(path, dst)
    if path.suffix == ".xml":
        shutil.copyfile(path.with_suffix(".bin"), dst.with_suffix(".bin"))
    return dst


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _best(attempts: list[dict]) -> dict | None:
    ok = [a for a in attempts if a.get("top1") is not None]
    if not ok:
        return None
    return max(ok, key=lambda a: (a["top1"], -(a.get("latency_ms") or math.inf)))


def _budget_error(config: QuantizeConfig, fp: dict, best: dict | None, attempts: list[dict], path: Path,
                  record: dict) -> QuantizationError:
    if best is None:
        errors = "; ".join(f"{a['name']}: {a.get('error')}" for a in attempts)
        err = QuantizationError(f"every INT8 attempt of the {config.backend} backend failed ({errors}). The record "
                                f"is in {path}.")
    else:
        err = QuantizationError(
            f"no INT8 configuration met the top-1 budget of {config.budget:g} pt after {len(attempts)} attempt(s) "
            f"({config.backend} backend). Best: attempt {best['index']} '{best['name']}' with top-1 "
            f"{best['top1'] * 100:.2f}% vs FP32 {fp['top1'] * 100:.2f}% (drop {best['drop_pt']:.2f} pt) and a "
            f"batch-1 median of {best['latency_ms']:.3f} ms on {best['runtime']} (FP32 {fp['latency_ms']:.3f} ms), "
            f"on {fp['n']} evaluation images. Every attempt is recorded in {path}. To get within budget: raise "
            f"the budget, calibrate on more or more representative images (calib_samples), allow more float layers "
            f"(mixed_precision_layers, max_float_fraction), or deploy the FP32/bf16 model.")
    err.record = record
    return err


# ------------------------------------------------------------------------------------------------ the job


class _Job:
    """State shared by the baseline, the ladder, the sensitivity pass and the gates."""

    def __init__(self, config: QuantizeConfig, fp_art: Artifact, calib: np.ndarray, eval_ds, out: Path):
        from ...data import preprocess
        from ...runtimes import get_runtime_class

        self.config, self.fp_art, self.calib, self.eval_ds, self.out = config, fp_art, calib, eval_ds, out
        self.kind = fp_art.kind
        self.primary = "openvino" if self.kind == "openvino" else "onnxruntime"
        names = config.runtimes or [self.primary] + [r for r in LATENCY_RUNTIMES if r != self.primary]
        self.runtimes = []
        for name in names:
            cls = get_runtime_class(name)
            if self.kind not in cls.kinds:
                if config.runtimes:
                    raise ConfigError(f"quantize.runtimes: runtime '{name}' does not load '{self.kind}' artefacts")
                continue
            if cls.availability()[0]:
                self.runtimes.append(name)
        if self.primary not in self.runtimes:
            self.runtimes.insert(0, self.primary)
        if len(eval_ds) == 0:
            from ...errors import DataError

            raise DataError("the evaluation set is empty; the accuracy gate needs labelled real images")
        self.one = preprocess(eval_ds.images[:1], fp_art.spec)
        self.sens_x = calib[: config.sensitivity_samples]
        self.fp_logits: np.ndarray | None = None
        self.fp: dict = {}
        self.sensitivity: dict | None = None
        self.float_variants: dict[str, dict] = {}
        self.attempt_rows: dict[int, dict] = {}

    # ---------------------------------------------------------------------------------------- measuring

    def _runtime(self, name: str, art: Artifact, precision: str = "f32"):
        from ...runtimes import load_runtime

        opts = {"precision": precision} if name == "openvino" else {}
        return load_runtime(name, art, threads=self.config.threads, **opts)

    def _latency(self, rt) -> dict:
        from ...profile.latency import profile_runtime

        d = self.config.latency_s
        row = profile_runtime(rt, batch_sizes=(1,), warmup_s=min(0.5, d / 4), duration_s=d, min_runs=5,
                              inputs=self.one, progress=False)[0]
        return row

    def _eval(self, rt) -> dict:
        from ...evaluate import evaluate

        return evaluate(rt, self.eval_ds, batch_size=self.config.batch_size)

    def baseline(self) -> dict:
        rt = self._runtime(self.primary, self.fp_art)
        try:
            ev = self._eval(rt)
            lat = self._latency(rt)
            self.fp_logits = rt.run(self.sens_x)
        finally:
            rt.close()
        self.fp_latency_row = lat
        self.fp = {"path": str(self.fp_art.path), "file_size": self.fp_art.file_size, "top1": ev["top1"],
                   "top5": ev["top5"], "n": ev["n"], "runtime": self.primary, "latency_ms": lat["median_ms"],
                   "p90_ms": lat["p90_ms"], "runs": lat["runs"]}
        log.info("FP32 %s via %s: top-1 %.4f, batch-1 median %.3f ms", self.kind, self.primary, ev["top1"],
                 lat["median_ms"])
        return self.fp

    # ------------------------------------------------------------------------------------------- ladder

    def _try(self, attempts: list[dict], name: str, settings: Settings) -> dict:
        from ...runtimes import open_artifact

        i = len(attempts)
        suffix = ".xml" if self.kind == "openvino" else ".onnx"
        path = self.out / "attempts" / f"{i:02d}_{_slug(name)}" / f"model{suffix}"
        rec: dict[str, Any] = {"index": i, "name": name, "settings": settings.to_dict(), "path": str(path),
                               "runtime": self.primary, "top1": None, "drop_pt": None, "latency_ms": None,
                               "passed": False, "error": None}
        t = time.perf_counter()
        try:
            info = quantize_file(self.config.backend, self.fp_art.path, self.calib, self.config, settings, path,
                                 spec=self.fp_art.spec, source=self.fp_art.source)
            rec["quantized_layers"] = len(info.pop("quantized_layers"))
            rec["backend"] = info
            art = open_artifact(path)
            rec["file_size"] = art.file_size
            rt = self._runtime(self.primary, art)
            try:
                ev = self._eval(rt)
                lat = self._latency(rt)
            finally:
                rt.close()
            rec.update({"top1": ev["top1"], "top5": ev["top5"], "n": ev["n"],
                        "drop_pt": (self.fp["top1"] - ev["top1"]) * 100, "latency_ms": lat["median_ms"],
                        "p90_ms": lat["p90_ms"]})
            rec["passed"] = rec["drop_pt"] <= self.config.budget + 1e-9
            self.attempt_rows[i] = lat
        except QuantizationError as exc:
            rec["error"] = str(exc)
            log.warning("quantize attempt %d (%s) failed: %s", i, name, exc)
        rec["seconds"] = round(time.perf_counter() - t, 3)
        if rec["top1"] is not None:
            log.info("attempt %d %-40s top-1 %.4f (drop %+.2f pt, budget %.2f) %.3f ms %s", i, name, rec["top1"],
                     rec["drop_pt"], self.config.budget, rec["latency_ms"], "PASS" if rec["passed"] else "")
        attempts.append(rec)
        return rec

    def ladder(self) -> list[dict]:
        cfg = self.config
        attempts: list[dict] = []

        def room() -> bool:
            return len(attempts) < cfg.max_attempts and not any(a["passed"] for a in attempts)

        sq0 = cfg.smooth_quant != "off"
        self._try(attempts, f"default (smooth_quant {'on' if sq0 else 'off'})", Settings(smooth_quant=sq0))
        if cfg.smooth_quant == "auto" and len(attempts) < cfg.max_attempts:
            # SmoothQuant both ways is part of the default guardrails: tried even when the first attempt passed
            self._try(attempts, "default (smooth_quant off)", Settings(smooth_quant=False))
            ok = [a for a in attempts if a["passed"]]
            if len(ok) == 2:  # both pass: keep the faster first, so the speed gate sees it
                ok.sort(key=lambda a: a["latency_ms"])
                for a in attempts:
                    a["passed"] = a is ok[0]
                    if a is ok[1]:
                        a["note"] = "within budget, but the other SmoothQuant setting was faster"
        sq = bool(_best(attempts)["settings"]["smooth_quant"]) if _best(attempts) else sq0
        if room():
            self._try(attempts, f"attention float (smooth_quant {'on' if sq else 'off'})",
                      Settings(smooth_quant=sq, exclude_attention=True))
        if room() and cfg.smooth_quant != "auto":  # auto has already tried both settings on the first rung
            self._try(attempts, f"attention float (smooth_quant {'off' if sq else 'on'})",
                      Settings(smooth_quant=not sq, exclude_attention=True))
        if room():
            best = _best(attempts)
            if best is None:
                return attempts
            ranking = self.sensitivity_pass(best)
            cap = max(1, int(cfg.max_float_fraction * len(ranking))) if ranking else 0
            counts = sorted({min(k, cap) for k in cfg.mixed_precision_layers})
            for k in counts:
                if not room():
                    break
                layers = [r["layer"] for r in ranking[:k]]
                s = best["settings"]
                self._try(attempts, f"mixed precision: {k} most sensitive layer(s) float",
                          Settings(smooth_quant=s["smooth_quant"], exclude_attention=s["exclude_attention"],
                                   float_layers=list(s["float_layers"]) + layers))
        return attempts

    # -------------------------------------------------------------------------------------- sensitivity

    def sensitivity_pass(self, attempt: dict) -> list[dict]:
        """Rank the quantised layers of ``attempt`` by how much bypassing their activation quantisers reduces the
        mean squared logit error against FP32 on calibration images."""
        t = time.perf_counter()
        path = Path(attempt["path"])
        ref = self.fp_logits
        if self.kind == "openvino":
            rows, base = self._sens_openvino(path, ref)
        else:
            rows, base = self._sens_onnx(path, ref)
        rows.sort(key=lambda r: -r["gain"])
        self.sensitivity = {"attempt": attempt["index"], "n": len(self.sens_x), "base_mse": base,
                            "metric": "mean squared logit error vs FP32 on calibration images; gain = base − "
                                      "error with the layer's activation quantisers bypassed",
                            "layers": rows, "seconds": round(time.perf_counter() - t, 3)}
        log.info("sensitivity pass: %d layers in %.1f s; most sensitive: %s", len(rows), time.perf_counter() - t,
                 ", ".join(r["layer"] for r in rows[:3]))
        return rows

    def _sens_openvino(self, path: Path, ref: np.ndarray) -> tuple[list[dict], float]:
        import openvino as ov

        from ...formats.openvino.runtime import read_model
        from . import graph

        core = ov.Core()
        model = read_model(core, path)
        cfg = {"INFERENCE_PRECISION_HINT": "f32"}
        if self.config.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.config.threads)

        def mse(m) -> float:
            c = core.compile_model(m, "CPU", cfg)
            out = c({0: self.sens_x})[c.output(0)]
            return float(np.mean((np.asarray(out, dtype=np.float64) - ref) ** 2))

        base = mse(model)
        rows = []
        for layer in graph.ov_quantized_layers(model):
            err = mse(graph.ov_bypass(model, layer))
            rows.append({"layer": layer, "mse": err, "gain": base - err})
        return rows, base

    def _sens_onnx(self, path: Path, ref: np.ndarray) -> tuple[list[dict], float]:
        import onnx
        import onnxruntime as ort

        from . import graph

        model = onnx.load(str(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.config.threads:
            so.intra_op_num_threads = int(self.config.threads)
        name = self.fp_art.spec.input_name

        def mse(m) -> float:
            s = ort.InferenceSession(m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
            inp = s.get_inputs()[0].name if name not in [i.name for i in s.get_inputs()] else name
            out = s.run(None, {inp: self.sens_x})[0]
            return float(np.mean((np.asarray(out, dtype=np.float64) - ref) ** 2))

        base = mse(model)
        rows = []
        for layer in graph.onnx_quantized_layers(model):
            err = mse(graph.onnx_bypass(model, layer))
            rows.append({"layer": layer, "mse": err, "gain": base - err})
        return rows, base

    # ------------------------------------------------------------------------------------- speed gate

    def speed_gate(self, chosen: dict, int8_art: Artifact) -> dict:
        """INT8 vs FP32 (and bf16/fp16 where the primary runtime computes in them, including INT8 with its float
        leftovers in bf16); the fastest within budget."""
        cands = [{"precision": "int8", "top1": chosen["top1"], "drop_pt": chosen["drop_pt"],
                  "latency_ms": chosen["latency_ms"], "offered": True}]
        if "bf16" in self.config.float_precisions:
            cands.append(self._variant("bf16", int8_art, "int8+bf16"))
        cands.append({"precision": "fp32", "top1": self.fp["top1"], "drop_pt": 0.0,
                      "latency_ms": self.fp["latency_ms"], "offered": True})
        for prec in self.config.float_precisions:
            if prec == "fp32":
                continue
            cands.append(self._variant(prec, self.fp_art, prec))
        self._retime_together(cands, int8_art)
        selected, why = choose_variant(cands, budget=self.config.budget, speed_gate=self.config.speed_gate,
                                       runtime=self.primary)
        log.info("speed gate: %s", why)
        return {"runtime": self.primary, "candidates": cands, "selected": selected, "why": why,
                "method": f"batch-1 latency on a real image, same runtime, all offered variants loaded together and "
                          f"timed in {GATE_PASSES} interleaved passes (edgevit.profile.time_interleaved); latency_ms "
                          f"is the median of the pass medians"}

    def _retime_together(self, cands: list[dict], int8_art: Artifact) -> None:
        """Re-time every offered candidate against the others in interleaved passes: each was first timed on its
        own, minutes apart, and a shared machine drifts by tens of percent over that time."""
        from ...profile.latency import time_interleaved

        arts = {"int8": (int8_art, "f32"), "int8+bf16": (int8_art, "bf16"), "fp32": (self.fp_art, "f32"),
                "bf16": (self.fp_art, "bf16"), "fp16": (self.fp_art, "f16")}
        offered = [c for c in cands if c.get("offered") and c["precision"] in arts]
        if len(offered) < 2:
            return
        rts = {}
        try:
            for c in offered:
                art, prec = arts[c["precision"]]
                rts[c["precision"]] = self._runtime(self.primary, art, precision=prec)
            d = self.config.latency_s
            res = time_interleaved({k: rt.run for k, rt in rts.items()}, self.one, passes=GATE_PASSES,
                                   duration_s=max(d / GATE_PASSES, 0.01), warmup_s=min(0.2, d / 4), min_runs=3)
        finally:
            for rt in rts.values():
                rt.close()
        for c in offered:
            r = res[c["precision"]]
            c["latency_alone_ms"] = c["latency_ms"]
            c.update({"latency_ms": r["median_ms"], "p90_ms": r["pooled"]["p90_ms"], "pass_medians_ms":
                      r["pass_medians_ms"], "spread_pct": r["spread_pct"]})

    def _variant(self, prec: str, art: Artifact, label: str) -> dict:
        """``art`` compiled to compute its float parts in ``prec`` (OpenVINO only): accuracy and latency."""
        row = {"precision": label, "top1": None, "drop_pt": None, "latency_ms": None, "offered": False}
        if self.primary != "openvino":
            row["why_not"] = (f"{self.primary} on CPU has no {prec} execution for this model (the CPU execution "
                              f"provider runs float models in fp32)")
            return row
        want = {"bf16": "bf16", "fp16": "f16"}[prec]
        rt = self._runtime("openvino", art, precision=want)
        try:
            used = rt.inference_precision
            if used != want:
                row["why_not"] = f"OpenVINO compiles {prec} requests as {used} on this CPU (no native {prec})"
                return row
            ev = self._eval(rt)
            lat = self._latency(rt)
        finally:
            rt.close()
        row.update({"offered": True, "top1": ev["top1"], "drop_pt": (self.fp["top1"] - ev["top1"]) * 100,
                    "latency_ms": lat["median_ms"], "p90_ms": lat["p90_ms"]})
        lat["artifact"] = f"{'int8' if art is not self.fp_art else 'fp32'} {self.kind} @ {prec}"
        self.float_variants[label] = {"eval": ev, "latency": lat}
        return row

    # ------------------------------------------------------------------------------------------ records

    def describe_int8(self, chosen: dict, art: Artifact) -> dict:
        return {"path": str(art.path), "file_size": art.file_size, "top1": chosen["top1"], "top5": chosen["top5"],
                "n": chosen["n"], "drop_pt": chosen["drop_pt"], "runtime": self.primary,
                "latency_ms": chosen["latency_ms"], "attempt": chosen["index"], "attempt_name": chosen["name"],
                "quantized_layers": chosen.get("quantized_layers"), "settings": chosen["settings"]}

    def latency_table(self, chosen: dict, int8_art: Artifact) -> tuple[list[dict], dict]:
        """Batch-1 latency rows for FP32 and INT8 in every runtime of ``self.runtimes`` (primary ones reused)."""
        rows = [{**self.fp_latency_row, "artifact": f"fp32 {self.kind}"},
                {**self.attempt_rows[chosen["index"]], "artifact": f"int8 {self.kind}"}]
        summary: dict[str, dict] = {self.primary: {"fp32": self.fp["latency_ms"], "int8": chosen["latency_ms"]}}
        for name in self.runtimes:
            if name == self.primary:
                continue
            pairs = [("int8", int8_art), ("fp32", self.fp_art)]
            for label, art in pairs:
                try:
                    rt = self._runtime(name, art)
                except Exception as exc:  # noqa: BLE001 - a runtime that cannot load the file is recorded, not fatal
                    summary.setdefault(name, {})[label] = None
                    summary[name][f"{label}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    continue
                try:
                    row = self._latency(rt)
                finally:
                    rt.close()
                row["artifact"] = f"{label} {art.kind}"
                rows.append(row)
                summary.setdefault(name, {})[label] = row["median_ms"]
        for name, d in summary.items():
            if d.get("fp32") and d.get("int8"):
                d["speedup"] = d["fp32"] / d["int8"]
        for prec, v in self.float_variants.items():
            rows.append(v["latency"])
            summary[self.primary][prec] = v["latency"]["median_ms"]
        return rows, summary

    def accuracy_rows(self, chosen: dict, gate: dict) -> list[dict]:
        rows = [{"artifact": f"fp32 {self.kind}", "runtime": self.primary, "top1": self.fp["top1"],
                 "top5": self.fp["top5"], "n": self.fp["n"]},
                {"artifact": f"int8 {self.kind}", "runtime": self.primary, "top1": chosen["top1"],
                 "top5": chosen["top5"], "n": chosen["n"]}]
        for v in self.float_variants.values():
            rows.append({"artifact": v["latency"]["artifact"], "runtime": self.primary, "top1": v["eval"]["top1"],
                         "top5": v["eval"]["top5"], "n": v["eval"]["n"]})
        return rows

    def parity(self, int8_art: Artifact) -> dict:
        """INT8 vs FP32 logits on the calibration images (recorded; the accuracy gate is what decides)."""
        from ...formats.parity import check_parity

        rt = self._runtime(self.primary, int8_art)
        try:
            cand = rt.run(self.sens_x)
        finally:
            rt.close()
        return check_parity(self.fp_logits, cand, tolerance=None, min_top1=None,
                            what=f"INT8 {int8_art.path.name} vs FP32 {Path(self.fp_art.path).name} "
                                 f"({self.primary}, calibration images)").to_dict()


def choose_variant(candidates: list[dict], *, budget: float, speed_gate: bool = True, runtime: str = "the runtime"
                   ) -> tuple[str, str]:
    """The speed gate's decision: ``(precision, why)``.

    ``candidates``: ``{"precision", "top1", "drop_pt", "latency_ms", "offered"}`` rows, the first being INT8 (which
    passed the accuracy gate); ``int8+bf16`` is the same INT8 file with its float ops in bf16. Among the offered
    variants whose top-1 drop vs FP32 is within ``budget`` (equal
    accuracy for the purpose of the gate), the one with the lowest batch-1 median latency is kept; INT8 when
    ``speed_gate`` is off.
    """
    int8 = candidates[0]
    within = [c for c in candidates if c.get("offered") and c.get("top1") is not None
              and c.get("latency_ms") is not None and c["drop_pt"] <= budget + 1e-9]
    if not speed_gate:
        return "int8", "speed gate off (speed_gate: false): INT8 kept whatever its latency"
    if int8 not in within:
        within.insert(0, int8)
    fastest = min(within, key=lambda c: c["latency_ms"])
    if fastest is int8:
        others = ", ".join(f"{c['precision']} {c['latency_ms']:.3f} ms" for c in within if c is not int8)
        return "int8", (f"INT8 is the fastest variant within the {budget:g} pt budget on {runtime}: "
                        f"{int8['latency_ms']:.3f} ms vs {others or 'no other variant'}")
    sel = fastest["precision"]
    if sel == "int8+bf16":
        return sel, (f"INT8 with its float ops in bf16 ({fastest['latency_ms']:.3f} ms, top-1 "
                     f"{fastest['top1'] * 100:.2f}%) is the fastest variant within the {budget:g} pt budget on "
                     f"{runtime} (INT8 with fp32 float ops: {int8['latency_ms']:.3f} ms), so the INT8 file records "
                     f"bf16 as its inference precision")
    return sel, (f"{sel} ({fastest['latency_ms']:.3f} ms, top-1 {fastest['top1'] * 100:.2f}%) is faster than INT8 "
                 f"({int8['latency_ms']:.3f} ms, top-1 {int8['top1'] * 100:.2f}%) on {runtime} at top-1 within the "
                 f"{budget:g} pt budget, so the float model is kept (the INT8 file is still written)")


def load_record(path: str | Path) -> dict:
    """Read a ``quantize.json``."""
    return json.loads(Path(path).read_text())
