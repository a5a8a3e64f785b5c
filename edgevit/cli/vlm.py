"""Dual image–text encoders on the command line (heavy imports inside the commands).

    edgevit vlm train-teacher --image-tower fmnist-vit --text-tower minilm-l6 --data fashion-mnist-pairs --out runs/clip-t/
    edgevit distill cache --kind embedding --teacher runs/clip-t/ --data fashion-mnist-pairs --epochs N --out cache-e/
    edgevit distill train --method dcd|contrastive|affinity --student clip-fmnist-tiny --teacher runs/clip-t/ --out runs/s/
    edgevit eval --model runs/s/ --task retrieval|zero-shot --data fashion-mnist-pairs|fashion-mnist
"""

from __future__ import annotations

import argparse
import logging

from .common import dual_data_name, positive, write_json_out

log = logging.getLogger(__name__)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="fashion-mnist-pairs", help="caption dataset: fashion-mnist-pairs (default), "
                                                                 "fashion-mnist-captions, coco:FILE.json, karpathy:FILE.json")
    p.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--image-root", default=None, help="folder of the images named in a captions JSON")
    p.add_argument("--limit", type=positive, default=None, help="training images (pairs) to use")
    p.add_argument("--eval-limit", type=positive, default=1000, help="test images evaluated after each epoch")
    p.add_argument("--epochs", type=positive, default=1)
    p.add_argument("--batch-size", type=positive, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-steps", type=positive, default=None, help="cap on the steps per epoch (short runs)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replay-epochs", type=positive, default=None,
                   help="epoch e replays the augmentation seeds of epoch e mod N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (written every epoch)")
    p.add_argument("--stop-after", type=positive, default=None, help="stop after N epochs of the --epochs schedule")
    add_false_negative_flag(p)
    p.add_argument("--threads", type=positive, default=None, help="torch threads (1 shares a busy machine fairly)")
    p.add_argument("--json", help="write the training record here")


def add_dcd_flags(p) -> None:
    """DCD's dual-encoder options (``distill train --method dcd``). Unset flags leave :class:`VlmTrainConfig`'s
    defaults (:func:`dcd_options`)."""
    p.add_argument("--dcd-pool", type=int, default=None, help="dcd: F random in-batch negatives per row that the teacher "
                                                            "picks its 7 hardest from (0: the whole row; default 31)")
    p.add_argument("--dcd-ce", choices=("infonce", "bce"), default=None,
                   help="dcd: the entropy-weighted hard-label term: infonce over the whole row (default) or the "
                        "cross-encoder DCD's bce over the 8 candidates (collapses from scratch)")
    p.add_argument("--dcd-literal-mse", action="store_true",
                   help="dcd: MSE of the absolute scores instead of scores relative to each row's mean")
    p.add_argument("--dcd-clip-weight", type=float, default=None,
                   help="dcd: weight of the student's own in-batch CLIP loss added (default 0.5; 0: DCD alone)")


def dcd_options(args) -> dict:
    """The :class:`VlmTrainConfig` fields of the ``--dcd-*`` flags given on the command line (none: {})."""
    opts: dict = {}
    if getattr(args, "dcd_pool", None) is not None:
        opts["dcd_pool"] = args.dcd_pool or None  # 0: the whole row
    if getattr(args, "dcd_ce", None) is not None:
        opts["dcd_ce"] = args.dcd_ce
    if getattr(args, "dcd_literal_mse", False):
        opts["dcd_center"] = False
    if getattr(args, "dcd_clip_weight", None) is not None:
        opts["dcd_clip_weight"] = args.dcd_clip_weight
    return opts


