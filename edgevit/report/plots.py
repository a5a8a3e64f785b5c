"""The report's figures as PNG bytes (matplotlib, a dependency of edgevit; Agg backend): accuracy × latency with the
Pareto front, latency per runtime × batch, and per-exit rates and latency of a cascade. Each function returns None
when there is nothing to draw, or when matplotlib cannot be imported (an install without it: ``pip install
matplotlib``); the report then says so instead of showing a figure."""

from __future__ import annotations

import io
import logging

log = logging.getLogger(__name__)

FLAGGED = ("noisy", "contended")  # latency stability verdicts drawn as warnings
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
          "#64B5CD"]  # matplotlib's "deep" palette, one colour per runtime


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib cannot be imported: the report has no figures (pip install matplotlib)")
        return None
    return plt


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def accuracy_latency_png(points: list[dict], reference: dict | None, *, stat_label: str) -> bytes | None:
    """Top-1 (%) against batch-1 latency (ms, log axis when the range exceeds 10×) of every artefact × runtime in
    ``points`` (:func:`edgevit.report.analysis.points`); the Pareto front joined and ringed; ``reference`` (the
    headline's source side: latency_ms, top1, label) as a star with dashed guides; points whose latency is noisy or
    contended drawn hollow with a red edge."""
    plt = _pyplot()
    if plt is None or not points:
        return None
    runtimes = list(dict.fromkeys(p["runtime"] for p in points))
    color = {rt: COLORS[i % len(COLORS)] for i, rt in enumerate(runtimes)}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    xs = [p["latency_ms"] for p in points]
    if max(xs) / max(min(xs), 1e-9) > 10:
        ax.set_xscale("log")
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["latency_ms"])
    if len(front) > 1:
        ax.step([p["latency_ms"] for p in front], [100 * p["top1"] for p in front], where="post", color="#333",
                lw=1.2, ls="-", zorder=1, label="Pareto front")
    for rt in runtimes:
        mine = [p for p in points if p["runtime"] == rt]
        ok = [p for p in mine if p.get("verdict") not in FLAGGED]
        bad = [p for p in mine if p.get("verdict") in FLAGGED]
        ax.scatter([p["latency_ms"] for p in ok], [100 * p["top1"] for p in ok], s=60, color=color[rt], zorder=3,
                   label=rt)
        if bad:
            ax.scatter([p["latency_ms"] for p in bad], [100 * p["top1"] for p in bad], s=60, facecolors="none",
                       edgecolors="#d62728", linewidths=1.8, zorder=3,
                       label=f"{rt}: latency {'/'.join(sorted({p['verdict'] for p in bad}))}")
    if front:
        ax.scatter([p["latency_ms"] for p in front], [100 * p["top1"] for p in front], s=190, facecolors="none",
                   edgecolors="#333", linewidths=1.2, zorder=2)
    for p in points:
        ax.annotate(p["node"], (p["latency_ms"], 100 * p["top1"]), textcoords="offset points", xytext=(6, 5),
                    fontsize=7, color="#333")
    if reference and reference.get("latency_ms") is not None and reference.get("top1") is not None:
        rx, ry = reference["latency_ms"], 100 * reference["top1"]
        ax.scatter([rx], [ry], marker="*", s=320, color="#FFD700", edgecolors="#333", zorder=4,
                   label=reference.get("label", "source"))
        ax.axvline(rx, color="#999", ls="--", lw=0.8, zorder=0)
        ax.axhline(ry, color="#999", ls="--", lw=0.8, zorder=0)
    ys = [100 * p["top1"] for p in points]
    if reference and reference.get("top1") is not None:
        ys.append(100 * reference["top1"])
    ax.margins(x=0.12)
    pad = max(0.5, (max(ys) - min(ys)) * 0.15)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel(f"{stat_label} (ms, lower is better)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy × latency of every artefact × runtime (ringed: Pareto front)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig, plt)


def latency_bars_png(latency: list[dict]) -> bytes | None:
    """Median latency (bar) with a p90 whisker per measured artefact × runtime × batch; noisy or contended rows
    hatched in red."""
    plt = _pyplot()
    if plt is None or not latency:
        return None
    labels = [f"{r.get('artifact', '')}/{r['runtime']}\nbatch {r['batch']}" for r in latency]
    med = [r["median_ms"] for r in latency]
    p90 = [max(0.0, r["p90_ms"] - r["median_ms"]) for r in latency]
    flagged = [(r.get("stability") or {}).get("verdict") in FLAGGED for r in latency]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(latency)), 3.6), dpi=110)
    bars = ax.bar(range(len(med)), med, yerr=[[0] * len(med), p90], capsize=4,
                  color=["#f2b8b5" if f else "#4C72B0" for f in flagged])
    for b, f in zip(bars, flagged):
        if f:
            b.set_hatch("//")
            b.set_edgecolor("#d62728")
    ax.set_xticks(range(len(med)), labels, fontsize=7)
    ax.set_ylabel("ms (bar: median, whisker: p90)")
    ax.set_title("Measured latency per runtime and batch" + (" (hatched: noisy/contended)" if any(flagged) else ""))
    fig.tight_layout()
    return _png(fig, plt)


def exits_png(cascade: dict) -> bytes | None:
    """Share of images per exit (calibration and every measurement) as grouped bars, and the batch-1 latency of
    leaving at each exit as a line on a second axis (:func:`edgevit.report.analysis.cascades`)."""
    plt = _pyplot()
    exits = cascade.get("exits") or []
    if plt is None or not exits:
        return None
    series = [("calibration (held-out)", [e.get("share_calibration") for e in exits])]
    series += [(src, [e["share_measured"].get(src) for e in exits]) for src in cascade.get("measured_sources") or []]
    series = [(name, vals) for name, vals in series if any(v is not None for v in vals)]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    x = list(range(len(exits)))
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series):
        ax.bar([v + (i - (len(series) - 1) / 2) * width for v in x], [100 * (v or 0) for v in vals], width,
               color=COLORS[i % len(COLORS)], label=f"share: {name}")
    ax.set_xticks(x, [e["label"] + (f"\n(block {e['block']})" if e.get("block") is not None else "") for e in exits],
                  fontsize=8)
    ax.set_ylabel("images leaving here (%)")
    lat = [e.get("latency_ms") for e in exits]
    handles, labels = ax.get_legend_handles_labels()
    if any(v is not None for v in lat):
        ax2 = ax.twinx()
        ax2.plot(x, lat, "o-", color="#333", label="latency to leave here (ms)")
        ax2.set_ylabel("ms (batch 1)")
        ax2.set_ylim(bottom=0)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7, loc="upper left")
    ax.set_title(f"Exits of {cascade['node']}")
    fig.tight_layout()
    return _png(fig, plt)
