"""ONNX Runtime: ``.onnx`` and ``.ort`` files on CPU, CUDA or TensorRT execution providers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import ConfigError, InputSpecError, RuntimeLoadError
from ...runtimes.base import Runtime

log = logging.getLogger(__name__)

# option value → onnxruntime.GraphOptimizationLevel member
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
OPTIONS = ("graph_optimization", "inter_op_threads", "provider_options", "spinning")


def providers_for(device: str) -> list[str]:
    """Execution providers, in preference order, for an edgevit device name ('cpu', 'cuda[:N]', 'tensorrt')."""
    kind = device.split(":")[0]
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if kind == "tensorrt":
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise RuntimeLoadError(f"onnxruntime runtime: unknown device '{device}'; use 'cpu', 'cuda', 'cuda:N' or 'tensorrt'")


class OnnxRuntime(Runtime):
    """An ``onnxruntime.InferenceSession`` over the artefact's file.

    Options: ``threads`` (intra-op threads; None lets onnxruntime choose), ``inter_op_threads``,
    ``graph_optimization`` (``disable`` | ``basic`` | ``extended`` | ``all``, default ``all``) and
    ``provider_options`` (a dict for the first provider, e.g. ``{"trt_fp16_enable": True}``) and ``spinning``
    (False stops idle worker threads from spinning; the early-exit cascade sets it).
    ``device`` picks the execution providers: ``cpu`` → CPU; ``cuda[:N]`` → CUDA (CPU for unsupported nodes);
    ``tensorrt`` → TensorRT with CUDA and CPU fallback. A provider missing from this onnxruntime build raises
    :class:`RuntimeLoadError` naming the providers that exist here.
    """

    name: ClassVar[str] = "onnxruntime"
    kinds: ClassVar[tuple[str, ...]] = ("onnx", "ort")
    backend_module: ClassVar[str | None] = "onnxruntime"
    extra: ClassVar[str | None] = None  # onnxruntime is a core dependency

    def _load(self) -> None:
        import onnxruntime as ort

        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ConfigError(f"onnxruntime runtime: unknown option(s) {', '.join(sorted(unknown))}; "
                              f"allowed: device, threads, {', '.join(OPTIONS)}")
        self.device = self.device or "cpu"
        path = self.artifact.path
        if path is None or not path.exists():
            raise RuntimeLoadError(f"onnxruntime runtime: artefact file {path} does not exist; export the model first")

        wanted = providers_for(self.device)
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise RuntimeLoadError(
                f"onnxruntime runtime: device '{self.device}' needs {wanted[0]}, which this onnxruntime "
                f"{ort.__version__} build does not have. Providers here: {', '.join(available)}. Use device='cpu', or "
                f"install a build with that provider (onnxruntime-gpu for CUDA/TensorRT)."
            )
        providers: list = [p for p in wanted if p in available]
        first_opts = dict(self.options.get("provider_options") or {})
        if ":" in self.device:
            first_opts.setdefault("device_id", int(self.device.split(":")[1]))
        if first_opts:
            providers[0] = (providers[0], first_opts)
        if wanted[0] == "TensorrtExecutionProvider" and len(providers) > 1 and ":" in self.device:
            providers[1] = (providers[1], {"device_id": first_opts["device_id"]})

        so = ort.SessionOptions()
        if self.threads is not None:
            if int(self.threads) < 0:
                raise ConfigError(f"onnxruntime runtime: threads must be ≥ 0 (0 = onnxruntime's default), got {self.threads}")
            so.intra_op_num_threads = int(self.threads)
        if self.options.get("inter_op_threads") is not None:
            so.inter_op_num_threads = int(self.options["inter_op_threads"])
        if self.options.get("spinning") is not None:
            # idle worker threads spin for a while after each run by default: right for one model called in a loop,
            # wrong when several sessions take turns (an early-exit cascade), where the idle ones steal the cores
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.options["spinning"] else "0")
        level = self.options.get("graph_optimization", "all")
        if level not in GRAPH_OPTIMIZATION_LEVELS:
            raise ConfigError(f"onnxruntime runtime: graph_optimization '{level}' is not one of "
                              f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION_LEVELS[level])
        so.log_severity_level = 3  # errors only; warnings go through our messages

        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises pybind errors (InvalidProtobuf, Fail, …)
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise RuntimeLoadError(
                f"onnxruntime {ort.__version__} could not load {path} ({type(exc).__name__}: {msg}). The file may be "
                f"corrupt or truncated, or use an operator/opset this onnxruntime does not support: re-export it "
                f"(edgevit export, or export_onnx(..., opset=17/18))."
            ) from exc
        active = self.session.get_providers()
        if wanted[0] not in active:
            raise RuntimeLoadError(
                f"onnxruntime runtime: {wanted[0]} is installed but did not start for {path} (active providers: "
                f"{', '.join(active)}); check the CUDA/TensorRT libraries onnxruntime needs, or use device='cpu'."
            )
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = self.session.get_outputs()[0].name
        if inp.name != self.spec.input_name:
            log.warning("%s: graph input is named %r but the input spec says %r; feeding %r", path, inp.name,
                        self.spec.input_name, inp.name)
        dim0 = inp.shape[0] if inp.shape else None
        self.static_batch = dim0 if isinstance(dim0, int) else None
        self.providers = active
        self._early_exit_form(path)

    def _early_exit_form(self, path) -> None:
        """The single-graph early-exit form (metadata ``edgevit.early_exit_form=if``) runs batch 1 only, also when an
        older export left its batch dynamic; its ``edgevit_exit`` output (when present) is counted per exit in
        ``exit_counts`` (``[exits + 1]``, the last = the final head), as the cascade runtime does."""
        from ..cascade.spec import IF_EXIT_OUTPUT as EXIT_OUTPUT
        from ..cascade.spec import IF_FORM_KEY as FORM_KEY

        self.exit_counts = None
        self._exit_output = None
        self.early_exit_if = False
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get(FORM_KEY) != "if":
            return
        if self.static_batch not in (None, 1):
            raise RuntimeLoadError(f"onnxruntime runtime: {path} is the early-exit If form (batch 1 only: an If takes "
                                   f"one branch for the whole batch) but declares batch {self.static_batch}; "
                                   f"rebuild it with build_if_graph")
        self.static_batch = 1
        self.early_exit_if = True
        names = [o.name for o in self.session.get_outputs()]
        if EXIT_OUTPUT in names:
            self._exit_output = EXIT_OUTPUT
            n_exits = len([v for v in meta.get("edgevit.thresholds", "").split(",") if v.strip()])
            self.exit_counts = np.zeros(n_exits + 1, dtype=np.int64)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.static_batch is not None and batch.shape[0] != self.static_batch:
            if self.early_exit_if:
                raise InputSpecError(
                    f"{self.name} runtime: {self.path} is the single-graph early-exit form, which runs one image at a "
                    f"time (its If nodes take one branch for the whole batch), got a batch of {batch.shape[0]}; run "
                    f"batch 1 (edgevit.runtimes.run_batched does), or use the segment cascade (manifest.json) for "
                    f"batches")
            raise InputSpecError(
                f"{self.name} runtime: {self.path} was exported with a fixed batch size of {self.static_batch}, got a "
                f"batch of {batch.shape[0]}; run batches of {self.static_batch} (edgevit.runtimes.run_batched pads "
                f"the last one) or re-export with dynamic_batch=True (`edgevit export onnx` without --static-batch)"
            )
        try:
            if self._exit_output is not None:
                out, ex = self.session.run([self._output_name, self._exit_output], {self._input_name: batch})
                self.exit_counts += np.bincount(np.asarray(ex, dtype=np.int64).ravel(),
                                                minlength=len(self.exit_counts))[:len(self.exit_counts)]
            else:
                out = self.session.run([self._output_name], {self._input_name: batch})[0]
        except Exception as exc:  # onnxruntime raises pybind errors
            raise RuntimeLoadError(
                f"onnxruntime failed to run {self.path} on a batch of shape {batch.shape} "
                f"({type(exc).__name__}: {str(exc)[:300]}); re-export the model or try graph_optimization='basic'"
            ) from exc
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> dict:
        d = super().describe()
        d["providers"] = list(getattr(self, "providers", []))
        return d

    def close(self) -> None:
        self.session = None


def read_onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises its own, OS errors…
        raise RuntimeLoadError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}: {str(exc)[:200]}); it may be truncated or "
            f"corrupt. Re-export it (edgevit export, or edgevit.formats.onnx.export.export_onnx)."
        ) from exc
    return {p.key: p.value for p in model.metadata_props}


def read_ort_metadata(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind error types
        raise RuntimeLoadError(
            f"{path} is not a readable ORT-format model ({type(exc).__name__}: {str(exc)[:200]}); re-convert it "
            f"from the ONNX file"
        ) from exc
    return dict(sess.get_modelmeta().custom_metadata_map)
