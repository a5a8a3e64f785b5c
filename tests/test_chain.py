"""Artefact lineage: stages chain by the kinds they declare; a cascade goes through quantize and the exports.

Fast part: the static walk of recipes (rejections name the stage, the kinds it needed and got, and what to do),
``edgevit compress --dry-run``, and which artefact a stage is handed at run time.
Real part (one module-scoped run, reused): fmnist-vit-tiny → early_exit (a few steps, with the If form) → quantize
(every segment and head INT8, onnxruntime QDQ) → export_openvino (the INT8 ONNX graphs → IR) → eval → profile →
report on real Fashion-MNIST images; then, resuming a copy of that run after its quantize stage, another tail:
export_onnx (the INT8 If form) → export_ort_mobile (.ort per graph) → eval. The NNCF route (quantize with the
openvino backend, speed gate on) is the slow test.
"""

from __future__ import annotations

import json
import shutil

import pytest

from edgevit.errors import ConfigError
from edgevit.recipe import from_raw

EE = {"stage": "early_exit", "steps": 2, "batch_size": 32, "train_limit": 64, "heldout_limit": 64,
      "latency_duration_s": 0.02, "exporter": "torchscript", "parity_samples": 16, "budget": 5.0, "if_form": True}
Q = {"stage": "quantize", "budget": 100, "calib_samples": 32, "smooth_quant": "off", "latency_s": 0.05,
     "speed_gate": False}
PROFILE = {"stage": "profile", "batch": [1], "duration_s": 0.1, "warmup_s": 0.05, "min_runs": 3, "include_source": False}


def recipe(stages, **over):
    raw = {"name": "chain", "model": {"name": "fmnist-vit-tiny"}, "data": {"limit": 64, "batch_size": 32},
           "runtimes": ["onnxruntime", "openvino"], "stages": stages}
    raw.update(over)
    return from_raw(raw)


# ------------------------------------------------------------------------------------------ static chain check


@pytest.mark.parametrize("stages,match", [
    # INT8 before a torch-only stage
    ([{"stage": "quantize"}, {"stage": "early_exit"}],
     (r"stages\.1 \(early_exit\).*needs a torch artefact.*got openvino \(from stages\.0 'quantize'\).*put 'early_exit' "
      r"before stages\.0")),
    ([{"stage": "export_onnx"}, {"stage": "quantize", "backend": "onnxruntime"}, {"stage": "distill"}],
     r"stages\.2 \(distill\).*needs a torch artefact.*got onnx \(from stages\.1 'quantize'\)"),
    # a cascade in a form a format cannot read: the stage's own reason is quoted
    ([{"stage": "early_exit", "format": "openvino"}, {"stage": "export_tvm"}],
     (r"stages\.1 \(export_tvm\).*needs a torch or cascade \(onnx graphs\).*got cascade \(openvino graphs\).*cannot "
      r"take a cascade \(openvino graphs\) artefact: TVM compiles a cascade from its ONNX graphs")),
    ([{"stage": "early_exit", "format": "openvino"}, {"stage": "export_tensorrt"}],
     (r"stages\.1 \(export_tensorrt\).*needs an onnx or cascade \(onnx graphs\).*got cascade \(openvino graphs\)"
      r".*TensorRT builds engines from ONNX graphs")),
    # an INT8 cascade from onnxruntime (asymmetric uint8 Q/DQ) into TensorRT: refused before anything runs
    ([{"stage": "early_exit"}, {"stage": "quantize", "backend": "onnxruntime"}, {"stage": "export_onnx"},
      {"stage": "export_tensorrt", "precision": "int8"}],
     r"stages\.3 \(export_tensorrt\).*asymmetric uint8 Q/DQ.*put export_tensorrt before quantize"),
    # an IR cascade cannot become ONNX again
    ([{"stage": "early_exit", "format": "openvino"}, {"stage": "export_onnx"}],
     (r"stages\.1 \(export_onnx\).*needs a torch or cascade \(onnx graphs\).*got cascade \(openvino graphs\).*cannot be "
      r"turned back into ONNX")),
    ([{"stage": "early_exit", "format": "openvino"}, {"stage": "export_ort_mobile"}],
     r"stages\.1 \(export_ort_mobile\).*cascade \(openvino graphs\)"),
    ([{"stage": "early_exit", "format": "openvino"}, {"stage": "quantize", "backend": "onnxruntime"}],
     (r"stages\.1 \(quantize\).*got cascade \(openvino graphs\).*with other settings 'quantize' reads cascade "
      r"\(openvino graphs\)")),
    # a converting stage is missing
    ([{"stage": "export_ort_mobile"}], r"stages\.0 \(export_ort_mobile\).*got torch.*add `- stage: export_onnx`"),
    # the ONNX file of the model before quantize does not stand for the INT8 model
    ([{"stage": "export_onnx"}, {"stage": "quantize", "backend": "openvino"}, {"stage": "export_ort_mobile"}],
     r"stages\.2 \(export_ort_mobile\).*got openvino \(from stages\.1 'quantize'\)"),
])
def test_recipes_that_cannot_chain_are_rejected_before_running(stages, match):
    with pytest.raises(ConfigError, match=match):
        recipe(stages)


