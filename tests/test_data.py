import gzip

import numpy as np
import pytest

from edgevit.data import calibration_subset, fashion_mnist, load_dataset, load_image_folder, preprocess
from edgevit.errors import DataError, InputSpecError
from edgevit.spec import InputSpec


def test_fashion_mnist_real_files(fmnist_test_small):
    d = fmnist_test_small
    assert d.images.shape == (64, 28, 28) and d.images.dtype == np.uint8
    assert d.labels.min() >= 0 and d.labels.max() <= 9
    assert len(d.classes) == 10


def test_full_test_split_size():
    try:
        x, y = fashion_mnist.load("test")
    except DataError as exc:
        pytest.skip(str(exc))
    assert x.shape == (10000, 28, 28) and np.bincount(y).tolist() == [1000] * 10


def test_missing_dataset_directory_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist.*--data-dir"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "nope")


def test_missing_file_in_directory(tmp_path):
    with pytest.raises(DataError, match="not found in"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


def test_truncated_idx_file(tmp_path):
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(DataError, match="promises"):
        fashion_mnist.read_idx(tmp_path, "t10k-images-idx3-ubyte")


def test_preprocess_grey_to_224_rgb(fmnist_test_small):
    spec = InputSpec((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.9)
    x = preprocess(fmnist_test_small.images[:2], spec)
    assert x.shape == (2, 3, 224, 224) and x.dtype == np.float32
    assert np.allclose(x[:, 0] * 0.229 + 0.485, x[:, 1] * 0.224 + 0.456, atol=1e-5)  # grey expanded


def test_preprocess_identity_size_normalises(fmnist_test_small):
    spec = InputSpec((1, 28, 28), fashion_mnist.MEAN, fashion_mnist.STD)
    x = preprocess(fmnist_test_small.images[:4], spec)
    ref = (fmnist_test_small.images[:4] / 255.0 - 0.2860) / 0.3530
    assert np.allclose(x[:, 0], ref, atol=1e-5)


def test_wrong_channel_count_image_is_rejected():
    spec = InputSpec((1, 28, 28), (0.5,), (0.5,))
    with pytest.raises(DataError, match="C in 1,3,4"):
        preprocess(np.zeros((2, 28, 28, 2), np.uint8), spec)


def test_wrong_size_batch_rejected_by_spec():
    spec = InputSpec((1, 28, 28), (0.5,), (0.5,))
    with pytest.raises(InputSpecError, match=r"expected a batch of shape \(N, 1, 28, 28\)"):
        spec.check_batch(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(InputSpecError, match="expected dtype float32"):
        spec.check_batch(np.zeros((2, 1, 28, 28), np.float64))


def test_calibration_subset_deterministic_and_balanced():
    try:
        d = load_dataset("fashion-mnist", "train", limit=2000)
    except DataError as exc:
        pytest.skip(str(exc))
    a, b = calibration_subset(d, 100, seed=1), calibration_subset(d, 100, seed=1)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.images, b.images)
    assert np.bincount(a.labels, minlength=10).tolist() == [10] * 10
    with pytest.raises(DataError, match="positive"):
        calibration_subset(d, 0)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_image_folder(tmp_path)
    assert d.images.shape == (6, 40, 50, 3) and d.classes == ("cat", "dog")
    assert d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="no images found"):
        load_image_folder(tmp_path / "cat" / "missing")
