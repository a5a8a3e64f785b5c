"""Dual encoders on fashion-mnist-pairs: teacher vs students distilled with contrastive-only, affinity and DCD at an
equal budget (same steps, batch, data, seed), R@1/5/10 both ways on the pairs test split, zero-shot top-1 on the
Fashion-MNIST test set, and image-tower latency of student vs teacher (torch, batch 1, interleaved rounds).

    python benchmarks/vlm_fmnist.py --teacher runs/clip-t/ --steps 200 --train-pairs 20000 --eval-pairs 1000

The students read the teacher from a stored-embedding cache written once here (the teacher runs once per epoch of
the cache, never during student training). Prints a table; writes benchmarks/results/vlm_fmnist.json. Budgets are
in the JSON; numbers from short budgets are what they are: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgevit.data import load_dataset, preprocess
from edgevit.data.captions import load_caption_dataset
from edgevit.methods.vlm.cache import EmbeddingCache, write_embedding_cache
from edgevit.methods.vlm.evaluate import evaluate_retrieval, evaluate_zero_shot
from edgevit.methods.vlm.towers import build_dual_encoder, load_dual_encoder
from edgevit.methods.vlm.train import VlmTrainConfig, train_dual


def interleaved_latency(towers: dict, x: torch.Tensor, rounds: int = 5, runs: int = 20) -> dict:
    """Median ms per batch of each tower; rounds alternate the towers so that load on a shared machine hits all."""
    times: dict[str, list[float]] = {k: [] for k in towers}
    with torch.no_grad():
        for t in towers.values():
            for _ in range(3):
                t(x)
        for _ in range(rounds):
            for k, t in towers.items():
                for _ in range(runs):
                    t0 = time.perf_counter()
                    t(x)
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)), "runs": len(v)}
            for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher dual encoder folder (edgevit vlm train-teacher)")
    ap.add_argument("--student", default="clip-fmnist-tiny")
    ap.add_argument("--steps", type=int, default=200, help="student steps per method (equal budget)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-pairs", type=int, default=20000)
    ap.add_argument("--eval-pairs", type=int, default=1000)
    ap.add_argument("--zero-shot-limit", type=int, default=2000)
    ap.add_argument("--methods", default="contrastive,affinity,dcd")
    ap.add_argument("--out", default="benchmarks/results/vlm_fmnist.json")
    args = ap.parse_args()

    train = load_caption_dataset("fashion-mnist-pairs", "train", limit=args.train_pairs)
    test = load_caption_dataset("fashion-mnist-pairs", "test", limit=args.eval_pairs)
    zs_data = load_dataset("fashion-mnist", "test", limit=args.zero_shot_limit)
    teacher = load_dual_encoder(args.teacher)
    steps_per_epoch = len(train) // args.batch_size
    epochs = max(1, -(-args.steps // steps_per_epoch))
    rows = {"teacher": {**evaluate_retrieval(teacher, test), "zero_shot_top1": evaluate_zero_shot(teacher, zs_data)["top1"],
                        "image_params": sum(p.numel() for p in teacher.image.parameters())}}
    with tempfile.TemporaryDirectory() as tmp:
        cache_rec = write_embedding_cache(teacher, train, Path(tmp) / "cache", epochs=epochs)
        cache = EmbeddingCache(Path(tmp) / "cache")
        students = {}
        for method in args.methods.split(","):
            student = build_dual_encoder(args.student, image_hw=train.image_hw, packaged=False)
            cfg = VlmTrainConfig(method=method, epochs=epochs, batch_size=args.batch_size,
                                 max_steps=min(steps_per_epoch, -(-args.steps // epochs)))
            rec = train_dual(student, train, config=cfg, cache=cache if method != "contrastive" else None)
            students[method] = student
            rows[method] = {**evaluate_retrieval(student, test),
                            "zero_shot_top1": evaluate_zero_shot(student, zs_data)["top1"], "steps": rec["steps"],
                            "train_s": rec["seconds"], "teacher_calls": rec["teacher_calls"],
                            "image_params": sum(p.numel() for p in student.image.parameters())}
    x = torch.from_numpy(preprocess(test.images[:1], teacher.spec))
    lat = interleaved_latency({"teacher": teacher.image.eval(), "student": next(iter(students.values())).image.eval()},
                              x)
    result = {"rows": rows, "latency_torch_batch1": lat, "speedup": lat["teacher"]["median_ms"] /
              lat["student"]["median_ms"], "budget": vars(args) | {"epochs": epochs}, "cache": cache_rec,
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"{'model':12s} {'i2t R@1':>8s} {'R@5':>6s} {'R@10':>6s} {'t2i R@1':>8s} {'R@5':>6s} {'R@10':>6s} {'zero-shot':>9s}")
    for k, r in rows.items():
        print(f"{k:12s} {r['i2t_r1']:8.3f} {r['i2t_r5']:6.3f} {r['i2t_r10']:6.3f} {r['t2i_r1']:8.3f} {r['t2i_r5']:6.3f} "
              f"{r['t2i_r10']:6.3f} {r['zero_shot_top1']:9.3f}")
    print(f"image tower, torch batch 1 (interleaved): teacher {lat['teacher']['median_ms']:.2f} ms, student "
          f"{lat['student']['median_ms']:.2f} ms → {result['speedup']:.2f}×")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
