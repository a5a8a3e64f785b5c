"""Step time of LiT teacher training with the frozen MiniLM-L6 text tower run on every batch vs the caption table
(:class:`edgevit.methods.vlm.train.FrozenTextTable`: each unique caption embedded once, looked up per step).

    python benchmarks/vlm_step_time.py --batch-size 64 --rounds 3 --steps 3 --threads 1

Both variants take full training steps (forward, CLIP loss, backward, AdamW step) on the same batches of
fashion-mnist-pairs, in interleaved rounds; prints median seconds per step and writes
benchmarks/results/vlm_step_time.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from edgevit.data.captions import load_caption_dataset
from edgevit.methods.distill.augment import epoch_seeds
from edgevit.methods.vlm.cache import all_texts
from edgevit.methods.vlm.losses import clip_loss
from edgevit.methods.vlm.towers import build_dual_encoder
from edgevit.methods.vlm.train import FrozenTextTable, batch_input, batch_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/vlm_step_time.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_caption_dataset("fashion-mnist-pairs", "train", limit=args.batch_size * args.steps * args.rounds)
    model = build_dual_encoder(image="fmnist-vit", text="minilm-l6", embed_dim=256, image_hw=data.image_hw)
    model.train()
    model.text.backbone.eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    t0 = time.perf_counter()
    table = FrozenTextTable(model.text, all_texts(data))
    table_s = time.perf_counter() - t0
    first, seeds = data.first_caption(), epoch_seeds(0, 0, len(data))

    def per_batch(texts):
        return model.text(*model.text.tokenize(texts))

    def lookup(texts):
        return table.embed(texts)

    times: dict[str, list[float]] = {"text tower every batch": [], "caption table": []}
    b = args.batch_size
    for r in range(args.rounds):
        for name, text_emb in (("text tower every batch", per_batch), ("caption table", lookup)):
            for s in range(args.steps):
                idx = np.arange((r * args.steps + s) * b, (r * args.steps + s + 1) * b)
                t = time.perf_counter()
                logits = model.logits(model.image(batch_input(data.images[idx], seeds[idx], model.spec)),
                                      text_emb(batch_texts(data, idx, first, True)))
                loss = clip_loss(logits)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times[name].append(time.perf_counter() - t)
    res = {k: {"median_s": float(np.median(v)), "min_s": float(np.min(v)), "steps": len(v)} for k, v in times.items()}
    out = {"steps": res, "table": {"captions": len(table), "seconds": round(table_s, 2)},
           "speedup": res["text tower every batch"]["median_s"] / res["caption table"]["median_s"],
           "batch_size": b, "texts_per_step": 3 * b, "threads": args.threads,
           "machine": {"cpu": platform.processor() or platform.machine()},
           "load_avg": list(np.round(__import__("os").getloadavg(), 2)),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for k, v in res.items():
        print(f"{k:24s} {v['median_s']:.2f} s/step median (min {v['min_s']:.2f}, {v['steps']} steps)")
    print(f"caption table: {len(table)} captions in {table_s:.1f} s once; {out['speedup']:.2f}x per step")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
