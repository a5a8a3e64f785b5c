#!/usr/bin/env python
"""Distillation benchmarks on Fashion-MNIST (issue 5; specs/methods.md §1, TinyViT-style sparse teacher cache).

    python benchmarks/distill_fmnist.py --epochs 3                    # full 60k train set, full 10k test set
    python benchmarks/distill_fmnist.py --quick                       # smoke run: 512 train images, 1 epoch

It measures, for one student (default fmnist-vit-tiny) and one teacher (default the shipped fmnist-vit):

1. top-1 on the test set of the student trained from the cache vs the same student trained from labels, the same
   epochs, transforms and seeds (and the teacher's top-1);
2. epoch wall time training from the cache vs online KD (the same top-K-smoothed targets, teacher run per batch);
   online KD runs ``--online-epochs`` epochs of the same schedule (its first epoch must match the cache run's); the
   modes take turns epoch by epoch, and the ratio is the mean of the per-epoch ratios online / cache;
3. cache bytes per sample per epoch (4K+4), total bytes, and cache-writing time;
4. batch-1 onnxruntime latency of student and teacher, timed against each other in 5 interleaved passes
   (edgevit.profiling.time_interleaved, median of the pass medians), and their parameter counts.

Prints a table and writes JSON (default benchmarks/results/distill_fmnist.json). Run it on an otherwise idle
machine: the wall times are only as clean as the CPU is quiet.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "distill_fmnist.json"
log = logging.getLogger("distill_fmnist")


def _latencies(models: dict, workdir: Path, images, *, duration: float, threads: int | None) -> dict:
    """Batch-1 onnxruntime latency of each model, exported to ONNX and timed against each other in 5 interleaved
    passes (edgevit.profiling.time_interleaved; median of the pass medians)."""
    from edgevit.data import preprocess
    from edgevit.formats.onnx.export import export_onnx
    from edgevit.profiling import time_interleaved
    from edgevit.runtimes import load_runtime

    rts, recs, x = {}, {}, None
    for name, model in models.items():
        calib = preprocess(images, model.edgevit_spec)
        x = calib[:1]
        recs[name] = export_onnx(model, workdir / f"{name}.onnx", parity_images=calib).to_dict()
        rts[name] = load_runtime("onnxruntime", workdir / f"{name}.onnx", threads=threads)
    res = time_interleaved({n: rt.run for n, rt in rts.items()}, x, passes=5, duration_s=duration / 5,
                           warmup_s=min(0.5, duration / 5))
    return {n: {"median_ms": r["median_ms"], "p90_ms": r["pooled"]["p90_ms"], "mean_ms": r["pooled"]["mean_ms"],
                "runs": r["pooled"]["runs"], "pass_medians_ms": r["pass_medians_ms"],
                "onnx_max_abs_diff": recs[n]["max_abs_diff"], "onnx_file_size": recs[n]["file_size"]}
            for n, r in res.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--teacher", default="fmnist-vit")
    ap.add_argument("--student", default="fmnist-vit-tiny")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the cache and of each student run (default 3)")
    ap.add_argument("--online-epochs", type=int, default=1, help="online-KD epochs timed (default 1)")
    ap.add_argument("--limit", type=int, default=None, help="training images (default: all 60k)")
    ap.add_argument("--eval-limit", type=int, default=None, help="test images (default: all 10k)")
    ap.add_argument("--topk", type=int, default=5, help="K (default 5 of the 10 classes; must be < 10)")
    ap.add_argument("--batch-size", type=int, default=128, help="student batch (default 128)")
    ap.add_argument("--cache-batch-size", type=int, default=256, help="teacher batch when writing (default 256)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-duration", type=float, default=3.0, help="seconds of timed runs per model")
    ap.add_argument("--threads", type=int, default=None, help="torch/onnxruntime threads (default: all cores)")
    ap.add_argument("--work-dir", type=Path, default=Path("runs/bench_distill"), help="cache, runs, ONNX files")
    ap.add_argument("--keep-cache", action="store_true", help="reuse a matching cache in --work-dir (the cache "
                                                               "time is then the earlier run's)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 512 train / 500 test images, 1 epoch, short latency")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.eval_limit, args.epochs = args.limit or 512, args.eval_limit or 500, 1
        args.latency_duration = min(args.latency_duration, 0.5)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("EDGEVIT_PROGRESS", "0")

    import torch

    from edgevit.artifact import write_json
    from edgevit.data import load_dataset
    from edgevit.methods.distill.cache import TeacherCache, write_cache
    from edgevit.methods.distill.trainer import TrainConfig, evaluate_model, train_student
    from edgevit.models import count_params, create
    from edgevit.profiling import system_stamp
    from edgevit.versions import library_versions

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work_dir
    cache_dir = work / "cache"
    if cache_dir.exists() and not args.keep_cache:
        shutil.rmtree(cache_dir)
    train = load_dataset("fashion-mnist", "train", limit=args.limit)
    test = load_dataset("fashion-mnist", "test", limit=args.eval_limit)
    teacher = create(args.teacher)
    t_eval = evaluate_model(teacher, test)
    log.info("teacher %s: top-1 %.4f on %d test images", args.teacher, t_eval["top1"], t_eval["n"])

    # (3) the cache
    t0 = time.perf_counter()
    crec = write_cache(teacher, train, cache_dir, epochs=args.epochs, topk=args.topk, seed=args.seed,
                       batch_size=args.cache_batch_size, teacher_name=args.teacher)
    cache_s = time.perf_counter() - t0
    cache = TeacherCache(cache_dir)

    def student():
        torch.manual_seed(args.seed)
        return create(args.student, num_classes=cache.num_classes)

    base = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "topk": args.topk}
    runs = {}
    # (1) cache vs labels, (2) cache vs online KD. The modes take turns epoch by epoch (each run stops after one
    # epoch and resumes from its checkpoint), so a slow phase of a shared machine hits every mode, and the online/cache
    # ratio is taken per epoch from epochs timed minutes apart, not from runs half an hour apart.
    for e in range(args.epochs):
        for mode in ("cache", "labels", "online"):
            if mode == "online" and e >= args.online_epochs:
                continue
            cfg = TrainConfig(mode=mode, **base, stop_after=1)
            runs[mode] = train_student(student(), out_dir=work / f"student_{mode}", config=cfg, cache=cache,
                                       teacher=teacher if mode == "online" else None, test_dataset=test,
                                       resume=e > 0)
    epoch_s = {m: [h["epoch_s"] for h in r["history"]] for m, r in runs.items()}
    mean_s = {m: sum(v) / len(v) for m, v in epoch_s.items()}
    paired = [o / c for o, c in zip(epoch_s["online"], epoch_s["cache"])]
    speedup = sum(paired) / len(paired)
    first_epoch_same = abs(runs["online"]["history"][0]["test"]["top1"] - runs["cache"]["history"][0]["test"]["top1"])

    # (4) latency and size
    lat_images = test.images[:64]
    stud = create(str(work / "student_cache" / "student.safetensors"))
    lat = _latencies({"student": stud, "teacher": teacher}, work, lat_images, duration=args.latency_duration,
                     threads=args.threads)
    params = {"student": count_params(stud), "teacher": count_params(teacher)}

    result = {
        "benchmark": "distill_fmnist", "quick": args.quick, "args": {k: str(v) if isinstance(v, Path) else v
                                                                      for k, v in vars(args).items()},
        "train_images": len(train), "test_images": len(test),
        "teacher": {"name": args.teacher, "top1": t_eval["top1"], "params": params["teacher"]},
        "student": {"name": args.student, "params": params["student"]},
        "top1": {"cache": runs["cache"]["test_top1"], "labels": runs["labels"]["test_top1"],
                 "online_after_online_epochs": runs["online"]["test_top1"], "teacher": t_eval["top1"]},
        "distilled_beats_labels": runs["cache"]["test_top1"] > runs["labels"]["test_top1"],
        "epoch_s": epoch_s, "mean_epoch_s": mean_s, "online_over_cache": speedup, "online_over_cache_per_epoch": paired,
        "online_first_epoch_top1_diff": first_epoch_same,
        "cache": {"bytes_per_sample_epoch": crec["bytes_per_sample_epoch"], "values_bytes": crec["values_bytes"],
                  "total_bytes_on_disk": cache.total_bytes(), "write_s": cache_s,
                  "write_s_per_epoch": cache_s / args.epochs, "teacher_s": crec["teacher_s"],
                  "augment_s": crec["augment_s"], "reused": crec["reused"], "topk": args.topk},
        "teacher_calls_in_cache_training": runs["cache"]["teacher_calls"],
        "latency_batch1_onnxruntime": lat, "params": params,
        "runs": {m: {k: r[k] for k in ("history", "test_top1", "teacher_calls", "torch_threads")}
                 for m, r in runs.items()},
        "system": system_stamp(threads=torch.get_num_threads()), "versions": library_versions(),
    }
    write_json(args.json, result)

    pct = (lambda v: f"{v * 100:.2f}%")
    rows = [
        ("(1) top-1, student from cache", pct(runs["cache"]["test_top1"])),
        ("(1) top-1, student from labels", pct(runs["labels"]["test_top1"])),
        ("(1) top-1, teacher", pct(t_eval["top1"])),
        ("(1) distilled beats labels", str(result["distilled_beats_labels"])),
        ("(2) epoch wall time, cache", f"{mean_s['cache']:.1f} s"),
        ("(2) epoch wall time, labels", f"{mean_s['labels']:.1f} s"),
        ("(2) epoch wall time, online KD", f"{mean_s['online']:.1f} s"),
        ("(2) online KD ÷ cache", f"{speedup:.2f}×"),
        ("(3) cache bytes / sample / epoch", f"{crec['bytes_per_sample_epoch']} B (K={args.topk})"),
        ("(3) cache size on disk", f"{cache.total_bytes() / 1e6:.2f} MB for {args.epochs} epoch(s)"),
        ("(3) cache writing time", f"{cache_s:.1f} s ({cache_s / args.epochs:.1f} s/epoch)"),
        ("(4) batch-1 ORT latency, student", f"{lat['student']['median_ms']:.3f} ms (p90 {lat['student']['p90_ms']:.3f})"),
        ("(4) batch-1 ORT latency, teacher", f"{lat['teacher']['median_ms']:.3f} ms (p90 {lat['teacher']['p90_ms']:.3f})"),
        ("(4) parameters, student / teacher", f"{params['student'] / 1e6:.3f} M / {params['teacher'] / 1e6:.3f} M"),
    ]
    print(f"\ndistillation on Fashion-MNIST: {len(train)} train / {len(test)} test images, {args.epochs} epoch(s), "
          f"student {args.student}, teacher {args.teacher}, {torch.get_num_threads()} threads")
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n| {'-' * w} | ----- |")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
