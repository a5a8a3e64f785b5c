"""What each step of a run bought, computed from its stage records (no plotting, no rendering; JSON-able output).

The records are those :func:`edgevit.pipeline.run` writes (``<run>/<id>/record.json``). From them:

- **artefacts** (:func:`artifacts`): one node per stage that produced a new artefact (the implicit ``load``, a
  method stage, an export), with its parent (the artefact the stage consumed), kind, bytes on disk, parameters,
  batch-1 MACs, top-1 per runtime (from the ``eval`` records of that artefact, else the stage's own measurement) and
  batch-1 latency per runtime (from the ``profile`` records), and the change against its parent and against the
  run's source model (:func:`deltas`);
- **points** (:func:`points`): every artefact × runtime with both a top-1 and a latency, with the Pareto front
  (:func:`pareto_front`: no other point is at least as accurate and at least as fast, one of them strictly);
- **headline** (:func:`headline`): the final model against the source model, each on its fastest runtime;
- **rejections** (:func:`rejections`): the candidates a stage measured and did not keep, with the gate that
  rejected them (accuracy, speed, parity) and why, read from the quantize, early-exit and export records;
- **cascades** (:func:`cascades`): per-exit thresholds, exit rates (calibration and measured) and the latency of
  leaving at each exit;
- **environment** (:func:`environment`): the host CPU as detected, the measurement machine's stamp, library versions;
- **stability** (:func:`stability_rows`): latency rows whose ``stability`` verdict is not ``stable``.

Latency figures are batch-1 means (:data:`HEADLINE_STAT`): the goal metric of the compression work and the expected
cost of a cascade, whose latency depends on where each image exits. Medians and p90 are kept next to them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

HEADLINE_STAT = "mean_ms"  # the latency statistic compared across artefacts (batch 1)
HEADLINE_BATCH = 1
EXPORT_PREFIX = "export_"  # format stages (edgevit/formats/*/stage.py) are named export_<format>
MEASURING_STAGES = ("eval", "profile", "report")  # stages that hand their input on unchanged
STABLE = "stable"


# ------------------------------------------------------------------------------------------------ paths


def path_key(path: str | None, rec_id: str, ids: set[str]) -> str | None:
    """A run-relative key for an artefact path of a record: ``"<stage id>/<file>"`` when the path lies in a stage
    folder of the run (a relative path is relative to the record's own folder), else the path itself. Keys stay
    equal when the run folder was moved after the records were written."""
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        return f"{rec_id}/{p.as_posix()}" if p.as_posix() != "." else rec_id
    parts = p.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ids or parts[i].removesuffix(".tmp") in ids:
            rest = "/".join(parts[i + 1:])
            sid = parts[i].removesuffix(".tmp")
            return f"{sid}/{rest}" if rest else sid
    return p.as_posix()


def artifact_bytes(art: dict, stage_dir: Path) -> int | None:
    """Bytes on disk of a record's artefact (``art``: the record's ``artifact``, its path relative to ``stage_dir``):
    the file and its side files (:attr:`edgevit.artifact.Artifact.file_size`); a cascade counts its manifest and
    every graph it lists (segments and exit heads, with their side files). None when the file is gone."""
    import dataclasses

    from ..artifact import Artifact

    a = Artifact.from_dict(art, relative_to=stage_dir)
    if a.path is None or not Path(a.path).exists():
        return None
    total = a.file_size or 0
    if a.kind == "cascade" and Path(a.path).is_file():
        try:
            m = json.loads(Path(a.path).read_text())
        except (OSError, ValueError):
            return total
        for e in [*m.get("segments", []), *m.get("exits", [])]:
            if e.get("file"):
                total += dataclasses.replace(a, path=Path(a.path).parent / e["file"]).file_size or 0
    return total


def _stage_file(run_dir: Path | None, rec: dict, rel: str | None) -> Path | None:
    if run_dir is None or not rel:
        return None
    p = Path(rel)
    p = p if p.is_absolute() else Path(run_dir) / rec["id"] / p
    return p if p.exists() else None


# ------------------------------------------------------------------------------------------------ artefacts


def _consumes(stage: str) -> tuple[str, ...] | None:
    """The artefact kinds a registered stage consumes (None when the stage is not registered here)."""
    from ..stages import STAGES

    try:
        return tuple(STAGES.get(stage).consumes)
    except Exception:  # noqa: BLE001 - an unknown stage (a record of a plug-in not installed here)
        return None


def _top1_of_stage(rec: dict) -> dict | None:
    """The top-1 a method stage measured on its own output: distill (torch, the test split), quantize (the kept
    variant on its primary runtime). Early-exit's held-out top-1 is on train images and is not used."""
    m = rec.get("metrics") or {}
    if rec["stage"] == "distill" and m.get("top1") is not None:
        return {"top1": m["top1"], "n": m.get("n"), "runtime": "torch", "from": rec["id"], "inside_stage": True}
    if rec["stage"] == "quantize":
        sel = m.get("selected") or "int8"
        rows = m.get("accuracy") or []
        if sel in ("int8", "int8+bf16"):
            top1 = m.get("top1_int8")
        elif sel == "fp32":
            top1 = m.get("top1_fp32")
        else:  # a float variant the speed gate kept: its row is labelled "fp32 <kind> @ <precision>"
            top1 = next((a.get("top1") for a in rows if str(a.get("artifact", "")).endswith(f"@ {sel}")), None)
        if top1 is not None:
            rt = next((a.get("runtime") for a in rows), None)
            return {"top1": top1, "n": m.get("n_eval"), "runtime": rt, "from": rec["id"], "inside_stage": True}
    return None


