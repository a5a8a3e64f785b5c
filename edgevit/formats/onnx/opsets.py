"""The ONNX opsets edgevit can write: one check for every path that exports ONNX (``edgevit export onnx``, the
``export_onnx`` recipe stage, ORT-mobile and TensorRT exports from a model, early-exit cascade segments).

The range is the exporter's, not onnx's own newest opset (28 with onnx 1.23, which torch cannot produce):

- ``dynamo`` (torch.export-based; also ``auto``, which tries it first): from :data:`MIN_OPSET` to the newest opset
  onnxscript's version converter can reach (``SUPPORTED_MAX_ONNX_OPSET``, 25 with onnxscript 0.7);
- ``torchscript``: from :data:`MIN_OPSET` to the newest opset torch's TorchScript symbolics know
  (``torch.onnx._constants.ONNX_MAX_OPSET``, 23 with torch 2.14);

each capped by the installed onnx's newest opset (what its checker can validate).

The target runtimes have their own ceiling (:func:`runtime_max_opset`), checked by ``check_opset(...,
runtimes=[...])``:

- ``onnxruntime`` (and ORT Mobile): read from the installed library: the highest ``since_version`` of its ai.onnx
  CPU kernels (``onnxruntime.capi._pybind_state.get_all_opkernel_def()``; 28 with onnxruntime 1.32);
- ``openvino``: its ONNX frontend's ``LATEST_SUPPORTED_ONNX_OPSET_VERSION`` (openvino
  src/frontends/onnx/frontend/src/version_range.hpp: the ``ONNX_OPSET_VERSION`` of the onnx it is built with; above
  it ``OperatorsBridge::get_operator_set`` only warns "operator set version N is unsupported. Falling back to" and
  converts with older operator semantics). No Python API exposes the number, so it is read from the installed
  frontend library: the newest ``OpSet_Onnx_verN`` schema set it registers (27 with openvino 2026.4);
- ``tensorrt``: TensorRT's ONNX parser, from onnx-tensorrt's documented per-release statement (:data:`TENSORRT_OPSETS`),
  keyed by the target TensorRT version (the Jetson bundle's ``trt_version``, default 10.3.0 = JetPack 6).

Other runtimes (torch, tvm, cascade) do not load ONNX opsets this way and are not checked.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

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


# TensorRT's ONNX parser: newest ai.onnx opset per TensorRT release, as onnx-tensorrt's docs/operators.md states it
# in the edition shipped with that release (https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md, read
# through its git history: "TensorRT 8.5 supports operators up to Opset 17", "TensorRT 10.0 supports operators in the
# inclusive range of opset 9 to opset 20"); 10.15 from the edition transcribed in
# edgevit/formats/tensorrt/data/tensorrt_onnx_ops.yaml ("opset 9 to opset 24"). A version between two editions gets
# the older edition's number (documented, conservative): 10.3 (JetPack 6) -> 20. Add a row with each TensorRT release.
TENSORRT_OPSETS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((7, 2), 13), ((8, 0), 13), ((8, 2), 13), ((8, 4), 17), ((8, 5), 17), ((8, 6), 17), ((9, 0), 19), ((9, 1), 19), ((9, 2), 19),
    ((9, 3), 19),
    ((10, 0), 20), ((10, 15), 24),
)
TENSORRT_OPSETS_SOURCE = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"
DEFAULT_TRT_VERSION = "10.3.0"
ONNX_RUNTIMES = ("onnxruntime", "ort-mobile", "openvino", "tensorrt")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", str(version))[:3]
    if not parts:
        raise ConfigError(f"TensorRT version {version!r} is not a version number (e.g. 10.3.0)")
    return tuple(int(p) for p in parts)


@functools.lru_cache(maxsize=1)
def _onnxruntime_max() -> tuple[int, str] | None:
    try:
        import onnxruntime
        from onnxruntime.capi import _pybind_state as C

        kernels = C.get_all_opkernel_def()
    except (ImportError, AttributeError):
        return None
    hi = max((k.version_range[0] for k in kernels if k.domain in ("", "ai.onnx")
              and k.provider == "CPUExecutionProvider"), default=None)
    if hi is None:
        return None
    return int(hi), f"onnxruntime {onnxruntime.__version__} (its ai.onnx CPU kernels are registered up to opset {hi})"


@functools.lru_cache(maxsize=1)
def _openvino_max() -> tuple[int, str] | None:
    try:
        import openvino
    except ImportError:
        return None
    libs = sorted(Path(openvino.__file__).resolve().parent.glob("libs/*openvino_onnx_frontend*"))
    libs += sorted(Path(openvino.__file__).resolve().parent.parent.glob("openvino*libs/*openvino_onnx_frontend*"))
    found = []
    for lib in libs:
        try:
            found += [int(v) for v in re.findall(rb"OpSet_Onnx_ver(\d+)E", lib.read_bytes())]
        except OSError:
            continue
    if not found:
        return None
    hi = max(found)
    return hi, (f"openvino {openvino.__version__.split('-')[0]} (its ONNX frontend's newest operator set; above it "
                f"the frontend falls back to opset {hi} semantics)")


def tensorrt_max_opset(trt_version: str = DEFAULT_TRT_VERSION) -> tuple[int, str]:
    """``(newest opset, where the number comes from)`` for TensorRT ``trt_version``'s ONNX parser
    (:data:`TENSORRT_OPSETS`)."""
    want = _version_tuple(trt_version)
    rows = [(v, hi) for v, hi in TENSORRT_OPSETS if v <= want]
    if not rows:
        oldest = ".".join(map(str, TENSORRT_OPSETS[0][0]))
        raise ConfigError(f"TensorRT {trt_version} is older than the oldest release edgevit knows the ONNX opsets of "
                          f"({oldest}); target TensorRT 8.5 or newer")
    v, hi = max(rows)
    edition = ".".join(map(str, v))
    return hi, (f"TensorRT {trt_version}'s ONNX parser (the TensorRT {edition} edition of onnx-tensorrt's "
                f"operators.md, {TENSORRT_OPSETS_SOURCE})")


def runtime_max_opset(runtime: str, *, trt_version: str = DEFAULT_TRT_VERSION) -> tuple[int, str] | None:
    """``(newest ai.onnx opset, where the number comes from)`` that ``runtime`` can run, or None when the runtime
    does not load ONNX opsets (torch, tvm, cascade) or is not installed (see the module doc)."""
    if runtime in ("onnxruntime", "ort-mobile"):
        return _onnxruntime_max()
    if runtime == "openvino":
        return _openvino_max()
    if runtime == "tensorrt":
        return tensorrt_max_opset(trt_version)
    return None


def check_opset(opset, *, exporter: str = "auto", what: str = "ONNX opset", runtimes=(),
                trt_version: str = DEFAULT_TRT_VERSION) -> int:
    """``opset`` as an int, or :class:`ConfigError` naming the supported range of ``exporter`` — or the first of
    ``runtimes`` that cannot run it, with its newest opset and the version that number comes from (see module doc).

    ``what`` names the setting in the message (``--opset``, ``stages.1.opset``); ``trt_version`` is the target
    TensorRT version when ``runtimes`` holds ``tensorrt``."""
    lo, hi, who = opset_range(exporter)
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise ConfigError(f"{what} must be an integer from {lo} (LayerNormalization) to {hi}, got {opset!r}: "
                          f"{hi} is the newest opset {who} can write (exporter '{exporter}'); opset 18 is the "
                          f"default")
    for rt in runtimes:
        found = runtime_max_opset(rt, trt_version=trt_version)
        if found is not None and opset > found[0]:
            rt_max, source = found
            raise ConfigError(f"{what}: runtime '{rt}' runs ONNX opsets up to {rt_max}, got {opset}: {rt_max} is the "
                              f"newest opset of {source}; choose an opset from {lo} to {rt_max} for {rt} "
                              f"(18 is the default)")
    return opset
