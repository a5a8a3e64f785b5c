"""The accuracy gate (attempt ladder, per-layer sensitivity, failure with the best attempt's figures), the speed gate,
quantize.json, the `edgevit quantize` command, the `quantize` recipe stage and the report, on fmnist-vit-tiny."""

from __future__ import annotations

import json

import pytest

from edgevit.cli import main
from edgevit.errors import QuantizationError

FAST = ["--calib-samples", "32", "--limit", "100", "--latency-s", "0.05", "--runtimes", "onnxruntime"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, fmnist_test_small):
    pytest.importorskip("onnxruntime.quantization")
    out = tmp_path_factory.mktemp("q")
    rc = main(["quantize", "--model", "fmnist-vit-tiny", "--backend", "onnxruntime", "--budget", "100", *FAST,
               "--out", str(out), "--json", str(out / "copy.json")])
    return rc, out


def test_cli_quantize_writes_int8_file_and_record(cli_run, capsys):
    rc, out = cli_run
    assert rc == 0
    rec = json.loads((out / "quantize.json").read_text())
    assert json.loads((out / "copy.json").read_text())["int8"] == rec["int8"]
    assert rec["status"] == "passed" and rec["backend"] == "onnxruntime" and rec["calibration"]["n"] == 32
    assert rec["calibration"]["dataset"] == "fashion-mnist" and rec["calibration"]["split"] == "train"
    assert rec["fp32"]["n"] == rec["int8"]["n"] == 100 and rec["int8"]["path"].endswith("model_int8.onnx")
    for key in ("top1", "latency_ms", "file_size"):
        assert rec["fp32"][key] and rec["int8"][key]
    assert rec["int8"]["file_size"] < rec["fp32"]["file_size"] and rec["file_size_ratio"] < 0.6
    assert rec["latency_ms"]["onnxruntime"]["fp32"] and rec["latency_ms"]["onnxruntime"]["int8"]
    assert {r["artifact"] for r in rec["accuracy"]} == {"fp32 onnx", "int8 onnx"}
    # smooth_quant auto: both settings are tried even when the first passes
    assert [a["settings"]["smooth_quant"] for a in rec["attempts"][:2]] == [True, False]
    for a in rec["attempts"]:
        assert a["top1"] is not None and a["latency_ms"] > 0 and a["file_size"] and "settings" in a
    assert rec["parity"]["n"] == 32 and rec["parity"]["max_abs_diff"] is not None
    assert rec["versions"]["onnxruntime"]
    # the kept variant has one name and says what it is; the printed summary quotes the numbers the gate decided on
    import onnx

    sel, gate = rec["selected"], rec["speed_gate"]
    assert sel["path"] == str(out / "model_selected.onnx") and sel["precision"] == gate["selected"]
    props = {p.key: p.value for p in onnx.load(sel["path"]).metadata_props}
    assert props["edgevit.precision"] == gate["selected"]
    printed = rec["summary"]  # what `edgevit quantize` prints
    for c in gate["candidates"]:
        if c["offered"]:
            assert f"{c['precision']} {c['latency_ms']:.3f} ms" in printed
    assert f"kept {gate['selected']} as {sel['path']}" in printed and gate["why"] in printed


def test_speed_gate_record_is_consistent(cli_run):
    _, out = cli_run
    gate = json.loads((out / "quantize.json").read_text())["speed_gate"]
    offered = [c for c in gate["candidates"] if c["offered"]]
    assert {c["precision"] for c in gate["candidates"]} == {"int8", "int8+bf16", "fp32", "bf16", "fp16"}
    assert {c["precision"] for c in offered} == {"int8", "fp32"}  # the CPU EP has no bf16/fp16 execution
    assert all(c.get("why_not") for c in gate["candidates"] if not c["offered"])
    fastest = min(offered, key=lambda c: c["latency_ms"])["precision"]  # budget 100: all within budget
    assert gate["selected"] == fastest and gate["why"]
    for c in offered:  # the interleaved timing says whether the machine let it mean anything
        assert c["stability"]["verdict"] in ("stable", "noisy", "contended")
        assert c["stability"]["message"].startswith(c["stability"]["verdict"])


