from pathlib import Path

import pytest
import yaml

from edgevit.errors import ConfigError
from edgevit.recipe import apply_overrides, from_raw, load_raw, load_recipe

QUICKSTART = "examples/recipes/minimal.yaml"


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


# ------------------------------------------------------------------------------------------ one declaration per option
def test_set_validates_like_the_cli():
    """`--set stages.3.batch=[0]` fails validation (the CLI rejects `--batch 0`) with the key path and the bound."""
    base = load_raw(QUICKSTART)
    with pytest.raises(ConfigError, match=r"^stages\.3\.batch\.0: must be ≥ 1, got 0$"):
        from_raw(apply_overrides(base, ["stages.3.batch=[0]"]))
    with pytest.raises(ConfigError, match=r"stages\.3\.duration_s: must be > 0, got -1"):
        from_raw(apply_overrides(base, ["stages.3.duration_s=-1"]))
    r = from_raw(apply_overrides(base, ["stages.3.batch=8"]))  # a bare scalar is a one-item list
    assert r.stages[3].config.batch == [8]


def test_literal_and_cross_field_errors_name_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"stages\.0\.precision: 'int4' is not allowed; allowed values: 'fp32', 'fp16'"):
        from_raw(raw(stages=[{"stage": "export_openvino", "precision": "int4"}]))
    with pytest.raises(ConfigError, match=r"stages\.0\.if_form: the If form is one ONNX graph; set format: onnx"):
        from_raw(raw(stages=[{"stage": "early_exit", "if_form": True, "format": "openvino"}]))
    with pytest.raises(ConfigError, match=r"stages\.0\.pretrained|stages\.0: unknown key 'pretrained'"):
        from_raw(raw(stages=[{"stage": "eval", "pretrained": True}]))
    with pytest.raises(ConfigError, match=r"model\.pretrained: expected true or false, got int 1"):
        from_raw(raw(model={"name": "fmnist-vit-tiny", "pretrained": 1}))


def test_early_exit_stage_takes_every_train_config_key():
    from edgevit.methods.early_exit.config import TrainConfig
    from edgevit.stages import STAGES

    cls = STAGES.get("early_exit").Config
    assert set(TrainConfig.model_fields) <= set(cls.model_fields)
    r = from_raw(raw(stages=[{"stage": "early_exit", "alpha": 0.5, "temperature": 4.0, "beta_hete": 0.1,
                              "beta_homo": 0.2, "steps": 3, "stage2_steps": 7}]))
    tc = r.stages[0].config.train_config()
    assert isinstance(tc, TrainConfig)
    assert (tc.alpha, tc.temperature, tc.beta_hete, tc.beta_homo) == (0.5, 4.0, 0.1, 0.2)
    assert (tc.stage1_steps, tc.stage2_steps) == (3, 7)
    with pytest.raises(ConfigError, match=r"stages\.0\.alpha: must be ≤ 1, got 1\.5"):
        from_raw(raw(stages=[{"stage": "early_exit", "alpha": 1.5}]))


def test_distill_stage_takes_every_train_and_augment_config_key():
    """Every distillation TrainConfig / AugmentConfig key is a recipe key and reaches the trainer unchanged."""
    from edgevit.methods.distill.augment import AugmentConfig
    from edgevit.methods.distill.trainer import TrainConfig
    from edgevit.stages import STAGES

    cls = STAGES.get("distill").Config
    assert set(TrainConfig.model_fields) <= set(cls.model_fields)
    assert set(AugmentConfig.model_fields) <= set(cls.model_fields)
    train = {"mode": "online", "epochs": 3, "batch_size": 16, "lr": 2e-3, "min_lr": 1e-6, "weight_decay": 0.01,
             "warmup_epochs": 0.5, "clip_grad": 1.0, "label_smoothing": 0.2, "topk": 5, "seed": 7, "eval_limit": 100,
             "eval_batch_size": 50, "stop_after": 2, "max_steps_per_epoch": 4, "replay_cache": True}
    augment = {"crop_padding": 1, "hflip_prob": 0.0, "randaug_n": 1, "randaug_m": 5.0, "randaug_mstd": 0.0,
               "randaug_prob": 1.0, "randaug_ops": ["rotate", "invert"], "erase_prob": 0.0,
               "erase_area": [0.1, 0.2], "erase_aspect": [0.5, 2.0], "mixup_alpha": 0.2, "cutmix_alpha": 1.0,
               "mix_prob": 0.5, "switch_prob": 0.25}
    assert set(train) == set(TrainConfig.model_fields) and set(augment) == set(AugmentConfig.model_fields)
    r = from_raw(raw(stages=[{"stage": "distill", "teacher": "fmnist-vit", **train, **augment}]))
    c = r.stages[0].config
    tc, ac = c.train_config(), c.augment_config()
    assert isinstance(tc, TrainConfig) and tc.model_dump() == train
    assert isinstance(ac, AugmentConfig) and ac.to_dict() == {**augment, "version": 1}
    assert ac.randaug_ops == ("rotate", "invert") and ac.erase_area == (0.1, 0.2)  # tuples, as the library's
    assert r.stages[0].to_dict() == {"stage": "distill", **c.to_dict()}  # round trip for the run record
    assert from_raw(r.to_dict()).stages[0].config == c


