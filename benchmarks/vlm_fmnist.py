"""Dual encoders on fashion-mnist-pairs: the LiT teacher vs students distilled with contrastive-only, affinity and
DCD at an equal budget (same pairs, steps, batch, seed and replayed augmentations), R@1/5/10 both ways on the pairs
test split, zero-shot top-1 on the Fashion-MNIST test set, and image-tower latency of student vs teacher on
onnxruntime (batch 1, interleaved passes).

The parts run alone (so that a busy machine can run them side by side) or all in sequence; each writes
``WORK/parts/<part>.json`` and ``report`` joins them into benchmarks/results/vlm_fmnist.json:

    B=benchmarks/vlm_fmnist.py; W=--work runs/vlm-bench
    python $B cache   $W --teacher clip-fmnist-teacher --train-pairs 4096 --cache-epochs 1
    python $B student $W --method contrastive --steps 128 --batch-size 128   # needs no cache: may run first
    python $B student $W --method affinity    --steps 128 --batch-size 128   # reads the cache: 0 teacher calls
    python $B student $W --method dcd         --steps 128 --batch-size 128
    python $B teacher $W --teacher clip-fmnist-teacher                       # R@K and zero-shot of the teacher
    python $B latency $W --teacher clip-fmnist-teacher
    python $B report  $W                                                     # → table + JSON
    python $B all     $W --teacher clip-fmnist-teacher ...                   # every part in sequence

Students read the teacher only from the stored-embedding cache written once by ``cache`` (the teacher runs there,
never during student training; the parts record the count). Every method replays the cache's augmentation seeds
(``replay_epochs`` = the cache's epochs), so all see the same images. R@K is reported two ways: ``by content`` (a
caption is relevant to every image that shows the two items it names, in its order: the headline, see
:func:`edgevit.methods.vlm.evaluate.recall_at_k_by_content`) and ``instance`` (only the image's own caption
counts; capped far below 1 on template captions, since one string describes ~37 of 10,000 test pairs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from edgevit.cli.vlm import add_dcd_flags, dcd_options
from edgevit.data import load_dataset
from edgevit.data.captions import load_caption_dataset
from edgevit.methods.vlm.cache import EmbeddingCache, write_embedding_cache
from edgevit.methods.vlm.evaluate import evaluate_retrieval, evaluate_zero_shot
from edgevit.methods.vlm.towers import build_dual_encoder, load_dual_encoder, save_dual_encoder
from edgevit.methods.vlm.train import VlmTrainConfig, train_dual

PARTS = ("cache", "teacher", "student", "latency", "report", "all")


def machine() -> dict:
    """CPU model (lscpu), cores, load averages, torch version: the context of every timing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        model = ""
    return {"cpu": model or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _write_part(work: Path, name: str, rec: dict) -> None:
    (work / "parts").mkdir(parents=True, exist_ok=True)
    (work / "parts" / f"{name}.json").write_text(json.dumps({**rec, "machine": machine()}, indent=2,
                                                            default=str) + "\n")
    print(f"wrote {work / 'parts' / f'{name}.json'}", flush=True)


def _train_data(args):
    return load_caption_dataset("fashion-mnist-pairs", "train", limit=args.train_pairs)


def _evaluate(model, args) -> dict:
    test = load_caption_dataset("fashion-mnist-pairs", "test", limit=args.eval_pairs)
    ret = evaluate_retrieval(model, test)
    zs = evaluate_zero_shot(model, load_dataset("fashion-mnist", "test", limit=args.zero_shot_limit))
    return {"retrieval": ret, "zero_shot": zs}


def part_cache(args) -> None:
    teacher = load_dual_encoder(args.teacher)
    rec = write_embedding_cache(teacher, _train_data(args), args.work / "cache", epochs=args.cache_epochs,
                                seed=args.seed, overwrite=True)
    _write_part(args.work, "cache", {"teacher": args.teacher, **rec})


def part_teacher(args) -> None:
    teacher = load_dual_encoder(args.teacher)
    _write_part(args.work, "teacher", {"teacher": args.teacher, **_evaluate(teacher, args),
                                       "image_params": sum(p.numel() for p in teacher.image.parameters()),
                                       "train": getattr(teacher, "edgevit_config", {}).get("train")})


def part_student(args) -> None:
    train = _train_data(args)
    cache = None
    replay = args.cache_epochs
    if args.method != "contrastive":
        cache = EmbeddingCache(args.work / "cache")
        cache.check(data=train, seed=args.seed)
        replay = cache.epochs
    steps_per_epoch = len(train) // args.batch_size
    epochs = max(1, -(-args.steps // steps_per_epoch))
    cfg = VlmTrainConfig(method=args.method, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                         max_steps=min(steps_per_epoch, -(-args.steps // epochs)), replay_epochs=replay,
                         seed=args.seed, mask_false_negatives=not args.keep_false_negatives,
                         **dcd_options(args))
    tag = args.tag or args.method
    student = build_dual_encoder(args.student, image_hw=train.image_hw, packaged=False)
    out = args.work / "students" / tag
    rec = train_dual(student, train, config=cfg, cache=cache, checkpoint_dir=out, resume=True)
    save_dual_encoder(student, out, extra={"train": rec})
    _write_part(args.work, tag, {"method": args.method, "tag": tag, "student": args.student, "train": rec,
                                         "cache": str(cache.path) if cache else None,
                                         "cache_reads": cache.reads if cache else 0, **_evaluate(student, args),
                                         "image_params": sum(p.numel() for p in student.image.parameters())})


def part_latency(args) -> None:
    """Image towers exported to ONNX (cosine parity on real pairs), timed against each other on onnxruntime with
    :func:`edgevit.profiling.ort_nodes.measure_interleaved` (batch 1, ``--threads`` intra-op threads)."""
    from edgevit.methods.vlm.deploy import export_image_onnx
    from edgevit.profiling.ort_nodes import measure_interleaved

    images = load_caption_dataset("fashion-mnist-pairs", "test", limit=16).images
    student_dir = args.work / "students" / "dcd"
    models = {"teacher": load_dual_encoder(args.teacher),
              "student": load_dual_encoder(student_dir) if (student_dir / "dual_encoder.json").is_file()
              else build_dual_encoder(args.student, image_hw=(28, 56), packaged=False)}
    paths, parity = {}, {}
    for name, m in models.items():
        rec = export_image_onnx(m, args.work / "onnx" / f"{name}_image.onnx", images=images)
        paths[name], parity[name] = rec["path"], rec
    lat = measure_interleaved(paths, threads=args.threads, passes=args.passes, runs=args.runs)
    keep = ("wall_ms", "pass_medians_ms", "spread_pct", "quiet_ms", "cpu_ms", "load_avg")
    res = {name: {k: v.get(k) for k in keep} for name, v in lat.items()}
    _write_part(args.work, "latency", {"runtime": "onnxruntime", "batch": 1, "threads": args.threads,
                                       "passes": args.passes, "runs": args.runs, "towers": res, "parity": parity,
                                       "student_weights": str(student_dir) if "student" in paths else None,
                                       "speedup_wall": res["teacher"]["wall_ms"] / res["student"]["wall_ms"],
                                       "speedup_cpu": res["teacher"]["cpu_ms"] / res["student"]["cpu_ms"]})


def _row(part: dict) -> dict:
    r, c = part["retrieval"], part["retrieval"].get("by_content", {})
    return {**{f"{k}": c.get(k) for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")},
            **{f"instance_{k}": r[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")},
            "zero_shot_top1": part["zero_shot"]["top1"], "n_pairs": r["n_images"], "n_zero_shot": part["zero_shot"]["n"],
            "image_params": part["image_params"],
            "own_above_swapped": r.get("hard_negatives", {}).get("win_rate", [None])[0]}


def part_report(args) -> None:
    parts = {p.stem: json.loads(p.read_text()) for p in sorted((args.work / "parts").glob("*.json"))}
    rows = {}
    students = sorted((k for k, v in parts.items() if "retrieval" in v and k != "teacher"),
                      key=lambda k: (["contrastive", "affinity", "dcd"].index(parts[k].get("method", "dcd")), k))
    for name in ("teacher", *students):  # every part with retrieval numbers (tags: variants of a method)
        if name in parts:
            rows[name] = _row(parts[name])
            if name != "teacher":
                t = parts[name]["train"]
                rows[name].update({"steps": t["steps"], "batch_size": t["config"]["batch_size"],
                                   "train_s": t["seconds"], "teacher_calls": t["teacher_calls"],
                                   "final_loss": t["history"][-1]["loss"]})
    result = {"rows": rows, "latency": parts.get("latency"), "cache": parts.get("cache"), "machine": machine(),
              "parts": {k: v.get("machine") for k, v in parts.items()}}
    hdr = (f"{'model':16s} {'i2t R@1':>8s} {'R@5':>6s} {'R@10':>6s} {'t2i R@1':>8s} {'R@5':>6s} {'R@10':>6s} "
           f"{'zero-shot':>9s} {'AB>BA':>6s}")
    for kind, pre in (("by content", ""), ("instance", "instance_")):
        print(f"R@K {kind}\n{hdr}")
        for k, r in rows.items():
            swapped = r["own_above_swapped"]
            print(f"{k:16s} {r[pre + 'i2t_r1']:8.3f} {r[pre + 'i2t_r5']:6.3f} {r[pre + 'i2t_r10']:6.3f} "
                  f"{r[pre + 't2i_r1']:8.3f} {r[pre + 't2i_r5']:6.3f} {r[pre + 't2i_r10']:6.3f} "
                  f"{r['zero_shot_top1']:9.4f} {swapped if swapped is not None else float('nan'):6.3f}")
    lat = parts.get("latency")
    if lat:
        t, s = lat["towers"]["teacher"], lat["towers"]["student"]
        print(f"image tower, onnxruntime batch 1, {lat['threads']} thread(s), {lat['passes']} interleaved passes: "
              f"teacher {t['wall_ms']:.2f} ms (cpu {t['cpu_ms']:.2f}), student {s['wall_ms']:.2f} ms "
              f"(cpu {s['cpu_ms']:.2f}) → {lat['speedup_wall']:.2f}× wall, {lat['speedup_cpu']:.2f}× cpu")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--work", type=Path, default=Path("runs/vlm-bench"), help="cache, students, parts/*.json")
    ap.add_argument("--teacher", default="clip-fmnist-teacher", help="teacher dual encoder (name or folder)")
    ap.add_argument("--student", default="clip-fmnist-tiny")
    ap.add_argument("--method", choices=("contrastive", "affinity", "dcd"), help="student part: the loss")
    ap.add_argument("--methods", default="contrastive,affinity,dcd", help="all: the students to train")
    ap.add_argument("--keep-false-negatives", action="store_true",
                    help="student part: same-content captions stay negatives (as before false-negative masking)")
    add_dcd_flags(ap)  # the --dcd-* flags of `edgevit distill train`
    ap.add_argument("--tag", help="student part: name of its part and folder (default: the method)")
    ap.add_argument("--steps", type=int, default=128, help="student steps per method (equal budget)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-pairs", type=int, default=4096)
    ap.add_argument("--cache-epochs", type=int, default=1, help="augmented passes stored, replayed by every method")
    ap.add_argument("--eval-pairs", type=int, default=None, help="test pairs (default: the whole split, 10,000)")
    ap.add_argument("--zero-shot-limit", type=int, default=None, help="default: the whole test set, 10,000")
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/vlm_fmnist.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "student" and not args.method:
        ap.error("student needs --method contrastive|affinity|dcd")
    if args.part == "all":
        part_cache(args)
        for m in args.methods.split(","):
            args.method = m
            part_student(args)
        part_teacher(args)
        part_latency(args)
        part_report(args)
    else:
        {"cache": part_cache, "teacher": part_teacher, "student": part_student, "latency": part_latency,
         "report": part_report}[args.part](args)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
