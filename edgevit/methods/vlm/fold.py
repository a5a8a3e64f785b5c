"""Fold a dual encoder's image tower + class-text embeddings into a plain classifier (exporting each tower on its
own is :mod:`.deploy`).

Folding: zero-shot logits are ``s · normalize(P f) · c_k`` (``f`` the backbone's pooled features, ``P`` the image
projection, ``c_k`` the class-text embeddings, ``s`` the logit scale). The per-image factor ``1/‖P f‖`` is positive,
so ``argmax_k`` equals that of ``f · (s · C P)ᵀ``: the backbone with a ``Linear(D, C)`` head of weight ``s · C P``
(no bias) predicts exactly the zero-shot classes, and is a plain timm classifier that every other stage takes.
Its logits are the zero-shot logits times ``‖P f‖`` (same top-1, sharper or flatter softmax).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...errors import ConfigError

log = logging.getLogger(__name__)


def fold_classifier(model, classes, *, templates=None, image_hw: tuple[int, int] | None = None):
    """The image tower's backbone with a head from the class-text embeddings (module docstring). ``classes``: class
    names (Fashion-MNIST's or any; at least one). ``image_hw``: the size of the images the classifier will be given
    (Fashion-MNIST: 28×28); when the tower's input is a whole multiple of it (a 28×56 pair tower), the spec says
    ``extra["tile"]`` so that every edgevit path repeats each image side by side as zero-shot evaluation does,
    instead of stretching it. Returns a new module (the dual encoder is unchanged) with its input spec
    (``num_classes``, ``class_names``) attached. Raises :class:`ConfigError` for no classes."""
    import copy
    from dataclasses import replace

    from torch import nn

    from .evaluate import class_text_embeddings

    if not classes:
        raise ConfigError("fold-classifier needs class names: --classes fashion-mnist or 'cat,dog,...'")
    heads = class_text_embeddings(model, list(classes), templates)  # [C, E]
    backbone = copy.deepcopy(model.image.backbone)
    w = float(model.scale().detach()) * heads @ model.image.proj.weight.detach()  # [C, D]
    backbone.reset_classifier(len(classes))
    head = backbone.get_classifier()
    if not isinstance(head, nn.Linear) or head.in_features != w.shape[1]:
        raise ConfigError(f"{model.image.arch}: its classifier head is not a Linear on the {w.shape[1]}-d pooled "
                          f"features; cannot fold class embeddings into it")
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.zero_()
    spec = model.spec
    extra: dict = {"class_names": list(classes)}
    if image_hw is not None and tuple(image_hw) != tuple(spec.hw):
        th, tw = spec.hw[0] // image_hw[0], spec.hw[1] // image_hw[1]
        if th >= 1 and tw >= 1 and (th * image_hw[0], tw * image_hw[1]) == tuple(spec.hw):
            extra["tile"] = [th, tw]
    backbone.edgevit_spec = replace(spec, num_classes=len(classes), output_name="logits", extra=extra)
    backbone.edgevit_name = model.image.arch
    return backbone.eval()


def save_folded(classifier, path: str | Path) -> Path:
    """Write the folded classifier as safetensors (``arch`` and input spec in the metadata, as every edgevit
    checkpoint): :func:`edgevit.models.create` loads it (the spec's image size fits the position embedding)."""
    from ...models import save_checkpoint

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"--out {path}: the folded classifier is written as .safetensors")
    return save_checkpoint(classifier, path)
