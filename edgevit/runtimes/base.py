"""One interface for every runtime: load an artefact, run a numpy batch, report name, device, input spec."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from ..artifact import Artifact
from ..spec import InputSpec


class Runtime(ABC):
    """A loaded artefact ready to run.

    Subclasses set ``name``, ``kinds`` (artefact kinds they load), ``backend_module`` and ``extra`` (the module
    that must import and the pip extra that installs it) and implement ``_load`` and ``_run``.
    ``run`` checks the batch against the input spec before calling ``_run``.

    A runtime is a context manager: ``with load_runtime(artifact, "onnxruntime") as rt: ...`` releases the backend
    session (:meth:`close`) when the block ends, also on errors.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    backend_module: ClassVar[str | None] = None
    extra: ClassVar[str | None] = None

    def __init__(self, artifact: Artifact, *, device: str = "cpu", threads: int | None = None, **options):
        self.artifact = artifact
        self.device = device
        self.threads = threads
        self.options = options
        self._load()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """``(True, version)`` when the backend imports here, else ``(False, why)``."""
        if cls.backend_module is None:
            return True, ""
        try:
            import importlib

            mod = importlib.import_module(cls.backend_module)
            return True, str(getattr(mod, "__version__", ""))
        except Exception as exc:  # noqa: BLE001 - any import failure means unavailable
            fix = f"pip install 'edgevit[{cls.extra}]'" if cls.extra else "a core dependency: reinstall edgevit"
            return False, f"{type(exc).__name__}: {exc} ({fix})"

    @property
    def spec(self) -> InputSpec:
        return self.artifact.spec

    @property
    def path(self) -> Path | None:
        return self.artifact.path

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``[N, num_classes]`` (float32) for an NCHW float32 batch matching the input spec."""
        self.spec.check_batch(batch, where=f"{self.name} runtime")
        return self._run(np.ascontiguousarray(batch))

    def describe(self) -> dict:
        """Name, device, threads, backend version and options, for stamping measurements."""
        ok, version = self.availability()
        return {"runtime": self.name, "device": self.device, "threads": self.threads,
                "backend_version": version if ok else None, "options": dict(self.options)}

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:
        """Release backend resources (sessions, compiled models, device memory). Subclasses that hold any override
        this; calling it twice is harmless. The runtime must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