def test_chains_that_work_and_the_kinds_each_stage_reads():
    from edgevit import pipeline

    r = recipe([EE, {"stage": "quantize"}, {"stage": "export_openvino"}, {"stage": "eval"}, PROFILE])
    steps = pipeline.plan(r)
    assert [(s["stage"], s["reads"], s["hands_on"]) for s in steps] == [
        ("load", [], ["torch"]), ("early_exit", ["torch"], ["cascade:onnx"]),
        ("quantize", ["cascade:onnx"], ["cascade:openvino"]),  # NNCF: the ONNX graphs become IR, then INT8
        ("export_openvino", ["cascade:openvino"], ["cascade:openvino"]),
        ("eval", ["cascade:openvino"], ["cascade:openvino"]), ("profile", ["cascade:openvino"], ["cascade:openvino"])]
    # the ONNX cascade of early_exit still stands for the model after export_openvino: export_onnx reads it
    steps = pipeline.plan(recipe([EE, {"stage": "export_openvino"}, {"stage": "export_onnx", "if_form": True},
                                  {"stage": "export_ort_mobile"}]))
    assert [s["reads"] for s in steps[2:]] == [["cascade:onnx"], ["cascade:onnx"], ["cascade:onnx"]]
    # plain models chain as before; a TensorRT bundle may hand its input on
    steps = pipeline.plan(recipe([{"stage": "export_onnx"}, {"stage": "export_tensorrt"},
                                  {"stage": "export_ort_mobile"}, {"stage": "export_openvino", "from_onnx": True}]))
    assert [s["reads"] for s in steps[1:]] == [["torch"], ["onnx"], ["onnx"], ["onnx"]]
    assert steps[2]["hands_on"] == ["onnx", "tensorrt"]
    # a cascade goes through export_tvm (one library per graph) and export_tensorrt (a bundle): both read the ONNX
    # cascade, which still stands for the model after them
    steps = pipeline.plan(recipe([EE, {"stage": "export_tvm"}, {"stage": "export_tensorrt"},
                                  {"stage": "export_openvino"}, {"stage": "quantize", "backend": "onnxruntime"},
                                  {"stage": "export_tvm"}]))
    assert [(s["stage"], s["reads"], s["hands_on"]) for s in steps[2:]] == [
        ("export_tvm", ["cascade:onnx"], ["cascade:tvm"]),
        ("export_tensorrt", ["cascade:onnx"], ["cascade:tensorrt", "cascade:tvm"]),  # engines only with TensorRT
        ("export_openvino", ["cascade:onnx"], ["cascade:openvino"]),
        ("quantize", ["cascade:onnx"], ["cascade:onnx"]), ("export_tvm", ["cascade:onnx"], ["cascade:tvm"])]


