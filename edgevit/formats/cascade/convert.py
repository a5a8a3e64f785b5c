"""A cascade converted graph by graph to another format, and two cascades compared on real images.

An exported early-exit cascade (``manifest.json`` + one graph per segment and exit head, :mod:`.export`) is still a
cascade in any format that holds its graphs: :func:`convert_cascade` converts every graph with the target format's
own converter (ONNX → OpenVINO IR, ONNX → ``.ort``), writes a manifest of the same layout whose ``backend`` names the
new graph format (``GRAPH_BACKENDS``), keeps the thresholds, criterion, calibration and ``int8`` record, and runs
the new cascade against its source on real images (:func:`compare_cascades`: per-sample exits, top-1, logits).

The per-graph converter is the format's business and is passed in (``convert(src, dst, spec) -> dict``); this module
imports no format backend.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, ParityError
from ...results import ExportResult
from .spec import GRAPH_BACKENDS, GRAPH_SUFFIXES, MANIFEST

log = logging.getLogger(__name__)


def graph_files(manifest: dict) -> list[dict]:
    """The manifest's graph entries, segments first then exit heads (each has ``name``, ``file``, ``input``,
    ``output``)."""
    return list(manifest["segments"]) + list(manifest["exits"])


def graph_backend(manifest: dict) -> str:
    """The runtime that runs the graphs of a (read) manifest; :class:`ConfigError` for an unknown graph format."""
    fmt = manifest.get("backend")
    if fmt not in GRAPH_BACKENDS:
        raise ConfigError(f"{manifest.get('_dir', 'the cascade')}: unknown graph format {fmt!r} in manifest.json "
                          f"(known: {', '.join(GRAPH_BACKENDS)}); re-export the cascade")
    return GRAPH_BACKENDS[fmt]


def convert_cascade(manifest: str | Path, out_dir: str | Path, *, to: str,
                    convert: Callable[[Path, Path, Any], dict | None], parity_images: Any, precision: str = "fp32",
                    what: str | None = None, threads: int | None = None) -> ExportResult:
    """Write the cascade at ``manifest`` into ``out_dir`` with every graph converted to format ``to`` (a key of
    :data:`GRAPH_BACKENDS`).

    ``convert(src, dst, spec)`` converts one graph file ``src`` into ``dst`` (named ``<graph><suffix of to>``;
    ``spec`` is the graph's :class:`~edgevit.spec.InputSpec`, its input/output names the graph's) and may return a
    JSON-able dict recorded per graph. ``parity_images``: real images (raw uint8, preprocessed float32 or an
    ArrayDataset; required) on which the new cascade is run against the source at the source's thresholds;
    ``precision``: the parity thresholds of :func:`edgevit.formats.parity.check_parity` (``fp32`` for a conversion,
    ``fp16`` for FP16-compressed weights; an INT8 cascade is judged with the ``int8`` ones, since two runtimes
    round INT8 arithmetic differently).

    Returns an :class:`~edgevit.results.ExportResult`: the ``cascade`` artefact (``out_dir/manifest.json``), its parity
    the logits of the new cascade vs the source cascade (``extra``: ``exit_agreement``, ``exits_share``);
    ``to_dict()`` holds ``graphs`` (per graph: file, size, converter record) and ``parity_vs_source``
    (:func:`compare_cascades`). Raises :class:`ConfigError` for an unknown format or an ``out_dir`` that is the
    source folder, :class:`~edgevit.errors.ParityError` when the new cascade disagrees beyond the thresholds.
    """
    from ...artifact import Artifact, write_json
    from ...spec import InputSpec
    from ...versions import library_versions
    from ..parity import check_parity
    from .runtime import read_manifest

    t0 = time.perf_counter()
    if to not in GRAPH_BACKENDS:
        raise ConfigError(f"a cascade's graphs can be {', '.join(GRAPH_BACKENDS)}; got {to!r}")
    m = read_manifest(manifest)
    src_dir = Path(m["_dir"])
    out = Path(out_dir)
    if out.name == MANIFEST:
        out = out.parent
    if out.resolve() == src_dir.resolve():
        raise ConfigError(f"write the converted cascade to another folder than its source {src_dir}")
    out.mkdir(parents=True, exist_ok=True)
    spec = InputSpec.from_dict(m["input_spec"])
    suffix = GRAPH_SUFFIXES[to]
    graphs: dict[str, dict] = {}
    new = {k: v for k, v in m.items() if not k.startswith("_")}
    new["segments"] = [dict(e) for e in m["segments"]]
    new["exits"] = [dict(e) for e in m["exits"]]
    for entry in graph_files(new):
        src = src_dir / entry["file"]
        dst = out / (Path(entry["file"]).name.split(".")[0] + suffix)
        gspec = dataclasses.replace(spec, input_name=entry["input"], output_name=entry["output"])
        info = convert(src, dst, gspec) or {}
        if not dst.exists():
            raise ConfigError(f"converting cascade graph {src.name} to {to} wrote no {dst.name}")
        size = dst.stat().st_size + (dst.with_suffix(".bin").stat().st_size if suffix == ".xml" else 0)
        graphs[entry["name"]] = {"file": dst.name, "source_file": entry["file"], "file_size": size, **info}
        entry["file"] = dst.name
    new.update({"backend": to, "parity": None,
                "converted_from": {"backend": m.get("backend"), "dir": str(src_dir), "precision": precision}})
    path = out / MANIFEST
    write_json(path, new)

    int8 = bool(m.get("int8"))
    prec = "int8" if int8 else precision
    cmp = compare_cascades(src_dir / MANIFEST, path, parity_images, threads=threads, with_logits=True)
    label = what or f"cascade {m.get('backend')} → {to}"
    try:
        parity = check_parity(cmp.pop("reference_logits"), cmp.pop("candidate_logits"), precision=prec,
                              what=f"{label} ({cmp['n']} real images, per-sample exits)",
                              extra={"exit_agreement": cmp["exit_agreement"], "exits_share": cmp["exits_share"]})
    except ParityError as exc:
        exc.args = (f"{exc} The converted cascade is kept in {out}.",)
        raise
    new["parity"] = {"reference": f"the {m.get('backend')} cascade in {src_dir}", **{k: cmp[k] for k in (
        "n", "exit_agreement", "top1_agreement", "max_abs_diff")}}
    write_json(path, new)
    seconds = time.perf_counter() - t0
    record = {"format": "cascade", "backend": to, "path": str(path), "source": m.get("source"),
              "source_manifest": str(src_dir / MANIFEST), "graphs": graphs, "parity_vs_source": cmp,
              "int8": int8, "time_s": round(seconds, 2), **parity.summary(),
              "exit_agreement": cmp["exit_agreement"]}
    art = Artifact(kind="cascade", spec=spec, path=path, source=m.get("source"),
                   meta={"backend": to, "graphs": to, "exits": len(m["exits"]),
                         "precision": "int8" if int8 else precision})
    log.info("converted the %s cascade %s to %s in %s (%d graphs): exit agreement %.3f, max |Δ| %.3g on %d images",
             m.get("backend"), src_dir, to, out, len(graphs), cmp["exit_agreement"], cmp["max_abs_diff"], cmp["n"])
    return ExportResult(artifact=art, parity=parity, seconds=seconds, versions=library_versions(), fields=record)


def copy_cascade(manifest: str | Path, out_dir: str | Path) -> Path:
    """Copy a cascade (its manifest and every graph file, with ``.bin`` weights) into ``out_dir``; returns the new
    manifest path. For a stage whose format the cascade already has (export_onnx on an ONNX cascade)."""
    from .runtime import read_manifest

    m = read_manifest(manifest)
    src = Path(m["_dir"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for entry in graph_files(m):
        f = src / entry["file"]
        shutil.copyfile(f, out / entry["file"])
        for side in (f.with_suffix(".bin"), f.with_name(f.name + ".data"), f.with_name(f.name + ".tvm.json"),
                     f.with_name(f.name + ".spec.json")):
            if side.exists():
                shutil.copyfile(side, out / side.name)
    shutil.copyfile(src / MANIFEST, out / MANIFEST)
    return out / MANIFEST


def compare_cascades(a: str | Path, b: str | Path, images: Any, *, threads: int | None = None,
                     samples: int | None = None, with_logits: bool = False) -> dict:
    """Per-sample exits, top-1 and logits of cascade ``b`` against cascade ``a`` on the same real ``images`` (raw
    uint8, preprocessed float32 or an ArrayDataset; all are used; ``samples`` is unused and kept for callers), both
    at ``a``'s thresholds, each on the runtime of its graph format. Raises :class:`~edgevit.errors.ExportError` when
    ``images`` is None or empty.

    Returns ``{n, inputs, thresholds, exit_agreement, top1_agreement (fractions in [0, 1]), max_abs_diff (logit
    units), mean_exit: [a's, b's], exits_share: [b's share per exit, the last = final head]}``; with
    ``with_logits`` also ``reference_logits`` and ``candidate_logits`` (the two ``[N, classes]`` arrays, for
    :func:`~edgevit.formats.parity.check_parity`; pop them before writing JSON)."""
    from ...artifact import Artifact
    from ...spec import InputSpec
    from ..parity import parity_inputs
    from .runtime import CascadeRuntime, read_manifest

    ma, mb = read_manifest(a), read_manifest(b)
    spec = InputSpec.from_dict(ma["input_spec"])
    x, described = parity_inputs(images, spec, what="cascade comparison")
    rts = []
    try:
        for m in (ma, mb):
            rts.append(CascadeRuntime(Artifact(kind="cascade", spec=spec, path=Path(m["_dir"]) / MANIFEST),
                                      backend=graph_backend(m), threads=threads, thresholds=ma["thresholds"]))
        return compare_runtimes(rts[0], rts[1], x, inputs=described, with_logits=with_logits)
    finally:
        for rt in rts:
            rt.close()


def compare_runtimes(a: Any, b: Any, x: np.ndarray, *, inputs: str = "", with_logits: bool = False) -> dict:
    """:func:`compare_cascades` on two loaded :class:`~edgevit.formats.cascade.runtime.CascadeRuntime` objects and
    preprocessed images ``x`` ``[N, C, H, W]``, each at its own thresholds (set ``b``'s to ``a``'s to compare the
    graphs alone); the same keys."""
    la, ea = a.run_with_exits(x)
    lb, eb = b.run_with_exits(x)
    k = a.num_exits
    return {"n": len(x), "inputs": inputs, "thresholds": [float(v) for v in a.thresholds],
            "exit_agreement": float((ea == eb).mean()), "top1_agreement": float((la.argmax(1) == lb.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(la - lb).max()), "mean_exit": [float(ea.mean()), float(eb.mean())],
            "exits_share": (np.bincount(eb, minlength=k + 1) / len(eb)).tolist(),
            **({"reference_logits": la, "candidate_logits": lb} if with_logits else {})}
