"""The reference runtime: the artefact's torch model in eager mode under ``torch.inference_mode()``."""

from __future__ import annotations

import copy
import logging
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, RuntimeLoadError
from .base import Runtime

log = logging.getLogger(__name__)


class TorchRuntime(Runtime):
    """Runs a torch artefact eagerly. ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    ``threads`` sets ``torch.set_num_threads`` (a process-wide setting; re-applied before each run when
    something else changed it). On CUDA the model is copied to the GPU (the artefact's own model stays where
    it is) and every ``run`` synchronises before returning, so timers around ``run`` measure the full call.
    Models returning a tuple/list (e.g. early-exit heads) give their first output; dicts their ``"logits"``.
    """

    name: ClassVar[str] = "torch"
    kinds: ClassVar[tuple[str, ...]] = ("torch",)
    backend_module: ClassVar[str | None] = "torch"
    extra: ClassVar[str | None] = None  # torch is a core dependency

    def _load(self) -> None:
        import torch

        if self.options:
            raise ConfigError(f"torch runtime: unknown option(s) {', '.join(sorted(self.options))}; "
                              f"it takes device and threads only")
        self.device = self.device or "cpu"
        try:
            self._device = torch.device(self.device)
        except RuntimeError as exc:
            raise RuntimeLoadError(f"torch runtime: invalid device '{self.device}' ({exc}); use 'cpu' or 'cuda[:N]'") from exc
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeLoadError(f"torch runtime: device '{self.device}' requested but CUDA is not available here "
                                   f"(torch {torch.__version__}); use device='cpu'")
        if self._device.type not in ("cpu", "cuda"):
            raise RuntimeLoadError(f"torch runtime: device '{self.device}' is not supported; use 'cpu' or 'cuda[:N]'")
        if self.threads is not None:
            if int(self.threads) < 1:
                raise ConfigError(f"torch runtime: threads must be ≥ 1, got {self.threads}")
            torch.set_num_threads(int(self.threads))
        model = self.artifact.load_model()
        params = list(model.parameters())
        current = params[0].device if params else torch.device("cpu")
        if current != self._device and not (current.type == self._device.type == "cuda" and self._device.index is None):
            model = copy.deepcopy(model).to(self._device)
        if model.training:
            log.warning("torch runtime: the model was in training mode; running a copy in eval mode")
            model = copy.deepcopy(model).eval()
        self._model = model
        self._dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
        self._torch = torch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self.threads is not None and torch.get_num_threads() != int(self.threads):
            torch.set_num_threads(int(self.threads))
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device, dtype=self._dtype)
            out = self._model(x)
            if isinstance(out, dict):
                out = out["logits"] if "logits" in out else next(iter(out.values()))
            elif isinstance(out, (tuple, list)):
                out = out[0]
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            return out.float().cpu().numpy()

    def profile_nodes(self, batch: np.ndarray, *, runs: int = 30, warmup: int = 5):
        """Per-module times of ``runs`` forward passes of ``batch`` with ``torch.profiler``: forward pre-/post-hooks
        open and close a ``record_function`` range named after each module where the model's structure changes
        part (:func:`edgevit.profiling.layers.profiled_modules`: every block, its attention / MLP / norms, the patch
        embedding, the final norm and head), and each run sits in one more range. A module's time is its range
        minus the ranges nested in it (a block keeps its residual adds and layer scales); what the model's own
        ``forward`` does outside every module (class token, position embedding, token select) and Python's overhead
        is the run's range minus its top-level module ranges: a node with no module, reported as unmapped.
        Returns a :class:`~edgevit.profiling.layers.NodeProfile` (no source graph: the nodes are the modules)."""
        import os
        import time

        from ..profiling.layers import NodeProfile, NodeTiming, nested_exclusive, profiled_modules

        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no "gpuGetDeviceCount failed" from the profiler on a CPU host
        torch = self._torch
        self.spec.check_batch(batch, where=f"{self.name} per-layer profile")
        names = profiled_modules([n for n, _ in self._model.named_modules() if n])
        modules = dict(self._model.named_modules())
        stack: list = []
        handles = []

        def pre(name):
            def hook(_m, _a):
                rf = torch.profiler.record_function(f"edgevit::{name}")
                rf.__enter__()
                stack.append(rf)
            return hook

        def post(_m, _a, _o):
            stack.pop().__exit__(None, None, None)

        for name in names:
            handles.append(modules[name].register_forward_pre_hook(pre(name)))
            handles.append(modules[name].register_forward_hook(post))
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device, dtype=self._dtype)
        wall = np.zeros(runs)
        try:
            with torch.inference_mode():
                for _ in range(warmup):
                    self._model(x)
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for r in range(runs):
                        t0 = time.perf_counter_ns()
                        with torch.profiler.record_function(f"edgevit::run{r}"):
                            self._model(x)
                            if self._device.type == "cuda":
                                torch.cuda.synchronize(self._device)
                        wall[r] = (time.perf_counter_ns() - t0) / 1e6
        finally:
            for h in handles:
                h.remove()
        ranges = [(e.name[len("edgevit::"):], e.time_range.start, e.time_range.end) for e in prof.events()
                  if e.name.startswith("edgevit::")]
        per_run = nested_exclusive(ranges, runs)
        order = ["", *names]
        nodes = [NodeTiming(name=n or "(model forward outside submodules)",
                            op_type=type(modules[n]).__name__ if n else type(self._model).__name__,
                            times_ms=per_run.get(n, np.zeros(runs)), scope=n or None,
                            exec_type=None, precision=str(self._dtype).replace("torch.", ""))
                 for n in order]
        return NodeProfile(runtime=self.name, batch=int(batch.shape[0]), nodes=nodes, run_ms=wall, source_graph=None,
                           profiler=f"torch {torch.__version__} torch.profiler (record_function per module)",
                           precision=str(self._dtype).replace("torch.", "").replace("float32", "fp32"),
                           info={"threads": torch.get_num_threads(), "device": str(self._device)})

    def describe(self) -> dict:
        d = super().describe()
        d["threads"] = self.threads if self.threads is not None else self._torch.get_num_threads()
        return d

    def close(self) -> None:
        self._model = None
