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
7. the kept variant is written as ``out_dir/model_selected.<xml|onnx>`` (:func:`_publish_selected`) with metadata
   stating the precision it runs in (IR rt_info ``edgevit/inference_precision``, read by the Python runtime and the
   C++ example alike; ONNX metadata ``edgevit.precision``); ``model_int8.<xml|onnx>`` is the INT8 file either way;
8. ``quantize.json`` in ``out_dir``: accuracy FP vs INT8, latency FP vs INT8 per runtime, file sizes, attempts, and
   ``summary`` (:func:`summary`), the line the CLI prints: the speed gate's own measurements and its reason.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...artifact import Artifact, write_json
from ...data.calibration import calibration_data
from ...errors import ConfigError, QuantizationError
from ...versions import library_versions
from .backends import require_backend
from .config import BACKEND_INFO, QuantizeConfig
from .gate import SpeedGate
from .ladder import AttemptLadder, best_attempt

FLOAT_PARITY_SAMPLES = 32  # evaluation images the FP32 export is checked on

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    """``artifact``: what the stage hands on, ``model_selected.<xml|onnx>`` (the INT8 file's content unless the speed
    gate kept a float variant); ``int8``: the
    quantised artefact that passed the accuracy gate; ``record``: what ``quantize.json`` holds."""

    artifact: Artifact
    int8: Artifact
    record: dict

    def to_dict(self) -> dict:
        """The record, as ``quantize.json`` and ``edgevit quantize --json`` hold it."""
        return dict(self.record)


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
        best = best_attempt(attempts)
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
    if gate["selected"] == "int8+bf16":  # the IR records it, so every later load computes what was measured
        from ...formats.openvino.runtime import record_precision

        record_precision(int8_path, "bf16")
        int8_art.meta["inference_precision"] = "bf16"
    record["selected"] = sel_rec = _publish_selected(gate["selected"], int8_path if gate["selected"] in
                                                     ("int8", "int8+bf16") else Path(fp_art.path), out, job.primary,
                                                     why=gate["why"])
    selected = open_artifact(sel_rec["path"])
    selected.meta = {"precision": gate["selected"], "runtime_options": sel_rec["runtime_options"],
                     "backend": config.backend, "source_file": sel_rec["source_file"]}
    record["status"] = "passed"
    record["versions"] = library_versions()
    record["seconds"] = round(time.perf_counter() - t0, 3)
    record["summary"] = summary(record)
    write_json(out / "quantize.json", record)
    log.info("quantize %s: %s", config.backend, record["summary"])
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


SELECTED_STEM = "model_selected"  # the artefact the speed gate kept: model_selected.onnx or model_selected.xml/.bin
INFERENCE_PRECISION = {"int8": "f32", "int8+bf16": "bf16", "fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _publish_selected(precision: str, src: Path, out: Path, runtime: str, *, why: str) -> dict:
    """Write the variant the speed gate kept to ``out/model_selected.<suffix>``, with metadata stating how it is to
    be run, and return ``record["selected"]``.

    ``precision``: the gate's choice (``int8``, ``int8+bf16``, ``fp32``, ``bf16``, ``fp16``); ``src``: the file it
    is (the INT8 file, or the FP32 one for the float variants). An OpenVINO IR gets rt_info ``edgevit/precision`` =
    ``precision`` and ``edgevit/inference_precision`` = ``f32``/``bf16``/``f16`` — the key
    :class:`~edgevit.formats.openvino.runtime.OpenVINORuntime` and the C++ example (``--precision file``, their
    default) compile it with; an ONNX file gets metadata ``edgevit.precision`` = ``precision`` (ONNX Runtime on CPU
    has one float precision, fp32).
    """
    infer = INFERENCE_PRECISION[precision]
    dst = out / f"{SELECTED_STEM}{src.suffix}"
    opts: dict = {}
    if src.suffix == ".xml":
        import openvino as ov

        from ...formats.openvino.export import RT_ROOT
        from ...formats.openvino.runtime import RT_PRECISION, read_model

        model = read_model(ov.Core(), src)
        model.set_rt_info(precision, [RT_ROOT, "precision"])
        model.set_rt_info(infer, RT_PRECISION)
        model.set_rt_info(why, [RT_ROOT, "selected_because"])
        ov.save_model(model, str(dst), compress_to_fp16=False)
        opts = {"precision": infer}
    else:
        import onnx

        model = onnx.load(str(src), load_external_data=True)
        props = {p.key: p.value for p in model.metadata_props}
        props.update({"edgevit.precision": precision, "edgevit.selected_because": why})
        del model.metadata_props[:]
        for k, v in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        big = model.ByteSize() > 1_800_000_000
        onnx.save_model(model, str(dst), save_as_external_data=big,
                        **({"location": dst.name + ".data"} if big else {}))
    return {"precision": precision, "path": str(dst), "runtime": runtime, "runtime_options": opts,
            "inference_precision": infer, "source_file": str(src), "why": why}


def summary(record: dict) -> str:
    """One line on a passed quantisation: accuracy FP32 → INT8, then the speed gate's own measurements (the
    interleaved batch-1 medians it decided on), what it kept, where, and why — so the numbers printed are those the
    decision was made on."""
    i8, fp, gate, sel = record["int8"], record["fp32"], record["speed_gate"], record["selected"]
    timed = ", ".join(f"{c['precision']} {c['latency_ms']:.3f} ms" for c in gate["candidates"]
                      if c.get("offered") and c.get("latency_ms") is not None)
    cfg = record.get("config", {})
    return (f"top-1 FP32 {fp['top1'] * 100:.2f}% → INT8 {i8['top1'] * 100:.2f}% (drop {i8['drop_pt']:.2f} pt, "
            f"budget {cfg.get('budget', float('nan')):g}) on {i8['n']} images after {len(record['attempts'])} "
            f"attempt(s), {i8.get('quantized_layers')} quantised layer(s); speed gate on {gate['runtime']} "
            f"(batch-1 medians, interleaved): {timed}; kept {sel['precision']} as {sel['path']} (runs in "
            f"{sel['inference_precision']}): {gate['why']}")


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


class _Job(AttemptLadder, SpeedGate):
    """The quantisation job: measuring (:mod:`.measure`), the attempt ladder (:mod:`.ladder`) with its
    sensitivity pass (:mod:`.sensitivity`), the speed gate (:mod:`.gate`), and the records below."""

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
            from ...runtimes.base import run_batched

            cand = run_batched(rt, self.sens_x)  # within the runtime's batch limits
        finally:
            rt.close()
        return check_parity(self.fp_logits, cand, tolerance=None, min_top1=None, precision="int8",
                            what=f"INT8 {int8_art.path.name} vs FP32 {Path(self.fp_art.path).name} "
                                 f"({self.primary}, calibration images)").to_dict()


def load_record(path: str | Path) -> dict:
    """Read a ``quantize.json``."""
    return json.loads(Path(path).read_text())
