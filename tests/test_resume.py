"""Exact resume of `edgevit compress` after SIGKILL: real child processes killed inside stages (at named points,
mid-write, and at a random time), then `--resume`; the artefacts must be byte-identical to an uninterrupted run
and the records equal apart from their timing fields (edgevit.pipeline.VOLATILE_KEYS).

The recipe is load → distill (a 2-epoch student from the packaged teacher's cache) → export_onnx → eval, on 32
images: each child spends most of its time importing torch and timm.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgevit import faults, pipeline
from edgevit.artifact import Artifact, artifact_sha256
from edgevit.fileio import PARTIAL

ROOT = Path(__file__).resolve().parents[1]

RECIPE = {
    "name": "killresume", "model": {"name": "fmnist-vit-nano"}, "data": {"limit": 32, "batch_size": 32},
    "runtimes": ["onnxruntime"],
    "stages": [
        {"stage": "distill", "teacher": "fmnist-vit", "epochs": 2, "topk": 3, "batch_size": 16, "eval_limit": 16,
         "cache_batch_size": 32},
        {"stage": "export_onnx", "parity_samples": 8, "exporter": "torchscript", "simplify": False},
        {"stage": "eval", "runtime": "onnxruntime"},
    ],
}
IDS = ["00_load", "01_distill", "02_export_onnx", "03_eval"]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory, teacher_available):
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    path = tmp_path_factory.mktemp("recipe") / "killresume.yaml"
    path.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    return path


def _env(kill_at: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    env.pop(faults.ENV, None)
    if kill_at:
        env[faults.ENV] = kill_at
    return env


def compress(recipe: Path, out: Path, *args: str, kill_at: str | None = None, **popen) -> subprocess.Popen:
    """`edgevit compress RECIPE --out OUT ARGS` as a child process (one torch thread: the same bits every run)."""
    return subprocess.Popen([sys.executable, "-m", "edgevit", "-v", "compress", str(recipe), "--out", str(out), *args],
                            cwd=ROOT, env=_env(kill_at), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    text, _ = proc.communicate(timeout=timeout)
    return proc.returncode, text


def killed_at(recipe: Path, out: Path, point: str, *args: str) -> str:
    rc, text = finish(compress(recipe, out, *args, kill_at=point))
    assert rc == -signal.SIGKILL, f"the child was to kill itself at {point}, it exited {rc}:\n{text[-3000:]}"
    return text


def check_consistent(out: Path) -> None:
    """What a reader of a killed run may see: every stage folder without .tmp is finished and its files hash to
    its record; nothing else is presented as finished."""
    for d in out.iterdir():
        if d.is_dir() and d.name[:2].isdigit() and not d.name.endswith((".tmp", ".old")):
            rec = pipeline.read_record(d)
            assert rec is not None, f"{d} is a stage folder without a finished record"
            art = Artifact.from_dict(rec["artifact"], relative_to=d)
            assert artifact_sha256(art) == rec["artifact_sha256"], f"{d}: files differ from the record"


def comparable_files(out: Path) -> dict[str, object]:
    """Every file of the stage folders and the distillation cache: JSON as records without timing fields (run
    directory paths replaced), other files as bytes."""
    files = {}
    for f in sorted(out.rglob("*")):
        rel = str(f.relative_to(out))
        if not f.is_file() or not rel[:2].isdigit() and not rel.startswith("distill_cache") or rel.endswith(".log"):
            continue
        if f.suffix == ".json":
            files[rel] = pipeline.comparable_record(json.loads(f.read_text().replace(str(out), "<run>")))
        else:
            files[rel] = f.read_bytes()
    return files


def assert_same_run(ref: Path, out: Path) -> None:
    a, b = comparable_files(ref), comparable_files(out)
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"differ from the uninterrupted run: {different}"
    assert not [p for p in out.rglob(f"*{PARTIAL}")] and not list(out.glob("*.tmp")) and not list(out.glob("*.old"))
    assert not list(out.glob("*.error.log"))


@pytest.fixture(scope="module")
def reference(recipe_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    rc, text = finish(compress(recipe_file, out))
    assert rc == 0, text[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [*IDS, "distill_cache"]
    return out


def test_kill_mid_write_and_at_random_time_then_resume_is_exact(recipe_file, reference, tmp_path):
    out = tmp_path / "run"
    # 1. die mid-write of the 2nd epoch's checkpoint (half its bytes on disk): epoch 1's checkpoint is intact
    killed_at(recipe_file, out, "write:checkpoint.pt@2")
    tmp = out / "01_distill.tmp"
    assert (tmp / "checkpoint.pt").is_file() and (tmp / f".checkpoint.pt{PARTIAL}").is_file()
    assert not (out / "01_distill").exists()
    check_consistent(out)

    # 2. resume: distillation continues after epoch 1 (not from scratch); killed at a random time in the export
    proc = compress(recipe_file, out, "--resume")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "02_export_onnx: running" in line:
            delay = random.Random().uniform(0.0, 1.5)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    finish(proc)
    log = (out / "compress.log").read_text()  # the run's log file: one line per message, every invocation
    assert "01_distill: continuing in" in log and "01_distill.tmp/checkpoint.pt after epoch 1" in log, log[-3000:]
    check_consistent(out)

    # 3. resume to the end
    rc, text = finish(compress(recipe_file, out, "--resume"))
    assert rc == 0, text[-3000:]
    assert "skip 00_load" in text and "skip 01_distill" in text, text[-3000:]
    assert_same_run(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    "stage:00_load:start", "write:model.safetensors", "stage:00_load:rename", "write:header.json",
    "distill:epoch:1", "write:student.safetensors@2", "write:record.json@2", "stage:01_distill:rename",
    "stage:02_export_onnx:start", "stage:02_export_onnx:rename", "write:record.json@4",
])
def test_kill_at_each_named_point_then_resume_is_exact(recipe_file, reference, tmp_path, point):
    out = tmp_path / "run"
    killed_at(recipe_file, out, point)
    check_consistent(out)
    rc, text = finish(compress(recipe_file, out, "--resume"))
    assert rc == 0, text[-3000:]
    assert_same_run(reference, out)


def test_atomic_output_is_all_or_nothing(tmp_path):
    from edgevit.fileio import atomic_output, atomic_write_text, remove_partials

    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    (tmp_path / f".a.json{PARTIAL}").write_text("what a kill leaves")
    assert [p.name for p in remove_partials(tmp_path)] == [f".a.json{PARTIAL}"] and target.read_text() == "old"


def test_comparable_record_drops_only_timings_and_run_history():
    rec = {"seconds": 1.0, "metrics": {"top1": 0.5, "latency": [{"median_ms": 3.0, "batch": 1, "runs": 10}],
                                       "cache": {"reused": True, "path": "x"}, "export_time_s": 2.0}}
    assert pipeline.comparable_record(rec) == {"metrics": {"top1": 0.5, "latency": [{"batch": 1}],
                                                           "cache": {"path": "x"}}}


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """Files written through atomic_output have the mode open() would give under the umask (safetensors alone
    writes 0600 files, unreadable by the other users of a shared model folder)."""
    import os

    from edgevit.models import create, save_checkpoint

    mask = os.umask(0)
    os.umask(mask)
    p = save_checkpoint(create("fmnist-vit-nano"), tmp_path / "m.safetensors")
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
