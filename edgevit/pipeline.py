"""Run a recipe: one folder per stage, written atomically, resumable by recipe hash."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from .artifact import Artifact, write_json
from .errors import ConfigError
from .recipe import Recipe
from .stages import STAGES, StageContext
from .versions import library_versions

log = logging.getLogger(__name__)

LOAD_ID = "00_load"


def plan(recipe: Recipe) -> list[dict]:
    """The steps a run will take, in order (the implicit load step first)."""
    steps = [{"id": LOAD_ID, "stage": "load", "config": {"model": recipe.model.name}}]
    for s, h in zip(recipe.stages, recipe.stage_hashes()):
        steps.append({"id": s.id, "stage": s.stage, "config": s.to_dict(), "hash": h})
    return steps


def _load_hash(recipe: Recipe) -> str:
    import hashlib
    import json

    from .config import to_dict

    return hashlib.sha256(json.dumps(to_dict(recipe.model), sort_keys=True).encode()).hexdigest()[:16]


def _finished(stage_dir: Path, expected_hash: str) -> dict | None:
    rec_path = stage_dir / "record.json"
    if not rec_path.exists():
        return None
    import json

    try:
        rec = json.loads(rec_path.read_text())
    except ValueError:
        return None
    return rec if rec.get("status") == "done" and rec.get("hash") == expected_hash else None


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


def run(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, force: bool = False,
        on_stage=None, on_start=None) -> list[dict]:
    """Run every stage of ``recipe`` into ``out_dir``; return the stage records.

    A stage folder is written as ``<id>.tmp`` and renamed when the stage finishes. With ``resume`` a finished
    stage whose hash still matches is skipped (its artefact is reloaded); the first stage that does not match
    and everything after it run again.

    ``on_start(index, total, sid, name)`` is called before each step (1-based index, the load step included) and
    ``on_stage(sid, record, skipped)`` after it: the CLI's run display hangs on them.
    """
    out = check_run_dir(out_dir)
    existing = [p for p in out.glob("[0-9][0-9]_*") if p.is_dir()] if out.exists() else []
    if existing and not (resume or force):
        raise ConfigError(f"run directory {out} already holds stages ({', '.join(sorted(p.name for p in existing))}). "
                          f"Pass --resume to continue it, --force to start over, or choose another --out")
    if force and out.exists():
        for p in existing:
            shutil.rmtree(p)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.resolved.yaml").write_text(recipe.to_yaml())

    ids = [LOAD_ID] + [s.id for s in recipe.stages]
    for p in out.glob("[0-9][0-9]_*"):
        if p.is_dir() and (p.name.endswith(".tmp") or p.name not in ids):
            shutil.rmtree(p)  # leftovers of a killed stage, or of another recipe's stages

    hashes = [_load_hash(recipe)] + recipe.stage_hashes()
    entries = [("load", LOAD_ID, STAGES.get("load").Config())] + [(s.stage, s.id, s.config) for s in recipe.stages]
    ctx = StageContext(recipe=recipe, artifact=None, out_dir=out, run_dir=out, records=[], artifacts={})
    redo = not resume
    for index, ((name, sid, conf), h) in enumerate(zip(entries, hashes), start=1):
        if on_start:
            on_start(index, len(entries), sid, name)
        final = out / sid
        rec = None if redo else _finished(final, h)
        if rec is not None:
            log.info("%s: finished earlier with the same recipe hash %s, skipping", sid, h)
            art = Artifact.from_dict(rec["artifact"], relative_to=final)
            if art.kind == "torch" and sid == LOAD_ID:
                art.source = art.source or recipe.model.name
            ctx.artifact = art
            ctx.artifacts[sid] = art
            ctx.records.append(rec)
            if on_stage:
                on_stage(sid, rec, skipped=True)
            continue
        redo = True  # everything after a redone stage is redone too
        if final.exists():
            shutil.rmtree(final)
        tmp = out / (sid + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        stage = STAGES.get(name)()
        ctx.out_dir = tmp
        parent = ctx.records[-1]["id"] if ctx.records else None
        log.info("%s: running", sid)
        t0 = time.time()
        ctx.consumed(stage)  # fail early, naming the stage to add, when the run lacks what this stage reads
        result = stage.run(ctx, conf)
        elapsed = time.time() - t0
        art = result.artifact
        if art.path is not None:  # the stage wrote into tmp; point at where it will live after the rename
            try:
                art.path = final / Path(art.path).resolve().relative_to(tmp.resolve())
            except ValueError:
                pass
        from .config import to_dict

        rec = {"id": sid, "stage": name, "status": "done", "hash": h, "parent": parent,
               "config": to_dict(conf), "metrics": relocate(result.metrics, tmp), **relocate(result.record, tmp),
               "artifact": None, "seconds": round(elapsed, 3), "versions": library_versions(),
               "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if result.parity is not None:
            rec["parity"] = result.parity.to_dict()
        rec["artifact"] = art.to_dict(relative_to=final)
        write_json(tmp / "record.json", rec)
        os.replace(tmp, final)
        ctx.artifact = art
        ctx.artifacts[sid] = art
        ctx.records.append(rec)
        if on_stage:
            on_stage(sid, rec, skipped=False)
    return ctx.records
