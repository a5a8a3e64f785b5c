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

        self._providers_arg = providers
        so = self._session_options(ort)

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

    def _session_options(self, ort):
        """The ``SessionOptions`` of this runtime's options (threads, spinning, graph optimisation level)."""
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
        return so

    def profile_nodes(self, batch: np.ndarray, *, runs: int = 30, warmup: int = 5):
        """Per-node times of ``runs`` inferences of ``batch`` from ONNX Runtime's profiler: a second session with
        the same options and ``enable_profiling``, whose chrome-trace JSON holds one ``<node>_kernel_time`` event
        per node and run (``dur`` in µs) inside each ``model_run`` event. The session also writes its optimised
        graph, so fused nodes (``node_Slice_71/GatherSliceToSplitFusion``, ``getitem_nchwc``) are mapped to the
        source graph through their output tensors. Returns a :class:`~edgevit.profiling.layers.NodeProfile`; the
        source graph is this file's (:func:`edgevit.formats.onnx.scopes.graph_nodes`)."""
        import json
        import tempfile
        import time

        import onnxruntime as ort

        from ...profiling.layers import NodeProfile
        from .scopes import graph_nodes

        self.spec.check_batch(batch, where=f"{self.name} per-layer profile")
        if self.path is None or self.path.suffix != ".onnx":
            raise ConfigError(f"onnxruntime per-layer profiles need an .onnx file (the source graph nodes are mapped "
                              f"onto), got {self.path}; profile the .onnx it was converted from")
        with tempfile.TemporaryDirectory(prefix="edgevit-ortprof-") as tmp:
            so = self._session_options(ort)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            optimized = Path(tmp) / "optimized.onnx"
            so.optimized_model_filepath = str(optimized)
            try:
                session = ort.InferenceSession(str(self.path), sess_options=so, providers=self._providers_arg)
            except Exception as exc:  # onnxruntime raises pybind errors
                raise RuntimeLoadError(f"onnxruntime could not open {self.path} with profiling on "
                                       f"({type(exc).__name__}: {str(exc)[:300]})") from exc
            feed = {self._input_name: np.ascontiguousarray(batch)}
            for _ in range(warmup):
                session.run(None, feed)
            wall = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                session.run(None, feed)
                wall.append((time.perf_counter_ns() - t0) / 1e6)
            trace = Path(session.end_profiling())
            events = json.loads(trace.read_text())
            graph = _optimized_graph(optimized)
        nodes, trace_runs = parse_ort_trace(events, graph, skip_runs=warmup)
        if len(trace_runs) != runs:  # the wall times no longer line up with the runs: use the profiler's own
            log.warning("onnxruntime profile of %s: %d model_run events for %d timed runs", self.path,
                        len(trace_runs), runs)
        return NodeProfile(runtime=self.name, batch=int(batch.shape[0]), nodes=nodes,
                           run_ms=np.asarray(wall if len(trace_runs) == runs else trace_runs, dtype=np.float64),
                           source_graph=graph_nodes(self.path), profiler=f"onnxruntime {ort.__version__} profiler",
                           precision=_onnx_precision(self.path),
                           info={"providers": list(self.providers), "threads": self.threads,
                                 "graph_optimization": self.options.get("graph_optimization", "all")})

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


def _optimized_graph(path: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``{node name: (inputs, outputs)}`` of the graph ONNX Runtime optimised and saved (empty when it could not
    save it, e.g. nodes compiled by an execution provider)."""
    if not path.exists():
        return {}
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the optimised graph only refines the mapping
        return {}
    return {n.name: (tuple(i for i in n.input if i), tuple(n.output)) for n in model.graph.node}


def parse_ort_trace(events: list[dict], graph: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
                    *, skip_runs: int = 0):
    """``(nodes, run_ms)`` from ONNX Runtime's profiler JSON (a list of chrome-trace events): ``run_ms[r]`` the
    ``dur`` of the r-th ``model_run`` (Session category) after the first ``skip_runs``, and one
    :class:`~edgevit.profiling.layers.NodeTiming` per node with its ``<name>_kernel_time`` durations per run (µs →
    ms; ``args.op_name`` is its op type, ``args.provider`` its execution provider). ``graph`` (the optimised graph's
    ``{node: (inputs, outputs)}``) supplies the tensor names used to map fused nodes."""
    from ...profiling.layers import NodeTiming
    from ...profiling.ort_nodes import KERNEL_SUFFIX, kernels_by_run

    runs, kernels = kernels_by_run(events, skip_runs=skip_runs)
    per_node: dict[str, np.ndarray] = {}
    info: dict[str, tuple[str, str | None]] = {}
    order: list[str] = []
    for k, run in enumerate(kernels):
        for e in run:
            node = e["name"][: -len(KERNEL_SUFFIX)]
            if node not in per_node:
                per_node[node] = np.zeros(len(runs))
                args = e.get("args") or {}
                info[node] = (args.get("op_name", ""), args.get("provider"))
                order.append(node)
            per_node[node][k] += e["dur"] / 1e3
    graph = graph or {}
    nodes = []
    for node in order:
        ins, outs = graph.get(node, ((), ()))
        op, provider = info[node]
        nodes.append(NodeTiming(name=node, op_type=op, times_ms=per_node[node], exec_type=provider, keys=outs,
                                inputs=ins, outputs=outs))
    return nodes, np.array([(b - a) / 1e3 for a, b in runs])


def _onnx_precision(path: Path) -> str:
    """``int8`` for a graph with QuantizeLinear / QLinear / integer MatMul nodes, ``fp16`` when its weights are
    float16, else ``fp32``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger",
              "ConvInteger"}:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"
