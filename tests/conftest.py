"""Shared fixtures: small real Fashion-MNIST subsets and tiny models (every test runs in seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("EDGEVIT_PROGRESS", "0")


@pytest.fixture(scope="session")
def fmnist_test_small():
    """The first 64 real Fashion-MNIST test images (skips with a reason when the dataset is not installed)."""
    from edgevit.data import load_dataset
    from edgevit.errors import DataError

    try:
        return load_dataset("fashion-mnist", "test", limit=64)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed: {exc}")


@pytest.fixture(scope="session")
def tiny_model():
    """``fmnist-vit-tiny`` with a fixed random init (fast: 6 blocks at 28×28)."""
    import torch

    from edgevit.models import create

    torch.manual_seed(0)
    return create("fmnist-vit-tiny")


@pytest.fixture(scope="session")
def teacher_available():
    from edgevit.models import MODELS

    return MODELS.get("fmnist-vit").weights_path().exists()


@pytest.fixture
def real_batch(fmnist_test_small, tiny_model):
    from edgevit.data import preprocess

    return preprocess(fmnist_test_small.images[:8], tiny_model.edgevit_spec)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_model, fmnist_test_small):
    """``fmnist-vit-tiny`` exported once to ONNX (dynamic batch, parity on real images): ``(path, record)``."""
    from edgevit.formats.onnx.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "fmnist-vit-tiny.onnx"
    record = export_onnx(tiny_model, path, parity_images=fmnist_test_small.subset(range(32))).to_dict()
    return path, record


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> Path:
    """examples/cpp built once per test session (every executable); EDGEVIT_CPP_BUILD_DIR keeps it between sessions.

    Skips when openvino (the C++ code builds against the wheel's headers and CMake config), cmake or a compiler is
    missing. Returns the folder holding the executables.
    """
    import os
    import shutil
    import subprocess
    import sys

    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]'); the C++ "
                                           "examples build against the wheel's headers and CMake config")
    if not shutil.which("cmake") or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("cmake or a C++ compiler is missing (apt-get install cmake g++)")
    cpp = Path(__file__).resolve().parent.parent / "examples" / "cpp"
    build = Path(os.environ.get("EDGEVIT_CPP_BUILD_DIR") or tmp_path_factory.mktemp("cpp-build"))
    env = dict(os.environ, PYTHON=sys.executable, JOBS=os.environ.get("JOBS", "2"))
    r = subprocess.run(["bash", str(cpp / "build.sh"), str(build)], check=False, capture_output=True, text=True,
                       env=env, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"examples/cpp/build.sh failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return Path(r.stdout.strip().splitlines()[-1]).parent
