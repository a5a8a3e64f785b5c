"""Issue 16 fault 2: the dataset–model class check shared by eval, the eval stage, quantize's accuracy gate and
early-exit calibration (edgevit.evaluate.dataset_for_model), on real Fashion-MNIST images."""

from __future__ import annotations

import numpy as np
import pytest

from edgevit.errors import DataError


def _folder(root, fmnist, names_and_labels):
    """An ImageFolder of real Fashion-MNIST test images saved as RGB PNGs: one folder per (name, fmnist label)."""
    from PIL import Image

    for name, label in names_and_labels:
        d = root / name
        d.mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(fmnist.labels == label)[:4]):
            Image.fromarray(fmnist.images[i]).convert("RGB").save(d / f"{k}.png")
    return root


def test_cli_eval_folder_with_other_classes_is_refused(tmp_path, fmnist_test_small, teacher_available, capsys):
    """`edgevit eval --model fmnist-vit --data DIR` on two folders that are not the model's classes printed top-1
    0.00% and exited 0; now it says the classes do not map, and how to map them (exit 2)."""
    from edgevit.cli import main

    if not teacher_available:
        pytest.skip("the fmnist-vit weights are not installed")
    data = _folder(tmp_path / "pets", fmnist_test_small, [("cat", 7), ("dog", 8)])
    assert main(["eval", "--model", "fmnist-vit", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "'cat', 'dog'" in err and "do not map to the model's 10 classes" in err
    assert "Name each folder of the ImageFolder after the model's class" in err and "'Sneaker'" in err


def test_folders_named_after_model_classes_are_mapped(tmp_path, fmnist_test_small, teacher_available, capsys):
    """Folders named after two of the model's classes: labels follow the names (Sneaker → 7, Bag → 8), so the
    trained teacher scores what it scores on those images in Fashion-MNIST itself."""
    import json

    from edgevit.cli import main
    from edgevit.data import load_dataset
    from edgevit.evaluate import dataset_for_model
    from edgevit.models import MODELS

    data = _folder(tmp_path / "two", fmnist_test_small, [("Sneaker", 7), ("Bag", 8)])
    ds = load_dataset(str(data))
    assert ds.classes == ("Bag", "Sneaker")
    mapped = dataset_for_model(ds, MODELS.get("fmnist-vit").spec, source="fmnist-vit")
    assert sorted(set(mapped.labels.tolist())) == [7, 8] and len(mapped) == 8
    assert all(mapped.classes[lab] == ds.classes[orig] for lab, orig in zip(mapped.labels, ds.labels, strict=True))
    if not teacher_available:
        return
    assert main(["eval", "--model", "fmnist-vit", "--data", str(data), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["top1"] >= 0.75  # the trained teacher, not 0%


def test_headless_model_is_refused_by_evaluate(fmnist_test_small):
    """A feature extractor (num_classes 0) got top-1 0.00% and passed the INT8 gate at 0% → 0%: evaluate, which the
    eval CLI, the eval stage and quantize's accuracy gate share, refuses it."""
    import torch

    from edgevit.artifact import Artifact
    from edgevit.evaluate import evaluate
    from edgevit.models import fmnist, input_spec_of
    from edgevit.runtimes import load_runtime

    torch.manual_seed(0)
    model = fmnist.build("fmnist-vit-nano", num_classes=0).eval()
    spec = input_spec_of(model)
    assert spec.num_classes == 0
    rt = load_runtime("torch", Artifact(kind="torch", spec=spec, model=model, source="fmnist-vit-nano"))
    with pytest.raises(DataError, match=r"no classification head \(num_classes 0\).*features, not class logits"):
        evaluate(rt, fmnist_test_small)


def test_fewer_outputs_than_classes_is_refused(fmnist_test_small):
    from edgevit.evaluate import dataset_for_model
    from edgevit.spec import InputSpec

    spec = InputSpec(input_size=(1, 28, 28), mean=(0.5,), std=(0.5,), num_classes=5)
    with pytest.raises(DataError, match="has 10 classes .* but the model has 5 outputs"):
        dataset_for_model(fmnist_test_small, spec)
    assert dataset_for_model(fmnist_test_small, spec.__class__(**{**spec.to_dict(), "num_classes": 10,
                                                                   "input_size": (1, 28, 28)})) is fmnist_test_small


def test_folder_names_match_class_names_without_punctuation(tmp_path):
    """'T-shirt/top' cannot be a folder name: 'T-shirt_top' (any case, any punctuation) maps to output 0."""
    from PIL import Image

    from edgevit.data import load_image_folder
    from edgevit.evaluate import dataset_for_model
    from edgevit.models import MODELS

    for folder in ("T-shirt_top", "ankle-boot"):
        (tmp_path / folder).mkdir()
        Image.new("L", (28, 28), 128).save(tmp_path / folder / "a.png")
    ds = load_image_folder(tmp_path)
    mapped = dataset_for_model(ds, MODELS.get("fmnist-vit").spec, source="fmnist-vit")
    assert mapped.classes[int(mapped.labels[0])] == "T-shirt/top" and mapped.classes[int(mapped.labels[1])] == "Ankle boot"


def test_untrained_or_other_class_model_warns():
    """A timm name without --pretrained has random weights and 1000 ImageNet outputs: eval says both, loudly."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edgevit", "eval", "--model", "vit_tiny_patch16_224", "--limit", "8"],
                       capture_output=True, text=True, timeout=300, check=True)
    assert "random (untrained) weights" in r.stderr and "has 1000 outputs and does not name its classes" in r.stderr
