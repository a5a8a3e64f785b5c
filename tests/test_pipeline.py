import json
import shutil

import pytest
import yaml

from edgevit import pipeline
from edgevit.errors import ConfigError, EdgevitError
from edgevit.recipe import apply_overrides, from_raw
from edgevit.stages import STAGES, Stage, register_stage


def small_recipe(**over):
    raw = {
        "name": "tiny", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 40, "batch_size": 20},
        "runtimes": ["onnxruntime"],
        "stages": [
            {"stage": "eval"},
            {"stage": "export_onnx", "parity_samples": 16},
            {"stage": "eval", "runtime": "onnxruntime"},
            {"stage": "profile", "batch": [1, 2], "duration_s": 0.1, "warmup_s": 0.05, "min_runs": 3,
             "per_layer": True, "per_layer_runs": 5},
            {"stage": "report"},
        ],
    }
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fmnist_test_small):
    out = tmp_path_factory.mktemp("run")
    records = pipeline.run(from_raw(small_recipe()), out)
    return out, records


def test_stage_registry_lists_builtins_and_refuses_duplicates():
    assert {"load", "eval", "export_onnx", "profile", "report"} <= set(STAGES.names())

    class Dup(Stage):
        name = "eval"
        Config = STAGES.get("eval").Config

    with pytest.raises(KeyError, match="already registered"):
        register_stage(Dup)


def test_run_writes_one_folder_per_stage(finished_run):
    out, records = finished_run
    assert [r["id"] for r in records] == ["00_load", "01_eval", "02_export_onnx", "03_eval", "04_profile", "05_report"]
    for r in records:
        rec = json.loads((out / r["id"] / "record.json").read_text())
        assert rec["status"] == "done" and rec["hash"] and "versions" in rec and "seconds" in rec
        assert ".tmp/" not in json.dumps(rec), f"{r['id']} record points into the temporary stage folder"
    assert records[1]["parent"] == "00_load"
    assert (out / "02_export_onnx" / "model.onnx").exists()
    assert (out / "recipe.resolved.yaml").exists()
    assert not list(out.glob("*.tmp"))


def test_torch_and_onnx_accuracy_agree(finished_run):
    _, records = finished_run
    torch_eval, onnx_eval = records[1]["metrics"], records[3]["metrics"]
    assert torch_eval["n"] == onnx_eval["n"] == 40
    assert abs(torch_eval["top1"] - onnx_eval["top1"]) <= 1 / 40
    exp = records[2]["metrics"]
    assert exp["max_abs_diff"] < 1e-3 and exp["top1_agreement"] == 1.0


