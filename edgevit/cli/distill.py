"""``edgevit distill cache|train`` (importable without torch; heavy imports happen inside the commands).

    edgevit distill cache --teacher fmnist-vit --data fashion-mnist --epochs 10 --topk 10 [--limit N] --out cache/
    edgevit distill train --student fmnist-vit-tiny --cache cache/ --epochs 10 --out runs/s/ --json out.json
    torchrun --nproc_per_node 2 -m edgevit distill train ...      # data-parallel: gloo on CPU, nccl on GPU
"""

from __future__ import annotations

import argparse
import logging

from .common import positive, write_json_out

log = logging.getLogger(__name__)


def _add_augment_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (replayed from per-sample seeds; defaults: rand-m9-mstd0.5-inc1, "
                             "erasing 0.25)")
    g.add_argument("--crop-padding", type=int, default=None, help="random crop after zero padding (default 2)")
    g.add_argument("--hflip", type=float, default=None, dest="hflip_prob", help="flip probability (default 0.5)")
    g.add_argument("--randaug-n", type=int, default=None, help="RandAugment ops per image (default 2; 0 = off)")
    g.add_argument("--randaug-m", type=float, default=None, help="RandAugment magnitude 0..10 (default 9)")
    g.add_argument("--randaug-mstd", type=float, default=None, help="magnitude noise std (default 0.5)")
    g.add_argument("--erase-prob", type=float, default=None, help="random erasing probability (default 0.25)")
    g.add_argument("--mixup", type=float, default=None, dest="mixup_alpha", help="mixup alpha (default 0 = off)")
    g.add_argument("--cutmix", type=float, default=None, dest="cutmix_alpha", help="cutmix alpha (default 0 = off)")


_AUG_KEYS = ("crop_padding", "hflip_prob", "randaug_n", "randaug_m", "randaug_mstd", "erase_prob", "mixup_alpha",
             "cutmix_alpha")


