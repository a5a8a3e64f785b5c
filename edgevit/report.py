"""The run report: ``report.json`` (every stage record) and ``report.md`` (tables a person reads)."""

from __future__ import annotations

import time
from pathlib import Path

from .artifact import write_json


def _fmt(v, nd=4):
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return "" if v is None else str(v)


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(t for _, t in cols) + " |"
    sep = "|" + "|".join(" --- " for _ in cols) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def summarize(records: list[dict]) -> dict:
    """Flatten stage records into the report's sections: accuracy, exports, latency, predictions."""
    acc, exports, latency, predictions = [], [], [], []
    for r in records:
        m = r.get("metrics") or {}
        if r["stage"] == "eval":
            acc.append({"stage": r["id"], "artifact": m.get("artifact"), "runtime": m.get("runtime"),
                        "top1": m.get("top1"), "top5": m.get("top5"), "n": m.get("n")})
        elif "max_abs_diff" in m:
            exports.append({"stage": r["id"], "path": (r.get("artifact") or {}).get("path"),
                            "max_abs_diff": m.get("max_abs_diff"), "cosine": m.get("cosine"),
                            "top1_agreement": m.get("top1_agreement"), "file_size": m.get("file_size")})
        for row in m.get("latency", []):
            latency.append({"stage": r["id"], **row})
        predictions += m.get("predictions", [])
    return {"accuracy": acc, "exports": exports, "latency": latency, "predictions": predictions}


def write_report(run_dir: Path, recipe, records: list[dict], *, title: str | None = None,
                 stage_dir: Path | None = None) -> dict[str, Path]:
    """Write report.json and report.md into ``run_dir`` (and copies into ``stage_dir``)."""
    run_dir = Path(run_dir)
    summary = summarize(records)
    doc = {"title": title or f"edgevit run: {recipe.name}", "recipe": recipe.to_dict(),
           "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": summary,
           "stages": records}
    md = [f"# {doc['title']}", "", f"Model `{recipe.model.name}`, data `{recipe.data.name}`"
          f"{' (first %d samples)' % recipe.data.limit if recipe.data.limit else ''}, generated {doc['generated_utc']}.",
          ""]
    md += ["## Stages", "", _table([{"id": r["id"], "stage": r["stage"], "seconds": r.get("seconds"),
                                     "artifact": (r.get("artifact") or {}).get("kind")} for r in records],
                                   [("id", "stage"), ("stage", "kind"), ("artifact", "artefact"),
                                    ("seconds", "seconds")]), ""]
    if summary["accuracy"]:
        md += ["## Accuracy", "", _table(summary["accuracy"], [("stage", "stage"), ("artifact", "artefact"),
                                                               ("runtime", "runtime"), ("top1", "top-1"),
                                                               ("top5", "top-5"), ("n", "n")]), ""]
    if summary["exports"]:
        md += ["## Exports (parity vs torch on real inputs)", "",
               _table(summary["exports"], [("stage", "stage"), ("path", "file"), ("max_abs_diff", "max |Δ|"),
                                           ("cosine", "cosine"), ("top1_agreement", "top-1 agreement"),
                                           ("file_size", "bytes")]), ""]
    if summary["latency"]:
        rows = summary["latency"]
        md += ["## Latency (measured)", "", _table(rows, [("stage", "stage"), ("artifact", "artefact"),
                                                          ("runtime", "runtime"), ("batch", "batch"),
                                                          ("median_ms", "median ms"), ("p90_ms", "p90 ms"),
                                                          ("p99_ms", "p99 ms"), ("mean_ms", "mean ms"),
                                                          ("runs", "runs"), ("throughput", "img/s")]), ""]
        stamp = rows[0].get("system") or {}
        if stamp:
            md += [f"Measured on {stamp.get('cpu_model', '?')} ({stamp.get('affinity_cores', '?')} cores usable), "
                   f"{stamp.get('timestamp_utc', '')}.", ""]
    if summary["predictions"]:
        md += ["## Predicted latency (roofline, not measured)", "",
               _table(summary["predictions"], [("target", "target"), ("dtype", "dtype"),
                                               ("latency_ms", "predicted ms"), ("bound", "bound"),
                                               ("efficiency", "efficiency assumed")]), ""]
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    write_json(paths["json"], doc)
    paths["md"].write_text("\n".join(md) + "\n")
    if stage_dir is not None:
        write_json(Path(stage_dir) / "report.json", doc)
        (Path(stage_dir) / "report.md").write_text("\n".join(md) + "\n")
    return paths
