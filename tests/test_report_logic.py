"""edgevit.report.analysis on hand-built stage records: lineage, the Δ against parent and source, the Pareto front,
the headline, rejected candidates, cascades and stability flags. Each record has the shape edgevit.pipeline writes
(``id``, ``stage``, ``parent``, ``metrics``, ``artifact``, ``versions``), with the metrics keys of the stages in
edgevit/stages/*.py; numbers are chosen so every expected value can be worked out by hand (in the comments)."""

from __future__ import annotations

import json

import pytest

from edgevit.report import analysis, build_report, write_report

V = {"python": "3.11.7", "torch": "2.14.1", "onnxruntime": "1.32.0"}


def art(kind, path, **meta):
    return {"kind": kind, "path": path, "source": "m", "meta": meta, "task": "classification"}


def rec(i, stage, artifact, metrics=None, **extra):
    return {"id": i, "stage": stage, "status": "done", "parent": None, "metrics": metrics or {}, "artifact": artifact,
            "versions": V, "seconds": 1.0, **extra}


def lat(path, runtime, mean, *, batch=1, verdict=None, macs=None, **extra):
    row = {"runtime": runtime, "batch": batch, "mean_ms": mean, "median_ms": mean * 0.9, "p90_ms": mean * 1.2,
           "p99_ms": mean * 1.3, "runs": 20, "throughput": batch * 1000 / mean, "artifact_path": path,
           "macs": macs, **extra}
    if verdict:
        row["stability"] = {"verdict": verdict, "message": f"the machine was {verdict} while timing"}
    return row


def parity(max_abs_diff=1e-6, *, passed=True, tolerance=0.01, top1_agreement=1.0):
    """A parity record as :meth:`edgevit.results.ParityRecord.to_dict` writes it."""
    return {"what": "export vs torch", "n": 16, "max_abs_diff": max_abs_diff, "mean_abs_diff": max_abs_diff / 10,
            "cosine": 0.9999, "top1_agreement": top1_agreement, "tolerance": tolerance, "min_top1": 0.99,
            "passed": passed}


def ev(i, a, runtime, top1, n=1000):
    return rec(i, "eval", a, {"top1": top1, "top5": 0.99, "n": n, "runtime": runtime, "artifact": a["kind"]})


@pytest.fixture
def chain():
    """load (torch) → eval → export_onnx → eval → quantize (INT8 ONNX) → eval → profile of all three."""
    t = art("torch", "model.safetensors")
    t_abs = art("torch", "/runs/x/00_load/model.safetensors")
    o = art("onnx", "model.onnx")
    o_abs = art("onnx", "/runs/x/02_export_onnx/model.onnx")
    q = art("onnx", "model_selected.onnx", precision="int8")
    q_abs = art("onnx", "/runs/x/04_quantize/model_selected.onnx", precision="int8")
    return [
        rec("00_load", "load", t, {"params": 1000, "file_size": 4000}),
        ev("01_eval", t_abs, "torch", 0.90),
        rec("02_export_onnx", "export_onnx", o, {"file_size": 4100}, parity=parity()),
        ev("03_eval", o_abs, "onnxruntime", 0.90),
        rec("04_quantize", "quantize", q, {"selected": "int8", "top1_int8": 0.885, "top1_fp32": 0.90, "n_eval": 1000,
                                           "file_size": 1100, "accuracy": [{"runtime": "onnxruntime"}]}),
        ev("05_eval", q_abs, "onnxruntime", 0.885),
        rec("06_profile", "profile", q_abs, {"latency": [
            lat(t_abs["path"], "torch", 40.0, macs=500),  # the source on torch
            lat(t_abs["path"], "torch", 300.0, batch=8),  # batch 8: not in the batch-1 comparison
            lat(o_abs["path"], "onnxruntime", 10.0, macs=500),
            lat(q_abs["path"], "onnxruntime", 4.0, macs=480),
        ]}),
    ]


