"""The C++ consumer (examples/cpp): built against the OpenVINO wheel, run on REAL Fashion-MNIST images as PGM files.

Its top-1 and logits must match Python's OpenVINO runtime on the same IR, and its preprocessing must match
edgevit.data.preprocess (also for resized, RGB and bicubic/crop_pct inputs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def classify_bin(cpp_build) -> Path:
    binary = cpp_build / "classify"
    assert binary.exists(), binary
    return binary


def write_pnm(path: Path, image: np.ndarray) -> Path:
    """Binary PGM (grey [H,W]) or PPM (RGB [H,W,3]) of a uint8 image."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    magic = b"P5" if image.ndim == 2 else b"P6"
    path.write_bytes(magic + b"\n# edgevit test image\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + image.tobytes())
    return path


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory, tiny_model, fmnist_test_small):
    from edgevit.formats.openvino.export import export_openvino

    rec = export_openvino(tiny_model, tmp_path_factory.mktemp("cpp-ir"), parity_images=fmnist_test_small.images[:8])
    return Path(rec.path)


@pytest.fixture(scope="module")
def pgm_images(tmp_path_factory, fmnist_test_small):
    """Six real Fashion-MNIST test images as PGM files: ``[(path, uint8 image, label)]``."""
    d = tmp_path_factory.mktemp("pgm")
    idx = [0, 1, 2, 3, 10, 42]
    return [(write_pnm(d / f"test{i}_label{fmnist_test_small.labels[i]}.pgm", fmnist_test_small.images[i]),
             fmnist_test_small.images[i], int(fmnist_test_small.labels[i])) for i in idx]


def run_classify(binary: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(binary), *map(str, args)], check=False, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        pytest.fail(f"classify {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def test_top1_and_logits_match_python_runtime(classify_bin, tiny_ir, pgm_images, tmp_path):
    from edgevit.data import preprocess
    from edgevit.runtimes import load_runtime

    out = tmp_path / "c.json"
    r = run_classify(classify_bin, tiny_ir, *[p for p, _, _ in pgm_images], "--runs", 10, "--json", out)
    doc = json.loads(out.read_text())
    assert doc["device"] == "CPU" and doc["inference_precision"] == "f32" and doc["input_size"] == [1, 28, 28]
    assert doc["openvino_version"] and doc["hint"] == "LATENCY"

    rt = load_runtime("openvino", tiny_ir)  # f32 on CPU, as the C++ default
    py = rt.run(preprocess(np.stack([im for _, im, _ in pgm_images]), rt.spec))
    assert len(doc["results"]) == len(pgm_images)
    for res, (path, _, _), logits in zip(doc["results"], pgm_images, py):
        assert res["image"] == str(path)
        cpp = np.array(res["logits"], dtype=np.float32)
        assert res["top"][0]["class"] == int(np.argmax(logits)) == int(np.argmax(cpp))
        np.testing.assert_allclose(cpp, logits, atol=1e-4, rtol=0)
        probs = [t["prob"] for t in res["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        lat = res["latency_ms"]
        assert lat["runs"] == 10 and lat["batch"] == 1 and 0 < lat["min"] <= lat["median"] <= lat["p90"]
    first = r.stdout.splitlines()
    assert first[0] == str(pgm_images[0][0]) and first[1].startswith("  1. class ") and "latency: median" in r.stdout


def _dump(binary: Path, ir: Path, image_path: Path, tmp_path: Path, shape) -> np.ndarray:
    dump = tmp_path / "input.f32"
    run_classify(binary, ir, image_path, "--runs", 1, "--warmup", 0, "--dump-input", dump)
    return np.fromfile(dump, dtype=np.float32).reshape(shape)


def test_preprocessing_matches_python_for_resized_and_rgb_images(classify_bin, tiny_ir, fmnist_test_small, tmp_path):
    """Real images at other sizes (down- and up-scaled) and as RGB PPM go through the same steps as in Python."""
    from PIL import Image

    from edgevit.data import preprocess
    from edgevit.runtimes import load_runtime

    rt = load_runtime("openvino", tiny_ir)
    img = fmnist_test_small.images[5]
    variants = {
        "big.pgm": np.asarray(Image.fromarray(img).resize((40, 36), Image.BILINEAR)),
        "small.pgm": img[4:21, 3:25],
        "rgb.ppm": np.stack([img, fmnist_test_small.images[6], 255 - img], axis=-1),
    }
    for name, image in variants.items():
        got = _dump(classify_bin, tiny_ir, write_pnm(tmp_path / name, image), tmp_path, (1, 28, 28))
        ref = preprocess(image[None], rt.spec)[0]  # [None]: a 3-D array would be read as N grey images
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=name)


def test_bicubic_crop_pct_rgb_spec(classify_bin, fmnist_test_small, tmp_path):
    """A timm-style spec (RGB, bicubic, crop_pct 0.875) read from the IR: resize to 37, centre-crop 32, like Python."""
    import torch

    from edgevit.data import preprocess
    from edgevit.formats.openvino.export import export_openvino
    from edgevit.models import attach_spec
    from edgevit.spec import InputSpec

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
            self.head = torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))

    spec = InputSpec((3, 32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), interpolation="bicubic",
                     crop_pct=0.875, num_classes=10)
    torch.manual_seed(0)
    rec = export_openvino(attach_spec(Net(), spec), tmp_path / "rgb.xml",
                          parity_images=fmnist_test_small.images[:4]).to_dict()
    image = fmnist_test_small.images[7]
    got = _dump(classify_bin, Path(rec["path"]), write_pnm(tmp_path / "x.pgm", image), tmp_path, (3, 32, 32))
    np.testing.assert_allclose(got, preprocess(image[None], spec)[0], atol=1e-5, rtol=0)


