"""OpenVINO runtime: OpenVINO IR (``.xml`` + ``.bin``) and ``.onnx`` files, compiled for CPU (or GPU/NPU/AUTO).

Options a user tunes (each maps to one OpenVINO property; what the compiled model actually uses is read back
and reported by :meth:`OpenVinoRuntime.describe`, because OpenVINO silently adjusts some requests):

========== ======================================= =======================================================
option     OpenVINO property                       values
========== ======================================= =======================================================
threads    ``INFERENCE_NUM_THREADS``               ≥ 1 (None: OpenVINO's choice, all physical cores)
hint       ``PERFORMANCE_HINT``                    ``latency`` (default) | ``throughput`` | None
precision  ``INFERENCE_PRECISION_HINT``            ``f32`` (default) | ``bf16`` | ``f16`` | ``default``
                                                   (default for an IR that records one: the file's, below)
config     anything else (a dict passed as is)     e.g. ``{"NUM_STREAMS": 2}``
shapes     (how a dynamic-batch IR is compiled)    ``static`` (default) | ``dynamic``
========== ======================================= =======================================================

Why ``precision="f32"`` by default: OpenVINO's CPU plugin runs in bf16 by default on CPUs that have it (AMX
or AVX512-BF16, e.g. the Zen 4 cores here), which changes the logits by ~1e-2 relative. edgevit compares every
runtime with its parent, so the default computes what the file says; pass ``precision="bf16"`` (or
``"default"`` for OpenVINO's own choice) to trade accuracy for speed, and read ``describe()["compiled"]`` for
what was used (``f16`` on a CPU without fp16 arithmetic becomes bf16 or f32).

Why ``shapes="static"`` by default: edgevit exports IRs with a dynamic batch dimension, and OpenVINO's CPU plugin
runs a dynamic-shape model through shape-agnostic kernels with per-call shape inference — measured 10–13% slower
at batch 1 on DeiT-Tiny here than the same IR reshaped to a static ``[1, 3, 224, 224]``. With ``static`` the
runtime runs a shape on the dynamic compile until it has been asked for it :data:`STATIC_AFTER` times, then compiles
the IR reshaped to exactly that shape (that call pays the compile; the profiler's warm-up absorbs it) and uses that
from then on, keeping the :data:`MAX_STATIC_SHAPES` most recently used. One-off shapes (a last partial batch, the
shrinking batches of an early-exit cascade) never cost a compile. ``dynamic`` compiles the IR as it is, once. An IR
whose batch is already fixed is unaffected.

An IR may record the precision it was validated in: ``edgevit quantize`` writes rt_info
``edgevit/inference_precision`` = ``bf16`` into an INT8 IR when its speed gate measured "INT8 with the float
leftovers (LayerNorm, Softmax, GELU) in bf16" as the fastest variant within the accuracy budget. Without a
``precision`` option the runtime then uses the file's precision (``describe()["precision_source"]`` says
``file``); an explicit ``precision`` always wins. C++ consumers read the same key with
``model->get_rt_info<std::string>("edgevit", "inference_precision")``.

``device`` is an edgevit device name (``cpu``) or an OpenVINO one (``CPU``, ``GPU``, ``GPU.1``, ``NPU``,
``AUTO``, ``AUTO:GPU,CPU``, ``HETERO:GPU,CPU`` …). A device that is not in ``Core().available_devices``
raises :class:`RuntimeLoadError` listing those that are.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import ConfigError, InputSpecError, RuntimeLoadError
from ...runtimes.base import Runtime

log = logging.getLogger(__name__)

OPTIONS = ("hint", "precision", "config", "shapes")
SHAPES = ("static", "dynamic")
MAX_STATIC_SHAPES = 4  # compiled batch sizes kept by a shapes="static" runtime (least recently used dropped)
CHUNK = 10  # runs per per-layer measurement chunk (the counters' running totals are read before and after each)
STATIC_AFTER = 3  # calls with one shape before a shapes="static" runtime compiles a static copy for it
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16", "default": None}
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")  # meta-devices that are never listed as available
READ_BACK = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "NUM_STREAMS",
             "EXECUTION_DEVICES", "OPTIMAL_NUMBER_OF_INFER_REQUESTS")
# rt_info paths (ov.Model.set_rt_info / get_rt_info) where edgevit's OpenVINO exporter stores its metadata
RT_SPEC = ["edgevit", "input_spec"]
RT_SOURCE = ["edgevit", "source"]
RT_PRECISION = ["edgevit", "inference_precision"]  # the precision the file was validated in (edgevit quantize)


def recorded_precision(model: Any) -> str | None:
    """The inference precision an IR records in its rt_info (``edgevit/inference_precision``), or None."""
    if not model.has_rt_info(RT_PRECISION):
        return None
    value = str(model.get_rt_info(RT_PRECISION).astype(str)).strip().lower()
    return value if value in PRECISIONS else None


def record_precision(path: str | Path, precision: str) -> None:
    """Write ``precision`` into the rt_info of the IR at ``path`` (rewrites the .xml/.bin pair in place)."""
    import openvino as ov

    key = str(precision).lower()
    if key not in PRECISIONS or PRECISIONS[key] is None:
        raise ConfigError(f"record_precision: {precision!r} is not one of f32, bf16, f16")
    path = Path(path)
    core = ov.Core()
    model = read_model(core, path)
    model.set_rt_info(PRECISIONS[key], RT_PRECISION)
    tmp = path.with_name(path.stem + ".tmp.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)


def ov_device(device: str | None) -> str:
    """The OpenVINO device name for an edgevit one: ``cpu`` → ``CPU``, ``gpu.1`` → ``GPU.1``; others unchanged."""
    if not device:
        return "CPU"
    head, sep, rest = str(device).partition(":")
    return head.upper() + sep + rest


def check_bin(path: Path) -> None:
    """Raise :class:`RuntimeLoadError` when the weights file next to an IR ``.xml`` is missing."""
    path = Path(path)
    if path.suffix == ".xml" and not path.with_suffix(".bin").exists():
        raise RuntimeLoadError(
            f"OpenVINO IR {path} has no weights: {path.with_suffix('.bin').name} is missing next to it. An IR is "
            f"two files (.xml graph + .bin weights) that must be copied together; re-export it with "
            f"`edgevit export openvino` (or edgevit.formats.openvino.export.export_openvino)."
        )


def read_model(core: Any, path: str | Path) -> Any:
    """``core.read_model(path)`` with edgevit's errors: missing ``.bin``, unreadable or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise RuntimeLoadError(f"OpenVINO: {path} does not exist; export the model first (edgevit export openvino)")
    check_bin(path)
    try:
        return core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ traces
        import openvino as ov

        raise RuntimeLoadError(
            f"OpenVINO {ov.get_version()} could not read {path} ({type(exc).__name__}: {_first_line(exc)}). The file "
            f"may be truncated or corrupt, or written by a newer OpenVINO; re-export it (edgevit export openvino)."
        ) from exc


