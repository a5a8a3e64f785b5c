"""TensorRT: serialized engines (``.engine``/``.plan``) built here where TensorRT exists, or a device bundle.

The spec holds what the runtime and the exporter share: the bundle route named in every missing-TensorRT error,
and the availability check.
"""

from __future__ import annotations

from ...errors import ConfigError, MissingBackendError
from ...format_registry import FormatSpec

SPEC = FormatSpec(
    name="tensorrt", kind="tensorrt", suffixes=(".engine", ".plan"),
    description="TensorRT engine (or a Jetson build bundle: ONNX + INT8 calibration cache + trtexec scripts)",
    exporter="edgevit.formats.tensorrt.export:export_tensorrt",
    runtimes={"tensorrt": "edgevit.formats.tensorrt.runtime:TensorRTRuntime"},
    stage="edgevit.formats.tensorrt.stage",
    cli="edgevit.formats.tensorrt.cli:COMMAND",
)

BUNDLE_FORMAT = "edgevit-tensorrt-bundle"  # the "format" field of a device bundle's manifest.json

BUNDLE_ROUTE = ("`edgevit export tensorrt <model.onnx> --bundle --out DIR` (or the export_tensorrt stage with "
                "bundle: true) produces everything the device needs without TensorRT here: the ONNX file, an INT8 "
                "calibration cache computed from real data, build.sh (trtexec) and profile.sh")


def tensorrt_available() -> tuple[bool, str]:
    """``(True, version)`` when the TensorRT Python package imports here, else ``(False, why)``."""
    try:
        import tensorrt as trt

        return True, str(getattr(trt, "__version__", ""))
    except Exception as exc:  # noqa: BLE001 - the PyPI stub raises at import when its libraries are missing
        return False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"


def require_tensorrt(feature: str = "Building a TensorRT engine"):
    """The ``tensorrt`` module, or :class:`MissingBackendError` that names the bundle route."""
    try:
        import tensorrt as trt

        return trt
    except Exception as exc:
        raise MissingBackendError(
            f"{feature} needs NVIDIA TensorRT's Python package 'tensorrt', which is not installed here or failed to "
            f"import ({type(exc).__name__}: {str(exc)[:200]}). Install TensorRT (pip install 'edgevit[tensorrt]' on "
            f"a machine with an NVIDIA GPU and NVIDIA's package index, or JetPack on a Jetson) — or use the bundle "
            f"route, which needs no TensorRT here: {BUNDLE_ROUTE}."
        ) from exc


def plan_build(*, bundle: bool, engine: bool | None, what: str) -> tuple[bool, str, bool]:
    """``(TensorRT importable, its version or why not, build the engine(s) here)`` for an export with ``bundle`` and
    ``engine`` (None: build where TensorRT is installed). Raises :class:`ConfigError` when neither is asked for and
    :class:`MissingBackendError` (via :func:`require_tensorrt`) when an engine must be built without TensorRT."""
    have_trt, trt_info = tensorrt_available()
    build_here = have_trt if engine is None else bool(engine)
    if not bundle and not build_here:
        if engine is False:
            raise ConfigError("nothing to do: bundle=False and engine=False; pass --bundle (or engine=True)")
        require_tensorrt(f"Building {what} (edgevit export tensorrt without --bundle)")
    if build_here:
        require_tensorrt(f"Building {what} (engine=True)")
    return have_trt, trt_info, build_here