def nodes_by_id(records, run_dir=None):
    return {n["id"]: n for n in analysis.artifacts(records, run_dir)}


def test_lineage_follows_what_each_stage_consumed(chain):
    n = nodes_by_id(chain)
    assert list(n) == ["00_load", "02_export_onnx", "04_quantize"]  # eval/profile measure, they make nothing
    assert n["00_load"]["parent"] is None
    assert n["02_export_onnx"]["parent"] == "00_load"
    assert n["04_quantize"]["parent"] == "02_export_onnx"  # quantize consumes the newest torch/onnx/openvino
    # an export holds its parent's model; quantize makes a model of its own
    assert n["02_export_onnx"]["model"] == "00_load" and n["04_quantize"]["model"] == "04_quantize"
    assert n["04_quantize"]["records"] == ["04_quantize", "05_eval", "06_profile"]


def test_rows_named_by_artifact_id(chain):
    """An eval over every artefact (``rows``) and profile rows name their artefact by stage id, the producer's or
    that of a later stage that handed it on (a ``current`` profile after an eval names the eval)."""
    q = chain[5]["artifact"]  # the INT8 file, as a later stage's record holds it (absolute path)
    records = chain[:5] + [
        rec("05_eval", "eval", q, {"rows": [{"artifact_id": "00_load", "artifact": "torch", "runtime": "torch", "top1": 0.7,
                                     "n": 10},
                                    {"artifact_id": "02_export_onnx", "artifact": "onnx", "runtime": "onnxruntime",
                                     "top1": 0.71, "n": 10},
                                    {"artifact_id": "04_quantize", "artifact": "onnx", "runtime": "onnxruntime",
                                     "top1": 0.69, "n": 10}], "top1": 0.69, "n": 10}),
        rec("06_profile", "profile", q, {"latency": [
            {**lat("elsewhere/model.onnx", "onnxruntime", 8.0), "artifact_id": "03_eval"},
            {**lat("elsewhere/q.onnx", "onnxruntime", 2.0), "artifact_id": "05_eval"}]})]
    n = nodes_by_id(records)
    assert {k: x["top1"]["onnxruntime" if k != "00_load" else "torch"]["top1"] for k, x in n.items()} == \
        {"00_load": 0.7, "02_export_onnx": 0.71, "04_quantize": 0.69}
    assert "?" not in n["04_quantize"]["top1"]  # the top-level copy of the last row is not taken for the current one
    assert analysis.latency_of(n["02_export_onnx"], "onnxruntime") == 8.0  # 03_eval handed the export on
    assert analysis.latency_of(n["04_quantize"], "onnxruntime") == 2.0


def test_a_recorded_input_wins_over_the_kind_rule(chain):
    """A record that names its input (``input``: the stage id whose artefact it consumed) is believed."""
    chain[4]["input"] = "00_load"
    assert nodes_by_id(chain)["04_quantize"]["parent"] == "00_load"


def test_deltas_vs_parent_and_source(chain):
    n = nodes_by_id(chain)
    q = n["04_quantize"]
    vp, vs = q["vs_parent"], q["vs_source"]
    assert vp["ref"] == "02_export_onnx" and vs["ref"] == "00_load"
    assert vp["top1_pt"] == pytest.approx(-1.5) and vs["top1_pt"] == pytest.approx(-1.5)  # 88.5 - 90.0
    assert vp["latency"] == {"onnxruntime": {"ms": pytest.approx(-6.0), "speedup": pytest.approx(2.5)}}  # 10 / 4
    assert vs["latency"] == {}  # the source was timed on torch only: no same-runtime comparison
    assert vs["best"]["speedup"] == pytest.approx(10.0)  # torch 40 ms → onnxruntime 4 ms, best against best
    assert (vs["best"]["runtime"], vs["best"]["ref_runtime"]) == ("onnxruntime", "torch")
    assert vp["bytes_ratio"] is None  # quantize's metrics file_size is the INT8 file, not the kept artefact
    assert vp["macs_ratio"] == pytest.approx(480 / 500)
    e = n["02_export_onnx"]
    assert e["vs_parent"]["bytes_ratio"] == pytest.approx(4100 / 4000)
    assert e["params"] == 1000  # an export keeps its parent's parameters
    assert e["vs_parent"]["best"]["speedup"] == pytest.approx(4.0)  # torch 40 ms → onnxruntime 10 ms
    assert n["00_load"]["vs_parent"] is None and n["00_load"]["vs_source"] is None


