"""Image–caption datasets for dual encoders (specs/data-and-weights.md: no captioned dataset ships anywhere).

- ``fashion-mnist-captions``: each real Fashion-MNIST image with a caption from class templates
  ("a photo of a sneaker"); retrieval on it is close to classification.
- ``fashion-mnist-pairs``: two real Fashion-MNIST images of different classes side by side (a 28×56 grey image)
  with a caption naming both in order ("a sneaker to the left of a shirt"). Deterministic from ``seed``. Every
  pair carries hard negative captions: the swapped order, and one item changed. R@K on it needs the order,
  not only the classes.
- COCO-captions JSON (``captions_train2017.json`` layout) and the Flickr30k/COCO Karpathy-split JSON
  (``dataset_flickr30k.json`` layout), read from the user's own copy.

A :class:`CaptionDataset` holds ``images`` (as :class:`~edgevit.data.ArrayDataset`), ``captions`` (M strings)
and ``text_image`` (int64 [M]: the image each caption describes); an image may have several captions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

# natural names of the Fashion-MNIST classes for captions (the dataset's own names: fashion_mnist.CLASSES)
FMNIST_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
# templates take the name with its article ("a sneaker", "an ankle boot": :func:`with_article`)
CAPTION_TEMPLATES = ("a photo of {}", "a picture of {}", "a grey image of {}", "a small photo of {}", "{}")
PROMPT_TEMPLATES = ("a photo of {}", "a picture of {}", "a grey image of {}")  # zero-shot class prompts
PAIR_TEMPLATES = ("{} to the left of {}", "{} on the left and {} on the right", "{} next to {} on its right")
from . import CAPTION_DATASETS


@dataclass
class CaptionDataset:
    """Images with captions. ``images``: uint8 ``[N,H,W]`` / ``[N,H,W,3]`` (or an object array of sizes);
    ``captions``: M strings; ``text_image``: int64 ``[M]`` index of each caption's image; ``hard_negatives``: per
    image, captions that almost describe it (fashion-mnist-pairs), else empty; ``labels``: int64 ``[N, k]`` class
    ids of the items in each image in caption order (Fashion-MNIST based sets), else None; ``text_content``: what
    each caption and hard negative names (class ids in order) where the dataset knows it, so that two templates
    saying the same count as one (:meth:`content_key`); empty for COCO/Flickr (there only equal strings are equal)."""

    images: np.ndarray
    captions: list[str]
    text_image: np.ndarray
    name: str
    hard_negatives: list[list[str]] = field(default_factory=list)
    labels: np.ndarray | None = None
    text_content: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def content_key(self, text: str) -> tuple[int, ...] | str:
        """What ``text`` says: its class ids in order where the dataset knows them, else the string itself."""
        return self.text_content.get(text, text)

    def __len__(self) -> int:
        return len(self.images)

    def __post_init__(self) -> None:
        self.text_image = np.asarray(self.text_image, dtype=np.int64)
        if len(self.captions) != len(self.text_image):
            raise DataError(f"{self.name}: {len(self.captions)} captions but {len(self.text_image)} caption→image "
                            f"indices")
        if len(self.text_image) and (self.text_image.min() < 0 or self.text_image.max() >= len(self.images)):
            raise DataError(f"{self.name}: caption→image indices outside [0, {len(self.images)})")

    def first_caption(self) -> np.ndarray:
        """int64 [N]: the index of each image's first caption (the positive used in training)."""
        first = np.full(len(self), -1, np.int64)
        for t in range(len(self.text_image) - 1, -1, -1):
            first[self.text_image[t]] = t
        if (first < 0).any():
            raise DataError(f"{self.name}: {int((first < 0).sum())} images have no caption")
        return first

    def subset(self, indices) -> CaptionDataset:
        """The images ``indices`` (in that order) with their captions."""
        idx = np.asarray(indices, dtype=np.int64)
        new_of = np.full(len(self), -1, np.int64)
        new_of[idx] = np.arange(len(idx))
        keep = np.flatnonzero(new_of[self.text_image] >= 0)
        return CaptionDataset(self.images[idx], [self.captions[t] for t in keep], new_of[self.text_image[keep]],
                              self.name, [self.hard_negatives[i] for i in idx] if self.hard_negatives else [],
                              None if self.labels is None else self.labels[idx], self.text_content)

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """(H, W) when every image has the same size, else None."""
        return tuple(self.images.shape[1:3]) if self.images.dtype != object else None


def all_texts(data: CaptionDataset) -> list[str]:
    """Every caption and hard negative of a caption dataset, unique, in first-seen order."""
    return list(dict.fromkeys([*data.captions, *(t for negs in data.hard_negatives for t in negs)]))


