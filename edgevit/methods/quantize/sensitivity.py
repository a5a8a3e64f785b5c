"""The per-layer sensitivity pass of the attempt ladder's ``mixed k`` rungs.

Each quantised layer's activation quantisers are bypassed in turn (:mod:`edgevit.methods.quantize.graph`) and the
drop of the mean squared logit error against FP32 on calibration images ranks the layers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .measure import Measurer

log = logging.getLogger(__name__)


class SensitivityPass(Measurer):
    """Ranks the quantised layers of an attempt (OpenVINO IR or ONNX QDQ) by sensitivity."""

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
