"""``edgevit export tvm``: torch model → TVM library (.so), MetaSchedule-tuned with a cached database, parity checked.

Importable without torch or tvm (both are imported when the command runs).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text}")
    return v


def add_parser(export_subparsers) -> argparse.ArgumentParser:
    """Add ``tvm`` to the ``edgevit export`` sub-commands."""
    from ...cli.common import add_parity_args, add_source_args, positive

    p = export_subparsers.add_parser(
        "tvm", help="torch → TVM library (.so) for this CPU (or a given target), MetaSchedule-tuned, parity checked",
        description="Compile a model with TVM (Relax) for one static batch size, tune its kernels with MetaSchedule "
                    "(the database is cached per model shapes + target and reused by later exports), and check the "
                    "library against torch on real images. Writes model.so, model.so.tvm.json (target, CPU "
                    "features, tuning) and model.so.spec.json, so `edgevit eval --artifact model.so --batch-size B` "
                    "and `edgevit profile model.so --batch B` work on it. Untuned CPU libraries are slow: real "
                    "budgets are ~1000-2000 trials for DeiT-Tiny (about 25 min on 2 cores).")
    add_source_args(p, required=True)
    p.add_argument("--out", required=True, help="output directory (writes model.so there) or a path ending in .so")
    p.add_argument("--target", default="llvm",
                   help="llvm (this CPU, detected like llc -mcpu=native), cuda, or a TVM target as JSON, e.g. "
                        "'{\"kind\": \"llvm\", \"mcpu\": \"x86-64-v3\"}' (default llvm)")
    p.add_argument("--mcpu", default=None, help="CPU of an llvm target, e.g. x86-64-v3 for any AVX2 machine, "
                                                "skylake-avx512, cortex-a76")
    p.add_argument("--num-cores", type=positive, default=None,
                   help="threads the tuned kernels are scheduled for (default: the CPUs this process may use)")
    p.add_argument("--trials", type=_non_negative, default=256,
                   help="MetaSchedule trials (default 256; 0 = untuned and slow; ~1000+ for real speed)")
    p.add_argument("--batch", type=positive, default=1, help="static batch size of the library (default 1)")
    p.add_argument("--work-dir", default=None,
                   help="tuning cache root (default $EDGEVIT_TVM_CACHE or ~/.cache/edgevit/tvm)")
    p.add_argument("--retune", action="store_true", help="ignore a cached tuning database and tune again")
    p.add_argument("--tuning-timeout", type=float, default=60.0,
                   help="seconds allowed to build or run one tuning candidate (raise on a busy machine)")
    p.add_argument("--cc", default=None, help="cross compiler for another architecture, e.g. aarch64-linux-gnu-g++")
    add_parity_args(p, tolerance_help="max abs logit difference vs torch")
    p.add_argument("--json", help="write the export record (target, tuning, max_abs_diff, ...) here")
    p.set_defaults(func=cmd_export_tvm)
    return p


def cmd_export_tvm(args) -> int:
    from ...cli.common import model_from_args, parity_images, parity_summary, write_json_out
    from .export import export_tvm

    model, calib = model_from_args(args), parity_images(args)
    rec = export_tvm(model, Path(args.out), target=args.target, mcpu=args.mcpu, num_cores=args.num_cores,
                     trials=args.trials, batch=args.batch, work_dir=args.work_dir, retune=args.retune,
                     tuning_timeout_s=args.tuning_timeout, cc=args.cc, parity=not args.no_parity, parity_images=calib,
                     tolerance=args.tolerance, parity_samples=args.parity_samples).to_dict()
    tuning = rec["tuning"]
    how = {"tuned": f"tuned {tuning.get('trials_run')} trials in {tuning.get('tuning_time_s')} s",
           "extended": f"tuned {tuning.get('trials_run')} more trials in {tuning.get('tuning_time_s')} s",
           "reused": f"reused the cached tuning database ({tuning.get('trials_total')} trials), no tuning",
           "untuned": "UNTUNED (slow; use --trials)"}[tuning["status"]]
    print(f"wrote {rec['path']} ({rec['target_description']}, batch {rec['batch']}; {how}): {parity_summary(rec)}")
    write_json_out(args.json, rec)
    return 0
