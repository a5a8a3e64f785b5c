"""``edgevit data``: dataset tools. ``edgevit data sample`` writes one real image of a dataset to a file (a test image
for the C++ example, which reads PGM/PPM). Importable without torch."""

from __future__ import annotations


def cmd_sample(args) -> int:
    from ..data import load_dataset, write_sample
    from ..errors import DataError

    if args.index < 0:
        raise DataError(f"--index must be 0 or more, got {args.index}")
    ds = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.index + 1)
    if args.index >= len(ds):
        raise DataError(f"--index {args.index}: {ds.name} ({args.split}) has only {len(ds)} images")
    out = write_sample(ds, args.index, args.out)
    label = int(ds.labels[args.index])
    name = f" ({ds.classes[label]})" if 0 <= label < len(ds.classes) else ""
    h, w = ds.images[args.index].shape[:2]
    kind = "RGB" if ds.images[args.index].ndim == 3 and ds.images[args.index].shape[-1] == 3 else "grey"
    print(f"wrote {out}: {ds.name} {args.split} image {args.index}, {w}x{h} {kind}, label {label}{name}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="dataset tools: write a real test image to a file")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sp = sub.add_parser("sample", help="write image --index of a dataset to --out (.pgm/.ppm for the C++ example, "
                                       "or .png/.bmp/.tif), unchanged, and print its label",
                        description="Write one real image of a dataset, at its own size, to an image file: e.g. "
                                    "`edgevit data sample --index 0 --out image.pgm` for examples/cpp/classify.")
    sp.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an ImageFolder directory")
    sp.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files "
                                                     "(default /usr/share/datasets/fashion-mnist)")
    sp.add_argument("--split", default="test", help="dataset split (default test)")
    sp.add_argument("--index", type=int, default=0, help="which image of the split (default 0)")
    sp.add_argument("--out", required=True, help="image file to write; its suffix picks the format")
    sp.set_defaults(func=cmd_sample)
