"""Shared fixtures: small real Fashion-MNIST subsets and tiny models (every test runs in seconds)."""

from __future__ import annotations

import os

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
def tiny_onnx(tmp_path_factory, tiny_model):
    """``fmnist-vit-tiny`` exported once to ONNX (dynamic batch, parity on real images): ``(path, record)``."""
    from edgevit.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "fmnist-vit-tiny.onnx"
    record = export_onnx(tiny_model, path)
    return path, record
