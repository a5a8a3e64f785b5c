#!/usr/bin/env python
"""Table of the ShiftAddViT finetunes made by ``benchmarks/shiftadd_finetune.sh``: top-1 on the full 10k test set
(``edgevit eval`` records), the finetune budget of every step that led to each model (from each run folder's
``finetune.json``, following the recipe step-2 runs back to their MatAdd source), the share of linear-layer
multiplications removed and the 45 nm energy estimate, both counted against the dense teacher on 64 real test
images (:func:`edgevit.methods.shiftadd.energy.energy_report`).

    PYTHONPATH=. python benchmarks/shiftadd_finetune_report.py --work runs/sa2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def budget(run: Path) -> list[dict]:
    """The finetune steps recorded in ``run``'s ``finetune.json``, oldest first."""
    steps: list[dict] = []
    for rec in _load(run / "finetune.json") or []:
        steps.append({"run": run.name, "stage": rec["config"]["stage"], "steps": rec["steps"],
                      "batch_size": rec["config"]["batch_size"], "images": rec["steps"] * rec["config"]["batch_size"],
                      "lr": rec["lr"], "kd_weight": rec.get("kd_weight"), "seconds": rec["seconds"]})
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/sa2"))
    ap.add_argument("--sources", default="attn9_full=attn9,attn9_moe=attn9,attn9_shift=attn9",
                    help="run=source pairs of recipe step 2 (the MatAdd run each one was converted from)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/shiftadd_finetune.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from edgevit.data import load_dataset
    from edgevit.methods.shiftadd.energy import energy_report
    from edgevit.methods.shiftadd.train import dataset_tensors
    from edgevit.models import create

    sources = dict(p.split("=") for p in args.sources.split(",") if p)
    dense = create("fmnist-vit")
    x, _ = dataset_tensors(load_dataset("fashion-mnist", "test", limit=64), dense.edgevit_spec)
    rows = []
    for run in sorted(p for p in args.work.iterdir() if (p / "convert.json").exists()):
        ev = _load(run / "eval_test10k.json") or _load(run / "eval_test10k_converted.json")
        if ev is None:
            continue
        model = create(str(run / "model.safetensors"))
        e = energy_report(dense, model, x)
        chain = (budget(args.work / sources[run.name]) if run.name in sources else []) + budget(run)
        rows.append({"run": run.name, "config": model.edgevit_shiftadd, "top1": ev["top1"], "n": ev.get("n"),
                     "finetune": chain, "images_seen": sum(s["images"] for s in chain),
                     "linear_mult_removed_share": e["linear_mult_removed_share"],
                     "energy_uj": e["shiftadd"]["energy_uj"], "dense_energy_uj": e["dense"]["energy_uj"]})
    # the teacher's top-1 on the full 10k test set, as its training record states it
    teacher = float(json.loads((ROOT / "edgevit/weights/fmnist-vit.json").read_text())["test_top1"])
    print("| run | attention (softmax kept) | MLP | finetune budget | top-1 (10k) | loss vs teacher | linear mults "
          "removed | energy / image |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c = r["config"]
        ft = " + ".join(f"{s['steps']}×{s['batch_size']} ({s['stage']}, lr {s['lr']:.0e})" for s in r["finetune"])
        print(f"| {r['run']} | {c['attention']} ({c.get('softmax_blocks') or 'none'}) | {c['mlp']} | {ft or 'none'} | "
              f"{r['top1'] * 100:.2f}% | {(teacher - r['top1']) * 100:.2f} pt | "
              f"{r['linear_mult_removed_share'] * 100:.1f}% | {r['energy_uj']:.1f} µJ |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"teacher_top1": teacher, "rows": rows,
                                    "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
