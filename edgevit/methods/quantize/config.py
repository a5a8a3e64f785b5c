"""The quantisation config: one validated, serialisable model shared by the API, the CLI, the stage and the schema.

Importable without torch or any backend.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from ...config import ConfigModel

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


class QuantizeConfig(ConfigModel):
    """Everything :func:`edgevit.methods.quantize.quantize` can be told. Defaults are the ViT guardrails of the issue.

    One declaration: the library argument, the ``quantize`` recipe stage's keys, the ``edgevit quantize`` flags and
    the JSON schema. Bad values raise :class:`~edgevit.errors.ConfigError` naming the key (``quantize.budget: ...``).

    Accuracy gate: ``budget`` is the largest top-1 drop allowed, in percentage points, measured through the
    artefact's runtime on the evaluation set (a negative budget demands INT8 beat FP32 by that much, which no
    ladder can promise: it forces every attempt and is how the failure path is tested).
    """

    config_path: ClassVar[str] = "quantize"

    backend: Literal["openvino", "onnxruntime", "nncf-onnx"] = Field(
        "openvino", description="openvino (NNCF on the IR), onnxruntime (quantize_static, QDQ), nncf-onnx (NNCF on "
                                "the ONNX graph, QDQ)")
    budget: float = Field(1.0, allow_inf_nan=False, description="max top-1 drop vs FP32, percentage points")
    # calibration (real data only)
    calib: str = Field("fashion-mnist", description="calibration data: 'fashion-mnist' or an ImageFolder directory")
    calib_split: str = Field("train", description="calibration split")
    calib_samples: int = Field(300, ge=1, description="calibration images (class-balanced subset)")
    calib_seed: int = Field(0, description="seed of the calibration subset")
    calibration_method: Literal["minmax", "entropy", "percentile"] | None = Field(
        None, description="activation range estimator (default: the backend's; entropy only on onnxruntime)")
    # evaluation
    eval_data: str = Field("fashion-mnist", description="evaluation data for the accuracy gate: 'fashion-mnist' or "
                                                        "an ImageFolder directory")
    eval_split: str = Field("test", description="evaluation split")
    eval_limit: int | None = Field(None, ge=1, description="evaluate on the first N images only (default: the "
                                                           "whole split)")
    batch_size: int = Field(100, ge=1, description="evaluation batch size")
    # backend knobs
    preset: Literal["performance", "mixed"] = Field("performance", description="NNCF preset")
    model_type: Literal["transformer", "none"] = Field("transformer", description="NNCF model_type")
    per_channel: bool = Field(True, description="per-channel weight scales (off: per-tensor)")
    reduce_range: bool = Field(False, description="7-bit weights (onnxruntime reduce_range)")
    smooth_quant: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: try SmoothQuant on and off and keep the better; on; off")
    smooth_quant_alpha: float | None = Field(None, ge=0, le=1, description="SmoothQuant alpha for MatMuls (default: "
                                                                           "0.95 NNCF, 0.5 onnxruntime)")
    # guardrails (True keeps the op in floating point)
    guard_layernorm: bool = Field(True, description="keep LayerNorm in float")
    guard_softmax: bool = Field(True, description="keep Softmax in float")
    guard_gelu: bool = Field(True, description="keep GELU in float")
    guard_residual_add: bool = Field(True, description="keep the residual Adds in float")
    float_patch_embed: bool = Field(True, description="keep the patch embedding in float")
    float_head: bool = Field(True, description="keep the classifier head in float")
    ignored_types: list[str] = Field([], description="op types kept in float")
    ignored_names: list[str] = Field([], description="node names kept in float")
    ignored_patterns: list[str] = Field([], description="regexes of node names kept in float")
    # the ladder
    max_attempts: int = Field(8, ge=1, description="attempts before giving up")
    mixed_precision_layers: list[Annotated[int, Field(ge=1)]] = Field(
        [2, 4, 8], description="mixed-precision rungs: how many of the most sensitive layers to keep float")
    max_float_fraction: float = Field(0.5, gt=0, le=1, description="never keep more than this fraction of the "
                                                                   "quantised layers float")
    sensitivity_samples: int = Field(64, ge=1, description="calibration images for the layer sensitivity pass")
    # speed gate and latency
    speed_gate: bool = Field(True, description="keep a float variant when it is faster at equal accuracy")
    float_precisions: list[Literal["fp32", "bf16", "fp16"]] = Field(
        ["fp32", "bf16", "fp16"], description="float variants the speed gate compares (must include fp32)")
    runtimes: list[str] | None = Field(None, description="runtimes to time (default: every installed one that "
                                                         "loads the artefact)")
    latency_s: float = Field(2.0, gt=0, description="seconds of timed batch-1 runs per measurement")
    threads: int | None = Field(None, ge=1, description="runtime threads")
    version: int = Field(CONFIG_VERSION, description="config format version")

    @model_validator(mode="after")
    def _check(self):
        if "fp32" not in self.float_precisions:
            raise ValueError(f"float_precisions: must include fp32 and only fp32, bf16, fp16; got "
                             f"{self.float_precisions}")
        if self.calibration_method == "entropy" and self.backend != "onnxruntime":
            raise ValueError(f"calibration_method: 'entropy' is offered by the onnxruntime backend only; NNCF "
                             f"({self.backend}) estimates ranges with minmax or percentile")
        for pat in self.ignored_patterns:
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"ignored_patterns: {pat!r} is not a valid regular expression ({exc})") from None
        return self

    def guardrails(self) -> dict[str, bool]:
        """``{guardrail: on}`` for every guardrail of :data:`GUARDRAILS`."""
        return {"layernorm": self.guard_layernorm, "softmax": self.guard_softmax, "gelu": self.guard_gelu,
                "residual_add": self.guard_residual_add, "patch_embed": self.float_patch_embed,
                "head": self.float_head}

