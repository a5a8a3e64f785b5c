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

    rc = main(["compress", "examples/recipes/quickstart.yaml", "--out", str(tmp_path / "run"), "--dry-run",
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
