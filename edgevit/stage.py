"""The stage contract (core floor): :class:`Stage`, :class:`StageContext`, :class:`~edgevit.results.StageOutput` and the
:data:`STAGES` registry. Built-in stages live in :mod:`edgevit.stages`; a format's stage lives in its folder under
:mod:`edgevit.formats` and a method's in :mod:`edgevit.stages`; each registers itself with :func:`register_stage`.

Stages must be importable without torch or any backend: heavy imports go inside ``run``.
"""

from __future__ import annotations

import logging
import os
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

    def model_artifacts(self) -> list[Artifact]:
        """The artefacts that stand for the run's current model, oldest first: the output of the last stage that made
        a new model (``load``, a method: :attr:`Stage.new_model`) and every conversion of it since (the exports).
        A measuring stage hands its input on and adds nothing. An artefact from before the last new model is not
        here: handing it to a stage would silently drop what that method did (the exits, the INT8 weights)."""
        reps: list[Artifact] = []
        for rec, art in zip(self.records, self.artifacts.values()):
            name = rec.get("stage")
            if name in STAGES and STAGES.get(name).new_model:
                reps = [art]
            elif not any(same_artifact(art, r) for r in reps):
                reps.append(art)
        return reps

    def consumed(self, stage: type[Stage] | Stage, config: Any = None) -> Artifact:
        """The artefact ``stage`` reads: the newest of :meth:`model_artifacts` whose kind it reads with ``config``
        (:meth:`Stage.reads`); the current artefact for a stage that reads any kind (a measuring stage). This is the
        run-time side of :func:`check_chain`, which proves before the run that one exists; when none does (a stage
        run outside a checked recipe), :class:`~edgevit.errors.ConfigError` says what it needed and got."""
        wanted = stage.reads(config) if config is not None else stage.consumes
        if not wanted:
            return self.artifact
        reps = self.model_artifacts()
        for a in reversed(reps):
            if reads_kind(wanted, detailed_kind(a)):
                return a
        from .errors import ConfigError

        have = {detailed_kind(a) for a in reps}
        got = ", ".join(describe_kind(detailed_kind(a)) for a in reps) or "nothing"
        raise ConfigError(f"stage '{stage.name}' reads {_kinds_phrase(wanted)} artefact of the run's current model, "
                          f"but the run holds {got}; {chain_hint(stage.name, wanted, have, config=config)}")

    def current(self, kind: str) -> Artifact | None:
        """The newest artefact of ``kind`` that stands for the run's current model (:meth:`model_artifacts`), or
        None: e.g. the torch model a format's parity check compares with, which after early_exit or quantize is
        no longer the model being exported."""
        for a in reversed(self.model_artifacts()):
            if a.kind == kind:
                return a
        return None

    def latest(self, kind: str) -> Artifact | None:
        """The newest artefact of ``kind`` produced so far."""
        for a in reversed(list(self.artifacts.values())):
            if a.kind == kind:
                return a
        return None


