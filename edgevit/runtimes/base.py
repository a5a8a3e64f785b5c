"""One interface for every runtime: load an artefact, run a numpy batch, report name, device, input spec."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from ..artifact import Artifact
from ..spec import InputSpec

log = logging.getLogger(__name__)


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

    @property
    def fixed_batch(self) -> int | None:
        """The one batch size this runtime runs (a static-batch ONNX/OpenVINO graph, a TVM library, the single-graph
        early-exit form: 1), or None when it runs any batch size in :attr:`batch_limits`. Loops over data go through
        :func:`run_batched` / :func:`run_padded`, which pad the last batch up to it and trim the result."""
        b = getattr(self, "static_batch", None)
        return int(b) if b else None

    @property
    def batch_limits(self) -> tuple[int, int | None]:
        """``(smallest, largest)`` batch size :meth:`run` accepts; largest None = no limit. ``(b, b)`` for a fixed
        batch ``b``; a TensorRT engine reports its optimisation profile's range."""
        b = self.fixed_batch
        return (b, b) if b else (1, None)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``[N, num_classes]`` (float32) for an NCHW float32 batch matching the input spec.

        ``N`` must lie in :attr:`batch_limits` (the backend raises :class:`~edgevit.errors.InputSpecError`
        otherwise); to run any number of images use :func:`run_batched`."""
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


# ------------------------------------------------------------------------------------------------ batching
# The one place that decides how a loop over data is cut into batches for a runtime: every loop (evaluation,
# parity, reference logits, quantisation measurements, profiling's batch check) goes through these, so a runtime
# with a fixed batch (or a batch range) is never handed a batch it cannot run, and a smaller last batch is padded
# and trimmed instead of failing.


def batch_size_for(runtime, requested: int | None = None, *, what: str = "batch") -> int:
    """The batch size a loop over data should use on ``runtime``: its fixed batch when it has one (whatever was
    requested; logged when that differs), else ``requested`` clipped to :attr:`Runtime.batch_limits` (64 when None).

    Raises :class:`~edgevit.errors.ConfigError` for a requested size < 1."""
    from ..errors import ConfigError

    if requested is not None and int(requested) < 1:
        raise ConfigError(f"{what} size must be ≥ 1, got {requested}")
    lo, hi = _limits(runtime)
    fixed = lo if hi == lo else None
    if fixed is not None:
        if requested is not None and int(requested) != fixed:
            log.info("%s runs batches of exactly %d: using batch size %d instead of %d (the last batch is padded)",
                     getattr(runtime, "name", "runtime"), fixed, fixed, int(requested))
        return fixed
    size = int(requested) if requested is not None else 64
    if hi is not None and size > hi:
        log.info("%s runs batches of at most %d: using batch size %d instead of %d",
                 getattr(runtime, "name", "runtime"), hi, hi, size)
        size = hi
    return max(size, lo)


def run_padded(runtime, batch: np.ndarray) -> np.ndarray:
    """``runtime.run`` on a batch of ``n`` ≤ the runtime's largest batch that may be smaller than its smallest (the
    last batch of a loop): the batch is padded with copies of its own rows up to the smallest size the runtime runs
    and the logits are trimmed back to ``[n, classes]``. Padding rows never change the real rows' results (every
    supported model treats samples independently; the early-exit If form runs batch 1 only, so never pads)."""
    n = len(batch)
    lo, _ = _limits(runtime)
    if n >= lo:
        return np.asarray(runtime.run(batch))
    return np.asarray(runtime.run(pad_batch(batch, lo)))[:n]


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` (``[n, ...]``, 1 ≤ n ≤ size) padded to ``[size, ...]`` with copies of its own rows, cyclically
    (real data, so the padding cannot overflow or trip a check); the caller trims the result to ``[:n]``. Raises
    ValueError for an empty batch."""
    n = len(batch)
    if n == 0:
        raise ValueError("pad_batch: empty batch")
    if n >= size:
        return np.ascontiguousarray(batch)
    return np.ascontiguousarray(np.concatenate([batch, np.take(batch, np.arange(size - n) % n, axis=0)]))


def iter_chunks(n: int, size: int):
    """``(start, stop)`` bounds cutting ``n`` items into consecutive chunks of ``size`` (the last may be smaller)."""
    for a in range(0, n, size):
        yield a, min(a + size, n)


def run_batched(runtime, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Logits ``[N, classes]`` of ``runtime`` for any number ``N`` of preprocessed images ``[N, C, H, W]``, in
    batches of :func:`batch_size_for` (``runtime``, ``batch_size``), the last one padded and trimmed
    (:func:`run_padded`)."""
    size = batch_size_for(runtime, batch_size)
    return np.concatenate([run_padded(runtime, np.ascontiguousarray(images[a:b])) for a, b in
                           iter_chunks(len(images), size)])


def _limits(runtime) -> tuple[int, int | None]:
    lim = getattr(runtime, "batch_limits", None)
    if lim is None:  # a plain callable or a foreign object: no limits known
        return 1, None
    lo, hi = lim
    return int(lo or 1), (int(hi) if hi else None)
