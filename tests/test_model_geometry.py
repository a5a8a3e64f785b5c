"""Model geometry from the checkpoint and deterministic random initialisation (issue 16, faults 4 and 8)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgevit.cli import main
from edgevit.models import create, init_seed


@pytest.fixture(scope="module")
def foreign_vit(tmp_path_factory):
    """A 1-channel 28x28 timm ViT saved as plain safetensors (no edgevit metadata), as a user's training script
    would write it."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", in_chans=1, img_size=28, patch_size=4, num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "vit1ch.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path, m


def test_geometry_read_from_checkpoint(foreign_vit):
    path, ref = foreign_vit
    m = create(str(path), arch="vit_tiny_patch16_224")
    assert m.edgevit_spec.input_size == (1, 28, 28) and m.edgevit_spec.num_classes == 10
    assert len(m.edgevit_spec.mean) == 1 and len(m.edgevit_spec.std) == 1
    import torch

    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(m(x), ref.eval()(x), atol=1e-5)


def test_geometry_checkpoint_through_the_cli(foreign_vit, tmp_path):
    path, _ = foreign_vit
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(path), "--arch", "vit_tiny_patch16_224", "--limit", "20",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 20
    rec = tmp_path / "x.json"
    assert main(["export", "onnx", "--model", str(path), "--arch", "vit_tiny_patch16_224", "--out",
                 str(tmp_path / "m.onnx"), "--parity-samples", "8", "--json", str(rec)]) == 0
    r = json.loads(rec.read_text())
    assert r["input_spec"]["input_size"] == [1, 28, 28] and r["top1_agreement"] == 1.0


def test_model_kwargs_override():
    m = create("vit_tiny_patch16_224", model_kwargs={"in_chans": 1, "img_size": 32, "patch_size": 8,
                                                     "num_classes": 3})
    assert m.edgevit_spec.input_size == (1, 32, 32) and m.edgevit_spec.num_classes == 3


_HASH = ("import hashlib, sys; from edgevit.models import create; m = create(sys.argv[1]); "
         "h = hashlib.sha256(); [h.update(v.detach().numpy().tobytes()) for v in m.state_dict().values()]; "
         "print(m.edgevit_init_seed, h.hexdigest())")


@pytest.mark.parametrize("name", ["fmnist-vit-nano", "vit_tiny_patch16_224"])
def test_random_init_same_in_every_process(name):
    runs = [subprocess.run([sys.executable, "-c", _HASH, name], capture_output=True, text=True, check=True,
                           timeout=300).stdout.split() for _ in range(2)]
    assert runs[0] == runs[1]
    assert int(runs[0][0]) == init_seed(name)


def test_random_init_leaves_global_rng_alone():
    import torch

    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    create("fmnist-vit-nano")
    b = torch.rand(3)
    assert torch.equal(a, b)
    assert init_seed("fmnist-vit-nano") != init_seed("fmnist-vit-tiny")
    assert np.isscalar(init_seed("x"))