def with_article(name: str) -> str:
    """'sneaker' → 'a sneaker', 'ankle boot' → 'an ankle boot'."""
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _fmnist(split: str, data_dir, limit: int | None):
    from . import fashion_mnist

    return fashion_mnist.load(split, path=data_dir, limit=limit)


def fashion_mnist_captions(split: str = "test", *, data_dir: str | os.PathLike | None = None,
                           limit: int | None = None, seed: int = 0) -> CaptionDataset:
    """Every Fashion-MNIST image of ``split`` with one caption from :data:`CAPTION_TEMPLATES` (template drawn from
    ``seed``)."""
    images, labels = _fmnist(split, data_dir, limit)
    rng = np.random.default_rng(seed)
    tpl = rng.integers(0, len(CAPTION_TEMPLATES), len(labels))
    caps = [CAPTION_TEMPLATES[t].format(with_article(FMNIST_NAMES[c])) for t, c in zip(tpl, labels, strict=True)]
    return CaptionDataset(images, caps, np.arange(len(labels)), f"fashion-mnist-captions:{split}",
                          labels=labels[:, None].astype(np.int64),
                          text_content={tpl.format(with_article(name)): (c,) for c, name in enumerate(FMNIST_NAMES)
                                        for tpl in CAPTION_TEMPLATES})


def pair_caption(left: int, right: int, template: int = 0) -> str:
    """The caption of a pair: ``PAIR_TEMPLATES[template]`` with the class names in order (left, right)."""
    return PAIR_TEMPLATES[template].format(with_article(FMNIST_NAMES[left]), with_article(FMNIST_NAMES[right]))


def fashion_mnist_pairs(split: str = "test", *, data_dir: str | os.PathLike | None = None, limit: int | None = None,
                        seed: int = 0, num_pairs: int | None = None) -> CaptionDataset:
    """Pairs of real Fashion-MNIST images side by side (uint8 ``[N, 28, 56]``), deterministic from ``seed``.

    ``num_pairs`` pairs (default: as many as images in the split, or ``limit``) are drawn with numpy PCG64 from
    ``seed``: two images of DIFFERENT classes (so the swapped caption is a real negative), a pair template. Each
    pair has two hard negative captions with the same template: the swapped order, and one item (left or right,
    drawn) replaced by a third class. ``labels`` is ``[N, 2]`` (left, right).
    """
    images, labels = _fmnist(split, data_dir, None)
    n = int(num_pairs or limit or len(labels))
    if n <= 0:
        raise DataError(f"fashion-mnist-pairs needs a positive number of pairs, got {n}")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(labels), n)
    b = rng.integers(0, len(labels), n)
    for _ in range(100):  # redraw the right image until the classes differ (1/10 of draws per round)
        same = labels[a] == labels[b]
        if not same.any():
            break
        b[same] = rng.integers(0, len(labels), int(same.sum()))
    tpl = rng.integers(0, len(PAIR_TEMPLATES), n)
    side = rng.integers(0, 2, n)
    third = rng.integers(0, len(FMNIST_NAMES) - 2, n)
    la, lb = labels[a], labels[b]
    caps, negs = [], []
    for i in range(n):
        x, y, t = int(la[i]), int(lb[i]), int(tpl[i])
        others = [c for c in range(len(FMNIST_NAMES)) if c not in (x, y)]
        z = others[int(third[i])]
        changed = pair_caption(z, y, t) if side[i] == 0 else pair_caption(x, z, t)
        caps.append(pair_caption(x, y, t))
        negs.append([pair_caption(y, x, t), changed])
    k = len(FMNIST_NAMES)
    content = {pair_caption(x, y, t): (x, y) for x in range(k) for y in range(k) for t in range(len(PAIR_TEMPLATES))}
    pairs = np.concatenate([images[a], images[b]], axis=2)
    return CaptionDataset(pairs, caps, np.arange(n), f"fashion-mnist-pairs:{split}", negs,
                          np.stack([la, lb], 1).astype(np.int64), content)


def class_prompts(classes: tuple[str, ...] | list[str], templates=PROMPT_TEMPLATES) -> list[list[str]]:
    """Per class, the zero-shot prompts (templates × class name); Fashion-MNIST's names become their natural forms."""
    from .fashion_mnist import CLASSES

    names = [FMNIST_NAMES[CLASSES.index(c)] if c in CLASSES else str(c).replace("_", " ").lower() for c in classes]
    return [[t.format(with_article(n)) for t in templates] for n in names]


