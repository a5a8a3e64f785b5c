"""Artefacts: what stages pass along — a torch model or an exported file — with its input spec."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import InputSpec

# what an artefact's output means: logits over classes, or an embedding vector (an image or text tower of a dual
# encoder). Files and records written before tasks existed are classifiers.
TASKS = ("classification", "embedding")
DEFAULT_TASK = "classification"
TASK_KEY = "edgevit.task"  # metadata key (ONNX metadata_props, spec side files) holding the task

# kinds of artefact and the file suffixes that identify them
KINDS = {
    "torch": (".safetensors", ".pt", ".pth"),
    "onnx": (".onnx",),
    "openvino": (".xml",),
    "ort": (".ort",),
    "tvm": (".so",),
    "tensorrt": (".engine", ".plan"),
    "cascade": ("manifest.json",),
}


@dataclass
class Artifact:
    """A model in one form. ``model`` holds a live torch module for kind 'torch'; other kinds live at ``path``.

    ``source`` says how to rebuild a torch model (a model name or checkpoint path) so a torch artefact written
    to disk as ``path`` (safetensors) can be loaded again on ``--resume``. ``task`` (one of :data:`TASKS`) says
    what its output is; evaluation and profiling dispatch on it. Raises :class:`~edgevit.errors.ConfigError` for
    an unknown task.
    """

    kind: str
    spec: InputSpec
    path: Path | None = None
    model: Any = None
    source: str | None = None
    meta: dict = field(default_factory=dict)
    task: str = DEFAULT_TASK

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            from .errors import ConfigError

            raise ConfigError(f"unknown artefact task '{self.task}'. Allowed: {', '.join(TASKS)}")

    def to_dict(self, relative_to: Path | None = None) -> dict:
        p = self.path
        if p is not None and relative_to is not None:
            try:
                p = Path(p).resolve().relative_to(Path(relative_to).resolve())
            except ValueError:
                p = Path(p).resolve()
        return {"kind": self.kind, "path": str(p) if p is not None else None, "source": self.source,
                "spec": self.spec.to_dict(), "meta": self.meta, "task": self.task}

    @classmethod
    def from_dict(cls, d: dict, relative_to: Path | None = None) -> Artifact:
        p = d.get("path")
        if p is not None and relative_to is not None and not Path(p).is_absolute():
            p = Path(relative_to) / p
        return cls(kind=d["kind"], spec=InputSpec.from_dict(d["spec"]), path=Path(p) if p else None,
                   source=d.get("source"), meta=d.get("meta", {}), task=d.get("task") or DEFAULT_TASK)

    def load_model(self):
        """The live torch module of a torch artefact (rebuilt from ``source`` + ``path`` when needed)."""
        if self.kind != "torch":
            raise TypeError(f"artefact of kind '{self.kind}' has no torch model")
        if self.model is None:
            from .models import create

            self.model = create(self.source, checkpoint=self.path)
        return self.model

    @property
    def file_size(self) -> int | None:
        """Bytes on disk, including side files (.bin next to .xml, external ONNX data)."""
        if self.path is None or not Path(self.path).exists():
            return None
        p = Path(self.path)
        if p.is_dir():  # a folder artefact (a dual encoder): every file in it
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        size = p.stat().st_size
        sides = (p.with_suffix(".bin"), p.with_suffix(p.suffix + ".data"), p.with_suffix(".onnx.data"))
        for side in dict.fromkeys(sides):  # unique: 'm.onnx' gives 'm.onnx.data' twice
            if side != p and side.exists():
                size += side.stat().st_size
        return size


def kind_of_path(path: str | Path) -> str | None:
    """Guess an artefact kind from a file name ('model.onnx' → 'onnx'); None when unknown."""
    name = Path(path).name
    for kind, suffixes in KINDS.items():
        if any(name.endswith(s) for s in suffixes):
            return kind
    return None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (:func:`edgevit.fileio.atomic_output`: temp file + fsync + rename), ending with a newline.

    Raises :class:`~edgevit.errors.ConfigError` when ``path`` is a directory (before anything is written: the
    temp file never lands beside it); a failed write removes the temp file."""
    from .fileio import atomic_write_text

    text = json.dumps(obj, indent=2, default=_json_default) + "\n"  # serialise first: no temp file on a TypeError
    atomic_write_text(path, text)


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, InputSpec):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (constant memory for multi-GB weights)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_files(artifact: Artifact) -> list[Path]:
    """The files that make up ``artifact`` on disk, in a stable order: its file plus side files (``.bin`` of an
    OpenVINO IR, ``.onnx.data`` external weights) and, for a cascade, every graph its manifest lists (segments and
    exits, with their side files); for a folder artefact (a dual encoder) every file in it. Empty for an artefact
    without a path (a live torch model)."""
    if artifact.path is None:
        return []
    p = Path(artifact.path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    files = [p]
    if artifact.kind == "cascade" and p.is_file():
        manifest = json.loads(p.read_text())
        for entry in [*manifest.get("segments", []), *manifest.get("exits", [])]:
            if entry.get("file"):
                files.append(p.parent / entry["file"])
    out: list[Path] = []
    for f in files:
        out.append(f)
        for side in (f.with_suffix(".bin") if f.suffix == ".xml" else None, f.with_name(f.name + ".data")):
            if side is not None and side.is_file():
                out.append(side)
    return list(dict.fromkeys(out))


def artifact_sha256(artifact: Artifact) -> str:
    """Content hash of ``artifact``: SHA-256 over the names (relative to its folder) and :func:`file_sha256` of
    :func:`artifact_files`, plus its kind and input spec. An artefact without files hashes its ``source`` (a model
    name). Raises :class:`FileNotFoundError` when a listed file is missing."""
    import hashlib

    h = hashlib.sha256(json.dumps({"kind": artifact.kind, "spec": artifact.spec.to_dict(), "task": artifact.task},
                                  sort_keys=True).encode())
    files = artifact_files(artifact)
    if not files:
        h.update(f"source:{artifact.source}".encode())
    root = Path(artifact.path).parent if artifact.path is not None else None
    for f in files:
        h.update(f"{f.relative_to(root) if root else f.name}:{file_sha256(f)}\n".encode())
    return h.hexdigest()