def read_ir_metadata(path: str | Path) -> dict:
    """``{"edgevit.input_spec": json, "edgevit.source": name}`` from an IR's rt_info (written by the exporter).

    Registered as the ``openvino`` entry of :data:`edgevit.runtimes.METADATA_READERS`, so
    ``open_artifact("model.xml")`` knows the model's input spec. Keys that are absent are left out.
    """
    from ..._optional import require
    from ...spec import SOURCE_KEY, SPEC_KEY

    ov = require("openvino", extra="openvino", feature="reading OpenVINO IR metadata")
    model = read_model(ov.Core(), path)
    out = {}
    for key, rt_path in ((SPEC_KEY, RT_SPEC), (SOURCE_KEY, RT_SOURCE)):
        if model.has_rt_info(rt_path):
            out[key] = model.get_rt_info(rt_path).astype(str)
    return out


def _first_line(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (they start with 'Exception from src/…' lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))] or lines
    return (useful[0] if useful else type(exc).__name__)[:300]


def _plain(value: Any) -> Any:
    """A JSON-able form of an OpenVINO property value (Type → 'f32', enums → their name)."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    if hasattr(value, "name") and not isinstance(value, (str, bytes)):
        return str(value.name)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


class OpenVinoRuntime(Runtime):
    """An OpenVINO compiled model over an IR or ONNX file, with one synchronous infer request.

    See the module docstring for the options (``threads``, ``hint``, ``precision``, ``config``) and devices.
    ``describe()["compiled"]`` holds the properties read back from the compiled model (inference precision,
    threads, hint, streams, execution devices).
    """

    name: ClassVar[str] = "openvino"
    kinds: ClassVar[tuple[str, ...]] = ("openvino", "onnx")
    backend_module: ClassVar[str | None] = "openvino"
    extra: ClassVar[str | None] = "openvino"

    def _load(self) -> None:
        from ..._optional import require

        ov = require("openvino", extra="openvino", feature="the OpenVINO runtime")
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ConfigError(f"openvino runtime: unknown option(s) {', '.join(sorted(unknown))}; "
                              f"allowed: device, threads, {', '.join(OPTIONS)}")
        self.device = self.device or "cpu"
        self.ov_device = ov_device(self.device)
        path = self.artifact.path
        if path is None:
            raise RuntimeLoadError("openvino runtime: the artefact has no file; export it first "
                                   "(edgevit export openvino, or export_onnx)")

        self.core = core = ov.Core()
        self._check_device(core)
        model = read_model(core, path)
        self.file_precision = recorded_precision(model)
        config = self._compile_config()
        if len(model.inputs) != 1 or not model.outputs:
            raise RuntimeLoadError(f"openvino runtime: {path} has {len(model.inputs)} inputs and "
                                   f"{len(model.outputs)} outputs; edgevit runs single-input classifiers")
        self.shapes = str(self.options.get("shapes", "static")).lower()
        if self.shapes not in SHAPES:
            raise ConfigError(f"openvino runtime: shapes '{self.options.get('shapes')}' is not one of "
                              f"{', '.join(SHAPES)}")
        self.model, self.compile_config = model, config
        self.compiled = self._compile(model)
        self.request = self.compiled.create_infer_request()
        self._by_shape: OrderedDict[tuple, Any] = OrderedDict()
        self._seen: dict[tuple, int] = {}
        inp = self.compiled.inputs[0]
        names = inp.get_names()
        if self.spec.input_name not in names:
            log.warning("%s: graph input is named %s but the input spec says %r; feeding the first input",
                        path, sorted(names), self.spec.input_name)
        pshape = inp.get_partial_shape()
        dim0 = pshape[0] if pshape.rank.is_static and len(pshape) else None
        self.static_batch = dim0.get_length() if dim0 is not None and dim0.is_static else None
        if Path(path).suffix == ".onnx" and self.static_batch is None:
            # the single-graph early-exit form runs batch 1 only (an If takes one branch for the whole batch), also
            # when an older export left its batch dynamic
            from ..cascade.spec import IF_FORM_KEY as FORM_KEY
            from ..onnx.runtime import read_onnx_metadata

            if read_onnx_metadata(Path(path)).get(FORM_KEY) == "if":
                self.static_batch = 1
        self.specialise = self.shapes == "static" and not pshape.is_static
        self.compiled_properties = self._read_back()
        self._warn_if_adjusted(config)

    def _compile(self, model: Any) -> Any:
        try:
            return self.core.compile_model(model, self.ov_device, self.compile_config)
        except Exception as exc:  # OpenVINO raises RuntimeError for unsupported ops, bad properties, device failures
            raise RuntimeLoadError(
                f"OpenVINO could not compile {self.path} for device {self.ov_device} with {self.compile_config} "
                f"({type(exc).__name__}: {_first_line(exc)}). Try device='CPU', precision='f32', shapes='dynamic', "
                f"or drop the option that the message names; re-export the model if it names an operator."
            ) from exc

    def compile_static(self, shape) -> None:
        """Compile the IR for exactly ``shape`` now (shapes="static" on a dynamic IR; otherwise nothing to do), so
        the first batches of that shape do not pay for it: a cascade whose deep graphs run rarely, a service that
        knows its batch size."""
        if not self.specialise:
            return
        shape = tuple(int(v) for v in shape)
        self._seen[shape] = max(self._seen.get(shape, 0), STATIC_AFTER - 1)
        self._request_for(shape)

    def _request_for(self, shape: tuple) -> Any:
        """The infer request for a batch of ``shape`` (shapes="static" on a dynamic IR): the dynamic compile until the
        shape has been seen :data:`STATIC_AFTER` times, then the IR compiled for exactly that shape."""
        req = self._by_shape.get(shape)
        if req is not None:
            self._by_shape.move_to_end(shape)
            return req
        seen = self._seen[shape] = self._seen.get(shape, 0) + 1
        if seen < STATIC_AFTER:
            return self.request
        model = self.model.clone()
        try:
            model.reshape({model.inputs[0]: list(shape)})
        except Exception as exc:
            raise InputSpecError(f"{self.name} runtime: {self.path} cannot be reshaped to {list(shape)} "
                                 f"({type(exc).__name__}: {_first_line(exc)})") from exc
        req = self._compile(model).create_infer_request()
        self._by_shape[shape] = req
        if len(self._by_shape) > MAX_STATIC_SHAPES:
            dropped, _ = self._by_shape.popitem(last=False)
            self._seen[dropped] = 0
        log.debug("openvino runtime: compiled %s for static shape %s", self.path, list(shape))
        return req

    # -------------------------------------------------------------------------------------------- options

    def _check_device(self, core: Any) -> None:
        available = list(core.available_devices)
        head = self.ov_device.split(":")[0]
        if head in VIRTUAL_DEVICES:
            return  # AUTO / MULTI / HETERO / BATCH pick among the real devices themselves
        base = head.split(".")[0]
        if head not in available and base not in available and base not in [a.split(".")[0] for a in available]:
            raise RuntimeLoadError(
                f"openvino runtime: device '{self.device}' (OpenVINO name '{self.ov_device}') is not available here. "
                f"Available OpenVINO devices: {', '.join(available) or '(none)'} (plus AUTO, which picks among them). "
                f"GPU needs Intel's OpenCL driver and NPU its driver; use device='CPU' otherwise."
            )

    def _compile_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.threads is not None:
            if int(self.threads) < 1:
                raise ConfigError(f"openvino runtime: threads must be ≥ 1 (or None for OpenVINO's default), "
                                  f"got {self.threads}")
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        hint = self.options.get("hint", "latency")
        if hint is not None:
            if str(hint).lower() not in HINTS:
                raise ConfigError(f"openvino runtime: hint '{hint}' is not one of {', '.join(HINTS)} (or None)")
            config["PERFORMANCE_HINT"] = HINTS[str(hint).lower()]
        if "precision" in self.options:
            precision, self.precision_source = self.options["precision"], "option"
        elif getattr(self, "file_precision", None):
            precision, self.precision_source = self.file_precision, "file"
        else:
            precision, self.precision_source = "f32", "default"
        key = str(precision).lower() if precision is not None else "default"
        if key not in PRECISIONS:
            raise ConfigError(f"openvino runtime: precision '{precision}' is not one of f32, bf16, f16, default")
        self.requested_precision = PRECISIONS[key]
        if self.requested_precision is not None:
            config["INFERENCE_PRECISION_HINT"] = self.requested_precision
        extra = self.options.get("config") or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"openvino runtime: config must be a dict of OpenVINO properties, got {type(extra).__name__}")
        config.update(extra)
        return config

    def _read_back(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for key in READ_BACK:
            try:
                props[key] = _plain(self.compiled.get_property(key))
            except Exception:  # a device plugin need not support every property  # noqa: BLE001
                log.debug("openvino: compiled model on %s has no property %s", self.ov_device, key)
        return props

    def _warn_if_adjusted(self, config: dict[str, Any]) -> None:
        used = self.compiled_properties.get("INFERENCE_PRECISION_HINT")
        if self.requested_precision and used and used != self.requested_precision:
            log.warning("openvino runtime: asked for %s inference precision on %s, the compiled model uses %s "
                        "(this device has no native %s support)", self.requested_precision, self.ov_device, used,
                        self.requested_precision)
        threads = self.compiled_properties.get("INFERENCE_NUM_THREADS")
        if "INFERENCE_NUM_THREADS" in config and threads not in (None, config["INFERENCE_NUM_THREADS"]):
            log.warning("openvino runtime: asked for %s threads, the compiled model uses %s",
                        config["INFERENCE_NUM_THREADS"], threads)

    # ---------------------------------------------------------------------------------------------- run

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.static_batch is not None and batch.shape[0] != self.static_batch:
            raise InputSpecError(
                f"{self.name} runtime: {self.path} has a fixed batch size of {self.static_batch}, got a batch of "
                f"{batch.shape[0]}; run batches of {self.static_batch} or re-export with dynamic_batch=True"
            )
        req = self._request_for(batch.shape) if self.specialise else self.request
        try:
            req.infer({0: batch}, share_inputs=True)
            out = req.get_output_tensor(0).data
        except Exception as exc:  # OpenVINO raises RuntimeError
            raise RuntimeLoadError(f"OpenVINO failed to run {self.path} on a batch of shape {batch.shape} "
                                   f"({type(exc).__name__}: {_first_line(exc)}); re-export the model") from exc
        return np.array(out, dtype=np.float32, copy=True)

    def profile_nodes(self, batch: np.ndarray, *, runs: int = 30, warmup: int = 5):
        """Per-node times of ``runs`` inferences of ``batch`` from OpenVINO's performance counters: the model is
        compiled again with this runtime's config plus ``PERF_COUNT`` (reshaped to the batch's static shape when the
        runtime would do so); ``request.profiling_info`` gives every executed node's ``real_time``, its kernel
        (``exec_type``, e.g. ``brgemm_avx512_amx_bf16``: the precision actually used) and type. The CPU plugin's
        ``real_time`` is the node's running average over every inference of the compiled model so far, in whole
        microseconds (measured with OpenVINO 2026.4), so per-node times are taken per chunk of :data:`CHUNK` runs
        from the change of the running totals (average × count) across the chunk; each chunk is one entry of the
        profile's times, its wall time the chunk's mean. The compiled model's runtime graph (``get_runtime_model()``) names the original layers fused into
        each node (rt_info ``originalLayersNames``) and its ``runtimePrecision``. The source graph is the ONNX file's
        nodes for a ``.onnx`` (:func:`edgevit.formats.onnx.scopes.graph_nodes`), else the IR's
        (:func:`ir_graph_nodes`). Returns a :class:`~edgevit.profiling.layers.NodeProfile`."""
        import time

        from ...profiling.layers import NodeProfile, NodeTiming

        self.spec.check_batch(batch, where=f"{self.name} per-layer profile")
        model = self.model
        if self.specialise:
            model = model.clone()
            model.reshape({model.inputs[0]: list(batch.shape)})
        config = {**self.compile_config, "PERF_COUNT": True}
        try:
            compiled = self.core.compile_model(model, self.ov_device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError
            raise RuntimeLoadError(f"OpenVINO could not compile {self.path} with PERF_COUNT on {self.ov_device} "
                                   f"({type(exc).__name__}: {_first_line(exc)})") from exc
        req = compiled.create_infer_request()
        x = np.ascontiguousarray(batch)
        done = 0  # inferences of this compiled model so far: the counters average over all of them

        def totals() -> dict[str, float]:
            """Each executed node's total time (ms) over the ``done`` inferences: its running average × count."""
            out = {}
            for info in req.profiling_info:
                if str(info.status).rsplit(".", 1)[-1] == "EXECUTED":
                    out[info.node_name] = info.real_time.total_seconds() * 1e3 * done
                    kinds.setdefault(info.node_name, (info.node_type, info.exec_type))
            return out

        kinds: dict[str, tuple[str, str]] = {}
        for _ in range(max(1, warmup)):
            req.infer({0: x}, share_inputs=True)
            done += 1
        before = totals()
        chunks = [min(CHUNK, runs - k) for k in range(0, runs, CHUNK)]
        per_node: dict[str, np.ndarray] = {}
        wall = np.zeros(len(chunks))
        for c, n in enumerate(chunks):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                req.infer({0: x}, share_inputs=True)
            wall[c] = (time.perf_counter_ns() - t0) / 1e6 / n
            done += n
            after = totals()
            for name, total in after.items():
                per_node.setdefault(name, np.zeros(len(chunks)))[c] = max(0.0, total - before.get(name, 0.0)) / n
            before = after
        runtime_graph = _runtime_graph(compiled)
        for name, g in runtime_graph.items():  # nodes that did not run still connect the graph for the mapping
            if name not in per_node and g["type"] not in ("Input", "Output", "Const"):
                per_node[name] = np.zeros(len(chunks))
                kinds[name] = (g["type"], None)
        nodes = []
        for name, times in per_node.items():
            g = runtime_graph.get(name, {})
            op, exec_type = kinds[name]
            nodes.append(NodeTiming(name=name, op_type=op, times_ms=times, exec_type=exec_type,
                                    precision=g.get("precision"), keys=g.get("originals", ()),
                                    inputs=g.get("inputs", ()), outputs=g.get("outputs", ())))
        order = {name: k for k, name in enumerate(runtime_graph)}
        nodes.sort(key=lambda n: order.get(n.name, len(order)))
        if Path(self.path).suffix == ".onnx":
            from ..onnx.scopes import graph_nodes

            source = graph_nodes(self.path)
        else:
            source = ir_graph_nodes(self.model)
        used = _plain(compiled.get_property("INFERENCE_PRECISION_HINT"))
        label = {"f32": "fp32", "f16": "fp16"}.get(str(used), str(used))  # the names edgevit's other runtimes use
        int8 = any(o.get_type_name() == "FakeQuantize" for o in self.model.get_ordered_ops())
        import openvino as ov

        return NodeProfile(runtime=self.name, batch=int(batch.shape[0]), nodes=nodes, run_ms=wall,
                           source_graph=source, profiler=f"OpenVINO {ov.get_version()} PERF_COUNT (CPU plugin counters)",
                           precision=f"int8+{label}" if int8 else label,
                           info={"ov_device": self.ov_device, "inference_precision": used, "int8": int8,
                                 "threads": _plain(compiled.get_property("INFERENCE_NUM_THREADS")),
                                 "static_shape": list(batch.shape) if self.specialise else None})

    @property
    def inference_precision(self) -> str | None:
        """The precision the compiled model computes in ('f32', 'bf16', 'f16'), as read back from OpenVINO."""
        return self.compiled_properties.get("INFERENCE_PRECISION_HINT")

    def describe(self) -> dict:
        d = super().describe()
        d["ov_device"] = self.ov_device
        d["requested"] = {"threads": self.threads, "hint": self.options.get("hint", "latency"),
                          "precision": self.requested_precision, "config": dict(self.options.get("config") or {}),
                          "shapes": getattr(self, "shapes", None)}
        d["static_shapes_compiled"] = [list(k) for k in getattr(self, "_by_shape", {})]
        d["compiled"] = dict(self.compiled_properties)
        d["inference_precision"] = self.inference_precision
        d["precision_source"] = getattr(self, "precision_source", None)
        d["file_precision"] = getattr(self, "file_precision", None)
        d["threads"] = self.compiled_properties.get("INFERENCE_NUM_THREADS", self.threads)
        try:
            d["device_name"] = str(self.core.get_property(self.ov_device.split(":")[0], "FULL_DEVICE_NAME"))
        except Exception:  # virtual devices (AUTO, HETERO) have no single device name  # noqa: BLE001
            d["device_name"] = None
        return d

    def close(self) -> None:
        self.request = None
        self.compiled = None
        self.model = None
        self._by_shape = OrderedDict()


