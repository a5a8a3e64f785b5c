"""Issue 16 fault 10: early exits on every timm ViT family with ``.blocks`` (small random models).

Per family, either the exit model reproduces the backbone exactly (its own forward, ``forward_all``'s final head and
the chained export segments all equal the backbone's logits within 1e-5), or attaching exits is refused with a
message naming the family. The rotary-embedding case of the issue (``eva02_tiny_patch14_224``) runs on real
Fashion-MNIST images.
"""

from __future__ import annotations

import pytest
import torch

from edgevit.errors import ConfigError

V = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 5}

SUPPORTED = [  # (family, timm name, kwargs)
    ("vit", "vit_tiny_patch16_224", V),
    ("vit", "vit_tiny_patch16_224", {**V, "reg_tokens": 2}),  # register tokens
    ("vit", "vit_tiny_patch16_224", {**V, "class_token": False, "global_pool": "avg"}),
    ("vit", "deit_tiny_distilled_patch16_224", V),
    ("vit", "deit3_small_patch16_224", V),
    ("vit", "flexivit_small", V),
    ("eva", "eva02_tiny_patch14_224", {**V, "img_size": 28, "patch_size": 7}),  # rotary position embedding
    ("eva", "eva_giant_patch14_224", {**V, "img_size": 28, "patch_size": 7}),
    ("eva", "vit_small_patch16_rope_224", V),
    ("eva", "vit_small_patch16_rope_mixed_224", V),  # one rotary embedding per block
    ("eva", "vit_small_patch16_rope_224", {**V, "num_reg_tokens": 2}),
    ("beit", "beit_base_patch16_224", V),  # shared relative-position bias off, per-block on
    ("beit", "beitv2_base_patch16_224", {**V, "use_shared_rel_pos_bias": True, "use_rel_pos_bias": False}),
    ("vit_relpos", "vit_relpos_small_patch16_224", V),
    ("vit_relpos", "vit_srelpos_small_patch16_224", V),  # shared relative-position table
    ("cait", "cait_xxs24_224", {**V, "depth_token_only": 1}),  # class token only after the blocks
]

REJECTED = [  # (family named in the message, timm name, kwargs); built on the meta device (no weights needed)
    ("convit", "convit_tiny", {"num_classes": 5}),
    ("crossvit", "crossvit_tiny_240", {"num_classes": 5}),
    ("xcit", "xcit_nano_12_p8_224", {"num_classes": 5}),
    ("tnt", "tnt_s_patch16_224", {"num_classes": 5}),
    ("vision_transformer_sam", "samvit_base_patch16", {"num_classes": 5}),
    ("hiera", "hiera_tiny_224", {"num_classes": 5}),
    ("hieradet_sam2", "sam2_hiera_tiny", {"num_classes": 5}),
    ("naflexvit", "naflexvit_base_patch16_gap", {"num_classes": 5}),
    ("mlp_mixer", "mixer_s16_224", {"num_classes": 5}),
    ("pit", "pit_ti_224", {"num_classes": 5}),
    ("levit", "levit_128s", {"num_classes": 5}),
    ("twins", "twins_svt_small", {"num_classes": 5}),
    ("efficientnet", "efficientnet_b0", {"num_classes": 5}),
]


def _exact(backbone, x):
    from edgevit.methods.early_exit import attach_exits

    ee = attach_exits(backbone)
    with torch.inference_mode():
        ref = backbone(x)
        out = ee.forward_all(x, features=True)
        chained = x
        for seg in ee.segments():
            chained = seg(chained)
        for got in (ee(x), out["final"], chained):
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    return ee, out


@pytest.mark.parametrize("family,name,kw", SUPPORTED, ids=[f"{f}-{n}" for f, n, _ in SUPPORTED])
def test_supported_family_exit_model_is_the_backbone(family, name, kw):
    import timm

    torch.manual_seed(0)
    backbone = timm.create_model(name, pretrained=False, **kw).eval()
    with torch.no_grad():  # random init leaves some scales at zero; make every part of the network matter
        for p in backbone.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.randn(2, 3, kw["img_size"], kw["img_size"])
    ee, out = _exact(backbone, x)
    assert ee.family.name == family and ee.describe()["family"] == family
    assert ee.exit_blocks == [1, 2]
    side = kw["img_size"] // kw["patch_size"]
    assert out["exit_features"][0].shape == (2, side * side, kw["embed_dim"])  # prefix tokens split off
    assert out["last_tokens"].shape == (2, side * side, kw["embed_dim"])
    assert all(z.shape == (2, 5) for z in out["exits"])


@pytest.mark.parametrize("family,name,kw", REJECTED, ids=[n for _, n, _ in REJECTED])
def test_unsupported_family_is_refused_by_name(family, name, kw):
    import timm

    from edgevit.methods.early_exit import attach_exits

    with torch.device("meta"):
        backbone = timm.create_model(name, pretrained=False, **kw)
    with pytest.raises(ConfigError, match=rf"timm family '{family}' \({type(backbone).__name__}\) is not supported"
                                          r".*Supported families: vit: .*eva: .*beit: .*vit_relpos: .*cait: "):
        attach_exits(backbone, inplace=True)


def test_patch_dropout_is_refused():
    import timm

    from edgevit.methods.early_exit import attach_exits

    for name in ("vit_tiny_patch16_224", "eva02_tiny_patch14_224"):
        backbone = timm.create_model(name, pretrained=False, patch_drop_rate=0.25, **{**V, "patch_size": 4})
        with pytest.raises(ConfigError, match="patch dropout"):
            attach_exits(backbone, inplace=True)


def test_eva02_rotary_exits_on_real_images(fmnist_test_small):
    """The issue's backbone (eva02_tiny_patch14_224, rotary embeddings, 12 blocks) with a 10-class head, on real
    Fashion-MNIST images preprocessed by its own input spec: exits attach and the final output is the backbone's."""
    from edgevit.data import preprocess
    from edgevit.models import create

    backbone = create("eva02_tiny_patch14_224", num_classes=10)
    x = torch.from_numpy(preprocess(fmnist_test_small.images[:2], backbone.edgevit_spec))
    ee, out = _exact(backbone, x)
    assert ee.family.name == "eva" and ee.exit_blocks == list(range(4, 12))
    assert out["exit_features"][0].shape == (2, 256, 192)


def test_headless_backbone_is_refused_from_the_cli(capsys, tmp_path):
    """``early-exit train --model eva02_tiny_patch14_224`` (timm builds it without a head): a clear error, exit 2,
    no traceback (it was TypeError 'NoneType' object is not callable)."""
    from edgevit.cli import main

    rc = main(["early-exit", "train", "--model", "eva02_tiny_patch14_224", "--steps", "1", "--limit", "16",
               "--holdout", "16", "--batch-size", "4", "--out", str(tmp_path / "ee")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "eva02_tiny_patch14_224: it has no classification head (num_classes=0" in err
