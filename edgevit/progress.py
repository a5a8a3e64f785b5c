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


_DISPLAY = None  # the run display installed by the CLI (``edgevit compress``), see :func:`use_display`


class use_display:
    """Route every :func:`progress` bar of the library into ``display`` while the block runs.

    ``display.bar(total=, desc=, unit=)`` must return an object with ``update(n=1)``, ``set_postfix_str(s,
    refresh=True)`` and ``close()`` (the subset of :class:`tqdm.tqdm` the library uses). ``edgevit compress`` installs
    one so that stage bars (evaluation batches, training steps, TVM trials, calibration) appear as the current
    stage's bar in the run's single progress display instead of as separate tqdm lines.
    """

    def __init__(self, display):
        self.display = display
        self._prev = None

    def __enter__(self):
        global _DISPLAY
        self._prev, _DISPLAY = _DISPLAY, self.display
        return self.display

    def __exit__(self, *exc):
        global _DISPLAY
        _DISPLAY = self._prev
        return False


class _DisplayBar:
    """A tqdm-like bar drawn by the installed display; iterates ``iterable`` when given."""

    def __init__(self, handle, iterable=None):
        self.handle, self.iterable = handle, iterable

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.handle.update(1)
        finally:
            self.handle.close()

    def update(self, n=1):
        self.handle.update(n)

    def set_postfix_str(self, s="", refresh=True):
        self.handle.set_postfix_str(s, refresh)

    def close(self):
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, **kwargs):
    """A progress bar over ``iterable`` (or a manual one with ``total=``): tqdm on a terminal, the run display under
    ``edgevit compress`` (:func:`use_display`), nothing when progress is off (:func:`enabled`)."""
    if _DISPLAY is not None and is_main_process():
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        handle = _DISPLAY.bar(total=total, desc=kwargs.get("desc", ""), unit=kwargs.get("unit", "it"))
        return _DisplayBar(handle, iterable)
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled(), **kwargs)
