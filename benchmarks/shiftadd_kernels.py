#!/usr/bin/env python
"""ShiftAddViT kernel-level latency at fmnist-vit's shapes, batch 1, and the end-to-end TVM library with the kernels.

    PYTHONPATH=. python benchmarks/shiftadd_kernels.py --trials 32 --e2e-model runs/sa2/shift/model.safetensors \\
        --e2e-trials 64

Kernels (one block's shapes, batch 1: tokens N = 50, dim C = 128, MLP hidden 256, 4 heads of 32, 16 hash bits):

- **matshift** (fc1 50×128 → 256 and fc2 50×256 → 128: int32 fixed-point activations, int8 sign and shift, the TE
  kernel of :mod:`edgevit.methods.shiftadd.tvm_kernels`) against, at the same shapes: a TVM dense of the same TE
  form (``Σ_k x·w`` instead of ``Σ_k s·(x >> −p)``), tuned by the same MetaSchedule path and budget
  (:func:`edgevit.formats.tvm.tuning.lower_and_tune`, weights as constants as in the exported model);
  torch ``F.linear`` FP32 (oneDNN/MKL); ONNX Runtime FP32 MatMul+Add (MLAS); and ONNX Runtime INT8 (the graph
  quantised by ``quantize_dynamic``: DynamicQuantizeLinear + MatMulInteger with int8 weights — VNNI on this CPU).
- **matmask** (MatAdd's products with the binary codes B: Bᵀ V (4×16×50 · 4×50×32) and B (Bᵀ V) (4×50×16 ·
  4×16×32)) against a TVM FP32 batched matmul of the same TE form (tuned alike), torch ``bmm`` FP32, ONNX Runtime
  FP32 MatMul and ONNX Runtime INT8 (DynamicQuantizeLinear of the dense operand + MatMulInteger with the uint8 mask).

The weights are fmnist-vit's block-0 fc1/fc2 as power-of-two weights, the activations and hash codes those of a real
test image (the MatAdd hash fitted on 64 training images). All calls of a table run interleaved
(:func:`edgevit.profiling.latency.time_interleaved`, rotated order) on 1 thread, every call on pre-built inputs; TVM
calls go through the Relax VM (a few µs of call overhead, the same for matshift and its TVM dense).

End to end (``--e2e-model``, a converted ``model.safetensors``): the TVM library with matshift/matmask compiled in
(``edgevit export tvm --kernels shiftadd``, MetaSchedule ``--e2e-trials``) against the same converted model in ONNX
Runtime (power-of-two MatMul) and torch, and the dense model's ONNX Runtime FP32 and INT8 (dynamic) — its best
other runtimes here. ``--target cuda`` is refused with the reason when this TVM build or machine has no CUDA.
Results: tables on stdout, JSON in ``benchmarks/results/shiftadd_kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------------ operands
def operands(seed: int = 0) -> dict:
    """Real operands of fmnist-vit block 0: power-of-two fc1/fc2 weights (sign, shift, bias, float weight), their
    input activations, the binary hash codes and V of MatAdd attention on one real test image."""
    import torch

    from edgevit.data import load_dataset
    from edgevit.methods.shiftadd.config import ConvertConfig
    from edgevit.methods.shiftadd.convert import convert, reparameterize
    from edgevit.methods.shiftadd.train import dataset_tensors
    from edgevit.models import create

    dense = create("fmnist-vit")
    calib, _ = dataset_tensors(load_dataset("fashion-mnist", "train", limit=64), dense.edgevit_spec)
    x, _ = dataset_tensors(load_dataset("fashion-mnist", "test", limit=1), dense.edgevit_spec)
    sa = reparameterize(convert(dense, calib, config=ConvertConfig(attention="matadd", mlp="shift", seed=seed)))
    blk = sa.blocks[0]
    seen: dict = {}
    def rows(a):  # the linear's input as (tokens, features)
        return a[0].reshape(-1, a[0].shape[-1]).clone()

    hooks = [blk.mlp.fc1.register_forward_pre_hook(lambda _m, a: seen.setdefault("fc1", rows(a))),
             blk.mlp.fc2.register_forward_pre_hook(lambda _m, a: seen.setdefault("fc2", rows(a))),
             blk.attn.register_forward_pre_hook(lambda _m, a: seen.setdefault("attn", a[0].clone()))]
    with torch.inference_mode():
        sa(x)
        for h in hooks:
            h.remove()
        codes = blk.attn.codes(seen["attn"])  # (1, H, N, r)
        v = blk.attn.values(seen["attn"])  # (1, H, N, d)
    h, n, r = codes.shape[1:]
    out: dict = {"heads": h, "tokens": n, "bits": r, "head_dim": v.shape[-1]}
    for name in ("fc1", "fc2"):
        lin = getattr(blk.mlp, name)
        w = (lin.sign.float() * torch.pow(2.0, lin.shift.float()))
        out[name] = {"x": seen[name].float().numpy(), "sign": lin.sign.numpy(), "shift": lin.shift.numpy(),
                     "bias": lin.bias.detach().float().numpy(), "w": w.numpy()}
    c = codes[0].float()  # (H, N, r)
    kv = c.transpose(1, 2) @ v[0]  # (H, r, d)
    out["mask_btv"] = {"mask": c.transpose(1, 2).contiguous().numpy(), "x": v[0].contiguous().numpy()}
    out["mask_bkv"] = {"mask": c.contiguous().numpy(), "x": kv.contiguous().numpy()}
    return out


# ------------------------------------------------------------------------------------------------ TVM
def te_dense(x, w, b):
    """The dense counterpart of matshift in the same TE form: (M, K) · (N, K)ᵀ + b."""
    from tvm import te

    m, k_dim = x.shape
    n = w.shape[0]
    k = te.reduce_axis((0, k_dim), name="k")
    acc = te.compute((m, n), lambda i, j: te.sum(x[i, k] * w[j, k], axis=k), name="dense_acc")
    return te.compute((m, n), lambda i, j: acc[i, j] + b[j], name="dense")


def te_bmm(a, x):
    """The dense counterpart of matmask: (B, I, K) · (B, K, J) in FP32."""
    from tvm import te

    b, i_dim, k_dim = a.shape
    j_dim = x.shape[2]
    k = te.reduce_axis((0, k_dim), name="k")
    return te.compute((b, i_dim, j_dim), lambda bb, i, j: te.sum(a[bb, i, k] * x[bb, k, j], axis=k), name="bmm")


def tvm_functions(ops: dict, target: str, trials: int, work_dir: Path | None, threads: int) -> tuple[dict, dict]:
    """Build one Relax module with a function per kernel (constants: weights and masks; input: the activation),
    tune it with edgevit's MetaSchedule path, compile; return ({name: (vm function, input tensor)}, tuning info)."""
    import tvm
    from tvm import relax

    from edgevit.formats.tvm.target import resolve_target
    from edgevit.formats.tvm.tuning import default_cache_dir, lower_and_tune
    from edgevit.methods.shiftadd.tvm_kernels import te_matmask, te_matshift

    tgt, tdict, _ = resolve_target(target, num_cores=threads)
    bb = relax.BlockBuilder()
    inputs = {}

    def fn(name: str, te_fn, x: np.ndarray, consts: list[np.ndarray], const_first: bool = False) -> None:
        xv = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
        with bb.function(name, [xv]):
            with bb.dataflow():
                cs = [relax.const(c) for c in consts]
                out = bb.emit_te(te_fn, *([*cs, xv] if const_first else [xv, *cs]), primfunc_name_hint=name)
                gv = bb.emit_output(out)
            bb.emit_func_output(gv)
        inputs[name] = x

    for lin in ("fc1", "fc2"):
        o = ops[lin]
        fn(f"matshift_{lin}", te_matshift, o["x"], [o["sign"], o["shift"], o["bias"]])
        fn(f"dense_{lin}", te_dense, o["x"], [o["w"], o["bias"]])
    for prod in ("mask_btv", "mask_bkv"):
        o = ops[prod]
        fn(f"matmask_{prod[5:]}", te_matmask, o["x"], [o["mask"]], const_first=True)
        fn(f"bmm_{prod[5:]}", te_bmm, o["x"], [o["mask"]], const_first=True)
    mod = bb.get()
    mod, info = lower_and_tune(mod, tgt, tdict, trials=trials, cache_root=Path(work_dir or default_cache_dir()),
                               retune=False, max_trials_per_task=None, timeout_s=60.0, seed=0,
                               name="shiftadd-kernels")
    ex = tvm.compile(mod, target=tgt)
    dev = tvm.cuda(0) if tdict.get("kind") == "cuda" else tvm.cpu()
    if tdict.get("kind") != "cuda":
        tvm.get_global_func("runtime.config_threadpool")(1, threads)
    vm = relax.VirtualMachine(ex, dev)
    return {n: (vm[n], tvm.runtime.tensor(x, device=dev)) for n, x in inputs.items()}, \
        {k: v for k, v in info.items() if not k.startswith("_")} | {"target": tdict}


