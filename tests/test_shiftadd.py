"""ShiftAddViT (methods.md §3): shift linears, KSH hashing, MatAdd attention, MoE routing, conversion, checkpoints,
op counts. Small models (fmnist-vit-nano) and real Fashion-MNIST images; a few seconds in all."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import ConfigError, ModelLoadError
from edgevit.methods.shiftadd import (
    ConvertConfig,
    MatAddAttention,
    MoEMlp,
    ShiftLinear,
    ShiftLinearDeploy,
    convert,
    count_ops,
    energy_pj,
    fit_ksh,
    reparameterize,
    save_shiftadd,
    to_trainable,
)
from edgevit.methods.shiftadd.hashing import similarity_targets
from edgevit.methods.shiftadd.moe import balance_loss
from edgevit.methods.shiftadd.shift import FRAC_BITS, P_MAX, P_MIN, fixed_point
from edgevit.models import create


@pytest.fixture(scope="module")
def images():
    from edgevit.data import load_dataset
    from edgevit.methods.shiftadd.train import dataset_tensors

    model = create("fmnist-vit-nano")
    x, y = dataset_tensors(load_dataset("fashion-mnist", "test", limit=48), model.edgevit_spec)
    return x, y


@pytest.fixture(scope="module")
def converted(images):
    torch.manual_seed(0)
    dense = create("fmnist-vit-nano")
    sa = convert(dense, images[0][:32], config=ConvertConfig(mlp="moe", alpha=[6.0, 4.0], softmax_blocks=[-1], bits=8))
    return dense, sa


# ------------------------------------------------------------------------------------------------ shift linears
def test_shift_weights_are_signed_powers_of_two(converted):
    _, sa = converted
    deploy = reparameterize(sa)
    layers = [m for m in deploy.modules() if isinstance(m, ShiftLinearDeploy)]
    assert len(layers) == 2 * len(deploy.blocks)  # fc1 + fc2 of every MoE shift expert
    for m in layers:
        assert m.sign.dtype == torch.int8 and m.shift.dtype == torch.int8
        assert set(m.sign.unique().tolist()) <= {-1, 0, 1}
        assert P_MIN <= int(m.shift.min()) and int(m.shift.max()) <= P_MAX
        w = m.weight()
        nz = w[w != 0].abs()
        assert torch.equal(torch.exp2(torch.round(torch.log2(nz))), nz)  # every non-zero weight is exactly 2^p
        assert (nz >= 2.0**P_MIN).all() and (nz <= 2.0**P_MAX).all()


def test_shift_init_follows_the_trained_weight():
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([0.3, -0.3, 0.6, -1e-6, 2.5, 0.0, 1 / 1024, -0.05]).repeat(16, 1).T)
    d = ShiftLinear.from_linear(lin).reparameterize()
    assert d.weight()[:, 0].tolist() == [0.25, -0.25, 0.5, 0.0, 1.0, 0.0, 1 / 1024, -0.0625]


def test_integer_reference_equals_float_linear_within_fixed_point_truncation():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    deploy = ShiftLinear.from_linear(lin).reparameterize()
    x = torch.randn(5, 7, 64) * 3
    ref = F.linear(x.double(), deploy.weight().double(), deploy.bias.double())
    y_int = deploy.integer_forward(x).double()
    # each shifted term floors by < 1 LSB (2^-16); rounding x to 16.16 moves it by ≤ 2^-17 per element
    bound = 64 * 2.0**-FRAC_BITS + deploy.weight().abs().sum(1).double() * 2.0**-(FRAC_BITS + 1)
    assert ((y_int - ref).abs() <= bound + 1e-9).all()
    assert ((y_int - deploy(x).double()).abs() <= 64 * 2.0**-FRAC_BITS + 1e-6).all()
    assert (y_int - ref).abs().max() > 0  # really the integer path (truncation is visible)


def test_shift_straight_through_gradient():
    lin = ShiftLinear.from_linear(nn.Linear(8, 4))
    x = torch.randn(3, 8, requires_grad=True)
    lin(x).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.allclose(x.grad, lin.quantized_weight().sum(0).expand(3, 8))
    assert torch.equal(fixed_point(torch.tensor([1.0 + 2.0**-18])), torch.tensor([1.0]))


# ------------------------------------------------------------------------------------------------ hashing, MatAdd
def test_ksh_learns_a_hash_that_respects_similarity(converted, images):
    _, sa = converted
    attn = sa.blocks[0].attn
    with torch.no_grad():
        tokens = attn.shared_qk(sa.blocks[0].norm1(sa.patch_embed(images[0][:8])))[:, 0].reshape(-1, attn.head_dim)
    fit = fit_ksh(tokens, bits=8, steps=10)
    s = similarity_targets(tokens)

    def ksh_loss(a):  # KSH's objective ‖YYᵀ − rS‖² over the pairs with a target (lower is better)
        phi = torch.exp(-torch.cdist(tokens, fit["anchors"]) ** 2 / (2 * fit["sigma"] ** 2)) - fit["mu"]
        y = torch.sign(phi @ a.T)
        return float((((y @ y.T) - a.shape[0] * s)[s != 0] ** 2).sum())

    gen = torch.Generator().manual_seed(1)
    random_losses = [ksh_loss(torch.randn(fit["A"].shape, generator=gen)) for _ in range(5)]
    assert ksh_loss(fit["A"]) < min(random_losses)


def test_hash_codes_are_binary(converted, images):
    _, sa = converted
    attn = sa.blocks[0].attn
    x = sa.blocks[0].norm1(sa.patch_embed(images[0][:4]))
    x = torch.cat([sa.cls_token.expand(4, -1, -1), x], 1) + sa.pos_embed
    codes = attn.codes(x)
    assert codes.shape == (4, attn.num_heads, x.shape[1], attn.bits)
    assert set(codes.unique().tolist()) == {0.0, 1.0}  # both values occur, nothing else
    assert attn.hash_a.abs().sum() > 0  # fitted, not the zero placeholder


@pytest.mark.parametrize("train", [False, True])
def test_matadd_linear_form_equals_matmul_form(train):
    torch.manual_seed(0)
    codes = (torch.rand(2, 3, 50, 16) > 0.5).float()
    v = torch.randn(2, 3, 50, 8, requires_grad=train)
    lin = MatAddAttention.angular_linear(codes, v)
    mat = MatAddAttention.angular_matmul(codes, v)
    assert torch.allclose(lin, mat, atol=1e-5, rtol=1e-5)
    m = 0.5 + codes[0, 0] @ codes[0, 0].T / math.pi  # the spec's M_ij, row-normalised, by hand
    assert torch.allclose(mat[0, 0], (m / m.sum(1, keepdim=True)) @ v[0, 0], atol=1e-5)


def test_matadd_gradient_reaches_the_shared_projection(converted, images):
    _, sa = converted
    model = to_trainable(sa).train()
    F.cross_entropy(model(images[0][:4]), images[1][:4]).backward()
    attn = model.blocks[0].attn
    assert isinstance(attn, MatAddAttention) and attn.qk.weight.grad.abs().sum() > 0  # straight-through codes
    assert not isinstance(model.blocks[-1].attn, MatAddAttention)  # softmax_blocks=[-1] kept
    assert all(not b.requires_grad for b in attn.buffers())  # the hash is frozen


# ------------------------------------------------------------------------------------------------ MoE
def _train_gate(alpha, steps=80):
    """Train only the gate on the balance loss (the experts do not enter it); tokens routed to [dense, shift]."""
    torch.manual_seed(0)
    moe = MoEMlp.from_mlp(_TimmLikeMlp(16), alpha=alpha).train()
    opt = torch.optim.Adam([moe.w_gate.weight, moe.w_noise.weight], lr=0.05)
    x = torch.randn(256, 16)
    for _ in range(steps):
        opt.zero_grad()
        moe.route(x)[2].backward()
        opt.step()
    moe.eval()
    return torch.bincount(moe.route(x)[1], minlength=2).tolist()


class _TimmLikeMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_moe_routes_more_tokens_to_the_cheaper_expert():
    dense, shift = _train_gate((6.0, 4.0))  # the shift expert is cheaper
    assert shift > dense
    dense, shift = _train_gate((4.0, 6.0))  # now the dense one is
    assert dense > shift


def test_moe_gate_receives_gradient_from_the_task_loss():
    moe = MoEMlp.from_mlp(_TimmLikeMlp(16)).train()
    with torch.no_grad():
        moe.w_gate.weight.normal_()
    x = torch.randn(64, 16)
    y = moe(x)
    y.pow(2).mean().backward()  # the task loss only (no balance term)
    assert moe.w_gate.weight.grad is not None and moe.w_gate.weight.grad.abs().sum() > 0
    assert moe.w_noise.weight.grad is not None  # noise scale is trained too (through the noisy logits)


def test_balance_loss_is_zero_when_alpha_weighted_load_is_balanced():
    alpha = torch.tensor([6.0, 4.0])
    assert float(balance_loss(torch.tensor([4.0, 6.0]), torch.tensor([40.0, 60.0]), alpha)) == pytest.approx(0)
    assert float(balance_loss(torch.tensor([5.0, 5.0]), torch.tensor([50.0, 50.0]), alpha)) > 0


def test_measured_alpha_comes_from_timing_both_experts():
    from edgevit.methods.shiftadd.latency import measure_expert_alpha

    r = measure_expert_alpha(_TimmLikeMlp(32), tokens=50, duration_s=0.02, passes=1)
    assert r["latency_ms"]["dense"] > 0 and r["latency_ms"]["shift"] > 0
    assert sum(r["alpha"]) == pytest.approx(10)
    assert r["alpha"][0] / r["alpha"][1] == pytest.approx(r["latency_ms"]["dense"] / r["latency_ms"]["shift"])


# ------------------------------------------------------------------------------------------------ conversion
def test_convert_refuses_non_vit_blocks():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.mlp = nn.MultiheadAttention(8, 2), nn.Linear(8, 8)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block()])

    with pytest.raises(ConfigError, match=r"MultiheadAttention.*mlp=Linear"):
        convert(Net(), None, config=ConvertConfig(attention="softmax"))
    with pytest.raises(ConfigError, match=r"has none.*Conv2d"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3)), None)
    with pytest.raises(ConfigError, match="softmax_blocks"):
        convert(create("fmnist-vit-nano"), None, config=ConvertConfig(softmax_blocks=[7]), fit=False)


def test_saved_model_loads_back_through_create(converted, images, tmp_path):
    _, sa = converted
    path = save_shiftadd(sa, tmp_path)
    assert path.name == "model.safetensors"
    loaded = create(str(path))
    assert loaded.edgevit_name == "fmnist-vit-nano" and loaded.edgevit_shiftadd["mlp"] == "moe"
    with torch.inference_mode():
        assert torch.equal(loaded(images[0][:8]), reparameterize(sa)(images[0][:8]))
        assert torch.allclose(loaded(images[0][:8]), sa(images[0][:8]), atol=1e-5)
    assert torch.equal(loaded.blocks[0].mlp.alpha, torch.tensor([6.0, 4.0]))


def test_checkpoint_with_shift_outside_range_is_refused(converted, tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    path = save_shiftadd(converted[1], tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("fc1.shift"))
    state[key][0, 0] = -15
    save_file(state, str(path), metadata=meta)
    with pytest.raises(ModelLoadError, match=r"\[-14, 0\]"):
        create(str(path))


# ------------------------------------------------------------------------------------------------ op counts
def test_op_counts_and_energy(images):
    dense = create("fmnist-vit-nano")
    sa = convert(dense, None, config=ConvertConfig(attention="softmax", mlp="shift"), fit=False)
    d, s = count_ops(dense, images[0][:4]), count_ops(sa, images[0][:4])
    assert d["shift"] == 0 and s["shift"] > 0
    blk = dense.blocks[0]
    mlp_macs = len(dense.blocks) * 50 * (blk.mlp.fc1.in_features * blk.mlp.fc1.out_features * 2)
    assert d["linear_multiply"] - s["linear_multiply"] == mlp_macs  # 49 patches + 1 class token per block
    assert s["linear_shift"] <= mlp_macs
    assert energy_pj(s) < energy_pj(d)
    assert energy_pj({"multiply": 1, "add": 1, "shift": 1}) == pytest.approx(3.7 + 0.9 + 0.13)


# ------------------------------------------------------------------------------------------------ export, CLI
def _pow2_matmul_weights(path) -> tuple[int, int]:
    """(MatMul/Gemm nodes with a constant weight, of which every non-zero value is a power of two)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    total = pow2 = 0
    for n in g.node:
        w = [inits[i] for i in n.input if i in inits and inits[i].ndim == 2]
        if n.op_type in ("MatMul", "Gemm") and w:
            total += 1
            a = np.abs(w[0][w[0] != 0])
            pow2 += bool(a.size) and bool(np.all(np.exp2(np.round(np.log2(a))) == a))
    return total, pow2


