"""The stage contract (core floor): :class:`Stage`, :class:`StageContext`, :class:`~edgevit.results.StageOutput` and the
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
from .results import StageOutput

if TYPE_CHECKING:
    from .artifact import Artifact

log = logging.getLogger(__name__)


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

    def consumed(self, stage: type[Stage] | Stage) -> Artifact:
        """The newest artefact of a kind ``stage`` consumes (its ``consumes``; any kind when empty: the current
        artefact). Raises :class:`~edgevit.errors.ConfigError` naming the stage to add when the run has none."""
        from .errors import ConfigError

        if not stage.consumes:
            return self.artifact
        for a in reversed(list(self.artifacts.values())):
            if a.kind in stage.consumes:
                return a
        wanted = " or ".join(stage.consumes)
        # the stages whose one product is a consumed kind (export_onnx for onnx), else any that may produce one
        makers = [n for n in STAGES.names() if len(STAGES.get(n).produces) == 1
                  and STAGES.get(n).produces[0] in stage.consumes] \
            or [n for n in STAGES.names() if any(k in STAGES.get(n).produces for k in stage.consumes)]
        add = " or ".join(f"`- stage: {n}`" for n in makers) or "a stage producing it"
        raise ConfigError(f"stage '{stage.name}' converts the run's {wanted} artefact, but no earlier stage produced "
                          f"one: add {add} before `- stage: {stage.name}` in the recipe's stages")

    def latest(self, kind: str) -> Artifact | None:
        """The newest artefact of ``kind`` produced so far."""
        for a in reversed(list(self.artifacts.values())):
            if a.kind == kind:
                return a
        return None


class Stage:
    """Base of registered stages. ``Config`` is a :class:`edgevit.config.ConfigModel` (the recipe keys, their types,
    defaults, help texts and bounds: one declaration, also the JSON schema); ``version`` goes into the resume hash.

    ``consumes``: the artefact kinds the stage reads (the newest of them, :meth:`StageContext.consumed`); empty
    means the current artefact, whatever its kind (measuring stages). ``produces``: the kinds of artefact it may
    hand on; empty means it hands its input on unchanged. Both are kinds of :func:`edgevit.formats.kinds`.
    ``run`` returns a :class:`~edgevit.results.StageOutput`; paths inside its stage folder are made relative by
    the pipeline (one relocation step), so stages write plain paths.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    consumes: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = ()
    # resume (edgevit.pipeline): the libraries whose versions shape the output (keys of edgevit.versions.PACKAGES;
    # None: every library edgevit stamps); whether a killed run may continue in the stage's partial folder (the
    # stage then picks up its own checkpoints); whether the output depends on the earlier stages' records
    libraries: ClassVar[tuple[str, ...] | None] = None
    resumable: ClassVar[bool] = False
    reads_records: ClassVar[bool] = False

    def run(self, ctx: StageContext, config: Any) -> StageOutput:  # pragma: no cover - abstract
        raise NotImplementedError


STAGES: Registry[type[Stage]] = Registry("stage")


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Register a stage class under its ``name`` (duplicate names raise). Raises :class:`TypeError` unless its
    ``Config`` is a :class:`~edgevit.config.ConfigModel` and ``consumes``/``produces`` are tuples of artefact kinds."""
    from .config import ConfigModel

    if not (isinstance(cls.Config, type) and issubclass(cls.Config, ConfigModel)):
        raise TypeError(f"{cls.__name__}.Config must be an edgevit.config.ConfigModel (pydantic) subclass")
    for attr in ("consumes", "produces"):
        value = getattr(cls, attr)
        if not isinstance(value, tuple) or not all(isinstance(k, str) and k.isidentifier() for k in value):
            raise TypeError(f"{cls.__name__}.{attr} must be a tuple of artefact kinds, got {value!r}")
    STAGES.register(cls.name, cls)
    return cls