def _runtime_graph(compiled: Any) -> dict[str, dict]:
    """``{node name: {originals, precision, inputs, outputs}}`` of a compiled model's runtime graph, in execution
    order: the original layers fused into each node (rt_info ``originalLayersNames``), its ``runtimePrecision``, and
    input/output ids ``"<producer>:<port>"`` for mapping nodes through their neighbours."""
    out: dict[str, dict] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()

        def get(key: str, _rt=rt) -> str:
            return str(_rt[key].astype(str)) if key in _rt else ""

        name = op.get_friendly_name()
        out[name] = {
            "originals": tuple(v for v in get("originalLayersNames").split(",") if v),
            "precision": get("runtimePrecision") or None,
            "type": get("layerType"),
            "inputs": tuple(f"{v.get_node().get_friendly_name()}:{v.get_index()}" for v in
                            (op.input_value(i) for i in range(op.get_input_size()))),
            "outputs": tuple(f"{name}:{k}" for k in range(op.get_output_size())),
        }
    return out


def ir_graph_nodes(model: Any):
    """The ops of an ``ov.Model`` as :class:`~edgevit.profiling.layers.GraphNode` (friendly names, types, tensors
    ``"<op>:<port>"``), in topological order; module paths come from the names (OpenVINO's torch frontend writes
    ``__module.blocks.0.attn.qkv/aten::linear/MatMul``), not from the graph."""
    from ...profiling.layers import GraphNode

    nodes = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        name = op.get_friendly_name()
        nodes.append(GraphNode(name=name, op_type=op.get_type_name(),
                               inputs=tuple(f"{v.get_node().get_friendly_name()}:{v.get_index()}"
                                            for v in (op.input_value(i) for i in range(op.get_input_size()))),
                               outputs=tuple(f"{name}:{k}" for k in range(op.get_output_size()))))
    return nodes
