"""The terminal of ``edgevit compress``: one progress display for the whole run.

On a terminal (rich): an overall line ``stage n/N <id>`` with the run's elapsed time, under it the current stage's
bars (evaluation batches, training steps, TVM trials, calibration: every :func:`edgevit.progress.progress` bar of the
library is routed here through :func:`edgevit.progress.use_display`) with ETA, a one-line result printed above the
bars when a stage finishes, and a summary table at the end. Log records go through the same console, so they never
tear a bar. Not on a terminal (CI, pipes, ``EDGEVIT_PROGRESS=0``): no bars, the same one-line results, the same
summary table.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def stage_brief(rec: dict) -> str:
    """One line saying what a finished stage produced (the figures a user looks for first), from its record."""
    m = rec.get("metrics") or {}
    stage = rec.get("stage", "")
    parts: list[str] = []
    if m.get("rows"):  # eval over every artefact × runtime
        parts += [f"{r.get('artifact_id', '')}/{r.get('runtime', '')} {_pct(r.get('top1'))}" for r in m["rows"]]
    elif "top1" in m and stage != "distill":
        via = f" via {m['runtime']}" if m.get("runtime") else ""
        parts.append(f"top-1 {_pct(m['top1'])}{via} (n={m.get('n', '?')})")
    if "i2t_r1" in m:  # a dual encoder: retrieval (eval task retrieval, or after distill); by content where the data
        r, how = (m["by_content"], "by content") if m.get("by_content") else (m, "own caption")  # knows it
        parts.append(f"R@1 i2t {_pct(r['i2t_r1'])}, t2i {_pct(r.get('t2i_r1'))} (R@10 {_pct(r.get('i2t_r10'))} / "
                     f"{_pct(r.get('t2i_r10'))}, {how}, {m.get('n_images', '?')} images)")
    if stage == "distill" and m.get("method") in ("contrastive", "dcd", "affinity"):
        parts.append(f"{m['method']}: {m.get('steps', '?')} steps, {m.get('teacher_calls_during_training', 0)} "
                     f"teacher calls while training")
    elif stage == "distill":
        parts.append(f"student top-1 {_pct(m.get('top1'))} after {m.get('epochs', '?')} epoch(s)")
    if stage == "export_towers":
        parts.append(", ".join(f"{r['tower']} tower cosine ≥ {r['min_cosine']:.6f}" for r in m.get("towers", []))
                     + f" ({m.get('format')})")
    if stage == "early_exit":
        parts.append(f"exits after blocks {m.get('exits')}, held-out top-1 {_pct(m.get('heldout_top1'))} "
                     f"(final head {_pct(m.get('heldout_final_top1'))})")
        if m.get("expected_ms") is not None and m.get("segments_only_ms"):
            parts.append(f"expected {m['expected_ms']:.3f} ms vs {m['segments_only_ms']:.3f} ms without exits")
    if stage == "quantize":
        parts.append(f"selected {m.get('selected')}: top-1 drop {_fmt(m.get('drop_pt'))} pt "
                     f"(budget {_fmt(m.get('budget'))}), {m.get('speed_gate', '')}".rstrip(", "))
    if stage == "profile":
        for row in m.get("latency", []):
            if row.get("batch") == 1:
                verdict = (row.get("stability") or {}).get("verdict")
                what = row.get("artifact_id") or row.get("artifact", "")
                parts.append(f"{what}/{row.get('runtime')} b1 {row['median_ms']:.3f} ms"
                             + (f" ({verdict})" if verdict and verdict != "stable" else ""))
    if "max_abs_diff" in m and stage not in ("quantize",):
        agree = m.get("top1_agreement")
        parts.append(f"parity max|Δ| {_fmt(m['max_abs_diff'])}"
                     + (f", top-1 agreement {_pct(agree)} (n={m.get('n', '?')})" if agree is not None else ""))
    if m.get("format") == "tensorrt":
        if m.get("engine"):
            parts.append(f"{m.get('precision', '')} engine built with TensorRT {(m.get('tensorrt') or {}).get('version_or_reason', '')}")
        elif m.get("bundle"):
            files = (m["bundle"] or {}).get("files") or []
            graphs = sum(f.startswith("onnx/") and f.endswith(".onnx") for f in files)
            trt = (m.get("tensorrt") or {}).get("target_version")
            parts.append(f"device bundle: {graphs or 1} graph(s), {m.get('precision', '')}"
                         + (f", TensorRT {trt}" if trt else "") + "; run its build.sh on the device")
    if stage == "report":
        files = m.get("files") or {}
        parts.append(", ".join(sorted(files)) if files else "")
    if stage == "load":
        parts.append(f"{m.get('arch', '')}, {m.get('params', 0) / 1e6:.2f} M parameters")
    return "; ".join(p for p in parts if p)


class RunDisplay:
    """The run's progress display; pass :meth:`on_start` / :meth:`on_stage` to :func:`edgevit.pipeline.run` and use
    it as the library's display (:func:`edgevit.progress.use_display`)."""

    def __init__(self, *, live: bool, console: Console | None = None):
        self.live = live
        self.console = console or Console(stderr=True, highlight=False)
        self.out = Console(highlight=False, soft_wrap=True)  # results and the summary: stdout
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                 console=self.console, transient=True, disable=not live)
        self.overall = None
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.current: tuple[int, int, str] | None = None

    # ------------------------------------------------------------------ context
    def __enter__(self):
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.progress.stop()
        return False

    def log_handler(self, level: int) -> logging.Handler:
        """A handler printing log records through the display's console (above the bars)."""
        h = RichHandler(console=self.console, show_time=False, show_path=False, markup=False, rich_tracebacks=False,
                        level=level)
        h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return h

    # ------------------------------------------------------------------ pipeline callbacks
    def on_start(self, index: int, total: int, sid: str, name: str) -> None:
        self.current = (index, total, sid)
        desc = f"stage {index}/{total} {sid}"
        if self.overall is None:
            self.overall = self.progress.add_task(desc, total=total, completed=index - 1, postfix="")
        else:
            self.progress.update(self.overall, description=desc, completed=index - 1)

    def on_stage(self, sid: str, rec: dict, skipped: bool) -> None:
        index, total, _ = self.current or (len(self.rows) + 1, len(self.rows) + 1, sid)
        brief = stage_brief(rec)
        status = "skip" if skipped else "done"
        secs = rec.get("seconds", 0.0) or 0.0
        self.rows.append({"id": sid, "stage": rec.get("stage"), "status": "skipped (resumed)" if skipped else "done",
                          "seconds": secs, "result": brief})
        self.print(f"[{index}/{total}] {status} {sid:<20s} {secs:7.1f} s  {brief}")
        if self.overall is not None:
            self.progress.update(self.overall, completed=index)

    def on_failure(self, sid: str, exc: BaseException) -> None:
        self.rows.append({"id": sid, "stage": sid.split("_", 1)[-1], "status": "FAILED", "seconds": None,
                          "result": f"{type(exc).__name__}: {exc}"})

    def print(self, text: str) -> None:
        if self.live:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self.out.print(text, markup=False, highlight=False)

    # ------------------------------------------------------------------ library bars
    def bar(self, *, total: int | None, desc: str, unit: str = "it"):
        return _Bar(self, desc, total)

    # ------------------------------------------------------------------ summary
    def summary(self, title: str) -> Table:
        t = Table(title=title, title_justify="left")
        for col, just in (("stage", "left"), ("status", "left"), ("seconds", "right"), ("result", "left")):
            t.add_column(col, justify=just, overflow="fold")
        for r in self.rows:  # Text cells: a result such as "cascade[openvino] 90.9%" is data, not rich markup
            t.add_row(Text(r["id"]), Text(r["status"]), "" if r["seconds"] is None else f"{r['seconds']:.1f}",
                      Text(r["result"] or ""))
        return t

    def print_summary(self, title: str) -> None:
        self.out.print(self.summary(title))


class _Bar:
    """One library bar inside the display (a rich task), removed when closed."""

    def __init__(self, display: RunDisplay, desc: str, total: int | None):
        self.display = display
        self.task = display.progress.add_task(f"  {desc}", total=total, postfix="") if display.live else None

    def update(self, n: int = 1) -> None:
        if self.task is not None:
            self.display.progress.advance(self.task, n)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        if self.task is not None:
            self.display.progress.update(self.task, postfix=s)

    def close(self) -> None:
        if self.task is not None:
            self.display.progress.remove_task(self.task)
            self.task = None