class Stage:
    """Base of registered stages. ``Config`` is a :class:`edgevit.config.ConfigModel` (the recipe keys, their types,
    defaults, help texts and bounds: one declaration, also the JSON schema); ``version`` goes into the resume hash.

    Kinds are those of :func:`edgevit.formats.kinds`, optionally detailed as ``kind:graphs`` where an artefact holds
    graphs of one format (``cascade:onnx``, ``cascade:openvino``, ``cascade:ort``: :func:`detailed_kind`); a plain
    kind in a declaration matches every detail of it.

    ``consumes``: the artefact kinds the stage reads (the newest of them, :meth:`StageContext.consumed`); empty
    means the current artefact, whatever its kind (measuring stages). ``produces``: the kinds of artefact it may
    hand on; empty means it hands its input on unchanged. Both are kinds of :func:`edgevit.formats.kinds`.
    ``run`` returns a :class:`~edgevit.results.StageOutput`; paths inside its stage folder are made relative by
    the pipeline (one relocation step), so stages write plain paths.

    ``new_model``: True for a stage whose output is a different model (``load``, and the methods: distill,
    early_exit, quantize): artefacts made before it no longer stand for the run's model, so later stages never read
    them (:meth:`StageContext.model_artifacts`). Export stages convert the current model and leave it False.
    :meth:`reads` and :meth:`hands_on` refine ``consumes``/``produces`` per config and input kind; the recipe is
    checked with them before anything runs (:func:`check_chain`). ``cannot_take``: kind → why the stage cannot
    take it (a format that cannot hold a cascade says so here; the message rejecting a recipe quotes it).
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
    # the recipe-level sections the output depends on (part of the resume key): adding a runtime or a target to the
    # recipe redoes the stages that measure on them, not a distillation
    reads_context: ClassVar[tuple[str, ...]] = ("data", "runtimes", "targets")
    new_model: ClassVar[bool] = False
    cannot_take: ClassVar[dict[str, str]] = {}

    @classmethod
    def chain_refusal(cls, config: Any, *, made_by: str, made_config: Any, kinds: frozenset[str]) -> str | None:
        """Why this stage cannot follow the stage that made the run's current model (``made_by`` with
        ``made_config``; ``kinds``: what the current artefact may be), for what kinds alone cannot say (an INT8
        encoding a format cannot hold); None when it can. Checked by :func:`check_chain` before anything runs."""
        return None

    @classmethod
    def reads(cls, config: Any) -> tuple[str, ...]:
        """The kinds the stage reads with ``config`` (a subset of ``consumes``; all of them by default). A stage whose
        accepted inputs depend on a key (quantize's ``backend``, export_openvino's ``from_onnx``) narrows them here."""
        return cls.consumes

    @classmethod
    def hands_on(cls, config: Any, kind: str) -> tuple[str | None, ...]:
        """The kinds the stage may hand on when it reads a ``kind`` artefact with ``config``; ``None`` in the tuple
        means it may hand its input on unchanged. Default: ``produces`` (its input unchanged when empty). A stage that
        keeps a cascade a cascade (quantize, the exports) says so here."""
        return cls.produces or (None,)

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
        if not isinstance(value, tuple) or not all(isinstance(k, str) and all(p.isidentifier() for p in k.split(":"))
                                                   for k in value):
            raise TypeError(f"{cls.__name__}.{attr} must be a tuple of artefact kinds, got {value!r}")
    STAGES.register(cls.name, cls)
    return cls


GRAPHS_META = "graphs"  # Artifact.meta key: the format of the graphs inside a multi-graph artefact (a cascade)


def detailed_kind(artifact: Artifact) -> str:
    """``kind:graphs`` for an artefact that holds graphs of one format (a cascade's ``meta["graphs"]``: ``onnx``,
    ``openvino``, ``ort``), else its plain kind."""
    graphs = (artifact.meta or {}).get(GRAPHS_META)
    return f"{artifact.kind}:{graphs}" if graphs else artifact.kind


def reads_kind(wanted: tuple[str, ...] | list[str] | set[str], kind: str) -> bool:
    """Whether a stage reading ``wanted`` reads a ``kind`` artefact: the same kind, or ``wanted`` names the plain
    kind of a detailed one (``cascade`` reads ``cascade:onnx``; ``cascade:onnx`` does not read ``cascade:ort``)."""
    return kind in wanted or kind.split(":")[0] in wanted


def describe_kind(kind: str) -> str:
    """``cascade:openvino`` → ``cascade (openvino graphs)``; a plain kind as it is."""
    base, _, graphs = kind.partition(":")
    return f"{base} ({graphs} graphs)" if graphs else base


def _kinds_phrase(kinds) -> str:
    """``("torch", "cascade:onnx", "cascade:openvino")`` → ``a torch or cascade (onnx or openvino graphs)``."""
    groups: dict[str, list[str]] = {}
    for k in kinds:
        base, _, graphs = k.partition(":")
        groups.setdefault(base, [])
        if graphs:
            groups[base].append(graphs)
    words = [f"{b} ({' or '.join(g)} graphs)" if g else b for b, g in groups.items()]
    return f"{_article(words[0])} {' or '.join(words)}"


def same_artifact(a: Artifact, b: Artifact) -> bool:
    """One artefact: the same object, or the same kind and file (:func:`artifact_file_key`)."""
    if a is b:
        return True
    return a.kind == b.kind and a.path is not None and b.path is not None and artifact_file_key(a) == artifact_file_key(b)


def artifact_file_key(art: Artifact) -> str | None:
    """The artefact's file as one canonical string (``run/04_eval/../03_distill/x`` and ``run/03_distill/x`` are one
    file), or None for an in-memory artefact."""
    if art.path is None:
        return None
    return os.path.realpath(art.path)


def _article(kind: str) -> str:
    return "an" if kind[:1] in "aeiou" else "a"


def _config_or_none(cls: type[Stage]) -> Any:
    try:
        return cls.Config()
    except Exception:  # noqa: BLE001 - a stage whose config has required keys: fall back to its declarations
        return None


def _check_runtime_loads(where: str, name: str, config: Any, kinds) -> None:
    """A measuring stage (eval, profile) of the current artefact that names its runtime(s): each must load the kind
    the artefact will have, else :class:`~edgevit.errors.ConfigError` before anything runs."""
    if config is None or getattr(config, "artifacts", "current") != "current":
        return
    names = [config.runtime] if isinstance(getattr(config, "runtime", None), str) else \
        list(getattr(config, "runtimes", None) or [])
    if not names:
        return
    from .errors import ConfigError
    from .runtimes import runtime_loads

    for r in names:
        bad = sorted(k for k in kinds if not runtime_loads(r, k.split(":")[0]))
        if bad:
            raise ConfigError(f"{where} ({name}): runtime '{r}' does not load the run's current artefact there "
                              f"({', '.join(describe_kind(k) for k in bad)}); pick a runtime that does "
                              f"(`edgevit list runtimes`), or leave `runtime` out to use the recipe's")


def _reads(cls: type[Stage], config: Any) -> tuple[str, ...]:
    return cls.reads(config) if config is not None else cls.consumes


def _hands_on(cls: type[Stage], config: Any, kind: str) -> tuple[str | None, ...]:
    return cls.hands_on(config, kind) if config is not None else (cls.produces or (None,))


def chain_hint(name: str, wanted: tuple[str, ...], have: set[str], *, config: Any = None,
               made_by: tuple[str, str] | None = None, older: set[str] | None = None) -> str:
    """What to do when stage ``name`` reads ``wanted`` kinds and the run's current model exists as ``have``: why the
    stage cannot take what there is (:attr:`Stage.cannot_take`), a key that makes it read it, a converting stage to
    add, or moving it before the method that made the current model (``made_by``, the model's kinds before it
    ``older``). Built from the registered stages' declarations only."""
    cls = STAGES.get(name)
    tips = []
    other = sorted(k for k in have if reads_kind(cls.consumes, k) and not reads_kind(wanted, k)
                   and k not in cls.cannot_take and k.split(":")[0] not in cls.cannot_take)
    if other:
        tips.append(f"with other settings '{name}' reads {' or '.join(describe_kind(k) for k in other)} (see "
                    f"`edgevit list stages -v`)")
    makers = []
    for n in STAGES.names():
        m = STAGES.get(n)
        if m.new_model or n == name:
            continue
        conf = _config_or_none(m)
        for k in have:
            if reads_kind(_reads(m, conf), k) and any(o is not None and reads_kind(wanted, o)
                                                      for o in _hands_on(m, conf, k)):
                makers.append(n)
                break
    if makers:
        tips.append("add " + " or ".join(f"`- stage: {n}`" for n in makers) + f" before `- stage: {name}`")
    why_not = []
    for k in sorted(have):
        reason = cls.cannot_take.get(k) or cls.cannot_take.get(k.split(":")[0])
        if reason:
            why_not.append(f"'{name}' cannot take {_kinds_phrase([k])} artefact: {reason}")
    tips = why_not + tips
    if not tips:
        takers = [n for n in STAGES.names() if n != name and any(reads_kind(STAGES.get(n).consumes, k) for k in have)]
        tips.append(f"'{name}' does not take {' or '.join(describe_kind(k) for k in sorted(have))} artefacts (stages "
                    f"that do: {', '.join(takers) or 'none'})")
    before = sorted(k for k in (older or ()) if reads_kind(wanted, k))
    if made_by is not None and before:
        tips.append(f"or put '{name}' before {made_by[0]} ('{made_by[1]}') to work on the model as it was (a "
                    f"{' or '.join(describe_kind(k) for k in before)} artefact from before '{made_by[1]}' would drop "
                    f"what it did)")
    return "; ".join(tips)


