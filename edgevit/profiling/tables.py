"""Markdown tables of profiling results (runtime × batch), for reports and the CLI."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# key, header of the default latency table
PROFILE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "model"), ("runtime", "runtime"), ("device", "device"), ("batch", "batch"),
    ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("mean_ms", "mean ms"),
    ("runs", "runs"), ("throughput", "img/s"),
)


def format_value(v: Any) -> str:
    """Numbers with sensible precision (3 significant digits below 100, none above 1000), None as '—'."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1 or a == 0:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str | tuple[str, str]]) -> str:
    """A GitHub-flavoured Markdown table; ``columns`` are keys or ``(key, header)`` pairs. Numbers right-aligned."""
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    cols = [(k, h.replace("|", "\\|")) for k, h in cols]  # a '|' in a header (max |Δ|) would split its cell
    if not cols:
        raise ValueError("markdown_table needs at least one column")
    cells = [[format_value(r.get(k)) for k, _ in cols] for r in rows]
    numeric = [all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                   for r in rows if r.get(k) is not None) and any(r.get(k) is not None for r in rows)
               for k, _ in cols]
    widths = [max([len(h), 3, *(len(row[i]) for row in cells)]) for i, (_, h) in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    sep = "| " + " | ".join(("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line([h for _, h in cols]), sep, *(line(r) for r in cells)])


def stability_cell(row: Mapping[str, Any]) -> str | None:
    """The stability verdict of a row for a table cell (``noisy``, ``contended (settled)``...); None without one."""
    st = row.get("stability")
    if not isinstance(st, Mapping) or not st.get("verdict"):
        return None
    win = st.get("windows")
    if isinstance(win, Mapping):
        return f"{st['verdict']} ({'settled' if win.get('settled') else 'not settled'}, {win.get('count')} windows)"
    return str(st["verdict"])


def stability_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per row that is not ``stable``: ``runtime batch N: <message>`` (the plain-words reason)."""
    out = []
    for r in results:
        st = r.get("stability")
        if isinstance(st, Mapping) and st.get("verdict") not in (None, "stable"):
            out.append(f"{r.get('runtime')} batch {r.get('batch')}: {st.get('message')}")
    return out


# derived cells: (key, header, value of a row); shown when any row has a value
DERIVED_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("peak_rss", "peak RSS MiB", lambda r: (r.get("memory") or {}).get("peak_rss_mb", r.get("peak_rss_mb"))),
    ("mj_per_image", "mJ/img", lambda r: (r.get("energy") or {}).get("millijoules_per_image")),
    ("verdict", "stability", stability_cell),
)


def profile_table(results: Sequence[Mapping[str, Any]], *, extra_columns: Sequence[str | tuple[str, str]] = ()) -> str:
    """The latency table of :func:`~edgevit.profiling.latency.profile_runtime` results (any number of runtimes),
    one row per runtime × batch, with peak RSS, energy per image and the stability verdict where measured; columns
    without any value (e.g. no model names, no RAPL) are left out."""
    cols: list[str | tuple[str, str]] = [c for c in PROFILE_COLUMNS
                                         if c[0] not in ("model", "device") or any(r.get(c[0]) for r in results)]
    rows = [dict(r) for r in results]
    for key, header, value in DERIVED_COLUMNS:
        vals = [value(r) for r in results]
        if any(v is not None for v in vals):
            for row, v in zip(rows, vals):
                row[key] = v
            cols.append((key, header))
    return markdown_table(rows, [*cols, *extra_columns])
