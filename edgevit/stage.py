"""The stage contract (core floor): :class:`Stage`, :class:`StageContext`, :class:`StageResult` and the
:data:`STAGES` registry. Built-in stages live in :mod:`edgevit.stages`; a format's stage lives in its folder under
:mod:`edgevit.formats` and a method's in :mod:`edgevit.stages`; each registers itself with :func:`register_stage`.

Stages must be importable without torch or any backend: heavy imports go inside ``run``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .registry import Registry

if TYPE_CHECKING:
    from .artifact import Artifact

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """What a stage returns: the artefact after it (the same one for measuring stages) and its metrics."""

    artifact: Artifact
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class StageContext:
    """Everything a stage may use. ``out_dir`` is the stage's own (temporary) folder."""

    recipe: Any  # edgevit.recipe.Recipe (not imported: the recipe module imports the stage registry)
    artifact: Artifact | None
    out_dir: Path
    run_dir: Path
    records: list[dict]
    artifacts: dict[str, Artifact]  # stage id → artefact after it, in order
    _datasets: dict = field(default_factory=dict)

    def dataset(self, split: str | None = None, *, limit: int | None = None):
        """The recipe's dataset split (cached), honouring the recipe's ``data.limit`` unless a limit is given."""
        from .data import load_dataset

        d = self.recipe.data
        split = split or d.eval_split
        limit = limit if limit is not None else d.limit
        key = (split, limit)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(d.name, split, data_dir=d.data_dir, limit=limit)
        return self._datasets[key]

    def source_artifact(self) -> Artifact:
        """The torch artefact the run started from (the output of the implicit load step)."""
        return next(iter(self.artifacts.values()))

    def latest(self, kind: str) -> Artifact | None:
        """The newest artefact of ``kind`` produced so far."""
        for a in reversed(list(self.artifacts.values())):
            if a.kind == kind:
                return a
        return None


class Stage:
    """Base of registered stages. ``Config`` is a :class:`edgevit.config.ConfigModel` (the recipe keys, their types,
    defaults, help texts and bounds: one declaration, also the JSON schema); ``version`` goes into the resume hash."""

    name: ClassVar[str]
    Config: ClassVar[type]
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    produces: ClassVar[str] = "same"  # artefact kind it produces, or "same" for measuring stages

    def run(self, ctx: StageContext, config: Any) -> StageResult:  # pragma: no cover - abstract
        raise NotImplementedError


STAGES: Registry[type[Stage]] = Registry("stage")


def register_stage(cls: type[Stage]) -> type[Stage]:
    from .config import ConfigModel

    if not (isinstance(cls.Config, type) and issubclass(cls.Config, ConfigModel)):
        raise TypeError(f"{cls.__name__}.Config must be an edgevit.config.ConfigModel (pydantic) subclass")
    STAGES.register(cls.name, cls)
    return cls


def relative_paths(obj, out_dir):
    """The record with paths inside the stage's (temporary, renamed afterwards) folder made relative to it."""
    roots = sorted({str(out_dir.resolve()), str(out_dir)}, key=len, reverse=True)

    def fix(o):
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(v) for v in o]
        if isinstance(o, str):
            for root in roots:
                if o == root or o.startswith(root + "/"):
                    return o[len(root):].lstrip("/") or "."
        return o

    return fix(obj)


def latest_onnx(ctx, stage: str):
    from .errors import ConfigError

    art = ctx.latest("onnx")
    if art is None:
        raise ConfigError(f"stage '{stage}' converts the run's ONNX file, but no earlier stage produced one: add "
                          f"`- stage: export_onnx` before `- stage: {stage}` in the recipe's stages")
    return art
