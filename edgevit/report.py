"""The run report: ``report.json`` (every stage record), ``report.md`` and ``report.html`` (tables + plot)."""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from pathlib import Path

from .artifact import write_json
from .profiling.tables import markdown_table

log = logging.getLogger(__name__)

ACCURACY_COLS = [("stage", "stage"), ("artifact", "artefact"), ("runtime", "runtime"), ("top1", "top-1"),
                 ("top5", "top-5"), ("n", "n")]
EXPORT_COLS = [("stage", "stage"), ("path", "file"), ("max_abs_diff", "max |Δ|"), ("cosine", "cosine"),
               ("top1_agreement", "top-1 agreement"), ("n", "n"), ("file_size", "bytes")]
LATENCY_COLS = [("stage", "stage"), ("artifact", "artefact"), ("runtime", "runtime"), ("batch", "batch"),
                ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("mean_ms", "mean ms"),
                ("runs", "runs"), ("throughput", "img/s")]
PREDICTION_COLS = [("target", "target"), ("mode", "mode"), ("dtype", "dtype"), ("latency_ms", "predicted ms"),
                   ("bound", "bound"), ("expected_error_pct", "expected |error| %"), ("measured_ms", "measured ms"),
                   ("error_pct", "error %")]


def summarize(records: list[dict]) -> dict:
    """Flatten stage records into the report's sections: accuracy, exports, latency, predictions.

    A record is an export when it carries a top-level ``parity`` record (a stage that produced an artefact and
    checked it against its parent, :attr:`edgevit.results.StageOutput.parity`); the parity figures come from it
    and the file size from the stage's metrics."""
    from .results import ParityRecord

    acc, exports, latency, predictions = [], [], [], []
    for r in records:
        m = r.get("metrics") or {}
        if r["stage"] == "eval":
            acc.append({"stage": r["id"], "artifact": m.get("artifact"), "runtime": m.get("runtime"),
                        "top1": m.get("top1"), "top5": m.get("top5"), "n": m.get("n")})
        elif isinstance(r.get("parity"), dict):
            p = ParityRecord.from_dict(r["parity"])
            exports.append({"stage": r["id"], "path": (r.get("artifact") or {}).get("path"), "n": p.n,
                            "max_abs_diff": p.max_abs_diff, "cosine": p.cosine,
                            "top1_agreement": p.top1_agreement, "file_size": m.get("file_size")})
        for row in m.get("accuracy", []) if isinstance(m.get("accuracy"), list) else []:
            acc.append({"stage": r["id"], **row})  # stages that measure several artefacts (quantize)
        for row in m.get("latency", []):
            latency.append({"stage": r["id"], **row})
        for p in m.get("predictions", []):
            # the detected host is named by its CPU ("host (Intel Xeon ..., 2 cores, AVX-512/AMX)"), other targets
            # by their profile name: they are predictions for other machines
            predictions.append({**p, "target": p.get("target_label") or p.get("target"),
                                "latency_ms": p.get("latency_ms")})
    return {"accuracy": acc, "exports": exports, "latency": latency, "predictions": predictions}


def _machine_line(latency: list[dict]) -> str | None:
    stamp = next((r.get("system") for r in latency if r.get("system")), None)
    if not stamp:
        return None
    cpu = stamp.get("cpu") or {}
    v = stamp.get("versions") or {}
    return (f"Measured on {cpu.get('model', '?')} ({cpu.get('affinity_cores', '?')} usable cores), "
            f"{stamp.get('timestamp_utc', '')}; " + ", ".join(f"{k} {v[k]}" for k in sorted(v)))


def _latency_plot_png(latency: list[dict]) -> bytes | None:
    """Median latency (with p90 whiskers) per runtime × batch as a PNG; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: report.html without plots")
        return None
    labels = [f"{r.get('artifact', '')}/{r['runtime']}\nbatch {r['batch']}" for r in latency]
    med = [r["median_ms"] for r in latency]
    p90 = [max(0.0, r["p90_ms"] - r["median_ms"]) for r in latency]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(latency)), 3.6), dpi=110)
    ax.bar(range(len(med)), med, yerr=[[0] * len(med), p90], capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(med)), labels, fontsize=7)
    ax.set_ylabel("ms (bar: median, whisker: p90)")
    ax.set_title("Measured latency per runtime and batch")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _html_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    from .profiling.tables import format_value

    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(k)))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(run_dir: Path, recipe, records: list[dict], *, title: str | None = None,
                 stage_dir: Path | None = None) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``run_dir`` (and copies into ``stage_dir``)."""
    run_dir = Path(run_dir)
    s = summarize(records)
    doc = {"title": title or f"edgevit run: {recipe.name}", "recipe": recipe.to_dict(),
           "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": s, "stages": records}
    limit = f" (first {recipe.data.limit} samples)" if recipe.data.limit else ""
    intro = f"Model `{recipe.model.name}`, data `{recipe.data.name}`{limit}, generated {doc['generated_utc']}."
    stages = [{"id": r["id"], "stage": r["stage"], "seconds": r.get("seconds"),
               "artifact": (r.get("artifact") or {}).get("kind")} for r in records]
    stage_cols = [("id", "step"), ("stage", "stage"), ("artifact", "artefact"), ("seconds", "seconds")]
    sections = [("Stages", stages, stage_cols, None),
                ("Accuracy", s["accuracy"], ACCURACY_COLS, None),
                ("Exports (parity vs the torch source on real inputs)", s["exports"], EXPORT_COLS, None),
                ("Latency (measured)", s["latency"], LATENCY_COLS, _machine_line(s["latency"])),
                ("Predicted latency (roofline over the ONNX graph; not measured)", s["predictions"], PREDICTION_COLS,
                 ("Efficiency 1.0 assumed unless stated: predictions are floors. The detected host uses efficiency "
                  "factors fitted on this CPU where they exist; 'expected |error| %' is their median error on models "
                  "not used in fitting ('—': untested, e.g. every other machine). 'bound' says where the predicted "
                  "time goes: compute, memory or per-node launch overhead. 'error %' compares the prediction "
                  "for the detected host (this machine) with the measured median where both exist; every other target "
                  "is a prediction for another machine, never compared with this machine's measurements."))]
    md = [f"# {doc['title']}", "", intro, ""]
    body = [f"<h1>{html.escape(doc['title'])}</h1>", f"<p>{html.escape(intro)}</p>"]
    for heading, rows, cols, note in sections:
        if not rows:
            continue
        md += [f"## {heading}", "", markdown_table(rows, cols), ""] + ([note, ""] if note else [])
        body += [f"<h2>{html.escape(heading)}</h2>", _html_table(rows, cols)]
        body += [f"<p><small>{html.escape(note)}</small></p>"] if note else []
        if heading.startswith("Latency"):
            png = _latency_plot_png(rows)
            if png:
                body.append(f'<img alt="latency plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc['title'])}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md", "html": run_dir / "report.html"}
    targets = [run_dir] + ([Path(stage_dir)] if stage_dir is not None else [])
    for d in targets:
        write_json(d / "report.json", doc)
        (d / "report.md").write_text("\n".join(md) + "\n")
        (d / "report.html").write_text(page)
    return paths