def test_errors_say_what_failed(classify_bin, tiny_ir, pgm_images, tmp_path, tiny_onnx):
    import openvino as ov

    image = pgm_images[0][0]
    lone = tmp_path / "lone.xml"
    shutil.copy(tiny_ir, lone)
    r = run_classify(classify_bin, lone, image, check=False)
    assert r.returncode == 1 and "lone.bin is missing" in r.stderr and "re-export" in r.stderr

    not_pnm = tmp_path / "x.png"
    not_pnm.write_bytes(b"\x89PNG\r\n")
    r = run_classify(classify_bin, tiny_ir, not_pnm, check=False)
    assert r.returncode == 2 and "not a PGM/PPM file" in r.stderr

    truncated = tmp_path / "t.pgm"
    truncated.write_bytes(b"P5\n28 28\n255\n" + bytes(100))
    r = run_classify(classify_bin, tiny_ir, truncated, check=False)
    assert r.returncode == 2 and "truncated PNM pixel data (100 of 784 bytes)" in r.stderr

    bare = tmp_path / "bare.xml"  # an IR not written by edgevit: no spec in rt_info
    ov.save_model(ov.convert_model(str(tiny_onnx[0])), str(bare))
    r = run_classify(classify_bin, bare, image, check=False)
    assert r.returncode == 1 and "edgevit/preprocess" in r.stderr and "edgevit export openvino" in r.stderr

    r = run_classify(classify_bin, tiny_ir, image, "--device", "TPU", check=False)
    assert r.returncode == 1 and "device 'TPU' is not available" in r.stderr and "CPU" in r.stderr

    r = run_classify(classify_bin, tiny_ir, check=False)
    assert r.returncode == 2 and "usage: classify" in r.stderr


def test_options_threads_precision(classify_bin, tiny_ir, pgm_images, tmp_path):
    out = tmp_path / "o.json"
    run_classify(classify_bin, tiny_ir, pgm_images[0][0], "--threads", 1, "--precision", "bf16", "--hint",
                 "throughput", "--top", 3, "--runs", 3, "--json", out)
    doc = json.loads(out.read_text())
    assert doc["threads"] == 1 and doc["hint"] == "THROUGHPUT" and doc["inference_precision"] in ("bf16", "f32")
    assert len(doc["results"][0]["top"]) == 3


def test_sample_image_and_class_names(classify_bin, tiny_ir, fmnist_test_small, tmp_path, capsys):
    """The README's walk-through: `edgevit data sample` writes a real test image, and classify names the classes
    from the IR's metadata (edgevit/preprocess/class_names, written from the spec of the built-in models)."""
    import openvino as ov
    from PIL import Image

    from edgevit.cli import main
    from edgevit.data.fashion_mnist import CLASSES

    image = tmp_path / "image.pgm"
    assert main(["data", "sample", "--data", "fashion-mnist", "--index", "3", "--out", str(image)]) == 0
    label = int(fmnist_test_small.labels[3])
    assert f"label {label} ({CLASSES[label]})" in capsys.readouterr().out
    assert image.read_bytes().startswith(b"P5")
    np.testing.assert_array_equal(np.asarray(Image.open(image)), fmnist_test_small.images[3])

    ir = ov.Core().read_model(str(tiny_ir))
    assert ir.get_rt_info(["edgevit", "preprocess", "class_names"]).astype(str).split("\n") == list(CLASSES)

    out = tmp_path / "named.json"
    r = run_classify(classify_bin, tiny_ir, image, "--runs", 1, "--warmup", 0, "--json", out)
    top = json.loads(out.read_text())["results"][0]["top"]
    assert [t["name"] for t in top] == [CLASSES[t["class"]] for t in top]
    lines = r.stdout.splitlines()
    assert lines[0] == str(image) and lines[1].startswith(f"  1. class {top[0]['class']} ({CLASSES[top[0]['class']]})  p=")

    for bad, msg in ((["--index", "100000"], "has only 10000 images"), (["--out", str(tmp_path / "x.jpgx")],
                                                                         "cannot tell the image format")):
        args = ["data", "sample", "--index", "0", "--out", str(image), *bad]
        assert main(args) == 2 and msg in capsys.readouterr().err
