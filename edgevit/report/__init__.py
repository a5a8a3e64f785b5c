"""The run report: ``report.json`` (the numbers, and every stage record), ``report.md`` and ``report.html``.

``report.json`` is the single source of the numbers; the Markdown and HTML pages render it. What it holds
(:func:`build_report`): the headline (final model vs source model, each on its fastest runtime), one entry per
artefact with its parent and what changed (top-1, batch-1 latency per runtime, bytes, MACs; vs its parent and vs the
source), every artefact × runtime as an accuracy × latency point with the Pareto front, the candidates stages
rejected and why, per-exit rates and latency of cascades, latency rows whose stability verdict is not ``stable``,
the environment stamp, the flat tables of earlier reports (``summary``) and the stage records (``stages``).
The logic is in :mod:`edgevit.report.analysis`, the figures in :mod:`edgevit.report.plots`.

``report.html`` is one self-contained file (figures inline as PNG data URIs, no script); ``report.md`` links the same
figures, written to ``report_files/``. The headline numbers carry ``data-key``/``data-value`` attributes in the
HTML, so a test (or a script) reads them from the page and compares them with ``report.json``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import struct
import time
from pathlib import Path

from ..artifact import write_json
from ..profiling.tables import format_value, markdown_table
from . import analysis, plots

log = logging.getLogger(__name__)

ACCURACY_COLS = [("stage", "stage"), ("artifact", "artefact"), ("runtime", "runtime"), ("top1", "top-1"),
                 ("top5", "top-5"), ("n", "n")]
EXPORT_COLS = [("stage", "stage"), ("path", "file"), ("max_abs_diff", "max |Δ|"), ("cosine", "cosine"),
               ("top1_agreement", "top-1 agreement"), ("n", "n"), ("file_size", "bytes"), ("verdict", "parity")]
LATENCY_COLS = [("stage", "stage"), ("artifact", "artefact"), ("runtime", "runtime"), ("batch", "batch"),
                ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("mean_ms", "mean ms"),
                ("runs", "runs"), ("throughput", "img/s"), ("stability", "stability")]
PREDICTION_COLS = [("target", "target"), ("mode", "mode"), ("dtype", "dtype"), ("latency_ms", "predicted ms"),
                   ("bound", "bound"), ("expected_error_pct", "expected |error| %"), ("measured_ms", "measured ms"),
                   ("error_pct", "error %")]
STEP_COLS = [("id", "step"), ("stage", "stage"), ("kind", "kind"), ("parent", "parent"), ("top1", "top-1 %"),
             ("top1_vs_parent", "Δ top-1 vs parent (pt)"), ("top1_vs_source", "Δ top-1 vs source (pt)"),
             ("best", "best runtime: latency"), ("speedup_vs_parent", "speed-up vs parent"),
             ("speedup_vs_source", "speed-up vs source"), ("size", "size"), ("size_vs_parent", "size vs parent"),
             ("macs", "MACs"), ("macs_vs_parent", "MACs vs parent"), ("macs_vs_source", "MACs vs source")]
REJECT_COLS = [("stage", "stage"), ("candidate", "candidate"), ("gate", "rejected by"), ("top1", "top-1"),
               ("latency_ms", "latency ms"), ("why", "why")]
STABILITY_COLS = [("stage", "stage"), ("artifact", "artefact"), ("runtime", "runtime"), ("batch", "batch"),
                  ("verdict", "verdict"), ("message", "what it means")]
FIGURES_DIR = "report_files"
STAT_LABEL = f"batch-{analysis.HEADLINE_BATCH} {analysis.HEADLINE_STAT.removesuffix('_ms')} latency"


def summarize(records: list[dict]) -> dict:
    """Flatten stage records into the report's flat sections: accuracy, exports, latency, predictions.

    A record is an export when it carries a top-level ``parity`` record (a stage that produced an artefact and
    checked it against its parent, :attr:`edgevit.results.StageOutput.parity`); the parity figures come from it
    and the file size from the stage's metrics."""
    from ..results import ParityRecord

    acc, exports, latency, predictions = [], [], [], []
    for r in records:
        m = r.get("metrics") or {}
        if r["stage"] == "eval":  # one row, or with `artifacts: all` one per artefact × runtime
            for row in m["rows"] if isinstance(m.get("rows"), list) else [m]:
                acc.append({"stage": r["id"], "artifact": _what(row), "runtime": row.get("runtime"),
                            "top1": row.get("top1"), "top5": row.get("top5"), "n": row.get("n")})
        elif isinstance(r.get("parity"), dict):
            p = ParityRecord.from_dict(r["parity"])
            passed = r["parity"].get("passed")
            path = (r.get("artifact") or {}).get("path")
            if r["stage"] == "quantize" and m.get("selected") not in (None, "int8"):
                # the parity and size are the INT8 candidate's against its float source; the artefact handed on is
                # the float one the speed gate kept
                path = f"INT8 candidate (the speed gate kept {m['selected']}: {path})"
            exports.append({"stage": r["id"], "path": path, "n": p.n,
                            "max_abs_diff": p.max_abs_diff, "cosine": p.cosine,
                            "top1_agreement": p.top1_agreement, "file_size": m.get("file_size"),
                            "verdict": None if passed is None else ("passed" if passed else "FAILED")})
        for row in m.get("accuracy", []) if isinstance(m.get("accuracy"), list) else []:
            acc.append({"stage": r["id"], **row})  # stages that measure several artefacts (quantize)
        for row in m.get("latency", []) if isinstance(m.get("latency"), list) else []:
            latency.append({"stage": r["id"], **row, "artifact": _what(row)})
        for p in m.get("predictions", []):
            # the detected host is named by its CPU ("host (Intel Xeon ..., 2 cores, AVX-512/AMX)"), other targets
            # by their profile name: they are predictions for other machines
            predictions.append({**p, "target": p.get("target_label") or p.get("target"),
                                "latency_ms": p.get("latency_ms")})
    return {"accuracy": acc, "exports": exports, "latency": latency, "predictions": predictions}


