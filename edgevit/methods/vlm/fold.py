"""Deployment of dual encoders: fold image tower + class-text embeddings into a plain classifier, and export each
tower on its own (an ``embedding`` artefact) with parity by cosine similarity on real inputs.

Folding: zero-shot logits are ``s · normalize(P f) · c_k`` (``f`` the backbone's pooled features, ``P`` the image
projection, ``c_k`` the class-text embeddings, ``s`` the logit scale). The per-image factor ``1/‖P f‖`` is positive,
so ``argmax_k`` equals that of ``f · (s · C P)ᵀ``: the backbone with a ``Linear(D, C)`` head of weight ``s · C P``
(no bias) predicts exactly the zero-shot classes, and is a plain timm classifier that every other stage takes.
Its logits are the zero-shot logits times ``‖P f‖`` (same top-1, sharper or flatter softmax).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, ParityError

log = logging.getLogger(__name__)


def fold_classifier(model, classes, *, templates=None):
    """The image tower's backbone with a head from the class-text embeddings (module docstring). ``classes``: class
    names (Fashion-MNIST's or any). Returns a new module (the dual encoder is unchanged) with its input spec
    (``num_classes``, ``class_names``) attached."""
    import copy
    from dataclasses import replace

    from torch import nn

    from .evaluate import class_text_embeddings

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
    backbone.edgevit_spec = replace(spec, num_classes=len(classes), output_name="logits",
                                    extra={"class_names": list(classes)})
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


class _TextGraph(torch.nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids, attention_mask):
        return self.tower(input_ids, attention_mask)


def export_text_onnx(model, out_path: str | Path, *, texts: list[str], opset: int = 18,
                     min_cosine: float = 0.9999) -> dict:
    """The text tower alone as ONNX: inputs ``input_ids``/``attention_mask`` (int64 ``[batch, tokens]``, both
    dynamic), output ``embedding`` ``[batch, E]``; the tokenizer files are copied next to it (``<name>.tokenizer/``)
    and its task is stamped ``embedding``. Parity: onnxruntime vs torch on ``texts`` (real captions), the lowest
    cosine similarity must reach ``min_cosine`` (:class:`ParityError` otherwise). Returns the record."""
    import shutil

    import onnx
    import onnxruntime as ort

    from ...artifact import TASK_KEY

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tower = model.text.eval()
    ids, mask = tower.tokenize(texts)
    import warnings

    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(_TextGraph(tower), (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
    proto = onnx.load(str(out))
    for k, v in {TASK_KEY: "embedding", "edgevit.tower": "text", "edgevit.text_tower": json.dumps(tower.config())}.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(out))
    tok_dir = out.with_suffix(".tokenizer")
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tower.tokenizer.save_pretrained(str(tok_dir))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        ref = tower(ids, mask).numpy()
    return _cosine_record(ref, got, out, "text", min_cosine, tokenizer=str(tok_dir))


def export_image_onnx(model, out_path: str | Path, *, images: np.ndarray, min_cosine: float = 0.9999,
                      **kw) -> dict:
    """The image tower alone as ONNX through edgevit's ONNX exporter (input ``input`` NCHW of the tower's spec,
    output ``embedding``), task ``embedding``; parity by cosine similarity on real ``images``."""
    from ...data import preprocess
    from ...formats.onnx.export import export_onnx

    tower = model.image.eval()
    tower.edgevit_name = f"{getattr(model, 'edgevit_name', 'dual')}-image"
    tower.edgevit_task = "embedding"
    res = export_onnx(tower, out_path, parity=True, parity_images=images, **kw)
    import onnxruntime as ort

    path = Path(res.fields["path"])
    x = preprocess(images, model.spec)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {model.spec.input_name: x})[0]
    with torch.no_grad():
        ref = tower(torch.from_numpy(x)).numpy()
    return {**_cosine_record(ref, got, path, "image", min_cosine), "max_abs_diff": res.fields["max_abs_diff"]}


def _cosine_record(ref: np.ndarray, got: np.ndarray, path: Path, tower: str, min_cosine: float, **extra) -> dict:
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    rec = {"tower": tower, "path": str(path), "n": len(ref), "min_cosine": float(cos.min()),
           "mean_cosine": float(cos.mean()), "max_abs_diff": float(np.abs(ref - got).max()),
           "task": "embedding", **extra}
    if rec["min_cosine"] < min_cosine:
        raise ParityError(f"{tower} tower export {path}: lowest cosine similarity to torch {rec['min_cosine']:.6f} "
                          f"< {min_cosine} on {len(ref)} real inputs; the file is kept for inspection")
    return rec


def export_openvino_towers(model, out_dir: str | Path, *, images: np.ndarray, texts: list[str],
                           tower: str = "both", min_cosine: float = 0.9999) -> list[dict]:
    """Each tower as an OpenVINO IR in ``out_dir``: the image tower through edgevit's OpenVINO exporter
    (``image_tower.xml``), the text tower converted from its ONNX export (``text_tower.xml``, dynamic batch and
    tokens, tokenizer beside it). Parity by cosine similarity against torch on real ``images`` / ``texts``."""
    from ..._optional import require
    from ...data import preprocess

    ov = require("openvino", extra="openvino", feature="OpenVINO export of dual-encoder towers")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = []
    core = ov.Core()
    if tower in ("image", "both"):
        from ...formats.openvino.export import export_openvino

        img = model.image.eval()
        img.edgevit_name = "image_tower"
        res = export_openvino(img, out / "image_tower.xml", parity_images=images)
        x = preprocess(images, model.spec)
        got = core.compile_model(str(res.fields["path"]), "CPU")(x)[0]
        with torch.no_grad():
            ref = img(torch.from_numpy(x)).numpy()
        recs.append(_cosine_record(ref, np.asarray(got), Path(res.fields["path"]), "image", min_cosine))
    if tower in ("text", "both"):
        onnx_rec = export_text_onnx(model, out / "text_tower.onnx", texts=texts, min_cosine=min_cosine)
        ir = ov.convert_model(onnx_rec["path"])
        ir.set_rt_info("embedding", ["edgevit", "task"])
        ov.save_model(ir, str(out / "text_tower.xml"), compress_to_fp16=False)
        ids, mask = model.text.tokenize(texts)
        got = core.compile_model(str(out / "text_tower.xml"), "CPU")({"input_ids": ids.numpy(),
                                                                       "attention_mask": mask.numpy()})[0]
        with torch.no_grad():
            ref = model.text.eval()(ids, mask).numpy()
        recs.append(_cosine_record(ref, np.asarray(got), out / "text_tower.xml", "text", min_cosine,
                                   tokenizer=onnx_rec["tokenizer"]))
    return recs