def add_false_negative_flag(p) -> None:
    """``--keep-false-negatives`` (dual-encoder training in `vlm train-teacher` and `distill train`)."""
    p.add_argument("--keep-false-negatives", action="store_true",
                   help="treat a batch caption that says the same as an image's own caption (an identical string, or "
                        "another template naming the same items in order) as a negative of that image, as plain "
                        "CLIP does (default: left out of its negatives and of DCD's candidates)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("vlm", help="dual image–text encoders: train a LiT-style teacher")
    sub = p.add_subparsers(dest="vlm_command", metavar="ACTION", required=True)
    t = sub.add_parser("train-teacher", help="LiT-style teacher: frozen pretrained text tower, image tower "
                                             "initialised from a trained classifier, CLIP loss")
    t.add_argument("--image-tower", default="fmnist-vit", help="edgevit/timm model whose weights start the image tower")
    t.add_argument("--text-tower", default="minilm-l6", choices=("minilm-l6", "small"))
    t.add_argument("--embed-dim", type=positive, default=256)
    t.add_argument("--text-pool", choices=("attention", "mean"), default="attention",
                   help="pooling of the frozen MiniLM's token states: attention (trainable query and position bias, "
                        "starting as the mean: learns word order; default) or mean (sentence-transformers' pooling, "
                        "nearly order-blind)")
    _add_train_args(t)
    t.add_argument("--out", required=True, help="output folder (dual_encoder.json + one safetensors per tower)")
    t.set_defaults(func=cmd_train_teacher)

    f = sub.add_parser("fold-classifier", help="image tower + class-text embeddings → a plain classifier "
                                               "(safetensors) that eval, export, quantize and compress take")
    f.add_argument("model", help="dual encoder folder (dual_encoder.json)")
    f.add_argument("--classes", default="fashion-mnist",
                   help="fashion-mnist, or class names separated by commas ('cat,dog,bird')")
    f.add_argument("--image-size", type=positive, nargs=2, metavar=("H", "W"), default=None,
                   help="size of the images the classifier will classify (default 28 28 for --classes fashion-mnist, "
                        "else the tower's input): a tower trained on wider tiled images (28×56 pairs) then sees each "
                        "image repeated side by side, as zero-shot evaluation does, not stretched")
    f.add_argument("--out", required=True, help="output .safetensors file")
    f.add_argument("--json", help="write the record (classes, zero-shot vs folded agreement) here")
    f.set_defaults(func=cmd_fold)

    e = sub.add_parser("export", help="alias of `edgevit export FORMAT --model DIR --tower T` (its further flags are "
                                      "handed on): each tower alone (an embedding artefact), parity by cosine "
                                      "similarity on real images / captions")
    e.add_argument("model", help="dual encoder folder (dual_encoder.json)")
    e.add_argument("--tower", choices=("image", "text", "both"), default="both")
    e.add_argument("--format", choices=("onnx", "openvino", "tvm"), default="onnx")
    e.add_argument("--data", default="fashion-mnist-pairs", help="caption dataset whose test images and captions "
                                                                 "are the parity inputs")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--out", required=True, help="output folder (image_tower.*, text_tower.* + tokenizer, towers.json)")
    e.add_argument("--json", help="write the parity records here")
    e.set_defaults(func=cmd_export, forwards_flags=True)  # any further flag of `edgevit export FORMAT` (--trials 0
    # --batch 8 for tvm, --classes, --gallery, --parity-samples, ...) is handed on


def recall_line(res: dict) -> str:
    """R@1/5/10 both ways of :func:`edgevit.methods.vlm.evaluate.evaluate_retrieval`'s record: by content first where
    the data knows what captions say (own-caption R@K of template captions is ~0 for every model), then own caption;
    and how often the own caption beats each hard negative."""
    def three(r: dict, d: str) -> str:
        return "/".join(f"{r[f'{d}_r{k}']:.3f}" for k in (1, 5, 10))

    parts = [f"by content i2t R@1/5/10 {three(res['by_content'], 'i2t')}, t2i {three(res['by_content'], 't2i')}"] \
        if res.get("by_content") else []
    parts.append(f"{'own caption ' if parts else ''}i2t R@1/5/10 {three(res, 'i2t')}, t2i {three(res, 't2i')}")
    if res.get("hard_negatives"):
        parts.append("own caption above each hard negative " + "/".join(f"{w:.3f}"
                                                                       for w in res["hard_negatives"]["win_rate"]))
    return "; ".join(parts)


def load_caption_data(args, split: str, *, limit=None):
    from ..data.captions import load_caption_dataset

    return load_caption_dataset(dual_data_name(args.data), split, data_dir=args.data_dir, limit=limit,
                                image_root=getattr(args, "image_root", None))


def _train_config(args, method: str):
    import torch

    from ..methods.vlm.train import VlmTrainConfig

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)

    return VlmTrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          max_steps=args.max_steps, max_seconds=getattr(args, "max_seconds", None), seed=args.seed,
                          replay_epochs=getattr(args, "replay_epochs", None),
                          stop_after=getattr(args, "stop_after", None),
                          mask_false_negatives=not getattr(args, "keep_false_negatives", False),
                          **dcd_options(args))


def _finish(model, rec: dict, args, test) -> int:
    from ..methods.vlm.evaluate import evaluate_retrieval
    from ..methods.vlm.towers import save_dual_encoder

    if test is not None:  # (--no-eval: none)
        rec["test"] = evaluate_retrieval(model, test)
    save_dual_encoder(model, args.out, extra={"train": {k: v for k, v in rec.items() if k != "test"},
                                              **({"test": rec["test"]} if test is not None else {})})
    result = f"{test.name} ({rec['test']['n_images']} images): {recall_line(rec['test'])}; " if test is not None else ""
    calls = f", teacher calls {rec['teacher_calls']}" if rec["method"] != "contrastive" else ""
    print(f"{rec['method']}: {rec['steps']} steps in {rec['seconds']:.0f} s{calls}; {result}saved {args.out}")
    write_json_out(args.json, rec)
    return 0