def test_macs_of_an_export_come_from_its_parent_when_not_counted():
    t, o = art("torch", "model.safetensors"), art("openvino", "model.xml")
    records = [rec("00_load", "load", t, {"macs": 777}), rec("01_export_openvino", "export_openvino", o)]
    n = nodes_by_id(records)
    assert n["01_export_openvino"]["macs"] == 777 and "00_load" in n["01_export_openvino"]["macs_from"]


def test_pareto_front():
    pts = [(10, 0.90), (5, 0.80), (20, 0.95), (15, 0.85), (5, 0.80), (20, 0.94), (4, 0.70)]
    # (15, .85) is slower and less accurate than (10, .90); (20, .94) loses to (20, .95) on accuracy at equal latency;
    # equal points are both kept
    assert analysis.pareto_front(pts) == {0, 1, 2, 4, 6}
    assert analysis.pareto_front([]) == set()


def test_points_and_headline(chain):
    nodes = analysis.artifacts(chain)
    pts = {(p["node"], p["runtime"]): p for p in analysis.points(nodes)}
    assert set(pts) == {("00_load", "torch"), ("02_export_onnx", "onnxruntime"), ("04_quantize", "onnxruntime")}
    # quantize: 4 ms at 88.5 %, export: 10 ms at 90 %, torch 40 ms at 90 % (dominated by the export)
    assert [k for k, p in pts.items() if p["pareto"]] == [("02_export_onnx", "onnxruntime"),
                                                          ("04_quantize", "onnxruntime")]
    h = analysis.headline(nodes)
    # the source model's fastest form is its ONNX export (10 ms); the final model is the INT8 file (4 ms)
    assert h["source"]["node"] == "02_export_onnx" and h["source"]["runtime"] == "onnxruntime"
    assert h["final"]["node"] == "04_quantize"
    assert h["speedup"] == pytest.approx(2.5) and h["top1_delta_pt"] == pytest.approx(-1.5)
    assert h["source"]["top1"] == 0.90 and h["final"]["top1"] == 0.885 and h["notes"] == []


def test_headline_without_compression_compares_with_the_source_artefact(chain):
    nodes = analysis.artifacts(chain[:4] + [rec("04_profile", "profile", chain[3]["artifact"],
                                                 {"latency": chain[6]["metrics"]["latency"][:3]})])
    h = analysis.headline(nodes)
    assert h["source"]["node"] == "00_load" and h["final"]["node"] == "02_export_onnx"
    assert h["speedup"] == pytest.approx(4.0) and "no compression stage" in h["notes"][0]


def test_headline_says_what_is_missing():
    h = analysis.headline(analysis.artifacts([rec("00_load", "load", art("torch", "m.safetensors"))]))
    assert h["speedup"] is None and h["top1_delta_pt"] is None
    assert any("add a profile stage" in x for x in h["notes"]) and any("add an eval stage" in x for x in h["notes"])


def test_stability_flags_rows_and_the_headline(chain, tmp_path):
    chain[6]["metrics"]["latency"][3] = lat("/runs/x/04_quantize/model_selected.onnx", "onnxruntime", 4.0,
                                            verdict="contended")
    chain[6]["metrics"]["latency"][0]["stability"] = {"verdict": "stable", "message": "quiet"}
    rows = analysis.stability_rows(chain)
    assert [(r["runtime"], r["verdict"]) for r in rows] == [("onnxruntime", "contended")]
    assert "contended" in rows[0]["message"]
    h = analysis.headline(analysis.artifacts(chain))
    assert any(n.startswith("the final latency is contended") for n in h["notes"])
    pts = analysis.points(analysis.artifacts(chain))
    assert {p["node"]: p["verdict"] for p in pts}["04_quantize"] == "contended"
    md = _write(chain, tmp_path)["md"]
    assert "## Latency stability" in md and "⚠ contended" in md and "⚠ stable" not in md


