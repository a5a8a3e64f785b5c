"""``edgevit shiftadd convert|finetune`` (importable without torch; heavy imports run inside commands)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def add_parser(subparsers):
    """Add ``shiftadd`` with its sub-commands to the top-level ``edgevit`` commands."""
    from ..methods.shiftadd.config import ConvertConfig, FinetuneConfig
    from .common import positive
    from .flags import add_config_flags

    p = subparsers.add_parser(
        "shiftadd", help="ShiftAddViT: MatAdd attention, power-of-two shift MLPs, [dense, shift] mixture of experts",
        description="ShiftAddViT reparameterisation of a trained timm ViT (methods.md §3): convert, then finetune. "
                    "The run folder's model.safetensors loads anywhere a --model FILE is taken (eval, export onnx|"
                    "openvino|tvm).")
    sub = p.add_subparsers(dest="sa_command", metavar="STEP", required=True)

    c = sub.add_parser("convert", help="convert a trained ViT; KSH hash fitted on real training images")
    c.add_argument("--model", required=True, help="edgevit model, timm name or checkpoint path (trained)")
    c.add_argument("--checkpoint", default=None, help="weights for --model")
    c.add_argument("--arch", default=None, help="architecture of a checkpoint given as --model")
    c.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an ImageFolder directory")
    c.add_argument("--data-dir", default=None)
    c.add_argument("--out", required=True, help="run folder (writes model.safetensors, convert.json)")
    c.add_argument("--eval-limit", type=positive, default=1000,
                   help="test images for the before/after top-1 in the record (default 1000)")
    add_config_flags(c, ConvertConfig)  # --attention --mlp --softmax-blocks --bits --anchors --alpha ...
    _add_gate_flag(c)
    c.add_argument("--threads", type=positive, default=None, help="torch threads")
    c.add_argument("--json", help="write the record here too")
    c.set_defaults(func=cmd_convert)

    f = sub.add_parser("finetune", help="finetune a converted model (stage attention, then moe at a lower lr)")
    f.add_argument("run", help="run folder of `shiftadd convert` (or its model.safetensors)")
    f.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an ImageFolder directory")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--eval-limit", type=positive, default=1000,
                   help="test images for the before/after top-1 in the record (default 1000)")
    add_config_flags(f, FinetuneConfig)  # --stage --epochs --steps --batch-size --lr ...
    _add_gate_flag(f)
    f.add_argument("--threads", type=positive, default=None, help="torch threads")
    f.add_argument("--json", help="write the record here too")
    f.set_defaults(func=cmd_finetune)
    return p


def _add_gate_flag(p) -> None:
    p.add_argument("--speed-gate", action="store_true",
                   help="then time the model (torch, ONNX Runtime) against the dense model's FP32, bf16 and INT8 "
                        "forms, interleaved, batch 1 (~10 s): the record says whether it is kept for deployment or "
                        "only as an accuracy/energy artefact (the recipe stage always does this)")


def _gate(rec: dict, load_dense, args) -> None:
    """``--speed-gate``: :func:`edgevit.stages.shiftadd.speed_gate` of the dense model (``load_dense()``; its
    architecture is what is timed) against ``rec``'s checkpoint, into ``rec``, and one line on stdout."""
    if not getattr(args, "speed_gate", False):
        return
    from pathlib import Path

    from ..models import create
    from ..stages.shiftadd import speed_gate

    gate = rec["speed_gate"] = speed_gate(load_dense(), create(rec["checkpoint"]),
                                          work_dir=Path(rec["checkpoint"]).parent)
    print(f"speed gate (batch 1, interleaved): {gate['verdict']}")


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_convert(args) -> int:
    from ..methods.shiftadd.config import ConvertConfig
    from ..methods.shiftadd.run import convert_run
    from ..models import create
    from .common import write_json_out
    from .flags import config_from_args

    cfg = config_from_args(ConvertConfig, args, command="edgevit shiftadd convert")
    _threads(args.threads)
    model = create(args.model, checkpoint=args.checkpoint, arch=args.arch)
    rec = convert_run(model, args.out, config=cfg, data=args.data, data_dir=args.data_dir, eval_limit=args.eval_limit)
    e = rec["energy"]
    print(f"wrote {rec['checkpoint']} (attention {cfg.attention}, mlp {cfg.mlp}): top-1 {rec['top1_dense'] * 100:.2f}% "
          f"dense → {rec['top1_converted'] * 100:.2f}% converted before finetuning (n={rec['eval_n']}); "
          f"{e['linear_mult_removed_share'] * 100:.1f}% of linear-layer multiplications removed, energy "
          f"{e['shiftadd']['energy_uj']:.2f} µJ vs {e['dense']['energy_uj']:.2f} µJ per image (45 nm estimate)"
          + (f"; MoE α [dense, shift] = [{rec['config']['alpha'][0]:.2f}, {rec['config']['alpha'][1]:.2f}] "
             f"(measured)" if cfg.mlp == "moe" and cfg.alpha is None else ""))
    _gate(rec, lambda: create(args.model, checkpoint=args.checkpoint, arch=args.arch), args)
    write_json_out(args.json, rec)
    return 0


def cmd_finetune(args) -> int:
    from ..methods.shiftadd.config import FinetuneConfig
    from ..methods.shiftadd.run import finetune_run
    from .common import write_json_out
    from .flags import config_from_args

    cfg = config_from_args(FinetuneConfig, args, command="edgevit shiftadd finetune")
    _threads(args.threads)
    rec = finetune_run(args.run, config=cfg, data=args.data, data_dir=args.data_dir, eval_limit=args.eval_limit)
    seen = min(rec["steps"] * cfg.batch_size, round(rec["samples"] * cfg.epochs))
    print(f"wrote {rec['checkpoint']}: stage {cfg.stage}, {rec['steps']} steps of batch {cfg.batch_size} ({seen} of "
          f"{rec['samples']} training images seen, {rec['seconds']:.0f} s); top-1 {rec['top1_before'] * 100:.2f}% → {rec['top1_after'] * 100:.2f}% "
          f"(n={rec['eval_n']})")
    from ..models import create

    _gate(rec, lambda: create(rec["teacher"]), args)
    write_json_out(args.json, rec)
    return 0