def test_int8_artifact_works_with_eval_and_profile(cli_run, capsys):
    _, out = cli_run
    path = str(out / "model_int8.onnx")
    assert main(["eval", "--artifact", path, "--limit", "50", "--json", str(out / "e.json")]) == 0
    assert json.loads((out / "e.json").read_text())["n"] == 50
    assert main(["profile", path, "--batch", "1", "--duration", "0.05", "--warmup", "0.01"]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_cli_errors_exit_2_with_message(tmp_path, capsys, tiny_onnx):
    assert main(["quantize", "--backend", "onnxruntime", "--out", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["quantize", "--artifact", str(tiny_onnx[0]), "--backend", "onnxruntime", "--budget", "-100",
                 "--max-attempts", "1", *FAST, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no INT8 configuration met the top-1 budget of -100 pt after 1 attempt(s)" in err and "Best: attempt 0" in err


def test_impossible_budget_runs_the_whole_ladder_and_quotes_the_best(tmp_path, tiny_model, fmnist_test_small):
    """OpenVINO backend: default (SQ on, SQ off) → attention float → sensitivity pass → mixed precision; then fail."""
    pytest.importorskip("nncf")
    from edgevit.methods.quantize import QuantizeConfig, quantize

    cfg = QuantizeConfig(backend="openvino", budget=-100, calib_samples=16, eval_limit=40, batch_size=40,
                         latency_s=0.02, sensitivity_samples=8, mixed_precision_layers=[2], float_precisions=["fp32"])
    with pytest.raises(QuantizationError) as info:
        quantize(tiny_model, out_dir=tmp_path, config=cfg)
    msg = str(info.value)
    rec = json.loads((tmp_path / "quantize.json").read_text())
    assert rec["status"] == "failed" and info.value.record["attempts"] == rec["attempts"]
    names = [a["name"] for a in rec["attempts"]]
    assert names == ["default (smooth_quant on)", "default (smooth_quant off)", names[2],
                     "mixed precision: 2 most sensitive layer(s) float"]
    assert names[2].startswith("attention float")
    best = max(rec["attempts"], key=lambda a: (a["top1"], -a["latency_ms"]))
    assert f"Best: attempt {best['index']} '{best['name']}' with top-1 {best['top1'] * 100:.2f}%" in msg
    assert f"drop {best['drop_pt']:.2f} pt" in msg and f"{best['latency_ms']:.3f} ms on openvino" in msg
    assert "on 40 evaluation images" in msg and str(tmp_path / "quantize.json") in msg
    sens = rec["sensitivity"]
    assert sens["layers"] and sens["n"] == 8
    gains = [r["gain"] for r in sens["layers"]]
    assert gains == sorted(gains, reverse=True)
    mixed = rec["attempts"][3]["settings"]["float_layers"]
    assert [r["layer"] for r in sens["layers"][:2]] == mixed[-2:]
    assert rec["attempts"][3]["quantized_layers"] <= rec["attempts"][sens["attempt"]]["quantized_layers"] - 2


def test_quantize_stage_in_a_recipe_feeds_the_report(tmp_path, fmnist_test_small):
    pytest.importorskip("onnxruntime.quantization")
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {"name": "q", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 60, "batch_size": 30},
           "runtimes": ["onnxruntime"],
           "stages": [{"stage": "export_onnx", "parity_samples": 8},
                      {"stage": "quantize", "backend": "onnxruntime", "budget": 100, "calib_samples": 32,
                       "smooth_quant": "off", "latency_s": 0.05, "runtimes": ["onnxruntime"]},
                      {"stage": "eval"}, {"stage": "report"}]}
    records = pipeline.run(from_raw(raw), tmp_path)
    q = records[2]
    assert q["stage"] == "quantize" and (tmp_path / q["id"] / "quantize.json").exists()
    m = q["metrics"]
    assert m["n_eval"] == 60 and m["attempts"] == 1 and m["top1_int8"] is not None
    assert q["artifact"]["kind"] == "onnx"
    rec = json.loads((tmp_path / q["id"] / "quantize.json").read_text())
    assert rec["fp32"]["path"].endswith("02_export_onnx/model.onnx") or "export_onnx" in rec["fp32"]["path"]
    assert records[3]["metrics"]["n"] == 60  # eval ran on the quantize stage's artefact
    report = (tmp_path / "report.md").read_text()
    assert "int8 onnx" in report and "fp32 onnx" in report


@pytest.mark.slow
def test_teacher_int8_openvino_within_one_point(tmp_path, teacher_available):
    if not teacher_available:
        pytest.skip("the fmnist-vit teacher weights are not shipped in this checkout")
    from edgevit.methods.quantize import QuantizeConfig, quantize
    from edgevit.models import create

    cfg = QuantizeConfig(backend="openvino", budget=1.0, eval_limit=2000, latency_s=0.5)
    res = quantize(create("fmnist-vit"), out_dir=tmp_path, config=cfg)
    assert res.record["int8"]["drop_pt"] <= 1.0 and res.record["status"] == "passed"


def test_openvino_speed_gate_times_int8_with_bf16_leftovers(tmp_path, tiny_model, fmnist_test_small):
    """On OpenVINO the gate also evaluates and times the INT8 IR with its float ops in bf16; whichever variant it
    keeps, the written IR says how it is to be run, and the runtime follows the file unless told otherwise."""
    pytest.importorskip("nncf")
    import openvino as ov

    from edgevit.methods.quantize import QuantizeConfig, quantize
    from edgevit.runtimes import load_runtime, open_artifact

    cfg = QuantizeConfig(backend="openvino", budget=100, calib_samples=16, eval_limit=60, batch_size=60,
                         latency_s=0.05, max_attempts=1, smooth_quant="off", float_precisions=["fp32", "bf16"],
                         runtimes=["openvino"])
    res = quantize(tiny_model, fmnist_test_small, out_dir=tmp_path, config=cfg, eval_data=fmnist_test_small)
    gate = res.record["speed_gate"]
    row = next(c for c in gate["candidates"] if c["precision"] == "int8+bf16")
    rt = load_runtime("openvino", open_artifact(tmp_path / "model_int8.xml"), threads=1)
    try:
        info = rt.describe()
    finally:
        rt.close()
    if not row["offered"]:  # a CPU without bf16 arithmetic: the reason is recorded, the file stays f32
        assert "bf16" in row["why_not"]
        assert info["file_precision"] is None and info["inference_precision"] == "f32"
        return
    assert row["top1"] is not None and row["latency_ms"] > 0 and row["drop_pt"] is not None
    assert any(r["artifact"] == "int8 openvino @ bf16" for r in res.record["accuracy"])
    sel = ov.Core().read_model(str(tmp_path / "model_selected.xml"))
    want = {"int8": "f32", "int8+bf16": "bf16", "fp32": "f32", "bf16": "bf16"}[gate["selected"]]
    assert sel.get_rt_info(["edgevit", "inference_precision"]).astype(str) == want
    assert sel.get_rt_info(["edgevit", "precision"]).astype(str) == gate["selected"]
    assert res.artifact.path == tmp_path / "model_selected.xml"
    if gate["selected"] == "int8+bf16":
        assert "records bf16" in gate["why"] and res.record["selected"]["runtime_options"] == {"precision": "bf16"}
        assert info["file_precision"] == "bf16" and info["precision_source"] == "file"
        assert info["inference_precision"] == "bf16"
    else:
        assert info["file_precision"] is None and info["precision_source"] == "default"
