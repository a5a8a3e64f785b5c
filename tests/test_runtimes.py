"""Runtimes registry, artefact opening, the torch and onnxruntime runtimes, and their agreement on real images."""

from __future__ import annotations

import numpy as np
import pytest

from edgevit.artifact import Artifact
from edgevit.errors import ConfigError, InputSpecError, RegistryError, RuntimeLoadError


@pytest.fixture
def torch_artifact(tiny_model):
    return Artifact(kind="torch", spec=tiny_model.edgevit_spec, model=tiny_model, source="fmnist-vit-tiny")


@pytest.fixture
def restore_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- registry


def test_list_runtimes():
    from edgevit.runtimes import list_runtimes

    rows = {r["name"]: r for r in list_runtimes()}
    assert rows["torch"]["kinds"] == ["torch"] and rows["torch"]["available"] is True
    assert rows["onnxruntime"]["kinds"] == ["onnx", "ort"] and rows["onnxruntime"]["available"] is True
    assert rows["onnxruntime"]["version_or_reason"]  # the installed version


def test_unknown_runtime_lists_allowed_names(tiny_onnx):
    from edgevit.runtimes import load_runtime

    with pytest.raises(RegistryError) as info:
        load_runtime("onnxrt", tiny_onnx[0])
    msg = str(info.value)
    assert "unknown runtime 'onnxrt'" in msg and "onnxruntime" in msg and "torch" in msg and "Did you mean" in msg


def test_runtime_rejects_wrong_kind_and_names_those_that_load_it(tiny_onnx, torch_artifact):
    from edgevit.runtimes import load_runtime

    with pytest.raises(RuntimeLoadError, match=r"'torch' loads torch artefacts.*'onnx' artefact.*onnxruntime"):
        load_runtime("torch", tiny_onnx[0])
    with pytest.raises(RuntimeLoadError, match=r"Runtimes that load 'torch' artefacts: torch"):
        load_runtime("onnxruntime", torch_artifact)


# ---------------------------------------------------------------------------------------------- open_artifact


def test_open_artifact_missing_and_unknown_suffix(tmp_path):
    from edgevit.runtimes import open_artifact

    with pytest.raises(RuntimeLoadError, match="does not exist"):
        open_artifact(tmp_path / "nope.onnx")
    odd = tmp_path / "model.tflite"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(RuntimeLoadError, match=r"cannot tell which kind.*onnx \(\.onnx\)"):
        open_artifact(odd)


def test_open_torch_checkpoint(tmp_path, tiny_model, real_batch):
    import torch

    from edgevit.models import save_checkpoint
    from edgevit.runtimes import load_runtime, open_artifact

    path = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    art = open_artifact(path)
    assert art.kind == "torch" and art.spec == tiny_model.edgevit_spec and art.source == "fmnist-vit-tiny"
    rt = load_runtime("torch", path)
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(real_batch)).numpy()
    np.testing.assert_allclose(rt.run(real_batch), expected, atol=1e-5)


def test_onnx_without_spec_needs_one(tmp_path, tiny_onnx, tiny_model, real_batch):
    import onnx

    from edgevit.runtimes import load_runtime, open_artifact, write_spec_sidecar

    model = onnx.load(str(tiny_onnx[0]))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(RuntimeLoadError, match="does not say which inputs it expects.*spec=InputSpec"):
        open_artifact(bare)
    assert open_artifact(bare, spec=tiny_model.edgevit_spec).spec == tiny_model.edgevit_spec
    assert load_runtime("onnxruntime", bare, spec=tiny_model.edgevit_spec).run(real_batch).shape == (8, 10)
    write_spec_sidecar(bare, tiny_model.edgevit_spec, source="fmnist-vit-tiny")
    art = open_artifact(bare)
    assert art.spec == tiny_model.edgevit_spec and art.source == "fmnist-vit-tiny"