# ------------------------------------------------------------------------------------------------ ONNX Runtime
def _ort(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString() if hasattr(model, "SerializeToString") else str(model), so,
                                providers=["CPUExecutionProvider"])
    return sess


def ort_linear(o: dict, threads: int, tmp: Path, tag: str) -> dict:
    """ONNX Runtime FP32 MatMul+Add and its dynamic-INT8 quantisation at fc shapes: {kind: (session, feed)}."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    m, k = o["x"].shape
    n = o["w"].shape[0]
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], tag,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(np.ascontiguousarray(o["w"].T), "wt"), numpy_helper.from_array(o["bias"], "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    fp32, int8 = tmp / f"{tag}.onnx", tmp / f"{tag}_int8.onnx"
    onnx.save(model, fp32)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    feed = {"x": o["x"]}
    return {"fp32": (_ort(fp32, threads), feed), "int8": (_ort(int8, threads), feed)}


def ort_mask(o: dict, threads: int, tmp: Path, tag: str) -> dict:
    """ONNX Runtime at a matmask shape: FP32 MatMul(mask, x), and INT8: the uint8 mask times x quantised on the fly
    (DynamicQuantizeLinear → MatMulInteger → Cast → Mul by the scale)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mask, x = o["mask"], o["x"]
    out_shape = [mask.shape[0], mask.shape[1], x.shape[2]]
    xin = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    yout = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    g32 = helper.make_graph([helper.make_node("MatMul", ["m", "x"], ["y"])], tag, xin, yout,
                            [numpy_helper.from_array(mask.astype(np.float32), "m")])
    g8 = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
         helper.make_node("MatMulInteger", ["m8", "xq", "", "xz"], ["acc"]),
         helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["accf", "xs"], ["y"])], tag + "_int8", xin, yout,
        [numpy_helper.from_array(mask.astype(np.uint8), "m8")])
    paths = {}
    for kind, g in (("fp32", g32), ("int8", g8)):
        p = tmp / f"{tag}_{kind}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), p)
        paths[kind] = p
    feed = {"x": x}
    return {k: (_ort(p, threads), feed) for k, p in paths.items()}


