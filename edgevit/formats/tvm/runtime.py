"""TVM runtime: a ``.so`` library written by :func:`edgevit.formats.tvm.export.export_tvm`, run through Relax's VM.

Loading reads the export metadata next to the library (``model.so.tvm.json``) and first checks that this machine
can run the code: same architecture, every SIMD feature the build target's CPU may use (``required_isa_features``,
compared with ``/proc/cpuinfo``), a GPU for ``cuda`` libraries. A mismatch raises :class:`RuntimeLoadError`
naming the build target and this host — before TVM loads the library, since code for another CPU dies with SIGILL
rather than an exception. Only then does it load the library (through a unique file name, so a library
re-exported to the same path in this process is really reloaded) and start a ``relax.VirtualMachine`` on it.
Needs the TVM runtime only (no torch).

A library is compiled for one batch size (``batch`` in its metadata, also ``static_batch`` here); another batch
raises :class:`InputSpecError` saying which batch it was built for. ``batch: null`` marks a library with a symbolic
batch (a graph of a TVM cascade, ``cascade_graph: true``, whose input is tokens rather than images): it runs any
batch of its compiled ``input_shape``. ``threads`` sizes TVM's thread pool
(process-wide, like TVM_NUM_THREADS).
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import ConfigError, InputSpecError, RuntimeLoadError
from ...runtimes.base import Runtime

log = logging.getLogger(__name__)


def read_tvm_metadata(path: str | Path) -> dict:
    """The export metadata of a TVM library (``<library>.tvm.json``); RuntimeLoadError when missing or invalid."""
    from .spec import FORMAT, metadata_path

    meta_path = metadata_path(path)
    if not meta_path.exists():
        raise RuntimeLoadError(
            f"{path} has no export metadata ({meta_path.name} is missing next to it), so edgevit cannot tell which "
            f"CPU and batch size it was built for. Re-export it with `edgevit export tvm` (or export_tvm), which "
            f"writes the metadata, and keep {meta_path.name} next to the library."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeLoadError(f"TVM metadata {meta_path} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "target" not in meta or "batch" not in meta:
        raise RuntimeLoadError(f"{meta_path} is not edgevit TVM export metadata (needs format '{FORMAT}', target, "
                               f"batch); re-export the model with `edgevit export tvm`")
    return meta


def check_host(meta: dict, path: str | Path) -> None:
    """Raise :class:`RuntimeLoadError` when this machine cannot run the library described by ``meta``."""
    from .target import describe_target, host_info, incompatibility

    why = incompatibility(meta)
    if why is None:
        return
    target = meta.get("target") or {}
    build = meta.get("build_host") or {}
    host = host_info()
    this = (f"{host.get('cpu_model_name') or 'unknown CPU'} ({host.get('machine') or platform.machine()}"
            + (f", LLVM cpu {host['llvm_cpu']}" if host.get("llvm_cpu") else "") + ")")
    built_on = build.get("cpu_model_name") or build.get("llvm_cpu") or "another machine"
    source = meta.get("source") or "<model>"
    raise RuntimeLoadError(
        f"{path} was built for {describe_target(target)} (on {built_on}) and cannot run on this machine, {this}: "
        f"{why}. Re-export it here with `edgevit export tvm --model {source} --target llvm` (detects this CPU), or "
        f"for a portable x86 library `--mcpu x86-64-v3` (any AVX2 CPU); a cached tuning database is reused when "
        f"the target matches."
    )


def _load_library(tvm, path: Path):
    """``tvm.runtime.load_module`` through a fresh file name.

    dlopen hands back an already loaded library for a name it has seen, so a library re-exported to the same path
    in this process (a second export with more trials, say) would silently keep running the old code. Loading a
    hard link (or copy) with a unique name, removed right after, always maps the file as it is now.
    """
    import os
    import shutil
    import tempfile
    import uuid

    alias = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.so")
    tmpdir = None
    try:
        try:
            os.link(path, alias)
        except OSError:  # read-only folder or no hard links: a private copy
            tmpdir = Path(tempfile.mkdtemp(prefix="edgevit-tvm-"))
            alias = tmpdir / path.name
            shutil.copy2(path, alias)
        return tvm.runtime.load_module(str(alias))
    finally:
        alias.unlink(missing_ok=True)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


class TvmRuntime(Runtime):
    """Runs a TVM library's ``main`` in a ``relax.VirtualMachine`` on the CPU (or a GPU for cuda builds)."""

    name: ClassVar[str] = "tvm"
    kinds: ClassVar[tuple[str, ...]] = ("tvm",)
    backend_module: ClassVar[str | None] = "tvm"
    extra: ClassVar[str | None] = "tvm"

    def _load(self) -> None:
        if self.options:
            raise ConfigError(f"tvm runtime: unknown option(s) {', '.join(sorted(self.options))}; it takes device "
                              f"and threads only")
        path = self.artifact.path
        if path is None or not Path(path).exists():
            raise RuntimeLoadError(f"tvm runtime: library {path} does not exist; export the model first "
                                   f"(edgevit export tvm)")
        self.meta = read_tvm_metadata(path)
        check_host(self.meta, path)
        # None: a symbolic batch (the graphs of a TVM cascade, edgevit.formats.tvm.cascade) runs any batch size
        self.static_batch = None if self.meta["batch"] is None else int(self.meta["batch"])
        shape = self.meta.get("input_shape")
        self.input_shape = tuple(shape[1:]) if shape else None
        if shape and not self.meta.get("cascade_graph") and tuple(shape[1:]) != tuple(self.spec.input_size):
            raise RuntimeLoadError(f"tvm runtime: {path} was compiled for inputs {tuple(shape[1:])} but the input "
                                   f"spec says {tuple(self.spec.input_size)}; re-export the model")

        from ..._optional import require

        tvm = require("tvm", extra="tvm", feature="the TVM runtime")
        from tvm import relax

        kind = (self.meta.get("target") or {}).get("kind", "llvm")
        if kind == "cuda":
            index = int(self.device.split(":")[1]) if self.device and self.device.startswith("cuda:") else 0
            self._dev = tvm.cuda(index)
            if not self._dev.exist:
                raise RuntimeLoadError(f"tvm runtime: {path} was built for CUDA but TVM sees no GPU {index} here "
                                       f"(TVM {tvm.__version__}, CUDA enabled: {tvm.runtime.enabled('cuda')})")
            self.device = f"cuda:{index}"
        else:
            if self.device and self.device.split(":")[0] != "cpu":
                raise RuntimeLoadError(f"tvm runtime: {path} is a CPU library (target {kind}); use device='cpu', or "
                                       f"export for the GPU with --target cuda")
            self._dev = tvm.cpu()
            self.device = "cpu"
        if self.threads is not None:
            if int(self.threads) < 1:
                raise ConfigError(f"tvm runtime: threads must be ≥ 1, got {self.threads}")
            tvm.get_global_func("runtime.config_threadpool")(1, int(self.threads))
        try:
            lib = _load_library(tvm, Path(path))
            self._vm = relax.VirtualMachine(lib, self._dev)
            self._main = self._vm["main"]
        except Exception as exc:  # TVM raises RuntimeError/TVMError from C++ (dlopen, missing symbols, …)
            raise RuntimeLoadError(
                f"TVM {tvm.__version__} could not load {path} ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}). It may be truncated, or built "
                f"by another TVM version ({self.meta.get('tvm_version')}); re-export it with this TVM."
            ) from exc
        self._tvm = tvm

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.input_shape is not None and tuple(batch.shape[1:]) != self.input_shape:
            raise InputSpecError(f"{self.name} runtime: {self.path} was compiled for inputs [n, "
                                 f"{', '.join(map(str, self.input_shape))}], got {list(batch.shape)}")
        if self.static_batch is not None and batch.shape[0] != self.static_batch:
            raise InputSpecError(
                f"{self.name} runtime: {self.path} was compiled for batch size {self.static_batch} (TVM libraries "
                f"have a static shape), got a batch of {batch.shape[0]}. Run batches of exactly {self.static_batch}: "
                f"edgevit.runtimes.run_batched(runtime, images) pads the last one (edgevit eval and profile do this "
                f"for you), or re-export with --batch {batch.shape[0]}."
            )
        try:
            out = self._main(self._tvm.runtime.tensor(batch, device=self._dev))
        except Exception as exc:  # TVM raises from C++
            raise RuntimeLoadError(f"TVM failed to run {self.path} on a batch of shape {batch.shape} "
                                   f"({type(exc).__name__}: {str(exc)[:300]})") from exc
        if not hasattr(out, "numpy"):  # a tuple of outputs: the first holds the logits
            out = out[0]
        return np.asarray(out.numpy(), dtype=np.float32)

    def run_inputs(self, *arrays: np.ndarray) -> np.ndarray:
        """The library's ``main`` on several inputs (a text tower's ``input_ids`` and ``attention_mask``, exported
        with ``example_inputs``), each checked against the shape and dtype recorded in the metadata; returns the
        first output as float32. Raises :class:`InputSpecError` naming the expected shapes."""
        want = self.meta.get("inputs") or []
        got = [(list(a.shape), str(a.dtype)) for a in arrays]
        if [(w["shape"], w["dtype"]) for w in want] != got:
            raise InputSpecError(f"{self.name} runtime: {self.path} takes inputs "
                                 f"{[(w['shape'], w['dtype']) for w in want]} (static shapes), got {got}")
        try:
            out = self._main(*[self._tvm.runtime.tensor(np.ascontiguousarray(a), device=self._dev) for a in arrays])
        except Exception as exc:  # TVM raises from C++
            raise RuntimeLoadError(f"TVM failed to run {self.path} on inputs {got} ({type(exc).__name__}: "
                                   f"{str(exc)[:300]})") from exc
        if not hasattr(out, "numpy"):
            out = out[0]
        return np.asarray(out.numpy(), dtype=np.float32)

    def describe(self) -> dict:
        d = super().describe()
        meta = getattr(self, "meta", {}) or {}
        d.update({"static_batch": getattr(self, "static_batch", None), "target": meta.get("target"),
                  "tuning_status": (meta.get("tuning") or {}).get("status")})
        return d

    def close(self) -> None:
        self._main = None
        self._vm = None
