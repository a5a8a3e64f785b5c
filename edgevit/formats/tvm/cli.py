"""``edgevit export tvm``: torch model → TVM library (.so), MetaSchedule-tuned with a cached database, parity
checked; or an early-exit cascade (``--cascade``) → one library per graph — the command's declaration.

:mod:`edgevit.cli.export` builds the parser from :data:`COMMAND`; importable without torch or tvm (both are imported
when the command runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...config import ConfigModel
from ...format_registry import ExportCommand


class TvmExportOptions(ConfigModel):
    """The flags of ``edgevit export tvm`` beyond the model, ``--out``, the dataset and ``--json``."""

    target: str = Field("llvm", description="llvm (this CPU, detected like llc -mcpu=native), cuda, or a TVM target "
                                            "as JSON, e.g. '{\"kind\": \"llvm\", \"mcpu\": \"x86-64-v3\"}' (default "
                                            "llvm)")
    mcpu: str | None = Field(None, description="CPU of an llvm target, e.g. x86-64-v3 for any AVX2 machine, "
                                               "skylake-avx512, cortex-a76")
    num_cores: int | None = Field(None, ge=1, description="threads the tuned kernels are scheduled for (default: the "
                                                          "CPUs this process may use)")
    trials: int = Field(256, ge=0, description="MetaSchedule trials (default 256: about 10-15 min for a small "
                                               "model on 2 cores, ~2-3 s per trial; progress with an ETA is shown "
                                               "while tuning; the database is cached, so a re-export takes "
                                               "seconds; 0 = untuned and slow; ~1000+ for real speed)")
    batch: int = Field(1, ge=1, description="static batch size of the library (default 1)")
    work_dir: str | None = Field(None, description="tuning cache root (default $EDGEVIT_TVM_CACHE or "
                                                   "~/.cache/edgevit/tvm)")
    retune: bool = Field(False, description="ignore a cached tuning database and tune again")
    tuning_timeout: float = Field(60.0, description="seconds allowed to build or run one tuning candidate (raise on "
                                                    "a busy machine)")
    cc: str | None = Field(None, description="cross compiler for another architecture, e.g. aarch64-linux-gnu-g++")
    tolerance: float | None = Field(None, description="max abs logit difference vs torch")
    parity_samples: int = Field(64, ge=1, description="real images for the parity check")
    no_parity: bool = Field(False, description="skip the parity check (not recommended)")
    cascade: str | None = Field(None, description="an early-exit cascade's manifest.json (ONNX graphs) instead of "
                                                  "--model: every graph → a library with a symbolic batch (untuned; "
                                                  "--trials and --batch do not apply), parity vs the ONNX cascade")
    kernels: Literal["none", "shiftadd"] = Field(
        "none", description="shiftadd: compile a ShiftAddViT model (edgevit shiftadd convert) with its matshift / "
                            "matmask TE kernels in place of the shift linears' and MatAdd's matmuls, tuned with the "
                            "rest (default none)")


def check(model_given: bool, out: Path | None, options: TvmExportOptions) -> None:
    """Exactly one source: ``--model`` or ``--cascade`` (ConfigError otherwise)."""
    from ...errors import ConfigError

    if model_given == bool(options.cascade):
        raise ConfigError("edgevit export tvm needs either --model NAME (a torch model) or --cascade "
                          "DIR/manifest.json (an early-exit cascade), not both and not neither")
    if options.cascade and options.no_parity:
        raise ConfigError("--no-parity: a TVM cascade is always checked against its ONNX cascade on real images")


def run(model: Any, out: Path, options: TvmExportOptions, parity_images: Any) -> dict:
    """Compile ``model`` (a torch classifier) to a TVM library at ``out`` (a directory or a path ending in .so),
    tuned with up to ``options.trials`` MetaSchedule trials and checked on ``parity_images`` (a dataset; None skips
    parity); returns the export record (path, target_description, batch, tuning, max_abs_diff, ...). With
    ``options.cascade`` (and no model) every graph of that cascade is compiled into the folder ``out``
    (:func:`edgevit.formats.tvm.cascade.export_tvm_cascade`). Raises ExportError when parity fails,
    MissingBackendError without tvm."""
    from .export import export_tvm

    if options.cascade:
        from .cascade import export_tvm_cascade

        return export_tvm_cascade(options.cascade, out, target=options.target, mcpu=options.mcpu,
                                  num_cores=options.num_cores, trials=0, parity_images=parity_images)

    convert_map, passes, found, precision = None, [], {}, "fp32"
    if options.kernels == "shiftadd":
        model, convert_map, check = _shiftadd_kernels(model)
        passes = [lambda mod: check(mod, found)]
        # binary hash codes and 16.16 fixed point: a last-bit float difference (another op order in the tuned
        # library) can flip a code bit or a rounding, so outputs match to fp16-level tolerance, not fp32's; top-1
        # agreement and cosine keep their fp32 thresholds
        precision = "fp16"
    result = export_tvm(model, out, target=options.target, mcpu=options.mcpu, num_cores=options.num_cores,
                      trials=options.trials, batch=options.batch, work_dir=options.work_dir, retune=options.retune,
                      tuning_timeout_s=options.tuning_timeout, cc=options.cc, parity=not options.no_parity,
                      parity_images=parity_images, tolerance=options.tolerance,
                      parity_samples=options.parity_samples, convert_map=convert_map, extra_passes=passes,
                      tolerance_precision=precision)
    if found:
        result.fields["kernels"] = found
    return result


def _shiftadd_kernels(model: Any):
    """(the model with its ShiftAddViT layers calling edgevit::matshift / edgevit::matmask, TVM converters for them).
    Raises ConfigError when the model has no shift layers."""
    from ...errors import ConfigError, ExportError
    from ...formats.common import resolve_torch_source
    from ...methods.shiftadd.attention import MatAddAttention
    from ...methods.shiftadd.convert import is_shiftadd, use_kernels
    from ...methods.shiftadd.shift import ShiftLinearDeploy
    from ...methods.shiftadd.tvm_kernels import convert_map, kernel_calls

    module, _, name = resolve_torch_source(model, what="TVM")
    if not is_shiftadd(module):
        raise ConfigError(f"--kernels shiftadd needs a ShiftAddViT model, and {name} has no shift or MatAdd layers; "
                          f"convert it first (edgevit shiftadd convert --model {name} --out DIR) and export "
                          f"DIR/model.safetensors, or drop --kernels")
    use_kernels(module, True)
    expected = {"matshift": sum(isinstance(m, ShiftLinearDeploy) for m in module.modules()),
                "matmask": 3 * sum(isinstance(m, MatAddAttention) for m in module.modules())}

    def check(mod, found: dict):
        calls = kernel_calls(mod)
        if calls != expected:
            raise ExportError(f"the Relax module of {name} calls the shift/add kernels {calls}, expected {expected}: "
                              f"some layers were not substituted")
        found.update(calls)
        return mod

    return module, convert_map(), check


def summary(rec: dict, options: TvmExportOptions) -> str:
    from ..parity import parity_summary

    if rec.get("format") == "cascade":
        return (f"wrote the TVM cascade {rec['path']} ({len(rec['graphs'])} libraries, symbolic batch, "
                f"{rec['target_description']}, UNTUNED, compiled in {rec['compile_time_s']} s): exit agreement "
                f"{rec['exit_agreement'] * 100:.1f}% vs the ONNX cascade; {parity_summary(rec)}")

    tuning = rec["tuning"]
    how = {"tuned": f"tuned {tuning.get('trials_run')} trials in {tuning.get('tuning_time_s')} s",
           "extended": f"tuned {tuning.get('trials_run')} more trials in {tuning.get('tuning_time_s')} s",
           "reused": f"reused the cached tuning database ({tuning.get('trials_total')} trials), no tuning",
           "untuned": "UNTUNED (slow; use --trials)"}[tuning["status"]]
    kernels = rec.get("kernels")
    with_kernels = f"; kernels {', '.join(f'{k} ×{n}' for k, n in kernels.items())}" if kernels else ""
    return (f"wrote {rec['path']} ({rec['target_description']}, batch {rec['batch']}; {how}{with_kernels}): "
            f"{parity_summary(rec)}")


COMMAND = ExportCommand(
    name="tvm", source="optional-model", options=TvmExportOptions, run=run, summary=summary, check=check,
    help="torch → TVM library (.so) for this CPU (or a given target), MetaSchedule-tuned, parity checked",
    description="Compile a model with TVM (Relax) for one static batch size, tune its kernels with MetaSchedule "
                "(the database is cached per model shapes + target and reused by later exports), and check the "
                "library against torch on real images. Writes model.so, model.so.tvm.json (target, CPU "
                "features, tuning) and model.so.spec.json, so `edgevit eval --artifact model.so --batch-size B` "
                "and `edgevit profile model.so --batch B` work on it. Untuned CPU libraries are slow: real "
                "budgets are ~1000-2000 trials for DeiT-Tiny (about 25 min on 2 cores). --cascade "
                "DIR/manifest.json compiles every graph of an early-exit cascade instead (symbolic batch, "
                "untuned), runnable with `edgevit eval --artifact OUT/manifest.json`.",
    out_help="output directory (writes model.so there, or a cascade's libraries and manifest.json) or a path ending "
             "in .so",
    json_help="write the export record (target, tuning, max_abs_diff, ...) here",
    towers=True,
)
