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

    def describe(self) -> dict:
        d = super().describe()
        d["threads"] = self.threads if self.threads is not None else self._torch.get_num_threads()
        return d

    def close(self) -> None:
        self._model = None