def _quantize_record(tmp_path):
    """A quantize stage folder with its quantize.json (the shape edgevit.methods.quantize.core writes)."""
    d = tmp_path / "run" / "04_quantize"
    d.mkdir(parents=True)
    full = {"config": {"budget": 1.0}, "attempts": [
        {"index": 0, "name": "default (smooth_quant on)", "passed": False, "top1": 0.85, "drop_pt": 5.0,
         "latency_ms": 3.0, "error": None},
        {"index": 1, "name": "default (smooth_quant off)", "passed": True, "top1": 0.895, "drop_pt": 0.5,
         "latency_ms": 4.0, "error": None},
        {"index": 2, "name": "attention float", "passed": False, "top1": None, "drop_pt": None, "latency_ms": None,
         "error": "backend crashed"}],
        "speed_gate": {"runtime": "onnxruntime", "selected": "int8", "why": "INT8 is the fastest",
                       "candidates": [{"precision": "int8", "top1": 0.895, "drop_pt": 0.5, "latency_ms": 4.0,
                                       "offered": True},
                                      {"precision": "fp32", "top1": 0.9, "drop_pt": 0.0, "latency_ms": 10.0,
                                       "offered": True},
                                      {"precision": "bf16", "offered": False, "why_not": "no bf16 on the CPU EP"}]}}
    (d / "quantize.json").write_text(json.dumps(full))
    return rec("04_quantize", "quantize", art("onnx", "model_selected.onnx"),
               {"record": "quantize.json", "selected": "int8", "speed_gate": "INT8 is the fastest"})


def test_quantize_rejections_name_their_gate(tmp_path):
    r = _quantize_record(tmp_path)
    rej = analysis.rejections([r], tmp_path / "run")
    got = {(x["candidate"].split(":")[0], x["gate"]) for x in rej}
    assert got == {("INT8 attempt 0", "accuracy"), ("INT8 attempt 2", "accuracy"), ("fp32 on onnxruntime", "speed"),
                   ("bf16 on onnxruntime", "runtime")}
    by = {x["candidate"].split(":")[0]: x for x in rej}
    assert "drop 5.00 pt > budget 1 pt" in by["INT8 attempt 0"]["why"]
    assert "backend crashed" in by["INT8 attempt 2"]["why"]
    assert by["fp32 on onnxruntime"]["latency_ms"] == 10.0 and "slower than the kept int8" in \
        by["fp32 on onnxruntime"]["why"]
    # without the side file, the stage's metrics still say what the speed gate decided
    assert [x["gate"] for x in analysis.rejections([r], None)] == ["speed"]


def test_parity_failure_and_stage_declared_rejections():
    o = art("onnx", "model.onnx")
    r = rec("02_export_onnx", "export_onnx", o, {"rejected": [{"candidate": "opset 17", "gate": "parity",
                                                               "why": "drifted"}]},
            parity=parity(0.5, passed=False, top1_agreement=0.9))
    rej = analysis.rejections([r])
    assert [(x["candidate"], x["gate"]) for x in rej] == [("opset 17", "parity"), ("onnx export", "parity")]
    assert "0.5 vs tolerance 0.01" in rej[1]["why"]


