"""LGViT early exits (edgevit.methods.early_exit): heads, training, thresholds, calibration, cascade export and runtime.

Tiny model (fmnist-vit-tiny, 6 blocks → exits after blocks 2..5), real Fashion-MNIST images, a few steps.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgevit.errors import ConfigError, RuntimeLoadError


@pytest.fixture(scope="module")
def ee(tiny_model):
    from edgevit.methods.early_exit import attach_exits

    torch.manual_seed(0)
    return attach_exits(tiny_model)


@pytest.fixture(scope="module")
def spread_thresholds(ee):
    """Per-exit thresholds at the median confidence on real TRAIN images (so test images spread over the exits)."""
    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.cascade.thresholds import scores

    x = torch.from_numpy(preprocess(load_dataset("fashion-mnist", "train", limit=201).images, ee.edgevit_spec))
    with torch.inference_mode():
        out = ee.forward_all(x)
    return [float(np.median(scores(z.numpy(), "confidence"))) for z in out["exits"]]


@pytest.fixture(scope="module")
def test_x(fmnist_test_small, ee):
    from edgevit.data import preprocess

    return preprocess(fmnist_test_small.images[:32], ee.edgevit_spec)


@pytest.fixture(scope="module")
def onnx_cascade(ee, spread_thresholds, tmp_path_factory, fmnist_test_small):
    """The cascade exported to ONNX with the default (torch.export-based) exporter."""
    from edgevit.methods.early_exit import export_cascade

    out = tmp_path_factory.mktemp("ee-onnx")
    rec = export_cascade(ee, out, format="onnx", thresholds=spread_thresholds,
                         parity_images=fmnist_test_small.images[:32])
    return out / "manifest.json", rec


@pytest.fixture(scope="module")
def ov_cascade(ee, spread_thresholds, tmp_path_factory, fmnist_test_small):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]')")
    from edgevit.methods.early_exit import export_cascade

    out = tmp_path_factory.mktemp("ee-ov")
    rec = export_cascade(ee, out, format="openvino", thresholds=spread_thresholds, exporter="torchscript",
                         parity_images=fmnist_test_small.images[:32])
    return out / "manifest.json", rec


# ------------------------------------------------------------------------------------------------ heads


def test_exit_placement_and_head_types():
    from edgevit.methods.early_exit.heads import attention_heads, exit_blocks, head_plan

    assert exit_blocks(12) == [4, 5, 6, 7, 8, 9, 10, 11]
    plan = head_plan(12, 128)
    assert [s.type for s in plan] == ["lph_dw"] * 2 + ["lph"] * 2 + ["gah"] * 4
    assert [s.stride for s in plan[4:]] == [2, 2, 3, 3] and all(s.num_heads == 8 for s in plan[4:])
    assert exit_blocks(6) == [2, 3, 4, 5] and exit_blocks(24)[0] == 8 and exit_blocks(24)[-1] == 23
    assert [s.type for s in head_plan(6, 96)] == ["lph_dw", "lph", "gah", "gah"]
    assert attention_heads(100) == 5  # 100 is not divisible by 8: the largest divisor below it
    with pytest.raises(ConfigError, match="at least 3 blocks"):
        exit_blocks(2)


def test_ee_forward_is_the_backbone_and_heads_see_patch_tokens(ee, tiny_model, test_x):
    x = torch.from_numpy(test_x[:4])
    with torch.inference_mode():
        assert torch.equal(ee(x), tiny_model(x))
        out = ee.forward_all(x, features=True)
    assert ee.exit_blocks == [2, 3, 4, 5] and ee.num_prefix_tokens == 1 and ee.cls_index == 0
    assert [tuple(f.shape) for f in out["exit_features"]] == [(4, 49, 96), (4, 49, 96), (4, 16, 96), (4, 9, 96)]
    assert out["last_tokens"].shape == (4, 49, 96) and all(z.shape == (4, 10) for z in out["exits"])


def test_special_tokens_split_per_backbone():
    """Distillation token (DeiT), register tokens and no class token: the split follows num_prefix_tokens."""
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    from edgevit.methods.early_exit import attach_exits

    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    kw = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 2, "num_classes": 7}
    for model, prefix, cls_i, dist_i in [
        (VisionTransformerDistilled(**kw), 2, 0, 1),
        (VisionTransformer(reg_tokens=4, **kw), 5, 0, None),
        (VisionTransformer(class_token=False, global_pool="avg", **kw), 0, None, None),
    ]:
        model.eval()
        ee = attach_exits(model)
        assert (ee.num_prefix_tokens, ee.cls_index, ee.dist_index) == (prefix, cls_i, dist_i)
        assert ee.exit_blocks == [1, 2]
        with torch.inference_mode():
            assert torch.equal(ee(x), model(x))
            out = ee.forward_all(x, features=True)
        assert out["exit_features"][0].shape == (3, 16, 64)  # 4×4 patch tokens, special tokens dropped
        assert (ee.heads[0].classifier_dist is not None) == (dist_i is not None)


def test_unknown_backbone_says_which_attribute():
    from edgevit.methods.early_exit import attach_exits

    with pytest.raises(ConfigError, match="no attribute 'patch_embed'.*timm VisionTransformer-style"):
        attach_exits(torch.nn.Sequential(torch.nn.Linear(4, 4)))

    class HalfViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = torch.nn.Identity()

        def _pos_embed(self, x):
            return x

    with pytest.raises(ConfigError, match="no attribute 'blocks'"):
        attach_exits(HalfViT())


# ------------------------------------------------------------------------------------------------ training


def test_stage2_leaves_backbone_and_final_head_bit_identical(tiny_model, fmnist_test_small):
    from edgevit.methods.early_exit import TrainConfig, attach_exits, train_stage1_, train_stage2_

    torch.manual_seed(1)
    model = attach_exits(tiny_model)
    data = fmnist_test_small  # 64 real images; a few steps
    cfg = TrainConfig(stage1_steps=2, stage2_steps=3, batch_size=32, log_every=1)
    before1 = {k: v.clone() for k, v in model.state_dict().items()}
    r1 = train_stage1_(model, data, config=cfg)
    assert r1["steps"] == 2 and len(r1["history"]) == 2
    assert not torch.equal(model.backbone.head.weight, before1["backbone.head.weight"])  # stage 1 is end-to-end

    bb = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # BN statistics of the stem included
    heads = {k: v.clone() for k, v in model.heads.state_dict().items()}
    r2 = train_stage2_(model, data, config=cfg)
    assert r2["steps"] == 3 and {"ce", "kd", "hete", "homo"} <= set(r2["history"][-1])
    after = model.backbone.state_dict()
    assert all(torch.equal(bb[k], after[k]) for k in bb), "stage 2 changed the backbone or the final head"
    assert any(not torch.equal(heads[k], v) for k, v in model.heads.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_bad_train_config():
    from edgevit.methods.early_exit import TrainConfig

    with pytest.raises(ConfigError, match="alpha"):
        TrainConfig(alpha=1.5).validate()


# ------------------------------------------------------------------------------------------------ inference


def test_never_firing_threshold_gives_exactly_the_final_head(ee, test_x):
    x = torch.from_numpy(test_x)
    with torch.inference_mode():
        ref = ee.backbone(x)
    for crit, never in (("confidence", 1.0), ("entropy", 0.0)):
        logits, exits = ee.predict(x, never, crit)
        assert torch.equal(logits, ref) and (exits == ee.num_exits).all()


def test_batched_equals_batch1_reference(ee, test_x, spread_thresholds):
    x = torch.from_numpy(test_x)
    logits, exits = ee.predict(x, spread_thresholds)
    assert len(set(exits.tolist())) >= 3, f"thresholds should spread the samples, got exits {exits}"
    for i in range(len(x)):
        l1, e1 = ee.predict(x[i:i + 1], spread_thresholds)
        assert e1[0] == exits[i]
        np.testing.assert_allclose(l1[0].numpy(), logits[i].numpy(), atol=1e-5, rtol=0)


def test_thresholds_outside_0_1_and_wrong_count(ee, test_x):
    from edgevit.methods.early_exit import check_thresholds

    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\].*exit\(s\) 2 has 1.5"):
        check_thresholds([0.5, 1.5, 0.5, 0.5], 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        check_thresholds([-0.1] * 4, 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        check_thresholds([float("nan")] * 4, 4)
    with pytest.raises(ConfigError, match="expected 4 thresholds"):
        check_thresholds([0.5] * 3, 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ee.predict(torch.from_numpy(test_x[:2]), 2.0)


def test_search_thresholds_minimises_latency_within_budget_and_rejects_unreachable():
    from edgevit.methods.early_exit import search_thresholds

    rng = np.random.default_rng(0)
    n, k, c = 400, 3, 5
    labels = rng.integers(0, c, n)
    easy = rng.random(n) < 0.6  # easy samples: exit 1 is confident and right; others: exits unsure
    exit_logits = rng.normal(0, 0.1, (n, k, c))
    exit_logits[easy, 0, labels[easy]] += 8.0
    final = rng.normal(0, 0.1, (n, c))
    final[np.arange(n), labels] += 5.0
    seg, head = [1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.1]
    r = search_thresholds(exit_logits, final, labels, budget=0.0, segment_ms=seg, head_ms=head)
    assert r["top1"] >= r["final_top1"] and r["final_top1"] == 1.0
    assert r["share"][0] == pytest.approx(easy.mean()) and r["thresholds"][1:] == [1.0, 1.0]  # useless heads skipped
    assert r["expected_ms"] == pytest.approx(easy.mean() * 1.1 + (1 - easy.mean()) * 4.1)
    with pytest.raises(ConfigError, match="accuracy budget -5.0 pt is unreachable.*final head reaches 100.00%"):
        search_thresholds(exit_logits, final, labels, budget=-5.0, segment_ms=seg, head_ms=head)
    with pytest.raises(ConfigError, match="one latency per segment"):
        search_thresholds(exit_logits, final, labels, budget=1.0, segment_ms=seg[:2], head_ms=head)


# ------------------------------------------------------------------------------------------------ export + runtime


def _torch_reference(ee, x, thresholds):
    logits, exits = ee.predict(torch.from_numpy(x), thresholds)
    return logits.numpy(), exits


@pytest.mark.parametrize("which,runtimes", [("onnx", ("onnxruntime", "openvino")), ("ov", ("openvino",))])
def test_exported_cascade_matches_torch_on_real_images(request, which, runtimes, ee, test_x, spread_thresholds):
    from edgevit.runtimes import load_runtime, open_artifact

    manifest, result = request.getfixturevalue("onnx_cascade" if which == "onnx" else "ov_cascade")
    # typed: the cascade artefact and the whole cascade's parity vs torch; to_dict(): the JSON record
    assert result.artifact.kind == "cascade" and result.artifact.path == manifest
    assert result.parity.extra["exit_agreement"] == 1.0 and result.parity.n == 32 and result.parity.passed
    rec = result.to_dict()
    assert rec["cascade_parity"]["exit_agreement"] == 1.0 and rec["path"] == str(manifest)
    m = json.loads(manifest.read_text())
    assert m["format"] == "edgevit-early-exit-cascade" and len(m["segments"]) == 5 and len(m["exits"]) == 4
    assert [e["block"] for e in m["exits"]] == [2, 3, 4, 5] and m["segments"][-1]["output"] == "logits"
    assert rec["exit_agreement"] == 1.0 and rec["top1_agreement"] == 1.0 and rec["max_abs_diff"] < 1e-4
    assert set(rec["graphs"]) == {f"segment_{i}" for i in range(5)} | {f"exit_{k}" for k in range(1, 5)}
    art = open_artifact(manifest)
    assert art.kind == "cascade" and art.spec == ee.edgevit_spec
    ref_logits, ref_exits = _torch_reference(ee, test_x, spread_thresholds)
    for name in runtimes:
        rt = load_runtime(name, manifest)
        assert rt.backend == name and rt.describe()["runtime"] == f"cascade[{name}]"
        logits, exits = rt.run_with_exits(test_x)
        np.testing.assert_array_equal(exits, ref_exits)
        np.testing.assert_array_equal(logits.argmax(1), ref_logits.argmax(1))
        np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
        for i in (0, 5, 17):  # batch-1 fast path
            l1, e1 = rt.run_with_exits(test_x[i:i + 1])
            assert e1[0] == exits[i]
            np.testing.assert_allclose(l1[0], logits[i], atol=1e-5, rtol=0)
        rt.close()


def test_onnxruntime_cannot_run_ir_segments(ov_cascade):
    from edgevit.runtimes import load_runtime

    with pytest.raises(RuntimeLoadError, match="cannot run the cascade graph segment_0.xml.*--format onnx"):
        load_runtime("onnxruntime", ov_cascade[0])


def test_manifest_naming_a_missing_segment(onnx_cascade, tmp_path):
    from edgevit.runtimes import load_runtime, open_artifact

    d = tmp_path / "broken"
    shutil.copytree(onnx_cascade[0].parent, d)
    (d / "segment_2.onnx").unlink()
    with pytest.raises(RuntimeLoadError, match="names segment 'segment_2' with file 'segment_2.onnx', which does not "
                                                 "exist"):
        open_artifact(d / "manifest.json")
    with pytest.raises(RuntimeLoadError, match="segment 'segment_2'"):
        load_runtime("cascade", d / "manifest.json", spec=None)


def test_runtime_threshold_override_outside_range(onnx_cascade):
    from edgevit.runtimes import load_runtime

    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        load_runtime("onnxruntime", onnx_cascade[0], thresholds=[0.5, 0.5, -1.0, 0.5])
    rt = load_runtime("cascade", onnx_cascade[0], thresholds=[1.0] * 4)  # never fires: every sample at the end
    assert rt.backend == "onnxruntime" and not rt.active.any()


def test_cli_eval_and_profile_on_the_manifest(onnx_cascade, tmp_path, capsys):
    from edgevit.cli import main

    manifest = str(onnx_cascade[0])
    assert main(["eval", "--artifact", manifest, "--runtime", "onnxruntime", "--limit", "40",
                 "--json", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["n"] == 40 and ev["runtime"] == "cascade[onnxruntime]"
    assert main(["profile", manifest, "--runtime", "openvino", "--runs", "5", "--warmup", "0",
                 "--json", str(tmp_path / "p.json")]) == 0
    row = json.loads((tmp_path / "p.json").read_text())["results"][0]
    assert row["runtime"] == "cascade[openvino]" and row["runs"] == 5
    # issue 16: a cascade is timed over a real sample (each call the next image), with its exit mix
    assert row["input_source"] == "provided, cycling through all 200 images" and row["exit_mix"]["samples"] == 5
    printed = capsys.readouterr().out
    assert "cascade[openvino]" in printed and "exit mix (cascade[openvino], batch 1, 5 samples)" in printed


def test_cli_export_rejects_bad_thresholds(tmp_path, ee, capsys):
    from edgevit.cli import main
    from edgevit.methods.early_exit import save_early_exit

    save_early_exit(ee, tmp_path / "early_exit.safetensors")
    assert main(["early-exit", "export", str(tmp_path), "--out", str(tmp_path / "x"), "--thresholds",
                 "0.5,0.5,1.2,0.5"]) == 2
    assert "[0, 1]" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ calibrate, stage


def test_calibrate_on_heldout_for_openvino(ee, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed")
    from edgevit.methods.early_exit import calibrate, save_early_exit
    from edgevit.methods.early_exit.run import calibrate_run

    save_early_exit(ee, tmp_path / "early_exit.safetensors", extra={"split": {"data": "fashion-mnist",
                                                                             "holdout": 5000}})
    rec = calibrate_run(tmp_path, budget=1.0, runtime="openvino", heldout_limit=150, duration_s=0.03, warmup_s=0.01,
                        exporter="torchscript")
    assert calibrate  # the public name resolves
    assert rec["heldout"].startswith("fashion-mnist train[-5000:][:150]") and rec["n"] == 150 and rec["runtime"] == "openvino"
    assert len(rec["thresholds"]) == 4 and all(0 <= t <= 1 for t in rec["thresholds"])
    assert rec["top1"] >= rec["final_top1"] - 0.01 - 1e-9
    assert len(rec["segment_ms"]) == 5 and len(rec["head_ms"]) == 4 and all(v > 0 for v in rec["segment_ms"])
    assert json.loads((tmp_path / "calibration.json").read_text())["thresholds"] == rec["thresholds"]
    with pytest.raises(ConfigError, match="unreachable"):
        calibrate_run(tmp_path, budget=-100.0, runtime="onnxruntime", heldout_limit=50, duration_s=0.01,
                      warmup_s=0.0, exporter="torchscript")


def test_cli_train(tmp_path, capsys):
    from edgevit.cli import main

    assert main(["early-exit", "train", "--model", "fmnist-vit-tiny", "--out", str(tmp_path / "run"), "--steps", "1",
                 "--limit", "64", "--batch-size", "32"]) == 0
    assert "4 exits after blocks [2, 3, 4, 5]" in capsys.readouterr().out
    rec = json.loads((tmp_path / "run" / "train.json").read_text())
    assert rec["split"]["holdout"] == 5000 and rec["split"]["train_samples"] == 64
    assert rec["stage1"]["steps"] == 1 and rec["stage2"]["steps"] == 1


def test_recipe_stage_then_eval(tmp_path, caplog):
    """The early_exit stage (train a step, calibrate, export) followed by eval of the cascade on onnxruntime; a run
    killed after calibration resumes with the same thresholds and the same cascade bytes."""
    import yaml

    from edgevit import pipeline
    from edgevit.recipe import load_recipe

    recipe = {"name": "ee", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 32}, "runtimes": ["onnxruntime"],
              "stages": [{"stage": "early_exit", "steps": 1, "batch_size": 32, "train_limit": 64, "heldout_limit": 60,
                          "latency_duration_s": 0.02, "exporter": "torchscript", "parity_samples": 16, "budget": 2.0,
                          "if_form": True},
                         {"stage": "eval"}]}  # the recipe's onnxruntime runs the cascade's graphs
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    recs = pipeline.run(load_recipe(str(path), []), tmp_path / "out")
    ee_rec, ev = recs[1], recs[2]
    assert ee_rec["artifact"]["kind"] == "cascade" and ee_rec["metrics"]["exit_agreement"] == 1.0
    assert len(ee_rec["metrics"]["thresholds"]) == 4 and ev["metrics"]["n"] == 32
    assert (tmp_path / "out" / ee_rec["id"] / "export" / "manifest.json").exists()
    assert ee_rec["metrics"]["if_form"].endswith("cascade_if.onnx") and ee_rec["metrics"]["if_form_max_abs_diff"] < 1e-3

    # killed after the thresholds were timed, during the export: the partial stage folder as the kill leaves it
    out = tmp_path / "out"
    stage_dir = out / ee_rec["id"]
    shutil.rmtree(out / ev["id"])
    shutil.rmtree(stage_dir / "export")
    (stage_dir / "record.json").unlink()
    (stage_dir / pipeline.STATE).write_text(json.dumps({"key": ee_rec["key"]}))
    stage_dir.rename(out / (ee_rec["id"] + ".tmp"))
    with caplog.at_level("INFO", logger="edgevit"):
        again = pipeline.run(load_recipe(str(path), []), out, resume=True)
    assert any("heads trained before the interruption" in m for m in caplog.messages)
    assert any("thresholds calibrated before the interruption" in m for m in caplog.messages)
    # the timed choice is the interrupted run's, and the cascade's graphs are the same bytes
    assert again[1]["metrics"]["thresholds"] == ee_rec["metrics"]["thresholds"]
    assert again[1]["artifact_sha256"] == ee_rec["artifact_sha256"]
    assert pipeline.comparable_record(again[2]["metrics"]) == pipeline.comparable_record(ev["metrics"])


# ------------------------------------------------------------------------------------------------ INT8 cascades


@pytest.mark.parametrize("which,backend", [("ov_cascade", "openvino"), ("onnx_cascade", "onnxruntime")])
def test_int8_cascade_every_graph_quantised_and_close_to_fp32(request, which, backend, tmp_path, fmnist_test_small):
    pytest.importorskip("nncf" if backend == "openvino" else "onnxruntime.quantization")
    from edgevit.methods.early_exit import quantize_cascade
    from edgevit.methods.quantize import QuantizeConfig
    from edgevit.runtimes import load_runtime

    manifest, _ = request.getfixturevalue(which)
    cfg = QuantizeConfig(backend=backend, calib_samples=48)
    rec = quantize_cascade(manifest, tmp_path / "int8", backend=backend, config=cfg, calib=fmnist_test_small,
                           parity_images=fmnist_test_small.images[:64])
    m = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    names = [e["name"] for e in m["segments"] + m["exits"]]
    assert set(rec["graphs"]) == set(names) and all(g["quantized_layers"] > 0 for g in rec["graphs"].values())
    # real calibration tokens: segment k's calibration input is what segment k-1 outputs on the 48 images
    assert rec["graphs"]["segment_0"]["calibration_inputs"] == [48, 1, 28, 28]
    assert rec["graphs"]["segment_1"]["calibration_inputs"][0] == 48
    assert rec["graphs"]["segment_1"]["calibration_inputs"] == rec["graphs"]["exit_1"]["calibration_inputs"]
    # the classifier stays float in graphs that output logits, and only there
    assert rec["graphs"]["exit_1"]["float_classifier"] and rec["graphs"][m["segments"][-1]["name"]]["float_classifier"]
    assert not rec["graphs"]["segment_0"]["float_classifier"] and rec["graphs"]["segment_0"]["float_stem"]
    assert not rec["graphs"]["exit_1"]["float_stem"]
    assert m["int8"]["backend"] == backend and m["int8"]["calibration"]["n"] == 48
    p = rec["parity_vs_fp32"]
    assert p["n"] == 64 and p["top1_agreement"] >= 0.85 and p["exit_agreement"] >= 0.75
    rt = load_runtime("cascade", tmp_path / "int8" / "manifest.json", backend=backend)
    from edgevit.data import preprocess

    logits, exits = rt.run_with_exits(preprocess(fmnist_test_small.images[:8], rt.spec))
    assert logits.shape == (8, 10) and exits.shape == (8,)
    with pytest.raises(ConfigError, match="already an INT8 cascade"):
        quantize_cascade(tmp_path / "int8", tmp_path / "again", backend=backend, config=cfg, calib=fmnist_test_small)


def test_int8_cascade_bad_input(ov_cascade, onnx_cascade, tmp_path):
    from edgevit.methods.early_exit import quantize_cascade

    with pytest.raises(ConfigError, match="quantises an onnx cascade.*--format onnx"):
        quantize_cascade(ov_cascade[0], tmp_path / "q", backend="onnxruntime")
    with pytest.raises(ConfigError, match="another folder"):
        quantize_cascade(onnx_cascade[0], onnx_cascade[0].parent, backend="onnxruntime")
    with pytest.raises(ConfigError, match="must be one of openvino, onnxruntime, nncf-onnx"):
        quantize_cascade(onnx_cascade[0], tmp_path / "q", backend="tensorrt")


def test_set_thresholds_between_calls(onnx_cascade, test_x):
    from edgevit.runtimes import load_runtime

    rt = load_runtime("cascade", onnx_cascade[0])
    rt.set_thresholds(1.0)
    _, ex = rt.run_with_exits(test_x)
    assert (ex == rt.num_exits).all() and not rt.active.any()
    rt.set_thresholds(0.0)
    _, ex = rt.run_with_exits(test_x)
    assert (ex == 0).all()
    with pytest.raises(ConfigError, match="expected 4 thresholds"):
        rt.set_thresholds([0.5, 0.5])


# ------------------------------------------------------------------------------------------------ If form


def test_if_form_matches_the_segment_cascade_one_image_at_a_time(onnx_cascade, spread_thresholds, test_x, tmp_path):
    from edgevit.methods.early_exit import build_if_graph
    from edgevit.runtimes import load_runtime, open_artifact

    res = build_if_graph(onnx_cascade[0], tmp_path / "if.onnx", parity_images=test_x)
    assert res.artifact.kind == "onnx" and res.path == tmp_path / "if.onnx" and res.parity.n == len(test_x)
    rec = res.to_dict()
    assert rec["parity_vs_cascade"]["passed"] and rec["parity_vs_cascade"]["n"] == len(test_x)
    shares = rec["parity_vs_cascade"]["exits_share"]
    assert sum(s > 0 for s in shares) >= 2  # the real images leave at several exits: several branches are checked
    art = open_artifact(tmp_path / "if.onnx")  # a plain single-input classifier for every tool
    assert art.kind == "onnx" and art.spec.input_name == "input"
    casc = load_runtime("cascade", onnx_cascade[0])
    ref = casc.run(test_x[:4])
    for name in ("onnxruntime", "openvino"):
        rt = load_runtime(name, art)
        got = np.concatenate([rt.run(test_x[i:i + 1]) for i in range(4)])
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    # never-firing thresholds leave no If at all: the plain backbone
    plain = build_if_graph(onnx_cascade[0], tmp_path / "plain.onnx", thresholds=1.0,
                           parity_images=test_x[:4]).to_dict()
    assert plain["active_exits"] == []
    import onnx

    assert not [n for n in onnx.load(str(tmp_path / "plain.onnx")).graph.node if n.op_type == "If"]
    ent = build_if_graph(onnx_cascade[0], tmp_path / "ent.onnx", criterion="entropy", thresholds=0.3,
                         parity_images=test_x).to_dict()
    assert ent["criterion"] == "entropy" and ent["parity_vs_cascade"]["passed"]


def test_if_form_bad_input(ov_cascade, onnx_cascade, tmp_path):
    from edgevit.methods.early_exit import build_if_graph

    with pytest.raises(ConfigError, match="composed from an ONNX cascade.*--format onnx"):
        build_if_graph(ov_cascade[0], tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="expected 4 thresholds"):
        build_if_graph(onnx_cascade[0], tmp_path / "x.onnx", thresholds=[0.5])


def test_cli_export_if_form(tmp_path, ee, capsys, fmnist_test_small):
    from edgevit.cli import main
    from edgevit.methods.early_exit import save_early_exit

    save_early_exit(ee, tmp_path / "run" / "early_exit.safetensors")
    assert main(["early-exit", "export", str(tmp_path / "run"), "--out", str(tmp_path / "exp"), "--thresholds",
                 "0.5,0.5,0.5,0.5", "--exporter", "torchscript", "--parity-samples", "16", "--if-form"]) == 0
    assert "If form" in capsys.readouterr().out and (tmp_path / "exp" / "cascade_if.onnx").exists()
    assert main(["eval", "--artifact", str(tmp_path / "exp" / "cascade_if.onnx"), "--limit", "20", "--batch-size",
                 "1"]) == 0
    assert main(["early-exit", "export", str(tmp_path / "run"), "--out", str(tmp_path / "exp2"), "--format",
                 "openvino", "--if-form"]) == 2
    assert "--format onnx" in capsys.readouterr().err