def test_corrupt_onnx_gives_runtime_load_error(tmp_path, tiny_model):
    from edgevit.formats.onnx.runtime import OnnxRuntime
    from edgevit.runtimes import load_runtime, open_artifact

    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x13" * 50)
    with pytest.raises(RuntimeLoadError, match=r"corrupt\.onnx.*[Rr]e-export"):
        open_artifact(bad)
    with pytest.raises(RuntimeLoadError, match=r"could not load .*corrupt\.onnx.*re-export"):
        OnnxRuntime(Artifact(kind="onnx", spec=tiny_model.edgevit_spec, path=bad))
    with pytest.raises(RuntimeLoadError, match=r"corrupt\.onnx"):
        load_runtime("onnxruntime", bad, spec=tiny_model.edgevit_spec)


# ---------------------------------------------------------------------------------------------- input checks


@pytest.fixture(params=["torch", "onnxruntime"])
def runtime(request, tiny_onnx, torch_artifact):
    from edgevit.runtimes import load_runtime

    return load_runtime(request.param, torch_artifact if request.param == "torch" else tiny_onnx[0])


def test_wrong_shape_is_input_spec_error(runtime, real_batch):
    with pytest.raises(InputSpecError, match=r"expected a batch of shape \(N, 1, 28, 28\).*got \(8, 3, 28, 28\)"):
        runtime.run(np.repeat(real_batch, 3, axis=1))
    with pytest.raises(InputSpecError, match=r"got \(1, 28, 28\).*edgevit.data.preprocess"):
        runtime.run(real_batch[0])


def test_wrong_dtype_is_input_spec_error(runtime, real_batch):
    with pytest.raises(InputSpecError, match="expected dtype float32, got float64"):
        runtime.run(real_batch.astype(np.float64))
    with pytest.raises(InputSpecError, match="expected a numpy array"):
        runtime.run(real_batch.tolist())


# ---------------------------------------------------------------------------------------------- onnxruntime


def test_missing_provider_names_available_ones(tiny_onnx):
    import onnxruntime as ort

    from edgevit.runtimes import load_runtime

    available = ort.get_available_providers()
    for device, provider in (("tensorrt", "TensorrtExecutionProvider"), ("cuda", "CUDAExecutionProvider")):
        if provider in available:
            continue
        with pytest.raises(RuntimeLoadError) as info:
            load_runtime("onnxruntime", tiny_onnx[0], device=device)
        msg = str(info.value)
        assert provider in msg and "CPUExecutionProvider" in msg and "device='cpu'" in msg
    with pytest.raises(RuntimeLoadError, match="unknown device 'npu'"):
        load_runtime("onnxruntime", tiny_onnx[0], device="npu")


def test_onnxruntime_options(tiny_onnx, real_batch):
    from edgevit.runtimes import load_runtime

    base = load_runtime("onnxruntime", tiny_onnx[0]).run(real_batch)
    rt = load_runtime("onnxruntime", tiny_onnx[0], threads=1, graph_optimization="disable")
    np.testing.assert_allclose(rt.run(real_batch), base, atol=1e-5)
    d = rt.describe()
    assert d["runtime"] == "onnxruntime" and d["threads"] == 1 and d["providers"] == ["CPUExecutionProvider"]
    assert d["options"] == {"graph_optimization": "disable"} and d["backend_version"]
    with pytest.raises(ConfigError, match="graph_optimization 'max'"):
        load_runtime("onnxruntime", tiny_onnx[0], graph_optimization="max")
    with pytest.raises(ConfigError, match="unknown option.*fp16"):
        load_runtime("onnxruntime", tiny_onnx[0], fp16=True)


# ---------------------------------------------------------------------------------------------- torch


def test_torch_runtime_threads_and_describe(torch_artifact, real_batch, restore_torch_threads):
    import torch

    from edgevit.runtimes import load_runtime

    rt = load_runtime("torch", torch_artifact, threads=1)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)  # something else changed it: run puts it back
    out = rt.run(real_batch)
    assert out.shape == (8, 10) and out.dtype == np.float32 and torch.get_num_threads() == 1
    assert rt.describe()["threads"] == 1 and rt.describe()["device"] == "cpu"
    with pytest.raises(ConfigError, match="unknown option"):
        load_runtime("torch", torch_artifact, graph_optimization="all")


