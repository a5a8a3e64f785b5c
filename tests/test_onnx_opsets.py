"""Issue 16 fault 7: opsets the exporter cannot produce are refused up front (one shared check,
:func:`edgevit.formats.onnx.opsets.check_opset`), and an invalid graph is not reported as a disk problem."""

from __future__ import annotations

import pytest

from edgevit.errors import ConfigError, ExportError


def _range_text(exporter="auto"):
    from edgevit.formats.onnx.opsets import opset_range

    lo, hi, _ = opset_range(exporter)
    return lo, hi


def test_ranges_are_the_exporters_not_onnx():
    import onnx

    lo, hi = _range_text("dynamo")
    ts_lo, ts_hi = _range_text("torchscript")
    assert lo == ts_lo == 17
    assert hi < onnx.defs.onnx_opset_version() and ts_hi <= hi  # onnx 1.23 knows 28; torch writes at most 25


def test_cli_opset_26_exit_2_names_the_range(capsys, tmp_path):
    from edgevit.cli import main

    rc = main(["export", "onnx", "--model", "fmnist-vit-nano", "--opset", "26", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    lo, hi = _range_text()
    assert rc == 2 and "Traceback" not in err and "disk" not in err
    assert f"from {lo} (LayerNormalization) to {hi}, got 26" in err
    assert not (tmp_path / "m.onnx").exists()


def test_recipe_opset_26_fails_dry_run_with_key_path(capsys, tmp_path):
    from edgevit.cli import main

    rc = main(["compress", "examples/recipes/minimal.yaml", "--out", str(tmp_path / "run"), "--dry-run",
               "--set", "stages.1.opset=26"])
    err = capsys.readouterr().err
    assert rc == 2 and "stages.1.opset" in err and f"to {_range_text()[1]}, got 26" in err


def test_segment_export_checks_the_torchscript_range(tmp_path):
    """export_graph (early-exit cascade segments) runs the same check, per exporter."""
    import torch

    from edgevit.formats.onnx.export import export_graph
    from edgevit.spec import InputSpec

    spec = InputSpec(input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4)
    ts_hi = _range_text("torchscript")[1]
    with pytest.raises(ConfigError, match=f"to {ts_hi}, got {ts_hi + 1}.*'torchscript'"):
        export_graph(torch.nn.Flatten(), torch.zeros(1, 3, 8, 8), spec, tmp_path / "s.onnx", opset=ts_hi + 1,
                     exporter="torchscript")


def test_checker_error_is_not_a_disk_problem(tmp_path):
    """A graph onnx's checker rejects (an op from a newer opset than the model declares) is reported as an invalid
    graph, never with disk-space advice; an unwritable path is reported as I/O."""
    from onnx import TensorProto, helper

    from edgevit.formats.onnx.export import _save

    node = helper.make_node("Gelu", ["x"], ["y"])  # Gelu exists from opset 20 only
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ExportError, match="is not valid ONNX") as exc:
        _save(bad, tmp_path / "bad.onnx")
    assert "disk" not in str(exc.value) and "Gelu" in str(exc.value)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "dir.onnx").mkdir()  # a directory where the file should go: an OSError
    good = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(ExportError, match="could not write the ONNX file.*free disk space"):
        _save(good, tmp_path / "ro" / "dir.onnx")


# --- the target runtimes' opset ceilings (check_opset(..., runtimes=[...])) ---


def test_runtime_ceilings_read_from_the_installed_libraries():
    import onnxruntime

    from edgevit.formats.onnx.opsets import runtime_max_opset

    ort_max, ort_src = runtime_max_opset("onnxruntime")
    assert ort_max >= 21 and onnxruntime.__version__ in ort_src
    ov = runtime_max_opset("openvino")
    if ov is not None:  # read from the installed OpenVINO ONNX frontend
        import openvino

        assert ov[0] >= 20 and openvino.__version__.split("-")[0] in ov[1]
    assert runtime_max_opset("tvm") is None and runtime_max_opset("torch") is None


