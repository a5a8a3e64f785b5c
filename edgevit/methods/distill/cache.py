"""The sparse teacher cache: written once by running the teacher, read (memory-mapped) by the student trainer.

Layout of a cache directory::

    header.json                     format, record layout, K, C, N, the fingerprint, per-epoch file list + sha256
    epoch_0000/rank_00.keys         one stable sample key per line (the sample's index in the dataset split)
    epoch_0000/rank_00.values       fixed records, line i of .keys ↔ record i:
                                    int32 seed | int16[K] class indices | float16[K] probabilities  (4K+4 bytes,
                                    little-endian, no padding)
    epoch_0000/rank_01.*            under torchrun, one pair per rank (each rank writes its share of the samples)

The fingerprint (teacher weights sha256, dataset name/split/size/content sha256, augmentation config and version,
K, seed, number of classes, format version) decides whether a cache can be reused. ``seed`` of a record drives
every random draw of the sample's augmentation (:mod:`edgevit.methods.distill.augment`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...artifact import file_sha256
from ...errors import ConfigError, DataError
from .augment import AugmentConfig, augment_batch, epoch_seeds
from .targets import check_topk

log = logging.getLogger(__name__)

FORMAT = "edgevit-distill-cache"
FORMAT_VERSION = 1
HEADER = "header.json"
RECORD_LAYOUT = "int32 seed | int16[K] indices | float16[K] probabilities (little-endian, packed)"


def record_dtype(topk: int) -> np.dtype:
    """The packed record: exactly ``4K + 4`` bytes."""
    dt = np.dtype([("seed", "<i4"), ("idx", "<i2", (topk,)), ("val", "<f2", (topk,))])
    assert dt.itemsize == 4 * topk + 4
    return dt


def weights_sha256(model) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes and bytes, in sorted order)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_sha256(dataset) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(dataset.images).tobytes())
    h.update(np.ascontiguousarray(dataset.labels).astype("<i8").tobytes())
    return h.hexdigest()


def make_fingerprint(teacher, dataset, *, split: str, topk: int, seed: int, augment: AugmentConfig,
                     num_classes: int, teacher_name: str | None = None) -> dict:
    """Everything a cache's content depends on. Two caches with equal fingerprints hold the same records."""
    return {
        "format_version": FORMAT_VERSION,
        "teacher": teacher_name or str(getattr(teacher, "edgevit_name", type(teacher).__name__)),
        "teacher_sha256": weights_sha256(teacher),
        "dataset": dataset.name, "split": split, "num_samples": len(dataset),
        "dataset_sha256": dataset_sha256(dataset),
        "augment": augment.to_dict(), "topk": int(topk), "seed": int(seed), "num_classes": int(num_classes),
    }


def fingerprint_diff(stored: dict, expected: dict) -> list[str]:
    """Human-readable differences between two fingerprints (only the keys given in ``expected``)."""
    out = []
    for k, v in expected.items():
        if stored.get(k) != v:
            sv = stored.get(k)
            short = (lambda x: x[:12] + "…" if isinstance(x, str) and len(x) > 20 else x)
            out.append(f"{k}: cache has {short(sv)!r}, expected {short(v)!r}")
    return out


def model_input(x01: np.ndarray, spec) -> Any:
    """Augmented float [B,1,H,W] in [0,1] → the model's normalised input tensor (same maths as evaluation)."""
    import torch

    from ...data import preprocess

    return torch.from_numpy(preprocess(x01[:, 0], spec))


