"""The cascade runtime: run an exported early-exit cascade (``manifest.json``) with per-sample exit.

Registered as runtime ``cascade`` for artefacts of kind ``cascade`` (a file named ``manifest.json``). The segments
and heads run on a backend runtime — ``onnxruntime``, ``openvino``, ``tvm`` (one library per graph, symbolic batch)
or ``tensorrt`` (engines built on the device), or any registered runtime that loads the graphs' files — given as
``backend=`` (``edgevit eval --artifact .../manifest.json --runtime openvino`` passes it through
:func:`edgevit.runtimes.load_runtime`); by default the manifest's own (``onnx`` → onnxruntime, ``openvino`` →
openvino, ``tvm`` → tvm, ``tensorrt`` → tensorrt). Other options go to the backend (``precision``, ``hint``,
``graph_optimization`` …), and ``thresholds=`` / ``criterion=`` override the manifest's.

``run(batch)`` returns the logits of each sample's exit; :meth:`CascadeRuntime.run_with_exits` also returns the exit
index (``K`` = final head). Exited samples leave the batch: later segments run only on the rest. Heads whose
threshold never fires are skipped. The decision is :func:`edgevit.formats.cascade.thresholds.exit_mask` (float64), the
same function the torch model uses. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...artifact import Artifact
from ...errors import ConfigError, RuntimeLoadError
from ...format_registry import kind_of_path
from ...runtimes.base import Runtime
from .spec import GRAPH_BACKENDS, MANIFEST_FORMAT
from .thresholds import active_heads, check_thresholds, exit_mask

log = logging.getLogger(__name__)

DEFAULT_BACKEND = GRAPH_BACKENDS
OWN_OPTIONS = ("backend", "thresholds", "criterion")


def read_manifest(path: str | Path) -> dict:
    """The parsed manifest, validated: format, segments/exits consistent, every named file present."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.exists():
        raise RuntimeLoadError(f"early-exit manifest {path} does not exist; export the cascade first "
                               f"(edgevit early-exit export RUN_DIR --out DIR)")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeLoadError(f"{path} is not valid JSON ({exc}); re-export the cascade") from exc
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise RuntimeLoadError(f"{path} is not an edgevit early-exit manifest (format "
                               f"{m.get('format') if isinstance(m, dict) else None!r}, expected {MANIFEST_FORMAT!r})")
    for key in ("segments", "exits", "input_spec", "thresholds", "criterion"):
        if key not in m:
            raise RuntimeLoadError(f"{path}: the manifest has no '{key}' entry; re-export the cascade")
    segs, exits = m["segments"], m["exits"]
    if len(segs) != len(exits) + 1 or not exits:
        raise RuntimeLoadError(f"{path}: a cascade needs one more segment than exits (and at least one exit); the "
                               f"manifest lists {len(segs)} segments and {len(exits)} exits")
    for i, e in enumerate(exits):
        if e.get("after_segment") != i:
            raise RuntimeLoadError(f"{path}: exit '{e.get('name')}' follows segment {e.get('after_segment')}, expected "
                                   f"{i} (exits must be listed in order, one after each segment but the last)")
    for what, entry in [("segment", s) for s in segs] + [("exit head", e) for e in exits]:
        f = entry.get("file")
        if f and f.endswith(".engine") and not (path.parent / f).exists():
            raise RuntimeLoadError(f"{path}: the TensorRT engine {f} of {what} '{entry.get('name')}' is not built yet; "
                                   f"engines are built on the device: run the bundle's build.sh there first")
        if not f or not (path.parent / f).exists():
            raise RuntimeLoadError(f"{path}: the manifest names {what} '{entry.get('name')}' with file {f!r}, which "
                                   f"does not exist in {path.parent}; copy the whole export folder, or re-export")
        if f.endswith(".xml") and not (path.parent / f).with_suffix(".bin").exists():
            raise RuntimeLoadError(f"{path}: {what} '{entry.get('name')}' ({f}) has no weights file "
                                   f"{Path(f).with_suffix('.bin').name}; copy .xml and .bin together")
    m["_dir"] = str(path.parent)
    return m