# ------------------------------------------------------------------------------------------------ kernels
def kernel_tables(args, ops: dict, tmp: Path) -> dict:
    import torch
    import torch.nn.functional as F

    from edgevit.methods.shiftadd.kernels import matmask, matshift
    from edgevit.profiling.latency import time_interleaved

    t0 = time.perf_counter()
    tvm_fns, tuning = tvm_functions(ops, args.target, args.trials, args.work_dir, args.threads)
    tuning["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"TVM kernels: {tuning['status']}, {tuning.get('tasks')} tasks, {tuning.get('trials_total', 0)} trials "
          f"({tuning['seconds']} s incl. compile)", flush=True)
    results: dict = {"tuning": tuning, "tables": {}}
    tag = "untuned" if tuning["status"] == "untuned" else f"{tuning.get('trials_total', 0)} trials"
    groups = {
        "fc1": ("fc1", f"matshift fc1 ({ops['tokens']}×{ops['fc1']['x'].shape[1]} → {ops['fc1']['w'].shape[0]})"),
        "fc2": ("fc2", f"matshift fc2 ({ops['tokens']}×{ops['fc2']['x'].shape[1]} → {ops['fc2']['w'].shape[0]})"),
        "btv": ("mask_btv", "matmask Bᵀ V ({}×{}×{} · {}×{}×{})".format(*ops["mask_btv"]["mask"].shape,
                                                                      *ops["mask_btv"]["x"].shape)),
        "bkv": ("mask_bkv", "matmask B (Bᵀ V) ({}×{}×{} · {}×{}×{})".format(*ops["mask_bkv"]["mask"].shape,
                                                                          *ops["mask_bkv"]["x"].shape)),
    }
    for key, (src, title) in groups.items():
        o = ops[src]
        calls: dict = {}

        def tvm_call(name):
            f, x = tvm_fns[name]
            return lambda _a: f(x)

        def ort_call(pair):
            sess, feed = pair
            return lambda _a: sess.run(None, feed)

        if key in ("fc1", "fc2"):
            xt = torch.from_numpy(o["x"])
            w, b = torch.from_numpy(o["w"]), torch.from_numpy(o["bias"])
            sign, shift = torch.from_numpy(o["sign"]), torch.from_numpy(o["shift"])
            ort = ort_linear(o, args.threads, tmp, key)
            calls[f"TVM matshift (int32 shift-add, {tag})"] = tvm_call(f"matshift_{key}")
            calls[f"TVM dense FP32 (same TE form, {tag})"] = tvm_call(f"dense_{key}")
            calls["torch F.linear FP32 (oneDNN/MKL)"] = lambda _a, xt=xt, w=w, b=b: F.linear(xt, w, b)
            calls["onnxruntime MatMul FP32 (MLAS)"] = ort_call(ort["fp32"])
            calls["onnxruntime INT8 (DynamicQuantizeLinear + MatMulInteger)"] = ort_call(ort["int8"])
            ref = matshift(xt, sign, shift, b).numpy()
            got = tvm_fns[f"matshift_{key}"][0](tvm_fns[f"matshift_{key}"][1]).numpy()
        else:
            m, x = torch.from_numpy(o["mask"]), torch.from_numpy(o["x"])
            ort = ort_mask(o, args.threads, tmp, key)
            calls[f"TVM matmask (select-add, {tag})"] = tvm_call(f"matmask_{key}")
            calls[f"TVM batched matmul FP32 (same TE form, {tag})"] = tvm_call(f"bmm_{key}")
            calls["torch bmm FP32"] = lambda _a, m=m, x=x: torch.bmm(m, x)
            calls["onnxruntime MatMul FP32 (MLAS)"] = ort_call(ort["fp32"])
            calls["onnxruntime INT8 (DynamicQuantizeLinear + MatMulInteger)"] = ort_call(ort["int8"])
            ref = matmask(m, x).numpy()
            got = tvm_fns[f"matmask_{key}"][0](tvm_fns[f"matmask_{key}"][1]).numpy()
        diff = float(np.abs(ref - got).max())
        with torch.inference_mode():
            timing = time_interleaved(calls, np.zeros(1, np.float32), passes=args.passes, duration_s=args.duration,
                                      warmup_s=0.1)
        rows = {k: {"median_us": v["median_ms"] * 1e3, "spread_pct": v["spread_pct"], "runs": v["pooled"]["runs"]}
                for k, v in timing.items()}
        results["tables"][key] = {"title": title, "tvm_vs_torch_max_abs_diff": diff, "rows": rows}
        print(f"\n{title} — TVM kernel vs the torch reference: max |Δ| {diff:.2e}")
        print("| implementation | median µs | spread % |\n| --- | --- | --- |")
        for k, v in rows.items():
            print(f"| {k} | {v['median_us']:.1f} | {v['spread_pct']:.0f} |")
    return results


