"""What the quantisation job measures: runtimes on the chosen artefacts, top-1 on the evaluation set, batch-1 latency.

:class:`Measurer` holds the state shared by the FP32 baseline, the attempt ladder (:mod:`.ladder`), the sensitivity
pass (:mod:`.sensitivity`) and the speed gate (:mod:`.gate`); :func:`edgevit.methods.quantize.core.quantize`
runs them in that order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...artifact import Artifact
from ...errors import ConfigError
from .config import QuantizeConfig

log = logging.getLogger(__name__)

LATENCY_RUNTIMES = ("openvino", "onnxruntime")  # CPU runtimes the speed comparison considers


class Measurer:
    """State shared by the baseline, the ladder, the sensitivity pass and the gates; runtimes, evaluation, timing."""

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
        from ...profiling.latency import profile_runtime

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
            from ...runtimes.base import run_batched

            self.fp_logits = run_batched(rt, self.sens_x)  # within the runtime's batch limits
        finally:
            rt.close()
        self.fp_latency_row = lat
        self.fp = {"path": str(self.fp_art.path), "file_size": self.fp_art.file_size, "top1": ev["top1"],
                   "top5": ev["top5"], "n": ev["n"], "runtime": self.primary, "latency_ms": lat["median_ms"],
                   "p90_ms": lat["p90_ms"], "runs": lat["runs"]}
        log.info("FP32 %s via %s: top-1 %.4f, batch-1 median %.3f ms", self.kind, self.primary, ev["top1"],
                 lat["median_ms"])
        return self.fp