def artifacts(records: list[dict], run_dir: Path | None = None) -> list[dict]:
    """One node per artefact the run produced, in order (see the module docstring). ``run_dir`` lets sizes and MACs
    be read from the files; without it they come from the records only."""
    ids = {r["id"] for r in records}
    nodes: list[dict] = []
    by_key: dict[str, dict] = {}
    by_id: dict[str, dict] = {}
    current: dict | None = None  # the artefact the run holds after each record
    for rec in records:
        art = rec.get("artifact") or {}
        key = path_key(art.get("path"), rec["id"], ids) or f"{rec['id']}:{art.get('kind')}"
        node = by_key.get(key)
        if node is None and rec["stage"] in MEASURING_STAGES:
            node = current  # a measuring stage hands its input on: the artefact it measured is the current one
        elif node is None and art:
            parent = _parent(rec, nodes, by_id, current)
            node = {"id": rec["id"], "stage": rec["stage"], "kind": art.get("kind"), "key": key,
                    "path": art.get("path"), "source": art.get("source"),
                    "precision": (art.get("meta") or {}).get("precision"),
                    "parent": parent["id"] if parent else None, "params": None, "macs": None, "bytes": None,
                    "top1": {}, "latency": {}, "records": [rec["id"]]}
            m = rec.get("metrics") or {}
            node["params"] = m.get("params")
            node["macs"] = m.get("macs")
            node["bytes"] = m.get("file_size") if rec["stage"] != "quantize" else None
            if run_dir is not None and art.get("path") and art.get("spec"):
                size = artifact_bytes(art, Path(run_dir) / rec["id"])
                node["bytes"] = size if size is not None else node["bytes"]
            own = _top1_of_stage(rec)
            if own:
                node["top1"][own["runtime"] or "?"] = own
            nodes.append(node)
            by_key[key] = by_id[rec["id"]] = node
        elif node is not None and rec["id"] not in node["records"]:
            node["records"].append(rec["id"])
        current = node or current
        _measurements(rec, node, by_key, ids, nodes)
    source = nodes[0]["id"] if nodes else None
    for n in nodes:
        n["model"] = _model_of(n, by_id)
        if n["macs"] is None:
            n["macs"], n["macs_from"] = _macs(n, by_id, run_dir)
        if n["params"] is None and n["stage"].startswith(EXPORT_PREFIX) and n["parent"]:
            n["params"] = by_id[n["parent"]].get("params")
        n["best_runtime"] = best_runtime(n)
        n["top1_best"] = representative_top1(n)
    for n in nodes:
        n["vs_parent"] = deltas(n, by_id[n["parent"]]) if n["parent"] else None
        n["vs_source"] = deltas(n, by_id[source]) if source and n["id"] != source else None
    return nodes


