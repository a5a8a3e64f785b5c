import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgevit.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgevit", *args], capture_output=True, text=True, timeout=300, check=False)


def test_import_is_lean():
    code = ("import sys, edgevit, edgevit.cli; edgevit.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'openvino', 'tvm', 'tensorrt', 'timm', 'nncf') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_cli_commands() -> set[str]:
    """Top-level commands named in the README's "CLI reference" table (first word after `edgevit`)."""
    text = README.read_text()
    table = text[text.index("## CLI reference"):].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `edgevit ([a-z-]+)", table, flags=re.MULTILINE))


def test_help_lists_commands():
    """`edgevit --help` lists exactly the commands of the README's CLI reference, each with a one-line help text,
    and every command's own --help works."""
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    listed = {}
    section = r.stdout.split("COMMAND\n", 2)[-1].split("\noptions:")[0]
    for line in section.splitlines():
        m = re.match(r"^    ([a-z][a-z-]*)\s{2,}(\S.*)$", line)
        if m:
            listed[m.group(1)] = m.group(2)
    documented = _readme_cli_commands()
    assert documented >= {"list", "eval", "export", "profile", "quantize", "distill", "early-exit", "compress"}
    assert set(listed) == documented, f"--help lists {sorted(listed)}, README documents {sorted(documented)}"
    assert all(len(h) > 10 for h in listed.values()), listed
    assert "--version" in r.stdout
    v = run_cli("--version")
    assert v.returncode == 0 and importlib.metadata.version("edgevit") in v.stdout + v.stderr
    for cmd in sorted(documented):
        sub = run_cli(cmd, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: edgevit {cmd}"), (cmd, sub.stderr[-500:])


def test_list_commands(capsys):
    assert main(["list", "stages"]) == 0
    assert "export_onnx" in capsys.readouterr().out
    assert main(["list", "runtimes"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "onnxruntime" in out
    assert main(["list", "models"]) == 0
    assert "fmnist-vit-tiny" in capsys.readouterr().out
    assert main(["list", "targets"]) == 0
    assert "jetson-orin-nano-8gb" in capsys.readouterr().out


def _torch_top1(model_name: str, limit: int) -> tuple[float, float]:
    """top-1/top-5 computed here, independently of edgevit.evaluate: the model on the first ``limit`` test images."""
    import numpy as np
    import torch

    from edgevit.data import load_dataset, preprocess
    from edgevit.models import create

    model = create(model_name).eval()
    data = load_dataset("fashion-mnist", "test", limit=limit)
    with torch.inference_mode():
        logits = model(torch.from_numpy(preprocess(data.images, model.edgevit_spec))).numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    labels = np.asarray(data.labels)
    return float((top5[:, 0] == labels).mean()), float((top5 == labels[:, None]).any(axis=1).mean())


def test_eval_export_eval_profile_json(tmp_path, fmnist_test_small, teacher_available, capsys):
    """The README's eval → export → eval exported → profile chain on the shipped teacher, checking the values."""
    if not teacher_available:
        pytest.skip("the packaged fmnist-vit teacher weights are missing")
    limit = 50
    onnx_path = tmp_path / "m.onnx"
    assert main(["eval", "--model", "fmnist-vit", "--limit", str(limit), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    ev = json.loads((tmp_path / "e.json").read_text())
    top1, top5 = _torch_top1("fmnist-vit", limit)
    assert ev["n"] == limit and ev["runtime"] == "torch" and ev["seconds"] > 0
    assert ev["top1"] == pytest.approx(top1, abs=1e-12) and ev["top5"] == pytest.approx(top5, abs=1e-12)
    assert ev["top1"] > 0.7  # the shipped teacher is ~92 % on the test set; 50 images cannot fall this far
    assert f"top-1 {top1 * 100:.2f}%" in out and f"n={limit}" in out

    assert main(["export", "onnx", "--model", "fmnist-vit", "--out", str(onnx_path), "--parity-samples", "16",
                 "--json", str(tmp_path / "x.json")]) == 0
    ex = json.loads((tmp_path / "x.json").read_text())
    assert ex["n"] == 16 and ex["opset"] == 18
    assert 0 <= ex["max_abs_diff"] < 1e-3 and 0 <= ex["mean_abs_diff"] <= ex["max_abs_diff"]
    assert ex["top1_agreement"] == 1.0 and ex["cosine"] > 0.99999
    assert Path(ex["path"]).resolve() == onnx_path.resolve() and ex["file_size"] == onnx_path.stat().st_size

    assert main(["eval", "--artifact", str(onnx_path), "--runtime", "onnxruntime", "--limit", str(limit),
                 "--json", str(tmp_path / "e2.json")]) == 0
    ev2 = json.loads((tmp_path / "e2.json").read_text())
    assert ev2["n"] == limit and ev2["runtime"] == "onnxruntime"
    assert abs(ev2["top1"] - top1) <= 1 / limit  # fp32 export: at most one borderline image may flip

    min_runs = 10
    assert main(["profile", str(onnx_path), "--runtime", "onnxruntime", "--batch", "1,2", "--duration", "0.1",
                 "--warmup", "0.05", "--json", str(tmp_path / "p.json")]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    rows = doc["results"]
    assert [(r["runtime"], r["batch"]) for r in rows] == [("onnxruntime", 1), ("onnxruntime", 2)]
    for r in rows:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"], r
        assert r["min_ms"] <= r["mean_ms"] and r["runs"] >= min_runs
        assert r["throughput"] == pytest.approx(r["batch"] * 1000.0 / r["median_ms"], rel=1e-6)
        assert r["system"]["cpu"]["logical_cores"] >= 1 and r["system"]["versions"]["onnxruntime"]


def test_compress_dry_run_prints_plan(capsys):
    assert main(["compress", "examples/recipes/minimal.yaml", "--dry-run", "--out", "/tmp/never"]) == 0
    out = capsys.readouterr().out
    assert "00_load" in out and "02_export_onnx" in out and "05_report" in out


def test_compress_bad_recipe_exit_code_and_message(tmp_path):
    r = run_cli("compress", "examples/recipes/minimal.yaml", "--dry-run", "--set", "stages.1.opset=high")
    assert r.returncode == 2
    assert "stages.1.opset: expected an integer, got str 'high'" in r.stderr


def test_unknown_model_error_exit_code():
    r = run_cli("eval", "--model", "no-such-model", "--limit", "1")
    assert r.returncode == 2 and "unknown model 'no-such-model'" in r.stderr


def test_missing_dataset_dir_error(capsys, tmp_path):
    assert main(["eval", "--model", "fmnist-vit-tiny", "--data-dir", str(tmp_path / "none"), "--limit", "5"]) == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_limit_must_be_positive(bad):
    with pytest.raises(SystemExit):
        main(["eval", "--model", "fmnist-vit-tiny", "--limit", bad])


def test_recipe_schema_command(tmp_path, capsys):
    out = tmp_path / "schema" / "recipe.schema.json"
    assert main(["recipe", "schema", "--out", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["title"] == "edgevit recipe" and "stages" in schema["properties"]
    assert "stage_quantize" in schema["$defs"] and "calib_samples" in schema["$defs"]["stage_quantize"]["properties"]
    capsys.readouterr()
    assert main(["recipe", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema


def test_set_batch_zero_fails_dry_run_like_the_cli():
    r = run_cli("compress", "examples/recipes/minimal.yaml", "--dry-run", "--set", "stages.3.batch=[0]")
    assert r.returncode == 2 and "stages.3.batch.0: must be ≥ 1, got 0" in r.stderr
    r = run_cli("profile", "--model", "fmnist-vit-tiny", "--batch", "0")
    assert r.returncode == 2 and "expected positive integers" in r.stderr


def test_list_stages_verbose_shows_config_keys(capsys):
    assert main(["list", "stages", "-v"]) == 0
    out = capsys.readouterr().out
    assert "    batch: list of int = [1, 8]  batch sizes" in out
    assert "    alpha: float = 0.3  stage-2 weight of the KD term" in out  # early_exit takes every TrainConfig key
    assert "    backend: 'openvino' | 'onnxruntime' | 'nncf-onnx' = 'openvino'" in out


def test_generated_flags_match_the_config_model():
    from edgevit.cli import build_parser
    from edgevit.cli.early_exit import cmd_train  # noqa: F401  (the command the flags feed)
    from edgevit.cli.quantize import config_from_args
    from edgevit.errors import ConfigError

    p = build_parser()
    a = p.parse_args(["quantize", "--model", "m", "--out", "o", "--calib-method", "percentile", "--limit", "5",
                      "--no-per-channel", "--allow-int8", "softmax", "--runtimes", "onnxruntime,openvino",
                      "--ignore-types", "Add", "Mul", "--sq-alpha", "0.6"])
    c = config_from_args(a)
    assert (c.calibration_method, c.eval_limit, c.per_channel, c.guard_softmax, c.guard_gelu) == \
        ("percentile", 5, False, False, True)
    assert c.runtimes == ["onnxruntime", "openvino"] and c.ignored_types == ["Add", "Mul"]
    assert c.smooth_quant_alpha == 0.6
    with pytest.raises(ConfigError, match=r"edgevit quantize: --sq-alpha: must be ≤ 1, got 2\.0"):
        config_from_args(p.parse_args(["quantize", "--model", "m", "--out", "o", "--sq-alpha", "2"]))
    with pytest.raises(SystemExit):
        p.parse_args(["quantize", "--model", "m", "--out", "o", "--calib-samples", "0"])
    with pytest.raises(SystemExit):
        p.parse_args(["quantize", "--model", "m", "--out", "o", "--backend", "tflite"])
    t = p.parse_args(["early-exit", "train", "--model", "m", "--out", "o", "--alpha", "0.5", "--temperature", "3",
                      "--beta-homo", "0.2", "--steps", "4", "--stage2-steps", "9"])
    assert (t.alpha, t.temperature, t.beta_homo, t.steps, t.stage2_steps) == (0.5, 3.0, 0.2, 4, 9)


def _imported_modules(path, package):
    """Absolute names of the modules a source file imports (relative imports resolved against ``package``)."""
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]  # `from edgevit import cli`
    return names


def test_no_library_module_imports_the_cli():
    from pathlib import Path

    import edgevit

    root = Path(edgevit.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[:2] == ["edgevit", "cli"] or parts == ["edgevit", "__main__"]:
            continue  # the CLI floor itself, and `python -m edgevit` which runs it
        package = ".".join(parts[:-1])  # what `from . import x` means, for a module and for an __init__
        bad = [m for m in _imported_modules(path, package) if m == "edgevit.cli" or m.startswith("edgevit.cli.")]
        if bad:
            offenders.append(f"{rel}: {', '.join(sorted(set(bad)))}")
    assert offenders == []
    # and the checker sees relative and absolute forms
    probe = root / "formats" / "onnx" / "cli.py"
    assert "edgevit.format_registry.ExportCommand" in _imported_modules(probe, "edgevit.formats.onnx")


# `edgevit export X --help` on main before the export commands became declarations (flags in order; required
# flags; choices; defaults other than None/False) — the declarations must keep every one of them
_EXPORT_FLAGS = {
    "onnx": (["--model", "--checkpoint", "--arch", "--pretrained", "--out", "--opset", "--static-batch",
              "--no-simplify", "--tolerance", "--parity-samples", "--data", "--data-dir", "--split", "--limit",
              "--json", "--tower", "--classes", "--gallery"],
             ["--model", "--out"], {"--tower": ["image", "text", "both"]},
             {"opset": 18, "parity_samples": 64, "data": "fashion-mnist", "split": "test", "classes": "fashion-mnist"}),
    "openvino": (["--model", "--checkpoint", "--arch", "--pretrained", "--out", "--precision", "--from-onnx",
                  "--static-batch", "--tolerance", "--parity-samples", "--no-parity", "--data", "--data-dir",
                  "--split", "--limit", "--json", "--tower", "--classes", "--gallery"],
                 ["--out"], {"--precision": ["fp32", "fp16"], "--tower": ["image", "text", "both"]},
                 {"precision": "fp32", "parity_samples": 64, "data": "fashion-mnist", "split": "test",
                  "classes": "fashion-mnist"}),
    "ort-mobile": (["onnx", "--model", "--checkpoint", "--arch", "--pretrained", "--out", "--optimization",
                    "--target-platform", "--type-reduction", "--opset", "--tolerance", "--parity-samples",
                    "--no-parity", "--data", "--data-dir", "--split", "--limit", "--json"],
                   ["--out"], {"--optimization": ["fixed", "runtime"], "--target-platform": ["arm", "amd64"]},
                   {"optimization": "fixed", "opset": 18, "parity_samples": 64, "data": "fashion-mnist",
                    "split": "test"}),
    "tensorrt": (["onnx", "--model", "--checkpoint", "--arch", "--pretrained", "--out", "--precision", "--bundle",
                  "--no-engine", "--calib", "--calib-split", "--calib-samples", "--calib-method", "--data-dir",
                  "--min-batch", "--opt-batch", "--max-batch", "--trt-version", "--workspace-mib", "--parity-samples",
                  "--opset", "--preflight", "--json"],
                 [], {"--precision": ["fp32", "fp16", "int8"], "--calib-method": ["entropy", "max", "percentile"]},
                 {"precision": "fp16", "calib": "fashion-mnist", "calib_split": "train", "calib_samples": 300,
                  "calib_method": "entropy", "min_batch": 1, "opt_batch": 1, "max_batch": 8, "trt_version": "10.3.0",
                  "workspace_mib": 1024, "parity_samples": 64, "opset": 18}),
    "tvm": (["--model", "--checkpoint", "--arch", "--pretrained", "--out", "--target", "--mcpu", "--num-cores",
             "--trials", "--batch", "--work-dir", "--retune", "--tuning-timeout", "--cc", "--tolerance",
             "--parity-samples", "--no-parity", "--cascade", "--kernels", "--data", "--data-dir", "--split", "--limit",
             "--json", "--tower", "--classes", "--gallery"],
            ["--out"], {"--kernels": ["none", "shiftadd"], "--tower": ["image", "text", "both"]},  # --model or --cascade (an early-exit cascade)
            {"target": "llvm", "trials": 256, "batch": 1, "tuning_timeout": 60.0, "parity_samples": 64,
             "kernels": "none", "data": "fashion-mnist", "split": "test", "classes": "fashion-mnist"}),
}


@pytest.mark.parametrize("fmt", sorted(_EXPORT_FLAGS))
def test_export_help_keeps_every_flag(fmt, capsys):
    import re

    from edgevit.cli import build_parser

    flags, required, choices, defaults = _EXPORT_FLAGS[fmt]
    with pytest.raises(SystemExit) as exc:
        main(["export", fmt, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    head, _, opts = text.partition("\noptions:\n")
    positional = head.partition("\npositional arguments:\n")[2]
    listed = re.findall(r"^  ([a-z]+)\b", positional, re.MULTILINE)
    listed += [f for f in re.findall(r"^  (--[a-z0-9-]+)", opts, re.MULTILINE) if f != "--help"]
    assert listed == flags
    (sub,) = [a for a in build_parser()._subparsers._group_actions if a.dest == "command"]
    parser = sub.choices["export"]._subparsers._group_actions[0].choices[fmt]
    acts = {(a.option_strings or [a.dest])[0]: a for a in parser._actions if a.dest != "help"}
    assert sorted(f for f, a in acts.items() if a.required) == sorted(required)
    assert {f: list(a.choices) for f, a in acts.items() if a.choices} == choices
    assert {a.dest: a.default for a in acts.values() if a.default not in (None, False)} == defaults
    for f in required:
        assert f"{f} {f.lstrip('-').upper()}" in text.split("\n\n")[0] and f"[{f} " not in text.split("\n\n")[0]


def test_export_source_and_option_errors_exit_2():
    r = run_cli("export", "ort-mobile", "--out", "/tmp/never")
    assert r.returncode == 2 and "edgevit export ort-mobile needs either an ONNX file (positional) or --model NAME, " \
                                  "not both and not neither" in r.stderr
    r = run_cli("export", "openvino", "--out", "/tmp/never")
    assert r.returncode == 2 and "needs --model NAME (or checkpoint) or --from-onnx FILE" in r.stderr
    r = run_cli("export", "tensorrt", "--model", "fmnist-vit-tiny", "--preflight")
    assert r.returncode == 2 and "--preflight checks an ONNX file: pass its path" in r.stderr
    r = run_cli("export", "tensorrt", "x.onnx")
    assert r.returncode == 2 and "edgevit export tensorrt needs --out DIR" in r.stderr
    r = run_cli("export", "tensorrt", "x.onnx", "--out", "/tmp/never", "--no-engine")
    assert r.returncode == 2 and "--no-engine without --bundle leaves nothing to do; add --bundle" in r.stderr
    r = run_cli("export", "tvm", "--model", "m", "--out", "o", "--trials", "-1")
    assert r.returncode == 2 and "expected an integer ≥ 0, got -1" in r.stderr
    r = run_cli("export", "openvino", "--model", "m", "--out", "o", "--precision", "int4")
    assert r.returncode == 2 and "invalid choice: 'int4'" in r.stderr


def test_third_party_loggers_quiet_unless_verbose(tmp_path):
    """onnx_ir/onnxscript INFO lines (hundreds per export) stay out of the terminal unless -v is given."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgevit", "export", "onnx", "--model", "fmnist-vit-nano", "--out",
           str(tmp_path / "m.onnx"), "--parity-samples", "8"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("INFO") and not ln.startswith("INFO edgevit")]
    loud = subprocess.run(cmd[:3] + ["-v"] + cmd[3:], capture_output=True, text=True, timeout=300, check=True)
    assert "wrote" in quiet.stdout and len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines())


# ------------------------------------------------------------------ output paths, recipe paths, runtime lists
def test_json_out_directory_refused_before_any_work(tmp_path, capsys):
    """`--json DIR` is refused before the model is even looked up (a bad model name is not what it reports), and
    nothing is written beside the directory (write_json's `<path>.tmp`)."""
    d = tmp_path / "out"
    d.mkdir()
    assert main(["eval", "--model", "no-such-model", "--limit", "5", "--json", str(d)]) == 2
    err = capsys.readouterr().err
    assert f"--json {d}: is a directory; give a file path such as {d / 'result.json'}" in err
    assert "Traceback" not in err and "unknown model" not in err
    assert not (tmp_path / "out.tmp").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["profile", "--model", "no-such-model", "--json", str(afile / "r.json")]) == 2
    assert f"{afile} is a file, not a directory" in capsys.readouterr().err
    assert main(["eval", "--model", "no-such-model", "--json", str(tmp_path / "new") + "/"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_write_json_refuses_a_directory_and_ends_with_newline(tmp_path):
    from edgevit.artifact import write_json
    from edgevit.errors import ConfigError

    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        write_json(d, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no d.tmp beside it
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"a": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # a failed dump leaves no temp file
    write_json(tmp_path / "ok.json", {"a": 1})
    text = (tmp_path / "ok.json").read_text()
    assert text.endswith("}\n") and json.loads(text) == {"a": 1}


def test_compress_directory_as_recipe_is_a_clean_error(tmp_path, capsys):
    assert main(["compress", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"recipe {tmp_path} is a directory; give a recipe YAML file" in err and "Traceback" not in err


@pytest.mark.parametrize("dry_run", [True, False])
def test_compress_out_that_is_a_file_is_refused(tmp_path, capsys, dry_run):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = ["compress", "examples/recipes/minimal.yaml", "--out", str(afile)] + (["--dry-run"] * dry_run)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"run directory {afile} exists and is a file, not a directory" in err
    assert main(["compress", "examples/recipes/minimal.yaml", "--out", str(afile / "run"), "--dry-run"]) == 2
    assert f"{afile} is a file" in capsys.readouterr().err
    assert afile.read_text() == "x"


def test_profile_checks_every_runtime_before_timing(monkeypatch, capsys):
    """A runtime that cannot load the artefact (here: onnxruntime, for a torch model) fails the command before
    the first runtime is timed, instead of after its measurements."""
    from edgevit.profiling import latency

    def no_timing(*a, **k):
        raise AssertionError("profiled before every runtime was checked")

    monkeypatch.setattr(latency, "profile_runtime", no_timing)
    rc = main(["profile", "--model", "fmnist-vit-tiny", "--runtime", "torch,onnxruntime", "--random-inputs",
               "--runs", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "runtime 'onnxruntime' loads" in err and "is a 'torch' artefact" in err


@pytest.mark.parametrize("bad", ["1,,8", "1,", ",8", ",", " "])
def test_int_list_refuses_empty_items(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--model", "fmnist-vit-tiny", "--batch", bad])
    assert exc.value.code == 2
    assert "expected comma-separated integers like 1,8" in capsys.readouterr().err


def test_top_level_help_names_the_registered_export_formats():
    from edgevit.cli import build_parser
    from edgevit.cli.export import export_commands

    names = [c.name for c in export_commands()]
    assert len(names) >= 5 and "onnx" in names
    text = build_parser().format_help()
    assert f"export a model: {', '.join(names)}" in " ".join(text.split())
    assert "more formats come from installed extensions" not in text


def test_eval_model_directory_uses_the_checkpoint_inside(tmp_path, tiny_model, capsys):
    from edgevit.models import create, save_checkpoint

    stage = tmp_path / "00_load"
    stage.mkdir()
    save_checkpoint(tiny_model, stage / "model.safetensors")
    (stage / "record.json").write_text("{}\n")
    model = create(str(stage) + "/")
    assert model.edgevit_spec == tiny_model.edgevit_spec
    (stage / "other.pt").write_bytes(b"")
    assert main(["eval", "--model", str(stage), "--limit", "5"]) == 2
    assert "is a directory with 2 checkpoints; pass one of them" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--model", str(tmp_path / "empty"), "--arch", "fmnist-vit-tiny", "--limit", "5"]) == 2
    assert "no checkpoint in it" in capsys.readouterr().err


def test_compress_on_a_read_only_filesystem_names_the_path(tmp_path, capsys, monkeypatch):
    """EROFS from creating the run directory (a read-only mount) is a clear message and exit 2, not a traceback."""
    import errno
    from pathlib import Path

    real_mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self.name == "run":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["compress", "examples/recipes/minimal.yaml", "--out", str(tmp_path / "ro" / "run")]) == 2
    err = capsys.readouterr().err
    assert "the filesystem is read-only while writing" in err and str(tmp_path / "ro" / "run") in err
    assert "Traceback" not in err
