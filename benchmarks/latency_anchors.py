#!/usr/bin/env python
"""Latency anchors: batch-1 latency of ``fmnist-vit`` and timm ``deit_tiny_patch16_224`` in torch eager and
ONNX Runtime, measured with edgevit's profiler (specs/measurement.md), one clean run.

    python benchmarks/latency_anchors.py                        # 3 s per measurement, JSON to benchmarks/results/
    python benchmarks/latency_anchors.py --threads 2 --duration 10 --json /tmp/anchors.json
    python benchmarks/latency_anchors.py --duration 0.3         # smoke test

Weights do not change latency: ``deit_tiny_patch16_224`` is randomly initialised (no hub access needed) and
``fmnist-vit`` falls back to a random init of the same architecture, with a warning, when its packaged weights
are missing. Inputs are real Fashion-MNIST test images preprocessed to each model's spec (grey → RGB and resized
to 224 for DeiT) when the dataset is installed, random otherwise; the JSON records which.
Run it on an otherwise idle machine: the numbers are only as clean as the CPU is quiet.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevit.artifact import Artifact, write_json
from edgevit.errors import DataError, ModelLoadError
from edgevit.profiling import profile_runtime, profile_table, system_stamp

log = logging.getLogger("latency_anchors")

DEFAULT_MODELS = ("fmnist-vit", "deit_tiny_patch16_224")
DEFAULT_RUNTIMES = ("torch", "onnxruntime")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latency_anchors.json"


def build_model(name: str):
    """``(model, weights note)``: edgevit models with their packaged weights (random init of the same
    architecture, with a warning, when those are missing); timm models with random weights."""
    from edgevit.models import MODELS, attach_spec, create

    if name in MODELS:
        try:
            return create(name), "packaged"
        except ModelLoadError as exc:
            entry = MODELS.get(name)
            if entry.weights_path() is None or entry.weights_path().exists():
                raise
            log.warning("%s — timing a random init of the same architecture instead (latency does not depend on "
                        "the weights)", exc)
            model = entry.build().eval()
            model.edgevit_name = name
            attach_spec(model, entry.spec)
            return model, "random (packaged weights missing)"
    return create(name, pretrained=False), "random"


def real_inputs(spec, n: int = 8) -> np.ndarray | None:
    """``n`` Fashion-MNIST test images preprocessed to ``spec``; None when the dataset is not installed."""
    from edgevit.data import load_dataset, preprocess

    try:
        ds = load_dataset("fashion-mnist", "test", limit=n)
    except DataError as exc:
        log.warning("Fashion-MNIST not available (%s); profiling with random inputs", exc)
        return None
    return preprocess(ds.images, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="edgevit or timm model names")
    ap.add_argument("--runtimes", nargs="+", default=list(DEFAULT_RUNTIMES), help="runtimes to time (first = baseline)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of timed runs per measurement (default 3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up (at least 5 runs; default 0.5)")
    ap.add_argument("--runs", type=int, default=None, help="a fixed number of timed runs instead of --duration")
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: each one's own)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results (default {DEFAULT_JSON})")
    ap.add_argument("--onnx-dir", type=Path, default=None, help="keep the exported ONNX files here (default: temp dir)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from edgevit.formats.onnx.export import export_onnx
    from edgevit.runtimes import load_runtime, open_artifact

    baseline = args.runtimes[0]
    rows: list[dict] = []
    exports: dict[str, dict] = {}
    weights: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgevit-anchors-") as tmp:
        onnx_dir = args.onnx_dir or Path(tmp)
        for name in args.models:
            model, weights[name] = build_model(name)
            spec = model.edgevit_spec
            inputs = real_inputs(spec)
            runtimes = {}
            for rt_name in args.runtimes:
                if rt_name == "torch":
                    art = Artifact(kind="torch", spec=spec, model=model, source=name, meta={"model": name})
                else:
                    if name not in exports:
                        t0 = time.perf_counter()
                        rec = export_onnx(model, onnx_dir / f"{name}.onnx", parity_images=inputs).to_dict()
                        exports[name] = {k: rec.get(k) for k in ("path", "opset", "exporter", "file_size",
                                                                 "max_abs_diff", "top1_agreement", "n")}
                        exports[name]["export_s"] = round(time.perf_counter() - t0, 2)
                        exports[name]["kept"] = args.onnx_dir is not None  # else the path was a temp dir
                    art = open_artifact(exports[name]["path"])
                    art.meta["model"] = name
                runtimes[rt_name] = load_runtime(rt_name, art, threads=args.threads)
            for rt_name, rt in runtimes.items():
                res = profile_runtime(rt, batch_sizes=(1,), warmup_s=args.warmup, runs=args.runs,
                                      duration_s=args.duration, inputs=inputs)
                for r in res:
                    r["weights"] = weights[name]
                    if inputs is not None:
                        r["input_source"] = f"Fashion-MNIST test images preprocessed to {tuple(spec.input_size)}"
                rows.extend(res)
                rt.close()

    base = {r["model"]: r["median_ms"] for r in rows if r["runtime"] == baseline}
    for r in rows:
        b = base.get(r["model"])
        r[f"vs_{baseline}"] = r["median_ms"] / b if b else None
    stamp = rows[0]["system"] if rows else system_stamp(args.threads)
    for r in rows:
        r.pop("system", None)  # one stamp for the whole file

    print(profile_table(rows, extra_columns=[(f"vs_{baseline}", f"÷ {baseline}")]))
    for name in args.models:
        for r in rows:
            if r["model"] == name and r["runtime"] != baseline and r.get(f"vs_{baseline}") is not None:
                print(f"{name}: {r['runtime']}/{baseline} = {r[f'vs_{baseline}']:.2f} "
                      f"(inputs: {r['input_source']}; weights: {weights[name]})")
    ratios: dict[str, dict[str, float | None]] = {}
    for r in rows:
        if r["runtime"] != baseline:
            ratios.setdefault(r["model"], {})[f"{r['runtime']}/{baseline}"] = r[f"vs_{baseline}"]
    out = {
        "benchmark": "latency_anchors",
        "settings": {"models": args.models, "runtimes": args.runtimes, "duration_s": args.duration,
                     "warmup_s": args.warmup, "runs": args.runs, "threads": args.threads, "batch": 1},
        "system": stamp,
        "ratios": ratios,
        "exports": exports,
        "results": rows,
    }
    write_json(args.json, out)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