def _parent(rec: dict, nodes: list[dict], by_id: dict[str, dict], current: dict | None) -> dict | None:
    """The artefact a producing stage consumed: the record's ``input`` (a stage id) when it has one, else the newest
    artefact of a kind the stage consumes (what :meth:`edgevit.stage.StageContext.consumed` hands it), else the
    run's current artefact."""
    if not nodes:
        return None
    given = rec.get("input")
    if isinstance(given, dict):
        given = given.get("id")
    if given:
        hit = by_id.get(given) or next((n for n in nodes if given in n["records"]), None)
        if hit is not None:
            return hit
    kinds = _consumes(rec["stage"])
    if kinds:
        for n in reversed(nodes):
            if n["kind"] in kinds:
                return n
    return current


def _model_of(node: dict, by_id: dict[str, dict]) -> str:
    """The node whose model this artefact holds: an export (``export_*`` stage) holds its parent's model in another
    format; every other stage makes a model of its own."""
    n = node
    while n["stage"].startswith(EXPORT_PREFIX) and n["parent"]:
        n = by_id[n["parent"]]
    return n["id"]


def _macs(node: dict, by_id: dict[str, dict], run_dir: Path | None) -> tuple[int | None, str | None]:
    """Batch-1 MACs: counted on the ONNX file, else those of the parent for an export (a format conversion keeps
    the arithmetic)."""
    if node["kind"] == "onnx" and run_dir is not None and node.get("path"):
        p = Path(node["path"])
        p = p if p.is_absolute() else Path(run_dir) / node["id"] / p
        if p.exists():
            try:
                from ..profiling.macs import onnx_cost

                return int(onnx_cost(p)["macs"]), "counted on the ONNX graph"
            except Exception as exc:  # noqa: BLE001 - counting is informative only
                log.info("no MAC count for %s: %s", p, exc)
    if node["stage"].startswith(EXPORT_PREFIX) and node["parent"]:
        parent = by_id[node["parent"]]
        if parent.get("macs") is not None:
            return parent["macs"], f"as {parent['id']} (an export keeps the arithmetic)"
    return None, None


def _measurements(rec: dict, node: dict | None, by_key: dict[str, dict], ids: set[str],
                  nodes: list[dict] | None = None) -> None:
    """Attach an eval record's top-1 and a profile record's batch-1 latency rows to the artefacts they measured.

    A row names its artefact by ``artifact_id`` (the stage id it came from: the producing stage or a later one that
    handed it on; :func:`edgevit.stages.core.run_artifacts`) where the stage wrote one, else by its
    ``artifact_path``. An eval with ``artifacts: all`` holds one row per artefact × runtime in ``rows``."""
    m = rec.get("metrics") or {}

    def target(row: dict) -> dict | None:
        aid = row.get("artifact_id")
        if aid and nodes is not None:
            hit = next((n for n in nodes if aid == n["id"] or aid in n["records"]), None)
            if hit is not None:
                return hit
        return by_key.get(path_key(row.get("artifact_path"), rec["id"], ids) or "")

    if rec["stage"] == "eval":
        rows = m.get("rows") if isinstance(m.get("rows"), list) else None
        for row in rows if rows is not None else ([m] if node is not None else []):
            t = target(row) if rows is not None else node
            if t is None or row.get("top1") is None:
                continue
            rt = row.get("runtime") or "?"
            t["top1"][rt] = {"top1": row["top1"], "top5": row.get("top5"), "n": row.get("n"), "runtime": rt,
                             "from": rec["id"], "inside_stage": False,
                             **({"exit_mix": row["exit_mix"]} if row.get("exit_mix") else {})}
    for row in m.get("latency", []) if rec["stage"] == "profile" else []:
        t = target(row)
        if t is None:
            continue
        if row.get("batch") == HEADLINE_BATCH:
            t["latency"][row["runtime"]] = {
                "mean_ms": row.get("mean_ms"), "median_ms": row.get("median_ms"), "p90_ms": row.get("p90_ms"),
                "runs": row.get("runs"), "from": rec["id"], "stability": row.get("stability"),
                **({"exit_mix": row["exit_mix"]} if row.get("exit_mix") else {})}
        if t.get("macs") is None and row.get("macs") is not None:
            t["macs"] = row["macs"]
        if t.get("params") is None and row.get("params") is not None:
            t["params"] = row["params"]


