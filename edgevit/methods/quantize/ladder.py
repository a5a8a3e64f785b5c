"""The attempt ladder: INT8 attempts with growing guardrails until one is within the top-1 budget.

``default`` (guardrails as configured; with ``smooth_quant: auto`` both SmoothQuant on and off) → ``attention
float`` → the same with SmoothQuant toggled → ``mixed k`` (the ``k`` most sensitive layers kept float, from
:class:`~edgevit.methods.quantize.sensitivity.SensitivityPass`). Every attempt is quantised, evaluated through its
runtime, timed and recorded.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

from ...errors import QuantizationError
from .backends import Settings, quantize_file
from .sensitivity import SensitivityPass

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def best_attempt(attempts: list[dict]) -> dict | None:
    """The evaluated attempt with the highest top-1 (the faster on ties); None when none was evaluated."""
    ok = [a for a in attempts if a.get("top1") is not None]
    if not ok:
        return None
    return max(ok, key=lambda a: (a["top1"], -(a.get("latency_ms") or math.inf)))


class AttemptLadder(SensitivityPass):
    """The ladder of INT8 attempts (see the module docstring)."""

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
        sq = bool(best_attempt(attempts)["settings"]["smooth_quant"]) if best_attempt(attempts) else sq0
        if room():
            self._try(attempts, f"attention float (smooth_quant {'on' if sq else 'off'})",
                      Settings(smooth_quant=sq, exclude_attention=True))
        if room() and cfg.smooth_quant != "auto":  # auto has already tried both settings on the first rung
            self._try(attempts, f"attention float (smooth_quant {'off' if sq else 'on'})",
                      Settings(smooth_quant=not sq, exclude_attention=True))
        if room():
            best = best_attempt(attempts)
            if best is None:
                return attempts
            ranking = self.sensitivity_pass(best)
            if not ranking:  # nothing to keep float: a mixed rung would repeat the attempt it started from
                log.warning("sensitivity pass found no quantised layer in attempt %d; no mixed-precision attempt",
                            best["index"])
                return attempts
            cap = max(1, int(cfg.max_float_fraction * len(ranking)))
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