@pytest.mark.parametrize("key, value, message", [
    ("lr", "fast", r"stages\.0\.lr: expected a number, got str 'fast'"),
    ("epochs", 2.5, r"stages\.0\.epochs: expected an integer, got float 2\.5"),
    ("clip_grad", True, r"stages\.0\.clip_grad: expected a number, got bool True"),
    ("label_smoothing", 1.0, r"stages\.0\.label_smoothing: must be < 1, got 1\.0"),
    ("eval_batch_size", 0, r"stages\.0\.eval_batch_size: must be ≥ 1, got 0"),
    ("mode", "kd", r"stages\.0\.mode: 'kd' is not allowed; allowed values: 'cache', 'online', 'labels'"),
    ("randaug_ops", ["rotate", "color"],
     r"stages\.0\.randaug_ops\.1: 'color' is not allowed; allowed values: 'auto_contrast', .*'translate_y'"),
    ("erase_area", [0.5, 0.1], r"stages\.0\.erase_area: expected 0 < min ≤ max < 1, got \[0\.5, 0\.1\]"),
    ("mix_prob", 2, r"stages\.0\.mix_prob: must be ≤ 1, got 2"),
])
def test_distill_stage_errors_name_the_key_path(key, value, message):
    with pytest.raises(ConfigError, match=message):
        from_raw(raw(stages=[{"stage": "distill", key: value}]))


def test_distill_library_configs_raise_config_error_with_key():
    from edgevit.methods.distill.augment import AugmentConfig
    from edgevit.methods.distill.trainer import TrainConfig

    with pytest.raises(ConfigError, match=r"^train\.batch_size: must be ≥ 1, got 0$"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"^augment\.randaug_m: must be ≤ 10, got 11"):
        AugmentConfig(randaug_m=11)
    with pytest.raises(ConfigError, match=r"augment: unknown key 'hflip'; allowed keys: crop_padding, hflip_prob"):
        AugmentConfig.from_dict({"hflip": 0.5, "version": 1})
    a = AugmentConfig(randaug_ops=("rotate",))
    assert AugmentConfig.from_dict(a.to_dict()) == a and hash(AugmentConfig.from_dict(a.to_dict())) == hash(a)
    with pytest.raises(ConfigError, match=r"augment\.hflip_prob"):
        a.hflip_prob = 0.1  # frozen: it is part of a cache's fingerprint
    a.validate()


def test_library_config_raises_config_error_with_key():
    from edgevit.methods.quantize import QuantizeConfig

    with pytest.raises(ConfigError, match=r"quantize\.calib_samples: must be ≥ 1, got 0"):
        QuantizeConfig(calib_samples=0)
    c = QuantizeConfig(ignored_types=("Softmax",))
    assert c.ignored_types == ["Softmax"]
    with pytest.raises(ConfigError, match=r"quantize\.budget: expected a number, got str 'x'"):
        c.budget = "x"
    assert c.replace(backend="onnxruntime", calibration_method="entropy").calibration_method == "entropy"