# ------------------------------------------------------------------------------------------------ comparisons


def latency_of(node: dict, runtime: str) -> float | None:
    v = (node.get("latency") or {}).get(runtime) or {}
    return v.get(HEADLINE_STAT)


def best_runtime(node: dict) -> str | None:
    """The runtime with the lowest batch-1 latency of this artefact (None when none was measured)."""
    timed = [(latency_of(node, rt), rt) for rt in node.get("latency") or {} if latency_of(node, rt) is not None]
    return min(timed)[1] if timed else None


def top1_on(node: dict, runtime: str | None) -> dict | None:
    """The artefact's top-1 measured on ``runtime``; else its representative top-1 (:func:`representative_top1`)."""
    t = node.get("top1") or {}
    return t.get(runtime) if runtime in t else representative_top1(node)


def representative_top1(node: dict) -> dict | None:
    """An eval stage's top-1 (on the most images; the later on ties) over the stage's own measurement."""
    vals = list((node.get("top1") or {}).values())
    if not vals:
        return None
    return max(vals, key=lambda v: (not v.get("inside_stage"), v.get("n") or 0))


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def deltas(node: dict, ref: dict) -> dict:
    """What changed from ``ref`` to ``node``: top-1 in points (each on its best-runtime measurement, else its
    representative one), latency per runtime both were timed on (ms and speed-up ``ref / node``), best runtime
    against best runtime, bytes and MACs as ratios ``node / ref``."""
    a = top1_on(node, node.get("best_runtime"))
    b = top1_on(ref, ref.get("best_runtime"))
    per_rt = {}
    for rt in node.get("latency") or {}:
        x, y = latency_of(node, rt), latency_of(ref, rt)
        if x is not None and y is not None:
            per_rt[rt] = {"ms": x - y, "speedup": _ratio(y, x)}
    nb, rb = node.get("best_runtime"), ref.get("best_runtime")
    best = None
    if nb and rb:
        best = {"runtime": nb, "ref_runtime": rb, "ms": latency_of(node, nb) - latency_of(ref, rb),
                "speedup": _ratio(latency_of(ref, rb), latency_of(node, nb))}
    return {"ref": ref["id"],
            "top1_pt": (a["top1"] - b["top1"]) * 100 if a and b else None,
            "latency": per_rt, "best": best,
            "bytes_ratio": _ratio(node.get("bytes"), ref.get("bytes")),
            "macs_ratio": _ratio(node.get("macs"), ref.get("macs"))}


def points(nodes: list[dict]) -> list[dict]:
    """Every artefact × runtime with a batch-1 latency and a top-1 (that runtime's, else the artefact's), with
    ``pareto`` set on the front (:func:`pareto_front`)."""
    out = []
    for n in nodes:
        for rt, lat in (n.get("latency") or {}).items():
            t = top1_on(n, rt)
            if t is None or lat.get(HEADLINE_STAT) is None:
                continue
            out.append({"node": n["id"], "stage": n["stage"], "kind": n["kind"], "runtime": rt,
                        "top1": t["top1"], "top1_runtime": t.get("runtime"), "latency_ms": lat[HEADLINE_STAT],
                        "median_ms": lat.get("median_ms"), "p90_ms": lat.get("p90_ms"),
                        "verdict": (lat.get("stability") or {}).get("verdict"), "source": n is nodes[0]})
    front = pareto_front([(p["latency_ms"], p["top1"]) for p in out])
    for i, p in enumerate(out):
        p["pareto"] = i in front
    return out


