"""The ONNX opsets edgevit can write: one check for every path that exports ONNX (``edgevit export onnx``, the
``export_onnx`` recipe stage, ORT-mobile and TensorRT exports from a model, early-exit cascade segments).

The range is the exporter's, not onnx's own newest opset (28 with onnx 1.23, which torch cannot produce):

- ``dynamo`` (torch.export-based; also ``auto``, which tries it first): from :data:`MIN_OPSET` to the newest opset
  onnxscript's version converter can reach (``SUPPORTED_MAX_ONNX_OPSET``, 25 with onnxscript 0.7);
- ``torchscript``: from :data:`MIN_OPSET` to the newest opset torch's TorchScript symbolics know
  (``torch.onnx._constants.ONNX_MAX_OPSET``, 23 with torch 2.14);

each capped by the installed onnx's newest opset (what its checker can validate).
"""

from __future__ import annotations

from ...errors import ConfigError

MIN_OPSET = 17  # LayerNormalization


def _torch_max(exporter: str) -> tuple[int, str]:
    if exporter == "torchscript":
        try:
            from torch.onnx import _constants

            return int(_constants.ONNX_MAX_OPSET), "torch's TorchScript ONNX exporter"
        except (ImportError, AttributeError):  # pragma: no cover - private module moved
            return 20, "torch's TorchScript ONNX exporter"
    try:
        from onnxscript.version_converter import _version_converter as vc

        return int(vc.SUPPORTED_MAX_ONNX_OPSET), "torch's dynamo ONNX exporter (onnxscript version converter)"
    except (ImportError, AttributeError):  # pragma: no cover - onnxscript without the constant
        return 23, "torch's dynamo ONNX exporter"


def opset_range(exporter: str = "auto") -> tuple[int, int, str]:
    """``(lowest, highest, who limits the highest)`` opset the ``exporter`` (``auto``/``dynamo``/``torchscript``)
    can write here."""
    hi, who = _torch_max(exporter)
    try:
        import onnx

        onnx_max = int(onnx.defs.onnx_opset_version())
    except ImportError:  # pragma: no cover - onnx is a core dependency
        onnx_max = hi
    if onnx_max < hi:
        hi, who = onnx_max, "the installed onnx"
    return MIN_OPSET, hi, who


def check_opset(opset, *, exporter: str = "auto", what: str = "ONNX opset") -> int:
    """``opset`` as an int, or :class:`ConfigError` naming the supported range of ``exporter`` (see module doc).

    ``what`` names the setting in the message (``--opset``, ``stages.1.opset``)."""
    lo, hi, who = opset_range(exporter)
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise ConfigError(f"{what} must be an integer from {lo} (LayerNormalization) to {hi}, got {opset!r}: "
                          f"{hi} is the newest opset {who} can write (exporter '{exporter}'); opset 18 is the "
                          f"default")
    return opset