def test_profile_and_report(finished_run):
    out, records = finished_run
    lat = records[4]["metrics"]["latency"]
    assert {(r["runtime"], r["batch"]) for r in lat} == {("torch", 1), ("torch", 2), ("onnxruntime", 1),
                                                        ("onnxruntime", 2)}
    for r in lat:
        assert r["median_ms"] > 0 and r["runs"] >= 3
    layers = records[4]["metrics"]["per_layer"]  # per_layer: true: every runtime × batch, fmnist-vit-tiny's 6 blocks
    assert {(p["runtime"], p["batch"]) for p in layers["profiles"]} == {(r, b) for r, b in
                                                                        {(r["runtime"], r["batch"]) for r in lat}}
    assert all(p["blocks"] == 6 for p in layers["profiles"])
    assert (out / "04_profile" / "per_layer.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "## Accuracy" in md and "## Latency (measured)" in md and "## Exports" in md
    doc = json.loads((out / "report.json").read_text())
    assert len(doc["summary"]["latency"]) == 4


def test_existing_run_needs_resume_or_force(finished_run):
    out, _ = finished_run
    with pytest.raises(ConfigError, match="--resume"):
        pipeline.run(from_raw(small_recipe()), out)


def test_resume_skips_finished_and_redoes_killed(tmp_path, finished_run):
    src, _ = finished_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    # simulate a kill during stage 3: its folder is a temp folder, later ones never happened
    shutil.rmtree(out / "04_profile")
    shutil.rmtree(out / "05_report")
    (out / "03_eval").rename(out / "03_eval.tmp")
    seen = []
    pipeline.run(from_raw(small_recipe()), out, resume=True, on_stage=lambda sid, rec, skipped: seen.append((sid, skipped)))
    assert seen == [("00_load", True), ("01_eval", True), ("02_export_onnx", True), ("03_eval", False),
                    ("04_profile", False), ("05_report", False)]
    assert not (out / "03_eval.tmp").exists()


def test_resume_redoes_from_changed_stage(tmp_path, finished_run):
    src, _ = finished_run
    out = tmp_path / "copy2"
    shutil.copytree(src, out)
    changed = from_raw(apply_overrides(small_recipe(), ["stages.3.batch=[1]"]))
    # another recipe for finished stages: refused, listing the key, its stage and the values
    with pytest.raises(ConfigError, match=r"(?s)stages\.3\.batch \(04_profile\): \[1, 2\] → \[1\].*--force") as e:
        pipeline.run(changed, out, resume=True)
    assert "finished stages (04_profile, 05_report) depend" in str(e.value)  # not the stages before it
    seen = []
    pipeline.run(changed, out, resume=True, force=True,
                 on_stage=lambda sid, rec, skipped: seen.append((sid, skipped)))
    assert [s for _, s in seen] == [True, True, True, True, False, False]


def test_run_refuses_an_out_that_is_a_file(tmp_path):
    from edgevit.recipe import load_recipe

    afile = tmp_path / "afile"
    afile.write_text("x")
    recipe = load_recipe("examples/recipes/minimal.yaml")
    with pytest.raises(ConfigError, match="exists and is a file, not a directory"):
        pipeline.run(recipe, afile)
    with pytest.raises(ConfigError, match="is a file; choose another --out"):
        pipeline.run(recipe, afile / "sub" / "run")
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _seen():
    seen = []
    return seen, lambda sid, rec, skipped: seen.append((sid, skipped))


def test_partial_runs_until_only_from(tmp_path, finished_run):
    src, _ = finished_run
    recipe = from_raw(small_recipe())
    # --until on a new run directory: the stages up to it, nothing after
    fresh = tmp_path / "fresh"
    seen, cb = _seen()
    pipeline.run(recipe, fresh, until="01_eval", on_stage=cb)
    assert seen == [("00_load", False), ("01_eval", False)]
    assert sorted(p.name for p in fresh.iterdir() if p.is_dir()) == ["00_load", "01_eval"]
    # --only reruns one finished stage; --from reruns it and everything after; earlier stages are loaded
    out = _copy(src, tmp_path / "copy")
    seen, cb = _seen()
    pipeline.run(recipe, out, only="03_eval", on_stage=cb)
    assert seen == [("00_load", True), ("01_eval", True), ("02_export_onnx", True), ("03_eval", False)]
    seen, cb = _seen()
    pipeline.run(recipe, out, from_stage="profile", on_stage=cb)
    assert [s for _, s in seen] == [True, True, True, True, False, False]
    # bad names, ambiguous names, and earlier outputs that are missing
    with pytest.raises(ConfigError, match="no such stage in this recipe; give a stage id or name: 00_load, 01_eval"):
        pipeline.run(recipe, out, only="quantize")
    with pytest.raises(ConfigError, match=r"2 'eval' stages \(01_eval, 03_eval\); give the stage id"):
        pipeline.run(recipe, out, until="eval")
    with pytest.raises(ConfigError, match="exclusive"):
        pipeline.run(recipe, out, until="report", only="report")
    with pytest.raises(ConfigError, match=r"--from 04_profile needs the finished outputs of every earlier stage, but "
                                          r"02_export_onnx cannot be used: it has not finished.*--until 03_eval"):
        pipeline.run(recipe, fresh, from_stage="profile")


def test_cli_partial_flags_and_unknown_stage(tmp_path, capsys):
    from edgevit.cli import main

    assert main(["compress", "examples/recipes/minimal.yaml", "--out", str(tmp_path / "r"), "--dry-run",
                 "--until", "export_onnx"]) == 0
    plan = {ln.split()[1]: ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")
            and ln.split()[1][:2].isdigit()}  # the dry run prints what the same flags would run
    assert plan == {"00_load": "run", "01_eval": "run", "02_export_onnx": "run", "03_eval": "skip",
                    "04_profile": "skip", "05_report": "skip"}, plan
    assert main(["compress", "examples/recipes/minimal.yaml", "--out", str(tmp_path / "r"), "--dry-run",
                 "--from", "quantize"]) == 2
    err = capsys.readouterr().err
    assert "--from quantize: no such stage in this recipe" in err and "02_export_onnx" in err


def test_dry_run_shows_what_resume_and_from_would_do(tmp_path, finished_run, capsys):
    from edgevit.cli import main

    src, _ = finished_run
    out = _copy(src, tmp_path / "copy")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe()))
    assert main(["compress", str(recipe), "--out", str(out), "--dry-run", "--from", "profile"]) == 0
    plan = {ln.split()[1]: ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")
            and ln.split()[1][:2].isdigit()}
    assert plan == {"00_load": "use", "01_eval": "use", "02_export_onnx": "use", "03_eval": "use",
                    "04_profile": "redo", "05_report": "redo"}, plan
    assert main(["compress", str(recipe), "--out", str(out), "--dry-run", "--resume"]) == 0
    plan = {ln.split()[1]: ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")
            and ln.split()[1][:2].isdigit()}
    assert set(plan.values()) == {"reuse?"}, plan
    assert main(["compress", str(recipe), "--out", str(tmp_path / "new"), "--dry-run", "--only", "report"]) == 2
    cap = capsys.readouterr()
    assert "MISSING 04_profile" in cap.out and "--only would stop: 00_load, 01_eval" in cap.err
    # the run's own refusals, before any stage: a finished directory without --resume, another recipe with it
    assert main(["compress", str(recipe), "--out", str(out), "--dry-run"]) == 2
    assert "already holds stages" in capsys.readouterr().err
    assert main(["compress", str(recipe), "--out", str(out), "--dry-run", "--resume", "--set",
                 "stages.1.parity_samples=8"]) == 2
    assert "stages.1.parity_samples (02_export_onnx): 16 → 8" in capsys.readouterr().err