def test_onnx_export_is_power_of_two_matmul_with_parity(images, tmp_path):
    from edgevit.formats.onnx.export import export_onnx

    dense = create("fmnist-vit-nano")
    sa = convert(dense, images[0][:16], config=ConvertConfig(mlp="shift", bits=8, softmax_blocks=[-1]))
    path = save_shiftadd(sa, tmp_path)
    res = export_onnx(str(path), tmp_path / "model.onnx", parity_images=images[0][:16])
    assert res.parity.passed and res.parity.max_abs_diff < 1e-4 and res.parity.top1_agreement == 1.0
    total, pow2 = _pow2_matmul_weights(tmp_path / "model.onnx")
    assert pow2 == 2 * len(dense.blocks)  # fc1 + fc2 of every block; attention and head stay dense
    assert total > pow2


@pytest.mark.slow
def test_openvino_export_of_converted_model(converted, images, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip extra 'openvino')")
    from edgevit.formats.openvino.export import export_openvino

    path = save_shiftadd(converted[1], tmp_path)
    res = export_openvino(str(path), tmp_path / "ov", parity_images=images[0][:16])
    assert res.parity.passed and res.parity.top1_agreement == 1.0


def test_cli_convert_then_finetune(tmp_path, capsys):
    import json

    from edgevit.cli import main

    out = tmp_path / "sa"
    assert main(["shiftadd", "convert", "--model", "fmnist-vit-nano", "--attention", "matadd", "--mlp", "moe",
                 "--alpha", "6", "4", "--bits", "8", "--calib-samples", "8", "--eval-limit", "16", "--softmax-blocks",
                 "-1", "--out", str(out)]) == 0
    assert "linear-layer multiplications removed" in capsys.readouterr().out
    rec = json.loads((out / "convert.json").read_text())
    assert rec["config"]["softmax_blocks"] == [-1] and rec["config"]["alpha"] == [6.0, 4.0]
    assert main(["shiftadd", "finetune", str(out), "--stage", "moe", "--steps", "2", "--batch-size", "8",
                 "--limit", "32", "--eval-limit", "16", "--json", str(tmp_path / "ft.json")]) == 0
    ft = json.loads((tmp_path / "ft.json").read_text())
    assert ft["steps"] == 2 and ft["lr"] == pytest.approx(2e-4 * 0.2)
    assert ft["teacher"] == "fmnist-vit-nano" and ft["kd_weight"] == 0.5  # distilled from convert.json's source
    assert "routed_shift_share" in ft["history"][-1]
    assert create(str(out / "model.safetensors")).edgevit_shiftadd["mlp"] == "moe"
    assert main(["shiftadd", "convert", "--model", "fmnist-vit-nano", "--attention", "softmax", "--mlp", "shift",
                 "--calib-samples", "8", "--eval-limit", "8", "--out", str(tmp_path / "s2")]) == 0
    capsys.readouterr()
    assert main(["shiftadd", "finetune", str(tmp_path / "s2"), "--stage", "moe", "--steps", "1"]) == 2
    assert "--stage attention" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ TVM kernels