# --------------------------------------------------------------------------------------------- files
def _read_images(files: list[Path], *, what: str) -> np.ndarray:
    missing = [f for f in files if not f.is_file()]
    if missing:
        few = ", ".join(str(f) for f in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise DataError(f"{what}: {len(missing)} of {len(files)} image files are missing ({few}). Pass the folder "
                        f"holding the images with --image-root DIR (paths in the JSON are relative to it)")
    from PIL import Image

    from . import stack_images

    out = []
    for f in files:
        with Image.open(f) as img:
            out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return stack_images(out)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"captions file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from exc


def load_coco_captions(path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                       limit: int | None = None) -> CaptionDataset:
    """The COCO-captions JSON (``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``).

    Images are read from ``image_root`` (default: the JSON's folder) / ``file_name``, in the JSON's image order;
    ``limit`` keeps the first N images. Raises :class:`DataError` for a malformed file, captions of unknown images,
    or missing image files (counted, a few named)."""
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise DataError(f"{path} is not a COCO-captions file: it needs top-level 'images' and 'annotations'")
    imgs = doc["images"][:limit] if limit else doc["images"]
    try:
        row = {im["id"]: i for i, im in enumerate(imgs)}
        root = Path(image_root) if image_root else path.parent
        files = [root / im["file_name"] for im in imgs]
        anns = [(row[a["image_id"]], str(a["caption"]).strip()) for a in doc["annotations"] if a["image_id"] in row]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: an image or annotation lacks the key {exc} (COCO: images need id and file_name; "
                        f"annotations need image_id and caption)") from exc
    images = _read_images(files, what=str(path))
    return CaptionDataset(images, [c for _, c in anns], np.array([i for i, _ in anns], np.int64), f"coco:{path.name}")


def load_karpathy(path: str | os.PathLike, split: str = "test", *, image_root: str | os.PathLike | None = None,
                  limit: int | None = None) -> CaptionDataset:
    """A Karpathy-split JSON (``dataset_flickr30k.json`` / ``dataset_coco.json``: ``{"images": [{"filename",
    "split", "sentences": [{"raw"}], "filepath"?}]}``), the images of ``split`` ('train', 'val', 'test'; COCO's
    'restval' counts as train). Image path: ``image_root / [filepath /] filename``. Raises :class:`DataError` as
    :func:`load_coco_captions`."""
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path} is not a Karpathy-split file: it needs a top-level 'images' list")
    want = {"train": ("train", "restval")}.get(split, (split,))
    try:
        imgs = [im for im in doc["images"] if im["split"] in want]
        imgs = imgs[:limit] if limit else imgs
        root = Path(image_root) if image_root else path.parent
        files = [root / im.get("filepath", "") / im["filename"] for im in imgs]
        caps = [(i, str(s["raw"]).strip()) for i, im in enumerate(imgs) for s in im["sentences"]]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: an image lacks the key {exc} (Karpathy split: filename, split, sentences[].raw)") \
            from exc
    if not imgs:
        raise DataError(f"{path} has no images in split '{split}'")
    images = _read_images(files, what=str(path))
    return CaptionDataset(images, [c for _, c in caps], np.array([i for i, _ in caps], np.int64),
                          f"karpathy:{path.name}:{split}")


def load_caption_dataset(name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None,
                         limit: int | None = None, seed: int | None = None,
                         image_root: str | os.PathLike | None = None) -> CaptionDataset:
    """One door to the caption datasets: ``fashion-mnist-captions`` (or ``fashion-mnist``), ``fashion-mnist-pairs``,
    ``coco:FILE.json``, ``karpathy:FILE.json``, or a ``.json`` path (its layout decides). The pairs of the train split
    default to another seed than those of the test split (0 for test, 1 for train)."""
    if seed is None:
        seed = 0 if split == "test" else 1
    if name in ("fashion-mnist-captions", "fashion-mnist", "fmnist"):
        return fashion_mnist_captions(split, data_dir=data_dir, limit=limit, seed=seed)
    if name in ("fashion-mnist-pairs", "fmnist-pairs"):
        return fashion_mnist_pairs(split, data_dir=data_dir, limit=limit, seed=seed)
    kind, _, file = name.partition(":")
    if kind in ("coco", "karpathy") and file:
        return (load_coco_captions(file, image_root=image_root, limit=limit) if kind == "coco" else
                load_karpathy(file, split, image_root=image_root, limit=limit))
    if name.endswith(".json"):
        doc = _read_json(Path(name))
        if isinstance(doc, dict) and "annotations" in doc:
            return load_coco_captions(name, image_root=image_root, limit=limit)
        return load_karpathy(name, split, image_root=image_root, limit=limit)
    raise DataError(f"unknown caption dataset '{name}': use one of {', '.join(CAPTION_DATASETS)}")
