"""TinyViT-style distillation (edgevit.methods.distill): replayable augmentation, the sparse cache, targets, the trainer,
the CLI and the ``distill`` stage — on real Fashion-MNIST subsets, the shipped teacher and the tiny student."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from edgevit.errors import ConfigError, DataError

N_TRAIN, K, EPOCHS = 64, 3, 2


@pytest.fixture(scope="session")
def fmnist_train_small():
    from edgevit.data import load_dataset

    try:
        return load_dataset("fashion-mnist", "train", limit=N_TRAIN)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST not installed: {exc}")


@pytest.fixture(scope="session")
def teacher(teacher_available):
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    from edgevit.models import create

    return create("fmnist-vit")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory, teacher, fmnist_train_small):
    """A cache of the real teacher over 64 real training images, 2 epochs, K=3 (written once)."""
    from edgevit.methods.distill.cache import write_cache

    out = tmp_path_factory.mktemp("distill") / "cache"
    rec = write_cache(teacher, fmnist_train_small, out, epochs=EPOCHS, topk=K, seed=0)
    return out, rec


def _copy_cache(real_cache, tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(real_cache[0], dst)
    return dst


def _student(seed: int = 0):
    import torch

    from edgevit.models import create

    torch.manual_seed(seed)
    return create("fmnist-vit-tiny")


# ---------------------------------------------------------------------------------------------- augmentation
def test_replay_is_bit_identical_whatever_the_batch(fmnist_train_small):
    from edgevit.methods.distill.augment import augment_batch, epoch_seeds, replay

    seeds = epoch_seeds(0, 0, len(fmnist_train_small))
    out, _ = augment_batch(fmnist_train_small.images, seeds)
    assert out.shape == (N_TRAIN, 1, 28, 28) and out.dtype == np.float32
    for i in range(N_TRAIN):
        assert replay(fmnist_train_small.images[i], seeds[i]).tobytes() == out[i].tobytes(), i
    again, _ = augment_batch(fmnist_train_small.images[::-1], seeds[::-1])  # other batch order and neighbours
    assert again[::-1].tobytes() == out.tobytes()
    other, _ = augment_batch(fmnist_train_small.images, seeds + 1)
    assert (other != out).any(axis=(1, 2, 3)).mean() > 0.9  # the seed, not the batch, decides


@pytest.mark.parametrize("op", ["auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize",
                                "solarize_add", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
                                "translate_x", "translate_y"])
def test_every_randaugment_op_replays(fmnist_train_small, op):
    from edgevit.methods.distill.augment import AugmentConfig, augment_batch, replay

    cfg = AugmentConfig(randaug_ops=(op,), randaug_n=1, randaug_prob=1.0, erase_prob=0.0, crop_padding=0,
                        hflip_prob=0.0)
    seeds = np.arange(16) * 7919
    out, _ = augment_batch(fmnist_train_small.images[:16], seeds, cfg)
    plain = fmnist_train_small.images[:16].astype(np.float32)[:, None] / np.float32(255)
    assert (out != plain).any(), f"{op} changed nothing"
    for i in (0, 5, 15):
        assert replay(fmnist_train_small.images[i], seeds[i], cfg).tobytes() == out[i].tobytes()


def test_mixup_cutmix_pairing_replays(fmnist_train_small):
    from edgevit.methods.distill.augment import AugmentConfig, augment_batch, replay

    cfg = AugmentConfig(mixup_alpha=0.8, cutmix_alpha=1.0)
    imgs = fmnist_train_small.images
    seeds = np.arange(32) + 100
    out, mixes = augment_batch(imgs[:32], seeds, cfg, dataset_images=imgs)
    kinds = {m[0] for m in mixes if m is not None}
    assert kinds == {"mixup", "cutmix"} and all(0 <= m[1] < N_TRAIN and 0 <= m[2] <= 1 for m in mixes if m)
    for i in range(0, 32, 5):
        assert replay(imgs[i], seeds[i], cfg, dataset_images=imgs).tobytes() == out[i].tobytes()
    with pytest.raises(ConfigError, match="dataset_images"):
        augment_batch(imgs[:2], seeds[:2], cfg)


def test_epoch_seeds_are_int32_per_epoch():
    from edgevit.methods.distill.augment import epoch_seeds

    a, b = epoch_seeds(0, 0, 1000), epoch_seeds(0, 1, 1000)
    assert a.dtype == np.int32 and (a >= 0).all() and (a == epoch_seeds(0, 0, 1000)).all()
    assert (a != b).mean() > 0.99


# ---------------------------------------------------------------------------------------------- cache format
@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_record_is_4k_plus_4_bytes(k):
    from edgevit.methods.distill.cache import record_dtype

    assert record_dtype(k).itemsize == 4 * k + 4


def test_cache_layout_and_sizes(real_cache):
    from edgevit.methods.distill.cache import TeacherCache

    path, rec = real_cache
    assert rec["record_bytes"] == 4 * K + 4 == rec["bytes_per_sample_epoch"]
    # the default batch (512) holds all 64 images: exactly one teacher call per epoch, none more
    assert rec["teacher_calls"] == EPOCHS and rec["epochs_written"] == [0, 1]
    cache = TeacherCache(path)
    assert cache.epochs == EPOCHS and cache.topk == K and cache.num_classes == 10
    for e in range(EPOCHS):
        keys = (path / f"epoch_{e:04d}" / "rank_00.keys").read_text().split()
        values = path / f"epoch_{e:04d}" / "rank_00.values"
        assert len(keys) == N_TRAIN and values.stat().st_size == N_TRAIN * (4 * K + 4)
    header = json.loads((path / "header.json").read_text())
    fp = header["fingerprint"]
    # the fingerprint holds the values the cache was written with, not just their names
    from edgevit.data import load_dataset
    from edgevit.methods.distill.augment import AugmentConfig
    from edgevit.methods.distill.cache import weights_sha256
    from edgevit.models import create

    assert (fp["topk"], fp["seed"], fp["num_classes"], fp["num_samples"]) == (K, 0, 10, N_TRAIN)
    assert fp["augment"] == AugmentConfig().to_dict() and fp["split"] == "train"
    assert fp["teacher"] == "fmnist-vit" and fp["dataset"] == "fashion-mnist"
    data = load_dataset("fashion-mnist", "train", limit=N_TRAIN)
    h = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).astype("<i8").tobytes())
    assert fp["dataset_sha256"] == h.hexdigest()
    assert fp["teacher_sha256"] == weights_sha256(create("fmnist-vit"))  # a fresh load of the same weights
    assert fp["teacher_sha256"] != weights_sha256(_student())
    assert header["fingerprint_sha256"] == hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    seeds, idx, val = cache.epoch(0).get(np.arange(N_TRAIN))
    assert seeds.dtype == np.int32 and idx.dtype == np.int16 and val.dtype == np.float16
    assert isinstance(cache.epoch(0)._maps[0], np.memmap)
    assert (np.diff(val.astype(np.float32), axis=1) <= 0).all()  # sorted top-K probabilities


def test_targets_sum_to_one_and_argmax_is_the_teachers_top1(real_cache, teacher, fmnist_train_small):
    """Replay each stored seed, run the teacher on it independently, and compare with the stored record."""
    import torch

    from edgevit.methods.distill.augment import augment_batch
    from edgevit.methods.distill.cache import TeacherCache, model_input
    from edgevit.methods.distill.targets import dense_targets

    cache = TeacherCache(real_cache[0])
    for e in range(EPOCHS):
        seeds, idx, val = cache.epoch(e).get(np.arange(N_TRAIN))
        t = dense_targets(idx, val, 10)
        assert torch.allclose(t.sum(1), torch.ones(N_TRAIN), atol=1e-6)
        assert (t >= 0).all() and (t.argmax(1).numpy() == idx[:, 0]).all()
        x01, _ = augment_batch(fmnist_train_small.images, seeds, cache.augment)
        with torch.inference_mode():
            top1 = teacher(model_input(x01, teacher.edgevit_spec)).argmax(1).numpy()
        assert (top1 == idx[:, 0]).all()
        assert (t.argmax(1).numpy() == top1).all()


def test_dense_target_spreads_leftover_mass():
    import torch

    from edgevit.methods.distill.targets import dense_targets

    t = dense_targets(np.array([[2, 0]]), np.array([[0.6, 0.2]], dtype=np.float16), 5)
    left = (1 - float(np.float16(0.6)) - float(np.float16(0.2))) / 3
    assert torch.allclose(t[0], torch.tensor([float(np.float16(0.2)), left, float(np.float16(0.6)), left, left]),
                          atol=1e-6)


def test_soft_target_cross_entropy_matches_torch():
    import torch
    import torch.nn.functional as F

    from edgevit.methods.distill.targets import soft_target_cross_entropy

    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 10, generator=g)
    t = torch.softmax(torch.randn(8, 10, generator=g), -1)
    assert torch.allclose(soft_target_cross_entropy(z, t), F.cross_entropy(z, t), atol=1e-6)


# ---------------------------------------------------------------------------------------------- bad input
def test_truncated_values_file(real_cache, tmp_path):
    from edgevit.methods.distill.cache import TeacherCache

    path = _copy_cache(real_cache, tmp_path)
    values = path / "epoch_0001" / "rank_00.values"
    values.write_bytes(values.read_bytes()[:-7])
    cache = TeacherCache(path)
    cache.epoch(0)  # an intact epoch still opens
    with pytest.raises(DataError, match=r"truncated or corrupt: \d+ bytes, expected 1024"):
        cache.epoch(1)


def test_corrupt_values_file(real_cache, tmp_path):
    from edgevit.methods.distill.cache import TeacherCache

    path = _copy_cache(real_cache, tmp_path)
    values = path / "epoch_0000" / "rank_00.values"
    raw = bytearray(values.read_bytes())
    raw[100:108] = b"\xff" * 8
    values.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="is corrupt: its sha256"):
        TeacherCache(path).epoch(0)
    with pytest.raises(DataError, match="class indices outside"):
        TeacherCache(path, verify=False).epoch(0)  # without the checksum, the range check catches it


def test_fingerprint_mismatch_teacher_and_dataset(real_cache, fmnist_train_small, tmp_path):
    from edgevit.data import load_dataset
    from edgevit.methods.distill.cache import TeacherCache, write_cache
    from edgevit.methods.distill.trainer import TrainConfig, train_student

    cache = TeacherCache(real_cache[0])
    other_teacher = _student(1)
    with pytest.raises(DataError, match="does not match: its fingerprint differs .*teacher_sha256"):
        cache.check(teacher=other_teacher)
    other_data = load_dataset("fashion-mnist", "train", limit=N_TRAIN + 1)
    with pytest.raises(DataError, match="num_samples: cache has 64, expected 65"):
        cache.check(dataset=other_data)
    with pytest.raises(DataError, match="fingerprint differs"):
        train_student(_student(), out_dir=tmp_path / "r", config=TrainConfig(epochs=1), cache=cache,
                      teacher=other_teacher)
    with pytest.raises(DataError, match="another fingerprint .*topk.*--overwrite"):
        write_cache(other_teacher, fmnist_train_small, _copy_cache(real_cache, tmp_path), epochs=1, topk=2)


def test_topk_not_below_num_classes(teacher, fmnist_train_small, tmp_path):
    from edgevit.methods.distill.cache import write_cache

    with pytest.raises(ConfigError, match="K=10 must be at least 1 and smaller than the number of classes C=10"):
        write_cache(teacher, fmnist_train_small, tmp_path / "c", epochs=1, topk=10)
    assert not (tmp_path / "c").exists()


def test_more_epochs_than_stored(real_cache, tmp_path):
    from edgevit.methods.distill.cache import TeacherCache
    from edgevit.methods.distill.trainer import TrainConfig, train_student

    with pytest.raises(ConfigError, match="cannot train for 3 epochs: the cache .* stores 2 epoch"):
        train_student(_student(), out_dir=tmp_path / "r", config=TrainConfig(epochs=3),
                      cache=TeacherCache(real_cache[0]))


def test_more_than_32767_classes(fmnist_train_small, tmp_path):
    import torch

    from edgevit.methods.distill.cache import write_cache
    from edgevit.models import attach_spec
    from edgevit.spec import InputSpec

    wide = attach_spec(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 40000)),
                       InputSpec((1, 28, 28), (0.286,), (0.353,), num_classes=40000))
    with pytest.raises(ConfigError, match="40000 classes, more than the 32767"):
        write_cache(wide, fmnist_train_small, tmp_path / "c", epochs=1, topk=10)


# ---------------------------------------------------------------------------------------------- training
def test_cache_training_never_calls_the_teacher(real_cache, teacher, fmnist_train_small, tmp_path):
    from edgevit.methods.distill.cache import TeacherCache
    from edgevit.methods.distill.trainer import TrainConfig, train_student

    calls = []
    hook = teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        cfg = TrainConfig(mode="cache", epochs=EPOCHS, batch_size=8, max_steps_per_epoch=1, topk=K)
        rec = train_student(_student(), out_dir=tmp_path / "c", config=cfg, cache=TeacherCache(real_cache[0]),
                            teacher=teacher)  # given only for the fingerprint check
        assert calls == [] and rec["teacher_calls"] == 0 and rec["cache_epochs_used"] == [0, 1]
        online = train_student(_student(), out_dir=tmp_path / "o", config=TrainConfig(**{**cfg.__dict__,
                               "mode": "online"}), teacher=teacher, dataset=fmnist_train_small)
    finally:
        hook.remove()
    assert len(calls) == online["teacher_calls"] == EPOCHS
    # same seeds, same transforms, same top-K targets: the two runs see the same losses
    np.testing.assert_allclose([h["train_loss"] for h in rec["history"]],
                               [h["train_loss"] for h in online["history"]], rtol=1e-4)


def test_resume_continues_with_the_next_epochs_cache(real_cache, tmp_path):
    from edgevit.methods.distill.cache import TeacherCache
    from edgevit.methods.distill.trainer import TrainConfig, train_student

    cache = TeacherCache(real_cache[0])
    cfg = TrainConfig(epochs=2, batch_size=8, max_steps_per_epoch=2)
    full = train_student(_student(), out_dir=tmp_path / "full", config=cfg, cache=cache)
    first = train_student(_student(), out_dir=tmp_path / "part", config=TrainConfig(**{**cfg.__dict__,
                          "stop_after": 1}), cache=cache)
    assert first["cache_epochs_used"] == [0] and not first["finished"]
    second = train_student(_student(5), out_dir=tmp_path / "part", config=cfg, cache=cache, resume=True)
    assert second["start_epoch"] == 1 and second["cache_epochs_used"] == [0, 1] and second["finished"]
    assert second["ranks"][0]["param_sha256"] == full["ranks"][0]["param_sha256"]
    with pytest.raises(ConfigError, match="--resume: .* batch_size=8, now batch_size=4"):
        train_student(_student(), out_dir=tmp_path / "part", config=TrainConfig(**{**cfg.__dict__, "batch_size": 4}),
                      cache=cache, resume=True)


def test_labels_mode_and_saved_student_loads_in_edgevit(fmnist_train_small, fmnist_test_small, tmp_path):
    from edgevit.evaluate import evaluate
    from edgevit.methods.distill.trainer import TrainConfig, train_student
    from edgevit.models import create
    from edgevit.runtimes import load_runtime, open_artifact

    cfg = TrainConfig(mode="labels", epochs=1, batch_size=8, max_steps_per_epoch=2)
    rec = train_student(_student(), out_dir=tmp_path, config=cfg, dataset=fmnist_train_small,
                        test_dataset=fmnist_test_small)
    assert rec["teacher_calls"] == 0 and rec["test_top1"] is not None
    path = tmp_path / "student.safetensors"
    art = open_artifact(path)
    assert art.kind == "torch" and art.spec.input_size == (1, 28, 28)
    model = create(str(path))
    assert model.edgevit_name == "fmnist-vit-tiny"
    res = evaluate(load_runtime("torch", art), fmnist_test_small, batch_size=32)
    assert res["n"] == 64 and abs(res["top1"] - rec["test_top1"]) < 1e-9


def test_timm_tiny_vit_student_at_224(real_cache, tmp_path):
    import torch

    from edgevit.methods.distill.cache import TeacherCache
    from edgevit.methods.distill.trainer import TrainConfig, train_student
    from edgevit.models import create

    torch.manual_seed(0)
    student = create("tiny_vit_5m_224", num_classes=10)
    assert student.edgevit_spec.input_size == (3, 224, 224)
    rec = train_student(student, out_dir=tmp_path, config=TrainConfig(epochs=1, batch_size=2, max_steps_per_epoch=1),
                        cache=TeacherCache(real_cache[0]))
    assert rec["teacher_calls"] == 0 and rec["student"] == "tiny_vit_5m_224"
    back = create(str(tmp_path / "student.safetensors"))
    assert back.head.fc.out_features == 10


# ---------------------------------------------------------------------------------------------- CLI and stage
def test_cli_cache_reuse_train_and_errors(tmp_path, capsys, teacher_available, fmnist_train_small):
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    from edgevit.cli import main

    cache = tmp_path / "cache"
    args = ["distill", "cache", "--teacher", "fmnist-vit", "--epochs", "1", "--topk", "2", "--limit", "32",
            "--out", str(cache), "--json", str(tmp_path / "c.json")]
    assert main(args) == 0
    assert "wrote epochs [0]" in capsys.readouterr().out
    assert main(args) == 0
    assert "reused (fingerprint matches)" in capsys.readouterr().out
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["record_bytes"] == 12 and rec["reused"]
    assert main([*args[:5], "2", *args[6:]]) == 0  # more epochs: the stored one is kept, one more is written
    assert "wrote epochs [1], reused [0]" in capsys.readouterr().out
    assert main(["distill", "train", "--student", "fmnist-vit-tiny", "--cache", str(cache), "--epochs", "1",
                 "--batch-size", "16", "--eval-limit", "32", "--out", str(tmp_path / "run"), "--json",
                 str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "teacher calls 0" in out
    rec = json.loads((tmp_path / "t.json").read_text())
    assert rec["mode"] == "cache" and rec["teacher_calls"] == 0 and rec["history"][0]["test"]["n"] == 32
    assert main(["distill", "train", "--student", "fmnist-vit-tiny", "--cache", str(cache), "--epochs", "3",
                 "--out", str(tmp_path / "run2")]) == 2
    assert "cannot train for 3 epochs: the cache" in capsys.readouterr().err
    assert main(["distill", "cache", "--epochs", "1", "--topk", "10", "--limit", "8", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "smaller than the number of classes" in capsys.readouterr().err


def test_distill_stage_writes_then_reuses_the_cache(tmp_path, teacher_available, fmnist_train_small):
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {"name": "distill-test", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 32},
           "stages": [{"stage": "distill", "teacher": "fmnist-vit", "epochs": 1, "topk": 3, "batch_size": 16,
                       "cache_dir": str(tmp_path / "cache")}, {"stage": "eval"}]}
    recs = pipeline.run(from_raw(raw), tmp_path / "run1")
    d = next(r for r in recs if r["stage"] == "distill")
    assert d["metrics"]["cache"]["reused"] is False and d["metrics"]["teacher_calls_during_training"] == 0
    assert d["artifact"]["kind"] == "torch" and d["artifact"]["path"].endswith("student.safetensors")
    ev = next(r for r in recs if r["stage"] == "eval")
    assert abs(ev["metrics"]["top1"] - d["metrics"]["top1"]) < 1e-9  # eval saw the distilled student
    recs = pipeline.run(from_raw(raw), tmp_path / "run2")
    assert next(r for r in recs if r["stage"] == "distill")["metrics"]["cache"]["reused"] is True
    raw["stages"][0]["topk"] = 2  # another fingerprint: rewritten
    recs = pipeline.run(from_raw(raw), tmp_path / "run3")
    assert next(r for r in recs if r["stage"] == "distill")["metrics"]["cache"]["reused"] is False


def test_distill_stage_student_key_takes_the_run_model_as_teacher(tmp_path, teacher_available):
    """`student:` set: the run's model (the load step's fmnist-vit) is the teacher; the student starts from random
    weights with student_pretrained false; the cache epoch is replayed for a second epoch with replay_cache."""
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    from edgevit import pipeline
    from edgevit.errors import ConfigError
    from edgevit.recipe import from_raw

    raw = {"name": "distill-student", "model": {"name": "fmnist-vit"}, "data": {"limit": 32},
           "stages": [{"stage": "distill", "student": "fmnist-vit-nano", "student_pretrained": False, "epochs": 2,
                       "cache_epochs": 1, "replay_cache": True, "topk": 3, "batch_size": 16, "cache_dir": str(tmp_path / "c")}]}
    recs = pipeline.run(from_raw(raw), tmp_path / "run")
    m = next(r for r in recs if r["stage"] == "distill")["metrics"]
    assert m["teacher"] == "fmnist-vit" and m["student"] == "fmnist-vit-nano"
    assert [h["cache_epoch"] for h in m["history"]] == [0, 0]  # one stored epoch, replayed
    raw["stages"][0].pop("student")
    with pytest.raises(ConfigError, match="set `student:`"):
        pipeline.run(from_raw(raw), tmp_path / "run2")


_KILLABLE_WRITER = """
import sys
from edgevit.data import load_dataset
from edgevit.methods.distill.cache import write_cache
from edgevit.models import create
ds = load_dataset("fashion-mnist", "train", limit=int(sys.argv[2]))
write_cache(create("fmnist-vit"), ds, sys.argv[1], epochs=int(sys.argv[3]), topk=3, batch_size=64)
"""


def test_killed_cache_writer_keeps_finished_epochs(tmp_path, teacher_available):
    """SIGKILL a real cache writer after its first epoch is listed: the rerun reuses that epoch (it does not redo
    finished teacher work) and the result is byte-identical to an uninterrupted write."""
    import json
    import signal
    import subprocess
    import sys
    import time

    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    from edgevit.data import load_dataset
    from edgevit.methods.distill.cache import HEADER, write_cache
    from edgevit.models import create

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE_WRITER, str(killed), "96", "200"])
    header = killed / HEADER
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if header.exists():
            try:
                h = json.loads(header.read_text())
            except ValueError:  # never: the header is replaced atomically
                raise AssertionError("a half-written cache header was visible") from None
            if h["epochs"]:
                assert h["complete"] is False
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    assert proc.wait(60) == -signal.SIGKILL, "the writer finished 200 epochs before it could be killed"
    ds = load_dataset("fashion-mnist", "train", limit=96)
    teacher = create("fmnist-vit")
    rec = write_cache(teacher, ds, killed, epochs=2, topk=3, batch_size=64)
    assert 0 in rec["epochs_reused"] and rec["epochs_written"] == [e for e in (0, 1) if e not in rec["epochs_reused"]]
    fresh = write_cache(teacher, ds, tmp_path / "fresh", epochs=2, topk=3, batch_size=64)
    assert fresh["epochs_written"] == [0, 1]
    for e in (0, 1):
        a = sorted((killed / f"epoch_{e:04d}").glob("*.values"))
        b = sorted((tmp_path / "fresh" / f"epoch_{e:04d}").glob("*.values"))
        assert a and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
