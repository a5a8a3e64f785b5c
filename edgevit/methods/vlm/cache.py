"""The stored-embedding teacher cache: "reinforce once, distil many" (specs/methods.md §5; MobileCLIP's dataset
reinforcement, the TinyViT cache of :mod:`edgevit.methods.distill.cache` with dense embeddings).

Layout (the sparse cache's keys/values layout)::

    header.json                   format, record layout, embedding width E, logit scale, fingerprint, files + sha256
    epoch_0000/rank_00.keys       one sample key per line (the image's index in the dataset)
    epoch_0000/rank_00.values     fixed records, line i ↔ record i: int32 seed | float16[E] teacher image embedding
                                  (of the image augmented with that seed; 2E+4 bytes, little-endian, packed)
    text/rank_00.keys             one caption per line (every caption and hard negative of the dataset)
    text/rank_00.values           float16[E] teacher text embedding per caption (texts are not augmented)

Values files are memory-mapped. The fingerprint (teacher weights sha256, dataset name/size/content sha256 including
the captions, augmentation, seed, E) must match the teacher and data a student trains with.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...artifact import file_sha256, write_json
from ...data.captions import all_texts
from ...errors import ConfigError, DataError
from ..distill.cache import fingerprint_diff, weights_sha256

FORMAT = "edgevit-embedding-cache"
FORMAT_VERSION = 1
HEADER = "header.json"


def record_dtype(dim: int) -> np.dtype:
    """``int32 seed | float16[E]``: exactly ``2E + 4`` bytes."""
    dt = np.dtype([("seed", "<i4"), ("emb", "<f2", (dim,))])
    assert dt.itemsize == 2 * dim + 4
    return dt


def data_sha256(data) -> str:
    h = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    h.update("\n".join(all_texts(data)).encode())
    h.update(np.ascontiguousarray(data.text_image).astype("<i8").tobytes())
    return h.hexdigest()


def make_fingerprint(teacher, data, *, seed: int) -> dict:
    from .train import AUGMENT

    return {"format_version": FORMAT_VERSION, "teacher": str(getattr(teacher, "edgevit_name", "")),
            "teacher_sha256": weights_sha256(teacher), "dataset": data.name, "num_samples": len(data),
            "dataset_sha256": data_sha256(data), "augment": dict(AUGMENT), "seed": int(seed),
            "embed_dim": int(teacher.image.embed_dim)}


@torch.no_grad()
def write_embedding_cache(teacher, data, out_dir: str | Path, *, epochs: int, seed: int = 0, batch_size: int = 256,
                          overwrite: bool = False) -> dict:
    """Run the teacher dual encoder once over ``epochs`` augmented passes of ``data`` (the seeds
    :func:`~.train.train_dual` replays) and over every caption; store fp16 embeddings in ``out_dir``. Raises
    :class:`DataError` when ``out_dir`` holds another cache and not ``overwrite``."""
    from ..distill.augment import epoch_seeds
    from .train import batch_input

    if epochs < 1:
        raise ConfigError(f"epochs must be ≥ 1, got {epochs}")
    out = Path(out_dir)
    fp = make_fingerprint(teacher, data, seed=seed)
    if (out / HEADER).exists() and not overwrite:
        old = json.loads((out / HEADER).read_text()).get("fingerprint", {})
        if fingerprint_diff(old, fp) or len(json.loads((out / HEADER).read_text())["epochs"]) != epochs:
            raise DataError(f"{out} holds another embedding cache; pass --overwrite or choose another --out")
    (out / HEADER).unlink(missing_ok=True)
    t0 = time.perf_counter()
    teacher.eval()
    dim = teacher.image.embed_dim
    dt = record_dtype(dim)
    n = len(data)
    epochs_meta = []
    for e in range(epochs):
        seeds = epoch_seeds(seed, e, n)
        recs = np.zeros(n, dt)
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            x = batch_input(data.images[sl], seeds[sl], teacher.spec)
            recs["seed"][sl] = seeds[sl]
            recs["emb"][sl] = teacher.image(x).numpy().astype(np.float16)
        d = out / f"epoch_{e:04d}"
        d.mkdir(parents=True, exist_ok=True)
        recs.tofile(d / "rank_00.values")
        (d / "rank_00.keys").write_text("".join(f"{i}\n" for i in range(n)))
        epochs_meta.append({"epoch": e, "files": [{"keys": f"{d.name}/rank_00.keys", "values": f"{d.name}/rank_00.values",
                                                   "n": n, "sha256": file_sha256(d / "rank_00.values")}]})
    texts = all_texts(data)
    if any("\n" in t for t in texts):
        raise DataError("captions with line breaks cannot be cache keys; replace them with spaces")
    temb = teacher.text.encode(texts).numpy().astype("<f2")
    (out / "text").mkdir(parents=True, exist_ok=True)
    temb.tofile(out / "text" / "rank_00.values")
    (out / "text" / "rank_00.keys").write_text("".join(f"{t}\n" for t in texts))
    header = {"format": FORMAT, "version": FORMAT_VERSION, "record_layout": "int32 seed | float16[E] image embedding",
              "record_bytes": dt.itemsize, "embed_dim": dim, "logit_scale": float(teacher.scale().detach()),
              "fingerprint": fp, "epochs": epochs_meta,
              "text": {"keys": "text/rank_00.keys", "values": "text/rank_00.values", "n": len(texts),
                       "sha256": file_sha256(out / "text" / "rank_00.values")}, "complete": True}
    write_json(out / HEADER, header)
    return {"path": str(out), "epochs": epochs, "num_samples": n, "texts": len(texts), "record_bytes": dt.itemsize,
            "values_bytes": n * epochs * dt.itemsize + temb.nbytes, "seconds": round(time.perf_counter() - t0, 2),
            "fingerprint": fp}


class EmbeddingCache:
    """A written embedding cache, memory-mapped: ``image_embeddings(epoch, indices)``, ``text_embeddings(texts)``.
    Raises :class:`DataError` for a missing, incomplete or corrupt cache."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        hp = self.path / HEADER
        if not hp.is_file():
            raise DataError(f"{self.path} is not an embedding cache (no {HEADER}); write one with "
                            f"`edgevit distill cache --kind embedding --teacher DIR --out {self.path}`")
        self.header = json.loads(hp.read_text())
        if self.header.get("format") != FORMAT or not self.header.get("complete"):
            raise DataError(f"{hp} is not a complete {FORMAT} (a sparse --kind logits cache, or an unfinished "
                            f"write); rewrite it with `edgevit distill cache --kind embedding ... --overwrite`")
        self.fingerprint = self.header["fingerprint"]
        self.dim = int(self.header["embed_dim"])
        self.logit_scale = float(self.header["logit_scale"])
        self._dt = record_dtype(self.dim)
        self._epochs: dict[int, np.memmap] = {}
        t = self.header["text"]
        keys = (self.path / t["keys"]).read_text().split("\n")[:-1]
        vals = np.memmap(self.path / t["values"], dtype="<f2", mode="r", shape=(len(keys), self.dim))
        self._text_row = {k: i for i, k in enumerate(keys)}
        self._text = vals
        self.reads = 0

    @property
    def epochs(self) -> int:
        return len(self.header["epochs"])

    def check_epochs(self, epochs: int) -> None:
        if epochs > self.epochs:
            raise ConfigError(f"the cache {self.path} stores {self.epochs} epoch(s) of teacher embeddings; train for "
                              f"≤ {self.epochs} epochs or rewrite it with --epochs {epochs}")

    def check(self, *, teacher=None, data=None, seed: int | None = None) -> None:
        """Raise :class:`DataError` when the cache was written by another teacher or for other data."""
        expected: dict = {}
        if teacher is not None:
            expected["teacher_sha256"] = weights_sha256(teacher)
        if data is not None:
            expected.update({"dataset": data.name, "num_samples": len(data), "dataset_sha256": data_sha256(data)})
        if seed is not None:
            expected["seed"] = int(seed)
        diff = fingerprint_diff(self.fingerprint, expected)
        if diff:
            raise DataError(f"embedding cache {self.path} does not match ({'; '.join(diff)}): it was made by another "
                            f"teacher or for other data. Write one for this teacher (`edgevit distill cache --kind "
                            f"embedding --teacher DIR --overwrite`) or pass the teacher it was made with")

    def image_embeddings(self, epoch: int, indices) -> torch.Tensor:
        """``float32 [B, E]``: the teacher's embeddings of samples ``indices`` as augmented in ``epoch``."""
        self.check_epochs(epoch + 1)
        if epoch not in self._epochs:
            f = self.header["epochs"][epoch]["files"][0]
            keys = np.array((self.path / f["keys"]).read_text().split(), dtype=np.int64)
            if not np.array_equal(keys, np.arange(len(keys))):
                raise DataError(f"{self.path / f['keys']}: keys are not the samples in order; rewrite the cache")
            self._epochs[epoch] = np.memmap(self.path / f["values"], dtype=self._dt, mode="r", shape=(len(keys),))
        self.reads += 1
        return torch.from_numpy(self._epochs[epoch]["emb"][np.asarray(indices)].astype(np.float32))

    def seeds(self, epoch: int, indices) -> np.ndarray:
        self.image_embeddings(epoch, indices[:1])
        return np.asarray(self._epochs[epoch]["seed"][np.asarray(indices)])

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """``float32 [len(texts), E]``; :class:`DataError` naming captions the cache does not hold."""
        missing = [t for t in texts if t not in self._text_row]
        if missing:
            raise DataError(f"{len(missing)} captions are not in the cache {self.path} (e.g. {missing[0]!r}); it was "
                            f"written for other data")
        return torch.from_numpy(self._text[[self._text_row[t] for t in texts]].astype(np.float32))
