import json
import shutil

import pytest

from edgevit import pipeline
from edgevit.errors import ConfigError
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
    seen = []
    pipeline.run(changed, out, resume=True, on_stage=lambda sid, rec, skipped: seen.append((sid, skipped)))
    assert [s for _, s in seen] == [True, True, True, True, False, False]


def test_run_refuses_an_out_that_is_a_file(tmp_path):
    from edgevit.recipe import load_recipe

    afile = tmp_path / "afile"
    afile.write_text("x")
    recipe = load_recipe("examples/recipes/quickstart.yaml")
    with pytest.raises(ConfigError, match="exists and is a file, not a directory"):
        pipeline.run(recipe, afile)
    with pytest.raises(ConfigError, match="is a file; choose another --out"):
        pipeline.run(recipe, afile / "sub" / "run")
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
