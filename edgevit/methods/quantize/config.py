"""The quantisation config: one validated, serialisable dataclass shared by the API, the CLI and the stage.

Importable without torch or any backend.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from ...errors import ConfigError

CONFIG_VERSION = 1
BACKENDS = ("openvino", "onnxruntime", "nncf-onnx")
# backend → (python module that must import, pip extra, artefact kind it writes)
BACKEND_INFO = {
    "openvino": ("nncf", "openvino", "openvino"),
    "onnxruntime": ("onnxruntime.quantization", "onnx", "onnx"),
    "nncf-onnx": ("nncf", "openvino", "onnx"),
}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
GUARDRAILS = ("layernorm", "softmax", "gelu", "residual_add", "patch_embed", "head")


@dataclass
class QuantizeConfig:
    """Everything :func:`edgevit.methods.quantize.quantize` can be told. Defaults are the ViT guardrails of the issue.

    Accuracy gate: ``budget`` is the largest top-1 drop allowed, in percentage points, measured through the
    artefact's runtime on the evaluation set (a negative budget demands INT8 beat FP32 by that much, which no
    ladder can promise: it forces every attempt and is how the failure path is tested).
    """

    backend: Literal["openvino", "onnxruntime", "nncf-onnx"] = field(
        default="openvino", metadata={"help": "openvino (NNCF on the IR), onnxruntime (quantize_static, QDQ), "
                                              "nncf-onnx (NNCF on the ONNX graph, QDQ)"})
    budget: float = field(default=1.0, metadata={"help": "max top-1 drop vs FP32, percentage points"})
    # calibration (real data only)
    calib: str = field(default="fashion-mnist", metadata={"help": "calibration data: 'fashion-mnist' or an "
                                                                  "ImageFolder directory"})
    calib_split: str = "train"
    calib_samples: int = field(default=300, metadata={"help": "calibration images (class-balanced subset)"})
    calib_seed: int = 0
    calibration_method: Literal["minmax", "entropy", "percentile"] | None = field(
        default=None, metadata={"help": "activation range estimator (None: the backend's default; "
                                        "entropy only on onnxruntime)"})
    # evaluation
    eval_data: str = field(default="fashion-mnist", metadata={"help": "evaluation data: 'fashion-mnist' or an "
                                                                      "ImageFolder directory"})
    eval_split: str = "test"
    eval_limit: int | None = field(default=None, metadata={"help": "evaluation images (None: the whole split)"})
    batch_size: int = 100
    # backend knobs
    preset: Literal["performance", "mixed"] = "performance"
    model_type: Literal["transformer", "none"] = field(default="transformer",
                                                       metadata={"help": "NNCF model_type (transformer or none)"})
    per_channel: bool = field(default=True, metadata={"help": "per-channel weight scales"})
    reduce_range: bool = False
    smooth_quant: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "auto: try SmoothQuant on and off and keep the better; on; off"})
    smooth_quant_alpha: float | None = field(default=None, metadata={"help": "SmoothQuant alpha for MatMuls "
                                                                             "(None: 0.95 NNCF, 0.5 onnxruntime)"})
    # guardrails (True keeps the op in floating point)
    guard_layernorm: bool = True
    guard_softmax: bool = True
    guard_gelu: bool = True
    guard_residual_add: bool = True
    float_patch_embed: bool = True
    float_head: bool = True
    ignored_types: list[str] = field(default_factory=list, metadata={"help": "op types kept in float"})
    ignored_names: list[str] = field(default_factory=list, metadata={"help": "node names kept in float"})
    ignored_patterns: list[str] = field(default_factory=list, metadata={"help": "regexes of node names kept "
                                                                                "in float"})
    # the ladder
    max_attempts: int = field(default=8, metadata={"help": "attempts before giving up"})
    mixed_precision_layers: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={
        "help": "mixed-precision rungs: how many of the most sensitive layers to keep float"})
    max_float_fraction: float = field(default=0.5, metadata={"help": "never keep more than this fraction of the "
                                                                     "quantised layers float"})
    sensitivity_samples: int = 64
    # speed gate and latency
    speed_gate: bool = field(default=True, metadata={"help": "keep a float variant when it is faster at "
                                                             "equal accuracy"})
    float_precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16", "fp16"],
                                        metadata={"help": "float variants the speed gate compares"})
    runtimes: list[str] | None = field(default=None, metadata={"help": "runtimes to time (default: every "
                                                                       "installed one that loads the artefact)"})
    latency_s: float = field(default=2.0, metadata={"help": "seconds of timed batch-1 runs per measurement"})
    threads: int | None = None
    version: int = CONFIG_VERSION

    def validate(self, path: str = "quantize") -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{path}.backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(self.budget, (int, float)) or not math.isfinite(self.budget):
            raise ConfigError(f"{path}.budget: must be a finite number of percentage points, got {self.budget!r}")
        for key in ("calib_samples", "batch_size", "max_attempts", "sensitivity_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{path}.{key}: must be ≥ 1, got {getattr(self, key)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"{path}.eval_limit: must be ≥ 1 (or null for the whole split), got {self.eval_limit}")
        if self.smooth_quant_alpha is not None and not 0.0 <= self.smooth_quant_alpha <= 1.0:
            raise ConfigError(f"{path}.smooth_quant_alpha: must lie in [0, 1], got {self.smooth_quant_alpha}")
        if not 0.0 < self.max_float_fraction <= 1.0:
            raise ConfigError(f"{path}.max_float_fraction: must lie in (0, 1], got {self.max_float_fraction}")
        if any(k < 1 for k in self.mixed_precision_layers):
            raise ConfigError(f"{path}.mixed_precision_layers: counts must be ≥ 1, got {self.mixed_precision_layers}")
        bad = [p for p in self.float_precisions if p not in ("fp32", "bf16", "fp16")]
        if bad or "fp32" not in self.float_precisions:
            raise ConfigError(f"{path}.float_precisions: must include fp32 and only fp32, bf16, fp16; got "
                              f"{self.float_precisions}")
        if self.latency_s <= 0:
            raise ConfigError(f"{path}.latency_s: must be positive, got {self.latency_s}")
        if self.calibration_method == "entropy" and self.backend != "onnxruntime":
            raise ConfigError(f"{path}.calibration_method: 'entropy' is offered by the onnxruntime backend only; "
                              f"NNCF ({self.backend}) estimates ranges with minmax or percentile")
        import re

        for pat in self.ignored_patterns:
            try:
                re.compile(pat)
            except re.error as exc:
                raise ConfigError(f"{path}.ignored_patterns: {pat!r} is not a valid regular expression ({exc})") \
                    from exc

    def guardrails(self) -> dict[str, bool]:
        """``{guardrail: on}`` for every guardrail of :data:`GUARDRAILS`."""
        return {"layernorm": self.guard_layernorm, "softmax": self.guard_softmax, "gelu": self.guard_gelu,
                "residual_add": self.guard_residual_add, "patch_embed": self.float_patch_embed,
                "head": self.float_head}

    def to_dict(self) -> dict:
        return asdict(self)