def _kernel_model(images):
    dense = create("fmnist-vit-nano")
    return reparameterize(convert(dense, images[0][:16], config=ConvertConfig(mlp="shift", bits=8)))


def test_kernel_ops_match_the_integer_reference_and_float_forms(images):
    from edgevit.methods.shiftadd.convert import use_kernels
    from edgevit.methods.shiftadd.kernels import matmask, matshift

    lin = ShiftLinear.from_linear(nn.Linear(64, 32)).reparameterize()
    x = torch.randn(10, 64) * 2
    assert torch.allclose(matshift(x, lin.sign, lin.shift, lin.bias), lin.integer_forward(x), atol=1e-6)
    mask = (torch.rand(3, 5, 7) > 0.5).float()
    v = torch.randn(3, 7, 4)
    assert torch.allclose(matmask(mask, v), mask @ v, atol=1e-6)
    model = _kernel_model(images)
    with torch.inference_mode():
        ref = model(images[0][:8])
        assert use_kernels(model, True) == 2 * len(model.blocks) + len(model.blocks)  # fc1+fc2 per block, MatAdd
        out = model(images[0][:8])
    assert 0 < (out - ref).abs().max() < 1e-2  # integer truncation only


def test_relax_module_calls_the_kernels(images):
    pytest.importorskip("tvm", reason="TVM is not installed (pip extra 'tvm')")
    from tvm.relax.frontend.torch import from_exported_program

    from edgevit.methods.shiftadd.convert import use_kernels
    from edgevit.methods.shiftadd.tvm_kernels import convert_map, kernel_calls, kernel_functions

    model = _kernel_model(images)
    use_kernels(model, True)
    ep = torch.export.export(model, (images[0][:1],), strict=False)
    assert sum("edgevit.matshift" in str(n.target) for n in ep.graph.nodes) == 2 * len(model.blocks)
    mod = from_exported_program(ep, keep_params_as_input=False, unwrap_unit_return_tuple=True,
                                custom_convert_map=convert_map())
    assert kernel_calls(mod) == {"matshift": 2 * len(model.blocks), "matmask": 3 * len(model.blocks)}
    assert kernel_functions(mod) == {"matshift": 2, "matmask": 3}  # one PrimFunc per distinct shape
    text = mod.script()
    assert "shift_acc" in text and "x_fixed" in text  # the TE kernel bodies, not a matmul
    main = mod["main"].script()
    # the shift linears' matmuls are gone: the matmuls left are the attention projections (qk, v, proj), the hash
    # projection A(φ − μ) (bits × anchors per head) of each block, and the head
    assert main.count("R.matmul") == 4 * len(model.blocks) + 1