def pareto_front(pts: list[tuple[float, float]]) -> set[int]:
    """Indices of the (latency, accuracy) points that no other point dominates: another point dominates one when it
    is at least as fast and at least as accurate, and strictly better in one of the two. Equal points are all
    kept."""
    front = set()
    for i, (li, ai) in enumerate(pts):
        if not any((lj <= li and aj >= ai) and (lj < li or aj > ai) for j, (lj, aj) in enumerate(pts) if j != i):
            front.add(i)
    return front


def headline(nodes: list[dict]) -> dict:
    """The final model against the source model, each on its fastest runtime (batch-1 :data:`HEADLINE_STAT`).

    A model is an artefact with its exports (:func:`_model_of`): the fastest runtime is chosen over every format
    of it that was timed. When no method changed the model (the final artefact is the source in another format),
    the source side is the source artefact alone and the note says so."""
    if not nodes:
        return {"note": "no artefact in the run"}
    src, final = nodes[0], nodes[-1]
    same = final["model"] == src["model"]
    src_group = [src] if same else [n for n in nodes if n["model"] == src["model"]]
    fin_group = [n for n in nodes if n["model"] == final["model"]]

    def side(group: list[dict]) -> dict:
        timed = [(latency_of(n, rt), n, rt) for n in group for rt in n.get("latency") or {}
                 if latency_of(n, rt) is not None]
        if timed:
            ms, n, rt = min(timed, key=lambda t: t[0])
            lat = n["latency"][rt]
            t = top1_on(n, rt)
        else:
            n = group[-1]
            ms, rt, lat = None, None, {}
            t = next((representative_top1(g) for g in reversed(group) if representative_top1(g)), None)
        return {"node": n["id"], "stage": n["stage"], "kind": n["kind"], "runtime": rt, "latency_ms": ms,
                "median_ms": lat.get("median_ms"), "p90_ms": lat.get("p90_ms"),
                "stability": lat.get("stability"), "top1": t["top1"] if t else None, "top1_n": t.get("n") if t else None,
                "top1_runtime": t.get("runtime") if t else None, "top1_from": t.get("from") if t else None}

    s, f = side(src_group), side(fin_group)
    notes = []
    if same:
        notes.append("no compression stage changed the model: the final artefact is the source model in another "
                     "format, compared here with the source artefact itself")
    for name, x in (("source", s), ("final", f)):
        if x["latency_ms"] is None:
            notes.append(f"the {name} model has no batch-{HEADLINE_BATCH} latency: add a profile stage after it")
        if x["top1"] is None:
            notes.append(f"the {name} model has no top-1: add an eval stage after it")
        v = (x.get("stability") or {}).get("verdict")
        if v and v != STABLE:
            notes.append(f"the {name} latency is {v}: {(x['stability'] or {}).get('message', '')}".rstrip(": "))
    return {"stat": HEADLINE_STAT, "batch": HEADLINE_BATCH, "source": s, "final": f,
            "top1_delta_pt": (f["top1"] - s["top1"]) * 100 if f["top1"] is not None and s["top1"] is not None
            else None,
            "speedup": _ratio(s["latency_ms"], f["latency_ms"]), "notes": notes}


# ------------------------------------------------------------------------------------------------ rejections