def _cascade_records():
    """load → early_exit (4 exits, exit 3 disabled) → eval with exit mix → quantize of the cascade (INT8 cascade,
    a stage record shape that is not in the pipeline yet) → profile with the exit mix of the INT8 cascade."""
    c = art("cascade", "export/manifest.json")
    c_abs = art("cascade", "/runs/x/01_early_exit/export/manifest.json")
    c8 = art("cascade", "int8/manifest.json", precision="int8")
    c8_abs = art("cascade", "/runs/x/03_quantize/int8/manifest.json", precision="int8")
    mix = {"shares": [0.5, 0.2, 0.0, 0.1, 0.2], "samples": 100, "labels": ["exit 1", "exit 2", "exit 3", "exit 4",
                                                                            "final"]}
    ee = {"exits": [2, 3, 4, 5], "thresholds": [0.9, 0.8, 1.0, 0.7], "share": [0.4, 0.3, 0.0, 0.1, 0.2],
          "heldout_top1": 0.88, "heldout_final_top1": 0.89, "expected_ms": 2.0, "segments_only_ms": 5.0,
          "segment_ms": [1.0, 1.0, 1.0, 1.0, 1.0], "head_ms": [0.1, 0.1, 0.1, 0.1],
          "exit_top1": [0.7, 0.8, 0.85, 0.87], "exit_agreement": 1.0, "n": 16}
    return [
        rec("00_load", "load", art("torch", "model.safetensors")),
        rec("01_early_exit", "early_exit", c, ee, config={"criterion": "confidence", "budget": 1.0,
                                                           "runtime": "onnxruntime"}),
        {**ev("02_eval", c_abs, "cascade", 0.87), "metrics": {"top1": 0.87, "n": 100, "runtime": "cascade",
                                                             "exit_mix": mix}},
        rec("03_quantize", "quantize", c8, {"backend": "onnxruntime", "graphs": {"segment_0": {}},
                                            "parity_vs_fp32": {"exit_agreement": 0.97, "top1_agreement": 0.99, "n": 64,
                                                               "max_abs_diff": 0.2}},
            input="01_early_exit"),
        rec("04_profile", "profile", c8_abs, {"latency": [lat(c8_abs["path"], "cascade", 1.5, exit_mix=mix)]}),
    ]


def test_cascades_per_exit_rates_and_latency():
    records = _cascade_records()
    nodes = analysis.artifacts(records)
    n = {x["id"]: x for x in nodes}
    assert n["03_quantize"]["parent"] == "01_early_exit" and n["03_quantize"]["kind"] == "cascade"
    cs = {c["node"]: c for c in analysis.cascades(records, nodes)}
    assert set(cs) == {"01_early_exit", "03_quantize"}
    fp, i8 = cs["01_early_exit"], cs["03_quantize"]
    assert fp["calibrated_in"] == i8["calibrated_in"] == "01_early_exit"  # the INT8 copy keeps the thresholds
    assert fp["parity_vs_fp32"] is None and i8["parity_vs_fp32"]["exit_agreement"] == 0.97
    assert [e["label"] for e in fp["exits"]] == ["exit 1", "exit 2", "exit 3", "exit 4", "final"]
    assert [e["block"] for e in fp["exits"][:4]] == [2, 3, 4, 5]
    # leaving at exit k costs segments 0..k plus every active head up to k (exit 3's head never fires: free)
    assert [e["latency_ms"] for e in fp["exits"]] == pytest.approx([1.1, 2.2, 3.2, 4.3, 5.3])
    assert [e["share_calibration"] for e in fp["exits"]] == [0.4, 0.3, 0.0, 0.1, 0.2]
    assert [e["heldout_top1"] for e in fp["exits"]] == [0.7, 0.8, 0.85, 0.87, 0.89]
    # measured exit rates: the eval of the FP32 cascade, the profile of the INT8 one
    assert fp["measured_sources"] == ["01_early_exit cascade (eval 02_eval)"]
    assert i8["measured_sources"] == ["03_quantize cascade (profile 04_profile)"]
    assert [e["share_measured"]["03_quantize cascade (profile 04_profile)"] for e in i8["exits"]] == [0.5, 0.2, 0.0,
                                                                                                       0.1, 0.2]
    assert fp["nodes"] == ["01_early_exit"] and i8["nodes"] == ["03_quantize"]
    rej = analysis.rejections(records)
    assert [(x["stage"], x["gate"]) for x in rej] == [("01_early_exit", "accuracy")] and "exit 3" in rej[0]["candidate"]


