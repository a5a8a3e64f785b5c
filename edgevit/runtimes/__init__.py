"""Runtimes: load an artefact (torch model, ONNX file, …) and run numpy batches through it.

Every runtime is a :class:`~edgevit.runtimes.base.Runtime` subclass registered lazily by name, so
``import edgevit.runtimes`` imports neither torch nor any backend. A new runtime is one line::

    RUNTIMES.register("openvino", lazy("edgevit.formats.openvino.runtime", "OpenVinoRuntime"))

(formats do this through the ``runtimes`` of their :class:`~edgevit.formats.FormatSpec`). Its module should import its backend inside ``_load`` (or through :func:`edgevit._optional.require`), so that
listing runtimes works where the backend is missing.

Artefacts carry their :class:`~edgevit.spec.InputSpec`. :func:`open_artifact` finds it in the file
(ONNX ``metadata_props`` key ``edgevit.input_spec``, written by :func:`edgevit.formats.onnx.export.export_onnx`), in a
side file ``<file>.spec.json`` (for formats that cannot hold metadata), or in a torch checkpoint's metadata.
Formats that embed it elsewhere register a reader in :data:`METADATA_READERS` (kind → ``fn(path) -> dict``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..artifact import DEFAULT_TASK, TASK_KEY, Artifact
from ..errors import MissingBackendError, RuntimeLoadError
from ..format_registry import format_specs, kind_of_path, kinds, lazy_ref, metadata_readers, resolve, runtime_refs
from ..registry import Registry, lazy
from ..spec import SOURCE_KEY, SPEC_KEY, InputSpec
from .base import Runtime, batch_size_for, iter_chunks, run_batched, run_padded

log = logging.getLogger(__name__)


RUNTIMES: Registry[Callable[[], type[Runtime]]] = Registry("runtime")
RUNTIMES.register("torch", lazy("edgevit.runtimes.torch_rt", "TorchRuntime"))
for _name, _ref in runtime_refs().items():  # every format's runtimes, from its spec
    RUNTIMES.register(_name, lazy_ref(_ref))

__all__ = [
    "METADATA_READERS",
    "RUNTIMES",
    "SOURCE_KEY",
    "SPEC_KEY",
    "Runtime",
    "batch_size_for",
    "check_runtime",
    "get_runtime_class",
    "iter_chunks",
    "list_runtimes",
    "load_runtime",
    "open_artifact",
    "run_batched",
    "run_padded",
    "runtime_loads",
    "runtimes_for_kind",
    "spec_sidecar_path",
    "write_spec_sidecar",
]


def get_runtime_class(name: str) -> type[Runtime]:
    """The runtime class registered as ``name`` (imports its module, not necessarily its backend)."""
    loader = RUNTIMES.get(name)  # RegistryError listing the allowed names
    try:
        return loader()
    except ImportError as exc:
        raise MissingBackendError(
            f"runtime '{name}' could not be imported ({type(exc).__name__}: {exc}); install its backend "
            f"(`edgevit list runtimes` shows what each runtime needs)"
        ) from exc


def list_runtimes() -> list[dict]:
    """One row per registered runtime: ``name``, ``kinds``, ``available`` and ``version_or_reason``."""
    rows = []
    for name in RUNTIMES.names():
        try:
            cls = get_runtime_class(name)
            ok, version = cls.availability()
            rows.append({"name": name, "kinds": list(cls.kinds), "available": ok, "version_or_reason": version})
        except Exception as exc:  # noqa: BLE001 - a broken runtime module must not break the listing
            rows.append({"name": name, "kinds": [], "available": False,
                         "version_or_reason": f"{type(exc).__name__}: {exc}"})
    return rows


def runtimes_for_kind(kind: str) -> list[str]:
    """Names of the registered runtimes that load artefacts of ``kind``."""
    names = []
    for name in RUNTIMES.names():
        try:
            if kind in get_runtime_class(name).kinds:
                names.append(name)
        except Exception:  # skip runtimes whose module does not import here
            log.debug("runtime %s could not be imported while looking for kind %s", name, kind, exc_info=True)
    return names


# ---------------------------------------------------------------------------------------------- artefacts


def spec_sidecar_path(path: str | Path) -> Path:
    """``model.so`` → ``model.so.spec.json``: where formats without metadata keep their input spec."""
    p = Path(path)
    return p.with_name(p.name + ".spec.json")


def write_spec_sidecar(path: str | Path, spec: InputSpec, source: str | None = None, *,
                       task: str = DEFAULT_TASK) -> Path:
    """Write the side file read by :func:`open_artifact` for formats that cannot hold metadata (input spec, source
    model and task); returns its path."""
    from ..artifact import write_json

    side = spec_sidecar_path(path)
    write_json(side, {SPEC_KEY: spec.to_dict(), SOURCE_KEY: source, TASK_KEY: task})
    return side


# kind → fn(path) -> metadata dict (keys SPEC_KEY / SOURCE_KEY), from the formats' specs; the side file is the
# fallback for every kind
METADATA_READERS: Registry[Callable[[Path], dict]] = Registry("artefact metadata reader")
for _kind, _ref in metadata_readers().items():
    METADATA_READERS.register(_kind, lambda p, _r=_ref: resolve(_r)(p))


def _check_path(path: str | Path) -> tuple[Path, str]:
    """``(file, kind)`` of an artefact path. A directory stands for the one artefact inside it (a cascade's
    ``manifest.json`` first); several or none raise :class:`RuntimeLoadError` naming what is there."""
    p = Path(path)
    if not p.exists():
        raise RuntimeLoadError(f"artefact {p} does not exist; check the path (or run the export stage first)")
    if p.is_dir():
        p = _artifact_in_dir(p)
    kind = kind_of_path(p)
    if kind is None:
        known = ", ".join(f"{k} ({' '.join(s)})" for k, s in kinds().items())
        raise RuntimeLoadError(f"cannot tell which kind of artefact {p} is from its name. Known kinds and file "
                               f"suffixes: {known}. Rename the file, or build the Artifact yourself.")
    return p, kind


def _manifest_format(manifest: Path) -> str | None:
    """The ``format`` field of a ``manifest.json`` (None when it is unreadable or has none)."""
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return m.get("format") if isinstance(m, dict) else None


def _artifact_in_dir(d: Path) -> Path:
    from ..formats.cascade.spec import MANIFEST, MANIFEST_FORMAT
    from ..formats.tensorrt.spec import BUNDLE_FORMAT

    manifest = d / MANIFEST
    fmt = _manifest_format(manifest) if manifest.is_file() else None
    if fmt == MANIFEST_FORMAT:  # an early-exit cascade: the manifest is the artefact
        return manifest
    # any other manifest.json (a TensorRT device bundle's, another tool's) is not an artefact
    found = sorted(f for f in d.iterdir()
                   if f.is_file() and f != manifest and kind_of_path(f) is not None)
    if fmt == BUNDLE_FORMAT and (d / "engines" / MANIFEST).is_file():  # the bundle of an early-exit cascade
        cascade = d / "engines" / MANIFEST
        try:
            cm = json.loads(cascade.read_text())
            entries = [*cm["segments"], *cm["exits"]]
        except (OSError, ValueError, KeyError, TypeError):
            entries = []
        if entries and all((cascade.parent / e.get("file", "")).is_file() for e in entries):
            log.info("%s is a TensorRT cascade bundle: using its engine cascade, %s", d, cascade)
            return cascade
        raise RuntimeLoadError(
            f"{d} is the TensorRT device bundle of an early-exit cascade: copy it to the device and run build.sh "
            f"there (it builds every engine into engines/), then pass {cascade}. Here, its ONNX cascade "
            f"{d / 'onnx' / MANIFEST} runs on onnxruntime")
    if fmt == BUNDLE_FORMAT:
        engines = [f for f in found if kind_of_path(f) == "tensorrt"]
        if len(engines) == 1:
            log.info("%s is a TensorRT device bundle: using its engine, %s", d, engines[0].name)
            return engines[0]
        if not engines:
            onnx = [f for f in found if kind_of_path(f) == "onnx"]
            raise RuntimeLoadError(
                f"{d} is a TensorRT device bundle (manifest format {BUNDLE_FORMAT!r}): copy it to the device and run "
                f"build.sh there to build the engine (then profile.sh); it holds no engine this machine can run"
                + (f". To evaluate the model here, pass its ONNX file: {onnx[0]}" if onnx else ""))
        found = engines
    if len(found) == 1:
        log.info("%s is a directory: using the artefact inside it, %s", d, found[0].name)
        return found[0]
    if not found:
        raise RuntimeLoadError(f"{d} is a directory with no artefact in it (no file with a known suffix: "
                               f"{', '.join(s for v in kinds().values() for s in v)}); pass the model file itself")
    names = ", ".join(str(f) for f in found[:6]) + (f" … (+{len(found) - 6})" if len(found) > 6 else "")
    raise RuntimeLoadError(f"{d} is a directory with {len(found)} artefacts; pass one of them: {names}")


def open_artifact(path: str | Path, *, spec: InputSpec | None = None, arch: str | None = None) -> Artifact:
    """An :class:`Artifact` for a file; its kind comes from the suffix and its input spec from the file.

    - ``.onnx``: the spec stored under ``metadata_props['edgevit.input_spec']`` by edgevit's exporter;
    - ``.safetensors``/``.pt``/``.pth``: a torch model rebuilt with :func:`edgevit.models.create` (``arch`` names
      the architecture when the checkpoint does not);
    - other kinds: a registered :data:`METADATA_READERS` entry, else the side file ``<file>.spec.json``.

    The artefact's task comes from the ``edgevit.task`` metadata entry (``classification`` for files written
    before tasks existed). ``spec`` overrides whatever the file says. Raises :class:`RuntimeLoadError` for a missing file, an unknown
    suffix, an unreadable file or a file without a spec (when none is given).
    """
    p, kind = _check_path(path)
    if kind == "torch":
        from ..models import create, input_spec_of

        model = create(str(p), arch=arch)
        return Artifact(kind="torch", spec=spec or input_spec_of(model), path=p, model=model,
                        source=getattr(model, "edgevit_name", None))
    meta: dict[str, Any] = {}
    if kind in METADATA_READERS:
        meta = METADATA_READERS.get(kind)(p)
    side = spec_sidecar_path(p)
    if SPEC_KEY not in meta and side.exists():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeLoadError(f"input-spec side file {side} is not valid JSON ({exc}); delete or rewrite it") from exc
    if spec is None:
        raw = meta.get(SPEC_KEY)
        if raw is None:
            raise RuntimeLoadError(
                f"{p} does not say which inputs it expects (no '{SPEC_KEY}' metadata and no {side.name}). "
                f"Pass spec=InputSpec(...), or re-export it with edgevit, which stores the spec."
            )
        try:
            spec = InputSpec.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise RuntimeLoadError(f"{p}: the stored input spec is malformed ({type(exc).__name__}: {exc}); "
                                   f"pass spec=InputSpec(...) or re-export the model") from exc
    return Artifact(kind=kind, spec=spec, path=p, source=meta.get(SOURCE_KEY), task=meta.get(TASK_KEY) or DEFAULT_TASK)


def _hosting_runtime(name: str, kind: str) -> str | None:
    """The runtime that loads a ``kind`` artefact when runtime ``name`` is asked to: a format whose spec lists
    ``name`` among its ``backends`` runs its graphs through its own runtime on that backend (``--runtime openvino``
    on an early-exit cascade means the cascade runtime with backend openvino). None when no format does so."""
    for spec in format_specs():
        if spec.kind == kind and name in spec.backends and spec.runtimes:
            return next(iter(spec.runtimes))
    return None


def runtime_loads(name: str, kind: str) -> bool:
    """Whether ``load_runtime(name, ...)`` accepts an artefact of ``kind`` (directly, or hosted: see ``backends``)."""
    return kind in get_runtime_class(name).kinds or _hosting_runtime(name, kind) is not None


def check_runtime(name: str, kind: str, where: str | Path = "the artefact") -> type[Runtime]:
    """The runtime class that ``load_runtime(name, <a kind artefact>)`` uses, after checking that runtime ``name``
    loads ``kind`` artefacts (directly or hosted, see :func:`runtime_loads`) and is available here — without
    loading anything, so a command naming several runtimes can check them all before it starts work.

    Raises :class:`RegistryError` (unknown name), :class:`RuntimeLoadError` (the runtime cannot load this kind,
    naming those that can) or :class:`MissingBackendError` (its backend is not installed)."""
    cls = get_runtime_class(name)
    host = _hosting_runtime(name, kind)
    if host is not None and kind not in cls.kinds:
        cls = get_runtime_class(host)
    if kind not in cls.kinds:
        others = [r for r in runtimes_for_kind(kind) if r != name]
        hint = (f"Runtimes that load '{kind}' artefacts: {', '.join(others)}." if others
                else f"No registered runtime loads '{kind}' artefacts.")
        raise RuntimeLoadError(
            f"runtime '{name}' loads {', '.join(cls.kinds)} artefacts, but {where} is {'an' if kind[:1] in 'aeiou' else 'a'} '{kind}' artefact. {hint} "
            f"Or export the model to a format '{name}' loads: {_export_hint(cls.kinds)}."
        )
    ok, why = cls.availability()
    if not ok:
        raise MissingBackendError(f"runtime '{name}' is not available here: {why}")
    return cls


def load_runtime(name: str, artifact_or_path: Artifact | str | Path, **options) -> Runtime:
    """Load an artefact (or a file, opened with :func:`open_artifact`) into the runtime called ``name``.

    ``options`` go to the runtime (``device``, ``threads`` and runtime-specific ones); ``spec=`` is passed to
    :func:`open_artifact` when a path is given. Raises :class:`RegistryError` for an unknown runtime name,
    :class:`RuntimeLoadError` when the runtime cannot load this kind of artefact (naming those that can) and
    :class:`MissingBackendError` when the runtime's backend is not installed.
    """
    spec = options.pop("spec", None)
    if isinstance(artifact_or_path, Artifact):
        artifact, where, kind = artifact_or_path, artifact_or_path.path or "the artefact", artifact_or_path.kind
    else:
        where, kind = _check_path(artifact_or_path)
        artifact = None
    cls = check_runtime(name, kind, where)
    if kind not in get_runtime_class(name).kinds:  # hosted: e.g. a cascade runs its graphs on the named runtime
        options["backend"] = name
    if artifact is None:
        artifact = open_artifact(where, spec=spec)
    elif spec is not None:
        artifact = Artifact(kind=artifact.kind, spec=spec, path=artifact.path, model=artifact.model,
                            source=artifact.source, meta=dict(artifact.meta), task=artifact.task)
    return cls(artifact, **options)


def _export_hint(kinds) -> str:
    """The ``edgevit export`` commands that write artefacts of ``kinds`` (for error messages)."""
    cmds = [f"`edgevit export {spec.name.replace('_', '-')}`" for spec in format_specs()
            if spec.kind in kinds and spec.cli]
    return " or ".join(cmds) if cmds else "no `edgevit export` command writes them"