@pytest.mark.slow
def test_tvm_library_with_kernels_matches_torch_on_real_images(images, tmp_path):
    """Compiles the nano model with its kernels (untuned; ~1 min on 2 busy cores)."""
    pytest.importorskip("tvm", reason="TVM is not installed (pip extra 'tvm')")
    from edgevit.cli import main

    path = save_shiftadd(_kernel_model(images), tmp_path)
    assert main(["export", "tvm", "--model", str(path), "--kernels", "shiftadd", "--trials", "0", "--parity-samples",
                 "16", "--out", str(tmp_path / "tvm"), "--json", str(tmp_path / "rec.json")]) == 0
    import json

    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["kernels"] == {"matshift": 8, "matmask": 12} and rec["top1_agreement"] == 1.0
    # binary codes and fixed point: fp16-level output tolerance (a flipped code bit is not an export bug), fp32's
    # top-1 agreement and cosine
    par = rec["parity"]
    assert par["tolerance"] == pytest.approx(0.05 * par["reference_max_abs"]) and par["min_cosine"] == 0.999


def test_tvm_kernels_refuse_a_model_without_shift_layers(tmp_path, capsys):
    pytest.importorskip("tvm", reason="TVM is not installed (pip extra 'tvm')")
    from edgevit.cli import main

    assert main(["export", "tvm", "--model", "fmnist-vit-nano", "--kernels", "shiftadd", "--trials", "0",
                 "--out", str(tmp_path)]) == 2
    assert "no shift or MatAdd layers" in capsys.readouterr().err


