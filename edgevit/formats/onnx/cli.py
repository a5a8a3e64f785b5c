"""``edgevit export onnx``: torch → ONNX with a parity check on real images."""

from __future__ import annotations

from pathlib import Path

from ...cli.common import add_data_args, add_model_args, positive, write_json_out


def add_parser(export_subparsers) -> None:
    ep = export_subparsers.add_parser("onnx", help="torch → ONNX with a parity check on real images")
    add_model_args(ep, required=True)
    ep.add_argument("--out", required=True, help="output file (e.g. runs/x/model.onnx)")
    ep.add_argument("--opset", type=int, default=18)
    ep.add_argument("--static-batch", action="store_true", help="fix the batch axis instead of a dynamic one")
    ep.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    ep.add_argument("--tolerance", type=float, default=None, help="max abs logit difference vs torch")
    ep.add_argument("--parity-samples", type=positive, default=64, help="real images for the parity check")
    add_data_args(ep)
    ep.add_argument("--json", help="write the export record (max_abs_diff, top1_agreement, ...) here")
    ep.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args) -> int:
    from ...data import load_dataset, preprocess
    from ...models import create
    from .export import export_onnx

    model = create(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained, arch=args.arch)
    images = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.parity_samples).images
    rec = export_onnx(model, Path(args.out), opset=args.opset, dynamic_batch=not args.static_batch,
                      simplify=not args.no_simplify, parity_images=preprocess(images, model.edgevit_spec),
                      tolerance=args.tolerance)
    print(f"wrote {rec.path}: max |Δ| {rec.parity.max_abs_diff:.2e}, top-1 agreement "
          f"{rec.parity.top1_agreement * 100:.1f}% on {rec.parity.n} real images")
    write_json_out(args.json, rec.to_dict())
    return 0
