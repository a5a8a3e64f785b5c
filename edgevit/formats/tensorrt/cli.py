"""``edgevit export tensorrt``: ONNX → TensorRT engine (where TensorRT exists) and/or a Jetson device bundle — the
command's declaration, with its ``--preflight`` action.

:mod:`edgevit.cli.export` builds the parser from :data:`COMMAND`; importable without torch, onnx or TensorRT (they
are imported when the command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...config import ConfigModel
from ...errors import ConfigError
from ...format_registry import ExportAction, ExportCommand


class TensorRTExportOptions(ConfigModel):
    """The flags of ``edgevit export tensorrt`` beyond the source, ``--out``, ``--preflight`` and ``--json``."""

    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="engine precision and the bundle's default (int8 = INT8 with FP16 fallback)")
    bundle: bool = Field(False, description="write the device bundle (works without TensorRT)")
    no_engine: bool = Field(False, description="do not build an engine here even if TensorRT exists")
    calib: str = Field("fashion-mnist", description="calibration data: 'fashion-mnist' or an ImageFolder directory "
                                                    "(default fashion-mnist)")
    calib_split: str = Field("train", description="split of --calib used for calibration (default train)")
    calib_samples: int = Field(300, ge=1, description="calibration images (default 300)")
    calib_method: Literal["entropy", "max", "percentile"] = Field(
        "entropy", description="how activation ranges are chosen (default entropy, like IInt8EntropyCalibrator2)")
    data_dir: str | None = Field(None, description="directory of the Fashion-MNIST IDX files")
    min_batch: int = Field(1, ge=1, description="optimisation profile: smallest batch")
    opt_batch: int = Field(1, ge=1, description="optimisation profile: batch to tune for")
    max_batch: int = Field(8, ge=1, description="optimisation profile: largest batch")
    trt_version: str = Field("10.3.0", description="the device's TensorRT version, for the calibration cache header "
                                                   "(10.3.0 = JetPack 6; build.sh re-tags it on the device anyway)")
    workspace_mib: int = Field(1024, ge=1, description="builder workspace (MiB)")
    parity_samples: int = Field(64, ge=1, description="real test images for parity checks")
    opset: int = Field(18, description="ONNX opset when exporting --model (default 18)")


def preflight(onnx: Path | None, options: TensorRTExportOptions) -> tuple[dict, str, int]:
    """``--preflight``: check the ONNX file's operators against TensorRT's supported list; returns ``(record, text,
    exit code)`` — 0 when every operator is supported, else 1. Raises ConfigError without an ONNX file."""
    if onnx is None:
        raise ConfigError("--preflight checks an ONNX file: pass its path (edgevit export tensorrt X.onnx "
                          "--preflight)")
    from .preflight import format_preflight, tensorrt_preflight

    res = tensorrt_preflight(onnx)
    return res, format_preflight(res), 0 if res["ok"] else 1


def check(model_given: bool, out: Path | None, options: TensorRTExportOptions) -> None:
    """Raise ConfigError without ``--out``, or when nothing can be produced here (no engine and no ``--bundle``);
    MissingBackendError (naming the bundle route) when an engine is asked for and TensorRT is missing."""
    if out is None:
        raise ConfigError("edgevit export tensorrt needs --out DIR (where the bundle / engine go)")
    if model_given:  # exported to ONNX here first (parity on onnxruntime), then parsed by the target TensorRT
        from ..onnx.opsets import check_opset

        check_opset(options.opset, what="--opset", runtimes=["onnxruntime", "tensorrt"],
                    trt_version=options.trt_version)
    from .spec import require_tensorrt, tensorrt_available

    have, _ = tensorrt_available()
    if not options.bundle and (options.no_engine or not have):
        if options.no_engine:
            raise ConfigError("--no-engine without --bundle leaves nothing to do; add --bundle")
        require_tensorrt("edgevit export tensorrt without --bundle (building an engine here)")


def run(source: Any, out: Path, options: TensorRTExportOptions, parity_images: Any = None) -> dict:
    """Build the engine and/or device bundle in the directory ``out`` from ``source`` (an ONNX file's Path, an
    early-exit cascade's ``manifest.json``, or a torch classifier exported to ``out`` as ONNX first with
    ``options.opset``); calibration images come from
    ``options.calib``, parity images from the test split of the same dataset (``parity_images`` is unused). Returns the
    record (bundle, calibration, preflight, engine with its parity vs ONNX, precision)."""
    from ...data import load_dataset
    from .export import export_tensorrt

    # the CLI chooses the parity data (the library takes it as an argument): the --calib dataset's test split
    parity = load_dataset(options.calib, "test", data_dir=options.data_dir, limit=options.parity_samples)
    if isinstance(source, Path) and source.name == "manifest.json":  # an early-exit cascade: one build per graph
        from ...data import calibration_subset
        from .cascade import export_tensorrt_cascade

        calib = None
        if options.precision == "int8":
            ds = load_dataset(options.calib, options.calib_split, data_dir=options.data_dir)
            calib = calibration_subset(ds, options.calib_samples)
        return export_tensorrt_cascade(source, out, precision=options.precision, bundle=options.bundle,
                                       engine=False if options.no_engine else None, calib_images=calib,
                                       calibration_method=options.calib_method, opt_batch=options.opt_batch,
                                       max_batch=options.max_batch, trt_version=options.trt_version,
                                       workspace_mib=options.workspace_mib, parity_images=parity)
    onnx_path, onnx_parity = source, None
    if not isinstance(source, Path):
        from ..onnx.export import export_onnx

        res_onnx = export_onnx(source, out, opset=options.opset, parity_images=parity,
                               parity_samples=options.parity_samples)
        onnx_path, onnx_parity = res_onnx.artifact.path, res_onnx.parity.to_dict()
    return export_tensorrt(Path(onnx_path), out, precision=options.precision, bundle=options.bundle,
                           engine=False if options.no_engine else None, calib=options.calib,
                           calib_split=options.calib_split, calib_samples=options.calib_samples,
                           calibration_method=options.calib_method, data_dir=options.data_dir,
                           min_batch=options.min_batch, opt_batch=options.opt_batch, max_batch=options.max_batch,
                           trt_version=options.trt_version, workspace_mib=options.workspace_mib,
                           onnx_parity=onnx_parity, parity_images=parity, parity_samples=options.parity_samples)


def summary(rec: dict, options: TensorRTExportOptions) -> str:
    if rec.get("kind") == "cascade":
        graphs = rec["bundle"]["graphs"] if rec["bundle"] else []
        modes = ", ".join(sorted({g["mode"] for g in graphs}))
        return (f"wrote the TensorRT bundle of the early-exit cascade {rec['bundle']['dir'] if rec['bundle'] else ''}"
                f" ({len(graphs)} graphs, {modes}, batch 1..{options.max_batch}); "
                + ("engines built here" if rec["engine"] else "on the device run build.sh (engines → engines/)"))
    parts = []
    if rec["bundle"]:
        cal = rec["calibration"]
        parts.append(f"wrote TensorRT device bundle {rec['bundle']['dir']} ({rec['precision']}; calibration cache "
                     f"{cal['tensors']} tensors, {cal['method']}, {cal['n']} real images)")
    pre = rec["preflight"]
    parts.append("preflight ok" if pre["ok"] else
                 "preflight: UNSUPPORTED " + ", ".join(u["op"] for u in pre["unsupported"]))
    if rec["engine"]:
        e = rec["engine"]
        parts.append(f"engine {e['path']} (TensorRT {e['tensorrt_version']}): max |Δ| vs ONNX "
                     f"{e['parity']['max_abs_diff']:.2e}, top-1 agreement {e['parity']['top1_agreement'] * 100:.1f}%")
    else:
        if options.no_engine:
            reason = "--no-engine"
        else:
            from .spec import tensorrt_available

            reason = f"TensorRT not installed here ({tensorrt_available()[1][:80]})"
        parts.append(f"no engine built here ({reason}); on the device run build.sh then profile.sh")
    return "; ".join(parts)


COMMAND = ExportCommand(
    name="tensorrt", source="either", options=TensorRTExportOptions, check=check, run=run, summary=summary,
    parity_data=False, out_required=False,
    action=ExportAction(flag="--preflight", run=preflight,
                        help="only check the ONNX operators against TensorRT's supported list (and INT8 fallbacks)"),
    help="ONNX → TensorRT engine (needs TensorRT) or --bundle: ONNX + INT8 calibration cache + trtexec "
         "build/profile scripts for a Jetson (needs no TensorRT)",
    description="Without TensorRT here, --bundle writes everything a Jetson needs to build and measure the "
                "engine itself (TensorRT engines must be built on the device): the ONNX file, an INT8 "
                "calibration cache computed by edgevit from real images, build.sh and profile.sh (trtexec), "
                "README.md and manifest.json with the TensorRT preflight. Where `import tensorrt` works, an "
                "engine is also built here and checked against the ONNX file on real images.",
    out_help="output directory (e.g. runs/x/trt/); required unless --preflight",
    json_help="write the record (bundle, calibration, preflight, parity) here",
)