def cmd_train_teacher(args) -> int:
    from ..methods.vlm.towers import build_dual_encoder
    from ..methods.vlm.train import train_dual

    train = load_caption_data(args, "train", limit=args.limit)
    test = load_caption_data(args, "test", limit=args.eval_limit)
    text = {"kind": args.text_tower, **({"pool": args.text_pool} if args.text_tower == "minilm-l6" else {})}
    model = build_dual_encoder(image=args.image_tower, text=text, embed_dim=args.embed_dim, image_hw=train.image_hw)
    rec = train_dual(model, train, config=_train_config(args, "contrastive"), eval_data=test,
                     checkpoint_dir=args.out, resume=args.resume, on_epoch=_epoch_saver(model, args))
    return _finish(model, rec, args, test)


def _epoch_saver(model, args):
    """After every epoch: the dual encoder as it stands (loadable while training goes on) and the history so far."""
    from ..methods.vlm.towers import save_dual_encoder

    def save(entry: dict) -> None:
        save_dual_encoder(model, args.out, extra={"train": {"partial": True, "last_epoch": entry}})
        # the epoch's line is train_dual's log; here only where the model as it stands was saved
        log.info("epoch %d: saved the dual encoder as it stands to %s", entry["epoch"], args.out)

    return save


# ------------------------------------------------------------------ hooks of `distill cache|train` and `eval`
def cmd_embedding_cache(args) -> int:
    """``edgevit distill cache --kind embedding``."""
    from ..methods.vlm.cache import write_embedding_cache
    from ..methods.vlm.towers import load_dual_encoder

    teacher = load_dual_encoder(args.teacher)
    data = load_caption_data(args, args.split, limit=args.limit)
    rec = write_embedding_cache(teacher, data, args.out, epochs=args.epochs, seed=args.seed,
                                batch_size=args.batch_size, overwrite=args.overwrite)
    print(f"embedding cache {rec['path']}: {rec['epochs']} epochs × {rec['num_samples']} images "
          f"({rec['record_bytes']} B each) + {rec['texts']} captions in {rec['seconds']:.1f} s")
    write_json_out(args.json, rec)
    return 0


def cmd_distill_dual(args) -> int:
    """``edgevit distill train --method dcd|contrastive|affinity``: a dual-encoder student."""
    from ..errors import ConfigError
    from ..methods.vlm.cache import EmbeddingCache
    from ..methods.vlm.towers import build_dual_encoder, load_dual_encoder
    from ..methods.vlm.train import train_dual

    if dcd_options(args) and args.method != "dcd":
        raise ConfigError(f"--dcd-* flags set the DCD loss; --method {args.method} does not use it (pass "
                          f"--method dcd, or drop them)")
    if args.method == "dcd" and args.dcd_pool and args.dcd_pool < 7:
        raise ConfigError(f"--dcd-pool {args.dcd_pool}: the teacher picks its 7 hardest negatives from the pool, so it "
                          f"needs at least 7 (0: the whole in-batch row)")
    if args.method != "contrastive" and not (args.teacher or args.cache):
        raise ConfigError(f"--method {args.method} needs --teacher DIR (a dual encoder) or --cache DIR")
    train = load_caption_data(args, args.split, limit=args.limit)
    test = None if getattr(args, "no_eval", False) else load_caption_data(args, "test", limit=args.eval_limit or 1000)
    cache = teacher = None
    if args.cache:
        cache = EmbeddingCache(args.cache)
        cache.check(data=train, seed=args.seed)
        if args.teacher:  # only checked against the cache, never run
            cache.check(teacher=load_dual_encoder(args.teacher))
    elif args.teacher:
        teacher = load_dual_encoder(args.teacher)
    student = build_dual_encoder(args.student, image_hw=train.image_hw, packaged=False)
    cfg = _train_config(args, args.method)
    if getattr(args, "replay_cache", False) and cache is not None:
        cfg = cfg.model_copy(update={"replay_epochs": cache.epochs})
    rec = train_dual(student, train, config=cfg, teacher=teacher, cache=cache, checkpoint_dir=args.out,
                     resume=getattr(args, "resume", False))
    return _finish(student, rec, args, test)


