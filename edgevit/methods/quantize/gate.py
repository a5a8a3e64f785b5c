"""The speed gate: the INT8 artefact that passed the accuracy gate against its float variants on one runtime.

INT8 vs FP32 (and bf16/fp16 where the primary runtime computes in them; on OpenVINO also ``int8+bf16``, the INT8 IR
with its float ops in bf16), all offered variants re-timed together in interleaved passes; :func:`choose_variant`
keeps the fastest within the budget.
"""

from __future__ import annotations

import logging

from ...artifact import Artifact
from .measure import Measurer

log = logging.getLogger(__name__)

GATE_PASSES = 5  # interleaved timing rounds of the speed gate


class SpeedGate(Measurer):
    """Float variants of the primary runtime, evaluated and timed, and the gate's decision."""

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
                          f"timed in {GATE_PASSES} interleaved passes (edgevit.profiling.time_interleaved); latency_ms "
                          f"is the median of the pass medians"}

    def _retime_together(self, cands: list[dict], int8_art: Artifact) -> None:
        """Re-time every offered candidate against the others in interleaved passes: each was first timed on its
        own, minutes apart, and a shared machine drifts by tens of percent over that time."""
        from ...profiling.latency import time_interleaved

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
                      r["pass_medians_ms"], "spread_pct": r["spread_pct"],
                      "stability": {k: r["stability"][k] for k in ("verdict", "message")}})
            if r["stability"]["verdict"] == "contended":
                log.warning("speed gate timing of %s: %s", c["precision"], r["stability"]["message"])

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