def test_a_new_target_redoes_only_the_stages_that_read_targets(tmp_path, finished_run):
    """The resume key holds only the recipe sections a stage reads (Stage.reads_context): a target added to the
    recipe redoes the profile (its predictions) and the report, not the load, the export or the evaluations."""
    src, _ = finished_run
    out = _copy(src, tmp_path / "copy")
    seen, cb = _seen()
    pipeline.run(from_raw(small_recipe(targets=["raspberry-pi-5"])), out, resume=True, force=True, on_stage=cb)
    assert dict(seen) == {"00_load": True, "01_eval": True, "02_export_onnx": True, "03_eval": True,
                          "04_profile": False, "05_report": False}, seen


def test_resumed_records_name_the_same_input_stage(tmp_path, finished_run):
    """A stage's record names the stage that handed it its artefact. A measuring stage (eval) hands on its input;
    read back on --resume it is another object for the same file, and the record must still name it, as an
    uninterrupted run does."""
    src, records = finished_run
    want = {r["id"]: r["input"] for r in records}
    out = _copy(src, tmp_path / "copy")
    for sid in ("02_export_onnx", "03_eval", "04_profile", "05_report"):
        shutil.rmtree(out / sid)
    again = {r["id"]: r["input"] for r in pipeline.run(from_raw(small_recipe()), out, resume=True)}
    assert want["02_export_onnx"] == "01_eval" and again == want, (want, again)


