import pytest
import yaml

from edgevit.errors import ConfigError
from edgevit.recipe import apply_overrides, from_raw, load_recipe

QUICKSTART = "examples/recipes/quickstart.yaml"


def raw(**kw):
    base = {"name": "t", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 16},
            "stages": [{"stage": "eval"}, {"stage": "export_onnx"}]}
    base.update(kw)
    return base


def test_quickstart_recipe_is_valid():
    r = load_recipe(QUICKSTART)
    assert [s.stage for s in r.stages] == ["eval", "export_onnx", "eval", "profile", "report"]
    assert r.stages[3].config.batch == [1, 8]
    assert r.model.name == "fmnist-vit"


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown top-level key.*'modle'.*allowed keys: version, name, model"):
        from_raw(raw(modle={}))


def test_unknown_stage_key_has_path_and_allowed_keys():
    with pytest.raises(ConfigError, match=r"stages\.1: unknown key 'opst'; allowed keys: opset, dynamic_batch"):
        from_raw(raw(stages=[{"stage": "eval"}, {"stage": "export_onnx", "opst": 17}]))


def test_wrong_type_names_path():
    with pytest.raises(ConfigError, match=r"stages\.1\.opset: expected an integer, got str 'seventeen'"):
        from_raw(raw(stages=[{"stage": "eval"}, {"stage": "export_onnx", "opset": "seventeen"}]))
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer"):
        from_raw(raw(data={"batch_size": 1.5}))
    with pytest.raises(ConfigError, match=r"stages\.0\.batch\.1: expected an integer"):
        from_raw(raw(stages=[{"stage": "profile", "batch": [1, "x"]}]))


def test_unknown_stage_lists_allowed():
    with pytest.raises(ConfigError, match=r"stages\.0\.stage: unknown stage 'evaluate'\. Allowed: .*eval.*export_onnx"):
        from_raw(raw(stages=[{"stage": "evaluate"}]))


def test_unknown_runtime_lists_allowed():
    with pytest.raises(ConfigError, match=r"runtimes\.0: unknown runtime 'onnx'\. Allowed: .*onnxruntime"):
        from_raw(raw(runtimes=["onnx"]))
    with pytest.raises(ConfigError, match=r"stages\.0\.runtime: unknown runtime 'ort'"):
        from_raw(raw(stages=[{"stage": "eval", "runtime": "ort"}]))


def test_missing_model_and_empty_stages():
    r = raw()
    del r["model"]
    with pytest.raises(ConfigError, match="model: required key is missing"):
        from_raw(r)
    with pytest.raises(ConfigError, match="stages: expected a non-empty list"):
        from_raw(raw(stages=[]))


def test_limit_must_be_positive():
    with pytest.raises(ConfigError, match=r"data\.limit: must be a positive"):
        from_raw(raw(data={"limit": 0}))


def test_overrides_and_hash_changes():
    base = raw()
    r1 = from_raw(base)
    r2 = from_raw(apply_overrides(base, ["stages.1.opset=17", "data.limit=32"]))
    assert r2.stages[1].config.opset == 17 and r2.data.limit == 32
    h1, h2 = r1.stage_hashes(), r2.stage_hashes()
    assert h1[0] != h2[0]  # data changed → every stage hash changes
    r3 = from_raw(apply_overrides(base, ["stages.1.opset=17"]))
    h3 = r3.stage_hashes()
    assert h3[0] == h1[0] and h3[1] != h1[1]  # only the changed stage and later ones differ


def test_bad_override():
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides(raw(), ["stages.1.opset"])
    with pytest.raises(ConfigError, match="not an index of a list of 2 entries"):
        apply_overrides(raw(), ["stages.5.opset=3"])


def test_invalid_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(p)


def test_resolved_recipe_round_trips():
    r = load_recipe(QUICKSTART)
    again = from_raw(yaml.safe_load(r.to_yaml()))
    assert again.to_dict() == r.to_dict()
    assert again.stage_hashes() == r.stage_hashes()