def test_torch_runtime_cuda_unavailable_message(torch_artifact):
    import torch

    from edgevit.runtimes import load_runtime

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; this checks the message on CPU-only machines")
    with pytest.raises(RuntimeLoadError, match="CUDA is not available.*device='cpu'"):
        load_runtime("torch", torch_artifact, device="cuda")


@pytest.mark.gpu
def test_torch_runtime_on_cuda(torch_artifact, real_batch):
    import torch

    from edgevit.runtimes import load_runtime

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cpu = load_runtime("torch", torch_artifact).run(real_batch)
    gpu = load_runtime("torch", torch_artifact, device="cuda").run(real_batch)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
    assert next(torch_artifact.model.parameters()).device.type == "cpu"  # the artefact's own model stays put


# ---------------------------------------------------------------------------------------------- agreement


def test_torch_and_onnxruntime_agree_on_real_images(tiny_onnx, torch_artifact, fmnist_test_small):
    from edgevit.formats.parity import compare_runtime
    from edgevit.runtimes import load_runtime

    reference = load_runtime("torch", torch_artifact)
    candidate = load_runtime("onnxruntime", tiny_onnx[0])
    rec = compare_runtime(reference, candidate, fmnist_test_small.batches(torch_artifact.spec, batch_size=16)).to_dict()
    assert rec["n"] == len(fmnist_test_small) and rec["passed"]
    assert rec["what"] == "onnxruntime vs torch" and rec["top1_agreement"] == 1.0 and rec["max_abs_diff"] < 1e-4
    assert rec["reference_accuracy"] == rec["candidate_accuracy"]


# ------------------------------------------------------------------ directories and runtime checks
def _bundle(d, *extra):
    import json

    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": "edgevit-tensorrt-bundle", "version": 1}) + "\n")
    for name in ("model.onnx", "model.spec.json", "build.sh", "profile.sh", "README.md", *extra):
        (d / name).write_text("")
    return d


def test_tensorrt_bundle_directory_is_not_taken_for_a_cascade(tmp_path):
    from edgevit.runtimes import _check_path, open_artifact

    d = _bundle(tmp_path / "trt")
    with pytest.raises(RuntimeLoadError) as exc:
        open_artifact(d)
    msg = str(exc.value)
    assert "is a TensorRT device bundle" in msg and "build.sh" in msg and str(d / "model.onnx") in msg
    assert "early-exit" not in msg
    built = _bundle(tmp_path / "built", "model.fp16.engine")  # after build.sh: the engine is the artefact
    assert _check_path(built) == (built / "model.fp16.engine", "tensorrt")


def test_other_manifest_json_is_not_the_artefact(tmp_path):
    from edgevit.runtimes import _check_path

    (tmp_path / "manifest.json").write_text('{"format": "something-else"}\n')
    (tmp_path / "model.onnx").write_text("")
    assert _check_path(tmp_path) == (tmp_path / "model.onnx", "onnx")


def test_eval_bundle_directory_cli_message(tmp_path, capsys):
    from edgevit.cli import main

    d = _bundle(tmp_path / "trt")
    assert main(["eval", "--artifact", str(d), "--limit", "5"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT device bundle" in err and "not an edgevit early-exit manifest" not in err


def test_check_runtime_kind_and_availability():
    from edgevit.errors import MissingBackendError
    from edgevit.runtimes import check_runtime, get_runtime_class, runtime_loads

    assert not runtime_loads("torch", "onnx")
    with pytest.raises(RuntimeLoadError, match="runtime 'torch' loads torch artefacts, but x.onnx is an 'onnx'"):
        check_runtime("torch", "onnx", "x.onnx")
    assert check_runtime("torch", "torch") is get_runtime_class("torch")
    ok, _ = get_runtime_class("tensorrt").availability()
    if not ok:
        with pytest.raises(MissingBackendError, match="runtime 'tensorrt' is not available here"):
            check_runtime("tensorrt", "tensorrt")