def test_copies_of_one_cascade_share_one_exit_section():
    """An export of the INT8 cascade to another format (same calibration, thresholds, precision) is listed under the
    INT8 cascade's section, with its own measured exit rates, not as a section of its own."""
    records = _cascade_records()
    ov = art("cascade", "cascade/manifest.json", precision="int8", graphs="openvino")
    ov_abs = art("cascade", "/runs/x/05_export_openvino/cascade/manifest.json", precision="int8", graphs="openvino")
    mix = {"shares": [0.6, 0.1, 0.0, 0.1, 0.2], "samples": 100}
    records += [rec("05_export_openvino", "export_openvino", ov, {"format": "cascade"}, input="03_quantize"),
                rec("06_profile", "profile", ov_abs, {"latency": [lat(ov_abs["path"], "cascade[openvino]", 1.2,
                                                                      exit_mix=mix)]})]
    nodes = analysis.artifacts(records)
    cs = analysis.cascades(records, nodes)
    assert [c["node"] for c in cs] == ["01_early_exit", "03_quantize"]
    i8 = cs[1]
    assert i8["nodes"] == ["03_quantize", "05_export_openvino"]
    assert i8["parity_vs_fp32"]["exit_agreement"] == 0.97  # the INT8 cascade's own record leads its section
    src = "05_export_openvino cascade[openvino] (profile 06_profile)"
    assert src in i8["measured_sources"] and [e["share_measured"][src] for e in i8["exits"]] == [0.6, 0.1, 0.0, 0.1,
                                                                                                  0.2]


def _write(records, tmp_path):
    from edgevit.recipe import from_raw

    recipe = from_raw({"name": "hand", "model": {"name": "fmnist-vit-tiny"}, "stages": [{"stage": "report"}]})
    paths = write_report(tmp_path, recipe, records)
    return {k: p.read_text() for k, p in paths.items()}


def test_every_section_renders_from_hand_built_records(tmp_path):
    records = _cascade_records()
    out = _write(records, tmp_path)
    doc = json.loads(out["json"])
    assert doc == {**doc, **json.loads(json.dumps(build_report(records, tmp_path, detect_host=False) |
                                                 {"environment": doc["environment"]}))}
    for heading in ("## Headline", "## What each step bought", "## Accuracy × latency", "## Rejected candidates",
                    "## Early exits of 01_early_exit", "## Early exits of 03_quantize", "## Environment"):
        assert heading in out["md"], heading
    assert "![exit rates and latency of 03_quantize](report_files/exits_03_quantize.png)" in out["md"]
    assert "on 64 images: exits agree on 97.00%, top-1 on 99.00%" in out["md"]  # the INT8 cascade's own record
    assert (tmp_path / "report_files" / "exits_03_quantize.png").stat().st_size > 1000
    assert out["html"].count("data:image/png;base64,") == 3  # accuracy × latency + two cascades
    assert "<script" not in out["html"]


def test_export_row_of_a_quantize_stage_that_kept_fp32_names_the_int8_candidate():
    from edgevit.report import summarize

    parity = {"n": 64, "max_abs_diff": 2.3, "mean_abs_diff": 0.2, "cosine": 0.998, "top1_agreement": 0.97,
              "passed": True}
    r = rec("05_quantize", "quantize", art("cascade", "fp32/manifest.json"),
            {"selected": "fp32", "file_size": 519412, "file_size_fp32": 1191648}, parity=parity)
    (row,) = summarize([r])["exports"]
    assert row["path"] == "INT8 candidate (the speed gate kept fp32: fp32/manifest.json)"
    assert row["file_size"] == 519412 and row["max_abs_diff"] == 2.3
