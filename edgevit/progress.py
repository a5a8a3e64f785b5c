"""Console output helpers: progress bars for long loops (tqdm on a terminal; silent when not a TTY or
EDGEVIT_PROGRESS=0) and :func:`is_main_process`, the one test for "does this process talk to the user" that every
place with console output uses (under torchrun only rank 0 prints, logs progress and draws bars)."""

from __future__ import annotations

import logging
import os
import sys


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed run (torchrun's ``RANK``, or an initialised
    ``torch.distributed`` process group). Only the main process prints results, epoch lines and progress."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                return dist.get_rank() == 0
        except (RuntimeError, ValueError):
            pass
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


class MainProcessFilter(logging.Filter):
    """Lets INFO/DEBUG records through on the main process only; warnings and errors from every rank, prefixed
    with the rank so they can be told apart."""

    def filter(self, record: logging.LogRecord) -> bool:
        if is_main_process():
            return True
        if record.levelno < logging.WARNING:
            return False
        rank = os.environ.get("RANK", "?")
        if not str(record.msg).startswith("[rank "):
            record.msg = f"[rank {rank}] {record.msg}"
        return True


def enabled() -> bool:
    if not is_main_process():
        return False
    flag = os.environ.get("EDGEVIT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled(), **kwargs)
