"""The ``edgevit`` command line (the top floor: no library module imports it). Heavy libraries are imported inside
each command, so ``--help`` stays fast. Shared argument helpers are in :mod:`edgevit.cli.common`, flags generated
from config models in :mod:`edgevit.cli.flags`. ``edgevit export <format>`` is built by :mod:`edgevit.cli.export`
from the declaration in each registered format folder (``formats/<name>/cli.py``); the method commands are
:mod:`edgevit.cli.distill`, :mod:`edgevit.cli.early_exit`, :mod:`edgevit.cli.quantize` and :mod:`edgevit.cli.shiftadd`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import data, distill, early_exit, predict, quantize, shiftadd, vlm
from .common import (
    add_data_args,
    add_model_args,
    artifact_from_args,
    check_json_out,
    check_runtime_names,
    default_runtime,
    dual_data_name,
    int_list,
    positive,
    runtime_options,
    write_json_out,
)
from .export import add_export_commands, export_commands

log = logging.getLogger("edgevit")


# ----------------------------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    what = args.what
    if what == "stages":
        from ..config import describe_fields
        from ..stages import STAGES

        for name, cls in STAGES.items():
            print(f"{name:16s} {cls.description}")
            if args.verbose:
                reads = ", ".join(cls.consumes) or "the current artefact, any kind"
                hands = ", ".join(cls.produces) or "its input, unchanged"
                print(f"    reads {reads} → hands on {hands}{' (a new model)' if cls.new_model else ''}")
                for kind, why in cls.cannot_take.items():
                    print(f"    cannot take {kind}: {why}")
                for f in describe_fields(cls.Config):
                    print(f"    {f['name']}: {f['type']} = {f['default']!r}  {f['help']}")
    elif what == "runtimes":
        from ..runtimes import list_runtimes

        for r in list_runtimes():
            vr = r["version_or_reason"]
            state = f"installed {vr}".strip() if r["available"] else f"not available: {vr}"
            print(f"{r['name']:14s} loads {','.join(r['kinds']):18s} {state}")
    elif what == "models":
        from ..models import list_models

        for r in list_models(include_timm=args.timm):
            w = "weights" if r["weights"] else "no weights"
            print(f"{r['name']:32s} {r['source']:8s} {w:10s} {r['description']}")
        from ..methods.vlm.towers import DUAL_ENCODERS

        for name, entry in DUAL_ENCODERS.items():  # image–text models: --task retrieval|zero-shot, --tower
            w = "weights" if entry.get("weights") else "no weights"
            print(f"{name:32s} {'dual':8s} {w:10s} {entry['description']}")
        if not args.timm:
            print("(any timm model name also works; `edgevit list models --timm` lists them)")
    elif what == "exporters":
        from .export import export_commands

        for c in sorted(export_commands(), key=lambda c: c.name):  # the names `edgevit export NAME` takes
            print(f"{c.name:12s} {c.help}")
    elif what == "targets":
        from ..profiling.hardware import HOST_NAME, list_profiles, load_profile

        host = load_profile(HOST_NAME)  # this machine, detected now: first, with what was detected
        facts = {k: q for k, q in host.facts.items() if q.value is not None}
        clock = next((facts[k] for k in ("clock_max", "clock_base", "clock_current") if k in facts), None)
        caches = ", ".join(f"{k.split('_')[0].upper()} {q.value:g} {q.unit}" for k, q in facts.items()
                           if k.endswith("_cache"))
        print(f"{HOST_NAME:24s} this machine (detected): {host.cpu_model or 'unknown CPU'}; "
              f"{int(host.facts['cores'].value or 0)} cores in the affinity mask; ISA {', '.join(host.isa) or '-'}"
              + (f"; {clock.value:g} GHz ({clock.source.split(' (')[0]})" if clock else "")
              + (f"; caches {caches}" if caches else "")
              + (f"; GPU {', '.join(str(g.get('name')) for g in host.gpus)}" if host.gpus else ""))
        for p in list_profiles():
            if p.name != HOST_NAME:
                print(f"{p.name:24s} {p.description}")
    return 0


def cmd_eval(args) -> int:
    if args.task != "classification":
        from .vlm import cmd_eval_dual

        return cmd_eval_dual(args)
    from ..data import load_dataset
    from ..evaluate import evaluate
    from ..runtimes import load_runtime

    check_runtime_names(args.runtime)
    art = artifact_from_args(args)
    rt = args.runtime or default_runtime(art.kind)
    runtime = load_runtime(rt, art, threads=args.threads, device=args.device, **runtime_options(args))
    data = load_dataset(args.data, args.split, data_dir=args.data_dir, limit=args.limit)
    if art.kind == "torch" and getattr(art.model, "edgevit_random_weights", False):
        log.warning("%s has random (untrained) weights: no checkpoint, no packaged weights and no --pretrained, so "
                    "its accuracy is meaningless (pass --checkpoint FILE, or --pretrained where a model hub is "
                    "reachable)", art.source)
    res = evaluate(runtime, data, batch_size=args.batch_size)
    res["artifact"] = str(art.path) if art.path else art.source
    print(f"top-1 {res['top1'] * 100:.2f}%  top-5 {res['top5'] * 100:.2f}%  n={res['n']}  ({rt}, {res['seconds']:.1f} s)")
    from ..stages.core import exit_rates

    rates = exit_rates(runtime)  # a cascade (or the If form): the exit mix measured on this data
    if rates is not None:
        res["exit_rates"] = rates
        print("exits: " + ", ".join(f"{label} {share * 100:.1f}%" for label, share in zip(rates["labels"],
                                                                                        rates["shares"])))
    write_json_out(args.json, res)
    return 0


def cmd_profile(args) -> int:
    from ..errors import ConfigError
    from ..profiling.latency import profile_runtime
    from ..profiling.tables import profile_table, stability_lines
    from ..runtimes import check_runtime, load_runtime

    if args.remote:
        if args.per_layer or args.compare:
            raise ConfigError("--per-layer and --compare profile on this machine; drop them with --remote (the "
                              "device-side profile records latency, not per-node times)")
        return _profile_remote(args)
    check_runtime_names(args.runtime)
    if args.max_duration is not None and not args.until_stable:
        raise ConfigError("--max-duration bounds --until-stable; add --until-stable, or drop --max-duration")
    max_duration = UNTIL_STABLE_MAX_S if args.max_duration is None else args.max_duration
    if _towers_of(args):
        return _profile_towers(args, max_duration)
    art = artifact_from_args(args)
    names = [r.strip() for r in (args.runtime or default_runtime(art.kind)).split(",") if r.strip()]
    for rt in names:  # every runtime must load this artefact and be installed before anything is timed
        check_runtime(rt, art.kind, art.path or art.source or "the artefact")
    options = runtime_options(args)
    inputs = None
    if not args.random_inputs:
        from ..data import load_dataset, preprocess

        # an early-exit model's latency depends on the image: time it over a sample, reporting the exit mix
        limit = max(max(args.batch), EARLY_EXIT_PROFILE_SAMPLES) if _exits_early(art) else max(args.batch)
        inputs = preprocess(load_dataset(args.data, args.split, data_dir=args.data_dir, limit=limit).images,
                            art.spec)
    variants = [(art, rt, options) for rt in names]
    if args.per_layer:
        variants = _per_layer_variants(args, art, names, options)
    elif args.compare:
        raise ConfigError("--compare adds artefacts to the per-layer table: use it with --per-layer")
    results, layers = [], []
    for a, rt, opts in variants:
        runtime = load_runtime(rt, a, threads=args.threads, device=args.device, **opts)
        rows = profile_runtime(runtime, batch_sizes=tuple(args.batch), warmup_s=args.warmup,
                               duration_s=args.duration, runs=args.runs, inputs=inputs,
                               until_stable=args.until_stable, max_duration_s=max_duration)
        results += rows
        if args.per_layer:
            from ..profiling.layers import profile_layers

            for row in rows:
                x = inputs[:row["batch"]] if inputs is not None and len(inputs) >= row["batch"] else \
                    a.spec.example(row["batch"])
                p = profile_layers(runtime, x, runs=args.per_layer_runs, latency_ms=row["median_ms"],
                                   latency_min_ms=row["min_ms"],
                                   latency_stability=(row.get("stability") or {}).get("verdict"))
                if len({id(v[0]) for v in variants}) > 1:  # several artefacts: say which file each column is
                    p["variant"] += f" ({a.path.name if a.path is not None else a.source})"
                row["variant"] = p["variant"]
                layers.append(p)
        runtime.close()
    print(profile_table(results, extra_columns=[("variant", "per-layer column")] if args.per_layer else ()))
    for line in stability_lines(results):
        print(line)
    for r in results:
        mix = r.get("exit_mix")
        if mix:
            shares = ", ".join(f"{lab} {v * 100:.1f}%" for lab, v in zip(mix["labels"], mix["shares"], strict=True))
            print(f"exit mix ({r['runtime']}, batch {r['batch']}, {mix['samples']} samples): {shares}")
    out = {"results": results}
    if args.per_layer:
        from ..profiling.layers import per_layer_png, per_layer_record, per_layer_table

        for batch in args.batch:
            print()
            print(per_layer_table(layers, batch=batch))
        for p in layers:
            if p["unmapped_share"] > 0:
                print(f"{p['variant']} batch {p['batch']}: {p['unmapped_ms']:.3g} ms ({p['unmapped_share'] * 100:.1f}%) "
                      f"not mapped to a module")
        out["per_layer"] = per_layer_record(layers)
        if args.per_layer_png:
            png = Path(args.per_layer_png)
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(per_layer_png(layers))
            print(f"wrote {png}")
    write_json_out(args.json, out)
    return 0


def _towers_of(args) -> bool:
    """Whether ``profile`` is given a dual encoder (folder or registered name, as the path or ``--model``) or an
    export of its towers (a folder or tower file with towers.json beside it)."""
    from ..methods.vlm.deploy import MANIFEST
    from ..methods.vlm.towers import DUAL_ENCODERS, is_dual_encoder_dir

    path = getattr(args, "artifact", None) or getattr(args, "target", None) or args.model
    if not path:
        return False
    p = Path(path)
    return (is_dual_encoder_dir(p) or (str(path) in DUAL_ENCODERS and not p.exists()) or (p / MANIFEST).is_file()
            or (p.is_file() and (p.parent / MANIFEST).is_file() and p.stem in ("image_tower", "text_tower")))


def _profile_towers(args, max_duration: float) -> int:
    """``edgevit profile`` on a dual encoder or its exported towers: one row per tower × runtime × batch (image and
    text tower labelled), on real test images and their captions."""
    from ..data.captions import load_caption_dataset
    from ..errors import ConfigError
    from ..methods.vlm.deploy import profile_towers, tower_targets
    from ..profiling.tables import profile_table, stability_lines

    if args.per_layer or args.compare or args.random_inputs:
        raise ConfigError("--per-layer, --compare and --random-inputs profile one image model; a dual encoder's "
                          "towers are timed on real images and captions (drop them)")
    path = getattr(args, "artifact", None) or getattr(args, "target", None) or args.model
    names = [r.strip() for r in args.runtime.split(",") if r.strip()] if args.runtime else None
    targets = tower_targets(path, runtimes=names)
    caps = load_caption_dataset(dual_data_name(args.data), args.split, data_dir=args.data_dir,
                                limit=max(max(args.batch), 8))
    rows = profile_towers(targets, images=caps.images, texts=list(caps.captions), threads=args.threads,
                          batch_sizes=tuple(args.batch), warmup_s=args.warmup, duration_s=args.duration,
                          runs=args.runs, until_stable=args.until_stable, max_duration_s=max_duration)
    print(profile_table(rows, extra_columns=[("tower", "tower")]))
    for line in stability_lines(rows):
        print(line)
    write_json_out(args.json, {"results": rows})
    return 0


def _per_layer_variants(args, art, names: list[str], options: dict) -> list[tuple]:
    """(artefact, runtime, options) to profile per layer: each runtime on the artefact; OpenVINO also in bf16 when
    the CPU computes bf16 natively and --precision was not given; each --compare artefact (a path: its default
    runtime; a model name: torch)."""
    from ..artifact import Artifact
    from ..models import create
    from ..profiling.layers import host_bf16
    from ..runtimes import open_artifact

    out = [(art, rt, options) for rt in names]
    if "openvino" in names and not options.get("precision"):
        ok, why = host_bf16()
        if ok:
            out.insert(names.index("openvino") + 1, (art, "openvino", {**options, "precision": "bf16"}))
        else:
            log.info("no OpenVINO bf16 column: %s", why)
    for item in [c.strip() for c in (args.compare or "").split(",") if c.strip()]:
        if Path(item).exists():
            other = open_artifact(item)
            out.append((other, default_runtime(other.kind), {}))
        else:
            model = create(item)
            out.append((Artifact(kind="torch", spec=model.edgevit_spec, model=model, source=model.edgevit_name),
                        "torch", {}))
    return out


def _profile_remote(args) -> int:
    """`edgevit profile ... --remote user@host[:port]`: measure on the device over SSH (see edgevit.profiling.remote;
    TensorRT: the device bundle's trtexec scripts, edgevit.formats.tensorrt.remote)."""
    import tempfile

    from ..errors import ConfigError
    from ..profiling.tables import profile_table, stability_lines

    names = [r.strip() for r in (args.runtime or "").split(",") if r.strip()]
    if not names:
        raise ConfigError("--remote needs --runtime: onnxruntime, openvino, torch, or tensorrt (a TensorRT bundle)")
    ssh = {"identity": args.identity, "known_hosts": args.known_hosts,
           "accept_new_host_key": args.accept_new_host_key, "power_mode": args.power_mode,
           "keep_remote": args.keep_remote}
    results: list[dict] = []
    for rt in names:
        if rt == "tensorrt":
            from ..formats.tensorrt.remote import profile_bundle_remote

            path = args.artifact or args.target
            if not path:
                raise ConfigError("--runtime tensorrt --remote needs a TensorRT bundle directory (edgevit export "
                                  "tensorrt MODEL.onnx --bundle --out DIR) or an ONNX file to bundle")
            with tempfile.TemporaryDirectory(prefix="edgevit-bundle-") as tmp:
                bundle = path
                if str(path).endswith(".onnx"):  # bundle it here: ONNX + calibration cache + trtexec scripts
                    from ..formats.tensorrt.export import export_tensorrt

                    export_tensorrt(path, tmp, precision=args.trt_precision or "fp16", bundle=True, engine=False,
                                    calib=args.data, data_dir=args.data_dir, calib_samples=100,
                                    max_batch=max(8, *args.batch))
                    bundle = tmp
                duration = args.duration if args.runs is None else 3.0
                results += profile_bundle_remote(bundle, args.remote, batch_sizes=tuple(args.batch),
                                                 precision=args.trt_precision, duration_s=max(3.0, duration),
                                                 energy_s=args.energy_s, **ssh)
            continue
        from ..profiling.remote import profile_remote

        art = artifact_from_args(args)
        inputs = None
        if not args.random_inputs:
            from ..data import load_dataset, preprocess

            inputs = preprocess(load_dataset(args.data, args.split, data_dir=args.data_dir,
                                             limit=max(args.batch)).images, art.spec)
        results += profile_remote(art, args.remote, runtime=rt, batch_sizes=tuple(args.batch), inputs=inputs,
                                  warmup_s=args.warmup, duration_s=args.duration, runs=args.runs,
                                  threads=args.threads, device=args.device, python=args.remote_python,
                                  tool=args.remote_tool, **ssh)
    print(profile_table(results))
    for line in stability_lines(results):
        print(line)
    for r in results:
        for w in (r.get("jetson") or {}).get("warnings") or []:
            print(f"warning ({r['runtime']}, batch {r['batch']}): {w}")
        ts = (r.get("jetson") or {}).get("tegrastats") or {}
        if ts.get("energy_mj_per_image") is not None:
            print(f"{r['runtime']} batch {r['batch']}: {ts['input_power_mean_mw'] / 1000:.2f} W on {ts['input_rail']}, "
                  f"{ts['energy_mj_per_image']:.3f} mJ per image ({ts['samples']} tegrastats samples)")
    write_json_out(args.json, {"results": results})
    return 0


UNTIL_STABLE_MAX_S = 60.0  # --until-stable without --max-duration: seconds of timing per runtime × batch at most
EARLY_EXIT_PROFILE_SAMPLES = 200  # real images an early-exit model is profiled over (each call takes the next)


def _exits_early(art) -> bool:
    """An early-exit cascade (manifest) or the single-graph If form (ONNX metadata)."""
    if art.kind == "cascade":
        return True
    if art.kind == "onnx" and art.path is not None:
        from ..formats.cascade.spec import IF_FORM_KEY as FORM_KEY
        from ..formats.onnx.runtime import read_onnx_metadata

        return read_onnx_metadata(art.path).get(FORM_KEY) == "if"
    return False


def cmd_compress(args) -> int:
    from .. import pipeline
    from ..recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    out = pipeline.check_run_dir(args.out or recipe.output or f"runs/{recipe.name}")
    steps = pipeline.plan(recipe)
    # a stage name that is not in the recipe, or two of --until/--only/--from, fail before anything runs (--dry-run too)
    first, last, rerun = pipeline.select_steps(pipeline.steps_of(recipe), until=args.until, only=args.only,
                                               from_stage=args.from_stage)
    if args.dry_run:
        from ..stages import STAGES

        partial = args.until is not None or args.only is not None or args.from_stage is not None
        resume = args.resume or partial
        # the run's own refusals (a run directory of another recipe, one holding stages without --resume)
        pipeline.check_before_run(recipe, out, pipeline.steps_of(recipe), resume=resume, force=args.force,
                                  rerun=rerun)
        print(f"recipe {args.recipe} is valid; plan for {out} (keys that differ from the stage's defaults; "
              f"`edgevit list stages -v` lists them all):")
        for i, s in enumerate(steps):
            if i < first:  # --only/--from read the finished stages before theirs
                action = "use" if pipeline.read_record(out / s["id"]) is not None else "MISSING"
            elif i > last:
                action = "skip"  # after --until/--only
            elif i in rerun:
                action = "redo"
            elif resume and pipeline.read_record(out / s["id"]) is not None:
                action = "reuse?"  # reused when its resume key still matches, redone otherwise
            else:
                action = "run"
            defaults = {}
            if s["stage"] != "load":
                try:
                    defaults = STAGES.get(s["stage"]).Config().model_dump(mode="json")
                except Exception:  # noqa: BLE001 - a stage with required keys: show every key
                    defaults = {}
            conf = {k: v for k, v in s["config"].items() if k != "stage" and (k not in defaults or defaults[k] != v)}
            kinds = f"{'|'.join(s['reads']) or '-'} → {'|'.join(s['hands_on'])}"
            print(f"  {action:6s} {s['id']:20s} {kinds:34s} {json.dumps(conf) if conf else ''}")
        missing = [s["id"] for i, s in enumerate(steps) if i < first and
                   pipeline.read_record(out / s["id"]) is None]
        if missing:
            flag = "--only" if args.only is not None else "--from"
            print(f"{flag} would stop: {', '.join(missing)} not finished in {out}; run them first (e.g. `--until "
                  f"{steps[first - 1]['id']}`)", file=sys.stderr)
        print("  (run: runs; redo: reruns though finished; reuse?: finished in the run directory, reused when its "
              "resume key still matches; use: a finished earlier stage --only/--from reads; MISSING: not finished, "
              "so --only/--from would stop; skip: after --until/--only)")
        return 2 if missing else 0

    return _run_compress(args, recipe, out)


class _QuietThirdParty(logging.Filter):
    """Terminal filter of ``edgevit compress`` without ``-v``: edgevit's warnings and errors, and other libraries'
    errors; python warnings and other libraries' warnings go to the run's ``compress.log`` only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "edgevit" or record.name.startswith("edgevit."):
            return True
        return record.levelno >= logging.ERROR


def _run_compress(args, recipe, out: Path) -> int:
    import os

    from .. import pipeline
    from ..progress import enabled, use_display
    from .display import RunDisplay

    try:  # a read-only or full filesystem: say which path and what to do, not a traceback
        out.mkdir(parents=True, exist_ok=True)
        (out / "compress.log").touch()
    except OSError as exc:
        from ..errors import StorageError

        raise StorageError(f"run directory {out}: {pipeline.storage_message(exc, out) or exc}") from exc
    root = logging.getLogger()
    saved = list(root.handlers)
    display = RunDisplay(live=enabled())
    if args.json == "-":  # stdout carries the JSON alone
        display.out = display.console
    console = display.log_handler(logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        console.addFilter(_QuietThirdParty())
    logfile = logging.FileHandler(out / "compress.log", mode="a", encoding="utf-8")
    logfile.setLevel(logging.DEBUG)
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [console, logfile]
    logging.captureWarnings(True)
    title = f"edgevit compress {recipe.name} → {out}"
    ok = False
    try:
        with display, use_display(display):
            records = pipeline.run(recipe, out, resume=args.resume, force=args.force, until=args.until,
                                   only=args.only, from_stage=args.from_stage, on_stage=display.on_stage,
                                   on_start=display.on_start)
        ok = True
    finally:
        root.handlers = saved
        logging.captureWarnings(False)
        logfile.close()
        if not ok:
            display.print(f"(the run's log: {out / 'compress.log'})")
    display.print_summary(title)
    report = out / "report.html" if (out / "report.html").exists() else out / "report.md"
    display.out.print(f"run finished: {out}" + (f"  (report: {report})" if report.exists() else ""), markup=False,
                      highlight=False)
    if args.json:
        skipped = {row["id"] for row in display.rows if row["status"].startswith("skipped")}
        summary = {"run_dir": str(out), "recipe": recipe.name, "report": str(report) if report.exists() else None,
                   "stages": [{"id": r["id"], "stage": r["stage"],
                               "status": "skipped" if r["id"] in skipped else r.get("status"),
                               "seconds": r.get("seconds"), "metrics": r.get("metrics"),
                               "artifact": r.get("artifact")} for r in records]}
        text = json.dumps(summary, indent=1, default=str) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(args.json + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, args.json)
    return 0


def cmd_recipe_schema(args) -> int:
    from ..recipe import recipe_schema

    text = json.dumps(recipe_schema(), indent=2) + "\n"
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out} (JSON schema of edgevit recipes; e.g. `# yaml-language-server: $schema={out}` "
              f"at the top of a recipe)")
    else:
        sys.stdout.write(text)
    return 0


# ----------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="edgevit", description="Make small ViTs fit edge devices: distill, early-exit, "
                                "shift/add, INT8, export, profile.")
    p.add_argument("--version", action="version", version=f"edgevit {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sp = sub.add_parser("list", help="list stages, runtimes, models, exporters or hardware targets")
    sp.add_argument("what", choices=["stages", "runtimes", "models", "exporters", "targets"])
    sp.add_argument("--timm", action="store_true", help="with models: also every timm architecture")
    sp.add_argument("-v", "--verbose", action="store_true", help="with stages: show each stage's config keys")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("eval", help="top-1/top-5 of a model or exported artefact on a dataset")
    add_model_args(sp)
    sp.add_argument("--artifact", help="an exported artefact (.onnx, .xml, .ort, ...) instead of --model")
    sp.add_argument("--runtime", default=None, help="runtime (default: torch for models, onnxruntime for .onnx)")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--threads", type=positive, default=None)
    sp.add_argument("--batch-size", type=positive, default=100)
    add_data_args(sp)
    sp.add_argument("--precision", choices=["f32", "bf16", "f16"], default=None,
                    help="OpenVINO inference precision (default: what the IR records, else the device's default)")
    sp.add_argument("--task", choices=("classification", "retrieval", "zero-shot"), default="classification",
                    help="classification (top-1/top-5, default); retrieval: R@1/5/10 image→text and text→image of a "
                         "dual encoder on caption data; zero-shot: its top-1 from class prompts")
    sp.add_argument("--image-root", default=None, help="folder of the images named in a captions JSON (retrieval)")
    sp.add_argument("--json", help="write the figures (top1, top5, n) to this file")
    sp.set_defaults(func=cmd_eval)

    export_cmds = export_commands()  # from the format registry: the help names every `edgevit export` format
    sp = sub.add_parser("export", help=f"export a model: {', '.join(c.name for c in export_cmds)}")
    export_sub = sp.add_subparsers(dest="format", metavar="FORMAT", required=True)
    sp = sub.add_parser("profile", help="latency of an artefact or model per runtime and batch size")
    sp.add_argument("target", nargs="?", help="artefact path (same as --artifact)")
    sp.add_argument("--artifact", help="artefact path")
    add_model_args(sp)
    sp.add_argument("--runtime", default=None, help="runtime(s), comma-separated (default: by artefact kind)")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--batch", type=int_list, default=[1], help="batch sizes, e.g. 1,8")
    sp.add_argument("--duration", type=float, default=3.0, help="seconds of timed runs per batch size")
    sp.add_argument("--runs", type=positive, default=None, help="a fixed number of runs instead of --duration")
    sp.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up (at least 5 runs)")
    sp.add_argument("--until-stable", action="store_true",
                    help="time in windows of --duration (or --runs) until the last 3 window medians agree within 5%% "
                         "and none was contended, at most --max-duration seconds; the row records the windows")
    sp.add_argument("--max-duration", type=float, default=None,
                    help="with --until-stable: seconds of timing per runtime × batch at most (default 60)")
    sp.add_argument("--threads", type=positive, default=None)
    sp.add_argument("--random-inputs", action="store_true", help="time on random tensors instead of real images")
    sp.add_argument("--precision", choices=["f32", "bf16", "f16"], default=None,
                    help="OpenVINO inference precision (default: what the IR records, else the device's default)")
    add_data_args(sp)
    sp.add_argument("--per-layer", action="store_true",
                    help="also profile every node (ONNX Runtime profiler, OpenVINO performance counters, "
                         "torch.profiler) in a separate run, mapped to the model's blocks; adds OpenVINO bf16 when "
                         "the CPU has it; the table per batch is printed and the JSON gets `per_layer`")
    sp.add_argument("--per-layer-runs", type=positive, default=30, help="profiled runs per runtime × batch")
    sp.add_argument("--compare", default=None, metavar="ART[,ART]",
                    help="with --per-layer: more artefacts in the same table (an INT8 .xml/.onnx from edgevit "
                         "quantize, or a model name such as fmnist-vit for torch)")
    sp.add_argument("--per-layer-png", default=None, metavar="FILE",
                    help="with --per-layer: write the stacked bar chart (time per block per runtime) here")
    sp.add_argument("--json", help="write one entry per runtime × batch here")
    rg = sp.add_argument_group("remote device (SSH)", "measure on a device over SSH instead of here")
    rg.add_argument("--remote", metavar="USER@HOST[:PORT]", help="profile on this device over SSH")
    rg.add_argument("--power-mode", help="refuse to measure unless the Jetson runs in this nvpmodel mode (name or id)")
    rg.add_argument("--identity", metavar="FILE", help="SSH private key (default: ssh-agent, ~/.ssh/id_*)")
    rg.add_argument("--known-hosts", metavar="FILE", help="known_hosts to check the host key against "
                                                           "(default: ~/.ssh/known_hosts)")
    rg.add_argument("--accept-new-host-key", action="store_true",
                    help="trust an unknown host key on first use and add it to known_hosts (a changed key is "
                         "always refused)")
    rg.add_argument("--remote-python", default="python3",
                    help="the device's Python with numpy and the runtime (default: python3)")
    rg.add_argument("--keep-remote", action="store_true", help="leave the device's work directory")
    rg.add_argument("--remote-tool", choices=["script", "benchmark_app"], default="script",
                    help="what times the model on the device: edgevit's script (default; every percentile) or, "
                         "for openvino, OpenVINO's benchmark_app (median/mean/min/max only)")
    rg.add_argument("--trt-precision", choices=["fp32", "fp16", "int8"], default=None,
                    help="TensorRT bundle precision to build and time (default: the bundle's)")
    rg.add_argument("--energy-s", type=float, default=30.0,
                    help="TensorRT: seconds of the tegrastats energy run (0 skips it)")
    sp.set_defaults(func=cmd_profile)

    sp = sub.add_parser("compress", help="run a recipe: the stages in order, into a run directory")
    sp.add_argument("recipe", help="recipe YAML (e.g. examples/recipes/quickstart.yaml)")
    sp.add_argument("--out", help="run directory (default: the recipe's output, else runs/<name>)")
    sp.add_argument("--resume", action="store_true",
                    help="continue a run: skip each finished stage whose config, input artefact and library versions "
                         "are unchanged; a killed stage continues from its checkpoints")
    sp.add_argument("--force", action="store_true",
                    help="start over in an existing run directory; with --resume: accept a changed recipe and redo "
                         "the stages it changes")
    part = sp.add_mutually_exclusive_group()
    part.add_argument("--until", metavar="STAGE", help="run up to and including STAGE (an id such as 03_quantize, "
                                                       "or a stage name that occurs once); implies --resume")
    part.add_argument("--only", metavar="STAGE", help="run just STAGE again on an existing run (earlier stages must "
                                                      "be finished); implies --resume")
    part.add_argument("--from", dest="from_stage", metavar="STAGE",
                      help="run STAGE and every later stage again (earlier stages must be finished); implies --resume")
    sp.add_argument("--dry-run", action="store_true", help="validate the recipe and print the plan")
    sp.add_argument("--json", help="write a machine-readable summary of the run (stages, metrics, artefacts) here; "
                                   "- for stdout")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value, e.g. --set stages.1.opset=17 (repeatable)")
    sp.set_defaults(func=cmd_compress)

    sp = sub.add_parser("recipe", help="recipe tools: the JSON schema of recipe files")
    recipe_sub = sp.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    sp = recipe_sub.add_parser("schema", help="print (or --out FILE: write) the JSON schema of a recipe: top-level "
                                              "keys and every stage's config keyed by `stage`, for editors")
    sp.add_argument("--out", help="write the schema to this file instead of printing it")
    sp.set_defaults(func=cmd_recipe_schema)

    data.add_parser(sub)  # `edgevit data sample`
    predict.add_parser(sub)  # `edgevit predict m.onnx --target ... --dtype ...`
    add_export_commands(export_sub, export_cmds)  # `edgevit export <format>`, declared in each format folder's cli.py
    for method_cli in (distill, early_exit, quantize, shiftadd, vlm):  # `edgevit distill ...`, `edgevit early-exit ...`, ...
        method_cli.add_parser(sub)
    return p


def _dual_encoder_hint(exc: Exception) -> str:
    """For a registered dual encoder given where a classifier is expected: what to do instead."""
    name = getattr(exc, "unknown_name", None)
    if not name:
        return ""
    from ..methods.vlm.towers import DUAL_ENCODERS

    if name not in DUAL_ENCODERS:
        return ""
    return (f"\n'{name}' is a dual image–text encoder, not a classifier: evaluate it with `edgevit eval --model {name} "
            f"--task retrieval|zero-shot`, cache it with `distill cache --kind embedding`, export its towers with "
            f"`edgevit export FORMAT --model {name} --tower image|text|both`, or fold it into a classifier with "
            f"`edgevit vlm fold-classifier {name} --out FILE.safetensors` (which every command takes)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "forwards_flags", False):  # what parse_args does
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_flags = extra  # an alias command (vlm export) hands them on to the command it stands for
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    # edgevit's own messages at `level`; other libraries' (onnx_ir's hundreds of "Replaced initializer" lines,
    # onnxscript, nncf) only from -v on
    third_party = logging.WARNING if args.quiet or not args.verbose else level
    logging.basicConfig(level=third_party, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("edgevit").setLevel(level)
    from ..progress import MainProcessFilter

    for handler in logging.getLogger().handlers:  # under torchrun: INFO lines from rank 0 only
        if not any(isinstance(f, MainProcessFilter) for f in handler.filters):
            handler.addFilter(MainProcessFilter())
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..errors import EdgevitError

    try:
        check_json_out(getattr(args, "json", None))  # an unwritable --json fails before any work is done
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `edgevit list models --timm | head`: the reader left; no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except EdgevitError as exc:
        print(f"edgevit: error: {exc}{_dual_encoder_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgevit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