def rejections(records: list[dict], run_dir: Path | None = None) -> list[dict]:
    """Candidates a stage measured and did not keep: ``{stage, candidate, gate, why, top1, latency_ms}``.

    - quantize: INT8 attempts over the top-1 budget (accuracy gate) or failed, attempts within budget but slower
      than another (speed gate), speed-gate variants slower than the kept one (speed gate) or not offered on the
      runtime; read from the stage's ``quantize.json`` (``metrics.record``), else its metrics;
    - early_exit: exits whose threshold never fires (the calibration found them not worth their cost within the
      budget) and a cascade export whose exits disagree with the torch model (parity);
    - exports: a parity record that did not pass (parity gate), a TensorRT stage that wrote a bundle but no engine;
    - any stage: rows of ``metrics.rejected`` (``{candidate, gate, why}``), the hook for stages to report their own.
    """
    out: list[dict] = []
    for rec in records:
        m = rec.get("metrics") or {}
        sid = rec["id"]
        for r in m.get("rejected") or []:
            out.append({"stage": sid, **r})
        if rec["stage"] == "quantize":
            out += _quantize_rejections(rec, run_dir)
        if rec["stage"] == "early_exit":
            th = m.get("thresholds") or []
            crit = (rec.get("config") or {}).get("criterion", "confidence")
            from ..formats.cascade.thresholds import never_fires

            for k, t in enumerate(th):
                if t == never_fires(crit):
                    out.append({"stage": sid, "candidate": f"exit {k + 1} (after block {(m.get('exits') or [None] * len(th))[k]})",
                                "gate": "accuracy", "why": f"no threshold of exit {k + 1} lowered the expected latency "
                                f"within the {(rec.get('config') or {}).get('budget', '?')} pt budget on the held-out "
                                f"split: the head never fires and is skipped"})
            if m.get("exit_agreement") is not None and m["exit_agreement"] < 1.0:
                out.append({"stage": sid, "candidate": "cascade export", "gate": "parity",
                            "why": f"exits of the exported cascade agree with the torch model on "
                                   f"{m['exit_agreement'] * 100:.1f}% of {m.get('n')} images (kept; tolerance "
                                   f"checks passed)"})
        p = rec.get("parity") if isinstance(rec.get("parity"), dict) else m.get("parity")
        if isinstance(p, dict) and p.get("passed") is False:
            out.append({"stage": sid, "candidate": f"{(rec.get('artifact') or {}).get('kind')} export",
                        "gate": "parity", "why": f"max |Δ| {p.get('max_abs_diff'):.3g} vs tolerance "
                        f"{p.get('tolerance')}, top-1 agreement {p.get('top1_agreement')}"})
        if rec["stage"] == "export_tensorrt" and m.get("engine") is None and m.get("bundle"):
            out.append({"stage": sid, "candidate": "TensorRT engine", "gate": "runtime",
                        "why": "TensorRT is not installed here: a bundle for building on the device was written, no "
                               "engine; the run continued with the previous artefact"})
    return out


def _quantize_rejections(rec: dict, run_dir: Path | None) -> list[dict]:
    m = rec.get("metrics") or {}
    sid = rec["id"]
    full = None
    f = _stage_file(run_dir, rec, m.get("record"))
    if f is not None:
        try:
            full = json.loads(f.read_text())
        except (OSError, ValueError):
            full = None
    out = []
    budget = (full or {}).get("config", {}).get("budget", m.get("budget"))
    for a in (full or {}).get("attempts") or m.get("attempts_detail") or []:
        if a.get("passed"):
            continue
        row = {"stage": sid, "candidate": f"INT8 attempt {a.get('index')}: {a.get('name')}",
               "top1": a.get("top1"), "latency_ms": a.get("latency_ms")}
        if a.get("error"):
            out.append({**row, "gate": "accuracy", "why": f"failed: {a['error']}"})
        elif a.get("note"):
            out.append({**row, "gate": "speed", "why": a["note"]})
        elif a.get("drop_pt") is not None:
            out.append({**row, "gate": "accuracy",
                        "why": f"top-1 drop {a['drop_pt']:.2f} pt > budget {budget:g} pt"})
    gate = (full or {}).get("speed_gate")
    if gate:
        for c in gate.get("candidates") or []:
            if c.get("precision") == gate.get("selected"):
                continue
            row = {"stage": sid, "candidate": f"{c.get('precision')} on {gate.get('runtime')}", "top1": c.get("top1"),
                   "latency_ms": c.get("latency_ms")}
            if not c.get("offered"):
                out.append({**row, "gate": "runtime", "why": c.get("why_not") or "not offered on this runtime"})
            elif c.get("drop_pt") is not None and budget is not None and c["drop_pt"] > budget + 1e-9:
                out.append({**row, "gate": "accuracy",
                            "why": f"top-1 drop {c['drop_pt']:.2f} pt > budget {budget:g} pt"})
            else:
                out.append({**row, "gate": "speed", "why": f"slower than the kept {gate.get('selected')}: "
                                                           f"{gate.get('why')}"})
    elif m.get("speed_gate"):
        out.append({"stage": sid, "candidate": "float / INT8 variants", "gate": "speed",
                    "why": f"kept {m.get('selected')}: {m['speed_gate']}"})
    return out


