"""TensorRT: run a serialized engine (``.engine`` / ``.plan``) on an NVIDIA GPU with the TensorRT 10 tensor API.

The engine is deserialised with ``trt.Runtime``; each batch is copied to a CUDA tensor (device buffers come from
torch's CUDA allocator), its shape is set with ``context.set_input_shape``, the I/O addresses with
``context.set_tensor_address``, and ``context.execute_async_v3`` runs on a CUDA stream that is synchronised before
the output is copied back. Engines hold no edgevit metadata: the input spec comes from ``<engine>.spec.json``
(written by edgevit's TensorRT export and by the device bundle's ``build.sh``).

Where TensorRT is not installed (this project's CI) the runtime is listed as unavailable and loading raises
:class:`~edgevit.errors.MissingBackendError` that names the bundle route (``edgevit export tensorrt … --bundle``),
which builds and measures the engine on the device with ``trtexec`` instead.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from ...errors import ConfigError, InputSpecError, MissingBackendError, RuntimeLoadError
from ...runtimes.base import Runtime

log = logging.getLogger(__name__)

OPTIONS = ("profile",)


class TensorRTRuntime(Runtime):
    """A deserialised TensorRT engine and one execution context.

    ``device`` is ``cuda`` or ``cuda:N`` (the engine's GPU); ``threads`` is ignored. Option ``profile`` picks the
    optimisation profile (default 0). Batches outside the profile's min/max batch raise
    :class:`~edgevit.errors.InputSpecError` naming the range; ``max_batch`` holds the profile's maximum.
    """

    name: ClassVar[str] = "tensorrt"
    kinds: ClassVar[tuple[str, ...]] = ("tensorrt",)
    backend_module: ClassVar[str | None] = "tensorrt"
    extra: ClassVar[str | None] = "tensorrt"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, why = super().availability()
        if not ok:
            why = (f"{why}; without TensorRT here, `edgevit export tensorrt MODEL.onnx --bundle` builds everything "
                   f"the device needs (trtexec build.sh/profile.sh)")
        return ok, why

    def _load(self) -> None:
        from .spec import BUNDLE_ROUTE, require_tensorrt

        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ConfigError(f"tensorrt runtime: unknown option(s) {', '.join(sorted(unknown))}; allowed: device, "
                              f"{', '.join(OPTIONS)}")
        self.device = self.device if self.device and self.device != "cpu" else "cuda"
        if not self.device.startswith("cuda"):
            raise RuntimeLoadError(f"tensorrt runtime: device must be 'cuda' or 'cuda:N', got '{self.device}'")
        trt = require_tensorrt("The tensorrt runtime")
        try:
            import torch
        except ImportError as exc:
            raise MissingBackendError(f"the tensorrt runtime allocates its CUDA buffers with torch, which is not "
                                      f"installed ({exc}); on a device without torch use the bundle's trtexec "
                                      f"scripts: {BUNDLE_ROUTE}") from exc
        if not torch.cuda.is_available():
            raise RuntimeLoadError("tensorrt runtime: torch sees no CUDA GPU here (torch.cuda.is_available() is "
                                   "False); TensorRT engines run only on NVIDIA GPUs — use the device bundle")
        self._torch = torch
        self._dev = torch.device(self.device)
        path = self.artifact.path
        if path is None or not path.exists():
            raise RuntimeLoadError(f"tensorrt runtime: engine file {path} does not exist; build it first "
                                   f"(edgevit export tensorrt, or build.sh on the device)")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self._dev):
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeLoadError(
                f"TensorRT {trt.__version__} could not deserialise {path}: engines only load with the TensorRT version "
                f"and GPU they were built for. Rebuild it on this machine (edgevit export tensorrt, or build.sh)."
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise RuntimeLoadError(f"tensorrt runtime: {path} has inputs {inputs} and outputs {outputs}; edgevit runs "
                                   f"classifiers with one input")
        self._input, self._output = inputs[0], outputs[0]
        if self._input != self.spec.input_name:
            log.warning("%s: engine input is %r, the input spec says %r", path, self._input, self.spec.input_name)
        self._profile = int(self.options.get("profile", 0))
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._output)))
        shape = tuple(engine.get_tensor_shape(self._input))
        if shape and shape[0] == -1:
            lo, _, hi = engine.get_tensor_profile_shape(self._input, self._profile)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        else:
            self.min_batch = self.max_batch = int(shape[0]) if shape else 1
        self._stream = torch.cuda.Stream(device=self._dev)
        if self._profile:
            self.context.set_optimization_profile_async(self._profile, self._stream.cuda_stream)
        self.trt_version = trt.__version__

    @property
    def batch_limits(self) -> tuple[int, int | None]:
        """The optimisation profile's ``(min, max)`` batch."""
        return int(self.min_batch), int(self.max_batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        n = batch.shape[0]
        if not self.min_batch <= n <= self.max_batch:
            raise InputSpecError(f"tensorrt runtime: {self.path} was built for batches {self.min_batch}–"
                                 f"{self.max_batch}, got {n}; split the batch or rebuild with a larger max_batch")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=self._in_dtype)).to(self._dev, non_blocking=False)
        if not self.context.set_input_shape(self._input, tuple(x.shape)):
            raise InputSpecError(f"tensorrt runtime: {self.path} rejects input shape {tuple(x.shape)}")
        out_shape = tuple(self.context.get_tensor_shape(self._output))
        out = torch.empty(out_shape, dtype=getattr(torch, str(self._out_dtype)), device=self._dev)
        self.context.set_tensor_address(self._input, int(x.data_ptr()))
        self.context.set_tensor_address(self._output, int(out.data_ptr()))
        self._stream.wait_stream(torch.cuda.current_stream(self._dev))  # the copy above ran on the default stream
        if not self.context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeLoadError(f"TensorRT failed to run {self.path} on a batch of shape {batch.shape}")
        self._stream.synchronize()
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        d = super().describe()
        d.update({"min_batch": getattr(self, "min_batch", None), "max_batch": getattr(self, "max_batch", None),
                  "tensorrt_version": getattr(self, "trt_version", None)})
        return d

    def close(self) -> None:
        self.context = None
        self.engine = None