# ------------------------------------------------------------------------------------------------ reading
class EpochRecords:
    """One epoch of a cache: the records of every rank file, memory-mapped, looked up by sample index."""

    def __init__(self, root: Path, entry: dict, *, topk: int, num_classes: int, num_samples: int, verify: bool = True):
        self.epoch = int(entry["epoch"])
        dt = record_dtype(topk)
        self._maps: list[np.memmap] = []
        file_of = np.full(num_samples, -1, np.int64)
        row_of = np.full(num_samples, -1, np.int64)
        for fi, f in enumerate(entry["files"]):
            kpath, vpath = root / f["keys"], root / f["values"]
            for p in (kpath, vpath):
                if not p.exists():
                    raise DataError(f"cache {root}: epoch {self.epoch} file {p.name} is missing; rewrite the cache "
                                    f"with `edgevit distill cache ... --overwrite`")
            keys = np.array(kpath.read_text().split(), dtype=np.int64)
            size = vpath.stat().st_size
            want = len(keys) * dt.itemsize
            if size != want or len(keys) != int(f["n"]):
                raise DataError(
                    f"cache values file {vpath} is truncated or corrupt: {size} bytes, expected {want} "
                    f"({len(keys)} keys × {dt.itemsize}-byte records, header says {f['n']} records). "
                    f"Rewrite the cache with `edgevit distill cache ... --overwrite`."
                )
            if verify:
                digest = file_sha256(vpath)
                if digest != f["sha256"]:
                    raise DataError(f"cache values file {vpath} is corrupt: its sha256 {digest[:12]}… differs from "
                                    f"the header's {f['sha256'][:12]}…. Rewrite the cache with `edgevit distill "
                                    f"cache ... --overwrite`.")
            mm = np.memmap(vpath, dtype=dt, mode="r", shape=(len(keys),)) if len(keys) else np.zeros(0, dt)
            if len(keys):  # range check always (cheap); the checksum above only with verify
                idx, val = mm["idx"], mm["val"].astype(np.float32)
                if (idx < 0).any() or (idx >= num_classes).any() or not np.isfinite(val).all() or (val < 0).any() \
                        or (val.sum(1) > 1.01).any():
                    raise DataError(f"cache values file {vpath} is corrupt: class indices outside [0, {num_classes}) "
                                    f"or probabilities outside [0, 1]. Rewrite the cache with --overwrite.")
            if ((keys < 0) | (keys >= num_samples)).any() or (file_of[keys] >= 0).any():
                raise DataError(f"cache keys file {kpath} is corrupt: keys outside [0, {num_samples}) or repeated")
            file_of[keys] = fi
            row_of[keys] = np.arange(len(keys))
            self._maps.append(mm)
        if (file_of < 0).any():
            missing = int((file_of < 0).sum())
            raise DataError(f"cache {root}: epoch {self.epoch} has no record for {missing} of {num_samples} samples; "
                            f"rewrite the cache with --overwrite")
        self._file_of, self._row_of = file_of, row_of
        self.topk = topk

    def get(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(seeds int32 [B], class indices int16 [B,K], probabilities float16 [B,K])`` of dataset samples."""
        ind = np.asarray(indices, dtype=np.int64)
        seeds = np.empty(len(ind), np.int32)
        idx = np.empty((len(ind), self.topk), np.int16)
        val = np.empty((len(ind), self.topk), np.float16)
        files = self._file_of[ind]
        for fi in np.unique(files):
            sel = np.flatnonzero(files == fi)
            rec = self._maps[fi][self._row_of[ind[sel]]]
            seeds[sel], idx[sel], val[sel] = rec["seed"], rec["idx"], rec["val"]
        return seeds, idx, val


class TeacherCache:
    """A written cache: header, fingerprint and memory-mapped epochs (``cache.epoch(e).get(indices)``)."""

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.path = Path(path)
        hp = self.path / HEADER
        if not hp.exists():
            raise DataError(f"{self.path} is not a distillation cache (no {HEADER}); write one with "
                            f"`edgevit distill cache --teacher NAME --out {self.path}`")
        try:
            self.header = json.loads(hp.read_text())
        except ValueError as exc:
            raise DataError(f"{hp} is not valid JSON ({exc}); rewrite the cache with --overwrite") from exc
        if self.header.get("format") != FORMAT or self.header.get("version") != FORMAT_VERSION:
            raise DataError(f"{hp}: format {self.header.get('format')!r} v{self.header.get('version')} is not "
                            f"{FORMAT} v{FORMAT_VERSION}; rewrite the cache with this edgevit")
        if not self.header.get("complete"):
            raise DataError(f"cache {self.path} is incomplete (its writer did not finish); run `edgevit distill "
                            f"cache` again to finish it")
        self.fingerprint: dict = self.header["fingerprint"]
        self.topk = int(self.fingerprint["topk"])
        self.num_classes = int(self.fingerprint["num_classes"])
        self.num_samples = int(self.fingerprint["num_samples"])
        if self.header.get("record_bytes") != 4 * self.topk + 4:
            raise DataError(f"{hp}: record_bytes {self.header.get('record_bytes')} ≠ 4K+4 = {4 * self.topk + 4}")
        self.augment = AugmentConfig.from_dict(self.fingerprint["augment"])
        self.seed = int(self.fingerprint["seed"])
        self._entries = {int(e["epoch"]): e for e in self.header["epochs"]}
        self._verify = verify
        self._open: dict[int, EpochRecords] = {}

    @property
    def epochs(self) -> int:
        """Number of consecutive epochs stored from epoch 0."""
        n = 0
        while n in self._entries:
            n += 1
        return n

    @property
    def bytes_per_sample_epoch(self) -> int:
        return 4 * self.topk + 4

    def total_bytes(self) -> int:
        return sum((self.path / f["values"]).stat().st_size + (self.path / f["keys"]).stat().st_size
                   for e in self._entries.values() for f in e["files"])

    def check_epochs(self, epochs: int) -> None:
        if epochs > self.epochs:
            raise ConfigError(
                f"cannot train for {epochs} epochs: the cache {self.path} stores {self.epochs} epoch(s) of teacher "
                f"targets, and a student can train for at most the stored epochs. Train for ≤ {self.epochs} epochs, "
                f"or extend the cache: `edgevit distill cache ... --epochs {epochs} --out {self.path}`"
            )

    def check(self, *, teacher=None, dataset=None, split: str | None = None) -> None:
        """Raise :class:`DataError` when the cache was not written for this teacher / dataset."""
        expected: dict = {}
        if teacher is not None:
            expected["teacher_sha256"] = weights_sha256(teacher)
        if dataset is not None:
            expected.update({"dataset": dataset.name, "num_samples": len(dataset),
                             "dataset_sha256": dataset_sha256(dataset)})
        if split is not None:
            expected["split"] = split
        diff = fingerprint_diff(self.fingerprint, expected)
        if diff:
            raise DataError(f"cache {self.path} does not match: its fingerprint differs ({'; '.join(diff)}). "
                            f"Write a cache for this teacher and dataset (`edgevit distill cache ... --overwrite`) "
                            f"or pass the teacher/dataset the cache was written with")

    def epoch(self, e: int) -> EpochRecords:
        if e not in self._entries:
            self.check_epochs(e + 1)
        if e not in self._open:
            self._open[e] = EpochRecords(self.path, self._entries[e], topk=self.topk, num_classes=self.num_classes,
                                         num_samples=self.num_samples, verify=self._verify)
        return self._open[e]


# ------------------------------------------------------------------------------------------------ writing
def _epoch_dir(e: int) -> str:
    return f"epoch_{e:04d}"


def _read_header(path: Path) -> dict | None:
    try:
        return json.loads((path / HEADER).read_text())
    except (OSError, ValueError):
        return None


def _write_header(out: Path, fp: dict, dt, keep: dict[int, dict], *, done: list[int], world_size: int,
                  complete: bool) -> dict:
    """Write the cache header listing the stored epochs ``done`` (``keep``: entries of epochs reused from an older
    header); ``complete`` false while epochs are still being written (readers refuse such a cache, writers resume
    after its last listed epoch). Atomic (temp file + rename)."""
    from ...artifact import write_json
    from ...versions import library_versions

    header = {
        "format": FORMAT, "version": FORMAT_VERSION, "record_layout": RECORD_LAYOUT,
        "record_bytes": dt.itemsize, "fingerprint": fp,
        "fingerprint_sha256": hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest(),
        "epochs": [], "world_size_written": world_size, "complete": complete,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": library_versions(),
    }
    for e in done:
        if e in keep:
            header["epochs"].append(keep[e])
            continue
        files = [json.loads(p.read_text()) for p in sorted((out / _epoch_dir(e)).glob("rank_*.json"))]
        header["epochs"].append({"epoch": e, "files": [{k: f[k] for k in ("keys", "values", "n", "sha256")}
                                                       for f in files],
                                 "seconds": max(f["seconds"] for f in files)})
    write_json(out / HEADER, header)
    return header


def write_cache(teacher, dataset, out_dir: str | Path, *, epochs: int, topk: int | None = None, seed: int = 0,
                augment: AugmentConfig | None = None, split: str = "train", batch_size: int = 512,
                overwrite: bool = False, teacher_name: str | None = None, spec=None, dist_info=None) -> dict:
    """Run ``teacher`` over ``epochs`` augmented passes of ``dataset`` and store its top-K in ``out_dir``.

    ``topk`` defaults to 10, capped at C − 1 (:func:`~edgevit.methods.distill.targets.default_topk`).
    Reuses epochs already in ``out_dir`` when the fingerprint matches (so ``epochs`` can be raised later);
    a cache with another fingerprint raises :class:`DataError` unless ``overwrite``. Under torchrun each rank
    writes the samples ``rank::world_size`` of every epoch to its own files; rank 0 writes the header.
    Returns a record (fingerprint, epochs written/reused, bytes, seconds, teacher calls).
    """
    import torch

    from ...artifact import write_json
    from . import distributed
    from .targets import teacher_calls, teacher_topk

    if epochs < 1:
        raise ConfigError(f"epochs must be ≥ 1, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    if dataset.images.ndim != 3:
        raise DataError(f"the distillation cache needs grey images [N,H,W]; {dataset.name} has shape "
                        f"{dataset.images.shape}")
    augment = augment or AugmentConfig()
    spec = spec or getattr(teacher, "edgevit_spec", None)
    if spec is None:
        from ...models import input_spec_of

        spec = input_spec_of(teacher)
    num_classes = int(spec.num_classes or len(dataset.classes))
    if topk is None:
        from .targets import default_topk

        topk = default_topk(num_classes)
    check_topk(topk, num_classes)
    info = dist_info or distributed.DistInfo()
    out = Path(out_dir)
    fp = make_fingerprint(teacher, dataset, split=split, topk=topk, seed=seed, augment=augment,
                          num_classes=num_classes, teacher_name=teacher_name)
    if info.is_main and out.is_dir():
        from ...fileio import remove_partials

        remove_partials(out)  # what a killed write left (never read: the header is written last, all-or-nothing)
    old = _read_header(out)
    keep: dict[int, dict] = {}
    if old is not None:
        diff = fingerprint_diff(old.get("fingerprint", {}), fp)
        if diff and not overwrite:
            raise DataError(f"{out} holds a cache with another fingerprint ({'; '.join(diff)}); pass --overwrite "
                            f"to replace it, or choose another --out")
        if not diff:
            keep = {int(e["epoch"]): e for e in old.get("epochs", []) if int(e["epoch"]) < epochs}
    elif out.exists() and any(not p.name.startswith("epoch_") for p in out.iterdir()):
        raise DataError(f"{out} exists and is not a distillation cache (no {HEADER}); choose an empty or new --out")
    todo = [e for e in range(epochs) if e not in keep]
    distributed.barrier(info)  # every rank has read the old header before rank 0 removes it
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if old is not None and not keep:
            for p in out.glob("epoch_*"):
                shutil.rmtree(p)
        for e in todo:
            if (out / _epoch_dir(e)).exists():
                shutil.rmtree(out / _epoch_dir(e))
        (out / HEADER).unlink(missing_ok=True)  # incomplete until rank 0 rewrites it below
    distributed.barrier(info)

    teacher = teacher.to(info.device).eval()
    dt = record_dtype(topk)
    n = len(dataset)
    calls0 = teacher_calls()
    stats = {"augment_s": 0.0, "teacher_s": 0.0}
    t_start = time.perf_counter()
    mine = np.arange(info.rank, n, info.world_size)
    for e in todo:
        t0 = time.perf_counter()
        seeds = epoch_seeds(seed, e, n)
        recs = np.zeros(len(mine), dt)
        for s in range(0, len(mine), batch_size):
            ind = mine[s : s + batch_size]
            ta = time.perf_counter()
            x01, _ = augment_batch(dataset.images[ind], seeds[ind], augment, dataset_images=dataset.images)
            x = model_input(x01, spec).to(info.device)
            tb = time.perf_counter()
            idx, val = teacher_topk(teacher, x, topk)
            stats["augment_s"] += tb - ta
            stats["teacher_s"] += time.perf_counter() - tb
            recs["seed"][s : s + len(ind)] = seeds[ind]
            recs["idx"][s : s + len(ind)] = idx
            recs["val"][s : s + len(ind)] = val
        d = out / _epoch_dir(e)
        d.mkdir(parents=True, exist_ok=True)
        stem = f"rank_{info.rank:02d}"
        vtmp, ktmp = d / (stem + ".values.tmp"), d / (stem + ".keys.tmp")
        recs.tofile(vtmp)
        ktmp.write_text("".join(f"{i}\n" for i in mine))
        os.replace(vtmp, d / (stem + ".values"))
        os.replace(ktmp, d / (stem + ".keys"))
        meta = {"keys": f"{_epoch_dir(e)}/{stem}.keys", "values": f"{_epoch_dir(e)}/{stem}.values",
                "n": len(mine), "sha256": file_sha256(d / (stem + ".values")),
                "seconds": round(time.perf_counter() - t0, 3)}
        write_json(d / (stem + ".json"), meta)
        if info.is_main:  # one epoch line per run, not one per rank
            log.info("cache epoch %d/%d: %d records per rank (%d ranks) in %.1f s", e + 1, epochs, len(mine),
                     info.world_size, meta["seconds"])
        distributed.barrier(info)
        if info.is_main:  # each finished epoch is durable: a killed writer resumes after it
            header = _write_header(out, fp, dt, keep, done=sorted([*keep, *todo[:todo.index(e) + 1]]),
                                   world_size=info.world_size, complete=False)
    seconds = time.perf_counter() - t_start
    header = None
    if info.is_main:
        header = _write_header(out, fp, dt, keep, done=list(range(epochs)), world_size=info.world_size, complete=True)
    distributed.barrier(info)
    header = header or _read_header(out)
    value_bytes = sum(f["n"] for ep in header["epochs"] for f in ep["files"]) * dt.itemsize
    return {
        "path": str(out), "fingerprint": fp, "epochs": epochs, "epochs_written": todo,
        "epochs_reused": sorted(keep), "reused": not todo, "num_samples": n, "topk": topk,
        "num_classes": num_classes, "record_bytes": dt.itemsize, "bytes_per_sample_epoch": dt.itemsize,
        "values_bytes": value_bytes, "seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / len(todo), 3) if todo else 0.0,
        "augment_s": round(stats["augment_s"], 3), "teacher_s": round(stats["teacher_s"], 3),
        "teacher_calls": teacher_calls() - calls0, "rank": info.rank, "world_size": info.world_size,
        "device": info.device, "torch_threads": torch.get_num_threads(),
    }
