"""ShiftAddViT on fmnist-vit: accuracy after a short finetune, share of linear multiplications removed, energy
estimate, and an interleaved latency comparison against the same dense model's FP32, bf16 and INT8 variants on this
CPU, with the speed gate's verdict (shift/add is kept for deployment only where it is the fastest).

    PYTHONPATH=. python benchmarks/shiftadd_fmnist.py --steps 40 --test-limit 10000 --variants shift,attention,moe

Variants: ``shift`` (softmax attention, shift MLPs), ``attention`` (MatAdd attention, dense MLPs), ``full`` (MatAdd +
shift MLPs), ``moe`` (MatAdd + [dense, shift] MoE MLPs, α measured on torch). Each is converted (KSH fitted on 64
training images), finetuned ``--steps`` optimiser steps (batch ``--batch-size``; MoE: attention step then MoE step,
``--steps`` each) and evaluated on the first ``--test-limit`` test images. Latency (batch 1, ``--threads`` threads,
:func:`edgevit.profiling.latency.time_interleaved`): dense torch FP32, dense torch bf16, dense ONNX Runtime FP32,
dense ONNX Runtime INT8 (dynamic quantisation: int8 weights, VNNI/AMX MatMulInteger), and for the first variant
its torch FP32 form, its ONNX form (power-of-two MatMul) and, with ``--tvm-trials N``, the TVM library with the
matshift/matmask kernels. Results: a table on stdout and ``benchmarks/results/shiftadd_fmnist.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "shift": {"attention": "softmax", "mlp": "shift"},
    "attention": {"attention": "matadd", "mlp": "dense"},
    "full": {"attention": "matadd", "mlp": "shift"},
    "moe": {"attention": "matadd", "mlp": "moe"},
}


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda a: sess.run(None, {name: a})


def _torch_call(model, dtype=torch.float32):
    def run(a):
        with torch.inference_mode():
            return model(torch.from_numpy(a).to(dtype))
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="shift,attention,moe")
    ap.add_argument("--steps", type=int, default=40, help="finetune optimiser steps per variant (and per MoE step)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default: per variant (2e-4 with MatAdd, 2e-5 shift only)")
    ap.add_argument("--kd-weight", type=float, default=0.5, help="distillation weight (teacher: the dense model)")
    ap.add_argument("--test-limit", type=int, default=10000, help="test images for top-1 (10000 = the full set)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=1.0, help="timed seconds per variant per pass")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--tvm-trials", type=int, default=None, help="also compile the first variant with the shift/add "
                                                                  "kernels through TVM (MetaSchedule trials)")
    ap.add_argument("--work", default="runs/shiftadd_bench", help="run folders of the variants")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/shiftadd_fmnist.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from edgevit.data import load_dataset
    from edgevit.methods.shiftadd.config import ConvertConfig, FinetuneConfig
    from edgevit.methods.shiftadd.energy import energy_report
    from edgevit.methods.shiftadd.run import convert_run, finetune_run, top1
    from edgevit.methods.shiftadd.train import dataset_tensors
    from edgevit.models import create
    from edgevit.profiling.latency import time_interleaved
    from edgevit.versions import library_versions

    t_start = time.time()
    dense = create("fmnist-vit")
    x, y = dataset_tensors(load_dataset("fashion-mnist", "test", limit=args.test_limit), dense.edgevit_spec)
    teacher_top1 = top1(dense, x, y)
    print(f"dense fmnist-vit: top-1 {teacher_top1 * 100:.2f}% on {len(x)} test images", flush=True)
    results: dict = {"teacher_top1": teacher_top1, "test_n": len(x), "variants": {}, "latency_ms": {}}
    names = [v for v in args.variants.split(",") if v]
    models = {}
    for name in names:
        run = Path(args.work) / name
        t0 = time.time()
        conv = convert_run(dense, run, config=ConvertConfig(**VARIANTS[name]), eval_limit=256)
        stages = ["attention"] + (["moe"] if name == "moe" else [])
        fts = []
        for stage in stages if args.steps > 0 else []:
            ft_cfg = FinetuneConfig(stage=stage, steps=args.steps, batch_size=args.batch_size, lr=args.lr, log_every=10,
                                    kd_weight=args.kd_weight)
            fts.append(finetune_run(run, config=ft_cfg, eval_limit=256, teacher=dense))
        model = create(str(run / "model.safetensors"))
        models[name] = model
        acc = top1(model, x, y)
        energy = energy_report(dense, model, x[:64])
        results["variants"][name] = {
            "config": conv["config"], "top1": acc, "top1_before_finetune_256": conv["top1_converted"],
            "loss_pt": (teacher_top1 - acc) * 100, "finetune_steps": [f["steps"] for f in fts],
            "finetune_seconds": [f["seconds"] for f in fts], "batch_size": args.batch_size,
            "linear_mult_removed_share": energy["linear_mult_removed_share"],
            "energy_uj": energy["shiftadd"]["energy_uj"], "dense_energy_uj": energy["dense"]["energy_uj"],
            "energy_saving_share": energy["energy_saving_share"], "ops": energy["shiftadd"],
            "seconds": round(time.time() - t0, 1)}
        v = results["variants"][name]
        print(f"{name}: top-1 {acc * 100:.2f}% ({v['loss_pt']:+.2f} pt loss) after {sum(v['finetune_steps'])} steps; "
              f"{v['linear_mult_removed_share'] * 100:.1f}% linear mults removed; energy {v['energy_uj']:.1f} vs "
              f"{v['dense_energy_uj']:.1f} µJ", flush=True)
    results["energy_source"] = energy["source"]

    # ---------------------------------------------------------------------------------------- latency, batch 1
    from edgevit.formats.onnx.export import export_onnx

    work = Path(args.work)
    first = names[0]
    dense_onnx = export_onnx(dense, work / "dense.onnx", parity_images=x[:16]).artifact.path
    sa_onnx = export_onnx(str(work / first / "model.safetensors"), work / f"{first}.onnx",
                          parity_images=x[:16]).artifact.path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = work / "dense_int8_dynamic.onnx"
    quantize_dynamic(str(dense_onnx), str(int8), weight_type=QuantType.QInt8)
    bf16 = create("fmnist-vit").to(torch.bfloat16)
    calls = {"dense torch fp32": _torch_call(dense), "dense torch bf16": _torch_call(bf16, torch.bfloat16),
             "dense onnxruntime fp32": _ort_session(Path(dense_onnx), args.threads),
             "dense onnxruntime int8 (dynamic)": _ort_session(int8, args.threads),
             f"{first} torch fp32": _torch_call(models[first]),
             f"{first} onnxruntime (pow2 MatMul)": _ort_session(Path(sa_onnx), args.threads)}
    if args.tvm_trials is not None:
        from edgevit.formats.tvm.export import export_tvm
        from edgevit.methods.shiftadd.convert import use_kernels
        from edgevit.methods.shiftadd.tvm_kernels import convert_map
        from edgevit.runtimes import load_runtime, open_artifact

        km = create(str(work / first / "model.safetensors"))
        use_kernels(km, True)
        res = export_tvm(km, work / first / "tvm", trials=args.tvm_trials, convert_map=convert_map(),
                         parity_images=x[:16], num_cores=args.threads)
        results["tvm"] = {"trials": args.tvm_trials, "max_abs_diff": res.parity.max_abs_diff,
                          "top1_agreement": res.parity.top1_agreement, "status": res.fields["tuning"]["status"]}
        rt = load_runtime("tvm", open_artifact(res.artifact.path), threads=args.threads)
        calls[f"{first} tvm + matshift/matmask kernels"] = rt.run
    x1 = x[:1].numpy()
    timing = time_interleaved(calls, x1, passes=args.passes, duration_s=args.duration, warmup_s=0.2)
    results["latency_ms"] = {k: {"median_ms": v["median_ms"], "spread_pct": v["spread_pct"],
                                 "runs": v["pooled"]["runs"]} for k, v in timing.items()}
    best_dense = min((k for k in timing if k.startswith("dense")), key=lambda k: timing[k]["median_ms"])
    best_sa = min((k for k in timing if not k.startswith("dense")), key=lambda k: timing[k]["median_ms"])
    faster = timing[best_sa]["median_ms"] < timing[best_dense]["median_ms"]
    results["speed_gate"] = {
        "best_dense": best_dense, "best_shiftadd": best_sa, "kept_for_deployment": faster,
        "verdict": (f"shift/add ({best_sa}) is faster than the best dense variant ({best_dense}): keep it" if faster
                    else f"shift/add is NOT faster on this CPU (best {best_sa} "
                         f"{timing[best_sa]['median_ms']:.3f} ms vs "
                         f"{best_dense} {timing[best_dense]['median_ms']:.3f} ms): kept as an accuracy/energy artefact "
                         f"only")}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "python": platform.python_version()}
    from edgevit.profiling.hardware import HOST_NAME, load_profile

    host = load_profile(HOST_NAME)
    results["machine"].update(cpu=host.cpu_model, isa=list(host.isa),
                              cores=int(host.facts["cores"].value or 0))
    results["versions"] = library_versions()
    results["date_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    results["args"] = vars(args)
    results["seconds"] = round(time.time() - t_start, 1)

    print("\n| variant | top-1 | loss vs teacher | linear mults removed | energy / image (45 nm) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| dense fmnist-vit | {teacher_top1 * 100:.2f}% | - | - | {energy['dense']['energy_uj']:.1f} µJ |")
    for n, v in results["variants"].items():
        what = f"{v['config']['attention']} attention, {v['config']['mlp']} MLP; {sum(v['finetune_steps'])} steps"
        print(f"| {n} ({what})"
              f" | {v['top1'] * 100:.2f}% | {v['loss_pt']:.2f} pt | {v['linear_mult_removed_share'] * 100:.1f}% | "
              f"{v['energy_uj']:.1f} µJ ({v['energy_saving_share'] * 100:.1f}% less) |")
    print("\n| runtime, batch 1 | median ms | spread % |")
    print("| --- | --- | --- |")
    for k, v in results["latency_ms"].items():
        print(f"| {k} | {v['median_ms']:.3f} | {v['spread_pct']:.0f} |")
    print(f"\nspeed gate: {results['speed_gate']['verdict']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
