#!/usr/bin/env python
"""Train the shipped Fashion-MNIST teacher ``fmnist-vit`` (reproducible: fixed seed, per-epoch checkpoints).

    python scripts/train_teacher.py --out runs/teacher --epochs 15            # ~5.5 min/epoch on 2 cores
    python scripts/train_teacher.py --out runs/teacher --epochs 15 --resume   # continue after a kill

At the end the weights are written as safetensors to ``--weights`` (default: the packaged
``edgevit/weights/fmnist-vit.safetensors``) together with a JSON record of the recipe and accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgevit.data import fashion_mnist
from edgevit.models import fmnist


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation (pad + crop) and horizontal flip on a uint8-derived float batch [B,1,28,28]."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).clamp(max=h + 2 * pad - 1)
    cols = (dx[:, None] + torch.arange(w)[None])
    out = xp[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def normalise(images_u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).float().div_(255.0).unsqueeze(1)
    return (x - fashion_mnist.MEAN[0]) / fashion_mnist.STD[0]


@torch.no_grad()
def evaluate(model, x, y, bs=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += (model(x[i : i + bs]).argmax(1) == y[i : i + bs]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="fmnist-vit", choices=sorted(fmnist.ARCHS))
    ap.add_argument("--out", default="runs/teacher")
    ap.add_argument("--weights", default=None, help="final safetensors path (default: packaged weights)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke runs)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default=None,
                    help="start from these weights (safetensors) with a fresh optimizer and schedule (fine-tuning)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop after this many epochs (the schedule still runs over --epochs); resume later")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Subnormal floats (tiny GELU outputs on the black background, tiny Adam moments) made CPU steps 2-3x slower as
    # training went on; flushing them to zero costs nothing measurable in accuracy.
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    xtr_u8, ytr = fashion_mnist.load("train", limit=args.limit)
    xte_u8, yte = fashion_mnist.load("test")
    xtr, ytr = normalise(xtr_u8), torch.from_numpy(ytr)
    xte, yte = normalise(xte_u8), torch.from_numpy(yte)

    model = fmnist.build(args.arch)
    if args.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(args.init_from))
        print(f"initialised from {args.init_from}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.999),
    )
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warm = int(args.warmup_epochs * steps_per_epoch)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    ckpt_path = out / "checkpoint.pt"
    history, start_epoch = [], 0
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
        print(f"resumed after epoch {start_epoch}", flush=True)

    for epoch in range(start_epoch, args.epochs):
        model.train()
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)  # order + augmentation of this epoch
        perm = torch.randperm(len(xtr), generator=gen)
        t0, seen, loss_sum = time.time(), 0, 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb, yb = augment(xtr[idx], gen), ytr[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + i)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            if i % 50 == 0:
                print(f"epoch {epoch + 1} step {i}/{steps_per_epoch} loss {loss.item():.4f}", flush=True)
        acc = evaluate(model, xte, yte)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "test_top1": acc, "epoch_s": time.time() - t0,
               "schedule_epochs": args.epochs, "lr_end": lr_at((epoch + 1) * steps_per_epoch - 1)}
        history.append(rec)
        print(json.dumps(rec), flush=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                    "history": json.dumps(history)}, tmp)
        os.replace(tmp, ckpt_path)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            print(f"stopping after epoch {epoch + 1} as asked (--stop-after); continue with --resume", flush=True)
            return

    from safetensors.torch import save_file

    weights = Path(args.weights) if args.weights else Path(fmnist.__file__).parent.parent / "weights" / f"{args.arch}.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    record = {"arch": args.arch, "config": fmnist.ARCHS[args.arch], "args": vars(args), "history": history,
              "test_top1": history[-1]["test_top1"] if history else None, "torch": torch.__version__}
    weights.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"saved {weights} (test top-1 {record['test_top1']})", flush=True)


if __name__ == "__main__":
    main()