def cmd_eval_dual(args) -> int:
    """``edgevit eval --task retrieval|zero-shot --model DIR``."""
    from ..data import load_dataset
    from ..errors import ConfigError
    from ..methods.vlm.evaluate import evaluate_retrieval, evaluate_zero_shot
    from ..methods.vlm.towers import load_dual_encoder

    if getattr(args, "artifact", None):
        if args.task == "zero-shot":
            return _eval_deployed_zero_shot(args)
        raise ConfigError(f"--task {args.task} needs both towers of a dual encoder: pass --model DIR (a folder with "
                          f"dual_encoder.json); an exported image tower alone does zero-shot (--task zero-shot) "
                          f"with the class embeddings stored next to it")
    model = load_dual_encoder(args.model)
    if args.task == "retrieval":
        res = evaluate_retrieval(model, load_caption_data(args, args.split, limit=args.limit))
        print(f"{res['data']}: {recall_line(res)} ({res['n_images']} images, {res['n_texts']} texts, "
              f"{res['seconds']:.1f} s)")
    else:
        res = evaluate_zero_shot(model, load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.limit))
        print(f"zero-shot top-1 {res['top1'] * 100:.2f}%  n={res['n']}  ({res['seconds']:.1f} s)")
    res["model"] = str(args.model)
    write_json_out(args.json, res)
    return 0


def _eval_deployed_zero_shot(args) -> int:
    """``edgevit eval --artifact image_tower.onnx --task zero-shot``: the exported image tower on its runtime + the
    class-text embeddings stored beside it (no text tower runs)."""
    from ..data import load_dataset
    from ..methods.vlm.deploy import read_text_embeddings, zero_shot_deployed
    from ..runtimes import load_runtime, open_artifact
    from .common import default_runtime

    store = read_text_embeddings(args.artifact)  # ModelLoadError saying how to make them when there are none
    art = open_artifact(args.artifact)
    rt = args.runtime or default_runtime(art.kind)
    data = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.limit)
    with load_runtime(rt, art, threads=args.threads, device=args.device) as runtime:
        res = zero_shot_deployed(runtime, data, store=store, batch_size=args.batch_size)
    res["artifact"] = str(args.artifact)
    print(f"zero-shot top-1 {res['top1'] * 100:.2f}%  n={res['n']}  ({rt}, image tower + {len(store['class_names'])} "
          f"stored class embeddings, no text tower; {res['seconds']:.1f} s)")
    write_json_out(args.json, res)
    return 0


def cmd_fold(args) -> int:
    from ..data import fashion_mnist
    from ..methods.vlm.fold import fold_classifier, save_folded
    from ..methods.vlm.towers import load_dual_encoder

    model = load_dual_encoder(args.model)
    classes = fashion_mnist.CLASSES if args.classes == "fashion-mnist" else \
        tuple(c.strip() for c in args.classes.split(",") if c.strip())
    image_hw = tuple(args.image_size) if args.image_size else ((28, 28) if args.classes == "fashion-mnist" else None)
    clf = fold_classifier(model, classes, image_hw=image_hw)
    path = save_folded(clf, args.out)
    rec = {"path": str(path), "classes": list(classes), "arch": clf.edgevit_name,
           "input_size": list(clf.edgevit_spec.input_size), "tile": clf.edgevit_spec.extra.get("tile")}
    print(f"folded {args.model} into a {len(classes)}-class classifier ({clf.edgevit_name}, input "
          f"{'x'.join(map(str, clf.edgevit_spec.input_size))}"
          f"{'; each image repeated {}×{}'.format(*rec['tile']) if rec['tile'] else ''}): {path}")
    write_json_out(args.json, rec)
    return 0


def cmd_export(args) -> int:
    """``edgevit vlm export DIR --format F --tower T ...``: an alias of ``edgevit export F --model DIR --tower T
    ...`` (the same parser and code; any further flags of that command follow)."""
    from ..errors import ConfigError
    from .export import run_export_argv

    extra = getattr(args, "extra_flags", [])
    if args.model in ("onnx", "openvino", "tvm") or "--model" in extra:
        fmt = args.model if args.model in ("onnx", "openvino", "tvm") else args.format
        raise ConfigError(f"`edgevit vlm export` takes the dual-encoder folder first and the format as --format: "
                          f"`edgevit vlm export DIR --format {fmt} --tower {args.tower} --out OUT`, or the same as "
                          f"`edgevit export {fmt} --model DIR --tower {args.tower} --out OUT`")
    argv = [args.format, "--model", args.model, "--tower", args.tower, "--out", args.out,
            "--data", args.data, *(["--data-dir", args.data_dir] if args.data_dir else []),
            *(["--json", args.json] if args.json else []), *extra]
    return run_export_argv(argv)
