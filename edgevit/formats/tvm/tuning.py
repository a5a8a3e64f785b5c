"""MetaSchedule tuning for the TVM export: lower to fused TIR, tune or reuse a cached database, apply it.

The tuning database is cached under a key (:func:`tuning_key`) that hashes the tuning tasks (the fused TIR
functions: operators and shapes, not weight values), the target and the TVM version, in ``work_dir`` (default
:func:`default_cache_dir`); see :mod:`edgevit.formats.tvm.export` for budgets and the reuse rules
(``"status"``: ``untuned`` | ``tuned`` | ``extended`` | ``reused``). :func:`lower_and_tune` is the entry point;
:func:`copy_database` copies the applied database next to the library.

MetaSchedule's stock builder imports every tensor intrinsic (CUDA, ROCm, Hexagon) in each build worker, beyond its
30 s build timeout on a small busy CPU, so tuning uses its own builder (:func:`_ms_build`) and loads only the CPU
intrinsics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ...errors import ExportError, MissingBackendError
from ..common import first_lines, quiet

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
DB_FILES = ("database_workload.json", "database_tuning_record.json")
UNTUNED_WARNING = (
    "UNTUNED: no MetaSchedule schedules were applied, so matmuls run TVM's default loop nests and the library is "
    "slow (DeiT-Tiny ~1.5 s per image on a 2-core x86 vs ~21 ms in torch eager). Export again with trials ≥ 1000 "
    "(--trials) for a usable CPU library; the tuning database is cached and reused."
)


def default_cache_dir() -> Path:
    """Where tuning databases are cached: ``$EDGEVIT_TVM_CACHE``, else ``$XDG_CACHE_HOME/edgevit/tvm``."""
    env = os.environ.get("EDGEVIT_TVM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "edgevit" / "tvm"


def tuning_key(tasks, target_dict: dict) -> str:
    """Hash of the tuning tasks (TIR workloads: operators and shapes, not weights), the target and TVM's version."""
    import tvm
    import tvm_ffi

    workloads = sorted(str(tvm_ffi.structural_hash(t.dispatched[0])) for t in tasks)
    blob = json.dumps({"workloads": workloads, "target": target_dict, "tvm": tvm.__version__,
                       "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive lock on ``directory`` (two exports tuning the same tasks wait for each other)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _has_database(d: Path) -> bool:
    return all((d / f).exists() and (d / f).stat().st_size > 0 for f in DB_FILES)


def _cache_dir(root: Path, key: str) -> Path:
    """``root/<key>``, or ``root`` itself when it holds this key's database (e.g. the copy next to a library)."""
    own = root / "cache.json"
    if own.exists() and _has_database(root):
        try:
            if json.loads(own.read_text()).get("key") == key:
                return root
        except (OSError, ValueError):
            pass
    return root / key


def lower_and_tune(mod, tgt, tdict: dict, *, trials: int, cache_root: Path, retune: bool,
                    max_trials_per_task: int | None, timeout_s: float, seed: int, name: str):
    """Lower to fused TIR, tune or reuse the cached database, apply it. Returns (IRModule, tuning info)."""
    import tvm
    from tvm import relax
    from tvm.relax import transform as T
    from tvm.s_tir import meta_schedule as ms

    cpu = tgt.kind.name == "llvm"
    t = time.perf_counter()
    passes = [T.DecomposeOpsForInference(), T.CanonicalizeBindings(), relax.get_pipeline("zero")]
    if cpu:
        passes.append(T.AttachAttrLayoutFreeBuffers())
    try:
        with quiet(native=True), tgt:  # legalisation prints topi's C++ warnings: to the log, not the terminal
            mod = tvm.transform.Sequential(passes)(mod)
        tasks = ms.relax_integration.extract_tasks(mod, tgt)
    except Exception as exc:  # TVM C++ errors
        raise ExportError(f"TVM could not lower {name} to TIR for {tdict.get('kind')} ({type(exc).__name__}: "
                          f"{first_lines(exc)})") from exc
    key = tuning_key(tasks, tdict)
    cache = _cache_dir(cache_root, key)
    info: dict[str, Any] = {"status": "untuned", "trials_requested": trials, "tasks": len(tasks), "key": key,
                            "cache_dir": str(cache), "lower_time_s": round(time.perf_counter() - t, 3)}
    busy = trials > 0 or _has_database(cache)  # an untuned export with nothing cached leaves no trace
    with _locked(cache) if busy else contextlib.nullcontext():
        state_path = cache / "cache.json"
        state = json.loads(state_path.read_text()) if state_path.exists() and _has_database(cache) else {}
        if retune:
            for f in (*DB_FILES, "cache.json"):
                (cache / f).unlink(missing_ok=True)
            shutil.rmtree(cache / "logs", ignore_errors=True)
            state = {}
        have = int(state.get("trials_total", 0))
        todo = max(0, trials - have)
        info["cached_trials"] = have
        if todo:
            per_iter = max(1, min(64, todo // max(1, len(tasks))))
            log.info("tuning %d TVM tasks of %s with %d MetaSchedule trials (%d per round) into %s — %s", len(tasks),
                     name, todo, per_iter, cache, "continuing the cached database" if have else "new database")
            mod = _without_layout_free(mod, state.get("layout_free_off", []))
            elapsed, fallbacks = _tune(mod, tgt, cache, trials=todo, per_iter=per_iter,
                                       max_per_task=max_trials_per_task, timeout_s=timeout_s, seed=seed,
                                       tasks=tasks, name=name)
            layout_free_off = sorted({*state.get("layout_free_off", []),
                                      *(f["task"] for f in fallbacks if f["action"] == "layout_free_buffers_off")})
            mod = _without_layout_free(mod, layout_free_off)
            runs = [*state.get("runs", []), {"trials": todo, "time_s": round(elapsed, 1), "per_round": per_iter,
                                             "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
            state = {"format": CACHE_FORMAT, "key": key, "target": tdict, "model": name, "tasks": len(tasks),
                     "trials_total": have + todo, "tuning_time_s_total": round(sum(r["time_s"] for r in runs), 1),
                     "runs": runs, "layout_free_off": layout_free_off,
                     "fallbacks": [*state.get("fallbacks", []), *fallbacks]}
            if fallbacks:
                info["fallbacks"] = fallbacks
            from ...artifact import write_json

            write_json(state_path, state)
            info.update(status="extended" if have else "tuned", trials_run=todo, tuning_time_s=round(elapsed, 1),
                        trials_per_round=per_iter)
        elif _has_database(cache):  # enough trials cached (or a database without our cache.json: trials unknown)
            info.update(status="reused", trials_run=0, tuning_time_s=0.0)
            log.info("TVM tuning skipped: reusing the cached database for these %d tasks and target (%s trials, "
                     "tuned in %s s) from %s", len(tasks), have or "unknown", state.get("tuning_time_s_total", "?"),
                     cache)
        if _has_database(cache):
            if info["status"] == "reused":
                mod = _without_layout_free(mod, state.get("layout_free_off", []))
            info["trials_total"] = int(state.get("trials_total", have))
            info["tuning_time_s_total"] = state.get("tuning_time_s_total")
            mod, applied = _apply_database(mod, tgt, cache, tasks, cpu)
            info.update(applied)
            info["_db_dir"] = str(cache)
    if info["status"] == "untuned":
        info["warning"] = UNTUNED_WARNING if cpu else ("untuned: default GPU schedules (dlight) only; tune with "
                                                       "trials > 0 for speed")
        log.warning("TVM export of %s: %s", name, info["warning"])
    return mod, info


def _apply_database(mod, tgt, cache: Path, tasks, cpu: bool):
    import tvm
    from tvm.relax import transform as T
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(cache))
    tuned = sum(1 for t in tasks if db.query_tuning_record(t.dispatched[0], tgt, "main") is not None)
    post = [T.SplitLayoutRewritePreproc(), T.LiftTransformParams(), T.FoldConstant()] if cpu else []
    try:
        with tgt, db:
            mod = tvm.transform.Sequential([T.MetaScheduleApplyDatabase(), *post])(mod)
    except Exception as exc:  # TVM C++ errors
        raise ExportError(f"applying the tuning database {cache} failed ({type(exc).__name__}: {first_lines(exc)}); "
                          f"export again with retune=True (--retune)") from exc
    return mod, {"tasks_tuned": tuned, "records": len(db), "database": str(cache)}


def _check_tuning_dependencies() -> None:
    from importlib import metadata

    from ..._optional import require

    require("xgboost", extra="tvm", feature="TVM MetaSchedule tuning (its XGBoost cost model)")
    try:
        version = metadata.version("apache-tvm-ffi")
    except metadata.PackageNotFoundError:
        return
    nums = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    if nums >= (0, 1, 15):
        raise MissingBackendError(
            f"apache-tvm-ffi {version} is installed; MetaSchedule tuning segfaults with apache-tvm-ffi 0.1.15.x "
            f"(in tvm::ffi::ToJSONGraph). Install the working version with: pip install 'apache-tvm-ffi<0.1.15' "
            f"(0.1.14.post1), or export with trials=0 (untuned)."
        )


def _load_cpu_tensor_intrinsics() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` without its CUDA/ROCm/Hexagon modules (20–40 s of TVMScript parsing).

    MetaSchedule's TuneContext imports the package for its schedule rules; a CPU target needs only the x86/ARM
    intrinsics. The skipped modules are left importable, so ``import tvm.s_tir.tensor_intrin.cuda`` later (a GPU
    tuning in the same process) registers them for real.
    """
    import importlib
    import sys
    import types

    pkg = "tvm.s_tir.tensor_intrin"
    if pkg in sys.modules:
        return
    skipped = {f"{pkg}.{m}": types.ModuleType(f"{pkg}.{m}") for m in ("cuda", "rocm", "hexagon")}
    for full, placeholder in skipped.items():
        sys.modules.setdefault(full, placeholder)
    try:
        importlib.import_module(pkg)
    finally:
        parent = sys.modules.get(pkg)
        for full, placeholder in skipped.items():
            if sys.modules.get(full) is placeholder:
                del sys.modules[full]
            short = full.rsplit(".", 1)[1]
            if parent is not None and getattr(parent, short, None) is placeholder:
                delattr(parent, short)


def _ms_build(mod, target, _params):
    """MetaSchedule build function (runs in its builder workers): the stock one without its intrinsics import."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target)


@contextlib.contextmanager
def _meta_schedule_console():
    """Keep MetaSchedule's per-round tables off stdout (they still go to the log files in the cache)."""
    ms_log = logging.getLogger("tvm.s_tir.meta_schedule")
    # MetaSchedule's create_loggers re-declares this logger's handlers BY NAME (dictConfig); a handler without a
    # name (attached by another library or a test harness) makes it fail ("'NoneType' has no attribute 'format'")
    for h in [h for h in ms_log.handlers if h.get_name() is None]:
        ms_log.removeHandler(h)
    old = ms_log.level
    ms_log.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    try:
        yield
    finally:
        ms_log.setLevel(old)
        for h in ms_log.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.WARNING)


def _tune(mod, tgt, cache: Path, *, trials: int, per_iter: int, max_per_task: int | None, timeout_s: float,
          seed: int, tasks=None, name: str = "model") -> tuple[float, list[dict]]:
    """Tune ``mod``'s tasks into the database in ``cache``; returns (seconds, fallbacks).

    A task whose search fails inside TVM (TVM 0.27 fails on some GroupNorm tasks with layout-free buffers) is
    named with its operators and retried without the ``AttachAttrLayoutFreeBuffers`` attribute; if it fails again
    it is left untuned. Each fallback is logged as a warning and returned as a dict (task, operators, action,
    error); the other tasks keep the remaining trial budget.
    """
    from tvm.s_tir import meta_schedule as ms

    from .target import usable_cores

    _check_tuning_dependencies()
    if tgt.kind.name == "llvm":
        _load_cpu_tensor_intrinsics()
    else:
        import tvm.s_tir.tensor_intrin  # noqa: F401 - GPU schedule rules need the CUDA intrinsics
    t = time.perf_counter()
    fallbacks: list[dict] = []
    layout_free_off: set[str] = set()
    untuned: set[str] = set()
    done = 0
    progress = TuningProgress(trials, t0=t)
    try:
        while True:
            cur = _without_layout_free(mod, sorted(layout_free_off))
            todo = [x for x in ms.relax_integration.extract_tasks(cur, tgt) if x.task_name not in untuned]
            budget = trials - done
            if not todo or budget <= 0:
                break
            scheduler_log = cache / "logs" / "tvm.s_tir.meta_schedule.logging.task_scheduler.log"
            log_start = scheduler_log.stat().st_size if scheduler_log.exists() else 0
            progress.start_round([x.task_name for x in todo])
            try:
                with _meta_schedule_console():
                    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                        extracted_tasks=todo, work_dir=str(cache), seed=seed)
                    builder = ms.builder.LocalBuilder(f_build=_ms_build, timeout_sec=timeout_s,
                                                      max_workers=usable_cores())
                    runner = ms.runner.LocalRunner(timeout_sec=timeout_s)
                    ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(cache),
                                       max_trials_global=budget, max_trials_per_task=max_per_task,
                                       num_trials_per_iter=per_iter, builder=builder, runner=runner,
                                       measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                                          progress.callback()])
                break
            except Exception as exc:  # TVM raises from C++ and from its worker pools
                done = progress.done
                failed = _failing_task(scheduler_log, log_start, [x.task_name for x in todo])
                if failed is None:
                    raise
                ops = task_operators(failed)
                if failed not in layout_free_off and _has_layout_free(cur, failed):
                    action = "layout_free_buffers_off"
                    layout_free_off.add(failed)
                    what = "retrying it without the AttachAttrLayoutFreeBuffers attribute (a TVM bug)"
                else:
                    action = "untuned"
                    untuned.add(failed)
                    what = "leaving it untuned (default schedule); the other tasks are tuned"
                fallbacks.append({"task": failed, "operators": ops, "action": action, "error": first_lines(exc)})
                log.warning("TVM export of %s: MetaSchedule failed in tuning task %r (operator%s %s): %s:"
                            " %s; %s", name, failed, "s" if len(ops) > 1 else "", ", ".join(ops) or "?",
                            type(exc).__name__, first_lines(exc), what)
    except Exception as exc:
        failed = fallbacks[-1]["task"] if fallbacks else None
        where = (f" in task {failed!r} (operators {', '.join(task_operators(failed))})" if failed else "")
        raise ExportError(f"MetaSchedule tuning failed{where} ({type(exc).__name__}: {first_lines(exc)}). Logs: "
                          f"{cache / 'logs'}. Export with trials=0 to skip tuning.") from exc
    finally:
        progress.close()
    return time.perf_counter() - t, fallbacks


_TASK_PICK = re.compile(r'TaskScheduler picks Task #\d+: "([^"]+)"')


def _failing_task(scheduler_log: Path, start: int, names: list[str]) -> str | None:
    """The task MetaSchedule was working on when it raised: the last one its scheduler log says it picked."""
    try:
        with open(scheduler_log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    picked = _TASK_PICK.findall(text)
    return picked[-1] if picked and picked[-1] in names else None


def task_operators(task_name: str) -> list[str]:
    """The Relax operators a fused TIR task was made of, read from its name: ``fused_group_norm_relu1`` →
    ``["group_norm", "relu"]`` (longest registered operator names first; unknown words are kept as they are)."""
    from tvm.ir import Op

    known = {n.rsplit(".", 1)[1] for n in Op.list_op_names() if n.startswith("relax.")}
    words = re.sub(r"\d+$", "", task_name).removeprefix("fused_").split("_")
    ops, i = [], 0
    while i < len(words):
        for j in range(len(words), i, -1):
            cand = "_".join(words[i:j])
            if cand in known:
                ops.append(cand)
                i = j
                break
        else:
            ops.append(words[i])
            i += 1
    return ops


def _layout_free_key(func) -> str | None:
    attrs = getattr(func, "attrs", None)
    if attrs is None:
        return None
    return next((k for k in list(attrs.keys()) if "layout_free" in str(k)), None)


def _has_layout_free(mod, name: str) -> bool:
    gv = next((g for g in mod.get_global_vars() if g.name_hint == name), None)
    return gv is not None and _layout_free_key(mod[gv]) is not None


def _without_layout_free(mod, names):
    """``mod`` with the layout-free-buffer attribute removed from the TIR functions ``names`` (what
    ``AttachAttrLayoutFreeBuffers`` added), so their tasks tune and apply as if the pass had skipped them."""
    if not names:
        return mod
    mod = mod.clone()
    for gv in list(mod.get_global_vars()):
        if gv.name_hint in names:
            key = _layout_free_key(mod[gv])
            if key is not None:
                mod[gv] = mod[gv].without_attr(key)
    return mod


class TuningProgress:
    """Trials measured so far with elapsed time and an ETA: a tqdm bar on a terminal and an INFO line per
    MetaSchedule round (DEBUG when progress is off: not a terminal, or ``EDGEVIT_PROGRESS=0``)."""

    def __init__(self, total: int, t0: float | None = None):
        from ...progress import enabled, progress

        self.total, self.done, self.t0 = total, 0, t0 or time.perf_counter()
        self.tasks: list[str] = []
        self.level = logging.INFO if enabled() else logging.DEBUG
        self.bar = progress(total=total, desc="TVM tuning", unit="trial")

    def start_round(self, task_names: list[str]) -> None:
        self.tasks = task_names

    def line(self, task: str) -> str:
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return (f"TVM tuning: {self.done}/{self.total} trials, task {task!r}, elapsed {_mmss(elapsed)}, "
                f"ETA {_mmss(eta)}")

    def add(self, task_id: int, n: int) -> None:
        n = min(n, self.total - self.done)
        self.done += n
        task = self.tasks[task_id] if 0 <= task_id < len(self.tasks) else f"#{task_id}"
        self.bar.update(n)
        self.bar.set_postfix_str(task, refresh=False)
        log.log(self.level, "%s", self.line(task))

    def callback(self):
        from tvm.ir.utils import derived_object
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

        owner = self

        @derived_object
        class _Progress(PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                owner.add(int(task_id), len(measure_candidates))

        return _Progress()

    def close(self) -> None:
        self.bar.close()


def _mmss(seconds: float) -> str:
    import math

    if math.isnan(seconds):  # nothing measured yet
        return "?"
    m, sec = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}" if m >= 60 else f"{m}:{sec:02d}"


def copy_database(tuning: dict, library: Path) -> str | None:
    """Copy the applied database next to the library (``<stem>_tuning/``); its path, or None."""
    src = tuning.get("_db_dir")
    if not src:
        return None
    dst = library.with_name(f"{library.stem}_tuning")
    if dst.exists() and dst.resolve() == Path(src).resolve():
        return str(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in (*DB_FILES, "cache.json"):
        if (Path(src) / f).exists():
            shutil.copy2(Path(src) / f, dst / f)
    return str(dst)
