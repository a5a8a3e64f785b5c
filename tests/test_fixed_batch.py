"""Issue 16, faults 3 and 9: runtimes with a fixed batch (TVM, static ONNX/OpenVINO, the early-exit If form) in
every loop over data — eval, parity, profile — through edgevit.runtimes.run_batched / batch_size_for."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgevit.errors import ConfigError, InputSpecError


def _eval(args, tmp_path, name):
    from edgevit.cli import main

    out = tmp_path / f"{name}.json"
    assert main(["eval", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def batch4_onnx(tiny_onnx, tmp_path_factory):
    """The tiny model's dynamic ONNX export with its batch axis fixed to 4 (a static-batch graph of batch 4)."""
    import onnx

    model = onnx.load(str(tiny_onnx[0]))
    for vi in (*model.graph.input, *model.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_value = 4
    path = tmp_path_factory.mktemp("b4") / "fmnist-vit-tiny-b4.onnx"
    onnx.save(model, str(path))
    return path


def test_static_batch_onnx_evaluated_with_a_batch_size_that_does_not_divide_the_limit(tiny_onnx, batch4_onnx,
                                                                                        tmp_path):
    from edgevit.runtimes import batch_size_for, load_runtime, run_batched, run_padded

    rt = load_runtime("onnxruntime", batch4_onnx)
    assert rt.fixed_batch == 4 and rt.batch_limits == (4, 4) and batch_size_for(rt, 8) == 4
    dyn = _eval(["--artifact", str(tiny_onnx[0]), "--batch-size", "1", "--limit", "22"], tmp_path, "dyn")
    got = _eval(["--artifact", str(batch4_onnx), "--batch-size", "8", "--limit", "22"], tmp_path, "b4")
    assert got["n"] == 22 and dyn["n"] == 22 and got["batch_size"] == 4
    assert got["correct1"] == dyn["correct1"] and got["correct5"] == dyn["correct5"]
    # the padded last batch gives the same logits as the same images in a full batch
    from edgevit.data import load_dataset, preprocess

    x = preprocess(load_dataset("fashion-mnist", "test", limit=6).images, rt.spec)
    ref = load_runtime("onnxruntime", tiny_onnx[0]).run(x)
    np.testing.assert_allclose(run_batched(rt, x), ref, atol=1e-5, rtol=1e-5)
    assert run_padded(rt, x[:3]).shape == (3, 10)
    with pytest.raises(InputSpecError, match="fixed batch size of 4"):
        rt.run(x[:3])


def test_static_batch_onnx_profile_refuses_other_batches(batch4_onnx, capsys):
    from edgevit.cli import main
    from edgevit.profiling.latency import profile_runtime
    from edgevit.runtimes import load_runtime

    rt = load_runtime("onnxruntime", batch4_onnx)
    with pytest.raises(ConfigError, match="exactly 4.*--batch 4"):
        profile_runtime(rt, batch_sizes=(1,), runs=3)
    assert main(["profile", str(batch4_onnx), "--batch", "8", "--runs", "3", "--warmup", "0"]) == 2
    assert "exactly 4" in capsys.readouterr().err
    assert main(["profile", str(batch4_onnx), "--batch", "4", "--runs", "3", "--warmup", "0"]) == 0


def test_static_openvino_ir_evaluated_with_a_batch_size_that_does_not_divide_the_limit(tiny_model, tiny_onnx,
                                                                                        fmnist_test_small, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]')")
    from edgevit.formats.openvino.export import export_openvino

    # 5 parity images at a fixed batch of 1 used to be fine; the IR's parity now pads instead of dropping images
    res = export_openvino(tiny_model, tmp_path / "ir", dynamic_batch=False, parity_images=fmnist_test_small.images[:5])
    xml = res.artifact.path
    assert res.parity.n == 5
    dyn = _eval(["--artifact", str(tiny_onnx[0]), "--batch-size", "1", "--limit", "13"], tmp_path, "dyn")
    got = _eval(["--artifact", str(xml), "--batch-size", "5", "--limit", "13"], tmp_path, "ir")
    assert got["n"] == 13 and got["batch_size"] == 1 and got["correct1"] == dyn["correct1"]


def test_tvm_batch_8_library_evaluated_on_100_images(tmp_path):
    """The issue's repro: `export tvm --model fmnist-vit-nano --trials 0 --batch 8`, then eval --batch-size 8
    --limit 100 failed on the last 4 images."""
    pytest.importorskip("tvm", reason="TVM is not installed (pip install 'edgevit[tvm]')")
    from edgevit.cli import main

    out = tmp_path / "tvm"
    assert main(["export", "tvm", "--model", "fmnist-vit-nano", "--trials", "0", "--batch", "8", "--out", str(out),
                 "--work-dir", str(tmp_path / "cache"), "--parity-samples", "12"]) == 0  # 12: a padded last chunk
    tvm = _eval(["--artifact", str(out / "model.so"), "--batch-size", "8", "--limit", "100"], tmp_path, "tvm")
    one = _eval(["--model", "fmnist-vit-nano", "--batch-size", "1", "--limit", "100"], tmp_path, "torch")
    assert tvm["n"] == 100 and one["n"] == 100
    assert tvm["top1"] == one["top1"] and tvm["correct5"] == one["correct5"]
    # any requested batch size runs the library's own batch of 8 (the default 100 included)
    assert _eval(["--artifact", str(out / "model.so"), "--limit", "13"], tmp_path, "tvm13")["n"] == 13


# ------------------------------------------------------------------------------------------ early-exit If form


@pytest.fixture(scope="module")
def cascade(tmp_path_factory, tiny_model, fmnist_test_small):
    """The tiny model with exits, exported as a segment cascade (thresholds at the median confidence of real
    train images, so test images leave at several exits) and as the single If graph."""
    import torch

    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.cascade.thresholds import scores
    from edgevit.methods.early_exit import attach_exits, build_if_graph, export_cascade

    torch.manual_seed(0)
    ee = attach_exits(tiny_model)
    x = torch.from_numpy(preprocess(load_dataset("fashion-mnist", "train", limit=201).images, ee.edgevit_spec))
    with torch.inference_mode():
        out = ee.forward_all(x)
    th = [float(np.median(scores(z.numpy(), "confidence"))) for z in out["exits"]]
    d = tmp_path_factory.mktemp("ee")
    export_cascade(ee, d, format="onnx", thresholds=th, parity_images=fmnist_test_small.images[:16])
    build_if_graph(d / "manifest.json", d / "cascade_if.onnx", parity_images=fmnist_test_small.images[:16])
    return d


def test_if_form_declares_batch_1_and_eval_at_batch_100_equals_one_at_a_time(cascade, tmp_path):
    import onnx

    from edgevit.runtimes import load_runtime

    path = cascade / "cascade_if.onnx"
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 1
    rt = load_runtime("onnxruntime", path)
    assert rt.fixed_batch == 1 and rt.early_exit_if
    with pytest.raises(InputSpecError, match="one image at a time"):
        rt.run(np.zeros((2, *rt.spec.input_size), np.float32))
    at100 = _eval(["--artifact", str(path), "--limit", "64"], tmp_path, "if100")  # eval's default batch: 100
    at1 = _eval(["--artifact", str(path), "--limit", "64", "--batch-size", "1"], tmp_path, "if1")
    seg = _eval(["--artifact", str(cascade / "manifest.json"), "--limit", "64"], tmp_path, "seg")
    assert at100["n"] == at1["n"] == seg["n"] == 64 and at100["batch_size"] == 1
    assert at100["correct1"] == at1["correct1"] == seg["correct1"]
    pytest.importorskip("openvino")
    ov = _eval(["--artifact", str(path), "--runtime", "openvino", "--limit", "64"], tmp_path, "ov")
    assert ov["correct1"] == seg["correct1"]


def test_if_form_written_with_a_dynamic_batch_still_runs_batch_1(cascade, tmp_path):
    """An If graph from before the fix (batch axis left dynamic) is still batch 1 for every runtime and loop."""
    import onnx

    from edgevit.runtimes import load_runtime

    model = onnx.load(str(cascade / "cascade_if.onnx"))
    d = model.graph.input[0].type.tensor_type.shape.dim[0]
    d.Clear()
    d.dim_param = "batch"
    old = tmp_path / "old_if.onnx"
    onnx.save(model, str(old))
    assert load_runtime("onnxruntime", old).fixed_batch == 1
    seg = _eval(["--artifact", str(cascade / "manifest.json"), "--limit", "40"], tmp_path, "seg")
    assert _eval(["--artifact", str(old), "--limit", "40"], tmp_path, "old")["correct1"] == seg["correct1"]
    pytest.importorskip("openvino")
    assert load_runtime("openvino", old).fixed_batch == 1


def test_profile_if_form_refuses_batch_8_and_reports_the_exit_mix(cascade, tmp_path, capsys):
    from edgevit.cli import main
    from edgevit.formats.cascade.runtime import CascadeRuntime
    from edgevit.runtimes import load_runtime, open_artifact

    path = cascade / "cascade_if.onnx"
    assert main(["profile", str(path), "--batch", "8", "--runs", "3"]) == 2
    assert "single-graph early-exit form" in capsys.readouterr().err
    out = tmp_path / "p.json"
    assert main(["profile", str(path), "--runs", "400", "--warmup", "0", "--json", str(out)]) == 0
    assert "exit mix" in capsys.readouterr().out
    row = json.loads(out.read_text())["results"][0]
    mix = row["exit_mix"]
    # 400 timed calls over the 200-image sample (warm-up 5 first): each image twice, so the mix is the sample's
    assert mix["samples"] == 400 and abs(sum(mix["shares"]) - 1) < 1e-9 and len(mix["shares"]) == 5
    assert sum(s > 0 for s in mix["shares"]) >= 2 and "cycling" in row["input_source"]
    from edgevit.data import load_dataset, preprocess

    art = open_artifact(cascade / "manifest.json")
    x = preprocess(load_dataset("fashion-mnist", "test", limit=200).images, art.spec)
    with CascadeRuntime(art) as casc:
        _, exits = casc.run_with_exits(x)
    want = np.bincount(exits, minlength=5) / len(exits)
    np.testing.assert_allclose(mix["shares"], want, atol=1e-9)
    # the segment cascade: the same mix, over the same sample
    out2 = tmp_path / "s.json"
    assert main(["profile", str(cascade / "manifest.json"), "--runs", "400", "--warmup", "0", "--json",
                 str(out2)]) == 0
    np.testing.assert_allclose(json.loads(out2.read_text())["results"][0]["exit_mix"]["shares"], want, atol=1e-9)
    rt = load_runtime("onnxruntime", path)
    assert rt.exit_counts is not None and rt.exit_counts.sum() == 0


def test_calibration_of_a_static_batch_graph_uses_every_image(batch4_onnx):
    """TensorRT calibration on a fixed-batch-4 graph with 6 images used to drop the last 2; now the tail is padded."""
    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.tensorrt.calib import activation_ranges
    from edgevit.runtimes import open_artifact

    x = preprocess(load_dataset("fashion-mnist", "test", limit=6).images, open_artifact(batch4_onnx).spec)
    x[5] *= 3.0  # the largest input value lies in the last, incomplete batch
    rec = activation_ranges(batch4_onnx, x, method="max")
    assert rec["tensors"]["input"]["max_abs"] == pytest.approx(float(np.abs(x[5]).max()), rel=1e-6)
