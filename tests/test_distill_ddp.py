"""Data-parallel distillation under torchrun: 2 CPU processes (gloo) write a rank-sharded cache and train from it
for a few steps on real Fashion-MNIST images; both ranks must end with identical parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

N_TRAIN, K, EPOCHS = 48, 3, 2


def _torchrun(args: list[str], tmp_path, timeout: int = 600, quiet: bool = True,
              progress: str = "0") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEVIT_PROGRESS": progress}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgevit", *(["-q"] if quiet else []), "distill", *args]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def sharded_cache(tmp_path_factory, teacher_available):
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    from edgevit.errors import DataError

    try:
        from edgevit.data import load_dataset

        load_dataset("fashion-mnist", "test", limit=1)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed: {exc}")
    tmp = tmp_path_factory.mktemp("ddp")
    proc = _torchrun(["cache", "--teacher", "fmnist-vit", "--epochs", str(EPOCHS), "--topk", str(K), "--limit",
                      str(N_TRAIN), "--out", str(tmp / "cache"), "--json", str(tmp / "cache.json")], tmp)
    assert "2 process(es)" in proc.stdout
    return tmp


def test_rank_sharded_cache_matches_single_process_seeds(sharded_cache):
    from edgevit.methods.distill.augment import epoch_seeds
    from edgevit.methods.distill.cache import TeacherCache

    path = sharded_cache / "cache"
    rec = json.loads((sharded_cache / "cache.json").read_text())
    assert rec["world_size"] == 2 and rec["epochs_written"] == [0, 1]
    cache = TeacherCache(path)
    for e in range(EPOCHS):
        files = sorted(p.name for p in (path / f"epoch_{e:04d}").iterdir() if p.suffix in (".keys", ".values"))
        assert files == ["rank_00.keys", "rank_00.values", "rank_01.keys", "rank_01.values"]
        for r in (0, 1):
            keys = np.array((path / f"epoch_{e:04d}" / f"rank_{r:02d}.keys").read_text().split(), dtype=int)
            assert (keys == np.arange(r, N_TRAIN, 2)).all()
            assert (path / f"epoch_{e:04d}" / f"rank_{r:02d}.values").stat().st_size == len(keys) * (4 * K + 4)
        seeds, idx, _ = cache.epoch(e).get(np.arange(N_TRAIN))
        assert (seeds == epoch_seeds(0, e, N_TRAIN)).all()  # the same seeds a single process would store
        assert (idx >= 0).all() and (idx < 10).all()


def test_two_cpu_ranks_end_with_identical_parameters(sharded_cache):
    from safetensors.torch import load_file

    from edgevit.methods.distill.cache import weights_sha256
    from edgevit.models import create

    out = sharded_cache / "run"
    proc = _torchrun(["train", "--student", "fmnist-vit-tiny", "--cache", "cache", "--epochs", str(EPOCHS),
                      "--batch-size", "8", "--max-steps", "2", "--no-eval", "--out", str(out), "--json",
                      str(out / "rec.json")], sharded_cache)
    assert "teacher calls 0, 2 process(es)" in proc.stdout
    rec = json.loads((out / "rec.json").read_text())
    assert rec["world_size"] == 2 and rec["backend"] == "gloo" and rec["teacher_calls"] == 0
    assert rec["cache_epochs_used"] == [0, 1] and rec["history"][-1]["steps"] == 2
    r0, r1 = rec["ranks"]
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["param_sha256"] == r1["param_sha256"] and r0["state_sha256"] == r1["state_sha256"]
    saved = create(str(out / "student.safetensors"))
    assert weights_sha256(saved) == r0["state_sha256"]  # rank 0's checkpoint is the state both ranks hold
    init = create("fmnist-vit-tiny")
    assert any((init.state_dict()[k] != v).any() for k, v in load_file(out / "student.safetensors").items())


def test_only_rank_0_prints_epoch_lines_and_progress(sharded_cache):
    """Issue 16: under torchrun every rank printed its own epoch line. Logged at INFO level (no -q), with progress
    bars allowed, the 2-rank run shows each epoch line and the result line exactly once."""
    out = sharded_cache / "run_log"
    proc = _torchrun(["train", "--student", "fmnist-vit-tiny", "--cache", "cache", "--epochs", str(EPOCHS),
                      "--batch-size", "8", "--max-steps", "1", "--eval-limit", "16", "--out", str(out)],
                     sharded_cache, quiet=False, progress="1")
    both = proc.stdout + proc.stderr
    for e in range(1, EPOCHS + 1):
        assert both.count(f"epoch {e}/{EPOCHS}: loss") == 1, both[-3000:]
    assert proc.stdout.count("trained fmnist-vit-tiny") == 1
    assert both.count("rank 1/2") == 0 and both.count("rank 0/2") == 1  # distributed.setup's INFO line
    assert "[rank 1]" not in both  # rank 1 had nothing to warn about, and said nothing


def test_is_main_process_follows_torchrun_rank(monkeypatch):
    import logging

    from edgevit.progress import MainProcessFilter, enabled, is_main_process

    monkeypatch.setenv("EDGEVIT_PROGRESS", "1")
    monkeypatch.setenv("RANK", "0")
    assert is_main_process() and enabled()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process() and not enabled()
    f = MainProcessFilter()
    info = logging.LogRecord("edgevit", logging.INFO, __file__, 1, "epoch 1/2: loss", None, None)
    warn = logging.LogRecord("edgevit", logging.WARNING, __file__, 1, "disk almost full", None, None)
    assert not f.filter(info) and f.filter(warn) and warn.getMessage() == "[rank 1] disk almost full"