def test_recipe_schema_covers_quickstart_and_every_stage():
    from edgevit.recipe import recipe_model, recipe_schema
    from edgevit.stages import STAGES

    schema = recipe_schema()
    assert set(schema["properties"]) == {"version", "name", "model", "data", "stages", "runtimes", "targets",
                                         "output"}
    assert schema["additionalProperties"] is False and "model" in schema["required"]
    union = next(a for a in schema["properties"]["stages"]["items"]["anyOf"] if "discriminator" in a)
    assert union["discriminator"]["propertyName"] == "stage"
    assert set(union["discriminator"]["mapping"]) == set(STAGES.names())
    quick = load_raw(QUICKSTART)
    defs = schema["$defs"]
    for entry in quick["stages"]:
        d = defs[union["discriminator"]["mapping"][entry["stage"]].split("/")[-1]]
        assert d["additionalProperties"] is False and set(entry) <= set(d["properties"])
    assert defs["stage_profile"]["properties"]["batch"]["items"]["minimum"] == 1
    assert defs["stage_early_exit"]["properties"]["alpha"]["maximum"] == 1
    recipe_model().model_validate(quick)  # the model the schema comes from accepts the shipped recipe
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(quick, schema)
    bad = apply_overrides(quick, ["stages.1.opst=17"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_typo_still_gets_key_path_and_allowed_keys():
    bad = apply_overrides(load_raw(QUICKSTART), ["stages.1.opst=17"])
    with pytest.raises(ConfigError, match=r"stages\.1: unknown key 'opst'; allowed keys: opset, dynamic_batch"):
        from_raw(bad)


# ------------------------------------------------------------------------- coercion as a user meets it: --set + CLI
def test_set_values_are_read_as_yaml_and_typed():
    r = load_recipe(QUICKSTART, ["stages.3.batch=[1, 16]", "stages.1.simplify=false", "stages.1.tolerance=1e-3",
                                 "stages.3.duration_s=1", "data.limit=null", "stages.2.runtime=openvino",
                                 "targets=[raspberry-pi-5]"])
    exp, prof = r.stages[1].config, r.stages[3].config
    assert prof.batch == [1, 16] and all(type(b) is int for b in prof.batch)
    assert exp.simplify is False and exp.opset == 18  # untouched keys keep the file's values
    assert exp.tolerance == 0.001 and type(exp.tolerance) is float  # YAML 1.2 float without a dot
    assert prof.duration_s == 1.0 and type(prof.duration_s) is float  # an integer is a valid float
    assert r.data.limit is None and r.stages[2].config.runtime == "openvino" and r.targets == ["raspberry-pi-5"]
    assert load_recipe(QUICKSTART, ["stages.3.batch=8"]).stages[3].config.batch == [8]  # one value for a list


@pytest.mark.parametrize("override, pattern", [
    ("stages.1.opset='17'", r"^stages\.1\.opset: expected an integer, got str '17'"),  # quoted: a string
    ("stages.1.simplify=maybe", r"^stages\.1\.simplify: expected .*(true|bool).*'maybe'"),
    ("stages.1.simplify=1", r"^stages\.1\.simplify: expected .*(true|bool).*1"),
    ("stages.3.duration_s=fast", r"^stages\.3\.duration_s: expected .*(number|float).*'fast'"),
    ("data.limit=many", r"^data\.limit: expected .*int.*'many'"),
    ("model.pretrained=3", r"^model\.pretrained: expected .*(true|bool).*3"),
    ("stages.1.tolerance=[1]", r"^stages\.1\.tolerance: expected .*(number|float).*\[1\]"),
    ("stages.0.runtime=[a]", r"^stages\.0\.runtime: expected .*str.*\['a'\]"),
])
def test_wrong_type_via_set_names_key_path_and_expected_type(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_recipe(QUICKSTART, [override])


def test_unknown_target_lists_allowed_and_close_matches():
    with pytest.raises(ConfigError, match=r"^targets\.0: unknown hardware profile 'jetson-orin-nano'\. "
                                          r"Allowed: .*raspberry-pi-5.*Did you mean 'jetson-orin-nano-8gb'"):
        load_recipe(QUICKSTART, ["targets=[jetson-orin-nano]"])


def _compress_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgevit", "compress", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_cli_dry_run_plan_shows_typed_overrides(tmp_path):
    r = _compress_cli(QUICKSTART, "--dry-run", "--out", str(tmp_path / "never"), "--set", "stages.3.batch=[1,16]",
                      "--set", "stages.1.opset=17", "--set", "stages.1.simplify=false")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.startswith("  ") and ln.split()[1][:2].isdigit()}
    assert list(lines) == ["00_load", "01_eval", "02_export_onnx", "03_eval", "04_profile", "05_report"]
    assert all(ln.split()[0] == "run" for ln in lines.values())  # a new run directory: every stage runs
    assert '"opset": 17' in lines["02_export_onnx"] and '"simplify": false' in lines["02_export_onnx"]
    assert '"batch": [1, 16]' in lines["04_profile"] and '"runtime": "onnxruntime"' in lines["03_eval"]
    assert not (tmp_path / "never").exists()  # a dry run writes nothing


def test_cli_recipe_typo_reports_key_path_and_allowed_keys(tmp_path):
    """The README's promise: `stages.1: unknown key 'opst'; allowed keys: opset, ...`, exit code 2, nothing run."""
    bad = tmp_path / "typo.yaml"
    text = yaml.safe_load(Path(QUICKSTART).read_text())
    text["stages"][1] = {"stage": "export_onnx", "opst": 17}
    bad.write_text(yaml.safe_dump(text))
    r = _compress_cli(str(bad), "--dry-run")
    assert r.returncode == 2 and r.stdout == ""
    assert "stages.1: unknown key 'opst'; allowed keys: opset, " in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("override, expected", [
    ("stages.0.stage=evaluate", "stages.0.stage: unknown stage 'evaluate'. Allowed: "),
    ("runtimes=[onnx]", "runtimes.0: unknown runtime 'onnx'. Allowed: "),
    ("stages.2.runtime=openvion", "stages.2.runtime: unknown runtime 'openvion'. Allowed: "),
    ("data.batch_size=1.5", "data.batch_size: expected an integer"),
    ("modle.name=x", "unknown top-level key(s) 'modle'; allowed keys: version, name, model"),
])
def test_cli_recipe_errors_name_key_path_and_allowed_values(override, expected):
    r = _compress_cli(QUICKSTART, "--dry-run", "--set", override)
    assert r.returncode == 2, r.stdout
    assert expected in r.stderr and "Traceback" not in r.stderr
    if "Allowed" in expected:  # the allowed values follow, and a close match when there is one
        allowed = r.stderr.split("Allowed: ", 1)[1]
        assert ("export_onnx" in allowed) if ".stage:" in expected else ("onnxruntime" in allowed)
    if "openvion" in override:
        assert "Did you mean 'openvino'" in r.stderr


@pytest.mark.parametrize("name", ["quickstart", "edge", "minimal"])
def test_shipped_recipes_are_valid_and_chain(name):
    """Every shipped recipe loads, and its stages chain (the static walk of `compress --dry-run`); quickstart and
    edge take the teacher through distill → early_exit → quantize (an INT8 cascade) → exports → eval → report."""
    from edgevit import pipeline
    from edgevit.recipe import load_recipe

    steps = pipeline.plan(load_recipe(f"examples/recipes/{name}.yaml", []))
    names = [s["stage"] for s in steps]
    assert names[-1] == "report"
    if name != "minimal":
        assert names.index("distill") < names.index("early_exit") < names.index("quantize")
        q = steps[names.index("quantize")]
        assert q["reads"] == ["cascade:onnx"] and q["hands_on"] == ["cascade:onnx"]
        assert {"export_onnx", "export_ort_mobile", "export_openvino", "export_tensorrt"} <= set(names)
        # the TensorRT bundle takes the float cascade (TensorRT rejects onnxruntime's asymmetric uint8 Q/DQ)
        assert names.index("early_exit") < names.index("export_tensorrt") < names.index("quantize")
        assert steps[names.index("export_tensorrt")]["reads"] == ["cascade:onnx"]
    if name == "edge":  # every graph of the final cascade → TVM
        tvm = steps[names.index("export_tvm")]
        assert names.index("quantize") < names.index("export_tvm") and tvm["reads"] == ["cascade:onnx"]