# ------------------------------------------------------------------------------------------------ cascades


def cascades(records: list[dict], nodes: list[dict], run_dir: Path | None = None) -> list[dict]:
    """Per cascade: per exit its block, threshold, held-out top-1, calibration share, measured shares (per
    artefact × runtime, from profile rows' ``exit_mix`` and eval records that carry one) and the batch-1 latency of
    leaving there (segments + heads up to it, from the calibration's per-graph timings on its runtime). Copies of one
    cascade (its exports to other formats, the FP32 cascade a speed gate kept: same calibration, thresholds and
    precision) are one entry; ``nodes`` lists them, ``node`` is the first."""
    from ..formats.cascade.thresholds import active_heads
    from ..methods.early_exit.thresholds import path_costs

    by_id = {r["id"]: r for r in records}
    node_by_id = {n["id"]: n for n in nodes}
    out = []
    for n in nodes:
        if n["kind"] != "cascade":
            continue
        # the early_exit record that calibrated this cascade: its own, or its nearest ancestor's (an INT8 copy)
        cal_rec, a = None, n
        while a is not None:
            r = by_id.get(a["id"])
            if r is not None and r["stage"] == "early_exit":
                cal_rec = r
                break
            a = node_by_id.get(a["parent"]) if a.get("parent") else None
        m = (cal_rec or {}).get("metrics") or {}
        cal = dict(m)
        if cal_rec is not None and ("segment_ms" not in cal or "exit_top1" not in cal):
            f = _stage_file(run_dir, cal_rec, "calibration.json")
            if f is not None:
                try:
                    cal = {**json.loads(f.read_text()), **m}
                except (OSError, ValueError):
                    pass
        th = cal.get("thresholds") or []
        crit = cal.get("criterion") or ((cal_rec or {}).get("config") or {}).get("criterion", "confidence")
        exit_ms = None
        if cal.get("segment_ms") and cal.get("head_ms") is not None and len(th) == len(cal["head_ms"]):
            exit_ms = [float(v) for v in path_costs(cal["segment_ms"], cal["head_ms"], active_heads(th, crit))]
        k = len(th)
        blocks = cal.get("exits") or cal.get("exit_blocks") or [None] * k
        measured: dict[str, dict] = {}
        for rt, lat in (n.get("latency") or {}).items():
            if lat.get("exit_mix"):
                measured[f"{n['id']} {rt} (profile {lat['from']})"] = lat["exit_mix"]
        for rt, t in (n.get("top1") or {}).items():
            if t.get("exit_mix"):
                measured[f"{n['id']} {rt} (eval {t['from']})"] = t["exit_mix"]
        exits = []
        for i in range(k + 1):
            exits.append({
                "label": f"exit {i + 1}" if i < k else "final",
                "block": blocks[i] if i < k and i < len(blocks) else None,
                "threshold": th[i] if i < k else None,
                "heldout_top1": (cal.get("exit_top1") or [None] * k)[i] if i < k else cal.get("heldout_final_top1"),
                "share_calibration": (cal.get("share") or [None] * (k + 1))[i],
                "latency_ms": exit_ms[i] if exit_ms else None,
                "share_measured": {src: (mix.get("shares") or [None] * (k + 1))[i] for src, mix in measured.items()},
            })
        own = (by_id.get(n["id"]) or {}).get("metrics") or {}
        group = ((cal_rec or {}).get("id"), tuple(th), n.get("precision") or "fp32")
        same = next((c for c in out if c["_group"] == group), None)
        if same is not None:  # a copy of a cascade already listed (an export, the kept FP32 of quantize): one section
            same["nodes"].append(n["id"])
            same["measured_sources"] += list(measured)
            for e, mine in zip(same["exits"], exits):
                e["share_measured"].update(mine["share_measured"])
            continue
        out.append({"node": n["id"], "nodes": [n["id"]], "_group": group,
                    "calibrated_in": (cal_rec or {}).get("id"), "criterion": crit,
                    "parity_vs_fp32": own.get("parity_vs_fp32"),  # an INT8 copy against its FP32 cascade
                    "calibration_runtime": cal.get("runtime") or ((cal_rec or {}).get("config") or {}).get("runtime"),
                    "expected_ms": cal.get("expected_ms"), "segments_only_ms": cal.get("segments_only_ms"),
                    "heldout_top1": cal.get("heldout_top1", cal.get("top1")),
                    "heldout_final_top1": cal.get("heldout_final_top1", cal.get("final_top1")),
                    "measured_sources": list(measured), "exits": exits})
    for c in out:
        del c["_group"]
    return out


