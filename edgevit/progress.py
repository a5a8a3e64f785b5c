"""Progress bars for long loops (tqdm on a terminal; silent when not a TTY or EDGEVIT_PROGRESS=0)."""

from __future__ import annotations

import os
import sys


def enabled() -> bool:
    flag = os.environ.get("EDGEVIT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled(), **kwargs)