def test_tvm_kernels_for_cuda_fail_with_the_reason_without_a_cuda_build(converted, tmp_path, capsys):
    tvm = pytest.importorskip("tvm", reason="TVM is not installed (pip extra 'tvm')")
    if tvm.runtime.enabled("cuda") and tvm.cuda(0).exist:
        pytest.skip("this machine has a CUDA TVM build and a GPU: the cuda path runs instead")
    from edgevit.cli import main

    path = save_shiftadd(converted[1], tmp_path)
    assert main(["export", "tvm", "--model", str(path), "--kernels", "shiftadd", "--target", "cuda", "--trials", "0",
                 "--out", str(tmp_path / "tvm")]) != 0
    err = capsys.readouterr().err
    assert "no CUDA support" in err and "--target llvm" in err
    assert not (tmp_path / "tvm" / "model.so").exists()


def test_op_counts_of_matadd_attention(converted, images):
    dense, sa = converted  # 4 blocks, the last one keeps softmax; MLPs are MoE (routed tokens only)
    c = count_ops(reparameterize(sa), images[0][:2])
    dim, tokens, depth = dense.embed_dim, 50, len(dense.blocks)
    matadd_proj = (depth - 1) * 3 * dim * dim * tokens  # shared qk, v, proj
    softmax_proj = 4 * dim * dim * tokens  # qkv + proj of the last block
    gates = depth * 2 * dim * tokens
    routed_dense = c["linear_multiply"] - matadd_proj - softmax_proj - gates - dim * 10  # minus the head
    assert routed_dense % (2 * dim * 2 * dim) == 0 and routed_dense >= 0  # whole tokens through the dense expert