def test_changed_library_version_redoes_the_stage_with_a_notice(tmp_path, finished_run, caplog):
    src, _ = finished_run
    out = _copy(src, tmp_path / "copy")
    # the export as an older ONNX toolchain would have recorded it
    rec_path = out / "02_export_onnx" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["key_parts"]["libraries"]["onnx"] = "1.0.0"
    rec["key"] = pipeline._sha(rec["key_parts"])[:16]
    rec_path.write_text(json.dumps(rec))
    seen, cb = _seen()
    with caplog.at_level("WARNING", logger="edgevit.pipeline"):
        pipeline.run(from_raw(small_recipe()), out, resume=True, on_stage=cb)
    assert any("02_export_onnx: running again: library versions changed since it ran: onnx 1.0.0 → " in m
               for m in caplog.messages), caplog.messages
    redone = dict(seen)
    assert redone["00_load"] and redone["01_eval"] and not redone["02_export_onnx"]
    # the redone export wrote the same bytes: the stages reading it still match, only the report (which reads the
    # records) runs again
    assert redone["03_eval"] and redone["04_profile"] and not redone["05_report"]


@pytest.mark.slow
def test_tampered_artefact_is_redone(tmp_path, finished_run):
    src, _ = finished_run
    out = _copy(src, tmp_path / "copy")
    onnx = out / "02_export_onnx" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])  # a file cut short after the stage finished
    seen, cb = _seen()
    pipeline.run(from_raw(small_recipe()), out, resume=True, on_stage=cb)
    assert not dict(seen)["02_export_onnx"]


def test_failed_stage_keeps_earlier_ones_and_resume_continues_after_the_fix(tmp_path):
    raw = small_recipe(stages=[{"stage": "export_onnx", "parity_samples": 8},
                               {"stage": "eval", "runtime": "onnxruntime", "split": "validation"}])
    out = tmp_path / "run"
    with pytest.raises(EdgevitError) as info:
        pipeline.run(from_raw(raw), out)
    msg = str(info.value)
    assert msg.startswith("stage 02_eval (eval) failed: unknown Fashion-MNIST split 'validation'")
    assert "the finished stages (00_load, 01_export_onnx) are intact" in msg
    assert f"the traceback is in {out / '02_eval.error.log'}" in msg and "rerun with --resume" in msg
    log = (out / "02_eval.error.log").read_text()
    assert "Traceback (most recent call last)" in log and "DataError" in log and '"split": "validation"' in log
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["00_load", "01_export_onnx"]
    # the fix touches only the failed stage: --resume accepts it and continues from there
    raw["stages"][1]["split"] = "test"
    seen, cb = _seen()
    pipeline.run(from_raw(raw), out, resume=True, on_stage=cb)
    assert seen == [("00_load", True), ("01_export_onnx", True), ("02_eval", False)]
    assert not (out / "02_eval.error.log").exists()


def test_unwritable_directory_mid_stage_names_the_path(teacher_available):
    """A real permission error: the distillation cache directory is read-only for the user running the stage
    (as root, the run goes through an unprivileged user id, since root writes anywhere)."""
    import os
    from contextlib import nullcontext

    from edgevit.errors import StorageError

    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="edgevit-readonly-"))  # not under pytest's 0700 folders: another uid enters
    request_cleanup = root
    cache = root / "cache"
    cache.mkdir(mode=0o555)
    out = root / "run"
    out.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        import pwd

        nobody = pwd.getpwnam("nobody").pw_uid
        os.chown(out, nobody, -1)
        root.chmod(0o755)
    raw = small_recipe(stages=[{"stage": "distill", "teacher": "fmnist-vit", "epochs": 1, "topk": 3, "batch_size": 8,
                                "eval_limit": 8, "limit": 8, "cache_dir": str(cache)}])
    recipe = from_raw(raw)
    try:
        with _euid(nobody) if as_root else nullcontext(), pytest.raises(StorageError) as info:
            pipeline.run(recipe, out)
    finally:
        cache.chmod(0o755)
        shutil.rmtree(request_cleanup, ignore_errors=True)
    msg = str(info.value)
    assert msg.startswith("stage 01_distill (distill) failed: permission denied while writing " + str(cache))
    assert f"make {cache} writable" in msg and "the finished stages (00_load) are intact" in msg
    assert "01_distill.error.log" in msg