def read_manifest_metadata(path: str | Path) -> dict:
    """``{"edgevit.input_spec": ..., "edgevit.source": ...}`` for :func:`edgevit.runtimes.open_artifact`."""
    from ...spec import SOURCE_KEY, SPEC_KEY

    m = read_manifest(path)
    return {SPEC_KEY: m["input_spec"], SOURCE_KEY: m.get("source")}


def load_graph_runtime(backend: str, file: str | Path, spec, *, device: str = "cpu", threads: int | None = None,
                       **options) -> Runtime:
    """One cascade graph in the backend runtime (fed through ``_run``: graph inputs are tokens, not images)."""
    from ...runtimes import get_runtime_class

    cls = get_runtime_class(backend)
    kind = kind_of_path(file)
    if kind not in cls.kinds:
        raise RuntimeLoadError(f"runtime '{backend}' cannot run the cascade graph {Path(file).name} (a '{kind}' file; "
                               f"it loads {', '.join(cls.kinds)}). Export the cascade with --format onnx, or run it "
                               f"with --runtime openvino")
    ok, why = cls.availability()
    if not ok:
        raise RuntimeLoadError(f"runtime '{backend}' is not available here: {why}")
    if backend == "openvino":
        options.setdefault("precision", "f32")
    if backend == "onnxruntime":
        options.setdefault("spinning", False)  # many sessions take turns: spinning idle pools would steal the cores
    return cls(Artifact(kind=kind, spec=spec, path=Path(file)), device=device, threads=threads, **options)


