import pytest
import torch

from edgevit.errors import ModelLoadError
from edgevit.models import MODELS, count_params, create, read_state_dict, save_checkpoint


def test_registered_models_listed():
    assert {"fmnist-vit", "fmnist-vit-tiny", "fmnist-vit-nano"} <= set(MODELS.names())


def test_fmnist_vit_architecture_has_12_blocks():
    from edgevit.models import fmnist

    m = fmnist.build("fmnist-vit")
    assert len(m.blocks) == 12
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert m.patch_embed.num_patches == 49


def test_teacher_loads_offline_by_name(teacher_available):
    if not teacher_available:
        pytest.skip("packaged fmnist-vit weights not present (train with scripts/train_teacher.py)")
    m = create("fmnist-vit")
    assert m.edgevit_spec.input_size == (1, 28, 28)
    assert not m.training


def test_timm_model_random_init_has_spec():
    m = create("vit_tiny_patch16_224")
    assert m.edgevit_spec.input_size == (3, 224, 224)
    assert m.edgevit_spec.interpolation == "bicubic"


def test_unknown_model_name_suggests():
    with pytest.raises(ModelLoadError, match="unknown model 'fmnist-vitt'.*Did you mean 'fmnist-vit'"):
        create("fmnist-vitt")


def test_safetensors_roundtrip_with_arch_metadata(tmp_path, tiny_model):
    p = save_checkpoint(tiny_model, tmp_path / "w.safetensors")
    m2 = create(str(p))  # arch read from the file's metadata
    for (k, a), b in zip(tiny_model.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert m2.edgevit_spec == tiny_model.edgevit_spec


def test_pt_checkpoint_loads_with_weights_only(tmp_path, tiny_model):
    p = tmp_path / "w.pt"
    torch.save({"state_dict": tiny_model.state_dict()}, p)
    m2 = create("fmnist-vit-tiny", checkpoint=p)
    assert count_params(m2) == count_params(tiny_model)


def test_checkpoint_with_wrong_keys_lists_them(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    state["extra.weight"] = torch.zeros(3)
    state.pop("head.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError) as e:
        create("fmnist-vit-tiny", checkpoint=tmp_path / "bad.pt")
    msg = str(e.value)
    assert "1 missing keys (head.weight)" in msg and "1 unexpected keys (extra.weight)" in msg


def test_checkpoint_of_other_architecture_shape_mismatch(tmp_path, tiny_model):
    torch.save(tiny_model.state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ModelLoadError, match="shape mismatches"):
        create("fmnist-vit", checkpoint=tmp_path / "tiny.pt")


def test_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("this is not a checkpoint")
    with pytest.raises(ModelLoadError, match="is not a valid checkpoint") as err:
        read_state_dict(bad)
    assert "weights_only=False" not in str(err.value)  # torch's advice would run code from the file: never relayed
    bad2 = tmp_path / "x.safetensors"
    bad2.write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        create("fmnist-vit-tiny", checkpoint=bad2)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pt")


def test_checkpoint_without_arch_needs_arch(tmp_path, tiny_model):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelLoadError, match="--arch"):
        create(str(tmp_path / "plain.safetensors"))
    m = create(str(tmp_path / "plain.safetensors"), arch="fmnist-vit-tiny")
    assert count_params(m) == count_params(tiny_model)
