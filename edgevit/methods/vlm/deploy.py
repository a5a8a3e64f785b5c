"""Deployment of dual encoders: each tower exported alone (ONNX, OpenVINO IR, TVM) with parity by cosine similarity
on real inputs, the class-text (and caption-gallery) embeddings stored with the image tower, and each tower run and
timed on its runtime.

An export folder (``edgevit export onnx|openvino|tvm --model DIR --tower image|text|both --out OUT``) holds::

    towers.json                                   manifest: model, format, tower files, text length, parity records
    image_tower.{onnx,xml,so}                     input NCHW float32 of the tower's spec, output ``embedding [B, E]``
    image_tower.text_embeddings.safetensors       class-text embeddings ``classes [C, E]`` (+ ``gallery [G, E]``),
                                                  ``logit_scale``; names and captions in the metadata
    text_tower.{onnx,xml,so} + text_tower.tokenizer/   inputs ``input_ids``, ``attention_mask`` int64 ``[B, L]``

Text length: every exported text tower is fed ``L = TEXT_TOKENS`` (32, the towers' ``MAX_TOKENS``) tokens — captions
are padded (mask 0) or truncated to 32 WordPiece tokens, as in training. ONNX and OpenVINO keep the batch and token
axes dynamic; a TVM library is compiled for the static shape ``[batch, 32]``. Masked mean pooling makes the padding
inert, so a caption gets the same embedding at any padded length.

With the stored class embeddings the deployed image tower classifies zero-shot with no text tower:
``argmax_k cos(image_tower(x), classes_k)`` (:func:`zero_shot_deployed`, ``edgevit eval --artifact
image_tower.onnx --task zero-shot``).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import ConfigError, DataError, InputSpecError, ModelLoadError, ParityError
from .towers import MAX_TOKENS

log = logging.getLogger(__name__)

TEXT_TOKENS = MAX_TOKENS  # the fixed token length of exported text towers (module docstring)
TOWERS = ("image", "text")
FORMATS = ("onnx", "openvino", "tvm")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "tvm": ".so"}
MANIFEST = "towers.json"
MANIFEST_FORMAT = "edgevit-towers"
EMBEDDINGS_SUFFIX = ".text_embeddings.safetensors"
MIN_COSINE = 0.9999  # lowest cosine similarity to torch accepted for an FP32 export
# OpenVINO's CPU plugin computes in bf16 by default where the CPU has it: parity and timing of an FP32 tower in f32
# (as edgevit's openvino runtime does, edgevit.formats.openvino.runtime)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def tower_list(tower: str) -> tuple[str, ...]:
    """``'image'|'text'|'both'`` → the towers; :class:`ConfigError` otherwise."""
    if tower == "both":
        return TOWERS
    if tower not in TOWERS:
        raise ConfigError(f"--tower {tower!r}: use image, text or both")
    return (tower,)


def tokenize_fixed(text_tower, texts: list[str], length: int = TEXT_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64 ``[len(texts), length]``: the text tower's tokenizer, padded (mask 0) or
    truncated to ``length`` tokens."""
    b = text_tower.tokenizer(list(texts), padding="max_length", truncation=True, max_length=length,
                             return_tensors="np")
    return np.asarray(b["input_ids"], dtype=np.int64), np.asarray(b["attention_mask"], dtype=np.int64)


