"""Caption datasets: Fashion-MNIST captions and pairs (real images), COCO-captions and Karpathy-split JSON loaders on
fixtures written here with real image files."""

import json

import numpy as np
import pytest

from edgevit.data import load_dataset
from edgevit.data.captions import (
    FMNIST_NAMES,
    class_prompts,
    fashion_mnist_captions,
    fashion_mnist_pairs,
    load_caption_dataset,
    load_coco_captions,
    load_karpathy,
    pair_caption,
)
from edgevit.errors import DataError


@pytest.fixture(scope="module")
def pairs(fmnist_test_small):
    return fashion_mnist_pairs("test", num_pairs=50, seed=3)


def test_pairs_are_two_real_images_side_by_side_with_ordered_captions(pairs):
    from edgevit.data import fashion_mnist

    images, labels = fashion_mnist.load("test")
    assert pairs.images.shape == (50, 28, 56) and pairs.images.dtype == np.uint8
    for i in range(50):
        left, right = pairs.images[i, :, :28], pairs.images[i, :, 28:]
        li = np.flatnonzero((images == left).all((1, 2)))
        ri = np.flatnonzero((images == right).all((1, 2)))
        assert len(li) and len(ri), "each half is a real test image"
        a, b = pairs.labels[i]
        assert a != b and labels[li[0]] == a and labels[ri[0]] == b
        cap = pairs.captions[i]
        assert cap.index(FMNIST_NAMES[a]) < cap.rindex(FMNIST_NAMES[b]), cap


def test_pairs_hard_negatives_swap_and_change_one_item(pairs):
    for i in range(50):
        a, b = (int(v) for v in pairs.labels[i])
        swapped, changed = pairs.hard_negatives[i]
        assert swapped != pairs.captions[i]
        assert any(swapped == pair_caption(b, a, t) for t in range(3))
        tpl = next(t for t in range(3) if pairs.captions[i] == pair_caption(a, b, t))
        assert swapped == pair_caption(b, a, tpl)
        others = [pair_caption(z, b, tpl) for z in range(10) if z not in (a, b)] + \
                 [pair_caption(a, z, tpl) for z in range(10) if z not in (a, b)]
        assert changed in others


def test_pairs_deterministic_from_seed(pairs):
    again = fashion_mnist_pairs("test", num_pairs=50, seed=3)
    other = fashion_mnist_pairs("test", num_pairs=50, seed=4)
    assert np.array_equal(again.images, pairs.images) and again.captions == pairs.captions
    assert again.hard_negatives == pairs.hard_negatives
    assert not np.array_equal(other.images, pairs.images)


def test_captions_and_prompts_use_natural_names(fmnist_test_small):
    d = fashion_mnist_captions("test", limit=40)
    assert len(d) == 40 and len(d.captions) == 40 and np.array_equal(d.text_image, np.arange(40))
    for cap, lab in zip(d.captions, d.labels[:, 0], strict=True):
        assert FMNIST_NAMES[lab] in cap
    prompts = class_prompts(fmnist_test_small.classes)
    assert prompts[9][0] == "a photo of an ankle boot" and len(prompts) == 10


def test_registered_names_and_clear_error_as_classification_data(fmnist_test_small):
    assert load_caption_dataset("fashion-mnist-pairs", "test", limit=8).images.shape == (8, 28, 56)
    with pytest.raises(DataError, match="--task retrieval"):
        load_dataset("fashion-mnist-pairs", "test")
    with pytest.raises(DataError, match="unknown caption dataset"):
        load_caption_dataset("flickr", "test")


def _write_images(root, fmnist, n):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rgb = np.repeat(fmnist.images[i][..., None], 3, axis=2)
        Image.fromarray(rgb).save(root / f"img_{i}.png")
        names.append(f"img_{i}.png")
    return names


def test_coco_captions_json(tmp_path, fmnist_test_small):
    names = _write_images(tmp_path / "val2017", fmnist_test_small, 3)
    doc = {"images": [{"id": 10 + i, "file_name": n} for i, n in enumerate(names)],
           "annotations": [{"image_id": 10 + i % 3, "id": i, "caption": f" caption {i} "} for i in range(7)]}
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    d = load_coco_captions(tmp_path / "captions.json", image_root=tmp_path / "val2017")
    assert d.images.shape == (3, 28, 28, 3)
    assert np.array_equal(d.images[1][..., 0], fmnist_test_small.images[1])
    assert d.captions[0] == "caption 0" and d.text_image.tolist() == [0, 1, 2, 0, 1, 2, 0]
    same = load_caption_dataset(str(tmp_path / "captions.json"), image_root=tmp_path / "val2017")
    assert same.captions == d.captions


def test_karpathy_json_split_and_missing_files_counted_and_named(tmp_path, fmnist_test_small):
    names = _write_images(tmp_path / "flickr30k-images", fmnist_test_small, 4)
    doc = {"images": [{"filename": n, "split": "test" if i < 3 else "train",
                       "sentences": [{"raw": f"image {i} caption {j}"} for j in range(5)]}
                      for i, n in enumerate(names)]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(doc))
    d = load_karpathy(tmp_path / "dataset_flickr30k.json", "test", image_root=tmp_path / "flickr30k-images")
    assert len(d) == 3 and len(d.captions) == 15 and d.first_caption().tolist() == [0, 5, 10]
    doc["images"] += [{"filename": f"gone_{i}.jpg", "split": "test", "sentences": [{"raw": "x"}]} for i in range(7)]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"7 of 10 image files are missing \(.*gone_0\.jpg.*gone_4\.jpg …\)"):
        load_caption_dataset(f"karpathy:{tmp_path / 'dataset_flickr30k.json'}", "test",
                             image_root=tmp_path / "flickr30k-images")