def check_chain(entries: list[tuple[str, str, Any]], *, start: tuple[str, ...] = ("torch",)) -> list[dict]:
    """Prove, before anything runs, that every stage of a recipe gets an artefact it reads.

    ``entries``: ``(where, stage name, config)`` per recipe stage, in order (``where`` names it in messages, e.g.
    ``stages.2``); ``start``: the kinds the implicit load step hands on. A static walk over the stages'
    declarations (:attr:`Stage.consumes`/:attr:`Stage.produces` refined by :meth:`Stage.reads`,
    :meth:`Stage.hands_on` and :attr:`Stage.new_model`), mirroring :meth:`StageContext.consumed`: the run's current
    model is held as a list of representations (each the set of kinds it may have: a stage whose output depends on
    what it finds at run time adds several); a stage that reads kinds is given the newest representation that is
    certainly one of them. Returns one ``{"where", "stage", "reads", "hands_on"}`` per entry (the kinds it reads
    and the kinds the current artefact may have after it). Raises :class:`~edgevit.errors.ConfigError` naming the
    first stage that cannot chain, the kinds it needed and the kinds it got, and what to change.
    """
    from .errors import ConfigError

    reps: list[tuple[frozenset[str], str, str]] = [(frozenset(start), "the load step", "load")]
    made_by = ("the load step", "load")
    made_config: Any = None
    older: set[str] = set()  # kinds the model had before the last new model was made
    plan = []
    for where, name, config in entries:
        cls = STAGES.get(name)
        why = cls.chain_refusal(config, made_by=made_by[1], made_config=made_config, kinds=reps[-1][0])
        if why:
            raise ConfigError(f"{where} ({name}): the recipe's stages do not chain: {why}")
        wanted = _reads(cls, config)
        if not wanted:
            inputs = reps[-1][0]
            _check_runtime_loads(where, name, config, inputs)
        else:
            certain = [i for i, (ks, _, _) in enumerate(reps) if all(reads_kind(wanted, k) for k in ks)]
            if not certain:
                have = {k for ks, _, _ in reps for k in ks}
                got = ", ".join(f"{' or '.join(describe_kind(k) for k in sorted(ks))} (from {w} '{n}')"
                                for ks, w, n in reps)
                raise ConfigError(
                    f"{where} ({name}): the recipe's stages do not chain. '{name}' needs {_kinds_phrase(wanted)} "
                    f"artefact of the run's current model, but got {got}; "
                    f"{chain_hint(name, wanted, have, config=config, made_by=made_by, older=older)}")
            inputs = frozenset(k for ks, _, _ in reps[certain[-1]:] for k in ks if reads_kind(wanted, k))
        outs: set[str] = set()
        unchanged = False
        for k in sorted(inputs):
            for o in _hands_on(cls, config, k):
                if o is None:
                    unchanged = True
                else:
                    outs.add(o)
        if outs:
            if cls.new_model:
                older = {k for ks, _, _ in reps for k in ks}
                made_by, made_config = (where, name), config
                reps = [(frozenset(outs), where, name)]
            else:
                reps.append((frozenset(outs | (reps[-1][0] if unchanged else set())), where, name))
        plan.append({"where": where, "stage": name, "reads": sorted(inputs), "hands_on": sorted(reps[-1][0])})
    return plan