def _augment_from_args(args):
    given = {k: getattr(args, k) for k in _AUG_KEYS if getattr(args, k, None) is not None}
    if not given:
        return None
    from ..methods.distill.augment import AugmentConfig

    return AugmentConfig(**given)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an ImageFolder directory of grey images")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--split", default="train", help="training split (default train)")
    p.add_argument("--limit", type=positive, default=None, help="use only the first N training samples")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("distill", help="TinyViT-style distillation: write a sparse teacher cache, train "
                                              "students from it (torchrun for several processes)")
    sub = p.add_subparsers(dest="distill_command", metavar="ACTION", required=True)

    c = sub.add_parser("cache", help="run the teacher once over every augmented epoch; store top-K + seeds")
    c.add_argument("--kind", choices=("logits", "embedding"), default="logits",
                   help="logits: sparse top-K of a classifier (default); embedding: fp16 image and text embeddings of "
                        "a dual-encoder teacher (--teacher DIR, --data fashion-mnist-pairs)")
    c.add_argument("--teacher", default="fmnist-vit", help="edgevit/timm model name or checkpoint (default fmnist-vit)")
    c.add_argument("--checkpoint", default=None, help="weights for --teacher")
    _add_data_args(c)
    c.add_argument("--epochs", type=positive, default=10, help="augmented epochs to store (default 10)")
    c.add_argument("--topk", type=positive, default=None,
                   help="K: teacher probabilities kept per sample (default 10, at most classes − 1: 9 for 10 classes)")
    c.add_argument("--seed", type=int, default=0, help="base seed of the per-sample augmentation seeds")
    c.add_argument("--batch-size", type=positive, default=256, help="teacher batch per process (default 256)")
    _add_augment_args(c)
    c.add_argument("--out", required=True, help="cache directory")
    c.add_argument("--overwrite", action="store_true", help="replace a cache with another fingerprint")
    c.add_argument("--device", default="auto", help="cpu, cuda:N or auto (default)")
    c.add_argument("--json", help="write the cache record here")
    c.set_defaults(func=cmd_cache)

    t = sub.add_parser("train", help="train a student from the cache (or online KD / labels, for comparison)")
    t.add_argument("--student", required=True, help="edgevit model (fmnist-vit-tiny) or timm name (tiny_vit_5m_224)")
    t.add_argument("--method", choices=("tinyvit", "dcd", "contrastive", "affinity"), default="tinyvit",
                   help="tinyvit: a classifier from sparse teacher logits (default); dcd / contrastive / affinity: a "
                        "dual-encoder student (--student clip-fmnist-tiny) from a dual-encoder teacher or embedding "
                        "cache, on a caption dataset")
    t.add_argument("--image-root", default=None, help="folder of the images named in a captions JSON")
    t.add_argument("--mode", choices=("cache", "online", "labels"), default="cache",
                   help="targets: the stored teacher top-K (default), the teacher run online, or the labels")
    t.add_argument("--cache", default=None, help="cache directory (mode cache; with online/labels it fixes the "
                                                 "dataset, seeds and transforms to the cache's)")
    t.add_argument("--teacher", default=None, help="teacher for mode online (default: the cache's teacher); in "
                                                   "mode cache it is only checked against the cache, never run")
    t.add_argument("--teacher-checkpoint", default=None, help="weights for --teacher")
    _add_data_args(t)
    _add_augment_args(t)
    t.add_argument("--epochs", type=positive, default=10)
    t.add_argument("--batch-size", type=positive, default=128, help="per process (default 128)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--min-lr", type=float, default=1e-5)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--clip-grad", type=float, default=5.0)
    t.add_argument("--label-smoothing", type=float, default=0.1, help="mode labels only")
    t.add_argument("--topk", type=positive, default=None, help="K for mode online without a cache (default 10, "
                                                                "at most classes − 1)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-limit", type=positive, default=None, help="test images evaluated after each epoch")
    t.add_argument("--no-eval", action="store_true", help="skip the per-epoch test evaluation")
    t.add_argument("--stop-after", type=positive, default=None, help="stop after N epochs; continue with --resume")
    t.add_argument("--replay-cache", action="store_true",
                   help="train longer than the cache stores: epoch e replays stored epoch e mod E")
    t.add_argument("--max-steps", type=positive, default=None, help="cap the steps per epoch (smoke runs)")
    from .vlm import add_dcd_flags, add_false_negative_flag

    add_false_negative_flag(t)  # dual-encoder methods only
    add_dcd_flags(t)
    t.add_argument("--out", required=True, help="run directory: checkpoint.pt, student.safetensors, train_record.json")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt with the next epoch")
    t.add_argument("--device", default="auto", help="cpu, cuda:N or auto (default)")
    t.add_argument("--json", help="write the training record here (rank 0)")
    t.set_defaults(func=cmd_train)


def cmd_cache(args) -> int:
    if args.kind == "embedding":
        from .vlm import cmd_embedding_cache

        return cmd_embedding_cache(args)
    from ..data import load_dataset
    from ..methods.distill import distributed
    from ..methods.distill.cache import write_cache
    from ..models import create

    info = distributed.setup(args.device)
    try:
        teacher = create(args.teacher, checkpoint=args.checkpoint)
        ds = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.limit)
        rec = write_cache(teacher, ds, args.out, epochs=args.epochs, topk=args.topk, seed=args.seed,
                          augment=_augment_from_args(args), split=args.split, batch_size=args.batch_size,
                          overwrite=args.overwrite, teacher_name=args.teacher, dist_info=info)
    finally:
        distributed.teardown(info)
    if info.is_main:
        what = "reused (fingerprint matches)" if rec["reused"] else \
            f"wrote epochs {rec['epochs_written']}" + (f", reused {rec['epochs_reused']}" if rec["epochs_reused"] else "")
        print(f"cache {rec['path']}: {rec['epochs']} epochs × {rec['num_samples']} samples, K={rec['topk']}, "
              f"{rec['record_bytes']} B/sample/epoch; {what} in {rec['seconds']:.1f} s "
              f"({rec['world_size']} process(es))")
        write_json_out(args.json, rec)
    return 0