# ------------------------------------------------------------------------------------------------ end to end
def end_to_end(args, tmp: Path) -> dict:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgevit.data import load_dataset
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.formats.tvm.export import export_tvm
    from edgevit.methods.shiftadd.convert import use_kernels
    from edgevit.methods.shiftadd.train import dataset_tensors
    from edgevit.methods.shiftadd.tvm_kernels import convert_map, kernel_calls  # noqa: F401  (documents the check)
    from edgevit.models import create
    from edgevit.profiling.latency import time_interleaved
    from edgevit.runtimes import load_runtime, open_artifact

    sa = create(str(args.e2e_model))
    dense = create(args.dense)
    x, _ = dataset_tensors(load_dataset("fashion-mnist", "test", limit=16), dense.edgevit_spec)
    km = create(str(args.e2e_model))
    n_kernels = use_kernels(km, True)
    t0 = time.perf_counter()
    res = export_tvm(km, tmp / "tvm", target=args.target, trials=args.e2e_trials, convert_map=convert_map(),
                     parity_images=x, num_cores=args.threads, work_dir=args.work_dir)
    tvm_s = round(time.perf_counter() - t0, 1)
    rt = load_runtime("tvm", open_artifact(res.artifact.path), threads=args.threads)
    sa_onnx = export_onnx(str(args.e2e_model), tmp / "sa.onnx", parity_images=x).artifact.path
    dense_onnx = export_onnx(dense, tmp / "dense.onnx", parity_images=x).artifact.path
    int8 = tmp / "dense_int8.onnx"
    quantize_dynamic(str(dense_onnx), str(int8), weight_type=QuantType.QInt8)

    def ort(p):
        import onnxruntime as ort_

        so = ort_.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        s = ort_.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return lambda a: s.run(None, {name: a})

    def tc(m):
        def run(a):
            with torch.inference_mode():
                return m(torch.from_numpy(a))
        return run

    calls = {f"shiftadd TVM + matshift/matmask kernels ({res.fields['tuning'].get('status')})": rt.run,
             "shiftadd onnxruntime FP32 (power-of-two MatMul)": ort(sa_onnx),
             "shiftadd torch FP32": tc(sa),
             "dense onnxruntime FP32": ort(dense_onnx),
             "dense onnxruntime INT8 (dynamic)": ort(int8)}
    timing = time_interleaved(calls, x[:1].numpy(), passes=args.passes, duration_s=args.duration, warmup_s=0.2)
    rows = {k: {"median_ms": v["median_ms"], "spread_pct": v["spread_pct"], "runs": v["pooled"]["runs"]}
            for k, v in timing.items()}
    tuning = res.fields["tuning"]
    out = {"model": str(args.e2e_model), "config": sa.edgevit_shiftadd, "kernel_modules": n_kernels,
           "kernels_in_library": res.fields.get("kernels"), "trials": args.e2e_trials,
           "tuning": {k: tuning.get(k) for k in ("status", "tasks", "tasks_tuned", "trials_total",
                                                 "tuning_time_s_total")},
           "export_seconds": tvm_s, "parity_max_abs_diff": res.parity.max_abs_diff,
           "parity_top1_agreement": res.parity.top1_agreement, "rows": rows}
    best_other = min((k for k in rows if "TVM" not in k), key=lambda k: rows[k]["median_ms"])
    tvm_key = next(k for k in rows if "TVM" in k)
    out["best_other"] = best_other
    out["tvm_faster_than_best_other"] = rows[tvm_key]["median_ms"] < rows[best_other]["median_ms"]
    print(f"\nend to end, batch 1: {args.e2e_model} (TVM {tuning.get('status')}, {tuning.get('trials_total')} trials, "
          f"parity max |Δ logit| {res.parity.max_abs_diff:.2e}, top-1 agreement {res.parity.top1_agreement:.2f})")
    print("| runtime | median ms | spread % |\n| --- | --- | --- |")
    for k, v in rows.items():
        print(f"| {k} | {v['median_ms']:.3f} | {v['spread_pct']:.0f} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=32, help="MetaSchedule trials for the 8 kernel functions together")
    ap.add_argument("--target", default="llvm", help="llvm (this CPU) or cuda (refused without a CUDA TVM and GPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=0.3, help="timed seconds per call per pass")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--work-dir", type=Path, default=None, help="TVM tuning cache root (default: edgevit's cache)")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--e2e-model", type=Path, default=None, help="converted model.safetensors for the end-to-end run")
    ap.add_argument("--e2e-trials", type=int, default=64)
    ap.add_argument("--dense", default="fmnist-vit", help="the dense model of the end-to-end comparison")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/shiftadd_kernels.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from edgevit.formats.tvm.target import resolve_target
    from edgevit.profiling import system_stamp
    from edgevit.versions import library_versions

    resolve_target(args.target, num_cores=args.threads)  # cuda without a CUDA build/GPU: ExportError with the reason
    t_start = time.time()
    results: dict = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    results["machine"] = system_stamp(args.threads)
    results["load_avg_1_5_15"] = {"start": list(os.getloadavg())}
    results["versions"] = library_versions()

    def save() -> None:  # after each part, so a failure later keeps what was measured
        results["seconds"] = round(time.time() - t_start, 1)
        results["load_avg_1_5_15"]["end"] = list(os.getloadavg())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_kernels:
            ops = operands()
            results["shapes"] = {k: ops[k] for k in ("heads", "tokens", "bits", "head_dim")}
            results["kernels"] = kernel_tables(args, ops, tmp)
            save()
        if args.e2e_model is not None:
            results["end_to_end"] = end_to_end(args, tmp)
            save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
