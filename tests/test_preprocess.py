"""Preprocessing equals timm's own evaluation transform, on real non-square photos (scikit-image's sample images)
and real Fashion-MNIST images; ImageFolder images keep their own sizes (issue 16, fault 6)."""

from __future__ import annotations

import numpy as np
import pytest

from edgevit.data import load_dataset, load_image_folder, preprocess
from edgevit.spec import InputSpec

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the real sample photos (pip extra dev)")
timm_data = pytest.importorskip("timm.data")

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _timm(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    from PIL import Image

    t = timm_data.create_transform(input_size=spec.input_size, interpolation=spec.interpolation,
                                   crop_pct=spec.crop_pct, mean=spec.mean, std=spec.std, is_training=False)
    return t(Image.fromarray(img).convert("RGB")).numpy()


@pytest.mark.parametrize("photo", ["chelsea", "coffee", "astronaut"])  # 300x451, 400x600, 512x512
@pytest.mark.parametrize("spec", [
    InputSpec((3, 224, 224), interpolation="bicubic", crop_pct=0.875, **IMAGENET),  # DeiT / ViT eval
    InputSpec((3, 224, 224), interpolation="bilinear", crop_pct=0.9, **IMAGENET),   # floor(224 / 0.9) = 248
    InputSpec((3, 192, 256), interpolation="bicubic", crop_pct=1.0, **IMAGENET),    # non-square input size
])
def test_preprocess_equals_timm_transform_on_real_photos(photo, spec):
    img = getattr(skdata, photo)()
    ours = preprocess(img[None], spec)[0]
    ref = _timm(img, spec)
    assert ours.shape == ref.shape == spec.input_size
    assert np.abs(ours - ref).max() < 1e-5


def test_non_square_prediction_input_not_squashed():
    """The old transform squashed every photo to a square: on chelsea (300x451) the tensor differed by > 1."""
    img = skdata.chelsea()
    spec = InputSpec((3, 224, 224), interpolation="bicubic", crop_pct=0.875, **IMAGENET)
    from PIL import Image

    squashed = np.asarray(Image.fromarray(img).resize((256, 256), Image.Resampling.BICUBIC))[16:240, 16:240]
    assert np.abs(preprocess(img[None], spec)[0] - preprocess(squashed[None], spec)[0]).max() > 0.5


def test_image_folder_keeps_sizes_and_order_does_not_matter(tmp_path):
    """Images of different sizes each go through the model's transform; reading order changes nothing."""
    from PIL import Image

    photos = {"cat": skdata.chelsea(), "coffee": skdata.coffee()}
    for cls, img in photos.items():
        (tmp_path / cls).mkdir()
        Image.fromarray(img).save(tmp_path / cls / "a.png")
    ds = load_image_folder(tmp_path)
    assert ds.images.dtype == object and [a.shape for a in ds.images] == [(300, 451, 3), (400, 600, 3)]
    spec = InputSpec((3, 224, 224), interpolation="bicubic", crop_pct=0.875, **IMAGENET)
    both = preprocess(ds.images, spec)
    assert np.abs(both[0] - _timm(photos["cat"], spec)).max() < 1e-5
    assert np.abs(both[1] - _timm(photos["coffee"], spec)).max() < 1e-5
    assert np.array_equal(preprocess(ds.images[::-1], spec), both[::-1])
    assert np.array_equal(preprocess(ds.subset([1]).images, spec), both[1:])


def test_fashion_mnist_grey_upsampled_like_timm():
    """Real 28x28 grey images to a 3x224x224 model: timm's transform on the RGB-converted image."""
    ds = load_dataset("fashion-mnist", "test", limit=4)
    spec = InputSpec((3, 224, 224), interpolation="bicubic", crop_pct=0.875, **IMAGENET)
    ours = preprocess(ds.images, spec)
    ref = np.stack([_timm(im, spec) for im in ds.images])
    assert np.abs(ours - ref).max() < 1e-5


def test_native_size_unchanged():
    """At the model's own size nothing is resized: (x/255 - mean)/std exactly."""
    ds = load_dataset("fashion-mnist", "test", limit=8)
    spec = InputSpec((1, 28, 28), mean=(0.2860,), std=(0.3530,))
    expected = ((ds.images.astype(np.float32) / 255.0 - 0.2860) / 0.3530)[:, None]
    assert np.allclose(preprocess(ds.images, spec), expected, atol=1e-6)