# ------------------------------------------------------------------------------------------------ environment


def environment(records: list[dict], *, detect: bool = True) -> dict:
    """The machine and software: the host CPU as detected now (:func:`edgevit.profiling.host.detect_cpu`, the label
    reports use), the stamp of the machine the latency was measured on (CPU, usable cores, threads, memory, GPUs,
    time), and the library versions of every stage (a version that changed between stages lists each)."""
    env: dict = {}
    if detect:
        try:
            from ..profiling.host import detect_cpu

            d = detect_cpu()
            env["host"] = {"label": d.label, "model": d.model, "cores": d.cores.value, "isa": list(d.features),
                           "clock": d.clock.block() if d.clock else None}
        except Exception as exc:  # noqa: BLE001 - a stamp must not stop the report
            env["host"] = {"label": None, "error": f"{type(exc).__name__}: {exc}"}
    stamp = next((row.get("system") for r in records for row in (r.get("metrics") or {}).get("latency") or []
                  if isinstance(row, dict) and row.get("system")), None)
    if stamp:
        cpu = stamp.get("cpu") or {}
        env["measured_on"] = {"cpu": cpu.get("model"), "affinity_cores": cpu.get("affinity_cores"),
                              "logical_cores": cpu.get("logical_cores"), "isa": cpu.get("isa"),
                              "threads": stamp.get("threads"), "memory_total_bytes": stamp.get("memory_total_bytes"),
                              "platform": stamp.get("platform"), "timestamp_utc": stamp.get("timestamp_utc"),
                              "gpu": stamp.get("gpu"), "jetson": stamp.get("jetson"), "notes": stamp.get("notes")}
    versions: dict[str, dict[str, list[str]]] = {}
    for r in records:
        for lib, v in (r.get("versions") or {}).items():
            versions.setdefault(lib, {}).setdefault(v, []).append(r["id"])
    env["versions"] = {lib: next(iter(vs)) for lib, vs in sorted(versions.items()) if len(vs) == 1}
    env["versions_changed"] = {lib: vs for lib, vs in sorted(versions.items()) if len(vs) > 1}
    return env


def stability_rows(records: list[dict]) -> list[dict]:
    """Every latency row (profile stages, and stage-internal tables such as quantize's) that carries a
    ``stability`` verdict other than ``stable``, with its plain-words message."""
    out = []
    for r in records:
        for row in (r.get("metrics") or {}).get("latency") or []:
            s = row.get("stability") if isinstance(row, dict) else None
            if isinstance(s, dict) and s.get("verdict") and s["verdict"] != STABLE:
                out.append({"stage": r["id"], "artifact": row.get("artifact"), "runtime": row.get("runtime"),
                            "batch": row.get("batch"), "verdict": s["verdict"], "message": s.get("message")})
    return out
