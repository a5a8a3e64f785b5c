"""Retrieval and zero-shot evaluation of dual encoders (specs/methods.md §4: R@1/5/10 in both directions)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ...errors import DataError

RECALL_KS = (1, 5, 10)


def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: np.ndarray,
                ks: tuple[int, ...] = RECALL_KS) -> dict:
    """R@K image→text and text→image, in [0, 1].

    ``image_emb`` ``[N, E]``, ``text_emb`` ``[M, E]`` (L2-normalised), ``text_image`` int64 ``[M]``: the image of
    each caption. Image→text: an image is a hit at K when ANY of its captions is among the K texts most similar to
    it (the COCO/Flickr30k convention with 5 captions per image); text→image: its own image among the K most
    similar images. Ties rank against the query (a tied wrong item counts as ranked above). Returns
    ``{"i2t_r1": …, "t2i_r1": …, …, "n_images", "n_texts"}``."""
    text_image = np.asarray(text_image, dtype=np.int64)
    sim = (image_emb.float() @ text_emb.float().t()).numpy()  # [N, M]
    n, m = sim.shape
    if m != len(text_image):
        raise DataError(f"{m} text embeddings but {len(text_image)} caption→image indices")
    own = np.zeros((n, m), bool)
    own[text_image, np.arange(m)] = True
    best_own = np.where(own, sim, -np.inf).max(1)  # [N]
    if not np.isfinite(best_own).all():
        raise DataError(f"{int((~np.isfinite(best_own)).sum())} images have no caption: retrieval needs ≥ 1 each")
    i2t_rank = (np.where(own, -np.inf, sim) >= best_own[:, None]).sum(1)  # wrong texts at least as similar
    pos = sim[text_image, np.arange(m)]  # [M]
    t2i_rank = (sim >= pos[None, :]).sum(0) - 1  # other images at least as similar (minus itself)
    out: dict = {"n_images": int(n), "n_texts": int(m)}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean())
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks))
    return out


def recall_at_k_by_content(image_emb: torch.Tensor, text_emb: torch.Tensor, image_key: np.ndarray,
                           text_key: np.ndarray, ks: tuple[int, ...] = RECALL_KS, chunk: int = 1024,
                           text_group: np.ndarray | None = None) -> dict:
    """R@K where a text is RELEVANT to an image when it says what the image shows: ``image_key`` int64 ``[N]`` and
    ``text_key`` int64 ``[M]`` (e.g. the ordered classes of a fashion-mnist-pair and of the pair a caption names)
    are equal. Image→text: a hit at K when a relevant text is among the K most similar texts; text→image: a
    relevant image among the K most similar images. Ties rank against the query.

    :func:`recall_at_k` counts only an image's own caption: on template captions the same string (and its
    paraphrases) describes many images, so its R@K is capped far below 1 and falls as the gallery grows (10,000
    test pairs name 90 ordered class pairs: ~110 equally true captions per image). This metric still needs the order
    and both items right (the swapped and the one-item-changed captions are irrelevant texts). ``text_group`` int64
    ``[M]`` (equal for identical strings): image→text ranks one text per group, so K counts DISTINCT captions (else a
    wrong string repeated 37 times fills a top 10 on its own)."""
    image_key, text_key = np.asarray(image_key, np.int64), np.asarray(text_key, np.int64)
    if not np.isin(image_key, text_key).all():
        raise DataError(f"{int((~np.isin(image_key, text_key)).sum())} images have no relevant text: retrieval needs "
                        f"≥ 1 each")
    img, txt = image_emb.float(), text_emb.float()
    gallery = np.arange(len(txt)) if text_group is None else np.unique(np.asarray(text_group), return_index=True)[1]
    txt_g, key_g = txt[torch.from_numpy(np.sort(gallery))], text_key[np.sort(gallery)]
    i2t_rank = _content_ranks(img, image_key, txt_g, key_g, chunk)
    t2i_rank = _content_ranks(txt, text_key, img, image_key, chunk)
    out: dict = {"n_images": len(img), "n_texts": len(txt), "n_distinct_texts": len(gallery), "relevance": "content"}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).mean())
    return out


def evaluate_retrieval(model, data, *, batch_size: int = 256) -> dict:
    """R@1/5/10 both ways of a :class:`~edgevit.methods.vlm.towers.DualEncoder` on a
    :class:`~edgevit.data.captions.CaptionDataset`, plus seconds taken. Data whose images carry ``labels`` (the
    classes their captions name, in order: fashion-mnist-pairs) also get ``by_content``:
    :func:`recall_at_k_by_content`, a caption relevant to every image showing what it names."""
    t0 = time.perf_counter()
    img = model.encode_images(data.images, batch_size=batch_size)
    txt = model.text.encode(list(data.captions), batch_size=batch_size)
    res = recall_at_k(img, txt, data.text_image)
    if data.labels is not None:
        _, image_key = np.unique(np.asarray(data.labels).reshape(len(data), -1), axis=0, return_inverse=True)
        image_key = image_key.reshape(-1)
        _, group = np.unique(np.asarray(data.captions, dtype=object).astype(str), return_inverse=True)
        res["by_content"] = recall_at_k_by_content(img, txt, image_key, image_key[data.text_image],
                                                   text_group=group.reshape(-1))
    if data.hard_negatives:
        res["hard_negatives"] = hard_negative_win_rate(model, img, txt[torch.from_numpy(data.first_caption())],
                                                       data.hard_negatives, batch_size=batch_size)
    res.update({"task": "retrieval", "data": data.name, "seconds": round(time.perf_counter() - t0, 3)})
    return res


def hard_negative_win_rate(model, img: torch.Tensor, own: torch.Tensor, negatives: list[list[str]], *,
                           batch_size: int = 256) -> dict:
    """How often each image's own caption outscores each of its hard negative captions (fashion-mnist-pairs: the
    swapped order, then one item changed; chance 0.5). ``img``, ``own``: normalised ``[N, E]``; ``negatives``: per
    image its k negative strings. Returns ``{"win_rate": [k floats, per negative column], "wins_all": float}``."""
    k = len(negatives[0])
    neg = model.text.encode([negatives[i][j] for j in range(k) for i in range(len(img))],
                            batch_size=batch_size).reshape(k, len(img), -1)
    pos = (img * own).sum(-1)
    wins = torch.stack([pos > (img * neg[j]).sum(-1) for j in range(k)])
    return {"win_rate": [round(float(w.float().mean()), 4) for w in wins],
            "wins_all": round(float(wins.all(0).float().mean()), 4), "n": len(img)}


def class_text_embeddings(model, classes, templates=None) -> torch.Tensor:
    """``float32 [C, E]``: per class the mean of its prompts' embeddings (:func:`edgevit.data.captions.class_prompts`),
    L2-normalised (CLIP's prompt ensembling)."""
    from ...data.captions import PROMPT_TEMPLATES, class_prompts

    prompts = class_prompts(classes, templates or PROMPT_TEMPLATES)
    flat = [p for ps in prompts for p in ps]
    emb = model.text.encode(flat).reshape(len(prompts), len(prompts[0]), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1)


def evaluate_zero_shot(model, dataset, *, batch_size: int = 256) -> dict:
    """Zero-shot top-1 of a dual encoder on a classification :class:`~edgevit.data.ArrayDataset` (class prompts,
    no training on its labels). Single images are fitted to the image tower's input (a pair-trained tower of
    28×56 sees the image on both halves, as a pair of the same class would show)."""
    t0 = time.perf_counter()
    heads = class_text_embeddings(model, dataset.classes)
    images = fit_images(dataset.images, model.spec.hw)
    img = model.encode_images(images, batch_size=batch_size)
    pred = (img @ heads.t()).argmax(1).numpy()
    top1 = float((pred == dataset.labels).mean())
    return {"task": "zero-shot", "top1": top1, "n": len(dataset), "data": dataset.name,
            "seconds": round(time.perf_counter() - t0, 3)}


def fit_images(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Grey images ``[N, h, w]`` tiled side by side to a tower's wider input ``hw`` (w × k = W); others unchanged."""
    if isinstance(images, np.ndarray) and images.dtype != object and images.ndim == 3:
        h, w = images.shape[1:]
        if h == hw[0] and w != hw[1] and hw[1] % w == 0:
            return np.concatenate([images] * (hw[1] // w), axis=2)
    return images


def _content_ranks(query, query_key, gallery, gallery_key, chunk: int) -> np.ndarray:
    """Per query: how many irrelevant gallery items score at least as high as its best relevant one (0 = a hit at
    rank 1); relevant means an equal content key. ``query`` [Q, D], ``gallery`` [G, D] (torch, normalised)."""
    ranks = np.zeros(len(query), np.int64)
    for s in range(0, len(query), chunk):
        sim = (query[s : s + chunk] @ gallery.t()).numpy()
        rel = query_key[s : s + chunk, None] == gallery_key[None, :]
        best = np.where(rel, sim, -np.inf).max(1)
        ranks[s : s + chunk] = (np.where(rel, -np.inf, sim) >= best[:, None]).sum(1)
    return ranks