def test_tensorrt_ceiling_keyed_by_target_version():
    from edgevit.formats.onnx.opsets import tensorrt_max_opset

    assert tensorrt_max_opset("8.5.2")[0] == 17  # JetPack 5.1
    hi, src = tensorrt_max_opset("10.3.0")  # JetPack 6: the 10.0 edition (opset 9 to 20) is the newest at or below
    assert hi == 20 and "TensorRT 10.3.0" in src and "10.0 edition" in src and "onnx-tensorrt" in src
    assert tensorrt_max_opset("10.15.1")[0] == 24
    with pytest.raises(ConfigError, match="older than the oldest"):
        tensorrt_max_opset("6.0")


def test_opset_above_a_runtime_max_is_refused_naming_it():
    """The installed onnxruntime (1.32: kernels up to 28) runs every opset torch can write (25), so the refused case
    goes through the TensorRT table: opset 21 is written by the exporter but TensorRT 10.3's parser stops at 20."""
    from edgevit.formats.onnx.opsets import check_opset, opset_range, runtime_max_opset

    exporter_max = opset_range()[1]
    ort_max = runtime_max_opset("onnxruntime")[0]
    if ort_max < exporter_max:  # an onnxruntime older than the exporter: refused by onnxruntime itself
        with pytest.raises(ConfigError, match=f"runtime 'onnxruntime' runs ONNX opsets up to {ort_max}, got"):
            check_opset(ort_max + 1, runtimes=["onnxruntime"])
    assert check_opset(21, runtimes=["onnxruntime", "tensorrt"], trt_version="10.15.0") == 21
    with pytest.raises(ConfigError, match=r"--opset: runtime 'tensorrt' runs ONNX opsets up to 20, got 21.*"
                                          r"TensorRT 10\.3\.0's ONNX parser"):
        check_opset(21, what="--opset", runtimes=["onnxruntime", "tensorrt"], trt_version="10.3.0")


def test_cli_tensorrt_opset_above_parser_exit_2(capsys, tmp_path):
    from edgevit.cli import main

    rc = main(["export", "tensorrt", "--model", "fmnist-vit-nano", "--opset", "21", "--bundle", "--no-engine",
               "--out", str(tmp_path / "trt")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "runtime 'tensorrt' runs ONNX opsets up to 20, got 21" in err and "10.3.0" in err
    assert not (tmp_path / "trt" / "model.onnx").exists()


def test_recipe_openvino_opset_above_its_max_fails_dry_run(capsys, tmp_path, monkeypatch):
    """runtimes [openvino] and an opset the exporter writes but OpenVINO's ONNX frontend does not know: the installed
    frontend knows 27 > torch's 25, so its ceiling is lowered to 19 to construct the case."""
    from edgevit.cli import main
    from edgevit.formats.onnx import opsets

    monkeypatch.setattr(opsets, "_openvino_max", lambda: (19, "openvino 2023.0 (test)"))
    rc = main(["compress", "examples/recipes/minimal.yaml", "--out", str(tmp_path / "run"), "--dry-run",
               "--set", "runtimes=[openvino]", "--set", "stages.1.opset=20", "--set", "stages.2.runtime=openvino"])
    err = capsys.readouterr().err
    assert rc == 2 and "stages.1.opset" in err and "openvino" in err and "up to 19, got 20" in err, err
    rc = main(["compress", "examples/recipes/minimal.yaml", "--out", str(tmp_path / "run"), "--dry-run",
               "--set", "runtimes=[openvino]", "--set", "stages.1.opset=19", "--set", "stages.2.runtime=openvino"])
    assert rc == 0, capsys.readouterr().err


def test_early_exit_export_checks_the_format_runtime(tmp_path, monkeypatch):
    """export_run refuses before it loads the run (no run folder needed)."""
    from edgevit.formats.onnx import opsets
    from edgevit.methods.early_exit.run import export_run

    monkeypatch.setattr(opsets, "_openvino_max", lambda: (17, "openvino 2022.1 (test)"))
    with pytest.raises(ConfigError, match="cascade opset: runtime 'openvino' runs ONNX opsets up to 17, got 18"):
        export_run(tmp_path / "no-run", tmp_path / "out", format="openvino", parity_images=object())