class _euid:
    """Run as another user id for a while (only root can switch back)."""

    def __init__(self, uid: int):
        self.uid = uid

    def __enter__(self):
        import os

        os.seteuid(self.uid)

    def __exit__(self, *exc):
        import os

        os.seteuid(0)


def test_file_size_limit_mid_stage(tmp_path, finished_run):
    """A real EFBIG (RLIMIT_FSIZE below the ONNX file's size, in this process for the length of the stage):
    the error names the limit and the stage, the finished export stays until a new one is complete, and a rerun
    without the limit completes."""
    import resource

    from edgevit.errors import StorageError

    src, _ = finished_run
    out = _copy(src, tmp_path / "copy")
    before = (out / "02_export_onnx" / "record.json").read_bytes()
    limit = (out / "02_export_onnx" / "model.onnx").stat().st_size // 4
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(StorageError) as info:
            pipeline.run(from_raw(small_recipe()), out, only="02_export_onnx")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    msg = str(info.value)
    assert msg.startswith("stage 02_export_onnx (export_onnx) failed: the file-size limit (ulimit -f) was reached")
    assert "the finished stages (00_load, 01_eval) are intact" in msg and "02_export_onnx.error.log" in msg
    assert (out / "02_export_onnx" / "record.json").read_bytes() == before and not list(out.glob("*.tmp"))
    seen, cb = _seen()
    pipeline.run(from_raw(small_recipe()), out, only="02_export_onnx", on_stage=cb)
    assert seen[-1] == ("02_export_onnx", False) and not (out / "02_export_onnx.error.log").exists()


@pytest.mark.slow
def test_file_size_limit_mid_stage_in_a_child_process(tmp_path, finished_run):
    """A real EFBIG: the child runs `edgevit compress --only export_onnx` with RLIMIT_FSIZE below the ONNX file's
    size; the message names the file, the finished stages stay, and a rerun without the limit completes."""
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    src, _ = finished_run
    out = _copy(src, tmp_path / "copy")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe()))
    limit = (out / "02_export_onnx" / "model.onnx").stat().st_size // 4
    root = Path(__file__).resolve().parents[1]

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgevit", "compress", str(recipe), "--out", str(out), "--only",
                           "02_export_onnx"], check=False, cwd=root, env=env, preexec_fn=cap, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert "stage 02_export_onnx (export_onnx) failed: the file-size limit (ulimit -f) was reached while writing" in err
    assert "02_export_onnx.tmp and may use the temporary folder" in err, err[-3000:]
    assert "the finished stages (00_load, 01_eval) are intact" in err and "(ulimit -f)" in err
    # the old finished export is still there (a stage being redone is swapped in only when complete)
    assert pipeline.read_record(out / "02_export_onnx") is not None
    assert not list(out.glob("*.tmp")) and (out / "02_export_onnx.error.log").exists()
    seen, cb = _seen()
    pipeline.run(from_raw(small_recipe()), out, only="02_export_onnx", on_stage=cb)
    assert seen[-1] == ("02_export_onnx", False) and not (out / "02_export_onnx.error.log").exists()


def test_two_runs_in_one_directory_are_refused(tmp_path):
    """A second run in a run directory another process is writing into is refused, naming that process."""
    import os
    import subprocess
    import sys
    import time

    from edgevit import pipeline
    from edgevit.errors import ConfigError
    from edgevit.recipe import from_raw

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from edgevit.pipeline import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        raw = {"name": "lock", "model": {"name": "fmnist-vit-nano"}, "data": {"limit": 8}, "stages": [{"stage": "eval"}]}
        with pytest.raises(ConfigError, match=f"in use by another edgevit run \\(pid {holder.pid}\\)"):
            pipeline.run(from_raw(raw), out)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with pipeline.run_lock(out):  # released when the holder died (SIGKILL)
        assert (out / pipeline.LOCK).read_text().strip() == str(os.getpid())
