"""The headline of `edgevit compress`: the final artefact of a run against the teacher, each on its best runtime here.

    edgevit compress examples/recipes/edge.yaml --out runs/edge            # the full-budget run (hours on 2 cores)
    PYTHONPATH=$PWD python benchmarks/compress_fmnist.py --run runs/edge   # this table; JSON to benchmarks/results/

Every artefact of the run that a user could ship — the teacher (the run's source model), the distilled student,
the student with early exits (FP32 cascade), the INT8 cascade — is timed at batch 1 on every runtime here that loads
it (torch, ONNX Runtime, OpenVINO; a torch model is exported to ONNX once for the ONNX runtimes), image by image over
the same test images (the full 10k Fashion-MNIST test set by default). Variants take turns: the images are split into
``--passes`` chunks and every (artefact, runtime) pair runs each chunk, in a rotated order, before the next chunk
starts, so a slow phase of the machine hits every pair alike. Latency of a cascade is per image, with its real exits.

Per artefact the fastest runtime is its "best runtime" (lowest mean); the headline is the final artefact's mean
latency on its best runtime against the teacher's on the teacher's best runtime, with the top-1 of the same runs.
Goal (issue "compress end to end"): ≥ 5× lower mean latency at ≤ 1.0 pt top-1 loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_SPEEDUP, GOAL_LOSS_PT = 5.0, 1.0


def run_artifacts(run_dir: Path) -> list[tuple[str, str, object]]:
    """``(label, stage id, Artifact)`` for the shippable artefacts of a finished run, in run order: the source model,
    each distilled/converted torch model, each cascade (FP32 and INT8); exports of the same graphs are left out (they
    are the same model in another file)."""
    from edgevit.artifact import Artifact

    out = []
    for d in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "record.json").exists()):
        rec = json.loads((d / "record.json").read_text())
        if rec.get("status") != "done" or not rec.get("artifact"):
            continue
        art = Artifact.from_dict(rec["artifact"], relative_to=d)
        stage = rec["stage"]
        if stage == "load":
            out.append(("teacher", rec["id"], art))
        elif stage == "distill" and art.kind == "torch":
            out.append(("student", rec["id"], art))
        elif stage == "shiftadd" and art.kind == "torch":
            out.append(("student + shift/add", rec["id"], art))
        elif stage == "early_exit" and art.kind == "cascade":
            out.append(("student + exits", rec["id"], art))
        elif stage == "quantize" and art.kind == "cascade":
            # the INT8 cascade is timed whatever the speed gate chose: the table shows what INT8 bought here
            int8 = d / "int8" / "manifest.json"
            if (rec.get("metrics") or {}).get("selected") == "fp32" and int8.exists():
                out.append(("student + exits + INT8 (gate: rejected)", rec["id"],
                            Artifact(kind="cascade", path=int8, spec=art.spec, meta={"precision": "int8"})))
            else:
                out.append(("student + exits + INT8", rec["id"], art))
        elif stage == "quantize":
            out.append(("student + INT8", rec["id"], art))
        elif stage == "export_onnx" and (rec.get("metrics") or {}).get("if_form") and out:
            # the same cascade as one ONNX graph with If nodes (batch 1): another way to run the latest cascade
            if_path = Path(rec["metrics"]["if_form"])
            if not if_path.is_absolute():
                if_path = d / if_path.name
            # the cascade the pipeline handed to that export: the latest one it kept (not a variant the gate rejected)
            label = next((lab for lab, _, a in reversed(out) if a.kind == "cascade" and "rejected" not in lab),
                         "cascade")
            out.append((f"{label}, If form", rec["id"],
                        Artifact(kind="onnx", path=if_path, spec=art.spec, meta={"if_form": True})))
    if not out:
        raise SystemExit(f"{run_dir}: no finished stages with artefacts; run `edgevit compress` first")
    return out


def final_label(arts) -> str:
    """The artefact the run hands on at its end (the latest one the pipeline selected, not a rejected variant);
    its If form counts as the same model run another way."""
    kept = [a for a in arts if "rejected" not in a[0] and "If form" not in a[0]]
    return kept[-1][0]


def runtimes_for(art, onnx_dir: Path, threads: int, parity_images):
    """``[(runtime name, Runtime)]`` for one artefact: torch models on torch, ONNX Runtime and OpenVINO (through an
    ONNX export written once into ``onnx_dir``), cascades on every runtime that hosts them."""
    from edgevit.api import export
    from edgevit.runtimes import load_runtime, runtime_loads

    pairs = []
    if art.kind == "onnx":  # the If form of a cascade (batch 1)
        for name in ("onnxruntime", "openvino"):
            pairs.append((name, load_runtime(name, art, threads=threads)))
    elif art.kind == "torch":
        pairs.append(("torch", load_runtime("torch", art, threads=threads)))
        onnx = onnx_dir / f"{Path(art.path).parent.name}.onnx"
        if not onnx.exists():
            export(art.load_model(), "onnx", out=onnx, parity_images=parity_images)
        for name in ("onnxruntime", "openvino"):
            pairs.append((name, load_runtime(name, onnx, threads=threads)))
    else:
        for name in ("onnxruntime", "openvino"):
            if runtime_loads(name, art.kind):
                pairs.append((name, load_runtime(name, art, threads=threads)))
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished `edgevit compress` run directory")
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10k)")
    ap.add_argument("--passes", type=int, default=10, help="interleaved chunks (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="runtime threads (default: the runtime's)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed images per pair before timing")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/compress_fmnist.json"))
    args = ap.parse_args(argv)

    from edgevit.data import load_dataset, preprocess
    from edgevit.profiling.host import detect_cpu
    from edgevit.versions import library_versions

    run_dir = Path(args.run)
    arts = run_artifacts(run_dir)
    onnx_dir = run_dir / "benchmark_onnx"
    onnx_dir.mkdir(exist_ok=True)
    data = load_dataset("fashion-mnist", "test", limit=args.limit)
    spec = arts[0][2].spec
    x = preprocess(data.images, spec)
    y = np.asarray(data.labels)
    n = len(y)

    pairs = []  # (label, stage id, runtime name, Runtime)
    for label, sid, art in arts:
        for name, rt in runtimes_for(art, onnx_dir, args.threads, data.images[:64]):
            pairs.append((label, sid, name, rt))
    for _, _, _, rt in pairs:  # warm-up
        for i in range(min(args.warmup, n)):
            rt.run(x[i:i + 1])
        if getattr(rt, "exit_counts", None) is not None:
            rt.exit_counts[:] = 0

    times = {k: np.zeros(n) for k in range(len(pairs))}
    preds = {k: np.zeros(n, dtype=np.int64) for k in range(len(pairs))}
    chunks = np.array_split(np.arange(n), args.passes)
    t_start = time.time()
    clock = time.perf_counter_ns
    for c, idx in enumerate(chunks):
        order = [(c + j) % len(pairs) for j in range(len(pairs))]  # rotate who goes first
        for k in order:
            rt = pairs[k][3]
            for i in idx:
                t0 = clock()
                logits = rt.run(x[i:i + 1])
                times[k][i] = (clock() - t0) / 1e6
                preds[k][i] = int(np.argmax(logits[0]))
        print(f"pass {c + 1}/{len(chunks)} done ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)

    rows = []
    for k, (label, sid, name, rt) in enumerate(pairs):
        t = times[k]
        row = {"artifact": label, "stage_id": sid, "runtime": name, "top1": float((preds[k] == y).mean()),
               "mean_ms": float(t.mean()), "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
               "n": int(n)}
        if getattr(rt, "exit_counts", None) is not None:
            counts = np.asarray(rt.exit_counts, dtype=float)
            row["exit_rates"] = [round(float(v), 4) for v in counts / max(counts.sum(), 1)]
        rows.append(row)
    best = {}
    for r in rows:
        if r["artifact"] not in best or r["mean_ms"] < best[r["artifact"]]["mean_ms"]:
            best[r["artifact"]] = r
    teacher = best["teacher"]
    for r in best.values():
        r["speedup_vs_teacher"] = teacher["mean_ms"] / r["mean_ms"]
        r["top1_loss_pt"] = 100 * (teacher["top1"] - r["top1"])
    fin = final_label(arts)
    if_form = f"{fin}, If form"
    final = min((best[k] for k in (fin, if_form) if k in best), key=lambda r: r["mean_ms"])
    met = final["speedup_vs_teacher"] >= GOAL_SPEEDUP and final["top1_loss_pt"] <= GOAL_LOSS_PT
    cpu = detect_cpu()

    print(f"\nmachine: {cpu.label if hasattr(cpu, 'label') else cpu}; {n} test images, batch 1, {args.passes} "
          f"interleaved passes; {time.strftime('%Y-%m-%d')}")
    print("\nEvery artefact × runtime (mean / median / p90 ms per image, top-1 of the same runs):")
    print(f"| {'artefact':40s} | {'runtime':11s} | {'top-1':>7s} | {'mean ms':>8s} | {'median':>7s} | {'p90':>7s} |")
    print(f"| {'-' * 40} | {'-' * 11} | {'-' * 7}:| {'-' * 8}:| {'-' * 7}:| {'-' * 7}:|")
    for r in rows:
        print(f"| {r['artifact']:40s} | {r['runtime']:11s} | {100 * r['top1']:6.2f}% | {r['mean_ms']:8.3f} | "
              f"{r['median_ms']:7.3f} | {r['p90_ms']:7.3f} |")
    print("\nEach artefact on its best runtime, against the teacher on its best runtime:")
    print(f"| {'artefact':40s} | {'best runtime':12s} | {'top-1':>7s} | {'loss pt':>7s} | {'mean ms':>8s} | "
          f"{'speed-up':>8s} |")
    print(f"| {'-' * 40} | {'-' * 12} | {'-' * 7}:| {'-' * 7}:| {'-' * 8}:| {'-' * 8}:|")
    for label, _, _ in arts:
        r = best[label]
        print(f"| {label:40s} | {r['runtime']:12s} | {100 * r['top1']:6.2f}% | {r['top1_loss_pt']:7.2f} | "
              f"{r['mean_ms']:8.3f} | {r['speedup_vs_teacher']:7.2f}× |")
    print(f"\nfinal artefact: {final['artifact']} on {final['runtime']}")
    print(f"goal ≥ {GOAL_SPEEDUP}× at ≤ {GOAL_LOSS_PT} pt: {'MET' if met else 'NOT met'} "
          f"({final['speedup_vs_teacher']:.2f}× at {final['top1_loss_pt']:.2f} pt)")

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "compress_fmnist", "run": str(run_dir), "date": time.strftime("%Y-%m-%d"),
                               "machine": getattr(cpu, "label", str(cpu)), "n": n, "passes": args.passes,
                               "rows": rows, "best": best, "final": final, "goal": {"speedup": GOAL_SPEEDUP, "loss_pt": GOAL_LOSS_PT,
                                                                    "met": met},
                               "versions": library_versions()}, indent=1) + "\n")
    print(f"wrote {out}")
    for *_, rt in pairs:
        rt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