def test_dry_run_rejects_a_recipe_that_cannot_chain(tmp_path, capsys):
    import yaml

    from edgevit.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": "fmnist-vit-tiny", "stages": [{"stage": "early_exit",
                                                                           "format": "openvino"},
                                                                          {"stage": "export_tvm"}]}))
    assert main(["compress", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "stages.1 (export_tvm)" in err and "needs a torch or cascade (onnx graphs)" in err and "openvino" in err
    assert not (tmp_path / "run").exists()
    path.write_text(yaml.safe_dump({"model": "fmnist-vit-tiny", "stages": [{"stage": "early_exit"},
                                                                          {"stage": "quantize"}, "eval"]}))
    assert main(["compress", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cascade:onnx → cascade:openvino" in out and not (tmp_path / "run").exists()
    assert main(["list", "stages", "-v"]) == 0
    out = capsys.readouterr().out
    assert "reads torch, onnx, openvino, cascade → hands on onnx, openvino, cascade (a new model)" in out
    assert "cannot take cascade:openvino: TVM compiles a cascade from its ONNX graphs" in out
    assert "export_tvm" in out and "reads torch, cascade → hands on tvm, cascade" in out


def test_run_time_hands_each_stage_the_artefact_of_the_current_model(tmp_path):
    """After a method, artefacts from before it are not handed on: export_onnx after early_exit gets the cascade."""
    from edgevit.artifact import Artifact
    from edgevit.spec import InputSpec
    from edgevit.stages import STAGES, StageContext

    spec = InputSpec((1, 28, 28), (0.5,), (0.5,))
    art = {sid: Artifact(kind=k, spec=spec, path=tmp_path / f"{sid}.{k}", meta=meta) for sid, k, meta in [
        ("00_load", "torch", {}), ("01_export_onnx", "onnx", {}), ("02_early_exit", "cascade", {"graphs": "onnx"}),
        ("03_export_openvino", "cascade", {"graphs": "openvino"})]}
    records = [{"id": sid, "stage": sid[3:]} for sid in art]
    ctx = StageContext(recipe=None, artifact=art["03_export_openvino"], out_dir=tmp_path, run_dir=tmp_path,
                       records=records, artifacts=art)
    assert ctx.model_artifacts() == [art["02_early_exit"], art["03_export_openvino"]]
    onnx_stage = STAGES.get("export_onnx")
    assert ctx.consumed(onnx_stage, onnx_stage.Config()) is art["02_early_exit"]  # the ONNX cascade, not the torch model
    ov = STAGES.get("export_openvino")
    assert ctx.consumed(ov, ov.Config()) is art["03_export_openvino"]
    assert ctx.current("torch") is None and ctx.latest("torch") is art["00_load"]
    tvm = STAGES.get("export_tvm")
    assert ctx.consumed(tvm, tvm.Config()) is art["02_early_exit"]  # the ONNX cascade, compiled graph by graph
    # with only the IR cascade in the run, the stage says why it cannot take it
    ir_only = {k: art[k] for k in ("00_load", "03_export_openvino")}
    ctx = StageContext(recipe=None, artifact=art["03_export_openvino"], out_dir=tmp_path, run_dir=tmp_path,
                       records=[{"id": "00_load", "stage": "load"}, {"id": "03_export_openvino", "stage": "early_exit"}],
                       artifacts=ir_only)
    with pytest.raises(ConfigError, match=r"'export_tvm' reads a torch or cascade \(onnx graphs\) artefact.*cannot "
                                          r"take a cascade \(openvino graphs\)"):
        ctx.consumed(tvm, tvm.Config())


def test_all_artifacts_measures_one_file_reached_by_two_paths_once(tmp_path):
    """A measuring stage hands its input on; a resumed record names it relative to its own folder
    (``04_eval/../03_distill/student.safetensors``): ``artifacts: all`` must still time that file once."""
    from edgevit.artifact import Artifact
    from edgevit.spec import InputSpec
    from edgevit.stages import StageContext
    from edgevit.stages.core import run_artifacts

    spec = InputSpec((1, 28, 28), (0.5,), (0.5,))
    (tmp_path / "03_distill").mkdir()
    (tmp_path / "04_eval").mkdir()
    (tmp_path / "03_distill" / "student.safetensors").write_bytes(b"x")
    art = {"03_distill": Artifact(kind="torch", spec=spec, path=tmp_path / "03_distill" / "student.safetensors"),
           "04_eval": Artifact(kind="torch", spec=spec, path=tmp_path / "04_eval/../03_distill/student.safetensors")}
    ctx = StageContext(recipe=from_raw({"name": "x", "model": {"name": "fmnist-vit-tiny"}, "runtimes": [],
                                        "stages": [{"stage": "eval"}]}),
                       artifact=art["04_eval"], out_dir=tmp_path, run_dir=tmp_path,
                       records=[{"id": k, "stage": k[3:]} for k in art], artifacts=art)
    assert run_artifacts(ctx, "all", ["torch"]) == [("03_distill", art["03_distill"], "torch")]


# ------------------------------------------------------------------------------------------ a real chained run


@pytest.fixture(scope="module")
def chained(tmp_path_factory, fmnist_test_small):
    """early_exit → quantize (onnxruntime) → export_openvino → eval → profile → report, once for the module."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgevit[openvino]')")
    pytest.importorskip("onnxruntime.quantization")
    from edgevit import pipeline

    out = tmp_path_factory.mktemp("chain")
    records = pipeline.run(recipe(HEAD + [{"stage": "export_openvino"}, {"stage": "eval"}, PROFILE,
                                          {"stage": "report"}]), out)
    return out, {r["stage"]: r for r in records}


HEAD = [EE, {**Q, "backend": "onnxruntime"}]


def test_early_exit_stage_hands_on_a_cascade_with_its_if_form(chained):
    out, rec = chained
    ee = rec["early_exit"]
    assert ee["artifact"]["kind"] == "cascade" and ee["artifact"]["meta"]["graphs"] == "onnx"
    assert ee["metrics"]["exit_agreement"] == 1.0 and len(ee["metrics"]["thresholds"]) == 4
    assert (out / ee["id"] / "export" / "manifest.json").exists()
    assert ee["metrics"]["if_form"].endswith("cascade_if.onnx") and ee["metrics"]["if_form_max_abs_diff"] < 1e-3


def test_quantize_takes_the_cascade_and_hands_on_an_int8_cascade(chained):
    out, rec = chained
    q = rec["quantize"]
    assert q["artifact"]["kind"] == "cascade"
    assert q["artifact"]["meta"] == {"precision": "int8", "backend": "onnxruntime", "graphs": "onnx", "attempt": 0}
    manifest = json.loads((out / q["id"] / q["artifact"]["path"]).read_text())
    names = [e["name"] for e in manifest["segments"] + manifest["exits"]]
    assert manifest["backend"] == "onnx" and manifest["int8"]["backend"] == "onnxruntime"
    assert len(manifest["exits"]) == 4 and len(names) == 9
    # the thresholds are the FP32 cascade's, kept on purpose, and the record says why
    ee_manifest = json.loads((out / rec["early_exit"]["id"] / "export" / "manifest.json").read_text())
    assert manifest["thresholds"] == ee_manifest["thresholds"]
    qj = json.loads((out / q["id"] / "quantize.json").read_text())
    _check_cascade_record(qj, names)
    gate = qj["speed_gate"]
    assert gate["selected"] == "int8" and "speed gate off" in gate["why"]
    assert q["metrics"]["top1_int8"] == qj["int8"]["top1"] and q["parity"]["n"] == 64


def _check_cascade_record(qj: dict, names: list[str]) -> None:
    assert qj["kind"] == "cascade" and qj["status"] == "passed" and qj["thresholds"]["policy"] == "keep"
    assert "accuracy gate measures what INT8 costs" in qj["thresholds"]["why"]
    # per graph: quantised layers, calibration on its real input, parity and interleaved latency
    assert set(qj["graphs"]) == set(names)
    for name, g in qj["graphs"].items():
        assert g["quantized_layers"] > 0 and g["fp32_ms"] > 0 and g["int8_ms"] > 0, name
        assert g["calibration_inputs"][0] == 32 and g["cosine"] > 0.9, name
    assert qj["graphs"]["segment_0"]["calibration_inputs"] == [32, 1, 28, 28]
    assert qj["graphs"]["segment_1"]["calibration_inputs"] == qj["graphs"]["exit_1"]["calibration_inputs"]
    # the accuracy gate on the whole cascade; the speed gate on its expected latency with measured exit rates
    assert qj["fp32"]["n"] == qj["int8"]["n"] == 64
    assert abs(sum(qj["int8"]["exit_shares"]) - 1) < 1e-9 and len(qj["int8"]["exit_shares"]) == 5
    assert qj["int8"]["drop_pt"] == pytest.approx((qj["fp32"]["top1"] - qj["int8"]["top1"]) * 100)
    gate = qj["speed_gate"]
    assert [c["latency_ms"] for c in gate["candidates"]] == [qj["int8"]["expected_ms"], qj["fp32"]["expected_ms"]]
    assert {r["artifact"] for r in qj["latency"]} == {"fp32 cascade", "int8 cascade"}
    assert all(r["exit_mix"]["samples"] > 0 for r in qj["latency"])
    assert qj["parity_vs_fp32"]["n"] == 64 and qj["parity_vs_fp32"]["exit_agreement"] > 0.7


def test_export_eval_and_profile_run_the_int8_cascade(chained):
    out, rec = chained
    ex = rec["export_openvino"]
    assert ex["artifact"]["kind"] == "cascade" and ex["metrics"]["int8"] is True
    manifest = json.loads((out / ex["id"] / ex["artifact"]["path"]).read_text())
    assert manifest["backend"] == "openvino" and manifest["int8"]["backend"] == "onnxruntime"
    assert all((out / ex["id"] / "cascade" / e["file"]).exists() for e in manifest["segments"] + manifest["exits"])
    # INT8 QDQ graphs on OpenVINO vs onnxruntime: two INT8 kernels round differently, so the INT8 bounds apply
    assert ex["parity"]["n"] == 64 and ex["parity"]["top1_agreement"] >= 0.9 and ex["parity"]["exit_agreement"] >= 0.9
    ev = rec["eval"]["metrics"]
    qj = json.loads((out / rec["quantize"]["id"] / "quantize.json").read_text())
    # the eval stage ran the INT8 cascade (its IR form on OpenVINO) with its measured exit rates
    assert ev["n"] == 64 and ev["runtime"] == "cascade[openvino]" and ev["precision"] == "int8"
    assert abs(ev["top1"] - qj["int8"]["top1"]) <= 3 / 64
    assert sum(ev["exit_rates"]["shares"]) == pytest.approx(1) and ev["exit_rates"]["samples"] == 64
    assert ev["exit_rates"]["shares"] == pytest.approx(ex["metrics"]["exits_share"])
    rows = [r for r in rec["profile"]["metrics"]["latency"] if r["artifact"] == "cascade"]
    assert rows and rows[0]["precision"] == "int8" and rows[0]["exit_mix"]["samples"] > 0
    report = (out / "report.md").read_text()
    assert "int8 cascade" in report and "fp32 cascade" in report


def test_resumed_run_another_tail_int8_if_form_and_ort_mobile(chained, tmp_path):
    """Resume a copy of the run after quantize with another tail: the INT8 If form, then .ort per graph."""
    from edgevit import pipeline

    src, rec = chained
    out = tmp_path / "onnx-route"
    out.mkdir()
    for sid in ("00_load", rec["early_exit"]["id"], rec["quantize"]["id"]):
        shutil.copytree(src / sid, out / sid)
    r = recipe(HEAD + [{"stage": "export_onnx", "if_form": True}, {"stage": "export_ort_mobile"},
                       {"stage": "eval", "runtime": "onnxruntime"}])
    seen = []
    records = pipeline.run(r, out, resume=True, on_stage=lambda sid, rec, skipped: seen.append(skipped))
    assert seen == [True, True, True, False, False, False]
    by = {x["stage"]: x for x in records}
    exo = by["export_onnx"]
    assert exo["metrics"]["int8"] is True and (out / exo["id"] / exo["metrics"]["if_form"]).exists()
    assert exo["artifact"]["meta"]["graphs"] == "onnx" and exo["artifact"]["meta"]["precision"] == "int8"
    assert exo["parity"]["n"] == 64 and exo["parity"]["top1_agreement"] >= 0.95  # If form vs segment cascade
    ort = by["export_ort_mobile"]
    manifest = json.loads((out / ort["id"] / ort["artifact"]["path"]).read_text())
    assert manifest["backend"] == "ort" and all(e["file"].endswith(".ort") for e in manifest["segments"])
    ops = (out / ort["id"] / "cascade" / "required_operators.config").read_text()
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # the union over every INT8 graph
    assert ort["parity"]["exit_agreement"] >= 0.95  # .ort runs the same kernels as the ONNX file
    ev = by["eval"]["metrics"]
    qj = json.loads((out / by["quantize"]["id"] / "quantize.json").read_text())
    assert ev["n"] == 64 and ev["precision"] == "int8" and ev["runtime"] == "cascade[onnxruntime]"
    assert abs(ev["top1"] - qj["int8"]["top1"]) <= 2 / 64


@pytest.mark.slow
def test_nncf_route_with_the_speed_gate(chained, tmp_path):
    """quantize with the openvino backend on the same early-exit stage: the ONNX cascade becomes IR, NNCF quantises
    every graph, and the speed gate decides on expected latency (either way a cascade is handed on)."""
    pytest.importorskip("nncf")
    from edgevit import pipeline

    src, rec = chained
    out = tmp_path / "nncf-route"
    out.mkdir()
    for sid in ("00_load", rec["early_exit"]["id"]):
        shutil.copytree(src / sid, out / sid)
    r = recipe([EE, {**Q, "backend": "openvino", "speed_gate": True}, {"stage": "eval"}])
    records = pipeline.run(r, out, resume=True)
    q = records[2]
    qj = json.loads((out / q["id"] / "quantize.json").read_text())
    names = [e["name"] for e in json.loads((out / rec["early_exit"]["id"] / "export" / "manifest.json").read_text())[
        "segments"]] + [f"exit_{k}" for k in range(1, 5)]
    _check_cascade_record(qj, names)
    assert qj["fp32_conversion"]["backend"] == "openvino" and (out / q["id"] / "fp32" / "manifest.json").exists()
    gate = qj["speed_gate"]
    fastest = min(gate["candidates"], key=lambda c: c["latency_ms"])["precision"]
    assert gate["selected"] == fastest and q["artifact"]["meta"]["precision"] == fastest
    assert q["artifact"]["meta"]["graphs"] == "openvino" and records[3]["metrics"]["runtime"] == "cascade[openvino]"


def test_a_named_runtime_that_cannot_load_the_artefact_is_refused_before_running(tmp_path):
    """`eval` with `runtime: tvm` after export_onnx: refused by the static check, not after the export ran."""
    from edgevit.errors import ConfigError
    from edgevit.recipe import from_raw

    raw = {"name": "rt", "model": {"name": "fmnist-vit-nano"}, "data": {"limit": 8},
           "stages": [{"stage": "export_onnx"}, {"stage": "eval", "runtime": "tvm"}]}
    with pytest.raises(ConfigError, match=r"stages.1 \(eval\): runtime 'tvm' does not load .*onnx"):
        from_raw(raw)
    raw["stages"][1]["runtime"] = "onnxruntime"
    from_raw(raw)  # fine


def test_a_changed_budget_recalibrates_without_training_the_heads_again(chained, tmp_path, monkeypatch):
    """Only calibration keys changed (budget): the early_exit stage runs again (another key) but reuses the heads
    its previous folder trained from the same model, data and training keys; a training key change trains."""
    from safetensors.torch import load_file

    from edgevit import pipeline
    from edgevit.methods.early_exit import run as ee_run

    src, rec = chained
    sid = rec["early_exit"]["id"]
    out = tmp_path / "rebudget"
    out.mkdir()
    for d in ("00_load", sid):
        shutil.copytree(src / d, out / d)
    old = load_file(out / sid / "early_exit.safetensors")

    def no_training(*a, **k):
        raise AssertionError("the heads were trained again")

    monkeypatch.setattr(ee_run, "train_run", no_training)
    (r,) = [x for x in pipeline.run(recipe([{**EE, "budget": 0.0}]), out, resume=True) if x["stage"] == "early_exit"]
    tr = json.loads((out / sid / "train.json").read_text())
    assert tr["reused_from"] == sid and tr["train_fingerprint"]
    new = load_file(out / sid / "early_exit.safetensors")
    assert old.keys() == new.keys() and all((old[k] == new[k]).all() for k in old)
    assert r["config"]["budget"] == 0.0
    cal = json.loads((out / sid / "calibration.json").read_text())
    assert cal["budget_pt"] == 0.0
    with pytest.raises(Exception, match="the heads were trained again"):  # a training key changed: trains
        pipeline.run(recipe([{**EE, "budget": 0.0, "alpha": 0.5}]), out, resume=True, force=True)