def cosine_record(ref: np.ndarray, got: np.ndarray, path: Path, tower: str, min_cosine: float = MIN_COSINE,
                  **extra) -> dict:
    """Parity of an exported tower: per-row cosine similarity of its embeddings ``got`` to torch's ``ref`` (both
    ``[N, E]``); raises :class:`ParityError` (record as ``exc.record``) when the lowest is below ``min_cosine``."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    rec = {"tower": tower, "path": str(path), "n": len(ref), "min_cosine": float(cos.min()),
           "mean_cosine": float(cos.mean()), "max_abs_diff": float(np.abs(ref - got).max()),
           "task": "embedding", **extra}
    if rec["min_cosine"] < min_cosine:
        err = ParityError(f"{tower} tower export {path}: lowest cosine similarity to torch {rec['min_cosine']:.6f} "
                          f"< {min_cosine} on {len(ref)} real inputs; the file is kept for inspection")
        err.record = rec
        raise err
    return rec


class TextGraph(torch.nn.Module):
    """A text tower as a graph of two inputs ``(input_ids, attention_mask)`` → ``embedding``."""

    def __init__(self, tower):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids, attention_mask):
        return self.tower(input_ids, attention_mask)


def _image_module(model):
    img = model.image.eval()
    img.edgevit_name = f"{getattr(model, 'edgevit_name', 'dual')}-image"
    img.edgevit_task = "embedding"
    img.edgevit_spec = model.spec
    return img


def _stamp_onnx(path: Path, props: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(path))


def _copy_tokenizer(text_tower, lib: Path) -> Path:
    tok_dir = lib.with_suffix(".tokenizer")
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    text_tower.tokenizer.save_pretrained(str(tok_dir))
    return tok_dir


def _text_onnx(model, out: Path, ids: np.ndarray, mask: np.ndarray, *, opset: int = 18) -> Path:
    """The text tower as ONNX (batch and token axes dynamic), task ``embedding``, tokenizer beside it."""
    import warnings

    from ...artifact import TASK_KEY

    out.parent.mkdir(parents=True, exist_ok=True)
    tower = model.text.eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(TextGraph(tower), (torch.from_numpy(ids), torch.from_numpy(mask)), str(out),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
    _stamp_onnx(out, {TASK_KEY: "embedding", "edgevit.tower": "text", "edgevit.text_tokens": str(TEXT_TOKENS),
                      "edgevit.text_tower": json.dumps(tower.config())})
    return out


def export_text_onnx(model, out_path: str | Path, *, texts: list[str], opset: int = 18,
                     min_cosine: float = MIN_COSINE) -> dict:
    """The text tower alone as ONNX: inputs ``input_ids``/``attention_mask`` (int64 ``[batch, tokens]``, both
    dynamic), output ``embedding`` ``[batch, E]``; the tokenizer files are copied next to it (``<name>.tokenizer/``)
    and its task is stamped ``embedding``. Parity: onnxruntime vs torch on ``texts`` (real captions, tokenized to
    :data:`TEXT_TOKENS`); the lowest cosine similarity must reach ``min_cosine`` (:class:`ParityError`
    otherwise). Returns the record."""
    import onnxruntime as ort

    out = Path(out_path)
    ids, mask = tokenize_fixed(model.text, texts)
    _text_onnx(model, out, ids, mask, opset=opset)
    tok_dir = _copy_tokenizer(model.text, out)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return cosine_record(_torch_text(model, ids, mask), got, out, "text", min_cosine, tokenizer=str(tok_dir),
                         tokens=TEXT_TOKENS)


def _torch_text(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.text.eval()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def _torch_image(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.image.eval()(torch.from_numpy(x)).numpy()


def export_image_onnx(model, out_path: str | Path, *, images: np.ndarray, min_cosine: float = MIN_COSINE,
                      **kw) -> dict:
    """The image tower alone as ONNX through edgevit's ONNX exporter (input ``input`` NCHW of the tower's spec,
    output ``embedding``), task ``embedding``; parity by cosine similarity on real ``images`` (uint8 ``[N, H, W]``).
    ``kw`` go to :func:`edgevit.formats.onnx.export.export_onnx` (``opset``, ...)."""
    import onnxruntime as ort

    from ...data import preprocess
    from ...formats.onnx.export import export_onnx

    tower = _image_module(model)
    x = preprocess(images, model.spec)
    res = export_onnx(tower, out_path, parity=True, parity_images=x, **kw)
    path = Path(res.fields["path"])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {model.spec.input_name: x})[0]
    return cosine_record(_torch_image(model, x), got, path, "image", min_cosine)


def _export_image_openvino(model, path: Path, x: np.ndarray, images, options: dict, min_cosine: float) -> dict:
    from ..._optional import require
    from ...formats.openvino.export import export_openvino

    ov = require("openvino", extra="openvino", feature="OpenVINO export of dual-encoder towers")
    res = export_openvino(_image_module(model), path, parity_images=images,
                          **{k: v for k, v in options.items() if k == "precision"})
    got = np.asarray(ov.Core().compile_model(str(res.fields["path"]), "CPU", F32)(x)[0])
    return cosine_record(_torch_image(model, x), got, Path(res.fields["path"]), "image",
                         _min_cos(options, min_cosine), precision=options.get("precision", "fp32"))


def _export_text_openvino(model, path: Path, ids, mask, options: dict, min_cosine: float) -> dict:
    from ..._optional import require

    ov = require("openvino", extra="openvino", feature="OpenVINO export of dual-encoder towers")
    onnx_path = _text_onnx(model, path.with_suffix(".onnx"), ids, mask)
    ir = ov.convert_model(str(onnx_path))
    ir.set_rt_info("embedding", ["edgevit", "task"])
    ir.set_rt_info("text", ["edgevit", "tower"])
    ir.set_rt_info(str(TEXT_TOKENS), ["edgevit", "text_tokens"])
    ov.save_model(ir, str(path), compress_to_fp16=options.get("precision") == "fp16")
    onnx_path.unlink()
    tok_dir = _copy_tokenizer(model.text, path)
    got = np.asarray(ov.Core().compile_model(str(path), "CPU", F32)({"input_ids": ids, "attention_mask": mask})[0])
    return cosine_record(_torch_text(model, ids, mask), got, path, "text", _min_cos(options, min_cosine),
                         tokenizer=str(tok_dir), tokens=TEXT_TOKENS, precision=options.get("precision", "fp32"))


def _min_cos(options: dict, min_cosine: float) -> float:
    """fp16-compressed weights: a looser floor (0.999; FP16 has ~3 significant digits)."""
    return min(min_cosine, 0.999) if options.get("precision") == "fp16" else min_cosine


TVM_KEYS = ("target", "mcpu", "num_cores", "trials", "batch", "work_dir", "retune", "tuning_timeout_s", "cc")


def _export_image_tvm(model, path: Path, x: np.ndarray, options: dict, min_cosine: float) -> dict:
    from ...artifact import Artifact
    from ...formats.tvm.export import export_tvm
    from ...runtimes.base import run_batched

    res = export_tvm(_image_module(model), path, parity=False, **{k: options[k] for k in TVM_KEYS if k in options})
    lib = Path(res.fields["path"])
    with load_tower_runtime("tvm", Artifact(kind="tvm", spec=model.spec, path=lib, task="embedding")) as rt:
        got = run_batched(rt, x)
    return cosine_record(_torch_image(model, x), got, lib, "image", min_cosine, batch=res.fields["batch"],
                         tuning_status=res.fields["tuning"]["status"], target=res.fields["target_description"])


def _export_text_tvm(model, path: Path, ids, mask, options: dict, min_cosine: float) -> dict:
    from ...artifact import Artifact
    from ...formats.tvm.export import export_tvm

    batch = int(options.get("batch") or 1)
    graph = TextGraph(model.text.eval())
    graph.edgevit_name = f"{getattr(model, 'edgevit_name', 'dual')}-text"
    graph.edgevit_task = "embedding"
    ex_ids, ex_mask = _pad_rows(ids, batch), _pad_rows(mask, batch)
    res = export_tvm(graph, path, parity=False, example_inputs=(ex_ids[:batch], ex_mask[:batch]),
                     **{k: options[k] for k in TVM_KEYS if k in options and k != "batch"}, batch=batch)
    lib = Path(res.fields["path"])
    tok_dir = _copy_tokenizer(model.text, lib)
    spec = TokenSpec(tokens=TEXT_TOKENS, vocab_size=int(model.text.tokenizer.vocab_size))
    with TextTowerRuntime(Artifact(kind="tvm", spec=spec, path=lib, task="embedding"), backend="tvm") as rt:
        got = rt.encode(ids, mask)
    return cosine_record(_torch_text(model, ids, mask), got, lib, "text", min_cosine, tokenizer=str(tok_dir),
                         tokens=TEXT_TOKENS, batch=batch, tuning_status=res.fields["tuning"]["status"],
                         target=res.fields["target_description"])


def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    from ...runtimes.base import pad_batch

    return pad_batch(a, n) if len(a) < n else a


# --------------------------------------------------------------------------------- stored text embeddings
def embeddings_path(image_tower: str | Path) -> Path:
    """``image_tower.onnx`` → ``image_tower.text_embeddings.safetensors`` (next to it)."""
    p = Path(image_tower)
    return p.with_name(p.name[: -len(p.suffix)] + EMBEDDINGS_SUFFIX if p.suffix else p.name + EMBEDDINGS_SUFFIX)


def write_text_embeddings(model, path: str | Path, *, classes, gallery: list[str] | None = None,
                          templates=None) -> dict:
    """Store the text side an image tower needs at deployment: ``classes [C, E]`` (per class the normalised mean of
    its prompt embeddings, :func:`.evaluate.class_text_embeddings`), ``gallery [G, E]`` (one per caption, when
    given) and ``logit_scale [1]``, float32 safetensors; class names, prompt templates and gallery captions in the
    metadata. Returns ``{"path", "classes", "gallery"}``."""
    from safetensors.torch import save_file

    from ...data.captions import PROMPT_TEMPLATES
    from .evaluate import class_text_embeddings

    classes = [str(c) for c in classes]
    if not classes:
        raise ConfigError("stored text embeddings need at least one class name")
    tensors = {"classes": class_text_embeddings(model, classes, templates).float().contiguous(),
               "logit_scale": model.scale().detach().reshape(1).float()}
    meta = {"task": "embedding", "class_names": json.dumps(classes),
            "templates": json.dumps(list(templates or PROMPT_TEMPLATES)), "model": getattr(model, "edgevit_name", ""),
            "embed_dim": str(model.image.embed_dim)}
    if gallery:
        tensors["gallery"] = model.text.encode(list(gallery)).float().contiguous()
        meta["gallery"] = json.dumps(list(gallery))
    from ...fileio import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:  # all-or-nothing, with the umask's file mode (safetensors writes 0600)
        save_file(tensors, str(tmp), metadata=meta)
    return {"path": str(path), "classes": len(classes), "gallery": len(gallery or ())}


def read_text_embeddings(path: str | Path) -> dict:
    """The stored text embeddings of an image tower (its file, or the file next to the image tower ``path``):
    ``{"classes": float32 [C, E], "class_names", "gallery": [G, E] | None, "gallery_texts", "logit_scale"}``.
    Raises :class:`ModelLoadError` when there are none, saying how to make them."""
    from safetensors import safe_open

    p = Path(path)
    store = p if p.name.endswith(EMBEDDINGS_SUFFIX) else embeddings_path(p)
    if not store.is_file():
        raise ModelLoadError(f"{p}: no stored text embeddings ({store.name} is missing next to it), so the image "
                             f"tower cannot classify or retrieve on its own. Export the towers with `edgevit export "
                             f"<format> --model DUAL_DIR --tower image --classes ...`, which writes them")
    with safe_open(str(store), "pt") as f:
        meta = f.metadata() or {}
        keys = set(f.keys())
        out = {"classes": f.get_tensor("classes").numpy(), "logit_scale": float(f.get_tensor("logit_scale")[0]),
               "gallery": f.get_tensor("gallery").numpy() if "gallery" in keys else None}
    out["class_names"] = tuple(json.loads(meta.get("class_names", "[]")))
    out["gallery_texts"] = json.loads(meta["gallery"]) if "gallery" in meta else None
    out["path"] = str(store)
    return out


def zero_shot_deployed(runtime, dataset, *, store: dict | None = None, batch_size: int | None = None) -> dict:
    """Zero-shot top-1 of a deployed image tower (any runtime of an ``embedding`` image-tower artefact) from its
    stored class embeddings — no text tower runs. ``dataset``: a classification :class:`~edgevit.data.ArrayDataset`
    whose class names are the stored ones (in order; :class:`DataError` otherwise)."""
    import time

    from ...data import preprocess
    from ...runtimes.base import run_batched
    from .evaluate import fit_images

    t0 = time.perf_counter()
    store = store or read_text_embeddings(runtime.path)
    names = tuple(store["class_names"])
    if tuple(dataset.classes) != names:
        raise DataError(f"{dataset.name}'s classes {list(dataset.classes)[:4]}… are not the stored ones "
                        f"{list(names)[:4]}… ({store['path']}); re-export the image tower with --classes for them")
    x = preprocess(fit_images(dataset.images, runtime.spec.hw), runtime.spec)
    emb = run_batched(runtime, x, batch_size)
    pred = (emb @ store["classes"].T).argmax(1)
    return {"task": "zero-shot", "top1": float((pred == dataset.labels).mean()), "n": len(dataset),
            "data": dataset.name, "runtime": runtime.name, "text_tower_calls": 0,
            "embeddings": store["path"], "seconds": round(time.perf_counter() - t0, 3)}


def top_captions(image_emb: np.ndarray, store: dict, k: int = 5) -> list[list[tuple[str, float]]]:
    """Caption retrieval with the stored gallery (no text tower): per image embedding (``[N, E]``, L2-normalised,
    from the deployed image tower) the ``k`` gallery captions of highest cosine similarity, best first, as
    ``(caption, cosine)``. Raises :class:`ConfigError` when the store has no gallery."""
    if store.get("gallery") is None:
        raise ConfigError(f"{store.get('path')}: no caption gallery stored; export the image tower with "
                          f"--gallery FILE (captions, one per line)")
    sim = np.asarray(image_emb, np.float32) @ store["gallery"].T  # [N, G]
    k = min(k, sim.shape[1])
    best = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return [[(store["gallery_texts"][j], float(sim[i, j])) for j in row] for i, row in enumerate(best)]


# ------------------------------------------------------------------------------------------------ export
def export_towers(model, fmt: str, out_dir: str | Path, *, tower: str = "both", images: np.ndarray,
                  texts: list[str], classes=None, gallery: list[str] | None = None, options: dict | None = None,
                  min_cosine: float = MIN_COSINE) -> dict:
    """Export the towers of ``model`` (a :class:`~.towers.DualEncoder`) as ``fmt`` (``onnx``, ``openvino``,
    ``tvm``) into ``out_dir`` (layout in the module docstring), each checked by cosine similarity against torch on
    real inputs: ``images`` (uint8, the caption test images) and ``texts`` (captions, tokenized to
    :data:`TEXT_TOKENS`). With the image tower the class-text embeddings of ``classes`` (default: Fashion-MNIST's)
    and of ``gallery`` captions are stored next to it. ``options``: per format — onnx ``opset``; openvino
    ``precision``; tvm :data:`TVM_KEYS` (``trials``, ``batch``, ``target``, ...).

    Returns ``{"format", "towers": [per tower: path, n, min_cosine, mean_cosine, max_abs_diff, ...],
    "text_embeddings", "manifest"}``. Raises :class:`ConfigError` (format/tower), :class:`ParityError`
    (a tower's lowest cosine below ``min_cosine``), :class:`MissingBackendError` (OpenVINO/TVM not installed)."""
    from ...data import fashion_mnist, preprocess

    if fmt not in FORMATS:
        raise ConfigError(f"towers export to {', '.join(FORMATS)}, not '{fmt}'")
    towers = tower_list(tower)
    options = dict(options or {})
    out = Path(out_dir)
    if out.suffix and not out.is_dir():
        raise ConfigError(f"--out {out}: a dual encoder's towers go into a folder (image_tower{SUFFIX[fmt]}, "
                          f"text_tower{SUFFIX[fmt]}, {MANIFEST}); give a directory")
    out.mkdir(parents=True, exist_ok=True)
    recs: list[dict] = []
    emb = None
    if "image" in towers:
        from .evaluate import fit_images

        images = fit_images(images, model.spec.hw)
        x = preprocess(images, model.spec)
        path = out / f"image_tower{SUFFIX[fmt]}"
        if fmt == "onnx":
            recs.append(export_image_onnx(model, path, images=images, min_cosine=min_cosine,
                                          **{k: options[k] for k in ("opset",) if k in options}))
        elif fmt == "openvino":
            recs.append(_export_image_openvino(model, path, x, images, options, min_cosine))
        else:
            recs.append(_export_image_tvm(model, path, x, options, min_cosine))
        emb = write_text_embeddings(model, embeddings_path(path), classes=classes or fashion_mnist.CLASSES,
                                    gallery=gallery)
        recs[-1]["text_embeddings"] = emb["path"]
    if "text" in towers:
        path = out / f"text_tower{SUFFIX[fmt]}"
        if fmt == "onnx":
            recs.append(export_text_onnx(model, path, texts=texts, min_cosine=min_cosine,
                                         **{k: options[k] for k in ("opset",) if k in options}))
        else:
            ids, mask = tokenize_fixed(model.text, texts)
            fn = _export_text_openvino if fmt == "openvino" else _export_text_tvm
            recs.append(fn(model, path, ids, mask, options, min_cosine))
    manifest = _update_manifest(out, model, fmt, recs)
    return {"format": fmt, "towers": recs, "text_embeddings": emb and emb["path"], "manifest": str(manifest),
            "tokens": TEXT_TOKENS}


def _update_manifest(out: Path, model, fmt: str, recs: list[dict]) -> Path:
    """``towers.json``: the model, and per format the tower files (relative names) with their parity records; an
    export of one tower keeps the other's entry."""
    from ...artifact import write_json

    path = out / MANIFEST
    man = json.loads(path.read_text()) if path.is_file() else {}
    if man.get("model") not in (None, getattr(model, "edgevit_name", "")):
        man = {}  # another model's folder: start over
    man.update({"format": MANIFEST_FORMAT, "version": 1, "model": getattr(model, "edgevit_name", ""),
                "embed_dim": model.image.embed_dim, "text_tokens": TEXT_TOKENS,
                "image_spec": model.spec.to_dict(), "text_tower": model.text.config()})
    entry = man.setdefault("exports", {}).setdefault(fmt, {})
    for r in recs:
        entry[r["tower"]] = {"path": Path(r["path"]).name, **{k: v for k, v in r.items() if k not in ("path", "tower")}}
        for k in ("tokenizer", "text_embeddings"):
            if k in entry[r["tower"]]:
                entry[r["tower"]][k] = Path(entry[r["tower"]][k]).name
    write_json(path, man)
    return path


# ------------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class TokenSpec:
    """The input of an exported text tower, packed as ONE int64 array ``[N, 2, tokens]`` (row 0 the token ids,
    row 1 the attention mask) so it flows through edgevit's batching and latency code like an image batch."""

    tokens: int = TEXT_TOKENS
    vocab_size: int = 30522
    input_name: str = "input_ids,attention_mask"
    output_name: str = "embedding"
    dtype: str = "int64"
    num_classes: None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def input_size(self) -> tuple[int, int]:
        return (2, self.tokens)

    def check_batch(self, batch: np.ndarray, *, where: str = "input") -> np.ndarray:
        if not isinstance(batch, np.ndarray) or batch.ndim != 3 or tuple(batch.shape[1:]) != self.input_size \
                or batch.dtype != np.int64:
            got = f"{tuple(batch.shape)} {batch.dtype}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise InputSpecError(f"{where}: a text tower takes int64 [N, 2, {self.tokens}] (token ids and attention "
                                 f"mask stacked: edgevit.methods.vlm.deploy.pack_tokens), got {got}")
        return batch

    def example(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """Random token ids in ``[1000, vocab)`` with a full mask (timing only)."""
        ids = np.random.default_rng(seed).integers(1000, self.vocab_size, (batch, self.tokens), dtype=np.int64)
        return pack_tokens(ids, np.ones_like(ids))

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "vocab_size": self.vocab_size, "input_name": self.input_name,
                "output_name": self.output_name, "dtype": self.dtype, "kind": "text"}


def pack_tokens(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[N, L]`` ids and mask → int64 ``[N, 2, L]`` (:class:`TokenSpec`)."""
    return np.ascontiguousarray(np.stack([ids, mask], axis=1).astype(np.int64))


class TextTowerRuntime:
    """A text tower on one runtime — ``torch`` (the module), ``onnxruntime`` (.onnx), ``openvino`` (.xml or .onnx),
    ``tvm`` (.so, static ``[batch, 32]``) — with the surface of :class:`~edgevit.runtimes.base.Runtime` that
    evaluation and :func:`~edgevit.profiling.latency.profile_runtime` use: ``run(packed [N, 2, L]) → [N, E]``,
    ``spec`` (:class:`TokenSpec`), ``batch_limits``, ``describe()``, ``close()``."""

    BACKENDS: ClassVar[dict[str, tuple[str, ...]]] = {"torch": ("torch",), "onnxruntime": ("onnx",),
                                                       "openvino": ("openvino", "onnx"), "tvm": ("tvm",)}

    def __init__(self, artifact, *, backend: str, threads: int | None = None, device: str = "cpu"):
        self.artifact, self.name, self.threads, self.device = artifact, backend, threads, device
        if backend not in self.BACKENDS or artifact.kind not in self.BACKENDS[backend]:
            raise ConfigError(f"runtime '{backend}' does not run a text tower of kind '{artifact.kind}'; text towers "
                              f"run on {', '.join(b + ' (' + '/'.join(k) + ')' for b, k in self.BACKENDS.items())}")
        self.static_batch = None
        if backend == "torch":
            self._module = artifact.model.eval()
        elif backend == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = int(threads)
            self._sess = ort.InferenceSession(str(artifact.path), so, providers=["CPUExecutionProvider"])
        elif backend == "openvino":
            from ..._optional import require

            ov = require("openvino", extra="openvino", feature="the OpenVINO runtime")
            cfg = {**F32, **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
            self._compiled = ov.Core().compile_model(str(artifact.path), "CPU", cfg)
        else:
            from ...formats.tvm.runtime import TvmRuntime

            self._tvm = TvmRuntime(artifact, threads=threads, device=device)
            shapes = [i["shape"] for i in self._tvm.meta.get("inputs") or []]
            if len(shapes) != 2 or shapes[0][1] != artifact.spec.tokens:
                raise ModelLoadError(f"{artifact.path} is not a text-tower library of {artifact.spec.tokens} tokens "
                                     f"(its inputs: {shapes}); export it with `edgevit export tvm --tower text`")
            self.static_batch = int(self._tvm.static_batch)

    @property
    def spec(self) -> TokenSpec:
        return self.artifact.spec

    @property
    def path(self):
        return self.artifact.path

    @property
    def fixed_batch(self) -> int | None:
        return self.static_batch

    @property
    def batch_limits(self) -> tuple[int, int | None]:
        b = self.static_batch
        return (b, b) if b else (1, None)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings ``float32 [N, E]`` of a packed token batch ``int64 [N, 2, L]``."""
        self.spec.check_batch(batch, where=f"{self.name} text tower")
        ids, mask = np.ascontiguousarray(batch[:, 0]), np.ascontiguousarray(batch[:, 1])
        if self.name == "torch":
            with torch.no_grad():
                return self._module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        if self.name == "onnxruntime":
            return self._sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if self.name == "openvino":
            return np.asarray(self._compiled({"input_ids": ids, "attention_mask": mask})[0])
        return self._tvm.run_inputs(ids, mask)

    def encode(self, ids: np.ndarray, mask: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Embeddings of any number of tokenized captions (batches of the runtime's size, the last padded)."""
        from ...runtimes.base import run_batched

        return run_batched(self, pack_tokens(ids, mask), batch_size)

    def describe(self) -> dict:
        import importlib

        mod = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tvm": "tvm", "torch": "torch"}[self.name]
        return {"runtime": self.name, "device": self.device, "threads": self.threads,
                "backend_version": str(getattr(importlib.import_module(mod), "__version__", "")),
                "options": {"precision": "f32"} if self.name == "openvino" else {},
                "static_batch": self.static_batch}

    def close(self) -> None:
        if getattr(self, "_tvm", None) is not None:
            self._tvm.close()
        self._sess = self._compiled = self._module = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_tower_runtime(runtime: str, artifact, **options):
    """A runtime for one tower artefact: the text tower (its spec a :class:`TokenSpec`) → :class:`TextTowerRuntime`,
    the image tower → the registered runtime (:func:`edgevit.runtimes.load_runtime`)."""
    if isinstance(artifact.spec, TokenSpec):
        return TextTowerRuntime(artifact, backend=runtime, **options)
    from ...runtimes import load_runtime

    return load_runtime(runtime, artifact, **options)


@dataclass
class TowerTarget:
    """One tower to run: ``tower`` (image/text), its artefact, the runtimes that run it, a label for tables and
    (text tower) the tokenizer that makes its inputs."""

    tower: str
    artifact: Any
    runtimes: list[str]
    label: str
    tokenizer: Any = None


DEFAULT_RUNTIME = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "tvm": "tvm"}


def tower_targets(path: str | Path, *, runtimes: list[str] | None = None) -> list[TowerTarget]:
    """The towers behind ``path``: a dual-encoder folder (or registered dual encoder: both towers in torch), an
    export folder with :data:`MANIFEST` (every exported tower, each format on its runtime), or one exported tower file
    (``image_tower.onnx``, ``text_tower.so``, ...). ``runtimes`` (optional) keeps the towers a given runtime runs
    and runs them there. Raises :class:`ConfigError` when nothing is left, :class:`ModelLoadError` for a path that
    is none of these."""
    from ...artifact import Artifact
    from .towers import DUAL_ENCODERS, is_dual_encoder_dir, load_dual_encoder

    p = Path(path)
    out: list[TowerTarget] = []
    if is_dual_encoder_dir(p) or (str(path) in DUAL_ENCODERS and not p.exists()):
        m = load_dual_encoder(path)
        name = getattr(m, "edgevit_name", str(path))
        spec = TokenSpec(vocab_size=int(m.text.tokenizer.vocab_size))
        out = [TowerTarget("image", Artifact(kind="torch", spec=m.spec, model=m.image.eval(), source=f"{name}-image",
                                             task="embedding"), ["torch"], f"{name} image tower"),
               TowerTarget("text", Artifact(kind="torch", spec=spec, model=m.text.eval(), source=f"{name}-text",
                                            task="embedding"), ["torch"], f"{name} text tower", m.text.tokenizer)]
    elif (p / MANIFEST).is_file() or (p.is_file() and p.parent.joinpath(MANIFEST).is_file()):
        folder = p if p.is_dir() else p.parent
        man = json.loads((folder / MANIFEST).read_text())
        for fmt, entry in (man.get("exports") or {}).items():
            for tower in TOWERS:
                if tower not in entry or (p.is_file() and entry[tower]["path"] != p.name):
                    continue
                out.append(_exported_target(folder, man, fmt, tower, entry[tower]))
    else:
        raise ModelLoadError(f"{path} is not a dual encoder (no dual_encoder.json) nor an export of its towers (no "
                             f"{MANIFEST} beside it); export towers with `edgevit export onnx --model DUAL_DIR "
                             f"--tower both --out DIR`")
    if runtimes:
        for t in out:
            t.runtimes = [r for r in runtimes if t.artifact.kind in TextTowerRuntime.BACKENDS.get(r, ())
                          or (t.tower == "image" and _image_runtime_loads(r, t.artifact.kind))]
        out = [t for t in out if t.runtimes]
        if not out:
            raise ConfigError(f"no tower of {path} runs on {', '.join(runtimes)}: a dual-encoder folder runs its "
                              f"towers in torch; export them for another runtime first (edgevit export onnx|openvino|"
                              f"tvm --model DIR --tower both --out OUT) and profile OUT")
    return out


def _image_runtime_loads(runtime: str, kind: str) -> bool:
    from ...runtimes import runtime_loads

    try:
        return runtime_loads(runtime, kind)
    except Exception:  # noqa: BLE001 - an unknown runtime name loads nothing
        return False


def _exported_target(folder: Path, man: dict, fmt: str, tower: str, entry: dict) -> TowerTarget:
    from ...artifact import Artifact
    from ...runtimes import open_artifact

    path = folder / entry["path"]
    label = f"{man.get('model') or folder.name} {tower} tower ({fmt})"
    if tower == "image":
        art = open_artifact(path)
        art.task = "embedding"
        return TowerTarget(tower, art, [DEFAULT_RUNTIME[fmt]], label)
    tok = folder / entry.get("tokenizer", Path(entry["path"]).stem + ".tokenizer")
    from .towers import load_tokenizer

    tokenizer = load_tokenizer(tok)  # ModelLoadError when the folder lost its tokenizer
    spec = TokenSpec(tokens=int(entry.get("tokens") or man.get("text_tokens") or TEXT_TOKENS),
                     vocab_size=int(tokenizer.vocab_size))
    art = Artifact(kind=fmt, spec=spec, path=path, source=f"{man.get('model')}-text", task="embedding")
    return TowerTarget(tower, art, [DEFAULT_RUNTIME[fmt]], label, tokenizer)


def profile_towers(targets: list[TowerTarget], *, images: np.ndarray, texts: list[str], threads: int | None = None,
                   **profile_kw) -> list[dict]:
    """Latency of each tower on each of its runtimes (:func:`~edgevit.profiling.latency.profile_runtime` on real
    inputs: ``images`` uint8 for the image tower, ``texts`` captions tokenized to the tower's length for the text
    tower); one row per tower × runtime × batch, with ``tower`` (image/text) and ``model`` naming the tower."""
    from ...data import preprocess
    from ...profiling.latency import profile_runtime
    from .evaluate import fit_images

    rows = []
    for t in targets:
        if t.tower == "image":
            x = preprocess(fit_images(images, t.artifact.spec.hw), t.artifact.spec)
        else:
            b = t.tokenizer(list(texts), padding="max_length", truncation=True, max_length=t.artifact.spec.tokens,
                    return_tensors="np")
            x = pack_tokens(np.asarray(b["input_ids"]), np.asarray(b["attention_mask"]))
        for r in t.runtimes:
            with load_tower_runtime(r, t.artifact, threads=threads) as rt:
                for row in profile_runtime(rt, inputs=x, **profile_kw):
                    row.update({"tower": t.tower, "model": t.label, "task": "embedding"})
                    if t.tower == "text":
                        row["input_source"] += f", {t.artifact.spec.tokens} tokens per caption"
                    rows.append(row)
    return rows
