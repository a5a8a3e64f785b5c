"""Crash-safe file writes: every file a run reads back is written all-or-nothing (temp file, fsync, rename), and a
killed write leaves only a ``.partial`` file that is never read and is cleaned on resume. Core floor: no edgevit
imports beyond :mod:`edgevit.errors` and :mod:`edgevit.faults`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial"  # suffix of a file being written (:func:`atomic_output`); never read, removed on resume


@contextmanager
def atomic_output(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Write ``path`` all-or-nothing: yields a temporary path beside it (``.<name>.partial``) for the caller (or a
    library: ``torch.save``, ``safetensors``, ``onnx.save``) to write; on success the file is fsynced and renamed
    over ``path`` with :func:`os.replace` (atomic on POSIX), then the folder entry is fsynced. On any error, or a
    kill, ``path`` keeps its old content (or stays absent): readers never see a half-written file. A kill leaves
    at most the ``.partial`` file, which :func:`remove_partials` cleans.

    Raises :class:`~edgevit.errors.ConfigError` when ``path`` is a directory."""
    from .errors import ConfigError
    from .faults import kill_point

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory; give a file path such as {path / 'result.json'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{PARTIAL}")
    try:
        yield tmp
        kill_point(f"write:{path.name}", partial_file=tmp)  # tests: die mid-write, leaving half the bytes
        if fsync:
            _fsync(tmp)
        os.chmod(tmp, _FILE_MODE)  # what open() would give (safetensors writes 0600 files)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent)
    except BaseException:
        if tmp.is_file():
            tmp.unlink()
        raise


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output` (all-or-nothing, fsynced)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_output` (all-or-nothing, fsynced)."""
    atomic_write_bytes(path, text.encode())


def remove_partials(folder: str | Path) -> list[Path]:
    """Delete the ``.partial`` files a killed :func:`atomic_output` left anywhere under ``folder``; return them."""
    gone = [p for p in Path(folder).rglob(f".*{PARTIAL}") if p.is_file()]
    for p in gone:
        p.unlink()
    return gone
