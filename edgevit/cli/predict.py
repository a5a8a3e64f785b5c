"""``edgevit predict``: predicted batch-1 latency of an ONNX model on hardware targets, with the bound (compute /
memory / launch) and the stated error of every row (:mod:`edgevit.profiling.predictor`)."""

from __future__ import annotations

from .common import write_json_out

COLUMNS = (("target", "target"), ("dtype", "dtype"), ("bound", "bound"), ("latency_ms", "predicted ms"),
           ("compute_ms_b", "compute ms"), ("memory_ms_b", "memory ms"), ("launch_ms_b", "launch ms"),
           ("expected_error_short", "expected error"))


def _names(text: str, flag: str) -> list[str]:
    from ..errors import ConfigError

    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ConfigError(f"{flag}: expected comma-separated names like a,b (no empty items); got {text!r}")
    return items


def _short(row: dict) -> str:
    if row.get("latency_ms") is None:
        return "no prediction"
    pct = row.get("expected_error_pct")
    return f"±{pct:.0f}% (median, held out)" if pct is not None else "unknown (untested)"


def cmd_predict(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..profiling.predictor import predict
    from ..profiling.tables import markdown_table

    path = Path(args.model)
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{args.model}: edgevit predict reads an ONNX file; export one first "
                          "(edgevit export onnx --model M --out m.onnx)")
    if not path.is_file():
        raise ConfigError(f"{args.model}: no such file; export one first (edgevit export onnx --model M --out m.onnx)")
    rows = predict(path, _names(args.target, "--target"), _names(args.dtype, "--dtype"),
                   calibration=args.calibration, mode=args.mode)
    table = []
    for r in rows:
        by = r.get("time_by_bound_ms") or {}
        table.append({**r, "compute_ms_b": by.get("compute"), "memory_ms_b": by.get("memory"),
                      "launch_ms_b": by.get("launch"), "expected_error_short": _short(r)})
    print(markdown_table(table, COLUMNS))
    print()
    for r in rows:  # what each stated error rests on, once per distinct statement
        if r.get("error"):
            print(f"{r['target']} {r['dtype']}: {r['error']}")
    for text in dict.fromkeys(f"{r['target']}: {r['expected_error']}" for r in rows if not r.get("error")):
        print(text)
    host = next((r for r in rows if r["target"] == "host"), None)
    if host is not None:
        print(f"host = {host['target_label']}")
    print("bound: where the predicted time goes (compute- or memory-bound node time, or the fixed per-node "
          "launch/overhead). Batch 1, one kernel per ONNX node.")
    write_json_out(args.json, {"model": str(path), "predictions": rows})
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predicted latency of an ONNX model on hardware targets, with the bound and stated error",
        description="Per-node roofline prediction of batch-1 latency. `host` (this machine, detected) uses "
                    "efficiency factors fitted on this CPU when a fitted file exists (benchmarks/predictor_fit.py) "
                    "and states their error on held-out models; other targets use their datasheet numbers "
                    "(`edgevit list targets`) and say that the error there is unknown.")
    p.add_argument("model", help="an ONNX file (edgevit export onnx ...)")
    p.add_argument("--target", default="host", help="hardware targets, comma-separated (default host; "
                                                    "`edgevit list targets`)")
    p.add_argument("--dtype", default="fp32", help="dtypes, comma-separated: fp32, fp16, bf16, int8 (default fp32)")
    p.add_argument("--mode", default=None, help="power mode of the targets (default: each profile's default)")
    p.add_argument("--calibration", default=None,
                   help="fitted factors file for host (default: the one in hardware_profiles/fitted/ that matches "
                        "this CPU)")
    p.add_argument("--json", help="write every predicted row here")
    p.set_defaults(func=cmd_predict)