def _what(row: dict) -> str | None:
    """The artefact a measurement row is of: its kind, and the stage it came from where the row names it."""
    kind = row.get("artifact")
    return f"{kind} ({row['artifact_id']})" if row.get("artifact_id") else kind


def build_report(records: list[dict], run_dir: Path | None = None, *, detect_host: bool = True) -> dict:
    """Every number of the report from the stage ``records`` (files of the run in ``run_dir`` give sizes, MACs,
    the quantize and calibration side records). JSON-able; see the module docstring for the keys."""
    nodes = analysis.artifacts(records, run_dir)
    return {"headline": analysis.headline(nodes), "artifacts": nodes, "points": analysis.points(nodes),
            "rejections": analysis.rejections(records, run_dir), "cascades": analysis.cascades(records, nodes, run_dir),
            "stability": analysis.stability_rows(records), "environment": analysis.environment(records,
                                                                                             detect=detect_host),
            "summary": summarize(records)}


# ------------------------------------------------------------------------------------------------ formatting


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _pt(v) -> str:
    return "—" if v is None else f"{v:+.2f}"


def _x(v) -> str:
    return "—" if v is None else f"{v:.3g}×"


def _ms(v) -> str:
    return "—" if v is None else f"{format_value(float(v))} ms"


def _share(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _bytes(v) -> str:
    if v is None:
        return "—"
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"


def _macs(v) -> str:
    return "—" if v is None else f"{v / 1e6:.1f} M"


def _verdict(s: dict | None) -> str | None:
    v = (s or {}).get("verdict")
    return None if v is None else (v if v == analysis.STABLE else f"⚠ {v}")


def step_rows(nodes: list[dict]) -> list[dict]:
    """One formatted row per artefact for the "what each step bought" table."""
    rows = []
    for n in nodes:
        t = analysis.top1_on(n, n.get("best_runtime"))
        vp, vs = n.get("vs_parent") or {}, n.get("vs_source") or {}
        best = n.get("best_runtime")
        rows.append({
            "id": n["id"], "stage": n["stage"], "kind": n["kind"] + (f" ({n['precision']})" if n.get("precision")
                                                                     else ""),
            "parent": n.get("parent") or "—", "top1": _pct(t["top1"]) if t else "—",
            "top1_vs_parent": _pt(vp.get("top1_pt")), "top1_vs_source": _pt(vs.get("top1_pt")),
            "best": f"{best}: {_ms(analysis.latency_of(n, best))}" if best else "—",
            "speedup_vs_parent": _x((vp.get("best") or {}).get("speedup")),
            "speedup_vs_source": _x((vs.get("best") or {}).get("speedup")),
            "size": _bytes(n.get("bytes")), "size_vs_parent": _x(vp.get("bytes_ratio")),
            "macs": _macs(n.get("macs")), "macs_vs_parent": _x(vp.get("macs_ratio")),
            "macs_vs_source": _x(vs.get("macs_ratio"))})
    return rows


def runtime_rows(nodes: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Batch-1 latency of every artefact per runtime, with the change against its parent and the source on the same
    runtime; and the table's columns."""
    runtimes = list(dict.fromkeys(rt for n in nodes for rt in n.get("latency") or {}))
    rows = []
    for n in nodes:
        if not n.get("latency"):
            continue
        row = {"id": n["id"]}
        for rt in runtimes:
            ms = analysis.latency_of(n, rt)
            if ms is None:
                row[rt] = "—"
                continue
            parts = []
            for name, d in (("parent", n.get("vs_parent")), ("source", n.get("vs_source"))):
                c = ((d or {}).get("latency") or {}).get(rt)
                if c:
                    parts.append(f"{_x(c['speedup'])} vs {name} ({c['ms']:+.3g} ms)")
            flag = _verdict((n["latency"][rt] or {}).get("stability"))
            row[rt] = _ms(ms) + (f" ({'; '.join(parts)})" if parts else "") + (f" {flag}" if flag and "⚠" in flag
                                                                                 else "")
        rows.append(row)
    return rows, [("id", "step"), *[(rt, rt) for rt in runtimes]]


def _headline_cells(h: dict) -> list[tuple[str, str, str, object]]:
    """(label, data-key, shown text, value) of every headline number; data-key is the path in report.json."""
    s, f = h.get("source") or {}, h.get("final") or {}
    return [
        ("source top-1 %", "headline.source.top1", _pct(s.get("top1")), s.get("top1")),
        ("final top-1 %", "headline.final.top1", _pct(f.get("top1")), f.get("top1")),
        ("Δ top-1 (pt)", "headline.top1_delta_pt", _pt(h.get("top1_delta_pt")), h.get("top1_delta_pt")),
        ("source latency", "headline.source.latency_ms", _ms(s.get("latency_ms")), s.get("latency_ms")),
        ("final latency", "headline.final.latency_ms", _ms(f.get("latency_ms")), f.get("latency_ms")),
        ("speed-up", "headline.speedup", _x(h.get("speedup")), h.get("speedup")),
    ]


def _headline_text(h: dict) -> tuple[str, str]:
    s, f = h.get("source") or {}, h.get("final") or {}

    def who(x: dict) -> str:
        return f"{x.get('node')} ({x.get('kind')}) on {x.get('runtime') or 'no runtime timed'}"

    return who(s), who(f)


# ------------------------------------------------------------------------------------------------ rendering


def _html_table(rows: list[dict], cols: list[tuple[str, str]], *, flag_key: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    body = []
    for r in rows:
        flagged = flag_key is not None and "⚠" in str(r.get(flag_key) or "")
        cls = " class='flag'" if flagged else ""
        cells = []
        for k, _ in cols:
            v = r.get(k)
            text = isinstance(v, str) and _num_text(v) is None  # words left-aligned, numbers right-aligned
            cells.append(f"<td{' class=t' if text else ''}>{html.escape(format_value(v))}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _num_text(v: str) -> float | None:
    """The number a formatted cell shows ("14.2 ms", "2.5×", "+0.30"), None for words."""
    m = re.fullmatch(r"[+-]?[\d,.]+(e[+-]?\d+)?( ms| MiB| KiB| M|×|%)?", v.strip())
    return float(m.group(0).split()[0].rstrip("×%").replace(",", "")) if m else None


def _img(png: bytes, alt: str, cls: str) -> str:
    """An inline PNG with its pixel size (from the PNG header), so the page lays out the same before it decodes."""
    w, h = struct.unpack(">II", png[16:24])  # IHDR width, height: big-endian, at bytes 16-24
    return (f'<img class="{cls}" width="{w}" height="{h}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


class _Page:
    """Markdown lines and HTML fragments written side by side."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []
        self.figures: dict[str, bytes] = {}

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        a = f" id='{anchor}'" if anchor else ""
        self.html.append(f"<h{level}{a}>{html.escape(text)}</h{level}>")

    def para(self, text: str, *, small: bool = False, cls: str | None = None) -> None:
        self.md += [text, ""]
        t = html.escape(text)
        c = f" class='{cls}'" if cls else ""
        self.html.append(f"<p{c}><small>{t}</small></p>" if small else f"<p{c}>{t}</p>")

    def table(self, rows: list[dict], cols: list[tuple[str, str]], *, flag_key: str | None = None) -> None:
        self.md += [markdown_table(rows, cols), ""]
        self.html.append(_html_table(rows, cols, flag_key=flag_key))

    def figure(self, name: str, png: bytes | None, alt: str, *, empty: str) -> None:
        """``png`` under ``name``; when None, a line saying why (``empty``: what was missing to draw it)."""
        if png is None:
            self.para(f"(no {alt}: {empty}, or matplotlib is not installed)", small=True)
            return
        self.figures[name] = png
        self.md += [f"![{alt}]({FIGURES_DIR}/{name})", ""]
        self.html.append(_img(png, alt, "plot"))


def _render(doc: dict, recipe, records: list[dict]) -> _Page:
    pg = _Page()
    pg.heading(doc["title"], 1)
    limit = f" (first {recipe.data.limit} samples)" if recipe.data.limit else ""
    pg.para(f"Model `{recipe.model.name}`, data `{recipe.data.name}`{limit}, generated {doc['generated_utc']}.")

    h = doc["headline"]
    pg.heading("Headline", anchor="headline")
    src, fin = _headline_text(h)
    pg.para(f"Final model {fin} against the source model {src}, each on its fastest runtime ({STAT_LABEL}).")
    cells = _headline_cells(h)
    pg.md += [markdown_table([{"what": c[0], "value": c[2]} for c in cells], [("what", "what"), ("value", "value")]),
              ""]
    pg.html.append("<table class='headline'><tbody>" + "".join(
        f"<tr><th>{html.escape(label)}</th><td data-key='{key}' data-value='{json.dumps(value)}'>"
        f"{html.escape(text)}</td></tr>" for label, key, text, value in cells) + "</tbody></table>")
    sh, fh = h.get("source") or {}, h.get("final") or {}
    if sh.get("latency_ms") is not None and fh.get("latency_ms") is not None:
        pg.para(f"Same runs, other statistics: median {_ms(sh.get('median_ms'))} → {_ms(fh.get('median_ms'))}, p90 "
                f"{_ms(sh.get('p90_ms'))} → {_ms(fh.get('p90_ms'))}. Top-1 on {sh.get('top1_n')} and "
                f"{fh.get('top1_n')} images ({sh.get('top1_from')}, {fh.get('top1_from')}).", small=True)
    for note in h.get("notes") or []:
        pg.para(f"Note: {note}.", cls="flag" if "noisy" in note or "contended" in note else None)

    nodes = doc["artifacts"]
    if nodes:
        pg.heading("What each step bought", anchor="steps")
        pg.para(f"One row per artefact the run produced. Parent: the artefact the stage consumed. Top-1 and latency "
                f"are each artefact's on its fastest runtime ({STAT_LABEL}); speed-ups are the reference's latency "
                f"over this one's (best runtime against best runtime); size and MACs ratios are this one's over the "
                f"reference's. MACs: batch-1 multiply-accumulates (an export keeps its parent's).", small=True)
        pg.table(step_rows(nodes), STEP_COLS)
        rows, cols = runtime_rows(nodes)
        if rows:
            pg.heading("Latency per runtime", 3)
            pg.para(f"{STAT_LABEL} of each artefact on each runtime it was timed on; the speed-up against its parent "
                    f"and the source on the same runtime where both were timed.", small=True)
            pg.table(rows, cols)

    pg.heading("Accuracy × latency", anchor="pareto")
    pts = doc["points"]
    ref = dict(h.get("source") or {})
    ref["label"] = f"source {ref.get('node')} ({ref.get('runtime')})"
    pg.figure("accuracy_latency.png", plots.accuracy_latency_png(pts, ref, stat_label=STAT_LABEL),
              "accuracy × latency plot", empty="no artefact has both a top-1 and a batch-1 latency; add eval and "
              "profile stages after the artefacts to compare")
    if pts:
        prow = [{"node": p["node"], "runtime": p["runtime"], "top1": _pct(p["top1"]), "latency": _ms(p["latency_ms"]),
                 "pareto": "yes" if p["pareto"] else "", "stability": _verdict({"verdict": p.get("verdict")})}
                for p in pts]
        pg.table(prow, [("node", "artefact"), ("runtime", "runtime"), ("top1", "top-1 %"), ("latency", "latency"),
                        ("pareto", "Pareto"), ("stability", "stability")], flag_key="stability")

    if doc["rejections"]:
        pg.heading("Rejected candidates", anchor="rejections")
        pg.para("What a stage measured and did not keep, and the gate that decided: accuracy (top-1 budget), speed "
                "(a faster variant within budget), parity (outputs against the parent), runtime (not available).",
                small=True)
        pg.table([{**r, "top1": _pct(r.get("top1")) if r.get("top1") is not None else None} for r in
                  doc["rejections"]], REJECT_COLS)

    for c in doc["cascades"]:
        copies = c.get("nodes", [c["node"]])[1:]
        pg.heading(f"Early exits of {c['node']}" + (f" and its copies ({', '.join(copies)})" if copies else ""),
                   anchor=f"cascade-{c['node']}")
        pg.para(f"Thresholds calibrated in {c.get('calibrated_in')} ({c.get('criterion')} criterion) on "
                f"{c.get('calibration_runtime')}: held-out top-1 {_pct(c.get('heldout_top1'))}% vs the final head's "
                f"{_pct(c.get('heldout_final_top1'))}%, expected {_ms(c.get('expected_ms'))} vs "
                f"{_ms(c.get('segments_only_ms'))} for the backbone alone. Latency to leave at an exit: its segments "
                f"and heads, timed per graph at batch 1 during calibration.", small=True)
        pv = c.get("parity_vs_fp32")
        if pv:
            pg.para(f"INT8 cascade against its FP32 source at the same thresholds, on {pv.get('n')} images: exits agree "
                    f"on {_pct(pv.get('exit_agreement'))}%, top-1 on {_pct(pv.get('top1_agreement'))}%, max |Δ logit| "
                    f"{format_value(pv.get('max_abs_diff'))}.", small=True)
        srcs = c.get("measured_sources") or []
        cols = [("label", "exit"), ("block", "after block"), ("threshold", "threshold"),
                ("heldout_top1", "held-out top-1 %"), ("share_calibration", "share (calibration)"),
                *[(f"m:{s}", f"share: {s}") for s in srcs], ("latency_ms", "latency to leave (ms)")]
        rows = [{"label": e["label"], "block": e.get("block"),
                 "threshold": None if e.get("threshold") is None else f"{e['threshold']:.3f}",
                 "heldout_top1": _pct(e.get("heldout_top1")), "share_calibration": _share(e.get("share_calibration")),
                 **{f"m:{s}": _share(e["share_measured"].get(s)) for s in srcs}, "latency_ms": e.get("latency_ms")}
                for e in c["exits"]]
        pg.table(rows, cols)
        pg.figure(f"exits_{c['node']}.png", plots.exits_png(c), f"exit rates and latency of {c['node']}",
                  empty="no exit rates recorded")

    s = doc["summary"]
    stages = [{"id": r["id"], "stage": r["stage"], "parent": r.get("parent"), "seconds": r.get("seconds"),
               "artifact": (r.get("artifact") or {}).get("kind")} for r in records]
    pg.heading("Stages")
    pg.table(stages, [("id", "step"), ("stage", "stage"), ("parent", "after"), ("artifact", "artefact"),
                      ("seconds", "seconds")])
    if s["accuracy"]:
        pg.heading("Accuracy")
        pg.table(s["accuracy"], ACCURACY_COLS)
    if s["exports"]:
        pg.heading("Exports (parity vs the torch source on real inputs)")
        pg.table(s["exports"], EXPORT_COLS)
    if s["latency"]:
        lat = [{**r, "stability": _verdict(r.get("stability"))} for r in s["latency"]]
        pg.heading("Latency (measured)")
        pg.table(lat, LATENCY_COLS, flag_key="stability")
        line = _machine_line(s["latency"])
        if line:
            pg.para(line)
        pg.figure("latency.png", plots.latency_bars_png(s["latency"]), "latency plot", empty="no latency rows")
    if doc["stability"]:
        pg.heading("Latency stability", anchor="stability")
        pg.para("These latency rows were measured while the machine was not quiet: treat their numbers, and any "
                "speed-up built on them, with care.", cls="flag")
        pg.table([{**r, "verdict": _verdict(r)} for r in doc["stability"]], STABILITY_COLS, flag_key="verdict")
    if s["predictions"]:
        pg.heading("Predicted latency (roofline over the ONNX graph; not measured)")
        pg.table(s["predictions"], PREDICTION_COLS)
        pg.para("Efficiency 1.0 assumed unless stated: predictions are floors. The detected host uses efficiency "
                "factors fitted on this CPU where they exist; 'expected |error| %' is their median error on models not "
                "used in fitting ('—': untested, e.g. every other machine). 'bound' says where the predicted time goes: "
                "compute, memory or per-node launch overhead. 'error %' compares the prediction for "
                "the detected host (this machine) with the measured median where both exist; every other target is a "
                "prediction for another machine, never compared with this machine's measurements.", small=True)
    _environment(pg, doc["environment"])
    return pg


def _machine_line(latency: list[dict]) -> str | None:
    stamp = next((r.get("system") for r in latency if r.get("system")), None)
    if not stamp:
        return None
    cpu = stamp.get("cpu") or {}
    v = stamp.get("versions") or {}
    return (f"Measured on {cpu.get('model', '?')} ({cpu.get('affinity_cores', '?')} usable cores), "
            f"{stamp.get('timestamp_utc', '')}; " + ", ".join(f"{k} {v[k]}" for k in sorted(v)))


def _environment(pg: _Page, env: dict) -> None:
    pg.heading("Environment", anchor="environment")
    rows = []
    host = env.get("host") or {}
    if host.get("label"):
        rows.append({"what": "host (detected when the report was written)", "value": host["label"]})
    elif host.get("error"):
        rows.append({"what": "host", "value": f"not detected: {host['error']}"})
    m = env.get("measured_on") or {}
    if m:
        rows.append({"what": "latency measured on", "value": f"{m.get('cpu')} ({m.get('affinity_cores')} usable of "
                                                               f"{m.get('logical_cores')} logical cores), "
                                                               f"{m.get('timestamp_utc')}"})
        th = m.get("threads") or {}
        rows.append({"what": "threads", "value": ", ".join(f"{k} {v}" for k, v in th.items() if v not in (None, {}))
                     or "—"})
        if m.get("memory_total_bytes"):
            rows.append({"what": "memory", "value": f"{m['memory_total_bytes'] / 2**30:.1f} GiB"})
        rows.append({"what": "platform", "value": m.get("platform")})
        for g in m.get("gpu") or []:
            rows.append({"what": "GPU", "value": ", ".join(f"{k} {v}" for k, v in g.items())})
    versions = env.get("versions") or {}
    rows.append({"what": "libraries", "value": ", ".join(f"{k} {v}" for k, v in versions.items()) or "—"})
    for lib, vs in (env.get("versions_changed") or {}).items():
        rows.append({"what": f"{lib} (changed during the run)",
                     "value": "; ".join(f"{v} in {', '.join(ids)}" for v, ids in vs.items())})
    pg.table(rows, [("what", "what"), ("value", "value")])


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
         "margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}"
         "th{background:#eee}td.t{text-align:left}.wide{overflow-x:auto;max-width:100%}table{font-size:.92em}table.headline td{font-size:1.3em;font-weight:bold}tr.flag td,p.flag{background:#fde2e1}"
         "img.plot{max-width:100%;height:auto;display:block;margin:.5em 0 1.5em}")


def write_report(run_dir: Path, recipe, records: list[dict], *, title: str | None = None,
                 stage_dir: Path | None = None) -> dict[str, Path]:
    """Write report.json, report.md (+ ``report_files/*.png``) and report.html into ``run_dir`` (and copies into
    ``stage_dir``); return their paths. ``records``: the stage records of the run, in order."""
    run_dir = Path(run_dir)
    doc = {"title": title or f"edgevit run: {recipe.name}", "recipe": recipe.to_dict(),
           "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           **build_report(records, run_dir), "stages": records}
    pg = _render(doc, recipe, records)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc['title'])}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(pg.html)}</body></html>\n")
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md", "html": run_dir / "report.html"}
    for d in [run_dir] + ([Path(stage_dir)] if stage_dir is not None else []):
        write_json(d / "report.json", doc)
        (d / "report.md").write_text("\n".join(pg.md).rstrip() + "\n")
        (d / "report.html").write_text(page)
        if pg.figures:
            (d / FIGURES_DIR).mkdir(exist_ok=True)
            for name, png in pg.figures.items():
                (d / FIGURES_DIR / name).write_bytes(png)
    return paths
