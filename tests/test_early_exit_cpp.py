"""The C++ early-exit cascade (examples/cpp/early_exit_cascade): reads manifest.json, runs the OpenVINO graphs with
per-sample exit on REAL Fashion-MNIST images (PGM files) and must give the same exits and predictions as Python."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def cascade_bin(cpp_build) -> Path:
    binary = cpp_build / "early_exit_cascade"
    assert binary.exists(), binary
    return binary


@pytest.fixture(scope="module")
def cascade(tmp_path_factory, tiny_model, fmnist_test_small):
    """fmnist-vit-tiny with random heads, thresholds at the median train-image confidence, exported to OpenVINO."""
    from edgevit.data import load_dataset, preprocess
    from edgevit.formats.cascade.thresholds import scores
    from edgevit.methods.early_exit import attach_exits, export_cascade

    torch.manual_seed(3)
    ee = attach_exits(tiny_model)
    x = torch.from_numpy(preprocess(load_dataset("fashion-mnist", "train", limit=201).images, ee.edgevit_spec))
    with torch.inference_mode():
        th = [float(np.median(scores(z.numpy(), "confidence"))) for z in ee.forward_all(x)["exits"]]
    out = tmp_path_factory.mktemp("ee-cpp")
    export_cascade(ee, out, format="openvino", thresholds=th, exporter="torchscript",
                   parity_images=fmnist_test_small.images[:16])
    return ee, th, out / "manifest.json"


def _pgm(path: Path, image: np.ndarray) -> Path:
    path.write_bytes(b"P5\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + np.ascontiguousarray(image).tobytes())
    return path


def test_cpp_cascade_matches_python_and_torch(cascade_bin, cascade, fmnist_test_small, tmp_path):
    from edgevit.data import preprocess
    from edgevit.runtimes import load_runtime

    ee, th, manifest = cascade
    images = fmnist_test_small.images[:12]
    files = [_pgm(tmp_path / f"t{i}.pgm", im) for i, im in enumerate(images)]
    out = tmp_path / "c.json"
    r = subprocess.run(check=False, args=[str(cascade_bin), str(manifest), *map(str, files), "--batch", "5", "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    cpp_exits = np.array([res["exit"] for res in doc["results"]])
    cpp_cls = np.array([res["class"] for res in doc["results"]])
    cpp_logits = np.array([res["logits"] for res in doc["results"]], dtype=np.float32)

    x = preprocess(images, ee.edgevit_spec)
    rt = load_runtime("openvino", manifest)
    py_logits, py_exits = rt.run_with_exits(x)
    t_logits, t_exits = ee.predict(torch.from_numpy(x), th)
    assert len(set(t_exits.tolist())) >= 3, "the thresholds should spread these images over the exits"
    np.testing.assert_array_equal(cpp_exits, t_exits)
    np.testing.assert_array_equal(cpp_exits, py_exits)
    np.testing.assert_array_equal(cpp_cls, t_logits.numpy().argmax(1))
    np.testing.assert_allclose(cpp_logits, py_logits, atol=1e-4, rtol=0)
    blocks = [2, 3, 4, 5, 6]
    assert [res["block"] for res in doc["results"]] == [blocks[e] for e in t_exits]
    assert r.stdout.splitlines()[0].startswith(f"{files[0]}  exit {t_exits[0]} (block {blocks[t_exits[0]]})")


def test_cpp_cascade_errors(cascade_bin, cascade, fmnist_test_small, tmp_path):
    manifest = cascade[2]
    img = _pgm(tmp_path / "a.pgm", fmnist_test_small.images[0])
    broken = tmp_path / "broken"
    shutil.copytree(manifest.parent, broken)
    (broken / "segment_3.xml").unlink()
    r = subprocess.run(check=False, args=[str(cascade_bin), str(broken / "manifest.json"), str(img)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "segment 'segment_3' with file 'segment_3.xml', which does not exist" in r.stderr
    m = json.loads(manifest.read_text())
    m["thresholds"][1] = 1.5
    (broken / "manifest.json").write_text(json.dumps(m))
    shutil.copy(manifest.parent / "segment_3.xml", broken / "segment_3.xml")
    r = subprocess.run(check=False, args=[str(cascade_bin), str(broken / "manifest.json"), str(img)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "threshold outside [0, 1]" in r.stderr
    r = subprocess.run(check=False, args=[str(cascade_bin), str(manifest)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage: early_exit_cascade" in r.stderr
