"""Run a recipe: one folder per stage, written atomically, resumable exactly.

Layout of a run directory::

    recipe.resolved.yaml      the recipe of the last invocation (``--resume`` compares against it)
    00_load/record.json       one folder per finished stage: its files + record.json (status, key, metrics, ...)
    01_distill.tmp/           a stage being written (renamed to 01_distill when complete; never read as finished)
    01_distill.error.log      the traceback of a stage that failed (removed when the stage later succeeds)

**Resume key.** A stage is skipped on ``--resume`` when its key matches the one in its ``record.json``. The key
(:func:`stage_key`) covers the stage's name, version and config, the recipe's ``data``/``runtimes``/``targets``,
the content hash of every artefact the run produced before it (:func:`edgevit.artifact.artifact_sha256`: a
cascade hashes every graph its manifest lists), the earlier records for stages that read them (``report``), and
the versions of the libraries the stage declares (:attr:`edgevit.stage.Stage.libraries`). A changed library
version redoes the stage with a notice naming the change; when the redone stage writes the same bytes, the
stages after it still match and are skipped. A finished stage whose files no longer hash to its record is redone.

**Exact resume.** Files are written all-or-nothing (:mod:`edgevit.fileio`), a stage folder is renamed only when
its record is written, and leftovers (``*.tmp`` folders, ``.partial`` files) are removed before anything reads
the run. A stage that declares :attr:`~edgevit.stage.Stage.resumable` (distillation) continues in its ``.tmp``
folder from its own per-epoch checkpoints when the key still matches. After SIGKILL at any point, ``--resume``
ends with the same artefact bytes as an uninterrupted run, and the same records except the fields of
:data:`VOLATILE_KEYS` (timings and how the run happened), which :func:`comparable_record` drops.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifact import Artifact, artifact_sha256, file_sha256, write_json
from .config import to_dict
from .errors import ConfigError, EdgevitError, StageError, StorageError
from .faults import kill_point
from .fileio import PARTIAL, atomic_write_text, remove_partials
from .recipe import Recipe
from .stage import same_artifact
from .stages import STAGES, StageContext
from .versions import library_versions

log = logging.getLogger(__name__)

LOAD_ID = "00_load"
RESOLVED = "recipe.resolved.yaml"
STATE = ".stage.json"  # inside <id>.tmp: the key the partial folder was started with
ERROR_LOG = "{id}.error.log"

# Record fields that are timings, or say how this particular run happened (cache reused or written, epoch the
# training resumed from, library stamp), at any depth of a record. Everything else in a record is a result, and
# is identical between an interrupted-and-resumed run and an uninterrupted one (:func:`comparable_record`).
VOLATILE_KEYS = frozenset({
    "seconds", "finished_utc", "created_utc", "versions", "epoch_s", "data_wait_s", "teacher_s", "step_s",
    "augment_s", "train_seconds", "seconds_per_epoch", "throughput", "runs", "reused", "epochs_written",
    "epochs_reused", "teacher_calls", "start_epoch", "resumed_from_epoch", "torch_threads",
})
VOLATILE_SUFFIXES = ("_ms", "time_s")  # measured latencies (median_ms, p90_ms, ...), durations (export_time_s, ...)

ALWAYS_VERSIONED = ("python", "edgevit")  # part of every stage's key
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def comparable_record(obj: Any) -> Any:
    """``obj`` (a stage record, or any JSON value) without the :data:`VOLATILE_KEYS` fields, at any depth."""
    if isinstance(obj, dict):
        return {k: comparable_record(v) for k, v in obj.items()
                if k not in VOLATILE_KEYS and not k.endswith(VOLATILE_SUFFIXES)}
    if isinstance(obj, list):
        return [comparable_record(v) for v in obj]
    return obj


@dataclass
class Step:
    """One step of a run: the implicit ``load`` (index 0) or a recipe stage."""

    index: int
    id: str
    name: str
    config: Any

    @property
    def cls(self):
        return STAGES.get(self.name)


def steps_of(recipe: Recipe) -> list[Step]:
    """The run's steps in order: ``00_load``, then the recipe's stages."""
    return [Step(0, LOAD_ID, "load", STAGES.get("load").Config())] + [
        Step(i, s.id, s.stage, s.config) for i, s in enumerate(recipe.stages, start=1)]


def plan(recipe: Recipe) -> list[dict]:
    """The steps a run will take, in order (the implicit load step first), each with the artefact kinds it reads
    and hands on (``reads``, ``hands_on``: :func:`edgevit.stage.check_chain`, which raises
    :class:`~edgevit.errors.ConfigError` when the stages do not chain)."""
    from .stage import STAGES, check_chain

    start = STAGES.get("load").start_kinds(recipe.model)
    chain = check_chain([(f"stages.{i}", s.stage, s.config) for i, s in enumerate(recipe.stages)], start=start)
    steps = [{"id": LOAD_ID, "stage": "load", "config": {"model": recipe.model.name}, "reads": [],
              "hands_on": list(start)}]
    for s, h, c in zip(recipe.stages, recipe.stage_hashes(), chain):
        steps.append({"id": s.id, "stage": s.stage, "config": s.to_dict(), "hash": h, "reads": c["reads"],
                      "hands_on": c["hands_on"]})
    return steps


def find_step(steps: list[Step], ref: str, flag: str) -> Step:
    """The step ``ref`` names: a stage id (``02_export_onnx``) or a stage name (``export_onnx``) that occurs once.
    Raises :class:`ConfigError` listing the run's ids for an unknown or ambiguous name."""
    listing = ", ".join(s.id for s in steps)
    for s in steps:
        if s.id == ref:
            return s
    named = [s for s in steps if s.name == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise ConfigError(f"{flag} {ref}: the recipe has {len(named)} '{ref}' stages "
                          f"({', '.join(s.id for s in named)}); give the stage id instead")
    raise ConfigError(f"{flag} {ref}: no such stage in this recipe; give a stage id or name: {listing}")


# ----------------------------------------------------------------------------------------------- keys
def select_steps(steps: list[Step], *, until: str | None = None, only: str | None = None,
                 from_stage: str | None = None) -> tuple[int, int, set[int]]:
    """``(first, last, rerun)``: the step indices a partial run walks (inclusive) and those it redoes even when
    finished (``--only``: that stage; ``--from``: it and every later one). Shared by :func:`run` and
    ``edgevit compress --dry-run``, so the plan printed is the plan run. Raises :class:`ConfigError` for more than
    one of the three, or a stage reference that is not in the recipe."""
    if sum(x is not None for x in (until, only, from_stage)) > 1:
        raise ConfigError("--until, --only and --from are exclusive; give one of them")
    first, last, rerun = 0, len(steps) - 1, set()
    if until is not None:
        last = find_step(steps, until, "--until").index
    if only is not None:
        first = last = find_step(steps, only, "--only").index
        rerun = {first}
    if from_stage is not None:
        first = find_step(steps, from_stage, "--from").index
        rerun = set(range(first, len(steps)))
    return first, last, rerun


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def stage_libraries(cls) -> dict[str, str]:
    """The versions that shape ``cls``'s output: its declared :attr:`~edgevit.stage.Stage.libraries` (every stamped
    library when it declares none) plus Python and edgevit; a library that is not installed is ``"absent"``."""
    versions = library_versions()
    wanted = getattr(cls, "libraries", None)
    names = list(versions) if wanted is None else [*ALWAYS_VERSIONED, *wanted]
    return {n: versions.get(n, "absent") for n in dict.fromkeys(names)}


def stage_key(step: Step, recipe: Recipe, inputs: list[str], records: list[dict]) -> tuple[str, dict]:
    """``(key, parts)``: the resume key of ``step`` and what it was computed from (kept in ``record.json`` so a
    mismatch can be explained). ``inputs``: content hashes of the artefacts produced before the step."""
    cls = step.cls
    parts: dict[str, Any] = {
        "stage": step.name, "stage_version": cls.version, "config": to_dict(step.config),
        "context": {k: v for k, v in {"data": to_dict(recipe.data), "runtimes": list(recipe.runtimes),
                                      "targets": list(recipe.targets)}.items() if k in cls.reads_context},
        "inputs": inputs, "libraries": stage_libraries(cls),
    }
    if step.index == 0:
        parts["model"] = to_dict(recipe.model)
        parts["model_files"] = {p: file_sha256(p) for p in (recipe.model.checkpoint, recipe.model.name)
                                if p and Path(p).is_file()}
    if getattr(cls, "reads_records", False):
        parts["records"] = _sha(records)
    return _sha(parts)[:16], parts


def explain_key_change(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """``(library changes, other changes)`` between two key ``parts``, as readable phrases."""
    libs = [f"{k} {old.get('libraries', {}).get(k, 'absent')} → {v}" for k, v in new["libraries"].items()
            if old.get("libraries", {}).get(k, "absent") != v]
    other = [f"{path}: {a!r} → {b!r}" for path, a, b in dict_diff({k: v for k, v in old.items() if k != "libraries"},
                                                                  {k: v for k, v in new.items() if k != "libraries"})]
    return libs, other


_ABSENT = "(absent)"


def dict_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted paths where two JSON values differ (list items by index), with the old and new values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in [*old, *(k for k in new if k not in old)]:
            out += dict_diff(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and \
            any(isinstance(v, (dict, list)) for v in old + new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += dict_diff(a, b, f"{prefix}.{i}" if prefix else str(i))
        return out
    if isinstance(old, list) and isinstance(new, list) and prefix == "stages":
        out = []
        for i in range(max(len(old), len(new))):
            out += dict_diff(old[i] if i < len(old) else _ABSENT, new[i] if i < len(new) else _ABSENT, f"stages.{i}")
        return out
    return [] if old == new else [(prefix, old, new)]


# ----------------------------------------------------------------------------------------------- run directory
def check_run_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path; :class:`ConfigError` when it cannot be a run directory: it exists and is not a
    directory, or a folder it would be created in is a file. ``edgevit compress --dry-run`` checks it too."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run directory {out} exists and is a file, not a directory; choose another --out "
                          f"(a run directory is a directory or does not exist yet)")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"run directory {out} cannot be created: {parent} is a file; choose another --out")
    return out


def read_record(stage_dir: Path) -> dict | None:
    """The ``record.json`` of a finished stage folder; None when absent, unreadable or not finished."""
    try:
        rec = json.loads((stage_dir / "record.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("status") == "done" else None


def relocate(obj, tmp: Path):
    """The one relocation step of a stage's output: every path (string or :class:`~pathlib.Path`) inside the
    temporary stage folder ``tmp`` becomes relative to it (``"."`` for the folder itself), so the record stays
    true after ``<id>.tmp`` is renamed to ``<id>`` and the run folder can be moved. Other values are kept."""
    roots = sorted({str(tmp), str(tmp.resolve())}, key=len, reverse=True)

    def fix(o):
        if isinstance(o, dict):
            return {k: fix(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [fix(v) for v in o]
        if isinstance(o, Path):
            o = str(o)
        if isinstance(o, str):
            for root in roots:
                if o == root or o.startswith(root + "/"):
                    return o[len(root):].lstrip("/") or "."
        return o

    return fix(obj)


def _affected_step(path: str) -> int | None:
    """The first step a recipe key influences (0 for model/data/runtimes/targets: every step); None: none."""
    head, _, rest = path.partition(".")
    if head in ("name", "output"):
        return None
    if head == "stages":
        return int(rest.split(".")[0]) + 1
    return 0


def check_same_recipe(out: Path, recipe: Recipe, steps: list[Step], *, rerun: set[int]) -> None:
    """Refuse to resume ``out`` when the recipe differs from the one it was run with in a key that a finished
    stage (other than those in ``rerun``) depends on. Differences confined to stages not finished yet (the
    failed stage after a fix, stages added at the end) are allowed. Raises :class:`ConfigError` listing every
    differing key (dotted path, old → new)."""
    import yaml

    try:
        old = yaml.safe_load((out / RESOLVED).read_text())
    except (OSError, yaml.YAMLError):
        return  # a run killed before it wrote its recipe: nothing finished depends on one
    if not isinstance(old, dict):
        return
    diffs = dict_diff(old, recipe.to_dict())
    old_ids = [LOAD_ID] + [f"{i:02d}_{s.get('stage')}" for i, s in enumerate(old.get("stages") or [], start=1)
                           if isinstance(s, dict)]
    finished = {i for i, sid in enumerate(old_ids) if read_record(out / sid) is not None} - rerun
    stale = []
    for path, a, b in diffs:
        first = _affected_step(path)
        if first is not None and any(i >= first for i in finished):
            stale.append((path, a, b))
    if stale:
        dependent = {i for p, _, _ in stale for i in finished if i >= _affected_step(p)}
        done = ", ".join(old_ids[i] for i in sorted(dependent))
        lines = "\n".join(f"  {p}{_step_of(p, steps)}: {_short(a)} → {_short(b)}" for p, a, b in stale)
        raise ConfigError(
            f"--resume: {out} was run with another recipe; these keys differ and finished stages ({done}) depend "
            f"on them:\n{lines}\nPass --force with --resume to redo what they change (keeping the stages they do "
            f"not), --force alone to start over, or another --out for a new run")


def _step_of(path: str, steps: list[Step]) -> str:
    i = _affected_step(path) if path.startswith("stages.") else None
    return f" ({steps[i].id})" if i is not None and i < len(steps) else ""


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if v != _ABSENT else v
    return s if len(s) <= 80 else s[:77] + "..."


def _clean_leftovers(out: Path, ids: list[str]) -> None:
    """Repair interrupted renames, then remove stage folders of other recipes and stray ``.partial`` files at the
    top of the run directory (``<id>.tmp`` folders are handled per stage: kept for a resumable stage whose key
    still matches)."""
    _repair_swaps(out)
    for p in out.glob("[0-9][0-9]_*"):
        name = p.name.removesuffix(".tmp")
        if p.is_dir() and name not in ids:
            shutil.rmtree(p)
    for p in out.glob(f".*{PARTIAL}"):
        p.unlink()


# ----------------------------------------------------------------------------------------------- errors
def _written_path(exc: OSError) -> str | None:
    name = exc.filename
    if not name:
        return None
    p = Path(os.fsdecode(name))
    if p.name.startswith(".") and p.name.endswith(PARTIAL):  # the temp file of an atomic write: name the target
        p = p.with_name(p.name[1:-len(PARTIAL)])
    return str(p)


def storage_message(exc: OSError, where: Path) -> str | None:
    """A message saying what to do for a full disk, a file-size limit or a permission error; None for others."""
    import tempfile

    written = _written_path(exc)
    path = written or (f"a file (the error names none; the stage writes under {where} and may use the temporary "
                       f"folder {tempfile.gettempdir()}, set by TMPDIR)")
    folder = Path(written).parent if written else where
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if exc.errno in NO_SPACE:
        free = ""
        try:
            st = shutil.disk_usage(folder)
            free = f" ({st.free / 2**20:.0f} MiB free on that filesystem)"
        except OSError:
            pass
        what = ("the file-size limit (ulimit -f) was reached" if exc.errno == errno.EFBIG
                else "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded")
        return (f"{what} while writing {path}{free}: free space (or raise the limit) or choose an --out on a "
                f"larger filesystem")
    if exc.errno in NO_PERMISSION:
        why = "the filesystem is read-only" if exc.errno == errno.EROFS else "permission denied"
        return (f"{why} while writing {path}: make {folder} writable by this user (e.g. chmod u+w), or point "
                f"the recipe or --out elsewhere")
    return None


def _storage_cause(exc: BaseException) -> OSError | None:
    """The disk-full or permission :class:`OSError` behind ``exc``, also when a library wrapped it (an exporter's
    error caused by the write that failed); None when there is none."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE + NO_PERMISSION:
            return e
        todo += [e.__cause__, e.__context__]
    return None


def _write_error_log(out: Path, step: Step, exc: BaseException) -> Path | None:
    log_path = out / ERROR_LOG.format(id=step.id)
    text = (f"stage {step.id} ({step.name}) failed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            f"config: {json.dumps(to_dict(step.config), default=str)}\nversions: {json.dumps(library_versions())}\n\n"
            + "".join(traceback.format_exception(exc)))
    try:
        atomic_write_text(log_path, text)
    except OSError:
        return None
    return log_path


def _stage_failed(out: Path, tmp: Path, step: Step, exc: Exception, done: list[str]) -> BaseException:
    """The error to raise for a failed stage: it names the stage, the cause, the traceback file, what is kept
    and how to continue. An edgevit error keeps its class (its message is extended)."""
    log_path = _write_error_log(out, step, exc)
    kept = f"the finished stages ({', '.join(done)}) are intact in {out}" if done else f"nothing had finished in {out}"
    tb = f"the traceback is in {log_path}" if log_path else "the traceback could not be written (see above)"
    tail = f"\n{kept}; {tb}. Fix the cause, then rerun with --resume to continue from {step.id}"
    head = f"stage {step.id} ({step.name}) failed: "
    cause = _storage_cause(exc)
    if cause is not None:
        return StorageError(head + storage_message(cause, tmp) + tail)
    if isinstance(exc, EdgevitError):
        exc.args = (head + str(exc) + tail, *exc.args[1:])
        return exc
    return StageError(f"{head}{type(exc).__name__}: {exc}{tail}")


# ----------------------------------------------------------------------------------------------- run
def run(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, force: bool = False,
        until: str | None = None, only: str | None = None, from_stage: str | None = None,
        on_stage=None, on_start=None) -> list[dict]:
    """Run the stages of ``recipe`` into ``out_dir``; return the records of the steps this call ran or loaded.

    ``resume``: skip each finished stage whose resume key still matches (see the module docstring); the recipe
    must agree with the run's on every key a finished stage depends on (:func:`check_same_recipe`), unless
    ``force``. ``force`` without ``resume``: start over. Partial runs on a run directory (each implies
    ``resume``): ``until`` runs up to and including that stage; ``only`` runs just that stage, ``from_stage``
    that stage and every later one; both rerun it even when finished and need every earlier stage finished.
    Stages are named by id (``02_export_onnx``) or by a name that occurs once (``export_onnx``).

    ``on_start(index, total, id, name)`` is called before each step (1-based index, the load step included; total:
    the steps this call walks) and ``on_stage(id, record, skipped)`` after it: the CLI's run display hangs on them.

    Raises :class:`ConfigError` for bad arguments or a run directory of another recipe, :class:`StorageError` for
    a full disk or an unwritable path (naming it), :class:`StageError` (or the stage's own edgevit error, extended) when a stage fails: earlier stages stay
    finished, the failed one leaves no half-written folder, and its traceback is in ``<id>.error.log``.
    """
    out = check_run_dir(out_dir)
    plan(recipe)  # the stages chain (checked when the recipe was read; again for a Recipe built in Python)
    steps = steps_of(recipe)
    first, last, rerun = select_steps(steps, until=until, only=only, from_stage=from_stage)
    partial = until is not None or only is not None or from_stage is not None
    resume = resume or partial
    try:
        out.mkdir(parents=True, exist_ok=True)
        with run_lock(out):
            return _run(recipe, out, steps, resume=resume, force=force, first=first, last=last, rerun=rerun,
                        on_stage=on_stage, on_start=on_start)
    except OSError as exc:  # outside a stage: the run directory itself, its recipe copy, a record
        if isinstance(exc, EdgevitError):
            raise
        msg = storage_message(exc, out)
        if msg is None:
            raise
        raise StorageError(f"run directory {out}: {msg}; then rerun with --resume") from exc


LOCK = ".lock"


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on the run directory ``out`` (``fcntl.flock`` on ``out/.lock``, released when the
    process ends, even by SIGKILL) while a run writes into it. Raises :class:`ConfigError` naming the other
    process's pid when another run holds it: two runs in one directory would delete each other's stages."""
    import fcntl

    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"run directory {out} is in use by another edgevit run (pid {other}); wait for it to "
                              f"finish (or stop it), or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def check_before_run(recipe: Recipe, out: Path, steps: list[Step], *, resume: bool, force: bool,
                     rerun: set[int]) -> list[str]:
    """The refusals a run directory can give before any stage runs (shared by :func:`run` and ``--dry-run``): a
    directory holding stages without ``--resume``/``--force``, or ``--resume`` on a run of another recipe
    (:func:`check_same_recipe`). Returns the stage folders it holds. Raises :class:`ConfigError`."""
    existing = sorted(p.name for p in out.glob("[0-9][0-9]_*") if p.is_dir()) if out.exists() else []
    if existing and not (resume or force):
        raise ConfigError(f"run directory {out} already holds stages ({', '.join(existing)}). Pass --resume to "
                          f"continue it, --force to start over, or choose another --out")
    if resume and not force and existing:
        check_same_recipe(out, recipe, steps, rerun=rerun)
    return existing


def _run(recipe: Recipe, out: Path, steps: list[Step], *, resume: bool, force: bool, first: int, last: int,
         rerun: set[int], on_stage, on_start) -> list[dict]:
    ids = [s.id for s in steps]
    existing = check_before_run(recipe, out, steps, resume=resume, force=force, rerun=rerun)
    if force and not resume:
        for name in existing:
            shutil.rmtree(out / name)
        for p in out.glob("*.error.log"):
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out, ids)
    atomic_write_text(out / RESOLVED, recipe.to_yaml())

    ctx = StageContext(recipe=recipe, artifact=None, out_dir=out, run_dir=out, records=[], artifacts={})
    hashes: dict[str, str] = {}  # stage id → content hash of the artefact after it
    for step in steps[: last + 1]:
        if on_start:
            on_start(step.index + 1, last + 1, step.id, step.name)
        final = out / step.id
        inputs = list(dict.fromkeys(hashes.values()))
        key, parts = stage_key(step, recipe, inputs, ctx.records)
        prev = read_record(final)
        reason = _why_not_reuse(prev, key, parts, final) if prev is not None else "it has not finished"
        if step.index < first or (reason is None and step.index not in rerun):
            if reason is not None:  # an earlier stage that --only/--from needs is missing or stale
                flag = "--only" if rerun == {first} else "--from"
                raise ConfigError(f"{flag} {steps[first].id} needs the finished outputs of every earlier stage, but "
                                  f"{step.id} cannot be used: {reason}. Run the earlier stages first (e.g. "
                                  f"`--until {steps[first - 1].id}`), or run without {flag}")
            art = Artifact.from_dict(prev["artifact"], relative_to=final)
            if art.kind == "torch" and step.index == 0:
                art.source = art.source or recipe.model.name
            log.info("%s: finished earlier with the same key %s, skipping", step.id, key)
            _advance(ctx, step, art, prev, hashes, prev["artifact_sha256"])
            if on_stage:
                on_stage(step.id, prev, skipped=True)
            continue
        if prev is not None and step.index not in rerun:
            (log.warning if "library versions changed" in reason else log.info)("%s: running again: %s", step.id,
                                                                                reason)
        rec, art, digest = _run_step(ctx, step, out, key, parts, done=[r["id"] for r in ctx.records])
        _advance(ctx, step, art, rec, hashes, digest)
        if on_stage:
            on_stage(step.id, rec, skipped=False)
    return ctx.records


def _why_not_reuse(prev: dict, key: str, parts: dict, final: Path) -> str | None:
    """Why a finished stage cannot be reused (None: it can): its key changed, or its files changed on disk."""
    if prev.get("key") != key:
        old = prev.get("key_parts")
        if not isinstance(old, dict):
            return "it was written by an older edgevit (no resume key)"
        libs, other = explain_key_change(old, parts)
        if other:
            return "its inputs changed (" + "; ".join(other[:6]) + (", ..." if len(other) > 6 else "") + ")"
        if libs:
            return "library versions changed since it ran: " + ", ".join(libs)
        return "its resume key changed"
    try:
        art = Artifact.from_dict(prev["artifact"], relative_to=final)
        if artifact_sha256(art) != prev.get("artifact_sha256"):
            return f"its artefact files under {final} changed since it finished"
    except (OSError, KeyError, ValueError) as exc:
        return f"its artefact cannot be read ({type(exc).__name__}: {exc})"
    return None


def _advance(ctx: StageContext, step: Step, art: Artifact, rec: dict, hashes: dict, digest: str) -> None:
    ctx.artifact = art
    ctx.artifacts[step.id] = art
    ctx.records.append(rec)
    hashes[step.id] = digest


def _prepare_tmp(out: Path, step: Step, key: str) -> Path:
    """The stage's ``<id>.tmp`` folder: a resumable stage's partial folder is kept (minus ``.partial`` files) when
    it was started with the same key; otherwise a fresh, empty folder."""
    tmp = out / (step.id + ".tmp")
    if tmp.exists():
        state = None
        try:
            state = json.loads((tmp / STATE).read_text())
        except (OSError, ValueError):
            pass
        if getattr(step.cls, "resumable", False) and isinstance(state, dict) and state.get("key") == key:
            remove_partials(tmp)
            log.info("%s: continuing in %s from the checkpoints of the interrupted run", step.id, tmp)
            return tmp
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_json(tmp / STATE, {"key": key})
    return tmp


def _run_step(ctx: StageContext, step: Step, out: Path, key: str, parts: dict, *, done: list[str]):
    final = out / step.id
    stage = step.cls()
    got = ctx.consumed(stage, step.config)  # fail early, naming the stage to add, when the run lacks what it reads
    # the latest stage that handed on this artefact's file: the same whether the earlier stages ran in this process
    # (one object) or were read back from their records on --resume (equal files, other objects)
    input_id = next((k for k, a in reversed(list(ctx.artifacts.items())) if a is got or same_artifact(a, got)), None)
    tmp = _prepare_tmp(out, step, key)  # a finished folder being redone stays until the new one is complete
    ctx.out_dir = tmp
    parent = ctx.records[-1]["id"] if ctx.records else None
    log.info("%s: running", step.id)
    kill_point(f"stage:{step.id}:start")
    t0 = time.time()
    try:
        result = stage.run(ctx, step.config)
        elapsed = time.time() - t0
        art = result.artifact
        if art.path is not None:  # the stage wrote into tmp; point at where it will live after the rename
            try:
                art.path = final / Path(art.path).resolve().relative_to(tmp.resolve())
            except ValueError:
                pass
        rec = {"id": step.id, "stage": step.name, "status": "done", "key": key, "hash": key, "parent": parent,
               "input": input_id, "config": to_dict(step.config), "metrics": relocate(result.metrics, tmp),
               **relocate(result.record, tmp), "artifact": None, "artifact_sha256": None,
               "seconds": round(elapsed, 3), "versions": library_versions(),
               "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key_parts": parts}
        if result.parity is not None:
            rec["parity"] = result.parity.to_dict()
        rec["artifact"] = _artifact_entry(art, final, out)
        # hash the files where they are now (in tmp until the rename)
        on_disk = Artifact.from_dict(art.to_dict(relative_to=final), relative_to=tmp)
        in_tmp = art.path is not None and Path(art.path).resolve().is_relative_to(final.resolve())
        digest = artifact_sha256(on_disk if in_tmp else art)
        rec["artifact_sha256"] = digest
        write_json(tmp / "record.json", rec)
        kill_point(f"stage:{step.id}:rename")
        _swap_in(tmp, final)
    except Exception as exc:
        err = _stage_failed(out, tmp, step, exc, done)
        if not getattr(step.cls, "resumable", False) and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays; frees the space it took
        if err is exc:
            raise
        raise err from exc
    (out / ERROR_LOG.format(id=step.id)).unlink(missing_ok=True)
    return rec, art, digest


def _artifact_entry(art: Artifact, final: Path, out: Path) -> dict:
    """``art.to_dict`` with its path relative to the stage folder, also when it lies in an earlier stage's folder
    (``../02_export_onnx/model.onnx``), so the run directory can be moved."""
    d = art.to_dict(relative_to=final)
    p = d.get("path")
    if p and Path(p).is_absolute() and Path(p).resolve().is_relative_to(out.resolve()):
        d["path"] = os.path.relpath(Path(p).resolve(), final.resolve())
    return d


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the complete ``<id>.tmp`` to ``<id>``. An older ``<id>`` (a stage being redone) is moved aside to
    ``<id>.old`` first and removed after; a kill between the renames is repaired by :func:`_repair_swaps`."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    (final / STATE).unlink(missing_ok=True)
    if old.exists():
        shutil.rmtree(old)


def _repair_swaps(out: Path) -> None:
    """Finish what a kill inside :func:`_swap_in` left: ``<id>.old`` without ``<id>`` is put back (the new folder
    never landed); beside a complete ``<id>`` it is removed."""
    for old in out.glob("[0-9][0-9]_*.old"):
        final = old.with_name(old.name[: -len(".old")])
        if final.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, final)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