# ------------------------------------------------------------------------------------------------ recipe stage
def test_stage_is_registered_and_validates_its_keys():
    from edgevit.recipe import from_raw
    from edgevit.stages import STAGES

    cls = STAGES.get("shiftadd")
    assert cls.consumes == ("torch",) and cls.produces == ("torch",)
    with pytest.raises(ConfigError, match=r"stages\.0\.mlp: 'int8' is not allowed; allowed values: 'shift'"):
        from_raw({"name": "x", "model": {"name": "fmnist-vit-nano"}, "stages": [{"stage": "shiftadd", "mlp": "int8"}]})


def test_recipe_runs_shiftadd_then_exports_onnx(tmp_path):
    from edgevit import pipeline
    from edgevit.recipe import from_raw

    raw = {"name": "sa", "model": {"name": "fmnist-vit-nano"}, "data": {"limit": 16, "batch_size": 16},
           "runtimes": ["onnxruntime"],
           "stages": [{"stage": "shiftadd", "mlp": "moe", "alpha": [6.0, 4.0], "bits": 8, "calib_samples": 8,
                       "steps": 1, "batch_size": 8, "train_limit": 16, "eval_limit": 16},
                      {"stage": "export_onnx", "parity_samples": 8}]}
    import json

    records = pipeline.run(from_raw(raw), tmp_path)
    assert [r["id"] for r in records] == ["00_load", "01_shiftadd", "02_export_onnx"]
    rec = json.loads((tmp_path / "01_shiftadd" / "record.json").read_text())
    assert [f["steps"] for f in rec["metrics"]["finetune"]] == [1, 1]  # attention step, then the MoE step
    assert create(str(tmp_path / "01_shiftadd" / "model.safetensors")).edgevit_shiftadd["mlp"] == "moe"
    assert (tmp_path / "02_export_onnx" / "model.onnx").exists()
    gate = rec["metrics"]["speed_gate"]
    assert gate["kept_for_deployment"] == (gate["shiftadd_ms"] < gate["dense_ms"])
    # every form timed in one interleaved run: the dense model's FP32 and INT8 (and bf16 where the CPU has it)
    assert {"dense torch fp32", "dense onnxruntime fp32", "dense onnxruntime int8 (dynamic)", "shiftadd torch fp32",
            "shiftadd onnxruntime fp32"} <= set(gate["rows"])
    assert gate["dense_ms"] == min(v for k, v in gate["rows"].items() if k.startswith("dense"))
    if not gate["kept_for_deployment"]:
        assert "energy" in rec["metrics"]["rejected"][0]["why"]