def cmd_train(args) -> int:
    if args.method != "tinyvit":
        from .vlm import cmd_distill_dual

        return cmd_distill_dual(args)
    import torch

    from ..data import load_dataset
    from ..errors import ConfigError
    from ..methods.distill import distributed
    from ..methods.distill.cache import TeacherCache
    from ..methods.distill.trainer import TrainConfig, load_cache_dataset, train_student
    from ..models import create

    cfg = TrainConfig(mode=args.mode, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
                      weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, clip_grad=args.clip_grad,
                      label_smoothing=args.label_smoothing, topk=args.topk, seed=args.seed,
                      eval_limit=args.eval_limit, stop_after=args.stop_after, max_steps_per_epoch=args.max_steps,
                      replay_cache=args.replay_cache)
    cfg.validate()
    if args.mode == "cache" and not args.cache:
        raise ConfigError("--mode cache needs --cache DIR (write one with `edgevit distill cache`)")
    augment = _augment_from_args(args)
    if args.cache:
        import json
        from pathlib import Path

        from ..methods.vlm.cache import FORMAT as EMBEDDING_FORMAT
        from ..methods.vlm.cache import HEADER

        head = Path(args.cache) / HEADER
        if head.is_file() and json.loads(head.read_text()).get("format") == EMBEDDING_FORMAT:
            raise ConfigError(f"{args.cache} is a dual encoder's embedding cache (distill cache --kind embedding): "
                              f"train a dual-encoder student from it with --method dcd|contrastive|affinity "
                              f"--student clip-fmnist-tiny")
    cache = TeacherCache(args.cache) if args.cache else None
    if cache is not None:
        if augment is not None and augment != cache.augment:
            raise ConfigError("augmentation options conflict with the cache's transforms; drop them (the student "
                              "replays the cache's) or write a new cache")
        augment = None
        ds = load_cache_dataset(cache, data_dir=args.data_dir)
        if args.limit is not None and args.limit != len(ds):
            raise ConfigError(f"--limit {args.limit} differs from the cache's {len(ds)} samples; drop --limit")
        num_classes = cache.num_classes
    else:
        ds = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.limit)
        num_classes = len(ds.classes)
    teacher = None
    teacher_name = args.teacher or (cache.fingerprint["teacher"] if cache is not None else None)
    if args.mode == "online" or (args.mode == "cache" and args.teacher):
        if not teacher_name:
            raise ConfigError("--mode online needs --teacher NAME (or a --cache that names its teacher)")
        teacher = create(teacher_name, checkpoint=args.teacher_checkpoint)
        if cache is not None:
            cache.check(teacher=teacher)
    test = None if args.no_eval else load_dataset(cache.fingerprint["dataset"] if cache is not None else args.data,
                                                  "test", data_dir=args.data_dir)
    info = distributed.setup(args.device)
    try:
        torch.manual_seed(args.seed)
        student = create(args.student, num_classes=num_classes)
        rec = train_student(student, out_dir=args.out, config=cfg, cache=cache, teacher=teacher, dataset=ds,
                            test_dataset=test, augment=augment, resume=args.resume, dist_info=info)
    finally:
        distributed.teardown(info)
    if info.is_main:
        top1 = f"test top-1 {rec['test_top1'] * 100:.2f}%, " if rec["test_top1"] is not None else ""
        secs = sum(h["epoch_s"] for h in rec["history"])
        print(f"trained {rec['student']} ({args.mode}) for epochs {rec['start_epoch'] + 1}..{rec['start_epoch'] + rec['epochs_done']}"
              f": {top1}{secs:.1f} s of training, teacher calls {rec['teacher_calls']}, "
              f"{rec['world_size']} process(es); saved {rec['student_path']}")
        write_json_out(args.json, rec)
    return 0
