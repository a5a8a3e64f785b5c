"""Named kill points: a process kills itself with SIGKILL at a chosen point, so tests can interrupt a real
``edgevit compress`` deterministically (mid-stage, mid-epoch, mid-write) and check that ``--resume`` finishes exactly.

Set ``EDGEVIT_KILL_AT`` to a point name, optionally with ``@N`` for its N-th occurrence (1-based; default the first)::

    EDGEVIT_KILL_AT=stage:01_distill:start         # before the stage runs
    EDGEVIT_KILL_AT=stage:01_distill:rename        # the stage folder is complete, not yet renamed
    EDGEVIT_KILL_AT=write:checkpoint.pt@2          # mid-write: the 2nd write of checkpoint.pt is cut at half its bytes
    EDGEVIT_KILL_AT=distill:epoch:1                # after epoch 1's checkpoint is saved

A name ending in ``*`` matches every point with that prefix. Unset (always, outside tests), :func:`kill_point` costs
one dictionary lookup. SIGKILL cannot be caught: no ``finally`` block, ``atexit`` handler or buffered write runs,
which is what a power cut or the OOM killer does to a run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "EDGEVIT_KILL_AT"
_hits: dict[str, int] = {}


def _wanted(name: str) -> bool:
    spec = os.environ.get(ENV)
    if not spec:
        return False
    point, _, nth = spec.partition("@")
    if not (name == point or (point.endswith("*") and name.startswith(point[:-1]))):
        return False
    _hits[point] = _hits.get(point, 0) + 1
    return _hits[point] == (int(nth) if nth else 1)


def kill_point(name: str, *, partial_file: str | Path | None = None) -> None:
    """SIGKILL this process when ``EDGEVIT_KILL_AT`` names ``name`` (see the module docstring).

    ``partial_file``: a file being written; it is cut to half its size first, leaving on disk what a write
    interrupted half-way leaves."""
    if not _wanted(name):
        return
    if partial_file is not None and Path(partial_file).is_file():
        size = Path(partial_file).stat().st_size
        with open(partial_file, "r+b") as f:
            f.truncate(size // 2)
            f.flush()
            os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