# ------------------------------------------------------------------------------------------------ finetuning
def test_kd_loss_vanishes_only_when_the_student_matches_the_teacher():
    from edgevit.methods.shiftadd.train import kd_loss

    t = torch.randn(8, 10)
    assert float(kd_loss(t.clone(), t, 2.0)) == pytest.approx(0, abs=1e-6)
    s = torch.randn(8, 10, requires_grad=True)
    loss = kd_loss(s, t, 2.0)
    loss.backward()
    assert float(loss.detach()) > 0 and s.grad.abs().sum() > 0
    # T² scaling: KL of softened logits times T² (Hinton et al.)
    ref = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean") * 16
    assert float(kd_loss(s, t, 4.0).detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


def _shift_nano(images):
    torch.manual_seed(0)
    dense = create("fmnist-vit-nano")
    return dense, convert(dense, None, config=ConvertConfig(attention="softmax", mlp="shift"), fit=False).train()


def test_finetune_distils_and_picks_the_lr_per_variant(images):
    from edgevit.methods.shiftadd.config import FinetuneConfig
    from edgevit.methods.shiftadd.train import LR_MATADD, LR_SHIFT_ONLY, default_lr, finetune_

    x, y = images
    dense, sa = _shift_nano(images)
    cfg = FinetuneConfig(steps=2, batch_size=8, log_every=1)
    rec = finetune_(sa, x[:16], y[:16], config=cfg, teacher=dense)
    assert rec["lr"] == LR_SHIFT_ONLY and rec["kd_weight"] == 0.5
    assert all(h["kd"] > 0 for h in rec["history"])
    assert rec["history"][0]["loss"] == pytest.approx(0.5 * rec["history"][0]["ce"] + 0.5 * rec["history"][0]["kd"],
                                                      rel=1e-3)
    rec = finetune_(sa, x[:16], y[:16], config=cfg)  # no teacher: cross-entropy only
    assert rec["kd_weight"] == 0 and all(h["kd"] == 0 and h["loss"] == h["ce"] for h in rec["history"])
    assert default_lr(convert(dense, None, config=ConvertConfig(mlp="dense"), fit=False)) == LR_MATADD


def test_finetune_resumes_an_interrupted_run_exactly(images, tmp_path):
    from edgevit.methods.shiftadd.config import FinetuneConfig
    from edgevit.methods.shiftadd.train import finetune_

    x, y = images[0][:32], images[1][:32]
    dense, ref = _shift_nano(images)
    cfg = FinetuneConfig(epochs=2, batch_size=8, log_every=1, seed=3, checkpoint_every=3)
    full = finetune_(ref, x, y, config=cfg, teacher=dense)  # 8 steps over 2 epochs, uninterrupted
    _, model = _shift_nano(images)
    state = tmp_path / "state.pt"
    calls = {"n": 0}

    def crash(_m, _a):
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th optimiser step: the state of step 3 is on disk
            raise KeyboardInterrupt

    hook = model.register_forward_pre_hook(crash)
    with pytest.raises(KeyboardInterrupt):
        finetune_(model, x, y, config=cfg, teacher=dense, state_path=state)
    hook.remove()
    assert state.exists()
    with pytest.raises(ConfigError, match="--resume"):
        finetune_(model, x, y, config=cfg, teacher=dense, state_path=state)
    with pytest.raises(ConfigError, match="different finetune"):
        finetune_(model, x, y, config=cfg.model_copy(update={"resume": True, "batch_size": 4}), teacher=dense,
                  state_path=state)
    done = finetune_(model, x, y, config=cfg.model_copy(update={"resume": True}), teacher=dense, state_path=state)
    assert done["resumed_from"] == 3 and not state.exists()
    assert [h["loss"] for h in done["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-5)
    for (k, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_second_convert_adds_shift_or_moe_mlps_to_a_matadd_model(images, tmp_path):
    dense = create("fmnist-vit-nano")
    attn = convert(dense, images[0][:16], config=ConvertConfig(mlp="dense", softmax_blocks=[0], bits=8))
    loaded = create(str(save_shiftadd(attn, tmp_path / "a")))
    for mlp in ("shift", "moe"):
        two = convert(loaded, None, config=ConvertConfig(mlp=mlp, alpha=[6.0, 4.0]))  # no images: hash kept
        assert two.edgevit_shiftadd["mlp"] == mlp and two.edgevit_shiftadd["softmax_blocks"] == [0]
        assert two.edgevit_shiftadd["bits"] == 8  # the recorded attention settings carry over
        assert torch.equal(two.blocks[1].attn.hash_a, loaded.blocks[1].attn.hash_a)  # the fitted hash, kept
        back = create(str(save_shiftadd(two, tmp_path / mlp)))
        with torch.inference_mode():
            assert torch.allclose(back(images[0][:4]), reparameterize(two)(images[0][:4]), atol=1e-5)
        with pytest.raises(ConfigError, match="already converted"):
            convert(back, None, config=ConvertConfig(mlp="shift"))
    from edgevit.methods.shiftadd.run import convert_run

    rec = convert_run(loaded, tmp_path / "run", config=ConvertConfig(mlp="shift"), eval_limit=16)
    assert rec["source"] == "fmnist-vit-nano" and "top1_source" in rec
    # mults removed are counted against the dense source: shared Q/K in 3 MatAdd blocks + all MLPs
    assert rec["energy"]["linear_mult_removed_share"] > 0.5


def test_ksh_anchors_beyond_the_token_sample_and_too_few_tokens_are_clear_errors():
    from edgevit.errors import ConfigError
    from edgevit.methods.shiftadd.attention import MatAddAttention

    att = MatAddAttention(32, 2, grid=(2, 2), anchors=400)
    with pytest.raises(ConfigError, match="--anchors 400: at most 363"):
        att.fit_hash(torch.randn(4, 5, 32))
    with pytest.raises(ConfigError, match="--calib-samples"):
        MatAddAttention(32, 2, grid=(2, 2), anchors=25).fit_hash(torch.randn(2, 5, 32))


def test_cli_convert_speed_gate_times_every_dense_form(tmp_path, capsys):
    import json

    from edgevit.cli import main

    assert main(["shiftadd", "convert", "--model", "fmnist-vit-nano", "--mlp", "shift", "--eval-limit", "16",
                 "--calib-samples", "8", "--out", str(tmp_path / "sa"), "--speed-gate", "--json",
                 str(tmp_path / "r.json")]) == 0
    gate = json.loads((tmp_path / "r.json").read_text())["speed_gate"]
    assert {"dense torch fp32", "dense onnxruntime int8 (dynamic)", "shiftadd onnxruntime fp32"} <= set(gate["rows"])
    assert gate["kept_for_deployment"] == (gate["shiftadd_ms"] < gate["dense_ms"])
    assert "speed gate (batch 1, interleaved)" in capsys.readouterr().out