class CascadeRuntime(Runtime):
    """An exported early-exit cascade (manifest.json) on a backend runtime, with per-sample exit."""

    name: ClassVar[str] = "cascade"
    kinds: ClassVar[tuple[str, ...]] = ("cascade",)
    backend_module: ClassVar[str | None] = None

    def _load(self) -> None:
        if self.artifact.path is None:
            raise RuntimeLoadError("cascade runtime: the artefact has no manifest path")
        m = self.manifest = read_manifest(self.artifact.path)
        base = Path(m["_dir"])
        self.backend = self.options.get("backend") or DEFAULT_BACKEND.get(m.get("backend"), "onnxruntime")
        if self.backend == "cascade":
            raise ConfigError("cascade runtime: backend must be a runtime that runs the graphs (onnxruntime, openvino, "
                              "tvm, tensorrt)")
        self.criterion = self.options.get("criterion") or m["criterion"]
        th = self.options.get("thresholds")
        self.set_thresholds(m["thresholds"] if th is None else th)
        backend_opts = {k: v for k, v in self.options.items() if k not in OWN_OPTIONS}
        spec = self.artifact.spec

        def load(entry):
            gspec = dataclasses.replace(spec, input_name=entry["input"], output_name=entry["output"])
            return load_graph_runtime(self.backend, base / entry["file"], gspec, device=self.device,
                                      threads=self.threads, **backend_opts)

        self.segments = [load(s) for s in m["segments"]]
        self.heads = [load(e) for e in m["exits"]]
        # a backend that compiles per shape (OpenVINO) gets batch 1 up front: rarely reached graphs must not compile
        # in the middle of a timed or served request
        shape = (1, *spec.input_size)
        for k, seg in enumerate(self.segments):
            if hasattr(seg, "compile_static"):
                seg.compile_static(shape)
            shape = (1, *m["segments"][k]["output_shape"][1:])
            if k < len(self.heads) and hasattr(self.heads[k], "compile_static"):
                self.heads[k].compile_static(shape)
        self.num_exits = len(self.heads)
        self.exit_counts = np.zeros(self.num_exits + 1, dtype=np.int64)
        self.name = f"cascade[{self.backend}]"

    def set_thresholds(self, thresholds) -> None:
        """Use ``thresholds`` (one per exit, or one shared value) from the next call on; the graphs stay loaded."""
        self.thresholds = check_thresholds(thresholds, len(self.manifest["exits"]))
        self.active = active_heads(self.thresholds, self.criterion)

    def run_with_exits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [N, classes], exit index [N])``; index ``num_exits`` is the final head."""
        self.spec.check_batch(batch, where=f"{self.name} runtime")
        return self._cascade(np.ascontiguousarray(batch))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._cascade(batch)[0]

    def _cascade(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k_final = self.num_exits
        n = batch.shape[0]
        t = batch
        if n == 1:  # the common edge case: no bookkeeping
            for k in range(k_final):
                t = self.segments[k]._run(t)
                if self.active[k]:
                    z = self.heads[k]._run(t)
                    if exit_mask(z, self.thresholds[k], self.criterion)[0]:
                        self.exit_counts[k] += 1
                        return z, np.array([k], dtype=np.int64)
            self.exit_counts[k_final] += 1
            return self.segments[k_final]._run(t), np.array([k_final], dtype=np.int64)
        out: np.ndarray | None = None
        exits = np.full(n, k_final, dtype=np.int64)
        idx = np.arange(n)
        for k in range(k_final):
            t = self.segments[k]._run(t)
            if not self.active[k]:
                continue
            z = self.heads[k]._run(t)
            if out is None:
                out = np.empty((n, z.shape[1]), dtype=np.float32)
            mask = exit_mask(z, self.thresholds[k], self.criterion)
            if mask.any():
                out[idx[mask]] = z[mask]
                exits[idx[mask]] = k
                keep = ~mask
                idx = idx[keep]
                if len(idx) == 0:
                    break
                t = np.ascontiguousarray(t[keep])
        else:
            z = self.segments[k_final]._run(t)
            if out is None:
                out = np.empty((n, z.shape[1]), dtype=np.float32)
            out[idx] = z
        self.exit_counts += np.bincount(exits, minlength=k_final + 1)
        return out, exits

    def describe(self) -> dict:
        d = super().describe()
        d["runtime"] = self.name
        d["backend"] = self.backend
        d["backend_info"] = self.segments[0].describe() if getattr(self, "segments", None) else None
        d["threads"] = (d["backend_info"] or {}).get("threads", self.threads)
        d["criterion"] = self.criterion
        d["thresholds"] = [float(v) for v in self.thresholds]
        d["options"] = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in self.options.items()}
        return d

    def close(self) -> None:
        for r in getattr(self, "segments", []) + getattr(self, "heads", []):
            r.close()
        self.segments, self.heads = [], []


def graph_inputs(casc, x: np.ndarray, batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Run every graph of a loaded :class:`~edgevit.formats.cascade.runtime.CascadeRuntime` on all of ``x`` (no exit):
    ``(segment inputs [K+1 arrays], exit-head logits [K arrays], final logits)``. Segment k's input is also head
    k−1's input."""
    seg_in: list[list[np.ndarray]] = [[] for _ in casc.segments]
    head_out: list[list[np.ndarray]] = [[] for _ in casc.heads]
    final = []
    for i in range(0, len(x), batch_size):
        t = np.ascontiguousarray(x[i:i + batch_size])
        for k, seg in enumerate(casc.segments):
            seg_in[k].append(t)
            t = seg._run(t)
            if k < len(casc.heads):
                head_out[k].append(casc.heads[k]._run(t))
        final.append(t)
    return ([np.concatenate(a) for a in seg_in], [np.concatenate(a) for a in head_out], np.concatenate(final))


def measure_graph_latencies(runtime: CascadeRuntime, image: np.ndarray, *, warmup_s: float = 0.2,
                            duration_s: float = 1.0, min_runs: int = 10) -> dict:
    """Batch-1 latency (median ms, with :mod:`edgevit.profiling.latency`'s method) of every segment and head of a
    loaded cascade, each fed its real input computed from ``image`` (one preprocessed image [1, C, H, W])."""
    from ...profiling.latency import time_call

    x = runtime.spec.check_batch(np.ascontiguousarray(image[:1]), where="latency image")
    seg_rows, head_rows = [], []
    t = x
    kw = {"warmup_s": warmup_s, "duration_s": duration_s, "min_runs": min_runs}
    for k, seg in enumerate(runtime.segments):
        seg_rows.append(time_call(seg._run, t, label=f"segment {k}", **kw))
        nxt = seg._run(t)
        if k < len(runtime.heads):
            head_rows.append(time_call(runtime.heads[k]._run, nxt, label=f"exit {k + 1}", **kw))
        t = nxt
    return {"segment_ms": [r["median_ms"] for r in seg_rows], "head_ms": [r["median_ms"] for r in head_rows],
            "segments": seg_rows, "heads": head_rows, "runtime": runtime.describe()}
