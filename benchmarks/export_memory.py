#!/usr/bin/env python
"""Peak memory of ``export_onnx`` on a synthetic model of Linear layers (issue 16, "Smaller faults": exporting a
model with 2.1 GB of weights peaked at 17.5 GB; the target is an export that adds less than 3× the weights).

    PYTHONPATH=$PWD python benchmarks/export_memory.py                      # 416 MB of weights, both exporters
    PYTHONPATH=$PWD python benchmarks/export_memory.py --mb 416 --exporters dynamo

Each variant runs in a fresh subprocess (``--worker``): it builds the model, reads the baseline peak RSS (VmHWM in
/proc/self/status), resets it (writing 5 to /proc/self/clear_refs) when the kernel allows, exports with
``export_onnx(model, out, parity=False)`` and reads VmHWM again. "added" is peak − baseline, and "× weights" is that
over the weight bytes. tracemalloc is not used: most of the memory is native (protobuf, onnx, onnxruntime).
JSON: benchmarks/results/export_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "export_memory.json"
COLS = [("exporter", "exporter"), ("simplify", "simplify"), ("weights_mb", "weights MB"),
        ("baseline_mb", "baseline RSS MB"), ("peak_mb", "peak RSS MB"), ("added_mb", "added MB"),
        ("ratio", "added × weights"), ("external_data", "external data"), ("file_mb", "file MB"),
        ("time_s", "time s")]
WIDTH = 4096


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def build_model(weight_mb: float):
    """A 1×28×28 → 10 classifier of Linear layers (flatten, 784→W, k × W→W, W→10) with about ``weight_mb`` MB."""
    import torch

    from edgevit.spec import InputSpec

    torch.manual_seed(0)
    per_block = WIDTH * WIDTH * 4 + WIDTH * 4
    fixed = (784 * WIDTH + WIDTH + WIDTH * 10 + 10) * 4
    k = max(0, round((weight_mb * 1e6 - fixed) / per_block))
    layers = [torch.nn.Flatten(), torch.nn.Linear(784, WIDTH), torch.nn.ReLU()]
    for _ in range(k):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(WIDTH, 10))
    model = torch.nn.Sequential(*layers).eval()
    with torch.no_grad():  # keep activations small so the graph stays finite whatever the depth
        for m in model:
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(0.5)
    model.edgevit_spec = InputSpec(input_size=(1, 28, 28), mean=(0.5,), std=(0.5,), num_classes=10)
    model.edgevit_name = f"linear-{k}x{WIDTH}"
    return model


def worker(weight_mb: float, exporter: str, simplify: bool) -> dict:
    """One export in this process; returns the memory record (call it in a fresh process)."""
    import gc

    from edgevit.formats.onnx.export import export_onnx

    model = build_model(weight_mb)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    gc.collect()
    baseline_kb = _status_kb("VmRSS")
    try:  # reset the high-water mark to the current RSS, so the peak is the export's alone
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    hwm_before = _status_kb("VmHWM")
    baseline_kb = max(baseline_kb, hwm_before) if reset else baseline_kb
    with tempfile.TemporaryDirectory(prefix="edgevit-expmem-") as tmp:
        t = time.perf_counter()
        rec = export_onnx(model, Path(tmp) / "m.onnx", parity=False, simplify=simplify, exporter=exporter).to_dict()
        seconds = time.perf_counter() - t
        peak_kb = _status_kb("VmHWM")
    added = (peak_kb - baseline_kb) * 1024
    return {"exporter": rec["exporter"], "simplify": simplify, "simplified": rec["simplified"],
            "weight_bytes": weights, "weights_mb": weights / 1e6, "baseline_mb": baseline_kb / 1024,
            "peak_mb": peak_kb / 1024, "added_mb": added / 1e6, "ratio": round(added / weights, 2),
            "hwm_reset": reset, "external_data": rec["external_data"], "file_mb": rec["file_size"] / 1e6,
            "time_s": round(seconds, 1)}


def run_variant(weight_mb: float, exporter: str, simplify: bool, *, timeout: float = 1800) -> dict:
    """Run :func:`worker` in a fresh Python process; returns its record."""
    cmd = [sys.executable, __file__, "--worker", "--mb", str(weight_mb), "--exporters", exporter]
    if not simplify:
        cmd.append("--no-simplify")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=416, help="weights of the synthetic model, MB (default 416)")
    ap.add_argument("--exporters", nargs="+", default=["dynamo", "torchscript"])
    ap.add_argument("--no-simplify", action="store_true", help="measure with simplify=False only")
    ap.add_argument("--label", default="", help="a label stored with the rows (e.g. 'before' / 'after')")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.mb, args.exporters[0], not args.no_simplify)))
        return 0

    from edgevit.artifact import write_json
    from edgevit.profiling import system_stamp
    from edgevit.profiling.tables import markdown_table

    rows = []
    for exporter in args.exporters:
        row = run_variant(args.mb, exporter, not args.no_simplify)
        row["label"] = args.label
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(f"export_onnx(model, out, parity=False) on a synthetic Linear model, {rows[0]['weights_mb']:.0f} MB of "
          f"weights; peak RSS (VmHWM) of a fresh process each")
    print(markdown_table(rows, COLS))
    write_json(args.json, {"benchmark": "export_memory", "label": args.label, "weight_mb": args.mb, "rows": rows,
                           "system": system_stamp()})
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
