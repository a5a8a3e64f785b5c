"""TVM export (edgevit.formats.tvm.export), runtime (edgevit.formats.tvm.runtime), CLI and stage on tiny models and real images.

Skipped with a reason where apache-tvm is not installed. Tuning tests write their databases into tmp folders
(work_dir), never into the user's cache.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'edgevit[tvm]')")

from edgevit.errors import ConfigError, ExportError, InputSpecError, RuntimeLoadError


def _load(path, **kw):
    from edgevit.runtimes import load_runtime

    return load_runtime("tvm", path, **kw)


def _linear_model():
    """A one-layer classifier on 28×28 grey images: two TVM tasks, so tuning it takes seconds, not minutes."""
    import torch

    from edgevit.models import attach_spec
    from edgevit.spec import InputSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()
    return attach_spec(model, InputSpec(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), num_classes=10))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tvm_cache")


@pytest.fixture(scope="module")
def untuned(tmp_path_factory, tiny_model, fmnist_test_small, cache_dir):
    """fmnist-vit-tiny compiled for this CPU without tuning: ``(library path, record)``."""
    from edgevit.formats.tvm.export import export_tvm

    out = tmp_path_factory.mktemp("tvm_untuned")
    record = export_tvm(tiny_model, out, trials=0, work_dir=cache_dir,
                        parity_images=fmnist_test_small.images[:16]).to_dict()
    return out / "model.so", record


@pytest.fixture
def copy_of(tmp_path):
    """Copy a library with its side files into a fresh folder (to edit its metadata)."""

    def copy(lib):
        dst = tmp_path / "copy"
        dst.mkdir()
        for f in lib.parent.iterdir():
            if f.is_file():
                shutil.copy2(f, dst / f.name)
        return dst / lib.name

    return copy


# ---------------------------------------------------------------------------------------------- export


def test_untuned_export_files_record_and_parity(untuned, tiny_model):
    from edgevit.formats.tvm.spec import metadata_path
    from edgevit.runtimes import open_artifact

    path, rec = untuned
    assert path.exists() and metadata_path(path).exists() and (path.parent / "model.so.spec.json").exists()
    assert rec["path"] == str(path) and rec["batch"] == 1 and rec["input_shape"] == [1, 1, 28, 28]
    assert rec["target"]["kind"] == "llvm" and rec["target"]["mcpu"] and rec["target"]["num-cores"] >= 1
    assert rec["required_isa_features"] and "sse2" in rec["required_isa_features"]
    assert rec["build_host"]["machine"] and rec["versions"]["apache-tvm"] and rec["versions"]["apache-tvm-ffi"]
    tuning = rec["tuning"]
    assert tuning["status"] == "untuned" and tuning["tasks"] > 5 and "UNTUNED" in rec["warning"]
    assert rec["n"] == 16 and rec["max_abs_diff"] < 1e-4 and rec["top1_agreement"] == 1.0
    assert rec["parity"]["passed"] and "raw images" in rec["parity_inputs"]
    json.dumps(rec)
    meta = json.loads(metadata_path(path).read_text())
    assert meta["format"] == "edgevit.tvm" and meta["batch"] == 1 and meta["tvm_version"] == tvm.__version__
    art = open_artifact(path)
    assert art.kind == "tvm" and art.spec == tiny_model.edgevit_spec and art.source == "fmnist-vit-tiny"


def test_fresh_process_without_torch_matches_torch(untuned, tiny_model, fmnist_test_small, tmp_path):
    """A new interpreter with torch blocked (as on a device without it) loads the library and runs real images.

    (Where torch is installed, apache-tvm-ffi imports it on its own at ``import tvm``; hence the block.)
    """
    from edgevit.data import preprocess
    from edgevit.formats.reference import torch_logits

    path, _ = untuned
    x = preprocess(fmnist_test_small.images[:12], tiny_model.edgevit_spec)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys; sys.modules['torch'] = None  # no torch on the device\n"
        "import numpy as np; from edgevit.runtimes import load_runtime\n"
        f"rt = load_runtime('tvm', {str(path)!r}, threads=1)\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.concatenate([rt.run(x[i:i + 1]) for i in range(len(x))]))\n"
        "print(rt.describe()['static_batch'], rt.device)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "cpu"]
    got, want = np.load(tmp_path / "y.npy"), torch_logits(tiny_model, x)
    assert got.shape == (12, 10) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4 and (got.argmax(1) == want.argmax(1)).all()


def test_wrong_batch_size_names_the_compiled_batch(untuned, real_batch):
    rt = _load(untuned[0])
    assert rt.static_batch == 1 and rt.run(real_batch[:1]).shape == (1, 10)
    with pytest.raises(InputSpecError, match=r"compiled for batch size 1 .*got a batch of 3.*--batch 3"):
        rt.run(real_batch[:3])
    with pytest.raises(InputSpecError, match=r"\(N, 1, 28, 28\)"):
        rt.run(np.zeros((1, 3, 28, 28), np.float32))


def test_batch_2_with_extra_passes_hook(tmp_path, tiny_model, fmnist_test_small, cache_dir, real_batch):
    """A static batch of 2 (5 parity images: the last chunk is padded) and the IRModule hook."""
    from tvm import relax

    from edgevit.formats.tvm.export import export_tvm

    seen = []

    def count_functions(mod):
        seen.append(len(mod.get_global_vars()))
        return mod

    rec = export_tvm(tiny_model, tmp_path / "b2.so", trials=0, batch=2, work_dir=cache_dir,
                     parity_images=fmnist_test_small.images[:5], extra_passes=[count_functions,
                                                                             relax.transform.FoldConstant()]).to_dict()
    assert seen == [1] and rec["extra_passes"] == ["test_batch_2_with_extra_passes_hook.<locals>.count_functions",
                                                   "FoldConstant"]
    assert rec["batch"] == 2 and rec["n"] == 5 and rec["max_abs_diff"] < 1e-4
    rt = _load(tmp_path / "b2.so")
    assert rt.static_batch == 2 and rt.run(real_batch[:2]).shape == (2, 10)
    with pytest.raises(InputSpecError, match="compiled for batch size 2"):
        rt.run(real_batch[:1])
    with pytest.raises(ExportError, match=r"extra_passes\[0\].*not a tvm.IRModule"):
        export_tvm(tiny_model, tmp_path / "bad.so", trials=0, work_dir=cache_dir, parity=False,
                   extra_passes=[lambda mod: None])


def test_reexport_to_the_same_path_runs_the_new_library(tmp_path, fmnist_test_small, real_batch):
    """dlopen caches libraries by name: a second export to the same path in one process must not run the old one."""
    import torch

    from edgevit.formats.tvm.export import export_tvm

    first = _linear_model()
    export_tvm(first, tmp_path, trials=0, work_dir=tmp_path / "cache", parity=False)
    old = _load(tmp_path / "model.so")  # keeps the first library loaded
    second = _linear_model()
    with torch.no_grad():
        second[1].weight.mul_(-1)
    rec = export_tvm(second, tmp_path, trials=0, work_dir=tmp_path / "cache",
                     parity_images=fmnist_test_small.images[:4]).to_dict()
    assert rec["max_abs_diff"] < 1e-4  # the parity check ran the new library
    x = real_batch[:1]
    np.testing.assert_allclose(_load(tmp_path / "model.so").run(x), -old.run(x) + 2 * second[1].bias.detach().numpy(),
                               atol=1e-4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no alias left behind


# ---------------------------------------------------------------------------------------------- host checks


def _foreign_cpu():
    """An x86 CPU model with SIMD features this machine lacks (None when it has them all, or is not x86)."""
    from edgevit.formats.tvm.target import host_cpu_features, target_isa_features

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    have, _ = host_cpu_features()
    for cpu in ("sapphirerapids", "graniterapids", "znver5", "znver4", "skylake-avx512"):
        if target_isa_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu})) - have:
            return cpu
    return None


def test_library_built_for_another_cpu_is_refused(tmp_path, tiny_model, cache_dir, fmnist_test_small):
    """A real library compiled for a CPU with features this host lacks: parity is skipped, loading refuses."""
    from edgevit.formats.tvm.export import export_tvm

    cpu = _foreign_cpu()
    if cpu is None:
        pytest.skip("this machine has every SIMD feature of the x86 CPU models tried (or is not x86)")
    rec = export_tvm(tiny_model, tmp_path / "other.so", target={"kind": "llvm", "mcpu": cpu}, trials=0,
                     work_dir=cache_dir, parity_images=fmnist_test_small.images[:4]).to_dict()
    assert rec["max_abs_diff"] is None and "cannot run on this machine" in rec["parity_skipped"]
    with pytest.raises(RuntimeLoadError) as info:
        _load(tmp_path / "other.so")
    msg = str(info.value)
    assert f"mcpu={cpu}" in msg and "lacks" in msg and "--target llvm" in msg and "edgevit export tvm" in msg


def test_library_for_another_architecture_is_refused(untuned, copy_of):
    from edgevit.formats.tvm.spec import metadata_path

    lib = copy_of(untuned[0])
    meta = json.loads(metadata_path(lib).read_text())
    other = "x86_64-linux-gnu" if platform.machine().lower() in ("aarch64", "arm64") else "aarch64-linux-gnu"
    meta["target"] = {"kind": "llvm", "mtriple": other, "mcpu": "generic"}
    meta["required_isa_features"] = []
    metadata_path(lib).write_text(json.dumps(meta))
    with pytest.raises(RuntimeLoadError, match=rf"built for llvm mcpu=generic mtriple={other}.*contains "
                                               rf"{other.split('-')[0]} machine code.*Re-export it here"):
        _load(lib)


def test_missing_metadata_and_cuda_library_without_gpu(untuned, copy_of):
    from edgevit.formats.tvm.spec import metadata_path

    lib = copy_of(untuned[0])
    meta = json.loads(metadata_path(lib).read_text())
    if not shutil.which("nvidia-smi"):
        meta["target"] = {"kind": "cuda", "arch": "sm_87", "host": meta["target"]}
        metadata_path(lib).write_text(json.dumps(meta))
        with pytest.raises(RuntimeLoadError, match="built for cuda sm_87.*no NVIDIA GPU"):
            _load(lib)
    metadata_path(lib).unlink()
    with pytest.raises(RuntimeLoadError, match=r"model.so.tvm.json is missing.*edgevit export tvm"):
        _load(lib)


# ---------------------------------------------------------------------------------------------- tuning


def test_tuning_database_is_saved_and_reused(tmp_path, fmnist_test_small):
    """Tune a two-task model with 1 trial, then export it again: the cached database is applied, no tuning."""
    from edgevit.formats.tvm.export import export_tvm
    from edgevit.formats.tvm.tuning import DB_FILES

    model, work = _linear_model(), tmp_path / "cache"
    first = export_tvm(model, tmp_path / "a", trials=1, work_dir=work,
                       parity_images=fmnist_test_small.images[:8]).to_dict()
    t1 = first["tuning"]
    assert t1["status"] == "tuned" and t1["trials_run"] == 1 and t1["tuning_time_s"] > 0 and t1["records"] >= 1
    assert t1["tasks_tuned"] >= 1 and t1["tasks"] == 2
    cache = work / t1["key"]
    assert all((cache / f).exists() for f in DB_FILES)
    assert json.loads((cache / "cache.json").read_text())["trials_total"] == 1
    assert all((tmp_path / "a" / "model_tuning" / f).exists() for f in DB_FILES)  # copy next to the library
    assert first["max_abs_diff"] < 1e-4

    second = export_tvm(_linear_model(), tmp_path / "b", trials=1, work_dir=work,
                        parity_images=fmnist_test_small.images[:4]).to_dict()
    t2 = second["tuning"]
    assert t2["status"] == "reused" and t2["key"] == t1["key"] and t2["trials_run"] == 0
    assert t2["tuning_time_s"] == 0.0 and t2["tuning_time_s_total"] == t1["tuning_time_s"]
    assert t2["tasks_tuned"] == t1["tasks_tuned"] and second["max_abs_diff"] < 1e-4
    assert "warning" not in second
    assert json.loads((tmp_path / "b" / "model.so.tvm.json").read_text())["tuning"]["status"] == "reused"
    shipped = tmp_path / "a" / "model_tuning"  # the copy next to a library serves as a work_dir of its own
    third = export_tvm(_linear_model(), tmp_path / "c", trials=1, work_dir=shipped, parity=False).to_dict()
    assert third["tuning"]["status"] == "reused" and third["tuning"]["cache_dir"] == str(shipped)


@pytest.mark.slow
def test_tuned_fmnist_vit_tiny_then_reused(tmp_path, tiny_model, fmnist_test_small):
    """16 trials on fmnist-vit-tiny (~5 min on 2 busy cores: one evolutionary-search round per task)."""
    from edgevit.formats.tvm.export import export_tvm

    rec = export_tvm(tiny_model, tmp_path / "t", trials=16, work_dir=tmp_path / "cache",
                     parity_images=fmnist_test_small.images[:16]).to_dict()
    assert rec["tuning"]["status"] == "tuned" and rec["tuning"]["tasks_tuned"] >= 1
    assert rec["max_abs_diff"] < 1e-4 and rec["top1_agreement"] == 1.0
    again = export_tvm(tiny_model, tmp_path / "t2", trials=8, work_dir=tmp_path / "cache",
                       parity_images=fmnist_test_small.images[:4]).to_dict()
    assert again["tuning"]["status"] == "reused" and again["max_abs_diff"] < 1e-4


# ---------------------------------------------------------------------------------------------- options


def test_bad_options(tmp_path, tiny_model):
    from edgevit.formats.tvm.export import export_tvm

    with pytest.raises(ConfigError, match="trials must be an integer ≥ 0"):
        export_tvm(tiny_model, tmp_path, trials=-1)
    with pytest.raises(ConfigError, match="batch must be an integer ≥ 1"):
        export_tvm(tiny_model, tmp_path, batch=0)
    with pytest.raises(ConfigError, match="not valid JSON"):
        export_tvm(tiny_model, tmp_path, target="{kind: llvm")
    with pytest.raises(ConfigError, match="directory.*or a path ending in .so"):
        export_tvm(tiny_model, tmp_path / "m.onnx")
    if not tvm.runtime.enabled("cuda"):
        with pytest.raises(ExportError, match="no CUDA support.*--target llvm"):
            export_tvm(tiny_model, tmp_path, target="cuda")


def test_cuda_export_runs_on_the_gpu(tmp_path, tiny_model, fmnist_test_small):
    if not tvm.runtime.enabled("cuda") or not tvm.cuda(0).exist:
        pytest.skip("needs a CUDA-enabled TVM build and an NVIDIA GPU (the PyPI apache-tvm wheel is CPU-only)")
    from edgevit.formats.tvm.export import export_tvm

    rec = export_tvm(tiny_model, tmp_path, target="cuda", trials=0, parity_images=fmnist_test_small.images[:8],
                     work_dir=tmp_path / "cache").to_dict()
    assert rec["target"]["kind"] == "cuda" and rec["max_abs_diff"] < 1e-3
    assert _load(tmp_path / "model.so").device.startswith("cuda")


# ---------------------------------------------------------------------------------------------- CLI and stage


def test_cli_export_then_eval_and_list(tmp_path, fmnist_test_small, capsys):
    from edgevit.cli import main

    out = tmp_path / "tvm"
    assert main(["export", "tvm", "--model", "fmnist-vit-tiny", "--trials", "0", "--out", str(out), "--work-dir",
                 str(tmp_path / "cache"), "--parity-samples", "8", "--json", str(tmp_path / "x.json")]) == 0
    printed = capsys.readouterr().out
    assert "UNTUNED" in printed and "top-1 agreement" in printed and str(out / "model.so") in printed
    rec = json.loads((tmp_path / "x.json").read_text())
    assert rec["n"] == 8 and rec["tuning"]["status"] == "untuned" and rec["batch"] == 1
    assert main(["eval", "--artifact", str(out / "model.so"), "--batch-size", "1", "--limit", "6",
                 "--json", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["n"] == 6 and ev["runtime"] == "tvm"
    # eval's default batch of 100 runs the library's own batch of 1 (issue 16, fault 9: no longer an error)
    assert main(["eval", "--artifact", str(out / "model.so"), "--limit", "6", "--json", str(tmp_path / "e2.json")]) == 0
    assert json.loads((tmp_path / "e2.json").read_text())["correct1"] == ev["correct1"]
    assert main(["list", "runtimes"]) == 0 and main(["list", "exporters"]) == 0
    listed = capsys.readouterr().out
    assert any(line.startswith("tvm") and "installed" in line for line in listed.splitlines())
    assert any(line.startswith("tvm ") and "TVM library" in line for line in listed.splitlines())
    assert any(line.startswith("ort-mobile ") for line in listed.splitlines())  # the name `edgevit export` takes


def test_stage_in_a_recipe(tmp_path, fmnist_test_small):
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {
        "name": "tvm-tiny", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 12, "batch_size": 4},
        "runtimes": ["tvm"],
        "stages": [
            {"stage": "export_tvm", "trials": 0, "parity_samples": 8, "work_dir": str(tmp_path / "cache")},
            {"stage": "eval", "runtime": "tvm", "batch_size": 1},
            {"stage": "profile", "batch": [1], "duration_s": 0.1, "warmup_s": 0.05, "min_runs": 3},
        ],
    }
    records = pipeline.run(from_raw(raw), tmp_path / "run")
    exp, ev, prof = records[1], records[2], records[3]
    assert exp["artifact"]["kind"] == "tvm" and exp["metrics"]["max_abs_diff"] < 1e-4
    assert exp["metrics"]["tuning"]["status"] == "untuned"
    assert (tmp_path / "run" / exp["id"] / "model.so").exists()
    assert ev["metrics"]["n"] == 12 and ev["metrics"]["runtime"] == "tvm"
    assert {(r["runtime"], r["batch"]) for r in prof["metrics"]["latency"]} == {("torch", 1), ("tvm", 1)}
    with pytest.raises(ConfigError, match=r"stages\.0\.trials: must be ≥ 0"):
        from_raw({**raw, "stages": [{"stage": "export_tvm", "trials": -2}]})


# ---------------------------------------------------------------------------------------------- tuning progress,
# cost in --help, and the GroupNorm fallback (issue 16)


def _group_norm_model():
    """conv → GroupNorm → ReLU → pool → linear at 16×16: its GroupNorm task fails MetaSchedule's search in TVM 0.27
    with the layout-free-buffers attribute (``Check failed: (args.size() == initial_indices_orig.size())``)."""
    import torch

    from edgevit.models import attach_spec
    from edgevit.spec import InputSpec

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.GroupNorm(1, 8), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    return attach_spec(m, InputSpec(input_size=(1, 16, 16), mean=(0.286,), std=(0.353,), num_classes=10))


def test_help_states_what_the_default_tuning_costs(capsys):
    from edgevit.cli import main

    with pytest.raises(SystemExit):
        main(["export", "tvm", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 256: about 10-15 min for a small model" in text and "ETA" in text


def test_task_operators_and_failing_task_from_the_scheduler_log(tmp_path):
    from edgevit.formats.tvm.tuning import _failing_task, task_operators

    assert task_operators("fused_group_norm_relu1") == ["group_norm", "relu"]
    assert task_operators("fused_matmul_add11") == ["matmul", "add"]
    assert task_operators("fused_conv2d_add1") == ["conv2d", "add"]
    log = tmp_path / "task_scheduler.log"
    earlier = '2026-11-29 15:14:01 [INFO] [task_scheduler.cc:195] TaskScheduler picks Task #0: "old_task"\n'
    log.write_text(earlier + '2026-11-29 15:14:42 [INFO] [task_scheduler.cc:195] TaskScheduler picks Task #2: "mean1"\n'
                   '2026-11-29 15:15:10 [INFO] [task_scheduler.cc:195] TaskScheduler picks Task #3: '
                   '"fused_group_norm_relu1"\n')
    names = ["mean1", "fused_group_norm_relu1"]
    assert _failing_task(log, len(earlier), names) == "fused_group_norm_relu1"
    assert _failing_task(log, log.stat().st_size, names) is None  # nothing picked in this round
    assert _failing_task(tmp_path / "missing.log", 0, names) is None


def test_tuning_shows_progress_with_an_eta(tmp_path, monkeypatch, caplog):
    import logging

    from edgevit.formats.tvm.export import export_tvm

    monkeypatch.setenv("EDGEVIT_PROGRESS", "1")
    # an unnamed handler on MetaSchedule's logger (as a harness or another library may attach) used to make TVM's
    # create_loggers fail with "'NoneType' object has no attribute 'format'"
    stray = logging.StreamHandler()
    logging.getLogger("tvm.s_tir.meta_schedule").addHandler(stray)
    try:
        with caplog.at_level(logging.INFO, logger="edgevit.formats.tvm.tuning"):
            export_tvm(_linear_model(), tmp_path / "a", trials=2, work_dir=tmp_path / "cache", parity=False)
    finally:
        logging.getLogger("tvm.s_tir.meta_schedule").removeHandler(stray)
    lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert lines and lines[-1].startswith("TVM tuning: 2/2 trials, task '"), lines
    assert all("elapsed " in x for x in lines) and "ETA 0:00" in lines[-1]


@pytest.mark.slow
def test_group_norm_task_failure_is_named_and_falls_back(tmp_path, caplog, fmnist_test_small):
    """~2 min on 2 cores: TVM 0.27's search fails on the GroupNorm task; the export names it and its operator,
    retunes it without the layout-free-buffers attribute (or leaves it untuned), and the library stays correct."""
    import logging

    from edgevit.formats.tvm.export import export_tvm

    images = np.ascontiguousarray(fmnist_test_small.images[:8, 6:22, 6:22])  # real images, centre 16×16
    with caplog.at_level(logging.WARNING):
        rec = export_tvm(_group_norm_model(), tmp_path / "gn", trials=8, work_dir=tmp_path / "cache",
                         parity_images=images).to_dict()
    fb = rec["tuning"]["fallbacks"]
    assert fb[0]["task"].startswith("fused_group_norm") and "group_norm" in fb[0]["operators"]
    assert fb[0]["action"] in ("layout_free_buffers_off", "untuned")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "tuning task 'fused_group_norm" in warned and "operators group_norm" in warned
    assert "timeout" not in warned
    assert rec["tuning"]["status"] == "tuned" and rec["max_abs_diff"] < 1e-4
